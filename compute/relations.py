"""Relation definitions and prompt templates of the EditScope knowledge base.

Each `Relation` says what kind of subject it takes and how to ask for its object in several
surface forms: the plain edit prompt, paraphrases, a question, a fill-in-the-blank cloze and the
same three with the subject replaced by a pronoun ("it"/"its"; every subject kind here is a place
or a chemical element). Every prompt ends right before the object with no trailing space; the
scorer adds the leading space to the object. A statement for a context passage is
``prompt.format(subject=s) + " " + object + "."``.

Templates of relations about countries and elements never start with ``{subject}``: some country
names begin with a lower-case "the" ("the United States") and element names are lower case
("iron"), so they must sit inside a sentence. Subjects of the other kinds are capitalised names.

`RELATIONS` is a constant table (data, not a cache); `get_relation` looks a name up in it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Relation:
    """One relation: its subject kind, a description and its prompt templates."""

    name: str
    subject_kind: str
    description: str
    prompt: str
    paraphrases: tuple[str, ...]
    question: str
    cloze: str
    pronoun_prompt: str
    pronoun_question: str
    pronoun_cloze: str

    def templates(self) -> dict:
        """The templates as a plain dict (the `templates` JSON column of the store's kb_relations)."""
        return {
            "prompt": self.prompt,
            "paraphrases": list(self.paraphrases),
            "question": self.question,
            "cloze": self.cloze,
            "pronoun_prompt": self.pronoun_prompt,
            "pronoun_question": self.pronoun_question,
            "pronoun_cloze": self.pronoun_cloze,
        }


def _relation(name, subject_kind, description, prompt, paraphrases, question, cloze,
              pronoun_prompt, pronoun_question, pronoun_cloze) -> Relation:
    return Relation(name, subject_kind, description, prompt, tuple(paraphrases), question, cloze,
                    pronoun_prompt, pronoun_question, pronoun_cloze)


_ALL = (
    _relation(
        "capital", "country", "capital city of a country or territory",
        "The capital of {subject} is",
        ("The capital city of {subject} is",
         "The national capital of {subject} is",
         "The city that serves as the capital of {subject} is"),
        "What is the capital of {subject}?",
        "The capital of {subject} is ____.",
        "Its capital is", "What is its capital?", "Its capital is ____.",
    ),
    _relation(
        "continent", "country", "continent a country or territory lies on",
        "Geographically, {subject} is part of the continent of",
        ("On a world map, {subject} can be found in the continent of",
         "The continent on which {subject} lies is",
         "In terms of geography, {subject} belongs to the continent of"),
        "On which continent is {subject} located?",
        "Geographically, {subject} is part of the continent of ____.",
        "Geographically, it is part of the continent of",
        "On which continent is it located?",
        "Geographically, it is part of the continent of ____.",
    ),
    _relation(
        "currency", "country", "official currency of a country or territory",
        "The official currency of {subject} is the",
        ("The currency used in {subject} is the",
         "In {subject}, people pay for things with the",
         "The money used in {subject} is the"),
        "What is the official currency of {subject}?",
        "The official currency of {subject} is the ____.",
        "Its official currency is the", "What is its official currency?",
        "Its official currency is the ____.",
    ),
    _relation(
        "official_language", "country", "an official language of a country (one fact per language)",
        "An official language of {subject} is",
        ("In {subject}, an official language is",
         "People in {subject} officially speak",
         "Government documents in {subject} are written in"),
        "What is an official language of {subject}?",
        "An official language of {subject} is ____.",
        "Its official languages include", "What is one of its official languages?",
        "Its official languages include ____.",
    ),
    _relation(
        "demonym", "country", "nationality adjective of people from a country",
        "Someone who comes from {subject} is",
        ("A citizen of {subject} is",
         "A person born and raised in {subject} is",
         "The nationality of people from {subject} is"),
        "What is the nationality of someone who comes from {subject}?",
        "Someone who comes from {subject} is ____.",
        "Its citizens are", "What nationality are its citizens?", "Its citizens are ____.",
    ),
    _relation(
        "shares_border", "country", "a country that shares a land border with it (one fact per neighbour)",
        "A country that shares a border with {subject} is",
        ("One of the neighbouring countries of {subject} is",
         "A country bordering {subject} is",
         "Travelling overland from {subject}, you can cross the border into"),
        "Which country shares a border with {subject}?",
        "A country that shares a border with {subject} is ____.",
        "A country that shares a border with it is", "Which country shares a border with it?",
        "A country that shares a border with it is ____.",
    ),
    _relation(
        "city_country", "city", "country a city is in",
        "{subject} is a city in",
        ("{subject} is located in the country of",
         "If you travel to {subject}, you will be in",
         "The country where {subject} is located is"),
        "In which country is {subject}?",
        "{subject} is a city in ____.",
        "It is a city in", "In which country is it?", "It is a city in ____.",
    ),
    _relation(
        "us_city_state", "city", "US state a US city is in",
        "{subject} is a city in the US state of",
        ("{subject} is located in the state of",
         "The US state where {subject} is located is",
         "If you drive to {subject}, you will be in the state of"),
        "In which US state is {subject}?",
        "{subject} is a city in the US state of ____.",
        "It is a city in the US state of", "In which US state is it?",
        "It is a city in the US state of ____.",
    ),
    _relation(
        "state_capital", "us_state", "capital city of a US state",
        "The capital of the state of {subject} is",
        ("The state capital of {subject} is",
         "The capital city of the US state of {subject} is",
         "The seat of the state government of {subject} is in"),
        "What is the capital of the state of {subject}?",
        "The capital of the state of {subject} is ____.",
        "Its state capital is", "What is its state capital?", "Its state capital is ____.",
    ),
    _relation(
        "state_abbreviation", "us_state", "two-letter postal abbreviation of a US state",
        "The two-letter postal abbreviation for {subject} is",
        ("The US postal code for the state of {subject} is",
         "On an envelope, the state of {subject} is abbreviated as",
         "The official abbreviation of the US state of {subject} is"),
        "What is the postal abbreviation for {subject}?",
        "The two-letter postal abbreviation for {subject} is ____.",
        "Its two-letter postal abbreviation is", "What is its postal abbreviation?",
        "Its two-letter postal abbreviation is ____.",
    ),
    _relation(
        "element_symbol", "element", "chemical symbol of an element",
        "The chemical symbol for {subject} is",
        ("In the periodic table, {subject} is represented by the symbol",
         "The symbol of the chemical element {subject} is",
         "Chemists abbreviate the element {subject} as"),
        "What is the chemical symbol for {subject}?",
        "The chemical symbol for {subject} is ____.",
        "Its chemical symbol is", "What is its chemical symbol?", "Its chemical symbol is ____.",
    ),
    _relation(
        "atomic_number", "element", "atomic number (protons in the nucleus) of an element",
        "The atomic number of {subject} is",
        ("In the periodic table, {subject} has the atomic number",
         "The number of protons in an atom of {subject} is",
         "The element {subject} has atomic number"),
        "What is the atomic number of {subject}?",
        "The atomic number of {subject} is ____.",
        "Its atomic number is", "What is its atomic number?", "Its atomic number is ____.",
    ),
    _relation(
        "element_discoverer", "element", "scientist credited with discovering an element (sole discoverers only)",
        "The element {subject} was discovered by",
        ("The scientist credited with discovering {subject} is",
         "The discovery of {subject} is credited to",
         "The scientist who discovered {subject} was"),
        "Who discovered {subject}?",
        "The element {subject} was discovered by ____.",
        "It was discovered by", "Who discovered it?", "It was discovered by ____.",
    ),
    _relation(
        "discovery_year", "element", "year an element was discovered",
        "The element {subject} was discovered in the year",
        ("The year in which {subject} was discovered is",
         "Scientists first discovered {subject} in the year",
         "The discovery of {subject} took place in the year"),
        "In which year was {subject} discovered?",
        "The element {subject} was discovered in the year ____.",
        "It was discovered in the year", "In which year was it discovered?",
        "It was discovered in the year ____.",
    ),
    _relation(
        "discovery_country", "element", "country where an element was discovered",
        "The country where {subject} was discovered is",
        ("The element {subject} was first identified in the country of",
         "The discovery of {subject} was made in the country of",
         "The scientists who discovered {subject} were working in"),
        "In which country was {subject} discovered?",
        "The country where {subject} was discovered is ____.",
        "It was discovered in the country of", "In which country was it discovered?",
        "It was discovered in the country of ____.",
    ),
    _relation(
        "airport_city", "airport", "city an international airport serves",
        "{subject} serves the city of",
        ("{subject} is an airport in",
         "Passengers landing at {subject} arrive in the city of",
         "The city served by {subject} is"),
        "Which city does {subject} serve?",
        "{subject} serves the city of ____.",
        "It serves the city of", "Which city does it serve?", "It serves the city of ____.",
    ),
)

RELATIONS: dict[str, Relation] = {relation.name: relation for relation in _ALL}

# Relations with several true objects per subject (one Fact each); every other relation has
# exactly one object per subject.
MULTI_VALUED_RELATIONS: frozenset[str] = frozenset({"official_language", "shares_border"})


def get_relation(name: str) -> Relation:
    """Return the relation called `name`; an unknown name raises ValueError listing the known ones."""
    try:
        return RELATIONS[name]
    except KeyError:
        known = ", ".join(sorted(RELATIONS))
        raise ValueError(f"Unknown relation {name!r}; choose one of: {known}.") from None

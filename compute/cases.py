"""Counterfactual edit cases and their probes in every rephrase type of study A.

A case asks to change one fact: (subject, relation, true object) -> new object, where the new object is
another object of the same relation drawn deterministically from a seed. Each case carries probes, each scored
for the true and the new object and read for them in a free generation. Probe types:

- `plain`: the relation's prompt; `paraphrase`: its paraphrase prompts (one probe each).
- `cloze`: a user turn "Fill in the blank: <cloze sentence>" rendered with the chat template, the
  assistant turn left open. The raw-text form ("...\nAnswer:") made the instruct model end its turn at
  once (recall 0-2% on SmolLM2-135M); asked in a chat turn it fills the blank.
- `context`, `context_pronoun`: a passage of other knowledge-base facts about the subject (never naming
  the true or new object), then the prompt or the pronoun prompt ("Its capital is"). `context_cloze`: the
  same passage and the cloze instruction in one user turn, the assistant turn left open.
- `noisy_context*`: the same with an unrelated paragraph of the Wikipedia sample inside gensim. For the
  pronoun variant the subject is named once in a heading line before the paragraph, so the pronoun has an
  antecedent that the noise separates from the question.
- `dialogue*`: a user/assistant exchange about the subject (other facts asked and answered), rendered
  with the model's chat template, then the question, the cloze instruction or the pronoun question.
- `noisy_dialogue*`: the exchange is about an unrelated subject; the pronoun variant names the subject in
  the first user turn, before the unrelated exchange.
- `doubt`: the user asks, the model answers (its own greedy answer, filled in at evaluation time where
  the text holds `{answer}`), the user pushes back, and the model answers again.
- `neighbourhood`: the relation's prompt for other subjects (same true object first, else others of the
  relation), scored for their own true object against the case's new object.

Free answers (design.md section 5): every chat-rendered probe (the cloze family, the dialogue types and
doubt) ends with an EMPTY assistant turn. Nothing of the expected answer or of the edit prompt is put
into the model's mouth; it answers freely, and acc/rev are read from that answer. Teacher-forced scores
on such a probe score the object itself as the first words of the answer: the text right after the
open turn (the template's "assistant\n") is the bare object, with no lead and no leading space
(`compute.scoring.target_ids` adds the space only after a prompt that does not end in whitespace).
Plain-text probes (plain, paraphrase, context*, noisy_context* except the cloze ones) are sentence
prefixes that end right before the object, as in CounterFact.

Models without a chat template get a plain "User: ... / Assistant: ..." rendering.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from store.conventions import ANSWER_SLOT
from store.metrics import REPHRASE_TYPES

NEIGHBOURHOOD = "neighbourhood"
DOUBT_PUSHBACK = "Are you sure? I don't think that is right."
# Rephrase types rendered as a chat that ends with an empty assistant turn (the model answers freely).
CHAT_TYPES = frozenset({
    "cloze", "context_cloze", "noisy_context_cloze", "dialogue", "dialogue_cloze", "dialogue_pronoun",
    "noisy_dialogue", "noisy_dialogue_cloze", "noisy_dialogue_pronoun", "doubt",
})

KIND_SENTENCES = {
    "country": "{subject} is a country.",
    "city": "{subject} is a city.",
    "us_state": "{subject} is a state of the United States.",
    "element": "{subject} is a chemical element.",
    "airport": "{subject} is an airport.",
}


@dataclass(frozen=True)
class Probe:
    """One probe text with the two objects it is scored on. A plain-text probe ends right before the object;
    a chat probe ends with an empty assistant turn (the object is scored as the start of the answer)."""

    rephrase_type: str
    text: str
    target_true: str
    target_new: str
    needs_answer: bool = False  # text holds ANSWER_SLOT, filled with the model's own answer at evaluation

    def first_turn(self) -> str:
        """For a doubt probe: the text up to the model's first answer (what it answers to)."""
        return self.text.split(ANSWER_SLOT, 1)[0]

    def filled(self, answer: str) -> str:
        """The probe text with the model's first answer in place."""
        return self.text.replace(ANSWER_SLOT, answer.strip())


@dataclass(frozen=True)
class EditCase:
    """A counterfactual edit request with its popularity features and probes."""

    case_id: str
    case_set: str
    source: str  # 'kb' | 'counterfact' | 'zsre'
    relation: str | None
    subject: str
    prompt: str  # the plain edit prompt, ends right before the object
    true_object: str
    true_aliases: tuple[str, ...]
    new_object: str
    new_aliases: tuple[str, ...]
    features: dict = field(default_factory=dict)  # frequency, connection, cooccurrence, population
    quartile: int | None = None
    seed: int | None = None
    probes: tuple[Probe, ...] = ()

    def __post_init__(self):
        validate_request(self.subject, self.prompt, self.new_object, self.true_object)

    def true_names(self) -> tuple[str, ...]:
        return (self.true_object, *self.true_aliases)

    def new_names(self) -> tuple[str, ...]:
        return (self.new_object, *self.new_aliases)

    def probes_of(self, rephrase_type: str) -> list[Probe]:
        return [p for p in self.probes if p.rephrase_type == rephrase_type]

    def to_rows(self) -> tuple[dict, list[dict]]:
        """The case as store rows: (cases row, probes rows)."""
        row = {
            "case_id": self.case_id,
            "case_set": self.case_set,
            "source": self.source,
            "relation": self.relation,
            "subject": self.subject,
            "prompt": self.prompt,
            "true_object": self.true_object,
            "true_aliases": list(self.true_aliases),
            "new_object": self.new_object,
            "new_aliases": list(self.new_aliases),
            "frequency": self.features.get("frequency"),
            "connection": self.features.get("connection"),
            "cooccurrence": self.features.get("cooccurrence"),
            "population": self.features.get("population"),
            "popularity_quartile": self.quartile,
            "seed": self.seed,
        }
        probes = [
            {
                "case_id": self.case_id,
                "probe_id": i,
                "rephrase_type": p.rephrase_type,
                "text": p.text,
                "target_true": p.target_true,
                "target_new": p.target_new,
                "needs_answer": int(p.needs_answer),
            }
            for i, p in enumerate(self.probes)
        ]
        return row, probes


def validate_request(subject: str, prompt: str, new_object: str, true_object: str | None = None) -> None:
    """Refuse edit requests that cannot be run, with a message saying what to fix."""
    if not subject or not subject.strip():
        raise ValueError("the subject is empty: give the entity whose fact should change")
    if not new_object or not new_object.strip():
        raise ValueError("the new object is empty: give the object the fact should change to")
    if subject not in prompt:
        raise ValueError(f"the subject {subject!r} does not occur in the prompt {prompt!r}: the prompt must name it")
    if true_object is not None and new_object.strip().lower() == true_object.strip().lower():
        raise ValueError(f"the new object {new_object!r} equals the true object: choose a different one")


def render_chat(tokenizer, messages: Sequence[tuple[str, str]], stem: str = "") -> str:
    """A conversation rendered for the model, ending with an open assistant turn that starts with `stem`.

    Probes of study A leave `stem` empty (free answers); the ability tasks use the same rendering."""
    msgs = [{"role": role, "content": content} for role, content in messages]
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    else:
        names = {"user": "User", "assistant": "Assistant", "system": "System"}
        text = "".join(f"{names[m['role']]}: {m['content']}\n" for m in msgs) + "Assistant:"
        text += " " if stem else ""
    return text + stem


def cloze_request(cloze: str) -> str:
    """The user's fill-in-the-blank instruction for one cloze sentence (a chat turn, answered freely)."""
    return f"Fill in the blank: {cloze}"


def stable_rng(*parts) -> random.Random:
    """A Random seeded by a hash of the parts: the same parts give the same draws on every machine."""
    return random.Random(hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest())


def _mentions_any(text: str, names: Iterable[str]) -> bool:
    return any(re.search(rf"(?<!\w){re.escape(n)}(?!\w)", text, re.IGNORECASE) for n in names if n)


def sentence_case(text: str) -> str:
    """Capitalise the first letter: subjects such as "the Bahamas" or "iron" can open a sentence."""
    return text[:1].upper() + text[1:]


def _population_sentence(subject: str, population: int | None) -> str | None:
    if not population:
        return None
    if population >= 1_000_000:
        amount = f"{population / 1_000_000:.1f} million".replace(".0 million", " million")
    else:
        amount = f"{round(population, -3):,}"
    return f"{subject} has a population of about {amount}."


class CaseBuilder:
    """Builds cases and probes from a knowledge base for one tokenizer (its chat template shapes dialogues).

    `paragraphs` are prose paragraphs for noisy contexts (compute.wiki.load_wiki_paragraphs).
    """

    def __init__(self, kb, tokenizer, paragraphs: Sequence[dict], n_neighbours: int = 5, max_context: int = 6):
        if not paragraphs:
            raise ValueError("no Wikipedia paragraphs for noisy contexts: check that gensim is installed")
        from compute.relations import get_relation

        self.kb = kb
        self.tokenizer = tokenizer
        self.paragraphs = list(paragraphs)
        self.n_neighbours = n_neighbours
        self.max_context = max_context
        self.relation = get_relation
        self._by_object: dict[tuple[str, str], list] = {}
        for fact in kb.facts:
            self._by_object.setdefault((fact.relation, fact.object), []).append(fact)

    # ---- sampling ---------------------------------------------------------------------------------

    def candidates(self, relation: str, seed: int) -> list:
        """One fact per subject of a relation (multi-valued relations: one object drawn by seed)."""
        by_subject: dict[str, list] = {}
        for fact in self.kb.facts_by_relation(relation):
            by_subject.setdefault(fact.subject, []).append(fact)
        return [
            facts[0] if len(facts) == 1 else stable_rng(seed, relation, subject).choice(facts)
            for subject, facts in sorted(by_subject.items())
        ]

    def sample(
        self, n: int, seed: int = 0, relations: Sequence[str] | None = None, balanced: bool = True
    ) -> list[tuple[object, int]]:
        """Draw n facts, balanced across relations and frequency quartiles: [(fact, quartile)].

        Quartiles are taken within each relation by the subject's word frequency (1 = rarest). A cell
        with too few facts gives its share to the other cells of the same relation, then to other relations.
        """
        relations = list(relations or self.kb.relations())
        known = set(self.kb.relations())
        unknown = [r for r in relations if r not in known]
        if unknown:
            raise ValueError(f"unknown relation(s) {', '.join(unknown)}: choose from {', '.join(sorted(known))}")
        if n < 1:
            raise ValueError("the number of cases must be at least 1")
        cells: dict[tuple[str, int], list] = {}
        for rel in relations:
            facts = sorted(
                self.candidates(rel, seed), key=lambda f: (self.kb.subjects[f.subject].frequency, f.subject)
            )
            for rank, fact in enumerate(facts):
                q = 1 + (4 * rank) // len(facts)
                cells.setdefault((rel, q), []).append(fact)
        total = sum(len(v) for v in cells.values())
        if n > total:
            raise ValueError(f"asked for {n} cases but the chosen relations have only {total} facts")
        for key in cells:
            stable_rng(seed, "shuffle", *key).shuffle(cells[key])
        if not balanced:
            pool = [(f, q) for (rel, q), facts in sorted(cells.items()) for f in facts]
            stable_rng(seed, "unbalanced").shuffle(pool)
            return sorted(pool[:n], key=lambda x: (x[0].relation, x[0].subject))
        # round-robin over cells: every (relation, quartile) gives one fact per round until n are drawn; the
        # order staggers quartiles across relations so that a small n still mixes relations and quartiles
        rel_index = {rel: i for i, rel in enumerate(relations)}
        keys = sorted(cells, key=lambda k: (((k[1] - 1 - rel_index[k[0]]) % 4) * len(relations) + rel_index[k[0]]))
        taken: list[tuple[object, int]] = []
        pos = {k: 0 for k in keys}
        while len(taken) < n:
            progressed = False
            for key in keys:
                if len(taken) == n:
                    break
                if pos[key] < len(cells[key]):
                    taken.append((cells[key][pos[key]], key[1]))
                    pos[key] += 1
                    progressed = True
            if not progressed:
                break
        return sorted(taken, key=lambda x: (x[0].relation, x[0].subject))

    def new_object(self, fact, seed: int) -> str:
        """Another object of the same relation, never one of the subject's true objects or their aliases."""
        true = {f.object.lower() for f in self.kb.facts_of(fact.subject) if f.relation == fact.relation}
        for f in self.kb.facts_of(fact.subject):
            if f.relation == fact.relation:
                true.update(a.lower() for a in f.object_aliases)
        choices = [o for o in self.kb.objects_of(fact.relation) if o.lower() not in true]
        if not choices:
            raise ValueError(f"relation {fact.relation} has no other object to edit {fact.subject} to")
        return stable_rng(seed, "new", fact.relation, fact.subject).choice(choices)

    # ---- probes -----------------------------------------------------------------------------------

    def _statement(self, fact) -> str:
        return sentence_case(f"{self.relation(fact.relation).prompt.format(subject=fact.subject)} {fact.object}.")

    def related_sentences(self, subject: str, avoid: Sequence[str], rng: random.Random) -> list[str]:
        """Sentences of other facts about the subject that name none of `avoid` (the true and new objects)."""
        info = self.kb.subjects.get(subject)
        facts = [
            f
            for f in self.kb.facts_of(subject)
            if not _mentions_any(f.object, avoid) and not _mentions_any(self._statement(f), avoid)
        ]
        rng.shuffle(facts)
        out = []
        if info is not None and info.kind in KIND_SENTENCES:
            out.append(sentence_case(KIND_SENTENCES[info.kind].format(subject=subject)))
        pop = _population_sentence(subject, info.population if info else None)
        if pop:
            out.append(pop)
        seen = set()
        for f in facts:
            if f.relation in seen and len(facts) > self.max_context:
                continue  # prefer variety across relations over many neighbours of one
            seen.add(f.relation)
            out.append(self._statement(f))
            if len(out) >= self.max_context:
                break
        return out

    def related_exchanges(
        self, subject: str, avoid: Sequence[str], rng: random.Random, k: int = 2, skip_relation: str | None = None
    ):
        """(question, answer) pairs about other facts of the subject, for dialogue probes.

        `skip_relation` (the edited relation) is left out: an earlier answer such as "A country that shares a
        border with Hungary is Ukraine." would put the edit prompt into the assistant's mouth."""
        facts = [
            f
            for f in self.kb.facts_of(subject)
            if f.relation != skip_relation
            and not _mentions_any(f.object, avoid)
            and not _mentions_any(self._statement(f), avoid)
        ]
        rng.shuffle(facts)
        pairs, used = [], set()
        for f in facts:
            if f.relation in used:
                continue
            used.add(f.relation)
            pairs.append((self.relation(f.relation).question.format(subject=subject), self._statement(f)))
            if len(pairs) == k:
                break
        if not pairs:
            info = self.kb.subjects.get(subject)
            answer = " ".join(
                s
                for s in (
                    sentence_case(KIND_SENTENCES.get(info.kind, "").format(subject=subject)) if info else "",
                    _population_sentence(subject, info.population if info else None) or "",
                )
                if s
            ) or f"{subject} is well documented."
            pairs.append((f"Tell me about {subject}.", answer))
        return pairs

    def noise_passage(self, avoid: Sequence[str], rng: random.Random, max_sentences: int = 3) -> str:
        """An unrelated Wikipedia paragraph (first sentences) naming none of `avoid`."""
        from compute.wiki import sentences

        for _ in range(200):
            par = rng.choice(self.paragraphs)["text"]
            sents = sentences(par)[:max_sentences]
            text = " ".join(sents)
            if 150 <= len(text) <= 700 and not _mentions_any(text, avoid):
                return text
        raise ValueError("could not find an unrelated Wikipedia paragraph: the sample looks damaged")

    def noise_exchanges(self, avoid: Sequence[str], rng: random.Random, k: int = 2):
        """(question, answer) pairs about an unrelated subject of the knowledge base."""
        for _ in range(200):
            other = rng.choice(self.kb.facts).subject
            if _mentions_any(other, avoid):
                continue
            pairs = self.related_exchanges(other, avoid, rng, k)
            if pairs and not any(_mentions_any(q + a, avoid) for q, a in pairs):
                return pairs
        raise ValueError("could not find an unrelated subject for noisy dialogues")

    def neighbours(self, fact, new_object: str, rng: random.Random) -> list:
        """Facts of the same relation about other subjects: same true object first, then others."""
        same = [f for f in self._by_object.get((fact.relation, fact.object), []) if f.subject != fact.subject]
        rng.shuffle(same)
        others = [
            f
            for f in self.kb.facts_by_relation(fact.relation)
            if f.subject != fact.subject and f.object != fact.object and f.object.lower() != new_object.lower()
        ]
        rng.shuffle(others)
        picked, subjects = [], set()
        for f in same + others:
            if f.subject in subjects:
                continue
            subjects.add(f.subject)
            picked.append(f)
            if len(picked) == self.n_neighbours:
                break
        return picked

    def probes(self, fact, new_object: str, seed: int) -> tuple[Probe, ...]:
        """Probes of every rephrase type (design order) plus neighbourhood probes for one edit."""
        rel = self.relation(fact.relation)
        s, t, nw = fact.subject, fact.object, new_object
        avoid = [t, *fact.object_aliases, nw, *self.kb.aliases_of(nw)]
        rng = stable_rng(seed, "probes", fact.relation, s)
        prompt = rel.prompt.format(subject=s)
        question = rel.question.format(subject=s)
        cloze = cloze_request(rel.cloze.format(subject=s))
        passage = " ".join(self.related_sentences(s, avoid, rng))
        noise = self.noise_passage(avoid + [s], rng)
        heading = f"{sentence_case(s)}\n"
        chat_related = self.related_exchanges(s, avoid, rng, skip_relation=fact.relation)
        chat_noise = self.noise_exchanges(avoid + [s], rng)

        def turns(pairs):
            return [m for q, a in pairs for m in (("user", q), ("assistant", a))]

        def chat(prior, question_text):
            """The exchange, then the user's question, then an empty assistant turn: the model answers freely."""
            return render_chat(self.tokenizer, [*turns(prior), ("user", question_text)])

        intro = [("user", f"I have some questions about {s}."), ("assistant", "Sure, ask away.")]
        texts: dict[str, list[str]] = {
            "plain": [prompt],
            "paraphrase": [p.format(subject=s) for p in rel.paraphrases],
            "cloze": [chat([], cloze)],
            "context": [f"{passage}\n{prompt}"],
            "context_cloze": [chat([], f"{passage}\n\n{cloze}")],
            "context_pronoun": [f"{passage}\n{rel.pronoun_prompt}"],
            "noisy_context": [f"{noise}\n{prompt}"],
            "noisy_context_cloze": [chat([], f"{noise}\n\n{cloze}")],
            "noisy_context_pronoun": [f"{heading}{noise}\n{rel.pronoun_prompt}"],
            "dialogue": [chat(chat_related, question)],
            "dialogue_cloze": [chat(chat_related, cloze)],
            "dialogue_pronoun": [chat(chat_related, rel.pronoun_question)],
            "noisy_dialogue": [chat(chat_noise, question)],
            "noisy_dialogue_cloze": [chat(chat_noise, cloze)],
            "noisy_dialogue_pronoun": [
                render_chat(self.tokenizer, [*intro, *turns(chat_noise), ("user", rel.pronoun_question)])
            ],
            "doubt": [
                render_chat(
                    self.tokenizer,
                    [("user", question), ("assistant", ANSWER_SLOT), ("user", f"{DOUBT_PUSHBACK} {question}")],
                )
            ],
        }
        missing = [r for r in REPHRASE_TYPES if r not in texts]
        if missing:
            raise ValueError(f"no probe builder for rephrase types {missing}")
        probes = [
            Probe(rtype, text, t, nw, needs_answer=(rtype == "doubt"))
            for rtype in REPHRASE_TYPES
            for text in texts[rtype]
        ]
        probes += [
            Probe(NEIGHBOURHOOD, rel.prompt.format(subject=f.subject), f.object, nw)
            for f in self.neighbours(fact, nw, rng)
        ]
        return tuple(probes)

    def build(
        self,
        n: int,
        seed: int = 0,
        relations: Sequence[str] | None = None,
        case_set: str | None = None,
        balanced: bool = True,
    ) -> list[EditCase]:
        """Sample n facts and turn each into an EditCase with all its probes."""
        case_set = case_set or f"kb-n{n}-s{seed}"
        cases = []
        for fact, quartile in self.sample(n, seed, relations, balanced):
            cases.append(self.case(fact, seed, case_set, quartile))
        return cases

    def custom_case(
        self, subject: str, relation: str, new_object: str, true_object: str | None = None, case_set: str = "demo"
    ) -> EditCase:
        """A case for a user's edit request: the relation gives the templates; the subject may be new to the
        knowledge base, in which case `true_object` must be given."""
        from compute.kb import Fact

        rel = self.relation(relation)  # unknown relation -> ValueError listing the known ones
        known = [f for f in self.kb.facts_of(subject) if f.relation == relation]
        if true_object is None:
            if not known:
                raise ValueError(
                    f"{subject!r} has no {relation} fact in the knowledge base: give its true object as well"
                )
            fact = known[0]
        else:
            fact = next((f for f in known if f.object.lower() == true_object.lower()), None)
            fact = fact or Fact(relation, subject, true_object, tuple(self.kb.aliases_of(true_object)), 0)
        validate_request(subject, rel.prompt.format(subject=subject), new_object, fact.object)
        return self.case(fact, 0, case_set, None, new_object=new_object)

    def case(
        self, fact, seed: int, case_set: str, quartile: int | None = None, new_object: str | None = None
    ) -> EditCase:
        """One case for one fact (the new object drawn from the seed unless given)."""
        new = new_object or self.new_object(fact, seed)
        subj = self.kb.subjects.get(fact.subject)  # None for a subject new to the knowledge base
        digest = hashlib.sha256(f"{case_set}\x1f{fact.relation}\x1f{fact.subject}".encode()).hexdigest()[:8]
        return EditCase(
            case_id=f"{fact.relation}:{fact.subject}:{digest}",
            case_set=case_set,
            source="kb",
            relation=fact.relation,
            subject=fact.subject,
            prompt=self.relation(fact.relation).prompt.format(subject=fact.subject),
            true_object=fact.object,
            true_aliases=tuple(fact.object_aliases),
            new_object=new,
            new_aliases=tuple(self.kb.aliases_of(new)),
            features={
                "frequency": subj.frequency if subj else None,
                "connection": subj.connection if subj else None,
                "cooccurrence": fact.cooccurrence if subj else None,
                "population": subj.population if subj else None,
            },
            quartile=quartile,
            seed=seed,
            probes=self.probes(fact, new, seed),
        )


def probes_digest(cases: Sequence[EditCase], rephrase_types: Iterable[str] | None = None) -> str:
    """A short fingerprint of the probe texts of `cases` (of `rephrase_types`, default all): two runs with the same
    digest measured the same wording, so an unedited baseline can be matched to the probes a run edited on."""
    wanted = None if rephrase_types is None else set(rephrase_types)
    h = hashlib.sha256()
    for case in sorted(cases, key=lambda c: c.case_id):
        for p in case.probes:
            if wanted is None or p.rephrase_type in wanted:
                h.update("\x1f".join((case.case_id, p.rephrase_type, p.text, p.target_true, p.target_new)).encode())
                h.update(b"\x1e")
    return h.hexdigest()[:16]


def case_from_rows(row: dict, probe_rows: Sequence[dict]) -> EditCase:
    """Rebuild an EditCase from store rows (JSON columns may be strings or lists)."""
    import json

    def names(v):
        if v is None:
            return ()
        return tuple(json.loads(v) if isinstance(v, str) else v)

    def num(v):
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else v

    probes = tuple(
        Probe(p["rephrase_type"], p["text"], p["target_true"], p["target_new"], bool(p["needs_answer"]))
        for p in sorted(probe_rows, key=lambda p: p["probe_id"])
    )
    return EditCase(
        case_id=row["case_id"],
        case_set=row["case_set"],
        source=row["source"],
        relation=row.get("relation"),
        subject=row["subject"],
        prompt=row["prompt"],
        true_object=row["true_object"],
        true_aliases=names(row.get("true_aliases")),
        new_object=row["new_object"],
        new_aliases=names(row.get("new_aliases")),
        features={k: num(row.get(k)) for k in ("frequency", "connection", "cooccurrence", "population")},
        quartile=num(row.get("popularity_quartile")),
        seed=num(row.get("seed")),
        probes=probes,
    )

"""The general-ability task registry (study C, design.md section 8).

A task is data: its prompt format (instruction, few-shot examples, query template, chat or plain text),
its scoring (options compared by token-averaged NLL, or perplexity of text), metric, chance level,
direction, version and the number of items its quick mode uses, plus a builder that makes its items from
package data (compute.abilities.data). Bump a task's `version` whenever its items, format or quick n
change: stored scores are keyed by it, so old scores are never compared with new ones unnoticed. The item
draw is seeded by `items_version`, bumped only when the items themselves must change.

Version 2 of every task (issue 19, point 12) keeps version 1's items and format and raises quick mode's n
so that it has at least 80% power to detect a 0.1 accuracy drop (a 10% perplexity rise) from the unedited
model's score, by a two-sided one-sample z-test at alpha 0.05 (compute.abilities.power, `python -m compute
abilities power`). nli has only 184 items, so its quick mode uses all of them: 79% by the closed form,
81% exactly. Version 1's quick n was 80/30/40/30/20/40/30/20/20 in the table's order, with 13-75% power.

Study C measured eight categories (reasoning, NLI, open-domain QA, closed-domain QA, dialogue,
summarisation, NER, sentiment) on 1.5B-7B models with public benchmarks. A 135M model is at chance on
most of those benchmarks, and nothing may be downloaded, so each of our tasks stands in for one category
with data that ships in packages or is built from the knowledge base, or is marked "own". Every task
here scores above chance on the unedited default model with its 95% CI clear of chance (tests check it);
a task that could not get there was replaced, not kept.

| task | stands for | items (full / quick) | chance | default model, full mode (95% CI) |
|---|---|---|---|---|
| sentiment: Pang & Lee review sentences, zero-shot | sentiment | 200 / 160 | 0.5 | 0.745 (0.680-0.800) |
| analogy: questions-words.txt, grammar and family | reasoning | 285 / 45 | 0.25 | 0.972 (0.946-0.986) |
| nli: complete a hypothesis the premise entails | NLI | 184 / 184 | 0.25 | 0.625 (0.553-0.692) |
| closed_book_qa: questions on known KB facts | open-domain QA | 214 / 105 | 0.25 | 0.869 (0.817-0.908) |
| reading: passage on an invented country | closed-domain QA | 150 / 36 | 0.25 | 0.973 (0.933-0.990) |
| entity_typing: country, city, US state or element | NER | 225 / 176 | 0.25 | 0.707 (0.644-0.762) |
| dialogue_memory: where does my sister live? | dialogue | 240 / 162 | 0.25 | 0.738 (0.678-0.789) |
| topic: mini 20-newsgroups, religion or space | own | 187 / 92 | 0.5 | 0.893 (0.841-0.930) |
| lm_perplexity: Lee news corpus, 64 tokens each | own | 300 / 250 | vocabulary size | 48.2 (45.3-51.1) |

Summarisation has no stand-in: no summaries ship in the installed packages, and picking a title or a
topic for a text measures topic identification, which `topic` covers and labels as our own. Replaced
along the way: a yes/no entailment format (the model answered "no" to everything, or flipped with the
order of the few-shot examples), four-shot sentiment (62%, against 73% zero-shot on the same 120
items), and a reading task on two invented countries per passage (53%, no better than copying either
object of the passage).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from compute.abilities import data
from compute.abilities.data import Item, Sources
from compute.cases import render_chat, stable_rng

STUDY_C_CATEGORIES = ("reasoning", "NLI", "open-domain QA", "closed-domain QA", "dialogue", "summarisation",
                      "NER", "sentiment")
OWN = "own"
SCORINGS = ("choice", "perplexity")
METRICS = {"choice": "accuracy", "perplexity": "perplexity"}


@dataclass(frozen=True)
class Task:
    """One ability task: prompt format, scoring, metric, chance, direction, version and its item builder.

    Prompt of a plain-text item: `instruction` + each shot rendered as `template` + " " + its answer +
    `separator`, then the item's `template` (the prefix up to the item is shared and run once). A chat
    task renders the item's earlier turns and the user message `template` with the model's chat template,
    and opens the assistant turn with `stem`. Options are compared after the prompt by token-averaged
    NLL (`norm="mean"`) or summed log-probability (`norm="sum"`). A perplexity task scores the first
    `max_tokens` tokens of each item's text.
    """

    name: str
    category: str  # what the task measures, in our words
    study_c: str  # the study-C category it stands for, or "own"
    description: str
    version: str
    scoring: str  # "choice" | "perplexity"
    build: Callable[["Task", Sources], tuple[list[Item], list[Item]]] = field(repr=False)
    quick_n: int = 60
    items_version: str = "1"  # seeds the item draw: bump it (and `version`) only when the items must change
    template: str = ""
    instruction: str = ""
    separator: str = "\n\n"
    chat: bool = False
    stem: str = ""
    n_options: int = 0
    norm: str = "mean"
    chance: float | None = None  # None: set by the model (perplexity: uniform over its vocabulary)
    higher_is_better: bool = True
    max_tokens: int = 128  # perplexity tasks: tokens scored per item
    source: str = ""  # where the items come from

    def __post_init__(self):
        if self.scoring not in SCORINGS:
            raise ValueError(f"task {self.name}: unknown scoring {self.scoring!r}; use one of {SCORINGS}")
        if self.study_c not in (*STUDY_C_CATEGORIES, OWN):
            raise ValueError(f"task {self.name}: study-C category {self.study_c!r} is none of "
                             f"{', '.join(STUDY_C_CATEGORIES)} or {OWN!r}")
        if self.scoring == "choice" and (self.n_options < 2 or self.chance is None):
            raise ValueError(f"task {self.name}: a choice task needs n_options >= 2 and a chance level")
        if self.norm not in ("mean", "sum"):
            raise ValueError(f"task {self.name}: norm must be 'mean' or 'sum', got {self.norm!r}")

    @property
    def metric(self) -> str:
        return METRICS[self.scoring]

    def shots_and_items(self, sources: Sources | None = None) -> tuple[list[Item], list[Item]]:
        """(few-shot examples, every item), deterministic for a task version; checked for option counts."""
        shots, items = self.build(self, sources or Sources())
        if not items:
            raise ValueError(f"task {self.name}: its builder made no items")
        if self.scoring == "choice":
            bad = [it.uid for it in items if len(it.options) != self.n_options]
            bad += [s.uid for s in shots if not s.options]
            if bad:
                raise ValueError(f"task {self.name}: items {bad[:3]} do not have {self.n_options} options")
        return shots, items

    def items(self, sources: Sources | None = None, full: bool = True) -> list[Item]:
        """Every item (full mode) or the first `quick_n` (quick mode)."""
        items = self.shots_and_items(sources)[1]
        return items if full else items[: self.quick_n]

    def facts(self, sources: Sources | None = None) -> set[tuple[str, str]]:
        """(subject, relation) pairs of knowledge-base facts this task's shots and items state or ask."""
        shots, items = self.shots_and_items(sources)
        return {pair for it in [*shots, *items] for pair in it.facts}

    # ---- prompts -------------------------------------------------------------------------------------

    def query(self, item: Item) -> str:
        return self.template.format(**item.fields)

    def prefix(self, shots: list[Item]) -> str:
        """The text shared by every plain-text item: instruction and answered few-shot examples."""
        return self.instruction + "".join(f"{self.query(s)} {s.target}{self.separator}" for s in shots)

    def prompts(self, items: list[Item], shots: list[Item], tokenizer) -> tuple[str, list[str]]:
        """(shared prefix, one query per item): prefix + query is each item's whole prompt."""
        if not self.chat:
            return self.prefix(shots), [self.query(it) for it in items]
        shot_turns = [m for s in shots for m in (("user", self.query(s)),
                                                  ("assistant", f"{self.stem.format(**s.fields)} {s.target}"))]
        full = [render_chat(tokenizer, [*shot_turns, *it.turns, ("user", self.query(it))],
                            self.stem.format(**it.fields)) for it in items]
        head = _chat_head(tokenizer, shot_turns)
        if not head or not all(f.startswith(head) and len(f) > len(head) for f in full):
            return "", full
        return head, [f[len(head):] for f in full]


_MARK = "\ue000"  # a private-use character: stands for the first user message when finding the chat head


def _chat_head(tokenizer, shot_turns: list[tuple[str, str]]) -> str:
    """What every conversation of a chat task starts with, whatever its items (so quick and full mode split
    prompts identically): the rendering up to the first user message after the shots, cut back to just
    after a line break (a clean token boundary); "" if there is none."""
    text = render_chat(tokenizer, [*shot_turns, ("user", _MARK)], "")
    head = text[: text.index(_MARK)] if _MARK in text else ""
    cut = head.rfind("\n")
    return head[: cut + 1] if cut >= 0 else ""


# ---- builders ----------------------------------------------------------------------------------------------


def _seed(task: Task) -> str:
    return f"{task.name}-v{task.items_version}"


def _build_sentiment(task: Task, sources: Sources):
    return data.sentiment_items(_seed(task), n_shots=0)


_ANALOGY_SECTIONS = ("family", "gram1-adjective-to-adverb", "gram2-opposite", "gram3-comparative",
                     "gram4-superlative", "gram5-present-participle", "gram7-past-tense", "gram8-plural",
                     "gram9-plural-verbs")
_ANALOGY_SHOTS = (("hot", "cold", "up", "down"), ("cat", "cats", "mouse", "mice"), ("eat", "ate", "go", "went"))


def _build_analogy(task: Task, sources: Sources):
    shots = [Item(f"shot{i}", {"a": a, "b": b, "c": c}, (d,), 0) for i, (a, b, c, d) in enumerate(_ANALOGY_SHOTS)]
    # shots have one option (their answer): only their answer is rendered
    items = data.analogy_items(_seed(task), _ANALOGY_SECTIONS, per_section=40, n_options=task.n_options,
                               shots=_ANALOGY_SHOTS)
    return shots, items


def _build_lm(task: Task, sources: Sources):
    return [], data.lee_passages(n_words=80)


# ---- knowledge-base tasks ----------------------------------------------------------------------------------

_QA_RELATIONS = ("capital", "continent", "currency", "official_language", "city_country", "element_symbol",
                 "demonym")
_POOL_SIZE = 31  # facts per relation that closed-book QA and NLI may use (30 items and a shot)


def fact_pool(kb, relation: str) -> list:
    """The facts of a relation that the knowledge-base tasks draw on: a seeded sample of `_POOL_SIZE` from
    the `3 * _POOL_SIZE` best-known single-object subjects (by word frequency), so the model can know them,
    while the best-known subjects are not all taken from the edit experiments. Shared by closed-book QA
    and NLI, which keeps the facts they use (`Task.facts`) few."""
    upper = data.best_known(kb, relation, 3 * _POOL_SIZE)
    return stable_rng("ability-fact-pool-v1", relation).sample(upper, min(_POOL_SIZE, len(upper)))


def _kb_choice(task: Task, fact, kb, rng, fields: dict, uid: str) -> Item:
    options, answer = data.with_answer_at([fact.object, *data.distractors(kb, fact, task.n_options - 1, rng)],
                                          fact.object, rng)
    return Item(uid, fields, options, answer, facts=((fact.subject, fact.relation),), group=fact.relation)


def _build_closed_book(task: Task, sources: Sources):
    """Questions on the pooled facts (`fact_pool`) of seven relations, with three other objects of the
    relation as distractors. The last item of each of the first three relations is a shot."""
    from compute.relations import get_relation

    kb = sources.kb
    groups: dict[str, list[Item]] = {}
    for relation in _QA_RELATIONS:
        rng = stable_rng(_seed(task), relation)
        rel = get_relation(relation)
        groups[relation] = [_kb_choice(task, f, kb, rng, {"question": rel.question.format(subject=f.subject)},
                                       f"qa-{relation}-{f.subject}") for f in fact_pool(kb, relation)]
    shots = [groups[r].pop() for r in _QA_RELATIONS[:3]]
    return shots, data.interleave(groups)


_READING_ITEMS = 150
_READING_SHOTS = 3
_READING_RELATIONS = ("capital", "continent", "currency", "official_language")


def _build_reading(task: Task, sources: Sources):
    """A passage of three facts about an invented country (relations and objects from the knowledge base),
    then a question on one of them. The options are the stated object and three other objects of the
    relation, none in the passage: the answer can only come from reading the passage, since the country
    does not exist."""
    from compute.relations import get_relation

    kb = sources.kb
    rng = stable_rng(_seed(task), "passages")
    n = _READING_ITEMS + _READING_SHOTS
    names = data.invented_names(kb, n, rng)
    objects = {r: kb.objects_of(r) for r in _READING_RELATIONS}
    groups: dict[str, list[Item]] = {}
    for i, name in enumerate(names):
        stated = rng.sample(_READING_RELATIONS, 3)
        given = {r: rng.choice(objects[r]) for r in stated}
        sentences = [data.sentence_case(f"{get_relation(r).prompt.format(subject=name)} {given[r]}.") for r in stated]
        asked = stated[i % 3]  # the first, second or third sentence in turn
        pool = [o for o in objects[asked] if o != given[asked]]
        options, answer = data.with_answer_at([given[asked], *rng.sample(pool, task.n_options - 1)], given[asked], rng)
        question = get_relation(asked).question.format(subject=name)
        groups.setdefault(asked, []).append(Item(f"rc{i:03d}", {"passage": " ".join(sentences), "question": question},
                                                 options, answer, group=asked))
    items = data.interleave(groups)
    return [items.pop() for _ in range(_READING_SHOTS)], items


_KINDS = {"country": "country", "city": "city", "us_state": "US state", "element": "chemical element"}


def _build_entity_typing(task: Task, sources: Sources):
    """Names of knowledge-base subjects, typed as one of four kinds (the kinds are the options)."""
    kb = sources.kb
    rng = stable_rng(_seed(task), "entities")
    kinds = list(_KINDS.values())
    groups: dict[str, list[Item]] = {}
    for kind, label in _KINDS.items():
        names = sorted(s for s, info in kb.subjects.items() if info.kind == kind)
        if kind == "city":  # the better-known cities: a city's name alone should identify it
            names = sorted(names, key=lambda s: -kb.subjects[s].frequency)[:200]
        rng.shuffle(names)
        groups[kind] = [Item(f"et-{kind}-{s}", {"name": data.sentence_case(s)}, tuple(kinds), kinds.index(label),
                             group=kind) for s in names[:60]]
    shots = [groups[k].pop() for k in ("city", "element", "country", "us_state")]
    return shots, data.interleave(groups)


_RELATIVES = ("sister", "brother", "aunt", "uncle", "cousin", "neighbour", "friend", "colleague")
_DIALOGUE_ITEMS = 240


def _build_dialogue(task: Task, sources: Sources):
    """The user tells the assistant where two people live, the assistant replies, and the user asks where one
    of them lives (the first or the second, alternately). The options are both cities of the conversation
    and two other well-known single-word city names, so copying a city from the context is right only half
    the time."""
    kb = sources.kb
    rng = stable_rng(_seed(task), "dialogue")
    cities = sorted((s for s, info in kb.subjects.items() if info.kind == "city"),
                    key=lambda s: -kb.subjects[s].frequency)[:300]
    cities = [c for c in cities if c.isascii() and " " not in c]
    items = []
    for i in range(_DIALOGUE_ITEMS):
        who = rng.sample(_RELATIVES, 2)
        places = rng.sample(cities, task.n_options)
        asked = i % 2  # ask about the first or the second person, alternately
        turns = (
            ("user", f"My {who[0]} lives in {places[0]} and my {who[1]} lives in {places[1]}."),
            ("assistant", "That's nice! Do you visit them often?"),
        )
        options, answer = data.with_answer_at(places, places[asked], rng)
        items.append(Item(f"dl{i:03d}", {"who": who[asked]}, options, answer, turns=turns,
                          group=("first", "second")[asked]))
    return [], items


_NLI_RELATIONS = ("capital", "continent", "currency", "official_language", "city_country", "element_symbol")


def _build_nli(task: Task, sources: Sources):
    """Premise: two statements of one relation about two subjects; the asked subject's object is kept
    (even items) or swapped for another object of the relation (odd items: a counterfactual premise).
    Hypothesis: a paraphrase about the asked subject, open at its object. The options are the premise's
    object for it (entailed), the other subject's object (also in the premise), the world's true object
    when the premise was swapped, and others of the relation: neither copying from the premise nor
    knowing the world is enough."""
    from compute.relations import get_relation

    kb = sources.kb
    groups: dict[str, list[Item]] = {}
    for relation in _NLI_RELATIONS:
        rng = stable_rng(_seed(task), relation)
        rel = get_relation(relation)
        facts = fact_pool(kb, relation)
        made = []
        for j, f in enumerate(facts):
            counterfactual = j % 2 == 1
            other = rng.choice([g for g in facts if g.subject != f.subject and g.object.lower()
                                not in data.true_names(kb, f.subject, relation)])
            swapped, *more = data.distractors(kb, f, task.n_options - 2, rng, exclude=[other.object])
            p_obj = swapped if counterfactual else f.object
            statements = [data.sentence_case(f"{rel.prompt.format(subject=f.subject)} {p_obj}."), data.statement(other)]
            if (j // 2) % 2:
                statements.reverse()
            hyp = data.sentence_case(rng.choice(rel.paraphrases).format(subject=f.subject))
            options = [p_obj, other.object, f.object if counterfactual else swapped, *more]
            opts, answer = data.with_answer_at(options, p_obj, rng)
            made.append(Item(f"nli-{relation}-{f.subject}", {"premise": " ".join(statements), "hypothesis": hyp},
                             opts, answer, facts=((f.subject, relation), (other.subject, relation)),
                             group=f"{relation}-{'cf' if counterfactual else 'true'}"))
        groups[relation] = made
    shots = [groups["capital"].pop(0), groups["continent"].pop(1)]  # one true premise, one counterfactual
    return shots, data.interleave(groups)


def _build_topic(task: Task, sources: Sources):
    posts = data.newsgroup_posts()
    label = {"alt.atheism": "religion", "sci.space": "space"}
    groups: dict[str, list[Item]] = {}
    for i, (group, body) in enumerate(posts):
        if len(body.split()) < 15:
            continue
        groups.setdefault(group, []).append(
            Item(f"ng{i:03d}", {"text": data.first_words(body, 40)}, ("religion", "space"),
                 ("religion", "space").index(label[group]), group=group))
    rng = stable_rng(_seed(task), "posts")
    for rows in groups.values():
        rng.shuffle(rows)
    shots = [groups["alt.atheism"].pop(), groups["sci.space"].pop()]
    return shots, data.interleave(groups)


# ---- the registry -------------------------------------------------------------------------------------------

_ALL = (
    Task(
        name="sentiment", category="sentiment", study_c="sentiment", version="2", scoring="choice",
        description="movie-review sentence polarity (Pang & Lee sample in gensim), zero-shot with an instruction",
        source="gensim test data: pang_lee_polarity.cor",
        instruction="Classify the sentiment of each movie review as positive or negative.\n\n",
        template="Review: {text}\nSentiment:", n_options=2, chance=0.5, quick_n=160,
        build=_build_sentiment,
    ),
    Task(
        name="analogy", category="word analogies", study_c="reasoning", version="2", scoring="choice",
        description="a is to b as c is to ? (questions-words.txt, grammatical and family sections), four options",
        source="gensim test data: questions-words.txt",
        instruction="Complete each analogy.\n\n", template="{a} is to {b} as {c} is to", separator="\n",
        n_options=4, chance=0.25, quick_n=45, build=_build_analogy,
    ),
    Task(
        name="nli", category="entailment", study_c="NLI", version="2", scoring="choice",
        description="a premise of two statements (one relation, two subjects; half of the asked statements "
                    "counterfactual), a paraphrased hypothesis open at its object: which of four objects makes "
                    "it follow from the premise",
        source="knowledge base",
        instruction="Complete each hypothesis so that it follows from its premise, even where the premise "
                    "is false.\n\n",
        template="Premise: {premise}\nHypothesis: {hypothesis}", n_options=4, chance=0.25, quick_n=184,
        build=_build_nli,
    ),
    Task(
        name="closed_book_qa", category="closed-book QA", study_c="open-domain QA", version="2", scoring="choice",
        description="questions on well-known facts of seven relations, four options of the same relation, "
                    "three-shot",
        source="knowledge base",
        template="Question: {question}\nAnswer:", n_options=4, chance=0.25, quick_n=105, build=_build_closed_book,
    ),
    Task(
        name="reading", category="reading comprehension", study_c="closed-domain QA", version="2",
        scoring="choice",
        description="a passage of three facts about an invented country, then a question on one of them; "
                    "four options of the relation, only the answer in the passage; three-shot",
        source="knowledge-base relations and objects, invented subjects",
        template="{passage}\nQuestion: {question}\nAnswer:", n_options=4, chance=0.25, quick_n=36,
        build=_build_reading,
    ),
    Task(
        name="entity_typing", category="entity typing", study_c="NER", version="2", scoring="choice",
        description="is a name a country, a city, a US state or a chemical element? four-shot",
        source="knowledge base (subject names and kinds)",
        instruction="Give the type of each named entity.\n\n", template="Entity: {name}\nType:", separator="\n",
        n_options=4, chance=0.25, quick_n=176, build=_build_entity_typing,
    ),
    Task(
        name="dialogue_memory", category="dialogue context", study_c="dialogue", version="2", scoring="choice",
        description="in a chat, the user says where two people live, the assistant replies, the user asks where "
                    "one of them lives; four cities, two of them named in the conversation",
        source="knowledge-base city names, chat template",
        template="Where does my {who} live?", chat=True, stem="Your {who} lives in", n_options=4, chance=0.25,
        quick_n=162, build=_build_dialogue,
    ),
    Task(
        name="topic", category="topic classification", study_c=OWN, version="2", scoring="choice",
        description="Usenet post (mini 20-newsgroups in gensim): religion or space? two-shot",
        source="gensim test data: mini_newsgroup",
        instruction="Is each post about religion or about space?\n\n", template="Post: {text}\nTopic:",
        n_options=2, chance=0.5, quick_n=92, build=_build_topic,
    ),
    Task(
        name="lm_perplexity", category="language modelling", study_c=OWN, version="2", scoring="perplexity",
        description="perplexity of the first 64 tokens of news articles (Lee background corpus in gensim); "
                    "chance = uniform over the model's vocabulary",
        source="gensim test data: lee_background.cor",
        higher_is_better=False, quick_n=250, max_tokens=64, build=_build_lm,
    ),
)

TASKS: dict[str, Task] = {task.name: task for task in _ALL}


def get_task(name: str) -> Task:
    """The task called `name`; an unknown name raises ValueError listing the known ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown ability task {name!r}; known tasks: {', '.join(TASKS)}") from None

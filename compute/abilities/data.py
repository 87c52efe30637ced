"""Item builders of the general-ability suite, from data that ships inside installed packages.

Every builder is deterministic: draws come from `compute.cases.stable_rng` seeded by the task's name and
version, so a task version always has the same items in the same order. Items are interleaved over their
strata (labels, sections, relations, entity kinds), so the first `quick_n` items of a task (its quick
mode) are balanced as well as the full set.

Sources:

- gensim's test data (`gensim.test.utils.datapath`): `pang_lee_polarity.cor` (200 labelled movie-review
  sentences), `questions-words.txt` (word analogies), `lee_background.cor` (300 news articles), and
  `mini_newsgroup` (200 Usenet posts from alt.atheism and sci.space, a pickled scikit-learn Bunch read
  with an unpickler that allows nothing but builtins and numpy arrays);
- the knowledge base (compute.kb): its facts for closed-book QA and the premise/hypothesis pairs, its
  relations and objects for reading passages about invented countries, its subject names and kinds for
  entity typing, and its city names for the dialogue-memory conversations.

Items that state or ask knowledge-base facts list them as (subject, relation) pairs (`Item.facts`), so
that edit experiments can leave those facts out.
"""

from __future__ import annotations

import io
import pickle
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from compute.cases import sentence_case, stable_rng


@dataclass(frozen=True)
class Item:
    """One test item: template fields, answer options and the index of the right one.

    `turns` are earlier (role, text) chat turns for tasks asked inside a chat template; `facts` are the
    (subject, relation) pairs of knowledge-base facts the item states or asks about.
    """

    uid: str
    fields: dict[str, str]
    options: tuple[str, ...] = ()
    answer: int = 0
    turns: tuple[tuple[str, str], ...] = ()
    facts: tuple[tuple[str, str], ...] = ()
    group: str = ""  # the stratum the item was drawn from (label, section, relation, kind)

    def __post_init__(self):
        if self.options and not 0 <= self.answer < len(self.options):
            raise ValueError(f"item {self.uid}: answer index {self.answer} outside its {len(self.options)} options")
        if len(set(o.lower() for o in self.options)) != len(self.options):
            raise ValueError(f"item {self.uid}: options repeat: {self.options}")

    @property
    def target(self) -> str:
        return self.options[self.answer]


class Sources:
    """Where builders read from: the knowledge base, loaded on first use from `cache_dir` (default:
    $EDITSCOPE_CACHE or ~/.cache/editscope) unless one is given."""

    def __init__(self, cache_dir: Path | None = None, kb=None):
        self.cache_dir = cache_dir
        self._kb = kb

    @property
    def kb(self):
        if self._kb is None:
            from compute.kb import load_knowledge_base

            self._kb = load_knowledge_base(self.cache_dir)
        return self._kb


def gensim_file(name: str) -> Path:
    """A file of gensim's bundled test data, or FileNotFoundError saying to reinstall gensim."""
    from gensim.test.utils import datapath

    path = Path(datapath(name))
    if not path.exists():
        raise FileNotFoundError(f"{name} is missing from gensim's test data: reinstall gensim "
                                "(requirements-compute.txt)")
    return path


def interleave(groups: dict[str, list]) -> list:
    """Round-robin over the groups (in sorted key order), so every prefix of the result is balanced."""
    keys = sorted(groups)
    out, i = [], 0
    while any(i < len(groups[k]) for k in keys):
        out += [groups[k][i] for k in keys if i < len(groups[k])]
        i += 1
    return out


def with_answer_at(options: Sequence[str], answer: str, rng) -> tuple[tuple[str, ...], int]:
    """The options shuffled by `rng`; returns them and the index of `answer`."""
    opts = list(options)
    rng.shuffle(opts)
    return tuple(opts), opts.index(answer)


# ---- sentiment: pang_lee_polarity.cor ------------------------------------------------------------------------


def polarity_sentences() -> list[tuple[str, str]]:
    """(label, sentence) pairs of gensim's Pang & Lee sample; label is 'positive' or 'negative'."""
    rows = []
    for line in gensim_file("pang_lee_polarity.cor").read_text(encoding="cp1252").splitlines():  # not UTF-8
        label, _, text = line.strip().partition(" ")
        if not text:
            continue
        name = {"__label__pos": "positive", "__label__neg": "negative"}.get(label)
        if name is None:
            raise ValueError(f"pang_lee_polarity.cor: unexpected label {label!r}")
        rows.append((name, _detokenise(text)))
    return rows


def _detokenise(text: str) -> str:
    """Undo the corpus's spaces before punctuation ("funny ." -> "funny.")."""
    text = re.sub(r"\s+([.,;:!?)'])", r"\1", text.strip())
    text = re.sub(r"([(])\s+", r"\1", text)
    return re.sub(r"\s+n't\b", "n't", text)


def sentiment_items(seed: str, n_shots: int) -> tuple[list[Item], list[Item]]:
    """(shots, items) for the sentiment task: shots alternate negative/positive and are not items."""
    by_label: dict[str, list[Item]] = {}
    for i, (label, text) in enumerate(polarity_sentences()):
        by_label.setdefault(label, []).append(
            Item(f"pl{i:03d}", {"text": text}, ("negative", "positive"), ("negative", "positive").index(label),
                 group=label))
    rng = stable_rng(seed, "sentiment")
    for rows in by_label.values():
        rng.shuffle(rows)
    shots = []
    for j in range(n_shots):
        label = ("negative", "positive")[j % 2]
        shots.append(by_label[label].pop(0))
    return shots, interleave(by_label)


# ---- topic classification: mini_newsgroup ----------------------------------------------------------------


class _BunchUnpickler(pickle.Unpickler):
    """Reads scikit-learn's pickled Bunch without scikit-learn: a Bunch becomes a dict; only builtins and
    numpy's array reconstruction are allowed, anything else is refused."""

    _ALLOWED = {("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor"), ("__builtin__", "dict"),
                ("builtins", "dict"), ("__builtin__", "object"), ("builtins", "object"),
                ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if name == "Bunch" and module.startswith("sklearn"):
            return dict
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"mini_newsgroup: refusing to load {module}.{name}")


def newsgroup_posts() -> list[tuple[str, str]]:
    """(newsgroup, body) of gensim's mini 20-newsgroups sample, headers, quoted lines and signatures removed."""
    raw = zlib.decompress(gensim_file("mini_newsgroup").read_bytes())
    bunch = _BunchUnpickler(io.BytesIO(raw), encoding="latin1").load()
    names = list(bunch["target_names"])
    out = []
    for text, target in zip(bunch["data"], bunch["target"]):
        _, _, body = text.partition("\n\n")
        lines = []
        for line in body.splitlines():
            s = line.strip()
            if s.startswith((">", "|", ":")) or re.search(r"(writes|wrote|says):\s*$", s) or s.startswith("In article"):
                continue
            if s in ("--", "-- "):
                break
            lines.append(s)
        out.append((names[int(target)], re.sub(r"\s+", " ", " ".join(lines)).strip()))
    return out


def first_words(text: str, n_words: int) -> str:
    """The text cut after `n_words` words, ending at the last sentence end inside them when there is one."""
    words = text.split()
    if len(words) <= n_words:
        return text
    cut = " ".join(words[:n_words])
    end = max(cut.rfind(". "), cut.rfind("? "), cut.rfind("! "))
    return cut[: end + 1] if end > len(cut) // 2 else cut + " ..."


# ---- analogies: questions-words.txt ------------------------------------------------------------------------


def analogy_sections() -> dict[str, list[tuple[str, str, str, str]]]:
    """questions-words.txt as {section: [(a, b, c, d)]} (a is to b as c is to d)."""
    sections: dict[str, list[tuple[str, str, str, str]]] = {}
    current = None
    for line in gensim_file("questions-words.txt").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith(":"):
            current = line[1:].strip()
            sections.setdefault(current, [])
        elif line and current is not None:
            words = line.split()
            if len(words) == 4:
                sections[current].append(tuple(words))  # type: ignore[arg-type]
    return sections


def analogy_items(seed: str, sections: Sequence[str], per_section: int, n_options: int,
                  shots: Sequence[tuple[str, str, str, str]]) -> list[Item]:
    """Analogy questions: options are d and other answers (d-words) of the same section that are none of a, b, c."""
    data = analogy_sections()
    missing = [s for s in sections if s not in data]
    if missing:
        raise ValueError(f"questions-words.txt has no section(s) {missing}")
    shot_words = {w.lower() for q in shots for w in q}
    groups: dict[str, list[Item]] = {}
    for section in sections:
        rng = stable_rng(seed, "analogy", section)
        rows = [q for q in data[section] if not ({w.lower() for w in q} & shot_words)]
        rng.shuffle(rows)
        answers = sorted({q[3] for q in data[section]})
        picked, seen = [], set()
        for a, b, c, d in rows:
            if (c, d) in seen:  # one question per (c, d): the same answer asked twice adds little
                continue
            seen.add((c, d))
            pool = [w for w in answers if w.lower() not in {a.lower(), b.lower(), c.lower(), d.lower()}]
            if len(pool) < n_options - 1:
                continue
            options, answer = with_answer_at([d, *rng.sample(pool, n_options - 1)], d, rng)
            picked.append(Item(f"an-{section}-{a}-{b}-{c}-{d}", {"a": a, "b": b, "c": c}, options, answer,
                               group=section))
            if len(picked) == per_section:
                break
        groups[section] = picked
    return interleave(groups)


# ---- language modelling: lee_background.cor -----------------------------------------------------------------


def lee_passages(n_words: int) -> list[Item]:
    """The opening of each article of gensim's Lee background corpus (about `n_words` words, cut at a
    sentence end), in file order."""
    items = []
    for i, line in enumerate(gensim_file("lee_background.cor").read_text(encoding="utf-8").splitlines()):
        text = re.sub(r"\s+", " ", line).strip()
        if len(text.split()) >= 20:
            items.append(Item(f"lee{i:03d}", {"text": first_words(text, n_words)}))
    return items


# ---- knowledge-base helpers ---------------------------------------------------------------------------------


def true_names(kb, subject: str, relation: str) -> set[str]:
    """Lower-cased true objects (and their aliases) of a subject's relation."""
    names: set[str] = set()
    for f in kb.facts_of(subject):
        if f.relation == relation:
            names |= {f.object.lower(), *(a.lower() for a in f.object_aliases)}
    return names


def distractors(kb, fact, k: int, rng, exclude: Iterable[str] = ()) -> list[str]:
    """k other objects of the fact's relation that are no true object (or alias) of the fact's subject and
    none of `exclude` (nor one of their aliases)."""
    banned = true_names(kb, fact.subject, fact.relation) | {e.lower() for e in exclude}
    for e in exclude:
        banned |= {a.lower() for a in kb.aliases_of(e)}
    pool = [o for o in kb.objects_of(fact.relation) if o.lower() not in banned
            and not ({a.lower() for a in kb.aliases_of(o)} & banned)]
    if len(pool) < k:
        raise ValueError(f"relation {fact.relation} has only {len(pool)} other objects; {k} distractors needed")
    return rng.sample(pool, k)


_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr", "kr", "tr", "st")
_VOWELS = ("a", "e", "i", "o", "u")
_CODAS = ("", "", "n", "r", "l", "s")
_SUFFIXES = ("ia", "ania", "istan", "land", "ora", "esh", "ovia", "aria")


def invented_names(kb, n: int, rng) -> list[str]:
    """n distinct invented country-like names ("Brelovia") that are no subject or alias of the knowledge
    base and no English word (wordfreq Zipf frequency 0), so a model cannot know anything about them."""
    import wordfreq

    taken = {name.lower() for name in kb.subjects}
    taken |= {alias.lower() for info in kb.subjects.values() for alias in info.aliases}
    names: list[str] = []
    seen: set[str] = set()
    for _ in range(200 * n):
        stem = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(2))
        name = (stem + rng.choice(_SUFFIXES)).capitalize()
        if name.lower() in seen or name.lower() in taken or wordfreq.zipf_frequency(name, "en") > 0:
            continue
        seen.add(name.lower())
        names.append(name)
        if len(names) == n:
            return names
    raise ValueError(f"could not invent {n} unused names")


def statement(fact) -> str:
    """The fact as a sentence, from its relation's plain prompt."""
    from compute.relations import get_relation

    return sentence_case(f"{get_relation(fact.relation).prompt.format(subject=fact.subject)} {fact.object}.")


def best_known(kb, relation: str, n: int | None = None) -> list:
    """Facts of a relation ordered by the subject's word frequency, most frequent first (single-object
    subjects only, ties by name)."""
    counts: dict[str, int] = {}
    facts = kb.facts_by_relation(relation)
    for f in facts:
        counts[f.subject] = counts.get(f.subject, 0) + 1
    facts = [f for f in facts if counts[f.subject] == 1]
    facts.sort(key=lambda f: (-kb.subjects[f.subject].frequency, f.subject))
    return facts[:n] if n else facts

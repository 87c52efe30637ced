"""IKE: in-context knowledge editing (Zheng et al. 2023, "Can We Edit Factual Knowledge by In-Context
Learning?"). No weight changes: the edit is a text prefix that an evaluator puts before every probe.

The prefix holds k demonstrations built from other edit cases (`ctx.demonstrations`), each a new fact
followed by a prompt that shows how to use it, in three kinds as in the paper:

- copy:   the fact's own prompt answered with the new object;
- update: a paraphrase of the fact's prompt answered with the new object (the edit generalises);
- retain: a neighbourhood prompt (another subject, same relation) answered with its own true object
  (the edit stays local).

It ends with every requested new fact and an open "Prompt: ", so that prefix + probe text reads as one
more demonstration awaiting its object:

    New Fact: The capital of Spain is Berlin.
    Prompt: Spain's capital city is Berlin.

    New Fact: The capital of France is Rome.
    Prompt: The capital of France is

Demonstrations are drawn with a hash-seeded RNG from the pool sorted by case id, so the same seed and pool
give the same prefix on every machine; no demonstration names a requested subject.
The paper retrieves the demonstrations nearest to the request (sentence-embedding kNN); `nearest=True` is
a cheap stand-in that prefers cases whose prompt shares the most words with the request's once the
subjects are removed (mostly: the same relation), the seed breaking ties.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

from compute.cases import NEIGHBOURHOOD, EditCase, stable_rng
from compute.editors.base import EditContext, Editor, EditorError, check_finite, EditRequest, EditResult, register
from compute.models import LoadedModel

NAME = "IKE"
KINDS = ("copy", "update", "retain")


@dataclass(frozen=True)
class IKEHyperParams:
    """Hyperparameters of IKE; see hparams/IKE/<model>.json for where each value comes from.

    Templates take `{prompt}` (text ending right before the object) and `{target}` (the object).
    """

    n_demonstrations: int = 8  # k: demonstrations put before the new fact (fewer if the pool is smaller)
    seed: int = 0  # picks the demonstrations and their paraphrase / neighbour deterministically
    kinds: tuple[str, ...] = ("copy", "update", "retain")  # demonstration i has kind kinds[i % len(kinds)]
    fact_template: str = "New Fact: {prompt} {target}.\n"
    demo_template: str = "Prompt: {prompt} {target}.\n\n"
    query: str = "Prompt: "  # ends the prefix; the probe text follows it
    nearest: bool = False  # True: prefer demonstrations whose prompt shares most words with the request's

    def validate(self) -> None:
        """Refuse values that cannot build a prefix, naming the field."""
        check_finite("IKE", self)
        if not isinstance(self.n_demonstrations, int) or isinstance(self.n_demonstrations, bool):
            raise EditorError(f"IKE field 'n_demonstrations' must be an integer, got {self.n_demonstrations!r}")
        if self.n_demonstrations < 0:
            raise EditorError(f"IKE field 'n_demonstrations' must be >= 0, got {self.n_demonstrations}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise EditorError(f"IKE field 'seed' must be an integer, got {self.seed!r}")
        if not isinstance(self.nearest, bool):
            raise EditorError(f"IKE field 'nearest' must be true or false, got {self.nearest!r}")
        if not isinstance(self.kinds, tuple) or not self.kinds or any(k not in KINDS for k in self.kinds):
            raise EditorError(
                f"IKE field 'kinds' must be a non-empty list drawn from {list(KINDS)}, got {self.kinds!r}"
            )
        for name in ("fact_template", "demo_template"):
            _check_template(name, getattr(self, name), required={"prompt", "target"})
        _check_template("query", self.query, required=set())

    def __post_init__(self):
        if isinstance(self.kinds, list):  # JSON and callers give lists; a tuple keeps the dataclass hashable
            object.__setattr__(self, "kinds", tuple(self.kinds))
        self.validate()


def _check_template(name: str, template, required: set[str]) -> None:
    """A template must be a string whose placeholders are exactly `required`."""
    if not isinstance(template, str):
        raise EditorError(f"IKE field {name!r} must be a string, got {template!r}")
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise EditorError(f"IKE field {name!r} is not a valid template ({exc}): {template!r}") from None
    if fields != required:
        want = ", ".join("{" + f + "}" for f in sorted(required)) or "no placeholders"
        raise EditorError(f"IKE field {name!r} must use {want}, got {template!r}")


def _names_any(text: str, names: Sequence[str]) -> bool:
    """True when the text names any of `names` as a whole word, case-insensitively."""
    return any(re.search(rf"(?<!\w){re.escape(n)}(?!\w)", text, re.IGNORECASE) for n in names)


def _demonstration(case: EditCase, kind: str, hp: IKEHyperParams, rng, avoid: Sequence[str]) -> tuple[str, str]:
    """(text, kind actually used) of one demonstration; a case without paraphrases or neighbours gives copy.

    Texts naming a subject in `avoid` (the requested ones) are never used: a retain demonstration such as
    "The capital of France is Paris." would state the very fact the request changes.
    """
    fact = hp.fact_template.format(prompt=case.prompt, target=case.new_object)
    if kind == "update":
        paraphrases = [p.text for p in case.probes_of("paraphrase") if not _names_any(p.text, avoid)]
        if paraphrases:
            return fact + hp.demo_template.format(prompt=rng.choice(paraphrases), target=case.new_object), kind
    if kind == "retain":
        neighbours = [p for p in case.probes_of(NEIGHBOURHOOD) if not _names_any(p.text, avoid)]
        if neighbours:
            probe = rng.choice(neighbours)
            return fact + hp.demo_template.format(prompt=probe.text, target=probe.target_true), kind
    return fact + hp.demo_template.format(prompt=case.prompt, target=case.new_object), "copy"


def _template_words(prompt: str, subject: str) -> set[str]:
    """The prompt's words without the subject's: what a fact's relation looks like ("capital", "of")."""
    return set(re.findall(r"\w+", prompt.replace(subject, " ").lower()))


def build_prefix(
    requests: Sequence[EditRequest], demonstrations: Sequence[EditCase], hp: IKEHyperParams
) -> tuple[str, list[dict]]:
    """The IKE prefix for a batch of requests, and a record of the demonstrations it used."""
    subjects = sorted({r.subject for r in requests})
    ids = {r.case_id for r in requests if r.case_id}
    pool = sorted(
        (c for c in demonstrations if c.case_id not in ids and not _names_any(c.subject + "\n" + c.prompt, subjects)),
        key=lambda c: c.case_id,
    )
    rng = stable_rng(hp.seed, "ike-demonstrations")
    rng.shuffle(pool)  # the seed decides which demonstrations (or, with `nearest`, which among equals)
    if hp.nearest:
        words = [_template_words(r.prompt, r.subject) for r in requests]
        similarity = {c.case_id: max(len(w & _template_words(c.prompt, c.subject)) for w in words) for c in pool}
        pool.sort(key=lambda c: -similarity[c.case_id])  # stable: ties keep the seeded order
    # Reversed so that, with `nearest`, the most similar demonstration sits right before the new fact.
    chosen = pool[: hp.n_demonstrations][::-1]
    parts, used = [], []
    for i, case in enumerate(chosen):
        text, kind = _demonstration(case, hp.kinds[i % len(hp.kinds)], hp, rng, subjects)
        parts.append(text)
        used.append({"case_id": case.case_id, "kind": kind})
    parts += [hp.fact_template.format(prompt=r.prompt, target=r.target_new) for r in requests]
    parts.append(hp.query)
    return "".join(parts), used


def apply_ike(lm: LoadedModel, requests: Sequence[EditRequest], hp: IKEHyperParams, ctx: EditContext) -> EditResult:
    """Build the in-context prefix; the model is not touched."""
    prefix, used = build_prefix(requests, ctx.demonstrations, hp)
    return EditResult(
        editor=NAME,
        requests=tuple(requests),
        prefix=prefix,
        info={
            "n_demonstrations": len(used),
            "kinds": dict(Counter(d["kind"] for d in used)),
            "demonstrations": used,
            "prefix_tokens": len(lm.tokenizer(prefix, add_special_tokens=False).input_ids),
        },
    )


register(
    Editor(
        name=NAME,
        hparams=IKEHyperParams,
        apply=apply_ike,
        description="in-context editing: demonstrations and the new fact put before every probe",
        changes_weights=False,
    )
)

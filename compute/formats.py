"""Edit cases from the standard public record layouts: CounterFact and zsRE (MEND/ROME JSON files).

CounterFact record (ROME's `counterfact.json`):
    {"case_id": 0, "requested_rewrite": {"prompt": "The mother tongue of {} is", "subject": "Danielle Darrieux",
     "target_new": {"str": "English"}, "target_true": {"str": "French"}, "relation_id": "P103"},
     "paraphrase_prompts": [...], "neighborhood_prompts": [...], ...}
zsRE record (MEND's `zsre_mend_eval.json`):
    {"subject": "Watts Humphrey", "src": "What university did Watts Humphrey attend?",
     "answers": ["Illinois Institute of Technology"], "alt": "University of Michigan",
     "rephrase": "What university did Watts Humphrey take part in?", "loc": "nq question: ...", "loc_ans": "..."}

Such records carry no relation templates, so their cases get the rephrase types that need none:
`plain`, `paraphrase`, `noisy_context` (an unrelated Wikipedia paragraph, then the prompt) and
`neighbourhood`. Popularity: word frequency of the subject; knowledge-base features are left empty.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Sequence

from compute.cases import NEIGHBOURHOOD, EditCase, Probe, stable_rng, validate_request

FORMATS = ("counterfact", "zsre")


class FormatError(ValueError):
    """A record file that does not follow the layout it was loaded as; the message names the record."""


def _read_records(path: Path) -> list[dict]:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FormatError(f"no such file: {path}") from None
    except ValueError as exc:
        raise FormatError(f"{path} is not valid JSON ({exc})") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise FormatError(f"{path} must hold a JSON list of records (objects)")
    return data


def _get(record: dict, path: str, where: str):
    node = record
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            raise FormatError(f"{where}: missing field {path!r}")
        node = node[key]
    return node


def _noise(paragraphs: Sequence[dict], avoid: Sequence[str], rng: random.Random) -> str | None:
    from compute.wiki import sentences

    for _ in range(100):
        text = " ".join(sentences(rng.choice(paragraphs)["text"])[:3])
        if 150 <= len(text) <= 700 and not any(a.lower() in text.lower() for a in avoid if a):
            return text
    return None


def _frequency(subject: str) -> float:
    from wordfreq import zipf_frequency

    return zipf_frequency(subject, "en")


def _case_id(fmt: str, case_set: str, key: str) -> str:
    digest = hashlib.sha256("\x1f".join((case_set, key)).encode()).hexdigest()[:10]
    return f"{fmt}:{digest}"


def load_counterfact(path: Path, case_set: str, paragraphs: Sequence[dict] = (), limit: int | None = None):
    """EditCases from a CounterFact-format JSON file."""
    cases = []
    for i, rec in enumerate(_read_records(path)[:limit]):
        where = f"{path} record {i}"
        rw = _get(rec, "requested_rewrite", where)
        template, subject = _get(rw, "prompt", where), _get(rw, "subject", where)
        if "{}" not in template:
            raise FormatError(f"{where}: the prompt {template!r} has no '{{}}' where the subject goes")
        prompt = template.replace("{}", subject)
        true, new = _get(rw, "target_true.str", where), _get(rw, "target_new.str", where)
        try:
            validate_request(subject, prompt, new, true)
        except ValueError as exc:
            raise FormatError(f"{where}: {exc}") from None
        probes = [Probe("plain", prompt, true, new)]
        probes += [Probe("paraphrase", p, true, new) for p in rec.get("paraphrase_prompts", [])]
        noise = _noise(paragraphs, [subject, true, new], stable_rng(case_set, i)) if paragraphs else None
        if noise:
            probes.append(Probe("noisy_context", f"{noise}\n{prompt}", true, new))
        probes += [Probe(NEIGHBOURHOOD, p, true, new) for p in rec.get("neighborhood_prompts", [])]
        cases.append(
            EditCase(
                case_id=_case_id("counterfact", case_set, str(rec.get("case_id", i))),
                case_set=case_set,
                source="counterfact",
                relation=rw.get("relation_id"),
                subject=subject,
                prompt=prompt,
                true_object=true,
                true_aliases=(),
                new_object=new,
                new_aliases=(),
                features={"frequency": _frequency(subject)},
                probes=tuple(probes),
            )
        )
    return cases


def load_zsre(path: Path, case_set: str, paragraphs: Sequence[dict] = (), limit: int | None = None):
    """EditCases from a zsRE-format JSON file (question prompts; `answers[0]` is the true object)."""
    cases = []
    for i, rec in enumerate(_read_records(path)[:limit]):
        where = f"{path} record {i}"
        subject, src = _get(rec, "subject", where), _get(rec, "src", where)
        answers, new = _get(rec, "answers", where), _get(rec, "alt", where)
        if not isinstance(answers, list) or not answers:
            raise FormatError(f"{where}: 'answers' must be a non-empty list")
        true = answers[0]
        try:
            validate_request(subject, src, new, true)
        except ValueError as exc:
            raise FormatError(f"{where}: {exc}") from None
        probes = [Probe("plain", src, true, new)]
        if rec.get("rephrase"):
            probes.append(Probe("paraphrase", rec["rephrase"], true, new))
        noise = _noise(paragraphs, [subject, true, new], stable_rng(case_set, i)) if paragraphs else None
        if noise:
            probes.append(Probe("noisy_context", f"{noise}\n{src}", true, new))
        if rec.get("loc") and rec.get("loc_ans"):
            probes.append(Probe(NEIGHBOURHOOD, rec["loc"], rec["loc_ans"], new))
        cases.append(
            EditCase(
                case_id=_case_id("zsre", case_set, f"{i}:{subject}"),
                case_set=case_set,
                source="zsre",
                relation=None,
                subject=subject,
                prompt=src,
                true_object=true,
                true_aliases=tuple(answers[1:]),
                new_object=new,
                new_aliases=(),
                features={"frequency": _frequency(subject)},
                probes=tuple(probes),
            )
        )
    return cases


def load_cases_file(path: Path, fmt: str, case_set: str, paragraphs: Sequence[dict] = (), limit=None):
    """Dispatch on the format name ('counterfact' or 'zsre')."""
    if fmt == "counterfact":
        return load_counterfact(Path(path), case_set, paragraphs, limit)
    if fmt == "zsre":
        return load_zsre(Path(path), case_set, paragraphs, limit)
    raise ValueError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")

"""Per-(case, rephrase type) evaluation of a model on edit cases, batched across cases.

Each probe's prompt is run once (compute.scoring.run_probes): the same pass scores the true and the new
object and feeds the greedy generation.

For every probe of the requested types the true and new objects are scored by teacher forcing
(compute.scoring), and optionally a greedy generation of `gen_tokens` new tokens is read for the objects'
names (alias-aware). Probe-level values are averaged within (case, rephrase type), so a case with three
paraphrases contributes one `paraphrase` value per metric. Metric names are those of store.metrics:

- nll_true, nll_new, p_true = exp(-nll_true), p_new, rank_true (first token), exact_match (true object)
- es: NLL(new) < NLL(true) (efficacy on plain, paraphrase score on paraphrase; the share over prompts)
- magnitude: exp(-NLL(new)) - exp(-NLL(true))
- acc: the generation names the new object or an alias; rev: it names the true object or an alias
- ns (neighbourhood probes only): NLL(true) < NLL(new) for the neighbour's own true object
- fluency: n-gram entropy of the generation (bits)

`doubt` probes are two-stage: the model's own greedy answer to the question is put into the
conversation before the push-back is scored. The first answer is decoded in the same batch as the other
probes' generations (`_outcomes`).

Chat-rendered probes (compute.cases.CHAT_TYPES) end with an empty assistant turn: the generation is the
model's free answer, and the teacher-forced scores score the bare object as the first words of that
answer (no lead text, no leading space; compute.cases explains why).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence

from compute.cases import NEIGHBOURHOOD, EditCase
from compute.models import LoadedModel
from compute.scoring import _run_probes_legacy, fluency, generate, mentions, run_probes

DOUBT_ANSWER_TOKENS = 24


@dataclass
class CaseEvaluation:
    """Metric values of one case: values[rephrase_type][metric], and the generations per probe."""

    case_id: str
    values: dict = field(default_factory=lambda: defaultdict(dict))
    generations: list = field(default_factory=list)  # (probe_id, rephrase_type, text)

    def rows(self, run_id: str, edit_count: int = 0) -> list[dict]:
        return [
            {
                "run_id": run_id,
                "case_id": self.case_id,
                "edit_count": edit_count,
                "rephrase_type": rtype,
                "metric": metric,
                "value": value,
            }
            for rtype, metrics in self.values.items()
            for metric, value in metrics.items()
        ]

    def generation_rows(self, run_id: str, edit_count: int = 0, phase: str = "pre") -> list[dict]:
        return [
            {
                "run_id": run_id,
                "case_id": self.case_id,
                "edit_count": edit_count,
                "rephrase_type": rtype,
                "probe_id": pid,
                "phase": phase,
                "text": text,
            }
            for pid, rtype, text in self.generations
        ]


def evaluate_cases(
    lm: LoadedModel,
    cases: Sequence[EditCase],
    rephrase_types: Sequence[str],
    *,
    gen_tokens: int = 30,
    generation: bool = True,
    neighbourhood: bool = True,
    batch_size: int = 32,
    prefix: str = "",
    new_exact_match: bool = False,
    legacy: bool = False,
) -> list[CaseEvaluation]:
    """Evaluate every probe of the given types (and neighbourhood probes) of every case.

    `prefix` is put before every probe text: an in-context editor's demonstrations and new fact.
    `new_exact_match` adds `exact_match_new`: every token of the new object is the teacher-forced argmax
    (study B's "the edit holds"; the sequential runner asks for it).
    `legacy` runs the evaluation path from before issue 22 (a separate `generate` for doubt's first turn,
    one padded prefill per batch, a cache grown by `torch.cat`); it is kept only so that
    benchmarks/bench_eval.py and tests/test_evaluate.py can compare the two paths.
    """
    wanted = set(rephrase_types)
    jobs = []  # (case index, probe id, probe)
    for ci, case in enumerate(cases):
        for pid, probe in enumerate(case.probes):
            if probe.rephrase_type in wanted or (neighbourhood and probe.rephrase_type == NEIGHBOURHOOD):
                jobs.append((ci, pid, probe))
    if legacy:
        outcome = _outcomes_legacy(lm, jobs, prefix, gen_tokens, generation, batch_size)
    else:
        outcome = _outcomes(lm, jobs, prefix, gen_tokens, generation, batch_size)
    gen_idx = [k for k, (_, _, p) in enumerate(jobs) if generation and p.rephrase_type != NEIGHBOURHOOD]
    true_scores = [outcome[k].scores[0] for k in range(len(jobs))]
    new_scores = [outcome[k].scores[1] for k in range(len(jobs))]
    gen_of = {k: outcome[k].generation for k in gen_idx}

    # probe-level values, then the mean within (case, type)
    sums: dict = defaultdict(lambda: defaultdict(list))
    results = [CaseEvaluation(case.case_id) for case in cases]
    for k, (ci, pid, probe) in enumerate(jobs):
        case, t, n = cases[ci], true_scores[k], new_scores[k]
        bucket = sums[(ci, probe.rephrase_type)]
        if probe.rephrase_type == NEIGHBOURHOOD:
            bucket["ns"].append(float(t.nll < n.nll))
            bucket["nll_true"].append(t.nll)
            bucket["nll_new"].append(n.nll)
            continue
        bucket["nll_true"].append(t.nll)
        bucket["nll_new"].append(n.nll)
        bucket["p_true"].append(t.prob)
        bucket["p_new"].append(n.prob)
        bucket["rank_true"].append(float(t.rank))
        bucket["exact_match"].append(float(t.exact_match))
        if new_exact_match:
            bucket["exact_match_new"].append(float(n.exact_match))
        bucket["es"].append(float(n.nll < t.nll))
        bucket["magnitude"].append(n.prob - t.prob)
        if k in gen_of:
            text = gen_of[k]
            bucket["acc"].append(float(mentions(text, case.new_names())))
            bucket["rev"].append(float(mentions(text, case.true_names())))
            bucket["fluency"].append(fluency(text))
            results[ci].generations.append((pid, probe.rephrase_type, text))
    for (ci, rtype), metrics in sums.items():
        results[ci].values[rtype] = {m: sum(v) / len(v) for m, v in metrics.items()}
    return results


def _outcomes(lm, jobs, prefix: str, gen_tokens: int, generation: bool, batch_size: int):
    """ProbeResults of every job (by job index) in at most two `run_probes` calls.

    Call 1 decodes, in one batch, every generating probe and the first turn of each doubt probe (the
    model's own answer, `DOUBT_ANSWER_TOKENS` tokens, cut at its first line break). Call 2 scores each doubt
    probe with that answer in place (and generates its final answer) together with the probes that do not
    generate (neighbourhood prompts), which ride along in the decode at no extra step.
    """
    texts = [prefix + p.text for _, _, p in jobs]
    n_gen = [gen_tokens if generation and p.rephrase_type != NEIGHBOURHOOD else 0 for _, _, p in jobs]
    pairs = [[p.target_true, p.target_new] for _, _, p in jobs]
    doubt = [k for k, (_, _, p) in enumerate(jobs) if p.needs_answer]
    is_doubt = set(doubt)
    first = [k for k in range(len(jobs)) if k not in is_doubt and (n_gen[k] > 0 or not doubt)]
    second = [k for k in range(len(jobs)) if k not in is_doubt and k not in set(first)]
    outcome = {}
    rows = [texts[k] for k in first] + [prefix + jobs[k][2].first_turn() for k in doubt]
    if rows:
        res = run_probes(lm, rows, [pairs[k] for k in first] + [[] for _ in doubt],
                         gen_tokens=[n_gen[k] for k in first] + [DOUBT_ANSWER_TOKENS] * len(doubt),
                         max_batch=batch_size)
        outcome.update(zip(first, res[: len(first)]))
        for k, r in zip(doubt, res[len(first) :]):
            answer = (r.generation or "").strip("\n").split("\n", 1)[0]
            texts[k] = prefix + jobs[k][2].filled(answer)
    rest = doubt + second
    if rest:
        res = run_probes(lm, [texts[k] for k in rest], [pairs[k] for k in rest],
                         gen_tokens=[n_gen[k] for k in rest], max_batch=batch_size)
        outcome.update(zip(rest, res))
    return outcome


def _outcomes_legacy(lm, jobs, prefix: str, gen_tokens: int, generation: bool, batch_size: int):
    """The same results by the path before issue 22 (see `evaluate_cases(legacy=True)`)."""
    texts = [prefix + p.text for _, _, p in jobs]
    doubt = [k for k, (_, _, p) in enumerate(jobs) if p.needs_answer]
    if doubt:
        answers = generate(
            lm,
            [prefix + jobs[k][2].first_turn() for k in doubt],
            max_new_tokens=DOUBT_ANSWER_TOKENS,
            batch_size=batch_size,
            stop_at_newline=True,
        )
        for k, answer in zip(doubt, answers):
            texts[k] = prefix + jobs[k][2].filled(answer)
    pairs = [[p.target_true, p.target_new] for _, _, p in jobs]
    gen_idx = [k for k, (_, _, p) in enumerate(jobs) if generation and p.rephrase_type != NEIGHBOURHOOD]
    rest = [k for k in range(len(jobs)) if k not in set(gen_idx)]
    outcome = {}
    for idx, n_gen in ((gen_idx, gen_tokens), (rest, 0)):
        if idx:
            res = _run_probes_legacy(lm, [texts[k] for k in idx], [pairs[k] for k in idx], gen_tokens=n_gen,
                                     max_batch=batch_size)
            outcome.update(zip(idx, res))
    return outcome

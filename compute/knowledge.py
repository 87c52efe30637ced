"""Pre-edit knowledge: what the unedited model knows about each case, written to the store as a run.

A `knowledge` run evaluates the unedited model on a case set (edit count 0): by default on the plain
prompt and the neighbourhood prompts, optionally on every rephrase type. The knownness features of
design.md section 4 come out of it: P(true object), the rank of its first token, and greedy recall
(`recall`: the greedy generation names the true object or an alias; the same value is stored as `rev`).

Per case and rephrase type the run stores `rev` at edit count 0: whether the unedited model's free
generation names the true object. That is the pre-edit recall a "known facts only" filter of study A
needs, per case and per type; a robustness run names its knowledge run as `config.baseline_run`
(store.measurable reads the same rows to say which types are measurable at all). The run's config keeps
`probes_digest` (compute.cases.probes_digest) of the probes it measured, so a baseline measured on an
older probe wording can be told from one that matches the cases a run edits.

Runs are resumable: cases are evaluated in chunks, each chunk one unit of compute.runs.run_loop (its
measurements and generations written in one transaction); re-running with `resume` skips the cases already
stored and ends with the same numbers.
"""

from __future__ import annotations

from typing import Sequence

from compute.cases import EditCase, probes_digest
from compute.evaluate import evaluate_cases
from compute.models import LoadedModel
from compute.provenance import provenance
from compute.runs import run_loop, spec_for, stored_config


def measure_knowledge(
    lm: LoadedModel,
    cases: Sequence[EditCase],
    store,
    *,
    rephrase_types: Sequence[str] = ("plain",),
    gen_tokens: int = 30,
    chunk: int = 32,
    run_id: str | None = None,
    case_set: str | None = None,
    progress: bool = False,
) -> str:
    """Evaluate the unedited model on cases and store the measurements; returns the run id.

    With an existing `run_id` the run is resumed: stored cases are skipped.
    """
    config = {
        "case_set": case_set,
        "rephrase_types": list(rephrase_types),
        "gen_tokens": gen_tokens,
        "n_cases": len(cases),
        "probes_digest": probes_digest(cases, rephrase_types),
    }
    if run_id is None:
        spec = spec_for("knowledge", lm.name, config)
        run_id = store.start_run(
            kind="knowledge",
            model=lm.name,
            config=stored_config(spec, config),
            provenance=provenance(str(lm.device)),
            n_total=len(cases),
        )
        done: set[str] = set()
    else:
        store.resume_run(run_id)
        done = store.done_case_ids(run_id)

    def step(part: list[EditCase]) -> dict:
        rows, gens = [], []
        for ev in evaluate_cases(lm, part, rephrase_types, gen_tokens=gen_tokens):
            plain = ev.values.get("plain")
            if plain is not None and "rev" in plain:
                plain["recall"] = plain["rev"]
            rows += ev.rows(run_id)
            gens += ev.generation_rows(run_id)
        return {"measurements": rows, "generations": gens}

    run_loop(store, run_id, cases, step, n_total=len(cases), done=done, key=lambda c: c.case_id, group=chunk,
             desc="pre-edit knowledge", unit="case", progress=progress)
    return run_id

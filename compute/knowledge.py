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

Runs are resumable: cases are evaluated in chunks, each chunk written in one transaction; re-running
with `resume` skips the cases already stored and ends with the same numbers.
"""

from __future__ import annotations

import time
from typing import Sequence

from compute.cases import EditCase, probes_digest
from compute.evaluate import evaluate_cases
from compute.experiments.common import recording
from compute.models import LoadedModel
from compute.provenance import provenance


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
        run_id = store.start_run(
            kind="knowledge",
            model=lm.name,
            config=config,
            provenance=provenance(str(lm.device)),
            n_total=len(cases),
        )
        done: set[str] = set()
    else:
        store.resume_run(run_id)
        done = store.done_case_ids(run_id)
    todo = [c for c in cases if c.case_id not in done]
    started = time.monotonic()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(cases), initial=len(cases) - len(todo), desc="pre-edit knowledge", unit="case")
    try:
        with recording(store, run_id):
            for start in range(0, len(todo), chunk):
                part = todo[start : start + chunk]
                evals = evaluate_cases(lm, part, rephrase_types, gen_tokens=gen_tokens)
                rows, gens = [], []
                for ev in evals:
                    plain = ev.values.get("plain")
                    if plain is not None and "rev" in plain:
                        plain["recall"] = plain["rev"]
                    rows += ev.rows(run_id)
                    gens += ev.generation_rows(run_id)
                store.write_measurements(rows)
                store.write_generations(gens)
                done.update(c.case_id for c in part)
                store.heartbeat(run_id, n_done=len(done), n_total=len(cases))
                if bar:
                    bar.update(len(part))
    finally:
        if bar:
            bar.close()
    store.finish_run(run_id, status="done", timings={"seconds": round(time.monotonic() - started, 2)})
    return run_id

"""Study A's robustness experiment: single edits, each undone before the next, probed in every rephrase type.

For every case of a case set: apply one edit with the chosen editor, evaluate every probe of the case
(all 16 rephrase types plus neighbourhood prompts; probability scores and 30-token greedy generations),
undo the edit exactly, and write the measurements at edit count 1. One run per editor; the unedited
model's numbers on the same cases come from a `knowledge` run with every rephrase type (edit count 0),
named in the run's config as its baseline.

The edit itself is recorded as pseudo rephrase type `edit` (metrics edit_seconds, edit_steps,
edit_target_nll where the editor reports them), and its diagnostics (update norms, clamp, steps,
convergence, delivered fraction on the plain prompt and each paraphrase: compute.editors.diagnostics) in
`edit_diagnostics`. Runs are resumable at case granularity: each case is one unit of compute.runs.run_loop (its
measurements, generations and diagnostics written in one transaction), and `resume` skips the cases already
stored, so a killed run ends with the same numbers as an uninterrupted one.

Every edit starts from the unedited weights, so the target values of the next few cases are optimised together
in one packed call (`compute.experiments.common.values_ahead`; ROME, MEMIT, AlphaEdit), equal to one-by-one
values up to float32 rounding. An edit's `edit_seconds` is its wall time: the first of each group carries the
group's optimisation, the others find their values ready (`value_from_cache` in their record).
"""

from __future__ import annotations

from typing import Sequence

from compute.cases import EditCase
from compute.editors import EditContext, get_editor
from compute.experiments.common import edit_and_evaluate, open_run, values_ahead
from compute.models import LoadedModel
from compute.runs import run_loop
from store.conventions import EDIT
from store.metrics import REPHRASE_TYPES

EDIT_TYPE = EDIT  # the rephrase type of an edit's own rows (store.conventions)


def edit_rows(run_id: str, case_id: str, info: dict, edit_count: int = 1) -> list[dict]:
    """The edit's own record (time, optimisation steps, final target NLL) as measurement rows."""
    keys = {"seconds": "edit_seconds", "steps": "edit_steps", "target_nll": "edit_target_nll"}
    return [
        {"run_id": run_id, "case_id": case_id, "edit_count": edit_count, "rephrase_type": EDIT_TYPE,
         "metric": metric, "value": float(info[key])}
        for key, metric in keys.items()
        if isinstance(info.get(key), (int, float))
    ]


def run_robustness(
    lm: LoadedModel,
    cases: Sequence[EditCase],
    store,
    *,
    editor: str,
    hp,
    ctx: EditContext,
    rephrase_types: Sequence[str] = REPHRASE_TYPES,
    gen_tokens: int = 30,
    case_set: str | None = None,
    baseline_run: str | None = None,
    run_id: str | None = None,
    progress: bool = False,
) -> str:
    """Edit, evaluate and undo each case in turn; returns the run id (resumes `run_id` when given)."""
    ed = get_editor(editor)
    config = {
        "case_set": case_set,
        "n_cases": len(cases),
        "rephrase_types": list(rephrase_types),
        "gen_tokens": gen_tokens,
        "cov_n_tokens": ctx.cov_samples,
        "baseline_run": baseline_run,
    }
    run_id, resumed = open_run(store, run_id, kind="robustness", lm=lm, editor=ed.name, hp=hp, ctx=ctx,
                               config=config, n_total=len(cases))
    done = store.done_case_ids(run_id, edit_count=1) if resumed else set()
    todo = [case for case in cases if case.case_id not in done]
    index = {case.case_id: i for i, case in enumerate(todo)}

    with values_ahead(ctx, todo) as plan:
        def step(case: EditCase) -> dict:
            plan(index[case.case_id])
            ev, result, diagnostics = edit_and_evaluate(lm, case, cases, ed.name, hp, ctx, rephrase_types,
                                                        run_id=run_id, gen_tokens=gen_tokens)
            return {"measurements": ev.rows(run_id, edit_count=1) + edit_rows(run_id, case.case_id, result.info),
                    "generations": ev.generation_rows(run_id, edit_count=1, phase="post"),
                    "diagnostics": diagnostics}

        run_loop(store, run_id, cases, step, n_total=len(cases), done=done, key=lambda c: c.case_id,
                 desc=f"robustness {ed.name}", unit="edit", progress=progress)
    return run_id

"""Hyperparameter sweeps that choose an editor's layer(s) and calibrate its settings for a model, stored as runs.

One run per candidate value (kind `sweep`, config {"sweep": id, "field": "layer", "value": v}); each
edits every case once (undone before the next) and records efficacy (ES on the plain prompt),
paraphrase (PS: `es` on the paraphrase probes), neighbourhood (NS) scores and magnitudes, without
generations; each case is one unit of compute.runs.run_loop. `store.derived.sweep_summary` turns the runs
into one row per value with 95% CIs and the score S = harmonic mean of ES, PS and NS, from which the
hyperparameter file's value is chosen. Running a sweep again keeps its finished runs and resumes the others
(a run is found by its spec, compute.runs: the sweep id, field and value).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

from compute.cases import EditCase
from compute.editors import EditContext, get_editor
from compute.editors.base import hparams_dict
from compute.experiments.common import edit_and_evaluate, how_to_continue, values_ahead
from compute.experiments.robustness import edit_rows
from compute.models import LoadedModel
from compute.provenance import provenance
from compute.runs import decide, run_loop, spec_for, stored_config

SWEEP_TYPES = ("plain", "paraphrase")


def run_sweep(
    lm: LoadedModel,
    cases: Sequence[EditCase],
    store,
    *,
    editor: str,
    base_hp,
    field: str,
    values: Sequence,
    ctx: EditContext,
    sweep: str,
    case_set: str | None = None,
    progress: bool = False,
    pinned: Mapping | None = None,
) -> list[str]:
    """Run (or resume) one sweep run per value of `field`; returns their run ids in value order. A value's run
    is found by its spec (compute.runs: sweep id, field and value, and `pinned`, the fields the command set with
    --hp; not the other hyperparameters): a finished one is kept as it is, an unfinished one resumed."""
    ed = get_editor(editor)
    names = {f.name for f in dataclasses.fields(base_hp)}
    unknown = [f for f in field.split("+") if f not in names]
    if unknown:
        raise ValueError(f"{ed.name} hyperparameters have no field {unknown[0]!r}")
    run_ids: list[str] = []
    for value in values:
        value = list(value) if isinstance(value, (tuple, list)) else value
        if isinstance(value, dict):  # a grid point: several fields at once (run_grid)
            hp = dataclasses.replace(base_hp, **{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
        else:
            hp = dataclasses.replace(base_hp, **{field: tuple(value) if isinstance(value, list) else value})
        hp.validate()
        config = {"sweep": sweep, "field": field, "value": value, "hp": dict(sorted((pinned or {}).items())),
                  "case_set": case_set, "n_cases": len(cases), "cov_n_tokens": ctx.cov_samples}
        spec = spec_for("sweep", lm.name, config, editor=ed.name, seed=ctx.seed)
        found = decide(store, spec)
        if found.action == "done":
            run_ids.append(found.run_id)
            continue
        if found.action == "new":
            run_id = store.start_run(kind="sweep", model=lm.name, editor=ed.name, hparams=hparams_dict(hp),
                                     seed=ctx.seed, config=stored_config(spec, config),
                                     provenance=provenance(str(lm.device)), n_total=len(cases))
            done: set[str] = set()
        else:
            run_id = found.run_id
            store.resume_run(run_id)
            done = store.done_case_ids(run_id, edit_count=1)
        todo = [case for case in cases if case.case_id not in done]
        index = {case.case_id: i for i, case in enumerate(todo)}
        with values_ahead(ctx, todo) as plan:  # the next cases' values optimised together

            def step(case: EditCase, run_id=run_id, hp=hp, plan=plan, index=index) -> dict:
                plan(index[case.case_id])
                ev, result, diagnostics = edit_and_evaluate(lm, case, cases, ed.name, hp, ctx, SWEEP_TYPES,
                                                            run_id=run_id, generation=False)
                return {"measurements": ev.rows(run_id, edit_count=1) + edit_rows(run_id, case.case_id, result.info),
                        "diagnostics": diagnostics}

            # the sweep has no --resume: the same command finds its unfinished run; sweep runs record no timings
            run_loop(store, run_id, cases, step, n_total=len(cases), done=done, key=lambda c: c.case_id,
                     desc=f"sweep {ed.name} {field}={value}", unit="edit", progress=progress,
                     next_step=how_to_continue(run_id, resume_flag=False), timings=False)
        run_ids.append(run_id)
    return run_ids


def grid_points(grid: dict[str, Sequence]) -> list[dict]:
    """Every combination of the grid's values, in a fixed order (fields sorted, values as given)."""
    import itertools

    fields = sorted(grid)
    return [dict(zip(fields, combo)) for combo in itertools.product(*(grid[f] for f in fields))]


def run_grid(lm: LoadedModel, cases: Sequence[EditCase], store, *, editor: str, base_hp, grid: dict[str, Sequence],
             ctx: EditContext, sweep: str, case_set: str | None = None, progress: bool = False,
             pinned: Mapping | None = None) -> list[str]:
    """A calibration sweep: one sweep run per combination of `grid` (field -> candidate values), each with
    ES/PS/NS and the per-edit diagnostics (edit size, clamp, steps, convergence); store.diagnostics'
    `calibration_summary` puts them side by side. Resumable like `run_sweep` (same run identity: sweep id, the grid
    point and the --hp pins)."""
    points = grid_points(grid)
    return run_sweep(lm, cases, store, editor=editor, base_hp=base_hp, field="+".join(sorted(grid)), values=points,
                     ctx=ctx, sweep=sweep, case_set=case_set, progress=progress, pinned=pinned)

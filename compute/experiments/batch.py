"""Study C's batch-single experiment: one batch of b edits written at once, measured, undone; for b in sizes.

For each batch size b (default 1, 10, 50, 100, 200, 500) the first b edits of the shared sequential
order (compute.experiments.sequential.edit_order: the same facts in the same order as every sequential
run on the case set) are applied to the unedited model in ONE call of a batch editor (MEMIT, AlphaEdit),
then measured:

- editing performance on the batch's own cases: reliability = ES on the plain prompt, generalisation =
  PS on paraphrases, locality = NS on neighbourhood prompts (per case, and as run-level means with n);
- the general-ability suite (compute.abilities) when an `abilities` function is given, written to the
  store's abilities table with edit_count = batch_size = b;

and undone exactly before the next size. Run-level rows use case_id "*" and scope "batch". Each size is one
unit of compute.runs.run_loop: its measurements, diagnostics and ability scores are written in one
transaction. Resumable per batch size: a size whose run-level rows are stored is skipped.

Every batch goes into the same unedited model and holds the previous sizes' requests, so a request's
target value is optimised once and reused (compute.editors.value_cache, under the cache folder, shared by
MEMIT's and AlphaEdit's runs); the run-level row `values_from_cache` says how many of a batch's values
were reused, and `edit_seconds` is the time the edit took with them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Sequence

from compute.cases import NEIGHBOURHOOD, EditCase
from compute.editors import EditContext, EditRequest, apply_edit, get_editor, undo
from compute.editors.base import EditorError
from compute.editors.diagnostics import edit_diagnostics
from compute.evaluate import evaluate_cases
from compute.experiments.common import open_run
from compute.experiments.sequential import SequentialConfig, ability_case_ids, edit_order, split_order
from compute.models import LoadedModel
from compute.runs import run_loop
from store.conventions import BATCH, RUN_LEVEL

BATCH_SIZES = (1, 10, 50, 100, 200, 500)
SCOPE = BATCH  # the scope (rephrase_type) of a batch run's run-level rows


def run_batch_single(
    lm: LoadedModel,
    cases: Sequence[EditCase],
    store,
    *,
    editor: str,
    hp,
    ctx: EditContext,
    sizes: Sequence[int] = BATCH_SIZES,
    order_seed: int = 0,
    panel_pool: int = SequentialConfig.panel_pool,
    case_set: str | None = None,
    run_id: str | None = None,
    abilities: Callable[[LoadedModel], list[dict]] | None = None,
    exclude_facts=(),
    progress: bool = False,
) -> str:
    """Apply, measure and undo one batch per size (module docstring); returns the run id.
    `exclude_facts`: (subject, relation) pairs never edited (the ability suite's facts)."""
    from compute.editors.value_cache import ValueCache

    ed = get_editor(editor)
    if not ed.changes_weights:
        raise EditorError(f"{ed.name} changes no weight: the batch experiment needs a weight editor")
    sizes = sorted({int(b) for b in sizes})
    if not sizes or sizes[0] < 1:
        raise ValueError(f"batch sizes must be integers >= 1, got {sizes}")
    by_id = {c.case_id: c for c in cases}
    cfg = dataclasses.replace(SequentialConfig(), max_edits=max(sizes), order_seed=order_seed, panel_pool=panel_pool)
    skip = ability_case_ids(cases, exclude_facts)
    edit_ids, _ = split_order(edit_order(list(by_id), order_seed), cfg, skip)
    if len(edit_ids) < max(sizes):
        raise ValueError(f"the case set leaves {len(edit_ids)} cases to edit, fewer than the largest batch "
                         f"{max(sizes)}: build a larger set or use smaller --sizes")
    config = {"case_set": case_set, "n_cases": len(cases), "sizes": sizes, "order_seed": order_seed,
              "panel_pool": panel_pool, "cov_n_tokens": ctx.cov_samples, "excluded_cases": len(skip)}
    run_id, resumed = open_run(store, run_id, kind="batch", lm=lm, editor=ed.name, hp=hp, ctx=ctx, config=config,
                               n_total=len(sizes))
    done: set[int] = set()
    if resumed:
        done = {b for (b,) in store.conn.execute(
            "SELECT DISTINCT edit_count FROM measurements WHERE run_id = ? AND case_id = ? AND rephrase_type = ?",
            (run_id, RUN_LEVEL, SCOPE))}

    def unedited() -> None:  # the suite on the unedited model, once
        if abilities is not None and 0 not in done and not store.conn.execute(
                "SELECT 1 FROM abilities WHERE run_id = ? AND edit_count = 0", (run_id,)).fetchone():
            store.write_abilities([{**r, "run_id": run_id, "edit_count": 0, "batch_size": 0} for r in abilities(lm)])

    def step(b: int) -> dict:
        batch = [by_id[i] for i in edit_ids[:b]]
        ctx.state = {}  # a fresh editor memory: each batch is written into the unedited model
        result = apply_edit(lm, [EditRequest.from_case(c) for c in batch], ed.name, hp, ctx)
        try:
            diagnostics = edit_diagnostics(lm, result, hp, run_id, b, batch)
            evals = evaluate_cases(lm, batch, ["plain", "paraphrase"], generation=False, neighbourhood=True)
            ability_rows = abilities(lm) if abilities is not None else []
        finally:
            undo(lm, result)
        rows = []
        for ev in evals:
            rows += ev.rows(run_id, edit_count=b)

        def mean(rtype, metric):
            vals = [ev.values[rtype][metric] for ev in evals if metric in ev.values.get(rtype, {})]
            return sum(vals) / len(vals) if vals else None  # no probe of this type: no row

        values = {"es": mean("plain", "es"), "ps": mean("paraphrase", "es"), "ns": mean(NEIGHBOURHOOD, "ns"),
                  "n": len(batch), "edit_seconds": result.info.get("seconds"),
                  "values_from_cache": result.info.get("values_from_cache", 0)}
        rows += [{"run_id": run_id, "case_id": RUN_LEVEL, "edit_count": b, "rephrase_type": SCOPE,
                  "metric": m, "value": float(v)} for m, v in values.items() if v is not None]
        # one transaction: the run-level rows mark the size done, so its ability scores land with them
        return {"measurements": rows, "diagnostics": diagnostics,
                "abilities": [{**r, "run_id": run_id, "edit_count": b, "batch_size": b} for r in ability_rows]}

    outer_cache, ctx.value_cache = ctx.value_cache, ValueCache(Path(ctx.cache_dir) / "values")
    try:
        run_loop(store, run_id, sizes, step, n_total=len(sizes), done=done, before=unedited,
                 desc=f"batch {ed.name}", unit="batch", progress=progress)
    finally:
        ctx.value_cache = outer_cache
    return run_id

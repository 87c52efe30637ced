"""What a store already holds, read back for the compute side: a stored case set as EditCases. The command
lines (compute/cli.py, compute/abilities/cli.py) share it; library code imports it from here, never from a
command line module. The run an experiment with these settings made before is found by compute.runs."""

from __future__ import annotations

from typing import Iterable

from store import Store, queries

CONTROL = "RandomRankOne"  # the control editor (compute.editors.control), whose refusals these are


def load_case_set(st: Store, case_set: str, limit: int | None = None, needs: Iterable[str] | None = None):
    """The EditCases of a stored case set, in case-id order (the first `limit` of them when given).

    `needs`: the rephrase types the caller will read (None: every type). A store may have left out the probes of
    types no stored run measured (Store.leave_out_unread_probes, `plan snapshot`); a caller that needs one of them
    is refused, with the command that rebuilds them, instead of measuring a case without them."""
    from compute.cases import case_from_rows

    df = queries.cases(st.conn, case_set=case_set)
    if df.is_empty():
        raise ValueError(f"no case set {case_set!r} in {st.path}: build one with `python -m compute cases build`")
    missing = queries.left_out_needed(st.conn, case_set, needs)
    if missing:
        raise ValueError(queries.probes_left_out_message(str(st.path), case_set, missing, df.height))
    rows = df.sort("case_id").to_dicts()[:limit]
    probes = queries.probes_of_set(st.conn, case_set)
    by_case: dict[str, list] = {}
    for p in probes.to_dicts():
        by_case.setdefault(p["case_id"], []).append(p)
    return [case_from_rows(r, by_case.get(r["case_id"], [])) for r in rows]


# ---- the control's reference run (compute.editors.control reads its sizes from here, never from a store) ----

UNIT_PREFIX = "unit:"  # reference_run=unit:ID names the run a plan unit made (plans/shipped.toml's controls)


def resolve_reference(store, reference: str) -> str:
    """The run id a reference names: a run id as it is, or `unit:ID`, the sequential run that the plan unit ID
    made (its run_events row of kind plan_unit, compute.plan.record_unit), so that a plan can name a run whose
    id is drawn when it starts. Refuses a unit with no run or with several."""
    if not reference.startswith(UNIT_PREFIX):
        return reference
    import json

    from compute.editors.base import EditorError  # here, not at the top: this module loads no torch

    unit = reference[len(UNIT_PREFIX):]
    made = sorted({r for r, detail in store.conn.execute(
        "SELECT e.run_id, e.detail FROM run_events e JOIN runs r ON r.run_id = e.run_id "
        "WHERE e.kind = 'plan_unit' AND r.kind = 'sequential'").fetchall()
        if json.loads(detail or "{}").get("unit") == unit})
    if len(made) != 1:
        raise EditorError(f"{CONTROL}: plan unit {unit!r} made {len(made)} sequential runs in this store"
                          + (f" ({', '.join(made)})" if made else "") + "; name the reference run by its id "
                          "(--hp reference_run=RUN_ID) or run that unit first")
    return made[0]


def reference_norms(store, run_id: str, batch_size: int) -> list[float]:
    """The per-edit ||dW||_F of a stored sequential run, in edit order (one per edit, or per batch): the sizes of
    the control's updates (compute.editors.control, `reference_run`). Refuses a run that is not there, has no
    such rows, or was made with another batch size."""
    import json

    from compute.editors.base import EditorError
    from store.conventions import EDIT, RUN_LEVEL

    run_id = resolve_reference(store, run_id)
    run = store.get_run(run_id)
    if run is None:
        raise EditorError(f"{CONTROL}: no reference run {run_id!r} in the store (list runs with `runs list`)")
    made_with = json.loads(run["config"] or "{}").get("batch_size", 1)
    if made_with != batch_size:
        raise EditorError(f"{CONTROL}: reference run {run_id} edited {made_with} facts at a time, this run {batch_size}: "
                          f"use --batch {made_with}")
    rows = queries.measurements(store.conn, run_ids=run_id, metrics="update_norm")
    rows = rows.filter((rows["case_id"] == RUN_LEVEL) & (rows["rephrase_type"] == EDIT)).sort("edit_count")
    if rows.is_empty():
        raise EditorError(f"{CONTROL}: reference run {run_id} has no per-edit update_norm rows (a run made before they "
                          "were recorded): choose a newer run")
    return [float(v) for v in rows["value"]]

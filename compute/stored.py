"""What a store already holds, read back for the compute side: a stored case set as EditCases. The command
lines (compute/cli.py, compute/abilities/cli.py) share it; library code imports it from here, never from a
command line module. The run an experiment with these settings made before is found by compute.runs."""

from __future__ import annotations

from typing import Iterable

from store import Store, queries


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

"""What a store already holds, read back for the compute side: a stored case set as EditCases, and the
run that an experiment with these settings made before (so that running a command again resumes or skips
it). The command lines (compute/cli.py, compute/abilities/cli.py) share these; library code imports them
from here, never from a command line module."""

from __future__ import annotations

import dataclasses
import json

from store import Store, queries


def load_case_set(st: Store, case_set: str, limit: int | None = None):
    """The EditCases of a stored case set, in case-id order (the first `limit` of them when given)."""
    from compute.cases import case_from_rows

    df = queries.cases(st.conn, case_set=case_set)
    if df.is_empty():
        raise ValueError(f"no case set {case_set!r} in {st.path}: build one with `python -m compute cases build`")
    rows = df.sort("case_id").to_dicts()[:limit]
    probes = queries.probes_of_set(st.conn, case_set)
    by_case: dict[str, list] = {}
    for p in probes.to_dicts():
        by_case.setdefault(p["case_id"], []).append(p)
    return [case_from_rows(r, by_case.get(r["case_id"], [])) for r in rows]


def same_hparams(stored: str | None, hparams) -> bool:
    """Whether a run's stored hyperparameters are `hparams` (a dict, compared as JSON, or an editor's
    hyperparameter object: then the stored dict is read through its class, so a field added later with a
    default that keeps the old behaviour does not orphan the runs made before it existed)."""
    from compute.editors.base import EditorError, parse_hparams

    data = json.loads(stored or "null")
    if dataclasses.is_dataclass(hparams):
        try:
            return isinstance(data, dict) and parse_hparams(type(hparams), data) == hparams
        except EditorError:
            return False
    return data == json.loads(json.dumps(hparams))


def find_run(st: Store, kind: str, model: str, editor: str | None = None, hparams=None, where=None, **config):
    """The newest run of this kind/model/editor whose config has these values (and these hyperparameters:
    a dict or an editor's hyperparameter object), as a dict, or None: re-running a command resumes or
    skips it instead of starting over. `where(config, run)`, when given, must hold as well."""
    for run in queries.list_runs(st.conn, kind=kind).iter_rows(named=True):
        if run["model"] != model or (editor is not None and run["editor"] != editor):
            continue
        if hparams is not None and not same_hparams(run["hparams"], hparams):
            continue
        cfg = json.loads(run["config"] or "{}")
        if all(cfg.get(k) == v for k, v in config.items()) and (where is None or where(cfg, run)):
            return run
    return None

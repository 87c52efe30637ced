"""Hyperparameter sweeps: one row per swept value with ES, PS, NS, their 95% CIs and harmonic mean S."""

from __future__ import annotations

import sqlite3

import polars as pl

from .. import queries
from .common import _mean_ci


def sweep_summary(conn: sqlite3.Connection, sweep: str | None = None) -> pl.DataFrame:
    """One row per sweep run: the swept value, ES (plain), PS (paraphrase), NS (neighbourhood) with 95% CIs,
    their harmonic mean S, and the mean edit time."""
    import json

    runs = queries.list_runs(conn, kind="sweep")
    rows = []
    for run in runs.iter_rows(named=True):
        cfg = json.loads(run["config"] or "{}")
        if sweep is not None and cfg.get("sweep") != sweep:
            continue
        m = queries.measurements(conn, run_ids=run["run_id"], edit_count=1)
        row = {"sweep": cfg.get("sweep"), "run_id": run["run_id"], "editor": run["editor"],
               "field": cfg.get("field"), "value": json.dumps(cfg.get("value")), "status": run["status"]}
        scores = {}
        for name, rtype, metric in (("ES", "plain", "es"), ("PS", "paraphrase", "es"), ("NS", "neighbourhood", "ns")):
            vals = m.filter((pl.col("rephrase_type") == rtype) & (pl.col("metric") == metric))["value"].to_list()
            lo, hi = _mean_ci(vals) if vals else (None, None)
            scores[name] = sum(vals) / len(vals) if vals else None
            row.update({name: scores[name], f"{name}_ci_low": lo, f"{name}_ci_high": hi})
            row["n"] = len(vals) if name == "ES" else row.get("n")
        s = [v for v in scores.values() if v is not None]
        row["S"] = (len(s) / sum(1 / v for v in s)) if len(s) == 3 and all(v > 0 for v in s) else 0.0
        secs = m.filter(pl.col("metric") == "edit_seconds")["value"]
        row["edit_seconds"] = secs.mean() if secs.len() else None
        rows.append(row)
    return pl.DataFrame(rows) if rows else pl.DataFrame(schema={"sweep": pl.String, "value": pl.String, "S": pl.Float64})

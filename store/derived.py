"""Derived tables: summaries computed from the stored measurements, each with its n and a 95% CI.

Pure functions `f(conn, ...) -> pl.DataFrame` like store.queries, used by the CLI and the dashboard alike.
"""

from __future__ import annotations

import sqlite3

import polars as pl

from . import queries
from .metrics import wilson_ci
from .stats import spearman_ci

POPULARITY_FEATURES = ("frequency", "connection", "cooccurrence", "population")


def _knowledge(conn: sqlite3.Connection, case_set: str | None, run_id: str | None) -> pl.DataFrame:
    df = queries.case_knowledge(conn, run_id=run_id, case_set=case_set)
    if "recall" not in df.columns:
        return df.clear()
    return df.filter(pl.col("recall").is_not_null())


def knowledge_by_quartile(
    conn: sqlite3.Connection, case_set: str | None = None, by_relation: bool = False, run_id: str | None = None
) -> pl.DataFrame:
    """Pre-edit greedy recall per popularity quartile (and relation), with n and a 95% Wilson CI."""
    df = _knowledge(conn, case_set, run_id)
    keys = ["relation", "popularity_quartile"] if by_relation else ["popularity_quartile"]
    schema = {"relation": pl.String, "quartile": pl.Int64, "n": pl.Int64, "recall": pl.Float64,
              "ci_low": pl.Float64, "ci_high": pl.Float64, "mean_p_true": pl.Float64}
    if not by_relation:
        schema.pop("relation")
    if df.is_empty():
        return pl.DataFrame(schema=schema)
    grouped = (
        df.group_by(keys)
        .agg(
            pl.len().alias("n"),
            pl.col("recall").sum().alias("hits"),
            pl.col("p_true").mean().alias("mean_p_true"),
        )
        .sort(keys)
    )
    rows = []
    for r in grouped.iter_rows(named=True):
        lo, hi = wilson_ci(int(round(r["hits"])), r["n"])
        row = {"quartile": r["popularity_quartile"], "n": r["n"], "recall": r["hits"] / r["n"],
               "ci_low": lo, "ci_high": hi, "mean_p_true": r["mean_p_true"]}
        if by_relation:
            row = {"relation": r["relation"], **row}
        rows.append(row)
    return pl.DataFrame(rows, schema=schema)


def knowledge_correlations(
    conn: sqlite3.Connection, case_set: str | None = None, run_id: str | None = None, n_boot: int = 1000
) -> pl.DataFrame:
    """Spearman rho of each popularity feature with pre-edit recall and with P(true), bootstrap 95% CI."""
    df = _knowledge(conn, case_set, run_id)
    rows = []
    for feature in POPULARITY_FEATURES:
        if df.is_empty() or feature not in df.columns:
            continue
        for target in ("recall", "p_true"):
            sub = df.filter(pl.col(feature).is_not_null() & pl.col(target).is_not_null())
            if sub.height < 3:
                continue
            c = spearman_ci(sub[feature].to_numpy(), sub[target].to_numpy(), n_boot=n_boot, seed=0)
            rows.append({"feature": feature, "against": target, "rho": c.rho, "ci_low": c.ci_low,
                         "ci_high": c.ci_high, "n": c.n})
    schema = {"feature": pl.String, "against": pl.String, "rho": pl.Float64, "ci_low": pl.Float64,
              "ci_high": pl.Float64, "n": pl.Int64}
    return pl.DataFrame(rows, schema=schema)

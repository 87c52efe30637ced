"""Reads of the per-edit diagnostics (table `edit_diagnostics`, schema v7; names in
compute.editors.diagnostics): one row per edit, their distributions per run, outliers, and the calibration
sweep's settings side by side. Pure functions of a connection; SQL takes parameters only.
"""

from __future__ import annotations

import json
import math
import sqlite3
from typing import Sequence

import polars as pl

# An edit is an outlier of its run when its log relative update size lies more than this many robust standard
# deviations (1.4826 * MAD of the run's log sizes) from the run's median: 3.5 is Iglewicz and Hoaglin's cut
# for the modified z-score, which a normal sample exceeds about once in 4,000 draws.
OUTLIER_Z = 3.5

PER_EDIT_COLUMNS = ("update_rel", "update_norm", "steps", "converged", "clamped", "nll_final", "kl_final",
                    "delta_norm", "delivered_plain", "delivered_paraphrase_min", "delivered_out_plain")


def diagnostic_rows(conn: sqlite3.Connection, run_ids: Sequence[str] | str | None = None) -> pl.DataFrame:
    """The raw rows (run_id, edit_count, case_id, target, name, value) of the given runs (all when None)."""
    if isinstance(run_ids, str):
        run_ids = [run_ids]
    sql = "SELECT run_id, edit_count, case_id, target, name, value FROM edit_diagnostics"
    params: list = []
    if run_ids is not None:
        sql += f" WHERE run_id IN ({', '.join('?' * len(run_ids))})"
        params = list(run_ids)
    # sorted here, not in SQL: the rows come in the order of their encoded keys (schema v8), and sorting by the
    # names is faster in polars than in SQLite (benchmarks/bench_store_encoding.py)
    cur = conn.execute(sql, params)
    return pl.DataFrame(cur.fetchall(), schema={"run_id": pl.String, "edit_count": pl.Int64, "case_id": pl.String,
                                                "target": pl.String, "name": pl.String, "value": pl.Float64},
                        orient="row").sort("run_id", "edit_count", "case_id", "target", "name")


def per_edit(conn: sqlite3.Connection, run_ids: Sequence[str] | str | None = None) -> pl.DataFrame:
    """One row per (run, edit count, case): the edit's largest relative matrix change (`update_rel`), its total
    ||dW||_F (`update_norm`, the root of the squares over matrices), steps, converged, clamped, final NLL, KL,
    delta norm, delivered fraction on the plain prompt and the smallest over its paraphrases, and for a multi-layer
    edit the plain prompt's share read at the last edited layer's output (`delivered_out_plain`; None for one
    layer, where it equals f). A batch edit's per-matrix values (case '*') are repeated on each of its cases."""
    raw = diagnostic_rows(conn, run_ids)
    key = ["run_id", "edit_count"]
    if raw.is_empty():
        return pl.DataFrame(schema={"run_id": pl.String, "edit_count": pl.Int64, "case_id": pl.String,
                                    **{c: pl.Float64 for c in PER_EDIT_COLUMNS}})
    size = [pl.col("value").filter(pl.col("name") == "update_rel").max().alias("update_rel"),
            (pl.col("value").filter(pl.col("name") == "update_norm") ** 2).sum().sqrt().alias("update_norm")]
    matrices = raw.filter(pl.col("name").is_in(["update_rel", "update_norm"]))
    own = matrices.filter(pl.col("case_id") != "*").group_by([*key, "case_id"]).agg(*size)  # one-request edits
    batch = matrices.filter(pl.col("case_id") == "*").group_by(key).agg(*size)  # shared by a batch's requests
    req = raw.filter(pl.col("case_id") != "*")
    scalar = (req.filter(pl.col("target") == "")
              .pivot(on="name", index=[*key, "case_id"], values="value", aggregate_function="first"))
    delivered = (req.filter(pl.col("name") == "delivered")
                 .group_by([*key, "case_id"])
                 .agg(pl.col("value").filter(pl.col("target") == "plain").first().alias("delivered_plain"),
                      pl.col("value").filter(pl.col("target").str.starts_with("paraphrase")).min()
                      .alias("delivered_paraphrase_min")))
    at_output = (req.filter((pl.col("name") == "delivered_out") & (pl.col("target") == "plain"))
                 .group_by([*key, "case_id"]).agg(pl.col("value").first().alias("delivered_out_plain")))
    delivered = delivered.join(at_output, on=[*key, "case_id"], how="full", coalesce=True)
    out = (scalar.join(delivered, on=[*key, "case_id"], how="full", coalesce=True)
           .join(own, on=[*key, "case_id"], how="left")
           .join(batch, on=key, how="left", suffix="_batch"))
    if "update_rel_batch" in out.columns:
        out = out.with_columns(pl.coalesce("update_rel", "update_rel_batch").alias("update_rel"),
                               pl.coalesce("update_norm", "update_norm_batch").alias("update_norm"))
    for col in PER_EDIT_COLUMNS:
        if col not in out.columns:
            out = out.with_columns(pl.lit(None, dtype=pl.Float64).alias(col))
    return out.select(*key, "case_id", *PER_EDIT_COLUMNS).sort(key + ["case_id"])


def flag_outliers(df: pl.DataFrame, column: str = "update_rel", z: float = OUTLIER_Z) -> pl.DataFrame:
    """`df` (per_edit rows) with `robust_z` (of log `column`, within each run) and `outlier` (|robust_z| > z).
    A run whose sizes do not vary (MAD 0) flags nothing."""
    logged = df.with_columns(pl.col(column).clip(lower_bound=1e-30).log().alias("_log"))
    med = pl.col("_log").median().over("run_id")
    mad = (pl.col("_log") - med).abs().median().over("run_id") * 1.4826
    return (logged
            .with_columns(pl.when(mad > 0).then((pl.col("_log") - med) / mad).otherwise(0.0).alias("robust_z"))
            .with_columns((pl.col("robust_z").abs() > z).alias("outlier"))
            .drop("_log"))


def run_distribution(conn: sqlite3.Connection, run_ids: Sequence[str] | str | None = None) -> pl.DataFrame:
    """Per run: n edits, median and 90th percentile of update_rel, share clamped, share converged, median
    steps, share of edits delivering >= 0.8 on the plain prompt (layer by layer, and at the output for multi-layer
    edits: None where the run has no such reading), and the number of outliers (OUTLIER_Z)."""
    edits = flag_outliers(per_edit(conn, run_ids))
    if edits.is_empty():
        return pl.DataFrame(schema={"run_id": pl.String, "n": pl.UInt32})
    return (edits.group_by("run_id")
            .agg(pl.len().alias("n"),
                 pl.col("update_rel").median().alias("update_rel_median"),
                 pl.col("update_rel").quantile(0.9).alias("update_rel_p90"),
                 pl.col("clamped").mean().alias("clamped_share"),
                 pl.col("converged").mean().alias("converged_share"),
                 pl.col("steps").median().alias("steps_median"),
                 (pl.col("delivered_plain") >= 0.8).mean().alias("delivered_plain_ge_0.8"),
                 (pl.col("delivered_out_plain") >= 0.8).mean().alias("delivered_out_plain_ge_0.8"),
                 pl.col("outlier").sum().alias("outliers"))
            .sort("run_id"))


def calibration_summary(conn: sqlite3.Connection, sweep: str) -> pl.DataFrame:
    """The calibration sweep `sweep` (compute.experiments.sweep.run_grid), one row per setting: the setting's
    fields, ES/PS/NS with 95% CIs and S (store.derived.sweep_summary), and its edits' size and optimisation
    (run_distribution). Sorted by median edit size. Settings of several grids under one sweep id share the table:
    each field is read from the hyperparameters the run used."""
    from store.derived import sweep_summary

    scores = sweep_summary(conn, sweep)
    if scores.is_empty():
        return scores
    dist = run_distribution(conn, scores["run_id"].to_list())
    out = scores.join(dist, on="run_id", how="left")
    settings = [json.loads(v) for v in out["value"].to_list()]
    fields = sorted({k for s in settings if isinstance(s, dict) for k in s})
    # each field as the run used it (its stored hyperparameters), so a point that left a field at its default
    # (an earlier grid without it) shows the value it ran with, not a gap
    used = {run_id: json.loads(hp or "{}") for run_id, hp in conn.execute(
        f"SELECT run_id, hparams FROM runs WHERE run_id IN ({', '.join('?' * out.height)})", out["run_id"].to_list())}
    for f in fields:
        out = out.with_columns(pl.Series(f, [used.get(r, {}).get(f, s.get(f) if isinstance(s, dict) else None)
                                             for r, s in zip(out["run_id"].to_list(), settings)], strict=False))
    return out.sort("update_rel_median", nulls_last=True)


def choose_setting(summary: pl.DataFrame, keep: float = 0.95, reference: dict | None = None) -> dict | None:
    """The calibration rule: among settings whose ES and PS are each at least `keep` x the reference setting's
    (the paper's, given as its fields; else the best ES and PS in the sweep), the one with the smallest median
    relative edit size. Returns that row as a dict (None when no setting qualifies)."""
    rows = summary.to_dicts()
    if not rows:
        return None
    ref = None
    if reference is not None:
        ref = next((r for r in rows if all(r.get(k) == v for k, v in reference.items())), None)
    es_ref = ref["ES"] if ref else max(r["ES"] or 0 for r in rows)
    ps_ref = ref["PS"] if ref else max(r["PS"] or 0 for r in rows)
    ok = [r for r in rows if (r["ES"] or 0) >= keep * es_ref and (r["PS"] or 0) >= keep * ps_ref
          and r.get("update_rel_median") is not None and not math.isnan(r["update_rel_median"])]
    return min(ok, key=lambda r: r["update_rel_median"]) if ok else None

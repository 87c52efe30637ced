"""Study C, general abilities: ability scores of edit runs with each run's label and traits, the unedited start
and the shared range of runs drawn together, editing performance of sequential and batch runs, and ability
scores as the mean over edit orders."""

from __future__ import annotations

import sqlite3

import polars as pl

from .. import queries
from ..conventions import RUN_LEVEL
from .common import wilson_arrays
from .labels import run_label
from .sequential import order_means


_RUN_COLUMNS = ("run_id", "label", "kind", "editor", "rect_top", "key_mismatch")  # ability_scores' per-run columns


def ability_scores(conn: sqlite3.Connection, kind: str | None = None, mode: str | None = None) -> pl.DataFrame:
    """Ability scores of the runs of a kind (sequential, batch, abilities; all when None) with each run's
    label, editor, RECT share, key variant (key_mismatch: ROME's original keys) and batch size: one row per
    (run, edit count, batch size, task, mode)."""
    import json

    runs = queries.list_runs(conn, kind=kind)
    schema = {"run_id": pl.String, "label": pl.String, "kind": pl.String, "editor": pl.String,
              "rect_top": pl.Float64, "key_mismatch": pl.Boolean, "edit_count": pl.Int64, "batch_size": pl.Int64,
              "task": pl.String, "task_version": pl.String, "mode": pl.String, "category": pl.String, "study_c": pl.String,
              "metric": pl.String, "score": pl.Float64, "n": pl.Int64, "ci_low": pl.Float64, "ci_high": pl.Float64,
              "chance": pl.Float64, "higher_is_better": pl.Int64}
    if runs.is_empty():
        return pl.DataFrame(schema=schema)
    meta = []
    for r in runs.iter_rows(named=True):
        hp, cfg = json.loads(r["hparams"] or "null") or {}, json.loads(r["config"] or "null") or {}
        meta.append({"run_id": r["run_id"], "label": run_label(r["editor"], hp, cfg), "kind": r["kind"],
                     "editor": r["editor"], "rect_top": float(hp.get("rect_top", 1.0)) if r["editor"] else None,
                     "key_mismatch": bool(hp.get("key_mismatch", False)) if r["editor"] else None})
    ab = queries.abilities(conn, runs["run_id"].to_list())
    if mode is not None and not ab.is_empty():
        ab = ab.filter(pl.col("mode") == mode)
    if ab.is_empty():
        return pl.DataFrame(schema=schema)
    for col, dtype in schema.items():
        if col not in ab.columns and col not in _RUN_COLUMNS[1:]:
            ab = ab.with_columns(pl.lit(None, dtype=dtype).alias(col))
    out = ab.join(pl.DataFrame(meta, schema={k: schema[k] for k in _RUN_COLUMNS}), on="run_id")
    return out.select([pl.col(c).cast(t) for c, t in schema.items()]).sort("run_id", "task", "edit_count")


def start_from_unedited(part: pl.DataFrame, unedited: pl.DataFrame) -> pl.DataFrame:
    """Ability rows of edit runs (ability_scores' columns) where each run that has no score at edit count 0
    gets the unedited model's score there (`unedited`: an abilities run's rows, edit count 0), for the tasks
    and task versions the run measured: a run scored only at its end (the full suite) then draws a line
    from where every run starts. Runs with their own edit-count-0 rows are left as they are."""
    if part.is_empty() or unedited.is_empty():
        return part
    starts = []
    for run_id in part["run_id"].unique(maintain_order=True):
        rows = part.filter(pl.col("run_id") == run_id)
        if (rows["edit_count"] == 0).any():
            continue
        meta = rows.row(0, named=True)
        versions = rows.select("task", "task_version").unique()
        start = unedited.join(versions, on=["task", "task_version"], how="semi").unique("task", keep="first")
        starts.append(start.with_columns(
            *(pl.lit(meta[c], dtype=part.schema[c]).alias(c) for c in (*_RUN_COLUMNS, "batch_size")),
            pl.lit(0, dtype=part.schema["edit_count"]).alias("edit_count")).select(part.columns))
    return pl.concat([part, *starts]).sort("run_id", "task", "edit_count") if starts else part


def up_to_common_end(df: pl.DataFrame, x: str = "edit_count") -> pl.DataFrame:
    """The rows of `df` at `x` values no larger than the smallest last `x` of its runs: where every run
    drawn has a point, so a run made to 200 edits is compared with one made to 500 on their shared range.
    A run with nothing past x = 0 yet (just started) does not shorten the range."""
    ends = df.group_by("run_id").agg(pl.col(x).max()).filter(pl.col(x) > 0)[x]
    return df.filter(pl.col(x) <= ends.min()) if not ends.is_empty() else df


def editing_performance(conn: sqlite3.Connection, run_ids) -> pl.DataFrame:
    """Reliability (ES on the plain prompt), generalisation (PS) and locality (NS) of sequential runs'
    newest edits and of batch runs' batches, by run and edit count: run_id, edit_count, measure, value, n,
    ci_low, ci_high (95% Wilson CI of a share of n edits, as the Forgetting page's newest-edit curves have)."""
    names = {"es": "reliability (ES)", "ps": "generalisation (PS)", "ns": "locality (NS)"}
    where, params = queries._where([("run_id", run_ids)])
    clause = (where + " AND " if where else " WHERE ") + "case_id = ? AND rephrase_type IN ('newest', 'batch')"
    df = queries._frame(conn, f"SELECT run_id, edit_count, metric, value FROM measurements{clause}", [*params, RUN_LEVEL])
    schema = {"run_id": pl.String, "edit_count": pl.Int64, "measure": pl.String, "value": pl.Float64, "n": pl.Int64,
              "ci_low": pl.Float64, "ci_high": pl.Float64}
    if df.is_empty():
        return pl.DataFrame(schema=schema)
    n = df.filter(pl.col("metric") == "n").select("run_id", "edit_count", pl.col("value").cast(pl.Int64).alias("n"))
    out = (df.filter(pl.col("metric").is_in(list(names)))
           .join(n, on=["run_id", "edit_count"], how="left")
           .with_columns(pl.col("metric").replace_strict(names).alias("measure")))
    counts = out["n"].fill_null(0).to_numpy()
    low, high = wilson_arrays(out["value"].to_numpy() * counts, counts)
    known = out["n"].is_not_null()
    return (out.with_columns(pl.when(known).then(pl.Series(low)).alias("ci_low"),
                             pl.when(known).then(pl.Series(high)).alias("ci_high"))
            .select(list(schema)).sort("run_id", "measure", "edit_count"))


def ability_order_means(scores: pl.DataFrame, arm_of: dict[str, str]) -> pl.DataFrame:
    """Ability scores of several runs as the mean over each arm's edit orders (store.derived.order_means), in
    ability_small_multiples' columns with run_id = the arm; perplexity is averaged on the log scale."""
    if scores.is_empty():
        return scores
    log = pl.col("metric") == "perplexity"
    as_curves = scores.select(
        "run_id", "edit_count", pl.col("task").alias("series"),
        pl.when(log).then(pl.col("score").log()).otherwise(pl.col("score")).alias("value"), "n",
        pl.when(log).then(pl.col("ci_low").log()).otherwise(pl.col("ci_low")).alias("ci_low"),
        pl.when(log).then(pl.col("ci_high").log()).otherwise(pl.col("ci_high")).alias("ci_high"))
    means = order_means(as_curves, arm_of)
    meta = scores.unique("task").select("task", "category", "chance", "metric")
    back = pl.col("metric") == "perplexity"
    return (means.rename({"arm": "run_id", "series": "task"}).join(meta, on="task", how="left")
            .with_columns([pl.when(back).then(pl.col(c).exp()).otherwise(pl.col(c)).alias(c)
                           for c in ("value", "ci_low", "ci_high")])
            .rename({"value": "score"}))

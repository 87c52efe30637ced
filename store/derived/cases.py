"""One case across runs: which runs measured it, and one run's metrics and generations for it."""

from __future__ import annotations

import sqlite3

import polars as pl

from .. import queries


def case_runs(conn: sqlite3.Connection, case_id: str) -> pl.DataFrame:
    """Every run that measured a case, with its kind, editor, model, status and whether its editor edits facts
    (False for a control, store.derived.labels.edits_facts), newest first."""
    import json

    from .labels import edits_facts

    runs = queries.list_runs(conn)
    ids = queries.measurements(conn, case_ids=case_id)["run_id"].unique().to_list()
    runs = runs.filter(pl.col("run_id").is_in(ids))
    aims = [edits_facts(e, json.loads(c) if c else None)
            for e, c in zip(runs["editor"].to_list(), runs["config"].to_list())]
    return (
        runs.with_columns(pl.Series("edits_facts", aims, dtype=pl.Boolean))
        .select("run_id", "kind", "editor", "model", "status", "started_at", "edits_facts")
        .sort("started_at", descending=True)
    )


def case_view(conn: sqlite3.Connection, case_id: str, run_id: str) -> pl.DataFrame:
    """One run's view of one case: a row per (edit count, rephrase type) with the main metrics as columns
    and the generation(s) of that type (probes joined with ' | ')."""
    m = queries.measurements(conn, run_ids=run_id, case_ids=case_id)
    if m.is_empty():
        return pl.DataFrame(schema={"edit_count": pl.Int64, "rephrase_type": pl.String})
    wide = m.pivot(on="metric", index=["edit_count", "rephrase_type"], values="value", aggregate_function="first")
    gens = (
        queries.generations(conn, run_id, case_id=case_id)
        .group_by("edit_count", "rephrase_type")
        .agg(pl.col("text").str.join(" | ").alias("generation"))
    )
    keep = [c for c in ("p_true", "p_new", "es", "acc", "rev", "ns", "rank_true", "fluency", "edit_seconds") if c in wide.columns]
    return (
        wide.join(gens, on=["edit_count", "rephrase_type"], how="left")
        .select("edit_count", "rephrase_type", *keep, "generation")
        .sort("edit_count", "rephrase_type")
    )

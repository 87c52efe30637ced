"""Reads over an EditScope store: pure functions `f(conn, plain args) -> polars.DataFrame`.

Every function takes an open sqlite3 connection (read-only is enough) and plain arguments, turns the
arguments into parameterised SQL (values only ever travel as `?` parameters; only placeholder lists
are built), and returns a DataFrame whose columns are the same whether or not any row matched. Column
types follow the declared SQLite types; JSON columns (aliases, templates, hparams, config, ...) come
back as strings for the caller to decode. Nothing here caches: the dashboard owns caching.
"""

from __future__ import annotations

import json
import re
import sqlite3
from typing import Any, Iterable

import polars as pl

from .conventions import HELD_ACC, PLAN_STATUS_META, RUN_LEVEL

# the columns case_knowledge always has, whether or not the knowledge run measured them
KNOWLEDGE_METRICS = ("p_true", "rank_true", "recall")


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _polars_type(declared: str | None) -> pl.DataType | None:
    """SQLite's type-affinity rules, mapped to polars (None: let polars infer)."""
    declared = (declared or "").upper()
    if "INT" in declared:
        return pl.Int64
    if any(word in declared for word in ("CHAR", "CLOB", "TEXT")):
        return pl.Utf8
    if any(word in declared for word in ("REAL", "FLOA", "DOUB")):
        return pl.Float64
    return None


def _column_types(conn: sqlite3.Connection) -> dict[str, pl.DataType]:
    """Polars type of every column name in the store, from the tables' declared types."""
    rows = conn.execute(
        "SELECT p.name, p.type FROM sqlite_master AS m, pragma_table_info(m.name) AS p WHERE m.type = 'table'"
    ).fetchall()
    return {name: dtype for name, declared in rows if (dtype := _polars_type(declared)) is not None}


def _frame(conn: sqlite3.Connection, sql: str, params: Iterable[Any] = (),
           types: dict[str, pl.DataType] | None = None) -> pl.DataFrame:
    """Run `sql` and build a frame column by column (fast, and typed even when no row matched)."""
    cur = conn.execute(sql, tuple(params))
    names = [d[0] for d in cur.description]
    rows = cur.fetchall()
    known = _column_types(conn) | (types or {})
    columns = list(zip(*rows)) if rows else [()] * len(names)
    return pl.DataFrame(
        [pl.Series(name, list(values), dtype=known.get(name), strict=False) for name, values in zip(names, columns)]
    )


def _values(value: Any) -> list:
    """One value or a sequence of them, as a list."""
    return [value] if isinstance(value, (str, int, float)) else list(value)


def _where(filters: list[tuple[str, Any]]) -> tuple[str, list]:
    """`(" WHERE ...", params)` from (column, value-or-values) pairs whose value is not None.

    A list becomes `column IN (?, ...)`; an empty list matches nothing.
    """
    clauses, params = [], []
    for column, value in filters:
        if value is None:
            continue
        values = _values(value)
        if not values:
            clauses.append("0")
        elif len(values) == 1:
            clauses.append(f"{column} = ?")
        else:
            clauses.append(f"{column} IN ({', '.join('?' * len(values))})")
        params.extend(values)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def store_summary(conn: sqlite3.Connection) -> pl.DataFrame:
    """One row per table (and per view: `measurements`) in creation order: table, rows."""
    names = [name for (name,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%' ORDER BY rowid"
    )]
    # table names come from sqlite_master itself; they cannot be passed as parameters
    counts = [conn.execute(f"SELECT count(*) FROM {_quote(name)}").fetchone()[0] for name in names]
    return pl.DataFrame({"table": names, "rows": counts}, schema={"table": pl.Utf8, "rows": pl.Int64})


def schema_history(conn: sqlite3.Connection) -> pl.DataFrame:
    """The migrations applied to the store: version, name, applied_at."""
    return _frame(conn, "SELECT version, name, applied_at FROM migrations ORDER BY version")


PLAN_STATUS_SCHEMA = {"plan": pl.Utf8, "taken_at": pl.Utf8, "unit": pl.Utf8, "kind": pl.Utf8, "state": pl.Utf8,
                      "held": pl.Boolean, "other_hparams": pl.Boolean, "done": pl.Int64, "total": pl.Int64,
                      "cpu_h_left": pl.Float64, "estimated": pl.Boolean, "runs": pl.Utf8}


def plan_status(conn: sqlite3.Connection) -> pl.DataFrame:
    """The status of the plan the store was copied from, as `plan snapshot` kept it (compute.plan.status_record):
    one row per unit in the plan's order (its priority), with the plan's file and when the copy was taken on every
    row; `runs` the unit's run ids, comma-separated. No rows for a store no snapshot or `plan run` wrote one into,
    nor for a record that is not one (damaged, or written by hand)."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (PLAN_STATUS_META,)).fetchone()
    if row is None or not row[0]:
        return pl.DataFrame(schema=PLAN_STATUS_SCHEMA)
    try:
        record = json.loads(row[0])
        rows = [{**{k: u.get(k) for k in PLAN_STATUS_SCHEMA if k not in ("plan", "taken_at", "runs")},
                 "plan": record.get("plan"), "taken_at": record.get("taken_at"),
                 "runs": ",".join(u.get("runs") or [])} for u in record.get("units", [])]
        return pl.DataFrame(rows, schema=PLAN_STATUS_SCHEMA)
    except (ValueError, TypeError, AttributeError, pl.exceptions.PolarsError):
        return pl.DataFrame(schema=PLAN_STATUS_SCHEMA)  # a record no snapshot wrote: as if there were none


def list_runs(conn: sqlite3.Connection, kind: str | None = None, status: str | None = None) -> pl.DataFrame:
    """Runs, newest first, with every runs column plus progress = n_done / n_total, plan_unit (the id of the
    plan unit that made the run: run_events of kind plan_unit, compute/plan.py) and pre_rebuild: the store has
    runs made by a plan (other than the dashboard's launch plans) and this one was not (a run kept from before
    the store was rebuilt by its plan, e.g. with edit mechanics since fixed; pages prefer the rebuilt runs and
    say so)."""
    where, params = _where([("kind", kind), ("status", status)])
    # a store rebuilt by a plan (not the dashboard's one-unit launch plans, named launch-JOB)
    rebuilt = conn.execute("SELECT 1 FROM run_events WHERE kind = 'plan_unit' AND "
                           "coalesce(json_extract(detail, '$.plan'), '') NOT LIKE 'launch-%' LIMIT 1").fetchone() is not None
    return (
        _frame(conn, f"SELECT *, (SELECT json_extract(e.detail, '$.unit') FROM run_events e WHERE e.run_id = runs.run_id "
                     f"AND e.kind = 'plan_unit' LIMIT 1) AS plan_unit FROM runs{where} "
                     f"ORDER BY started_at DESC, run_id DESC", params, types={"plan_unit": pl.Utf8})
        .with_columns(
            pl.when(pl.col("n_total") > 0)
            .then(pl.col("n_done") / pl.col("n_total"))
            .otherwise(None)
            .alias("progress"),
            (pl.col("plan_unit").is_null() & rebuilt).alias("pre_rebuild"),
        )
    )


def kb_relations(conn: sqlite3.Connection) -> pl.DataFrame:
    """One row per relation: relation, description, subject_kind, n_facts, n_subjects, n_objects, templates."""
    return _frame(
        conn,
        "SELECT r.relation, r.description, r.subject_kind, count(f.subject) AS n_facts, "
        "count(DISTINCT f.subject) AS n_subjects, count(DISTINCT f.object) AS n_objects, r.templates "
        "FROM kb_relations AS r LEFT JOIN kb_facts AS f ON f.relation = r.relation "
        "GROUP BY r.relation ORDER BY r.relation",
        types={"n_facts": pl.Int64, "n_subjects": pl.Int64, "n_objects": pl.Int64},
    )


def kb_subject(conn: sqlite3.Connection, subject: str) -> pl.DataFrame:
    """The facts about `subject`, each with the subject's features (kind, aliases, frequency, ...)."""
    return _frame(
        conn,
        "SELECT f.relation, f.subject, f.object, f.object_aliases, f.cooccurrence, s.kind, s.aliases, "
        "s.frequency, s.connection, s.population "
        "FROM kb_facts AS f LEFT JOIN kb_subjects AS s ON s.subject = f.subject "
        "WHERE f.subject = ? ORDER BY f.relation, f.object",
        (subject,),
    )


def kb_facts(conn: sqlite3.Connection, relation: str | None = None, limit: int | None = None) -> pl.DataFrame:
    """Knowledge-base facts (optionally of one relation, at most `limit`), with subject frequency and
    connection."""
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a non-negative integer or None; got {limit!r}.")
    where, params = _where([("f.relation", relation)])
    return _frame(
        conn,
        "SELECT f.relation, f.subject, f.object, f.object_aliases, f.cooccurrence, s.frequency, s.connection "
        f"FROM kb_facts AS f LEFT JOIN kb_subjects AS s ON s.subject = f.subject{where} "
        "ORDER BY f.relation, f.subject, f.object LIMIT ?",
        [*params, -1 if limit is None else limit],
    )


def cases(conn: sqlite3.Connection, case_set: str | None = None, relation: str | None = None,
          subject_like: str | None = None) -> pl.DataFrame:
    """Cases, filtered by case set, relation, and a case-insensitive substring of the subject."""
    where, params = _where([("case_set", case_set), ("relation", relation)])
    if subject_like:
        escaped = subject_like.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where += (" AND " if where else " WHERE ") + "subject LIKE ? ESCAPE '\\'"
        params.append(f"%{escaped}%")
    return _frame(conn, f"SELECT * FROM cases{where} ORDER BY case_set, case_id", params)


def measured_case_ids(conn: sqlite3.Connection) -> pl.DataFrame:
    """case_id of every case some run measured (a run's own run-level rows left out)."""
    return _frame(conn, "SELECT DISTINCT case_id FROM measurements WHERE case_id != ?", (RUN_LEVEL,),
                  types={"case_id": pl.Utf8})


def case_sets(conn: sqlite3.Connection) -> pl.DataFrame:
    """One row per case set: case_set, sources, n_cases, n_relations, n_subjects, created_at (latest)."""
    return _frame(
        conn,
        "SELECT case_set, group_concat(DISTINCT source) AS sources, count(*) AS n_cases, "
        "count(DISTINCT relation) AS n_relations, count(DISTINCT subject) AS n_subjects, "
        "max(created_at) AS created_at FROM cases GROUP BY case_set ORDER BY case_set",
        types={"sources": pl.Utf8, "n_cases": pl.Int64, "n_relations": pl.Int64, "n_subjects": pl.Int64},
    )


def probes(conn: sqlite3.Connection, case_id: str) -> pl.DataFrame:
    """The probes of one case, by probe_id."""
    return _frame(conn, "SELECT * FROM probes WHERE case_id = ? ORDER BY probe_id", (case_id,))


def probes_left_out(conn: sqlite3.Connection) -> dict[str, list[str]]:
    """case set -> the rephrase types whose probes this store left out (store.conventions.PROBES_LEFT_OUT_META;
    `plan snapshot` leaves out the types no stored run measured); {} when it left out none."""
    from .db import _probes_left_out

    return _probes_left_out(conn)


def left_out_needed(conn: sqlite3.Connection, case_set: str, needs: Iterable[str] | None = None) -> set[str]:
    """The rephrase types this store left out of `case_set` that a run reading `needs` (None: every type) needs."""
    left = set(probes_left_out(conn).get(case_set, ()))
    return left if needs is None else left & set(needs)


def left_out_probe_types(conn: sqlite3.Connection, case_set: str) -> pl.DataFrame:
    """The rephrase types whose probes this store left out of `case_set` (column rephrase_type; see probes_left_out)."""
    return pl.DataFrame({"rephrase_type": probes_left_out(conn).get(case_set, [])}, schema={"rephrase_type": pl.Utf8})


def probes_left_out_message(store: str, case_set: str, types: Iterable[str], n_cases: int | None = None) -> str:
    """What to do when a run needs probes a store left out: rebuild them (deterministic)."""
    seed = re.search(r"-s(\d+)$", case_set)
    build = (f"python -m compute --store {store} cases build --set {case_set}"
             + (f" --n {n_cases}" if n_cases else "") + (f" --seed {seed.group(1)}" if seed else ""))
    return (f"{store} left out the probes of type(s) {', '.join(sorted(types))} of case set {case_set!r} (no "
            f"stored run measured them; `plan snapshot` keeps only what its runs read). Probes are built "
            f"deterministically: restore them with `{build}` (add the --relations or --unbalanced the set was "
            f"built with, if any), or measure only the types the store keeps.")


def probes_of_set(conn: sqlite3.Connection, case_set: str) -> pl.DataFrame:
    """The probes of every case of a case set, by case_id and probe_id (one query for the whole set)."""
    return _frame(
        conn,
        "SELECT p.* FROM probes AS p JOIN cases AS c ON c.case_id = p.case_id WHERE c.case_set = ? "
        "ORDER BY p.case_id, p.probe_id",
        (case_set,),
    )


def newest_knowledge_run(conn: sqlite3.Connection, model: str | None = None) -> str | None:
    """The newest 'knowledge' run (finished ones first), optionally of one model; None if there is none."""
    row = conn.execute(
        "SELECT run_id FROM runs WHERE kind = 'knowledge' AND (? IS NULL OR model = ?) "
        "ORDER BY status = 'done' DESC, started_at DESC, run_id DESC LIMIT 1",
        (model, model),
    ).fetchone()
    return None if row is None else row[0]


def case_knowledge(conn: sqlite3.Connection, run_id: str | None = None, case_set: str | None = None,
                   model: str | None = None) -> pl.DataFrame:
    """Cases with their pre-edit knowledge on the model, one column per metric.

    The metrics come from `run_id`, or else from the newest finished 'knowledge' run (of `model` when
    given): its measurements on the plain prompt at edit_count 0, pivoted so that p_true, rank_true,
    recall (always present, null where unmeasured) and any other measured metric become columns.
    Every case is kept; `knowledge_run_id` says which run the numbers come from.
    """
    run_id = run_id if run_id is not None else newest_knowledge_run(conn, model)
    base = cases(conn, case_set=case_set)
    long = _frame(
        conn,
        "SELECT case_id, metric, value FROM measurements "
        "WHERE run_id = ? AND edit_count = 0 AND rephrase_type = 'plain'",
        (run_id,),
    )
    wide = long.pivot(on="metric", index="case_id", values="value", aggregate_function="first")
    extra = sorted(set(wide.columns) - {"case_id", *KNOWLEDGE_METRICS})
    return (
        base.join(wide, on="case_id", how="left", maintain_order="left")
        .with_columns(
            pl.lit(run_id, dtype=pl.Utf8).alias("knowledge_run_id"),
            *[pl.lit(None, dtype=pl.Float64).alias(m) for m in KNOWLEDGE_METRICS if m not in wide.columns],
        )
        .select(*base.columns, "knowledge_run_id", *KNOWLEDGE_METRICS, *extra)
    )


def measurements(conn: sqlite3.Connection, run_ids: str | Iterable[str] | None = None,
                 metrics: str | Iterable[str] | None = None,
                 rephrase_types: str | Iterable[str] | None = None,
                 edit_count: int | Iterable[int] | None = None,
                 case_ids: str | Iterable[str] | None = None) -> pl.DataFrame:
    """Measurement rows (run_id, case_id, edit_count, rephrase_type, metric, value); each filter takes
    one value or a list (an empty list matches nothing), None means no filter."""
    where, params = _where([
        ("run_id", run_ids), ("metric", metrics), ("rephrase_type", rephrase_types),
        ("edit_count", edit_count), ("case_id", case_ids),
    ])
    return _frame(
        conn,
        f"SELECT run_id, case_id, edit_count, rephrase_type, metric, value FROM measurements{where} "
        "ORDER BY run_id, case_id, edit_count, rephrase_type, metric",
        params,
    )


def generations(conn: sqlite3.Connection, run_id: str, case_id: str | None = None,
                edit_count: int | None = None) -> pl.DataFrame:
    """Generated texts of a run (optionally one case / edit count), 'pre' before 'post' for each probe."""
    where, params = _where([("run_id", run_id), ("case_id", case_id), ("edit_count", edit_count)])
    return _frame(
        conn,
        f"SELECT * FROM generations{where} "
        "ORDER BY case_id, edit_count, probe_id, CASE phase WHEN 'pre' THEN 0 ELSE 1 END",
        params,
    )


def abilities(conn: sqlite3.Connection, run_ids: str | Iterable[str] | None = None) -> pl.DataFrame:
    """General-ability scores by run, task, mode, batch size and edit count."""
    where, params = _where([("run_id", run_ids)])
    return _frame(
        conn, f"SELECT * FROM abilities{where} ORDER BY run_id, task, mode, batch_size, edit_count", params
    )


def weight_drift(conn: sqlite3.Connection, run_ids: str | Iterable[str] | None = None) -> pl.DataFrame:
    """Weight drift by run, module and edit count."""
    where, params = _where([("run_id", run_ids)])
    return _frame(conn, f"SELECT * FROM weight_drift{where} ORDER BY run_id, module, edit_count", params)


def run_events(conn: sqlite3.Connection, run_ids: str | Iterable[str] | None = None,
               kind: str | None = None) -> pl.DataFrame:
    """Events found in runs (collapse, phase, disabling_edit) by run, kind, series and edit count."""
    where, params = _where([("run_id", run_ids), ("kind", kind)])
    return _frame(conn, f"SELECT * FROM run_events{where} ORDER BY run_id, kind, series, edit_count", params)


def rephrase_measurability(conn: sqlite3.Connection, run_id: str | None = None,
                           case_set: str | None = None) -> pl.DataFrame:
    """store.measurable.run_measurability (which rephrase types the unedited model can answer, with n and
    the reason), reachable where the dashboard looks up queries by name."""
    from .measurable import run_measurability  # store.measurable reads through this module

    return run_measurability(conn, run_id=run_id, case_set=case_set)


def popularity_points_of_runs(conn: sqlite3.Connection, run_ids: str | Iterable[str], feature: str = "frequency",
                              metric: str = "acc", rephrase_type: str = "plain", relations=None,
                              unedited: bool = True, edit_count: int = 1, known_only: bool = False,
                              held_only: bool = False) -> pl.DataFrame:
    """One row per (series, case): the case's popularity `feature` and its `metric` on `rephrase_type`, where a
    series is a run (series = run_id, at `edit_count`), never an editor, so two runs of one editor never mix.
    With `unedited`, the unedited model is one more series ("unedited"): the knowledge run that measured the
    most rephrase types, at edit count 0 (metric `recall` reads as `rev`). `relations` keeps those cases only.
    `known_only` keeps, in each series, only the facts the unedited model knew on the plain prompt
    (`known_case_ids`: of a run's baseline, and of the unedited series' own knowledge run), whatever the
    rephrase type shown. `held_only` keeps, in each run's series, only the facts whose edit held on the plain
    prompt (`held_case_ids`); the unedited series, which made no edit, keeps its facts."""
    from .measurable import baseline_run

    ids = _values(run_ids)
    if feature not in {"frequency", "connection", "cooccurrence", "population"}:
        raise ValueError(f"unknown popularity feature {feature!r}: choose frequency, connection, cooccurrence "
                         "or population")
    schema = {"series": pl.String, "case_id": pl.String, "relation": pl.String, "subject": pl.String,
              feature: pl.Float64, "value": pl.Float64}
    frames = [measurements(conn, run_ids=ids, metrics=metric, rephrase_types=rephrase_type, edit_count=edit_count)
              .select(pl.col("run_id").alias("series"), "case_id", "value")]
    base = baseline_run(conn) if unedited else None
    if base is not None:
        pre = "rev" if metric in ("recall", "rev") else metric
        frames.append(measurements(conn, run_ids=base, metrics=pre, rephrase_types=rephrase_type, edit_count=0)
                      .select(pl.lit("unedited").alias("series"), "case_id", "value"))
    if known_only:
        keep = [(r, k) for r in ids for k in known_case_ids(conn, r)]
        if base is not None:
            keep += [("unedited", k) for k in known_case_ids(conn, base)]
        known = pl.DataFrame(keep, schema={"series": pl.String, "case_id": pl.String}, orient="row")
        frames = [f.join(known, on=["series", "case_id"], how="semi") for f in frames]
    if held_only:
        held = pl.DataFrame([(r, k) for r in ids for k in held_case_ids(conn, r, edit_count)],
                            schema={"series": pl.String, "case_id": pl.String}, orient="row")
        frames[0] = frames[0].join(held, on=["series", "case_id"], how="semi")
    feats = cases(conn).select("case_id", "relation", "subject", feature)
    if relations is not None:
        feats = feats.filter(pl.col("relation").is_in(_values(relations)))
    out = pl.concat(frames).join(feats, on="case_id", how="inner").filter(pl.col(feature).is_not_null())
    if out.is_empty():
        return pl.DataFrame(schema=schema)
    return out.select("series", "case_id", "relation", "subject", pl.col(feature).cast(pl.Float64),
                      pl.col("value").cast(pl.Float64)).sort("series", "case_id")


def edit_diagnostics(conn: sqlite3.Connection, run_ids: str | Iterable[str] | None = None) -> pl.DataFrame:
    """One row per edit of the given runs (store.diagnostics.per_edit) with its robust z of edit size within its
    run and whether that makes it an outlier (store.diagnostics.OUTLIER_Z)."""
    from .diagnostics import flag_outliers, per_edit

    return flag_outliers(per_edit(conn, None if run_ids is None else _values(run_ids)))


def edit_diagnostics_summary(conn: sqlite3.Connection, run_ids: str | Iterable[str] | None = None) -> pl.DataFrame:
    """Per run: the distribution of its edits' size and optimisation (store.diagnostics.run_distribution)."""
    from .diagnostics import run_distribution

    return run_distribution(conn, None if run_ids is None else _values(run_ids))


# --------------------------------------------------------------------------- known facts (pre-edit recall)

# "Known": the unedited model's free generation names the true object on the probes of a type at edit count 0
# (rev, the share of that type's probes naming it) for more than half of them, the same line
# store.measurable draws; on the plain prompt (one probe per case) that is rev = 1.
KNOWN_METRIC = "rev"
KNOWN_SHARE = 0.5
KNOWN_BY = "plain"  # the rephrase type whose pre-edit recall decides whether a fact is known


def baseline_of(conn: sqlite3.Connection, run_id: str) -> str | None:
    """The run whose edit-count-0 rows describe the unedited model for `run_id`: store.measurable.baseline_run,
    looked for among the knowledge runs of the run's own case set when its config names no baseline."""
    from .measurable import baseline_run

    row = conn.execute("SELECT config FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    if row is None:
        raise ValueError(f"no run {run_id!r} in the store; pick one of the listed runs.")
    return baseline_run(conn, run_id=run_id, case_set=json.loads(row[0] or "{}").get("case_set"))


def pre_edit_recall(conn: sqlite3.Connection, run_id: str,
                    rephrase_types: str | Iterable[str] | None = None) -> pl.DataFrame:
    """Each case's pre-edit recall per rephrase type, for the cases that `run_id` measured: the unedited
    model's `rev` at edit count 0 on that type in the run's baseline (`baseline_of`: the knowledge run its
    config names as `baseline_run`, else the knowledge run of its model and case set that measured the most
    types). Columns run_id, baseline_run, case_id, rephrase_type, recall (share of the type's probes naming
    the true object) and known (recall > KNOWN_SHARE; on the plain prompt, rev = 1). Cases the baseline did
    not measure have no row; a run without a baseline gives an empty frame."""
    schema = {"run_id": pl.String, "baseline_run": pl.String, "case_id": pl.String, "rephrase_type": pl.String,
              "recall": pl.Float64, "known": pl.Boolean}
    base = baseline_of(conn, run_id)
    if base is None:
        return pl.DataFrame(schema=schema)
    where, params = _where([("run_id", base), ("edit_count", 0), ("metric", KNOWN_METRIC),
                            ("rephrase_type", rephrase_types)])
    if base != run_id:  # a knowledge run is its own baseline; any other run keeps the cases it measured
        where += " AND case_id IN (SELECT DISTINCT case_id FROM measurements WHERE run_id = ?)"
        params.append(run_id)
    rows = _frame(conn, f"SELECT case_id, rephrase_type, value FROM measurements{where} AND value IS NOT NULL "
                        "ORDER BY case_id, rephrase_type", params)
    return pl.DataFrame(schema=schema) if rows.is_empty() else rows.select(
        pl.lit(run_id, dtype=pl.String).alias("run_id"), pl.lit(base, dtype=pl.String).alias("baseline_run"),
        pl.col("case_id").cast(pl.String), pl.col("rephrase_type").cast(pl.String),
        pl.col("value").cast(pl.Float64).alias("recall"), (pl.col("value") > KNOWN_SHARE).alias("known"))


def known_case_ids(conn: sqlite3.Connection, run_id: str) -> list[str]:
    """The cases of `run_id` that the unedited model knew: pre-edit recall on the plain prompt (KNOWN_BY) in
    the run's baseline (`pre_edit_recall`), sorted. Empty when the run has no baseline."""
    known = pre_edit_recall(conn, run_id, rephrase_types=KNOWN_BY).filter(pl.col("known"))
    return sorted(known["case_id"].to_list())


def held_case_ids(conn: sqlite3.Connection, run_id: str, edit_count: int = 1) -> list[str]:
    """The cases of a robustness run whose edit held on the plain prompt (acc there above HELD_ACC), sorted."""
    rows = conn.execute("SELECT DISTINCT case_id FROM measurements WHERE run_id = ? AND edit_count = ? AND "
                        "rephrase_type = 'plain' AND metric = 'acc' AND value > ? ORDER BY case_id",
                        (run_id, edit_count, HELD_ACC)).fetchall()
    return [r[0] for r in rows]


def known_facts_counts(conn: sqlite3.Connection, run_ids: str | Iterable[str]) -> pl.DataFrame:
    """Per run: baseline_run, n_cases (cases the run measured), n_known (of them, known on the plain prompt
    before the edit; see `known_case_ids`) and n_baseline (of them, measured by the baseline at all); a run
    without a baseline has n_known 0 and baseline_run null. For pages to say how many facts a filter keeps."""
    schema = {"run_id": pl.String, "baseline_run": pl.String, "n_cases": pl.Int64, "n_baseline": pl.Int64,
              "n_known": pl.Int64}
    rows = []
    for run_id in _values(run_ids):
        plain = pre_edit_recall(conn, run_id, rephrase_types=KNOWN_BY)
        (n_cases,) = conn.execute("SELECT count(DISTINCT case_id) FROM measurements WHERE run_id = ?",
                                  (run_id,)).fetchone()
        rows.append({"run_id": run_id, "baseline_run": baseline_of(conn, run_id),
                     "n_cases": n_cases, "n_baseline": plain.height, "n_known": int(plain["known"].sum())})
    return pl.DataFrame(rows, schema=schema)

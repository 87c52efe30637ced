"""Study A: pre-edit knowledge by popularity, robustness of an edit across rephrase types (summaries with n and a
95% CI, the drop from the plain prompt, headlines), and the Spearman correlations of popularity features with
recall and post-edit scores (stored in `correlations` when a run finishes, else computed live)."""

from __future__ import annotations

import sqlite3

import numpy as np
import polars as pl

from .. import queries
from ..conventions import HELD_ACC
from ..metrics import wilson_ci
from ..stats import mean_ci_from_sums, spearman_ci, stratified_spearman
from .common import _mean_ci, wilson_arrays

# robustness_summary's paired drop from the plain prompt: cases with both, mean per-case difference, its 95% CI
DROP_COLUMNS = ("drop_n", "drop_from_plain", "drop_ci_low", "drop_ci_high")

POPULARITY_FEATURES = ("frequency", "connection", "cooccurrence", "population")

# `correlations.relation` of the within-relation estimate (store.stats.stratified_spearman: per-relation rhos
# combined by Fisher's z weighted by n - 3, analytic CI); '' is the pooled one, any other value one relation.
WITHIN = "*within*"
WITHIN_COLUMNS = {"rho_within": pl.Float64, "within_ci_low": pl.Float64, "within_ci_high": pl.Float64,
                  "n_within": pl.Int64}


def both_estimates(df: pl.DataFrame, *keys: str) -> pl.DataFrame:
    """Correlation rows (`keys`, rho, ci_low, ci_high, n and WITHIN_COLUMNS) in long form: one row per key and
    estimate, `estimate` "pooled" or "within relation", with rho, ci_low, ci_high and n each; a within-relation
    estimate no relation entered (n_within 0 or missing) is left out."""
    cols = [*keys, "estimate", "rho", "ci_low", "ci_high", "n"]
    if df.is_empty():
        return pl.DataFrame(schema={**{k: df.schema[k] for k in keys}, "estimate": pl.Utf8, "rho": pl.Float64,
                                    "ci_low": pl.Float64, "ci_high": pl.Float64, "n": pl.Int64})
    pooled = df.select(*keys, pl.lit("pooled").alias("estimate"), pl.col("rho").cast(pl.Float64),
                       pl.col("ci_low").cast(pl.Float64), pl.col("ci_high").cast(pl.Float64),
                       pl.col("n").cast(pl.Int64))
    if "rho_within" not in df.columns:
        return pooled.select(cols)
    within = (df.filter(pl.col("n_within").fill_null(0) > 0)
              .select(*keys, pl.lit("within relation").alias("estimate"), pl.col("rho_within").alias("rho"),
                      pl.col("within_ci_low").alias("ci_low"), pl.col("within_ci_high").alias("ci_high"),
                      pl.col("n_within").cast(pl.Int64).alias("n")))
    return pl.concat([pooled, within]).select(cols)


def _within_values(sub: pl.DataFrame, feature: str, target: str) -> dict:
    """The within-relation correlation of `feature` and `target` over the rows of `sub` (with a relation)."""
    w = stratified_spearman(sub[feature].to_numpy(), sub[target].to_numpy(), sub["relation"].fill_null("").to_list())
    return {"rho_within": w.rho, "within_ci_low": w.ci_low, "within_ci_high": w.ci_high, "n_within": w.n}


def _knowledge(conn: sqlite3.Connection, case_set: str | None, run_id: str | None) -> pl.DataFrame:
    if run_id is None and case_set is not None:
        # that set's own run, not the newest of any set (runs that do not name their set: the newest)
        run_id = _newest_knowledge_of(conn, case_set)
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
    """Spearman rho of each popularity feature with pre-edit recall and with P(true), bootstrap 95% CI, and
    beside it the within-relation rho (rho_within, within_ci_low/high, n_within: WITHIN).

    Read from the `correlations` table when the knowledge run's are stored (store_correlations), else
    computed here."""
    stored = _stored_knowledge_correlations(conn, case_set, run_id, n_boot)
    if stored is not None:
        return stored
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
                         "ci_high": c.ci_high, "n": c.n, **_within_values(sub, feature, target)})
    schema = {"feature": pl.String, "against": pl.String, "rho": pl.Float64, "ci_low": pl.Float64,
              "ci_high": pl.Float64, "n": pl.Int64, **WITHIN_COLUMNS}
    return pl.DataFrame(rows, schema=schema)


SMALL_N = 30  # below this many non-binary values a mean's CI is bootstrapped, above it the normal approximation


def _stored(conn: sqlite3.Connection, run_ids: list[str], n_boot: int) -> pl.DataFrame | None:
    """Stored correlations (all relations pooled, with the within-relation ones beside them as WITHIN_COLUMNS)
    of these runs if every one of them has both, else None (computed live then)."""
    if not run_ids:
        return None
    marks = ", ".join("?" * len(run_ids))
    try:
        df = queries._frame(conn, f"SELECT * FROM correlations WHERE run_id IN ({marks}) AND relation IN ('', ?) "
                                  "AND n_boot = ?", [*run_ids, WITHIN, n_boot])
    except sqlite3.OperationalError:  # a store from before the table existed
        return None
    if df.is_empty():
        return None
    # SQLite stores NaN (an undefined rho or CI) as NULL: give it back as NaN, as computed
    df = df.with_columns(pl.col(c).cast(pl.Float64).fill_null(float("nan")) for c in ("rho", "ci_low", "ci_high"))
    pooled, within = df.filter(pl.col("relation") == ""), df.filter(pl.col("relation") == WITHIN)
    if {*pooled["run_id"].unique().to_list()} != set(run_ids) or {*within["run_id"].unique().to_list()} != set(run_ids):
        return None  # some run's are missing, or stored before the within-relation estimate existed
    keys = ["run_id", "rephrase_type", "metric", "feature"]
    return pooled.join(within.select(*keys, pl.col("rho").alias("rho_within"), pl.col("ci_low").alias("within_ci_low"),
                                     pl.col("ci_high").alias("within_ci_high"),
                                     pl.col("n").cast(pl.Int64).alias("n_within")), on=keys, how="left")


def _stored_knowledge_correlations(conn, case_set, run_id, n_boot) -> pl.DataFrame | None:
    if run_id is None:
        run_id = queries.newest_knowledge_run(conn) if case_set is None else _newest_knowledge_of(conn, case_set)
    if run_id is None:
        return None
    df = _stored(conn, [run_id], n_boot)
    if df is None:
        return None
    order = {f: i for i, f in enumerate(POPULARITY_FEATURES)}
    return (df.filter(pl.col("rephrase_type") == "plain")
            .with_columns(pl.col("feature").replace_strict(order, default=99, return_dtype=pl.Int64).alias("_f"),
                          (pl.col("metric") != "recall").cast(pl.Int64).alias("_m"))
            .sort("_f", "_m")
            .select("feature", pl.col("metric").alias("against"), "rho", "ci_low", "ci_high",
                    pl.col("n").cast(pl.Int64), *WITHIN_COLUMNS))


def _newest_knowledge_of(conn: sqlite3.Connection, case_set: str) -> str | None:
    """The knowledge run of a case set: finished first, then the one covering the most cases (a
    robustness run's baseline may cover only some), then the newest."""
    import json

    runs = [r for r in queries.list_runs(conn, kind="knowledge").iter_rows(named=True)
            if json.loads(r["config"] or "{}").get("case_set") == case_set]
    if not runs:
        return None
    runs.sort(key=lambda r: (r["status"] == "done", r["n_done"] or 0, r["started_at"] or ""), reverse=True)
    return runs[0]["run_id"]


def correlation_rows(conn: sqlite3.Connection, run_id: str, n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """Every Spearman correlation the dashboard shows for one run, as `correlations` rows: for a knowledge
    run, each feature against recall and P(true) on the plain prompt; for a robustness run, each feature
    against acc and rev in every rephrase type. Each comes twice: pooled over relations (relation '') and
    within relation (relation WITHIN)."""
    from datetime import datetime, timezone

    run = conn.execute("SELECT kind FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    if run is None:
        raise ValueError(f"no run {run_id!r} in this store")
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    rows = []
    if run[0] == "knowledge":
        df = _knowledge(conn, None, run_id)
        for feature in POPULARITY_FEATURES:
            for target in ("recall", "p_true"):
                if df.is_empty() or feature not in df.columns or target not in df.columns:
                    continue
                sub = df.filter(pl.col(feature).is_not_null() & pl.col(target).is_not_null())
                if sub.height < 3:
                    continue
                c = spearman_ci(sub[feature].to_numpy(), sub[target].to_numpy(), n_boot=n_boot, seed=seed)
                rows.append({"run_id": run_id, "rephrase_type": "plain", "metric": target, "feature": feature,
                             "rho": c.rho, "ci_low": c.ci_low, "ci_high": c.ci_high, "n": c.n,
                             **_within_values(sub, feature, target)})
    elif run[0] == "robustness":
        live = _robustness_correlations_live(conn, _runs(conn, "robustness", run_id), ("acc", "rev"),
                                             POPULARITY_FEATURES, n_boot, None, None)
        rows = list(live.iter_rows(named=True))
    out = []
    for r in rows:
        key = {k: r[k] for k in ("run_id", "rephrase_type", "metric", "feature")}
        meta = {"n_boot": n_boot, "seed": seed, "computed_at": now}
        out.append({**key, "relation": "", "rho": r["rho"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                    "n": r["n"], **meta})
        out.append({**key, "relation": WITHIN, "rho": r["rho_within"], "ci_low": r["within_ci_low"],
                    "ci_high": r["within_ci_high"], "n": r["n_within"], **meta})
    return out


def store_correlations(store, run_ids=None, n_boot: int = 1000) -> int:
    """Compute and store the correlations of finished knowledge and robustness runs (all, or `run_ids`)
    whose stored ones are missing, older than the run or lack the within-relation estimate; returns how many
    runs were (re)computed."""
    runs = queries.list_runs(store.conn).filter(pl.col("kind").is_in(["knowledge", "robustness"])
                                                & (pl.col("status") == "done"))
    if run_ids is not None:
        runs = runs.filter(pl.col("run_id").is_in([run_ids] if isinstance(run_ids, str) else list(run_ids)))
    done = 0
    for r in runs.iter_rows(named=True):
        have, within = store.conn.execute(
            "SELECT min(computed_at), count(CASE WHEN relation = ? THEN 1 END) FROM correlations "
            "WHERE run_id = ? AND n_boot = ?", (WITHIN, r["run_id"], n_boot)).fetchone()
        if have is not None and within and (r["finished_at"] or "") <= have:
            continue
        store.replace_correlations(r["run_id"], correlation_rows(store.conn, r["run_id"], n_boot=n_boot))
        done += 1
    return done


def _runs(conn: sqlite3.Connection, kind: str, run_ids) -> pl.DataFrame:
    runs = queries.list_runs(conn, kind=kind)
    if run_ids is not None:
        ids = [run_ids] if isinstance(run_ids, str) else list(run_ids)
        runs = runs.filter(pl.col("run_id").is_in(ids))
    return runs


def _cases_clause(cases_of: dict[str, list[str]]) -> tuple[str, list]:
    """SQL over `measurements m` keeping, for each run, the cases `cases_of` gives it, and its parameters; "0"
    (nothing) when no run has one."""
    parts, params = [], []
    for run_id, cases in cases_of.items():
        if cases:
            parts.append(f"(m.run_id = ? AND m.case_id IN ({', '.join('?' * len(cases))}))")
            params += [run_id, *cases]
    return ("(" + " OR ".join(parts) + ")" if parts else "0"), params


def _known_clause(conn: sqlite3.Connection, run_ids: list[str]) -> tuple[str, list]:
    """SQL over `measurements m` keeping each run's known facts (store.queries.known_case_ids), and its
    parameters; "0" (nothing) when no run has a known fact."""
    return _cases_clause({r: queries.known_case_ids(conn, r) for r in run_ids})


def robustness_summary(
    conn: sqlite3.Connection,
    run_ids=None,
    metrics=("acc", "rev", "es"),
    by: str | None = None,
    edit_count: int = 1,
    relations=None,
    known_only: bool = False,
    held_only: bool = False,
) -> pl.DataFrame:
    """Per robustness run (editor) x rephrase type x metric [x relation or popularity quartile]: the mean
    over cases with n and a 95% CI, and the drop from the plain prompt, paired on the cases measured on both:
    `drop_from_plain` the mean per-case difference (type - plain), `drop_n` those cases, `drop_ci_low` /
    `drop_ci_high` its 95% t-interval (store.stats.mean_ci_from_sums).
    `relations` keeps only the cases of those relations. `known_only` keeps only the facts the unedited model
    knew, judged on the plain prompt for every rephrase type (store.queries.known_case_ids: its free answer
    to the plain prompt named the true object in the run's baseline), so that every column of a run covers
    the same facts and the drop from plain compares like with like; a run without a baseline keeps none.
    `held_only` keeps, in each run, only the facts whose edit held on the plain prompt
    (store.queries.held_case_ids): what rephrasing does to an edit that took."""
    if by not in (None, "relation", "popularity_quartile"):
        raise ValueError(f"by must be None, 'relation' or 'popularity_quartile', not {by!r}")
    runs = _runs(conn, "robustness", run_ids)
    cols = ["run_id", "editor", "rephrase_type", "metric", *([by] if by else []), "n", "mean", "ci_low",
            "ci_high", *DROP_COLUMNS]
    empty = pl.DataFrame(schema={c: (pl.Float64 if c in ("mean", "ci_low", "ci_high", *DROP_COLUMNS) and c != "drop_n"
                                     else pl.Int64 if c in ("n", "popularity_quartile", "drop_n") else pl.String)
                                 for c in cols})
    if runs.is_empty():
        return empty
    # aggregate in SQL: n, sum, sum of squares and whether every value is 0/1, per group
    ids, mets = runs["run_id"].to_list(), list(metrics)
    join = " JOIN cases c ON c.case_id = m.case_id" if (by or relations is not None) else ""
    group_by = "m.run_id, m.rephrase_type, m.metric" + (f", c.{by}" if by else "")
    where = (f"m.run_id IN ({', '.join('?' * len(ids))}) AND m.metric IN ({', '.join('?' * len(mets))}) "
             "AND m.edit_count = ? AND m.value IS NOT NULL")
    params = [*ids, *mets, edit_count]
    if relations is not None:
        rel = list(relations)
        if not rel:
            return empty
        where += f" AND c.relation IN ({', '.join('?' * len(rel))})"
        params += rel
    if known_only:
        known_sql, known_params = _known_clause(conn, ids)
        where += " AND " + known_sql
        params += known_params
    if held_only:
        held_sql, held_params = _cases_clause({r: queries.held_case_ids(conn, r, edit_count) for r in ids})
        where += " AND " + held_sql
        params += held_params
    agg = queries._frame(conn, f"SELECT {group_by.replace('c.' + by, 'c.' + by + ' AS ' + by) if by else group_by}, "
                               "COUNT(*) AS n, SUM(m.value) AS s, SUM(m.value * m.value) AS ss, "
                               "SUM(CASE WHEN m.value IN (0.0, 1.0) THEN 0 ELSE 1 END) AS nonbinary "
                               f"FROM measurements m{join} WHERE {where} GROUP BY {group_by}", params)
    keys = ["run_id", "editor", "rephrase_type", "metric", *([by] if by else [])]
    if agg.is_empty():
        return empty
    agg = agg.join(runs.select("run_id", "editor"), on="run_id")
    n = agg["n"].to_numpy().astype(float)
    mean, n_lo, n_hi = mean_ci_from_sums(n, agg["s"].to_numpy(), agg["ss"].to_numpy(), t=False)
    lo, hi = wilson_arrays(np.rint(agg["s"].to_numpy()), n)
    binary = agg["nonbinary"].to_numpy() == 0
    lo = np.where(binary, lo, n_lo)
    hi = np.where(binary, hi, n_hi)
    out = agg.with_columns(pl.Series("mean", mean), pl.Series("ci_low", lo), pl.Series("ci_high", hi),
                           pl.col("n").cast(pl.Int64))
    # small groups of non-binary values: a percentile bootstrap of the mean instead of the normal approximation
    small = out.filter((pl.col("nonbinary") > 0) & (pl.col("n") < SMALL_N))
    if not small.is_empty():
        fixes = []
        for r in small.iter_rows(named=True):
            q = ("SELECT m.value FROM measurements m" + join + " WHERE m.run_id = ? AND m.metric = ? AND "
                 "m.rephrase_type = ? AND m.edit_count = ? AND m.value IS NOT NULL")
            args = [r["run_id"], r["metric"], r["rephrase_type"], edit_count]
            if by:
                q += f" AND c.{by} IS ?"
                args.append(r[by])
            if relations is not None:
                q += f" AND c.relation IN ({', '.join('?' * len(rel))})"
                args += rel
            if known_only:
                q += " AND " + known_sql
                args += known_params
            values = [v for (v,) in conn.execute(q, args)]
            b_lo, b_hi = _mean_ci(values)
            fixes.append({**{k: r[k] for k in keys}, "b_lo": b_lo, "b_hi": b_hi})
        fix = pl.DataFrame(fixes).cast({k: out.schema[k] for k in keys})
        out = (out.join(fix, on=keys, how="left")
               .with_columns(pl.coalesce("b_lo", "ci_low").alias("ci_low"), pl.coalesce("b_hi", "ci_high").alias("ci_high"))
               .drop("b_lo", "b_hi"))
    out = out.select(*keys, "n", "mean", "ci_low", "ci_high")
    # the drop from the plain prompt, paired: each case's value on the type minus its value on the plain prompt
    paired = queries._frame(
        conn, f"SELECT {group_by.replace('c.' + by, 'c.' + by + ' AS ' + by) if by else group_by}, "
              "COUNT(*) AS n, SUM(m.value - p.value) AS s, SUM((m.value - p.value) * (m.value - p.value)) AS ss "
              f"FROM measurements m JOIN measurements p ON p.run_id = m.run_id AND p.case_id = m.case_id "
              "AND p.metric = m.metric AND p.edit_count = m.edit_count AND p.rephrase_type = 'plain'"
              f"{join} WHERE {where} AND p.value IS NOT NULL GROUP BY {group_by}", params)
    if paired.is_empty():
        return out.with_columns(pl.lit(None, dtype=pl.Int64).alias("drop_n"),
                                *(pl.lit(None, dtype=pl.Float64).alias(c) for c in DROP_COLUMNS[1:])).select(cols)
    _, lo, hi = mean_ci_from_sums(paired["n"].to_numpy(), paired["s"].to_numpy(), paired["ss"].to_numpy())
    paired = paired.select(*[k for k in keys if k != "editor"], pl.col("n").cast(pl.Int64).alias("drop_n"),
                           (pl.col("s") / pl.col("n")).alias("drop_from_plain"),
                           pl.Series("drop_ci_low", lo), pl.Series("drop_ci_high", hi))
    return (out.join(paired.cast({k: out.schema[k] for k in keys if k != "editor"}),
                     on=[k for k in keys if k != "editor"], how="left")
            .select(cols).sort(keys))


def robustness_correlations(
    conn: sqlite3.Connection,
    run_ids=None,
    metrics=("acc", "rev"),
    features=POPULARITY_FEATURES,
    n_boot: int = 1000,
    rephrase_types=None,
    relations=None,
    known_only: bool = False,
    held_only: bool = False,
) -> pl.DataFrame:
    """Spearman rho (bootstrap 95% CI) of each popularity feature against post-edit acc and rev, per
    robustness run (editor) and rephrase type (all types, or those given), over the cases of `relations`
    (all when None), and beside it the within-relation rho (WITHIN_COLUMNS). Read from the `correlations`
    table where every run's are stored, else computed. `known_only` computes them over the facts the
    unedited model knew on the plain prompt only (as in `robustness_summary`), `held_only` over the facts
    whose edit held on the plain prompt (acc there above HELD_ACC: robustness given an edit that took, the
    control for "popular facts are harder to edit robustly"), both never from the stored ones."""
    runs = _runs(conn, "robustness", run_ids)
    if relations is None and not known_only and not held_only and not runs.is_empty():
        stored = _stored(conn, runs["run_id"].to_list(), n_boot)
        if stored is not None:
            df = stored.filter(pl.col("metric").is_in(list(metrics)) & pl.col("feature").is_in(list(features)))
            if rephrase_types is not None:
                df = df.filter(pl.col("rephrase_type").is_in(list(rephrase_types)))
            return (df.join(runs.select("run_id", "editor"), on="run_id")
                    .select("run_id", "editor", "rephrase_type", "metric", "feature", "rho", "ci_low", "ci_high",
                            pl.col("n").cast(pl.Int64), *WITHIN_COLUMNS)
                    .sort(["editor", "metric", "feature", "rephrase_type"]))
    return _robustness_correlations_live(conn, runs, metrics, features, n_boot, rephrase_types, relations,
                                         known_only=known_only, held_only=held_only)


def _robustness_correlations_live(conn, runs, metrics, features, n_boot, rephrase_types, relations,
                                  known_only: bool = False, held_only: bool = False) -> pl.DataFrame:
    schema = {"run_id": pl.String, "editor": pl.String, "rephrase_type": pl.String, "metric": pl.String,
              "feature": pl.String, "rho": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64, "n": pl.Int64,
              **WITHIN_COLUMNS}
    if runs.is_empty():
        return pl.DataFrame(schema=schema)
    m = (
        queries.measurements(conn, run_ids=runs["run_id"].to_list(), metrics=list(metrics), edit_count=1,
                             rephrase_types=None if rephrase_types is None else list(rephrase_types))
        .join(runs.select("run_id", "editor"), on="run_id")
        .join(queries.cases(conn).select("case_id", "relation", *features), on="case_id", how="left")
    )
    if relations is not None:
        m = m.filter(pl.col("relation").is_in(list(relations)))
    if known_only:
        known = pl.DataFrame([(r, k) for r in runs["run_id"].to_list() for k in queries.known_case_ids(conn, r)],
                             schema={"run_id": pl.String, "case_id": pl.String}, orient="row")
        m = m.join(known, on=["run_id", "case_id"], how="semi")
    if held_only:
        held = pl.DataFrame([(r, k) for r in runs["run_id"].to_list() for k in queries.held_case_ids(conn, r)],
                            schema={"run_id": pl.String, "case_id": pl.String}, orient="row")
        m = m.join(held, on=["run_id", "case_id"], how="semi")
    rows = []
    for (run_id, editor, rtype, metric), part in m.group_by(["run_id", "editor", "rephrase_type", "metric"]):
        for feature in features:
            sub = part.filter(pl.col(feature).is_not_null() & pl.col("value").is_not_null())
            if sub.height < 3:
                continue
            c = spearman_ci(sub[feature].to_numpy(), sub["value"].to_numpy(), n_boot=n_boot, seed=0)
            rows.append({"run_id": run_id, "editor": editor, "rephrase_type": rtype, "metric": metric,
                         "feature": feature, "rho": c.rho, "ci_low": c.ci_low, "ci_high": c.ci_high, "n": c.n,
                         **_within_values(sub, feature, "value")})
    return pl.DataFrame(rows, schema=schema).sort(["editor", "metric", "feature", "rephrase_type"])


def popularity_points(
    conn: sqlite3.Connection,
    feature: str = "frequency",
    metric: str = "acc",
    rephrase_type: str = "plain",
    case_set: str | None = None,
    relations=None,
    editors=None,
) -> pl.DataFrame:
    """One row per (series, case): the case's popularity feature and its value of `metric` in
    `rephrase_type`. Series are the robustness runs (by editor, edit count 1) and, for pre-edit
    knowledge, the newest knowledge run ('unedited', edit count 0; metric `recall` maps to `rev`)."""
    if feature not in POPULARITY_FEATURES:
        raise ValueError(f"unknown popularity feature {feature!r}: choose one of {', '.join(POPULARITY_FEATURES)}")
    cases = queries.cases(conn, case_set=case_set).select("case_id", "relation", "subject", feature)
    if relations is not None:
        cases = cases.filter(pl.col("relation").is_in(list(relations)))
    schema = {"series": pl.String, "case_id": pl.String, "relation": pl.String, "subject": pl.String,
              feature: pl.Float64, "value": pl.Float64}
    frames = []
    runs = queries.list_runs(conn, kind="robustness")
    if editors is not None:
        runs = runs.filter(pl.col("editor").is_in(list(editors)))
    if not runs.is_empty():
        m = queries.measurements(conn, run_ids=runs["run_id"].to_list(), metrics=metric,
                                 rephrase_types=rephrase_type, edit_count=1)
        frames.append(m.join(runs.select("run_id", pl.col("editor").alias("series")), on="run_id"))
    knowledge = queries.newest_knowledge_run(conn)
    if knowledge is not None:
        pre_metric = "rev" if metric in ("recall", "rev") else metric
        m = queries.measurements(conn, run_ids=knowledge, metrics=pre_metric, rephrase_types=rephrase_type, edit_count=0)
        frames.append(m.with_columns(pl.lit("unedited").alias("series")))
    if not frames:
        return pl.DataFrame(schema=schema)
    return (
        pl.concat([f.select("series", "case_id", "value") for f in frames])
        .join(cases, on="case_id", how="inner")
        .filter(pl.col(feature).is_not_null())
        .select("series", "case_id", "relation", "subject", pl.col(feature).cast(pl.Float64), "value")
        .sort("series", "case_id")
    )


def popularity_bins(points: pl.DataFrame, feature: str, bins: int = 4) -> pl.DataFrame:
    """Binned curve of `popularity_points`: the feature cut into `bins` equal-count bins (over all cases),
    mean value per (series, bin) with n and a 95% CI, and each bin's feature range."""
    schema = {"series": pl.String, "bin": pl.Int64, "lo": pl.Float64, "hi": pl.Float64, "n": pl.Int64,
              "mean": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64}
    if points.is_empty():
        return pl.DataFrame(schema=schema)
    cases = points.unique("case_id").sort(feature, "case_id")
    cut = cases.with_columns(((pl.int_range(pl.len()) * bins) // pl.len() + 1).alias("bin")).select("case_id", "bin")
    binned = points.join(cut, on="case_id")
    rows = []
    for (series, b), part in binned.group_by(["series", "bin"]):
        values = part["value"].drop_nulls().to_list()
        lo, hi = _mean_ci(values)
        rows.append({"series": series, "bin": b, "lo": part[feature].min(), "hi": part[feature].max(),
                     "n": len(values), "mean": sum(values) / len(values) if values else None,
                     "ci_low": lo, "ci_high": hi})
    return pl.DataFrame(rows, schema=schema).sort("series", "bin")


def edit_against_knowledge(conn: sqlite3.Connection, run_ids=None, rephrase_types=None) -> pl.DataFrame:
    """Study A's control: does a rephrasing cost an edit more than it costs the model's own knowledge?

    Per robustness run x rephrase type (the plain prompt aside), on the facts the unedited model knew (it
    named the true object on the plain prompt, `queries.known_case_ids`) whose edit held on the plain prompt
    (acc there above HELD_ACC): `edit`, the edited model naming the new object on the type (acc, mean over
    those facts, each fact's probes of the type averaged), and `knowledge`, the unedited model naming the true
    object on the type (rev in the run's baseline) over the same facts, each with its 95% CI (Wilson for
    shares, else bootstrap); `gap` = mean per-fact difference edit - knowledge with a paired percentile
    bootstrap 95% CI. A type drops an edit beyond what it does to knowledge where the gap's CI lies below 0:
    the plain-prompt drop of study A counts both, and a form the model handles badly lowers both (on
    SmolLM2-135M the unedited model names the true object on a pronoun type for a few percent of facts).
    n: the facts compared; n_known: the run's known facts. A run without a baseline or known facts has no
    rows."""
    from ..stats import bootstrap_mean_ci

    schema = {"run_id": pl.String, "editor": pl.String, "rephrase_type": pl.String, "n": pl.Int64,
              "n_known": pl.Int64, "edit": pl.Float64, "edit_ci_low": pl.Float64, "edit_ci_high": pl.Float64,
              "knowledge": pl.Float64, "knowledge_ci_low": pl.Float64, "knowledge_ci_high": pl.Float64,
              "gap": pl.Float64, "gap_ci_low": pl.Float64, "gap_ci_high": pl.Float64}
    wanted = None if rephrase_types is None else ({rephrase_types} if isinstance(rephrase_types, str)
                                                  else set(rephrase_types))
    rows = []
    for run in _runs(conn, "robustness", run_ids).iter_rows(named=True):
        known = set(queries.known_case_ids(conn, run["run_id"]))
        if not known:
            continue
        post: dict[str, dict[str, float]] = {}
        for c, t, v in queries.measurements(conn, run["run_id"], metrics="acc", edit_count=1).select(
                "case_id", "rephrase_type", "value").drop_nulls().iter_rows():
            post.setdefault(c, {})[t] = v
        pre: dict[str, dict[str, float]] = {}
        for c, t, v in queries.pre_edit_recall(conn, run["run_id"]).select(
                "case_id", "rephrase_type", "recall").iter_rows():
            pre.setdefault(c, {})[t] = v
        held = sorted(c for c in known if post.get(c, {}).get("plain", 0.0) > HELD_ACC)
        types = sorted({t for c in held for t in post[c]} - {"plain"})
        for t in types:
            if wanted is not None and t not in wanted:
                continue
            facts = [c for c in held if t in post[c] and t in pre.get(c, {})]
            if not facts:
                continue
            edit = [post[c][t] for c in facts]
            knew = [pre[c][t] for c in facts]
            e_lo, e_hi = _mean_ci(edit)
            k_lo, k_hi = _mean_ci(knew)
            diff = np.asarray(edit) - np.asarray(knew)
            g_lo, g_hi = bootstrap_mean_ci(diff, n_boot=2000) if len(facts) > 1 else (float("nan"), float("nan"))
            rows.append({"run_id": run["run_id"], "editor": run["editor"], "rephrase_type": t, "n": len(facts),
                         "n_known": len(known), "edit": float(np.mean(edit)), "edit_ci_low": e_lo,
                         "edit_ci_high": e_hi, "knowledge": float(np.mean(knew)), "knowledge_ci_low": k_lo,
                         "knowledge_ci_high": k_hi, "gap": float(diff.mean()), "gap_ci_low": g_lo,
                         "gap_ci_high": g_hi})
    return pl.DataFrame(rows, schema=schema)

"""Derived tables: summaries computed from the stored measurements, each with its n and a 95% CI.

Pure functions `f(conn, ...) -> pl.DataFrame` like store.queries, used by the CLI and the dashboard alike.
"""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import polars as pl

from .. import queries
from ..conventions import HELD, RUN_LEVEL, SEQUENTIAL_SERIES
from ..metrics import wilson_ci
from ..stats import spearman_ci, stratified_spearman

POPULARITY_FEATURES = ("frequency", "connection", "cooccurrence", "population")

# `correlations.relation` of the within-relation estimate (store.stats.stratified_spearman: per-relation rhos
# combined by Fisher's z weighted by n - 3, analytic CI); '' is the pooled one, any other value one relation.
WITHIN = "*within*"
WITHIN_COLUMNS = {"rho_within": pl.Float64, "within_ci_low": pl.Float64, "within_ci_high": pl.Float64,
                  "n_within": pl.Int64}


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


def wilson_arrays(k: np.ndarray, n: np.ndarray, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
    """store.metrics.wilson_ci for arrays of successes k and trials n (n = 0 gives (0, 1))."""
    k, n = np.asarray(k, dtype=float), np.asarray(n, dtype=float)
    safe = np.where(n > 0, n, 1.0)
    p = k / safe
    z2 = z * z
    denom = 1 + z2 / safe
    centre = (p + z2 / (2 * safe)) / denom
    half = z * np.sqrt(p * (1 - p) / safe + z2 / (4 * safe * safe)) / denom
    lo = np.where(k <= 0, 0.0, np.maximum(0.0, centre - half))
    hi = np.where(k >= n, 1.0, np.minimum(1.0, centre + half))
    return np.where(n > 0, lo, 0.0), np.where(n > 0, hi, 1.0)


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


def _mean_ci(values: list[float]) -> tuple[float, float]:
    """Wilson CI where every value is 0 or 1 (a share), else a percentile bootstrap CI of the mean."""
    from ..stats import bootstrap_mean_ci

    if values and all(v in (0.0, 1.0) for v in values):
        return wilson_ci(int(sum(values)), len(values))
    return bootstrap_mean_ci(values)


def _runs(conn: sqlite3.Connection, kind: str, run_ids) -> pl.DataFrame:
    runs = queries.list_runs(conn, kind=kind)
    if run_ids is not None:
        ids = [run_ids] if isinstance(run_ids, str) else list(run_ids)
        runs = runs.filter(pl.col("run_id").is_in(ids))
    return runs


def _known_clause(conn: sqlite3.Connection, run_ids: list[str]) -> tuple[str, list]:
    """SQL over `measurements m` keeping each run's known facts (store.queries.known_case_ids), and its
    parameters; "0" (nothing) when no run has a known fact."""
    parts, params = [], []
    for run_id in run_ids:
        known = queries.known_case_ids(conn, run_id)
        if known:
            parts.append(f"(m.run_id = ? AND m.case_id IN ({', '.join('?' * len(known))}))")
            params += [run_id, *known]
    return ("(" + " OR ".join(parts) + ")" if parts else "0"), params


def robustness_summary(
    conn: sqlite3.Connection,
    run_ids=None,
    metrics=("acc", "rev", "es"),
    by: str | None = None,
    edit_count: int = 1,
    relations=None,
    known_only: bool = False,
) -> pl.DataFrame:
    """Per robustness run (editor) x rephrase type x metric [x relation or popularity quartile]: the mean
    over cases with n and a 95% CI, and the drop from the plain prompt (mean - mean on `plain`).
    `relations` keeps only the cases of those relations. `known_only` keeps only the facts the unedited model
    knew, judged on the plain prompt for every rephrase type (store.queries.known_case_ids: its free answer
    to the plain prompt named the true object in the run's baseline), so that every column of a run covers
    the same facts and the drop from plain compares like with like; a run without a baseline keeps none."""
    if by not in (None, "relation", "popularity_quartile"):
        raise ValueError(f"by must be None, 'relation' or 'popularity_quartile', not {by!r}")
    runs = _runs(conn, "robustness", run_ids)
    cols = ["run_id", "editor", "rephrase_type", "metric", *([by] if by else []), "n", "mean", "ci_low",
            "ci_high", "drop_from_plain"]
    if runs.is_empty():
        return pl.DataFrame(schema={c: (pl.Float64 if c in ("mean", "ci_low", "ci_high", "drop_from_plain")
                                        else pl.Int64 if c in ("n", "popularity_quartile") else pl.String)
                                    for c in cols})
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
            return pl.DataFrame(schema={c: (pl.Float64 if c in ("mean", "ci_low", "ci_high", "drop_from_plain")
                                            else pl.Int64 if c in ("n", "popularity_quartile") else pl.String)
                                        for c in cols})
        where += f" AND c.relation IN ({', '.join('?' * len(rel))})"
        params += rel
    if known_only:
        known_sql, known_params = _known_clause(conn, ids)
        where += " AND " + known_sql
        params += known_params
    agg = queries._frame(conn, f"SELECT {group_by.replace('c.' + by, 'c.' + by + ' AS ' + by) if by else group_by}, "
                               "COUNT(*) AS n, SUM(m.value) AS s, SUM(m.value * m.value) AS ss, "
                               "SUM(CASE WHEN m.value IN (0.0, 1.0) THEN 0 ELSE 1 END) AS nonbinary "
                               f"FROM measurements m{join} WHERE {where} GROUP BY {group_by}", params)
    keys = ["run_id", "editor", "rephrase_type", "metric", *([by] if by else [])]
    if agg.is_empty():
        return pl.DataFrame(schema={c: (pl.Float64 if c in ("mean", "ci_low", "ci_high", "drop_from_plain")
                                        else pl.Int64 if c in ("n", "popularity_quartile") else pl.String)
                                    for c in cols})
    agg = agg.join(runs.select("run_id", "editor"), on="run_id")
    n = agg["n"].to_numpy().astype(float)
    mean = agg["s"].to_numpy() / n
    lo, hi = wilson_arrays(np.rint(agg["s"].to_numpy()), n)
    var = np.maximum(agg["ss"].to_numpy() - n * mean * mean, 0.0) / np.maximum(n - 1, 1)
    half = 1.96 * np.sqrt(var / n)
    binary = agg["nonbinary"].to_numpy() == 0
    lo = np.where(binary, lo, mean - half)
    hi = np.where(binary, hi, mean + half)
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
    plain_keys = [k for k in keys if k != "rephrase_type"]
    plain = out.filter(pl.col("rephrase_type") == "plain").select(*plain_keys, pl.col("mean").alias("plain_mean"))
    return (
        out.join(plain, on=plain_keys, how="left")
        .with_columns((pl.col("mean") - pl.col("plain_mean")).alias("drop_from_plain"))
        .select(cols)
        .sort(keys)
    )


def robustness_correlations(
    conn: sqlite3.Connection,
    run_ids=None,
    metrics=("acc", "rev"),
    features=POPULARITY_FEATURES,
    n_boot: int = 1000,
    rephrase_types=None,
    relations=None,
    known_only: bool = False,
) -> pl.DataFrame:
    """Spearman rho (bootstrap 95% CI) of each popularity feature against post-edit acc and rev, per
    robustness run (editor) and rephrase type (all types, or those given), over the cases of `relations`
    (all when None), and beside it the within-relation rho (WITHIN_COLUMNS). Read from the `correlations`
    table where every run's are stored, else computed. `known_only` computes them over the facts the
    unedited model knew on the plain prompt only (as in `robustness_summary`), never from the stored ones."""
    runs = _runs(conn, "robustness", run_ids)
    if relations is None and not known_only and not runs.is_empty():
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
                                         known_only=known_only)


def _robustness_correlations_live(conn, runs, metrics, features, n_boot, rephrase_types, relations,
                                  known_only: bool = False) -> pl.DataFrame:
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


def case_runs(conn: sqlite3.Connection, case_id: str) -> pl.DataFrame:
    """Every run that measured a case, with its kind, editor, model and status (newest first)."""
    runs = queries.list_runs(conn)
    ids = queries.measurements(conn, case_ids=case_id)["run_id"].unique().to_list()
    return (
        runs.filter(pl.col("run_id").is_in(ids))
        .select("run_id", "kind", "editor", "model", "status", "started_at")
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


# --------------------------------------------------------------------------- sequential runs (study B)

_SHARES = {"es", "ps", "ns", "retention", "forgotten", "panel_recall", "exact_match", "retention_em", "forgotten_em"}
_COUNTS = ["n", "n_held", "n_held_em", "update_w0"]  # rows that qualify another row, not series of their own


# Editors made to edit many facts at once: their sequential runs come at several batch sizes (study C's
# instance- and batch-sequential), so every label says which, b=1 included.
MASS_EDITORS = frozenset({"MEMIT", "AlphaEdit"})


def run_label(editor: str | None, hparams: dict | None, config: dict | None) -> str:
    """A run's short name: the editor plus what sets it apart (original ROME keys, RECT share, batch size:
    always for MASS_EDITORS, else where it is not 1)."""
    hp, cfg = hparams or {}, config or {}
    label = editor or "unedited"
    if hp.get("key_mismatch"):
        label += " (original keys)"
    if hp.get("rect_top", 1.0) < 1.0:
        label += f" + RECT {round(100 * hp['rect_top'])}%"
    if "batch_size" in cfg and (cfg["batch_size"] != 1 or editor in MASS_EDITORS):
        label += f", b={cfg['batch_size']}"
    return label


def run_labels(conn: sqlite3.Connection, kind: str | None = None) -> pl.DataFrame:
    """run_id, label (run_label), editor, status, n_done, started_at for the runs of a kind."""
    import json

    runs = queries.list_runs(conn, kind=kind)
    labels = [run_label(r["editor"], json.loads(r["hparams"] or "null"), json.loads(r["config"] or "null"))
              for r in runs.iter_rows(named=True)]
    return runs.select("run_id", "kind", "model", "editor", "status", "n_done", "n_total", "started_at").with_columns(
        pl.Series("label", labels, dtype=pl.Utf8))


def sequential_curves(conn: sqlite3.Connection, run_ids=None) -> pl.DataFrame:
    """Every run-level series of sequential runs against edit count, with n and a 95% Wilson CI for shares:
    run_id, edit_count, scope, metric, series, value, n, ci_low, ci_high."""
    where, params = queries._where([("run_id", run_ids)])
    clause = (where + " AND " if where else " WHERE ") + "case_id = ? AND run_id IN (SELECT run_id FROM runs WHERE kind = 'sequential')"
    rows = queries._frame(
        conn, f"SELECT run_id, edit_count, rephrase_type AS scope, metric, value FROM measurements{clause}",
        [*params, RUN_LEVEL])
    empty = pl.DataFrame(schema={"run_id": pl.Utf8, "edit_count": pl.Int64, "scope": pl.Utf8, "metric": pl.Utf8,
                                 "series": pl.Utf8, "value": pl.Float64, "n": pl.Int64, "ci_low": pl.Float64,
                                 "ci_high": pl.Float64})
    if rows.is_empty():
        return empty
    counts = rows.filter(pl.col("metric").is_in(_COUNTS))
    values = rows.filter(~pl.col("metric").is_in(_COUNTS))
    n_at = counts.filter(pl.col("metric") == "n").select("run_id", "edit_count", "scope", pl.col("value").alias("n"))
    held_at = counts.filter(pl.col("metric") == "n_held").select("run_id", "edit_count", pl.col("value").alias("n_held"))
    held_em_at = counts.filter(pl.col("metric") == "n_held_em").select("run_id", "edit_count",
                                                                       pl.col("value").alias("n_held_em"))
    # the panel's size does not change: per-edit panel rows carry the run's panel n
    panel_n = n_at.filter(pl.col("scope") == "panel").group_by("run_id").agg(pl.col("n").max().alias("panel_n"))
    out = (values.join(n_at, on=["run_id", "edit_count", "scope"], how="left")
           .join(held_at.with_columns(pl.lit("all_edits").alias("scope")), on=["run_id", "edit_count", "scope"], how="left")
           .join(held_em_at.with_columns(pl.lit("all_edits").alias("scope")), on=["run_id", "edit_count", "scope"],
                 how="left")
           .join(panel_n, on="run_id", how="left")
           .with_columns(
               pl.when(pl.col("metric") == "forgotten").then(pl.col("n_held"))
               .when(pl.col("metric") == "forgotten_em").then(pl.col("n_held_em"))
               .when((pl.col("scope") == "panel") & pl.col("n").is_null()).then(pl.col("panel_n"))
               .otherwise(pl.col("n")).cast(pl.Int64).alias("n"))
           .drop("n_held", "n_held_em", "panel_n"))
    names = [SEQUENTIAL_SERIES.get((s, m), f"{s}/{m}") for s, m in zip(out["scope"], out["metric"])]
    lows, highs = [], []
    for metric, value, n in zip(out["metric"], out["value"], out["n"]):
        if metric in _SHARES and n and value is not None and value == value:
            lo, hi = wilson_ci(min(max(round(value * n), 0), n), n)
        else:
            lo = hi = None
        lows.append(lo)
        highs.append(hi)
    out = out.with_columns(pl.Series("series", names, dtype=pl.Utf8), pl.Series("ci_low", lows, dtype=pl.Float64),
                           pl.Series("ci_high", highs, dtype=pl.Float64))
    return out.select(empty.columns).sort("run_id", "scope", "metric", "edit_count")


def sequential_events(conn: sqlite3.Connection, run_ids=None) -> pl.DataFrame:
    """Collapse, phases and disabling edits of runs, with the phase name read from the detail JSON."""
    import json

    ev = queries.run_events(conn, run_ids=run_ids)
    # how long the run took, when it was extended to more edits, and which plan unit made it (compute/plan.py)
    # are not events of the editing
    ev = ev.filter(~pl.col("kind").is_in(["timing", "extended", "plan_unit", "merged"]))
    phases = [json.loads(d).get("phase") if d else None for d in ev["detail"]] if ev.height else []
    return ev.with_columns(pl.Series("phase", phases, dtype=pl.Utf8)).select(
        "run_id", "kind", "series", "phase", "edit_count", "end_count", "value")


PHASE_SERIES = {"retention": "retained edits", "retention_em": "retained edits (exact match)",
                "panel_recall": "panel recall", "newest_es": "newest-edit efficacy", "fluency": "fluency"}


def phase_series_label(series: str) -> str:
    """The name a researcher reads for a phase series ("ability:nli" -> "nli (ability)")."""
    if series.startswith("ability:"):
        return f"{series.removeprefix('ability:')} (ability)"
    return PHASE_SERIES.get(series, series)


def sequential_phases(conn: sqlite3.Connection, run_ids=None) -> pl.DataFrame:
    """Per run and series (retention by exact match and ES, panel recall, newest-edit efficacy, fluency, each
    ability task; perplexity as -log perplexity): the change point that splits the series best into two
    straight lines, the slope on either side in % of the series' |starting value| per 100 edits, how much it
    lost after the change point, and whether that made a catastrophic phase (store.stats.phase_break states
    the rule: a loss beyond the earlier trend of at least 3x the series' own noise, falling at least 3x faster
    than before). `faster` is "later" or "earlier" when the series fell at least 1.5x faster on that side of
    the change point, "steady" when neither side is, "neither" when it did not fall."""
    import json

    schema = {"run_id": pl.String, "series": pl.String, "checked_to": pl.Int64, "change_at": pl.Int64,
              "slope_before": pl.Float64, "slope_after": pl.Float64, "drop_after": pl.Float64,
              "faster": pl.String, "catastrophic": pl.Boolean}
    ev = queries.run_events(conn, run_ids=run_ids, kind="phase")
    rows: dict[tuple[str, str], dict] = {}
    for e in ev.iter_rows(named=True):
        d = json.loads(e["detail"]) if e["detail"] else {}
        if "change_at" not in d:
            continue
        key = (e["run_id"], e["series"])
        row = rows.setdefault(key, {"run_id": e["run_id"], "series": phase_series_label(e["series"]),
                                    "checked_to": e["end_count"]})
        row["checked_to"] = max(row["checked_to"] or 0, e["end_count"] or 0)
        # per edit -> % of the start per 100 edits (events from before phase_break stored slopes already
        # divided by the start)
        scale = 1e4 / abs(d["start"]) if d.get("start") else 1e4
        before, after = scale * d["slope_before"], scale * d["slope_after"]
        # which side fell faster: by the loss rates the rule compares where stored (a drop at the change
        # point belongs to the later side), else by the two lines' slopes
        rates = ((-scale * d["loss_rate_before"], -scale * d["loss_rate_after"]) if "loss_rate_after" in d
                 else (before, after))
        row.update(change_at=int(d["change_at"]), slope_before=before, slope_after=after,
                   drop_after=d["drop_after"], catastrophic=bool(d["catastrophic"]),
                   faster=_faster(*rates))
    return pl.DataFrame(list(rows.values()), schema=schema).sort("run_id", "series")


def _faster(before: float, after: float, margin: float = 1.5) -> str:
    """Which side of the change point a series fell faster on: "earlier" or "later" when that side's slope is
    at least `margin` times steeper (or the other side does not fall), "steady" when neither is, "neither"
    when the series does not fall on either side."""
    if before >= 0 and after >= 0:
        return "neither"
    if after < 0 and (before >= 0 or after <= margin * before):
        return "later"
    if before < 0 and (after >= 0 or before <= margin * after):
        return "earlier"
    return "steady"


def phase_verdict(phases: pl.DataFrame, labels: dict[str, str]) -> str:
    """One sentence on what the change points found in these runs, from `sequential_phases`."""
    if phases.is_empty():
        return "No phases found yet: a run gets them at its end (or when resumed runs finish)."
    cat = phases.filter(pl.col("catastrophic"))
    n, runs = phases.height, phases["run_id"].n_unique()
    if cat.height:
        named = ", ".join(f"{labels.get(r['run_id'], r['run_id'])} ({r['series']} from edit {r['change_at']})"
                          for r in cat.iter_rows(named=True))
        return (f"A catastrophic phase was found on {cat.height} of {n} series in {runs} runs: {named}.")
    falling = phases.filter(pl.col("faster") != "neither")
    early = falling.filter(pl.col("faster") == "earlier")
    text = f"No catastrophic phase on any of the {n} series in {runs} runs"
    if falling.height:
        steady = falling.filter(pl.col("faster") == "steady").height
        text += (f"; of the {falling.height} series that fell, {early.height} fell at least 1.5x faster before the "
                 f"change point than after it, {falling.height - early.height - steady} faster after it and "
                 f"{steady} at about the same rate")
        if early.height:
            spans = early.group_by("series").agg(pl.col("change_at").min().alias("lo"),
                                                 pl.col("change_at").max().alias("hi")).sort("series")
            text += " (change points: " + ", ".join(
                f"{r['series']} {r['lo']}" + (f"–{r['hi']}" if r["hi"] != r["lo"] else "")
                for r in spans.iter_rows(named=True)) + ")"
    return text + "."


AGE_BINS = (0, 10, 50, 100, 250, 500)


def forgetting_by_age(conn: sqlite3.Connection, run_id: str, bins: tuple[int, ...] = AGE_BINS) -> pl.DataFrame:
    """Study B's forgetting curve by an edit's age (edits made since it): for each checkpoint and age bin,
    the share of edits that held at their first checkpoint and no longer hold, with n and a Wilson CI.
    Columns: edit_count, age_bin (label like "10-49"), forgotten, n, ci_low, ci_high."""
    schema = {"edit_count": pl.Int64, "age_bin": pl.Utf8, "forgotten": pl.Float64, "n": pl.Int64,
              "ci_low": pl.Float64, "ci_high": pl.Float64}
    # two indexed reads, then the joins in polars (SQLite would re-evaluate the CTEs for every row)
    made = queries._frame(conn, "SELECT case_id, MIN(edit_count) AS made_at FROM measurements "
                                "WHERE run_id = ? AND rephrase_type = 'edit' GROUP BY case_id", [run_id])
    es = queries._frame(conn, "SELECT case_id, edit_count, value FROM measurements WHERE run_id = ? "
                              "AND metric = 'es' AND rephrase_type = 'plain' AND case_id != ?", [run_id, RUN_LEVEL])
    if made.is_empty() or es.is_empty():
        return pl.DataFrame(schema=schema)
    first = es.sort("edit_count").group_by("case_id").agg(pl.col("value").first().alias("held_then"))
    df = (es.join(first.filter(pl.col("held_then") >= HELD), on="case_id")
          .join(made, on="case_id")
          .with_columns((pl.col("edit_count") - pl.col("made_at")).alias("age")))
    if df.is_empty():
        return pl.DataFrame(schema=schema)
    edges = list(bins)
    labels = [f"{a}-{b - 1}" for a, b in zip(edges, edges[1:])] + [f"{edges[-1]}+"]
    idx = np.searchsorted(np.asarray(edges), df["age"].to_numpy(), side="right") - 1
    df = df.with_columns(pl.Series("age_bin", [labels[max(i, 0)] for i in idx], dtype=pl.Utf8),
                         (pl.col("value") < HELD).cast(pl.Int64).alias("lost"))
    out = df.group_by("edit_count", "age_bin").agg(pl.col("lost").sum().alias("k"), pl.len().alias("n"))
    lo, hi = wilson_arrays(out["k"].to_numpy(), out["n"].to_numpy())
    out = out.with_columns((pl.col("k") / pl.col("n")).alias("forgotten"), pl.Series("ci_low", lo),
                           pl.Series("ci_high", hi), pl.col("n").cast(pl.Int64))
    order = {name: i for i, name in enumerate(labels)}
    return out.with_columns(pl.col("age_bin").replace_strict(order, return_dtype=pl.Int64).alias("_o")).sort(
        "edit_count", "_o").select(list(schema))


# --------------------------------------------------------------------------- headline findings (Overview)


def robustness_headlines(conn: sqlite3.Connection, metric: str = "acc", answerable: float = 0.5) -> pl.DataFrame:
    """Per robustness run: `metric` on the plain prompt and on the hardest rephrase type (lowest mean),
    each with n and its 95% CI, and the drop between them.

    The hardest type is chosen among the types the unedited model can answer: those where its recall of
    the true object (`rev` in the run's all-types baseline, a knowledge run) is at least `answerable` x
    its recall on the plain prompt. A type the model cannot answer before any edit (on SmolLM2-135M the
    fill-in-the-blank cloze forms) says nothing about the edit. Without a baseline every type counts.
    The unedited recall on both types is reported beside them."""
    import json

    summary = robustness_summary(conn, metrics=(metric,))
    schema = {"editor": pl.String, "n_done": pl.Int64, "status": pl.String, "plain": pl.Float64,
              "plain_ci_low": pl.Float64, "plain_ci_high": pl.Float64, "hardest_type": pl.String,
              "hardest": pl.Float64, "hardest_ci_low": pl.Float64, "hardest_ci_high": pl.Float64,
              "drop": pl.Float64, "n": pl.Int64, "unedited_recall_plain": pl.Float64,
              "unedited_recall_hardest": pl.Float64, "excluded_types": pl.String}
    if summary.is_empty():
        return pl.DataFrame(schema=schema)
    runs = _runs(conn, "robustness", None)
    rows = []
    for (run_id,), part in summary.partition_by("run_id", as_dict=True).items():
        run = runs.filter(pl.col("run_id") == run_id).row(0, named=True)
        baseline = json.loads(run["config"] or "{}").get("baseline_run")
        recall = {}
        if baseline:
            got = queries._frame(conn, "SELECT rephrase_type, AVG(value) AS r FROM measurements WHERE run_id = ? "
                                       "AND metric = 'rev' AND edit_count = 0 GROUP BY rephrase_type", [baseline])
            recall = dict(zip(got["rephrase_type"].to_list(), got["r"].to_list()))
        plain_recall = recall.get("plain")
        excluded = sorted(t for t, r in recall.items() if plain_recall and t != "plain" and r < answerable * plain_recall)
        plain = part.filter(pl.col("rephrase_type") == "plain")
        rest = (part.filter((pl.col("rephrase_type") != "plain") & ~pl.col("rephrase_type").is_in(excluded))
                .drop_nulls("mean").sort("mean", "rephrase_type"))
        if plain.is_empty() or rest.is_empty():
            continue
        p, h = plain.row(0, named=True), rest.row(0, named=True)
        rows.append({"editor": p["editor"], "n_done": run["n_done"], "status": run["status"], "plain": p["mean"],
                     "plain_ci_low": p["ci_low"], "plain_ci_high": p["ci_high"], "hardest_type": h["rephrase_type"],
                     "hardest": h["mean"], "hardest_ci_low": h["ci_low"], "hardest_ci_high": h["ci_high"],
                     "drop": h["mean"] - p["mean"], "n": p["n"], "unedited_recall_plain": plain_recall,
                     "unedited_recall_hardest": recall.get(h["rephrase_type"]), "excluded_types": ", ".join(excluded)})
    return pl.DataFrame(rows, schema=schema).sort("editor")


def sequential_headlines(conn: sqlite3.Connection) -> pl.DataFrame:
    """Per sequential run: edits made, the collapse (the model no longer usable: store.derived.usability;
    null: none), the start of a catastrophic phase on any series, disabling edits, retention (by exact match
    where measured, and by ES) and panel recall at the last checkpoint (with n and 95% Wilson CIs), and the
    panel-floor crossing that stops a run (panel_floor_at; stores derived before it had its own name
    recorded it as the collapse)."""
    labels = run_labels(conn, "sequential")
    schema = {"run": pl.String, "status": pl.String, "edits": pl.Int64, "collapse_at": pl.Int64,
              "catastrophic_from": pl.Int64, "disabling_edits": pl.Int64, "retention": pl.Float64,
              "retention_ci": pl.String, "panel_recall": pl.Float64, "panel_recall_ci": pl.String,
              "retention_em": pl.Float64, "retention_em_ci": pl.String, "panel_floor_at": pl.Int64}
    if labels.is_empty():
        return pl.DataFrame(schema=schema)
    curves = sequential_curves(conn)
    events = sequential_events(conn)
    rows = []
    for r in labels.iter_rows(named=True):
        ev = events.filter(pl.col("run_id") == r["run_id"])
        col = ev.filter(pl.col("kind") == "collapse")["edit_count"]
        cat = ev.filter((pl.col("kind") == "phase") & (pl.col("phase") == "catastrophic"))["edit_count"]
        floor = ev.filter(pl.col("kind") == "panel_floor")["edit_count"]
        row = {"run": r["label"], "status": r["status"], "edits": r["n_done"] or 0,
               "collapse_at": col.min() if col.len() else None, "catastrophic_from": cat.min() if cat.len() else None,
               "disabling_edits": ev.filter(pl.col("kind") == "disabling_edit").height,
               "panel_floor_at": floor.min() if floor.len() else None}
        for metric in ("retention", "panel_recall", "retention_em"):
            c = curves.filter((pl.col("run_id") == r["run_id"]) & (pl.col("metric") == metric)).sort("edit_count")
            if c.is_empty():
                row[metric], row[f"{metric}_ci"] = None, None
            else:
                last = c.row(-1, named=True)
                row[metric] = last["value"]
                row[f"{metric}_ci"] = (f"[{last['ci_low']:.2f}, {last['ci_high']:.2f}], n = {last['n']}"
                                       if last["ci_low"] is not None else f"n = {last['n']}")
        rows.append(row)
    return pl.DataFrame(rows, schema=schema).sort("run")


# --------------------------------------------------------------------------- general abilities (study C)


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
    newest edits and of batch runs' batches, by run and edit count: run_id, edit_count, measure, value, n."""
    names = {"es": "reliability (ES)", "ps": "generalisation (PS)", "ns": "locality (NS)"}
    where, params = queries._where([("run_id", run_ids)])
    clause = (where + " AND " if where else " WHERE ") + "case_id = ? AND rephrase_type IN ('newest', 'batch')"
    df = queries._frame(conn, f"SELECT run_id, edit_count, metric, value FROM measurements{clause}", [*params, RUN_LEVEL])
    schema = {"run_id": pl.String, "edit_count": pl.Int64, "measure": pl.String, "value": pl.Float64, "n": pl.Int64}
    if df.is_empty():
        return pl.DataFrame(schema=schema)
    n = df.filter(pl.col("metric") == "n").select("run_id", "edit_count", pl.col("value").cast(pl.Int64).alias("n"))
    return (df.filter(pl.col("metric").is_in(list(names)))
            .join(n, on=["run_id", "edit_count"], how="left")
            .with_columns(pl.col("metric").replace_strict(names).alias("measure"))
            .select(list(schema)).sort("run_id", "measure", "edit_count"))


# --------------------------------------------------------------------------- study B's verdicts from a run's rows
#
# Every verdict on a sequential run is a function of its stored rows (run-level series, per-edit rows, weight
# drift, ability scores, config), so a store can be re-derived without recomputing an edit; the sequential
# runner records exactly these at the end of a run (compute.experiments.sequential.find_events).

DERIVED_EVENT_KINDS = ("phase", "disabling_edit", "abrupt_change", "collapse", "panel_floor")
PHASE_MIN_POINTS = 3
PERPLEXITY_EFFECT = float(np.log(2))  # a perplexity phase or step must at least double (or halve) it
CHANCE_SHARE = 0.25  # abilities at chance: on average at most this share of the unedited margin over chance left
PERPLEXITY_BLOWUP = 10.0  # perplexity exploded: at least this many times its unedited value
EFFICACY_CHANCE = 0.5  # newest-edit efficacy gone: ES no better than a coin (P(new) > P(true) half the time)

_RUN_SERIES = {  # (scope, metric) -> phase series name; the share's n comes from the scope's "n" rows
    ("all_edits", "retention_em"): "retention_em",
    ("all_edits", "retention"): "retention",
    ("panel", "panel_recall"): "panel_recall",
    ("newest", "es"): "newest_es",
    ("free_text", "fluency"): "fluency",
}


def _se_share(values: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Sampling SE of shares from their 95% Wilson interval (half its width / 1.96)."""
    lo, hi = wilson_arrays(np.rint(values * n), n)
    return (hi - lo) / (2 * 1.96)


def run_series(conn: sqlite3.Connection, run_id: str) -> dict[str, dict]:
    """Every series of a sequential run that phases are looked for on, higher is better: name -> {x, y, se,
    min_effect}. Retention by exact match (where measured) and by ES, panel recall, newest-edit efficacy,
    fluency, and each ability task of the quick suite ("ability:<task>"; perplexity as -log perplexity)."""
    rows = queries._frame(conn, "SELECT edit_count, rephrase_type AS scope, metric, value FROM measurements "
                                "WHERE run_id = ? AND case_id = ?", [run_id, RUN_LEVEL])
    out: dict[str, dict] = {}
    if not rows.is_empty():
        n_rows = rows.filter(pl.col("metric") == "n").select("edit_count", "scope", pl.col("value").alias("n"))
        for (scope, metric), name in _RUN_SERIES.items():
            part = (rows.filter((pl.col("scope") == scope) & (pl.col("metric") == metric) & pl.col("value").is_not_nan())
                    .join(n_rows, on=["edit_count", "scope"], how="left").sort("edit_count"))
            panel_n = n_rows.filter(pl.col("scope") == "panel")["n"].max()
            if scope == "panel" and panel_n is not None:  # the panel's size does not change
                part = part.with_columns(pl.col("n").fill_null(panel_n))
            if part.is_empty():
                continue
            x, y = part["edit_count"].to_numpy().astype(float), part["value"].to_numpy().astype(float)
            se = None
            if metric != "fluency" and part["n"].null_count() == 0:
                se = _se_share(y, part["n"].to_numpy().astype(float))
            if scope == "all_edits":  # before any edit nothing has been lost
                x, y = np.r_[0.0, x], np.r_[1.0, y]
                se = None if se is None else np.r_[0.0, se]
            out[name] = {"x": x, "y": y, "se": se, "min_effect": None}
    ab = queries.abilities(conn, [run_id])
    if not ab.is_empty():
        ab = ab.filter(pl.col("mode") == "quick")
    for (task,), part in (ab.partition_by("task", as_dict=True).items() if not ab.is_empty() else []):
        part = part.filter(pl.col("score").is_not_null()).sort("edit_count")
        x, score = part["edit_count"].to_numpy().astype(float), part["score"].to_numpy().astype(float)
        lower_better = ("higher_is_better" in part.columns and part["higher_is_better"][0] == 0) or (
            "metric" in part.columns and part["metric"][0] == "perplexity")
        if lower_better:
            out[f"ability:{task}"] = {"x": x, "y": -np.log(np.maximum(score, 1e-12)), "se": None,
                                      "min_effect": PERPLEXITY_EFFECT, "perplexity": True}
        else:
            lo, hi = part["ci_low"].to_numpy(), part["ci_high"].to_numpy()
            se = (hi - lo) / (2 * 1.96) if part["ci_low"].null_count() == 0 else None
            out[f"ability:{task}"] = {"x": x, "y": score, "se": se, "min_effect": None}
    return out


def phase_events(run_id: str, series: dict[str, dict]) -> list[dict]:
    """run_events rows for the phases of every series (store.stats.phase_break): one gradual phase to the
    series' end, or a gradual then a catastrophic one."""
    from ..stats import phase_break

    events = []
    for name, s in series.items():
        found = phase_break(s["x"], s["y"], s["se"], min_points=PHASE_MIN_POINTS, min_effect=s["min_effect"])
        if found is None:
            continue
        found = {k: (float(v) if isinstance(v, (np.floating, float)) else v) for k, v in found.items()}
        end = int(s["x"][-1])
        detail = {**found, "rule": "store.stats.phase_break", "k_noise": 3.0, "steep": 3.0}
        if found["catastrophic"]:
            events.append({"run_id": run_id, "kind": "phase", "series": name, "edit_count": 0,
                           "end_count": found["change_at"], "value": found["slope_before"],
                           "detail": json.dumps({"phase": "gradual", **detail})})
            events.append({"run_id": run_id, "kind": "phase", "series": name, "edit_count": found["change_at"],
                           "end_count": end, "value": found["slope_after"],
                           "detail": json.dumps({"phase": "catastrophic", **detail})})
        else:
            events.append({"run_id": run_id, "kind": "phase", "series": name, "edit_count": 0, "end_count": end,
                           "value": found["slope_before"], "detail": json.dumps({"phase": "gradual", **detail})})
    return events


def abrupt_change_events(run_id: str, series: dict[str, dict]) -> list[dict]:
    """run_events rows (kind abrupt_change) for every step of an ability or perplexity series that fell
    abruptly against the series' own steps and sampling noise (store.stats.abrupt_steps)."""
    from ..stats import abrupt_steps

    events = []
    for name, s in series.items():
        if not name.startswith("ability:"):
            continue
        for step in abrupt_steps(s["x"], s["y"], s["se"], min_effect=s["min_effect"] or 0.0):
            before, after = step["before"], step["after"]
            if s.get("perplexity"):
                before, after = float(np.exp(-before)), float(np.exp(-after))
            events.append({"run_id": run_id, "kind": "abrupt_change", "series": name, "edit_count": int(step["from"]),
                           "end_count": int(step["to"]), "value": after,
                           "detail": json.dumps({"before": before, "after": after, "z": float(step["z"]),
                                                 "rule": "store.stats.abrupt_steps", "k_noise": 3.0})})
    return events


def _per_edit_update_norms(conn: sqlite3.Connection, run_id: str) -> pl.DataFrame:
    """edit_count, norm (||dW||_F of that edit's update over every edited matrix), w0 (||W0||_F, null when not
    known): from the runner's run-level rows (scope 'edit'), else from per-edit diagnostics where stored."""
    rows = queries._frame(conn, "SELECT edit_count, metric, value FROM measurements WHERE run_id = ? AND case_id = ? "
                                "AND rephrase_type = 'edit' AND metric IN ('update_norm', 'update_w0')",
                          [run_id, RUN_LEVEL])
    if not rows.is_empty():
        wide = rows.pivot(on="metric", index="edit_count", values="value", aggregate_function="first")
        w0 = pl.col("update_w0") if "update_w0" in wide.columns else pl.lit(None, dtype=pl.Float64)
        return wide.select("edit_count", pl.col("update_norm").alias("norm"), w0.alias("w0")).sort("edit_count")
    try:
        diag = queries._frame(conn, "SELECT edit_count, SUM(value * value) AS s FROM edit_diagnostics WHERE run_id = ? "
                                    "AND case_id = ? AND name = 'update_norm' GROUP BY edit_count",
                              [run_id, RUN_LEVEL])
    except sqlite3.OperationalError:  # a store from before per-edit diagnostics
        diag = pl.DataFrame()
    if diag.is_empty():
        return pl.DataFrame(schema={"edit_count": pl.Int64, "norm": pl.Float64, "w0": pl.Float64})
    return diag.select("edit_count", pl.col("s").sqrt().alias("norm"), pl.lit(None, dtype=pl.Float64).alias("w0"))


def _per_edit_panel_em(conn: sqlite3.Connection, run_id: str) -> dict[int, float]:
    """edit count -> the exact match measured after every edit: the sub-panel check (scope "panel_check") where
    the run has it, else the whole panel (runs made before it, scope "panel")."""
    for scope in ("panel_check", "panel"):
        em = dict(conn.execute("SELECT edit_count, value FROM measurements WHERE run_id = ? AND case_id = ? AND "
                               "rephrase_type = ? AND metric = 'exact_match'", (run_id, RUN_LEVEL, scope)).fetchall())
        if em:
            return em
    return {}


def _edit_context(conn: sqlite3.Connection, run_id: str, counts: list[int]) -> dict[int, dict]:
    """What the store says of the edits at these edit counts: case ids, subjects, optimisation steps and the
    panel's exact match before and after."""
    if not counts:
        return {}
    marks = ", ".join("?" * len(counts))
    made = queries._frame(conn, f"SELECT m.edit_count, m.case_id, m.metric, m.value FROM measurements m "
                                f"WHERE m.run_id = ? AND m.rephrase_type = 'edit' AND m.case_id != ? "
                                f"AND m.edit_count IN ({marks})", [run_id, RUN_LEVEL, *counts])
    em = _per_edit_panel_em(conn, run_id)
    subjects = dict(conn.execute("SELECT case_id, subject FROM cases").fetchall()) if not made.is_empty() else {}
    out = {}
    for c in counts:
        part = made.filter(pl.col("edit_count") == c) if not made.is_empty() else made
        ids = sorted(set(part["case_id"].to_list())) if not part.is_empty() else []
        steps = part.filter(pl.col("metric") == "edit_steps")["value"].to_list() if not part.is_empty() else []
        prev = max((k for k in em if k < c), default=None)
        out[c] = {"case_ids": ids, "subjects": [subjects.get(i) for i in ids], "edit_steps": steps,
                  "panel_em_before": em.get(prev), "panel_em_after": em.get(c)}
    return out


def disabling_edit_events(conn: sqlite3.Connection, run_id: str) -> list[dict]:
    """Disabling edits judged from the edit itself, against the run's own distribution of updates.

    With per-edit update norms (runs made since they are recorded): an edit whose log ||dW|| has a robust z
    (store.stats.robust_z: median and MAD over the run's edits) above OUTLIER_Z. Without them (older runs):
    the same rule on each checkpoint interval's mean squared update per update made, (||W-W0||^2 at its end -
    at its start) / updates (the squared norm of a sum of roughly orthogonal updates grows by their squared
    norms); a flagged interval is pinned to the edit after which the panel's exact match fell most (the
    interval's first edit when none fell), and that edit's norm estimated as sqrt(interval's increase - the
    median update's share of the others). `value` is the edit's ||dW|| / ||W0|| (estimated or measured)."""
    from ..stats import OUTLIER_Z, robust_z

    norms = _per_edit_update_norms(conn, run_id)
    events = []
    if norms.height >= 3:
        z = robust_z(np.log(np.maximum(norms["norm"].to_numpy(), 1e-30)))
        flagged = [int(i) for i in np.flatnonzero(z > OUTLIER_Z)]
        ctx = _edit_context(conn, run_id, [int(norms["edit_count"][i]) for i in flagged])
        median = float(np.median(norms["norm"].to_numpy()))
        for i in flagged:
            row = norms.row(int(i), named=True)
            rel = row["norm"] / row["w0"] if row["w0"] else None
            events.append({"run_id": run_id, "kind": "disabling_edit", "series": "update_norm",
                           "edit_count": int(row["edit_count"]), "end_count": int(row["edit_count"]),
                           "value": rel if rel is not None else row["norm"],
                           "detail": json.dumps({"rule": "robust z of log ||dW|| over the run's edits",
                                                 "z": float(z[i]), "threshold": OUTLIER_Z, "norm": row["norm"],
                                                 "relative_to_w0": rel, "median_norm": median,
                                                 **ctx[int(row["edit_count"])]})})
        return events
    drift = queries._frame(conn, "SELECT edit_count, SUM(fro_delta * fro_delta) AS f2, "
                                 "SUM(fro_delta * fro_delta / (rel_change * rel_change)) AS w2 FROM weight_drift "
                                 "WHERE run_id = ? AND rel_change > 0 GROUP BY edit_count ORDER BY edit_count", [run_id])
    if drift.height < 3:
        return events
    cfg = json.loads((conn.execute("SELECT config FROM runs WHERE run_id = ?", (run_id,)).fetchone() or ["{}"])[0] or "{}")
    batch = max(int(cfg.get("batch_size", 1)), 1)
    counts = np.r_[0, drift["edit_count"].to_numpy()]
    f2 = np.r_[0.0, drift["f2"].to_numpy()]
    w0 = float(np.sqrt(drift["w2"][0]))
    updates = np.maximum(np.ceil(np.diff(counts) / batch), 1)
    q = np.diff(f2) / updates  # mean squared norm of one update in each interval
    ok = q > 0
    z = np.full(len(q), np.nan)
    z[ok] = robust_z(np.log(q[ok]))
    median_q = float(np.exp(np.median(np.log(q[ok])))) if ok.any() else 0.0
    em = dict(conn.execute("SELECT edit_count, value FROM measurements WHERE run_id = ? AND case_id = ? AND "
                           "rephrase_type = 'panel' AND metric = 'exact_match'", (run_id, RUN_LEVEL)).fetchall())
    pinned = []
    for i in np.flatnonzero(np.nan_to_num(z) > OUTLIER_Z):
        a, b = int(counts[i]), int(counts[i + 1])
        ends = list(range(a + batch, b + 1, batch)) or [b]
        falls = [(em.get(e - batch, np.nan) - em.get(e, np.nan), e) for e in ends]
        falls = [(f, e) for f, e in falls if f == f and f > 0]
        at = max(falls, key=lambda t: (t[0], -t[1]))[1] if falls else ends[0]
        est = float(np.sqrt(max(q[i] * updates[i] - (updates[i] - 1) * median_q, 0.0)))
        pinned.append((i, a, b, at, est))
    ctx = _edit_context(conn, run_id, [p[3] for p in pinned])
    for i, a, b, at, est in pinned:
        events.append({"run_id": run_id, "kind": "disabling_edit", "series": "weight_drift", "edit_count": at,
                       "end_count": b, "value": est / w0 if w0 else est,
                       "detail": json.dumps({"rule": "robust z of log mean squared update per checkpoint interval",
                                             "z": float(z[i]), "threshold": OUTLIER_Z, "interval": [a, b],
                                             "norm_estimate": est, "relative_to_w0": est / w0 if w0 else None,
                                             "median_update_norm": float(np.sqrt(median_q)),
                                             "w_minus_w0": [float(np.sqrt(f2[i])), float(np.sqrt(f2[i + 1]))],
                                             "pinned_by": "largest fall of the panel's exact match in the interval",
                                             **ctx[at]})})
    return events


def usability(conn: sqlite3.Connection, run_id: str, series: dict[str, dict] | None = None) -> pl.DataFrame:
    """Whether the model is still usable at each edit count where the quick ability suite was measured:
    edit_count, abilities_left (mean over accuracy tasks of (score - chance) / (unedited score - chance), tasks
    the unedited model was within 0.1 of chance on left out), perplexity_ratio (to the unedited value),
    newest_es (the newest edits' ES at the last checkpoint at or before it), and the three signals
    abilities_at_chance (abilities_left <= CHANCE_SHARE), perplexity_exploded (ratio >= PERPLEXITY_BLOWUP),
    efficacy_gone (newest_es <= EFFICACY_CHANCE), and unusable (at least two of the signals measured there,
    or the only one measured)."""
    schema = {"edit_count": pl.Int64, "abilities_left": pl.Float64, "perplexity_ratio": pl.Float64,
              "newest_es": pl.Float64, "abilities_at_chance": pl.Boolean, "perplexity_exploded": pl.Boolean,
              "efficacy_gone": pl.Boolean, "unusable": pl.Boolean}
    series = run_series(conn, run_id) if series is None else series
    ab = queries.abilities(conn, [run_id])
    ab = ab.filter(pl.col("mode") == "quick") if not ab.is_empty() else ab
    counts = sorted(set(ab["edit_count"].to_list())) if not ab.is_empty() else []
    newest = series.get("newest_es")
    if not counts and newest is not None:
        counts = [int(c) for c in newest["x"]]
    rows = []
    for c in counts:
        left, ratio = [], None
        at = ab.filter(pl.col("edit_count") == c) if not ab.is_empty() else ab
        for r in at.iter_rows(named=True):
            start = ab.filter((pl.col("task") == r["task"]) & (pl.col("edit_count") == 0))
            if start.is_empty() or r["score"] is None:
                continue
            s0 = start["score"][0]
            if r.get("metric") == "perplexity" or r.get("higher_is_better") == 0:
                ratio = r["score"] / s0 if s0 else None
            elif r.get("chance") is not None and s0 - r["chance"] >= 0.1:
                left.append((r["score"] - r["chance"]) / (s0 - r["chance"]))
        es = None
        if newest is not None:
            before = [v for x, v in zip(newest["x"], newest["y"]) if x <= c]
            es = float(before[-1]) if before else None
        signals = {"abilities_at_chance": (float(np.mean(left)) <= CHANCE_SHARE) if left else None,
                   "perplexity_exploded": (ratio >= PERPLEXITY_BLOWUP) if ratio is not None else None,
                   "efficacy_gone": (es <= EFFICACY_CHANCE) if es is not None else None}
        measured = [v for v in signals.values() if v is not None]
        unusable = (sum(measured) >= 2) if len(measured) >= 2 else (bool(measured) and measured[0])
        rows.append({"edit_count": c, "abilities_left": float(np.mean(left)) if left else None,
                     "perplexity_ratio": ratio, "newest_es": es, **signals, "unusable": bool(unusable)})
    return pl.DataFrame(rows, schema=schema)


def order_means(curves: pl.DataFrame, arm_of: dict[str, str]) -> pl.DataFrame:
    """The mean over edit orders of `sequential_curves` rows (issue 19: curves show the mean over orders with a
    band). `arm_of`: run_id -> its arm (runs alike but for the edit order, e.g. run_label). At each edit count
    and series that at least two of an arm's runs measured: the mean, `orders` (how many runs), and the 95%
    t-interval of the mean over orders (mean +- t(0.975, k-1) sd / sqrt(k)); an arm with a single run passes
    that run's own rows through (their Wilson CI, orders 1). Columns: arm, edit_count, series, value, n (orders
    for a mean, the run's n for a single run), orders, ci_low, ci_high."""
    from scipy import stats as sps

    schema = {"arm": pl.Utf8, "edit_count": pl.Int64, "series": pl.Utf8, "value": pl.Float64, "n": pl.Int64,
              "orders": pl.Int64, "ci_low": pl.Float64, "ci_high": pl.Float64}
    if curves.is_empty() or not arm_of:
        return pl.DataFrame(schema=schema)
    tagged = (curves.filter(pl.col("run_id").is_in(list(arm_of)) & pl.col("value").is_not_null()
                            & pl.col("value").is_not_nan())
              .with_columns(pl.col("run_id").replace_strict(arm_of, return_dtype=pl.Utf8).alias("arm")))
    runs_per_arm = tagged.group_by("arm").agg(pl.col("run_id").n_unique().alias("k"))
    single = (tagged.join(runs_per_arm.filter(pl.col("k") == 1), on="arm")
              .select("arm", "edit_count", "series", "value", "n", pl.lit(1, dtype=pl.Int64).alias("orders"),
                      "ci_low", "ci_high"))
    many = (tagged.join(runs_per_arm.filter(pl.col("k") > 1), on="arm")
            .group_by("arm", "edit_count", "series")
            .agg(pl.col("value").mean().alias("value"), pl.col("value").std().alias("sd"),
                 pl.len().cast(pl.Int64).alias("orders"))
            .filter(pl.col("orders") >= 2))
    if not many.is_empty():
        t = [float(sps.t.ppf(0.975, k - 1)) for k in many["orders"].to_list()]
        half = pl.Series(t) * many["sd"] / many["orders"].cast(pl.Float64).sqrt()
        many = many.with_columns((pl.col("value") - half).alias("ci_low"), (pl.col("value") + half).alias("ci_high"),
                                 pl.col("orders").alias("n")).select(list(schema))
    else:
        many = pl.DataFrame(schema=schema)
    return pl.concat([single.cast(schema), many.cast(schema)]).sort("arm", "series", "edit_count")


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


def sequential_rules() -> dict[str, str]:
    """The rule behind each verdict on a sequential run, in words built from the constants the code uses, so a
    page states the rule beside the verdict it computed (event kind -> sentence)."""
    import inspect

    from ..stats import OUTLIER_Z, abrupt_steps, phase_break

    pb = {k: v.default for k, v in inspect.signature(phase_break).parameters.items()
          if v.default is not inspect.Parameter.empty}
    ab = inspect.signature(abrupt_steps).parameters["k_noise"].default
    return {
        "phase": f"A series has a catastrophic phase when, split where two straight lines fit it best (at least "
                 f"{PHASE_MIN_POINTS} checkpoints a side), the later side loses beyond the earlier trend at least "
                 f"{pb['k_noise']:g}x the series' own noise and at least 5% of its start, at a rate at least "
                 f"{pb['steep']:g}x the earlier one (store.stats.phase_break).",
        "disabling_edit": f"A disabling edit is one whose update is out of line with the run's own updates: robust z "
                          f"(median and MAD over the run's edits) of log ||dW|| above {OUTLIER_Z:g}; runs without "
                          "per-edit norms: the same on each checkpoint interval's mean squared update "
                          "(store.derived.disabling_edit_events).",
        "abrupt_change": f"An abrupt change is one step of an ability or perplexity series that fell by at least "
                         f"{ab:g}x the series' own step noise and its sampling SE (store.stats.abrupt_steps).",
        "collapse": f"Collapse: from this ability checkpoint on the model is no longer usable, by at least two of "
                    f"abilities at chance (at most {CHANCE_SHARE:.0%} of the unedited margin over chance left), "
                    f"perplexity at least {PERPLEXITY_BLOWUP:g}x its unedited value, newest-edit ES at most "
                    f"{EFFICACY_CHANCE:g} (store.derived.usability).",
        "panel_floor": "Panel floor: the run's online stop, when panel recall fell below 10% (or fluency below 60%) "
                       "of its unedited value; the run then makes 150 more edits and stops (the run's config holds "
                       "its thresholds).",
    }


def collapse_event(run_id: str, use: pl.DataFrame) -> list[dict]:
    """The collapse (study B's sense: the model is no longer usable, `usability`): the first edit count from
    which every later measurement finds it unusable. Recovering later (FT-L's panel) is no collapse."""
    if use.is_empty():
        return []
    flags = use["unusable"].to_list()
    start = None
    for i in range(len(flags) - 1, -1, -1):
        if not flags[i]:
            break
        start = i
    if start is None:
        return []
    row = use.row(start, named=True)
    signals = [k for k in ("abilities_at_chance", "perplexity_exploded", "efficacy_gone") if row[k]]
    return [{"run_id": run_id, "kind": "collapse", "series": "+".join(signals), "edit_count": row["edit_count"],
             "end_count": int(use["edit_count"][-1]), "value": row["abilities_left"],
             "detail": json.dumps({"rule": "store.derived.usability: at least two of abilities at chance, "
                                           "perplexity exploded, newest-edit efficacy gone, from here on",
                                   **{k: row[k] for k in use.columns}})}]


def panel_floor_events(conn: sqlite3.Connection, run_id: str, series: dict[str, dict]) -> list[dict]:
    """The online stop rule, under its own name: the first checkpoint where fluency fell below
    `collapse_fluency` x its unedited value or panel recall below `collapse_panel` x its unedited value (the
    run stops `after_collapse` edits later). One row per series that crossed, at the first crossing of any."""
    cfg = json.loads((conn.execute("SELECT config FROM runs WHERE run_id = ?", (run_id,)).fetchone() or ["{}"])[0] or "{}")
    thresholds = {"fluency": cfg.get("collapse_fluency", 0.6), "panel_recall": cfg.get("collapse_panel", 0.1)}
    first, hits = None, {}
    for name, share in thresholds.items():
        s = series.get(name)
        if s is None or len(s["x"]) < 2 or s["x"][0] != 0:
            continue
        base = float(s["y"][0])
        for x, y in zip(s["x"][1:], s["y"][1:]):
            if y < share * base:
                hits[name] = (int(x), float(y), base, share)
                break
    if not hits:
        return []
    first = min(h[0] for h in hits.values())
    return [{"run_id": run_id, "kind": "panel_floor", "series": name, "edit_count": first, "value": y,
             "detail": json.dumps({"baseline": base, "threshold": share, "crossed_at": x})}
            for name, (x, y, base, share) in hits.items() if x == first]


def derive_sequential_events(conn: sqlite3.Connection, run_id: str) -> list[dict]:
    """Every derived event of a sequential run from its stored rows: phases on every series, disabling edits,
    abrupt ability or perplexity changes, the collapse (no longer usable) and the panel-floor crossing."""
    series = run_series(conn, run_id)
    return (phase_events(run_id, series) + disabling_edit_events(conn, run_id) + abrupt_change_events(run_id, series)
            + collapse_event(run_id, usability(conn, run_id, series)) + panel_floor_events(conn, run_id, series))


def rederive_sequential_events(store, run_id: str) -> int:
    """Replace a run's derived events (DERIVED_EVENT_KINDS) with those `derive_sequential_events` finds now;
    returns how many were written. No edit is recomputed."""
    return store.replace_events(run_id, DERIVED_EVENT_KINDS, derive_sequential_events(store.conn, run_id))

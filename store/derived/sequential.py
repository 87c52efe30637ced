"""Study B, sequential editing: a run's run-level series against edit count (store.conventions' scopes and
labels) with n and Wilson CIs, its events and phases as stored, the forgetting curve by an edit's age, the
headlines, and the mean over edit orders. The verdicts themselves are derived in store.derived.verdicts."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import polars as pl

from .. import queries
from ..conventions import HELD, LOG_EVENT_KINDS, RUN_LEVEL, SEQUENTIAL_SERIES
from ..metrics import wilson_ci
from .common import wilson_arrays
from .labels import edits_facts, run_labels


_SHARES = {"es", "ps", "ns", "retention", "forgotten", "panel_recall", "exact_match", "retention_em", "forgotten_em"}
_COUNTS = ["n", "n_held", "n_held_em", "update_w0"]  # rows that qualify another row, not series of their own


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
    # how long the run took, when it was extended to more edits or resumed, and which plan unit made it
    # (compute/plan.py) are not events of the editing
    ev = ev.filter(~pl.col("kind").is_in(["timing", "extended", *LOG_EVENT_KINDS]))
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
        return ("No phases found yet: a series has them once its run spans at least two tenths of the edits it was "
                "set to make (a tenth on either side of a split), so a run interrupted early has none.")
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


def sequential_headlines(conn: sqlite3.Connection) -> pl.DataFrame:
    """Per sequential run: edits made, the collapse (the model no longer usable: store.derived.usability;
    null: none), the start of a catastrophic phase on any series, disabling edits, retention (by exact match
    where measured, and by ES) and panel recall at the last checkpoint (with n and 95% Wilson CIs), and the
    panel-floor crossing that stops a run (panel_floor_at; stores derived before it had its own name
    recorded it as the collapse). A control that edits no fact (`edits_facts`) has no retention: null."""
    labels = run_labels(conn, "sequential")
    schema = {"run_id": pl.String, "run": pl.String, "status": pl.String, "edits": pl.Int64, "collapse_at": pl.Int64,
              "catastrophic_from": pl.Int64, "disabling_edits": pl.Int64, "retention": pl.Float64,
              "retention_ci": pl.String, "panel_recall": pl.Float64, "panel_recall_ci": pl.String,
              "retention_em": pl.Float64, "retention_em_ci": pl.String, "panel_floor_at": pl.Int64}
    if labels.is_empty():
        return pl.DataFrame(schema=schema)
    curves = sequential_curves(conn)
    events = sequential_events(conn)
    configs = {run_id: json.loads(cfg or "{}") for run_id, cfg in
               conn.execute("SELECT run_id, config FROM runs WHERE kind = 'sequential'")}
    orders = {run_id: cfg.get("order_seed") for run_id, cfg in configs.items()}
    rows = []
    for r in labels.iter_rows(named=True):
        ev = events.filter(pl.col("run_id") == r["run_id"])
        order = orders.get(r["run_id"])
        col = ev.filter(pl.col("kind") == "collapse")["edit_count"]
        cat = ev.filter((pl.col("kind") == "phase") & (pl.col("phase") == "catastrophic"))["edit_count"]
        floor = ev.filter(pl.col("kind") == "panel_floor")["edit_count"]
        # the edit order where it is not the default, as the sidebar names runs: two orders never read alike
        row = {"run_id": r["run_id"], "run": r["label"] + (f", order {order}" if order not in (None, 0) else ""),
               "status": r["status"], "edits": r["n_done"] or 0,
               "collapse_at": col.min() if col.len() else None, "catastrophic_from": cat.min() if cat.len() else None,
               "disabling_edits": ev.filter(pl.col("kind") == "disabling_edit").height,
               "panel_floor_at": floor.min() if floor.len() else None}
        for metric in ("retention", "panel_recall", "retention_em"):
            c = curves.filter((pl.col("run_id") == r["run_id"]) & (pl.col("metric") == metric)).sort("edit_count")
            if c.is_empty() or (metric != "panel_recall" and not edits_facts(r["editor"], configs.get(r["run_id"]))):
                row[metric], row[f"{metric}_ci"] = None, None
            else:
                last = c.row(-1, named=True)
                row[metric] = last["value"]
                row[f"{metric}_ci"] = (f"[{last['ci_low']:.2f}, {last['ci_high']:.2f}], n = {last['n']}"
                                       if last["ci_low"] is not None else f"n = {last['n']}")
        rows.append(row)
    return pl.DataFrame(rows, schema=schema).sort("run")


def order_means(curves: pl.DataFrame, arm_of: dict[str, str]) -> pl.DataFrame:
    """The mean over edit orders of `sequential_curves` rows (issue 19: curves show the mean over orders with a
    band). `arm_of`: run_id -> its arm (runs alike but for the edit order, e.g. run_label). At each edit count
    and series that at least two of an arm's runs measured: the mean, `orders` (how many runs), and the 95%
    t-interval of the mean over orders (mean +- t(0.975, k-1) sd / sqrt(k)); an arm with a single run passes
    that run's own rows through (their Wilson CI, orders 1). A share (a series whose every value and CI bound
    lies in [0, 1]) has its t-interval cut to [0, 1]: with two orders t = 12.7 and the interval would otherwise
    run far past what a share can be. Columns: arm, edit_count, series, value, n (orders for a mean, the run's
    n for a single run), orders, ci_low, ci_high."""
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
        inside = [pl.col(c).is_null() | pl.col(c).is_between(0.0, 1.0) for c in ("value", "ci_low", "ci_high")]
        shares = (tagged.group_by("series").agg(pl.all_horizontal(inside).all().alias("share"))
                  .filter(pl.col("share"))["series"].to_list())
        share = pl.col("series").is_in(shares)
        many = many.with_columns((pl.col("value") - half).alias("ci_low"), (pl.col("value") + half).alias("ci_high"),
                                 pl.col("orders").alias("n"))
        many = many.with_columns(pl.when(share).then(pl.col("ci_low").clip(0.0, 1.0)).otherwise(pl.col("ci_low"))
                                 .alias("ci_low"),
                                 pl.when(share).then(pl.col("ci_high").clip(0.0, 1.0)).otherwise(pl.col("ci_high"))
                                 .alias("ci_high")).select(list(schema))
    else:
        many = pl.DataFrame(schema=schema)
    return pl.concat([single.cast(schema), many.cast(schema)]).sort("arm", "series", "edit_count")

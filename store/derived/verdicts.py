"""Study B's verdicts from a sequential run's stored rows: phases on every series, disabling edits, abrupt
ability or perplexity changes, the collapse (no longer usable) and the panel floor, with the rules in words.

Every verdict is a function of the run's stored rows (run-level series, per-edit rows, weight drift, ability
scores, config), so a store can be re-derived without recomputing an edit; the sequential runner records
exactly these at the end of a run (compute.experiments.sequential.find_events)."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import polars as pl

from .. import queries
from ..conventions import DERIVED_EVENT_KINDS, RUN_LEVEL, SEQUENTIAL_SERIES
from .common import wilson_arrays


PHASE_MIN_POINTS = 3
# An edit is an outlier of the run's own updates only against a distribution: at least MIN_OUTLIER_EDITS of them,
# and a spread of log ||dW|| of at least LOG_NORM_MAD_FLOOR (a MAD floor: after 3 ROME edits of norms 5.06, 5.15
# and 5.82 the third had z 4.7 against a MAD of 0.017; with the floor it needs 1.68x the median norm and more)
MIN_OUTLIER_EDITS = 8
LOG_NORM_MAD_FLOOR = 0.1
# ... and out of line with the updates around it: its log ||dW|| less the median of the LOCAL_UPDATES updates on
# either side has a robust z above OUTLIER_Z too, so the tail of a trend is no outlier (MEMIT b10's batches grow
# 27 -> 57 over its last 150 edits on the rebuild's order 0, and its last three were flagged against the run)
LOCAL_UPDATES = 5
PERPLEXITY_EFFECT = float(np.log(2))  # a perplexity phase or step must at least double (or halve) it
CHANCE_SHARE = 0.25  # abilities at chance: on average at most this share of the unedited margin over chance left
PERPLEXITY_BLOWUP = 10.0  # perplexity exploded: at least this many times its unedited value
EFFICACY_CHANCE = 0.5  # newest-edit efficacy gone: ES no better than a coin (P(new) > P(true) half the time)
# A fall at the ability checkpoint after a large update is pinned on that edit when the interval holds it alone, or
# when the fall is broad: at least this many ability or perplexity series at once (see disabling_edit_events)
DISABLING_MIN_SERIES = 2

# the share series a cliff is looked for in (store.stats.share_cliff): retention of the edits so far and recall of
# the fixed panel; newest-edit efficacy is a share of the last few edits only (10), not one series of one set
CLIFF_SERIES = ("retention_em", "retention", "panel_recall")

_RUN_SERIES = {  # (scope, metric) -> phase series name; the share's n comes from the scope's "n" rows
    ("all_edits", "retention_em"): "retention_em",
    ("all_edits", "retention"): "retention",
    ("panel", "panel_recall"): "panel_recall",
    ("newest", "es"): "newest_es",
    ("free_text", "fluency"): "fluency",
}


# each phase series' curve as the pages name it (store.conventions.SEQUENTIAL_SERIES): where its phases are drawn
PHASE_CURVES = {phase: SEQUENTIAL_SERIES[key] for key, phase in _RUN_SERIES.items()}


def _se_share(values: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Sampling SE of shares from their 95% Wilson interval (half its width / 1.96)."""
    lo, hi = wilson_arrays(np.rint(values * n), n)
    return (hi - lo) / (2 * 1.96)


def run_series(conn: sqlite3.Connection, run_id: str) -> dict[str, dict]:
    """Every series of a sequential run that phases are looked for on, higher is better: name -> {x, y, se,
    min_effect, w (the phase fit's weights: each share's n, else None), x_range (the edits the run was set to
    make from the series' first point: a phase's least span is a share of the run as planned, not of the part
    an interrupted run reached)}. Retention by exact match (where measured) and by ES, panel recall, newest-edit
    efficacy, fluency, and each ability task of the quick suite ("ability:<task>"; perplexity as -log
    perplexity)."""
    out = _run_series(conn, run_id)
    planned = planned_edits(conn, run_id)
    for s in out.values():
        s["x_range"] = None if planned is None or not len(s["x"]) else planned - float(s["x"][0])
    return out


def planned_edits(conn: sqlite3.Connection, run_id: str) -> int | None:
    """How many edits a sequential run was set to make (its config's max_edits), or None."""
    row = conn.execute("SELECT config FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    try:
        value = json.loads(row[0] or "{}").get("max_edits") if row else None
    except ValueError:
        return None
    return int(value) if isinstance(value, (int, float)) and value > 0 else None


def _run_series(conn: sqlite3.Connection, run_id: str) -> dict[str, dict]:
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
            se = w = None
            if metric != "fluency" and part["n"].null_count() == 0:
                n = part["n"].to_numpy().astype(float)
                se = _se_share(y, n)
                w = n if np.all(n > 0) else None  # a share over 2 edits weighs what 2 edits weigh in the fits
            if scope == "all_edits":  # before any edit nothing has been lost
                x, y = np.r_[0.0, x], np.r_[1.0, y]
                se = None if se is None else np.r_[0.0, se]
                w = None if w is None else np.r_[1.0, w]  # the start, by definition, as one edit's share
            # shares of one growing set of edits or of the fixed panel: a cliff in them is judged on their counts
            counts = w if name in CLIFF_SERIES else None
            out[name] = {"x": x, "y": y, "se": se, "min_effect": None, "w": w, "counts": counts}
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
        found = phase_break(s["x"], s["y"], s["se"], weights=s.get("w"), counts=s.get("counts"),
                            min_points=PHASE_MIN_POINTS, min_effect=s["min_effect"], x_range=s.get("x_range"))
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


def local_log_residuals(log_norm, k: int = LOCAL_UPDATES) -> np.ndarray:
    """Each update's log norm less the median of the `k` updates before and the `k` after it (fewer at the
    run's ends), itself left out."""
    v = np.asarray(log_norm, dtype=float)
    if len(v) < 2:
        return np.zeros(len(v))
    return np.array([v[i] - np.median(np.r_[v[max(0, i - k):i], v[i + 1:i + 1 + k]]) for i in range(len(v))])


def large_update_events(conn: sqlite3.Connection, run_id: str) -> list[dict]:
    """Large updates judged from the edit itself, against the run's own distribution of updates (candidates
    for disabling edits: `disabling_edit_events` keeps those the model did not survive).

    With per-edit update norms (runs made since they are recorded): an edit whose log ||dW|| has a robust z
    (store.stats.robust_z: median and MAD over the run's edits) above OUTLIER_Z, and whose log ||dW|| less the
    median of the LOCAL_UPDATES updates before and after it has one too (`local_log_residuals`): an update
    out of line with the run and with its neighbours, not the end of a growing trend. Without them (older runs):
    the same rule on each checkpoint interval's mean squared update per update made, (||W-W0||^2 at its end -
    at its start) / updates (the squared norm of a sum of roughly orthogonal updates grows by their squared
    norms); a flagged interval is pinned to the edit after which the panel's exact match fell most (the
    interval's first edit when none fell), and that edit's norm estimated as sqrt(interval's increase - the
    median update's share of the others). `value` is the edit's ||dW|| / ||W0|| (estimated or measured)."""
    from ..stats import OUTLIER_Z, robust_z

    norms = _per_edit_update_norms(conn, run_id)
    events = []
    if norms.height >= MIN_OUTLIER_EDITS:
        log_norm = np.log(np.maximum(norms["norm"].to_numpy(), 1e-30))
        z = robust_z(log_norm, min_mad=LOG_NORM_MAD_FLOOR)
        z_local = robust_z(local_log_residuals(log_norm), min_mad=LOG_NORM_MAD_FLOOR)
        flagged = [int(i) for i in np.flatnonzero((z > OUTLIER_Z) & (z_local > OUTLIER_Z))]
        ctx = _edit_context(conn, run_id, [int(norms["edit_count"][i]) for i in flagged])
        median = float(np.median(norms["norm"].to_numpy()))
        for i in flagged:
            row = norms.row(int(i), named=True)
            rel = row["norm"] / row["w0"] if row["w0"] else None
            events.append({"run_id": run_id, "kind": "large_update", "series": "update_norm",
                           "edit_count": int(row["edit_count"]), "end_count": int(row["edit_count"]),
                           "value": rel if rel is not None else row["norm"],
                           "detail": json.dumps({"rule": "robust z of log ||dW|| over the run's edits and "
                                                         f"against the {LOCAL_UPDATES} updates on either side",
                                                 "z": float(z[i]), "z_local": float(z_local[i]),
                                                 "threshold": OUTLIER_Z, "norm": row["norm"],
                                                 "relative_to_w0": rel, "median_norm": median,
                                                 **ctx[int(row["edit_count"])]})})
        return events
    drift = queries._frame(conn, "SELECT edit_count, SUM(fro_delta * fro_delta) AS f2, "
                                 "SUM(fro_delta * fro_delta / (rel_change * rel_change)) AS w2 FROM weight_drift "
                                 "WHERE run_id = ? AND rel_change > 0 GROUP BY edit_count ORDER BY edit_count", [run_id])
    if drift.height < 3 or norms.height:  # runs with per-edit norms are judged on them alone (above)
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
    z[ok] = robust_z(np.log(q[ok]), min_mad=2 * LOG_NORM_MAD_FLOOR)  # squared norms: twice the log spread
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
        events.append({"run_id": run_id, "kind": "large_update", "series": "weight_drift", "edit_count": at,
                       "end_count": b, "value": est / w0 if w0 else est,
                       "detail": json.dumps({"rule": "robust z of log mean squared update per checkpoint interval",
                                             "z": float(z[i]), "threshold": OUTLIER_Z, "interval": [a, b],
                                             "norm_estimate": est, "relative_to_w0": est / w0 if w0 else None,
                                             "median_update_norm": float(np.sqrt(median_q)),
                                             "w_minus_w0": [float(np.sqrt(f2[i])), float(np.sqrt(f2[i + 1]))],
                                             "pinned_by": "largest fall of the panel's exact match in the interval",
                                             **ctx[at]})})
    return events


def disabling_edit_events(series: dict[str, dict], large: list[dict], abrupt: list[dict],
                          collapse: list[dict], batch: int = 1) -> list[dict]:
    """Disabling edits (study B: single edits with abnormally large updates that disable the model): a large
    update (`large_update_events`) that the model did not survive, judged at the first ability checkpoint after
    it. Not surviving is the collapse there (`collapse_event`: the collapse's checkpoint is the first ability
    checkpoint at or after the edit), or an abrupt fall (`abrupt_change_events`) in the interval (from, to]
    that holds the edit and that the interval pins on it: the interval holds that edit alone, or the fall is
    broad, at least DISABLING_MIN_SERIES ability or perplexity series at once or the perplexity multiplied
    PERPLEXITY_BLOWUP-fold in the step. One series falling over an interval of many edits is not pinned on any
    one of them (seen on the rebuild, 2026-12-07: entity typing fell abruptly in the first 50 edits of every ROME
    order and of the size-matched random control, where r-ROME's order 2 had a 0.27 ||W0|| update at edit 41). A
    model already collapsed (unusable from an earlier checkpoint on) is not disabled again. An outlier of a run's
    own updates that nothing follows is a large update, not a disabling edit (seen on the rebuild: the r-ROME run
    on order 0 has one of 0.3 ||W0|| with no change after it). `detail` adds `followed_by`. `series`: the run's `run_series` (its
    ability checkpoints); `batch`: the run's edits per update (an interval of one batch holds one update)."""
    checks = sorted({int(x) for name, s_ in series.items() if name.startswith("ability:") for x in s_["x"]})
    collapsed_from = min((int(c["edit_count"]) for c in collapse), default=None)
    events = []
    for ev in large:
        at = int(ev["edit_count"])
        if collapsed_from is not None and at > collapsed_from:
            continue  # the model was unusable before this edit
        falls = []
        for a in abrupt:
            if a["edit_count"] < at <= a["end_count"]:
                d = json.loads(a["detail"])
                falls.append({"kind": "abrupt_change", "series": a["series"], "interval": [a["edit_count"],
                              a["end_count"]], "before": d["before"], "after": d["after"]})
        alone = all(f["interval"][1] - f["interval"][0] <= max(batch, 1) for f in falls)
        exploded = any(series.get(f["series"], {}).get("perplexity") and f["before"] > 0
                       and f["after"] / f["before"] >= PERPLEXITY_BLOWUP for f in falls)
        broad = len({f["series"] for f in falls}) >= DISABLING_MIN_SERIES or exploded
        after = falls if falls and (alone or broad) else []
        for c in collapse:
            prior = [x for x in checks if x < c["edit_count"]]
            if (prior[-1] if prior else -1) < at <= c["edit_count"]:
                after.append({"kind": "collapse", "edit_count": c["edit_count"]})
        if after:
            detail = {**json.loads(ev["detail"]), "followed_by": after,
                      "disabling_rule": "a large update followed, at the first ability checkpoint after it, by the "
                                        "collapse or by an abrupt fall pinned on it (the interval holds that edit "
                                        f"alone, or at least {DISABLING_MIN_SERIES} series fell, or the perplexity "
                                        f"rose {PERPLEXITY_BLOWUP:g}-fold)"}
            events.append({**ev, "kind": "disabling_edit", "detail": json.dumps(detail)})
    return events


def usability(conn: sqlite3.Connection, run_id: str, series: dict[str, dict] | None = None) -> pl.DataFrame:
    """Whether the model is still usable at each edit count where the quick ability suite was measured:
    edit_count, abilities_left (mean over accuracy tasks of (score - chance) / (unedited score - chance), tasks
    the unedited model was within 0.1 of chance on left out) and abilities_left_se (its standard error from each
    task's 95% CI, (ci_high - ci_low) / 3.92 per score, the unedited scores taken as given), perplexity_ratio
    (to the unedited value),
    newest_es (the newest edits' ES at the last checkpoint at or before it), and the three signals
    abilities_at_chance (abilities_left <= CHANCE_SHARE), perplexity_exploded (ratio >= PERPLEXITY_BLOWUP),
    efficacy_gone (newest_es <= EFFICACY_CHANCE), and unusable (at least two of the signals measured there,
    or the only one measured)."""
    schema = {"edit_count": pl.Int64, "abilities_left": pl.Float64, "abilities_left_se": pl.Float64,
              "perplexity_ratio": pl.Float64,
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
        left, spread, ratio = [], [], None
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
                if r.get("ci_low") is not None and r.get("ci_high") is not None:
                    spread.append(((r["ci_high"] - r["ci_low"]) / 3.92 / (s0 - r["chance"])) ** 2)
        es = None
        if newest is not None:
            before = [v for x, v in zip(newest["x"], newest["y"]) if x <= c]
            es = float(before[-1]) if before else None
        signals = {"abilities_at_chance": (float(np.mean(left)) <= CHANCE_SHARE) if left else None,
                   "perplexity_exploded": (ratio >= PERPLEXITY_BLOWUP) if ratio is not None else None,
                   "efficacy_gone": (es <= EFFICACY_CHANCE) if es is not None else None}
        measured = [v for v in signals.values() if v is not None]
        unusable = (sum(measured) >= 2) if len(measured) >= 2 else (bool(measured) and measured[0])
        se = float(np.sqrt(sum(spread)) / len(left)) if left and len(spread) == len(left) else None
        rows.append({"edit_count": c, "abilities_left": float(np.mean(left)) if left else None,
                     "abilities_left_se": se,
                     "perplexity_ratio": ratio, "newest_es": es, **signals, "unusable": bool(unusable)})
    return pl.DataFrame(rows, schema=schema)


def sequential_rules() -> dict[str, str]:
    """The rule behind each verdict on a sequential run, in words built from the constants the code uses, so a
    page states the rule beside the verdict it computed (event kind -> sentence)."""
    import inspect

    from ..stats import OUTLIER_Z, abrupt_steps, phase_break, share_cliff

    pb = {k: v.default for k, v in inspect.signature(phase_break).parameters.items()
          if v.default is not inspect.Parameter.empty}
    ab = inspect.signature(abrupt_steps).parameters["k_noise"].default
    cliff_loss = inspect.signature(share_cliff).parameters["min_loss"].default
    return {
        "phase": f"A series has a catastrophic phase when, split where two straight lines fit it best (at least "
                 f"{PHASE_MIN_POINTS} checkpoints and {pb['min_span']:.0%} of the edits the run was set to make a "
                 f"side, so a run interrupted early has no phase yet; a share weighted by its n, so a share of the "
                 f"first few edits counts for few), the later side loses beyond the "
                 f"earlier trend (a rise held at its level), on average, at least {pb['k_noise']:g}x the series' own noise and "
                 f"at least {pb['min_share']:.0%} of the level it had at the split (perplexity: at least doubles), "
                 f"at a rate at least {pb['steep']:g}x the earlier one; or, for retention and panel recall, where "
                 f"one step loses at least {cliff_loss:.0%} of what was left, beyond sampling noise (two-proportion z at least "
                 f"{pb['k_noise']:g}), after the run's first {pb['min_span']:.0%}: a cliff a steep earlier decline "
                 f"would hide (store.stats.phase_break).",
        "large_update": f"A large update is one out of line with the run's own updates and with the {LOCAL_UPDATES} "
                        f"on either side of it: robust z (median and MAD) of log ||dW|| above {OUTLIER_Z:g} over the "
                        "run's edits, and of its excess over its neighbours' median against the run's such excesses "
                        "(a growing trend's tail is no outlier); runs without per-edit norms: the run-wide test on "
                        "each checkpoint interval's mean squared update (store.derived.large_update_events).",
        "disabling_edit": f"A disabling edit is a large update (out of line with the run's updates and its "
                          f"neighbours, robust z above {OUTLIER_Z:g}) that the model did not survive: at the first "
                          "ability checkpoint after it the model had collapsed, or an ability or the perplexity had "
                          "fallen abruptly in a way pinned on that edit (the interval holds it alone, or at least "
                          f"{DISABLING_MIN_SERIES} series fell at once, or the perplexity rose {PERPLEXITY_BLOWUP:g}-fold: "
                          "one series falling over an interval of many edits is not pinned on any one of them); an "
                          "edit after the collapse disables nothing "
                          "(store.derived.disabling_edit_events).",
        "abrupt_change": f"An abrupt change is one step of an ability or perplexity series that fell by at least "
                         f"{ab:g}x the series' own step noise and its sampling SE (store.stats.abrupt_steps).",
        "collapse": f"Collapse: from this ability checkpoint on the model is no longer usable, by at least two of "
                    f"abilities at chance (at most {CHANCE_SHARE:.0%} of the unedited margin over chance left), "
                    f"perplexity at least {PERPLEXITY_BLOWUP:g}x its unedited value, newest-edit ES at most "
                    f"{EFFICACY_CHANCE:g} (store.derived.usability).",
        "panel_floor": "Panel floor: panel recall below 10% (or fluency below 60%) of its unedited value, under "
                       "its own name (no verdict of collapse). The run stops 150 edits past it if by then the "
                       "collapse is on record, else it goes on to its maximum; runs made before that rule stopped "
                       "150 edits past the floor whatever the usability (the run's config holds its thresholds).",
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
    """The panel floor, under its own name: the first checkpoint where fluency fell below `collapse_fluency` x
    its unedited value or panel recall below `collapse_panel` x its unedited value (the run stops
    `after_collapse` edits later if the collapse is on record by then, compute.experiments.sequential). One row
    per series that crossed, at the first crossing of any."""
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
    large, abrupt = large_update_events(conn, run_id), abrupt_change_events(run_id, series)
    collapse = collapse_event(run_id, usability(conn, run_id, series))
    cfg = json.loads((conn.execute("SELECT config FROM runs WHERE run_id = ?", (run_id,)).fetchone() or ["{}"])[0] or "{}")
    batch = int(cfg.get("batch_size", 1) or 1)
    return (phase_events(run_id, series) + large + disabling_edit_events(series, large, abrupt, collapse, batch)
            + abrupt + collapse + panel_floor_events(conn, run_id, series))


def rederive_sequential_events(store, run_id: str) -> int:
    """Replace a run's derived events (DERIVED_EVENT_KINDS) with those `derive_sequential_events` finds now;
    returns how many were written. No edit is recomputed."""
    return store.replace_events(run_id, DERIVED_EVENT_KINDS, derive_sequential_events(store.conn, run_id))

"""Statistics shared by compute (derived tables, the sequential runner, tests) and the dashboard: rank
correlation with a bootstrap CI and a permutation p-value, the within-stratum (relation) correlation, and
the rules that read a sequential run's series: phases, abrupt steps and robust outliers. numpy only: no
scipy, so the dashboard stays light."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def rankdata(values) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (as scipy.stats.rankdata(method='average'))."""
    a = np.asarray(values, dtype=float)
    order = np.argsort(a, kind="mergesort")
    inverse = np.empty(len(a), dtype=np.intp)
    inverse[order] = np.arange(len(a))
    sorted_a = a[order]
    new_value = np.r_[True, sorted_a[1:] != sorted_a[:-1]]  # start of each run of equal values
    run_of = np.cumsum(new_value)[inverse]  # 1-based run index of each element
    bounds = np.r_[np.flatnonzero(new_value), len(a)]  # run k spans sorted positions bounds[k-1]..bounds[k]-1
    return 0.5 * (bounds[run_of] + bounds[run_of - 1] + 1)  # mean of the 1-based ranks in the run


def spearman(x, y) -> float:
    """Spearman's rho: the Pearson correlation of the ranks; nan when either side is constant or n < 3."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} values but y has {len(y)}: give paired values")
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    if len(x) < 3:
        return float("nan")
    rx, ry = rankdata(x), rankdata(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = np.sqrt((rx**2).sum() * (ry**2).sum())
    return float((rx * ry).sum() / denom) if denom > 0 else float("nan")


@dataclass(frozen=True)
class Correlation:
    """rho with its interval: every field NaN when rho itself is undefined (a constant side, n < 3); the
    interval NaN alone when it cannot be had honestly (`note` says why)."""

    rho: float
    ci_low: float
    ci_high: float
    n: int
    p_value: float = float("nan")  # two-sided permutation p-value of rho = 0
    undefined_share: float = 0.0  # share of bootstrap resamples in which one side was constant
    note: str = ""


UNDEFINED_SHARE_MAX = 0.01  # at most this share of resamples may have rho undefined for the bootstrap CI to stand


def _boot_rank_rows(dense: np.ndarray, idx: np.ndarray, m: int) -> np.ndarray:
    """Average ranks (1-based, ties averaged) of each bootstrap row of values given as dense codes 0..m-1.

    dense: [n] codes of the original values; idx: [B, n] resample indices. Returns [B, n] float ranks.
    """
    b, n = idx.shape
    codes = dense[idx]  # [B, n]
    counts = np.bincount((codes + m * np.arange(b)[:, None]).ravel(), minlength=b * m).reshape(b, m)
    less = np.cumsum(counts, axis=1) - counts  # values strictly below each code
    rows = np.arange(b)[:, None]
    return less[rows, codes] + (counts[rows, codes] + 1) / 2.0


def _rowwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    denom = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (a * b).sum(axis=1) / np.where(denom > 0, denom, 1), np.nan)


def spearman_ci(x, y, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> Correlation:
    """Spearman's rho with a percentile bootstrap CI over paired resamples and a permutation p-value (seeded).

    A resample in which one side is constant has no rho. Dropping such resamples (as this function once did)
    conditions the bootstrap on the rare values being drawn and can give an interval that excludes rho itself
    (ROME plain rev vs frequency: one recalled case in 240, 37% of resamples constant, -0.044 [-0.090,
    -0.033]). So when more than UNDEFINED_SHARE_MAX of the resamples are undefined the interval is reported
    as undefined (NaN, with `note` saying why) and the permutation p-value is what remains; below that share
    the undefined resamples are too few to move the percentiles. Resamples are ranked all at once (values
    coded densely, ranks from per-row counts), so a thousand resamples of a few hundred pairs take ms.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    rho = spearman(x, y)
    n = len(x)
    nan = float("nan")
    if n < 3 or np.isnan(rho):
        return Correlation(rho, nan, nan, n, note="rho undefined: one side is constant or n < 3")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, (n_boot, n))
    ux, dx = np.unique(x, return_inverse=True)
    uy, dy = np.unique(y, return_inverse=True)
    boots = _rowwise_pearson(_boot_rank_rows(dx, idx, len(ux)), _boot_rank_rows(dy, idx, len(uy)))
    undefined = float(np.isnan(boots).mean())
    p = permutation_p(x, y, rho, n_perm=n_boot, seed=seed)
    if undefined > UNDEFINED_SHARE_MAX:
        return Correlation(rho, nan, nan, n, p, undefined,
                           f"CI undefined: one side is constant in {undefined:.0%} of bootstrap resamples")
    alpha = (1 - level) / 2
    lo, hi = np.quantile(boots[~np.isnan(boots)], [alpha, 1 - alpha])
    return Correlation(rho, float(lo), float(hi), n, p, undefined)


def permutation_p(x, y, rho: float, n_perm: int = 1000, seed: int = 0) -> float:
    """Two-sided permutation p-value of Spearman's rho = 0: the share of permutations of y (plus the observed
    pairing, so never 0) whose |rho| is at least the observed |rho|. Ranks are computed once: permuting y
    permutes its ranks."""
    rx, ry = rankdata(x), rankdata(y)
    rng = np.random.default_rng(seed + 1)
    perm = rng.permuted(np.broadcast_to(ry, (n_perm, len(ry))), axis=1)  # [P, n]
    null = _rowwise_pearson(np.broadcast_to(rx, perm.shape), perm)
    hits = int((np.abs(null) >= abs(rho) - 1e-12).sum())
    return (hits + 1) / (n_perm + 1)


@dataclass(frozen=True)
class StratifiedCorrelation:
    """Per-stratum Spearman rhos combined by Fisher's z weighted by n - 3 (the within-relation estimate)."""

    rho: float
    ci_low: float
    ci_high: float
    n: int  # pairs in the strata that entered
    strata: int  # strata that entered (rho defined, n >= 4)
    strata_left_out: int  # strata with too few pairs or a constant side


def stratified_spearman(x, y, strata, level: float = 0.95) -> StratifiedCorrelation:
    """Spearman's rho within strata (e.g. relations), combined: z = mean of atanh(rho_s) weighted by n_s - 3;
    its variance sum(w_s^2 var_s) / (sum w_s)^2 with var_s = (1 + rho_s^2 / 2) / (n_s - 3) (Bonett and
    Wright's variance of a Spearman z), and the CI is tanh(z +- q * se). A stratum with fewer than 4 pairs or
    a constant side within it (rho undefined) is left out and counted. All NaN when no stratum enters.
    Pooling strata that differ in both x and y (relations differ in popularity and in difficulty) mixes
    those differences into rho; this estimate compares cases only with cases of their own stratum."""
    from statistics import NormalDist

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    s = np.asarray(strata, dtype=object)
    if not len(x) == len(y) == len(s):
        raise ValueError(f"x, y and strata have {len(x)}, {len(y)} and {len(s)} values: give one stratum per pair")
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y, s = x[keep], y[keep], s[keep]
    zs, ws, vs, used, left = [], [], [], 0, 0
    for label in dict.fromkeys(s.tolist()):
        sel = s == label
        k = int(sel.sum())
        r = spearman(x[sel], y[sel]) if k >= 4 else float("nan")
        if np.isnan(r):
            left += 1
            continue
        r = float(np.clip(r, -0.999999, 0.999999))
        zs.append(np.arctanh(r))
        ws.append(k - 3.0)
        vs.append((1 + r * r / 2) / (k - 3.0))
        used += k
    nan = float("nan")
    if not zs:
        return StratifiedCorrelation(nan, nan, nan, 0, 0, left)
    z, w, v = np.array(zs), np.array(ws), np.array(vs)
    zbar = float((w * z).sum() / w.sum())
    se = float(np.sqrt((w * w * v).sum()) / w.sum())
    q = NormalDist().inv_cdf(0.5 + level / 2)
    return StratifiedCorrelation(float(np.tanh(zbar)), float(np.tanh(zbar - q * se)), float(np.tanh(zbar + q * se)),
                                 used, len(zs), left)


def bootstrap_mean_ci(values, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of a mean, vectorised; (nan, nan) for no values."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return float("nan"), float("nan")
    means = v[np.random.default_rng(seed).integers(0, len(v), (n_boot, len(v)))].mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def mean_ci_from_sums(n, s, ss, t: bool = True):
    """(mean, low, high) of group means from their n, sum and sum of squares (arrays, as SQL aggregates give them):
    mean +- c sd / sqrt(n), c the 0.975 quantile of Student's t with n - 1 degrees of freedom (`t`), else of the
    normal (1.96); the bounds NaN where n < 2. For per-case differences of two measurements of the same cases it
    is the paired interval (a case that passes or fails on both adds nothing to its width)."""
    n = np.asarray(n, dtype=float)
    mean = np.asarray(s, dtype=float) / np.maximum(n, 1)
    var = np.maximum(np.asarray(ss, dtype=float) - n * mean * mean, 0.0) / np.maximum(n - 1, 1)
    if t:
        from scipy import stats as sps

        crit = sps.t.ppf(0.975, np.maximum(n - 1, 1))
    else:
        crit = 1.96
    half = crit * np.sqrt(var / np.maximum(n, 1))
    ok = n >= 2
    return mean, np.where(ok, mean - half, np.nan), np.where(ok, mean + half, np.nan)


def difference_ci(a: float, a_low: float, a_high: float, b: float, b_low: float, b_high: float) -> tuple[float, float]:
    """The 95% CI of a - b from each estimate's own 95% CI (MOVER, Zou & Donner 2008: each side's distance to
    its bound, combined in quadrature). With two Wilson intervals of proportions it is Newcombe's hybrid score
    interval (1998, method 10): 56/70 - 48/80 gives 0.200 [0.052, 0.334]. It assumes the two estimates are
    independent; for two measurements of the same items (a panel, an ability task's items) that correlate
    positively it is wider than a paired interval, so it errs towards "no difference"."""
    d = a - b
    return d - float(np.hypot(a - a_low, b_high - b)), d + float(np.hypot(a_high - a, b - b_low))


# --------------------------------------------------------------------------- rules over a run's series


def robust_z(values, min_mad: float = 0.0) -> np.ndarray:
    """Modified z-scores 0.6745 (v - median) / MAD (Iglewicz and Hoaglin; |z| > 3.5 marks an outlier). With a
    MAD of 0 (over half the values equal) the mean absolute deviation times 1.2533 stands in; all zeros when
    every value is equal or there are fewer than 3. `min_mad` floors the MAD: values this close together are
    not a spread an outlier is measured against."""
    v = np.asarray(values, dtype=float)
    if len(v) < 3:
        return np.zeros(len(v))
    med = np.median(v)
    mad = max(float(np.median(np.abs(v - med))), min_mad)
    if mad > 0:
        return 0.6745 * (v - med) / mad
    mean_ad = np.mean(np.abs(v - med))
    return (v - med) / (1.2533 * mean_ad) if mean_ad > 0 else np.zeros(len(v))


OUTLIER_Z = 3.5  # robust_z above which one edit's update is out of line with the run's own updates


def _line(x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> tuple[float, float, float]:
    """(slope, intercept, weighted sum of squared residuals) of the (weighted) least-squares line through (x, y)."""
    w = np.ones(len(x)) if w is None else w
    total = w.sum()
    mx, my = (w * x).sum() / total, (w * y).sum() / total
    sxx = (w * (x - mx) ** 2).sum()
    slope = float((w * (x - mx) * (y - my)).sum() / sxx) if sxx > 0 else 0.0
    intercept = float(my - slope * mx)
    return slope, intercept, float((w * (y - intercept - slope * x) ** 2).sum())


def series_noise(y, se=None) -> float:
    """A series' own noise, point to point: the robust spread of its first differences (1.4826 MAD / sqrt 2:
    a trend shifts the differences but does not widen them, one cliff is one difference and does not move the
    MAD), floored by the median sampling SE of its points when given."""
    y = np.asarray(y, dtype=float)
    d = np.diff(y)
    sigma = 1.4826 * float(np.median(np.abs(d - np.median(d)))) / np.sqrt(2) if len(d) >= 2 else 0.0
    if se is not None:
        s = np.asarray(se, dtype=float)
        s = s[~np.isnan(s)]
        if len(s):
            sigma = max(sigma, float(np.median(s)))
    return sigma


def _x_range(x: np.ndarray, x_range: float | None) -> float:
    """The x range a series' `min_span` is a share of: its own, or `x_range` (a run's planned length) where longer."""
    own = float(x[-1] - x[0]) if len(x) else 0.0
    return own if x_range is None else max(own, float(x_range))


def share_cliff(x, y, counts, *, min_loss: float = 0.5, k_noise: float = 3.0, min_span: float = 0.1,
                x_range: float | None = None) -> dict | None:
    """The first step of a share series (y[i] of counts[i] items, higher is better) that loses at least `min_loss`
    of the level before it, beyond sampling noise (two-proportion z of at least `k_noise`), after the run's first
    `min_span` of its x range (`x_range`, as in phase_break): a cliff towards the floor. Returns {from, to,
    before, after, loss, z} or None."""
    x, y, n = (np.asarray(v, dtype=float) for v in (x, y, counts))
    span = min_span * _x_range(x, x_range)
    for i in range(1, len(y)):
        if x[i - 1] - x[0] < span or y[i - 1] <= 0 or n[i - 1] <= 0 or n[i] <= 0:
            continue
        loss = 1.0 - y[i] / y[i - 1]
        pooled = (y[i - 1] * n[i - 1] + y[i] * n[i]) / (n[i - 1] + n[i])
        if loss < min_loss or not 0.0 < pooled < 1.0:
            continue
        z = float((y[i - 1] - y[i]) / np.sqrt(pooled * (1.0 - pooled) * (1.0 / n[i - 1] + 1.0 / n[i])))
        if z >= k_noise:
            return {"from": float(x[i - 1]), "to": float(x[i]), "before": float(y[i - 1]), "after": float(y[i]),
                    "loss": float(loss), "z": z}
    return None


def phase_break(x, y, se=None, *, weights=None, counts=None, min_points: int = 3, steep: float = 3.0,
                k_noise: float = 3.0, min_effect: float | None = None, min_span: float = 0.1,
                min_share: float = 0.2, x_range: float | None = None) -> dict | None:
    """Gradual and catastrophic phases of a series where higher is better (negate, or take -log, first).

    The rule. Split the series where two straight lines, fitted to either side, leave the least squared error
    (each side at least `min_points` points and at least `min_span` of the series' x range: a phase is a stretch
    of the run, not of its checkpoints, so the dense checkpoints after a run's first edits cannot make a
    "gradual phase" of edits 1-4 by themselves). The x range is the series' own, or `x_range` where that is
    longer: a run's planned length, so that a run interrupted at 50 of its 500 edits has no phase yet (with its
    own range, a tenth of 50 edits let its dense first checkpoints make "a catastrophic phase from edit 9").
    `weights` (e.g. each point's n: a share of the first 2 edits
    is not worth a share of 500) weight the fits, the scatter and the mean below; none: equal weights. The
    later side is a catastrophic phase when both hold:
    - the loss it adds beyond the earlier trend (the earlier line extrapolated, minus the later points, on
      (weighted) average) is at least `k_noise` times the series' own noise and at least `min_effect` (default
      `min_share` of the level the earlier line had at the change point: a catastrophic phase costs a fifth
      of what was left, so a noise-free straight line, a wobble or a gentle 1.0 -> 0.9 slide after a flat
      start, as AlphaEdit's ES retention on the rebuild's order 0, is not one). An earlier line that rises is
      held at its level at the change point: a gain is not expected to go on (a share cannot pass 1), so it
      adds no loss (a rise from 0.78 to 0.83 and a slide to 0.72 over 250 edits, as dialogue memory under
      ROME with the original keys on the rebuild's order 1, is no catastrophe). The noise is the larger of
      `series_noise` (the robust spread of its point-to-point steps, floored by the points' sampling SE
      `se`) and the points' (weighted) RMS scatter about the two fitted lines;
    - the later side loses faster: its mean loss rate (from the earlier line's value at the last earlier point
      to the later line's value at the end, per edit) is positive and at least `steep` times the earlier
      slope's loss rate. A cliff followed by a floor counts (the drop is in the rate); a fast early fall that
      slows down does not.
    A share series (`counts`: each point's n) has one too where it falls off a cliff (`share_cliff`: one step
    loses at least half of the level before it, with a two-proportion z of at least `k_noise`, after the run's
    first `min_span`): a steep earlier decline hides a cliff to the floor from the rule above, whose straight
    earlier line reaches the floor by itself (original-keys ROME on the rebuild's order 0: exact-match retention
    0.33 -> 0.017 between edits 250 and 300, 95% of what was left, at its collapse). The lines are then split
    at the cliff, and `cliff` holds the step.
    Returns {change_at, slope_before, slope_after (the fitted lines' slopes per edit, series units),
    loss_rate_before, loss_rate_after (the loss rates the rule compares, the later one with the drop at the
    change point), start, noise, excess (the added loss), drop_after (largest fall from the last earlier
    point, in shares of |start|), catastrophic}, or None when the series is too short or starts at 0."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 2 * min_points or len(y) != len(x) or not y[0]:
        return None
    w = np.ones(len(x)) if weights is None else np.asarray(weights, dtype=float)
    if len(w) != len(x) or not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise ValueError("phase_break needs one finite, positive weight per point (e.g. each point's n)")
    w = w / w.mean()
    best = None
    span = min_span * _x_range(x, x_range)
    for s in range(min_points, len(x) - min_points + 1):
        if x[s - 1] - x[0] < span or x[-1] - x[s] < span:
            continue
        left, right = _line(x[:s], y[:s], w[:s]), _line(x[s:], y[s:], w[s:])
        total = left[2] + right[2]
        if best is None or total < best[0] - 1e-12:
            best = (total, s, left, right)
    if best is None:  # no split leaves both sides their span
        return None
    cliff = (share_cliff(x, y, counts, k_noise=k_noise, min_span=min_span, x_range=x_range)
             if counts is not None else None)
    sse, s, (b1, a1, _), (b2, a2, _) = best
    linear_s = s
    if cliff is not None:  # the lines split at the cliff (both sides keep at least one point)
        s = int(np.searchsorted(x, cliff["to"]))
        (b1, a1, e1), (b2, a2, e2) = _line(x[:s], y[:s], w[:s]), _line(x[s:], y[s:], w[s:])
        sse = e1 + e2
    # the points' scatter about the two lines counts as noise too (differences alone underrate it where a
    # series is dense at its start: one edit apart, neighbours barely differ)
    noise = max(series_noise(y, se), float(np.sqrt(sse / max(len(x) - 4, 1))))
    start = float(y[0])
    x_last, x_end = x[s - 1], x[-1]
    level = a1 + b1 * x_last  # the earlier line at the last earlier point
    floor = min_share * abs(level) if min_effect is None else min_effect
    trend = level + min(b1, 0.0) * (x[s:] - x_last)  # a rise is held at its level
    excess = float(np.sum(w[s:] * (trend - y[s:])) / w[s:].sum())
    rate_after = float(level - (a2 + b2 * x_end)) / (x_end - x_last)
    rate_before = -b1
    catastrophic = cliff is not None or (excess >= max(k_noise * noise, floor) and rate_after > 0
                                         and rate_after >= steep * max(rate_before, 0.0))
    drop = max(float(y[s - 1] - y[s:].min()), 0.0) / abs(start)
    out = {"change_at": int(x[s]) if float(x[s]).is_integer() else float(x[s]), "slope_before": b1,
           "slope_after": b2, "loss_rate_before": rate_before, "loss_rate_after": rate_after, "start": start,
           "noise": noise, "excess": excess, "drop_after": drop, "catastrophic": bool(catastrophic)}
    if cliff is not None:
        out["cliff"] = cliff
        out["linear_change_at"] = int(x[linear_s]) if float(x[linear_s]).is_integer() else float(x[linear_s])
    return out


def abrupt_steps(x, y, se=None, *, k_noise: float = 3.0, min_effect: float = 0.0) -> list[dict]:
    """Steps between consecutive points where a series (higher is better) fell abruptly against its own
    steps: the step's fall beyond the median step is at least `k_noise` times the robust spread of the
    series' steps (1.4826 MAD) and at least `k_noise` times the two points' combined sampling SE (`se`), and
    at least `min_effect`. One dict per step: from, to (x), before, after (y), z (fall over the larger of the
    two noises)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(y) < 4:
        return []
    d = np.diff(y)
    med = float(np.median(d))
    spread = 1.4826 * float(np.median(np.abs(d - med)))
    s = np.zeros(len(y)) if se is None else np.nan_to_num(np.asarray(se, dtype=float))
    out = []
    for i, step in enumerate(d):
        fall = med - step
        noise = max(spread, float(np.hypot(s[i], s[i + 1])), 1e-12)
        if fall >= k_noise * noise and -step >= min_effect and step < 0:
            out.append({"from": x[i], "to": x[i + 1], "before": float(y[i]), "after": float(y[i + 1]),
                        "z": fall / noise})
    return out

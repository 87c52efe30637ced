"""Rank correlation with a bootstrap confidence interval, shared by compute (derived tables, tests) and
the dashboard (popularity page). numpy only: no scipy, so the dashboard stays light."""

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
    rho: float
    ci_low: float
    ci_high: float
    n: int


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
    """Spearman's rho with a percentile bootstrap CI over paired resamples (seeded, so reproducible).

    Resamples are ranked all at once (values coded densely, ranks from per-row counts), so a thousand
    resamples of a few hundred pairs take milliseconds; resamples where a side is constant are skipped.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    rho = spearman(x, y)
    n = len(x)
    if n < 3 or np.isnan(rho):
        return Correlation(rho, float("nan"), float("nan"), n)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, (n_boot, n))
    ux, dx = np.unique(x, return_inverse=True)
    uy, dy = np.unique(y, return_inverse=True)
    boots = _rowwise_pearson(_boot_rank_rows(dx, idx, len(ux)), _boot_rank_rows(dy, idx, len(uy)))
    boots = boots[~np.isnan(boots)]
    if len(boots) == 0:
        return Correlation(rho, float("nan"), float("nan"), n)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(boots, [alpha, 1 - alpha])
    return Correlation(rho, float(lo), float(hi), n)


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

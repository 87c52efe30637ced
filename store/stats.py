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


def spearman_ci(x, y, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> Correlation:
    """Spearman's rho with a percentile bootstrap CI over paired resamples (seeded, so reproducible)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    rho = spearman(x, y)
    n = len(x)
    if n < 3 or np.isnan(rho):
        return Correlation(rho, float("nan"), float("nan"), n)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        r = spearman(x[idx], y[idx])
        if not np.isnan(r):
            boots.append(r)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(boots, [alpha, 1 - alpha]) if boots else (float("nan"), float("nan"))
    return Correlation(rho, float(lo), float(hi), n)

"""Confidence intervals shared by the derived tables of every study."""

from __future__ import annotations

import numpy as np

from ..metrics import wilson_ci


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


def _mean_ci(values: list[float]) -> tuple[float, float]:
    """Wilson CI where every value is 0 or 1 (a share), else a percentile bootstrap CI of the mean."""
    from ..stats import bootstrap_mean_ci

    if values and all(v in (0.0, 1.0) for v in values):
        return wilson_ci(int(sum(values)), len(values))
    return bootstrap_mean_ci(values)

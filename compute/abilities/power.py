"""Statistical power of the ability suite's quick mode to detect a drop (issue 19, point 12).

Pure functions of plain numbers (no torch, no store): closed-form normal approximations, with the normal
quantiles from the standard library.

The criterion for choosing a task's quick-mode n:

- accuracy tasks: a two-sided one-sample z-test at alpha 0.05 of the edited model's quick-mode accuracy
  on n items against the unedited model's accuracy p0, taken as known (planned with the unedited model's
  full-mode score, the best estimate of what the quick subset's unedited score is drawn around). The
  alternative is a drop of 0.1: p1 = p0 - 0.1. Power (Chow, Shao & Wang, "Sample Size Calculations in
  Clinical Research", one-sample proportion, with the null SE in the critical value):
      power = Phi((d*sqrt(n) - z*sqrt(p0 q0)) / sqrt(p1 q1)) + Phi((-d*sqrt(n) - z*sqrt(p0 q0)) / sqrt(p1 q1))
  with d = 0.1 and z = Phi^-1(1 - alpha/2); n for a target power 1 - beta (the far tail dropped):
      n = ((z*sqrt(p0 q0) + z_beta*sqrt(p1 q1)) / d)^2.
- perplexity: the score is exp(mean per-token log-loss); with windows of equal length, log perplexity is
  the mean over windows of each window's mean log-loss. The criterion is a 10% rise in perplexity, a
  shift of ln(1.1) = 0.0953 nats in that mean, under a two-sided one-sample z-test with the per-window
  standard deviation sigma known: power = Phi(s*sqrt(n)/sigma - z) + Phi(-s*sqrt(n)/sigma - z).
  On the unedited default model sigma is 0.534 nats over lm_perplexity's 300 windows (measured directly,
  2026-12-05); the stored full-mode CI implies 0.529 (`log_loss_sd_from_ci`). Either way about 250
  windows give 80% power.

`two_proportion_power` gives the more conservative reading, the edited quick score and the unedited score
as two independent samples (pooled two-proportion z-test); a run's own comparison is paired (the same
items at edit 0 and at each checkpoint), which needs fewer items than either when edits mostly break
answers rather than shuffle them.
"""

from __future__ import annotations

import math
from statistics import NormalDist

ALPHA = 0.05
TARGET_POWER = 0.8
DROP = 0.1  # the accuracy drop quick mode must detect
PERPLEXITY_RISE = 1.1  # the perplexity rise quick mode must detect (10%)

_NORMAL = NormalDist()


def _z(alpha: float) -> float:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    return _NORMAL.inv_cdf(1 - alpha / 2)


def _check_drop(p0: float, drop: float) -> float:
    if not 0 < p0 < 1:
        raise ValueError(f"the unedited accuracy p0 must lie in (0, 1), got {p0}")
    if drop <= 0:
        raise ValueError(f"the drop must be positive, got {drop}")
    p1 = p0 - drop
    if p1 <= 0:
        raise ValueError(f"a drop of {drop} from {p0} leaves no accuracy: pick a smaller drop")
    return p1


def proportion_power(p0: float, n: int, drop: float = DROP, alpha: float = ALPHA) -> float:
    """Power of the two-sided one-sample z-test (H0: accuracy = p0) on n items when the accuracy is
    p0 - drop."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    p1 = _check_drop(p0, drop)
    z, se0, se1 = _z(alpha), math.sqrt(p0 * (1 - p0)), math.sqrt(p1 * (1 - p1))
    shift = drop * math.sqrt(n)
    return _NORMAL.cdf((shift - z * se0) / se1) + _NORMAL.cdf((-shift - z * se0) / se1)


def proportion_n(p0: float, drop: float = DROP, power: float = TARGET_POWER, alpha: float = ALPHA) -> int:
    """Items the one-sample z-test needs to detect accuracy p0 - drop with the given power."""
    if not 0 < power < 1:
        raise ValueError(f"power must lie in (0, 1), got {power}")
    p1 = _check_drop(p0, drop)
    root = (_z(alpha) * math.sqrt(p0 * (1 - p0)) + _NORMAL.inv_cdf(power) * math.sqrt(p1 * (1 - p1))) / drop
    return math.ceil(root * root - 1e-9)  # 1e-9: a root that is an integer up to rounding stays that integer


def two_proportion_power(p0: float, n0: int, n1: int, drop: float = DROP, alpha: float = ALPHA) -> float:
    """Power of the two-sided pooled two-proportion z-test between an unedited sample (n0 items, accuracy p0)
    and an independent edited sample (n1 items, accuracy p0 - drop)."""
    if n0 < 1 or n1 < 1:
        raise ValueError(f"both samples need at least one item, got {n0} and {n1}")
    p1 = _check_drop(p0, drop)
    pooled = (n0 * p0 + n1 * p1) / (n0 + n1)
    se_null = math.sqrt(pooled * (1 - pooled) * (1 / n0 + 1 / n1))
    se_alt = math.sqrt(p0 * (1 - p0) / n0 + p1 * (1 - p1) / n1)
    z = _z(alpha)
    return _NORMAL.cdf((drop - z * se_null) / se_alt) + _NORMAL.cdf((-drop - z * se_null) / se_alt)


def mean_power(sd: float, n: int, shift: float, alpha: float = ALPHA) -> float:
    """Power of the two-sided one-sample z-test on a mean of n values with known SD `sd` against a true
    shift of `shift`."""
    if sd <= 0 or shift == 0 or n < 1:
        raise ValueError(f"need sd > 0, a non-zero shift and n >= 1; got sd={sd}, shift={shift}, n={n}")
    effect = abs(shift) * math.sqrt(n) / sd
    z = _z(alpha)
    return _NORMAL.cdf(effect - z) + _NORMAL.cdf(-effect - z)


def mean_n(sd: float, shift: float, power: float = TARGET_POWER, alpha: float = ALPHA) -> int:
    """Values the one-sample z-test on a mean needs to detect `shift` with the given power."""
    if sd <= 0 or shift == 0 or not 0 < power < 1:
        raise ValueError(f"need sd > 0, a non-zero shift and power in (0, 1); got {sd}, {shift}, {power}")
    root = (_z(alpha) + _NORMAL.inv_cdf(power)) * sd / abs(shift)
    return math.ceil(root * root - 1e-9)


def perplexity_shift(rise: float = PERPLEXITY_RISE) -> float:
    """The shift in mean log-loss (nats per token) that multiplies perplexity by `rise`."""
    if rise <= 0 or rise == 1:
        raise ValueError(f"a perplexity rise is a factor > 0 other than 1, got {rise}")
    return math.log(rise)


def log_loss_sd_from_ci(ci_low: float, ci_high: float, n: int) -> float:
    """The per-window SD of mean log-loss implied by a perplexity's 95% CI over n windows: the CI's width
    on the log scale is 2 * 1.96 * sd / sqrt(n) (windows of equal length, as lm_perplexity's are)."""
    if not 0 < ci_low < ci_high or n < 2:
        raise ValueError(f"need 0 < ci_low < ci_high and n >= 2; got [{ci_low}, {ci_high}], n={n}")
    return math.log(ci_high / ci_low) / (2 * _z(0.05)) * math.sqrt(n)


def quick_power(metric: str, unedited: float, n: int, sd: float | None = None) -> float:
    """Power of quick mode's n for a task whose unedited score is `unedited`: a 0.1 accuracy drop
    (metric "accuracy") or a 10% perplexity rise (metric "perplexity", which needs the per-window SD of
    mean log-loss `sd`)."""
    if metric == "accuracy":
        return proportion_power(unedited, n)
    if metric == "perplexity":
        if sd is None:
            raise ValueError("a perplexity task's power needs the per-window SD of its log-loss (sd)")
        return mean_power(sd, n, perplexity_shift())
    raise ValueError(f"unknown metric {metric!r}: use 'accuracy' or 'perplexity'")


def quick_n_needed(metric: str, unedited: float, sd: float | None = None) -> int:
    """Items quick mode needs for 80% power on the criterion of `quick_power`."""
    if metric == "accuracy":
        return proportion_n(unedited)
    if metric == "perplexity":
        if sd is None:
            raise ValueError("a perplexity task's n needs the per-window SD of its log-loss (sd)")
        return mean_n(sd, perplexity_shift())
    raise ValueError(f"unknown metric {metric!r}: use 'accuracy' or 'perplexity'")


def proportion_power_exact(p0: float, n: int, drop: float = DROP, alpha: float = ALPHA) -> float:
    """The same test's power computed exactly: the binomial probability, at accuracy p0 - drop, of a count
    k whose z-statistic |k/n - p0| / sqrt(p0 q0 / n) exceeds the critical value. Near p0 = 1 the normal
    approximation is off by up to about 0.1 and the exact power is not monotone in n (counts are whole)."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    p1 = _check_drop(p0, drop)
    bound = _z(alpha) * math.sqrt(p0 * (1 - p0) / n)
    log_p, log_q = math.log(p1), math.log1p(-p1)
    total = 0.0
    for k in range(n + 1):
        if abs(k / n - p0) > bound:
            total += math.exp(math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * log_p
                              + (n - k) * log_q)
    return min(total, 1.0)


def power_rows(unedited: list[dict], quick_n: dict[str, int], old_quick_n: dict[str, int] | None = None
               ) -> list[dict]:
    """The quick-mode power table from the unedited model's full-mode rows (each: task, metric, score, n,
    ci_low, ci_high, as in the store's `abilities` table): per task its unedited score, items (the full
    mode's n), quick n, the power at it (closed form, and exact for accuracy), the n needed for 80% power,
    and whether quick mode reaches 80% (or uses every item). A perplexity task's per-window SD comes from
    its full-mode CI (`log_loss_sd_from_ci`). `old_quick_n` adds the power at an earlier quick n."""
    rows = []
    for r in unedited:
        task, metric, p0, items = r["task"], r["metric"], float(r["score"]), int(r["n"])
        if task not in quick_n:
            continue
        sd = log_loss_sd_from_ci(r["ci_low"], r["ci_high"], items) if metric == "perplexity" else None
        n = min(quick_n[task], items)
        row = {"task": task, "metric": metric, "unedited": p0, "items": items, "quick_n": n, "sd": sd,
               "power": quick_power(metric, p0, n, sd),
               "power_exact": proportion_power_exact(p0, n) if metric == "accuracy" else None,
               "n_needed": quick_n_needed(metric, p0, sd)}
        row["reaches"] = min(row["power"], row["power_exact"] or 1.0) >= TARGET_POWER
        if old_quick_n and task in old_quick_n:
            old = min(old_quick_n[task], items)
            row["old_quick_n"], row["old_power"] = old, quick_power(metric, p0, old, sd)
        rows.append(row)
    return rows

"""Metric metadata, rephrase types and confidence intervals, declared once for compute, store and dashboard.

`METRICS` says for each metric name stored in `measurements.metric` (and for the weight-drift columns)
what a researcher calls it, which direction is good, its unit, its exact definition (design.md
section 6) and its version. Bump a metric's version whenever its computation changes, so old and new
numbers are never compared unnoticed. NLL(o|p) below is the token-averaged negative log-likelihood of
object o after prompt p: (1/m) sum_j -log P(t_j | p, t_<j), in nats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np


@dataclass(frozen=True)
class MetricInfo:
    """What one metric means: shown as `label`, better when higher if `higher_is_better`."""

    name: str
    label: str
    higher_is_better: bool
    unit: str            # "probability", "nats", "rank", "share" (0..1), "bits", "ratio", "norm", "difference", "count"
    description: str
    version: str


def _metric(name, label, higher_is_better, unit, description, version="1") -> tuple[str, MetricInfo]:
    return name, MetricInfo(name, label, higher_is_better, unit, description, version)


METRICS: dict[str, MetricInfo] = dict(
    [
        _metric("p_true", "P(true object)", True, "probability",
                "Probability of the true object after the prompt, exp(-NLL(true|p)) with NLL token-averaged."),
        _metric("p_new", "P(new object)", True, "probability",
                "Probability of the new (edited-in) object after the prompt, exp(-NLL(new|p)) with NLL "
                "token-averaged."),
        _metric("nll_true", "NLL(true object)", False, "nats",
                "Token-averaged NLL of the true object after the prompt: "
                "NLL(o|p) = (1/m) sum_j -log P(t_j | p, t_<j)."),
        _metric("nll_new", "NLL(new object)", False, "nats",
                "Token-averaged NLL of the new object after the prompt: "
                "NLL(o|p) = (1/m) sum_j -log P(t_j | p, t_<j)."),
        _metric("rank_true", "Rank of true object", False, "rank",
                "Rank of the true object's first token among all next tokens after the prompt (1 = top)."),
        _metric("recall", "Recall (greedy)", True, "share",
                "Greedy generation after the prompt contains the true object or an alias (case-insensitive)."),
        _metric("es", "Efficacy score (ES)", True, "share",
                "Efficacy score ES: share of edit prompts with NLL(new|p) < NLL(true|p). "
                "(ROME/MEMIT CounterFact protocol.)"),
        _metric("ps", "Paraphrase score (PS)", True, "share",
                "Paraphrase score PS: share of paraphrase prompts with NLL(new|p) < NLL(true|p). "
                "(ROME/MEMIT CounterFact protocol.)"),
        _metric("ns", "Neighbourhood score (NS)", True, "share",
                "Neighbourhood score NS: share of neighbourhood prompts with NLL(true|p) < NLL(new|p). "
                "(ROME/MEMIT CounterFact protocol.)"),
        _metric("score", "Score (S)", True, "share",
                "Score S = harmonic mean of ES, PS, NS. (ROME/MEMIT CounterFact protocol.)"),
        _metric("magnitude", "Magnitude", True, "difference",
                "Magnitude: exp(-NLL(new)) - exp(-NLL(true)). (ROME/MEMIT CounterFact protocol.)"),
        _metric("acc", "Accuracy (acc)", True, "share",
                "Greedy generation of N new tokens (N = 30 in the study); acc = the new object or an alias "
                "appears (case-insensitive)."),
        _metric("rev", "Reversion (rev)", False, "share",
                "Greedy generation of N new tokens (N = 30 in the study); rev = the true object or an alias "
                "appears (case-insensitive)."),
        _metric("exact_match", "Exact-match accuracy", True, "share",
                "Exact-match accuracy: every target token is the argmax under teacher forcing."),
        _metric("exact_match_new", "Exact match of the new object", True, "share",
                "Every token of the edit's new object is the argmax under teacher forcing: study B's "
                "\"the edit holds\" (sequential runs)."),
        _metric("retention_em", "Retained edits (exact match)", True, "share",
                "Share of the edits made so far whose new object is still the teacher-forced argmax at every "
                "token (study B's definition; the headline, with ES-based retention beside it)."),
        _metric("forgotten_em", "Forgotten edits (exact match)", False, "share",
                "Share of the edits that held by exact match at their first checkpoint and no longer do."),
        _metric("n_held_em", "Edits that held by exact match when made (n)", True, "count",
                "Number of edits so far that held by exact match at their first checkpoint: the denominator "
                "of the share forgotten by exact match."),
        _metric("update_norm", "Update norm ||dW||_F", False, "norm",
                "Frobenius norm of one edit's (or batch's) update over every matrix it changed."),
        _metric("update_w0", "||W0||_F of the updated matrices", False, "norm",
                "Frobenius norm, before the run, of the matrices an update changed: the scale of update_norm."),
        _metric("fluency", "Fluency (n-gram entropy)", True, "bits",
                "Fluency: n-gram entropy of free generations, (2/3)·H2 + (4/3)·H3 averaged "
                "(bits; ROME's GE/100)."),
        _metric("forgotten", "Forgotten edits", False, "share",
                "Forgetting (study B): an earlier edit is forgotten when it held right after it was made and "
                "no longer holds at a later checkpoint; report the share of held edits forgotten, by edit count."),
        _metric("retention", "Retained edits", True, "share",
                "Share of the edits made so far that still hold at this checkpoint, by edit count "
                "(the complement view of forgetting, study B)."),
        _metric("panel_recall", "Recall on the unedited fact panel", True, "share",
                "Share of a fixed panel of facts not being edited whose true object greedy generation still "
                "contains (or an alias), by edit count: collateral damage to stored knowledge."),
        _metric("n", "Items measured (n)", True, "count",
                "Number of items a run-level value of a sequential run averages over (edits, panel facts, "
                "prompts), stored beside it so every curve can carry its n and a Wilson interval."),
        _metric("n_held", "Edits that held when made (n)", True, "count",
                "Number of edits so far that held at their first checkpoint: the denominator of the share "
                "forgotten."),
        _metric("fro_delta", "||W - W0||_F", False, "norm",
                "Weight drift: ||W - W0||_F per edited matrix."),
        _metric("rel_change", "Relative weight change |dW/W|", False, "ratio",
                "Weight drift: relative change |dW/W| per edited matrix, measured as ||W - W0||_F / ||W0||_F "
                "(an entry-wise mean of |dW_ij / W_ij| is dominated by near-zero weights)."),
        _metric("cond_number", "Condition number of W", False, "ratio",
                "Weight drift: condition number of W per edited matrix."),
    ]
)

# study A's taxonomy, in the order of design.md section 5
REPHRASE_TYPES: tuple[str, ...] = (
    "plain",
    "paraphrase",
    "cloze",
    "context",
    "context_cloze",
    "context_pronoun",
    "noisy_context",
    "noisy_context_cloze",
    "noisy_context_pronoun",
    "dialogue",
    "dialogue_cloze",
    "dialogue_pronoun",
    "noisy_dialogue",
    "noisy_dialogue_cloze",
    "noisy_dialogue_pronoun",
    "doubt",
)

# probes also hold neighbourhood prompts (other subjects), which are not a rephrasing of the edit
PROBE_TYPES: tuple[str, ...] = REPHRASE_TYPES + ("neighbourhood",)


def metric_info(name: str) -> MetricInfo:
    """The metadata of metric `name`; ValueError listing the known names when it is unknown."""
    if name not in METRICS:
        raise ValueError(f"Unknown metric {name!r}; known metrics: {', '.join(sorted(METRICS))}.")
    return METRICS[name]


def wilson_ci(k: float, n: float, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for k successes out of n trials (95% for z=1.96).

    n = 0 carries no information and gives the whole range (0.0, 1.0).
    """
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"wilson_ci needs 0 <= k <= n; got k={k}, n={n}.")
    if z <= 0:
        raise ValueError(f"wilson_ci needs z > 0; got z={z}.")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # the bounds are exactly 0 / 1 at the extremes; set them so rounding cannot leave 1e-17
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    stat: Callable[[np.ndarray], float] = np.mean,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of `stat` over `values` (resampled with replacement, seeded)."""
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"bootstrap_ci needs a non-empty 1-D sequence of numbers; got shape {arr.shape}.")
    if n_boot < 1:
        raise ValueError(f"bootstrap_ci needs n_boot >= 1; got {n_boot}.")
    if not 0 < level < 1:
        raise ValueError(f"bootstrap_ci needs 0 < level < 1; got {level}.")
    rng = np.random.default_rng(seed)
    n = arr.size
    # resample in chunks of about a million values so a long array never needs n_boot * n memory
    chunk = max(1, 1_000_000 // n)
    draws = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))  # (chunk, n)
        draws[start:stop] = [stat(sample) for sample in arr[idx]]
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(draws, [tail, 100 - tail])
    return float(lo), float(hi)

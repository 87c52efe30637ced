"""store.stats: the Spearman bootstrap, the within-stratum correlation and the rules over a run's series,
on data with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from store.metrics import wilson_ci
from store.stats import (
    abrupt_steps,
    difference_ci,
    permutation_p,
    phase_break,
    robust_z,
    share_cliff,
    spearman,
    spearman_ci,
    stratified_spearman,
)


def test_a_rare_binary_side_gives_an_undefined_interval_not_one_that_excludes_rho():
    # one success in 240 (ROME plain rev on the shipped store): ~37% of resamples lose it and have no rho
    x = np.linspace(0, 5, 240)
    y = np.zeros(240)
    y[100] = 1.0
    c = spearman_ci(x, y, seed=0)
    assert not math.isnan(c.rho) and c.n == 240
    assert math.isnan(c.ci_low) and math.isnan(c.ci_high)
    assert 0.3 < c.undefined_share < 0.45 and "constant" in c.note
    assert 0.3 < c.p_value < 1.0  # the one success sits mid-range: nothing to see


def test_an_interval_when_every_resample_has_rho_contains_it_and_the_p_value_sees_a_real_effect():
    rng = np.random.default_rng(4)
    x = rng.normal(size=150)
    y = (x + rng.normal(size=150) > 0).astype(float)  # binary but balanced: no constant resample
    c = spearman_ci(x, y, seed=1)
    assert c.undefined_share == 0.0 and c.ci_low < c.rho < c.ci_high and c.note == ""
    assert c.p_value < 0.01
    noise = spearman_ci(x, rng.normal(size=150), seed=1)
    assert noise.ci_low < 0 < noise.ci_high and noise.p_value > 0.05


def test_undefined_rho_is_undefined_everywhere():
    c = spearman_ci([1, 2, 3, 4], [5, 5, 5, 5])
    assert all(math.isnan(v) for v in (c.rho, c.ci_low, c.ci_high)) and "undefined" in c.note


def test_permutation_p_is_never_zero_and_small_for_a_perfect_order():
    x = np.arange(30.0)
    assert permutation_p(x, x, spearman(x, x), n_perm=200) == pytest.approx(1 / 201)


def test_within_strata_removes_a_correlation_made_by_pooling_strata():
    rng = np.random.default_rng(0)
    xs, ys, ss = [], [], []
    for k in range(8):  # strata differ in both x and y; within each, x and y are independent
        xs += list(rng.normal(loc=k, size=40))
        ys += list(rng.normal(loc=k, size=40))
        ss += [f"r{k}"] * 40
    assert spearman(xs, ys) > 0.7
    w = stratified_spearman(xs, ys, ss)
    assert w.ci_low < 0 < w.ci_high and abs(w.rho) < 0.15 and w.strata == 8 and w.n == 320


def test_within_strata_keeps_a_real_within_correlation_and_counts_strata_left_out():
    rng = np.random.default_rng(1)
    xs, ys, ss = [], [], []
    for k in range(5):
        x = rng.normal(size=60)
        xs += list(x)
        ys += list(x + rng.normal(size=60) - 3 * k)  # within: positive; pooled over offsets: diluted
        ss += [k] * 60
    xs += [1.0, 2.0, 3.0]  # a stratum of three pairs: too few for a z
    ys += [1.0, 2.0, 3.0]
    ss += ["tiny"] * 3
    w = stratified_spearman(xs, ys, ss)
    assert w.ci_low > 0.5 and w.strata == 5 and w.strata_left_out == 1 and w.n == 300
    with pytest.raises(ValueError, match="one stratum per pair"):
        stratified_spearman([1, 2], [1, 2], ["a"])


def _noisy(values, sd, seed):
    return list(np.asarray(values) + np.random.default_rng(seed).normal(scale=sd, size=len(values)))


def test_phase_break_finds_a_known_break_in_a_noisy_series_at_its_place():
    x = list(range(0, 400, 10))
    truth = [0.9 - 0.0002 * c if c < 250 else 0.85 - 0.004 * (c - 250) for c in x]  # break at 250
    found = phase_break(x, _noisy(truth, 0.01, 0))
    assert found["catastrophic"] and 240 <= found["change_at"] <= 270
    assert found["excess"] > 3 * found["noise"]


def test_phase_break_finds_a_cliff_followed_by_a_floor():
    x = list(range(0, 400, 50))
    y = [0.97, 0.96, 0.97, 0.95, 0.93, 0.27, 0.26, 0.27]  # an ability at 0.95, then at chance
    found = phase_break(x, y, se=[0.04] * len(y))
    assert found["catastrophic"] and found["change_at"] == 250


def test_phase_break_sees_no_phase_in_a_steady_fall_or_noise_or_an_early_fall():
    x = list(range(0, 400, 10))
    assert not phase_break(x, _noisy([1.0 - 0.002 * c for c in x], 0.01, 1))["catastrophic"]
    assert not phase_break(x, _noisy([0.6] * len(x), 0.05, 2))["catastrophic"]
    early = [max(0.3, 1.0 - 0.01 * c) for c in x]  # fast early loss, then a floor: not catastrophic
    assert not phase_break(x, _noisy(early, 0.01, 3))["catastrophic"]
    assert phase_break(x[:5], [1.0] * 5) is None


def test_a_phase_spans_a_tenth_of_the_runs_planned_length_not_of_the_part_it_reached():
    # the dense first checkpoints of a run interrupted at 50 edits: flat to edit 8, a cliff at 9, then a slide
    x = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 20, 30, 40, 50]
    y = [1.0, 1.0, 0.99, 1.0, 0.99, 1.0, 0.99, 1.0, 0.99, 0.4, 0.38, 0.35, 0.3, 0.28, 0.25]
    assert phase_break(x, y)["catastrophic"]  # its own range: a tenth of 50 edits makes edits 1-9 a phase
    assert phase_break(x, y, x_range=500) is None  # planned for 500: no side can span 50 edits yet
    assert phase_break(x, y, x_range=40) == phase_break(x, y)  # a shorter plan than the range reached: its own
    n = [200] * len(x)
    assert share_cliff(x, y, n)["to"] == 9 and share_cliff(x, y, n, x_range=500) is None


def test_a_small_break_inside_the_series_own_noise_is_not_a_phase():
    x = list(range(0, 400, 10))
    truth = [0.8 if c < 250 else 0.76 for c in x]  # a 0.04 step in noise of sd 0.05
    assert not phase_break(x, _noisy(truth, 0.05, 5))["catastrophic"]


def test_abrupt_steps_flags_one_jump_against_the_series_own_steps():
    x = list(range(0, 500, 50))
    y = _noisy([0.8] * 5 + [0.3] * 5, 0.02, 6)
    steps = abrupt_steps(x, y, se=[0.03] * len(y))
    assert [(s["from"], s["to"]) for s in steps] == [(200, 250)]
    assert abrupt_steps(x, _noisy([0.8 - 0.01 * i for i in range(10)], 0.02, 7), se=[0.03] * 10) == []


def test_robust_z_singles_out_one_huge_value_among_many():
    rng = np.random.default_rng(2)
    norms = np.exp(rng.normal(loc=3.0, scale=0.3, size=200))
    norms[111] = 240.0
    z = robust_z(np.log(norms))
    assert np.flatnonzero(z > 3.5).tolist() == [111]
    assert robust_z([1.0, 1.0]).tolist() == [0.0, 0.0]


def test_dense_first_checkpoints_do_not_make_a_phase_of_their_own():
    """The rebuild's ROME order-0 exact-match retention: checkpoints at edits 1-10, then every 50. Split at 4
    points, edits 1-3 held all and the rest declined steadily: a "catastrophic phase from edit 4". A phase must
    span a tenth of the run, so the steady decline is one gradual phase."""
    x = list(range(0, 11)) + list(range(50, 501, 50))
    y = [1.0, 1.0, 1.0, 1.0, 0.75, 0.8, 0.833, 0.857, 0.875, 0.889, 0.9,
         0.72, 0.66, 0.553, 0.435, 0.424, 0.327, 0.28, 0.278, 0.26, 0.252]
    se = [0.0, 0.202, 0.168, 0.143, 0.167, 0.15, 0.136, 0.124, 0.114, 0.106, 0.099,
          0.062, 0.047, 0.04, 0.035, 0.031, 0.027, 0.024, 0.022, 0.021, 0.019]
    old = phase_break(x, y, se, min_span=0.0)  # the old rule's split
    assert old["change_at"] == 4 and old["catastrophic"]
    found = phase_break(x, y, se)
    assert found["change_at"] >= 50 and not found["catastrophic"]
    # a real cliff on the same checkpoints is still found
    cliff = [1.0] * 11 + [0.95, 0.94, 0.93, 0.92, 0.91, 0.3, 0.28, 0.27, 0.26, 0.25]
    assert phase_break(x, cliff, se)["catastrophic"] and phase_break(x, cliff, se)["change_at"] == 300


def test_a_gentle_slide_after_a_flat_start_is_no_catastrophic_phase():
    """AlphaEdit b10's ES retention on the rebuild's order 0: 1.0 to edit 50, then 0.94 ... 0.90 by 250. The
    later side loses faster than the flat start (any loss does), beyond its noise, yet only a tenth of what
    was left: the old 5%-of-the-start floor called it catastrophic. A phase must cost a fifth of its level."""
    x = [0, 10, 50, 100, 150, 200, 250, 260]
    y = [1.0, 1.0, 1.0, 0.94, 0.953, 0.915, 0.9, 0.9]
    assert phase_break(x, y, min_share=0.05)["catastrophic"]  # the old floor
    found = phase_break(x, y)
    assert not found["catastrophic"] and found["excess"] < 0.2
    # the same start with a cliff to a fifth of the level below is one
    assert phase_break(x, [1.0, 1.0, 1.0, 0.7, 0.6, 0.55, 0.5, 0.5])["catastrophic"]


def test_a_share_of_the_first_edits_weighs_what_those_edits_weigh():
    """The rebuild's r-ROME order 2, exact-match retention: its first edit did not hold (a share of 0 over one
    edit), so unweighted lines through the dense start rose, and the slowing loss after edit 100 read as a
    catastrophic phase. Weighted by each share's n (and a rise held at its level) the fall slows: gradual."""
    x = list(range(0, 11)) + list(range(50, 501, 50))
    y = [1.0, 0.0, 0.5, 0.667, 0.75, 0.8, 0.833, 0.857, 0.875, 0.778, 0.8,
         0.7, 0.49, 0.507, 0.46, 0.412, 0.343, 0.349, 0.302, 0.273, 0.258]
    n = [1] + list(range(1, 11)) + list(range(50, 501, 50))
    weighted = phase_break(x, y, weights=n)
    assert not weighted["catastrophic"] and weighted["slope_before"] < 0 and weighted["noise"] < 0.1
    assert phase_break(x, y)["slope_before"] > 0  # the tiny shares tilt an unweighted line upwards
    # a real cliff on the same checkpoints and weights is still one
    cliff = y[:11] + [0.7, 0.69, 0.69, 0.68, 0.68, 0.2, 0.18, 0.17, 0.16, 0.15]
    found = phase_break(x, cliff, weights=n)
    assert found["catastrophic"] and found["change_at"] == 300
    with pytest.raises(ValueError, match="positive weight"):
        phase_break(x, y, weights=[0] * len(x))


def test_an_early_rise_is_not_a_trend_the_later_points_are_measured_against():
    """Dialogue memory under original-keys ROME on the rebuild's order 1: 0.78 -> 0.83 over 100 edits, then a
    slide to 0.72 by edit 400. Extrapolating the rise made the slide a loss of 0.18 "beyond the trend": a
    catastrophic phase from edit 150. Held at its level, the rise leaves a gradual slide; a cliff after the
    same rise is still found."""
    x = list(range(0, 401, 50))
    y = [0.778, 0.827, 0.833, 0.809, 0.79, 0.759, 0.741, 0.716, 0.722]
    se = [0.032] * len(y)
    assert not phase_break(x, y, se)["catastrophic"]
    cliff = [0.778, 0.827, 0.833, 0.83, 0.3, 0.28, 0.27, 0.27, 0.26]
    assert phase_break(x, cliff, se)["catastrophic"]


def test_a_cliff_to_the_floor_after_a_steep_decline_is_a_catastrophic_phase():
    """Original-keys ROME on the rebuild's order 0: exact-match retention falls steadily (1.0 -> 0.33 by edit
    250), then loses 95% of what was left by edit 300, at the model's collapse. The straight earlier line reaches
    the floor by itself, so the two-line rule sees no phase; the share's cliff is one. Halvings within sampling
    noise, a steady decline and a drop in the run's first tenth are not."""
    x = list(range(0, 11)) + [50, 100, 150, 200, 250, 300, 350, 400, 420]
    y = [1.0, 1.0, 1.0, 1.0, 0.75, 0.8, 0.833, 0.857, 0.875, 0.889, 0.9,
         0.72, 0.51, 0.4, 0.29, 0.328, 0.017, 0.017, 0.02, 0.021]
    n = [1] + x[1:]
    assert not phase_break(x, y, weights=n)["catastrophic"]  # the two-line rule alone
    found = phase_break(x, y, weights=n, counts=n)
    assert found["catastrophic"] and found["change_at"] == 300 and found["cliff"]["from"] == 250
    assert found["cliff"]["loss"] > 0.9 and found["cliff"]["z"] > 3
    assert share_cliff(x, y, n)["to"] == 300
    # a panel of 49 facts going 10 -> 5 loses half, but within its sampling noise (z about 1.4)
    assert share_cliff([0, 100, 200, 300, 400], [0.5, 0.4, 0.3, 0.204, 0.102], [49] * 5) is None
    steady = [1.0 - 0.9 * c / 420 for c in x]
    assert share_cliff(x, steady, n) is None and not phase_break(x, steady, weights=n, counts=n)["catastrophic"]
    early = y[:8] + [0.125, 0.111, 0.2] + [0.5, 0.56, 0.41, 0.4, 0.33, 0.28, 0.25, 0.24, 0.23]  # order 1's edit 8
    assert share_cliff(x, early, n) is None


def test_the_difference_of_two_proportions_is_newcombes_interval_and_tighter_than_non_overlap():
    # Newcombe (1998), example (a): 56/70 - 48/80 = 0.200, hybrid score interval (method 10) 0.0524 to 0.3339
    lo, hi = difference_ci(56 / 70, *wilson_ci(56, 70), 48 / 80, *wilson_ci(48, 80))
    assert (round(lo, 4), round(hi, 4)) == (0.0524, 0.3339)
    # the rebuild's MEMIT and AlphaEdit panels, order 1 at 500 edits: 27 and 47 of 200 recalled. The two Wilson
    # intervals overlap ([0.09, 0.19] against [0.18, 0.30]), yet the difference's interval lies below 0
    a, b = wilson_ci(27, 200), wilson_ci(47, 200)
    assert a[1] > b[0]
    lo, hi = difference_ci(27 / 200, *a, 47 / 200, *b)
    assert hi < 0 and (lo, hi) == pytest.approx((-0.175, -0.024), abs=0.001)
    # a difference with itself: symmetric around 0, each side the two half-widths in quadrature
    lo, hi = difference_ci(0.5, 0.4, 0.6, 0.5, 0.4, 0.6)
    assert (lo, hi) == pytest.approx((-math.hypot(0.1, 0.1), math.hypot(0.1, 0.1)))

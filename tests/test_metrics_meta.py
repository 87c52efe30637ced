"""Tests of store.metrics: metric metadata, rephrase types and confidence intervals."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from store.metrics import METRICS, PROBE_TYPES, REPHRASE_TYPES, MetricInfo, bootstrap_ci, metric_info, wilson_ci

REQUIRED = ("p_true", "p_new", "nll_true", "nll_new", "rank_true", "recall", "es", "ps", "ns", "magnitude",
            "acc", "rev", "exact_match", "fluency", "forgotten", "retention", "panel_recall")


def test_metrics_cover_every_required_name():
    assert set(REQUIRED) <= set(METRICS)
    assert all(isinstance(info, MetricInfo) for info in METRICS.values())


def test_metric_keys_match_names_and_infos_are_frozen():
    assert all(name == info.name for name, info in METRICS.items())
    with pytest.raises(dataclasses.FrozenInstanceError):
        METRICS["es"].label = "changed"


def test_labels_are_the_ones_researchers_use_and_unique():
    assert METRICS["es"].label == "Efficacy score (ES)"
    assert METRICS["p_true"].label == "P(true object)"
    assert METRICS["ns"].label == "Neighbourhood score (NS)"
    labels = [info.label for info in METRICS.values()]
    assert len(labels) == len(set(labels))


def test_descriptions_follow_the_design_definitions():
    assert "share of edit prompts with NLL(new|p) < NLL(true|p)" in METRICS["es"].description
    assert "paraphrase prompts with NLL(new|p) < NLL(true|p)" in METRICS["ps"].description
    assert "neighbourhood prompts with NLL(true|p) < NLL(new|p)" in METRICS["ns"].description
    assert "exp(-NLL(new)) - exp(-NLL(true))" in METRICS["magnitude"].description
    assert "(2/3)·H2 + (4/3)·H3" in METRICS["fluency"].description
    assert "every target token is the argmax under teacher forcing" in METRICS["exact_match"].description


def test_every_metric_has_description_unit_and_version():
    units = {"probability", "nats", "rank", "share", "bits", "ratio", "norm", "difference", "count"}
    for info in METRICS.values():
        assert info.description.rstrip(")").endswith(".") and len(info.description) > 30, info.name
        assert info.unit in units, info.name
        assert info.version == "1", info.name


def test_direction_of_each_metric():
    lower_better = {"nll_true", "nll_new", "rank_true", "rev", "forgotten"}
    for name in REQUIRED:
        assert METRICS[name].higher_is_better is (name not in lower_better), name


def test_metric_info_names_the_known_metrics_for_a_typo():
    assert metric_info("es") is METRICS["es"]
    with pytest.raises(ValueError, match="Unknown metric 'efficacy'.*es"):
        metric_info("efficacy")


def test_rephrase_types_in_design_order():
    assert len(REPHRASE_TYPES) == 16 == len(set(REPHRASE_TYPES))
    assert REPHRASE_TYPES[:3] == ("plain", "paraphrase", "cloze")
    assert REPHRASE_TYPES[9:12] == ("dialogue", "dialogue_cloze", "dialogue_pronoun")
    assert REPHRASE_TYPES[-1] == "doubt"
    assert PROBE_TYPES == REPHRASE_TYPES + ("neighbourhood",)


def test_rephrase_types_pair_each_setting_with_cloze_and_pronoun():
    for setting in ("context", "noisy_context", "dialogue", "noisy_dialogue"):
        start = REPHRASE_TYPES.index(setting)
        assert REPHRASE_TYPES[start:start + 3] == (setting, f"{setting}_cloze", f"{setting}_pronoun")


# confidence intervals ---------------------------------------------------------------------------------

def test_wilson_zero_successes_has_lower_bound_zero():
    lo, hi = wilson_ci(0, 10)
    assert lo == 0.0
    assert hi == pytest.approx(0.2775, abs=1e-4)


def test_wilson_half_is_symmetric_around_one_half():
    lo, hi = wilson_ci(5, 10)
    assert lo + hi == pytest.approx(1.0)
    assert (lo, hi) == pytest.approx((0.2366, 0.7634), abs=1e-4)


def test_wilson_all_successes_has_upper_bound_one():
    lo, hi = wilson_ci(10, 10)
    assert hi == 1.0 and lo == pytest.approx(1 - 0.2775, abs=1e-4)


def test_wilson_narrows_with_more_trials_and_widens_with_z():
    small, large = wilson_ci(3, 10), wilson_ci(300, 1000)
    assert large[1] - large[0] < small[1] - small[0]
    assert large[0] < 0.3 < large[1]
    assert wilson_ci(3, 10, z=2.58)[1] > small[1]


def test_wilson_validates_its_arguments():
    assert wilson_ci(0, 0) == (0.0, 1.0)
    for k, n in ((11, 10), (-1, 10), (0, -1)):
        with pytest.raises(ValueError, match="0 <= k <= n"):
            wilson_ci(k, n)


def test_bootstrap_of_a_constant_is_that_constant():
    assert bootstrap_ci([0.75] * 50) == (0.75, 0.75)
    assert bootstrap_ci(np.full(10, 3.0), stat=np.median) == (3.0, 3.0)


def test_bootstrap_is_reproducible_for_a_seed():
    values = np.random.default_rng(1).random(40)
    assert bootstrap_ci(values, seed=7) == bootstrap_ci(values, seed=7)
    assert bootstrap_ci(values, seed=7) != bootstrap_ci(values, seed=8)


def test_bootstrap_brackets_the_mean_with_about_the_normal_width():
    values = np.random.default_rng(2).normal(10.0, 2.0, size=4000)
    lo, hi = bootstrap_ci(values, n_boot=400)
    assert lo < values.mean() < hi
    normal_width = 2 * 1.96 * values.std() / math.sqrt(values.size)
    assert hi - lo == pytest.approx(normal_width, rel=0.2)


def test_bootstrap_level_controls_the_width():
    values = np.arange(30, dtype=float)
    wide, narrow = bootstrap_ci(values, level=0.99), bootstrap_ci(values, level=0.5)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]


def test_bootstrap_validates_its_arguments():
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci([1.0], n_boot=0)
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci([1.0], level=95)

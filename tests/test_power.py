"""Power of the ability suite's quick mode (compute.abilities.power): the closed forms against hand-computed
values and against the exact binomial, the inversions (n needed, SD from a CI), and the registry's quick n
against the shipped store's unedited scores."""

from __future__ import annotations

import math
import shutil
import sqlite3
from pathlib import Path

import pytest
from scipy.stats import binom

from compute.abilities import power as pw
from compute.abilities.tasks import TASKS

SHIPPED = Path(__file__).resolve().parents[1] / "store" / "results.sqlite"


def test_one_sample_power_matches_a_hand_computed_case():
    # p0 = 0.5, p1 = 0.4, n = 100, z = 1.959964: (0.1*10 - 1.959964*0.5) / sqrt(0.24) = 0.040862 -> Phi = 0.516297;
    # the far tail (-1 - 0.979982) / 0.489898 = -4.0416 adds 2.65e-5
    assert pw.proportion_power(0.5, 100) == pytest.approx(0.516324, abs=2e-5)
    # n for 80%: ((1.959964*0.5 + 0.841621*0.489898) / 0.1)^2 = 13.92291^2 = 193.85 -> 194
    assert pw.proportion_n(0.5) == 194
    assert pw.proportion_power(0.5, 194) >= 0.8 > pw.proportion_power(0.5, 193)


def test_mean_power_matches_a_hand_computed_case():
    # sd 1, shift 0.25, n 100: Phi(2.5 - 1.959964) = Phi(0.540036) = 0.705413, far tail Phi(-4.46) = 4.1e-6
    assert pw.mean_power(1.0, 100, 0.25) == pytest.approx(0.705417, abs=2e-5)
    # ((1.959964 + 0.841621) / 0.25)^2 = 125.58 -> 126
    assert pw.mean_n(1.0, 0.25) == 126
    assert pw.mean_power(1.0, 100, -0.25) == pw.mean_power(1.0, 100, 0.25)  # two-sided


def test_two_proportion_power_matches_a_hand_computed_case():
    # 100 items each at 0.5 and 0.4: pooled 0.45, null SE sqrt(0.45*0.55*0.02) = 0.070356, alternative SE 0.07;
    # (0.1 - 1.959964*0.070356) / 0.07 = -0.541366 -> 0.294130; far tail (-0.237896 / 0.07 = -3.3985) adds 3.39e-4
    assert pw.two_proportion_power(0.5, 100, 100) == pytest.approx(0.294469, abs=5e-5)
    # two independent samples need more items than a known baseline
    assert pw.two_proportion_power(0.5, 100, 100) < pw.proportion_power(0.5, 100)


def test_exact_power_is_the_binomial_probability_of_rejecting():
    # p0 = 0.5, n = 100: the z-test rejects at k <= 40 or k >= 60 (|k/100 - 0.5| > 0.098); at p1 = 0.4
    expected = binom.cdf(40, 100, 0.4) + binom.sf(59, 100, 0.4)
    assert pw.proportion_power_exact(0.5, 100) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("p0,n", [(0.75, 160), (0.625, 184), (0.87, 105), (0.5, 250)])
def test_closed_form_is_close_to_exact_away_from_the_bounds(p0, n):
    assert abs(pw.proportion_power(p0, n) - pw.proportion_power_exact(p0, n)) < 0.03


def test_power_grows_with_n_and_with_the_drop():
    assert pw.proportion_power(0.7, 50) < pw.proportion_power(0.7, 100) < pw.proportion_power(0.7, 200)
    assert pw.proportion_power(0.7, 100, drop=0.05) < pw.proportion_power(0.7, 100, drop=0.1)


def test_log_loss_sd_from_ci_inverts_the_ci():
    sd, n, log_ppl = 0.5, 300, math.log(48.0)
    half = 1.959964 * sd / math.sqrt(n)
    assert pw.log_loss_sd_from_ci(math.exp(log_ppl - half), math.exp(log_ppl + half), n) == pytest.approx(sd, rel=1e-5)


def test_quick_power_dispatches_on_the_metric_and_refuses_bad_input():
    assert pw.quick_power("accuracy", 0.5, 100) == pw.proportion_power(0.5, 100)
    assert pw.quick_power("perplexity", 48.0, 100, sd=0.5) == pw.mean_power(0.5, 100, math.log(1.1))
    assert pw.quick_n_needed("perplexity", 48.0, sd=0.5) == pw.mean_n(0.5, math.log(1.1))
    with pytest.raises(ValueError, match="sd"):
        pw.quick_power("perplexity", 48.0, 100)
    with pytest.raises(ValueError, match="unknown metric"):
        pw.quick_power("f1", 0.5, 100)
    with pytest.raises(ValueError, match="smaller drop"):
        pw.proportion_power(0.08, 100)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        pw.proportion_n(1.0)


def test_power_rows_report_old_and_new_quick_n():
    rows = [{"task": "a", "metric": "accuracy", "score": 0.745, "n": 200, "ci_low": 0.68, "ci_high": 0.8},
            {"task": "b", "metric": "accuracy", "score": 0.625, "n": 184, "ci_low": 0.55, "ci_high": 0.69},
            {"task": "c", "metric": "perplexity", "score": 48.2, "n": 300, "ci_low": 45.3, "ci_high": 51.1}]
    out = {r["task"]: r for r in pw.power_rows(rows, {"a": 160, "b": 500, "c": 20}, {"a": 80})}
    assert out["a"]["reaches"] and out["a"]["old_power"] < 0.6 and out["a"]["n_needed"] == 159
    assert out["b"]["quick_n"] == 184 and not out["b"]["reaches"]  # capped at its items, 0.79 by the closed form
    assert out["c"]["sd"] == pytest.approx(0.527, abs=0.01) and out["c"]["power"] < 0.2


def test_registry_quick_n_reaches_80_percent_on_the_shipped_unedited_scores(tmp_path):
    """Every task's quick n gives at least 80% power (closed form and, for accuracies, exact) to detect a 0.1
    drop (10% perplexity rise) from the unedited model's full-mode score in the shipped store, or uses every
    item the task has (nli: 184 items, 0.79 by the closed form, 0.81 exact)."""
    if not SHIPPED.exists():
        pytest.skip("no shipped store")
    copy = tmp_path / "results.sqlite"
    shutil.copy(SHIPPED, copy)
    conn = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    run = conn.execute("SELECT a.run_id FROM abilities a JOIN runs r USING (run_id) WHERE r.kind = 'abilities' "
                       "AND a.mode = 'full' ORDER BY r.started_at DESC LIMIT 1").fetchone()
    if run is None:
        pytest.skip("the shipped store has no full-mode abilities run")
    rows = [dict(r) for r in conn.execute("SELECT task, score, n, ci_low, ci_high FROM abilities "
                                          "WHERE run_id = ? AND mode = 'full'", [run[0]])]
    conn.close()
    for r in rows:
        r["metric"] = TASKS[r["task"]].metric
    table = pw.power_rows(rows, {t.name: t.quick_n for t in TASKS.values()})
    assert {r["task"] for r in table} == set(TASKS)
    short = [(r["task"], r["quick_n"], round(r["power"], 3)) for r in table
             if not r["reaches"] and r["quick_n"] < r["items"]]
    assert not short

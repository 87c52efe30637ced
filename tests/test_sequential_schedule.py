"""The re-check schedule of sequential runs (issue 22): which earlier edits a checkpoint re-checks, that the
cost per block of edits stays flat, and that a run on the new schedule writes exactly the rows of a run on the
old one wherever it measures, and nothing the old one did not."""

from __future__ import annotations

import dataclasses
import json

import pytest

from compute.experiments.sequential import (
    RUN_LEVEL,
    SequentialConfig,
    age_recheck_due,
    checkpoint_due,
    full_recheck_due,
    recheck_counts,
    run_sequential,
)
from store import Store, queries
from store.diagnostics import diagnostic_rows

from test_sequential import _ctx, _rome


@pytest.fixture(scope="module")
def cases(builder):
    return builder.build(14, seed=5, relations=["capital", "currency", "continent"], case_set="s14")


def _checkpoints(cfg: SequentialConfig, n: int) -> list[int]:
    out, prev = [], 0
    for count in range(cfg.batch_size, n + 1, cfg.batch_size):
        if checkpoint_due(count, prev, cfg) or count >= n:
            out.append(count)
        prev = count
    return out


def test_an_edit_is_rechecked_when_its_age_crosses_a_power_of_two():
    # made at 3: ages 1, 2, 4, 8, 16 fall at counts 4, 5, 7, 11, 19
    seen = [c for c in range(4, 40) if age_recheck_due(3, c - 1, c)]
    assert seen == [4, 5, 7, 11, 19, 35]
    # checkpoints every 10: an edit made at 100 is seen at 110 (ages 1-8 and 16... crossed in one window), 120, 140
    seen = [c for c in range(110, 400, 10) if age_recheck_due(100, c - 10, c)]
    assert seen == [110, 120, 140, 170, 230, 360]


def test_full_rechecks_at_the_dense_start_every_n_and_at_the_end():
    cfg = SequentialConfig(recheck_every=50)
    counts = _checkpoints(cfg, 500)
    full = [c for last, c in zip([0] + counts, counts) if full_recheck_due(c, last, cfg, final=c == 500)]
    assert full == list(range(1, 11)) + list(range(50, 501, 50))
    old = SequentialConfig(recheck_every=0)
    assert all(full_recheck_due(c, last, old, final=False) for last, c in zip([0] + counts, counts))
    with pytest.raises(ValueError, match="recheck_every must be an integer >= 0"):
        SequentialConfig(recheck_every=-1).validate()


def test_later_blocks_recheck_about_as_much_as_the_first():
    """Re-checks per block of 100 edits: quadratic on the old schedule, nearly flat on the new one."""
    def per_block(cfg, n=1000):
        counts = _checkpoints(cfg, n)
        blocks = [0] * (n // 100)
        for c, k in zip(counts, recheck_counts(counts, n, cfg)):
            blocks[(c - 1) // 100] += k
        return blocks

    old, new = per_block(SequentialConfig(recheck_every=0)), per_block(SequentialConfig(recheck_every=50))
    assert old[4] > 9 * old[0] // 2 and old[9] > 2 * old[4]  # grows with the run
    # old: 10 re-checks of every earlier edit per block, +1000 a block; new: two full sweeps (+200 a block) and
    # log-spaced ages (+10 edits per power of two passed)
    assert all(b - a == 1000 for a, b in zip(old[1:], old[2:]))
    assert all(0 < b - a <= 320 for a, b in zip(new[1:], new[2:])) and sum(new) < sum(old) / 3
    # the last checkpoint re-checks every edit whatever its count
    counts = _checkpoints(SequentialConfig(recheck_every=50), 437)
    assert counts[-1] == 437 and recheck_counts(counts, 437, SequentialConfig())[-1] == counts[-2]


def _all(st, run_id):
    m = queries.measurements(st.conn, run_ids=run_id)
    m = m.filter(m["metric"] != "edit_seconds")
    drift = queries.weight_drift(st.conn, run_ids=run_id).drop("run_id")
    diag = diagnostic_rows(st.conn, run_id).drop("run_id")
    return (set(zip(m["case_id"], m["edit_count"], m["rephrase_type"], m["metric"], m["value"])),
            sorted(map(tuple, drift.rows())), sorted(map(tuple, diag.rows())))


def test_the_new_schedule_writes_the_old_ones_rows_where_it_measures(llama, cases, tmp_path):
    # a checkpoint after every edit; every earlier edit re-checked at 1 and 9, log-spaced ages between
    base = SequentialConfig(max_edits=9, checkpoint_every=1, dense_first=1, panel_pool=4, panel_size=3,
                            panel_known_only=False, panel_tokens=3, fluency_tokens=6)
    runs = {}
    for every in (0, 9):
        with Store.open(tmp_path / f"{every}.sqlite", create=True) as st:
            run = run_sequential(llama, cases, st, editor="ROME", hp=_rome(llama),
                                 ctx=_ctx(llama, tmp_path / str(every)), cfg=dataclasses.replace(base, recheck_every=every))
            runs[every] = _all(st, run)
            assert json.loads(st.get_run(run)["config"])["recheck_every"] == every
    (old, drift_old, diag_old), (new, drift_new, diag_new) = runs[0], runs[9]
    assert drift_new == drift_old and diag_new == diag_old  # the same edits, the same weights at every checkpoint
    assert new <= old  # nothing the old schedule did not measure, with the same numbers
    made = {case: count for case, count, scope, *_ in old if scope == "edit"}
    left_out = old - new
    for case, count, scope, metric, _ in left_out:
        if case == RUN_LEVEL:  # retention and forgetting only where every edit was re-checked
            assert scope == "all_edits" and 1 < count < 9
        else:  # an earlier edit not at a log-spaced age
            assert scope == "plain" and metric in ("es", "exact_match_new") and 1 < count < 9
            assert not age_recheck_due(made[case], count - 1, count)
    skipped = {(case, count) for case, count, scope, *_ in left_out if case != RUN_LEVEL}
    assert skipped and {c for _, c in skipped} >= {7, 8}
    # at the full checkpoints every row is there
    assert {r for r in old if r[1] in (0, 1, 9)} <= new


def test_a_run_made_before_the_schedule_resumes_only_with_the_old_one(llama, cases, tmp_path):
    cfg = SequentialConfig(max_edits=3, checkpoint_every=2, dense_first=1, panel_pool=4, panel_size=3,
                           panel_known_only=False, panel_tokens=3, fluency_tokens=6, recheck_every=0)
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        run = run_sequential(llama, cases, st, editor="ROME", hp=_rome(llama), ctx=_ctx(llama, tmp_path), cfg=cfg)
        config = json.loads(st.get_run(run)["config"])
        del config["recheck_every"]  # as an older run stored it
        st.conn.execute("UPDATE runs SET config = ? WHERE run_id = ?", (json.dumps(config), run))
        with pytest.raises(ValueError, match=r"made with recheck_every 0 \(now 50\)"):
            run_sequential(llama, cases, st, editor="ROME", hp=_rome(llama), ctx=_ctx(llama, tmp_path),
                           cfg=dataclasses.replace(cfg, recheck_every=50), run_id=run)
        run_sequential(llama, cases, st, editor="ROME", hp=_rome(llama), ctx=_ctx(llama, tmp_path), cfg=cfg, run_id=run)
        assert st.get_run(run)["status"] == "done"


def test_the_panel_is_200_known_facts_and_a_pool_that_knows_too_few_is_refused(cases, monkeypatch):
    import compute.experiments.sequential as seq
    from compute.scoring import ProbeResult

    cfg = SequentialConfig()
    assert cfg.panel_size >= 200 and cfg.panel_pool * 0.23 * 0.93 > 1.1 * cfg.panel_size  # issue 19 point 7

    def every_other_known(lm, prompts, targets, gen_tokens=0, **kw):  # the model recalls pool facts 0, 2, 4, ...
        by_prompt = {c.prompt: c for c in cases}
        return [ProbeResult((), by_prompt[p].true_object if i % 2 == 0 else "no idea") for i, p in enumerate(prompts)]

    monkeypatch.setattr(seq, "run_probes", every_other_known)
    pool = list(cases[:8])
    assert seq.known_panel(None, pool, 3, 4) == [pool[0], pool[2], pool[4]]
    assert seq.known_panel(None, pool + list(cases[8:12]), 7, 4) == (pool + list(cases[8:12]))[::2]  # all it knows
    with pytest.raises(ValueError, match=r"recalls only 2 of the 4 panel-pool facts, too few for a panel of 200: use "
                                         r"a larger --panel-pool \(about 460 cases at this share\)"):
        seq.known_panel(None, pool[:4], 200, 4)

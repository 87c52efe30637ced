"""Study B's sequential runner on a tiny model: schedule, measurements, events, and exact resumption."""

from __future__ import annotations

import dataclasses
import json

import polars as pl
import pytest
import torch

import compute.experiments.sequential as seq
from compute.editors import EditContext, get_editor
from compute.experiments.sequential import (
    RUN_LEVEL,
    SequentialConfig,
    checkpoint_due,
    detect_phases,
    edit_order,
    run_sequential,
    split_order,
)
from store import Store, queries
from store.diagnostics import diagnostic_rows

# checkpoints at 1, 2, 4, 8, 9, each re-checking every earlier edit (tests/test_sequential_schedule.py has runs
# whose checkpoints re-check only edits of log-spaced age)
CFG = SequentialConfig(max_edits=9, checkpoint_every=4, dense_first=2, panel_pool=4, panel_size=3,
                       panel_known_only=False, panel_tokens=3, fluency_tokens=6, recheck_every=4)


@pytest.fixture(scope="module")
def cases(builder):
    return builder.build(14, seed=5, relations=["capital", "currency", "continent"], case_set="s14")


def _rome(llama):
    from test_editor_contract import FACTORIES

    return FACTORIES["ROME"](get_editor("ROME"), llama)


def _ctx(llama, tmp_path):
    from test_editor_contract import tiny_context

    ctx = tiny_context(llama, tmp_path)
    ctx.demonstrations = ()
    return ctx


def _dies_on(monkeypatch, n: int):
    """Make the runner's apply_edit raise KeyboardInterrupt (a Ctrl-C) on its n-th call; returns the real one,
    to put back with monkeypatch.setattr(seq, "apply_edit", real)."""
    real, calls = seq.apply_edit, {"n": 0}

    def dies(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(seq, "apply_edit", dies)
    return real


def _rows(st, run_id):
    m = queries.measurements(st.conn, run_ids=run_id)
    m = m.filter(~m["metric"].is_in(["edit_seconds"]))
    drift = queries.weight_drift(st.conn, run_ids=run_id)
    diag = diagnostic_rows(st.conn, run_id)
    return (sorted(zip(m["case_id"], m["edit_count"], m["rephrase_type"], m["metric"], m["value"])),
            sorted(map(tuple, drift.drop("run_id").rows())),
            sorted(map(tuple, diag.drop("run_id").rows())))


def test_edit_order_is_seeded_and_the_same_for_every_editor():
    ids = [f"c{i}" for i in range(30)]
    assert edit_order(ids, 0) == edit_order(list(reversed(ids)), 0)
    assert edit_order(ids, 0) != edit_order(ids, 1) and sorted(edit_order(ids, 1)) == sorted(ids)


def test_the_edits_are_a_prefix_of_the_order_whatever_the_maximum():
    order = [f"c{i}" for i in range(20)]
    short, pool = split_order(order, SequentialConfig(max_edits=5, panel_pool=4))
    long, pool2 = split_order(order, SequentialConfig(max_edits=50, panel_pool=4))
    assert long[:5] == short and pool == pool2 == order[-4:] and len(long) == 16 and not set(long) & set(pool)
    with pytest.raises(ValueError, match="larger set"):
        split_order(order[:4], SequentialConfig(panel_pool=4))


def test_checkpoints_after_each_of_the_first_edits_then_every_k():
    def schedule(b, cfg=SequentialConfig()):
        out, prev = [], 0
        for count in range(b, 101, b):
            if checkpoint_due(count, prev, cfg):
                out.append(count)
            prev = count
        return out

    assert schedule(1) == list(range(1, 11)) + list(range(20, 101, 10))
    assert schedule(10) == list(range(10, 101, 10))
    assert schedule(100) == [100]


def test_detect_phases_finds_a_cliff_and_not_a_slope():
    x = list(range(0, 200, 10))
    cliff = [1.0 - 0.001 * c if c < 120 else 0.85 - 0.01 * (c - 120) for c in x]
    found = detect_phases(x, cliff)
    assert found["catastrophic"] and 110 <= found["change_at"] <= 130
    gentle = [1.0 - 0.002 * c for c in x]
    assert not detect_phases(x, gentle)["catastrophic"]
    assert detect_phases(x[:4], gentle[:4]) is None


def test_phase_table_and_verdict_tell_a_cliff_from_an_early_drop(tmp_path):
    from compute.experiments.sequential import find_events
    from store.derived import phase_verdict, sequential_phases

    x = list(range(10, 210, 10))
    cliff = [1.0 - 0.001 * c if c < 120 else 0.85 - 0.01 * (c - 120) for c in x]  # gradual, then catastrophic
    early = [max(0.2, 1.0 - 0.01 * c) if c <= 80 else 0.2 - 0.0005 * (c - 80) for c in x]  # fast early, then slow
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        for run, panel in (("cliff", cliff), ("early", early)):
            st.start_run(kind="sequential", model="m", run_id=run)
            st.write_measurements(
                [{"run_id": run, "case_id": RUN_LEVEL, "edit_count": c, "rephrase_type": "panel",
                  "metric": "panel_recall", "value": v} for c, v in zip(x, panel)]
                + [{"run_id": run, "case_id": RUN_LEVEL, "edit_count": c, "rephrase_type": "free_text",
                    "metric": "fluency", "value": 5.0} for c in x])
            find_events(st, run, CFG)
        phases = sequential_phases(st.conn)
    panel = {r["run_id"]: r for r in phases.filter(phases["series"] == "panel recall").iter_rows(named=True)}
    assert panel["cliff"]["catastrophic"] and panel["cliff"]["faster"] == "later"
    assert 110 <= panel["cliff"]["change_at"] <= 130 and panel["cliff"]["checked_to"] == 200
    assert panel["cliff"]["slope_before"] == pytest.approx(-0.1 * 100 / 0.99, rel=0.05)  # % of the start per 100
    assert not panel["early"]["catastrophic"] and panel["early"]["faster"] == "earlier"
    assert 70 <= panel["early"]["change_at"] <= 90
    flat = phases.filter(phases["series"] == "fluency")
    assert flat.height == 2 and set(flat["faster"]) == {"neither"}
    verdict = phase_verdict(phases, {"cliff": "ROME", "early": "FT-L"})
    assert verdict.startswith("A catastrophic phase was found on 1 of 4 series in 2 runs: ROME (panel recall from")
    only_early = phase_verdict(phases.filter(phases["run_id"] == "early"), {})
    assert only_early.startswith("No catastrophic phase on any of the 2 series in 1 runs; of the 1 series that fell, "
                                 "1 fell at least 1.5x faster before the change point")
    assert "panel recall 80" in only_early or "panel recall 70" in only_early or "panel recall 90" in only_early


def test_sequential_rome_run_measures_every_checkpoint_and_restores_the_model(llama, cases, tmp_path):
    before = {k: v.clone() for k, v in llama.model.state_dict().items()}
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        run = run_sequential(llama, cases, st, editor="ROME", hp=_rome(llama), ctx=_ctx(llama, tmp_path), cfg=CFG,
                             case_set="s14")
        info = st.get_run(run)
        assert info["status"] == "done" and info["kind"] == "sequential" and info["n_done"] == 9
        m = queries.measurements(st.conn, run_ids=run)
        level = m.filter(m["case_id"] == RUN_LEVEL)
        retention = level.filter(level["metric"] == "retention").sort("edit_count")
        assert retention["edit_count"].to_list() == [1, 2, 4, 8, 9]
        assert all(0 <= v <= 1 for v in retention["value"])
        em = level.filter((level["metric"] == "exact_match") & (level["rephrase_type"] == "panel_check"))
        assert sorted(set(em["edit_count"])) == list(range(10))  # after every edit, and unedited at 0
        newest = level.filter((level["rephrase_type"] == "newest") & (level["metric"] == "es"))
        assert newest["value"].mean() > 0.5  # the edits take on the tiny model
        # every earlier edit is re-checked at a later checkpoint
        per_case = m.filter((m["case_id"] != RUN_LEVEL) & (m["metric"] == "es") & (m["rephrase_type"] == "plain"))
        assert per_case.filter(per_case["edit_count"] == 9).height == 9
        drift = queries.weight_drift(st.conn, run_ids=run)
        assert set(drift["edit_count"]) == {1, 2, 4, 8, 9} and (drift["fro_delta"] > 0).all()
        assert drift.sort("edit_count")["fro_delta"].to_list()[-1] > drift.sort("edit_count")["fro_delta"][0]
        events = queries.run_events(st.conn, run_ids=run)
        assert set(events["kind"]) >= {"phase"}
    after = llama.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_killed_run_resumes_from_its_checkpoint_with_the_same_numbers(llama, cases, tmp_path, monkeypatch):
    with Store.open(tmp_path / "a.sqlite", create=True) as st:
        run = run_sequential(llama, cases, st, editor="ROME", hp=_rome(llama), ctx=_ctx(llama, tmp_path / "a"),
                             cfg=CFG)
        expected = _rows(st, run)

    real = _dies_on(monkeypatch, 6)
    with Store.open(tmp_path / "b.sqlite", create=True) as st:
        with pytest.raises(KeyboardInterrupt):
            run_sequential(llama, cases, st, editor="ROME", hp=_rome(llama), ctx=_ctx(llama, tmp_path / "b"), cfg=CFG)
        (run_b,) = queries.list_runs(st.conn)["run_id"]
        assert st.get_run(run_b)["status"] == "interrupted" and st.get_run(run_b)["n_done"] == 4
        monkeypatch.setattr(seq, "apply_edit", real)
        run_sequential(llama, cases, st, editor="ROME", hp=_rome(llama), ctx=_ctx(llama, tmp_path / "b"), cfg=CFG,
                       run_id=run_b)
        assert st.get_run(run_b)["status"] == "done"
        got = _rows(st, run_b)
        events_b = queries.run_events(st.conn, run_ids=run_b)
    assert got[0] == expected[0]
    assert got[1] == expected[1]
    # every edit's diagnostics, at the run's edit count after it: the resumed edits rewrote the same rows
    diag_counts = sorted({count for count, *_ in expected[2]})
    assert diag_counts == list(range(1, 10))
    assert {name for *_, name, _ in expected[2]} >= {"update_norm", "update_rel", "steps", "nll_final", "delivered"}
    assert got[2] == expected[2]
    with Store.open(tmp_path / "a.sqlite") as st:
        events_a = queries.run_events(st.conn, run_ids=run)

    def untimed(ev):
        return sorted((k, s, c, e, v, d) for k, s, c, e, v, d in
                      ev.select("kind", "series", "edit_count", "end_count", "value", "detail").rows()
                      if k not in ("timing", "resumed"))

    def intervals(ev):
        return sorted((c, e) for k, c, e in ev.select("kind", "edit_count", "end_count").rows() if k == "timing")

    assert untimed(events_b) == untimed(events_a)
    # the resume is on record: from its checkpoint at edit 4, after an interrupted process
    (resumed,) = events_b.filter(events_b["kind"] == "resumed").iter_rows(named=True)
    assert resumed["edit_count"] == 4 and json.loads(resumed["detail"])["status"] == "interrupted"
    assert events_a.filter(events_a["kind"] == "resumed").is_empty()
    # every checkpoint interval is timed once, by whichever process ran it, and nothing else is
    checkpoints = sorted({count for _, count, scope, *_ in expected[0] if scope == "all_edits"})
    assert intervals(events_a) == intervals(events_b) == list(zip([0] + checkpoints[:-1], checkpoints))
    timing = events_a.filter(events_a["kind"] == "timing")
    assert all(v > 0 for v in timing["value"])
    assert all(json.loads(d)["peak_rss_mb"] > 0 and json.loads(d)["cpu_s"] > 0 for d in timing["detail"])


def test_alphaedit_runs_in_batches_and_remembers_its_edits(llama, cases, tmp_path):
    from test_editor_contract import FACTORIES

    hp = FACTORIES["AlphaEdit"](get_editor("AlphaEdit"), llama)
    cfg = dataclasses.replace(CFG, batch_size=3, max_edits=6)
    ctx = _ctx(llama, tmp_path)
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        run = run_sequential(llama, cases, st, editor="AlphaEdit", hp=hp, ctx=ctx, cfg=cfg)
        assert st.get_run(run)["n_done"] == 6
        info = queries.measurements(st.conn, run_ids=run, metrics="retention")
        assert sorted(info["edit_count"]) == [3, 6]
        # one diagnostics set per batch, at the edit count after it: the shared update under '*', then each request
        diag = diagnostic_rows(st.conn, run)
        whole = diag.filter(diag["case_id"] == "*")
        assert sorted(set(whole["edit_count"])) == [3, 6] and set(whole["name"]) == {"update_norm", "update_rel"}
        per_request = diag.filter((diag["case_id"] != "*") & (diag["name"] == "steps"))
        assert sorted(per_request["edit_count"]) == [3, 3, 3, 6, 6, 6]
    assert ctx.state["AlphaEdit"]["n"] == 6


def test_in_context_editors_are_refused(llama, cases, tmp_path):
    from test_editor_contract import FACTORIES

    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        with pytest.raises(ValueError, match="sequential runs need a weight editor"):
            run_sequential(llama, cases, st, editor="IKE", hp=FACTORIES["IKE"](get_editor("IKE"), llama),
                           ctx=EditContext(cache_dir=tmp_path), cfg=CFG)


def test_derived_curves_events_and_forgetting_by_age(llama, cases, tmp_path):
    from store import derived

    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        run = run_sequential(llama, cases, st, editor="ROME", hp=_rome(llama), ctx=_ctx(llama, tmp_path), cfg=CFG)
        curves = derived.sequential_curves(st.conn, run)
        series = set(curves["series"])
        assert {"Retained edits", "Forgotten edits", "Newest-edit efficacy (ES)", "Recall on the unedited fact panel",
                "Fluency (n-gram entropy, bits)", "Panel exact match, its first facts (after every edit)"} <= series
        ret = curves.filter(curves["metric"] == "retention").sort("edit_count")
        assert ret["n"].to_list() == [1, 2, 4, 8, 9]
        assert (ret["ci_low"] <= ret["value"]).all() and (ret["value"] <= ret["ci_high"]).all()
        em = curves.filter(curves["metric"] == "exact_match")
        assert (em["n"] == 3).all()  # the panel's size, also on the per-edit rows
        age = derived.forgetting_by_age(st.conn, run, bins=(0, 2, 5))
        assert set(age["age_bin"]) <= {"0-1", "2-4", "5+"} and (age["n"] > 0).all()
        last = age.filter(age["edit_count"] == 9)
        held = curves.filter((curves["metric"] == "forgotten") & (curves["edit_count"] == 9))
        assert last["n"].sum() == held["n"][0]  # every held edit is in exactly one age bin
        ev = derived.sequential_events(st.conn, run)
        assert {"retention", "retention_em", "panel_recall", "newest_es", "fluency"} >= set(
            ev.filter(ev["kind"] == "phase")["series"]) >= {"retention", "retention_em"}
        em = curves.filter(curves["metric"] == "retention_em").sort("edit_count")
        assert em["n"].to_list() == [1, 2, 4, 8, 9] and (em["value"] <= 1).all()
        norms = curves.filter(curves["metric"] == "update_norm")
        assert sorted(norms["edit_count"]) == list(range(1, 10)) and (norms["value"] > 0).all()
        # the per-edit diagnostics measured the same update as the runner's own row, edit by edit
        from store.diagnostics import per_edit

        diag = per_edit(st.conn, run).sort("edit_count")
        assert diag["edit_count"].to_list() == list(range(1, 10))
        assert diag["update_norm"].to_list() == pytest.approx(norms.sort("edit_count")["value"].to_list(), rel=1e-9)
        labels = derived.run_labels(st.conn, "sequential")
        assert labels["label"].to_list() == ["ROME"]


def test_run_labels_name_what_sets_a_run_apart():
    from store.derived import run_label

    assert run_label("ROME", {"key_mismatch": True}, {}) == "ROME (original keys)"
    assert run_label("ROME", {"rect_top": 0.4}, {"batch_size": 1}) == "ROME + RECT 40%"
    assert run_label("MEMIT", {}, {"batch_size": 10}) == "MEMIT, b=10"
    # a mass editor's instance-sequential run says b=1 beside its batch-sequential ones; a batch-single run
    # (sizes, no batch_size) and a one-fact editor's run do not
    assert run_label("AlphaEdit", {}, {"batch_size": 1}) == "AlphaEdit, b=1"
    assert run_label("AlphaEdit", {}, {"sizes": [1, 10]}) == "AlphaEdit"
    assert run_label("FT-L", {}, {"batch_size": 1}) == "FT-L"


def test_batch_single_edits_measures_and_undoes_each_size_and_resumes(llama, cases, tmp_path, monkeypatch):
    from test_editor_contract import FACTORIES

    import compute.experiments.batch as batch_mod
    from compute.experiments.batch import run_batch_single

    hp = FACTORIES["MEMIT"](get_editor("MEMIT"), llama)
    before = {k: v.clone() for k, v in llama.model.state_dict().items()}
    calls = []

    def fake_abilities(lm):  # a deterministic stand-in for the suite: one row from the current weights
        calls.append(1)
        w = float(sum(p.double().sum() for p in lm.model.parameters()))
        return [{"task": "probe", "task_version": "1", "mode": "quick", "score": w, "n": 1, "ci_low": w, "ci_high": w}]

    real = batch_mod.apply_edit
    state = {"n": 0}

    def dies_on_the_second(*a, **k):
        state["n"] += 1
        if state["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(batch_mod, "apply_edit", dies_on_the_second)
    with Store.open(tmp_path / "b.sqlite", create=True) as st:
        with pytest.raises(KeyboardInterrupt):
            run_batch_single(llama, cases, st, editor="MEMIT", hp=hp, ctx=_ctx(llama, tmp_path), sizes=(1, 3, 5),
                             panel_pool=4, abilities=fake_abilities)
        (run,) = queries.list_runs(st.conn)["run_id"]
        assert st.get_run(run)["status"] == "interrupted"
        monkeypatch.setattr(batch_mod, "apply_edit", real)
        run_batch_single(llama, cases, st, editor="MEMIT", hp=hp, ctx=_ctx(llama, tmp_path), sizes=(1, 3, 5),
                         panel_pool=4, abilities=fake_abilities, run_id=run)
        level = queries.measurements(st.conn, run_ids=run, case_ids="*")
        assert sorted(set(level["edit_count"])) == [1, 3, 5]
        n = level.filter(level["metric"] == "n").sort("edit_count")["value"].to_list()
        assert n == [1.0, 3.0, 5.0]
        # each batch reuses the target values optimised for the smaller ones, across the interruption too
        reused = level.filter(level["metric"] == "values_from_cache").sort("edit_count")["value"].to_list()
        assert reused == [0.0, 1.0, 3.0]
        ab = queries.abilities(st.conn, run).sort("edit_count")
        assert ab["edit_count"].to_list() == [0, 1, 3, 5] and (ab["batch_size"] == ab["edit_count"]).all()
        assert ab["score"][0] != ab["score"][3]  # measured on the edited model, not the unedited one
        per_case = level = queries.measurements(st.conn, run_ids=run, metrics="es", rephrase_types="plain")
        assert per_case.filter(per_case["edit_count"] == 5).height == 5
    after = llama.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_ability_facts_are_never_edited_nor_in_the_panel(cases):
    from compute.experiments.sequential import ability_case_ids

    order = edit_order([c.case_id for c in cases], 0)
    facts = {(cases[0].subject, cases[0].relation), (cases[5].subject, cases[5].relation)}
    skip = ability_case_ids(cases, facts)
    assert skip == {cases[0].case_id, cases[5].case_id}
    edits, pool = split_order(order, SequentialConfig(max_edits=50, panel_pool=4), skip)
    assert not (set(edits) | set(pool)) & skip
    assert len(edits) + len(pool) == len(cases) - 2


def test_the_sequential_benchmark_reports_a_runs_own_timed_intervals(llama, cases, tmp_path):
    import importlib.util
    from pathlib import Path

    import polars as pl

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_sequential.py"
    spec = importlib.util.spec_from_file_location("bench_sequential", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        run = run_sequential(llama, cases, st, editor="ROME", hp=_rome(llama), ctx=_ctx(llama, tmp_path), cfg=CFG,
                             final_abilities=_weight_probe("full"))
        timing = queries.run_events(st.conn, run_ids=run).filter(pl.col("kind") == "timing")
        final = timing.filter(pl.col("series") == "final_abilities")
        timing = timing.filter(pl.col("series") == "checkpoint")
    (report,) = bench.from_store(tmp_path / "s.sqlite")
    assert final.height == 1 and report["full_ability_suite_seconds"] == pytest.approx(final["value"][0], abs=0.1)
    assert report["run_id"] == run and report["config"] == "ROME" and report["edits_timed"] == 9
    assert report["seconds"] == pytest.approx(sum(timing["value"]), abs=0.1)
    assert report["seconds_per_100_edits"] == pytest.approx(100 * sum(timing["value"]) / 9, abs=0.2)
    assert list(report["per_100_by_block"]) == ["1-100"] and report["peak_rss_mb"] > 0


def _weight_probe(mode: str):
    """A deterministic stand-in for the ability suite: one row whose score is a sum over the current weights."""

    def measure(lm):
        w = float(sum(p.double().sum() for p in lm.model.parameters()))
        return [{"task": "probe", "task_version": "1", "mode": mode, "score": w, "n": 1, "ci_low": w, "ci_high": w}]

    return measure


def test_the_full_suite_measures_the_model_a_run_leaves_in_the_run_or_from_its_saved_state(
        llama, cases, tmp_path, monkeypatch):
    from compute.experiments.sequential import measure_saved_state

    cfg = dataclasses.replace(CFG, max_edits=5)
    unedited = _weight_probe("full")(llama)[0]["score"]
    with Store.open(tmp_path / "a.sqlite", create=True) as st:
        run_a = run_sequential(llama, cases, st, editor="ROME", hp=_rome(llama), ctx=_ctx(llama, tmp_path / "a"),
                               cfg=cfg, final_abilities=_weight_probe("full"))
        ab = queries.abilities(st.conn, run_a)
        assert ab.select("edit_count", "batch_size", "mode").rows() == [(5, 1, "full")]
        edited = ab["score"][0]
        assert edited != unedited  # measured on the edited model, before the weights went back
        timing = queries.run_events(st.conn, run_ids=run_a, kind="timing")
        final = timing.filter(timing["series"] == "final_abilities")
        assert final.select("edit_count", "end_count").rows() == [(5, 5)]
        detail = json.loads(final["detail"][0])
        assert detail["source"] == "run" and detail["code_version"] and detail["measured_at"]
    assert _weight_probe("full")(llama)[0]["score"] == unedited

    # the same run without the suite; then the suite from its saved final state gives the same score
    with Store.open(tmp_path / "b.sqlite", create=True) as st:
        run_b = run_sequential(llama, cases, st, editor="ROME", hp=_rome(llama), ctx=_ctx(llama, tmp_path / "b"),
                               cfg=cfg)
        assert queries.abilities(st.conn, run_b).is_empty()
        before = {k: v.clone() for k, v in llama.model.state_dict().items()}
        assert measure_saved_state(llama, st, run_b, tmp_path / "b", _weight_probe("full")) == 5
        ab = queries.abilities(st.conn, run_b)
        assert ab.select("edit_count", "batch_size", "mode", "score").rows() == [(5, 1, "full", edited)]
        events = queries.run_events(st.conn, run_ids=run_b, kind="timing")
        assert json.loads(events.filter(events["series"] == "final_abilities")["detail"][0])["source"] == "saved state"
        assert all(torch.equal(before[k], v) for k, v in llama.model.state_dict().items())
        with pytest.raises(ValueError, match="no run 'nope'"):
            measure_saved_state(llama, st, "nope", tmp_path / "b", _weight_probe("full"))
        with pytest.raises(ValueError, match="no saved state"):
            measure_saved_state(llama, st, run_b, tmp_path / "elsewhere", _weight_probe("full"))

    # killed during the final suite: the run is resumable and measures it on resume
    calls = {"n": 0}

    def dies_once(lm):
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt
        return _weight_probe("full")(lm)

    with Store.open(tmp_path / "c.sqlite", create=True) as st:
        with pytest.raises(KeyboardInterrupt):
            run_sequential(llama, cases, st, editor="ROME", hp=_rome(llama), ctx=_ctx(llama, tmp_path / "c"),
                           cfg=cfg, final_abilities=dies_once)
        (run_c,) = queries.list_runs(st.conn)["run_id"]
        assert st.get_run(run_c)["status"] == "interrupted" and queries.abilities(st.conn, run_c).is_empty()
        run_sequential(llama, cases, st, editor="ROME", hp=_rome(llama), ctx=_ctx(llama, tmp_path / "c"),
                       cfg=cfg, final_abilities=dies_once, run_id=run_c)
        assert st.get_run(run_c)["status"] == "done"
        assert queries.abilities(st.conn, run_c).select("edit_count", "score").rows() == [(5, edited)]


def test_cli_measures_the_suite_for_a_run_that_ended_without_it(
        fixture_store, cache_dir, tiny_model_dir, tmp_path, capsys):
    # the full suite takes minutes on the tiny model: the quick one stands in for it here (the in-run full
    # suite is tested above with a stand-in suite)
    import shutil

    from compute.cli import main

    store = tmp_path / "copy.sqlite"
    shutil.copy(fixture_store, store)
    with Store.open(store, readonly=True) as st:
        runs = queries.list_runs(st.conn, kind="sequential")
        every = {r["run_id"]: json.loads(r["config"]).get("abilities_every") for r in runs.iter_rows(named=True)}
        (plain,) = [r for r, k in every.items() if not k]
        assert queries.abilities(st.conn, plain).is_empty()
        n_tasks = queries.abilities(st.conn, [r for r in every if r != plain][0]).filter(
            pl.col("edit_count") == 0)["task"].n_unique()
    capsys.readouterr()
    # the finished run's own command again, asking for a suite it ended without: measured from its saved state
    rome = fixture_store.parent / "rome.json"
    assert main(["--store", str(store), "--cache-dir", str(cache_dir), "--quiet", "run", "sequential", "--editor",
                 "ROME", "--set", "tiny32", "--edits", "6", "--every", "3", "--panel-pool", "4", "--panel-size", "3",
                 "--panel-any", "--hparams", str(rome), "--model", tiny_model_dir, "--hp", "key_mismatch=true",
                 "--final-abilities", "quick"]) == 0
    assert f"run {plain}: quick ability suite measured on its saved final state (6 edits)" in capsys.readouterr().out
    with Store.open(store, readonly=True) as st:
        ab = queries.abilities(st.conn, plain)
        assert set(ab.select("edit_count", "batch_size", "mode").rows()) == {(6, 1, "quick")}
        assert ab.height == n_tasks
        assert queries.list_runs(st.conn, kind="sequential").height == 2  # no new run
    base = ["--store", str(store), "--cache-dir", str(cache_dir), "--quiet", "abilities", "measure"]
    assert main(base + ["--run", plain, "--mode", "quick", "--model", tiny_model_dir, "--tasks", "analogy"]) == 0
    assert f"run {plain}: quick ability suite on its model after 6 edits" in capsys.readouterr().out
    with Store.open(store, readonly=True) as st:
        assert queries.abilities(st.conn, plain).height == n_tasks  # measured again: rewritten, none added
        timing = queries.run_events(st.conn, run_ids=plain, kind="timing")
        final = timing.filter(timing["series"] == "final_abilities")
        assert final.select("edit_count", "end_count").rows() == [(6, 6)]  # one row per run and edit count
        assert json.loads(final["detail"][0])["source"] == "saved state"
        (other,) = queries.list_runs(st.conn, kind="abilities")["run_id"]
    assert main(base + ["--run", other, "--model", tiny_model_dir, "--tasks", "analogy"]) != 0
    assert "only a sequential run leaves an edited model" in capsys.readouterr().err


def test_a_run_extended_to_more_edits_matches_one_made_in_one_go(llama, cases, tmp_path, monkeypatch):
    with Store.open(tmp_path / "a.sqlite", create=True) as st:
        whole = run_sequential(llama, cases, st, editor="ROME", hp=_rome(llama), ctx=_ctx(llama, tmp_path / "a"),
                               cfg=CFG)
        expected = _rows(st, whole)
        events_a = queries.run_events(st.conn, run_ids=whole)
    short = dataclasses.replace(CFG, max_edits=8)  # 8 is a checkpoint of CFG's schedule (every 4)
    with Store.open(tmp_path / "b.sqlite", create=True) as st:
        run = run_sequential(llama, cases, st, editor="ROME", hp=_rome(llama), ctx=_ctx(llama, tmp_path / "b"),
                             cfg=short)
        assert st.get_run(run)["n_done"] == 8
        before = _rows(st, run)
        # resuming with another maximum, or another layout, is refused before anything is written
        with pytest.raises(ValueError, match=r"made with at most 8 edits, not 9: resume it with --edits 8, or "
                                             r"extend it with --edits 9"):
            run_sequential(llama, cases, st, editor="ROME", hp=_rome(llama), ctx=_ctx(llama, tmp_path / "b"), cfg=CFG,
                           run_id=run)
        with pytest.raises(ValueError, match=r"made with checkpoint_every 4 \(now 3\)"):
            run_sequential(llama, cases, st, editor="ROME", hp=_rome(llama), ctx=_ctx(llama, tmp_path / "b"),
                           cfg=dataclasses.replace(CFG, checkpoint_every=3), run_id=run, extend=True)
        with pytest.raises(ValueError, match="not 7: resume it with --edits 8$"):
            run_sequential(llama, cases, st, editor="ROME", hp=_rome(llama), ctx=_ctx(llama, tmp_path / "b"),
                           cfg=dataclasses.replace(CFG, max_edits=7), run_id=run, extend=True)
        assert st.get_run(run)["status"] == "done" and _rows(st, run) == before
        assert json.loads(st.get_run(run)["config"])["max_edits"] == 8

        # extended, killed before its first new edit, then resumed: the extension is recorded once
        real = seq.apply_edit

        def killed(*args, **kwargs):
            raise KeyboardInterrupt

        monkeypatch.setattr(seq, "apply_edit", killed)
        with pytest.raises(KeyboardInterrupt):
            run_sequential(llama, cases, st, editor="ROME", hp=_rome(llama), ctx=_ctx(llama, tmp_path / "b"),
                           cfg=CFG, run_id=run, extend=True)
        info = st.get_run(run)
        assert (info["status"], info["n_done"], info["n_total"]) == ("interrupted", 8, 9)
        assert json.loads(info["config"])["max_edits"] == 9
        monkeypatch.setattr(seq, "apply_edit", real)
        run_sequential(llama, cases, st, editor="ROME", hp=_rome(llama), ctx=_ctx(llama, tmp_path / "b"), cfg=CFG,
                       run_id=run)
        info = st.get_run(run)
        assert info["status"] == "done" and info["n_done"] == info["n_total"] == 9
        assert json.loads(info["config"])["max_edits"] == 9
        assert _rows(st, run) == expected
        events_b = queries.run_events(st.conn, run_ids=run)
    (ext,) = events_b.filter(events_b["kind"] == "extended").iter_rows(named=True)
    assert (ext["edit_count"], ext["end_count"]) == (8, 9)
    assert json.loads(ext["detail"])["edits_stored"] == 8 and json.loads(ext["detail"])["code_version"]

    def editing(ev):
        return sorted(r for r in ev.select("kind", "series", "edit_count", "end_count", "value", "detail").rows()
                      if r[0] not in ("timing", "extended", "resumed"))

    assert editing(events_b) == editing(events_a)
    with Store.open(tmp_path / "b.sqlite") as st:
        from store import derived

        assert "extended" not in set(derived.sequential_events(st.conn, run)["kind"])


def test_cli_extends_a_finished_run_instead_of_redoing_its_edits(
        fixture_store, cache_dir, tiny_model_dir, tmp_path, capsys):
    import shutil

    from compute.cli import main

    store, cache = tmp_path / "copy.sqlite", tmp_path / "cache"
    shutil.copy(fixture_store, store)
    shutil.copytree(cache_dir, cache)  # the run's saved state changes: not in the session's cache
    with Store.open(store, readonly=True) as st:
        runs = queries.list_runs(st.conn, kind="sequential")
        (plain,) = [r["run_id"] for r in runs.iter_rows(named=True)
                    if not json.loads(r["config"]).get("abilities_every")]
        made = queries.measurements(st.conn, run_ids=plain).height
    rome = fixture_store.parent / "rome.json"
    command = ["--store", str(store), "--cache-dir", str(cache), "--quiet", "run", "sequential", "--editor", "ROME",
               "--set", "tiny32", "--every", "3", "--panel-pool", "4", "--panel-size", "3", "--panel-any",
               "--hparams", str(rome), "--model", tiny_model_dir, "--hp", "key_mismatch=true"]
    capsys.readouterr()
    assert main(command + ["--edits", "9"]) == 0
    out = capsys.readouterr().out
    assert f"extending run {plain} (made with --edits 6, 6 edits stored) to at most 9 edits" in out
    with Store.open(store, readonly=True) as st:
        assert queries.list_runs(st.conn, kind="sequential").height == runs.height  # no new run
        info = st.get_run(plain)
        assert info["status"] == "done" and info["n_done"] == 9 and json.loads(info["config"])["max_edits"] == 9
        m = queries.measurements(st.conn, run_ids=plain)
        assert m.height > made and m["edit_count"].max() == 9
        retention = m.filter((m["case_id"] == RUN_LEVEL) & (m["metric"] == "retention")).sort("edit_count")
        assert retention["edit_count"].to_list() == list(range(1, 10))  # the first 10 edits are each checkpointed
    # the same command again holds it; resuming it with its own maximum needs no --edits
    assert main(command + ["--edits", "9"]) == 0
    assert f"run {plain} already holds this experiment" in capsys.readouterr().out
    assert main(command + ["--resume", plain]) == 0
    with Store.open(store, readonly=True) as st:
        assert st.get_run(plain)["n_done"] == 9 and queries.list_runs(st.conn, kind="sequential").height == runs.height
    assert main(command + ["--resume", plain, "--edits", "7"]) != 0
    assert "made with at most 9 edits, not 7" in capsys.readouterr().err
    # the shorter run's own command (a build script run again) finds it inside the extended run
    assert main(command + ["--edits", "6"]) == 0
    assert f"run {plain} (at most 9 edits, 9 made) already holds the first 6 edits" in capsys.readouterr().out
    with Store.open(store, readonly=True) as st:
        assert queries.list_runs(st.conn, kind="sequential").height == runs.height
    # extended to 12 and killed after its 9th edit: a command for 10 edits is told to resume it, not given a
    # second run, and nothing is written; one for 6 edits still finds them in it
    with Store.open(store) as st:
        st.update_run_config(plain, {"max_edits": 12})
        st.finish_run(plain, "interrupted", error="killed (a test)")
    assert main(command + ["--edits", "10"]) != 0
    err = capsys.readouterr().err
    assert f"run {plain} is laid out like this one with at most 12 edits and has 9: resume it (--resume {plain})" in err
    assert main(command + ["--edits", "6"]) == 0
    assert f"run {plain} (at most 12 edits, 9 made) already holds the first 6 edits" in capsys.readouterr().out
    with Store.open(store, readonly=True) as st:
        assert queries.list_runs(st.conn, kind="sequential").height == runs.height
        info = st.get_run(plain)
        assert (info["status"], info["n_done"]) == ("interrupted", 9)
        assert queries.measurements(st.conn, run_ids=plain)["edit_count"].max() == 9


def test_an_interrupted_command_names_its_run_and_the_same_command_picks_it_up(
        fixture_store, cache_dir, tiny_model_dir, tmp_path, capsys, monkeypatch):
    import shutil

    from compute.cli import EXIT_INTERRUPTED, main

    store, cache = tmp_path / "copy.sqlite", tmp_path / "cache"
    shutil.copy(fixture_store, store)
    shutil.copytree(cache_dir, cache)
    with Store.open(store, readonly=True) as st:
        before = set(queries.list_runs(st.conn, kind="sequential")["run_id"])
    command = ["--store", str(store), "--cache-dir", str(cache), "--quiet", "run", "sequential", "--editor", "ROME",
               "--set", "tiny32", "--every", "3", "--panel-pool", "4", "--panel-size", "3", "--panel-any",
               "--hparams", str(fixture_store.parent / "rome.json"), "--model", tiny_model_dir,
               "--order-seed", "7", "--edits", "5"]
    real = _dies_on(monkeypatch, 4)
    capsys.readouterr()
    assert main(command) == EXIT_INTERRUPTED
    err = capsys.readouterr().err
    with Store.open(store, readonly=True) as st:
        (run,) = set(queries.list_runs(st.conn, kind="sequential")["run_id"]) - before
        info = st.get_run(run)
    assert (info["status"], info["n_done"]) == ("interrupted", 3)
    assert f"interrupted: run {run} keeps what it stored; run the same command again, or add --resume {run}" in err
    assert f"--resume {run}" in info["error"]
    monkeypatch.setattr(seq, "apply_edit", real)
    assert main(command) == 0
    with Store.open(store, readonly=True) as st:
        assert set(queries.list_runs(st.conn, kind="sequential")["run_id"]) - before == {run}
        info = st.get_run(run)
    assert (info["status"], info["n_done"]) == ("done", 5)


def test_a_run_interrupted_outside_the_command_line_is_marked_and_named(tmp_path):
    from compute.experiments.common import RunInterrupted, recording

    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        run = st.start_run(kind="knowledge", model="m", config={}, provenance={}, n_total=2)
        with pytest.raises(RunInterrupted) as stopped:
            with recording(st, run, next_step="start again"):
                raise KeyboardInterrupt
        assert stopped.value.run_id == run and stopped.value.next_step == "start again"
        info = st.get_run(run)
        assert info["status"] == "interrupted" and info["error"] == "interrupted by the user (start again)"
        other = st.start_run(kind="knowledge", model="m", config={}, provenance={}, n_total=2)
        with pytest.raises(ValueError):
            with recording(st, other):
                raise ValueError("boom")
        assert st.get_run(other)["status"] == "failed" and "boom" in st.get_run(other)["error"]



def test_sub_panel_checked_after_every_edit_whole_panel_at_checkpoints(llama, cases, tmp_path):
    """panel_check=2 of a 3-fact panel: the per-edit exact match is the first 2 facts' (scope panel_check, n 2)
    at every edit count, the whole panel's (scope panel) only at the start and the checkpoints; a run laid out
    with one check size is not resumed with another."""
    import dataclasses

    cfg = dataclasses.replace(CFG, panel_check=2)
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        run = run_sequential(llama, cases, st, editor="ROME", hp=_rome(llama), ctx=_ctx(llama, tmp_path), cfg=cfg)
        rows = st.conn.execute("SELECT edit_count, rephrase_type, metric, value FROM measurements WHERE run_id = ? "
                               "AND case_id = '*' AND rephrase_type IN ('panel', 'panel_check')", (run,)).fetchall()
        check = {c for c, t, m, v in rows if t == "panel_check" and m == "exact_match"}
        assert check == set(range(10))
        assert {c for c, t, m, v in rows if t == "panel_check" and m == "n" and v == 2} == check
        whole = {c for c, t, m, v in rows if t == "panel" and m == "exact_match"}
        assert whole == {0, 1, 2, 4, 8, 9}  # the start, the dense first checkpoints, every 4, the last edit
        assert {c for c, t, m, v in rows if t == "panel" and m == "n" and v == 3} == whole
        with pytest.raises(ValueError, match=r"panel_check 2 \(now 0\)"):
            run_sequential(llama, cases, st, editor="ROME", hp=_rome(llama), ctx=_ctx(llama, tmp_path),
                           cfg=dataclasses.replace(cfg, panel_check=0), run_id=run)


def test_measuring_beside_the_edits_writes_the_same_rows_and_resumes(llama, cases, tmp_path, monkeypatch):
    """`beside=True` measures each edit's model on a shadow copy in a second thread while the next edit is made:
    every measurement, drift, diagnostic and derived event equals the one-thread run's, also across a kill."""
    cfg = dataclasses.replace(CFG, panel_check=2, abilities_every=4)

    abilities = _weight_probe("quick")

    def untimed(st, run):
        ev = queries.run_events(st.conn, run_ids=run)
        ab = queries.abilities(st.conn, run_ids=run)
        return (sorted(r for r in ev.select("kind", "series", "edit_count", "end_count", "value", "detail").rows()
                       if r[0] not in ("timing", "resumed")), sorted(zip(ab["edit_count"], ab["score"])))

    with Store.open(tmp_path / "a.sqlite", create=True) as st:
        run_a = run_sequential(llama, cases, st, editor="ROME", hp=_rome(llama), ctx=_ctx(llama, tmp_path / "a"),
                               cfg=cfg, abilities=abilities)
        expected, events_a = _rows(st, run_a), untimed(st, run_a)
    before = {n: p.detach().clone() for n, p in llama.model.named_parameters()}
    with Store.open(tmp_path / "b.sqlite", create=True) as st:
        run_b = run_sequential(llama, cases, st, editor="ROME", hp=_rome(llama), ctx=_ctx(llama, tmp_path / "b"),
                               cfg=cfg, abilities=abilities, beside=True)
        assert _rows(st, run_b) == expected
        assert untimed(st, run_b) == events_a
        assert len(expected[0]) > 100 and expected[1] and expected[2]
        assert len(events_a[1]) >= 3 and len({s for _, s in events_a[1]}) >= 3  # the weight probe saw the edits
    assert all(torch.equal(p, before[n]) for n, p in llama.model.named_parameters())  # the model handed back

    real = _dies_on(monkeypatch, 7)
    with Store.open(tmp_path / "c.sqlite", create=True) as st:
        with pytest.raises(KeyboardInterrupt):
            run_sequential(llama, cases, st, editor="ROME", hp=_rome(llama), ctx=_ctx(llama, tmp_path / "c"),
                           cfg=cfg, abilities=abilities, beside=True)
        (run_c,) = queries.list_runs(st.conn)["run_id"]
        assert st.get_run(run_c)["n_done"] == 4  # the checkpoint at 4 was settled while edit 5 was made
        monkeypatch.setattr(seq, "apply_edit", real)
        run_sequential(llama, cases, st, editor="ROME", hp=_rome(llama), ctx=_ctx(llama, tmp_path / "c"), cfg=cfg,
                       abilities=abilities, run_id=run_c, beside=True)
        assert st.get_run(run_c)["status"] == "done"
        assert _rows(st, run_c) == expected
        assert untimed(st, run_c) == events_a


def test_a_run_stops_past_its_panel_floor_only_once_the_collapse_is_on_record(llama, cases, tmp_path, monkeypatch):
    """Study B's stop rule (issue 19): a panel floor alone (planted: the unedited fluency read as 1, every
    checkpoint's as 0; the tiny model's greedy text has none) does not end a run, which goes on to its maximum;
    with the collapse on record (the record planted: never, then from the second checkpoint's on), the run stops
    at the first checkpoint `after_collapse` edits past the floor that was measured with it, that checkpoint
    re-checks every edit, and measuring beside the edits stops it there too, with the same rows."""
    cfg = dataclasses.replace(CFG, after_collapse=2, recheck_every=8)  # checkpoints 1, 2, 4, 8, 9; 4 not full
    real = seq.panel_recall_and_fluency

    def floored(*args, **kwargs):
        recall, em, _, em_check = real(*args, **kwargs)
        return recall, em, 0.0, em_check

    monkeypatch.setattr(seq, "panel_recall_and_fluency", floored)
    monkeypatch.setattr(seq, "free_fluency", lambda *args, **kwargs: 1.0)

    def run(path, beside=False):
        with Store.open(path, create=True) as st:
            run_id = run_sequential(llama, cases, st, editor="ROME", hp=_rome(llama),
                                    ctx=_ctx(llama, path.parent / path.stem), cfg=cfg, beside=beside)
            ev = queries.run_events(st.conn, run_ids=run_id, kind="panel_floor")
            m = queries.measurements(st.conn, run_ids=run_id)
            full = sorted(set(m.filter(m["rephrase_type"] == "all_edits")["edit_count"].to_list()))
            return st.get_run(run_id)["n_done"], ev.select("series", "edit_count").rows(), full, _rows(st, run_id)

    monkeypatch.setattr(seq, "collapse_on_record", lambda store, run_id: False)  # still usable throughout
    n, floor, full, _ = run(tmp_path / "floor.sqlite")
    assert floor == [("fluency", 1)]
    assert n == 9 and full == [1, 2, 8, 9]  # the floor alone: on to the maximum

    calls = {"n": 0}

    def planted(store, run_id):
        calls["n"] += 1
        return calls["n"] >= 2  # on record from the checkpoint at 2 on

    monkeypatch.setattr(seq, "collapse_on_record", planted)
    n, floor, full, rows = run(tmp_path / "collapsed.sqlite")
    assert floor == [("fluency", 1)]
    assert n == 4 and full == [1, 2, 4]  # 2 edits past the floor at 1: stops at 4, its last check a full one
    calls["n"] = 0
    assert run(tmp_path / "beside.sqlite", beside=True) == (n, floor, full, rows)

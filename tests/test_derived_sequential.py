"""Study B's verdicts derived from a sequential run's stored rows alone, on hand-made stores: a run made
before per-edit update norms were recorded (checkpoint weight drift only), collapse as "no longer usable"
against the panel-floor crossing, and re-deriving a store's events."""

from __future__ import annotations

import json

import numpy as np
import pytest

from store import Store, derived, queries

RUN_LEVEL = derived.RUN_LEVEL


def _run(st, run_id, config=None):
    st.start_run(kind="sequential", model="m", editor="ROME", run_id=run_id,
                 config={"batch_size": 1, "collapse_fluency": 0.6, "collapse_panel": 0.1, **(config or {})})


def _drift_store(st, run_id, jump_at=None):
    """Weight drift every 10 edits to 300 with ~20 per edit added in quadrature; a 250-norm edit at `jump_at`;
    the panel's exact match after every edit falling by one fact at that edit (and at a few others)."""
    _run(st, run_id)
    rng = np.random.default_rng(0)
    f2, drift, em, rows = 0.0, [], 0.5, []
    for e in range(1, 301):
        f2 += (250.0 if e == jump_at else 20.0 * np.exp(rng.normal(scale=0.2))) ** 2
        if e == jump_at or e % 37 == 0:
            em -= 0.02
        rows.append({"run_id": run_id, "case_id": RUN_LEVEL, "edit_count": e, "rephrase_type": "panel",
                     "metric": "exact_match", "value": em})
        if e % 10 == 0:
            drift.append({"run_id": run_id, "edit_count": e, "module": "l3", "fro_delta": float(np.sqrt(f2)),
                          "rel_change": float(np.sqrt(f2)) / 174.0, "cond_number": 30.0})
    st.write_measurements(rows)
    st.write_weight_drift(drift)


def test_an_old_run_flags_its_huge_edit_from_checkpoint_weight_drift(tmp_path):
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        _drift_store(st, "huge", jump_at=111)
        _drift_store(st, "plain")
        flagged = derived.large_update_events(st.conn, "huge")
        assert [e["edit_count"] for e in flagged] == [111] and flagged[0]["end_count"] == 120
        d = json.loads(flagged[0]["detail"])
        assert d["interval"] == [110, 120] and d["z"] > 3.5
        assert flagged[0]["value"] == pytest.approx(250 / 174, rel=0.15)  # its norm, estimated, over ||W0||
        assert derived.large_update_events(st.conn, "plain") == []


def _usability_store(st, run_id, scores, perplexity, newest_es):
    _run(st, run_id)
    counts = [50 * i for i in range(len(scores))]
    rows = []
    for c, s, p in zip(counts, scores, perplexity):
        rows += [{"run_id": run_id, "edit_count": c, "batch_size": 1, "task": "nli", "task_version": "1",
                  "mode": "quick", "score": s, "n": 40, "ci_low": max(s - 0.15, 0), "ci_high": min(s + 0.15, 1),
                  "chance": 0.25, "higher_is_better": 1, "metric": "accuracy"},
                 {"run_id": run_id, "edit_count": c, "batch_size": 1, "task": "lm_perplexity", "task_version": "1",
                  "mode": "quick", "score": p, "n": 20, "chance": 49152.0, "higher_is_better": 0,
                  "metric": "perplexity"}]
    st.write_abilities(rows)
    st.write_measurements([{"run_id": run_id, "case_id": RUN_LEVEL, "edit_count": c, "rephrase_type": "newest",
                            "metric": m, "value": v} for c, e in zip(counts[1:], newest_es)
                           for m, v in (("es", e), ("n", 10))])


def test_a_run_interrupted_early_has_no_phase_where_the_same_rows_of_a_finished_run_have_one(tmp_path):
    """A run set to make 500 edits and interrupted at 50 gets no phase from its dense first checkpoints; the same
    rows in a run set to make 50 edits do."""
    counts = list(range(1, 11)) + [20, 30, 40, 50]
    recall = [1.0, 0.99, 1.0, 0.99, 1.0, 0.99, 1.0, 0.99, 0.4, 0.38, 0.35, 0.3, 0.28, 0.25]
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        for run_id, planned in (("cut", 500), ("short", 50)):
            _run(st, run_id, {"max_edits": planned})
            st.write_measurements([{"run_id": run_id, "case_id": RUN_LEVEL, "edit_count": c, "rephrase_type": "panel",
                                    "metric": m, "value": v} for c, r in zip([0] + counts, [1.0] + recall)
                                   for m, v in (("panel_recall", r), ("n", 200))])
            st.replace_events(run_id, derived.DERIVED_EVENT_KINDS, derived.derive_sequential_events(st.conn, run_id))
        phases = derived.sequential_phases(st.conn)
        assert phases.filter(phases["run_id"] == "cut").is_empty()
        short = phases.filter(phases["run_id"] == "short").row(0, named=True)
        assert short["series"] == "panel recall" and short["catastrophic"] and short["change_at"] == 9
        assert "interrupted early has none" in derived.phase_verdict(phases.filter(phases["run_id"] == "cut"), {})


def test_collapse_is_the_point_from_which_the_model_stays_unusable(tmp_path):
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        _usability_store(st, "broken", [0.9, 0.9, 0.85, 0.6, 0.28, 0.25, 0.26],
                         [60, 65, 70, 200, 900, 30000, 1e6], [1.0, 1.0, 0.9, 1.0, 0.9, 0.8])
        # abilities at chance and recovering, perplexity steady: never collapsed
        _usability_store(st, "recovers", [0.9, 0.85, 0.3, 0.27, 0.8, 0.85, 0.9],
                         [60, 62, 64, 66, 64, 63, 62], [1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
        use = derived.usability(st.conn, "broken")
        assert use.filter(use["unusable"])["edit_count"].to_list() == [200, 250, 300]
        (collapse,) = derived.collapse_event("broken", use)
        assert collapse["edit_count"] == 200 and collapse["series"] == "abilities_at_chance+perplexity_exploded"
        assert derived.collapse_event("recovers", derived.usability(st.conn, "recovers")) == []


def test_rederiving_names_the_old_online_collapse_the_panel_floor_and_keeps_other_events(tmp_path):
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        _run(st, "r")
        panel = [0.9, 0.9, 0.85, 0.8, 0.7, 0.6, 0.3, 0.05, 0.04, 0.03]
        st.write_measurements([{"run_id": "r", "case_id": RUN_LEVEL, "edit_count": 10 * i, "rephrase_type": "panel",
                                "metric": m, "value": v} for i, p in enumerate(panel)
                               for m, v in (("panel_recall", p), ("n", 20))])
        # what older code stored: the panel-floor crossing as kind "collapse", and a timing row
        st.write_events([{"run_id": "r", "kind": "collapse", "series": "panel_recall", "edit_count": 70,
                          "value": 0.05, "detail": "{}"},
                         {"run_id": "r", "kind": "timing", "series": "checkpoint", "edit_count": 0, "end_count": 10,
                          "value": 1.0, "detail": "{}"}])
        derived.rederive_sequential_events(st, "r")
        ev = queries.run_events(st.conn, run_ids="r")
        assert ev.filter(ev["kind"] == "panel_floor").select("series", "edit_count").rows() == [("panel_recall", 70)]
        assert ev.filter(ev["kind"] == "collapse").is_empty()  # no ability, no efficacy: nothing says unusable
        assert ev.filter(ev["kind"] == "timing").height == 1
        head = derived.sequential_headlines(st.conn).row(0, named=True)
        assert head["panel_floor_at"] == 70 and head["collapse_at"] is None


def test_order_means_average_an_arm_over_its_orders_with_a_t_interval():
    import polars as pl
    from scipy import stats as sps

    from store.derived import order_means

    rows = []
    for run, values in (("a0", [1.0, 0.8, 0.6]), ("a1", [1.0, 0.7, 0.5]), ("a2", [1.0, 0.9]), ("b0", [1.0, 0.4, 0.2])):
        for count, v in zip((0, 10, 20), values):
            rows.append({"run_id": run, "edit_count": count, "series": "Retained edits", "value": v, "n": 50,
                         "ci_low": v - 0.1, "ci_high": min(v + 0.1, 1.0)})
    curves = pl.DataFrame(rows)
    means = order_means(curves, {"a0": "A", "a1": "A", "a2": "A", "b0": "B"})
    a = means.filter(pl.col("arm") == "A").sort("edit_count")
    assert a["orders"].to_list() == [3, 3, 2]  # edit 20: the third order has not got there yet
    assert a["value"].to_list() == pytest.approx([1.0, 0.8, 0.55])
    half = sps.t.ppf(0.975, 2) * 0.1 / 3 ** 0.5  # sd of 0.8, 0.7, 0.9 is 0.1
    assert a["ci_low"][1] == pytest.approx(0.8 - half) and 0.8 + half > 1.0 and a["ci_high"][1] == 1.0  # a share
    assert a["ci_low"][0] == pytest.approx(1.0)  # no spread over orders, no band
    b = means.filter(pl.col("arm") == "B").sort("edit_count")  # one order: the run itself, its own CI and n
    assert b["value"].to_list() == [1.0, 0.4, 0.2] and b["orders"].to_list() == [1, 1, 1] and b["n"][1] == 50
    assert b["ci_low"][1] == pytest.approx(0.3)
    # two orders far apart: t(0.975, 1) = 12.7 would put the band at [-1.5, 2.5]; a share's band stops at 0 and 1,
    # a series that is not a share (here an entropy in bits) keeps its whole interval
    apart = pl.DataFrame([{"run_id": r, "edit_count": 10, "series": name, "value": v * scale, "n": 50,
                           "ci_low": None, "ci_high": None}
                          for r, v in (("c0", 0.0), ("c1", 1.0)) for name, scale in (("share", 1.0), ("bits", 9.0))])
    cut = {r["series"]: r for r in order_means(apart, {"c0": "C", "c1": "C"}).iter_rows(named=True)}
    assert (cut["share"]["ci_low"], cut["share"]["ci_high"]) == (0.0, 1.0) and cut["share"]["value"] == 0.5
    assert cut["bits"]["ci_low"] < -50 and cut["bits"]["ci_high"] > 50


def test_sequential_rules_state_the_constants_the_verdicts_use(monkeypatch):
    import sys

    from store import derived, stats

    rules = derived.sequential_rules()
    assert "above 3.5" in rules["disabling_edit"] and "25%" in rules["collapse"] and "10x" in rules["collapse"]
    monkeypatch.setattr(stats, "OUTLIER_Z", 5.0)
    monkeypatch.setattr(sys.modules[derived.sequential_rules.__module__], "CHANCE_SHARE", 0.3)  # where it is read
    rules = derived.sequential_rules()
    assert "above 5" in rules["disabling_edit"] and "30%" in rules["collapse"]  # the words follow the code


def test_ability_means_over_orders_average_perplexity_on_the_log_scale():
    import polars as pl

    from store.derived import ability_order_means

    rows = [dict(run_id=r, edit_count=50, task=t, category="c", chance=ch, metric=m, score=v, n=80,
                 ci_low=v * 0.9, ci_high=v * 1.1)
            for r, ppl, acc in (("o0", 10.0, 0.6), ("o1", 1000.0, 0.8))
            for t, m, v, ch in (("perplexity", "perplexity", ppl, 49152.0), ("qa", "accuracy", acc, 0.25))]
    means = ability_order_means(pl.DataFrame(rows), {"o0": "arm", "o1": "arm"})
    by = {r["task"]: r for r in means.iter_rows(named=True)}
    assert by["perplexity"]["score"] == pytest.approx(100.0)  # the geometric mean of 10 and 1000
    assert by["qa"]["score"] == pytest.approx(0.7) and by["qa"]["n"] == 2 and by["qa"]["run_id"] == "arm"
    assert by["perplexity"]["ci_low"] < 100.0 < by["perplexity"]["ci_high"] and by["qa"]["metric"] == "accuracy"


def test_a_large_update_needs_a_distribution_of_the_runs_own_updates(tmp_path):
    """Too few edits, or norms within a few per cent of each other, make no outlier; a 25x edit among ten
    alike ones is one (store.derived.large_update_events, MIN_OUTLIER_EDITS and LOG_NORM_MAD_FLOOR)."""
    def flagged(norms):
        path = tmp_path / f"s{len(list(tmp_path.iterdir()))}.sqlite"
        with Store.open(path, create=True) as st:
            run = st.start_run(kind="sequential", model="m", editor="ROME", config={"batch_size": 1})
            st.write_measurements([dict(run_id=run, case_id="*", edit_count=i + 1, rephrase_type="edit",
                                        metric=m, value=v) for i, n in enumerate(norms)
                                   for m, v in (("update_norm", n), ("update_w0", 174.0))])
            return [e["edit_count"] for e in derived.large_update_events(st.conn, run)]

    assert flagged([5.06, 5.15, 5.82]) == []  # three edits are no distribution (the third had z 4.7)
    assert flagged([5.0, 5.02, 5.01, 5.03, 5.0, 5.6, 5.01, 5.02, 5.0]) == []  # 12% above alike norms: no outlier
    assert flagged([5.0, 6.1, 4.4, 5.5, 4.8, 125.0, 5.2, 4.9, 5.7, 5.1]) == [6]


def test_a_runs_recorded_editor_traits_name_it_not_its_editors_name():
    from store.derived import run_label

    traits = {"editor_traits": {"mass_editor": True, "changes_weights": True}}
    assert run_label("NewMassEditor", {}, {"batch_size": 1, **traits}) == "NewMassEditor, b=1"
    assert run_label("MEMIT", {}, {"batch_size": 1, "editor_traits": {"mass_editor": False}}) == "MEMIT"
    assert run_label("MEMIT", {}, {"batch_size": 1}) == "MEMIT, b=1"  # a run from before traits: by name


def test_a_run_with_another_key_constraint_than_the_shipped_one_says_so():
    import json
    from pathlib import Path

    from compute.editors.base import HPARAMS_DIR
    from store.derived import run_label
    from store.derived.labels import SHIPPED_KEY_CONSTRAINT

    for editor, shipped in SHIPPED_KEY_CONSTRAINT.items():  # the table follows the hparams files
        assert json.loads((Path(HPARAMS_DIR) / editor / "smollm2-135m.json").read_text())["key_constraint"] == shipped
    cfg = {"batch_size": 10}
    assert run_label("MEMIT", {"key_constraint": "plain"}, cfg) == "MEMIT, b=10"
    assert run_label("MEMIT", {"key_constraint": "all"}, cfg) == "MEMIT (keys: all), b=10"
    assert run_label("AlphaEdit", {"key_constraint": "all"}, cfg) == "AlphaEdit (keys: all), b=10"
    assert run_label("ROME", {"key_constraint": "all"}, {}) == "ROME"
    assert run_label("ROME", {"key_constraint": "mean"}, {}) == "ROME (keys: mean)"
    assert run_label("MEMIT", {}, cfg) == "MEMIT, b=10"  # made before the field existed: nothing to say


def test_a_sweeps_runs_are_named_by_their_setting_so_they_are_told_apart():
    from store.derived import run_label

    grid = {"sweep": "MEMIT-calibration", "field": "lam", "value": {"lam": 2000.0, "v_lr": 0.5, "v_steps": 25}}
    assert run_label("MEMIT", {}, grid) == "MEMIT (lam 2000, v_lr 0.5, v_steps 25)"
    assert run_label("ROME", {}, {"sweep": "ROME-layer", "field": "layer", "value": 3}) == "ROME (layer 3)"
    assert run_label("ROME", {}, {"sweep": "ROME-layer", "field": "layer", "value": 3}) != run_label(
        "ROME", {}, {"sweep": "ROME-layer", "field": "layer", "value": 4})


def test_the_study_b_table_names_a_runs_edit_order_when_it_is_not_the_default(fixture_store, tmp_path):
    """Two ROME runs on orders 0 and 1 read alike in the overview's study-B table unless it names the order."""
    import json
    import shutil

    from store import Store, derived

    copy = tmp_path / "copy.sqlite"
    shutil.copy(fixture_store, copy)
    with Store.open(copy) as st:
        run_id, cfg = st.conn.execute("SELECT run_id, config FROM runs WHERE kind = 'sequential' AND "
                                      "hparams NOT LIKE '%key_mismatch\": true%' LIMIT 1").fetchone()
        st.conn.execute("UPDATE runs SET config = ? WHERE run_id = ?",
                        (json.dumps({**json.loads(cfg), "order_seed": 1}), run_id))
        st.conn.commit()
        runs = derived.sequential_headlines(st.conn)["run"].to_list()
    assert "ROME, order 1" in runs and len(set(runs)) == len(runs)


def test_a_large_update_is_a_disabling_edit_only_when_the_model_did_not_survive_it(tmp_path):
    """The rebuild's r-ROME run: outliers of its own updates (0.3 ||W0||) with nothing after them are large
    updates, not disabling edits; an edit followed by the collapse or a broad abrupt fall is one."""
    def events(scores: dict, every: int = 3, norms=None):
        path = tmp_path / f"d{len(list(tmp_path.iterdir()))}.sqlite"
        with Store.open(path, create=True) as st:
            run = st.start_run(kind="sequential", model="m", editor="ROME", config={"batch_size": 1})
            norms = norms or [5.0, 6.1, 4.4, 5.5, 4.8, 5.3, 5.2, 4.9, 5.7, 5.1, 125.0, 5.0, 5.4, 4.7, 5.2, 5.1, 4.9,
                              5.3]
            st.write_measurements([dict(run_id=run, case_id="*", edit_count=i + 1, rephrase_type="edit",
                                        metric=m, value=v) for i, n in enumerate(norms)
                                   for m, v in (("update_norm", n), ("update_w0", 174.0))])
            rows = []
            for task, values in scores.items():
                ppl = task == "lm_perplexity"
                for k, s in enumerate(values):
                    rows.append({"run_id": run, "edit_count": every * k, "batch_size": 1, "task": task,
                                 "task_version": "1", "mode": "quick", "score": s, "n": 200,
                                 "ci_low": None if ppl else s - 0.04, "ci_high": None if ppl else s + 0.04,
                                 "chance": 49152.0 if ppl else 0.25, "higher_is_better": 0 if ppl else 1,
                                 "metric": "perplexity" if ppl else "accuracy"})
            st.write_abilities(rows)
            ev = derived.derive_sequential_events(st.conn, run)
        return {k: [e["edit_count"] for e in ev if e["kind"] == k] for k in ("large_update", "disabling_edit")}

    steady, cliff = [0.9, 0.89, 0.91, 0.9, 0.9, 0.89], [0.9, 0.89, 0.91, 0.9, 0.3, 0.28]
    assert events({"nli": steady}) == {"large_update": [11], "disabling_edit": []}
    # one task falling over an interval of three edits is not pinned on edit 11: the rebuild's entity typing
    # falls so in the first 50 edits of every ROME order and of the random control
    assert events({"nli": cliff, "qa": steady}) == {"large_update": [11], "disabling_edit": []}
    # a broad fall in the interval holding edit 11 (two tasks at once) is pinned on it ...
    assert events({"nli": cliff, "qa": cliff}) == {"large_update": [11], "disabling_edit": [11]}
    # ... as is the perplexity rising tenfold in that step
    assert events({"nli": steady, "lm_perplexity": [20, 21, 20, 20, 400, 420]})["disabling_edit"] == [11]
    # ... and one task's fall when its interval holds that edit alone (an ability checkpoint after every edit)
    one = [0.9, 0.89, 0.91] * 3 + [0.9, 0.9, 0.3] + [0.29, 0.3, 0.28] * 2
    assert events({"nli": one}, every=1)["disabling_edit"] == [11]
    # the model collapsed first (near chance from checkpoint 6 on, perplexity exploded): the broad fall in (9, 12]
    # after a large update at edit 11 disables nothing that was not disabled already
    gone = [0.9, 0.89, 0.40, 0.40, 0.26, 0.25, 0.26]
    late = events({"nli": gone, "qa": gone, "lm_perplexity": [20, 21, 900, 950, 990, 1000, 1000]})
    assert late == {"large_update": [11], "disabling_edit": []}


def test_the_tail_of_a_growing_trend_of_updates_is_no_large_update(tmp_path):
    """MEMIT b10 on the rebuild's order 0: its batches' update norms grow from about 27 to 57 over its last 150
    edits, and the last three were outliers of the run's own distribution. Against the updates around them
    they are not; one update that jumps above its neighbours still is."""
    def flagged(norms):
        path = tmp_path / f"t{len(list(tmp_path.iterdir()))}.sqlite"
        with Store.open(path, create=True) as st:
            run = st.start_run(kind="sequential", model="m", editor="MEMIT", config={"batch_size": 10})
            st.write_measurements([dict(run_id=run, case_id="*", edit_count=10 * (i + 1), rephrase_type="edit",
                                        metric=m, value=v) for i, n in enumerate(norms)
                                   for m, v in (("update_norm", n), ("update_w0", 385.0))])
            return [e["edit_count"] for e in derived.large_update_events(st.conn, run)]

    steady = [27.0, 26.0, 25.5, 27.3, 25.0, 26.3, 25.4, 26.8, 25.9, 26.5] * 3
    trend = steady + [32.2, 36.2, 33.7, 40.5, 27.1, 33.7, 37.8, 29.3, 39.4, 36.3, 47.7, 50.6, 56.7]
    assert flagged(trend) == []
    jump = steady + [26.1, 25.7, 120.0, 26.4, 25.8, 26.9]
    assert flagged(jump) == [330]

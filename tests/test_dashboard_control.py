"""Study B's control run (random rank-one updates that aim at no fact) and partial orders on the Forgetting page
and the overview's study-B table: the control is named a control, has no efficacy or retention, keeps its
legend entry; a partial order joins an arm's mean over orders only when chosen."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
ES, RETAINED, PANEL = "Newest-edit efficacy (ES)", "Retained edits (exact match)", "Recall on the unedited fact panel"


@pytest.fixture(scope="module")
def control_store(tmp_path_factory):
    """ROME order 0 (done, 30 edits), ROME order 1 (interrupted at 10), a RandomRankOne control (done, 30 edits;
    its config with the traits compute now writes) and an older control run without traits (named by editor)."""
    from store import Store

    path = tmp_path_factory.mktemp("control") / "results.sqlite"
    with Store.open(path, create=True) as s:
        def run(run_id, editor, order, n_done, status, traits=True, es=0.9):
            cfg = {"batch_size": 1, "order_seed": order, "case_set": "s"}
            if traits:
                cfg["editor_traits"] = {"mass_editor": False, "changes_weights": True,
                                        "edits_facts": editor != "RandomRankOne"}
            s.start_run(kind="sequential", model="m", editor=editor, run_id=run_id, n_total=30, config=cfg,
                        hparams={"layer": 3})
            rows = []
            for e in range(10, n_done + 1, 10):
                for scope, metric, value, n in (("newest", "es", es, 10), ("all_edits", "retention_em", es - e / 100, e),
                                                ("panel", "panel_recall", 1.0 - e / 60, 200)):
                    rows += [dict(run_id=run_id, case_id="*", edit_count=e, rephrase_type=scope, metric=metric,
                                  value=value),
                             dict(run_id=run_id, case_id="*", edit_count=e, rephrase_type=scope, metric="n", value=n)]
            s.write_measurements(rows)
            s.heartbeat(run_id, n_done=n_done)
            s.finish_run(run_id, status=status)

        run("rome-o0", "ROME", 0, 30, "done")
        run("rome-o1", "ROME", 1, 10, "interrupted", es=0.5)
        run("control", "RandomRankOne", 0, 30, "done", es=0.1)
        run("control-old", "RandomRankOne", 1, 30, "done", traits=False, es=0.1)
    return path


def test_a_control_is_named_so_and_has_no_retention_in_the_study_b_table(control_store):
    from store import Store, derived

    with Store.open(control_store) as st:
        head = {r["run"]: r for r in derived.sequential_headlines(st.conn).iter_rows(named=True)}
    assert set(head) == {"ROME", "ROME, order 1", "RandomRankOne (control)", "RandomRankOne (control), order 1"}
    for name in ("RandomRankOne (control)", "RandomRankOne (control), order 1"):  # traits, or the editor's name
        assert head[name]["retention_em"] is None and head[name]["panel_recall"] == pytest.approx(0.5)
    assert head["ROME"]["retention_em"] == pytest.approx(0.6)


def _forgetting(monkeypatch, store, params):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("EDITSCOPE_STORE", str(store))
    at = AppTest.from_file(APP, default_timeout=90)
    for k, v in params.items():
        at.query_params[k] = v
    at.run()
    for k, v in params.items():
        at.query_params[k] = v
    at.switch_page("app_pages/forgetting.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _traces(at) -> tuple[dict[str, dict[str, list]], dict]:
    """(subplot title -> trace name -> the line's y values, the figure's spec), from the page's first figure:
    make_subplots titles subplot i (y axis "y{i}", "y" for the first) with the i-th annotation."""
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    titles = [a["text"] for a in spec["layout"]["annotations"]]
    by_panel: dict[str, dict[str, list]] = {}
    for t in spec["data"]:
        if t.get("name") is not None:  # a line (CI bands have no name)
            axis = t.get("yaxis", "y")
            by_panel.setdefault(titles[int(axis[1:] or 1) - 1], {})[t["name"]] = t["y"]
    return by_panel, spec


def test_the_control_is_drawn_only_where_it_means_something_and_keeps_its_legend(monkeypatch, control_store):
    at = _forgetting(monkeypatch, control_store, {"runs": "rome-o0,control", "curves": "es,retained_em,panel",
                                                   "mean": "0"})
    by_panel, spec = _traces(at)
    assert set(by_panel[ES]) == {"ROME"} and set(by_panel[RETAINED]) == {"ROME"}
    assert set(by_panel[PANEL]) == {"ROME", "RandomRankOne (control)"}
    legend = [t["name"] for t in spec["data"] if t.get("showlegend")]
    assert sorted(legend) == ["ROME", "RandomRankOne (control)"]
    assert any("a control that changes the weights" in c.value for c in at.caption)
    assert at.selectbox(key="age_run").options == ["ROME"]  # a control holds no edit to forget by age
    at = _forgetting(monkeypatch, control_store, {"runs": "control", "mean": "0"})
    assert "age_run" not in [box.key for box in at.selectbox]
    assert any("edit no fact (controls only)" in m.value for m in at.markdown)


def test_a_partial_order_joins_the_mean_over_orders_only_when_chosen(monkeypatch, control_store):
    at = _forgetting(monkeypatch, control_store, {"runs": "rome-o0", "curves": "es,panel"})
    by_panel, _ = _traces(at)
    (name, es), = by_panel[ES].items()
    assert name == "ROME (one order: 0)" and es == pytest.approx([0.9, 0.9, 0.9])  # order 1 (10 edits) left out
    at = _forgetting(monkeypatch, control_store, {"runs": "rome-o0,rome-o1", "curves": "es,panel"})
    by_panel, _ = _traces(at)
    (name, es), = by_panel[ES].items()
    assert name == "ROME: mean of 2 orders (0, 1)" and es == pytest.approx([0.7])  # chosen: the mean where both are


def test_the_controls_of_each_order_are_one_arm_averaged_over_orders(monkeypatch, tmp_path):
    """Each order's control takes its norms from that order's ROME run (its reference_run differs by order, as in
    plans/shipped.toml): the rebuild's two controls were drawn as two arms of one order each, never averaged."""
    from store import Store

    path = tmp_path / "results.sqlite"
    with Store.open(path, create=True) as s:
        for order, recall in ((0, 0.8), (1, 0.6)):
            run_id = f"control-o{order}"
            s.start_run(kind="sequential", model="m", editor="RandomRankOne", run_id=run_id, n_total=10,
                        config={"batch_size": 1, "order_seed": order, "case_set": "s",
                                "editor_traits": {"mass_editor": False, "changes_weights": True, "edits_facts": False}},
                        hparams={"layer": 3, "seed": 0, "reference_run": f"unit:sequential-ROME-o{order}"})
            s.write_measurements([dict(run_id=run_id, case_id="*", edit_count=10, rephrase_type="panel", metric=m,
                                       value=v) for m, v in (("panel_recall", recall), ("n", 200))])
            s.heartbeat(run_id, n_done=10)
            s.finish_run(run_id)
    at = _forgetting(monkeypatch, path, {"runs": "control-o0", "curves": "panel"})
    by_panel, _ = _traces(at)
    (name, recall), = by_panel[PANEL].items()
    assert name == "RandomRankOne (control): mean of 2 orders (0, 1)" and recall == pytest.approx([0.7])


def test_an_abrupt_change_is_shown_as_the_step_between_its_checkpoints(monkeypatch, control_store, tmp_path):
    """An abrupt fall between the unedited model and the first ability checkpoint read 'At edit 0', as if before
    any edit: it is the step '0 → 50' now; an event at one edit keeps its edit count."""
    import shutil

    from store import Store

    path = tmp_path / "events.sqlite"
    shutil.copy(control_store, path)
    with Store.open(path) as s:
        s.write_events([{"run_id": "rome-o0", "kind": kind, "series": series, "edit_count": at, "end_count": end,
                         "value": 0.5, "detail": "{}"}
                        for kind, series, at, end in (("abrupt_change", "ability:entity_typing", 0, 50),
                                                      ("disabling_edit", "update_norm", 12, 12))])
    at = _forgetting(monkeypatch, path, {"runs": "rome-o0", "mean": "0"})
    table = next(d.value for d in at.dataframe if "at" in d.value.columns and "kind" in d.value.columns)
    assert dict(zip(table["kind"], table["at"])) == {"abrupt_change": "0 → 50", "disabling_edit": "12"}


def test_the_abilities_page_says_what_a_control_line_is(monkeypatch, tmp_path):
    """The General abilities page drew the control's lines beside the edits' with nothing to say they aim at no fact
    (the Forgetting page says so); it does now, and names the claim that compares the two."""
    from streamlit.testing.v1 import AppTest

    from store import Store
    from store.metrics import wilson_ci

    path = tmp_path / "results.sqlite"
    with Store.open(path, create=True) as s:
        for run_id, editor, facts in (("rome", "ROME", True), ("control", "RandomRankOne", False)):
            s.start_run(kind="sequential", model="m", editor=editor, run_id=run_id, n_total=50,
                        config={"batch_size": 1, "order_seed": 0, "case_set": "s",
                                "editor_traits": {"mass_editor": False, "changes_weights": True, "edits_facts": facts}},
                        hparams={"layer": 3})
            s.write_abilities([{"run_id": run_id, "edit_count": at, "batch_size": 1, "task": "sentiment",
                                "task_version": "1", "mode": "quick", "score": score, "n": 100,
                                "ci_low": wilson_ci(score * 100, 100)[0], "ci_high": wilson_ci(score * 100, 100)[1],
                                "chance": 0.5, "higher_is_better": 1, "metric": "accuracy"}
                               for at, score in ((0, 0.8), (50, 0.7))])
            s.heartbeat(run_id, n_done=50)
            s.finish_run(run_id)
    monkeypatch.setenv("EDITSCOPE_STORE", str(path))
    at = AppTest.from_file(APP, default_timeout=90)
    at.query_params["runs"] = "rome,control"
    at.run()
    at.query_params["runs"] = "rome,control"
    at.switch_page("app_pages/abilities.py").run()
    assert not at.exception, [e.value for e in at.exception]
    said = [c.value for c in at.caption if "a control that changes the weights" in c.value]
    assert len(said) == 1 and said[0].startswith(r"RandomRankOne \(control\)\:") and "Findings C5" in said[0]  # as text
    next(m for m in at.multiselect if m.label == "Runs").set_value(["rome"]).run()
    assert not [c for c in at.caption if "a control that changes the weights" in c.value]


def test_the_case_explorer_opens_on_a_case_some_run_measured(monkeypatch, tmp_path):
    """The rebuild's snapshot holds 2,614 cases and runs over 660 of them: the explorer opened on the first by
    case set and id, which no run had measured."""
    from streamlit.testing.v1 import AppTest

    from store import Store

    path = tmp_path / "results.sqlite"
    with Store.open(path, create=True) as s:
        s.write_cases([dict(case_id=c, case_set="s", source="kb", relation="capital", subject=f"Land {c}",
                            prompt="The capital of {} is", true_object="Paris", new_object="Rome")
                       for c in ("a", "b", "c")], [])
        run = s.start_run(kind="robustness", model="m", editor="ROME", n_total=1, config={"case_set": "s"})
        s.write_measurements([dict(run_id=run, case_id="c", edit_count=1, rephrase_type="plain", metric="acc",
                                   value=1.0),
                              dict(run_id=run, case_id="c", edit_count=1, rephrase_type="edit", metric="edit_seconds",
                                   value=2.5)])
        s.finish_run(run)
    monkeypatch.setenv("EDITSCOPE_STORE", str(path))
    at = AppTest.from_file(APP, default_timeout=90)
    at.run()
    at.switch_page("app_pages/cases.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="case").value == "c"
    assert at.selectbox(key="case").options[0].startswith("Land c")
    # the edit's seconds are a line of their own, not a column of the per-type table (which fits 1400 px)
    assert "Edit 1 took 2.5 s." in [t.value for t in at.text]
    table = at.dataframe[0].value
    assert "edit_seconds" not in table.columns and "edit" not in set(table["rephrase_type"])


def test_the_case_explorer_opens_on_an_editors_run_rather_than_a_newer_control(monkeypatch, tmp_path):
    """A control edits no fact: for a case both measured, the explorer's default run is the editor's, though the
    control's run is newer; the control stays one choice away."""
    import time

    from streamlit.testing.v1 import AppTest

    from store import Store, derived

    path = tmp_path / "results.sqlite"
    with Store.open(path, create=True) as s:
        s.write_cases([dict(case_id="c", case_set="s", source="kb", relation="capital", subject="Land c",
                            prompt="The capital of {} is", true_object="Paris", new_object="Rome")], [])
        for run_id, editor in (("rome", "ROME"), ("control", "RandomRankOne")):
            s.start_run(kind="sequential", model="m", editor=editor, run_id=run_id, n_total=1, config={
                "case_set": "s", "editor_traits": {"edits_facts": editor == "ROME"}})
            s.write_measurements([dict(run_id=run_id, case_id="c", edit_count=1, rephrase_type="plain", metric="es",
                                       value=1.0)])
            s.finish_run(run_id)
            time.sleep(1.1)  # the control starts later: newest first would pick it
        runs = derived.case_runs(s.conn, "c")
    assert runs["run_id"].to_list() == ["control", "rome"] and runs["edits_facts"].to_list() == [False, True]
    monkeypatch.setenv("EDITSCOPE_STORE", str(path))
    at = AppTest.from_file(APP, default_timeout=90)
    at.run()
    at.switch_page("app_pages/cases.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="run").value == "rome" and at.selectbox(key="run").options[1].endswith("· control")

"""Dashboard: pure chart builders, and AppTest runs of every page on a store made by the real compute code
(knowledge base, cases and a knowledge run on a tiny model)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from compute.cli import main
from dashboard import charts, tables

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")


def _app(monkeypatch, store):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("EDITSCOPE_STORE", str(store))
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    return at


def test_recall_by_quartile_chart_has_ci_whiskers_and_n_in_hover():
    df = pl.DataFrame({"quartile": [1, 2, 3, 4], "n": [10, 11, 12, 13], "recall": [0.1, 0.2, 0.4, 0.6],
                       "ci_low": [0.0, 0.05, 0.2, 0.4], "ci_high": [0.4, 0.5, 0.6, 0.8]})
    fig = charts.recall_by_quartile(df)
    assert len(fig.data) == 1 and list(fig.data[0].x) == ["Q1", "Q2", "Q3", "Q4"]
    assert list(fig.data[0].customdata) == [10, 11, 12, 13] and "n = " in fig.data[0].hovertemplate
    assert fig.data[0].error_y.array[0] == pytest.approx(0.3)
    assert "quartile" in fig.layout.xaxis.title.text and "recall" in fig.layout.yaxis.title.text


def test_recall_by_quartile_chart_splits_by_relation():
    df = pl.DataFrame({"relation": ["a", "a", "b", "b"], "quartile": [1, 2, 1, 2], "n": [3, 3, 3, 3],
                       "recall": [0.1, 0.2, 0.3, 0.4], "ci_low": [0.0] * 4, "ci_high": [0.9] * 4})
    assert [t.name for t in charts.recall_by_quartile(df).data] == ["a", "b"]


def test_overview_page_renders_the_store(monkeypatch, fixture_store):
    at = _app(monkeypatch, fixture_store)
    assert not at.exception
    assert at.title[0].value == "EditScope"
    labels = {m.label: m.value for m in at.metric}
    assert labels["Edit cases"] == "32" and int(labels["Facts"].replace(",", "")) > 3000
    assert at.selectbox(key="case_set").value == "tiny32"
    assert len(at.dataframe) >= 3


def test_robustness_page_shows_heatmaps_per_metric_and_split(monkeypatch, fixture_store):
    at = _app(monkeypatch, fixture_store)
    at.switch_page("app_pages/robustness.py").run()
    assert not at.exception
    assert at.title[0].value == "Robustness of single edits"
    at.segmented_control(key="split").set_value("relation").run()
    assert not at.exception and at.selectbox(key="group").value


def test_forgetting_page_overlays_runs_with_events_and_weight_drift(monkeypatch, fixture_store):
    at = _app(monkeypatch, fixture_store)
    at.switch_page("app_pages/forgetting.py").run()
    assert not at.exception
    assert at.title[0].value == "Sequential editing: forgetting and collapse"
    runs = [m for m in at.multiselect if m.label == "Runs"][0]
    assert len(runs.value) == 1 and len(runs.options) == 2  # one reference run per editor by default
    runs.set_value(runs.options).run()  # options are the formatted labels; both runs
    assert not at.exception and len([m for m in at.multiselect if m.label == "Runs"][0].value) == 2
    assert len(at.get("plotly_chart")) >= 2  # curves and weight drift (and forgetting by age)
    # by default each run stands for its arm, averaged over its edit orders (one order each in this store)
    assert [b.label for b in at.get("download_button")][:2] == ["Download CSV (means over orders)",
                                                                "Download CSV (curves)"]
    assert "Phases: gradual, then catastrophic?" in [h.value for h in at.header]
    verdicts = [t.value for t in at.text if "catastrophic phase" in t.value or "No phases found" in t.value]
    assert len(verdicts) == 1 and "in 2 runs" in verdicts[0]  # both runs' change points, in one sentence, as text
    at.toggle(key="mean").set_value(False).run()  # the runs themselves, with their events
    assert not at.exception
    assert [b.label for b in at.get("download_button")][:1] == ["Download CSV (curves)"]


def test_shared_filters_come_from_the_url_and_follow_the_visitor(monkeypatch, fixture_store):
    from store import Store, derived

    with Store.open(fixture_store, readonly=True) as st_:
        labels = derived.run_labels(st_.conn, "sequential")
    original = labels.filter(labels["label"] == "ROME (original keys)")["run_id"][0]
    monkeypatch.setenv("EDITSCOPE_STORE", str(fixture_store))
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["runs"] = original
    at.run()
    at.switch_page("app_pages/forgetting.py").run()
    assert not at.exception
    assert [m for m in at.multiselect if m.label == "Runs"][0].value == [original]
    assert at.query_params["runs"] == [original] or at.query_params["runs"] == original


def test_forgetting_curves_shade_catastrophic_phases_and_mark_events():
    curves = pl.DataFrame({"run_id": ["a"] * 4, "edit_count": [1, 2, 10, 20], "series": ["Retained edits"] * 4,
                           "value": [1.0, 1.0, 0.8, 0.1], "n": [1, 2, 10, 20], "ci_low": [0.2, 0.3, 0.5, 0.03],
                           "ci_high": [1.0, 1.0, 0.95, 0.3]})
    events = pl.DataFrame({"run_id": ["a", "a", "a"], "kind": ["phase", "disabling_edit", "collapse"],
                           "series": ["retention", "panel_exact_match", "fluency"],
                           "phase": ["catastrophic", None, None], "edit_count": [10, 12, 15],
                           "end_count": [20, None, None], "value": [-0.05, 0.1, 1.0]})
    fig = charts.forgetting_curves(curves, events, ["Retained edits"], {"a": "ROME"})
    line = [t for t in fig.data if t.mode == "lines+markers"][0]
    assert line.name == "ROME" and "n = " in line.hovertemplate and list(line.customdata[0])[0] == 1
    shapes = fig.layout.shapes
    assert any(s.type == "rect" and s.x0 == 10 and s.x1 == 20 for s in shapes)
    assert sum(s.type == "line" for s in shapes) == 2
    assert fig.layout.xaxis.title.text == "Edits made"


def test_ci_bands_of_several_runs_overlap_no_darker_than_two():
    """Newest-edit ES of four runs, 10 of 10 at every checkpoint: each run's Wilson band is [0.72, 1], and four of
    them laid over each other made one dark block that hid the lines; each is fainter, by the runs banded."""
    def bands(runs):
        curves = pl.DataFrame({"run_id": [r for r in runs for _ in range(3)], "edit_count": [10, 20, 30] * len(runs),
                               "series": ["Newest-edit efficacy (ES)"] * 3 * len(runs), "value": [1.0] * 3 * len(runs),
                               "n": [10] * 3 * len(runs), "ci_low": [0.72] * 3 * len(runs),
                               "ci_high": [1.0] * 3 * len(runs)})
        fig = charts.forgetting_curves(curves, pl.DataFrame(), ["Newest-edit efficacy (ES)"], {r: r for r in runs})
        return [float(t.fillcolor.rsplit(",", 1)[1].rstrip(")")) for t in fig.data if t.fill == "toself"]

    one, two, four = bands(["a"]), bands(["a", "b"]), bands(["a", "b", "c", "d"])
    assert one == [charts.BAND_ALPHA] and two == [charts.BAND_ALPHA] * 2
    assert len(four) == 4 and sum(four) == pytest.approx(sum(two)) and max(four) < charts.BAND_ALPHA


def test_a_phase_is_shaded_on_its_own_series_panel_only():
    """Exact-match retention's catastrophic phase is shaded on the exact-match panel (it was shaded on none: panels
    were matched by a name prefix), and the ES retention's phase only on the ES panel."""
    names = ["Retained edits (exact match)", "Retained edits"]
    curves = pl.DataFrame({"run_id": ["a"] * 4, "edit_count": [100, 200, 100, 200], "series": names[:1] * 2 + names[1:] * 2,
                           "value": [0.5, 0.02, 0.8, 0.7], "n": [100, 200, 100, 200], "ci_low": [0.4, 0.0, 0.7, 0.6],
                           "ci_high": [0.6, 0.05, 0.9, 0.8]})
    events = pl.DataFrame({"run_id": ["a"], "kind": ["phase"], "series": ["retention_em"], "phase": ["catastrophic"],
                           "edit_count": [150], "end_count": [200], "value": [-0.01]})
    fig = charts.forgetting_curves(curves, events, names, {"a": "ROME"})
    rects = [s for s in fig.layout.shapes if s.type == "rect"]
    assert len(rects) == 1 and rects[0].xref == "x"  # the first panel: exact match
    es = events.with_columns(pl.lit("retention").alias("series"))
    rects = [s for s in charts.forgetting_curves(curves, es, names, {"a": "ROME"}).layout.shapes if s.type == "rect"]
    assert len(rects) == 1 and rects[0].xref == "x2"


def test_log_axes_write_their_ticks_out_and_the_log_edit_axis_reaches_every_panel():
    """Plotly's own log ticks label 2000 and 5000 as small '2' and '5' beside '1000' (read on the rebuild's weight
    drift); and the Forgetting page's log toggle set the bottom row's axis only, leaving the panels above linear."""
    assert charts.log_axis([20.0, 540.0]) == {"type": "log", "tickvals": [10, 20, 50, 100, 200, 500, 1000, 2000, 5000],
                                              "ticktext": ["10", "20", "50", "100", "200", "500", "1000", "2000",
                                                           "5000"]}
    assert charts.log_axis([5.0, 2e6])["ticktext"] == ["1", "10", "100", "1000", "10k", "100k", "1M", "10M"]
    assert charts.log_axis([0.004, 0.3, 0.0, None, float("nan")])["ticktext"][:3] == ["0.001", "0.002", "0.005"]
    assert charts.log_axis([0, None]) == {"type": "log"}
    names = ["Retained edits", "Recall on the unedited fact panel", "Fluency"]
    curves = pl.DataFrame({"run_id": ["a"] * 6, "edit_count": [1, 500] * 3, "series": [n for n in names for _ in "ab"],
                           "value": [1.0, 0.5] * 3, "n": [1, 500] * 3, "ci_low": [0.5, 0.4] * 3,
                           "ci_high": [1.0, 0.6] * 3})
    fig = charts.forgetting_curves(curves, pl.DataFrame(), names, {"a": "ROME"}, log_x=True)
    axes = [fig.layout[k] for k in fig.layout if k.startswith("xaxis")]
    assert len(axes) == 4 and all(a.type == "log" and "500" in a.ticktext for a in axes)  # 2 x 2, one empty
    drift = pl.DataFrame({"run_id": ["a"] * 2, "edit_count": [1, 400], "module": ["model.layers.3.mlp.down_proj"] * 2,
                          "fro_delta": [5.0, 2000.0], "rel_change": [0.02, 10.0], "cond_number": [20.0, 540.0]})
    fig = charts.weight_drift_chart(drift, {"a": "ROME"})
    assert "2000" in fig.layout.yaxis3.ticktext and fig.layout.yaxis.ticktext[-1] == "10k"


def test_weight_drift_chart_has_three_panels_per_matrix():
    drift = pl.DataFrame({"run_id": ["a"] * 4, "edit_count": [1, 2, 1, 2],
                          "module": ["model.layers.3.mlp.down_proj"] * 2 + ["model.layers.4.mlp.down_proj"] * 2,
                          "fro_delta": [1.0, 2.0, 0.5, 0.7], "rel_change": [0.01, 0.02, 0.005, 0.007],
                          "cond_number": [100.0, 120.0, 90.0, 91.0]})
    fig = charts.weight_drift_chart(drift, {"a": "MEMIT"}, styles={"a": ("#123456", "dot")})
    assert len(fig.data) == 6 and {t.name for t in fig.data} == {"MEMIT (2 matrices)"}
    assert sum(t.showlegend for t in fig.data) == 1  # one legend entry per run, however many matrices
    assert {t.line.color for t in fig.data} == {"#123456"} and "layer 4" in fig.data[3].hovertemplate
    assert "Condition number" in fig.layout.annotations[2].text


def test_rephrase_heatmap_orders_types_and_reports_n():
    df = pl.DataFrame({"editor": ["ROME", "ROME", "IKE", "IKE"], "rephrase_type": ["doubt", "plain", "plain", "doubt"],
                       "n": [5, 5, 6, 6], "mean": [0.2, 0.9, 0.8, 0.7], "ci_low": [0.1] * 4, "ci_high": [0.95] * 4,
                       "drop_from_plain": [-0.7, 0.0, 0.0, -0.1]})
    fig = charts.rephrase_heatmap(df, "mean", "acc", ("plain", "doubt"))
    assert list(fig.data[0].x) == ["plain", "doubt"] and list(fig.data[0].y) == ["IKE", "ROME"]
    assert fig.data[0].z[1] == (0.9, 0.2) or list(fig.data[0].z[1]) == [0.9, 0.2]
    assert "n = " in fig.data[0].hovertemplate and fig.layout.xaxis.title.text == "Rephrase type"
    drop = charts.rephrase_heatmap(df, "drop_from_plain", "Δ", ("plain", "doubt"), diverging=True)
    assert drop.data[0].zmid == 0
    # with the summary's paired drop columns, the hover gives the drop's own CI and n, not the type's mean
    paired = df.with_columns(pl.Series("drop_n", [4, 5, 6, 6]), pl.Series("drop_ci_low", [-0.9, 0.0, 0.0, -0.3]),
                             pl.Series("drop_ci_high", [-0.5, 0.0, 0.0, 0.1]))
    drop = charts.rephrase_heatmap(paired, "drop_from_plain", "Δ", ("plain", "doubt"), diverging=True)
    rome_doubt = drop.data[0].customdata[1][1]
    assert list(rome_doubt[:4]) == [4, -0.7, -0.9, -0.5] and "paired on the same cases" in drop.data[0].hovertemplate


def test_overview_split_by_relation_toggle(monkeypatch, fixture_store):
    at = _app(monkeypatch, fixture_store)
    at.toggle[0].set_value(True).run()
    assert not at.exception


def test_missing_store_page_says_how_to_build_one(monkeypatch, tmp_path):
    at = _app(monkeypatch, tmp_path / "absent.sqlite")
    assert not at.exception
    assert "No EditScope store" in at.error[0].value
    assert any("kb build" in m.value for m in at.markdown)


def test_corrupt_store_page_names_the_problem(monkeypatch, tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_text("not a database at all" * 20)
    at = _app(monkeypatch, bad)
    assert "not an EditScope store" in at.error[0].value


def test_dashboard_modules_do_not_import_torch():
    code = "import dashboard.charts, dashboard.data, store, store.derived, sys; " \
           "print(sorted(m for m in ('torch', 'transformers', 'compute') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(APP).parent.parent, check=True)
    assert out.stdout.strip() == "[]"


def test_popularity_page_curves_and_correlations(monkeypatch, fixture_store):
    at = _app(monkeypatch, fixture_store)
    at.switch_page("app_pages/popularity.py").run()
    assert not at.exception
    at.selectbox(key="pop_metric").set_value("rev").run()
    assert not at.exception and at.title[0].value == "Knowledge popularity"


def test_popularity_shows_the_within_relation_rho_beside_the_pooled_one(monkeypatch, tmp_path):
    """Issue 19 point 4 on the shipped store (the tiny fixture has too few cases per relation for it): each
    chosen run's pooled rho and its relation-stratified rho, with the rule in a caption."""
    import shutil

    from streamlit.testing.v1 import AppTest

    shutil.copy(Path(APP).parent.parent / "store" / "results.sqlite", tmp_path / "s.sqlite")
    monkeypatch.setenv("EDITSCOPE_STORE", str(tmp_path / "s.sqlite"))
    monkeypatch.setenv("EDITSCOPE_WORKSPACE", str(tmp_path / "ws.sqlite"))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("app_pages/popularity.py").run()
    assert not at.exception
    figures = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    names = [t["y"][0] for f in figures for t in f["data"] if "Spearman" in
             str((f.get("layout", {}).get("xaxis", {}).get("title") or {}).get("text", ""))]
    runs = {n.rsplit(" · ", 1)[0] for n in names}
    assert runs and all(f"{r} · pooled" in names and f"{r} · within relation" in names for r in runs), names
    assert any("Within relation (diamond)" in c.value for c in at.caption)
    at.switch_page("app_pages/overview.py").run()  # the unedited model's table carries both as well
    headers = [str(c) for d in at.dataframe for c in d.value.columns]
    assert "rho_within" in headers and "rho" in headers
    # study B's table: the finished reference runs of the shipped settings; the superseded "keys: all" runs and the
    # partial ones under it, in an expander (issue 21 point 1)
    study_b = [d.value for d in at.dataframe if "catastrophic_from" in d.value.columns]
    main = study_b[0]["run"].to_list()
    assert main and not [r for r in main if "keys: all" in r or "[" in r], main
    other = next(e for e in at.expander if e.label.startswith("Other sequential runs"))
    assert len(study_b) == 2 and any("keys: all" in r for r in study_b[1]["run"].to_list()) and other
    # the Overview's study-A headline takes the known-facts filter too (issue 19 point 3: every study-A view)
    def study_a_n():
        table = next(d.value for d in at.dataframe if "hardest_type" in d.value.columns)
        return dict(zip(table["label"], table["n"]))

    every = study_a_n()
    at.toggle(key="widget:known").set_value(True).run()
    assert not at.exception
    known = study_a_n()
    # every finished run keeps some known facts; a run stopped after a few cases (the rebuild's FT-L at 6 of
    # 240, none of them known to the unedited model) can have none, and then has no row under the filter
    finished = [r for r in every if "[" not in r]
    assert finished and set(finished) <= set(known) <= set(every), (every, known)
    assert all(0 < known[r] < every[r] for r in known), (every, known)
    assert any("Known facts only: every type judged" in c.value for c in at.caption)


def test_both_estimates_puts_the_within_relation_rho_beside_the_pooled_one():
    from store.derived import both_estimates

    df = pl.DataFrame({"series": ["ROME", "IKE"], "rho": [0.3, -0.1], "ci_low": [0.1, -0.3], "ci_high": [0.5, 0.1],
                       "n": [40, 40], "rho_within": [0.05, None], "within_ci_low": [-0.2, None],
                       "within_ci_high": [0.3, None], "n_within": [36, 0]})
    out = both_estimates(df, "series")
    assert out.rows() == [("ROME", "pooled", 0.3, 0.1, 0.5, 40), ("IKE", "pooled", -0.1, -0.3, 0.1, 40),
                          ("ROME", "within relation", 0.05, -0.2, 0.3, 36)]  # IKE: no relation entered
    fig = charts.correlation_forest(out, "series", "frequency vs acc", colours={"ROME": "#08519c", "IKE": "#54278f"})
    assert [(t.y[0], t.marker.symbol, t.marker.color) for t in fig.data] == [
        ("ROME · pooled", "circle", "#08519c"), ("ROME · within relation", "diamond", "#08519c"),
        ("IKE · pooled", "circle", "#54278f")]


def test_an_undefined_rho_is_said_to_be_undefined_in_the_forest_and_in_tables():
    """Issue 19 point 5: a rho whose one side is constant is undefined, and says so, never a point or '+nan'."""
    from dashboard.tables import styled

    nan = float("nan")
    rho = pl.DataFrame({"series": ["ROME", "IKE"], "rho": [0.3, nan], "ci_low": [nan, nan], "ci_high": [nan, nan],
                        "n": [40, 40]})
    fig = charts.correlation_forest(rho, "series", "frequency vs acc")
    rome, ike = fig.data
    assert ike.mode == "text" and ike.text == ("rho undefined",) and "undefined" in ike.hovertemplate
    assert rome.mode == "markers" and "CI undefined" in rome.hovertemplate and rome.error_x.array == (None,)
    styler, _ = styled(rho, {"series": tables.Col("Run"), "rho": tables.Col("rho", "{:+.3f}")})
    assert styler.data["rho"].tolist() == ["+0.300", "undefined"]


def test_a_number_zero_but_for_float_rounding_reads_zero():
    """A bootstrap bound of a paired difference came out as -5e-18 and showed so in the Findings table ("{:.2g}");
    it reads 0, in a complete numeric column and in one turned into text for a missing value, and NaN and None
    stay what they are."""
    from dashboard.tables import styled

    df = pl.DataFrame({"a": [-5e-18, 0.25], "b": [3e-13, None], "c": [float("nan"), 1e-9]})
    styler, _ = styled(df, {"a": tables.Col("a", "{:.2g}"), "b": tables.Col("b", "{:.2g}"),
                            "c": tables.Col("c", "{:.2g}")})
    assert styler.to_html().count("-5e-18") == 0 and styler.data["a"].tolist() == [0.0, 0.25]
    assert styler.data["b"].tolist() == ["0", "—"] and styler.data["c"].tolist() == ["undefined", "1e-09"]


def test_binned_curves_and_forest_label_axes_and_n():
    bins = pl.DataFrame({"series": ["ROME", "ROME"], "bin": [1, 2], "lo": [1.0, 3.0], "hi": [2.9, 5.0],
                         "n": [7, 8], "mean": [0.2, 0.5], "ci_low": [0.1, 0.3], "ci_high": [0.4, 0.7]})
    fig = charts.binned_curves(bins, "Word frequency", "acc")
    assert list(fig.data[0].x) == ["B1", "B2"] and "n = " in fig.data[0].hovertemplate
    assert "Word frequency" in fig.layout.xaxis.title.text and fig.layout.yaxis.title.text == "acc"
    rho = pl.DataFrame({"series": ["ROME", "IKE"], "rho": [0.3, -0.1], "ci_low": [0.1, -0.3], "ci_high": [0.5, 0.1], "n": [40, 40]})
    forest = charts.correlation_forest(rho, "series", "frequency vs acc")
    assert [t.y[0] for t in forest.data] == ["ROME", "IKE"] and "Spearman" in forest.layout.xaxis.title.text
    assert list(forest.data[0].error_x.array) == pytest.approx([0.2])  # rho 0.3 [0.1, 0.5]
    coloured = charts.correlation_forest(rho, "series", "frequency vs acc", colours={"ROME": "#d62728", "IKE": "#000000"})
    # each row, point and whiskers, in its run's colour
    assert [(t.marker.color, t.error_x.color) for t in coloured.data] == [("#d62728", "#d62728"), ("#000000", "#000000")]


def test_case_explorer_finds_a_case_and_shows_runs_and_probes(monkeypatch, fixture_store):
    at = _app(monkeypatch, fixture_store)
    at.switch_page("app_pages/cases.py").run()
    assert not at.exception
    at.text_input(key="subject").set_value("a").run()
    assert not at.exception
    assert at.selectbox(key="case").value
    assert len(at.expander) >= 16  # every rephrase type has its probes
    from store.conventions import ANSWER_SLOT_NOTE  # the doubt probe's {answer} slot is said for what it is

    assert any(c.value == ANSWER_SLOT_NOTE for c in at.caption)
    # the run picker names each run by its label (what tells it from its siblings), as every other page does
    from dashboard.sidebar import describe_runs
    from store import Store, queries

    with Store.open(fixture_store, readonly=True) as st:
        table = describe_runs(queries.list_runs(st.conn))
    labels = dict(zip(table["run_id"].to_list(), table["base_label"].to_list()))
    shown = at.selectbox(key="run").options  # as the visitor reads them
    missing = [o for o in shown if not any(f" · {label} · " in o and o.endswith(rid) for rid, label in labels.items())]
    assert shown and not missing, (missing, labels)


def test_left_out_probes_are_named_on_the_case_explorer_refused_to_a_run_and_restored_exactly_by_cases_build(
        monkeypatch, fixture_store, tmp_path, tiny_model_dir, cache_dir, capsys):
    """A store that left out the probes no run read (what `plan snapshot` makes) says so on the Case explorer, a
    knowledge run of every type is refused with the command that restores them, and that command restores the
    very probes that were left out (they are built deterministically)."""
    import shutil

    from store import Store, queries

    store = tmp_path / "s.sqlite"
    shutil.copy(fixture_store, store)
    with Store.open(store) as st:
        st.conn.execute("DELETE FROM measurements WHERE rephrase_type = 'doubt'")  # no run read doubt probes now
        st.conn.commit()
        doubt = sorted(st.conn.execute("SELECT * FROM probes WHERE rephrase_type = 'doubt'").fetchall())
        assert doubt and st.leave_out_unread_probes() == {"tiny32": ["doubt"]}
    at = _app(monkeypatch, store)
    at.switch_page("app_pages/cases.py").run()
    at.text_input(key="subject").set_value("a").run()
    assert not at.exception
    assert any("keeps no probes of 1 rephrase types for this case's set (doubt)" in c.value for c in at.caption)
    assert not any(e.label.startswith("doubt (") for e in at.expander)
    base = ["--store", str(store), "--cache-dir", str(cache_dir), "--quiet"]
    capsys.readouterr()
    assert main(base + ["knowledge", "measure", "--set", "tiny32", "--types", "all", "--gen-tokens", "2",
                        "--model", tiny_model_dir]) != 0
    assert "cases build --set tiny32 --n 32" in capsys.readouterr().err
    assert main(base + ["cases", "build", "--n", "32", "--set", "tiny32", "--model", tiny_model_dir]) == 0
    with Store.open(store, readonly=True) as st:
        assert sorted(st.conn.execute("SELECT * FROM probes WHERE rephrase_type = 'doubt'").fetchall()) == doubt
        assert queries.probes_left_out(st.conn) == {}


def test_case_explorer_unknown_subject_says_so(monkeypatch, fixture_store):
    at = _app(monkeypatch, fixture_store)
    at.switch_page("app_pages/cases.py").run()
    at.text_input(key="subject").set_value("zzzz-no-such").run()
    assert not at.exception and "No case" in at.info[0].value


def test_overview_states_headline_figures_with_cis(monkeypatch, fixture_store):
    from store import Store, derived

    with Store.open(fixture_store, readonly=True) as st_:
        seq = derived.sequential_headlines(st_.conn)
    assert sorted(seq["run"]) == ["ROME", "ROME (original keys)"] and (seq["edits"] == 6).all()
    at = _app(monkeypatch, fixture_store)
    assert not at.exception
    # the tiny model recalls no fact on any rephrase type: no type is measurable, so no tile claims a drop
    assert not any("plain → hardest" in m.label for m in at.metric)
    assert any("No rephrase type besides the plain prompt is measurable" in i.value for i in at.info)
    assert "Sequential edits: when does the model break? (study B)" in [s.value for s in at.subheader]


def test_abilities_page_draws_small_multiples_with_chance_and_baseline(monkeypatch, fixture_store):
    at = _app(monkeypatch, fixture_store)
    at.switch_page("app_pages/abilities.py").run()
    assert not at.exception
    assert at.title[0].value == "General abilities after editing"
    assert len(at.get("plotly_chart")) == 1
    at.segmented_control(key="ability_view").set_value("batch").run()
    assert not at.exception and len(at.get("plotly_chart")) == 1
    assert len(at.dataframe) == 1  # editing performance beside the abilities
    at.segmented_control(key="ability_view").set_value("rect").run()
    assert not at.exception and at.toggle(key="ability_common").value is True
    # the fixture has no RECT run: the view says it shows plain ROME only
    assert any("No ROME + RECT run" in i.value for i in at.info)
    assert len(at.get("plotly_chart")) == 1
    at.segmented_control(key="ability_mode").set_value("full").run()  # the fixture's runs have no full suite
    at.segmented_control(key="ability_view").set_value("sequential").run()
    assert not at.exception and "No full-mode ability scores from sequential runs yet." in [i.value for i in at.info]


def test_runs_scored_only_at_their_end_start_from_the_unedited_model():
    from store.derived import start_from_unedited

    def rows(run_id, kind, counts_tasks, score):
        return pl.DataFrame([{"run_id": run_id, "label": run_id.upper(), "kind": kind, "editor": "ROME",
                              "rect_top": 1.0, "key_mismatch": False, "edit_count": c, "batch_size": 1 if kind != "abilities" else 0,
                              "task": t, "task_version": v, "mode": "full", "score": score, "n": 10}
                             for c, t, v in counts_tasks])

    part = pl.concat([rows("r", "sequential", [(500, "a", "1"), (500, "b", "1")], 0.2),
                      rows("s", "sequential", [(0, "a", "1"), (50, "a", "1")], 0.4)])
    unedited = rows("u", "abilities", [(0, "a", "1"), (0, "b", "2"), (0, "c", "1")], 0.9)
    out = start_from_unedited(part, unedited)
    added = out.join(part, on=["run_id", "edit_count", "task"], how="anti")
    # only run r lacked an edit-count-0 score, and only task a has the same version in the unedited run
    assert added.select("run_id", "label", "kind", "batch_size", "edit_count", "task", "score").rows() == [
        ("r", "R", "sequential", 1, 0, "a", 0.9)]
    assert out.height == part.height + 1 and out.schema == part.schema
    assert start_from_unedited(part, unedited.clear()).equals(part)


def test_ability_scores_carry_each_runs_key_variant_for_the_rect_sweep(tmp_path):
    # the RECT comparison's default runs are the ROME runs with r-ROME keys: ability_scores says which those are
    from store import Store
    from store.derived import ability_scores

    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        ids = {name: st.start_run(kind=kind, model="m", editor=editor, hparams=hp)
               for name, kind, editor, hp in [("r", "sequential", "ROME", {"rect_top": 0.4}),
                                              ("o", "sequential", "ROME", {"key_mismatch": True}),
                                              ("u", "abilities", None, None)]}
        st.write_abilities([dict(run_id=i, edit_count=0, batch_size=1, task="nli", mode="quick", score=0.6)
                            for i in ids.values()])
        scores = ability_scores(st.conn)
    got = dict(scores.select("run_id", "key_mismatch").iter_rows())
    assert got == {ids["r"]: False, ids["o"]: True, ids["u"]: None}
    assert dict(scores.select("run_id", "label").iter_rows())[ids["o"]] == "ROME (original keys)"


def test_runs_of_different_lengths_are_compared_on_their_shared_range():
    from store.derived import up_to_common_end

    df = pl.DataFrame({"run_id": ["rect"] * 3 + ["rome"] * 4, "edit_count": [0, 100, 200, 0, 100, 200, 500],
                       "score": [0.9, 0.8, 0.7, 0.9, 0.8, 0.6, 0.4]})
    out = up_to_common_end(df)
    assert out["edit_count"].to_list() == [0, 100, 200, 0, 100, 200]
    assert up_to_common_end(df.filter(pl.col("run_id") == "rome")).equals(df.filter(pl.col("run_id") == "rome"))
    assert up_to_common_end(df.clear()).is_empty()
    started = pl.concat([df, pl.DataFrame({"run_id": ["new"], "edit_count": [0], "score": [0.9]})])
    assert up_to_common_end(started).height == out.height + 1  # a run with no edit yet shortens nothing


def test_ability_small_multiples_have_chance_and_unedited_lines():
    df = pl.DataFrame({"run_id": ["a"] * 4, "task": ["sentiment", "sentiment", "nli", "nli"],
                       "category": ["sentiment"] * 2 + ["inference"] * 2, "edit_count": [10, 20, 10, 20],
                       "score": [0.7, 0.6, 0.5, 0.4], "n": [80] * 4, "ci_low": [0.6, 0.5, 0.4, 0.3],
                       "ci_high": [0.8, 0.7, 0.6, 0.5], "chance": [0.5, 0.5, 0.25, 0.25], "metric": ["accuracy"] * 4})
    fig = charts.ability_small_multiples(df, "edit_count", {"a": "ROME"}, "Edits made",
                                         baseline={"sentiment": 0.74, "nli": 0.62})
    runs = [t for t in fig.data if t.name == "ROME"]
    assert len(runs) == 2 and all("n = " in t.hovertemplate for t in runs)
    refs = sorted((t.name, t.y[0]) for t in fig.data if t.name != "ROME")
    assert refs == [("chance", 0.25), ("chance", 0.5), ("unedited model", 0.62), ("unedited model", 0.74)]
    assert {a.text for a in fig.layout.annotations} >= {"nli (inference)", "sentiment (sentiment)"}


def test_popularity_scatter_has_a_dot_per_case_with_n_and_exact_values_in_the_hover():
    pts = pl.DataFrame({"series": ["ROME", "ROME", "unedited"], "case_id": ["a", "b", "a"],
                        "subject": ["France", "Peru", "France"], "relation": ["capital"] * 3,
                        "frequency": [5.0, 3.0, 5.0], "value": [1.0, 0.0, 0.0]})
    fig = charts.popularity_scatter(pts, "frequency", "Word frequency", "acc")
    assert [t.name for t in fig.data] == ["ROME (n = 2)", "unedited (n = 1)"]
    assert all(abs(y - v) <= 0.04 for y, v in zip(fig.data[0].y, [1.0, 0.0]))
    assert [c[2] for c in fig.data[0].customdata] == [1.0, 0.0] and "n = 2" in fig.data[0].hovertemplate


def test_rerunning_a_finished_sequential_command_reports_it_instead_of_editing_again(tmp_path, fixture_store,
                                                                                       cache_dir, tiny_model_dir,
                                                                                       capsys):
    import shutil

    from store import Store, queries

    store = tmp_path / "copy.sqlite"
    shutil.copy(fixture_store, store)
    rome = fixture_store.parent / "rome.json"
    argv = ["--store", str(store), "--cache-dir", str(cache_dir), "--quiet", "run", "sequential", "--editor", "ROME",
            "--set", "tiny32", "--edits", "6", "--every", "3", "--panel-pool", "4", "--panel-size", "3", "--panel-any",
            "--hparams", str(rome), "--model", tiny_model_dir, "--hp", "key_mismatch=true"]
    with Store.open(store, readonly=True) as st:
        before = queries.list_runs(st.conn, kind="sequential").height
    assert main(argv) == 0
    assert "already holds this experiment" in capsys.readouterr().out
    with Store.open(store, readonly=True) as st:
        assert queries.list_runs(st.conn, kind="sequential").height == before


def test_a_chance_level_far_off_the_scores_is_named_not_drawn():
    df = pl.DataFrame({"run_id": ["a", "a"], "task": ["lm_perplexity"] * 2, "category": ["language modelling"] * 2,
                       "edit_count": [0, 50], "score": [48.0, 52.0], "n": [20, 20], "ci_low": [45.0, 49.0],
                       "ci_high": [51.0, 55.0], "chance": [49152.0, 49152.0], "metric": ["perplexity"] * 2})
    fig = charts.ability_small_multiples(df, "edit_count", {"a": "ROME"}, "Edits made", baseline={"lm_perplexity": 48.2})
    assert [t.name for t in fig.data] == ["ROME", "unedited model"]
    assert "<br>chance 49,152" in fig.layout.annotations[0].text

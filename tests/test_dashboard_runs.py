"""Dashboard views keyed by run: a 1-case run never overwrites a 240-case run of the same editor, a run keeps
one colour on every chart of every page, and every widget round-trips through the URL (defaults left out)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pytest

from dashboard import charts

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
TYPES = ("plain", "paraphrase", "cloze")


@pytest.fixture(scope="module")
def two_rome_store(tmp_path_factory):
    """A store written through the Store API: a knowledge run over every type (cloze never recalled, so it is
    unmeasurable), a finished 240-case ROME robustness run (acc on plain 206/240) and a later finished 1-case
    ROME run whose one case failed (acc 0 on plain)."""
    from store import Store

    path = tmp_path_factory.mktemp("two-rome") / "results.sqlite"
    ids = [f"c{i:03d}" for i in range(240)]
    with Store.open(path, create=True) as s:
        s.write_kb([dict(relation="capital", subject_kind="country", description="capital city")],
                   [dict(subject=f"S{i}", kind="country", frequency=1.0 + i / 40) for i in range(240)],
                   [dict(relation="capital", subject=f"S{i}", object="Paris") for i in range(240)])
        s.write_cases([dict(case_id=c, case_set="set240", source="kb", relation="capital", subject=f"S{i}",
                            prompt="The capital of {} is", true_object="Paris", new_object="Rome",
                            frequency=1.0 + i / 40, popularity_quartile=1 + i * 4 // 240) for i, c in enumerate(ids)], [])
        k = s.start_run(kind="knowledge", model="m", run_id="knowledge-1",
                        config={"case_set": "set240", "rephrase_types": list(TYPES)})
        s.write_measurements([dict(run_id=k, case_id=c, edit_count=0, rephrase_type=t, metric=m,
                                   value=float(m == "rev" and t != "cloze" and i < 120))
                              for i, c in enumerate(ids) for t in TYPES for m in ("rev", "acc")])
        s.finish_run(k)
        big = s.start_run(kind="robustness", model="m", editor="ROME", run_id="robustness-big", n_total=240,
                          config={"baseline_run": k, "case_set": "set240"})
        s.write_measurements([dict(run_id=big, case_id=c, edit_count=1, rephrase_type=t, metric=m,
                                   value=float((i < {"plain": 206, "paraphrase": 100, "cloze": 0}[t]) == (m == "acc")))
                              for i, c in enumerate(ids) for t in TYPES for m in ("acc", "rev")])
        s.heartbeat(big, n_done=240)
        s.finish_run(big)
        one = s.start_run(kind="robustness", model="m", editor="ROME", run_id="robustness-one", n_total=1,
                          config={"baseline_run": k, "case_set": "set240"})
        s.write_measurements([dict(run_id=one, case_id=ids[0], edit_count=1, rephrase_type=t, metric="acc", value=0.0)
                              for t in TYPES])
        s.heartbeat(one, n_done=1)
        s.finish_run(one)
        s.conn.execute("UPDATE runs SET started_at = '2030-01-01T00:00:00+00:00' WHERE run_id = ?", (one,))
        s.conn.commit()
    return path


def _app(monkeypatch, store, page=None, params=None):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("EDITSCOPE_STORE", str(store))
    at = AppTest.from_file(APP, default_timeout=90)
    for k, v in (params or {}).items():  # a link opened in a fresh browser
        at.query_params[k] = v
    at.run()
    for k, v in (params or {}).items():  # AppTest opens the default page first: the link again for the page
        at.query_params[k] = v
    if page:
        at.switch_page(f"app_pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _figures(at) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def _runs_widget(at):
    return [m for m in at.multiselect if m.label == "Runs"][0]


def test_the_heat_map_shows_the_240_case_run_unless_the_1_case_run_is_chosen(monkeypatch, two_rome_store):
    at = _app(monkeypatch, two_rome_store, "robustness")
    assert _runs_widget(at).value == ["robustness-big"]  # the reference run only
    heat = _figures(at)[0]["data"][0]
    assert heat["y"] == ["ROME"]
    col = heat["x"].index("plain")
    assert heat["z"][0][col] == pytest.approx(206 / 240) and heat["customdata"][0][col][0] == 240
    # the type the unedited model never answers is marked, not drawn as a real 0.00
    cloze = heat["x"].index("cloze*")
    assert heat["z"][0][cloze] is None and heat["text"][0][cloze] == "n/m"
    assert "0 of 240" in heat["customdata"][0][cloze][4]

    _runs_widget(at).set_value(["robustness-big", "robustness-one"]).run()
    assert not at.exception
    heat = _figures(at)[0]["data"][0]
    assert heat["y"][0] == "ROME" and "1/1 cases" in heat["y"][1] and "done" in heat["y"][1]
    assert heat["z"][0][col] == pytest.approx(206 / 240) and heat["z"][1][col] == 0.0
    assert heat["customdata"][1][col][0] == 1


def test_the_robustness_page_sets_each_type_against_the_models_own_knowledge(monkeypatch, two_rome_store):
    """Study A's control: on the 120 known facts (whose edits all held on the plain prompt) paraphrase acc
    100/120 against the unedited model's rev 120/120: the gap is -0.17, with its paired CI below 0; cloze,
    which the unedited model never answers, is marked n/m."""
    at = _app(monkeypatch, two_rome_store, "robustness")
    (table,) = [d.value for d in at.dataframe if "gap" in d.value.columns]
    rows = {r["type"]: r for r in table.to_dict("records")}
    assert set(rows) == {"paraphrase", "cloze (n/m)"} and rows["paraphrase"]["n"] == 120
    assert rows["paraphrase"]["edit"].startswith("0.83 [") and rows["paraphrase"]["knowledge"].startswith("1.00 [")
    gap = rows["paraphrase"]["gap"]
    assert gap.startswith("-0.17 [") and float(gap.split("[")[1].split(",")[1].rstrip("]")) < 0, gap
    assert "Download CSV (control)" in [b.label for b in at.get("download_button")]


def test_the_overview_gives_the_hardest_types_gap_against_the_models_own_knowledge(monkeypatch, two_rome_store):
    at = _app(monkeypatch, two_rome_store)
    (table,) = [d.value for d in at.dataframe if "gap" in d.value.columns]
    row = table.to_dict("records")[0]
    assert row["hardest_type"] == "paraphrase" and row["gap"].startswith("-0.17 [") and row["gap"].endswith(" n=120")
    assert row["n"] == 240  # the run's cases; the control's 120 known facts stand in its own cell


def test_a_workspace_run_is_offered_but_never_a_default(monkeypatch, two_rome_store, tmp_path):
    """A visitor's finished run in the workspace store forms its own label ('ROME · workspace') but is no
    reference run: pages default to the shipped ones and show it only when chosen."""
    from store import Store

    ws = tmp_path / "workspace.sqlite"
    monkeypatch.setenv("EDITSCOPE_WORKSPACE", str(ws))
    with Store.open(ws, create=True) as s:
        mine = s.start_run(kind="robustness", model="m", editor="ROME", run_id="robustness-visitor", n_total=240,
                           config={"baseline_run": "knowledge-1", "case_set": "set240"})
        s.write_measurements([dict(run_id=mine, case_id=f"c{i:03d}", edit_count=1, rephrase_type="plain",
                                   metric="acc", value=0.0) for i in range(240)])
        s.heartbeat(mine, n_done=240)
        s.finish_run(mine)
    at = _app(monkeypatch, two_rome_store, "robustness")
    runs = _runs_widget(at)
    assert runs.value == ["robustness-big"]
    assert any(o.startswith("ROME · workspace [done, 240/240 cases") for o in runs.options)  # offered, marked
    runs.set_value(["robustness-big", "robustness-visitor"]).run()
    assert not at.exception
    assert any("workspace" in y for y in _figures(at)[0]["data"][0]["y"])
    at = _app(monkeypatch, two_rome_store)  # the Overview's tiles: the shipped reference run only
    assert [m.label for m in at.metric if "plain → hardest" in m.label] == ["ROME: acc, plain → hardest"]


def test_the_overview_tile_is_the_reference_run_and_skips_unmeasurable_types(monkeypatch, two_rome_store):
    at = _app(monkeypatch, two_rome_store)
    tiles = [m for m in at.metric if "plain → hardest" in m.label]
    assert [m.label for m in tiles] == ["ROME: acc, plain → hardest"]  # one tile, not two
    assert tiles[0].value == f"{206 / 240:.2f} → {100 / 240:.2f}" and tiles[0].delta.endswith("on paraphrase")  # not cloze
    assert any(c.value.startswith("One tile per finished reference run.") for c in at.caption)


def test_an_overview_tile_of_a_partial_run_says_so(monkeypatch, two_rome_store, tmp_path):
    """A rebuild in progress: the reference run is interrupted (the most done of two that are), and the tile's label
    and the caption say so."""
    import shutil
    import sqlite3

    store = tmp_path / "partial.sqlite"
    shutil.copy(two_rome_store, store)
    with sqlite3.connect(store) as conn:
        conn.execute("UPDATE runs SET status = 'interrupted' WHERE run_id IN ('robustness-big', 'robustness-one')")
    at = _app(monkeypatch, store)
    assert [m.label for m in at.metric if "plain → hardest" in m.label] == \
        ["ROME [interrupted, 240/240 done]: acc, plain → hardest"]
    assert any("1 of them partial, their status in the label" in c.value for c in at.caption), \
        [c.value for c in at.caption]
    # the long label of a partial run pushed an 11-column table past a 1400 px window (a snapshot of the rebuild,
    # in Chromium): each acc now stands beside its CI in one column, and the drop is on the tile, not in the table
    table = at.dataframe[0].value
    assert list(table.columns) == ["label", "plain", "hardest_type", "hardest", "gap", "n"]
    value, low, high = (float(v) for v in re.fullmatch(r"(\S+) \[(\S+), (\S+)\]", table["plain"][0]).groups())
    assert value == round(206 / 240, 2) and low < value < high, table["plain"].tolist()


def test_the_overviews_runs_table_gives_each_error_in_full_below_it(monkeypatch, two_rome_store, tmp_path):
    """The Runs table's Error column is 60 px ('interrupte' on the rebuild's snapshot) and nothing gave the rest."""
    import shutil
    import sqlite3

    store = tmp_path / "errors.sqlite"
    shutil.copy(two_rome_store, store)
    error = "interrupted: the machine went away at edit 116; run the same command again to continue"
    with sqlite3.connect(store) as conn:
        conn.execute("UPDATE runs SET status = 'interrupted', error = ? WHERE run_id = 'robustness-one'", (error,))
    at = _app(monkeypatch, store)
    box = next(e for e in at.expander if e.label == "Errors in full (1)")
    assert [t.value for t in box.text] == [f"robustness-one: {error}"]


def _with_plan_status(src, dst, units, plan="plans/shipped.toml", taken="2026-12-07T09:00Z") -> None:
    import shutil
    import sqlite3

    from store.conventions import PLAN_STATUS_META

    shutil.copy(src, dst)
    record = {"plan": plan, "taken_at": taken, "timings_from": None, "units": units}
    with sqlite3.connect(dst) as conn:
        conn.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (PLAN_STATUS_META, json.dumps(record)))


def _unit(uid, state, done=None, total=None, left=None, estimated=True, held=False):
    return {"unit": uid, "kind": "sequential", "state": state, "held": held, "other_hparams": False, "done": done,
            "total": total, "cpu_h_left": left, "estimated": estimated, "runs": []}


def test_the_overview_says_which_units_of_its_plan_a_snapshot_lacks(monkeypatch, two_rome_store, tmp_path):
    """A store built from part of a plan (`plan snapshot` keeps the plan's status in its meta table) says so at the
    top of the Overview, with the units and the hours left; a complete one says it is complete; a store no
    snapshot made says nothing of a plan."""
    store = tmp_path / "part.sqlite"
    _with_plan_status(two_rome_store, store, [
        _unit("kb", "done"), _unit("sequential-ROME-o1", "partial", 210, 500, 2.04),
        _unit("sequential-MEMIT-o1", "missing", left=2.25), _unit("robustness-IKE", "missing", estimated=False),
        _unit("rect", "missing", left=1.86, held=True)])
    at = _app(monkeypatch, store)
    warning = [w.value for w in at.warning if "Built from part of a plan" in w.value]
    assert warning == ["Built from part of a plan (plans/shipped.toml, as it stood at 2026-12-07T09:00Z): 1 of its 5 "
                       "units are done, 1 partial (their runs show their status, e.g. interrupted, wherever they "
                       "appear) and 3 missing; about 4.3 CPU-hours were left at one thread per unit, besides 1 "
                       "unit(s) with no stored timing to estimate them by. A view or a claim that needs a missing "
                       "unit says it is not measured."], [w.value for w in at.warning]  # held hours not counted
    box = next(e for e in at.expander if e.label == "The plan's units (1 done, 4 not)")
    table = box.dataframe[0].value
    assert table["unit"].tolist() == ["kb", "sequential-ROME-o1", "sequential-MEMIT-o1", "robustness-IKE", "rect"]
    assert table["state"].tolist() == ["done", "partial", "missing", "missing", "missing (held)"]
    assert table["progress"].tolist()[:2] == ["—", "210/500"]
    at.switch_page("app_pages/findings.py").run()
    assert "This store holds 1 of the 5 units of plans/shipped.toml (as it stood at 2026-12-07T09:00Z): a claim " \
        "that needs a unit not computed yet reads not measured yet. The Overview lists the units, with the " \
        "CPU-hours each still needs." in [c.value for c in at.caption]
    complete = tmp_path / "complete.sqlite"
    _with_plan_status(two_rome_store, complete, [_unit("kb", "done"), _unit("robustness-ROME", "done", 240, 240)])
    at = _app(monkeypatch, complete)
    assert not [w for w in at.warning if "Built from part" in w.value]
    assert "Complete: every one of the 2 units of plans/shipped.toml is done (the plan as it stood at " \
        "2026-12-07T09:00Z)." in [c.value for c in at.caption]
    # the store's text reaches a markdown element only in a shape that carries no markup
    crafted = tmp_path / "crafted.sqlite"
    _with_plan_status(two_rome_store, crafted, [_unit("kb", "done"), _unit("x", "missing", left=1.0)],
                      plan="[prize](http://evil.example) ![x](http://evil.example/x.png)", taken="www.evil.example")
    at = _app(monkeypatch, crafted)
    shown = [w.value for w in at.warning] + [c.value for c in at.caption]
    assert not [t for t in shown if "evil" in t], shown
    assert any(t.startswith("Built from part of a plan (its plan, as it stood at an unrecorded time)") for t in shown)
    at.switch_page("app_pages/findings.py").run()  # its sentence is the README's (store.findings.plan_part)
    shown = [c.value for c in at.caption]
    assert "This store holds 1 of the 2 units of its plan (as it stood at an unrecorded time): a claim that needs a " \
        "unit not computed yet reads not measured yet. The Overview lists the units, with the CPU-hours each still " \
        "needs." in shown and not [t for t in shown if "evil" in t]
    at = _app(monkeypatch, two_rome_store)
    assert not [e for e in at.expander if e.label.startswith("The plan's units")]
    assert not [w for w in at.warning if "Built from part" in w.value]


def test_popularity_series_are_runs_and_an_unmeasurable_type_is_flagged(monkeypatch, two_rome_store):
    at = _app(monkeypatch, two_rome_store, "popularity", {"rephrase_type": "cloze"})
    assert any("cloze is unmeasurable" in w.value for w in at.warning)
    names = {t["name"] for f in _figures(at)[:2] for t in f["data"]}
    assert {"ROME", "unedited model"} <= names and not any("1/1" in n for n in names)


def test_run_style_gives_the_shipped_sequential_runs_distinct_looks():
    runs = [("ROME", {}, {"batch_size": 1}), ("ROME", {"key_mismatch": True}, {"batch_size": 1}),
            ("ROME", {"rect_top": 0.2}, {"batch_size": 1}), ("ROME", {"rect_top": 0.4}, {"batch_size": 1}),
            ("ROME", {"rect_top": 0.6}, {"batch_size": 1}), ("MEMIT", {}, {"batch_size": 1}),
            ("MEMIT", {}, {"batch_size": 10}), ("AlphaEdit", {}, {"batch_size": 1}),
            ("AlphaEdit", {}, {"batch_size": 10}), ("FT-L", {}, {"batch_size": 1})]
    looks = [charts.run_style(*r) for r in runs]
    assert len(set(looks)) == len(looks)
    # an editor keeps its hue family, and the same run always gets the same look
    assert {c for (c, _), r in zip(looks, runs) if r[0] == "ROME"} <= set(charts.EDITOR_FAMILIES["ROME"])
    assert charts.run_style("MEMIT", {}, {"batch_size": 1}) == looks[5]
    assert charts.run_style(None) == charts.UNEDITED_STYLE


def test_editor_families_are_hues_a_reader_tells_apart():
    """Each editor's first shade lies at least 40 degrees of hue from every other editor's, or is a grey (the
    control): before, MEMIT's orange and AlphaEdit's red lay 23 degrees apart and read as one family."""
    import colorsys

    def hue_sat(hex_colour):
        r, g, b = (int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5))
        h, _, s = colorsys.rgb_to_hls(r, g, b)
        return h * 360, s

    firsts = {e: hue_sat(f[0]) for e, f in charts.EDITOR_FAMILIES.items()}
    greys = [e for e, (_, s) in firsts.items() if s < 0.1]
    assert greys == ["RandomRankOne"]
    hued = {e: h for e, (h, s) in firsts.items() if s >= 0.1}
    for a in hued:
        for b in hued:
            if a != b:
                d = abs(hued[a] - hued[b]) % 360
                assert min(d, 360 - d) >= 40, (a, b, hued[a], hued[b])


def test_runs_alike_but_for_the_edit_order_have_their_own_marker():
    """ROME's three orders drawn side by side (mean over orders off, or the RECT view) were three identical
    blue lines: the order is the third channel, the marker."""
    looks = [(charts.run_style("ROME", {}, {"order_seed": o}), charts.order_symbol({"order_seed": o}))
             for o in (0, 1, 2)]
    assert len({style for style, _ in looks}) == 1 and len({sym for _, sym in looks}) == 3
    assert charts.order_symbol({}) == charts.order_symbol({"order_seed": 0}) == "circle"
    curves = pl.DataFrame({"run_id": ["a", "b"], "edit_count": [10, 10], "series": ["ES", "ES"],
                           "value": [0.9, 0.8], "n": [10, 10], "ci_low": [None, None], "ci_high": [None, None]})
    styles = {"a": ("#08519c", "solid", "circle"), "b": ("#08519c", "solid", "square")}
    fig = charts.forgetting_curves(curves, pl.DataFrame(), ["ES"], {"a": "ROME", "b": "ROME, order 1"},
                                   styles=styles)
    assert [t.marker.symbol for t in fig.data if t.mode == "lines+markers"] == ["circle", "square"]


def _colours(at) -> dict[str, set[str]]:
    """legend name (the run's label, with a suffix like ' (n = 4)' or ' (5 matrices)' dropped) -> the colours
    its traces are drawn in, over every chart of the page."""
    import re

    seen: dict[str, set[str]] = {}
    for fig in _figures(at):
        for t in fig["data"]:
            name = re.sub(r" \((n = \d+|\d+ matrices)\)$", "", t.get("name") or "")
            colour = (t.get("line") or {}).get("color") or (t.get("marker") or {}).get("color")
            if name and isinstance(colour, str):
                seen.setdefault(name, set()).add(colour)
    return seen


def test_a_run_has_one_colour_in_every_chart_on_every_page(monkeypatch, fixture_store):
    from store import Store, queries
    from dashboard.sidebar import describe_runs

    with Store.open(fixture_store, readonly=True) as st_:
        table = describe_runs(queries.list_runs(st_.conn))
    expected = {r["label"]: r["colour"] for r in table.iter_rows(named=True) if r["editor"]}
    seq = table.filter(pl.col("kind") == "sequential")["run_id"].to_list()
    pages = {"popularity": {}, "forgetting": {"runs": ",".join(seq)}, "abilities": {"runs": ",".join(seq)}}
    found: dict[str, set[str]] = {}
    for page, params in pages.items():
        at = _app(monkeypatch, fixture_store, page, params)
        for name, colours in _colours(at).items():
            found.setdefault(name, set()).update(colours)
    at = _app(monkeypatch, fixture_store, "abilities")
    at.segmented_control(key="ability_view").set_value("batch").run()
    for name, colours in _colours(at).items():
        found.setdefault(name, set()).update(colours)
    runs = {name: colours for name, colours in found.items() if name in expected}
    # both sequential ROME runs, the robustness runs and the batch run were drawn, each in exactly its colour
    assert {"ROME", "ROME (original keys)", "FT-L", "IKE", "MEMIT"} <= set(runs)
    assert all(colours == {expected[name]} for name, colours in runs.items()), runs
    assert expected["ROME"] != expected["ROME (original keys)"]


WIDGETS = {
    # page -> [(kind, key or label, a value that is not the default)]
    "overview": [("toggle", "by_relation", True)],
    "robustness": [("segmented_control", "metric", "rev"), ("segmented_control", "split", "popularity_quartile"),
                   ("selectbox", "group", 3), ("toggle", "hide_nm", True), ("toggle", "held", True),
                   ("multiselect", "Runs", ["robustness-big", "robustness-one"])],
    "popularity": [("selectbox", "pop_metric", "rev"), ("selectbox", "rephrase_type", "paraphrase"),
                   ("selectbox", "Popularity feature", "connection"), ("multiselect", "Runs", ["robustness-one"]),
                   ("toggle", "held", True)],
}


def _widget(at, kind, key):
    if kind == "multiselect" or (kind == "selectbox" and key[0].isupper()):
        return [w for w in getattr(at, kind) if w.label == key][0]
    return getattr(at, kind)(key=key)


@pytest.mark.parametrize("page", sorted(WIDGETS))
def test_every_widget_round_trips_through_the_url_and_defaults_stay_out(monkeypatch, two_rome_store, page):
    at = _app(monkeypatch, two_rome_store, page)
    assert dict(at.query_params) == {}  # a fresh view's link carries nothing
    for kind, key, value in WIDGETS[page]:
        _widget(at, kind, key).set_value(value).run()
        assert not at.exception, [e.value for e in at.exception]
    url = dict(at.query_params)
    assert len(url) == len(WIDGETS[page]) and len("&".join(f"{k}={v}" for k, v in url.items())) < 300
    fresh = _app(monkeypatch, two_rome_store, page, url)
    for kind, key, value in WIDGETS[page]:
        assert _widget(fresh, kind, key).value == value, key
    assert dict(fresh.query_params) == url


def test_forgetting_and_abilities_widgets_round_trip(monkeypatch, fixture_store):
    from store import Store, derived

    with Store.open(fixture_store, readonly=True) as st_:
        labels = derived.run_labels(st_.conn, "sequential")
    original = labels.filter(labels["label"] == "ROME (original keys)")["run_id"][0]
    steps = {"forgetting": [("multiselect", "Curves", ["retained", "fluency"]), ("toggle", "log_x", True),
                            ("multiselect", "Runs", [original])],
             "abilities": [("segmented_control", "ability_view", "rect"), ("toggle", "ability_common", False),
                           ("toggle", "ability_log_x", True)]}
    for page, widgets in steps.items():
        at = _app(monkeypatch, fixture_store, page)
        assert dict(at.query_params) == {}
        for kind, key, value in widgets:
            _widget(at, kind, key).set_value(value).run()
            assert not at.exception, [e.value for e in at.exception]
        url = dict(at.query_params)
        fresh = _app(monkeypatch, fixture_store, page, url)
        for kind, key, value in widgets:
            assert _widget(fresh, kind, key).value == value, (page, key)
    at = _app(monkeypatch, fixture_store, "abilities")
    at.segmented_control(key="ability_view").set_value("batch").run()
    assert at.toggle(key="batch_log_x").value is True and "batch_log_x" not in at.query_params  # log by default
    fig = _figures(at)[0]
    assert fig["layout"]["xaxis"]["type"] == "log"


def test_tables_read_dash_for_missing_values_with_one_format_per_column():
    from dashboard.tables import Col, styled

    df = pl.DataFrame({"run": ["ROME", None], "collapse_at": [350, None], "retention": [0.7345, 0.5],
                       "hidden": [1, 2]})
    styler, config = styled(df, {"run": Col("Run"), "collapse_at": Col("Collapse at", "{:,.0f}"),
                                 "retention": Col("Retained", "{:.2f}")})
    shown = styler.data
    assert list(shown.columns) == ["run", "collapse_at", "retention"]  # only the described columns
    assert shown["run"].tolist() == ["ROME", "—"] and shown["collapse_at"].tolist() == ["350", "—"]
    assert shown["retention"].dtype.kind == "f" and "0.73" in styler.to_html()  # complete: stays numeric
    assert config["collapse_at"]["label"] == "Collapse at"


def test_a_run_the_plan_made_is_the_reference_over_one_kept_from_before_the_rebuild(two_rome_store, tmp_path):
    """Once the store holds runs made by its plan (run_events of kind plan_unit), a run without one is labelled
    pre-rebuild and a plan-made run of the same label is the reference even while it is partial, its label
    saying so; before any plan-made run, nothing is pre-rebuild."""
    import shutil

    from dashboard.sidebar import describe_runs
    from store import Store, queries

    path = tmp_path / "results.sqlite"
    shutil.copy(two_rome_store, path)
    with Store.open(path) as s:
        assert not queries.list_runs(s.conn, kind="robustness")["pre_rebuild"].any()
        new = s.start_run(kind="robustness", model="m", editor="ROME", run_id="robustness-rebuilt", n_total=240,
                          config={"baseline_run": "knowledge-1", "case_set": "set240"})
        s.write_measurements([dict(run_id=new, case_id="c000", edit_count=1, rephrase_type="plain", metric="acc",
                                   value=1.0)])
        s.heartbeat(new, n_done=60)
        s.finish_run(new, status="interrupted")
        s.write_events([{"run_id": new, "kind": "plan_unit", "series": "k", "edit_count": 0,
                         "detail": {"plan": "shipped", "unit": "robustness-ROME"}}])
        runs = queries.list_runs(s.conn, kind="robustness")
    assert dict(zip(runs["run_id"], runs["pre_rebuild"])) == {
        "robustness-rebuilt": False, "robustness-big": True, "robustness-one": True}
    assert runs.filter(pl.col("run_id") == new)["plan_unit"][0] == "robustness-ROME"
    table = describe_runs(runs)
    assert table.filter(pl.col("reference"))["run_id"].to_list() == [new]
    assert table["label"][0] == "ROME [interrupted, 60/240 done]"
    assert all(label.startswith("ROME · pre-rebuild [done") for label in table["label"][1:])


def test_the_default_runs_prefer_the_key_constraint_an_editor_ships_with(tmp_path):
    """The rebuild held a finished MEMIT b=10 run with every key a least-squares row ("keys: all") and the
    plan's own "plain" run half done: the pages' default is the shipped setting, the other a labelled variant."""
    from dashboard.sidebar import describe_runs, headline_ids
    from store import Store, queries

    with Store.open(tmp_path / "s.sqlite", create=True) as s:
        for run_id, constraint, n, status in (("memit-all", "all", 500, "done"), ("memit-plain", "plain", 240, "interrupted")):
            s.start_run(kind="sequential", model="m", editor="MEMIT", run_id=run_id, n_total=500,
                        hparams={"key_constraint": constraint}, config={"batch_size": 10})
            s.heartbeat(run_id, n_done=n)
            s.finish_run(run_id, status=status)
        table = describe_runs(queries.list_runs(s.conn))
    assert dict(zip(table["run_id"], table["other_keys"])) == {"memit-all": True, "memit-plain": False}
    assert headline_ids(table) == ["memit-plain"]
    assert table.filter(pl.col("run_id") == "memit-all")["label"][0] == "MEMIT (keys: all), b=10"


def test_a_rebuild_beside_the_shipped_store_is_offered_in_the_sidebar_and_shown_when_chosen(monkeypatch, tmp_path,
                                                                                        fixture_store, two_rome_store):
    """store/rebuild.sqlite beside the shipped store: the sidebar offers Results (shipped by default, with a
    note that a rebuild is in progress); choosing the rebuild shows its runs on every page, and the choice
    survives a page switch through the link."""
    import shutil

    from streamlit.testing.v1 import AppTest

    import store as store_pkg

    folder = tmp_path / "store"
    folder.mkdir()
    shutil.copy(fixture_store, folder / "results.sqlite")
    shutil.copy(two_rome_store, folder / "rebuild.sqlite")
    monkeypatch.delenv("EDITSCOPE_STORE", raising=False)
    monkeypatch.setattr(store_pkg, "default_store_path", lambda: folder / "results.sqlite")
    import dashboard.data

    monkeypatch.setattr(dashboard.data, "default_store_path", lambda: folder / "results.sqlite")
    at = AppTest.from_file(APP, default_timeout=90)
    at.run()
    assert not at.exception
    results = [s for s in at.sidebar.selectbox if s.label == "Results"][0]
    assert results.value == "shipped" and any("being rebuilt" in i.value for i in at.info)
    results.set_value("rebuild").run()
    assert not at.exception and any("rebuild in progress" in w.value for w in at.warning)
    assert at.query_params["results"] in ("rebuild", ["rebuild"])
    at.switch_page("app_pages/robustness.py").run()
    assert not at.exception
    runs = [m for m in at.multiselect if m.label == "Runs"][0]
    assert set(runs.options) <= {"ROME", "ROME [done, 1/1 cases, started 2030-01-01 00:00]"}  # the rebuild's runs
    # where a run lives is named after the shown store: the rebuild's runs are not called "shipped"
    at.switch_page("app_pages/cases.py").run()
    assert not at.exception
    options = [s for s in at.selectbox if s.label == "Run"][0].options
    assert options and all(" · rebuild · " in o and " · shipped · " not in o for o in options)


def test_pages_draw_finished_reference_runs_by_default_and_name_the_partial_ones(tmp_path):
    """Issue 21 point 1: a reference run still computing (the rebuild's FT-L at 6 of 240 cases) is offered and
    labelled but not drawn by default, and the page names it; a store whose reference runs are all unfinished
    still shows them."""
    from dashboard.sidebar import describe_runs, partial_references, reference_ids
    from store import Store, queries

    with Store.open(tmp_path / "s.sqlite", create=True) as s:
        for run_id, editor, n, status in (("rome", "ROME", 240, "done"), ("ftl", "FT-L", 6, "interrupted")):
            s.start_run(kind="robustness", model="m", editor=editor, run_id=run_id, n_total=240)
            s.heartbeat(run_id, n_done=n)
            s.finish_run(run_id, status=status)
        table = describe_runs(queries.list_runs(s.conn))
    assert set(table.filter(pl.col("reference"))["run_id"]) == {"rome", "ftl"}
    assert reference_ids(table) == ["rome"]
    note = partial_references(table, reference_ids(table))
    assert note is not None and "FT-L [interrupted, 6/240 done]" in note and "ROME" not in note
    assert partial_references(table, ["rome", "ftl"]) is None
    only_partial = table.filter(pl.col("run_id") == "ftl")
    assert reference_ids(only_partial) == ["ftl"]
    # a finished run of a superseded setting (MEMIT, every key a least-squares row) is not a default beside the
    # shipped setting's, and is not "still computing"
    with Store.open(tmp_path / "k.sqlite", create=True) as s:
        for run_id, constraint in (("memit-all", "all"), ("memit-plain", "plain")):
            s.start_run(kind="robustness", model="m", editor="MEMIT", run_id=run_id, n_total=240,
                        hparams={"key_constraint": constraint})
            s.heartbeat(run_id, n_done=240)
            s.finish_run(run_id)
        keys = describe_runs(queries.list_runs(s.conn))
    assert reference_ids(keys) == ["memit-plain"] and partial_references(keys, ["memit-plain"]) is None

"""Known facts (issue 19 point 3): study A's views restricted to the facts the unedited model knew, on small
stores built from plain rows, and the Robustness page's toggle in AppTest."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from store import Store, derived, queries
from store.findings import findings

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
N = 40          # cases c0..c39 in case set "s", relations r0 / r1 alternating, frequency = i
KNOWN = 10      # the unedited model names the true object on the plain prompt for c0..c9


def _run(st, run_id, kind, editor=None, config=None):
    st.start_run(kind=kind, model="m", editor=editor, run_id=run_id, config=config)
    st.heartbeat(run_id, n_done=N, n_total=N)
    st.finish_run(run_id)


def _store(st, robustness: bool = True, named_baseline: bool = True):
    """Case set 's' with a knowledge run 'k': plain rev 1 for c0..c9; paraphrase rev 2/3 (three probes, two
    name it) on even cases, 1/3 on odd ones; doubt rev 1 on c0..c4. Robustness run 'rob' (ROME) on c0..c29 only:
    acc 1 on plain for every known case and for c10..c14 (so 10 of 10 known, 15 of 30 in all), acc 1 on
    paraphrase for c0..c2 only, rev 1 on doubt for c0..c3 and c20..c29."""
    st.write_kb([{"relation": r, "description": f"relation {r}", "subject_kind": "thing", "templates": "[]"}
                 for r in ("r0", "r1")], [], [])
    st.write_cases([{"case_id": f"c{i}", "case_set": "s", "source": "kb", "relation": f"r{i % 2}", "subject": f"S{i}",
                     "prompt": f"S{i} lives in", "true_object": "A", "new_object": "B", "frequency": float(i)}
                    for i in range(N)], [])
    _run(st, "k", "knowledge", config={"case_set": "s"})
    st.write_measurements(
        [{"run_id": "k", "case_id": f"c{i}", "edit_count": 0, "rephrase_type": "plain", "metric": "rev",
          "value": float(i < KNOWN)} for i in range(N)]
        + [{"run_id": "k", "case_id": f"c{i}", "edit_count": 0, "rephrase_type": "paraphrase", "metric": "rev",
            "value": 2 / 3 if i % 2 == 0 else 1 / 3} for i in range(N)]
        + [{"run_id": "k", "case_id": f"c{i}", "edit_count": 0, "rephrase_type": "doubt", "metric": "rev",
            "value": float(i < 5)} for i in range(N)])
    if not robustness:
        return
    config = {"case_set": "s", **({"baseline_run": "k"} if named_baseline else {})}
    _run(st, "rob", "robustness", editor="ROME", config=config)
    rows = []
    for i in range(30):
        for t, acc, rev in (("plain", i < 15, False), ("paraphrase", i < 3, False),
                            ("doubt", False, i < 4 or i >= 20)):
            rows += [{"run_id": "rob", "case_id": f"c{i}", "edit_count": 1, "rephrase_type": t, "metric": "acc",
                      "value": float(acc)},
                     {"run_id": "rob", "case_id": f"c{i}", "edit_count": 1, "rephrase_type": t, "metric": "rev",
                      "value": float(rev)}]
    st.write_measurements(rows)


@pytest.fixture()
def store(tmp_path):
    with Store.open(tmp_path / "k.sqlite", create=True) as st:
        _store(st)
        yield st


# --------------------------------------------------------------------------- the store side


def test_pre_edit_recall_covers_the_runs_cases_per_type_from_its_named_baseline(store):
    df = queries.pre_edit_recall(store.conn, "rob")
    assert set(df["case_id"]) == {f"c{i}" for i in range(30)}  # c30..c39 were never edited by 'rob'
    assert df["baseline_run"].unique().to_list() == ["k"] and df.height == 30 * 3
    known = {t: set(part.filter(pl.col("known"))["case_id"]) for (t,), part in df.group_by("rephrase_type")}
    assert known["plain"] == {f"c{i}" for i in range(KNOWN)}
    assert known["paraphrase"] == {f"c{i}" for i in range(0, 30, 2)}  # 2 of 3 probes: known; 1 of 3: not
    assert known["doubt"] == {f"c{i}" for i in range(5)}
    assert queries.known_case_ids(store.conn, "rob") == sorted(f"c{i}" for i in range(KNOWN))


def test_a_run_without_a_named_baseline_uses_the_knowledge_run_of_its_case_set(tmp_path):
    with Store.open(tmp_path / "k.sqlite", create=True) as st:
        _store(st, named_baseline=False)
        _run(st, "k-other", "knowledge", config={"case_set": "other"})  # newer, of another set, knows every case
        st.write_measurements([{"run_id": "k-other", "case_id": f"c{i}", "edit_count": 0, "rephrase_type": t,
                                "metric": "rev", "value": 1.0} for i in range(N) for t in ("plain", "doubt", "cloze")])
        assert queries.baseline_of(st.conn, "rob") == "k"
        assert len(queries.known_case_ids(st.conn, "rob")) == KNOWN


def test_counts_say_how_many_facts_remain_and_a_run_without_baseline_keeps_none(tmp_path):
    with Store.open(tmp_path / "k.sqlite", create=True) as st:
        _store(st)
        _run(st, "lonely", "robustness", editor="ROME", config={"baseline_run": None})
        st.conn.execute("DELETE FROM measurement_values WHERE run IN "
                        "(SELECT id FROM measurement_names WHERE name = 'k')")
        st.conn.commit()
        counts = queries.known_facts_counts(st.conn, ["rob", "lonely"]).rows(named=True)
        assert counts[0] == {"run_id": "rob", "baseline_run": "k", "n_cases": 30, "n_baseline": 0, "n_known": 0}
        assert counts[1]["n_known"] == 0 and counts[1]["n_cases"] == 0
        assert queries.pre_edit_recall(st.conn, "rob").is_empty()
        with pytest.raises(ValueError, match="no run"):
            queries.pre_edit_recall(st.conn, "nope")
    with Store.open(tmp_path / "k2.sqlite", create=True) as st:
        _store(st)
        counts = queries.known_facts_counts(st.conn, "rob").row(0, named=True)
        assert (counts["n_cases"], counts["n_baseline"], counts["n_known"]) == (30, 30, KNOWN)


def test_robustness_summary_on_known_facts_only(store):
    def cell(df, t, m):
        return df.filter((pl.col("rephrase_type") == t) & (pl.col("metric") == m)).row(0, named=True)

    every = derived.robustness_summary(store.conn, metrics=("acc", "rev"))
    known = derived.robustness_summary(store.conn, metrics=("acc", "rev"), known_only=True)
    assert cell(every, "plain", "acc")["n"] == 30 and cell(every, "plain", "acc")["mean"] == pytest.approx(0.5)
    assert cell(known, "plain", "acc")["n"] == KNOWN and cell(known, "plain", "acc")["mean"] == pytest.approx(1.0)
    assert cell(known, "paraphrase", "acc")["mean"] == pytest.approx(0.3)
    assert cell(known, "paraphrase", "acc")["drop_from_plain"] == pytest.approx(-0.7)  # same facts on both sides
    assert cell(known, "doubt", "rev")["mean"] == pytest.approx(0.4)  # c0..c3 of c0..c9, not c20..c29
    assert cell(every, "doubt", "rev")["mean"] == pytest.approx(14 / 30)
    by_rel = derived.robustness_summary(store.conn, metrics=("acc",), by="relation", known_only=True,
                                        relations=("r0",))
    assert by_rel.filter(pl.col("rephrase_type") == "plain")["n"].to_list() == [5]


def test_small_non_binary_groups_bootstrap_over_the_known_facts_only(store):
    # magnitudes: 0.9x on known facts, 0.0x elsewhere; n < SMALL_N, so the CI is a bootstrap of the kept values
    store.write_measurements([{"run_id": "rob", "case_id": f"c{i}", "edit_count": 1, "rephrase_type": "plain",
                               "metric": "magnitude", "value": (0.9 if i < KNOWN else 0.0) + i / 1000}
                              for i in range(20)])
    every = derived.robustness_summary(store.conn, metrics=("magnitude",)).row(0, named=True)
    known = derived.robustness_summary(store.conn, metrics=("magnitude",), known_only=True).row(0, named=True)
    assert every["n"] == 20 and every["ci_low"] < 0.5
    assert known["n"] == KNOWN and 0.9 <= known["ci_low"] <= known["mean"] <= known["ci_high"] <= 0.91


def test_two_runs_each_keep_the_facts_their_own_baseline_knew(store):
    _run(store, "k2", "knowledge", config={"case_set": "s"})
    store.write_measurements([{"run_id": "k2", "case_id": f"c{i}", "edit_count": 0, "rephrase_type": "plain",
                               "metric": "rev", "value": float(i >= 25)} for i in range(N)])
    _run(store, "rob2", "robustness", editor="MEMIT", config={"case_set": "s", "baseline_run": "k2"})
    store.write_measurements([{"run_id": "rob2", "case_id": f"c{i}", "edit_count": 1, "rephrase_type": "plain",
                               "metric": "acc", "value": 1.0} for i in range(N)])
    df = derived.robustness_summary(store.conn, metrics=("acc",), known_only=True)
    plain = df.filter(pl.col("rephrase_type") == "plain")
    n = dict(zip(plain["run_id"], plain["n"]))
    assert n == {"rob": KNOWN, "rob2": N - 25}


def test_popularity_points_and_correlations_follow_the_filter(store):
    pts = queries.popularity_points_of_runs(store.conn, ["rob"], metric="rev", rephrase_type="doubt", known_only=True)
    assert pts.group_by("series").len().sort("series").rows() == [("rob", KNOWN), ("unedited", KNOWN)]
    assert pts.filter(pl.col("series") == "rob")["value"].sum() == 4  # c0..c3; c20..c29 were never known
    assert pts.filter(pl.col("series") == "unedited")["value"].sum() == 5
    every = queries.popularity_points_of_runs(store.conn, ["rob"], metric="rev", rephrase_type="doubt")
    assert every.group_by("series").len().sort("series").rows() == [("rob", 30), ("unedited", N)]
    corr = derived.robustness_correlations(store.conn, metrics=("acc",), features=("frequency",),
                                           rephrase_types=("paraphrase",), n_boot=50, known_only=True)
    row = corr.row(0, named=True)
    assert row["n"] == KNOWN and row["rho"] < 0  # acc 1 on c0..c2, the least frequent of the known facts
    everywhere = derived.robustness_correlations(store.conn, metrics=("acc",), features=("frequency",),
                                                 rephrase_types=("paraphrase",), n_boot=50)
    assert everywhere.row(0, named=True)["n"] == 30


def test_a5_reports_rev_on_the_known_facts_beside_rev_over_all_cases(store):
    rows = queries.measurements(store.conn, run_ids="rob")
    for editor in ("MEMIT", "IKE"):  # A5 needs the paper's three editors; IKE's old answer returns everywhere
        _run(store, f"rob-{editor}", "robustness", editor=editor, config={"case_set": "s", "baseline_run": "k"})
        store.write_measurements(rows.with_columns(
            pl.lit(f"rob-{editor}").alias("run_id"),
            pl.when((pl.col("rephrase_type") == "doubt") & (pl.col("metric") == "rev") & pl.lit(editor == "IKE"))
            .then(1.0).otherwise(pl.col("value")).alias("value")).to_dicts())
    a5 = {f.claim: f for f in findings(store.conn)}["A5"]
    assert "rev ROME 0.47" in a5.ours and "IKE 1.00" in a5.ours  # 14 of 30 over all cases; IKE 30 of 30
    assert ("on the facts the unedited model knew (on the plain prompt), rev on doubt ROME 0.40 [0.17, 0.69], "
            "MEMIT 0.40 [0.17, 0.69], IKE 1.00 [0.72, 1.00]") in a5.ours
    assert f"n = {KNOWN} facts each" in a5.ours
    assert f"the unedited model's own rev on doubt for them 0.50 [0.24, 0.76], n = {KNOWN}" in a5.ours
    assert a5.n == 30  # the headline figure and the verdict's rule are unchanged


# --------------------------------------------------------------------------- the Robustness page


def test_robustness_page_known_facts_toggle(monkeypatch, tmp_path):
    from streamlit.testing.v1 import AppTest

    path = tmp_path / "results.sqlite"
    with Store.open(path, create=True) as st:
        _store(st)
    monkeypatch.setenv("EDITSCOPE_STORE", str(path))
    monkeypatch.setenv("EDITSCOPE_WORKSPACE", str(tmp_path / "workspace.sqlite"))
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page("app_pages/robustness.py").run()
    assert not at.exception

    def n_by_type():
        heat = json.loads(at.get("plotly_chart")[0].proto.spec)["data"][0]
        return {t: c[0] for t, c in zip(heat["x"], heat["customdata"][0])}

    assert n_by_type() == {"doubt": 30, "paraphrase": 30, "plain": 30}
    assert "known" not in at.query_params and not at.toggle(key="widget:known").value
    at.toggle(key="widget:known").set_value(True).run()
    assert not at.exception and at.query_params["known"] == "1"
    counts = [d.value for d in at.dataframe if "n_known" in d.value.columns][0]
    assert counts["n_known"].to_list() == [KNOWN] and counts["n_cases"].to_list() == [30]
    assert n_by_type() == {"doubt": KNOWN, "paraphrase": KNOWN, "plain": KNOWN}  # the cells carry the smaller n
    at.toggle(key="widget:known").set_value(False).run()
    assert not at.exception and "known" not in at.query_params  # the default is left out of the URL


def _page(monkeypatch, tmp_path, page, params):
    from streamlit.testing.v1 import AppTest

    path = tmp_path / "results.sqlite"
    with Store.open(path, create=True) as st:
        _store(st)
    monkeypatch.setenv("EDITSCOPE_STORE", str(path))
    monkeypatch.setenv("EDITSCOPE_WORKSPACE", str(tmp_path / "workspace.sqlite"))
    at = AppTest.from_file(APP, default_timeout=60)
    for k, v in params.items():  # a link opened in a fresh browser; AppTest opens the default page first
        at.query_params[k] = v
    at.run()
    for k, v in params.items():
        at.query_params[k] = v
    at.switch_page(f"app_pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_a_link_with_known_opens_the_robustness_page_filtered(monkeypatch, tmp_path):
    at = _page(monkeypatch, tmp_path, "robustness", {"known": "1", "metric": "rev"})
    assert at.toggle(key="widget:known").value
    heat = json.loads(at.get("plotly_chart")[0].proto.spec)["data"][0]
    doubt = heat["customdata"][0][heat["x"].index("doubt")]
    assert doubt[0] == KNOWN and doubt[1] == pytest.approx(0.4)  # n and rev on doubt over the known facts


def test_popularity_page_known_facts_toggle(monkeypatch, tmp_path):
    at = _page(monkeypatch, tmp_path, "popularity", {"pop_metric": "rev", "rephrase_type": "doubt"})
    cases = [d.value for d in at.dataframe if "case_id" in d.value.columns][0]
    assert len(cases) == 30 + N  # the run's 30 cases and the unedited model's 40
    at.toggle(key="widget:known").set_value(True).run()
    assert not at.exception and at.query_params["known"] == "1"
    kept = [d.value for d in at.dataframe if list(d.value.columns) == ["series", "n"]][0]
    assert kept["n"].to_list() == [KNOWN, KNOWN]
    cases = [d.value for d in at.dataframe if "case_id" in d.value.columns][0]
    assert len(cases) == 2 * KNOWN and set(cases["case_id"]) == {f"c{i}" for i in range(KNOWN)}


def test_held_edits_only_keeps_each_runs_facts_whose_edit_took_on_the_plain_prompt(store):
    assert queries.held_case_ids(store.conn, "rob") == sorted(f"c{i}" for i in range(15))
    pts = queries.popularity_points_of_runs(store.conn, ["rob"], metric="rev", rephrase_type="paraphrase",
                                            held_only=True)
    assert pts.group_by("series").len().sort("series").rows() == [("rob", 15), ("unedited", N)]
    corr = derived.robustness_correlations(store.conn, metrics=("acc",), features=("frequency",),
                                           rephrase_types=("paraphrase",), n_boot=50, held_only=True)
    assert corr.row(0, named=True)["n"] == 15


def test_robustness_summary_on_the_edits_that_held_only(store):
    df = derived.robustness_summary(store.conn, metrics=("acc",), held_only=True)
    row = {r["rephrase_type"]: r for r in df.iter_rows(named=True)}
    assert row["plain"]["n"] == 15 and row["plain"]["mean"] == 1.0  # c0..c14 held
    assert row["paraphrase"]["n"] == 15 and row["paraphrase"]["mean"] == pytest.approx(3 / 15)
    assert row["paraphrase"]["drop_from_plain"] == pytest.approx(3 / 15 - 1)
    every = derived.robustness_summary(store.conn, metrics=("acc",))
    assert every.filter(pl.col("rephrase_type") == "paraphrase")["n"].item() == 30


def test_robustness_page_held_edits_toggle(monkeypatch, tmp_path):
    at = _page(monkeypatch, tmp_path, "robustness", {"held": "1"})
    assert at.toggle(key="held").value
    heat = json.loads(at.get("plotly_chart")[0].proto.spec)["data"][0]
    para = heat["customdata"][0][heat["x"].index("paraphrase")]
    assert para[0] == 15 and para[1] == pytest.approx(0.2)  # n and acc on paraphrase over the edits that held


def test_popularity_page_held_edits_toggle(monkeypatch, tmp_path):
    at = _page(monkeypatch, tmp_path, "popularity", {"pop_metric": "rev", "rephrase_type": "paraphrase"})
    at.toggle(key="held").set_value(True).run()
    assert not at.exception and at.query_params["held"] == "1"
    kept = [d.value for d in at.dataframe if list(d.value.columns) == ["series", "n"]][0]
    assert kept["n"].to_list() == [15]  # ROME's 15 edits that held; the unedited model keeps its 40
    cases = [d.value for d in at.dataframe if "case_id" in d.value.columns][0]
    assert len(cases) == 15 + N


def test_known_facts_only_follows_the_visitor_from_page_to_page(monkeypatch, tmp_path):
    """A shared filter: turned on on Robustness, it is on on Popularity and still on back on Robustness (as a
    page widget it was dropped at every page switch)."""
    at = _page(monkeypatch, tmp_path, "robustness", {})
    at.toggle(key="widget:known").set_value(True).run()
    for page in ("popularity", "robustness"):
        at.switch_page(f"app_pages/{page}.py").run()
        assert not at.exception and at.toggle(key="widget:known").value, page
    at.toggle(key="widget:known").set_value(False).run()
    at.switch_page("app_pages/popularity.py").run()
    assert not at.toggle(key="widget:known").value and "known" not in at.query_params

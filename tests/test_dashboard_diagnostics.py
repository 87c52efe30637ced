"""The per-edit diagnostics on the dashboard: the chart builder on a small frame, and the Robustness and
Forgetting pages on the compute-made fixture store (whose runs record their diagnostics)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from dashboard import charts

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")


def _app(monkeypatch, store, page):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("EDITSCOPE_STORE", str(store))
    at = AppTest.from_file(APP, default_timeout=90)
    at.run()
    at.switch_page(page).run()
    return at


def test_edit_size_chart_rings_outliers_on_a_log_axis():
    df = pl.DataFrame({"run_id": ["a", "a", "a", "b"], "edit_count": [1, 2, 3, 1], "case_id": ["x", "y", "z", "x"],
                       "update_rel": [0.05, 0.06, 1.4, 0.1], "outlier": [False, False, True, False],
                       "robust_z": [0.0, 0.5, 9.0, 0.0]})
    fig = charts.edit_size_chart(df, {"a": "ROME", "b": "MEMIT"}, x="edit_count", styles={"a": ("#111111", "solid")})
    names = [t.name for t in fig.data]
    assert names[:2] == ["ROME", "ROME: outliers"] and "MEMIT" in names
    assert fig.data[0].marker.color == "#111111"
    assert list(fig.data[1].y) == [1.4] and fig.layout.yaxis.type == "log"
    assert "robust z +9.0" in fig.data[1].hovertext[0]


def test_robustness_page_summarises_each_runs_edits(monkeypatch, fixture_store):
    at = _app(monkeypatch, fixture_store, "app_pages/robustness.py")
    assert not at.exception
    assert any(s.value == "What each edit did" for s in at.subheader)
    frames = [d.value for d in at.dataframe]
    summary = next(f for f in frames if "n" in f.columns and "update_rel_median" in f.columns)
    assert (summary["n"] == 4).any()  # the FT-L run's four edits
    assert any("robust standard deviations" in c.value for c in at.caption)


def test_forgetting_page_draws_each_sequential_edit(monkeypatch, fixture_store):
    at = _app(monkeypatch, fixture_store, "app_pages/forgetting.py")
    assert not at.exception
    assert any(h.value == "What each edit did" for h in at.header)


def test_case_explorer_shows_what_each_runs_edit_of_the_case_did(monkeypatch, fixture_store):
    from store import Store, diagnostics

    with Store.open(fixture_store, readonly=True) as st_:
        rows = diagnostics.diagnostic_rows(st_.conn)
        seq = {r for (r,) in st_.conn.execute("SELECT run_id FROM runs WHERE kind = 'sequential'")}
        case_id = rows.filter(pl.col("run_id").is_in(list(seq)) & (pl.col("name") == "delivered")
                              & (pl.col("target") == "plain"))["case_id"][0]
        subject = st_.conn.execute("SELECT subject FROM cases WHERE case_id = ?", (case_id,)).fetchone()[0]
    mine = rows.filter(pl.col("case_id") == case_id)
    at = _app(monkeypatch, fixture_store, "app_pages/cases.py")
    at.text_input(key="subject").set_value(subject).run()
    at.selectbox(key="case").set_value(case_id).run()
    assert not at.exception
    assert any(s.value == "What each run's edit of this case did" for s in at.subheader)
    table = next(d.value for d in at.dataframe if "delivered plain" in d.value.columns)
    edits = mine.filter(pl.col("name") == "steps")  # one row per edit of this case
    assert len(table) == edits.height >= 1
    plain = sorted(mine.filter((pl.col("name") == "delivered") & (pl.col("target") == "plain"))["value"].to_list())
    assert sorted(table["delivered plain"].astype(float)) == pytest.approx(plain)
    assert "steps" in table.columns and "run" in table.columns
    assert all(isinstance(r, str) and r for r in table["run"])  # run labels, shown as text in a table

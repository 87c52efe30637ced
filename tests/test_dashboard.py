"""Dashboard: pure chart builders, and AppTest runs of every page on a store made by the real compute code
(knowledge base, cases and a knowledge run on a tiny model)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from compute.cli import main
from dashboard import charts

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")


@pytest.fixture(scope="module")
def fixture_store(tmp_path_factory, tiny_model_dir, cache_dir, kb):
    store = tmp_path_factory.mktemp("dash") / "results.sqlite"
    base = ["--store", str(store), "--cache-dir", str(cache_dir), "--quiet"]
    assert main(base + ["kb", "build"]) == 0
    assert main(base + ["cases", "build", "--n", "32", "--set", "tiny32", "--model", tiny_model_dir]) == 0
    assert main(base + ["knowledge", "measure", "--set", "tiny32", "--gen-tokens", "2", "--model", tiny_model_dir]) == 0
    return store


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

"""AppTest of the Edit demo and Launch pages on the fixture store: rendering, the public-mode gate and the demo
form's refusals. A real demo and a real launch, written to the workspace store, are in test_dashboard_safety."""

from __future__ import annotations

import shutil
import sqlite3

import pytest

from test_dashboard import APP


def _app(monkeypatch, store, public=False, secrets=None):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("EDITSCOPE_STORE", str(store))
    if public:
        monkeypatch.setenv("EDITSCOPE_PUBLIC", "1")
    else:
        monkeypatch.delenv("EDITSCOPE_PUBLIC", raising=False)
    at = AppTest.from_file(APP, default_timeout=60)
    for key, value in (secrets or {}).items():
        at.secrets[key] = value
    at.run()
    return at


def test_demo_and_launch_pages_render(monkeypatch, fixture_store):
    at = _app(monkeypatch, fixture_store)
    at.switch_page("app_pages/demo.py").run()
    assert not at.exception and at.title[0].value == "Edit demo"
    assert "capital" in at.selectbox(key="demo_relation").options
    assert at.selectbox(key="demo_editor").options == ["AlphaEdit", "FT-L", "IKE", "MEMIT", "ROME"]
    assert at.selectbox(key="demo_editor").value == "ROME"
    # how long a demo takes is said up front; before any demo ran here, that it is not known yet
    assert any("No demo has run on this machine yet" in c.value for c in at.caption)
    at.switch_page("app_pages/launch.py").run()
    assert not at.exception and at.title[0].value == "Launch runs"
    assert len(at.dataframe) == 1
    for experiment in ("sequential", "batch"):
        at.segmented_control(key="experiment").set_value(experiment).run()
        assert not at.exception
        assert "IKE" not in at.selectbox(key="launch_editor_w").options
    at.segmented_control(key="experiment").set_value("sequential").run()
    assert at.number_input(key="launch_edits").max == 100  # launched runs stay small


def test_public_mode_hides_the_pages_without_the_passcode(monkeypatch, fixture_store):
    at = _app(monkeypatch, fixture_store, public=True, secrets={"passcode": "s3cret"})
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        at.switch_page("app_pages/demo.py")  # a page missing from st.navigation cannot be reached
    at.text_input(key="passcode").set_value("wrong").run()
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        at.switch_page("app_pages/launch.py")
    at = _app(monkeypatch, fixture_store, public=True, secrets={"passcode": "s3cret"})
    at.text_input(key="passcode").set_value("s3cret").run()
    at.switch_page("app_pages/launch.py").run()
    assert not at.exception and at.title[0].value == "Launch runs"


def test_secret_public_flag_also_gates(monkeypatch, fixture_store):
    at = _app(monkeypatch, fixture_store, secrets={"public": True, "passcode": "pw"})
    assert at.text_input(key="passcode")
    at.text_input(key="passcode").set_value("pw").run()
    at.switch_page("app_pages/demo.py").run()
    assert not at.exception and at.title[0].value == "Edit demo"


def _submit_demo(at, **values):
    for key, value in values.items():
        widget = at.selectbox(key=key) if key in ("demo_relation", "demo_editor") else at.text_input(key=key)
        widget.set_value(value)
    at.button[0].click().run()  # the form's submit button
    return at


def test_demo_form_refuses_bad_requests_with_visible_errors(monkeypatch, fixture_store, tmp_path):
    store = tmp_path / "copy.sqlite"
    shutil.copy(fixture_store, store)
    con = sqlite3.connect(store)
    con.execute("UPDATE kb_relations SET templates = ? WHERE relation = 'capital'", ('{"prompt": "Its capital is"}',))
    con.commit()
    con.close()
    at = _app(monkeypatch, store)
    at.switch_page("app_pages/demo.py").run()
    _submit_demo(at, demo_subject="France", demo_relation="capital", demo_new="Rome")
    assert not at.exception and at.error[0].value == "That request was refused:"
    assert "does not occur in the prompt" in at.code[-1].value  # the message, as plain text
    _submit_demo(at, demo_subject="France", demo_relation="airport_city", demo_new="Rome", demo_model="/no/such/model")
    assert "local model directory" in at.code[-1].value
    assert "demo_job" not in at.session_state


def test_the_launch_runs_table_drops_columns_no_row_shown_fills(monkeypatch, tmp_path):
    """The table must fit a 1400 px window: with finished shipped runs only, no process, host, heartbeat,
    store or error column; a running run brings back its process and heartbeat (and only its own pid)."""
    from store import Store

    path = tmp_path / "results.sqlite"
    monkeypatch.setenv("EDITSCOPE_CACHE", str(tmp_path / "cache"))
    with Store.open(path, create=True) as st:
        done = st.start_run(kind="robustness", model="m", editor="ROME", n_total=2, config={})
        st.heartbeat(done, n_done=2)
        st.finish_run(done)
    at = _app(monkeypatch, path)
    at.switch_page("app_pages/launch.py").run()
    assert not at.exception
    columns = set(at.dataframe[0].value.columns)
    assert done in set(at.dataframe[0].value["run_id"])
    assert not {"pid", "host", "heartbeat_age_s", "store", "error"} & columns and "started_at" in columns
    with Store.open(path) as st:
        running = st.start_run(kind="robustness", model="m", editor="MEMIT", n_total=2, config={})
    at = _app(monkeypatch, path)
    at.switch_page("app_pages/launch.py").run()
    table = at.dataframe[0].value
    assert {"pid", "heartbeat_age_s"} <= set(table.columns)
    import pandas as pd

    pids = dict(zip(table["run_id"], table["pid"]))
    assert not pd.isna(pids[running]) and pd.isna(pids[done])  # a finished run's process is gone
    # each run under its name on every page (variant, edit order), not its editor alone
    with Store.open(path) as st:
        seq = st.start_run(kind="sequential", model="m", editor="ROME", n_total=5,
                           hparams={"key_mismatch": True}, config={"order_seed": 1, "batch_size": 1})
    at = _app(monkeypatch, path)
    at.switch_page("app_pages/launch.py").run()
    names = dict(zip(at.dataframe[0].value["run_id"], at.dataframe[0].value["editor"]))
    assert names[seq] == "ROME (original keys), order 1" and names[done] == "ROME"


def test_a_long_error_reads_as_its_first_clause_with_the_whole_text_below_the_table(monkeypatch, tmp_path):
    """The error column must not push the table past a 1400 px window: a cell holds the error's first clause,
    and the whole text, shown as text, is in an expander under the table."""
    from dashboard.tables import short_error
    from store import Store

    assert short_error("interrupted by the user (run the same command again, or add --resume X)") == \
        "interrupted by the user"
    assert short_error("ValueError: bad\nTraceback") == "ValueError" and short_error("x" * 60).endswith("…")
    assert len(short_error("x" * 60)) == 40 and short_error("short") == "short"
    path = tmp_path / "results.sqlite"
    monkeypatch.setenv("EDITSCOPE_CACHE", str(tmp_path / "cache"))
    long = "interrupted by the user (run the same command again, or add --resume RUN, to continue it) **not bold**"
    with Store.open(path, create=True) as st:
        run = st.start_run(kind="robustness", model="m", editor="ROME", n_total=2, config={})
        st.finish_run(run, status="interrupted", error=long)
    at = _app(monkeypatch, path)
    at.switch_page("app_pages/launch.py").run()
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["error"]) == ["interrupted by the user"] and list(table["n_done"]) == ["0 / 2"]
    assert "kind" not in table.columns and "n_total" not in table.columns  # the run id begins with its kind
    assert any(t.value == f"{run}: {long}" for t in at.text)  # whole, and as text (no markdown)
    assert any("Errors in full (1)" in e.label for e in at.expander)

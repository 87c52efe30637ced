"""A shared dashboard is safe: the public-mode flag fails closed, the passcode gate, text from visitors and
the store shown as text, pages that say what to install without torch, an offline favicon, and the shipped
store untouched by every page, a demo and a launch (its checksum is compared)."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from dashboard import commands, jobs
from test_dashboard import APP

INJECTION = "[click](https://evil.example/a) ![x](https://evil.example/p.png) www.evil.example :red[hi]"


@pytest.mark.parametrize("value, public", [
    (None, False), ("", False), ("0", False), ("false", False), ("False", False), ("no", False), (" off ", False),
    ("n", False), ("f", False),
    ("1", True), ("true", True), ("yes", True), ("on", True), ("2", True), ("y", True), ("enabled", True),
    ("public", True), ("ture", True), ("-1", True),
])
def test_public_flag_fails_closed(value, public):
    env = {} if value is None else {"EDITSCOPE_PUBLIC": value}
    assert jobs.is_public(env, {}) is public
    assert jobs.is_public({}, {} if value is None else {"public": value}) is public


def test_public_flag_from_typed_secrets():
    assert jobs.is_public({}, {"public": True}) and jobs.is_public({}, {"public": 1})
    assert not jobs.is_public({}, {"public": False}) and not jobs.is_public({}, {"public": 0})
    assert jobs.is_public({"EDITSCOPE_PUBLIC": "0"}, {"public": True})  # either one switches it on


def test_passcode_waits_grow_and_forget_old_failures():
    assert [jobs.passcode_delay(n) for n in range(8)] == [0, 1, 2, 4, 8, 16, 30, 30]
    log = jobs.FailureLog(window_s=60)
    for t in (0, 10, 20):
        log.add(now=t)
    assert log.recent(now=30) == 3 and log.recent(now=75) == 1 and log.recent(now=200) == 0


def _rendered(source: str) -> str:
    return MarkdownIt("commonmark").render(source)


def test_escaped_markdown_renders_no_link_and_reads_the_same():
    html = _rendered(jobs.escape_markdown(INJECTION))
    assert "<a" not in html and "<img" not in html
    assert "https://evil.example/a" in html  # shown, as text
    assert "<a" in _rendered(INJECTION)  # what the escape prevents
    assert jobs.escape_markdown("a\nb") == "a b"


def _empty_store(tmp_path) -> Path:
    from store import Store

    path = tmp_path / "results.sqlite"
    with Store.open(path, create=True) as st:
        st.finalize()
    return path


def _app(monkeypatch, store, tmp_path, env=None, secrets=None, query=None):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("EDITSCOPE_STORE", str(store))
    monkeypatch.setenv("EDITSCOPE_WORKSPACE", str(tmp_path / "workspace.sqlite"))
    monkeypatch.delenv("EDITSCOPE_PUBLIC", raising=False)
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    at = AppTest.from_file(APP, default_timeout=60)
    for key, value in (secrets or {}).items():
        at.secrets[key] = value
    for key, value in (query or {}).items():
        at.query_params[key] = value
    at.run()
    return at


def _markdown_elements(at) -> list[str]:
    """The source of every element Streamlit renders as markdown."""
    kinds = ("markdown", "caption", "info", "error", "warning", "success", "title", "header", "subheader")
    return [e.value for kind in kinds for e in getattr(at, kind)] + [e.label for e in at.expander]


def _all_text(at) -> str:
    return "\n".join(_markdown_elements(at) + [e.value for e in at.code])


def test_subject_from_a_link_renders_no_link_on_the_case_explorer(monkeypatch, tmp_path):
    """Streamlit's renderer links a bare URL even when its punctuation is escaped, so visitor text must not
    reach a markdown element at all: it is shown in a plain-text one."""
    at = _app(monkeypatch, _empty_store(tmp_path), tmp_path, query={"subject": INJECTION})
    at.switch_page("app_pages/cases.py").run()
    assert not at.exception
    assert at.text_input(key="subject").value == INJECTION  # kept as typed
    assert [c.value for c in at.code] == [INJECTION]  # echoed in the 'no case' message, as text
    assert not [s for s in _markdown_elements(at) if "evil" in s]


def test_public_mode_without_a_passcode_shows_no_passcode_box(monkeypatch, tmp_path):
    at = _app(monkeypatch, _empty_store(tmp_path), tmp_path, env={"EDITSCOPE_PUBLIC": "enabled"})
    assert not at.exception
    assert not [t for t in at.text_input if t.key == "passcode"]
    assert any("switched off" in c.value for c in at.sidebar.caption)
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        at.switch_page("app_pages/launch.py")


@pytest.mark.slow  # it waits 1 + 2 s on purpose
def test_a_wrong_passcode_is_told_and_repeated_ones_are_slowed(monkeypatch, tmp_path):
    import streamlit as st

    st.cache_resource.clear()  # the failure log is shared by the server's sessions
    at = _app(monkeypatch, _empty_store(tmp_path), tmp_path, env={"EDITSCOPE_PUBLIC": "1"},
              secrets={"passcode": "s3cret"})
    times = []
    for guess in ("guess1", "guess2", "guess3"):
        t0 = time.monotonic()
        at.text_input(key="passcode").set_value(guess).run()
        times.append(time.monotonic() - t0)
        assert "Wrong passcode" in at.sidebar.error[0].value
    assert times[1] >= 1.0 and times[2] >= 2.0 and times[0] < times[1]
    t0 = time.monotonic()
    at.run()  # a rerun with the same wrong text is no new attempt: no wait (a fourth attempt would wait 4 s)
    assert time.monotonic() - t0 < times[2] - 1.0  # the third's 2 s wait less a second: a busy machine's rerun
    at.text_input(key="passcode").set_value("s3cret").run()
    assert not at.sidebar.error
    at.switch_page("app_pages/launch.py").run()
    assert not at.exception and at.title[0].value == "Launch runs"
    st.cache_resource.clear()


def test_without_torch_demo_and_launch_say_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(jobs, "COMPUTE_MODULES", ("polars", "editscope_no_such_module"))
    at = _app(monkeypatch, _empty_store(tmp_path), tmp_path)
    for page in ("app_pages/demo.py", "app_pages/launch.py"):
        at.switch_page(page).run()
        assert not at.exception
        message = at.info[0].value
        assert "editscope_no_such_module" in message and "pip install -r requirements-compute.txt" in message
        assert not at.button  # no form to submit


def test_the_favicon_is_drawn_locally():
    source = Path(APP).read_text()
    assert ':material/' not in source.split("set_page_config", 1)[1].split("\n", 1)[0]
    config = (Path(APP).parent.parent / ".streamlit" / "config.toml").read_text()
    assert "http" not in config


def test_a_public_visitor_sees_only_their_jobs_and_no_server_details(monkeypatch, tmp_path):
    from store import Store

    monkeypatch.setenv("EDITSCOPE_CACHE", str(tmp_path / "cache"))
    store = _empty_store(tmp_path)
    ws = tmp_path / "workspace.sqlite"
    with Store.open(ws, create=True) as st:
        run_id = st.start_run(kind="knowledge", model="m", config={}, provenance={}, n_total=3)
    code = f"import time; print({str(tmp_path)!r}, flush=True); time.sleep(30)"
    monkeypatch.setattr(jobs, "command", lambda s, argv: [sys.executable, "-c", code])
    other = jobs.start_job(ws, ["knowledge", "measure", "--set", "secret-set-of-another-visitor"], owner="someone")
    try:
        at = _app(monkeypatch, store, tmp_path, env={"EDITSCOPE_PUBLIC": "1"}, secrets={"passcode": "pw"})
        at.text_input(key="passcode").set_value("pw").run()
        at.switch_page("app_pages/launch.py").run()
        assert not at.exception
        text = _all_text(at)
        assert "secret-set-of-another-visitor" not in text and other.job_id not in text
        assert not [b for b in at.button if b.label.startswith("Cancel")]
        table = at.dataframe[0].value
        assert run_id in set(table["run_id"]) and not {"pid", "host"} & set(table.columns)
        for secret in (str(tmp_path), str(Path.home()) + "/", str(jobs.ROOT), str(other.pid)):
            assert secret not in text, secret
        assert jobs.job_status(other)["state"] == "running"  # it ran all along, unseen
    finally:
        os.kill(other.pid, signal.SIGKILL)
        jobs.wait_for(other, 10)


def test_a_public_visitor_sees_no_store_path_host_or_pid_on_the_overview(monkeypatch, tmp_path):
    """The Overview names the store's file and lists runs' errors: a stale run's error names its process and
    host (store.db.mark_stale_runs), which a public visitor must not see; the operator sees them all."""
    from store import Store

    store = tmp_path / "results.sqlite"
    with Store.open(store, create=True) as st:
        run_id = st.start_run(kind="knowledge", model="m", config={}, provenance={}, n_total=3)
        st.conn.execute("UPDATE runs SET host = 'build-box-7' WHERE run_id = ?", (run_id,))
        st.finish_run(run_id, status="interrupted",
                      error=f"Process 48213 on build-box-7 ended without finishing the run; store {store}.")
        st.finalize()

    def table_text(at) -> str:
        return "\n".join(str(v) for d in at.dataframe for col in d.value.columns for v in d.value[col])

    at = _app(monkeypatch, store, tmp_path)  # the operator's own dashboard
    assert not at.exception
    assert str(store) in _all_text(at) and "Process 48213 on build-box-7" in table_text(at)
    at = _app(monkeypatch, store, tmp_path, env={"EDITSCOPE_PUBLIC": "1"})
    assert not at.exception
    shown = _all_text(at) + table_text(at)
    assert "ended without finishing" in shown  # the error itself is still told
    for secret in (str(store), str(tmp_path), "48213", "build-box-7"):
        assert secret not in shown, secret


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_pages_a_demo_and_a_launch_leave_the_shipped_store_unchanged(monkeypatch, fixture_store, tiny_model_dir,
                                                                  cache_dir, paragraphs, tmp_path):
    """The shown store is a copy of the fixture store in its shipped form (rollback journal, no side files);
    everything the dashboard does lands in the workspace store."""
    import shutil

    from store import Store

    shipped = tmp_path / "shipped" / "results.sqlite"
    shipped.parent.mkdir()
    shutil.copy(fixture_store, shipped)
    with Store.open(shipped) as st:
        st.finalize()  # as shipped: a rollback journal, so that a reader needs no side files
    before, files_before = _sha(shipped), sorted(p.name for p in shipped.parent.iterdir())
    monkeypatch.setenv("EDITSCOPE_CACHE", str(cache_dir))  # the knowledge base and wiki paragraphs are there
    at = _app(monkeypatch, shipped, tmp_path)
    ws = tmp_path / "workspace.sqlite"
    pages = [p.name for p in (Path(APP).parent / "app_pages").glob("*.py") if p.name != "no_store.py"]
    for page in sorted(pages):
        at.switch_page(f"app_pages/{page}").run()
        assert not at.exception, page

    # the demo form takes no hyperparameter file, and hyperparameters are looked up by the model's (folder)
    # name: IKE's hold no layer numbers, so the tiny model in a folder named like the default model uses them
    demo_model = tmp_path / "models" / commands.DEFAULT_MODEL
    shutil.copytree(tiny_model_dir, demo_model)
    at.switch_page("app_pages/demo.py").run()
    at.selectbox(key="demo_editor").set_value("IKE")
    at.text_input(key="demo_model").set_value(str(demo_model))
    at.number_input(key="demo_gen_tokens").set_value(2)
    at.button[0].click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    demo_job = jobs.load_job(ws, at.session_state["demo_job"])
    deadline = time.monotonic() + 300
    while not jobs.wait_for(demo_job, 1.0):  # the page watches, as its 2-second fragment does in a browser
        assert time.monotonic() < deadline, jobs.log_tail(demo_job)
        at.run()
    at.run()  # the watcher sees the end and asks for a rerun ...
    if "demo_job" in at.session_state:
        at.run()  # ... which AppTest leaves to the next run
    assert "demo_job" not in at.session_state
    assert at.session_state["demo_done"]["run_id"], (at.session_state["demo_done"], jobs.log_tail(demo_job))
    assert jobs.job_status(demo_job)["state"] == "done", jobs.log_tail(demo_job)
    assert any("Your demo" in s.value for s in at.subheader), [s.value for s in at.subheader] + [e.value for e in at.info] + [str(at.exception)]
    assert any(m.label == "Held on measurable types" for m in at.metric)
    assert any(c.value.startswith("Time per stage: ") for c in at.caption), [c.value for c in at.caption]
    assert any("France" in c.value for c in at.code)  # the probe text beside the generations

    at.switch_page("app_pages/launch.py").run()
    at.segmented_control(key="experiment").set_value("knowledge").run()
    at.number_input(key="launch_limit").set_value(1)
    at.number_input(key="launch_gen_tokens").set_value(1)
    at.text_input(key="launch_model").set_value(tiny_model_dir)
    at.button[0].click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    job = jobs.list_jobs(ws)[0]
    assert job.kind == "knowledge" and jobs.wait_for(job, 300), jobs.log_tail(job)
    assert jobs.job_status(job)["state"] == "done", jobs.log_tail(job)

    con = sqlite3.connect(f"file:{ws}?mode=ro", uri=True)
    kinds = sorted(k for (k,) in con.execute("SELECT kind FROM runs WHERE status = 'done'"))
    demo_progress = con.execute("SELECT n_done, n_total FROM runs WHERE kind = 'demo'").fetchall()
    con.close()
    assert kinds == ["demo", "knowledge"]
    assert demo_progress == [(1, 1)]  # a finished demo reads 1/1 done, not 0/1
    at.run()
    table = at.dataframe[0].value
    # the Kind column goes when every run id begins with its kind (the table fits 1400 px): read it there
    assert {r.split("-")[0] for r in table.loc[table["store"] == "workspace", "run_id"]} == {"demo", "knowledge"}
    assert "kind" not in table.columns and set(table.loc[table["store"] == "workspace", "n_done"]) == {"1 / 1"}
    assert "shipped" in set(table["store"])
    for page in sorted(pages):  # every page again, now with workspace runs beside the shipped ones
        at.switch_page(f"app_pages/{page}").run()
        assert not at.exception, page
    assert _sha(shipped) == before and sorted(p.name for p in shipped.parent.iterdir()) == files_before


def _cases(*ids: tuple[str, str]) -> tuple[list[dict], list[dict]]:
    """(cases, probes) rows for (case_id, case_set) pairs, one plain probe each."""
    cases = [{"case_id": c, "case_set": s, "source": "kb", "subject": c, "prompt": "p", "true_object": "a",
              "new_object": "b"} for c, s in ids]
    probes = [{"case_id": c, "probe_id": 0, "rephrase_type": "plain", "text": f"probe of {c}", "target_true": "a",
               "target_new": "b"} for c, _ in ids]
    return cases, probes


def test_data_layer_shows_shipped_and_workspace_runs_each_marked(monkeypatch, tmp_path):
    from store import Store

    from dashboard import data

    shipped, ws = tmp_path / "shipped.sqlite", tmp_path / "ws.sqlite"
    monkeypatch.setenv("EDITSCOPE_STORE", str(shipped))
    monkeypatch.setenv("EDITSCOPE_WORKSPACE", str(ws))
    with Store.open(shipped, create=True) as st:
        st.write_cases(*_cases(("c1", "s")))
        old = st.start_run(kind="demo", model="m", editor="ROME", config={"case_id": "c1"}, n_total=1)
        st.finish_run(old)
        st.write_generations([{"run_id": old, "case_id": "c1", "edit_count": 0, "rephrase_type": "plain",
                               "probe_id": 0, "phase": "pre", "text": "shipped text"}])
        st.finalize()
    assert data.query("list_runs")["store"].to_list() == ["shipped"]  # no workspace yet: as before
    with Store.open(ws, create=True) as st:
        st.write_cases(*_cases(("c1", "s"), ("c2", "t")))  # c1 copied, c2 its own
        new = st.start_run(kind="demo", model="m", editor="IKE", config={"case_id": "c2"}, n_total=1)
        st.finish_run(new)
        st.write_generations([{"run_id": new, "case_id": "c2", "edit_count": 0, "rephrase_type": "plain",
                               "probe_id": 0, "phase": "pre", "text": "workspace text"}])
    runs = data.query("list_runs")
    assert dict(zip(runs["run_id"], runs["store"])) == {old: "shipped", new: "workspace"}
    labels = data.query("run_labels", kind="demo")
    assert dict(zip(labels["run_id"], labels["label"])) == {old: "ROME", new: "IKE · workspace"}
    assert sorted(data.query("cases")["case_id"].to_list()) == ["c1", "c2"]  # the copy is not shown twice
    assert sorted(data.query("case_sets")["case_set"].to_list()) == ["s", "t"]
    assert data.query("generations", run_id=new)["text"].to_list() == ["workspace text"]
    assert data.query("generations", run_id=old)["text"].to_list() == ["shipped text"]
    assert data.run_store(new) == "workspace" and data.run_store(old) == "shipped"
    from dashboard.sidebar import describe_runs

    described = describe_runs(runs)  # the run pickers' labels
    assert dict(zip(described["run_id"], described["base_label"])) == {old: "ROME", new: "IKE · workspace"}


@pytest.mark.slow
def test_every_page_on_the_real_shipped_store_leaves_it_byte_for_byte(monkeypatch, tmp_path):
    """The shipped store itself, shown: every page reads it, none changes it or leaves a side file."""
    from dashboard.data import store_status

    shipped = Path(jobs.ROOT) / "store" / "results.sqlite"
    monkeypatch.setenv("EDITSCOPE_STORE", str(shipped))
    if store_status()[1]:
        pytest.skip(f"this checkout's code cannot open the shipped store: {store_status()[1]}")
    before = _sha(shipped), sorted(p.name for p in shipped.parent.glob("results.sqlite*"))
    at = _app(monkeypatch, shipped, tmp_path)
    for page in sorted(p.name for p in (Path(APP).parent / "app_pages").glob("*.py") if p.name != "no_store.py"):
        at.switch_page(f"app_pages/{page}").run(timeout=180)
        assert not at.exception and at.title and at.title[0].value != "EditScope cannot open its results store", page
    assert (_sha(shipped), sorted(p.name for p in shipped.parent.glob("results.sqlite*"))) == before


def test_a_workspace_set_to_the_shown_store_is_refused_and_browsing_goes_on(monkeypatch, tmp_path):
    store = _empty_store(tmp_path)
    at = _app(monkeypatch, store, tmp_path, env={"EDITSCOPE_WORKSPACE": str(store)})
    assert not at.exception
    at.switch_page("app_pages/cases.py").run()
    assert not at.exception
    for page in ("app_pages/demo.py", "app_pages/launch.py"):
        at.switch_page(page).run()
        assert not at.exception and "misconfigured" in at.error[0].value
        assert "must not be the shown store" in at.code[0].value and not at.button


def test_everything_the_dashboard_and_the_store_import_is_in_the_cloud_requirements():
    """Streamlit Community Cloud installs requirements.txt only. Every third-party module that dashboard/ and
    store/ import (at the top or inside a function) must come from a distribution it names or from one of their
    own dependencies: scipy (store.stats) came only through gensim, a compute requirement, and every page that
    computes a paired interval raised ModuleNotFoundError on the Cloud install."""
    import ast
    import re
    import sys
    from importlib import metadata

    root = Path(__file__).resolve().parents[1]
    modules = set()
    for package in ("store", "dashboard"):
        for path in (root / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    modules |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules.add(node.module.split(".")[0])
    third = {m for m in modules if m not in sys.stdlib_module_names and m not in ("store", "dashboard", "compute",
                                                                                 "__future__")}

    def name(req: str) -> str:
        return re.split(r"[\s;<>=!~\[]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")

    wanted = [name(line) for line in (root / "requirements.txt").read_text().splitlines()
              if line.strip() and not line.startswith(("#", "-"))]
    closure, todo = set(), list(wanted)
    while todo:  # the named distributions and what they require (extras left out)
        dist = todo.pop()
        if dist in closure:
            continue
        try:
            requires = metadata.requires(dist) or []
        except metadata.PackageNotFoundError:  # a dependency for other Pythons (an environment marker)
            continue
        closure.add(dist)
        for req in requires:
            if "extra ==" not in req:
                todo.append(name(req))
    provided = {m: {d.lower().replace("_", "-") for d in ds} for m, ds in metadata.packages_distributions().items()}
    missing = sorted(m for m in third if not provided.get(m, set()) & closure)
    assert not missing, f"imported by dashboard/ or store/ but not installed by requirements.txt: {missing}"

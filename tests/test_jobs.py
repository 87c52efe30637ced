"""dashboard.jobs: argv building, every validation error, the public-mode gate, and cancelling a real process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dashboard import commands, jobs

EDITORS = ["AlphaEdit", "FT-L", "IKE", "MEMIT", "ROME"]
TEMPLATES = {"capital": {"prompt": "The capital of {subject} is"}, "broken": {"prompt": "Its capital is"}}


def _edit(**kw):
    args = dict(subject="France", relation="capital", new_object="Rome", true_object=None, editor="ROME")
    args.update(kw)
    return commands.edit_argv(**args, templates=TEMPLATES, editors=EDITORS)


def test_editor_names_come_from_the_hparams_folders():
    assert commands.editor_names() == EDITORS


def test_edit_argv():
    argv = _edit(true_object="Paris", gen_tokens=5)
    assert argv[:9] == ["edit", "--subject", "France", "--relation", "capital", "--new", "Rome", "--editor", "ROME"]
    assert argv[argv.index("--gen-tokens") + 1] == "5" and argv[-2:] == ["--true", "Paris"]
    assert "--model" not in argv


@pytest.mark.parametrize("kw, message", [
    ({"subject": "  "}, "subject is empty"),
    ({"new_object": ""}, "new object is empty"),
    ({"subject": "x" * 101}, "at most 100"),
    ({"new_object": "a\nb"}, "line break"),
    ({"relation": "nope"}, "unknown relation"),
    ({"editor": "GRACE"}, "unknown editor"),
    ({"relation": "broken"}, "does not occur in the prompt"),
    ({"true_object": "rome"}, "equals the true object"),
    ({"gen_tokens": 0}, "between 1 and 30"),
    ({"gen_tokens": "many"}, "whole number"),
    ({"model": "/no/such/dir"}, "local model directory"),
])
def test_edit_argv_refuses(kw, message):
    with pytest.raises(ValueError, match=message):
        _edit(**kw)


def test_model_dir_is_passed_resolved(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert _edit(model=str(tmp_path))[-2:] == ["--model", str(tmp_path.resolve())]
    assert _edit(model=commands.DEFAULT_MODEL)[-1] != "--model"


def test_robustness_and_sweep_argv_and_limits():
    argv = commands.robustness_argv("IKE", 8, 3, editors=EDITORS, limit=2, gen_tokens=1)
    assert argv == ["run", "robustness", "--editor", "IKE", "--cases", "8", "--seed", "3", "--gen-tokens", "1",
                    "--limit", "2"]
    assert commands.sweep_argv("ROME", "1, 3,5", 4, editors=EDITORS)[:8] == [
        "run", "sweep", "--editor", "ROME", "--field", "layer", "--values", "1,3,5"]
    with pytest.raises(ValueError, match="between 1 and 60"):
        commands.robustness_argv("IKE", 61, editors=EDITORS)
    with pytest.raises(ValueError, match="Limit must be between"):
        commands.robustness_argv("IKE", 8, editors=EDITORS, limit=500)
    with pytest.raises(ValueError, match="Seed"):
        commands.robustness_argv("IKE", 8, -1, editors=EDITORS)
    with pytest.raises(ValueError, match="unknown editor"):
        commands.sweep_argv("X", "1", 4, editors=EDITORS)


@pytest.mark.parametrize("layers, message", [
    ("", "Layers is empty"), ("1,a", "comma-separated"), ("1,1", "repeat"), (",".join(map(str, range(9))), "at most 8"),
    ("-1", "between 0"),
])
def test_sweep_layers_refused(layers, message):
    with pytest.raises(ValueError, match=message):
        commands.sweep_argv("ROME", layers, 4, editors=EDITORS)


def test_knowledge_argv():
    argv = commands.knowledge_argv("tiny32", case_sets=["tiny32"], limit=1, gen_tokens=1)
    assert argv == ["knowledge", "measure", "--set", "tiny32", "--types", "plain", "--again", "--limit", "1",
                    "--gen-tokens", "1"]
    for kw, message in (({"case_set": "other"}, "unknown case set"), ({"types": "doubt"}, "rephrase types"),
                        ({"limit": None}, "give a limit"), ({"limit": 61}, "between 1 and 60")):
        with pytest.raises(ValueError, match=message):
            commands.knowledge_argv(**{"case_set": "tiny32", "case_sets": ["tiny32"], **kw})


def test_command_runs_the_cli_on_the_store(tmp_path):
    cmd = jobs.command(tmp_path / "s.sqlite", ["runs", "list"])
    assert cmd[:3] == [sys.executable, "-m", "compute"] and cmd[3:7] == ["--store", str(tmp_path / "s.sqlite"), "--quiet", "runs"]


@pytest.mark.parametrize("env, secrets, entered, allowed", [
    ({}, {}, None, True),
    ({"EDITSCOPE_PUBLIC": "0"}, {"passcode": "pw"}, None, True),
    ({"EDITSCOPE_PUBLIC": "1"}, {"passcode": "pw"}, None, False),
    ({"EDITSCOPE_PUBLIC": "1"}, {"passcode": "pw"}, "wrong", False),
    ({"EDITSCOPE_PUBLIC": "1"}, {"passcode": "pw"}, "pw", True),
    ({}, {"public": True, "passcode": "pw"}, "", False),
    ({}, {"public": "true", "passcode": "pw"}, "pw", True),
    ({}, {"public": True}, "", False),  # public without a passcode: never
    ({}, {"public": True}, "anything", False),
])
def test_write_access(env, secrets, entered, allowed):
    assert jobs.write_access(env, secrets, entered) is allowed


SLEEPER = ("import signal, sys, time\n"
           "signal.signal(signal.SIGINT, lambda *a: sys.exit(130))\n"
           "print('ready', flush=True)\n"
           "time.sleep(60)\n")


def _sleepers(monkeypatch, tmp_path):
    """start_job with a stand-in command: a process that waits for SIGINT (the CLI's own exit code, 130)."""
    monkeypatch.setenv("EDITSCOPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(jobs, "command", lambda store, argv: [sys.executable, "-c", SLEEPER])
    return tmp_path / "ws.sqlite"


def _stop(started):
    for job in started:
        try:
            os.kill(job.pid, 9)
        except ProcessLookupError:
            pass
        jobs.wait_for(job, 10)


def test_cancel_only_for_the_session_that_started_the_job(monkeypatch, tmp_path):
    store = _sleepers(monkeypatch, tmp_path)
    job = jobs.start_job(store, ["knowledge", "measure"], owner="alice")
    try:
        assert jobs.wait_for(job, 0.5) is False  # it runs
        with pytest.raises(ValueError, match="not started in this session"):
            jobs.cancel_job(job, owner="bob")
        assert jobs.job_status(job)["state"] == "running"
        time.sleep(0.5)  # let the sleeper install its SIGINT handler
        jobs.cancel_job(job, owner="alice")
        assert jobs.wait_for(job, 10)
        assert jobs.job_status(job) == {"state": "interrupted", "returncode": 130, "error": None}
        with pytest.raises(ValueError, match="not running"):
            jobs.cancel_job(job, owner="alice")
        assert [j.job_id for j in jobs.list_jobs(store, owner="alice")] == [job.job_id]
        assert jobs.list_jobs(store, owner="bob") == []
    finally:
        _stop([job])


def test_running_jobs_are_capped_per_session_and_per_machine(monkeypatch, tmp_path):
    store = _sleepers(monkeypatch, tmp_path)
    started = []
    try:
        started.append(jobs.start_job(store, ["knowledge", "measure"], owner="a"))
        with pytest.raises(ValueError, match="you already have 1 run going"):
            jobs.start_job(store, ["knowledge", "measure"], owner="a")
        started.append(jobs.start_job(store, ["knowledge", "measure"], owner="b"))
        with pytest.raises(ValueError, match="2 runs are going on this machine"):
            jobs.start_job(store, ["knowledge", "measure"], owner="c")
        _stop(started[:1])
        started.append(jobs.start_job(store, ["knowledge", "measure"], owner="c"))  # a slot came free
    finally:
        _stop(started)


def test_simultaneous_clicks_start_at_most_the_cap(monkeypatch, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    store = _sleepers(monkeypatch, tmp_path)

    def click(owner):
        try:
            return jobs.start_job(store, ["knowledge", "measure"], owner=owner)
        except ValueError:
            return None

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(click, [f"s{i}" for i in range(6)]))
    started = [j for j in results if j is not None]
    try:
        assert len(started) == jobs.MAX_RUNNING_JOBS
        assert len(jobs.running_jobs()) == jobs.MAX_RUNNING_JOBS
    finally:
        _stop(started)


def test_a_full_workspace_refuses_launches(monkeypatch, tmp_path):
    store = _sleepers(monkeypatch, tmp_path)
    monkeypatch.setattr(jobs, "MAX_WORKSPACE_MB", 0)
    with open(store, "wb") as f:
        f.truncate(2**20)
    with pytest.raises(ValueError, match="workspace store is full"):
        jobs.start_job(store, ["knowledge", "measure"], owner="a")


def test_workspace_path_is_outside_the_repo_and_never_the_shown_store(monkeypatch, tmp_path):
    monkeypatch.delenv("EDITSCOPE_WORKSPACE", raising=False)
    monkeypatch.setenv("EDITSCOPE_CACHE", str(tmp_path / "cache"))
    shipped = jobs.ROOT / "store" / "results.sqlite"
    ws = jobs.workspace_path(shipped)
    assert ws.parent == (tmp_path / "cache" / "workspace").resolve() and ws.suffix == ".sqlite"
    assert jobs.workspace_path(tmp_path / "other.sqlite") != ws  # one workspace per shown store
    monkeypatch.setenv("EDITSCOPE_WORKSPACE", str(tmp_path / "mine.sqlite"))
    assert jobs.workspace_path(shipped) == (tmp_path / "mine.sqlite").resolve()
    monkeypatch.setenv("EDITSCOPE_WORKSPACE", str(shipped))
    with pytest.raises(ValueError, match="must not be the shown store"):
        jobs.workspace_path(shipped)


def test_copy_case_set_reads_the_shipped_store_and_fills_the_workspace(tmp_path):
    from store import Store

    shipped, ws = tmp_path / "shipped.sqlite", tmp_path / "ws.sqlite"
    with Store.open(shipped, create=True) as st:
        st.write_cases([{"case_id": "c1", "case_set": "s", "source": "kb", "subject": "France", "prompt": "p",
                         "true_object": "Paris", "new_object": "Rome"}],
                       [{"case_id": "c1", "probe_id": 0, "rephrase_type": "plain", "text": "The capital of France is",
                         "target_true": "Paris", "target_new": "Rome"}])
        st.finalize()  # shipped stores use a rollback journal: no -wal file beside them
    before = shipped.read_bytes()
    Store.open(ws, create=True).close()
    assert jobs.copy_case_set(shipped, ws, "s") == 1
    assert jobs.copy_case_set(shipped, ws, "s") == 0  # already there
    with Store.open(ws, readonly=True) as st:
        assert st.conn.execute("SELECT count(*) FROM probes WHERE case_id = 'c1'").fetchone()[0] == 1
    assert shipped.read_bytes() == before and not list(tmp_path.glob("shipped.sqlite-*"))


def test_copy_case_set_refuses_a_run_that_needs_probes_the_shipped_store_left_out_and_carries_the_record(tmp_path):
    from store import Store, queries

    shipped, ws = tmp_path / "shipped.sqlite", tmp_path / "ws.sqlite"
    with Store.open(shipped, create=True) as st:
        st.write_cases([{"case_id": "c1", "case_set": "s", "source": "kb", "subject": "France", "prompt": "p",
                         "true_object": "Paris", "new_object": "Rome"}],
                       [{"case_id": "c1", "probe_id": i, "rephrase_type": t, "text": f"{t}: the capital of France is",
                         "target_true": "Paris", "target_new": "Rome"} for i, t in enumerate(("plain", "doubt"))])
        assert st.leave_out_unread_probes() == {"s": ["doubt"]}  # no run measured anything
        st.finalize()
    Store.open(ws, create=True).close()
    with pytest.raises(ValueError, match="keeps no probes of type.*doubt for case set s"):
        jobs.copy_case_set(shipped, ws, "s")  # a knowledge run of every type
    with Store.open(ws, readonly=True) as st:
        assert st.conn.execute("SELECT count(*) FROM cases").fetchone()[0] == 0  # nothing copied
    assert jobs.copy_case_set(shipped, ws, "s", needs=["plain", "paraphrase", "neighbourhood"]) == 1
    with Store.open(ws, readonly=True) as st:
        assert queries.probes_left_out(st.conn) == {"s": ["doubt"]}  # a run there is refused the same way


def test_seconds_text():
    assert jobs.seconds_text(150) == "2 min 30 s" and jobs.seconds_text(42.4) == "42 s"


def test_stage_times_from_the_workers_stamps(tmp_path):
    """The demo worker stamps its stage lines: the times are its own, not when the page happened to look, and a
    long wait for the worker (a demo queued behind another) is told."""
    from datetime import datetime, timezone

    log = tmp_path / "j.log"
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    job = jobs.Job("j", "edit", ("edit",), 2**22 + 12345, str(log), str(tmp_path / "s.sqlite"), start.isoformat())
    t0 = start.timestamp()
    log.write_text(f"stage 1/6: loading  [at {t0 + 0.4:.3f}]\nmodel loaded\nstage 2/6: unedited  [at {t0 + 4.4:.3f}]\n"
                   f"stage 3/6: editing with ROME  [at {t0 + 4.5:.3f}]\nstage 4/6: plain  [at {t0 + 12.25:.3f}]\n")
    assert jobs.job_stage(job) == (4, 6, "plain")  # the stamp is not part of what the page shows
    job_alive = jobs.Job("j", "edit", ("edit",), os.getpid(), str(log), str(tmp_path / "s.sqlite"), start.isoformat())
    assert jobs.stage_times(job_alive, now=t0 + 13.0)[-1] == (4, "plain", 0.75)  # running: to now
    (tmp_path / "j.rc").write_text("0")
    os.utime(tmp_path / "j.rc", (t0 + 14.0, t0 + 14.0))
    times = jobs.stage_times(job)
    assert [(k, what) for k, what, _ in times] == [(1, "loading"), (2, "unedited"), (3, "editing with ROME"), (4, "plain")]
    assert [round(s, 2) for _, _, s in times] == [4.0, 0.1, 7.75, 1.75]
    assert jobs.stage_times(job_alive) == times  # the worker lives on after the demo: its exit status is the end
    log.write_text(f"stage 1/6: loading  [at {t0 + 30:.3f}]\n")  # queued 30 s behind another demo
    assert jobs.stage_times(job)[0] == (0, "waiting for the demo worker", 30.0)
    log.write_text("stage 1/6: loading\nstage 3/6: editing\n")  # a worker from before the stamps: no times
    assert jobs.stage_times(job) == []


def test_start_job_logs_and_reports_failure(tmp_path, monkeypatch):
    from store import Store

    monkeypatch.setenv("EDITSCOPE_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "s.sqlite"
    Store.open(path, create=True).close()
    job = jobs.start_job(path, ["knowledge", "measure", "--set", "no-such-set", "--limit", "1"])
    assert jobs.wait_for(job, 120)
    status = jobs.job_status(job)
    # the engine ran the one-unit plan; the unit's own one-line error is the job's error
    assert status["state"] == "failed" and status["returncode"] == 2 and "no case set 'no-such-set'" in status["error"]
    assert "plan run" in " ".join(jobs.command(path, ["plan", "run", "x"])) and Path(job.log).with_suffix(".toml").is_file()
    with pytest.raises(ValueError, match="a launch runs one of"):
        jobs.start_job(path, ["cases", "show"])
    assert [j.job_id for j in jobs.list_jobs(path)] == [job.job_id]
    assert jobs.load_job(path, job.job_id) == job
    with pytest.raises(ValueError, match="no job"):
        jobs.load_job(path, "../x")


def test_runs_table_puts_running_first_with_heartbeat_age():
    from datetime import datetime, timezone

    import polars as pl

    runs = pl.DataFrame({"run_id": ["a", "b"], "kind": ["k", "k"], "editor": [None, "ROME"],
                         "status": ["done", "running"], "n_done": [3, 1], "n_total": [3, 4],
                         "progress": [1.0, 0.25], "pid": [1, 2], "host": ["h", "h"],
                         "started_at": ["2024-01-01T00:00:00+00:00"] * 2,
                         "heartbeat_at": ["2024-01-01T00:00:00+00:00", "2024-01-01T00:00:30+00:00"],
                         "error": [None, None]})
    table = jobs.runs_table(runs, datetime(2024, 1, 1, 0, 1, tzinfo=timezone.utc))
    # a finished run's last heartbeat is history: no age for it
    assert table["run_id"].to_list() == ["b", "a"] and table["heartbeat_age_s"].to_list() == [30.0, None]


def test_the_runs_overview_orders_both_stores_newest_first(tmp_path):
    from store import Store

    paths = {}
    for where, started in (("shipped", ["2024-01-01T00:00:00+00:00", "2024-01-03T00:00:00+00:00"]),
                           ("workspace", ["2024-01-02T00:00:00+00:00", "2024-01-04T00:00:00+00:00"])):
        paths[where] = tmp_path / f"{where}.sqlite"
        with Store.open(paths[where], create=True) as st:
            for at in started:
                run = st.start_run(kind="robustness", model="m", editor="ROME", n_total=1, config={})
                st.finish_run(run)
                st.conn.execute("UPDATE runs SET started_at = ? WHERE run_id = ?", (at, run))
                st.conn.commit()
    table = jobs.runs_overview(paths)
    # the workspace's newest run first, the two stores interleaved by when each run started
    assert table["store"].to_list() == ["workspace", "shipped", "workspace", "shipped"]
    assert table["started_at"].to_list() == sorted(table["started_at"].to_list(), reverse=True)


def test_jobs_module_imports_neither_torch_nor_streamlit():
    code = "import dashboard.jobs, sys; print(sorted(m for m in ('torch', 'streamlit', 'compute') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(__file__)), check=True)
    assert out.stdout.strip() == "[]"


def test_job_stage_reads_the_newest_stage_line(tmp_path):
    log = tmp_path / "j.log"
    job = jobs.Job("j", "edit", ("edit",), 1, str(log), str(tmp_path / "s.sqlite"), "now")
    assert jobs.job_stage(job) is None  # no log yet
    log.write_text("stage 1/5: loading the model\nsome output\nstage 3/5: editing with ROME\nmore\n")
    assert jobs.job_stage(job) == (3, 5, "editing with ROME")


def test_sequential_and_batch_argv_are_validated_and_small():
    sets = ["big"]
    argv = commands.sequential_argv("ROME", "big", 20, 2, 3, editors=EDITORS, case_sets=sets)
    assert argv[:4] == ["run", "sequential", "--editor", "ROME"]
    assert argv[argv.index("--edits") + 1] == "20" and argv[argv.index("--batch") + 1] == "2"
    assert argv[argv.index("--order-seed") + 1] == "3" and "--panel-pool" in argv
    with pytest.raises(ValueError, match="Number of edits must be between 1 and 100"):
        commands.sequential_argv("ROME", "big", 101, editors=EDITORS, case_sets=sets)
    with pytest.raises(ValueError, match="larger than the number of edits"):
        commands.sequential_argv("ROME", "big", 5, 10, editors=EDITORS, case_sets=sets)
    with pytest.raises(ValueError, match="unknown case set"):
        commands.sequential_argv("ROME", "nope", 5, editors=EDITORS, case_sets=sets)
    argv = commands.batch_argv("MEMIT", "big", "1, 10", editors=EDITORS, case_sets=sets)
    assert argv[argv.index("--sizes") + 1] == "1,10" and argv[argv.index("--abilities") + 1] == "none"
    for bad in ("1,1", "1,2,3,4,5", "0", "51", "a,b"):
        with pytest.raises(ValueError):
            commands.batch_argv("MEMIT", "big", bad, editors=EDITORS, case_sets=sets)


def test_demo_summary_counts_held_types_among_measurable_ones():
    import polars as pl

    view = pl.DataFrame({
        "edit_count": [0, 0, 0, 0, 1, 1, 1, 1],
        "rephrase_type": ["plain", "doubt", "cloze", "neighbourhood"] * 2,
        "acc": [0.0, 0.0, 0.0, None, 1.0, 0.0, 1.0, None],
        "rev": [1.0, 1.0, 0.0, None, 0.0, 1.0, 0.0, None],
    })
    out = jobs.demo_summary(view)
    assert [(t["rephrase_type"], t["measurable"], t["held"]) for t in out["types"]] == [
        ("plain", True, True), ("doubt", True, False), ("cloze", False, True)]
    assert (out["held"], out["measurable"]) == (1, 2)  # cloze held, but the unedited model never answered it
    assert jobs.demo_summary(view, measurable={"plain", "cloze"})["held"] == 2  # a store-wide measurable set wins
    assert jobs.demo_summary(pl.DataFrame()) == {"types": [], "held": 0, "measurable": 0}


def test_device_reaches_the_demo_and_every_launch_command():
    assert _edit(device="cuda:1")[-2:] == ["--device", "cuda:1"]
    assert "--device" not in _edit(device="cpu") and "--device" not in _edit()
    assert commands.robustness_argv("IKE", 8, editors=EDITORS, device="cuda")[-2:] == ["--device", "cuda"]
    assert commands.knowledge_argv("s", case_sets=["s"], device="mps")[-2:] == ["--device", "mps"]
    assert commands.sweep_argv("ROME", "1,3", 8, editors=EDITORS, device="cuda:0")[-2:] == ["--device", "cuda:0"]
    assert commands.sequential_argv("ROME", "s", 5, editors=EDITORS, case_sets=["s"], device="cuda")[-1] == "cuda"
    assert commands.batch_argv("MEMIT", "s", "1,2", editors=EDITORS, case_sets=["s"], device="cuda")[-1] == "cuda"
    with pytest.raises(ValueError, match="device must be cpu, cuda, cuda:N or mps; got 'gpu0'"):
        _edit(device="gpu0")


def test_a_demo_request_is_cancelled_through_its_file_and_fails_when_its_worker_dies(monkeypatch, tmp_path):
    """A demo queued for the worker: cancelling writes the file the worker checks (the worker, serving others,
    gets no signal); a worker that dies before answering fails the demo instead of leaving it running."""
    monkeypatch.setenv("EDITSCOPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(jobs, "worker_command", lambda *a: [sys.executable, "-c", SLEEPER])
    ws, shipped = tmp_path / "ws.sqlite", tmp_path / "shipped.sqlite"
    job = jobs.start_demo(ws, shipped, ["edit", "--subject", "France"], owner="a")
    worker = jobs.demo_worker(ws)
    try:
        assert worker is not None and worker.pid == job.pid and job.kind == "edit"
        assert jobs.job_status(job)["state"] == "running" and len(jobs.running_jobs()) == 2
        other = jobs.start_demo(ws, shipped, ["edit", "--subject", "Spain"], owner="b")  # same worker, no new slot
        assert other.pid == worker.pid
        jobs.cancel_job(job, owner="a")
        assert Path(job.log).with_suffix(".cancel").is_file()
        assert jobs.job_status(job)["state"] == "running"  # until the worker says so
        with pytest.raises(ValueError, match="runs `edit` commands only"):
            jobs.start_demo(ws, shipped, ["run", "robustness"], owner="c")
        with pytest.raises(ValueError, match="must not be the shown store"):
            jobs.start_demo(ws, ws, ["edit"], owner="c")
    finally:
        _stop([worker])
    assert jobs.job_status(job)["state"] == "failed"
    assert "stopped before answering" in jobs.job_status(other)["error"]


def test_a_launch_is_a_one_unit_plan_the_engine_accepts(tmp_path):
    """Every command the Launch page builds becomes a plan unit whose command line, as the engine renders and
    checks it with the CLI's parser, is the command the page built."""
    from compute.cli import build_parser
    from compute.plan import load_plan

    from dashboard import commands

    built = [commands.robustness_argv("ROME", 8, 1, editors=["ROME"], limit=2, gen_tokens=5, device="cpu"),
             commands.knowledge_argv("tiny32", case_sets=["tiny32"], limit=3, types="all"),
             commands.sequential_argv("ROME", "big", 20, 2, 3, editors=["ROME"], case_sets=["big"]),
             commands.batch_argv("MEMIT", "big", "1, 10", editors=["MEMIT"], case_sets=["big"]),
             commands.sweep_argv("ROME", "1,3", 4, editors=["ROME"])]
    for n, argv in enumerate(built):
        path = tmp_path / f"p{n}.toml"
        path.write_text(jobs.launch_plan(argv, f"launch-{n}"))
        plan = load_plan(path, build_parser())
        assert plan.name == f"launch-{n}" and len(plan.units) == 1
        assert list(plan.units[0].argv) == [str(a) for a in argv]


def test_a_launched_run_goes_through_the_engine_into_the_workspace_store(tmp_path, monkeypatch, fixture_store,
                                                                         tiny_model_dir):
    """A Launch-page command runs as a one-unit plan (local executor): its run lands in the workspace store,
    linked to the plan unit that made it, and the job reads as done."""
    import shutil

    from dashboard import commands
    from store import Store, queries

    monkeypatch.setenv("EDITSCOPE_CACHE", str(tmp_path / "cache"))
    ws = tmp_path / "workspace.sqlite"
    shutil.copy(fixture_store, ws)
    with Store.open(ws, readonly=True) as st:
        before = set(queries.list_runs(st.conn, kind="knowledge")["run_id"])
    argv = commands.knowledge_argv("tiny32", case_sets=["tiny32"], limit=2, gen_tokens=2, model=tiny_model_dir)
    job = jobs.start_job(ws, argv, owner="alice")
    assert jobs.wait_for(job, 240)
    assert jobs.job_status(job)["state"] == "done", jobs.log_tail(job)
    with Store.open(ws, readonly=True) as st:
        runs = queries.list_runs(st.conn, kind="knowledge")
        new = runs.filter(~runs["run_id"].is_in(list(before)))
        assert new.height == 1 and new["n_done"][0] == 2 and new["status"][0] == "done"
        assert new["plan_unit"][0] == "launch"
        assert not runs["pre_rebuild"].any()  # a launch plan is no rebuild: the store's other runs stay as they were


def test_wait_for_log_returns_when_the_log_grows_with_a_change_and_asks_only_then(tmp_path):
    """The Edit demo's watcher waits for new rows this way: `changed` is asked once at the start and again
    only after the log has grown; a line that changes nothing does not end the wait, one that does ends it,
    and so does the job's exit status."""
    log = tmp_path / "demo.log"
    log.write_text("stage 3/6: editing with ROME\n")
    job = jobs.Job(job_id="j", kind="edit", argv=(), pid=0, log=str(log), store="", started_at="")
    asked = []

    def changed():
        asked.append(log.read_text().count("\n"))
        return "written after the edit" in log.read_text()

    assert jobs.wait_for_log(job, changed, timeout_s=0.3) is False
    assert asked == [1]  # the log did not grow: asked once, at the start

    def writer():
        time.sleep(0.2)
        with open(log, "a") as f:
            f.write("the edit's target value came from the value cache\n")
        time.sleep(0.2)
        with open(log, "a") as f:
            f.write("written after the edit: plain, paraphrase\n")

    import threading
    asked.clear()
    t = threading.Thread(target=writer)
    t.start()
    assert jobs.wait_for_log(job, changed, timeout_s=30) is True
    t.join()
    # once per growth of the log (a busy machine may see both lines at once), the last one saw the rows; asked
    # at every 50 ms poll it would have been about 8 times
    assert asked[0] == 1 and asked[-1] == 3 and len(asked) <= 3, asked

    asked.clear()
    log.with_suffix(".rc").write_text("0")
    assert jobs.wait_for_log(job, lambda: False, timeout_s=30) is True  # it has ended


def test_an_exit_status_file_caught_half_written_reads_as_not_yet(tmp_path):
    """The demo worker writes `<log>.rc` when a demo ends, and the page polls it. A file the writer has created
    but not yet filled read '' and failed the page (and a fresh-clone CI run) with int(''); it is 'still
    running' now, and the status once written whole."""
    log = tmp_path / "demo-queue" / "d.log"
    log.parent.mkdir()
    log.write_text("stage 4/6: plain\n")
    job = jobs.Job("d", "edit", ("edit",), os.getpid(), str(log), str(tmp_path / "s.sqlite"),
                   "2026-01-01T00:00:00+00:00", request=str(log.parent / "d.json"))
    log.with_suffix(".rc").write_text("")  # created, not yet written: what the poll saw
    assert jobs.job_status(job)["state"] == "running"
    jobs.write_exit_status(log.with_suffix(".rc"), 0)
    assert jobs.job_status(job) == {**jobs.job_status(job), "state": "done", "returncode": 0}
    assert sorted(p.name for p in log.parent.iterdir()) == ["d.log", "d.rc"]  # no partial file left behind

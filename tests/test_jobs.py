"""dashboard.jobs: argv building, every validation error, the public-mode gate, and cancelling a real process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dashboard import jobs

EDITORS = ["AlphaEdit", "FT-L", "IKE", "MEMIT", "ROME"]
TEMPLATES = {"capital": {"prompt": "The capital of {subject} is"}, "broken": {"prompt": "Its capital is"}}


def _edit(**kw):
    args = dict(subject="France", relation="capital", new_object="Rome", true_object=None, editor="ROME")
    args.update(kw)
    return jobs.edit_argv(**args, templates=TEMPLATES, editors=EDITORS)


def test_editor_names_come_from_the_hparams_folders():
    assert jobs.editor_names() == EDITORS


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
    assert _edit(model=jobs.DEFAULT_MODEL)[-1] != "--model"


def test_robustness_and_sweep_argv_and_limits():
    argv = jobs.robustness_argv("IKE", 8, 3, editors=EDITORS, limit=2, gen_tokens=1)
    assert argv == ["run", "robustness", "--editor", "IKE", "--cases", "8", "--seed", "3", "--gen-tokens", "1",
                    "--limit", "2"]
    assert jobs.sweep_argv("ROME", "1, 3,5", 4, editors=EDITORS)[:8] == [
        "run", "sweep", "--editor", "ROME", "--field", "layer", "--values", "1,3,5"]
    with pytest.raises(ValueError, match="between 1 and 60"):
        jobs.robustness_argv("IKE", 61, editors=EDITORS)
    with pytest.raises(ValueError, match="Limit must be between"):
        jobs.robustness_argv("IKE", 8, editors=EDITORS, limit=500)
    with pytest.raises(ValueError, match="Seed"):
        jobs.robustness_argv("IKE", 8, -1, editors=EDITORS)
    with pytest.raises(ValueError, match="unknown editor"):
        jobs.sweep_argv("X", "1", 4, editors=EDITORS)


@pytest.mark.parametrize("layers, message", [
    ("", "Layers is empty"), ("1,a", "comma-separated"), ("1,1", "repeat"), (",".join(map(str, range(9))), "at most 8"),
    ("-1", "between 0"),
])
def test_sweep_layers_refused(layers, message):
    with pytest.raises(ValueError, match=message):
        jobs.sweep_argv("ROME", layers, 4, editors=EDITORS)


def test_knowledge_argv():
    argv = jobs.knowledge_argv("tiny32", case_sets=["tiny32"], limit=1, gen_tokens=1)
    assert argv == ["knowledge", "measure", "--set", "tiny32", "--types", "plain", "--again", "--limit", "1",
                    "--gen-tokens", "1"]
    for kw, message in (({"case_set": "other"}, "unknown case set"), ({"types": "doubt"}, "rephrase types"),
                        ({"limit": None}, "give a limit"), ({"limit": 61}, "between 1 and 60")):
        with pytest.raises(ValueError, match=message):
            jobs.knowledge_argv(**{"case_set": "tiny32", "case_sets": ["tiny32"], **kw})


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


def test_cancel_run_sends_sigint_to_the_recorded_pid(tmp_path):
    from store import Store

    child = subprocess.Popen([sys.executable, "-c", SLEEPER], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        path = tmp_path / "s.sqlite"
        with Store.open(path, create=True) as st:
            run_id = st.start_run(kind="knowledge", model="m", config={}, provenance={}, n_total=3)
            st.conn.execute("UPDATE runs SET pid = ? WHERE run_id = ?", (child.pid, run_id))
            st.conn.commit()
        assert jobs.cancel_run(path, run_id) == child.pid
        assert child.wait(timeout=10) == 130
        assert jobs.mark_stale(path) == 1
        with Store.open(path, readonly=True) as st:
            assert st.get_run(run_id)["status"] == "interrupted"
        with pytest.raises(ValueError, match="not running"):
            jobs.cancel_run(path, run_id)
        with pytest.raises(ValueError, match="no run"):
            jobs.cancel_run(path, "nope")
    finally:
        child.kill()
        child.wait()


def test_start_job_logs_and_reports_failure(tmp_path, monkeypatch):
    from store import Store

    monkeypatch.setenv("EDITSCOPE_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "s.sqlite"
    Store.open(path, create=True).close()
    job = jobs.start_job(path, ["cases", "show", "--case", "no-such-case"])
    assert jobs.wait_for(job, 60)
    status = jobs.job_status(job)
    assert status["state"] == "failed" and status["returncode"] == 2 and "no case" in status["error"]
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
    assert table["run_id"].to_list() == ["b", "a"] and table["heartbeat_age_s"].to_list() == [30.0, 60.0]


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
    argv = jobs.sequential_argv("ROME", "big", 20, 2, 3, editors=EDITORS, case_sets=sets)
    assert argv[:4] == ["run", "sequential", "--editor", "ROME"]
    assert argv[argv.index("--edits") + 1] == "20" and argv[argv.index("--batch") + 1] == "2"
    assert argv[argv.index("--order-seed") + 1] == "3" and "--panel-pool" in argv
    with pytest.raises(ValueError, match="Number of edits must be between 1 and 100"):
        jobs.sequential_argv("ROME", "big", 101, editors=EDITORS, case_sets=sets)
    with pytest.raises(ValueError, match="larger than the number of edits"):
        jobs.sequential_argv("ROME", "big", 5, 10, editors=EDITORS, case_sets=sets)
    with pytest.raises(ValueError, match="unknown case set"):
        jobs.sequential_argv("ROME", "nope", 5, editors=EDITORS, case_sets=sets)
    argv = jobs.batch_argv("MEMIT", "big", "1, 10", editors=EDITORS, case_sets=sets)
    assert argv[argv.index("--sizes") + 1] == "1,10" and argv[argv.index("--abilities") + 1] == "none"
    for bad in ("1,1", "1,2,3,4,5", "0", "51", "a,b"):
        with pytest.raises(ValueError):
            jobs.batch_argv("MEMIT", "big", bad, editors=EDITORS, case_sets=sets)

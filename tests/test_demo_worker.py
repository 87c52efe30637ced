"""The edit demo (compute/demo_worker.py): the unedited model's answers come from the store, the edited model's
plain and paraphrase answers are written before the other types, and the worker process answers several demos
with one model load, never writes the shown store and stops when idle. Tiny model saved as a local directory."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from compute.cli import main
from store import Store, queries

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory, tiny_model_dir, cache_dir, kb):
    """A store with the knowledge base, a 12-case set built with seed 1 and its all-types knowledge run."""
    folder = tmp_path_factory.mktemp("demo")
    store = folder / "results.sqlite"
    base = ["--store", str(store), "--cache-dir", str(cache_dir), "--quiet"]
    assert main(base + ["kb", "build"]) == 0
    assert main(base + ["cases", "build", "--n", "12", "--seed", "1", "--set", "v12", "--model", tiny_model_dir]) == 0
    assert main(base + ["knowledge", "measure", "--set", "v12", "--types", "all", "--gen-tokens", "2",
                        "--model", tiny_model_dir]) == 0
    rome = folder / "rome.json"
    rome.write_text('{"layer": 0, "v_steps": 2, "n_prefixes": 1, "prefix_tokens": 3, "use_covariance": false}')
    with Store.open(store, readonly=True) as st:
        case = queries.cases(st.conn, case_set="v12").row(0, named=True)
        knowledge = queries.list_runs(st.conn, kind="knowledge")["run_id"][0]
    return {"store": store, "cache": str(cache_dir), "model": tiny_model_dir, "rome": str(rome), "case": case,
            "knowledge": knowledge}


def _argv(env, new=None):
    c = env["case"]
    return ["edit", "--subject", c["subject"], "--relation", c["relation"], "--new", new or c["new_object"],
            "--gen-tokens", "2", "--model", env["model"], "--hparams", env["rome"]]


def _rows(path, run_id, case_id, edit_count=0):
    with Store.open(Path(path), readonly=True) as st:
        values = {(r, m): v for r, m, v in st.conn.execute(
            "SELECT rephrase_type, metric, value FROM measurements WHERE run_id = ? AND case_id = ? AND edit_count = ?",
            (run_id, case_id, edit_count))}
        gens = st.conn.execute("SELECT rephrase_type, text FROM generations WHERE run_id = ? AND case_id = ? AND "
                               "edit_count = ? AND phase = ? ORDER BY probe_id",
                               (run_id, case_id, edit_count, "pre" if edit_count == 0 else "post")).fetchall()
    return values, gens


def _demo_run(path):
    with Store.open(Path(path), readonly=True) as st:
        run = queries.list_runs(st.conn, kind="demo").row(0, named=True)
    return run, json.loads(run["config"])


@pytest.fixture
def counted(monkeypatch):
    """Every evaluate_cases call: (rephrase types, whether it generated)."""
    import compute.evaluate as evaluate

    real, calls = evaluate.evaluate_cases, []

    def counting(lm, cases, types, **kw):
        calls.append((list(types), kw.get("generation", True)))
        return real(lm, cases, types, **kw)

    monkeypatch.setattr(evaluate, "evaluate_cases", counting)
    return calls


def test_before_answers_come_from_the_baseline_rows(demo_store, tmp_path, counted, capsys):
    store = tmp_path / "s.sqlite"
    shutil.copy(demo_store["store"], store)
    assert main(["--store", str(store), "--cache-dir", demo_store["cache"], "--quiet", *_argv(demo_store)]) == 0
    out = capsys.readouterr().out
    assert f"unedited answers from the store: run {demo_store['knowledge']} (16 types)" in out
    # no evaluation of the unedited model generated anything: the only generating call is after the edit
    assert sum(1 for types, gen in counted if gen and types) == 1
    run, cfg = _demo_run(store)
    assert cfg["before_from"] == demo_store["knowledge"] and cfg["before_recomputed"] == []
    demo_vals, demo_gens = _rows(store, run["run_id"], cfg["case_id"])
    base_vals, base_gens = _rows(store, demo_store["knowledge"], demo_store["case"]["case_id"])
    typed = {k: v for k, v in demo_vals.items() if k[0] != "neighbourhood"}
    assert typed and typed == {k: base_vals[k] for k in typed}  # the baseline's own numbers
    assert {k for k in base_vals if k[0] != "neighbourhood" and k[1] != "recall"} == set(typed)
    assert demo_gens == base_gens  # the baseline's answers, probe by probe
    after, _ = _rows(store, run["run_id"], cfg["case_id"], 1)
    assert {r for r, _ in after} == {r for r, _ in typed} | {"neighbourhood", "edit"}  # every type after it


def test_another_new_object_reuses_the_answers_and_rescores_the_new_object(demo_store, tmp_path, counted, capsys):
    store = tmp_path / "s.sqlite"
    shutil.copy(demo_store["store"], store)
    assert main(["--store", str(store), "--cache-dir", demo_store["cache"], "--quiet",
                 *_argv(demo_store, new="Atlantis")]) == 0
    out = capsys.readouterr().out
    assert "the new object's scores on 16 types follow after the edit" in out
    gen_calls = [(t, g) for t, g in counted if g and t]
    assert len(gen_calls) == 1  # the answers before the edit were not generated again
    run, cfg = _demo_run(store)
    demo_vals, demo_gens = _rows(store, run["run_id"], cfg["case_id"])
    base_vals, base_gens = _rows(store, demo_store["knowledge"], demo_store["case"]["case_id"])
    assert demo_gens == base_gens
    for (rtype, metric), value in demo_vals.items():
        if rtype != "neighbourhood" and metric in ("nll_true", "p_true", "rank_true", "rev", "fluency"):
            assert value == base_vals[(rtype, metric)]
    assert all((r, "p_new") in demo_vals for r, _ in base_vals if r != "neighbourhood")
    assert demo_vals[("plain", "p_new")] != base_vals[("plain", "p_new")]


def test_no_stored_baseline_recomputes_and_says_so(demo_store, tmp_path, counted, capsys, cache_dir):
    store = tmp_path / "empty.sqlite"
    assert main(["--store", str(store), "--cache-dir", str(cache_dir), "--quiet", "kb", "build"]) == 0
    assert main(["--store", str(store), "--cache-dir", demo_store["cache"], "--quiet", *_argv(demo_store)]) == 0
    assert "unedited answers recomputed: the store holds no baseline" in capsys.readouterr().out
    assert sum(1 for t, g in counted if g and t) == 2  # before and after the edit
    run, cfg = _demo_run(store)
    assert cfg["before_from"] is None and len(cfg["before_recomputed"]) == 16
    # a second demo of the same fact reuses the first one's answers (its probes digest matches)
    assert main(["--store", str(store), "--cache-dir", demo_store["cache"], "--quiet", *_argv(demo_store)]) == 0
    out = capsys.readouterr().out
    assert f"unedited answers from the store: run {run['run_id']}" in out
    assert "target value came from the value cache" in out  # the same fact on the same weights: not optimised again


def test_plain_and_paraphrase_are_written_before_the_other_types(demo_store, tmp_path, monkeypatch):
    from compute.cli import build_parser
    from compute.demo_worker import DemoEngine, run_demo

    store = tmp_path / "s.sqlite"
    shutil.copy(demo_store["store"], store)
    writes = []
    real = Store.write_measurements

    def spy(self, rows):
        rows = list(rows)
        writes.append(sorted({r["rephrase_type"] for r in rows if r["edit_count"] == 1}))
        return real(self, rows)

    monkeypatch.setattr(Store, "write_measurements", spy)
    args = build_parser().parse_args(["--store", str(store), "--cache-dir", demo_store["cache"], "--quiet",
                                      *_argv(demo_store)])
    lines = []
    run_demo(args, DemoEngine(), out=lines.append, stream=True)
    after = [w for w in writes if w]
    assert after[0] == ["paraphrase", "plain"]
    assert len(after) == 2 and "cloze" in after[1] and "doubt" in after[1] and "neighbourhood" in after[1]
    assert any(line.startswith("stage 4/6") for line in lines) and any(line.startswith("stage 5/6") for line in lines)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_worker_answers_two_demos_with_one_load_streams_and_stops_when_idle(demo_store, tmp_path, monkeypatch):
    from dashboard import jobs

    monkeypatch.setenv("EDITSCOPE_CACHE", demo_store["cache"])  # the knowledge base and the jobs folder
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    shipped = tmp_path / "shipped" / "results.sqlite"
    shipped.parent.mkdir()
    shutil.copy(demo_store["store"], shipped)
    with Store.open(shipped) as st:
        st.finalize()
    before, files = _sha(shipped), sorted(p.name for p in shipped.parent.iterdir())
    ws = tmp_path / "ws.sqlite"
    first = jobs.start_demo(ws, shipped, _argv(demo_store), owner="a", idle_s=4)
    with pytest.raises(ValueError, match="you already have 1 run going"):
        jobs.start_demo(ws, shipped, _argv(demo_store), owner="a", idle_s=4)
    assert jobs.wait_for(first, 180), jobs.log_tail(first)
    assert jobs.job_status(first)["state"] == "done", jobs.log_tail(first)
    second = jobs.start_demo(ws, shipped, _argv(demo_store, new="Atlantis"), owner="a", idle_s=4)
    assert second.pid == first.pid  # the same worker
    assert jobs.wait_for(second, 180), jobs.log_tail(second)
    assert jobs.job_status(second)["state"] == "done", jobs.log_tail(second)
    log1, log2 = jobs.log_tail(first, 10**6), jobs.log_tail(second, 10**6)
    assert "loaded in" in log1 and "(load 1 of this process)" in log1
    assert "already loaded (load 1 of this process)" in log2  # no second load
    assert f"from the store: run {demo_store['knowledge']}" in log1  # read from the shown store, read-only
    first_write = log1.index("written after the edit: plain, paraphrase")
    assert first_write < log1.index("written after the edit: cloze")
    run_id = jobs.saved_run(second)
    assert run_id and jobs.demo_run(second) == run_id
    with Store.open(ws, readonly=True) as st:
        assert set(queries.list_runs(st.conn, kind="demo")["status"]) == {"done"}
    worker = next(j for j in jobs.list_jobs(ws) if j.kind == "demo-worker")
    assert jobs.wait_for(worker, 60), jobs.log_tail(worker)  # idle for 4 s: it stops
    assert "stopping (idle, 1 model load(s))" in jobs.log_tail(worker)
    assert _sha(shipped) == before and sorted(p.name for p in shipped.parent.iterdir()) == files
    with Store.open(shipped, readonly=True) as st:
        assert queries.list_runs(st.conn, kind="demo").is_empty()


def test_the_worker_refuses_to_write_the_shipped_store(tmp_path):
    from compute.cli import build_parser
    from compute.demo_worker import serve

    store = tmp_path / "results.sqlite"
    store.write_bytes(b"")
    with pytest.raises(ValueError, match="shipped store"):
        serve(tmp_path / "q", store, store, idle_s=0, parser=build_parser())

"""Plans and executors (compute/plan.py, `python -m compute plan ...`): bad units refused before anything runs,
status read from the store alone, and a small tiny-model plan (one robustness run with --limit, one sequential
run, one batch run, as tests/conftest.py's fixture_store makes them) computed by the local executor, by a
local Ray of 2 CPUs, and by a driver killed mid-plan and started again: the same rows every time."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from compute import plan as plans
from compute.cli import build_parser, main
from store import Store

ROOT = Path(__file__).resolve().parents[1]

HPARAMS = {
    "ft.json": '{"layer": 1, "lr": 0.05, "steps": 4, "norm_constraint": 0.05, "stop_nll": 0.0}',
    "rome.json": '{"layer": 0, "v_steps": 6, "n_prefixes": 2, "prefix_tokens": 3, "use_covariance": false}',
    "memit.json": '{"layers": [0], "lam": 1.0, "v_steps": 6, "n_prefixes": 2, "prefix_tokens": 3}',
}

UNITS = """
[[unit]]
id = "kb"
kind = "kb"

[[unit]]
id = "cases"
kind = "cases"
n = 32
set = "tiny32"
after = ["kb"]

[[unit]]
id = "sequential"
kind = "sequential"
editor = "ROME"
set = "tiny32"
edits = 6
every = 3
panel_pool = 4
panel_size = 3
panel_any = true
hparams = "rome.json"
after = ["cases"]

[[unit]]
id = "robustness"
kind = "robustness"
editor = "FT-L"
set = "tiny32"
limit = 2
gen_tokens = 2
hparams = "ft.json"
after = ["cases"]

[[unit]]
id = "batch"
kind = "batch"
editor = "MEMIT"
set = "tiny32"
sizes = [1, 3]
panel_pool = 4
hparams = "memit.json"
after = ["cases"]
"""


def write_plan(folder: Path, model: str, units: str = UNITS, name: str = "tiny") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for file, text in HPARAMS.items():
        (folder / file).write_text(text)
    path = folder / f"{name}.toml"
    path.write_text(f'name = "{name}"\nmodel = "{model}"\n{units}')
    return path


def fresh_cache(tmp: Path, cache_dir: Path) -> Path:
    """A cache folder of its own (knowledge base and wiki paragraphs copied), so that no run reuses another's
    cached edit values or finds its plan folder."""
    tmp.mkdir(parents=True, exist_ok=True)
    for path in Path(cache_dir).glob("*.json"):
        shutil.copy(path, tmp / path.name)
    return tmp


def rows(store: Path) -> dict:
    """The store's results keyed without run ids: measurements by (kind, editor, case, edit count, rephrase
    type, metric), generations, ability scores and per-edit diagnostics likewise; timings left out."""
    conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        out = {
            "measurements": {k[:-1]: k[-1] for k in conn.execute(
                "SELECT r.kind, r.editor, m.case_id, m.edit_count, m.rephrase_type, m.metric, m.value "
                "FROM measurements m JOIN runs r USING (run_id)") if not k[5].endswith("seconds")},
            "generations": {k[:-1]: k[-1] for k in conn.execute(
                "SELECT r.kind, r.editor, g.case_id, g.edit_count, g.probe_id, g.phase, g.text "
                "FROM generations g JOIN runs r USING (run_id)")},
            "abilities": {k[:-1]: k[-1] for k in conn.execute(
                "SELECT r.kind, r.editor, a.edit_count, a.batch_size, a.task, a.mode, a.score "
                "FROM abilities a JOIN runs r USING (run_id)")},
            "diagnostics": {k[:-1]: k[-1] for k in conn.execute(
                "SELECT r.kind, r.editor, d.edit_count, d.case_id, d.target, d.name, d.value "
                "FROM edit_diagnostics d JOIN runs r USING (run_id)") if "second" not in k[5]},
            "runs": sorted(conn.execute("SELECT kind, editor, status, n_done, n_total FROM runs")),
            "cases": conn.execute("SELECT COUNT(*) FROM cases").fetchone()[0],
        }
    finally:
        conn.close()
    return out


def assert_same_rows(a: dict, b: dict) -> None:
    assert a["runs"] == b["runs"] and a["cases"] == b["cases"]
    for table in ("measurements", "generations", "abilities", "diagnostics"):
        assert a[table].keys() == b[table].keys(), table
        differ = [k for k in a[table] if a[table][k] != pytest.approx(b[table][k], rel=1e-6, abs=1e-9)
                  and a[table][k] != b[table][k]]
        assert not differ, (table, differ[:5])
    assert len(a["measurements"]) > 500 and a["generations"] and a["abilities"] and a["diagnostics"]


def plan_cmd(cache: Path, plan: Path, target: Path, *extra: str) -> list[str]:
    return ["--cache-dir", str(cache), "--quiet", "plan", "run", str(plan), "--store", str(target), *extra]


# ---- bad plans: one line naming the unit, exit 2, nothing run ----------------------------------------------


BAD = {  # what to change in the robustness unit, the line's expected words
    "an unknown option": (('kind = "robustness"', 'kind = "robustness"\ncolour = "red"'),
                          "unrecognized arguments: --colour red"),
    "an option the parser refuses": (("limit = 2", "limit = 0"), "--limit: must be at least 1, got 0"),
    "an unknown kind": (('kind = "robustness"', 'kind = "robustnes"'), "kind 'robustnes' is not one of"),
    "an unknown dependency": (('hparams = "ft.json"\nafter = ["cases"]', 'hparams = "ft.json"\nafter = ["nowhere"]'),
                              "'nowhere', which is not a unit"),
    "a hold that gives no reason": (('kind = "robustness"', 'kind = "robustness"\nhold = " "'),
                                    "hold must say why the unit waits"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_unit_is_refused_before_anything_runs(tmp_path, case, capsys):
    (old, new), message = BAD[case]
    assert UNITS.count(old) == 1
    plan = write_plan(tmp_path, "tiny-model-dir", UNITS.replace(old, new))
    target, cache = tmp_path / "target.sqlite", tmp_path / "cache"
    capsys.readouterr()
    assert main(plan_cmd(cache, plan, target)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: plan tiny.toml, unit 'robustness'"), err
    assert message in err, err
    assert not target.exists() and not cache.exists()  # nothing ran: no store, no shard folder


def test_a_plan_with_a_cycle_or_a_spec_given_twice_is_refused(tmp_path):
    parser = build_parser()
    cyclic = UNITS.replace('after = ["kb"]', 'after = ["kb", "batch"]')
    with pytest.raises(plans.PlanError, match="wait on each other"):
        plans.load_plan(write_plan(tmp_path, "m", cyclic), parser)
    twice = UNITS + UNITS.split("[[unit]]")[-1].join(["[[unit]]", ""]).replace('id = "batch"', 'id = "batch-again"')
    with pytest.raises(plans.PlanError, match="unit 'batch-again': the same spec as unit 'batch'"):
        plans.load_plan(write_plan(tmp_path, "m", twice), parser)
    with pytest.raises(plans.PlanError, match="a cases unit names its set"):
        plans.load_plan(write_plan(tmp_path, "m", UNITS.replace('set = "tiny32"\nafter = ["kb"]', 'after = ["kb"]')),
                        parser)


def test_units_become_command_lines_and_keys_that_ignore_ids_order_and_paths(tmp_path):
    parser = build_parser()
    plan = plans.load_plan(write_plan(tmp_path / "a", "m"), parser)
    by = plan.by_id()
    assert by["batch"].argv[:6] == ("run", "batch", "--editor", "MEMIT", "--set", "tiny32")
    assert "--sizes" in by["batch"].argv and by["batch"].argv[by["batch"].argv.index("--sizes") + 1] == "1,3"
    assert "--panel-any" in by["sequential"].argv and by["kb"].argv == ("kb", "build")
    # the same units, renamed, reordered and with their hparams files elsewhere: the same keys
    moved = UNITS.replace('id = "batch"', 'id = "memit-batch"').replace('"batch"]', '"memit-batch"]')
    blocks = moved.split("[[unit]]")
    other = plans.load_plan(write_plan(tmp_path / "b", "m", "[[unit]]".join([blocks[0], *reversed(blocks[1:])])),
                            parser)
    assert {u.key for u in plan.units} == {u.key for u in other.units}
    # a changed hyperparameter file is another unit
    (tmp_path / "b" / "memit.json").write_text(HPARAMS["memit.json"].replace('"lam": 1.0', '"lam": 2.0'))
    changed = plans.load_plan(tmp_path / "b" / "tiny.toml", parser)
    assert changed.by_id()["memit-batch"].key != by["batch"].key
    assert changed.by_id()["sequential"].key == by["sequential"].key
    # hp and grid tables become one option per field
    sweep = plans.load_plan(write_plan(tmp_path / "c", "m", '[[unit]]\nid = "s"\nkind = "sweep"\neditor = "ROME"\n'
                                       'grid = { v_lr = [0.5, 0.1], clamp_norm_factor = [4] }\nhp = { v_steps = 3 }\n'),
                            parser).units[0]
    assert sweep.argv == ("run", "sweep", "--editor", "ROME", "--grid", "clamp_norm_factor=4", "--grid", "v_lr=0.5,0.1",
                          "--hp", "v_steps=3", "--model", "m")


# ---- status from the store alone -----------------------------------------------------------------------------


def test_plan_status_reads_done_partial_and_missing_and_estimates_the_time_left(tmp_path):
    plan = plans.load_plan(write_plan(tmp_path, "m"), build_parser())
    by = plan.by_id()
    target = tmp_path / "target.sqlite"
    with Store.open(target, create=True) as st:
        done = st.start_run(kind="robustness", model="m", editor="FT-L", n_total=2)
        st.heartbeat(done, n_done=2)
        st.finish_run(done, timings={"seconds": 60.0})
        part = st.start_run(kind="sequential", model="m", editor="ROME", n_total=6)
        st.heartbeat(part, n_done=2)
        st.write_events([{"run_id": part, "kind": "timing", "series": "checkpoint", "edit_count": e, "value": 5.0}
                         for e in (0, 1)])
        st.finish_run(part, status="interrupted")
    plans.record_unit(target, plan, by["robustness"], [done])
    plans.record_unit(target, plan, by["sequential"], [part])
    states = {s.unit.id: s for s in plans.plan_status(plan, target)}
    assert {k: s.state for k, s in states.items()} == {
        "kb": "missing", "cases": "missing", "robustness": "done", "sequential": "partial", "batch": "missing"}
    # the partial sequential run: 4 of its 6 edits left at its own 5 s per edit
    assert states["sequential"].remaining_s == pytest.approx(20.0) and "its own" in states["sequential"].basis
    assert states["batch"].remaining_s is None and "no timed batch run" in states["batch"].basis
    lines = plans.status_lines(list(states.values()))
    assert "1 done, 1 partial, 3 missing" in lines[-2] and "batch (no timed batch run in the store)" in lines[-1]
    # from the store alone: a copy elsewhere (a fresh clone) reads the same
    copy = tmp_path / "elsewhere" / "copy.sqlite"
    plans.copy_store(target, copy)
    assert [s.state for s in plans.plan_status(plan, copy)] == [s.state for s in states.values()]


def test_plan_status_names_units_whose_runs_were_made_with_other_hyperparameters(tmp_path):
    """A unit's key counts its options, not the shipped file it reads: when the file changes after its runs, the
    unit stays done and `plan status` marks it (!) with the fields that differ. Its `hp` pins and a sweep run's
    own setting count as the unit's; a unit whose editor has no file here is not compared."""
    units = "".join(f'[[unit]]\nid = "{uid}"\nkind = "{kind}"\neditor = "ROME"\nset = "s"\n{extra}\n'
                    for uid, kind, extra in [
        ("fresh", "sequential", "edits = 6\nhp = { key_mismatch = true }"),
        ("old", "sequential", "edits = 6\norder_seed = 1"),
        ("sweep", "sweep", 'sweep = "x"\ngrid = { v_lr = [0.1] }'),
    ])
    plan = plans.load_plan(write_plan(tmp_path, "smollm2-135m", units), build_parser())
    by = plan.by_id()
    now = plans.unit_hparams_now(by["fresh"])
    assert now["key_mismatch"] is True and plans.unit_hparams_now(by["old"])["key_mismatch"] is False
    target = tmp_path / "target.sqlite"
    made = {}
    with Store.open(target, create=True) as st:
        for uid, hp, config in [("fresh", now, {}), ("old", {**now, "key_mismatch": False, "v_lr": 9.0}, {}),
                                ("sweep", {**now, "key_mismatch": False, "v_lr": 0.1}, {"field": "v_lr", "value": 0.1})]:
            made[uid] = st.start_run(kind=by[uid].kind, model="smollm2-135m", editor="ROME", hparams=hp,
                                     config=config, n_total=1)
            st.heartbeat(made[uid], n_done=1)
            st.finish_run(made[uid])
    for uid, run in made.items():
        plans.record_unit(target, plan, by[uid], [run])
    states = {s.unit.id: s for s in plans.plan_status(plan, target)}
    assert {k: states[k].state for k in made} == {"fresh": "done", "old": "done", "sweep": "done"}
    assert states["fresh"].outdated == () and states["sweep"].outdated == ()
    assert states["old"].outdated == (f"{made['old']}: v_lr stored 9.0, now {json.dumps(now['v_lr'])}",)
    lines = plans.status_lines(list(states.values()))
    assert any(line.startswith("old ") and " done! " in line for line in lines)
    assert lines[-1].startswith("! old: its runs were made with other hyperparameters")
    assert "v_lr stored 9.0" in lines[-1]
    block = plans.status_markdown(plan, list(states.values()), "target.sqlite")
    assert "| old | sequential | done (other hyperparameters) |" in block and "| fresh | sequential | done |" in block
    # `plan run` keeps the runs and says so
    said = []
    assert plans.execute(plan, target, workers=1, cache_dir=tmp_path / "cache", out=said.append) == {
        "fresh": "done", "old": "done", "sweep": "done"}
    assert any(line.startswith("! old: ") for line in said)
    # and keeps the plan's status in its target, for the dashboard: every unit done now
    from store import queries

    with Store.open(target, readonly=True) as st:
        status = queries.plan_status(st.conn)
    assert dict(zip(status["unit"], status["state"])) == {"fresh": "done", "old": "done", "sweep": "done"}
    assert status["other_hparams"].to_list() == [False, True, False]
    # no file for this model here: nothing to compare
    other = plans.load_plan(write_plan(tmp_path / "m", "m", units), build_parser())
    assert plans.unit_hparams_now(other.by_id()["old"]) is None


# ---- the tiny plan, three ways ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, tiny_model_dir, cache_dir, kb):
    """The tiny plan run once by the local executor with 2 workers: (plan, target, cache, stdout)."""
    tmp = tmp_path_factory.mktemp("plan-local")
    plan = write_plan(tmp, tiny_model_dir)
    target, cache = tmp / "target.sqlite", fresh_cache(tmp / "cache", cache_dir)
    out = subprocess.run([sys.executable, "-m", "compute", *plan_cmd(cache, plan, target, "--workers", "2")],
                         cwd=ROOT, capture_output=True, text=True, timeout=900,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stdout + out.stderr
    return plan, target, cache, out.stdout


@pytest.mark.slow
def test_the_local_executor_computes_every_unit_into_its_own_shard_and_merges_it(local_run):
    plan_path, target, cache, stdout = local_run
    plan = plans.load_plan(plan_path, build_parser())
    assert "all 5 units done" in stdout
    states = plans.plan_status(plan, target)
    assert [s.state for s in states] == ["done"] * 5
    from store import queries

    with Store.open(target, readonly=True) as st:  # the status the Overview reads, kept as the units ended
        assert queries.plan_status(st.conn)["state"].to_list() == ["done"] * 5
    made = {s.unit.id: sorted(r["kind"] for r in s.runs) for s in states}
    assert made == {"kb": [], "cases": [], "sequential": ["sequential"], "robustness": ["knowledge", "robustness"],
                    "batch": ["batch"]}  # the robustness unit made its own baseline
    got = rows(target)
    assert [r[:3] for r in got["runs"]] == [("batch", "MEMIT", "done"), ("knowledge", None, "done"),
                                           ("robustness", "FT-L", "done"), ("sequential", "ROME", "done")]
    # shards are gone once merged; the logs stay; nothing of the plan is in the repository
    folder = plans.plan_folder(plan, cache)
    assert not list(folder.glob("*.sqlite")) and len(list(folder.glob("*.log"))) == 5
    # plan_unit rows link runs to units and are not shown as events of the editing
    from store import derived

    with Store.open(target, readonly=True) as st:
        assert "plan_unit" not in set(derived.sequential_events(st.conn)["kind"].to_list())
    # a second run finds everything done and changes nothing
    assert main(plan_cmd(cache, plan_path, target)) == 0
    assert rows(target) == got


@pytest.mark.slow
def test_a_local_ray_of_two_cpus_gives_the_same_rows(local_run, tmp_path, cache_dir):
    pytest.importorskip("ray")
    import ray

    plan, target, _, _ = local_run
    mine, cache = tmp_path / "ray.sqlite", fresh_cache(tmp_path / "cache", cache_dir)
    try:
        assert main(plan_cmd(cache, plan, mine, "--executor", "ray", "--workers", "2")) == 0
        assert ray.cluster_resources().get("CPU") == 2
    finally:
        ray.shutdown()
    assert_same_rows(rows(target), rows(mine))
    assert [s.state for s in plans.plan_status(plans.load_plan(plan, build_parser()), mine)] == ["done"] * 5


def _gained_progress(folder: Path) -> int:
    """The most work a live shard of the plan folder has stored (its runs' n_done), 0 when none."""
    best = 0
    for shard in folder.glob("*-*.sqlite"):
        if shard.name.endswith((".progress.sqlite", ".from-ray.sqlite")):
            continue
        try:
            conn = sqlite3.connect(f"file:{shard}?mode=ro", uri=True)
            best = max([best, *(n or 0 for (n,) in conn.execute(
                "SELECT n_done FROM runs WHERE kind IN ('sequential', 'robustness', 'batch')"))])
            conn.close()
        except sqlite3.Error:
            pass
    return best


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_a_driver_killed_mid_plan_and_started_again_completes_with_the_same_rows(local_run, tmp_path, cache_dir, how):
    """SIGKILL: the driver does nothing more, its unit dies with it. SIGTERM: the driver stops its unit and
    merges what it stored, so the target alone shows the unit partial."""
    plan_path, reference, _, _ = local_run
    plan = plans.load_plan(plan_path, build_parser())
    target, cache = tmp_path / "target.sqlite", fresh_cache(tmp_path / "cache", cache_dir)
    folder = plans.plan_folder(plan, cache)
    driver = subprocess.Popen([sys.executable, "-m", "compute", *plan_cmd(cache, plan_path, target, "--workers", "1")],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 600
    while _gained_progress(folder) < 1 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the sequential unit runs first: wait for its first stored edit
    assert driver.poll() is None, "the plan ended before a unit had stored anything: nothing to kill"
    driver.send_signal(getattr(signal, how))
    assert driver.wait(timeout=300) != 0
    # its unit gets SIGTERM (it dies with its parent), marks its run interrupted in its shard, and exits
    for _ in range(600):
        pids = [r[0] for shard in folder.glob("*-*.sqlite")
                for r in sqlite3.connect(f"file:{shard}?mode=ro", uri=True).execute(
                    "SELECT pid FROM runs WHERE status = 'running'")]
        if not any(_alive(p) for p in pids):
            break
        time.sleep(0.1)
    states = {s.unit.id: s.state for s in plans.plan_status(plan, target, shards=folder)}
    assert states["sequential"] == "partial" and list(folder.glob("sequential-*.sqlite"))
    if how == "SIGTERM":  # its progress was merged: the store alone says so, with the run interrupted
        assert plans.plan_status(plan, target)[2].state == "partial"
        assert [r["status"] for r in plans.plan_status(plan, target)[2].runs] == ["interrupted"]
    assert main(plan_cmd(cache, plan_path, target)) == 0  # resumes the killed unit's shard, then the rest
    log = next(folder.glob("sequential-*.log")).read_text()
    assert "resuming run" in log or "extending run" in log  # its second start continued the run, not a new one
    assert_same_rows(rows(reference), rows(target))
    assert [s.state for s in plans.plan_status(plan, target)] == ["done"] * 5


def _alive(pid) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    state = Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}/stat").exists() else "X"
    return state not in ("Z", "X")


# ---- the shipped plan -----------------------------------------------------------------------------------------


def test_the_shipped_plan_is_the_shipped_stores_recipe():
    plan = plans.load_plan(ROOT / "plans" / "shipped.toml", build_parser())
    by = plan.by_id()
    kinds = [u.kind for u in plan.units]
    assert plan.finalize and {k: kinds.count(k) for k in set(kinds)} == {
        "kb": 1, "cases": 5, "knowledge": 2, "sweep": 10, "robustness": 4, "abilities": 1, "sequential": 30, "batch": 2}
    assert {u.options["editor"] for u in plan.units if u.kind == "robustness"} == {"ROME", "FT-L", "IKE", "MEMIT"}
    assert all(u.after[0] == "baseline-240" and u.options["set"] == "smollm2-135m-n240-s0"
               for u in plan.units if u.kind == "robustness")
    assert by["baseline-240"].argv == ("knowledge", "measure", "--set", "smollm2-135m-n240-s0", "--types", "all")
    seq = [u for u in plan.units if u.kind == "sequential"]
    assert all(u.options["set"] == "smollm2-135m-n1800-s0" and u.options["abilities_every"] == 50 for u in seq)
    # the shipped runs' layout is written out, not left to the CLI's defaults
    for u in seq:
        assert {k: u.options[k] for k in ("every", "after_collapse", "panel_pool", "panel_size", "recheck_every",
                                          "panel_check")} == {
            "every": 10, "after_collapse": 150, "panel_pool": 1100, "panel_size": 200, "recheck_every": 50,
            "panel_check": 50}
    # the replicated comparison (issue 19 point 11): each arm over edit orders 0, 1, 2, to 500 edits, first in
    # the file, so that a plan cut short has computed it before the rest
    arms = ("ROME", "ROME-key-mismatch", "MEMIT-b10", "AlphaEdit-b10", "control")
    ids = [u.id for u in plan.units]
    replicated = [f"sequential-{a}-o{o}" for o in (0, 1, 2) for a in arms]
    assert all(by[i].options["order_seed"] == int(i[-1]) and by[i].options["edits"] == 500 for i in replicated)
    first_other = min(ids.index(u.id) for u in plan.units if u.kind in ("robustness", "batch")
                      or (u.kind == "sequential" and u.id not in replicated))
    assert max(ids.index(i) for i in replicated) < first_other
    assert by["sequential-ROME-key-mismatch-o1"].options["hp"] == {"key_mismatch": True}
    assert by["sequential-MEMIT-b10-o2"].options["batch"] == 10 and "calibration-MEMIT-lr" in by["sequential-MEMIT-b10-o2"].after
    control = by["sequential-control-o1"]
    assert control.options["editor"] == "RandomRankOne" and control.after == ("sequential-ROME-o1",)
    assert control.options["hp"] == {"reference_run": "unit:sequential-ROME-o1"}
    # RECT 20/40/60% on the same three orders, to 200 edits
    rect = [u for u in seq if "rect_top" in u.options.get("hp", {})]
    assert sorted((u.options["hp"]["rect_top"], u.options["order_seed"]) for u in rect) == [
        (k, o) for k in (0.2, 0.4, 0.6) for o in (0, 1, 2)] and all(u.options["edits"] == 200 for u in rect)
    # after study A's grid, the units that decide a claim the replicated comparison leaves open (C2, C3, C4, B4,
    # B1/B2) before those that only add a curve or a sweep
    deciding = ["batch-MEMIT", *(f"sequential-ROME-rect{k}-o{o}" for o in (0, 1, 2) for k in ("0.2", "0.4")),
                *(f"sequential-MEMIT-b1-o{o}" for o in (0, 1, 2)), "sequential-ROME-key-mismatch-o1-1000"]
    robustness = [ids.index(u.id) for u in plan.units if u.kind == "robustness"]
    later = [ids.index(i) for i in (*(f"sequential-ROME-rect0.6-o{o}" for o in (0, 1, 2)), "calibration-ROME",
                                    "calibration-ROME-more-steps", "calibration-ROME-clamp-2", "sweep-ROME",
                                    "sweep-FT-L", "sweep-MEMIT", "batch-AlphaEdit", "sequential-AlphaEdit-b1-o0",
                                    "sequential-FT-L-o0", "knowledge-480")]
    assert len(ids) == len(later) + len(deciding) + len(set(ids[:max(robustness) + 1])) + 1  # + abilities-full
    assert max(robustness) < min(ids.index(i) for i in deciding) and max(ids.index(i) for i in deciding) < min(later)
    # the original keys' order 1, still usable at 500 edits, goes on to 1,000 from that run
    longer = by["sequential-ROME-key-mismatch-o1-1000"]
    assert longer.after == ("sequential-ROME-key-mismatch-o1",)
    assert {k: v for k, v in longer.spec().items() if k != "edits"} == {
        k: v for k, v in by["sequential-ROME-key-mismatch-o1"].spec().items() if k != "edits"}
    assert longer.options["edits"] == 1000 and plans._extended_from(plan, longer) == 500
    # the shipped hyperparameter files, except the control's own
    assert [u.id for u in plan.units if "--hparams" in u.argv] == [f"sequential-control-o{o}" for o in (0, 1, 2)]
    assert all(u.options["panel_pool"] == 1100 and u.options["order_seed"] == 0 for u in plan.units if u.kind == "batch")
    # AlphaEdit's exact plain prompts live in its null space (176 dimensions at layer 3): no batch larger than that
    assert max(by["batch-AlphaEdit"].options["sizes"]) <= 176 and max(by["batch-MEMIT"].options["sizes"]) <= 1536


def test_the_readmes_rebuild_status_is_what_plan_status_writes_for_the_shipped_store(tmp_path):
    """The README's plan-status block is generated from the shipped store (`plan status --write-readme`), so
    the rebuild's state it states cannot drift from the store: rerun the command after the store changes."""
    from store.findings import readme_block

    # the rebuild in progress when the repository has one (store/rebuild.sqlite), else the shipped store
    rebuild = (ROOT / "store" / "rebuild.sqlite").is_file()
    name = "store/rebuild.sqlite" if rebuild else "store/results.sqlite"
    copy, timings = tmp_path / "target.sqlite", tmp_path / "timings.sqlite"
    shutil.copy(ROOT / name, copy)  # read-only use; copies keep the shipped files untouched
    shutil.copy(ROOT / "store" / "results.sqlite", timings)
    plan = plans.load_plan(ROOT / "plans" / "shipped.toml", build_parser())
    ref = "store/results.sqlite" if rebuild else None  # a rebuild is timed from the shipped store where it has none
    block = plans.status_markdown(plan, plans.plan_status(plan, copy, timings_from=timings if rebuild else None),
                                  name, ref)
    readme = (ROOT / "README.md").read_text()
    assert readme_block(readme, plans.README_START, plans.README_END) == block.strip("\n"), (
        f"regenerate it: python -m compute plan status plans/shipped.toml --store {name}"
        + (f" --timings-from {ref}" if ref else "") + " --write-readme README.md")
    assert "| sequential-ROME-o0 | sequential |" in block and "CPU-hours are left" in block


def test_units_a_store_cannot_time_are_timed_by_another_stores_runs(tmp_path):
    """plan status --timings-from: a target with no finished sequential run times its sequential units by the
    reference store's finished ones (and says so); without it they are not estimated."""
    from store import Store

    plan = plans.load_plan(ROOT / "plans" / "shipped.toml", build_parser())
    target = tmp_path / "empty.sqlite"
    Store.open(target, create=True).close()
    reference = tmp_path / "ref.sqlite"
    shutil.copy(ROOT / "store" / "results.sqlite", reference)
    alone = {s.unit.id: s for s in plans.plan_status(plan, target)}
    helped = {s.unit.id: s for s in plans.plan_status(plan, target, timings_from=reference)}
    assert alone["sequential-ROME-o0"].remaining_s is None
    assert helped["sequential-ROME-o0"].remaining_s > 0 and "reference store" in helped["sequential-ROME-o0"].basis


def test_a_paused_checkpoint_interval_counts_at_most_three_times_the_runs_median():
    """A run stopped for a while (SIGSTOP during a benchmark) times its pause: the estimate caps that interval at
    PAUSE_FACTOR x the run's median seconds per edit; an ability interval at 2x the median counts in full."""
    events = [("checkpoint", 10 * k, 10 * k + 10, 100.0) for k in range(8)]
    events += [("checkpoint", 80, 90, 7000.0), ("checkpoint", 90, 100, 200.0), ("final_abilities", 100, 100, 50.0)]
    assert plans._timed_seconds(events) == pytest.approx(800 + 3 * 100 + 200 + 50)
    assert plans._timed_seconds([("checkpoint", 0, None, 5.0), ("checkpoint", 1, None, 5.0)]) == 10.0


def test_recorded_cpu_seconds_count_instead_of_wall_seconds():
    """Since timing events record the process's CPU seconds, a pause (wall time without CPU) costs nothing in
    the estimate; older events in the same run keep the capped wall rule."""
    events = [("checkpoint", 10 * k, 10 * k + 10, 100.0, None) for k in range(4)]
    events += [("checkpoint", 40, 50, 900.0, json.dumps({"cpu_s": 95.5})),  # stopped for 800 s of it
               ("final_abilities", 50, 50, 60.0, json.dumps({"cpu_s": 58.0}))]
    assert plans._timed_seconds(events) == pytest.approx(400 + 95.5 + 58.0)


def test_a_sequential_run_records_its_cpu_seconds():
    from compute.experiments import sequential
    from compute.runs import clock

    start = clock()
    sum(i * i for i in range(300_000))  # some CPU
    time.sleep(0.3)  # and a wait that costs none
    lm = types.SimpleNamespace(device="cpu")
    event = sequential._timing_event("r", 0, 10, start, lm)
    detail = json.loads(event["detail"])
    assert event["value"] >= 0.3 and 0 < detail["cpu_s"] < event["value"] - 0.2


def test_a_partial_robustness_run_is_estimated_from_the_units_its_timing_events_cover(tmp_path):
    """A robustness run resumed over sessions has no finished wall time, and part of its cases (made before its
    process began timing) no timing: its rate is the CPU seconds of its interval events over the cases they
    cover. Here 100 of 240 cases stored, 30 timed at 12 CPU-s each (one interval paused: wall 900 s): 140 x 12 s
    left. Without events it is not estimated."""
    plan = plans.load_plan(write_plan(tmp_path, "m", UNITS.replace("limit = 2\n", "limit = 240\n")), build_parser())
    target = tmp_path / "target.sqlite"
    with Store.open(target, create=True) as st:
        part = st.start_run(kind="robustness", model="m", editor="FT-L", n_total=240)
        st.heartbeat(part, n_done=100)
        st.finish_run(part, status="interrupted")
    plans.record_unit(target, plan, plan.by_id()["robustness"], [part])

    def robustness():
        return {s.unit.id: s for s in plans.plan_status(plan, target)}["robustness"]

    assert robustness().remaining_s is None and "no timed robustness run" in robustness().basis
    with Store.open(target) as st:
        st.write_events([{"run_id": part, "kind": "timing", "series": "units", "edit_count": a, "end_count": b,
                          "value": wall, "detail": json.dumps({"units": b - a, "cpu_s": 12.0 * (b - a)})}
                         for a, b, wall in ((70, 80, 121.0), (80, 100, 900.0))])
    state = robustness()
    assert state.remaining_s == pytest.approx(140 * 12.0) and "timing events" in state.basis


def test_the_run_loop_times_its_intervals_with_cpu_seconds(tmp_path):
    """run_loop writes a timing event (series "units") whenever `timing_every` seconds have passed after a unit,
    and one for the rest at the end: together they cover every unit of an uninterrupted run."""
    from compute.runs import run_loop

    def step(unit):
        sum(i * i for i in range(100_000))  # some CPU
        return None

    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        each = st.start_run(kind="robustness", model="m", n_total=4)
        run_loop(st, each, ["a", "b", "c", "d"], step, n_total=4, timing_every=0.0)
        once = st.start_run(kind="robustness", model="m", n_total=4)
        run_loop(st, once, ["a", "b", "c", "d"], step, n_total=4)
        rows = {r: st.conn.execute("SELECT series, edit_count, end_count, value, detail FROM run_events WHERE "
                                   "run_id = ? AND kind = 'timing' ORDER BY edit_count", (r,)).fetchall()
                for r in (each, once)}
    assert [(s, a, b) for s, a, b, _, _ in rows[each]] == [("units", k, k + 1) for k in range(4)]
    assert [(a, b) for _, a, b, _, _ in rows[once]] == [(0, 4)]
    detail = json.loads(rows[once][0][4])
    assert detail["units"] == 4 and detail["unit"] == "unit" and 0 < detail["cpu_s"]


def test_a_missing_hyperparameter_file_is_named_when_the_plan_loads(tmp_path):
    plan = write_plan(tmp_path, "m").read_text().replace('hparams = "ft.json"', 'hparams = "nowhere/ft.json"', 1)
    (tmp_path / "bad.toml").write_text(plan)
    with pytest.raises(plans.PlanError, match="no hyperparameter file .*nowhere/ft.json.*plan file's folder"):
        plans.load_plan(tmp_path / "bad.toml", build_parser())


def test_the_shipped_plan_loads_with_every_file_it_names():
    plan = plans.load_plan(ROOT / "plans" / "shipped.toml", build_parser())
    files = [u.options["hparams"] for u in plan.units if str(u.options.get("hparams", "")).endswith(".json")]
    assert files and all(Path(f).is_file() for f in files)


# ---- --deadline: units whose work a cut loses start only when they fit ----------------------------------------


DEADLINE_UNITS = """
[[unit]]
id = "sequential"
kind = "sequential"
editor = "ROME"
set = "tiny32"
edits = 6
every = 3
hparams = "rome.json"

[[unit]]
id = "suite"
kind = "abilities"
mode = "quick"
after = ["sequential"]
"""


def _two_of_six_edits(target: Path, plan) -> str:
    """A target holding the plan's sequential unit's run, interrupted at 2 of 6 edits made at 5 s each (20 s left)."""
    with Store.open(target, create=True) as st:
        part = st.start_run(kind="sequential", model="m", editor="ROME", n_total=6, config={"dense_first": 1})
        st.heartbeat(part, n_done=2)
        st.write_events([{"run_id": part, "kind": "timing", "series": "checkpoint", "edit_count": e,
                          "end_count": e + 1, "value": 5.0} for e in (0, 1)])
        st.finish_run(part, status="interrupted")
    plans.record_unit(target, plan, plan.by_id()["sequential"], [part])
    return part


def test_a_run_that_starts_over_here_is_estimated_from_its_first_edit(tmp_path):
    """With the machine's cache folder given, a partial sequential run without its resume state there (it will
    start over, `orphaned_runs`) counts none of its stored edits in the estimate; with its state, or from the
    store alone (the README's table), it counts them."""
    from compute.runs import state_path

    plan = plans.load_plan(write_plan(tmp_path, "m", DEADLINE_UNITS), build_parser())
    target, cache = tmp_path / "target.sqlite", tmp_path / "cache"
    part = _two_of_six_edits(target, plan)
    folder = plans.plan_folder(plan, cache)

    def sequential(**kw):
        return {s.unit.id: s for s in plans.plan_status(plan, target, **kw)}["sequential"]

    assert sequential().remaining_s == pytest.approx(20.0)
    over = sequential(shards=folder, states_in=cache)
    assert over.remaining_s == pytest.approx(30.0) and f"starts over: {part} has no resume state here" in over.basis
    state = state_path(cache, part)
    state.parent.mkdir(parents=True)
    state.write_bytes(b"state")
    assert sequential(shards=folder, states_in=cache).remaining_s == pytest.approx(20.0)


def test_a_deadline_holds_back_a_sequential_unit_that_would_not_finish_and_the_units_after_it(tmp_path, capsys):
    path = write_plan(tmp_path, "m", DEADLINE_UNITS)
    plan = plans.load_plan(path, build_parser())
    target = tmp_path / "target.sqlite"
    part = _two_of_six_edits(target, plan)
    # the rule: only kinds whose work a cut loses are held, by their estimate against the time left
    seq, suite = plan.by_id()["sequential"], plan.by_id()["suite"]
    assert plans.deadline_hold(seq, 20.0, 19.0).startswith("held back: needs about")
    assert plans.deadline_hold(seq, 20.0, 21.0) is None
    assert "no estimate" in plans.deadline_hold(suite, None, 1e9)
    robust = plans.Unit(id="r", kind="robustness", options={}, after=(), cpus=1, gpus=0, key="k", argv=())
    assert plans.deadline_hold(robust, 1e9, 0.0) is None
    import dataclasses

    two = dataclasses.replace(seq, cpus=2)  # two threads: 1.68x the one-thread estimate's speed
    assert plans.deadline_hold(two, 20.0, 12.0) is None and "on 2 threads" in plans.deadline_hold(two, 20.0, 11.8)
    # a driver with 10 s left starts nothing: the unit needs 20 s, the suite comes after it
    now = 1_000_000.0
    outcome = plans.execute(plan, target, workers=1, cache_dir=tmp_path / "cache", out=lambda line: None,
                            deadline=now + 10, clock=lambda: now)
    assert outcome["sequential"].startswith("held back: needs about 0.01 h, 0.00 h left")
    assert outcome == {"sequential": outcome["sequential"], "suite": "blocked by sequential"}
    assert plans.held_by_deadline(outcome) == {"sequential", "suite"}
    assert not list((tmp_path / "cache").rglob("*.sqlite"))  # no unit started
    # a restarted driver's shard is ahead of the target (4 edits made, the last two at 2 s each): the estimate
    # reads the shard's own timing events, 2 edits left at 3 s (5, 2 and 2 s after the start), not the target's 5
    folder = plans.plan_folder(plan, tmp_path / "cache")
    shard, seed_file, _ = plans._shard_paths(folder, seq)
    plans.copy_store(target, shard)
    seed = plans.runs_snapshot(shard)
    seed[part][1] = "2026-12-06T05:00:00+00:00"  # the seed was taken before the unit worked on its run
    seed_file.write_text(json.dumps(seed))
    with Store.open(shard) as st:
        st.resume_run(part)
        st.heartbeat(part, n_done=4)
        st.write_events([{"run_id": part, "kind": "timing", "series": "checkpoint", "edit_count": e,
                          "end_count": e + 1, "value": 2.0} for e in (2, 3)])
    ahead = {s.unit.id: s for s in plans.plan_status(plan, target, shards=folder)}["sequential"]
    assert ahead.remaining_s == pytest.approx(6.0) and ahead.basis.startswith("its own runs")
    outcome = plans.execute(plan, target, workers=1, cache_dir=tmp_path / "cache", out=lambda line: None,
                            deadline=now + 5.5, clock=lambda: now)
    assert outcome["sequential"].startswith("held back") and outcome["suite"] == "blocked by sequential"
    shard.unlink()
    for suffix in ("-wal", "-shm"):
        Path(str(shard) + suffix).unlink(missing_ok=True)
    # the CLI says so and exits 0: nothing failed; a bad deadline is one line naming the forms, exit 2
    assert main(["--cache-dir", str(tmp_path / "cache"), "plan", "run", str(path), "--store", str(target),
                 "--workers", "1", "--deadline", "+0m"]) == 0
    assert "2 held back by the deadline" in capsys.readouterr().out
    assert main(["plan", "run", str(path), "--store", str(target), "--deadline", "tomorrow"]) == 2
    assert "a span from now (+2h, +90m, +1h30m)" in capsys.readouterr().err


def test_a_held_unit_keeps_its_key_is_not_started_and_is_counted_apart(tmp_path, capsys):
    free = plans.load_plan(write_plan(tmp_path, "m", DEADLINE_UNITS), build_parser())
    why = "its editor is being fixed (issue 18)"
    path = write_plan(tmp_path, "m", DEADLINE_UNITS.replace('id = "sequential"\n', f'id = "sequential"\nhold = "{why}"\n'))
    plan = plans.load_plan(path, build_parser())
    seq = plan.by_id()["sequential"]
    assert seq.hold == why and seq.key == free.by_id()["sequential"].key and not plan.by_id()["suite"].hold
    target = tmp_path / "target.sqlite"
    _two_of_six_edits(target, plan)
    states = plans.plan_status(plan, target)
    lines = plans.status_lines(states)
    assert any(line.startswith("sequential ") and " partial* " in line for line in lines)
    assert f"* held (1: sequential): {why}" in lines and "held (*), not counted: 0.0 CPU-hours" in lines[-3]
    block = plans.status_markdown(plan, states, "target.sqlite")
    assert "| sequential | sequential | partial (held) | 2/6 | 0.01 |" in block and block.endswith(f"Held (sequential): {why}")
    assert "besides 0.0 CPU-hours of held units" in block
    # `plan run` starts neither it nor the unit after it, and says so without failing
    outcome = plans.execute(plan, target, workers=1, cache_dir=tmp_path / "cache", out=lambda line: None)
    assert outcome == {"sequential": f"held: {why}", "suite": "blocked by sequential"}
    assert plans.held_by_plan(outcome) == {"sequential", "suite"} and not plans.held_by_deadline(outcome)
    assert not list((tmp_path / "cache").rglob("*.sqlite"))
    capsys.readouterr()
    assert main(["--cache-dir", str(tmp_path / "cache"), "plan", "run", str(path), "--store", str(target),
                 "--workers", "1"]) == 0
    assert "2 held by the plan" in capsys.readouterr().out


def test_a_partial_sequential_runs_estimate_leaves_out_its_start(tmp_path):
    """A sequential run's first checkpoint interval also holds its one-off start (panel, unedited suite): the
    edits left are timed by the intervals after it, here 10 s per edit rather than (100 + 50) / 15."""
    plan = plans.load_plan(write_plan(tmp_path, "m"), build_parser())
    target = tmp_path / "target.sqlite"
    with Store.open(target, create=True) as st:
        part = st.start_run(kind="sequential", model="m", editor="ROME", n_total=6, config={"dense_first": 1})
        st.heartbeat(part, n_done=3)
        st.write_events([{"run_id": part, "kind": "timing", "series": "checkpoint", "edit_count": 0,
                          "end_count": 1, "value": 100.0},
                         {"run_id": part, "kind": "timing", "series": "checkpoint", "edit_count": 1,
                          "end_count": 3, "value": 20.0}])
        st.finish_run(part, status="interrupted")
    plans.record_unit(target, plan, plan.by_id()["sequential"], [part])
    state = {s.unit.id: s for s in plans.plan_status(plan, target)}["sequential"]
    assert state.remaining_s == pytest.approx(30.0) and "after their first checkpoint" in state.basis


def test_a_partial_sequential_runs_estimate_leaves_out_its_dense_first_checkpoints(tmp_path):
    """The first `dense_first` edits each get a checkpoint (the rest one per `checkpoint_every`): they are part
    of the start too. Here the start (edit 0) and the dense checkpoints after edits 1 and 2 take 100 + 20 + 20 CPU
    seconds (the second 30 s of wall time), the 10-edit interval after them 50: the 7 edits left go at 5 s each, not at
    (100 + 20 + 20 + 50) / 13. A run without the key in its config has the runner's 10."""
    plan = plans.load_plan(write_plan(tmp_path, "m", UNITS.replace("edits = 6", "edits = 20")), build_parser())
    target = tmp_path / "target.sqlite"
    with Store.open(target, create=True) as st:
        part = st.start_run(kind="sequential", model="m", editor="ROME", n_total=20,
                            config={"dense_first": 3, "checkpoint_every": 10})
        st.heartbeat(part, n_done=13)
        st.write_events([{"run_id": part, "kind": "timing", "series": "checkpoint", "edit_count": e, "end_count": end,
                          "value": wall, "detail": json.dumps({"cpu_s": cpu})}
                         for e, end, wall, cpu in ((0, 1, 100.0, 100.0), (1, 2, 30.0, 20.0), (2, 3, 20.0, 20.0),
                                                   (3, 13, 50.0, 50.0))])
        st.finish_run(part, status="interrupted")
    plans.record_unit(target, plan, plan.by_id()["sequential"], [part])
    with Store.open(target) as st:
        assert plans._start_interval(st.conn, {"run_id": part, "config": json.dumps({"dense_first": 3})}) == (140.0, 3)
        assert plans._start_interval(st.conn, {"run_id": part, "config": "{}"}) == (140.0, 3)  # 10: all up to 10
        assert plans._start_interval(st.conn, {"run_id": part, "config": json.dumps({"dense_first": 1})}) == (100.0, 1)
    state = {s.unit.id: s for s in plans.plan_status(plan, target)}["sequential"]
    assert state.remaining_s == pytest.approx(7 * 5.0) and "after their first checkpoint" in state.basis


def test_deadlines_are_read_as_an_iso_time_a_time_of_day_or_a_span():
    from datetime import datetime

    now = datetime(2026, 12, 6, 7, 0).timestamp()
    assert plans.parse_deadline("+1h30m", now) == now + 5400 and plans.parse_deadline("+90m", now) == now + 5400
    assert plans.parse_deadline("08:15", now) == datetime(2026, 12, 6, 8, 15).timestamp()
    assert plans.parse_deadline("06:00", now) == datetime(2026, 12, 7, 6, 0).timestamp()  # the next one
    assert plans.parse_deadline("2026-12-06T09:00", now) == datetime(2026, 12, 6, 9, 0).timestamp()
    for bad in ("+", "25:00", "soon", "+2d"):
        with pytest.raises(ValueError, match="give a date and time"):
            plans.parse_deadline(bad, now)


def test_an_unfinished_sequential_run_with_no_resume_state_here_is_removed_before_it_starts_over(tmp_path):
    """A new machine (or a cleared cache) has neither the unit's shard nor the run's resume state: the run would
    start over under its old id and its recomputed rows need not match the stored ones, which store merge
    refuses. `plan run` removes it from the target first and says so; with the state or the shard here it stays."""
    from compute.runs import state_path

    path = write_plan(tmp_path, "no-such-model", DEADLINE_UNITS)
    plan = plans.load_plan(path, build_parser())
    seq = plan.by_id()["sequential"]
    target, cache = tmp_path / "target.sqlite", tmp_path / "cache"
    with Store.open(target, create=True) as st:
        part = st.start_run(kind="sequential", model="no-such-model", editor="ROME", n_total=6)
        st.heartbeat(part, n_done=2)
        st.finish_run(part, status="interrupted")
    plans.record_unit(target, plan, seq, [part])
    folder = plans.plan_folder(plan, cache)
    assert plans.orphaned_runs(seq, target, folder, cache) == [part]
    assert plans.orphaned_runs(seq, target, folder, cache, executor="ray") == [part]
    state = state_path(cache, part)
    state.parent.mkdir(parents=True)
    state.write_bytes(b"state")  # its resume state is here: it resumes (on Ray, a node's cache is its own)
    assert plans.orphaned_runs(seq, target, folder, cache) == []
    assert plans.orphaned_runs(seq, target, folder, cache, executor="ray") == [part]
    state.unlink()
    folder.mkdir(parents=True)
    shard = plans._shard_paths(folder, seq)[0]
    shard.write_bytes(b"")  # a shard of the unit is here: the driver resumes it
    assert plans.orphaned_runs(seq, target, folder, cache) == []
    shard.unlink()
    lines = []
    outcome = plans.execute(plan, target, workers=1, cache_dir=cache, out=lines.append)
    assert any(part in line and "no resume state here" in line for line in lines)
    with Store.open(target, readonly=True) as st:
        assert st.conn.execute("SELECT COUNT(*) FROM runs WHERE run_id = ?", (part,)).fetchone()[0] == 0
    assert outcome["sequential"].startswith("failed")  # the model does not exist: the unit ran and failed


def test_a_snapshot_copies_a_running_plans_store_with_its_running_runs_marked_interrupted(tmp_path, capsys):
    """`plan snapshot`: the file to commit while the driver goes on: a consistent copy whose running runs are
    marked interrupted (the source keeps them running), re-derived and finalized, and its status in the README."""
    path = write_plan(tmp_path, "m", DEADLINE_UNITS)
    plan = plans.load_plan(path, build_parser())
    source, to = tmp_path / "target.sqlite", tmp_path / "out" / "snapshot.sqlite"
    with Store.open(source, create=True) as st:
        live = st.start_run(kind="sequential", model="m", editor="ROME", n_total=6)
        st.heartbeat(live, n_done=3)
        st.write_cases([{"case_id": "c1", "case_set": "m-n1-s0", "source": "kb", "subject": "France", "prompt": "p",
                         "true_object": "Paris", "new_object": "Rome"}],
                       [{"case_id": "c1", "probe_id": i, "rephrase_type": t, "text": f"{t}: the capital of France is",
                         "target_true": "Paris", "target_new": "Rome"} for i, t in enumerate(("plain", "doubt"))])
    plans.record_unit(source, plan, plan.by_id()["sequential"], [live])
    readme = tmp_path / "README.md"
    readme.write_text(f"top\n{plans.README_START}\nold\n{plans.README_END}\nbottom\n")
    assert main(["plan", "snapshot", str(path), "--store", str(source), "--to", str(to),
                 "--write-readme", str(readme)]) == 0
    out = capsys.readouterr().out
    assert "1 running run(s) marked interrupted in the copy" in out
    # the copy keeps only the probes its runs read (a sequential run reads plain, paraphrase and neighbourhood)
    assert "left out the probes of case set m-n1-s0 of the types no run in the copy measured: doubt" in out
    with Store.open(to, readonly=True) as st, Store.open(source, readonly=True) as src:
        assert [r[0] for r in st.conn.execute("SELECT rephrase_type FROM probes")] == ["plain"]
        assert src.conn.execute("SELECT count(*) FROM probes").fetchone()[0] == 2  # the plan's store keeps all
    assert "no <!-- rebuild-findings:start --> ... <!-- rebuild-findings:end --> block" in out  # none asked for
    with Store.open(to, readonly=True) as st:
        assert st.conn.execute("SELECT status, n_done FROM runs").fetchall() == [("interrupted", 3)]
    with Store.open(source, readonly=True) as st:
        assert st.conn.execute("SELECT status FROM runs").fetchall() == [("running",)]
    text = readme.read_text()
    assert "old" not in text and "| sequential | sequential | partial | 3/6 |" in text and text.endswith("bottom\n")
    # the copy keeps the plan's status in its own meta table, for the dashboard: the same states as the README's
    from store import queries

    assert "kept the plan's status" in out
    with Store.open(to, readonly=True) as st:
        status = queries.plan_status(st.conn)
    assert status["unit"].to_list() == [u.id for u in plan.units]  # the plan's order
    row = status.filter(status["unit"] == "sequential").row(0, named=True)
    assert (row["state"], row["done"], row["total"], row["runs"]) == ("partial", 3, 6, live)
    assert row["plan"] == f"plans/{path.name}" and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\dZ", row["taken_at"])
    table = {cells[0]: cells[2] for cells in ([c.strip() for c in line.strip("|").split("|")]
                                              for line in text.splitlines() if line.startswith("| "))}
    assert {u: table[u].split(" ")[0] for u in status["unit"]} == dict(zip(status["unit"], status["state"]))
    with Store.open(source, readonly=True) as st:  # the plan's own store has none: a snapshot is what keeps it
        assert queries.plan_status(st.conn).is_empty()
    # with the rebuild-findings markers, the copy's findings go between them (the command that writes them named)
    from store import findings as fmod

    start, end = fmod.markers_of("rebuild-findings")
    readme.write_text(f"{text}{start}\nold findings\n{end}\n")
    assert main(["plan", "snapshot", str(path), "--store", str(source), "--to", str(to),
                 "--write-readme", str(readme)]) == 0
    block = fmod.readme_block(readme.read_text(), start, end)
    with Store.open(to, readonly=True) as st:
        assert block == fmod.block(st.conn, to.as_posix(), "rebuild-findings").strip("\n")
    assert "This store holds 0 of the " in block  # built from part of a plan: what part, said in the block
    assert f"--store {to.as_posix()} --markers rebuild-findings" in block and "not measured yet" in block
    # --changes-from: what changed from the store the copy will replace, between the rebuild-changes markers
    from store import changes

    start, end = changes.markers_of("rebuild-changes")
    shipped = tmp_path / "shipped.sqlite"
    with Store.open(shipped, create=True) as st:
        st.start_run(kind="sequential", model="m", editor="ROME", run_id="old", config={"panel_size": 50})
    readme.write_text(f"{readme.read_text()}{start}\nold changes\n{end}\n")
    assert main(["plan", "snapshot", str(path), "--store", str(source), "--to", str(to), "--write-readme", str(readme),
                 "--changes-from", str(shipped)]) == 0
    assert f"wrote what changed from {shipped}" in capsys.readouterr().out
    block = changes.fmod.readme_block(readme.read_text(), start, end)
    assert block == changes.markdown(changes.load(shipped), changes.load(to), to.as_posix(), shipped.as_posix(),
                                     "rebuild-changes").strip("\n")
    assert "- **sequential: ROME**: 1 run (1 running) → 1 run (1 interrupted); panel_size 50 → —." in block
    for bad in (["--changes-from", str(shipped)], ["--write-readme", str(readme), "--changes-from", "nowhere.sqlite"]):
        assert main(["plan", "snapshot", str(path), "--store", str(source), "--to", str(to), *bad]) == 2
    assert "no such file" in capsys.readouterr().err
    # the copy must be another file
    assert main(["plan", "snapshot", str(path), "--store", str(source), "--to", str(source)]) == 2
    assert "is the plan's store itself" in capsys.readouterr().err


def test_a_resumed_units_progress_replaces_what_its_killed_process_merged(tmp_path):
    """The rebuild, 2026-12-07: a sequential unit killed after its checkpoint at edit 210 had merged its progress
    to edit 218; resumed, it computed edits 211-218 again, one value 58.906689 where the target held 58.906693,
    and every later merge of its progress was refused ("could not be merged yet"), as its final merge would have
    been. The unit's shard is its runs' one writer: its copy wins."""
    path = write_plan(tmp_path, "m", DEADLINE_UNITS)
    plan = plans.load_plan(path, build_parser())
    unit = plan.by_id()["sequential"]
    target, copy = tmp_path / "target.sqlite", tmp_path / "progress.sqlite"

    def store(path, norms):
        with Store.open(path, create=True) as st:
            st.start_run(kind="sequential", model="m", editor="ROME", run_id="seq", n_total=500)
            st.write_edit_diagnostics([dict(run_id="seq", edit_count=n, case_id=f"c{n}", target="", name="v0_norm",
                                            value=v) for n, v in norms.items()])

    store(target, {210: 50.0, 211: 58.906693, 212: 60.0})  # the killed process's progress
    store(copy, {210: 50.0, 211: 58.906689})  # the resumed one, from edit 210 on

    class Live:  # the executor's view of the running unit: a trimmed copy of its shard and the runs it gained
        def progress(self, units):
            return [(unit, copy, ["seq"])]

    lines = []
    plans._merge_progress(plan, Live(), [unit], target, lines.append)
    assert not lines  # nothing refused
    with Store.open(target, readonly=True) as st:
        assert st.conn.execute("SELECT edit_count, value FROM edit_diagnostics ORDER BY edit_count").fetchall() == \
            [(210, 50.0), (211, 58.906689)]
        assert st.conn.execute("SELECT series FROM run_events WHERE kind = ?", (plans.EVENT_KIND,)).fetchall() == \
            [(unit.key,)]
    # rounding passes without a word; a number that moved more than that is said (and recorded in `merged`)
    store(copy, {210: 50.0, 211: 70.0})
    plans._merge_progress(plan, Live(), [unit], target, lines.append)
    assert len(lines) == 1 and "run seq's recomputed rows differ from those its earlier process merged by more " \
        "than rounding: edit_diagnostics.value" in lines[0] and "58.906689 before, 70.0 now (relative 0.16)" in lines[0]


def test_a_cases_unit_whose_probes_a_snapshot_left_out_is_partial_to_plan_run(tmp_path, capsys):
    """A committed snapshot keeps only the probes its runs read; `plan run` on it (a fresh clone's store) must
    build the rest again before a unit that needs them, so for `plan run` and `plan status` the cases unit is
    partial, with the reason; the snapshot's own status (the README's table) still reads it done."""
    path = write_plan(tmp_path, "m", 'finalize = false\n\n[[unit]]\nid = "kb"\nkind = "kb"\n\n[[unit]]\n'
                                     'id = "cases"\nkind = "cases"\nn = 1\nset = "m-n1-s0"\nafter = ["kb"]\n')
    plan = plans.load_plan(path, build_parser())
    store = tmp_path / "target.sqlite"
    with Store.open(store, create=True) as st:
        st.write_cases([{"case_id": "c1", "case_set": "m-n1-s0", "source": "kb", "subject": "France", "prompt": "p",
                         "true_object": "Paris", "new_object": "Rome"}],
                       [{"case_id": "c1", "probe_id": 0, "rephrase_type": "plain", "text": "the capital of France is",
                         "target_true": "Paris", "target_new": "Rome"}])
    unit = plan.by_id()["cases"]
    assert {s.unit.id: s.state for s in plans.plan_status(plan, store, restore_left_out=True)}["cases"] == "done"
    with Store.open(store) as st:
        st.record_probes_left_out({"m-n1-s0": ["doubt"]})
    states = {s.unit.id: s for s in plans.plan_status(plan, store, restore_left_out=True)}
    assert states["cases"].state == "partial" and "left out of this store" in states["cases"].basis
    assert "plan run builds them again" in states["cases"].basis and states["cases"].unit is unit
    assert {s.unit.id: s.state for s in plans.plan_status(plan, store)}["cases"] == "done"  # the snapshot's own

"""The command line, end to end on a temporary store and a tiny model saved to a local directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from compute.cli import main
from store import Store, queries

FIX = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_model_dir, cache_dir, kb):
    """A store with the knowledge base, and a tiny model directory usable as --model."""
    store = tmp_path_factory.mktemp("cli") / "results.sqlite"
    base = ["--store", str(store), "--cache-dir", str(cache_dir), "--quiet"]
    assert main(base + ["kb", "build"]) == 0
    return {"base": base, "store": store, "model": tiny_model_dir}


def run(env, *args):
    return main(env["base"] + list(args))


def test_help_lists_the_subcommands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for word in ("kb", "cases", "knowledge", "runs", "store", "model"):
        assert word in out


def test_kb_show_prints_relations_and_a_subjects_facts(env, capsys):
    assert run(env, "kb", "show") == 0
    assert "capital" in capsys.readouterr().out
    assert run(env, "kb", "show", "--subject", "France") == 0
    out = capsys.readouterr().out
    assert "Paris" in out and "frequency" in out


def test_unknown_subject_is_one_clear_line(env, capsys):
    assert run(env, "kb", "show", "--subject", "Atlantis") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no subject 'Atlantis'")


def test_missing_store_says_how_to_build_one(tmp_path, capsys):
    assert main(["--store", str(tmp_path / "none.sqlite"), "runs", "list"]) == 2
    err = capsys.readouterr().err
    assert "kb build" in err and "Traceback" not in err


def test_corrupt_store_is_refused_and_left_untouched(tmp_path, capsys):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not a database" * 10)
    before = bad.read_bytes()
    assert main(["--store", str(bad), "store", "info"]) == 2
    assert "not an EditScope store" in capsys.readouterr().err
    assert bad.read_bytes() == before


def test_build_cases_measure_knowledge_and_list_runs(env, capsys):
    assert run(env, "cases", "build", "--n", "32", "--seed", "1", "--set", "t32", "--model", env["model"]) == 0
    assert "32 cases" in capsys.readouterr().out
    assert run(env, "cases", "show", "--set", "t32", "--limit", "5") == 0
    assert "popularity_quartile" in capsys.readouterr().out
    with Store.open(env["store"], readonly=True) as st:
        case_id = queries.cases(st.conn, case_set="t32")["case_id"][0]
    assert run(env, "cases", "show", "--case", case_id) == 0
    assert "[doubt]" in capsys.readouterr().out
    assert run(env, "knowledge", "measure", "--set", "t32", "--limit", "8", "--gen-tokens", "2",
               "--model", env["model"]) == 0
    out = capsys.readouterr().out
    assert "recall" in out and "Spearman" in out
    assert run(env, "runs", "list") == 0
    assert "knowledge" in capsys.readouterr().out


def test_load_counterfact_file_into_a_case_set(env, capsys):
    assert run(env, "cases", "load", str(FIX / "counterfact_sample.json"), "--format", "counterfact") == 0
    assert "3 counterfact cases" in capsys.readouterr().out


def test_unknown_rephrase_type_and_case_set_are_refused(env, capsys):
    assert run(env, "knowledge", "measure", "--set", "t32", "--types", "sarcasm", "--model", env["model"]) == 2
    assert "unknown rephrase type" in capsys.readouterr().err
    assert run(env, "knowledge", "measure", "--set", "nope", "--model", env["model"]) == 2
    assert "no case set 'nope'" in capsys.readouterr().err


def test_rerunning_a_measurement_skips_it_and_a_clashing_case_set_is_refused(env, capsys):
    assert run(env, "cases", "build", "--n", "8", "--set", "t8", "--model", env["model"]) == 0
    assert run(env, "cases", "build", "--n", "8", "--set", "t8", "--model", env["model"]) == 0  # same cases: fine
    assert run(env, "cases", "build", "--n", "8", "--seed", "5", "--set", "t8", "--model", env["model"]) == 2
    assert "already exists with other cases" in capsys.readouterr().err
    args = ["knowledge", "measure", "--set", "t8", "--gen-tokens", "2", "--model", env["model"]]
    assert run(env, *args) == 0
    capsys.readouterr()
    assert run(env, *args) == 0
    assert "already measured" in capsys.readouterr().out


# ---- every option is checked before a run row exists -------------------------------------------------------


def run_rows(store) -> int:
    with Store.open(store, readonly=True) as st:
        return queries.list_runs(st.conn).height


@pytest.fixture(scope="module")
def cased(env):
    """env with a 12-case set `v12` and ROME/MEMIT hyperparameter files that fit the 2-layer tiny model."""
    assert run(env, "cases", "build", "--n", "12", "--set", "v12", "--model", env["model"]) == 0
    folder = env["store"].parent
    (folder / "rome.json").write_text('{"layer": 0, "v_steps": 2, "n_prefixes": 1, "prefix_tokens": 3, '
                                      '"use_covariance": false}')
    return {**env, "rome": str(folder / "rome.json")}


def refused(env, capsys, *args) -> str:
    """Run a command that must be refused: exit 2, one line on stderr, no run row written. Returns the line."""
    capsys.readouterr()
    before = run_rows(env["store"])
    assert run(env, *args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "Traceback" not in err[0]
    assert run_rows(env["store"]) == before
    return err[0]


LONG = "x" * 10_000


@pytest.mark.parametrize("args, says", [
    (["knowledge", "measure", "--set", "v12", "--gen-tokens", "0"], "argument --gen-tokens: must be at least 1, got 0"),
    (["run", "robustness", "--editor", "ROME", "--set", "v12", "--gen-tokens", "0"], "--gen-tokens: must be at least 1"),
    (["edit", "--subject", "France", "--relation", "capital", "--new", "Rome", "--gen-tokens", "0"],
     "--gen-tokens: must be at least 1"),
    (["knowledge", "measure", "--set", "v12", "--limit", "-1"], "argument --limit: must be at least 1, got -1"),
    (["knowledge", "measure", "--set", "v12", "--limit", "0"], "argument --limit: must be at least 1, got 0"),
    (["run", "sequential", "--editor", "ROME", "--set", "v12", "--limit", "0"], "argument --limit: must be at least 1"),
    (["run", "robustness", "--editor", "ROME", "--cases", "0"], "argument --cases: must be at least 1"),
    (["knowledge", "measure", "--set", "v12", "--limit", "ten"], "--limit: must be a whole number, got 'ten'"),
    (["edit", "--subject", LONG, "--relation", "capital", "--new", "Rome"],
     "argument --subject: is 10000 characters long; at most 200 are allowed"),
    (["edit", "--subject", "France", "--relation", "capital", "--new", LONG], "argument --new: is 10000 characters"),
    (["edit", "--subject", "France", "--relation", "capital", "--new", "Rome", "--true", LONG], "argument --true"),
    (["edit", "--subject", "   ", "--relation", "capital", "--new", "Rome"], "argument --subject: is empty"),
    (["edit", "--subject", "Fr\nance", "--relation", "capital", "--new", "Rome"], "line break"),
    (["run", "sequential", "--editor", "ROME", "--set", "v12", "--edits", "0"], "argument --edits: must be at least 1"),
    (["run", "sequential", "--editor", "ROME", "--set", "v12", "--panel-pool", "0"], "--panel-pool: must be at least 1"),
    (["run", "sequential", "--editor", "ROME", "--set", "v12", "--every", "0"], "--every: must be at least 1"),
    (["run", "batch", "--editor", "MEMIT", "--set", "v12", "--sizes", "1,x"], "--sizes: must be comma-separated"),
    (["run", "batch", "--editor", "MEMIT", "--set", "v12", "--sizes", "0,2"], "--sizes: must be distinct whole numbers"),
    (["run", "sweep", "--editor", "ROME", "--set", "v12", "--values", "1,a"], "argument --values: must be layers"),
    (["run", "robustness", "--editor", "ROME", "--set", "v12", "--device", "gpu0"], "--device: must be cpu, cuda"),
    (["run", "robustness", "--editor", "ROME", "--set", "v12", "--bogus"], "unrecognized arguments: --bogus"),
])
def test_a_bad_option_is_one_line_with_exit_2_and_writes_no_run(cased, capsys, args, says):
    line = refused(cased, capsys, *args)
    assert says in line and "--help" in line


def test_a_layer_outside_the_model_is_refused_before_the_baseline_or_the_run(cased, capsys):
    base = ["run", "robustness", "--editor", "ROME", "--set", "v12", "--limit", "2", "--gen-tokens", "1",
            "--hparams", cased["rome"], "--model", cased["model"]]
    line = refused(cased, capsys, *base, "--hp", "layer=999")
    assert "--hp: ROME field 'layer' has layer 999" in line and "layers 0..1" in line
    line = refused(cased, capsys, "run", "sweep", "--editor", "ROME", "--set", "v12", "--values", "0,5",
                   "--hparams", cased["rome"], "--model", cased["model"])
    assert "--values 5: ROME field 'layer' has layer 5" in line
    line = refused(cased, capsys, "run", "sweep", "--editor", "ROME", "--set", "v12", "--values", "0-1",
                   "--hparams", cased["rome"], "--model", cased["model"])
    assert "--field layers" in line


def test_a_panel_pool_too_small_is_refused_before_a_sequential_run_exists(cased, capsys):
    base = ["run", "sequential", "--editor", "ROME", "--set", "v12", "--edits", "2", "--hparams", cased["rome"],
            "--model", cased["model"]]
    line = refused(cased, capsys, *base, "--panel-pool", "12")
    assert "leaves nothing to edit after the 12-case panel pool" in line
    # the random tiny model recalls none of the pool's facts: no panel of known facts can be drawn
    line = refused(cased, capsys, *base, "--panel-pool", "4", "--panel-size", "3")
    assert "recalls only 0 of the" in line and "--panel-pool" in line


def test_main_installs_no_signal_handler():
    """Only `python -m compute` (compute/__main__.py) installs handlers: a test calling main keeps its own."""
    import signal

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    assert main(["--help"]) == 0
    assert main(["runs", "list", "--kind", ""]) == 2
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def _python(code: str):
    """`code` run by a fresh Python in the repository's root (its own signal handlers), its output captured."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[1])


def test_python_m_compute_turns_sigterm_and_an_ignored_sigint_into_an_interrupt():
    """So a background run stopped either way records 'interrupted' (the runners catch KeyboardInterrupt).
    In a fresh process, with SIGINT ignored as a shell starts background jobs."""
    code = ("import os, signal, sys\n"
            "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
            "from compute.__main__ import interrupt_on_signals\n"
            "interrupt_on_signals()\n"
            "for sig in (signal.SIGINT, signal.SIGTERM):\n"
            "    try:\n"
            "        os.kill(os.getpid(), sig)\n"
            "        signal.sigtimedwait([], 0.5)\n"
            "    except KeyboardInterrupt:\n"
            "        print('interrupted by', sig.name)\n")
    out = _python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["interrupted by SIGINT", "interrupted by SIGTERM"]


def test_signals_after_the_command_returned_are_ignored_while_the_process_exits():
    """A plan unit can get SIGTERM more than once; one that came after its run had recorded 'interrupted' raised a
    KeyboardInterrupt in threading._shutdown and printed a traceback into the unit's log."""
    code = ("import os, signal\n"
            "import compute.cli, compute.__main__ as m\n"
            "compute.cli.main = lambda: 130\n"
            "rc = m.run()\n"
            "os.kill(os.getpid(), signal.SIGTERM)\n"
            "os.kill(os.getpid(), signal.SIGINT)\n"
            "print('still here', rc)\n")
    out = _python(code)
    assert out.returncode == 0 and out.stdout.strip() == "still here 130" and not out.stderr, out


# ---- imports: compute -> store <- dashboard, and nothing imports the command line -------------------------

ROOT = Path(__file__).resolve().parents[1]


def _imports() -> dict[str, set[str]]:
    """module -> the project modules it imports anywhere in its file (top level or inside a function)."""
    import ast

    graph = {}
    for package in ("compute", "store", "dashboard"):
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            here = module if parts[-1] == "__init__" else module.rpartition(".")[0]
            found = set()
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    found |= {a.name for a in node.names}
                elif isinstance(node, ast.ImportFrom):
                    base = node.module or ""
                    if node.level:
                        up = here.split(".")[: len(here.split(".")) - node.level + 1]
                        base = ".".join(up + ([base] if base else []))
                    found |= {base} | {f"{base}.{a.name}" for a in node.names}
            graph[module] = {m for m in found if m.split(".")[0] in ("compute", "store", "dashboard")}
    return graph


def test_imports_flow_compute_to_store_from_dashboard_and_nothing_imports_the_cli():
    graph = _imports()
    assert "compute.cli" in graph and "compute.abilities.cli" in graph
    bad = [(m, i) for m, deps in graph.items() for i in deps
           if (m.startswith("store") and i.split(".")[0] in ("compute", "dashboard"))
           or (m.startswith("dashboard") and i.startswith("compute"))
           or (m.startswith("compute") and i.startswith("dashboard"))]
    assert not bad
    importers = sorted(m for m, deps in graph.items() if "compute.cli" in deps)
    # compute/abilities/cli.py no longer imports it: no cycle. The demo worker is a process entry point of its own
    # (`python -m compute.demo_worker`, started by the dashboard): only its `main` takes the CLI's parser and
    # hands it to `serve`/`handle`, as compute/__main__.py is the CLI's entry; no library code imports the CLI.
    assert importers == ["compute.__main__", "compute.demo_worker"]
    import ast

    tree = ast.parse((ROOT / "compute" / "demo_worker.py").read_text())
    holders = [f.name for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)
               for n in ast.walk(f) if isinstance(n, ast.ImportFrom) and n.module in ("compute.cli", "compute")
               and (n.module == "compute.cli" or any(a.name == "cli" for a in n.names))]
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom)) and "cli" in ast.dump(n)]
    assert holders == ["main"] and not top
    # editors read no store: the control's reference sizes come from compute.stored, read by the experiment
    assert not [(m, i) for m, deps in graph.items() if m.startswith("compute.editors")
                for i in deps if i.split(".")[0] == "store"]
    # and it takes from the CLI only its parser and its `edit` flow: what both set up (model, knowledge base,
    # editor) lives in the library module compute/setup.py, never in the CLI's private helpers
    worker = (ROOT / "compute" / "demo_worker.py").read_text()
    assert "cli._" not in worker and "from compute.setup import" in worker


def test_importing_the_command_lines_in_a_fresh_process_loads_no_dashboard_and_no_cycle():
    import subprocess
    import sys

    code = ("import sys\n"
            "import compute.abilities.cli, compute.stored\n"
            "print('compute.cli' in sys.modules)\n"
            "import compute.cli\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dashboard', 'streamlit', 'torch')))\n"
            "import signal\n"
            "print(signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "[]", "True"]


def test_a_calibration_grid_runs_every_setting_and_names_the_rule_and_its_choice(cased, capsys):
    args = ["run", "sweep", "--editor", "ROME", "--set", "v12", "--limit", "2", "--hparams", cased["rome"],
            "--model", cased["model"], "--grid", "v_lr=0.5,0.1", "--grid", "clamp_norm_factor=4,1", "--sweep", "cal"]
    capsys.readouterr()
    assert run(cased, *args) == 0
    out = capsys.readouterr().out
    assert "calibration sweep cal" in out and "rule: the smallest median edit" in out
    with Store.open(cased["store"], readonly=True) as st:
        runs = queries.list_runs(st.conn, kind="sweep")
        cal = [r for r in runs.iter_rows(named=True) if '"sweep": "cal"' in (r["config"] or "")]
        assert len(cal) == 4 and all(r["status"] == "done" for r in cal)
        n_diag = st.conn.execute("SELECT count(DISTINCT run_id || case_id) FROM edit_diagnostics WHERE name = 'steps' "
                                 "AND run_id IN (%s)" % ",".join("?" * len(cal)), [r["run_id"] for r in cal]).fetchone()[0]
        assert n_diag == 4 * 2  # every edit of every setting carries its diagnostics
    assert run(cased, *args) == 0  # resumable and idempotent: the same four runs
    with Store.open(cased["store"], readonly=True) as st:
        assert sum('"sweep": "cal"' in (c or "") for c in queries.list_runs(st.conn, kind="sweep")["config"]) == 4


def test_grid_and_named_settings_are_checked(cased, capsys):
    line = refused(cased, capsys, "run", "sweep", "--editor", "ROME", "--set", "v12", "--grid", "v_lr")
    assert "FIELD=V1,V2" in line
    line = refused(cased, capsys, "run", "sweep", "--editor", "ROME", "--set", "v12", "--model", cased["model"],
                   "--hparams", cased["rome"], "--grid", "v_lr=nan,0.1")
    assert "'v_lr' must be a number" in line
    line = refused(cased, capsys, "run", "robustness", "--editor", "ROME", "--set", "v12", "--hparams", "nosuch",
                   "--model", cased["model"])
    assert "no ROME setting 'nosuch'" in line  # the tiny model has no named settings; the default model has:
    from compute.editors.base import EditorError, hparams_variants, load_hparams

    assert "paper" in hparams_variants("ROME", "smollm2-135m")
    assert load_hparams("ROME", "smollm2-135m", variant="paper").v_lr == 0.5  # the ROME paper's GPT-2 XL value
    with pytest.raises(EditorError, match="one of \\['paper'\\]"):
        load_hparams("ROME", "smollm2-135m", variant="nosuch")


def test_store_rederive_replaces_derived_events_and_correlations_without_recomputing(fixture_store, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy.sqlite"
    shutil.copy(fixture_store, copy)
    with Store.open(copy) as st:
        before_m = st.conn.execute("SELECT count(*) FROM measurements").fetchone()[0]
        st.conn.execute("DELETE FROM run_events WHERE kind IN ('phase', 'panel_floor', 'disabling_edit')")
        st.conn.execute("UPDATE correlations SET rho = 99.0")
        st.conn.commit()
        st.finalize()  # as the shipped store is
    assert main(["--store", str(copy), "--quiet", "store", "rederive"]) == 0
    out = capsys.readouterr().out
    assert "derived event(s)" in out and "popularity correlations" in out
    with Store.open(copy, readonly=True) as st:
        assert st.conn.execute("SELECT count(*) FROM measurements").fetchone()[0] == before_m
        assert st.conn.execute("SELECT count(*) FROM run_events WHERE kind = 'phase'").fetchone()[0] > 0
        assert st.conn.execute("SELECT count(*) FROM correlations WHERE rho = 99.0").fetchone()[0] == 0
    assert main(["--store", str(copy), "--quiet", "store", "rederive", "--run", "no-such"]) == 2
    # a finalized store (the shipped one) stays finalized: one file in rollback-journal mode, ready to commit
    from store import is_finalized

    assert is_finalized(copy) and not copy.with_name("copy.sqlite-wal").exists()


def test_store_delete_removes_a_run_and_every_row_it_owns(fixture_store, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy.sqlite"
    shutil.copy(fixture_store, copy)
    with Store.open(copy, readonly=True) as st:
        victim = st.conn.execute("SELECT run_id FROM runs WHERE kind = 'sequential' LIMIT 1").fetchone()[0]
        others = st.conn.execute("SELECT count(*) FROM measurements WHERE run_id != ?", (victim,)).fetchone()[0]
        assert st.conn.execute("SELECT count(*) FROM measurements WHERE run_id = ?", (victim,)).fetchone()[0] > 0
    assert main(["--store", str(copy), "--quiet", "store", "delete", "no-such"]) == 2  # named, nothing deleted
    with Store.open(copy) as st:
        st.conn.execute("UPDATE runs SET status = 'running' WHERE run_id = ?", (victim,))
        st.conn.commit()
    assert main(["--store", str(copy), "--quiet", "store", "delete", victim]) == 2  # a live run is refused
    assert main(["--store", str(copy), "--quiet", "store", "delete", victim, "--force"]) == 0
    with Store.open(copy, readonly=True) as st:
        assert st.conn.execute("SELECT count(*) FROM runs WHERE run_id = ?", (victim,)).fetchone()[0] == 0
        for table in ("measurements", "run_events", "abilities", "weight_drift", "edit_diagnostics"):
            assert st.conn.execute(f"SELECT count(*) FROM {table} WHERE run_id = ?", (victim,)).fetchone()[0] == 0
        assert st.conn.execute("SELECT count(*) FROM measurements").fetchone()[0] == others  # the rest untouched

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
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
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



def test_sigterm_and_an_ignored_sigint_both_raise_keyboardinterrupt():
    """So a background run stopped either way records 'interrupted' (the runners catch KeyboardInterrupt)."""
    import os
    import signal

    from compute.cli import _interrupt_on_signals

    saved = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a shell starts background jobs
        _interrupt_on_signals()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), sig)
                signal.sigtimedwait([], 0.5) if hasattr(signal, "sigtimedwait") else None
    finally:
        signal.signal(signal.SIGINT, saved[0])
        signal.signal(signal.SIGTERM, saved[1])

"""The run engine (compute.runs): run identity, what a command does with the runs a store holds, and the loop
that runs an experiment's units (resume, interrupt, failure, one transaction per unit). No model needed."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from compute.editors.base import hparams_dict
from compute.editors.rome import ROMEHyperParams
from compute.experiments.common import RunInterrupted
from compute.experiments.sequential import SequentialConfig, sequential_config
from compute.runs import SPEC_KEY, canonical, decide, run_loop, spec_for, spec_of_run, stored_config
from store import Store, queries

HP = ROMEHyperParams(layer=0, v_steps=2)


def _seq_spec(cfg: SequentialConfig, **kw):
    return spec_for("sequential", "tiny", sequential_config(cfg, "tiny32", 32, 0), editor="ROME", hp=HP, seed=0, **kw)


def _old_sequential_run(st, cfg: SequentialConfig, *, hparams=None, status="done", n_done=None) -> str:
    """A sequential run as the code before compute.runs stored it: no spec key, and (made before those options)
    no recheck_every or panel_check in its config."""
    config = {**sequential_config(cfg, "tiny32", 32, 0), "fluency_prompts": ["x"], "excluded_cases": 0}
    del config["recheck_every"], config["panel_check"]
    run = st.start_run(kind="sequential", model="tiny", editor="ROME", hparams=hparams or hparams_dict(HP), seed=0,
                       config=config, n_total=cfg.max_edits)
    st.heartbeat(run, n_done=cfg.max_edits if n_done is None else n_done)
    if status != "running":
        st.finish_run(run, status=status)
    return run


# ---- identity ---------------------------------------------------------------------------------------------


def test_the_same_spec_has_the_same_key_and_a_layout_value_changes_it():
    cfg = SequentialConfig(max_edits=6)
    assert _seq_spec(cfg).key() == _seq_spec(SequentialConfig(max_edits=6)).key()
    assert len(_seq_spec(cfg).key()) == 16
    for changed in (dataclasses.replace(cfg, max_edits=7), dataclasses.replace(cfg, panel_pool=4),
                    dataclasses.replace(cfg, recheck_every=0)):
        assert _seq_spec(changed).key() != _seq_spec(cfg).key()
    other_hp = spec_for("sequential", "tiny", sequential_config(cfg, "tiny32", 32, 0), editor="ROME",
                        hp=dataclasses.replace(HP, key_mismatch=True), seed=0)
    assert other_hp.key() != _seq_spec(cfg).key()
    # key order, tuples and integral floats do not change the canonical form
    assert canonical({"b": (1, 2), "a": 500.0}) == canonical({"a": 500, "b": [1, 2]}) == '{"a":500,"b":[1,2]}'


def test_a_spec_missing_a_layout_key_is_refused_by_name():
    with pytest.raises(ValueError, match=r"needs \['gen_tokens'\]"):
        spec_for("robustness", "tiny", {"case_set": "s", "n_cases": 3}, editor="ROME", hp=HP, seed=0)
    with pytest.raises(ValueError, match="no run identity for kind 'nope'"):
        spec_for("nope", "tiny", {})


def test_a_new_run_stores_its_key_and_the_stored_row_gives_it_back(tmp_path):
    cfg = SequentialConfig(max_edits=6)
    spec = _seq_spec(cfg)
    config = {**sequential_config(cfg, "tiny32", 32, 0), "fluency_prompts": ["x"]}
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        run = st.start_run(kind="sequential", model="tiny", editor="ROME", hparams=hparams_dict(HP), seed=0,
                           config=stored_config(spec, config))
        row = st.get_run(run)
    assert json.loads(row["config"])[SPEC_KEY] == spec.key() == spec_of_run(row).key()


def test_a_run_stored_by_the_code_before_is_found_with_the_layout_it_had(tmp_path):
    """A sequential run whose config has no spec key and no recheck_every / panel_check (made before those
    options: it re-checked at every checkpoint, 0) and whose stored hyperparameters lack a field added since
    (with a default that keeps the old behaviour) is the run of the command that made it."""
    old = SequentialConfig(max_edits=6, recheck_every=0, panel_check=0)
    stored_hp = {k: v for k, v in hparams_dict(HP).items() if k != "rect_top"}  # a field added later
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        run = _old_sequential_run(st, old, hparams=stored_hp)
        found = decide(st, _seq_spec(old))
        assert (found.action, found.run_id) == ("done", run)
        assert found.message == f"run {run} already holds this experiment (use --again for a new run)"
        # the same layout with today's defaults (re-check every 50) is another experiment
        assert decide(st, _seq_spec(SequentialConfig(max_edits=6))).action == "new"
        # other hyperparameters: another experiment
        other = spec_for("sequential", "tiny", sequential_config(old, "tiny32", 32, 0), editor="ROME",
                         hp=dataclasses.replace(HP, v_steps=3), seed=0)
        assert decide(st, other).action == "new"
        assert decide(st, _seq_spec(old), again=True).action == "new"
        assert decide(st, _seq_spec(old), resume="x").run_id == "x"


def test_an_unfinished_run_is_resumed_with_its_progress_in_the_message(tmp_path):
    cfg = SequentialConfig(max_edits=6, recheck_every=0, panel_check=0)
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        run = _old_sequential_run(st, cfg, status="interrupted", n_done=3)
        found = decide(st, _seq_spec(cfg), unit="edits")
        assert (found.action, found.run_id, found.runs) == ("resume", run, True)
        assert found.message == f"resuming run {run} (3/6 edits stored)"
        # a kind that is never resumed (an ability suite) starts anew
        assert decide(st, _seq_spec(cfg), resumable=False).action == "new"


def test_a_sequential_run_of_another_maximum_is_extended_or_holds_the_edits(tmp_path):
    cfg = SequentialConfig(max_edits=6, recheck_every=0, panel_check=0)
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        run = _old_sequential_run(st, cfg)
        longer = decide(st, _seq_spec(dataclasses.replace(cfg, max_edits=9)))
        assert (longer.action, longer.run_id, longer.runs) == ("extend", run, True)
        assert longer.message.startswith(f"extending run {run} (made with --edits 6, 6 edits stored) to at most 9")
        shorter = decide(st, _seq_spec(dataclasses.replace(cfg, max_edits=4)))
        assert (shorter.action, shorter.run_id, shorter.runs) == ("longer", run, False)
        assert shorter.message.startswith(f"run {run} (at most 6 edits, 6 made) already holds the first 4 edits")
        # stopped early past a collapse (done with fewer edits than its maximum): not extended
        st.heartbeat(run, n_done=5)
        assert decide(st, _seq_spec(dataclasses.replace(cfg, max_edits=9))).action == "new"
        # an unfinished longer run: it holds the edits it made, must be resumed for those it has not, and is
        # extended by a larger maximum
        st.heartbeat(run, n_done=3)
        st.finish_run(run, status="interrupted")
        with pytest.raises(ValueError, match=f"run {run} is laid out like this one with at most 6 edits and has 3: "
                                             f"resume it \\(--resume {run}\\)"):
            decide(st, _seq_spec(dataclasses.replace(cfg, max_edits=4)))
        assert decide(st, _seq_spec(dataclasses.replace(cfg, max_edits=2))).action == "longer"
        assert decide(st, _seq_spec(dataclasses.replace(cfg, max_edits=9))).action == "extend"


# ---- the loop ---------------------------------------------------------------------------------------------

UNITS = ["a", "b", "c", "d", "e"]


def _rows(run_id: str, unit: str) -> dict:
    return {"measurements": [{"run_id": run_id, "case_id": unit, "edit_count": 1, "rephrase_type": "plain",
                              "metric": m, "value": float(UNITS.index(unit) + k)} for k, m in enumerate(("es", "ps"))],
            "generations": [{"run_id": run_id, "case_id": unit, "edit_count": 1, "rephrase_type": "plain",
                             "probe_id": f"{unit}-p", "phase": "post", "text": f"text of {unit}"}]}


def _stored(st, run_id):
    m = queries.measurements(st.conn, run_ids=run_id)
    g = st.conn.execute("SELECT case_id, text FROM generations WHERE run_id = ?", (run_id,)).fetchall()
    return sorted(zip(m["case_id"], m["metric"], m["value"])), sorted(g)


def _start(st, n=len(UNITS)) -> str:
    return st.start_run(kind="robustness", model="tiny", n_total=n)


def test_an_uninterrupted_loop_writes_every_unit_and_finishes_the_run(tmp_path):
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        run = _start(st)
        assert run_loop(st, run, UNITS, lambda u: _rows(run, u), n_total=len(UNITS)) == len(UNITS)
        info = st.get_run(run)
        assert (info["status"], info["n_done"]) == ("done", 5) and "seconds" in json.loads(info["timings"])
        measured, generated = _stored(st, run)
    assert len(measured) == 10 and [c for c, _ in generated] == UNITS


def test_a_killed_loop_marks_the_run_interrupted_keeps_finished_units_and_resumes_to_the_same_rows(tmp_path):
    with Store.open(tmp_path / "a.sqlite", create=True) as st:
        whole = _start(st)
        run_loop(st, whole, UNITS, lambda u: _rows(whole, u), n_total=len(UNITS))
        expected = _stored(st, whole)
    with Store.open(tmp_path / "b.sqlite", create=True) as st:
        st.start_run(kind="robustness", model="tiny", n_total=len(UNITS), run_id=whole)  # same id: rows compare

        def killed_on_c(unit):
            if unit == "c":
                raise KeyboardInterrupt
            return _rows(whole, unit)

        with pytest.raises(RunInterrupted) as stop:
            run_loop(st, whole, UNITS, killed_on_c, n_total=len(UNITS), next_step="run it again")
        assert stop.value.run_id == whole and stop.value.next_step == "run it again"
        info = st.get_run(whole)
        assert (info["status"], info["n_done"]) == ("interrupted", 2) and "run it again" in info["error"]
        assert sorted(st.done_case_ids(whole, edit_count=1)) == ["a", "b"]
        # resumed: the stored units are skipped, the others run once, and the rows are those of one go
        st.resume_run(whole)
        calls = []

        def step(unit):
            calls.append(unit)
            return _rows(whole, unit)

        run_loop(st, whole, UNITS, step, n_total=len(UNITS), done=st.done_case_ids(whole, edit_count=1))
        assert calls == ["c", "d", "e"]
        info = st.get_run(whole)
        assert (info["status"], info["n_done"]) == ("done", 5)
        assert _stored(st, whole) == expected


def test_an_interrupted_interval_is_not_timed_so_the_events_cover_only_the_units_they_count(tmp_path):
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        run = _start(st)

        def killed_on_c(unit):
            if unit == "c":
                raise KeyboardInterrupt
            return _rows(run, unit)

        with pytest.raises(RunInterrupted):
            run_loop(st, run, UNITS, killed_on_c, n_total=len(UNITS), timing_every=1e9)
        assert st.conn.execute("SELECT COUNT(*) FROM run_events WHERE kind = 'timing'").fetchone()[0] == 0
        st.resume_run(run)
        run_loop(st, run, UNITS, lambda u: _rows(run, u), n_total=len(UNITS), done=st.done_case_ids(run, edit_count=1))
        timed = st.conn.execute("SELECT edit_count, end_count FROM run_events WHERE kind = 'timing'").fetchall()
    assert timed == [(2, 5)]  # the resumed process's three units; a and b were made untimed


def test_an_exception_marks_the_run_failed_with_the_error(tmp_path):
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        run = _start(st)

        def broken(unit):
            if unit == "b":
                raise ValueError("probe came back empty")
            return _rows(run, unit)

        with pytest.raises(ValueError, match="probe came back empty"):
            run_loop(st, run, UNITS, broken, n_total=len(UNITS))
        info = st.get_run(run)
        assert info["status"] == "failed" and info["error"] == "ValueError: probe came back empty"
        assert st.done_case_ids(run, edit_count=1) == {"a"}


def test_a_units_rows_are_written_all_or_nothing(tmp_path):
    """A unit whose generations cannot be written leaves none of its measurements either (one transaction)."""
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        run = _start(st)

        def bad_generation_on_b(unit):
            rows = _rows(run, unit)
            if unit == "b":
                rows["generations"][0]["no_such_column"] = 1
            return rows

        with pytest.raises(Exception):
            run_loop(st, run, UNITS, bad_generation_on_b, n_total=len(UNITS))
        assert st.get_run(run)["status"] == "failed"
        measured, generated = _stored(st, run)
    assert {c for c, _, _ in measured} == {"a"} and [c for c, _ in generated] == ["a"]


def test_grouped_units_count_each_unit_and_non_finite_rows_are_refused(tmp_path):
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        run = _start(st)
        seen = []

        def chunk(units):
            seen.append(list(units))
            return {"measurements": [r for u in units for r in _rows(run, u)["measurements"]]}

        beats = []
        real = st.heartbeat
        st.heartbeat = lambda run_id, n_done=None, n_total=None: (beats.append(n_done), real(run_id, n_done, n_total))
        run_loop(st, run, UNITS, chunk, n_total=len(UNITS), done={"a"}, group=2)
        assert seen == [["b", "c"], ["d", "e"]] and beats == [3, 5]
        other = _start(st)

        def nan(unit):
            rows = _rows(other, unit)
            rows["measurements"][0]["value"] = math.nan
            return rows

        with pytest.raises(ValueError):
            run_loop(st, other, UNITS, nan, n_total=len(UNITS))
        assert st.get_run(other)["status"] == "failed" and st.done_case_ids(other, edit_count=1) == set()

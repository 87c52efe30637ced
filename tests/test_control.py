"""The study-B control editor (compute.editors.control, RandomRankOne) on the tiny model: a random rank-one
update of the stated size at ROME's layer, seeded, undone exactly, and a sequential control run whose updates
have a reference run's per-edit norms, in order. (compute.editors.control is imported inside the tests: at
module level it would register the editor before the editor-contract tests collect the registry.)"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from compute.editors import EditContext, EditorError, EditRequest, apply_edit, undo
from compute.experiments.sequential import SequentialConfig, ensure_editor, run_sequential
from store import Store, queries

from test_sequential import _ctx, _rome

CFG = SequentialConfig(max_edits=5, checkpoint_every=2, dense_first=1, panel_pool=4, panel_size=3,
                       panel_known_only=False, panel_tokens=3, fluency_tokens=6)
REQUEST = EditRequest("France", "The capital of France is", "Rome", "Paris")


@pytest.fixture(scope="module")
def cases(builder):
    return builder.build(14, seed=5, relations=["capital", "currency", "continent"], case_set="s14")


def _hp(**kw):
    ensure_editor("RandomRankOne")
    from compute.editors.control import RandomRankOneHparams

    return RandomRankOneHparams(**{"layer": 1, **kw})


def _norms(st, run_id):
    m = queries.measurements(st.conn, run_ids=run_id, metrics="update_norm").sort("edit_count")
    return m["value"].to_list()


def test_a_random_rank_one_update_of_the_given_size_seeded_and_undone_exactly(llama, tmp_path):
    before = {n: p.detach().clone() for n, p in llama.model.named_parameters()}
    ctx = EditContext(cache_dir=tmp_path)
    result = apply_edit(llama, [REQUEST], "RandomRankOne", _hp(norm=0.7, seed=3), ctx)
    (name,) = result.originals
    assert name == "model.layers.1.mlp.down_proj.weight"
    delta = dict(llama.model.named_parameters())[name].detach().double() - before[name].double()
    assert delta.norm().item() == pytest.approx(0.7, rel=1e-5)
    assert torch.linalg.matrix_rank(delta, rtol=1e-4).item() == 1
    assert all(torch.equal(p, before[n]) for n, p in llama.model.named_parameters() if n != name)
    edited = dict(llama.model.named_parameters())[name].detach().clone()
    undo(llama, result)
    assert all(torch.equal(p, before[n]) for n, p in llama.model.named_parameters())
    for seed, same in ((3, True), (4, False)):  # the same seed makes the same update, another seed another one
        again = apply_edit(llama, [REQUEST], "RandomRankOne", _hp(norm=0.7, seed=seed), ctx)
        assert torch.equal(dict(llama.model.named_parameters())[name], edited) == same
        undo(llama, again)
    with pytest.raises(EditorError, match="needs a size"):
        apply_edit(llama, [REQUEST], "RandomRankOne", _hp(), ctx)
    with pytest.raises(EditorError, match="is not a layer of"):
        apply_edit(llama, [REQUEST], "RandomRankOne", _hp(norm=1.0, layer=7), ctx)


def test_a_control_run_takes_the_reference_runs_norms_in_order(llama, cases, tmp_path):
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        ref = run_sequential(llama, cases, st, editor="ROME", hp=_rome(llama), ctx=_ctx(llama, tmp_path / "r"), cfg=CFG)
        control = run_sequential(llama, cases, st, editor="RandomRankOne", hp=_hp(reference_run=ref, seed=1),
                                 ctx=EditContext(cache_dir=tmp_path / "c"), cfg=CFG)
        assert st.get_run(control)["status"] == "done" and st.get_run(control)["editor"] == "RandomRankOne"
        assert json.loads(st.get_run(control)["hparams"])["reference_run"] == ref
        # each run records its editor's traits, so readers never compare editor names
        assert json.loads(st.get_run(ref)["config"])["editor_traits"] == {"mass_editor": False, "changes_weights": True,
                                                                          "edits_facts": True, "keys": "r-ROME"}
        control_traits = json.loads(st.get_run(control)["config"])["editor_traits"]
        assert control_traits["mass_editor"] is False and control_traits["edits_facts"] is False
        assert _norms(st, control) == pytest.approx(_norms(st, ref), rel=1e-5) and len(_norms(st, ref)) == 5
        # Findings B5 sets the two side by side on their shared order: a 3-fact panel after five edits of a tiny
        # model is too few for the difference's CI to leave 0, so that order shows neither and the claim, which
        # needs every order to agree, is undecided already
        from store.findings import findings

        b5 = next(f for f in findings(st.conn) if f.claim == "B5")
        assert b5.ours.startswith("order 0, edit 5: panel recall ROME ") and ", control " in b5.ours
        assert b5.verdict == "undecided" and b5.reason == ("Measured, but undecided: the CI of the difference includes "
                                                           "0 on order 0."), b5
        st.conn.execute("UPDATE runs SET status = 'interrupted', n_total = 500 WHERE run_id = ?", (control,))
        b5 = next(f for f in findings(st.conn) if f.claim == "B5")  # a control still computing is named so
        assert ", control (interrupted, 5 of 500 edits) " in b5.ours
        assert b5.reason.endswith("the verdict waits for the runs still computing: control order 0 (5 of 500 "
                                  "edits, interrupted).")
        st.conn.execute("UPDATE runs SET status = 'done', n_total = 5 WHERE run_id = ?", (control,))
        # its rows are those of any sequential run: retention of the (never made) edits, panel, drift
        m = queries.measurements(st.conn, run_ids=control)
        assert {"retention_em", "panel_recall", "fluency"} <= set(m["metric"])
        # a longer control run than its reference is refused at the first update past the reference's last
        with pytest.raises(EditorError, match=r"has 5 per-edit norms; this run cannot make update 6"):
            run_sequential(llama, cases, st, editor="RandomRankOne", hp=_hp(reference_run=ref),
                           ctx=EditContext(cache_dir=tmp_path / "d"), cfg=dataclasses.replace(CFG, max_edits=7))
        # a reference run of another batch size, or none, is refused before a run exists
        n_runs = queries.list_runs(st.conn).height
        with pytest.raises(EditorError, match="edited 1 facts at a time, this run 2: use --batch 1"):
            run_sequential(llama, cases, st, editor="RandomRankOne", hp=_hp(reference_run=ref),
                           ctx=EditContext(cache_dir=tmp_path / "e"), cfg=dataclasses.replace(CFG, batch_size=2))
        with pytest.raises(EditorError, match="no reference run 'nope'"):
            run_sequential(llama, cases, st, editor="RandomRankOne", hp=_hp(reference_run="nope"),
                           ctx=EditContext(cache_dir=tmp_path / "e"), cfg=CFG)
        assert queries.list_runs(st.conn).height == n_runs


def test_a_killed_control_run_resumes_with_the_same_updates(llama, cases, tmp_path, monkeypatch):
    import compute.experiments.sequential as seq

    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        ref = run_sequential(llama, cases, st, editor="ROME", hp=_rome(llama), ctx=_ctx(llama, tmp_path / "r"), cfg=CFG)
        whole = run_sequential(llama, cases, st, editor="RandomRankOne", hp=_hp(reference_run=ref),
                               ctx=EditContext(cache_dir=tmp_path / "a"), cfg=CFG)
        real, calls = seq.apply_edit, {"n": 0}

        def dies_on_the_fourth(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 4:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        monkeypatch.setattr(seq, "apply_edit", dies_on_the_fourth)
        with pytest.raises(KeyboardInterrupt):
            run_sequential(llama, cases, st, editor="RandomRankOne", hp=_hp(reference_run=ref),
                           ctx=EditContext(cache_dir=tmp_path / "b"), cfg=CFG)
        runs = queries.list_runs(st.conn, kind="sequential")
        (killed,) = runs.filter(runs["status"] == "interrupted")["run_id"]
        monkeypatch.setattr(seq, "apply_edit", real)
        run_sequential(llama, cases, st, editor="RandomRankOne", hp=_hp(reference_run=ref),
                       ctx=EditContext(cache_dir=tmp_path / "b"), cfg=CFG, run_id=killed)
        assert _norms(st, killed) == _norms(st, whole)
        drift = {r: queries.weight_drift(st.conn, run_ids=r).sort("edit_count")["fro_delta"].to_list()
                 for r in (killed, whole)}
        assert drift[killed] == drift[whole]


def test_the_command_line_runs_a_control_beside_a_stored_run(fixture_store, cache_dir, tiny_model_dir, tmp_path,
                                                           capsys):
    import shutil
    from pathlib import Path

    from compute.cli import main

    store = tmp_path / "copy.sqlite"
    shutil.copy(fixture_store, store)
    with Store.open(store, readonly=True) as st:
        runs = queries.list_runs(st.conn, kind="sequential")
        ref = [r["run_id"] for r in runs.iter_rows(named=True) if json.loads(r["hparams"]).get("key_mismatch")][0]
    control_hp = Path(__file__).resolve().parents[1] / "compute" / "editors" / "control.json"
    base = ["--store", str(store), "--cache-dir", str(tmp_path / "cache"), "--quiet", "run", "sequential",
            "--editor", "RandomRankOne", "--hparams", str(control_hp), "--hp", "layer=0", "--set", "tiny32",
            "--every", "3", "--panel-pool", "4", "--panel-size", "3", "--panel-any", "--model", tiny_model_dir]
    assert main(base + ["--edits", "6", "--hp", f"reference_run={ref}"]) == 0
    with Store.open(store, readonly=True) as st:
        (control,) = queries.list_runs(st.conn, kind="sequential").filter(
            queries.list_runs(st.conn, kind="sequential")["editor"] == "RandomRankOne")["run_id"]
        assert _norms(st, control) == pytest.approx(_norms(st, ref), rel=1e-5)
    capsys.readouterr()
    assert main(base + ["--edits", "6", "--again"]) == 2  # no size at all: one line saying what to give, no run
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs a size: --hp reference_run=RUN_ID" in err[0]
    with Store.open(store, readonly=True) as st:
        assert queries.list_runs(st.conn, kind="sequential").height == runs.height + 1


def test_a_reference_named_by_its_plan_unit_resolves_to_the_run_that_unit_made(llama, cases, tmp_path):
    from compute.stored import resolve_reference

    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        ref = run_sequential(llama, cases, st, editor="ROME", hp=_rome(llama), ctx=_ctx(llama, tmp_path / "r"),
                             cfg=CFG)
        with pytest.raises(EditorError, match="plan unit 'seq-rome-o0' made 0 sequential runs"):
            resolve_reference(st, "unit:seq-rome-o0")
        st.write_events([{"run_id": ref, "kind": "plan_unit", "series": "k", "edit_count": 0,
                          "detail": {"plan": "p", "unit": "seq-rome-o0"}}])
        assert resolve_reference(st, "unit:seq-rome-o0") == ref and resolve_reference(st, ref) == ref
        control = run_sequential(llama, cases, st, editor="RandomRankOne",
                                 hp=_hp(reference_run="unit:seq-rome-o0", seed=1),
                                 ctx=EditContext(cache_dir=tmp_path / "c"), cfg=CFG)
        assert _norms(st, control) == pytest.approx(_norms(st, ref), rel=1e-5)

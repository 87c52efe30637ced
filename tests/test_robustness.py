"""The robustness experiment and layer sweeps on a tiny model: real edits, exact undo, resumable runs."""

from __future__ import annotations

import pytest
import torch

from compute.editors import EditContext
from compute.editors.ft import FTHyperParams
from compute.experiments.robustness import run_robustness
from compute.experiments.sweep import run_sweep
from store import Store, derived, queries

TYPES = ("plain", "paraphrase", "context_pronoun", "doubt")


@pytest.fixture(scope="module")
def cases(builder):
    return builder.build(4, seed=2, relations=["capital", "currency"], case_set="r4")


@pytest.fixture()
def ft_hp():
    return FTHyperParams(layer=1, lr=5e-2, steps=8, norm_constraint=5e-2, stop_nll=0.0)


def _ctx(tmp_path):
    return EditContext(cache_dir=tmp_path, seed=0)


def _values(st, run_id):
    df = queries.measurements(st.conn, run_ids=run_id).filter(~queries.pl.col("metric").is_in(["edit_seconds"]))
    return sorted(zip(df["case_id"], df["rephrase_type"], df["metric"], df["value"]))


def test_robustness_run_edits_every_case_and_restores_the_model(llama, cases, ft_hp, tmp_path):
    before = {k: v.clone() for k, v in llama.model.state_dict().items()}
    with Store.open(tmp_path / "r.sqlite", create=True) as st:
        run = run_robustness(llama, cases, st, editor="FT-L", hp=ft_hp, ctx=_ctx(tmp_path),
                             rephrase_types=TYPES, gen_tokens=3, case_set="r4")
        info = st.get_run(run)
        assert info["status"] == "done" and info["editor"] == "FT-L" and '"layer": 1' in info["hparams"]
        m = queries.measurements(st.conn, run_ids=run, edit_count=1)
        assert set(m["case_id"]) == {c.case_id for c in cases}
        assert set(m["rephrase_type"]) == set(TYPES) | {"neighbourhood", "edit"}
        plain = m.filter((m["rephrase_type"] == "plain") & (m["metric"] == "p_new"))["value"].to_list()
        assert len(plain) == 4
    after = llama.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_edit_raises_p_new_over_the_unedited_model(llama, cases, ft_hp, tmp_path):
    from compute.evaluate import evaluate_cases

    pre = evaluate_cases(llama, cases, ["plain"], generation=False, neighbourhood=False)
    with Store.open(tmp_path / "p.sqlite", create=True) as st:
        run = run_robustness(llama, cases, st, editor="FT-L", hp=ft_hp, ctx=_ctx(tmp_path),
                             rephrase_types=["plain"], gen_tokens=2)
        post = queries.measurements(st.conn, run_ids=run, metrics="p_new", rephrase_types="plain")
    post_by_case = dict(zip(post["case_id"], post["value"]))
    assert all(post_by_case[e.case_id] > e.values["plain"]["p_new"] for e in pre)


def test_killed_robustness_run_resumes_to_the_same_numbers(llama, cases, ft_hp, tmp_path, monkeypatch):
    import compute.experiments.common as rob  # where each edit's evaluation is called

    with Store.open(tmp_path / "a.sqlite", create=True) as st:
        full = run_robustness(llama, cases, st, editor="FT-L", hp=ft_hp, ctx=_ctx(tmp_path), rephrase_types=TYPES, gen_tokens=3)
        expected = _values(st, full)
    real, calls = rob.evaluate_cases, []

    def dies_on_third(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    with Store.open(tmp_path / "b.sqlite", create=True) as st:
        monkeypatch.setattr(rob, "evaluate_cases", dies_on_third)
        with pytest.raises(KeyboardInterrupt):
            run_robustness(llama, cases, st, editor="FT-L", hp=ft_hp, ctx=_ctx(tmp_path), rephrase_types=TYPES, gen_tokens=3)
        run = queries.list_runs(st.conn)["run_id"][0]
        assert st.get_run(run)["status"] == "interrupted" and len(st.done_case_ids(run, 1)) == 2
        monkeypatch.setattr(rob, "evaluate_cases", real)
        run_robustness(llama, cases, st, editor="FT-L", hp=ft_hp, ctx=_ctx(tmp_path), rephrase_types=TYPES,
                       gen_tokens=3, run_id=run)
        got = _values(st, run)
    assert [g[:3] for g in got] == [e[:3] for e in expected]
    assert [g[3] for g in got] == pytest.approx([e[3] for e in expected], abs=1e-5)


def test_resuming_with_another_editor_is_refused(llama, cases, ft_hp, tmp_path):
    from compute.editors.ike import IKEHyperParams

    with Store.open(tmp_path / "c.sqlite", create=True) as st:
        run = run_robustness(llama, cases[:1], st, editor="FT-L", hp=ft_hp, ctx=_ctx(tmp_path), rephrase_types=["plain"], gen_tokens=1)
        with pytest.raises(ValueError, match="made with FT-L"):
            run_robustness(llama, cases[:1], st, editor="IKE", hp=IKEHyperParams(), ctx=_ctx(tmp_path), run_id=run)


def test_ike_run_changes_no_weight_and_reaches_the_store(llama, cases, tmp_path):
    from compute.editors.ike import IKEHyperParams

    before = {k: v.clone() for k, v in llama.model.state_dict().items()}
    with Store.open(tmp_path / "i.sqlite", create=True) as st:
        run = run_robustness(llama, cases, st, editor="IKE", hp=IKEHyperParams(), ctx=_ctx(tmp_path),
                             rephrase_types=["plain"], gen_tokens=2)
        assert queries.measurements(st.conn, run_ids=run, metrics="p_new").height == len(cases)
    assert all(torch.equal(before[k], v) for k, v in llama.model.state_dict().items())


def test_robustness_summary_has_n_ci_and_drop_from_plain(llama, cases, ft_hp, tmp_path):
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        rows, probes = zip(*(c.to_rows() for c in cases))
        st.write_cases(list(rows), [p for ps in probes for p in ps])
        run_robustness(llama, cases, st, editor="FT-L", hp=ft_hp, ctx=_ctx(tmp_path), rephrase_types=TYPES, gen_tokens=3)
        s = derived.robustness_summary(st.conn, metrics=("es", "acc"))
        by_rel = derived.robustness_summary(st.conn, metrics=("es",), by="relation")
        corr = derived.robustness_correlations(st.conn, n_boot=50)
    plain = s.filter((s["rephrase_type"] == "plain") & (s["metric"] == "es"))
    assert plain["n"][0] == 4 and plain["drop_from_plain"][0] == 0.0
    assert (s["ci_low"] <= s["mean"]).all() and (s["mean"] <= s["ci_high"]).all()
    assert set(by_rel["relation"]) == {"capital", "currency"}
    assert set(corr["metric"]) <= {"acc", "rev"} and set(corr["feature"]) <= {"frequency", "connection", "cooccurrence", "population"}


def test_layer_sweep_stores_one_run_per_value_and_resumes(llama, cases, ft_hp, tmp_path):
    with Store.open(tmp_path / "w.sqlite", create=True) as st:
        ids = run_sweep(llama, cases[:2], st, editor="FT-L", base_hp=ft_hp, field="layer", values=[0, 1],
                        ctx=_ctx(tmp_path), sweep="s1")
        again = run_sweep(llama, cases[:2], st, editor="FT-L", base_hp=ft_hp, field="layer", values=[0, 1],
                          ctx=_ctx(tmp_path), sweep="s1")
        summary = derived.sweep_summary(st.conn, "s1")
    assert ids == again and summary.height == 2
    assert set(summary["value"]) == {"0", "1"} and (summary["n"] == 2).all()
    assert {"ES", "PS", "NS", "S"} <= set(summary.columns)


def test_a_sweep_under_other_pinned_mechanics_is_another_experiment(llama, cases, ft_hp, tmp_path):
    """`run sweep --hp FIELD=V` pins a field beside the swept one: the same sweep id and values with another pin
    (a calibration rerun under new edit mechanics) makes new runs instead of finding the old ones done, while
    a change of the shipped file alone (not pinned) still finds them (compute.runs, sweep identity)."""
    import dataclasses

    with Store.open(tmp_path / "p.sqlite", create=True) as st:
        plain = run_sweep(llama, cases[:1], st, editor="FT-L", base_hp=ft_hp, field="layer", values=[0],
                          ctx=_ctx(tmp_path), sweep="s")
        other = dataclasses.replace(ft_hp, steps=4)
        pinned = run_sweep(llama, cases[:1], st, editor="FT-L", base_hp=other, field="layer", values=[0],
                           ctx=_ctx(tmp_path), sweep="s", pinned={"steps": 4})
        unpinned = run_sweep(llama, cases[:1], st, editor="FT-L", base_hp=other, field="layer", values=[0],
                             ctx=_ctx(tmp_path), sweep="s")
        again = run_sweep(llama, cases[:1], st, editor="FT-L", base_hp=other, field="layer", values=[0],
                          ctx=_ctx(tmp_path), sweep="s", pinned={"steps": 4})
        n_runs = st.conn.execute("SELECT count(*) FROM runs WHERE kind = 'sweep'").fetchone()[0]
    assert pinned != plain and unpinned == plain and again == pinned and n_runs == 2


def test_rome_robustness_run_optimises_the_next_values_together_with_the_numbers_of_one_by_one(
        llama, cases, tmp_path, monkeypatch):
    """Robustness and sweep runs optimise the values of the next AHEAD cases in one packed call; the stored
    numbers are those of one value at a time (up to float32 rounding) and the model is restored."""
    import compute.editors.rome as rome
    import compute.editors.value_cache as value_cache
    from test_editor_contract import FACTORIES, tiny_context

    from compute.editors import get_editor

    hp = FACTORIES["ROME"](get_editor("ROME"), llama)
    real, calls = rome.optimise_values, []

    def counting(lm, layer, requests, *args, **kwargs):
        calls.append(len(requests))
        return real(lm, layer, requests, *args, **kwargs)

    monkeypatch.setattr(rome, "optimise_values", counting)
    before = {k: v.clone() for k, v in llama.model.state_dict().items()}
    got = {}
    for ahead in (1, 3):
        monkeypatch.setattr(value_cache, "AHEAD", ahead)
        calls.clear()
        ctx = tiny_context(llama, tmp_path)
        with Store.open(tmp_path / f"v{ahead}.sqlite", create=True) as st:
            run = run_robustness(llama, cases, st, editor="ROME", hp=hp, ctx=ctx, rephrase_types=["plain", "paraphrase"],
                                 gen_tokens=2)
            got[ahead] = _values(st, run)
            assert st.conn.execute("SELECT COUNT(*) FROM edit_diagnostics WHERE run_id = ?", (run,)).fetchone()[0] > 0
        assert ctx.value_cache is None and calls == ([1, 1, 1, 1] if ahead == 1 else [3, 1])
    assert all(torch.equal(before[k], v) for k, v in llama.model.state_dict().items())
    assert [g[:3] for g in got[3]] == [e[:3] for e in got[1]]
    assert [g[3] for g in got[3]] == pytest.approx([e[3] for e in got[1]], rel=1e-4, abs=1e-5)

    calls.clear()
    with Store.open(tmp_path / "sweep.sqlite", create=True) as st:
        run_sweep(llama, cases, st, editor="ROME", base_hp=hp, field="layer", values=[0, 1], ctx=tiny_context(llama, tmp_path),
                  sweep="s2")
    assert calls == [3, 1, 3, 1]  # each layer's run optimises its own values

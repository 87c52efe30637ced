"""Per-(case, rephrase type) evaluation and the resumable pre-edit knowledge run, on a tiny model."""

from __future__ import annotations

import pytest

from compute.evaluate import evaluate_cases
from compute.knowledge import measure_knowledge
from store import Store, queries
from store.metrics import REPHRASE_TYPES


@pytest.fixture(scope="module")
def few_cases(builder):
    return builder.build(6, seed=0, relations=["capital", "element_symbol"])


def test_every_requested_type_gets_probability_and_generation_metrics(llama, few_cases):
    evals = evaluate_cases(llama, few_cases[:2], REPHRASE_TYPES, gen_tokens=4)
    for ev in evals:
        assert set(ev.values) == set(REPHRASE_TYPES) | {"neighbourhood"}
        plain = ev.values["plain"]
        assert {"nll_true", "nll_new", "p_true", "rank_true", "es", "magnitude", "acc", "rev", "fluency"} <= set(plain)
        assert plain["es"] == float(plain["nll_new"] < plain["nll_true"])
        assert 0.0 <= ev.values["neighbourhood"]["ns"] <= 1.0
        assert len([g for g in ev.generations if g[1] == "paraphrase"]) >= 3


def test_paraphrase_values_are_the_mean_over_its_probes(llama, few_cases):
    from compute.scoring import score_targets

    case = few_cases[0]
    ev = evaluate_cases(llama, [case], ["paraphrase"], generation=False, neighbourhood=False)[0]
    probes = case.probes_of("paraphrase")
    nll = [s.nll for s in score_targets(llama, [p.text for p in probes], [case.true_object] * len(probes))]
    assert ev.values["paraphrase"]["nll_true"] == pytest.approx(sum(nll) / len(nll), abs=1e-5)


def test_doubt_probe_is_scored_after_the_models_own_answer(llama, few_cases):
    ev = evaluate_cases(llama, few_cases[:1], ["doubt"], gen_tokens=3, neighbourhood=False)[0]
    assert "doubt" in ev.values and "p_true" in ev.values["doubt"]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_new_evaluation_path_gives_the_old_paths_generations_and_scores(arch, llama, gpt2, few_cases, monkeypatch):
    """Issue 22: bucketed prefill, preallocated caches, doubt's first turn inside the batched decode. The
    generations are identical to the old path's and every value agrees within float rounding; the new path
    never calls the separate `generate` the old one used for doubt's first turn."""
    import compute.evaluate as evaluate

    lm = llama if arch == "llama" else gpt2
    old = evaluate_cases(lm, few_cases[:3], REPHRASE_TYPES, gen_tokens=5, legacy=True)

    def no_separate_generate(*args, **kwargs):
        raise AssertionError("the new path decodes doubt's first turn in the batch, not with generate()")

    monkeypatch.setattr(evaluate, "generate", no_separate_generate)
    new = evaluate_cases(lm, few_cases[:3], REPHRASE_TYPES, gen_tokens=5)
    for a, b in zip(new, old):
        assert a.generations == b.generations and len(a.generations) >= len(REPHRASE_TYPES)
        assert set(a.values) == set(b.values)
        for rtype, metrics in b.values.items():
            assert a.values[rtype] == pytest.approx(metrics, abs=1e-4), rtype


def test_doubt_first_answer_is_cut_at_its_line_break_before_the_pushback(llama, few_cases, monkeypatch):
    """The model's first answer (decoded in the batch) goes into the conversation up to its first line break."""
    import compute.evaluate as evaluate
    from compute.scoring import ProbeResult

    seen = []
    real = evaluate.run_probes

    def spy(lm, prompts, targets, **kw):
        seen.append(list(prompts))
        res = real(lm, prompts, targets, **kw)
        if len(seen) == 1:  # the first call holds the doubt's first turn last: give it a two-line answer
            res[-1] = ProbeResult(res[-1].scores, "Paris.\nMore text")
        return res

    monkeypatch.setattr(evaluate, "run_probes", spy)
    evaluate_cases(llama, few_cases[:1], ["plain", "doubt"], gen_tokens=3, neighbourhood=False)
    doubt = few_cases[0].probes_of("doubt")[0]
    assert seen[0][-1] == doubt.first_turn()
    assert seen[1] == [doubt.filled("Paris.")]


def _values(store, run_id):
    df = queries.measurements(store.conn, run_ids=run_id)
    return sorted(zip(df["case_id"], df["rephrase_type"], df["metric"], df["value"]))


def test_knowledge_run_resumes_after_a_crash_with_identical_numbers(llama, few_cases, tmp_path, monkeypatch):
    with Store.open(tmp_path / "a.sqlite", create=True) as full:
        run_a = measure_knowledge(llama, few_cases, full, gen_tokens=3, chunk=2)
        expected = _values(full, run_a)
        assert full.get_run(run_a)["status"] == "done"

    import compute.knowledge as knowledge

    real, calls = knowledge.evaluate_cases, []

    def crash_on_second_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("killed")
        return real(*args, **kwargs)

    with Store.open(tmp_path / "b.sqlite", create=True) as st:
        monkeypatch.setattr(knowledge, "evaluate_cases", crash_on_second_chunk)
        with pytest.raises(RuntimeError):
            measure_knowledge(llama, few_cases, st, gen_tokens=3, chunk=2)
        run_b = queries.list_runs(st.conn)["run_id"][0]
        assert st.get_run(run_b)["status"] == "failed"
        assert len(st.done_case_ids(run_b)) == 2
        monkeypatch.setattr(knowledge, "evaluate_cases", real)
        measure_knowledge(llama, few_cases, st, gen_tokens=3, chunk=2, run_id=run_b)
        assert st.get_run(run_b)["status"] == "done"
        assert [v[:3] for v in _values(st, run_b)] == [v[:3] for v in expected]
        assert [v[3] for v in _values(st, run_b)] == pytest.approx([v[3] for v in expected], abs=1e-6)


def test_knowledge_run_records_recall_and_provenance(llama, few_cases, tmp_path):
    with Store.open(tmp_path / "k.sqlite", create=True) as st:
        rows, probes = zip(*(c.to_rows() for c in few_cases))
        st.write_cases(list(rows), [p for ps in probes for p in ps])
        run = measure_knowledge(llama, few_cases, st, gen_tokens=3)
        info = st.get_run(run)
        assert info["kind"] == "knowledge" and info["model"] == "tiny-llama" and info["code_version"]
        know = queries.case_knowledge(st.conn, run_id=run)
        assert know.height == len(few_cases)
        assert {"p_true", "rank_true", "recall"} <= set(know.columns)


def test_knowledge_run_stores_pre_edit_recall_per_case_and_type_with_its_probe_wording(llama, few_cases, tmp_path):
    """The unedited baseline gives a "known facts only" filter what it needs: rev at edit count 0 for every
    (case, rephrase type), and a digest of the probe texts it was measured on."""
    from compute.cases import probes_digest

    types = ["plain", "cloze", "dialogue", "doubt"]
    with Store.open(tmp_path / "kt.sqlite", create=True) as st:
        run = measure_knowledge(llama, few_cases[:2], st, rephrase_types=types, gen_tokens=3)
        rev = queries.measurements(st.conn, run_ids=run, metrics="rev", edit_count=0)
        assert sorted(zip(rev["case_id"], rev["rephrase_type"])) == sorted(
            (c.case_id, t) for c in few_cases[:2] for t in types)
        assert set(rev["value"].to_list()) <= {0.0, 1.0}
        import json

        config = json.loads(st.get_run(run)["config"])
        assert config["probes_digest"] == probes_digest(few_cases[:2], types)
    assert probes_digest(few_cases[:2], types) != probes_digest(few_cases[:2], ["plain"])

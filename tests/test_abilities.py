"""The general-ability suite (compute.abilities): scoring functions on hand-made items, the task registry and
its item builders, the evaluation on random tiny models (at chance) and on the default model (above chance,
marked `model`), store rows and the CLI."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from compute.abilities import run as runmod
from compute.abilities.data import Item, Sources, interleave
from compute.abilities.run import ability_rows, evaluate_abilities, load_items
from compute.abilities.scoring import (
    OptionScore,
    accuracy_estimate,
    choice_logprobs,
    perplexity_estimate,
    pick_option,
    token_nlls,
)
from compute.abilities.tasks import OWN, STUDY_C_CATEGORIES, TASKS, Task, get_task
from compute.scoring import score_targets
from store.metrics import wilson_ci

pytestmark = pytest.mark.usefixtures("one_thread")

KB_TASKS = ("nli", "closed_book_qa")  # the tasks that state or ask knowledge-base facts


@pytest.fixture(scope="module")
def sources(kb):
    return Sources(kb=kb)


@pytest.fixture(scope="module")
def all_items(sources):
    return load_items(sources=sources)


# ---- scoring functions on hand-made values ---------------------------------------------------------------


def test_pick_option_mean_and_sum_disagree_where_lengths_differ():
    # option 0: one token at -1.0; option 1: three tokens at -0.5 each (-1.5 in all)
    scores = [OptionScore(-1.0, 1), OptionScore(-1.5, 3)]
    assert pick_option(scores, "mean") == 1  # NLL 1.0 vs 0.5
    assert pick_option(scores, "sum") == 0  # -1.0 vs -1.5
    assert pick_option([OptionScore(-2.0, 2), OptionScore(-2.0, 2)], "mean") == 0  # ties: the earlier option
    assert OptionScore(-1.5, 3).nll == pytest.approx(0.5)
    with pytest.raises(ValueError, match="normalisation"):
        pick_option(scores, "max")


def test_accuracy_estimate_is_the_share_with_a_wilson_interval():
    est = accuracy_estimate([True, True, False, True])
    assert (est.score, est.n) == (0.75, 4)
    assert (est.ci_low, est.ci_high) == pytest.approx(wilson_ci(3, 4))
    assert accuracy_estimate([False] * 10).ci_low == 0.0
    with pytest.raises(ValueError, match="no items"):
        accuracy_estimate([])


def test_perplexity_estimate_pools_tokens_and_bootstraps_windows():
    est = perplexity_estimate([2.0, 6.0], [2, 2])
    assert est.score == pytest.approx(math.exp(8.0 / 4))
    assert est.n == 2
    assert math.exp(1.0) - 1e-9 <= est.ci_low <= est.score <= est.ci_high <= math.exp(3.0) + 1e-9
    same = perplexity_estimate([3.0] * 20, [3] * 20)
    assert same.score == pytest.approx(math.e) and same.ci_low == pytest.approx(math.e)
    assert perplexity_estimate([2.0], [1]).ci_high == pytest.approx(math.exp(2.0))
    with pytest.raises(ValueError):
        perplexity_estimate([1.0], [0])


# ---- the batched scorers agree with the reference scorer -------------------------------------------------------


def _reference_logprob(lm, prefix: str, query: str, option: str) -> tuple[float, int]:
    """Summed log-probability of the option's tokens from one plain forward pass over prefix, query and option
    tokenised as choice_logprobs does (each part on its own)."""
    tok = lm.tokenizer
    p = tok(prefix).input_ids if prefix else []
    q = tok(query, add_special_tokens=not prefix).input_ids
    o = tok(" " + option, add_special_tokens=False).input_ids
    ids = p + q + o
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)
    start = len(p) + len(q)
    return sum(float(logp[start - 1 + j, t]) for j, t in enumerate(o)), len(o)


QUERIES = ["The capital of Italy is", "What is the currency? Fill in the blank: euro ____. Answer:",
           "Berlin", "The chemical element symbol discovered by the user in Europe is"]
OPTIONS = [["Rome", "the Berlin of Tokyo", "Madrid"], ["euro", "French German", "it"],
           ["is a city", "Asia", "think that right"], ["Paris", "country", "blank answer Asia"]]


@pytest.mark.parametrize("model", ["llama", "gpt2"])
def test_choice_logprobs_equal_a_plain_forward_pass(model, request):
    lm = request.getfixturevalue(model)
    prefix = "Answer each question.\n\nThe capital of France is Paris.\n\n"
    got = choice_logprobs(lm, prefix, QUERIES, OPTIONS, max_batch=3)  # batches of mixed query lengths
    for q, opts, scores in zip(QUERIES, OPTIONS, got):
        for o, s in zip(opts, scores):
            ref, n = _reference_logprob(lm, prefix, q, o)
            assert s.n_tokens == n
            assert s.logprob == pytest.approx(ref, abs=1e-3)


@pytest.mark.parametrize("model", ["llama", "gpt2"])
def test_choice_logprobs_without_prefix_equal_score_targets(model, request):
    lm = request.getfixturevalue(model)
    got = choice_logprobs(lm, "", QUERIES, OPTIONS, max_batch=2)
    for q, opts, scores in zip(QUERIES, OPTIONS, got):
        for s, r in zip(scores, score_targets(lm, [q] * len(opts), opts)):
            assert s.n_tokens == r.n_tokens
            assert s.nll == pytest.approx(r.nll, abs=2e-4)


def test_choice_logprobs_refuses_malformed_input(llama):
    with pytest.raises(ValueError, match="option lists"):
        choice_logprobs(llama, "", ["a"], [])
    with pytest.raises(ValueError, match="same, non-zero number"):
        choice_logprobs(llama, "", ["a", "b"], [["x", "y"], ["x"]])
    with pytest.raises(ValueError, match="empty"):
        choice_logprobs(llama, "", ["a"], [["x", " "]])
    assert choice_logprobs(llama, "p", [], []) == []


def test_token_nlls_equal_a_full_forward_pass(llama):
    tok = llama.tokenizer
    windows = [tok("The capital of France is Paris.").input_ids, tok("Tokyo is a city in Japan").input_ids[:5]]
    got = token_nlls(llama, windows, max_batch=2)
    for w, (total, n) in zip(windows, got):
        with torch.no_grad():
            logits = llama.model(input_ids=torch.tensor([w])).logits[0].float()
        logp = torch.log_softmax(logits[:-1], dim=-1).gather(1, torch.tensor(w[1:])[:, None])
        assert n == len(w) - 1
        assert total == pytest.approx(-float(logp.sum()), rel=1e-4)
    with pytest.raises(ValueError, match="two tokens"):
        token_nlls(llama, [[5]])


# ---- scoring a task with a fake scorer -----------------------------------------------------------------------


def _toy_task(items: list[Item], **kw) -> Task:
    defaults = dict(name="toy", category="toy", study_c=OWN, description="hand-made", version="0", scoring="choice",
                    build=lambda task, sources: ([], items), template="Q: {q}\nA:", n_options=3, chance=1 / 3,
                    quick_n=2)
    return Task(**{**defaults, **kw})


TOY = [Item(f"t{i}", {"q": f"question {i}"}, ("a", "bb", "ccc"), answer=i % 3) for i in range(6)]


def _fake_scorer(prefer):
    """A stand-in for choice_logprobs: option scores from `prefer(query_index, option_index)`."""
    def fake(lm, prefix, queries, options, **kw):
        return [[prefer(i, j) for j in range(len(opts))] for i, opts in enumerate(options)]
    return fake


def test_choice_task_is_scored_against_each_items_answer(monkeypatch, llama):
    task = _toy_task(TOY)
    # an oracle that gives the right option the best score gets every item right
    monkeypatch.setattr(runmod, "choice_logprobs",
                        _fake_scorer(lambda i, j: OptionScore(0.0 if j == TOY[i].answer else -5.0, 1)))
    assert runmod.score_choice_task(task, llama, [], TOY) == [True] * 6
    # always the first option: right exactly where the answer is option 0
    monkeypatch.setattr(runmod, "choice_logprobs", _fake_scorer(lambda i, j: OptionScore(-1.0 - j, 1)))
    assert runmod.score_choice_task(task, llama, [], TOY) == [it.answer == 0 for it in TOY]
    # lengths differ: the summed score prefers the one-token option, the averaged one the three-token option
    monkeypatch.setattr(runmod, "choice_logprobs", _fake_scorer(lambda i, j: OptionScore(-1.2 * (j + 1) ** 0.5, j + 1)))
    assert runmod.score_choice_task(task, llama, [], TOY) == [it.answer == 2 for it in TOY]
    assert runmod.score_choice_task(_toy_task(TOY, norm="sum"), llama, [], TOY) == [it.answer == 0 for it in TOY]


def test_evaluate_abilities_modes_use_quick_n_or_every_item(monkeypatch, llama):
    task = _toy_task(TOY)
    monkeypatch.setattr(runmod, "choice_logprobs",
                        _fake_scorer(lambda i, j: OptionScore(0.0 if j == 0 else -5.0, 1)))
    seen = []
    quick = evaluate_abilities(llama, "quick", [task], progress=seen.append)
    full = evaluate_abilities(llama, "full", [task])
    assert seen == quick
    assert (quick[0].n, quick[0].score) == (2, 0.5)  # items t0 (answer 0) and t1 (answer 1)
    assert (full[0].n, full[0].score) == (6, pytest.approx(1 / 3))
    assert (full[0].ci_low, full[0].ci_high) == pytest.approx(wilson_ci(2, 6))
    assert full[0].chance == pytest.approx(1 / 3) and full[0].mode == "full"
    with pytest.raises(ValueError, match="quick"):
        evaluate_abilities(llama, "fast", [task])


def test_perplexity_task_scores_the_first_max_tokens(monkeypatch, llama):
    texts = [Item("p0", {"text": "The capital of France is Paris and the capital of Italy is Rome."}),
             Item("p1", {"text": "Tokyo is a city in Japan."})]
    task = Task(name="ppl", category="lm", study_c=OWN, description="", version="0", scoring="perplexity",
                build=lambda t, s: ([], texts), higher_is_better=False, max_tokens=6)
    seen = []
    monkeypatch.setattr(runmod, "token_nlls",
                        lambda lm, windows: seen.extend(windows) or [(3.0, len(w) - 1) for w in windows])
    (score,) = evaluate_abilities(llama, "full", [task])
    assert [len(w) for w in seen] == [6, min(6, len(llama.tokenizer(texts[1].fields["text"]).input_ids))]
    assert score.chance == llama.model.get_output_embeddings().weight.shape[0]
    assert not score.higher_is_better and score.metric == "perplexity"
    assert score.clear_of_chance  # perplexity near e^(3/5) is far below the vocabulary size


# ---- prompts --------------------------------------------------------------------------------------------------


def test_plain_prompts_share_the_few_shot_prefix(tok):
    shots = [Item("s", {"q": "one"}, ("x", "y", "z"), 1)]
    task = _toy_task(TOY, instruction="Answer.\n\n")
    prefix, queries = task.prompts(TOY[:2], shots, tok)
    assert prefix == "Answer.\n\nQ: one\nA: y\n\n"
    assert queries == ["Q: question 0\nA:", "Q: question 1\nA:"]


@pytest.mark.parametrize("tokenizer", ["tok", "tok_plain"])
def test_chat_prompts_are_the_rendered_conversation(tokenizer, request):
    from compute.cases import render_chat

    tk = request.getfixturevalue(tokenizer)
    items = [Item(f"d{i}", {"who": w}, ("Rome", "Paris", "Berlin"), 0, turns=(("user", f"My {w} lives in Rome."),
                                                                            ("assistant", "Nice.")))
             for i, w in enumerate(["sister", "friend"])]
    task = _toy_task(items, chat=True, template="Where does my {who} live?", stem="Your {who} lives in")
    prefix, queries = task.prompts(items, [], tk)
    for it, q in zip(items, queries):
        assert prefix + q == render_chat(tk, [*it.turns, ("user", f"Where does my {it.fields['who']} live?")],
                                         f"Your {it.fields['who']} lives in")
    assert prefix == "" or prefix.endswith("\n")


# ---- the registry and its items ---------------------------------------------------------------------------


def test_registry_covers_six_study_c_categories_and_refuses_unknown_names():
    mapped = {t.study_c for t in TASKS.values()} - {OWN}
    assert len(mapped) >= 6 and mapped <= set(STUDY_C_CATEGORIES)
    for t in TASKS.values():
        assert t.version and t.description and t.source and t.quick_n > 0
        assert (t.chance is None) == (t.scoring == "perplexity")
        assert t.metric in ("accuracy", "perplexity")
    with pytest.raises(ValueError, match="known tasks: sentiment"):
        get_task("gsm8k")
    with pytest.raises(ValueError, match="study-C category"):
        _toy_task(TOY, study_c="translation")
    with pytest.raises(ValueError, match="n_options"):
        _toy_task(TOY, n_options=1)


@pytest.mark.parametrize("name", list(TASKS))
def test_items_are_deterministic_and_well_formed(name, sources, all_items):
    task = TASKS[name]
    shots, items = all_items[name]
    again = task.shots_and_items(sources)
    assert (shots, items) == again  # same items, same order, on every build
    assert len(items) >= task.quick_n
    assert len({it.uid for it in items}) == len(items)
    assert not {s.uid for s in shots} & {it.uid for it in items}  # no shot is also a test item
    if task.scoring == "choice":
        assert all(len(it.options) == task.n_options for it in items)
        assert task.chance == pytest.approx(1 / task.n_options)
        answers = Counter(it.answer for it in items)
        assert set(answers) == set(range(task.n_options))  # the right answer is not always in one place
        if task.n_options == 2:  # binary tasks: the quick subset is balanced too
            quick = Counter(it.answer for it in task.items(sources, full=False))
            assert abs(quick[0] - quick[1]) <= 1
        assert all(task.query(it).strip() and all(o.strip() for o in it.options) for it in items)
    else:
        assert all(len(it.fields["text"].split()) >= 20 for it in items)
    assert task.items(sources, full=False) == items[: task.quick_n]


def _fingerprint(items: dict) -> str:
    import hashlib

    text = repr([(name, [(it.uid, it.fields, it.options, it.answer, it.turns) for it in [*shots, *rows]])
                 for name, (shots, rows) in sorted(items.items())])
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.slow
def test_items_are_the_same_in_another_process(all_items, cache_dir, kb):
    """No item depends on Python's per-process hash seed (set order) or on unseeded randomness."""
    import os
    import subprocess
    import sys

    code = ("import sys; from compute.abilities.run import load_items; from compute.abilities.data import Sources; "
            "from test_abilities import _fingerprint; print(_fingerprint(load_items(sources=Sources(sys.argv[1]))))")
    tests = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(tests)
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": os.pathsep.join([root, tests])}
    out = subprocess.run([sys.executable, "-c", code, str(cache_dir)], capture_output=True, text=True, env=env,
                         cwd=root, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == _fingerprint(all_items)


@pytest.mark.parametrize("name", list(TASKS))
def test_knowledge_base_facts_are_reported(name, sources, all_items, kb):
    task = TASKS[name]
    facts = task.facts(sources)
    if name in KB_TASKS:
        assert facts
        for subject, relation in facts:
            assert any(f.relation == relation for f in kb.facts_of(subject)), (subject, relation)
        for it in all_items[name][1]:  # every item names the facts it states or asks
            assert it.facts
    else:
        assert facts == set()


def test_interleave_keeps_every_prefix_balanced():
    out = interleave({"b": [1, 2, 3], "a": [10, 20]})
    assert out == [10, 1, 20, 2, 3]


# ---- a random tiny model is at chance ---------------------------------------------------------------------


@pytest.mark.slow
def test_random_tiny_model_scores_at_chance(llama, all_items):
    """Every item of every task on a random 2-layer Llama: accuracies within three binomial standard errors
    of chance (a scorer that leaked the answer, or items whose answer could be read off the options, would
    fail), perplexity near the vocabulary size (a uniform predictor)."""
    scores = evaluate_abilities(llama, "full", items=all_items)
    assert [s.task for s in scores] == list(TASKS)
    for s in scores:
        assert s.n == len(all_items[s.task][1])
        if s.metric == "accuracy":
            se = math.sqrt(s.chance * (1 - s.chance) / s.n)
            assert abs(s.score - s.chance) <= 3 * se, (s.task, s.score, s.chance, s.n)
        else:
            assert 0.8 * s.chance <= s.score <= 1.25 * s.chance, (s.task, s.score, s.chance)
        assert s.ci_low <= s.score <= s.ci_high


def test_rows_fit_the_store_table_and_evaluation_leaves_weights_alone(gpt2, all_items, tmp_path):
    from store import Store, queries

    before = {n: p.clone() for n, p in gpt2.model.named_parameters()}
    scores = evaluate_abilities(gpt2, "quick", ["sentiment", "dialogue_memory", "lm_perplexity"], items=all_items)
    assert all(torch.equal(p, before[n]) for n, p in gpt2.model.named_parameters())
    assert [s.n for s in scores] == [TASKS[s.task].quick_n for s in scores]
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        run_id = st.start_run(kind="abilities", model=gpt2.name)
        rows = ability_rows(scores, run_id, edit_count=0, batch_size=0)
        st.write_abilities(rows)
        back = queries.abilities(st.conn, run_id).sort("task").to_dicts()
    assert [r["task"] for r in back] == sorted(s.task for s in scores)
    for r in back:
        s = next(x for x in scores if x.task == r["task"])
        assert (r["mode"], r["n"], r["task_version"]) == ("quick", s.n, s.task_version)
        assert (r["edit_count"], r["batch_size"]) == (0, 0)
        assert r["score"] == pytest.approx(s.score) and r["ci_low"] <= r["score"] <= r["ci_high"]
    assert ability_rows(scores[:1], None, None, None)[0]["run_id"] is None  # filled in later by the caller


def test_cli_measure_stores_a_run_and_show_prints_it(tiny_model_dir, cache_dir, kb, tmp_path, capsys):
    from compute.cli import build_parser
    from store import Store, queries

    store = tmp_path / "cli.sqlite"
    base = ["--store", str(store), "--cache-dir", str(cache_dir), "--quiet"]
    args = build_parser().parse_args(base + ["abilities", "measure", "--mode", "quick", "--model", tiny_model_dir,
                                             "--tasks", "analogy,lm_perplexity"])
    args.func(args)
    out = capsys.readouterr().out
    assert "analogy" in out and "lm_perplexity" in out and "lower is better" in out
    with Store.open(store, readonly=True) as st:
        runs = queries.list_runs(st.conn, kind="abilities")
        rows = queries.abilities(st.conn, runs["run_id"][0])
    assert runs["status"][0] == "done" and runs["code_version"][0]
    assert sorted(rows["task"]) == ["analogy", "lm_perplexity"]
    assert set(rows["edit_count"]) == {0} and set(rows["batch_size"]) == {0} and set(rows["mode"]) == {"quick"}
    args = build_parser().parse_args(base + ["abilities", "show"])
    args.func(args)
    shown = capsys.readouterr().out
    assert "reasoning" in shown and runs["run_id"][0] in shown
    args = build_parser().parse_args(base + ["abilities", "measure", "--mode", "quick", "--model", tiny_model_dir,
                                             "--tasks", "analogy,lm_perplexity"])
    args.func(args)  # the same suite again: reported, not measured twice
    assert "already measured" in capsys.readouterr().out
    with Store.open(store, readonly=True) as st:
        assert queries.list_runs(st.conn, kind="abilities").height == 1
    args = build_parser().parse_args(base + ["abilities", "tasks"])
    args.func(args)
    listed = capsys.readouterr().out
    assert all(name in listed for name in TASKS)
    with pytest.raises(ValueError, match="known tasks"):
        args = build_parser().parse_args(base + ["abilities", "measure", "--model", tiny_model_dir, "--tasks", "nope"])
        args.func(args)


# ---- the default model is above chance -------------------------------------------------------------------------


ABOVE_CHANCE_N = 60  # items per task: every task's unedited score is clear of chance at this n (stored baseline)


@pytest.mark.model
def test_default_model_is_above_chance_on_every_task_in_quick_mode(default_lm, all_items):
    """The unedited SmolLM2-135M-Instruct: every task's 95% CI is clear of chance on its first quick items (issue
    5: a task that cannot get there is replaced, not kept). On the first ABOVE_CHANCE_N of each: the whole quick
    suite (1,210 items) took 300 s, a third of the suite's wall time on one worker; the shipped store's unedited
    scores on every quick item are its abilities run's."""
    first = {name: (shots, items[:ABOVE_CHANCE_N]) for name, (shots, items) in all_items.items()}
    scores = evaluate_abilities(default_lm, "quick", items=first)
    assert {s.task: s.n for s in scores} == {t.name: min(t.quick_n, ABOVE_CHANCE_N) for t in TASKS.values()}
    failing = [(s.task, round(s.score, 3), round(s.ci_low, 3), round(s.ci_high, 3), s.chance)
               for s in scores if not s.clear_of_chance]
    assert not failing


def test_kb_facts_used_is_the_union_over_tasks(sources):
    from compute.abilities.run import kb_facts_used

    used = kb_facts_used(sources=sources)
    assert used == set().union(*(TASKS[n].facts(sources) for n in KB_TASKS))
    assert ("France", "capital") in used or any(r == "capital" for _, r in used)


# ---- quick mode's n and the task versions (issue 19, point 12) ---------------------------------------------

# (version, quick_n) of every task: quick scores of different n must not share a version. Changing a quick_n
# means bumping the task's version and this table (compute.abilities.power says what n a 0.1 drop needs).
QUICK_LOCK = {"sentiment": ("2", 160), "analogy": ("2", 45), "nli": ("2", 184), "closed_book_qa": ("2", 105),
              "reading": ("2", 36), "entity_typing": ("2", 176), "dialogue_memory": ("2", 162), "topic": ("2", 92),
              "lm_perplexity": ("2", 250)}


def test_quick_n_changes_only_with_a_version_bump():
    assert {t.name: (t.version, t.quick_n) for t in TASKS.values()} == QUICK_LOCK, (
        "a task's quick_n or version changed: bump its version when quick_n changes, and update QUICK_LOCK")


@pytest.mark.parametrize("name", ["sentiment", "analogy", "topic"])
def test_a_version_bump_keeps_the_items_unless_items_version_changes(name, sources):
    """Version 2 raised quick_n only: the items are drawn from `items_version`'s seed, so they are version 1's."""
    import dataclasses

    task = TASKS[name]
    same = dataclasses.replace(task, version="99").shots_and_items(sources)
    assert same == task.shots_and_items(sources)
    other = dataclasses.replace(task, items_version="99").shots_and_items(sources)[1]
    assert [it.uid for it in other] != [it.uid for it in same[1]]


def test_every_quick_subset_is_balanced_over_its_strata(all_items):
    """The first quick_n items of a task hold each stratum (label, section, relation, kind) within one item of
    the others, unless a stratum has run out of items."""
    for name, (_, items) in all_items.items():
        quick = Counter(it.group for it in items[: TASKS[name].quick_n])
        full = Counter(it.group for it in items)
        short = {g for g in full if quick[g] == full[g]}  # strata used up: the rest may hold more
        counts = [c for g, c in quick.items() if g not in short]
        assert not counts or max(counts) - min(counts) <= 1, (name, dict(quick))

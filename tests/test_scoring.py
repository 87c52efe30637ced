"""Scoring primitives on a tiny model: NLL definition, ranks, exact match, batching, generation, names."""

from __future__ import annotations

import math

import pytest
import torch

from compute.scoring import fluency, generate, mentions, ngram_entropy, score_targets, target_ids


def _manual_nll(lm, prompt, target):
    p, t = target_ids(lm.tokenizer, prompt, target)
    ids = torch.tensor([p + t])
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(ids).logits[0].float(), -1)
    return -sum(logp[len(p) - 1 + j, tok].item() for j, tok in enumerate(t)) / len(t)


def test_nll_is_the_token_average_of_the_target(llama):
    got = score_targets(llama, ["The capital of France is"], ["Paris Rome"])[0]
    assert got.n_tokens >= 2
    assert got.nll == pytest.approx(_manual_nll(llama, "The capital of France is", "Paris Rome"), abs=1e-5)


def test_batched_scores_equal_one_at_a_time(gpt2):
    prompts = ["The capital of France is", "What", "Fill in the blank: The euro ____. Answer:"]
    targets = ["Paris", "is the symbol", "Germany"]
    batched = score_targets(gpt2, prompts, targets)
    for p, t, b in zip(prompts, targets, batched):
        single = score_targets(gpt2, [p], [t])[0]
        assert b.nll == pytest.approx(single.nll, abs=1e-5) and b.rank == single.rank


def test_the_argmax_token_has_rank_one_and_matches_exactly(llama):
    prompt = "The capital of France is"
    ids = llama.tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        top = llama.model(ids).logits[0, -1].argmax().item()
    word = llama.tokenizer.decode([top])
    score = score_targets(llama, [prompt], [word.strip() or word])[0]
    if llama.tokenizer(" " + word.strip(), add_special_tokens=False).input_ids == [top]:
        assert score.rank == 1 and score.exact_match
    assert score.prob == pytest.approx(math.exp(-score.nll))


def test_empty_target_is_refused(llama):
    with pytest.raises(ValueError, match="target object is empty"):
        score_targets(llama, ["The capital of France is"], ["  "])


def test_prompts_and_targets_must_pair_up(llama):
    with pytest.raises(ValueError, match="one target per prompt"):
        score_targets(llama, ["a", "b"], ["x"])


def test_batched_generation_equals_single_generation(llama):
    prompts = ["The capital of France is", "What is the currency", "Fill in the blank"]
    batched = generate(llama, prompts, max_new_tokens=6, batch_size=3)
    singles = [generate(llama, [p], max_new_tokens=6)[0] for p in prompts]
    assert batched == singles


def test_mentions_is_alias_aware_and_respects_word_boundaries():
    assert mentions("It is the USA, of course", ["United States", "USA"])
    assert mentions("paris is lovely", ["Paris"])
    assert not mentions("Romania is not it", ["Rome"])
    assert mentions("Washington, D.C. is the seat", ["Washington, D.C."])
    assert not mentions("anything", [""])


def test_fluency_is_lower_for_repetitive_text():
    varied = "the quick brown fox jumps over the lazy dog while a cat sleeps on the warm mat"
    repeated = "the the the the the the the the the the the the the the the the"
    assert fluency(repeated) < fluency(varied)
    assert ngram_entropy("", 2) == 0.0


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_one_pass_probes_equal_separate_scoring_and_generation(arch, llama, gpt2):
    from compute.scoring import run_probes

    lm = llama if arch == "llama" else gpt2
    prompts = ["The capital of France is", "What", "a b c d e f g h i j the", "Fill in the blank: ____. Answer:"]
    targets = [["Paris", "Rome Berlin"], ["is the symbol", "x"], ["Tokyo", "the capital"], ["Japan", "euro"]]
    got = run_probes(lm, prompts, targets, gen_tokens=6)
    gens = generate(lm, prompts, max_new_tokens=6)
    for p, ts, res, gen in zip(prompts, targets, got, gens):
        for want, have in zip(score_targets(lm, [p] * len(ts), ts), res.scores):
            assert have.nll == pytest.approx(want.nll, abs=1e-5)
            assert (have.rank, have.exact_match, have.n_tokens) == (want.rank, want.exact_match, want.n_tokens)
        assert res.generation == gen


def test_one_pass_probes_need_one_target_list_per_prompt(llama):
    from compute.scoring import run_probes

    with pytest.raises(ValueError, match="one list per prompt"):
        run_probes(llama, ["a", "b"], [["x", "y"]])
    with pytest.raises(ValueError, match="one per prompt"):
        run_probes(llama, ["a", "b"], [["x"], ["y"]], gen_tokens=[3])


PROMPTS = ["The capital of France is", "What", "a b c d e f g h i j the " * 6, "Fill in the blank: ____. Answer:",
           "the " * 40, "Paris", "Tokyo is in Japan and " * 3]
TARGETS = [["Paris", "Rome Berlin"], ["is the symbol", "x"], ["Tokyo", "the capital"], ["Japan", "euro"],
           ["a", "b c"], ["x y z", "q"], ["Asia", "Europe and Africa"]]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_bucketed_buffered_decode_equals_the_old_path(arch, llama, gpt2):
    """Issue 22: length-bucketed prefill, merged preallocated caches and one joint decode give the same
    generations and scores as the old path (one padded prefill, a cache grown by torch.cat)."""
    from compute.scoring import _length_buckets, _run_probes_legacy, run_probes

    lm = llama if arch == "llama" else gpt2
    lengths = [len(lm.tokenizer(p).input_ids) for p in PROMPTS]
    assert len(_length_buckets(lengths)) >= 2  # the prompts really are prefilled in several buckets
    new = run_probes(lm, PROMPTS, TARGETS, gen_tokens=8)
    old = _run_probes_legacy(lm, PROMPTS, TARGETS, gen_tokens=8)
    for a, b in zip(new, old):
        assert a.generation == b.generation
        for x, y in zip(a.scores, b.scores):
            assert x.nll == pytest.approx(y.nll, abs=1e-5)
            assert (x.rank, x.exact_match, x.n_tokens) == (y.rank, y.exact_match, y.n_tokens)


def test_rows_may_ask_for_different_targets_and_generation_lengths(llama):
    from compute.scoring import run_probes

    full = run_probes(llama, PROMPTS, TARGETS, gen_tokens=8)
    lens = [0, 3, 8, 1, 5, 0, 2]
    mixed = run_probes(llama, PROMPTS, [t[: i % 3] for i, t in enumerate(TARGETS)], gen_tokens=lens)
    for i, (f, m) in enumerate(zip(full, mixed)):
        assert len(m.scores) == i % 3
        assert [s.nll for s in m.scores] == pytest.approx([s.nll for s in f.scores[: i % 3]], abs=1e-5)
        if lens[i] == 0:
            assert m.generation is None
        else:  # greedy: a shorter generation is a prefix of the longer one (token-wise)
            want = generate(llama, [PROMPTS[i]], max_new_tokens=lens[i])[0]
            assert m.generation == want and f.generation.startswith(want)


def test_length_buckets_cover_every_row_once_and_cut_padding():
    from compute.scoring import _length_buckets

    lengths = [12, 300, 14, 280, 13, 11, 310, 15]
    groups = _length_buckets(lengths, overhead=50)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert len(groups) == 2 and {frozenset(g) for g in groups} == {frozenset({0, 2, 4, 5, 7}), frozenset({1, 3, 6})}
    assert _length_buckets([20] * 5) == [[0, 1, 2, 3, 4]]  # equal lengths: one pass
    assert len(_length_buckets(lengths, overhead=10_000)) == 1  # a costly pass is not worth the padding saved

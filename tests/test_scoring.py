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
    with pytest.raises(ValueError, match="same number of targets"):
        run_probes(llama, ["a", "b"], [["x", "y"], ["z"]])

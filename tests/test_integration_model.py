"""Integration tests on the embedded default model (SmolLM2-135M-Instruct): few, and each meaningful."""

from __future__ import annotations

import pytest

from compute.scoring import generate, score_targets

pytestmark = [pytest.mark.model, pytest.mark.slow]


def test_default_model_is_the_embedded_smollm2(default_lm):
    n_params = sum(p.numel() for p in default_lm.model.parameters())
    assert default_lm.model.config.model_type == "llama"
    assert default_lm.n_layers == 30
    assert 134_000_000 < n_params < 135_000_000
    assert tuple(default_lm.down_proj(3).weight.shape) == (576, 1536)


def test_completes_the_capital_of_france_with_paris(default_lm):
    text = generate(default_lm, ["The capital of France is"], max_new_tokens=8)[0]
    assert "Paris" in text
    paris, rome = score_targets(default_lm, ["The capital of France is"] * 2, ["Paris", "Rome"])
    assert paris.rank == 1 and paris.nll < rome.nll


def test_recall_rises_with_subject_frequency_over_capital_cases(default_lm, kb, paragraphs):
    """Over >= 200 capital cases, pre-edit greedy recall correlates positively with word frequency."""
    from compute.cases import CaseBuilder
    from compute.scoring import mentions
    from store.stats import spearman_ci

    builder = CaseBuilder(kb, default_lm.tokenizer, paragraphs)
    facts = [f for f, _ in builder.sample(200, seed=0, relations=["capital"])]
    assert len(facts) == 200
    prompts = [f"The capital of {f.subject} is" for f in facts]
    gens = generate(default_lm, prompts, max_new_tokens=10, batch_size=32)
    recall = [float(mentions(g, (f.object, *f.object_aliases))) for f, g in zip(facts, gens)]
    freq = [kb.subjects[f.subject].frequency for f in facts]
    corr = spearman_ci(freq, recall, n_boot=1000, seed=0)
    assert 0.2 < sum(recall) / len(recall) < 0.95  # the model knows some capitals, not all
    assert corr.rho > 0 and corr.ci_low > 0, corr

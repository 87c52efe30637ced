"""MEMIT (compute.editors.memit): a batch on the tiny models, the update's algebra, and one batch on the
embedded default model. Tiny-model requests end with the subject for the reason given in test_rome.py."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from compute.editors import EditContext, EditorError, EditRequest, apply_edit, get_editor, load_hparams, undo
from compute.editors.base import parse_hparams, weight_name
from compute.editors.memit import MEMITHyperParams, memit_update
from compute.scoring import score_targets
from test_rome import editable, params_of

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


# One-token objects for the tiny tokenizer; each prompt ends with its subject.
TINY_BATCH = [
    EditRequest("France", "The capital city of France", "Asia", "Paris"),
    EditRequest("Japan", "The capital city of Japan", "German"),
    EditRequest("Italy", "The capital city of Italy", "Paris"),
]
TINY_HP = MEMITHyperParams(
    layers=(0, 1),
    lam=10.0,  # a random model's keys are tiny next to C's scale: 500 would hold the update back
    v_weight_decay=0.0,
    clamp_norm_factor=100.0,
    n_prefixes=3,
    prefix_tokens=4,
    cov_n_tokens=600,
)




@pytest.fixture()
def ctx(wiki_cache):
    """An edit context whose cache holds the Wikipedia paragraphs and nothing else."""
    return EditContext(cache_dir=wiki_cache)


@pytest.fixture(params=["llama", "gpt2"])
def tiny(request):
    return editable(request.getfixturevalue(request.param))


def new_probs(lm, batch) -> list[float]:
    return [s.prob for s in score_targets(lm, [r.prompt for r in batch], [r.target_new for r in batch])]


def test_memit_batch_raises_every_new_object_and_undo_is_exact(tiny, ctx):
    before = params_of(tiny)
    p0 = new_probs(tiny, TINY_BATCH)
    result = apply_edit(tiny, TINY_BATCH, "MEMIT", TINY_HP, ctx)
    p1 = new_probs(tiny, TINY_BATCH)
    assert all(a < 0.01 for a in p0) and all(b > 0.5 for b in p1), (p0, p1)
    assert max(result.info["target_miss"]) < 0.1  # the spread updates reach the targets at the last layer
    undo(tiny, result)
    assert all(torch.equal(before[n], p) for n, p in params_of(tiny).items())


def test_memit_changes_every_listed_layer_and_nothing_else(tiny, ctx):
    before = params_of(tiny)
    result = apply_edit(tiny, TINY_BATCH, "MEMIT", TINY_HP, ctx)
    after = params_of(tiny)
    names = sorted(weight_name(tiny, layer) for layer in TINY_HP.layers)
    assert result.changed == names
    assert sorted(n for n in before if not torch.equal(before[n], after[n])) == names
    assert [row["layer"] for row in result.info["per_layer"]] == [0, 1]
    assert all(row["update_norm"] > 0 for row in result.info["per_layer"])
    undo(tiny, result)


def test_update_solves_memits_normal_equations():
    """dW = R^T K (lam C + K^T K)^-1 minimises lam * tr(dW C dW^T) + ||K dW^T - R||^2: its gradient is zero."""
    gen = torch.Generator().manual_seed(1)
    keys = torch.randn(3, 10, generator=gen, dtype=torch.float64)
    residual = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    a = torch.randn(10, 10, generator=gen, dtype=torch.float64)
    cov = a @ a.T / 10 + 0.1 * torch.eye(10, dtype=torch.float64)
    update = memit_update(keys, residual, cov, lam=2.0)  # [4, 10]
    grad = 2.0 * update @ cov + (update @ keys.T - residual.T) @ keys  # d/d(dW) of the objective / 2
    assert torch.allclose(grad, torch.zeros_like(grad), atol=1e-10)


@pytest.mark.parametrize("model", ["llama", "gpt2"])
def test_packed_and_reference_loops_give_the_same_batch_update(model, tmp_path, request):
    """The packed objective (fast) and the full forward of every prompt (reference) write the same update.

    With the identity covariance (1e-7 seen): the tiny corpus's C is so ill-conditioned that lam C + K^T K
    amplifies the values' float32 rounding to 1.5e-5 of the update."""
    from test_editor_contract import tiny_context

    lm = editable(request.getfixturevalue(model))
    ctx = tiny_context(lm, tmp_path)
    runs = {}
    for fast in (True, False):
        result = apply_edit(lm, TINY_BATCH, "MEMIT", dataclasses.replace(TINY_HP, fast=fast, v_steps=6), ctx)
        after = params_of(lm)
        runs[fast] = ([e["nlls"] for e in result.info["edits"]],
                      {n: after[n] - result.originals[n] for n in result.originals})
        undo(lm, result)
    for a, b in zip(runs[True][0], runs[False][0]):
        assert a == pytest.approx(b, abs=1e-3)
    for name, ref in runs[False][1].items():
        assert ref.norm() > 0
        assert (runs[True][1][name] - ref).norm() <= 1e-5 * ref.norm(), name


def test_memit_hyperparameters_are_checked_by_field_name(llama, ctx):
    with pytest.raises(EditorError, match="'layers'"):
        parse_hparams(MEMITHyperParams, {"layers": []})
    with pytest.raises(EditorError, match="'layers' lists a layer twice"):
        parse_hparams(MEMITHyperParams, {"layers": [1, 1]})
    with pytest.raises(EditorError, match="'lam'"):
        parse_hparams(MEMITHyperParams, {"layers": [0], "lam": 0})
    with pytest.raises(EditorError, match="'layers' has 5"):
        apply_edit(llama, TINY_BATCH, "MEMIT", dataclasses.replace(TINY_HP, layers=(0, 5)), ctx)
    assert get_editor("memit").hparams is MEMITHyperParams
    shipped = load_hparams("MEMIT", "smollm2-135m").layers  # chosen by the layer sweep
    assert len(shipped) >= 2 and list(shipped) == sorted(set(shipped)) and 0 <= shipped[0] and shipped[-1] < 30


@pytest.mark.model
@pytest.mark.slow
def test_memit_batch_of_three_takes_on_the_default_model(default_lm):
    from compute.models import default_cache_dir

    batch = [
        EditRequest("France", "The capital of France is", "Rome", "Paris"),
        EditRequest("Japan", "The capital of Japan is", "Berlin", "Tokyo"),
        EditRequest("Germany", "The official currency of Germany is the", "yen", "euro"),
    ]
    before = params_of(default_lm)
    hp = load_hparams("MEMIT", "smollm2-135m")
    result = apply_edit(default_lm, batch, "MEMIT", hp, EditContext(default_cache_dir()))
    try:
        prompts = [r.prompt for r in batch]
        new = score_targets(default_lm, prompts, [r.target_new for r in batch])
        true = score_targets(default_lm, prompts, [r.target_true for r in batch])
    finally:
        undo(default_lm, result)
    assert all(n.nll < t.nll for n, t in zip(new, true)), [(n.nll, t.nll) for n, t in zip(new, true)]
    assert all(torch.equal(before[n], p) for n, p in params_of(default_lm).items())


def test_value_chunks_do_not_change_a_batch_edit(llama, tmp_path, monkeypatch):
    import compute.editors.memit as memit_mod
    from compute.editors import EditContext, EditRequest, apply_edit, get_editor, undo

    reqs = [EditRequest("France", "The capital of France is", "Rome", "Paris"),
            EditRequest("Spain", "The capital of Spain is", "Tokyo", "Madrid"),
            EditRequest("Italy", "The capital of Italy is", "Berlin", "Rome")]
    hp = get_editor("MEMIT").hparams(layers=(0,), lam=1.0, v_steps=6, n_prefixes=2, prefix_tokens=3)

    def ctx():
        def covariance(layer):
            w = llama.down_proj(layer).weight
            d_in = w.shape[0] if llama.arch.down_proj_transposed else w.shape[1]
            return torch.eye(d_in, dtype=torch.float64)
        return EditContext(cache_dir=tmp_path, covariance=covariance)

    whole = apply_edit(llama, reqs, "MEMIT", hp, ctx())
    after_whole = {n: p.detach().clone() for n, p in llama.model.named_parameters() if n in whole.originals}
    undo(llama, whole)
    monkeypatch.setattr(memit_mod, "VALUE_CHUNK", 2)  # 2 + 1
    chunked = apply_edit(llama, reqs, "MEMIT", hp, ctx())
    for n, p in llama.model.named_parameters():
        if n in after_whole:
            assert torch.allclose(p, after_whole[n], atol=1e-5), n
    assert [e["steps"] for e in chunked.info["edits"]] == [e["steps"] for e in whole.info["edits"]]
    undo(llama, chunked)

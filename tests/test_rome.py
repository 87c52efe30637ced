"""ROME (compute.editors.rome): tiny-model properties, then a few checks on the embedded default model.

A random tiny model carries almost nothing from one position to the next (its attention is near uniform
and its logits span about one nat), so no edit at the subject can move a later position. The tiny-model
requests therefore end with the subject and use one-token objects, and `editable` scales the tied token
embedding so that logits can become confident. The default-model tests use ordinary prompts.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from compute.editors import EditContext, EditorError, EditRequest, apply_edit, get_editor, load_hparams, undo
from compute.editors.base import parse_hparams, weight_name
from compute.editors.rome import (
    ROMEHyperParams,
    context_prefixes,
    rank_one_update,
    subject_keys,
    subject_last_token,
)
from compute.scoring import score_targets

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


# Ends with the subject; " Asia" and " Paris" are one token each for the tiny tokenizer.
TINY_REQUEST = EditRequest("France", "The capital city of France", "Asia", "Paris")
TINY_HP = ROMEHyperParams(
    layer=0,
    v_steps=30,
    v_weight_decay=0.0,  # ||v0|| is ~0.02 in a random model: the decay term would swamp the loss
    clamp_norm_factor=1000.0,  # likewise, 4 ||v0|| is far too short a leash for a random model
    n_prefixes=3,
    prefix_tokens=4,
    cov_n_tokens=600,
)


def editable(lm):
    """Scale the (tied) token embedding by 10 so the tiny model's logits can express a confident answer."""
    with torch.no_grad():
        lm.model.get_input_embeddings().weight.mul_(10.0)
    return lm



@pytest.fixture()
def ctx(wiki_cache):
    """An edit context whose cache holds the Wikipedia paragraphs and nothing else."""
    return EditContext(cache_dir=wiki_cache)


def params_of(lm) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in lm.model.named_parameters()}


@pytest.fixture(params=["llama", "gpt2"])
def tiny(request):
    return editable(request.getfixturevalue(request.param))


def test_rome_makes_the_new_object_likely_and_undo_is_bit_identical(tiny, ctx):
    before_params = params_of(tiny)
    new0, true0 = score_targets(tiny, [TINY_REQUEST.prompt] * 2, ["Asia", "Paris"])
    result = apply_edit(tiny, [TINY_REQUEST], "ROME", TINY_HP, ctx)
    new1, true1 = score_targets(tiny, [TINY_REQUEST.prompt] * 2, ["Asia", "Paris"])
    assert new0.prob < 0.01 and new1.prob > 0.5 and new1.nll < true1.nll
    assert result.info["nll_final"] < TINY_HP.stop_nll and result.info["covariance"] == "wiki:600"
    undo(tiny, result)
    after = params_of(tiny)
    assert all(torch.equal(before_params[n], after[n]) for n in before_params)


def test_only_the_edited_matrix_changes_and_the_change_is_rank_one(tiny, ctx):
    before = params_of(tiny)
    result = apply_edit(tiny, [TINY_REQUEST], "ROME", TINY_HP, ctx)
    after = params_of(tiny)
    name = weight_name(tiny, 0)
    assert result.changed == [name]
    assert [n for n in before if not torch.equal(before[n], after[n])] == [name]
    change = after[name].double() - before[name].double()
    s = torch.linalg.svdvals(change)
    assert s[1] < 1e-5 * s[0]  # rank one up to float32 rounding of W + dW
    assert result.info["update_norm"] == pytest.approx(s.norm().item(), rel=1e-4)


def test_the_update_maps_the_key_to_the_new_value():
    """With the r-ROME key, (W + dW) k* = W k* + delta exactly, whatever C is."""
    gen = torch.Generator().manual_seed(0)
    k = torch.randn(12, generator=gen, dtype=torch.float64)
    a = torch.randn(12, 12, generator=gen, dtype=torch.float64)
    cov = a @ a.T + torch.eye(12, dtype=torch.float64)
    delta = torch.randn(5, generator=gen, dtype=torch.float64)
    update = rank_one_update(delta, k, k, cov)  # [5, 12]
    assert torch.allclose(update @ k, delta)
    assert torch.linalg.matrix_rank(update) == 1
    other = torch.randn(12, generator=gen, dtype=torch.float64)
    assert not torch.allclose(rank_one_update(delta, k, other, cov), update)  # the mismatched denominator


def test_key_mismatch_gives_a_different_update(llama, ctx):
    lm = editable(llama)
    name = weight_name(lm, 0)
    w0 = params_of(lm)[name]
    updates = {}
    for mismatch in (False, True):
        hp = dataclasses.replace(TINY_HP, key_mismatch=mismatch, v_steps=5)
        result = apply_edit(lm, [TINY_REQUEST], "ROME", hp, ctx)
        updates[mismatch] = params_of(lm)[name] - w0
        assert result.info["key_mismatch"] is mismatch
        undo(lm, result)
    assert not torch.allclose(updates[False], updates[True])


def test_fast_loop_equals_the_reference_loop(gpt2, ctx):
    lm = editable(gpt2)
    name = weight_name(lm, 0)
    w0 = params_of(lm)[name]
    runs = {}
    for fast in (True, False):
        result = apply_edit(lm, [TINY_REQUEST], "ROME", dataclasses.replace(TINY_HP, fast=fast, v_steps=8), ctx)
        runs[fast] = (params_of(lm)[name] - w0, result.info["edits"][0]["nlls"])
        undo(lm, result)
    assert runs[True][1] == pytest.approx(runs[False][1], abs=1e-3)
    assert torch.allclose(runs[True][0], runs[False][0], rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("model,layer", [("llama", 0), ("llama", 1), ("gpt2", 0)])
@pytest.mark.parametrize("request_", [
    EditRequest("France", "The capital of France is", "Rome Berlin"),  # multi-token target, cached past
    EditRequest("The", "The capital is", "Asia"),  # subject at position 0: nothing to cache
])
def test_packed_objective_equals_the_full_forward_on_any_subset_of_rows(model, layer, request_, request):
    """At either layer of the tiny model: a Llama runs only the blocks after the edited layer (lean), a GPT-2
    every block; both give the full forward's log-probabilities."""
    from compute.editors import rome

    lm = request.getfixturevalue(model)
    rows = rome._rewrite_rows(lm, request_, ("", "Hello there. ")) + [rome._kl_row(lm, request_)]
    fast, reference = rome._PackedObjective(lm, layer, rows), rome._ReferenceObjective(lm, layer, rows)
    assert fast.lean is (model == "llama")
    row_delta = torch.randn(len(rows), 64, generator=torch.Generator().manual_seed(0))
    for active in (torch.ones(len(rows), dtype=torch.bool), torch.tensor([True, False, True])):
        with torch.no_grad():
            (a, keep_a), (b, keep_b) = fast(row_delta, active), reference(row_delta, active)
        # the same scored positions, each listed row by row in column order by both
        assert torch.equal(fast.owner[keep_a], reference.owner[keep_b])
        assert torch.equal(fast.labels[keep_a], reference.labels[keep_b])
        assert torch.allclose(a, b, atol=1e-5)


PACKED_REQUESTS = [  # live lengths from 1 to 6 tokens, prefixes of several lengths, a subject at position 0
    EditRequest("France", "The capital of France is", "Rome Berlin Paris Tokyo"),
    EditRequest("Paris", "Paris is a city in", "Asia"),
    EditRequest("Germany", "The currency of Germany is the", "euro"),
    EditRequest("Tokyo", "What is the continent of Tokyo? Answer:", "Europe Africa"),
]


@pytest.mark.parametrize("model,layer", [("llama", 0), ("llama", 1), ("gpt2", 0)])
def test_packed_objective_bins_many_requests_like_separate_sequences(model, layer, request):
    """Several requests' rows packed into bins: log-probs and their gradients equal the full forward of each
    row, for random subsets of active rows (rows leave the batch as their requests stop)."""
    from compute.editors import rome

    lm = request.getfixturevalue(model)
    rows = []
    for r in PACKED_REQUESTS:
        rows += rome._rewrite_rows(lm, r, ("", "Hello there. ", "The city of the capital is a. ")) + [rome._kl_row(lm, r)]
    packed, reference = rome._PackedObjective(lm, layer, rows), rome._ReferenceObjective(lm, layer, rows)
    assert torch.equal(packed.owner, reference.owner) and torch.equal(packed.labels, reference.labels)
    gen = torch.Generator().manual_seed(1)
    actives = [torch.ones(len(rows), dtype=torch.bool)] + [torch.rand(len(rows), generator=gen) < 0.5 for _ in range(4)]
    for active in actives:
        active[int(torch.randint(len(rows), (1,), generator=gen))] = True  # never empty
        lay = packed.layout(active)
        assert lay.ids.numel() < active.sum() * lay.ids.shape[1] or lay.ids.shape[0] == 1  # packed, not one per row
        grads = []
        for objective in (packed, reference):
            row_delta = torch.randn(len(rows), 64, generator=torch.Generator().manual_seed(2)).requires_grad_()
            logp, keep = objective(row_delta, active)
            assert torch.equal(keep, active[objective.owner])
            (logp.exp() * torch.arange(logp.shape[1])).sum().backward()
            grads.append((logp.detach(), row_delta.grad))
        assert torch.allclose(grads[0][0], grads[1][0], atol=1e-5)
        assert torch.allclose(grads[0][1], grads[1][1], rtol=1e-4, atol=1e-5 * grads[1][1].abs().max().item())
        assert torch.all(grads[0][1][~active] == 0)  # an inactive row's delta is not used


def test_shared_key_value_heads_give_the_same_values_and_are_used_only_while_optimising(llama, monkeypatch):
    """The tiny Llama has 4 query heads on 2 key/value heads. Inside the value optimisation SDPA shares the
    key/value heads (enable_gqa) instead of copying them, with bit-identical values; outside it (evaluation)
    transformers' own choice stands."""
    from compute.editors import rome

    calls = []
    real = torch.nn.functional.scaled_dot_product_attention

    def recording(*args, **kwargs):
        calls.append(bool(kwargs.get("enable_gqa", False)))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording)
    opts = rome.value_options(dataclasses.replace(TINY_HP, v_steps=6))
    runs = {}
    for shared in (True, False):
        monkeypatch.setattr(rome, "SHARED_KV_HEADS", shared)
        calls.clear()
        with rome.edit_mode(llama):
            runs[shared] = rome.optimise_values(llama, 1, PACKED_REQUESTS, ("", "Hello there. "), opts, [1.0] * 4)
        assert calls and all(c is shared for c in calls)
    for a, b in zip(runs[True], runs[False]):
        assert torch.equal(a.delta, b.delta) and a.nlls == b.nlls and a.steps == b.steps
    monkeypatch.setattr(rome, "SHARED_KV_HEADS", True)
    calls.clear()
    with torch.no_grad():
        ids = llama.tokenizer(["The capital of France is", "Hi"], return_tensors="pt", padding=True)
        llama.model(**ids)  # a masked forward outside the optimisation
    assert calls and not any(calls)


def test_the_lean_steps_light_cache_gives_what_dynamic_cache_gives(llama, monkeypatch):
    """The lean path's per-step cache (`_PrefixCache`) hands attention the tensors DynamicCache would, without
    copying the prefix cache first: the values, losses and steps are bit-identical with DynamicCache in its place,
    and it is the one used."""
    from transformers.cache_utils import DynamicCache

    from compute.editors import rome

    opts = rome.value_options(dataclasses.replace(TINY_HP, v_steps=6))
    light = rome._PrefixCache
    made = []

    def dynamic(layers):
        made.append(1)
        return DynamicCache(ddp_cache_data=layers)

    runs = {}
    for name, factory in (("light", light), ("dynamic", dynamic)):
        monkeypatch.setattr(rome, "_PrefixCache", factory)
        with rome.edit_mode(llama):
            runs[name] = rome.optimise_values(llama, 1, PACKED_REQUESTS, ("", "Hello there. "), opts, [1.0] * 4)
    assert made  # the lean path ran, through the cache factory
    for a, b in zip(runs["light"], runs["dynamic"]):
        assert torch.equal(a.delta, b.delta) and a.nlls == b.nlls and a.steps == b.steps


def test_the_loss_picks_give_what_boolean_masks_give_gradients_included():
    """`_Picks` reads the target tokens by (row, label) pairs and the KL rows by index; the former code masked
    logp with booleans (a copy of every target row). Same NLLs, KL rows and gradient of logp, to the bit, here
    with inactive rows (keep) and requests with several target tokens."""
    from compute.editors.rome import _Picks

    torch.manual_seed(0)
    n, V = 3, 50
    labels = torch.tensor([4, 7, -1, 9, -1, 2, 11, -1])  # -1: a KL position
    pos_req = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    weight = torch.rand(8)
    keep = torch.tensor([True, True, True, False, False, True, True, True])  # request 1 stopped
    is_target = labels >= 0
    logits = torch.randn(int(keep.sum()), V, requires_grad=True)
    grads, outs = [], []
    for how in ("picks", "masks"):
        logp = torch.log_softmax(logits, dim=-1)
        if how == "picks":
            nll, kl_logp = _Picks.of(keep, labels, is_target, pos_req, weight).nll_and_kl_logp(logp, n)
        else:
            req, lab, tgt = pos_req[keep], labels[keep], is_target[keep]
            token_nll = -logp[tgt].gather(1, lab[tgt][:, None])[:, 0]
            nll = torch.zeros(n).index_add(0, req[tgt], token_nll * weight[keep][tgt])
            kl_logp = torch.zeros(n, V).index_copy(0, req[~tgt], logp[~tgt])
        loss = nll.sum() + (kl_logp.exp() * kl_logp).sum() * 0.3
        (grad,) = torch.autograd.grad(loss, logits)
        grads.append(grad)
        outs.append((nll.detach(), kl_logp.detach()))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    assert torch.equal(grads[0], grads[1])
    assert outs[0][0][1] == 0 and outs[0][1][1].abs().sum() == 0 and outs[0][0][0] > 0  # the stopped request


def test_edit_restores_gradient_flags_and_training_mode(llama, ctx):
    lm = editable(llama)
    lm.model.train()
    lm.model.lm_head.weight.requires_grad_(True)
    result = apply_edit(lm, [TINY_REQUEST], "ROME", dataclasses.replace(TINY_HP, v_steps=2), ctx)
    assert lm.model.training and lm.model.lm_head.weight.requires_grad
    assert not lm.down_proj(0).weight.requires_grad and lm.down_proj(0).weight.grad is None
    undo(lm, result)


def test_sequential_requests_are_undone_together(llama, ctx):
    lm = editable(llama)
    before = params_of(lm)
    second = EditRequest("Japan", "The capital city of Japan", "German")
    result = apply_edit(lm, [TINY_REQUEST, second], "ROME", TINY_HP, ctx)
    assert len(result.info["edits"]) == 2 and result.changed == [weight_name(lm, 0)]
    undo(lm, result)
    assert all(torch.equal(before[n], p) for n, p in params_of(lm).items())


def test_subject_last_token_uses_offsets(tok):
    ids, last = subject_last_token(tok, "The capital of France is", "France")
    assert tok.decode(ids[: last + 1]).endswith("France")
    assert not tok.decode(ids[: last]).endswith("France")
    prefix = "France wins. "
    ids, last = subject_last_token(tok, prefix + "The capital of France is", "France", len(prefix))
    assert tok.decode(ids[: last + 1]) == prefix + "The capital of France"  # the prompt's, not the prefix's
    with pytest.raises(EditorError, match="'Italy' does not occur"):
        subject_last_token(tok, "The capital of France is", "Italy")


def test_bad_requests_are_refused_with_clear_messages():
    with pytest.raises(ValueError, match="does not occur in the prompt"):
        EditRequest("Italy", "The capital of France is", "Rome")
    with pytest.raises(ValueError, match="new object is empty"):
        EditRequest("France", "The capital of France is", " ")


def test_hyperparameters_are_checked_by_field_name(llama, ctx):
    with pytest.raises(EditorError, match="'v_lr'"):
        parse_hparams(ROMEHyperParams, {"layer": 3, "v_lr": -1.0})
    with pytest.raises(EditorError, match="'n_prefixes'"):
        parse_hparams(ROMEHyperParams, {"layer": 3, "n_prefixes": 99})
    with pytest.raises(EditorError, match="unknown field"):
        parse_hparams(ROMEHyperParams, {"layer": 3, "learning_rate": 0.5})
    with pytest.raises(EditorError, match="'key_mismatch'"):
        parse_hparams(ROMEHyperParams, {"layer": 3, "key_mismatch": "yes"})
    with pytest.raises(EditorError, match="'layer' is 7"):
        apply_edit(llama, [TINY_REQUEST], "ROME", dataclasses.replace(TINY_HP, layer=7), ctx)


def test_prefixes_are_greedy_deterministic_and_cached(llama, tmp_path):
    first = context_prefixes(llama, 3, 4, tmp_path)
    assert first[0] == "" and len(first) == 4 and all(p.endswith(". ") for p in first[1:])
    cached = list((tmp_path / "rome").glob("prefixes-*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text()) == list(first[1:])
    assert context_prefixes(llama, 3, 4, None) == first  # regenerated without the cache: the same text


def test_keys_are_averaged_over_prefixes(llama):
    keys = subject_keys(llama, 0, [TINY_REQUEST], ("", "Hello. "))
    assert tuple(keys.shape) == (1, 2, 128)
    assert not torch.allclose(keys[0, 0], keys[0, 1])  # the prefix changes the key


def test_registry_and_shipped_hyperparameters():
    assert get_editor("rome").hparams is ROMEHyperParams
    hp = load_hparams("ROME", "smollm2-135m")
    assert hp.layer == 3 and hp.key_mismatch is False and hp.use_covariance is True


# --------------------------------------------------------------------------- the embedded default model

def known_facts(lm, kb, n: int = 20, per_relation: int = 10) -> list[tuple[str, str]]:
    """n (plain prompt, object) pairs the model gets exactly right, never about France, taken in turn from
    every relation (capitals of other countries included: the neighbours an edit is likeliest to hit),
    among each relation's most frequent subjects (deterministic)."""
    from compute.relations import RELATIONS

    candidates = []
    for relation in kb.relations():
        facts = [f for f in kb.facts_by_relation(relation) if f.subject != "France"]
        facts.sort(key=lambda f: (-kb.subjects[f.subject].frequency, f.subject, f.object))
        candidates += [(RELATIONS[relation].prompt.format(subject=f.subject), f.object, relation)
                       for f in facts[:per_relation]]
    scores = score_targets(lm, [c[0] for c in candidates], [c[1] for c in candidates])
    known: dict[str, list[tuple[str, str]]] = {}
    for (prompt, obj, relation), score in zip(candidates, scores):
        if score.exact_match:
            known.setdefault(relation, []).append((prompt, obj))
    picked: list[tuple[str, str]] = []
    while len(picked) < n and any(known.values()):
        for relation in sorted(known):
            if known[relation] and len(picked) < n:
                picked.append(known[relation].pop(0))
    return picked


@pytest.mark.model
@pytest.mark.slow
def test_rome_moves_the_capital_of_france_to_rome_on_the_default_model(default_lm, kb):
    from compute.models import default_cache_dir

    lm = default_lm
    prompt = "The capital of France is"
    facts = known_facts(lm, kb)
    assert len(facts) == 20
    before = params_of(lm)
    hp = load_hparams("ROME", "smollm2-135m")
    request = EditRequest("France", prompt, "Rome", "Paris")
    result = apply_edit(lm, [request], "ROME", hp, EditContext(default_cache_dir()))
    try:
        rome_score, paris_score = score_targets(lm, [prompt] * 2, ["Rome", "Paris"])
        kept = sum(s.exact_match for s in score_targets(lm, [p for p, _ in facts], [o for _, o in facts]))
    finally:
        undo(lm, result)
    assert rome_score.nll < paris_score.nll and rome_score.rank == 1
    assert kept >= 16, f"only {kept}/20 known unrelated facts still right after the edit"  # measured: 18
    assert all(torch.equal(before[n], p) for n, p in params_of(lm).items())

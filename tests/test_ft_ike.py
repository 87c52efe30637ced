"""FT-L (constrained fine-tuning) and IKE (in-context editing): their own guarantees, on the tiny models, and
two checks on the embedded default model."""

from __future__ import annotations

import pytest
import torch

import compute.editors  # noqa: F401  (importing the package registers every editor)
from compute.editors import EditContext, EditRequest, apply_edit, load_hparams, undo
from compute.editors.base import weight_name
from compute.editors.ft import FTHyperParams
from compute.editors.ike import IKEHyperParams, build_prefix
from compute.scoring import score_targets
from test_editor_contract import REQUEST, demonstration_cases

OTHER = EditRequest("Japan", "The capital of Japan is", "Madrid", "Tokyo")


def weights(lm) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in lm.model.named_parameters()}


# ---- FT-L -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["llama", "gpt2"])
def test_ft_l_respects_the_l_infinity_bound_and_changes_only_its_matrix(model, request, tmp_path):
    lm = request.getfixturevalue(model)
    eps = 3e-3
    before = weights(lm)
    # lr far above eps: unconstrained Adam would leave the box at the first step, so the clamp is exercised
    hp = FTHyperParams(layer=0, lr=5e-2, steps=5, norm_constraint=eps, stop_nll=0.0)
    result = apply_edit(lm, [REQUEST], "FT-L", hp, EditContext(cache_dir=tmp_path))
    name = weight_name(lm, 0)
    changed = [n for n, p in lm.model.named_parameters() if not torch.equal(p, before[n])]
    assert changed == [name] and result.changed == [name]
    delta = (dict(lm.model.named_parameters())[name].double() - before[name].double()).abs()
    assert delta.max().item() <= eps  # exactly, in real arithmetic on the stored values
    assert delta.max().item() > 0.99 * eps  # the bound was reached, so it was really enforced
    assert result.info["max_abs_change"] == delta.max().item()
    assert result.info["steps"] == 5 and len(result.info["losses"]) == 6


def test_ft_l_stops_once_the_target_nll_is_below_stop_nll(llama, tmp_path):
    before = weights(llama)
    hp = FTHyperParams(layer=1, lr=1e-2, steps=10, norm_constraint=1e-2, stop_nll=1e6)
    result = apply_edit(llama, [REQUEST], "FT-L", hp, EditContext(cache_dir=tmp_path))
    assert result.info["steps"] == 0
    assert all(torch.equal(p, before[n]) for n, p in llama.model.named_parameters())


def test_ft_l_edits_a_batch_of_requests_at_once(llama, tmp_path):
    reqs = [REQUEST, OTHER]
    before = [s.nll for s in score_targets(llama, [r.prompt for r in reqs], [r.target_new for r in reqs])]
    hp = FTHyperParams(layer=1, lr=2e-2, steps=10, norm_constraint=2e-2)
    result = apply_edit(llama, reqs, "FT-L", hp, EditContext(cache_dir=tmp_path))
    after = [s.nll for s in score_targets(llama, [r.prompt for r in reqs], [r.target_new for r in reqs])]
    assert after[0] < before[0] and after[1] < before[1]
    assert result.info["n_texts"] == 2 and result.info["nll_final"] < result.info["nll_start"]


def test_ft_l_trains_on_prefixed_prompts_too(llama, tmp_path):
    hp = FTHyperParams(layer=1, lr=1e-2, steps=2, norm_constraint=1e-2, prefixes=("It is known. ", "Answer: "))
    result = apply_edit(llama, [REQUEST, OTHER], "FT-L", hp, EditContext(cache_dir=tmp_path))
    assert result.info["n_texts"] == 6


def test_ft_l_restores_requires_grad_flags_it_found(llama, tmp_path):
    embed = llama.model.get_input_embeddings().weight
    embed.requires_grad_(True)  # a caller's own flag must survive the edit
    hp = FTHyperParams(layer=1, lr=1e-2, steps=2, norm_constraint=1e-2)
    apply_edit(llama, [REQUEST], "FT-L", hp, EditContext(cache_dir=tmp_path))
    assert embed.requires_grad and embed.grad is None
    assert [n for n, p in llama.model.named_parameters() if p.requires_grad] == ["model.embed_tokens.weight"]


def test_ft_l_is_deterministic(tok, tmp_path):
    from tiny import tiny_llama

    hp = FTHyperParams(layer=1, lr=1e-2, steps=3, norm_constraint=1e-2)
    runs = []
    for _ in range(2):
        lm = tiny_llama(tok)
        apply_edit(lm, [REQUEST], "FT-L", hp, EditContext(cache_dir=tmp_path))
        runs.append(lm.down_proj(1).weight.detach().clone())
    assert torch.equal(runs[0], runs[1])


# ---- IKE ------------------------------------------------------------------------------------------


def many_cases(n: int):
    """n demonstration cases with distinct subjects (from the two hand-made ones, renamed)."""
    from dataclasses import replace

    base = demonstration_cases()
    out = []
    for i in range(n):
        c = base[i % 2]
        subject = f"{c.subject}{i}"
        probes = tuple(replace(p, text=p.text.replace(c.subject, subject)) for p in c.probes)
        out.append(replace(c, case_id=f"capital:{subject}", subject=subject,
                           prompt=c.prompt.replace(c.subject, subject), probes=probes))
    return out


def test_ike_prefix_holds_k_demonstrations_then_the_new_fact():
    hp = IKEHyperParams(n_demonstrations=3, kinds=("copy", "update", "retain"))
    prefix, used = build_prefix([REQUEST], many_cases(6), hp)
    assert prefix.endswith("New Fact: The capital of France is Rome.\nPrompt: ")
    assert prefix.count("New Fact: ") == 4 and len(used) == 3
    assert [d["kind"] for d in used] == ["copy", "update", "retain"]
    blocks = prefix.split("\n\n")[:3]
    copy, update, retain = blocks
    subject = used[0]["case_id"].split(":")[1]
    assert copy.splitlines()[1].startswith(f"Prompt: The capital of {subject} is")
    assert "'s capital is" in update.splitlines()[1]  # a paraphrase, answered with the new object
    new_object = update.splitlines()[0].rsplit(" ", 1)[1]
    assert update.splitlines()[1].endswith(new_object)
    fact_object = retain.splitlines()[0].rsplit(" ", 1)[1]
    assert not retain.splitlines()[1].endswith(fact_object)  # a neighbour keeps its own true object


def test_ike_demonstrations_are_deterministic_by_seed():
    pool = many_cases(12)
    a = build_prefix([REQUEST], pool, IKEHyperParams(n_demonstrations=4, seed=1))
    b = build_prefix([REQUEST], list(reversed(pool)), IKEHyperParams(n_demonstrations=4, seed=1))
    c = build_prefix([REQUEST], pool, IKEHyperParams(n_demonstrations=4, seed=2))
    assert a == b  # the order of the pool does not matter
    assert [d["case_id"] for d in a[1]] != [d["case_id"] for d in c[1]]


def test_ike_nearest_prefers_demonstrations_of_the_same_relation():
    from compute.cases import EditCase

    capital = many_cases(3)
    currency = [
        EditCase(f"currency:C{i}", "tiny", "kb", "currency", f"C{i}", f"The currency of C{i} is", "euro", (), "yen", ())
        for i in range(6)
    ]
    hp = IKEHyperParams(n_demonstrations=3, nearest=True)
    _, used = build_prefix([REQUEST], currency + capital, hp)
    assert sorted(d["case_id"] for d in used) == sorted(c.case_id for c in capital)


def test_ike_kinds_given_as_a_list_are_kept_as_a_tuple():
    assert IKEHyperParams(kinds=["copy", "retain"]).kinds == ("copy", "retain")


def test_ike_never_demonstrates_the_requested_subject():
    pool = demonstration_cases()  # Spain and Italy
    request = EditRequest("Spain", "The capital of Spain is", "Paris", "Madrid")
    prefix, used = build_prefix([request], pool, IKEHyperParams(n_demonstrations=5))
    assert [d["case_id"] for d in used] == ["capital:Italy"]
    assert prefix.count("Spain") == 1


def test_ike_never_shows_a_fact_about_the_requested_subject():
    from dataclasses import replace

    spain, italy = demonstration_cases()
    # Italy's neighbour becomes France: "The capital of France is Paris." would contradict the edit
    probes = tuple(
        replace(p, text="The capital of France is", target_true="Paris") if p.rephrase_type == "neighbourhood" else p
        for p in italy.probes
    )
    pool = [replace(italy, probes=probes), replace(spain, prompt="The capital of Spain, next to France, is")]
    prefix, used = build_prefix([REQUEST], pool, IKEHyperParams(n_demonstrations=5, kinds=("retain",)))
    assert [d["case_id"] for d in used] == ["capital:Italy"] and used[0]["kind"] == "copy"
    assert prefix.count("France") == 1


def test_ike_without_demonstrations_states_just_the_new_facts():
    prefix, used = build_prefix([REQUEST, OTHER], (), IKEHyperParams(n_demonstrations=8))
    assert used == []
    assert prefix == (
        "New Fact: The capital of France is Rome.\nNew Fact: The capital of Japan is Madrid.\nPrompt: "
    )


def test_ike_falls_back_to_copy_without_paraphrases_or_neighbours():
    from dataclasses import replace

    bare = [replace(c, probes=()) for c in demonstration_cases()]
    _, used = build_prefix([REQUEST], bare, IKEHyperParams(n_demonstrations=2, kinds=("update", "retain")))
    assert [d["kind"] for d in used] == ["copy", "copy"]


# ---- the embedded default model -------------------------------------------------------------------


@pytest.mark.model
def test_ike_makes_rome_the_capital_of_france_without_touching_weights(default_lm, builder, tmp_path):
    before = weights(default_lm)
    hp = load_hparams("IKE", "smollm2-135m")
    pool = builder.build(2 * hp.n_demonstrations, seed=0, relations=["capital"])
    ctx = EditContext(cache_dir=tmp_path, demonstrations=pool)
    result = apply_edit(default_lm, [REQUEST], "IKE", hp, ctx)
    prompt = result.prefix + REQUEST.prompt
    rome, paris = score_targets(default_lm, [prompt, prompt], ["Rome", "Paris"])
    assert rome.nll < paris.nll
    assert all(torch.equal(p, before[n]) for n, p in default_lm.model.named_parameters())


@pytest.mark.model
def test_ft_l_with_shipped_hparams_makes_rome_the_capital_of_france(default_lm, tmp_path):
    before = weights(default_lm)
    hp = load_hparams("FT-L", "smollm2-135m")
    result = apply_edit(default_lm, [REQUEST], "FT-L", hp, EditContext(cache_dir=tmp_path))
    try:
        rome, paris = score_targets(default_lm, [REQUEST.prompt] * 2, ["Rome", "Paris"])
        assert rome.nll < paris.nll, result.info
        assert result.info["max_abs_change"] <= hp.norm_constraint
    finally:
        undo(default_lm, result)  # the session-wide model must leave this test unedited
    assert all(torch.equal(p, before[n]) for n, p in default_lm.model.named_parameters())

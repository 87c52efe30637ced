"""The editor contract (compute/editors/base.py), checked for EVERY registered editor on the tiny models.

An editor registered without an entry in FACTORIES fails here on purpose: add a factory that builds small
hyperparameters for the tiny 2-layer models.
"""

from __future__ import annotations

import pytest
import torch

import compute.editors  # noqa: F401  (importing the package registers every editor)
from compute.cases import NEIGHBOURHOOD, EditCase, Probe
from compute.editors import EDITORS, EditContext, EditorError, EditRequest, apply_edit, get_editor, undo
from compute.scoring import score_targets

REQUEST = EditRequest("France", "The capital of France is", "Rome", "Paris", case_id="capital:France")


# ROME and MEMIT set a value at the subject's last token, so the edited layer must have a layer above it
# whose attention carries that value to the prompt's last token: layer 0 of the 2-layer tiny models.
def _rome(ed, lm):
    return ed.hparams(layer=0, v_steps=8, n_prefixes=2, prefix_tokens=3, use_covariance=False)


def _memit(ed, lm):
    # lam is small because the tiny context's C is the identity, not the (large) statistics of real keys
    return ed.hparams(layers=(0,), lam=1.0, v_steps=8, n_prefixes=2, prefix_tokens=3)


# editor name -> (editor, tiny LoadedModel) -> hyperparameters small enough for the 2-layer tiny models
FACTORIES = {
    "FT-L": lambda ed, lm: ed.hparams(layer=1, lr=2e-2, steps=10, norm_constraint=2e-2),
    "IKE": lambda ed, lm: ed.hparams(n_demonstrations=2, seed=0),
    "ROME": _rome,
    "MEMIT": _memit,
    # the identity covariance has a flat spectrum: half its energy is a null space of half the dimensions
    "AlphaEdit": lambda ed, lm: ed.hparams(layers=(0,), nullspace_energy=0.5, l2=0.1, v_steps=8, n_prefixes=2,
                                           prefix_tokens=3),
}


def demonstration_cases() -> tuple[EditCase, ...]:
    """Two hand-made cases (with paraphrase and neighbourhood probes) for in-context editors."""

    def case(subject, true, new, neighbour, neighbour_true):
        prompt = f"The capital of {subject} is"
        probes = (
            Probe("paraphrase", f"{subject}'s capital is", true, new),
            Probe(NEIGHBOURHOOD, f"The capital of {neighbour} is", neighbour_true, new),
        )
        return EditCase(
            f"capital:{subject}", "tiny", "kb", "capital", subject, prompt, true, (), new, (), probes=probes
        )

    return (case("Spain", "Madrid", "Berlin", "Japan", "Tokyo"), case("Italy", "Rome", "Tokyo", "Germany", "Berlin"))


def tiny_context(lm, tmp_path) -> EditContext:
    """A context whose covariance is the identity, so C-weighted editors need no corpus on the tiny models."""

    def covariance(layer: int) -> torch.Tensor:
        weight = lm.down_proj(layer).weight
        d_in = weight.shape[0] if lm.arch.down_proj_transposed else weight.shape[1]
        return torch.eye(d_in, dtype=torch.float64)

    return EditContext(cache_dir=tmp_path, covariance=covariance, demonstrations=demonstration_cases())


def hparams_for(name: str, lm):
    ed = get_editor(name)
    if name not in FACTORIES:
        pytest.fail(f"editor {name!r} has no entry in FACTORIES of {__file__}: add one that builds small "
                    "hyperparameters for the tiny 2-layer models")
    return FACTORIES[name](ed, lm)


def weights(lm) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in lm.model.named_parameters()}


EDITOR_NAMES = sorted(EDITORS)


def test_the_package_registers_ft_l_and_ike():
    assert {"FT-L", "IKE"} <= set(EDITORS)


@pytest.mark.parametrize("name", EDITOR_NAMES)
def test_edit_raises_the_new_objects_probability(name, llama, tmp_path):
    ed = get_editor(name)
    before = score_targets(llama, [REQUEST.prompt], [REQUEST.target_new])[0].nll
    result = apply_edit(llama, [REQUEST], name, hparams_for(name, llama), tiny_context(llama, tmp_path))
    after = score_targets(llama, [result.prefix + REQUEST.prompt], [REQUEST.target_new])[0].nll
    assert after < before, (name, before, after)
    assert result.editor == ed.name and result.requests == (REQUEST,)
    assert isinstance(result.info.get("seconds"), float)


@pytest.mark.parametrize("model", ["llama", "gpt2"])
@pytest.mark.parametrize("name", EDITOR_NAMES)
def test_undo_is_bit_identical(name, model, request, tmp_path):
    lm = request.getfixturevalue(model)
    ed = get_editor(name)
    before = weights(lm)
    result = apply_edit(lm, [REQUEST], name, hparams_for(name, lm), tiny_context(lm, tmp_path))
    changed = [n for n, p in lm.model.named_parameters() if not torch.equal(p, before[n])]
    if ed.changes_weights:
        assert changed, f"{name} changed no weight"
        assert set(changed) <= set(result.originals), "a changed weight is missing from originals"
    else:
        assert changed == [] and result.originals == {}
    undo(lm, result)
    for n, p in lm.model.named_parameters():
        assert torch.equal(p, before[n]), f"{name}: {n} differs after undo"


@pytest.mark.parametrize("name", EDITOR_NAMES)
def test_edit_leaves_no_gradients_and_eval_mode(name, llama, tmp_path):
    apply_edit(llama, [REQUEST], name, hparams_for(name, llama), tiny_context(llama, tmp_path))
    assert not any(p.requires_grad for p in llama.model.parameters())
    assert not any(p.grad is not None for p in llama.model.parameters())
    assert not llama.model.training


@pytest.mark.parametrize("name", [n for n in EDITOR_NAMES if not EDITORS[n].changes_weights])
def test_in_context_editors_leave_every_weight_untouched(name, llama, tmp_path):
    before = weights(llama)
    result = apply_edit(llama, [REQUEST], name, hparams_for(name, llama), tiny_context(llama, tmp_path))
    assert result.originals == {} and result.prefix
    assert all(torch.equal(p, before[n]) for n, p in llama.model.named_parameters())


def test_unknown_editor_is_refused_listing_the_known_names():
    with pytest.raises(EditorError) as err:
        get_editor("no-such-editor")
    for name in EDITORS:
        assert name in str(err.value)


def test_apply_edit_with_an_unknown_name_is_refused(llama, tmp_path):
    hp = FACTORIES["FT-L"](get_editor("FT-L"), llama)
    with pytest.raises(EditorError, match="unknown editor 'nope'"):
        apply_edit(llama, [REQUEST], "nope", hp, tiny_context(llama, tmp_path))


def test_editor_names_are_case_insensitive():
    assert get_editor("ft-l").name == "FT-L" and get_editor("ike").name == "IKE"


def test_request_whose_prompt_lacks_the_subject_is_refused():
    with pytest.raises(ValueError, match="'Spain' does not occur in the prompt"):
        EditRequest("Spain", "The capital of France is", "Rome")


@pytest.mark.parametrize("new", ["", "   "])
def test_request_with_an_empty_new_object_is_refused(new):
    with pytest.raises(ValueError, match="the new object is empty"):
        EditRequest("France", "The capital of France is", new)


def test_wrong_hyperparameter_class_is_refused(llama, tmp_path):
    hp = FACTORIES["IKE"](get_editor("IKE"), llama)
    with pytest.raises(EditorError, match="FT-L needs FTHyperParams"):
        apply_edit(llama, [REQUEST], "FT-L", hp, tiny_context(llama, tmp_path))

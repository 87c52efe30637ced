"""AlphaEdit's null-space update and RECT's sparsification, checked on their maths and on the tiny model."""

from __future__ import annotations

import pytest
import torch

from compute.editors import EditContext, EditRequest, apply_edit, get_editor
from compute.editors.alphaedit import alphaedit_update, commit_alphaedit, nullspace_basis
from compute.editors.rome import rect_sparsify
from compute.scoring import score_targets


def _spd(d: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    scales = torch.logspace(0, -4, d, dtype=torch.float64)  # a decaying spectrum, like real keys
    q, _ = torch.linalg.qr(a)
    return (q * scales) @ q.T


def test_nullspace_basis_holds_at_most_the_energy_share():
    cov = _spd(40)
    u = nullspace_basis(cov, 0.05)
    vals = torch.linalg.eigvalsh(cov)
    assert torch.allclose(u.T @ u, torch.eye(u.shape[1], dtype=torch.float64), atol=1e-10)
    held = torch.trace(u.T @ cov @ u) / torch.trace(cov)
    assert held <= 0.05 + 1e-12
    # and it is the largest such set: one more eigen-direction would exceed the share
    assert vals[: u.shape[1] + 1].sum() / vals.sum() > 0.05


def test_nullspace_basis_refuses_an_energy_below_every_direction():
    with pytest.raises(ValueError, match="raise nullspace_energy"):
        nullspace_basis(torch.eye(4, dtype=torch.float64), 0.1)


def test_alphaedit_update_lies_in_the_null_space_and_protects_kept_keys():
    d_in, d_out = 30, 12
    cov = _spd(d_in, 1)
    u = nullspace_basis(cov, 0.1)
    g = torch.Generator().manual_seed(2)
    keys, residual = torch.randn(3, d_in, generator=g), torch.randn(3, d_out, generator=g)
    upd = alphaedit_update(keys, residual, u, None, l2=1e-6)
    complement = torch.eye(d_in, dtype=torch.float64) - u @ u.T
    assert torch.allclose(upd @ complement, torch.zeros_like(upd), atol=1e-9)  # dW = dW P
    # with a tiny l2 the projected keys are fitted: dW k_i = r_i
    assert torch.allclose(upd @ keys.double().T, residual.double().T, atol=1e-4)
    # a kept edit's key: with its statistics in the system the new update barely moves it
    kept_key = torch.randn(1, d_in, generator=g, dtype=torch.float64)
    free = alphaedit_update(keys, residual, u, None, l2=1.0)
    guarded = alphaedit_update(keys, residual, u, 1e4 * kept_key.T @ kept_key, l2=1.0)
    assert (guarded @ kept_key.T).norm() < 0.05 * (free @ kept_key.T).norm()


def test_alphaedit_commit_accumulates_the_kept_keys(llama, tmp_path):
    from test_editor_contract import FACTORIES, tiny_context

    ctx = tiny_context(llama, tmp_path)
    hp = FACTORIES["AlphaEdit"](get_editor("AlphaEdit"), llama)
    r1 = apply_edit(llama, [EditRequest("France", "The capital of France is", "Rome", "Paris")], "AlphaEdit", hp, ctx)
    assert ctx.state == {}  # applying alone remembers nothing: an undone edit leaves no trace
    commit_alphaedit(ctx, r1)
    keys = r1.memory["keys"][0].double()
    assert ctx.state["AlphaEdit"]["n"] == 1
    assert torch.allclose(ctx.state["AlphaEdit"][0], keys.T @ keys)
    r2 = apply_edit(llama, [EditRequest("Spain", "The capital of Spain is", "Tokyo", "Madrid")], "AlphaEdit", hp, ctx)
    assert r2.info["kept_edits"] == 1
    get_editor("AlphaEdit").commit(ctx, r2)
    assert ctx.state["AlphaEdit"]["n"] == 2


def test_rect_keeps_the_top_share_by_relative_change():
    weight = torch.tensor([[1.0, 10.0], [0.5, 2.0]])
    update = torch.tensor([[0.5, 1.0], [0.4, 0.1]])  # relative: 0.5, 0.1, 0.8, 0.05
    kept = rect_sparsify(update, weight, 0.5)
    assert torch.equal(kept, torch.tensor([[0.5, 0.0], [0.4, 0.0]]))
    assert torch.equal(rect_sparsify(update, weight, 1.0), update)
    assert int((rect_sparsify(update, weight, 0.25) != 0).sum()) == 1


def test_rome_with_rect_changes_only_the_top_share_and_still_edits(llama, tmp_path):
    from test_editor_contract import FACTORIES, tiny_context

    import dataclasses

    hp = dataclasses.replace(FACTORIES["ROME"](get_editor("ROME"), llama), rect_top=0.4)
    req = EditRequest("France", "The capital of France is", "Rome", "Paris")
    before = score_targets(llama, [req.prompt], [req.target_new])[0].nll
    result = apply_edit(llama, [req], "ROME", hp, tiny_context(llama, tmp_path))
    (name,) = result.originals
    changed = dict(llama.model.named_parameters())[name].detach() != result.originals[name]
    assert 0 < changed.double().mean() <= 0.4 + 1e-4
    assert result.info["edits"][0]["rect_top"] == 0.4
    assert score_targets(llama, [req.prompt], [req.target_new])[0].nll < before


@pytest.mark.parametrize("value", [0, 1.5, True])
def test_rect_top_out_of_range_is_refused(value):
    from compute.editors.base import EditorError, parse_hparams
    from compute.editors.rome import ROMEHyperParams

    with pytest.raises(EditorError, match="rect_top"):
        parse_hparams(ROMEHyperParams, {"layer": 1, "rect_top": value})

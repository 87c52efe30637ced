"""AlphaEdit: MEMIT with the update confined to the null space of the preserved knowledge (Fang et al. 2025).

MEMIT trades new facts against preserved keys through lam * C in its least-squares system; in a long
sequential run the updates still pile up on the directions that unedited text uses. AlphaEdit instead
restricts every update to directions that the preserved keys (hardly) occupy, so that to first order
it cannot change what the layer outputs for them.

Null space. C = E[k k^T] over Wikipedia text (compute.covariance, the statistics ROME and MEMIT use) has
eigenvalues e_1 <= ... <= e_d with eigenvectors u_j. A 135M model's key covariance has no exact null
space (its spectrum decays smoothly; at layer 3 of SmolLM2 no eigenvalue is below 1e-3 of the largest),
so the basis U [d_in, m] takes the smallest eigen-directions whose eigenvalues together hold at most the
share `nullspace_energy` of trace(C): for preserved keys k, E||U^T k||^2 <= nullspace_energy * E||k||^2.
(The AlphaEdit code thresholds the eigenvalues at an absolute 1e-2; an energy share does not depend on
the scale of a model's keys.) P = U U^T.

Update. Every update has the form dW = Z U^T (so dW k = Z U^T k is ~0 for preserved keys). For the
batch's keys K [N, d_in] and residuals R [N, d_out] at a layer (MEMIT's spreading, shared through
compute.editors.memit.spread_edit), and Kp the keys of the edits this run has already kept at that layer,

    minimise  sum_i ||Z U^T k_i - r_i||^2  +  l2 ||Z||^2  +  sum_p ||Z U^T k_p||^2

(fit the new facts; keep the update small; do not disturb earlier edits). Setting the gradient to zero,

    Z A = R^T K U,   A = U^T (K^T K + Kp^T Kp) U + l2 I   (m x m, symmetric positive definite),

solved in float64. This is the paper's closed form dW P = R K^T P (Kp Kp^T P + K K^T P + I)^-1 (keys as
columns there) written in the null-space coordinates, where it is exact and the system is m x m.

Memory across edits: a kept edit's keys are folded into ctx.state["AlphaEdit"][layer] = sum_p k_p k_p^T
by `commit` (a sequential runner calls it; an edit that is undone is never committed).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from compute.editors.base import EditContext, Editor, EditorError, check_finite, EditRequest, EditResult, register
from compute.editors.memit import SPREAD_KEY_CONSTRAINTS, fit_exactly, spread_edit
from compute.editors.rome import check_key_constraint, check_value_fields
from compute.models import LoadedModel

NAME = "AlphaEdit"


@dataclass(frozen=True)
class AlphaEditHyperParams:
    """Hyperparameters of AlphaEdit; hparams/AlphaEdit/<model>.json says where each value comes from.

    The layers and the value optimisation are MEMIT's on the same model; l2 is the paper's identity weight.
    """

    layers: tuple[int, ...]
    nullspace_energy: float = 0.02  # share of trace(C) the null-space basis may hold (module docstring)
    l2: float = 1.0  # weight of ||Z||^2
    v_lr: float = 0.5
    v_steps: int = 25
    kl_weight: float = 0.0625
    v_weight_decay: float = 0.5
    clamp_norm_factor: float = 0.75
    n_prefixes: int = 10
    prefix_tokens: int = 8
    stop_nll: float = 0.05
    cov_n_tokens: int = 20_000
    fast: bool = True
    key_constraint: str = "all"  # as MEMIT's: all, mean, balanced, reach or plain (compute.editors.memit)

    def validate(self) -> None:
        check_finite(NAME, self)
        check_key_constraint(NAME, self, SPREAD_KEY_CONSTRAINTS)
        layers = self.layers
        if (
            not isinstance(layers, tuple)
            or not layers
            or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in layers)
        ):
            raise EditorError(f"AlphaEdit field 'layers' must be a non-empty list of non-negative integers, got {layers!r}")
        if len(set(layers)) != len(layers):
            raise EditorError(f"AlphaEdit field 'layers' lists a layer twice: {list(layers)}")
        for name, low, high in (("nullspace_energy", 0.0, 1.0), ("l2", 0.0, 1e30)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value <= high:
                raise EditorError(f"AlphaEdit field {name!r} must be a number in ({low}, {high}], got {value!r}")
        check_value_fields(NAME, self)

    def __post_init__(self):
        if isinstance(self.layers, list):
            object.__setattr__(self, "layers", tuple(self.layers))
        self.validate()


# (id of the covariance tensor, energy) -> (the tensor, kept so the id stays its own, basis U [d_in, m])
_BASES: dict[tuple[int, float], tuple[torch.Tensor, torch.Tensor]] = {}


def nullspace_basis(cov: torch.Tensor, energy: float) -> torch.Tensor:
    """U [d_in, m] (float64): the smallest eigen-directions of cov holding at most `energy` of its trace."""
    key = (id(cov), float(energy))
    hit = _BASES.get(key)
    if hit is not None and hit[0] is cov:
        return hit[1]
    vals, vecs = torch.linalg.eigh(cov.double())  # ascending
    vals = vals.clamp(min=0)
    share = torch.cumsum(vals, 0) / vals.sum().clamp(min=1e-300)
    m = int((share <= energy).sum())
    if m == 0:
        raise EditorError(
            f"AlphaEdit: no eigen-direction of the key covariance holds less than nullspace_energy={energy} "
            "of its energy; raise nullspace_energy"
        )
    basis = vecs[:, :m].contiguous()
    if len(_BASES) > 32:
        _BASES.clear()
    _BASES[key] = (cov, basis)
    return basis


def alphaedit_update(
    keys: torch.Tensor, residual: torch.Tensor, basis: torch.Tensor, kept: torch.Tensor | None, l2: float,
    exact: torch.Tensor | None = None,
) -> torch.Tensor:
    """dW = Z U^T [d_out, d_in] (float64) for keys [N, d_in], residuals [N, d_out], null-space basis U
    [d_in, m] and kept = sum_p k_p k_p^T [d_in, d_in] of earlier edits (or None): Z A = R^T K U.
    `exact` (row indices): Z U^T k = r holds exactly on those rows (`fit_exactly` in null-space coordinates)."""
    k = keys.double() @ basis  # [N, m] = K U
    system = k.T @ k + l2 * torch.eye(basis.shape[1], dtype=torch.float64, device=basis.device)  # [m, m]
    if kept is not None:
        system = system + basis.T @ kept.double().to(basis.device) @ basis
    z_t = torch.linalg.solve(system, k.T @ residual.double())  # [m, d_out] = Z^T
    if exact is not None:
        z_t = fit_exactly(z_t.T, system, k[exact], residual.double()[exact]).T
    return (basis @ z_t).T  # [d_out, d_in]


def _kept(ctx: EditContext, layer: int) -> torch.Tensor | None:
    return ctx.state.get(NAME, {}).get(layer)


def apply_alphaedit(
    lm: LoadedModel, requests: list[EditRequest], hp: AlphaEditHyperParams, ctx: EditContext
) -> EditResult:
    dims = {}

    def solve(layer, keys, residual, cov, exact):
        basis = nullspace_basis(cov(layer), hp.nullspace_energy)
        dims[layer] = basis.shape[1]
        return alphaedit_update(keys, residual, basis, _kept(ctx, layer), hp.l2, exact)

    def reach(layer, keys, cov):  # a lone key gets g / (l2 + g) of its change, g = ||U^T k||^2
        return ((keys.double() @ nullspace_basis(cov(layer), hp.nullspace_energy)) ** 2).sum(dim=1)

    result = spread_edit(lm, requests, hp, ctx, NAME, solve,
                         {"nullspace_energy": hp.nullspace_energy, "l2": hp.l2,
                          "kept_edits": int(ctx.state.get(NAME, {}).get("n", 0))}, reach=reach)
    result.info["nullspace_dims"] = {str(k): v for k, v in dims.items()}
    return result


def commit_alphaedit(ctx: EditContext, result: EditResult) -> None:
    """Fold a kept edit's keys into ctx.state["AlphaEdit"]: layer -> sum_p k_p k_p^T (float64), "n" -> count."""
    memory = ctx.state.setdefault(NAME, {})
    for layer, keys in result.memory.get("keys", {}).items():
        k = keys.double()
        memory[layer] = memory.get(layer, 0) + k.T @ k
    memory["n"] = int(memory.get("n", 0)) + len(result.requests)


register(
    Editor(
        name=NAME,
        mass=True,
        hparams=AlphaEditHyperParams,
        apply=apply_alphaedit,
        description="MEMIT with the update projected onto the preserved keys' null space (AlphaEdit)",
        commit=commit_alphaedit,
    )
)

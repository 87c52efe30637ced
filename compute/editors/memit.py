"""MEMIT: many facts at once, spread over the MLP down-projections of several layers (Meng et al. 2023).

For a batch of N requests and critical layers l_1 < ... < l_L:

1. Target values. At the last layer l_L, ROME's value optimisation (`compute.editors.rome.optimise_values`,
   shared, not copied) finds for each request a delta on the residual stream at the subject's last token
   (added to l_L's down-projection output, which is the same point of the stream) that makes the model
   say the new object. The target is z_i = h_i + delta_i, with h_i the residual stream after block l_L at
   that token, averaged over the same context prefixes as the keys; the clamp and the weight decay are
   relative to ||h_i|| (MEMIT's choice; ROME's are relative to the MLP output).
2. Spreading. For each layer l in ascending order: K [N, d_in] = the prefix-averaged keys (down-projection
   inputs at the subject's last token) on the model as edited so far; the residual R = (z - h_current) /
   (number of layers left, this one included); the update

       dW = R^T K (lam * C + K^T K)^-1        ([d_out, d_in]; C = E[k k^T] over Wikipedia text)

   computed with a float64 solve (no explicit inverse), applied, and the keys and h recomputed for the
   next layer, whose keys the update has moved.

lam ("mom2_update_weight" in the MEMIT code) trades the batch's edits against the preserved keys; design.md
measured that GPT-J's 15000 lets only 2 of 10 edits take on SmolLM2-135M while 500 lets all 10 take.

Which keys (`key_constraint`; the paper's is "mean", the prefix-averaged key above). EditScope fits every key
the value was optimised on, the bare prompt's and each prefixed one's, as rows of the least squares ("all").
A least-squares row is a trade, not a promise: a lone key k receives g / (lam + g) of its change, g = k^T C^-1 k,
and where the subject's last token is the sequence's first or second (SmolLM2 adds no BOS: "Louga is a city
in"), the bare prompt's key from layer 3 on is nearly zero (g ~ 50 against lam = 2000), so the prompt the edit
was asked for got about half of its change. "plain" (the default) keeps "all"'s rows and adds ROME's equality
constraint for each request's plain prompt: at every layer its row is delivered exactly (`fit_exactly`), and
its residual is spread over the layers by how well each reaches its key (`layer_share`), so the layers where
that key is near zero are asked for little of it. The last layer closes what is left, so the plain prompt's
output at the last layer moves by exactly its optimised delta. Measured against "all" on subject-initial
prompts and on the calibration cases: hparams/MEMIT/smollm2-135m.json, `_source`.

Invariant: apply then `undo(lm, result)` leaves every parameter bit-identical (all L matrices are
snapshotted before the first change); parameters' `requires_grad` flags and the train/eval mode are restored.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from compute.editors.base import (
    check_finite,
    EditContext,
    Editor,
    EditorError,
    EditRequest,
    EditResult,
    register,
    snapshot,
    weight_name,
)
from compute.editors.rome import (
    check_key_constraint,
    add_to_down_proj,
    check_value_fields,
    context_prefixes,
    covariance_for,
    edit_mode,
    optimise_values,
    subject_block_outputs,
    subject_keys,
    value_options,
)
from compute.models import LoadedModel

NAME = "MEMIT"
SPREAD_KEY_CONSTRAINTS = ("all", "mean", "balanced", "reach", "plain")  # spread_edit's; ROME's own "all" is exact already
VALUE_CHUNK = 32  # requests whose values are optimised in one batch of forward passes


@dataclass(frozen=True)
class MEMITHyperParams:
    """Hyperparameters of MEMIT; hparams/MEMIT/<model>.json says where each value comes from.

    Value-optimisation defaults are the MEMIT paper's GPT-J settings (lr 0.5, 25 steps, KL 0.0625, decay 0.5,
    clamp 0.75 of the residual norm); lam 500 is design.md's measurement on SmolLM2-135M.
    """

    layers: tuple[int, ...]  # critical layers, edited in ascending order; targets are set at the last
    lam: float = 500.0  # weight of the preserved keys' statistics C against the new keys
    v_lr: float = 0.5
    v_steps: int = 25
    kl_weight: float = 0.0625
    v_weight_decay: float = 0.5
    clamp_norm_factor: float = 0.75  # ||delta|| <= clamp_norm_factor * ||residual stream||
    n_prefixes: int = 10
    prefix_tokens: int = 8
    stop_nll: float = 0.05
    cov_n_tokens: int = 20_000
    fast: bool = True
    key_constraint: str = "all"  # "all": fit every key the value optimisation used; "mean": the prefix-mean key;
    # "balanced": every key, each row weighted so that every key reaches the fit alike (spread_edit); "reach":
    # balanced, and each prompt's residual spread over the layers in proportion to what each layer can deliver to it;
    # "plain": every key as "all", the plain prompt's key fitted exactly (spread_edit)

    def validate(self) -> None:
        """Refuse values that cannot describe an edit, naming the field."""
        check_finite(NAME, self)
        check_key_constraint(NAME, self, SPREAD_KEY_CONSTRAINTS)
        layers = self.layers
        if (
            not isinstance(layers, tuple)
            or not layers
            or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in layers)
        ):
            raise EditorError(f"MEMIT field 'layers' must be a non-empty list of non-negative integers, got {layers!r}")
        if len(set(layers)) != len(layers):
            raise EditorError(f"MEMIT field 'layers' lists a layer twice: {list(layers)}")
        if isinstance(self.lam, bool) or not isinstance(self.lam, (int, float)) or not self.lam > 0:
            raise EditorError(f"MEMIT field 'lam' must be > 0, got {self.lam!r}")
        check_value_fields(NAME, self)

    def __post_init__(self):
        if isinstance(self.layers, list):
            object.__setattr__(self, "layers", tuple(self.layers))
        self.validate()


def fit_exactly(update: torch.Tensor, system: torch.Tensor, keys: torch.Tensor, residual: torch.Tensor,
                ridge: float = 1e-6) -> torch.Tensor:
    """The least-squares update [d_out, d_in] (float64) of a quadratic tr(X S X^T) - 2 tr(X Q^T) whose
    unconstrained minimiser is `update` (X S = Q, S = `system` [d_in, d_in], symmetric positive definite),
    constrained to deliver residual [n, d_out] exactly on keys [n, d_in]: X k_j = r_j.

    Lagrange: X = X_u + (R^T - X_u K^T) (K S^-1 K^T)^-1 K S^-1. It is ROME's equality constraint inside
    MEMIT's (or AlphaEdit's) objective: the constrained keys get their change in full, whatever their size,
    and the other rows keep the least-squares trade-off. A tiny ridge, relative to each key's own diagonal entry
    of the Gram matrix (keys of very different reach are fitted alike), keeps nearly collinear keys solvable.
    More keys than the space they live in (n > d_in: AlphaEdit's null-space coordinates hold 176-633 dimensions
    per layer on SmolLM2-135M) cannot all be met; the ridge would return a compromise that delivers none of them
    exactly, not what "plain" promises, so that is refused."""
    n, dim = keys.shape
    if n > dim:
        raise EditorError(
            f"key_constraint 'plain' asks {n} plain prompts to be delivered exactly in a key space of {dim} "
            f"dimensions, which cannot hold them all: edit at most {dim} requests at once with it, or use "
            "key_constraint 'all' for a larger batch")
    k = keys.double()
    s_inv_kt = torch.linalg.solve(system, k.T)  # [d_in, n]
    gram = k @ s_inv_kt  # [n, n]
    gram = gram + ridge * torch.diag(gram.diagonal())
    miss = residual.double() - k @ update.T  # [n, d_out]
    return update + (s_inv_kt @ torch.linalg.solve(gram, miss)).T


def memit_update(keys: torch.Tensor, residual: torch.Tensor, cov: torch.Tensor, lam: float,
                 exact: torch.Tensor | None = None) -> torch.Tensor:
    """MEMIT's least-squares update [d_out, d_in] (float64) for keys [N, d_in] and residuals [N, d_out]:
    dW = R^T K (lam C + K^T K)^-1, from one solve of the symmetric system (lam C + K^T K) X = K^T R.
    `exact` (row indices): those rows are delivered in full (`fit_exactly`), the rest as before."""
    k = keys.double()
    system = lam * cov.double() + k.T @ k  # [d_in, d_in]
    x = torch.linalg.solve(system, k.T @ residual.double())  # [d_in, d_out]
    if exact is None:
        return x.T
    return fit_exactly(x.T, system, k[exact], residual.double()[exact])


def memit_reach(keys: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """g = k^T C^-1 k per key [N] (float64): a lone key k gets g / (lam + g) of its change from MEMIT's update,
    since R K^T (lam C + K K^T)^-1 = R (lam I + K^T C^-1 K)^-1 K^T C^-1 (keys as columns)."""
    k = keys.double()
    return (k * torch.linalg.solve(cov.double(), k.T).T).sum(dim=1)


def balance_rows(keys: torch.Tensor, residual: torch.Tensor, reach: torch.Tensor):
    """Weight each least-squares row (key and residual) by sqrt(median(g) / g), g = the solve's `reach` of that
    key, so that every key counts in the fit as a key of the batch's median reach does: a key the solve hardly
    reaches (small g: a subject-initial prompt's key, close to the directions ordinary text's keys fill) is no
    longer traded away against lam C (MEMIT) or l2 (AlphaEdit). Keys of median reach keep their weight."""
    g = reach.double().clamp(min=1e-300)
    w = (g.median() / g).sqrt().to(keys.dtype)[:, None]
    return keys * w, residual * w.to(residual.dtype)


def layer_share(reach_by_layer: torch.Tensor, i: int) -> torch.Tensor:
    """The share of what is left of each prompt's residual [M] that layer i (of L) takes with key_constraint
    "reach": its reach of that prompt's key over the reach of the layers left, reach_by_layer [L, M]. A key every
    layer reaches alike gets 1 / (L - i), MEMIT's even spread; one that the later layers hardly reach (a
    subject-initial prompt's near-zero key from layer 3 on) is written by the layers that can."""
    return reach_by_layer[i] / reach_by_layer[i:].sum(dim=0)


def spread_edit(
    lm: LoadedModel,
    requests: Sequence[EditRequest],
    hp,
    ctx: EditContext,
    editor: str,
    solve: Callable[[int, torch.Tensor, torch.Tensor, Callable[[int], torch.Tensor], torch.Tensor | None],
                    torch.Tensor],
    info_extra: dict | None = None,
    reach: Callable[[int, torch.Tensor, Callable[[int], torch.Tensor]], torch.Tensor] | None = None,
) -> EditResult:
    """MEMIT's procedure (module docstring) with the per-layer least-squares step given as
    `solve(layer, keys [N, d_in], residual [N, d_out], cov, exact) -> update [d_out, d_in]`; MEMIT and AlphaEdit
    differ only there. `exact` is None or the indices of the rows the solve must deliver in full (`fit_exactly`):
    with `hp.key_constraint` "plain", each request's plain prompt. `hp` needs MEMIT's value-optimisation, prefix
    and `layers` fields. The keys each layer saw are returned in `result.memory["keys"]` (layer -> [N, d_in]) for
    editors that remember them.
    With `hp.key_constraint` "balanced" or "reach", `reach(layer, keys, cov) -> g [N]` says how much of a change
    each key would get from `solve` on its own: the rows are weighted by `balance_rows`, and with "reach" each
    prompt's residual is spread over the layers by `layer_share` of the reaches read before the first update.
    With "plain", the rows are those of "all"; each plain prompt's row is fitted exactly and its residual spread
    by `layer_share`, so a layer that hardly reaches its key (a subject-initial prompt's, from layer 3 on) is
    not asked for much of it."""
    start = time.perf_counter()
    layers = sorted(hp.layers)
    if layers[-1] >= lm.n_layers:
        raise EditorError(f"{editor} field 'layers' has {layers[-1]} but {lm.name} has layers 0..{lm.n_layers - 1}")
    last = layers[-1]
    names = [weight_name(lm, layer) for layer in layers]
    originals = snapshot(lm, names)
    per_layer = []
    layer_keys = {}
    try:
        with edit_mode(lm):  # eval mode also for the covariance statistics: no dropout in them
            cov, cov_source = covariance_for(lm, ctx, hp.cov_n_tokens, layers)
            prefixes = context_prefixes(lm, hp.n_prefixes, hp.prefix_tokens, ctx.cache_dir)
            out0 = subject_block_outputs(lm, last, requests, prefixes)  # [N, T, d] before any update
            h0 = out0.mean(dim=1)  # [N, d]
            # requests are optimised independently (their own losses, Adam states, clamps and stopping), so
            # chunks of VALUE_CHUNK bound the memory of a large batch (500 edits) without changing the method
            norm_of = dict(zip(requests, h0.norm(dim=1).tolist()))
            opts = value_options(hp)

            def optimise(reqs: Sequence[EditRequest]) -> list:  # their values, VALUE_CHUNK requests at a time
                missing = [r for r in dict.fromkeys(reqs) if r not in norm_of]  # a value cache's look-ahead
                if missing:
                    h = subject_block_outputs(lm, last, missing, prefixes).mean(dim=1)  # [M, d]
                    norm_of.update(zip(missing, h.norm(dim=1).tolist()))
                out = []
                for i in range(0, len(reqs), VALUE_CHUNK):
                    part = list(reqs[i : i + VALUE_CHUNK])
                    out += optimise_values(lm, last, part, prefixes, opts, [norm_of[r] for r in part])
                return out

            cached = None
            if ctx.value_cache is None:
                values = optimise(requests)
            else:  # values optimised earlier or together with coming edits: compute.editors.value_cache
                values, cached = ctx.value_cache.values(lm, last, requests, prefixes, opts, optimise)
            deltas = torch.stack([v.delta for v in values]).double()  # [N, d]
            targets = h0.double() + deltas  # [N, d]
            h0_all = out0.double()  # [N, T, d]
            targets_all = h0_all + deltas[:, None, :]  # [N, T, d]: the optimisation shifted every prompt by delta
            n_keys = len(prefixes)
            spread = None
            plain = hp.key_constraint == "plain"
            if hp.key_constraint in ("reach", "plain"):
                # [L, N * T] ("reach") or [L, N] (the plain prompts): each layer's reach of each prompt's key,
                # before any update
                if reach is None:
                    raise EditorError(f"{editor} has no key_constraint {hp.key_constraint!r}")
                keys_by_layer = [subject_keys(lm, layer, requests, prefixes) for layer in layers]  # [N, T, d_in] each
                spread = torch.stack([reach(layer, k[:, 0] if plain else k.reshape(-1, k.shape[-1]), cov)
                                      for layer, k in zip(layers, keys_by_layer)]).double().clamp(min=1e-300)
            exact = torch.arange(len(requests)) * n_keys if plain else None  # the plain prompts' rows
            for i, layer in enumerate(layers):
                keys_all = subject_keys(lm, layer, requests, prefixes)  # [N, T, d_in]
                # the last layer's outputs under the updates so far (none yet at the first layer: read above)
                current = (h0_all if i == 0 else subject_block_outputs(lm, last, requests, prefixes).double())
                if getattr(hp, "key_constraint", "mean") in ("all", "balanced", "reach", "plain"):
                    # Every (request, prompt) key is one row of the least squares, each weighted 1/sqrt(T) so a
                    # request weighs as much against lam C as one prefix-mean key does: the update fits the
                    # mean squared miss over the prompts the value was optimised on, the bare prompt included
                    # (a subject-initial prompt's key is far from the prefix mean: benchmarks/key_delivery.py).
                    keys = keys_all.reshape(-1, keys_all.shape[-1]) / n_keys**0.5  # [N * T, d_in]
                    residual = ((targets_all - current) / (len(layers) - i)).reshape(-1, current.shape[-1])
                    if hp.key_constraint == "reach":  # this layer's share of what is left: its reach over the
                        share = layer_share(spread, i)  # [N * T]                                  layers left
                        residual = (targets_all - current).reshape(-1, current.shape[-1]) * share[:, None]
                    elif plain:  # each plain prompt's share likewise; the solve delivers it in full
                        residual[exact] = (targets_all - current)[:, 0] * layer_share(spread, i)[:, None]
                    residual = residual / n_keys**0.5  # [N * T, d]
                    if hp.key_constraint in ("balanced", "reach"):
                        if reach is None:
                            raise EditorError(f"{editor} has no key_constraint {hp.key_constraint!r}")
                        keys, residual = balance_rows(keys, residual, reach(layer, keys, cov))
                else:
                    keys = keys_all.mean(dim=1)  # [N, d_in]
                    residual = (targets - current.mean(dim=1)) / (len(layers) - i)  # [N, d]
                update = solve(layer, keys, residual, cov, exact)  # [d_out, d_in]
                norm = add_to_down_proj(lm, layer, update)
                layer_keys[layer] = keys.detach().clone()
                per_layer.append({"layer": layer, "update_norm": round(norm, 6),
                                  "residual_norm": round(residual.norm(dim=1).mean().item(), 6)})
            final = subject_block_outputs(lm, last, requests, prefixes).mean(dim=1).double()  # [N, d]
    except BaseException:
        # A failed batch leaves the model as it was.
        with torch.no_grad():
            params = dict(lm.model.named_parameters())
            for name in names:
                params[name].copy_(originals[name])
        raise
    miss = (targets - final).norm(dim=1) / (targets - h0.double()).norm(dim=1).clamp(min=1e-12)  # [N]
    info = {
        "layers": layers,
        "matrices": names,
        **(info_extra or {}),
        "covariance": cov_source,
        "prefixes": list(prefixes),
        "steps": max(v.steps for v in values),
        "nll_final": max(v.nll_final for v in values),
        "clamped": sum(v.clamped for v in values),
        "per_layer": per_layer,
        # share of each target shift the spread updates did not reach at the last layer (0 = all of it)
        "target_miss": [round(x, 6) for x in miss.tolist()],
        "edits": [v.info() for v in values],
        "seconds": round(time.perf_counter() - start, 4),
    }
    if cached is not None:
        info["values_from_cache"] = cached  # requests whose target value an earlier batch had optimised
    return EditResult(editor=editor, requests=tuple(requests), originals=originals, info=info,
                      memory={"keys": layer_keys})


def apply_memit(
    lm: LoadedModel, requests: Sequence[EditRequest], hp: MEMITHyperParams, ctx: EditContext
) -> EditResult:
    """Write every request into the model at once, spread over `hp.layers` (see the module docstring)."""
    return spread_edit(
        lm, requests, hp, ctx, NAME,
        lambda layer, keys, residual, cov, exact: memit_update(keys, residual, cov(layer), hp.lam, exact),
        {"lam": hp.lam},
        reach=lambda layer, keys, cov: memit_reach(keys, cov(layer)),
    )


register(
    Editor(
        name=NAME,
        mass=True,
        hparams=MEMITHyperParams,
        apply=apply_memit,
        description="batch edit spread over several MLP down-projections (MEMIT)",
    )
)

"""FT-L: constrained fine-tuning of one MLP down-projection matrix (Zhu et al. 2020, "Modifying Memories in
Transformer Models"; the FT+L baseline of ROME/MEMIT).

The edit minimises the mean token-averaged NLL of " " + target_new after each request's prompt (and, when
`prefixes` are given, after the same prompt behind each prefix, a cheap push towards generalisation as in
ROME's context templates) with Adam, touching only `lm.down_proj(layer).weight`. After every step the
matrix is clamped elementwise into [W0 - eps, W0 + eps], so max |W - W0| <= eps (the L-infinity bound) holds
at every point of the optimisation, not only at the end. The matrix's orientation (GPT-2's Conv1D stores
it transposed) does not matter for an elementwise bound.

Invariant: apply then `undo(lm, result)` leaves every parameter bit-identical, and every parameter's
`requires_grad` flag and the model's train/eval mode are as they were before apply.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

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
from compute.models import LoadedModel
from compute.scoring import target_ids

NAME = "FT-L"


@dataclass(frozen=True)
class FTHyperParams:
    """Hyperparameters of FT-L; see hparams/FT-L/<model>.json for where each value comes from.

    The defaults are the usual FT-L settings of public configs for GPT-2 XL (25 steps, lr and bound about 5e-4);
    the default model needs a ten times larger bound (hparams/FT-L/smollm2-135m.json).
    """

    layer: int  # which block's MLP down-projection is fine-tuned
    lr: float = 5e-4  # Adam learning rate
    steps: int = 25  # at most this many Adam steps
    norm_constraint: float = 5e-4  # eps: L-infinity bound on each weight's change, |W - W0| <= eps
    stop_nll: float = 0.05  # stop early once the mean target NLL (nats per token) falls below this
    prefixes: tuple[str, ...] = ()  # extra texts put before each prompt (the plain prompt is always used)

    def validate(self) -> None:
        """Refuse values that cannot describe an edit, naming the field."""
        check_finite("FT-L", self)
        if not isinstance(self.layer, int) or isinstance(self.layer, bool) or self.layer < 0:
            raise EditorError(f"FT-L field 'layer' must be a non-negative integer, got {self.layer!r}")
        if not self.lr > 0:
            raise EditorError(f"FT-L field 'lr' must be > 0, got {self.lr!r}")
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 1:
            raise EditorError(f"FT-L field 'steps' must be an integer >= 1, got {self.steps!r}")
        if not self.norm_constraint > 0:
            raise EditorError(f"FT-L field 'norm_constraint' must be > 0, got {self.norm_constraint!r}")
        if not self.stop_nll >= 0:
            raise EditorError(f"FT-L field 'stop_nll' must be >= 0, got {self.stop_nll!r}")
        if not isinstance(self.prefixes, tuple) or not all(isinstance(p, str) for p in self.prefixes):
            raise EditorError(f"FT-L field 'prefixes' must be a list of strings, got {self.prefixes!r}")

    def __post_init__(self):
        if isinstance(self.prefixes, list):  # JSON and callers give lists; a tuple keeps the dataclass hashable
            object.__setattr__(self, "prefixes", tuple(self.prefixes))
        self.validate()


def _bounds(w0: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Elementwise clamp bounds with |bound - w0| <= eps exactly (in real arithmetic on the stored values).

    fl(w0 + eps) may round up past w0 + eps by half an ulp; such bounds are stepped one ulp towards w0, so
    the L-infinity guarantee holds exactly, not just up to rounding. Computed once from the exact original
    so that the clamp never drifts with W.
    """
    w64 = w0.double()
    upper = (w64 + eps).to(w0.dtype)
    lower = (w64 - eps).to(w0.dtype)
    upper = torch.where(upper.double() - w64 > eps, torch.nextafter(upper, torch.full_like(upper, -torch.inf)), upper)
    lower = torch.where(w64 - lower.double() > eps, torch.nextafter(lower, torch.full_like(lower, torch.inf)), lower)
    return lower, upper


def _training_batch(lm: LoadedModel, texts: Sequence[tuple[str, str]]):
    """Right-padded ids, attention mask and per-token loss weights for (prompt, target) pairs.

    The weights put 1/m on each of a pair's m target positions and 0 elsewhere, so (weights * token NLL)
    summed over a row is that pair's token-averaged NLL (design.md section 6).
    """
    tok = lm.tokenizer
    pairs = [target_ids(tok, p, t) for p, t in texts]
    width = max(len(p) + len(t) for p, t in pairs)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = torch.full((len(pairs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(pairs), width), dtype=torch.long)
    labels = torch.zeros((len(pairs), width - 1), dtype=torch.long)
    weights = torch.zeros((len(pairs), width - 1))
    for r, (p, t) in enumerate(pairs):
        seq = p + t
        ids[r, : len(seq)] = torch.tensor(seq)
        mask[r, : len(seq)] = 1
        # logits at position i predict token i + 1: the target tokens sit at len(p) .. len(seq) - 1
        start = len(p) - 1
        labels[r, start : start + len(t)] = torch.tensor(t)
        weights[r, start : start + len(t)] = 1.0 / len(t)
    device = lm.device
    return ids.to(device), mask.to(device), labels.to(device), weights.to(device)


def _mean_nll(lm: LoadedModel, batch) -> torch.Tensor:
    """Mean over pairs of the token-averaged target NLL (a scalar with grad where the model has grad)."""
    ids, mask, labels, weights = batch
    logits = lm.model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1].float()  # [B, L-1, V]
    token_nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, reduction="none")  # [B, L-1]
    return (token_nll * weights).sum(dim=1).mean()


def apply_ft(lm: LoadedModel, requests: Sequence[EditRequest], hp: FTHyperParams, ctx: EditContext) -> EditResult:
    """Fine-tune the layer's down-projection on every request at once under the L-infinity bound."""
    start_time = time.perf_counter()
    module = lm.down_proj(hp.layer)
    name = weight_name(lm, hp.layer)
    originals = snapshot(lm, [name])
    weight = module.weight
    w0 = originals[name]
    lower, upper = _bounds(w0, float(hp.norm_constraint))

    texts = [(prefix + r.prompt, r.target_new) for r in requests for prefix in ("", *hp.prefixes)]
    batch = _training_batch(lm, texts)

    # Only the edited matrix may receive gradients: everything else is frozen for the edit and every flag
    # (and the train/eval mode: dropout would make the loss noisy) is restored afterwards.
    flags = {n: p.requires_grad for n, p in lm.model.named_parameters()}
    was_training = lm.model.training
    losses: list[float] = []
    try:
        for p in lm.model.parameters():
            p.requires_grad_(False)
        weight.requires_grad_(True)
        lm.model.eval()
        torch.manual_seed(ctx.seed)  # nothing here is random today; keeps future stochastic steps reproducible
        opt = torch.optim.Adam([weight], lr=hp.lr)
        steps = 0
        with torch.enable_grad():
            while True:
                loss = _mean_nll(lm, batch)
                losses.append(round(loss.item(), 6))
                if loss.item() < hp.stop_nll or steps == hp.steps:
                    break
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                steps += 1
                with torch.no_grad():
                    weight.clamp_(min=lower, max=upper)
    finally:
        weight.grad = None
        for n, p in lm.model.named_parameters():
            p.requires_grad_(flags[n])
        lm.model.train(was_training)

    with torch.no_grad():
        max_change = (weight.detach().double() - w0.double()).abs().max().item()
    return EditResult(
        editor=NAME,
        requests=tuple(requests),
        originals=originals,
        info={
            "layer": hp.layer,
            "matrix": name,
            "steps": steps,
            "nll_start": losses[0],
            "nll_final": losses[-1],
            "losses": losses,
            "max_abs_change": max_change,
            "n_texts": len(texts),
            "seconds": round(time.perf_counter() - start_time, 4),
        },
    )


register(
    Editor(
        name=NAME,
        hparams=FTHyperParams,
        apply=apply_ft,
        description="constrained fine-tuning of one MLP down-projection (L-infinity bound on the change)",
    )
)

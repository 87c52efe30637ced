"""RandomRankOne: the control of study B (issue 19 point 11). Not an edit of any fact.

Each "edit" adds a random rank-one matrix to ROME's edited matrix (the MLP down-projection at `layer`):

    dW = norm * (u / ||u||) (v / ||v||)^T,   u ~ N(0, I_out), v ~ N(0, I_in)   so ||dW||_F = norm

drawn from a generator seeded by (`seed`, the update's index in the run), so the same run makes the same
updates and a resumed run makes them again. `norm` is the reference run's per-edit ||dW||_F, in order:
the n-th update of a sequential run made with `reference_run=RUN_ID` has the size of that run's n-th edit (its
run-level `update_norm` rows, one per edit or batch); without a reference run every update has the size
`norm`. A sequential run of this editor beside the reference run separates forgetting that is specific to
the edits from what any update of that size, at that place, does to the model.

The editor is registered when this module is imported (compute.experiments.sequential.ensure_editor does so
when a sequential run asks for it); it is kept out of the package's editor list on purpose: it edits no
fact, so the editor contract's "the edit raises the new object's probability" does not apply to it.
Hyperparameters: compute/editors/control.json (`--hparams compute/editors/control.json`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from compute.editors.base import (
    EditContext,
    Editor,
    EditorError,
    EditRequest,
    EditResult,
    check_finite,
    register,
    snapshot,
    weight_name,
)
from compute.models import LoadedModel

NAME = "RandomRankOne"
HPARAMS_FILE = Path(__file__).resolve().parent / "control.json"


@dataclass(frozen=True)
class RandomRankOneHparams:
    layer: int = 3  # ROME's layer on the default model (hparams/ROME/smollm2-135m.json)
    seed: int = 0
    reference_run: str = ""  # the run whose per-edit update norms the updates take, in order
    norm: float = 0.0  # the size of every update when no reference run is given

    def validate(self) -> None:
        check_finite(NAME, self)
        if self.layer < 0:
            raise EditorError(f"{NAME} field 'layer' must be >= 0, got {self.layer}")
        if self.seed < 0:
            raise EditorError(f"{NAME} field 'seed' must be >= 0, got {self.seed}")
        if self.norm < 0:
            raise EditorError(f"{NAME} field 'norm' must be >= 0, got {self.norm}")


def initial_state(hp: RandomRankOneHparams, norms: Sequence[float] | None = None) -> dict:
    """ctx.state for a new sequential run: the reference run's per-edit norms (`norms`, which the experiment reads
    from the store with compute.stored.reference_norms when hp.reference_run is set) and the count of updates
    made. The editor itself never reads a store."""
    if not hp.reference_run and not hp.norm > 0:
        raise EditorError(f"{NAME} needs a size: --hp reference_run=RUN_ID (a run's per-edit norms) or --hp norm=X")
    if hp.reference_run and norms is None:
        raise EditorError(f"{NAME}: reference_run={hp.reference_run} needs its per-edit norms "
                          "(compute.stored.reference_norms)")
    state = {"n": torch.tensor(0)}
    if hp.reference_run:
        state["norms"] = torch.tensor([float(x) for x in norms], dtype=torch.float64)
    return {NAME: state}


@torch.no_grad()
def apply_random_rank_one(lm: LoadedModel, requests: Sequence[EditRequest], hp: RandomRankOneHparams,
                          ctx: EditContext) -> EditResult:
    """Add one random rank-one update of the stated size to the layer's down-projection (module docstring)."""
    start = time.perf_counter()
    hp.validate()
    if hp.layer >= lm.n_layers:
        raise EditorError(f"{NAME} layer {hp.layer} is not a layer of {lm.name} (0..{lm.n_layers - 1})")
    state = ctx.state.get(NAME, {})
    index = int(state["n"]) if "n" in state else 0
    if hp.reference_run:
        norms = state.get("norms")
        if norms is None:
            raise EditorError(f"{NAME} with a reference run needs a sequential run (it reads the run's norms first)")
        if index >= len(norms):
            raise EditorError(f"{NAME}: reference run {hp.reference_run} has {len(norms)} per-edit norms; this run "
                              f"cannot make update {index + 1}: extend the reference run or make fewer edits")
        norm = float(norms[index])
    elif hp.norm > 0:
        norm = hp.norm
    else:
        raise EditorError(f"{NAME} needs a size: --hp reference_run=RUN_ID (a run's per-edit norms) or --hp norm=X")
    name = weight_name(lm, hp.layer)
    originals = snapshot(lm, [name])
    weight = dict(lm.model.named_parameters())[name]
    gen = torch.Generator().manual_seed(hp.seed * 1_000_003 + index)
    u = torch.randn(weight.shape[0], generator=gen, dtype=torch.float64)  # [rows]
    v = torch.randn(weight.shape[1], generator=gen, dtype=torch.float64)  # [cols]
    delta = norm * torch.outer(u / u.norm(), v / v.norm())  # [rows, cols], ||delta||_F = norm
    weight.add_(delta.to(weight.dtype))
    info = {"layer": hp.layer, "index": index, "norm": norm, "seed": hp.seed,
            "reference_run": hp.reference_run, "elapsed": round(time.perf_counter() - start, 4)}
    return EditResult(editor=NAME, requests=tuple(requests), originals=originals, info=info)


def commit_random_rank_one(ctx: EditContext, result: EditResult) -> None:
    """A kept update moves the run on to the next norm."""
    state = ctx.state.setdefault(NAME, {"n": torch.tensor(0)})
    state["n"] = torch.tensor(int(state["n"]) + 1)


register(Editor(
    name=NAME,
    hparams=RandomRankOneHparams,
    apply=apply_random_rank_one,
    description="control: a random rank-one update at ROME's layer with a reference run's per-edit norms",
    commit=commit_random_rank_one,
    edits_facts=False,
))

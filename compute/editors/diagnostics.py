"""Per-edit diagnostics: what one edit did to the weights and how its optimisation went.

Every runner writes these rows for every edit it makes (store table `edit_diagnostics`, schema v7), so a
reader can check each edit instead of trusting its scores. Names:

per edited matrix (`target` = the parameter name; `case_id` = the request's case for a one-request edit,
'*' for a batch, whose update is shared by all its requests):
- `update_norm`: ||dW||_F of this edit (the weights after it minus the weights before it)
- `update_rel`: ||dW||_F / ||W_before||_F

per request (`case_id` = the request's case, `target` = ''), where the editor optimises a target:
- `steps`: optimisation steps used; `converged`: 1 when the target's NLL ended below the editor's stop_nll
  (0: it ran into the step cap); `clamped`: 1 when the norm clamp bound at the end (ROME, MEMIT, AlphaEdit)
- `nll_final`: mean NLL of the new object at the end; `kl_final`: the KL term on "{subject} is a";
  `delta_norm`, `v0_norm`: the optimised value change and the norm it is clamped against

delivered fraction (`target` = 'plain', 'paraphrase:1', ...; key-value editors: ROME, MEMIT, AlphaEdit):
    f(p) = sum_l <dW_l k_l(p), dW_l k*_l> / sum_l ||dW_l k*_l||^2
  over the edited layers l, with k_l(p) the input of layer l's down-projection at the subject's last token of
  probe p and k*_l the mean of those inputs over the edit's own prompts (bare and prefixed), both read on the
  edited model. dW_l k*_l is the change the edit writes for its own prompts, so f is the share of it that
  probe p receives: 1 when the weights carry the optimised change to that prompt, near 0 when they do not.
  For a ROME edit dW = delta u^T this is (u . k(p)) / (u . k*).

delivered at the output (`name` = 'delivered_out', same targets; edits of more than one layer: MEMIT, AlphaEdit):
    f_out(p) = <dh(p), dh*> / ||dh*||^2
  with dh(p) the change the edit makes to the residual stream after its last edited layer at the subject's last
  token of probe p (edited minus unedited weights, same prompt), and dh* the mean of that change over the edit's
  own prompts: the point where the value optimisation set the target. For one layer it equals f; for several it
  is what the later layers read, and the share a multi-layer edit's definition asks about. f sums each layer's
  projection on the mean key's change, so the two differ where a prompt's change is spread over the layers
  unlike the mean's: with MEMIT's key_constraint "plain" a subject-initial plain prompt's change goes to the
  layers that reach its key ("Louga is a city in": f 0.57, f_out 1.03); with "all" they agreed (README, Edit
  mechanics).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from compute.cases import EditCase
from compute.editors.base import EditRequest, EditResult
from compute.models import LoadedModel

WHOLE_UPDATE = "*"  # case_id of the rows about a whole update (per matrix)
PARAPHRASE = "paraphrase"


def _layer_of(lm: LoadedModel, name: str) -> int | None:
    for layer in range(lm.n_layers):
        if lm.arch.mlp_down.format(layer) + ".weight" == name:
            return layer
    return None


def probe_prompts(case: EditCase | None, request: EditRequest) -> dict[str, str]:
    """The prompts a delivered fraction is measured on: the plain prompt and each paraphrase naming the subject."""
    out = {"plain": request.prompt}
    if case is not None:
        texts = [p.text for p in case.probes_of(PARAPHRASE) if request.subject in p.text]
        out.update({f"{PARAPHRASE}:{i + 1}": t for i, t in enumerate(texts)})
    return out


@torch.no_grad()
def delivered_fractions(lm: LoadedModel, result: EditResult, cases: dict[str, EditCase]) -> list[dict[str, float]]:
    """For each request of `result` (applied, not yet undone), its delivered fraction on each probe prompt.

    Empty dicts for editors that write no key-value update (no `prefixes` in their record)."""
    from compute.editors.rome import down_proj_matrix, subject_keys

    prefixes = result.info.get("prefixes")
    if not prefixes:
        return [{} for _ in result.requests]
    layers = {name: _layer_of(lm, name) for name in result.originals}
    layers = {name: layer for name, layer in layers.items() if layer is not None}
    requests = list(result.requests)
    prompts = [probe_prompts(cases.get(r.case_id or ""), r) for r in requests]
    num = [dict.fromkeys(p, 0.0) for p in prompts]
    den = [0.0] * len(requests)
    for name, layer in layers.items():
        w0 = result.originals[name].double()
        dw = down_proj_matrix(lm, layer).double() - (w0.T if lm.arch.down_proj_transposed else w0)  # [d_out, d_in]
        k_star = subject_keys(lm, layer, requests, prefixes).double().mean(dim=1)  # [N, d_in]
        intended = k_star @ dw.T  # [N, d_out]
        flat = [(i, key, EditRequest(r.subject, text, r.target_new))
                for i, (r, p) in enumerate(zip(requests, prompts)) for key, text in p.items()]
        keys = subject_keys(lm, layer, [f[2] for f in flat], ("",))[:, 0].double()  # [P, d_in]
        got = keys @ dw.T  # [P, d_out]
        for row, (i, key, _) in enumerate(flat):
            num[i][key] += float(got[row] @ intended[i])
        for i in range(len(requests)):
            den[i] += float(intended[i] @ intended[i])
    return [{k: v / d for k, v in n.items()} if d > 0 else {} for n, d in zip(num, den)]


def delivered_at_output(lm: LoadedModel, result: EditResult, cases: dict[str, EditCase]) -> list[dict[str, float]]:
    """For each request of a multi-layer `result` (applied, not yet undone), f_out on each probe prompt (module
    docstring); empty dicts for one-layer or key-free edits. The unedited side is read by putting the original
    matrices back for one forward pass each and restoring the edited ones bit for bit."""
    from compute.editors.rome import subject_block_outputs

    prefixes = result.info.get("prefixes")
    layers = sorted(l for l in (_layer_of(lm, name) for name in result.originals) if l is not None)
    if not prefixes or len(layers) < 2:
        return [{} for _ in result.requests]
    last = layers[-1]
    requests = list(result.requests)
    prompts = [probe_prompts(cases.get(r.case_id or ""), r) for r in requests]
    flat = [(i, key, EditRequest(r.subject, text, r.target_new))
            for i, (r, p) in enumerate(zip(requests, prompts)) for key, text in p.items()]

    def read() -> tuple[torch.Tensor, torch.Tensor]:
        own = subject_block_outputs(lm, last, requests, prefixes).double().mean(dim=1)  # [N, d]
        probe = subject_block_outputs(lm, last, [f[2] for f in flat], ("",))[:, 0].double()  # [P, d]
        return own, probe

    params = dict(lm.model.named_parameters())
    with torch.no_grad():
        own_after, probe_after = read()
        edited = {name: params[name].detach().clone() for name in result.originals}
        try:
            for name, before in result.originals.items():
                params[name].copy_(before)
            own_before, probe_before = read()
        finally:
            for name, after in edited.items():
                params[name].copy_(after)
    intended = own_after - own_before  # [N, d]
    got = probe_after - probe_before  # [P, d]
    out = [dict.fromkeys(p, 0.0) for p in prompts]
    for row, (i, key, _) in enumerate(flat):
        den = float(intended[i] @ intended[i])
        out[i][key] = float(got[row] @ intended[i]) / den if den > 0 else float("nan")
    return out


def edit_diagnostics(
    lm: LoadedModel,
    result: EditResult,
    hp,
    run_id: str,
    edit_count: int,
    cases: Sequence[EditCase] = (),
) -> list[dict]:
    """The diagnostic rows of one applied edit (call before undoing it). Raises ValueError when a value is
    not finite: a NaN update or loss is a failed edit, never a result."""
    rows: list[dict] = []

    def add(case_id: str, target: str, name: str, value) -> None:
        if value is None:
            return
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"edit {edit_count} of run {run_id}: {name} of {case_id} {target} is {value}: "
                             "the edit failed (check the hyperparameters)")
        rows.append({"run_id": run_id, "edit_count": edit_count, "case_id": case_id, "target": target,
                     "name": name, "value": value})

    params = dict(lm.model.named_parameters())
    owner = (result.requests[0].case_id or result.requests[0].subject) if len(result.requests) == 1 else WHOLE_UPDATE
    with torch.no_grad():
        for name, before in result.originals.items():
            delta = (params[name].double() - before.double()).norm().item()
            add(owner, name, "update_norm", delta)
            add(owner, name, "update_rel", delta / max(before.double().norm().item(), 1e-30))

    stop = getattr(hp, "stop_nll", None)
    per_request = result.info.get("edits")
    if not isinstance(per_request, list) or len(per_request) != len(result.requests):
        # one record for the whole edit (FT-L): the same values for each of its requests
        per_request = [result.info] * len(result.requests) if "steps" in result.info else [{}] * len(result.requests)
    for request, rec in zip(result.requests, per_request):
        cid = request.case_id or request.subject
        add(cid, "", "steps", rec.get("steps"))
        if stop is not None and rec.get("nll_final") is not None:
            add(cid, "", "converged", float(rec["nll_final"] < stop))
        if "clamped" in rec:
            add(cid, "", "clamped", float(bool(rec["clamped"])))
        for key in ("nll_final", "kl_final", "delta_norm", "v0_norm"):
            add(cid, "", key, rec.get(key))

    by_id = {c.case_id: c for c in cases}
    for request, fractions in zip(result.requests, delivered_fractions(lm, result, by_id)):
        for target, value in fractions.items():
            add(request.case_id or request.subject, target, "delivered", value)
    for request, fractions in zip(result.requests, delivered_at_output(lm, result, by_id)):
        for target, value in fractions.items():
            add(request.case_id or request.subject, target, "delivered_out", value)
    return rows

"""Caches of optimised target values: on disk for batches written again and again into one unedited model,
and in memory for runs that undo every edit exactly and can optimise the next few edits' values together.

Study C's batch-single experiment (compute.experiments.batch) writes batches of 1, 10, 50, ... 500 edits,
each into the unedited model, each the first b edits of one shared order, with MEMIT and then AlphaEdit.
Both editors find every request's target value with ROME's value optimisation
(`compute.editors.rome.optimise_values`), and that optimisation is per request: its own loss, Adam state,
clamp and stopping; the other requests of the batch only share its forward passes. MEMIT and AlphaEdit
also share the settings and the layer on this model. So request i's value is the same in every batch that
holds it and in both editors' runs, and most of a batch run's time (the value optimisation is about 90% of
it) went into recomputing it. Here it is computed once.

The key of a value is a hash of everything it depends on: the model's weights (a content hash of every
parameter, taken at each batch, so an edited model never meets an unedited model's values), the layer,
the request (subject, prompt, new and true object), the context prefixes, the optimisation settings and the
device it was computed on (a GPU's values differ from the CPU's by rounding; CPU keys carry no device, as
before the device was part of the key).
The reference norm the clamp is relative to is a function of the model, the request and the prefixes,
so it is not part of the key. Values live under `<cache>/values/` (outside git), one small file each,
written atomically; a damaged file is recomputed.

Sharing forward passes with other requests changes a value only by floating-point rounding (the batch's
padding and matmul blocking), so a cached value can differ from a freshly computed one in the last bits;
tests/test_value_cache.py bounds it. Only the batch runner turns the disk cache on (ctx.value_cache): in a
sequential run the model changes after every edit and no value would ever be met again.

`MemoryValueCache` serves the runs that edit one case, evaluate it and undo the edit exactly before the next
(robustness runs, sweeps, benchmarks): every edit starts from the unedited weights, so the values of the
next few cases can be optimised in one packed call (`compute.editors.rome.optimise_values`; one request's
result does not depend on the others in its call beyond rounding) and each is then used in turn
(benchmarks/bench_values.py measures it against one request at a time).

What a value's norm is relative to (`norm`) is part of the key: ROME's clamp is relative to the
down-projection's output, MEMIT's to the residual stream, so the two never share a value.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import weakref
from pathlib import Path
from typing import Callable, Sequence

import torch

from compute.models import LoadedModel

CACHE_VERSION = 1


# model -> {parameter name: (stamp, digest)}: a parameter's digest is hashed again only when its stamp changed
_DIGESTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _stamp(t: torch.Tensor) -> tuple:
    """What tells, cheaply, that a parameter may have changed since its digest was taken: its storage, its
    version counter (every in-place write through the parameter or a view of it bumps it: an edit, its undo,
    an optimiser step) and its float32 sum and norm (which also catch writes through `.data`, which bypass
    the counter). A stale stamp only makes the digest be computed again, never reused wrongly, unless a write
    through `.data` keeps both the sum and the norm (e.g. swaps two entries)."""
    return (t.data_ptr(), t._version, str(t.device), float(t.sum()), float(t.norm()))


def weights_fingerprint(lm: LoadedModel) -> str:
    """sha256 over every parameter's name, dtype, shape and the sha256 of its bytes. Each parameter's digest is
    kept with `_stamp` and hashed again only when that changed: after an edit and its undo only the edited
    matrices are hashed again (the demo worker's second edit: about 0.05 s instead of 0.75 s on one thread for
    SmolLM2-135M; benchmarks/bench_demo.py)."""
    memo = _DIGESTS.setdefault(lm.model, {})
    h = hashlib.sha256()
    for name, p in lm.model.named_parameters():
        t = p.detach()
        stamp = _stamp(t)
        kept = memo.get(name)
        if kept is None or kept[0] != stamp:
            c = t.contiguous().cpu()
            kept = (stamp, hashlib.sha256(c.view(torch.uint8).numpy() if c.numel() else b"").hexdigest())
            memo[name] = kept
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|{kept[1]}".encode())
    return h.hexdigest()


def _key(fingerprint: str, layer: int, request, prefixes: Sequence[str], opts, norm: str, device="cpu") -> str:
    spec = {"v": CACHE_VERSION, "model": fingerprint, "layer": int(layer),
            "request": [request.subject, request.prompt, request.target_new, request.target_true],
            "prefixes": list(prefixes), "opts": dataclasses.asdict(opts)}
    if norm:  # MEMIT's and AlphaEdit's residual-stream norm is "" (their keys from before `norm` existed)
        spec["norm"] = norm
    if torch.device(device).type != "cpu":  # a GPU's value differs from the CPU's by rounding (CPU keys as before)
        spec["device"] = str(torch.device(device))
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


class ValueCache:
    """Target values by (model weights, layer, request, prefixes, settings), under `folder`."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.hits = 0
        self.misses = 0

    def _key(self, fingerprint: str, layer: int, request, prefixes: Sequence[str], opts, norm: str = "",
             device="cpu") -> str:
        return _key(fingerprint, layer, request, prefixes, opts, norm, device)

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.pt"

    def _load(self, key: str):
        from compute.editors.rome import ValueResult

        try:
            return ValueResult(**torch.load(self._path(key), map_location="cpu", weights_only=True))
        except Exception:  # missing, damaged or foreign: compute it
            return None

    def _save(self, key: str, value) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save({f.name: getattr(value, f.name) for f in dataclasses.fields(value)}, tmp)
        os.replace(tmp, path)

    def values(self, lm: LoadedModel, layer: int, requests: Sequence, prefixes: Sequence[str], opts,
               optimise: Callable[[list], list], norm: str = "") -> tuple[list, int]:
        """The values of `requests`, calling `optimise(missing)` (the editor's own optimisation of a list of
        requests) only for those not cached; returns them and how many came from the cache. `norm` names
        what the clamp is relative to (ROME's and MEMIT's differ)."""
        fingerprint = weights_fingerprint(lm)
        keys = [self._key(fingerprint, layer, r, prefixes, opts, norm, lm.device) for r in requests]
        out = [self._load(k) for k in keys]
        todo = [i for i, v in enumerate(out) if v is None]
        self.hits += len(requests) - len(todo)
        self.misses += len(todo)
        for i, value in zip(todo, optimise([requests[i] for i in todo]) if todo else []):
            value.delta = value.delta.detach()
            self._save(keys[i], value)
            out[i] = value
        for v in out:
            v.delta = v.delta.to(lm.device)
        return out, len(requests) - len(todo)


# Cases whose values a MemoryValueCache optimises in one call. benchmarks/bench_values.py, ROME on 2 threads, quiet
# machine: 5 -> 1.30x against one at a time (dW within 4.7e-6 relative), 8 -> 1.36x (dW 1.9e-5, past the 1e-5 bound).
AHEAD = 5


def down_proj_checksum(lm: LoadedModel) -> str:
    """A cheap check that no down-projection changed: float64 sum and sum of squares of each (two reductions
    per matrix, where `weights_fingerprint` hashes every byte of every parameter, about a second). The
    editors that read a MemoryValueCache (ROME, MEMIT, AlphaEdit) write only down-projections."""
    parts = []
    for layer in range(lm.n_layers):
        w = lm.down_proj(layer).weight.detach().double()
        parts.append(f"{w.sum().item():.17g},{w.square().sum().item():.17g}")
    return hashlib.sha256(";".join(parts).encode()).hexdigest()


class MemoryValueCache:
    """Target values kept in memory, each optimised together with those of the next cases of the run.

    The run says which requests come next (`plan`); a request that is not cached is optimised in one call
    with the planned requests that follow it and are not cached either, `ahead` in all. Values are keyed like the
    disk cache's, but on `down_proj_checksum` instead of a hash of every weight: the runs that use it undo
    every edit exactly, and the check only has to catch a model left edited (its values are then computed
    afresh, never taken from the unedited model's).
    """

    def __init__(self, ahead: int = AHEAD):
        if not isinstance(ahead, int) or ahead < 1:
            raise ValueError(f"ahead must be an integer >= 1, got {ahead!r}")
        self.ahead = ahead
        self.upcoming: list = []
        self._values: dict[str, object] = {}
        self.hits = 0
        self.misses = 0

    def plan(self, requests: Sequence) -> None:
        """The requests the run will edit next, in order (the current one first)."""
        self.upcoming = list(requests)

    def values(self, lm: LoadedModel, layer: int, requests: Sequence, prefixes: Sequence[str], opts,
               optimise: Callable[[list], list], norm: str = "") -> tuple[list, int]:
        """Like `ValueCache.values`; a miss also optimises the next planned requests, in the same call."""
        check = down_proj_checksum(lm)
        key = lambda r: _key(check, layer, r, prefixes, opts, norm, lm.device)  # noqa: E731
        todo = [r for r in requests if key(r) not in self._values]
        missed = len(todo)
        self.hits += len(requests) - missed
        self.misses += missed
        if todo:
            planned = [key(r) for r in self.upcoming]
            last = key(requests[-1])
            after = self.upcoming[planned.index(last) + 1 :] if last in planned else []  # only what comes next
            wanted = {key(r) for r in todo}
            for r in after:
                if len(todo) >= max(self.ahead, len(requests)):
                    break
                if key(r) not in self._values and key(r) not in wanted:
                    wanted.add(key(r))
                    todo.append(r)
            for r, value in zip(todo, optimise(todo)):
                value.delta = value.delta.detach()
                self._values[key(r)] = value
        return [self._values[key(r)] for r in requests], len(requests) - missed

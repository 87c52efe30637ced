"""A disk cache of optimised target values, for batches written again and again into one unedited model.

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
the request (subject, prompt, new and true object), the context prefixes and the optimisation settings.
The reference norm the clamp is relative to is a function of the model, the request and the prefixes,
so it is not part of the key. Values live under `<cache>/values/` (outside git), one small file each,
written atomically; a damaged file is recomputed.

Sharing forward passes with other requests changes a value only by floating-point rounding (the batch's
padding and matmul blocking), so a cached value can differ from a freshly computed one in the last bits;
tests/test_value_cache.py bounds it. Only the batch runner turns the cache on (ctx.value_cache): in a
sequential run the model changes after every edit and no value would ever be met again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Sequence

import torch

from compute.models import LoadedModel

CACHE_VERSION = 1


def weights_fingerprint(lm: LoadedModel) -> str:
    """sha256 over every parameter's name, dtype, shape and bytes (about a second for SmolLM2-135M)."""
    h = hashlib.sha256()
    for name, p in lm.model.named_parameters():
        t = p.detach().contiguous().cpu()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class ValueCache:
    """Target values by (model weights, layer, request, prefixes, settings), under `folder`."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.hits = 0
        self.misses = 0

    def _key(self, fingerprint: str, layer: int, request, prefixes: Sequence[str], opts) -> str:
        spec = {"v": CACHE_VERSION, "model": fingerprint, "layer": int(layer),
                "request": [request.subject, request.prompt, request.target_new, request.target_true],
                "prefixes": list(prefixes), "opts": dataclasses.asdict(opts)}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()

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
               optimise: Callable[[list[int]], list]) -> tuple[list, int]:
        """The values of `requests`, calling `optimise(indices)` (the editor's own optimisation of
        requests[indices]) only for those not cached; returns them and how many came from the cache."""
        fingerprint = weights_fingerprint(lm)
        keys = [self._key(fingerprint, layer, r, prefixes, opts) for r in requests]
        out = [self._load(k) for k in keys]
        todo = [i for i, v in enumerate(out) if v is None]
        self.hits += len(requests) - len(todo)
        self.misses += len(todo)
        for i, value in zip(todo, optimise(todo) if todo else []):
            value.delta = value.delta.detach()
            self._save(keys[i], value)
            out[i] = value
        for v in out:
            v.delta = v.delta.to(lm.device)
        return out, len(requests) - len(todo)

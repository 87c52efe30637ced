"""Measuring beside the edits: a second copy of the model on which measurements run in a background thread,
while the caller goes on editing the first (issue 22 point 2: a sequential run alone on a 2-core machine keeps
one core on the edits and the other on the measurements of the edits before).

A measurement reads the weights only, so the copy needs just the matrices an edit changed: `submit(weights, fn)`
snapshots them (a clone, taken at once in the caller's thread), and the background thread copies them into the
shadow model and runs `fn(shadow)`. Jobs run one at a time in the order they were submitted, so every job sees
the weights it was given, whatever the caller has done to its own model since. Results come back as futures;
`fn` must not touch the store (SQLite connections stay in the caller's thread): it returns rows for the caller
to write.

Numbers are those the caller's model would give at the same weights: the shadow is a deep copy of it, given
the same matrices, and runs the same code. With two threads, each torch operation runs on the thread that
called it, so run the process with one intra-op thread per thread (OMP_NUM_THREADS=1) on a 2-core machine.
"""

from __future__ import annotations

import copy
import dataclasses
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Mapping

import torch

from compute.models import LoadedModel


class Beside:
    """A shadow copy of `lm` and one background thread that runs measurements on it."""

    def __init__(self, lm: LoadedModel):
        # its own tokenizer too: a fast tokenizer's Rust state is not to be shared between threads
        self.shadow = dataclasses.replace(lm, model=copy.deepcopy(lm.model), tokenizer=copy.deepcopy(lm.tokenizer))
        self.shadow.model.eval()
        self._params = dict(self.shadow.model.named_parameters())
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="editscope-beside")

    def submit(self, weights: Mapping[str, torch.Tensor], fn: Callable[[LoadedModel], object]) -> Future:
        """Run `fn(shadow)` after the shadow's parameters named in `weights` are set to them (snapshotted now,
        so the caller may change its own tensors at once). Jobs run in submission order."""
        unknown = sorted(set(weights) - set(self._params))
        if unknown:
            raise KeyError(f"the model has no parameter {unknown[0]!r}")
        snapshot = {name: w.detach().clone() for name, w in weights.items()}

        def job():
            with torch.no_grad():
                for name, tensor in snapshot.items():
                    self._params[name].copy_(tensor)
            return fn(self.shadow)

        return self._pool.submit(job)

    def close(self, wait: bool = True) -> None:
        """Stop the thread (after the jobs already submitted when `wait`, else dropping those not started)."""
        self._pool.shutdown(wait=wait, cancel_futures=not wait)

    def __enter__(self) -> "Beside":
        return self

    def __exit__(self, *exc) -> None:
        self.close(wait=exc[0] is None)

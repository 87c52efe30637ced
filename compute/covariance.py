"""Second-moment statistics of MLP keys (C = E[k k^T]) for ROME and MEMIT, and the stopped-forward hooks.

A key k is the input of a layer's MLP down-projection (`lm.down_proj(layer)`) at one token. ROME and
MEMIT weight their updates by C^-1 so that an edit disturbs the keys of ordinary text as little as
possible; C is estimated once per (model, layer, number of tokens) over the Wikipedia sample that ships
with gensim (compute.wiki) and cached on disk.

The corpus is deterministic: paragraphs in file order, each tokenised without special tokens and followed
by "\\n\\n", concatenated, cut to exactly `n_tokens` tokens and split into chunks of `CHUNK_TOKENS`
(the last one shorter). A tokenizer that adds special tokens in front of every input (a BOS) gets them in
front of every chunk too, as edit prompts do, but their keys are not counted.

The forward pass is stopped at the edited layer: a pre-hook on the down-projection records its input and
raises a private exception that the caller catches, so the layers above are never run (design.md: about
4x faster at the early layers ROME edits). `module_input` and `module_output` expose that trick to the
editors, which need keys and values at a few positions.

Cache files live in `<cache_dir>/covariance/`, named by the model's name, a signature of its shapes, the
layer, n_tokens, the chunk length and `COV_VERSION`; they are written to a temporary file and renamed, and
a file that cannot be read or has the wrong shape is recomputed. In-memory models (tests) all share a
name, so give each its own cache folder.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Sequence

import torch

from compute.models import LoadedModel

COV_VERSION = "1"  # bump when the corpus or the estimator changes, so old cache files are not reused
CHUNK_TOKENS = 256  # tokens of text per forward-pass row
BATCH_CHUNKS = 8  # rows per forward pass: 2048 tokens, a few hundred MB of activations at most


class _StopForward(Exception):
    """Raised by a capture hook once it has what it needs; never leaves this module."""


@contextmanager
def _capture(module, want: str):
    """Record the input ('input') or output ('output') of `module` and stop the forward pass there.

    The hook always removes itself, also when the forward pass fails for another reason.
    """
    box: dict[str, torch.Tensor] = {}

    def pre_hook(_mod, args):
        box["value"] = args[0].detach()
        raise _StopForward

    def post_hook(_mod, _args, output):
        # A transformer block may return a tuple (hidden, attention weights, ...); the hidden state comes first.
        box["value"] = (output[0] if isinstance(output, tuple) else output).detach()
        raise _StopForward

    if want == "input":
        handle = module.register_forward_pre_hook(pre_hook)
    else:
        handle = module.register_forward_hook(post_hook)
    try:
        yield box
    finally:
        handle.remove()


def _stopped_forward(lm: LoadedModel, module, want: str, **forward_kwargs) -> torch.Tensor:
    with torch.no_grad(), _capture(module, want) as box:
        try:
            lm.model(**forward_kwargs, use_cache=False)
        except _StopForward:
            pass
    if "value" not in box:
        raise RuntimeError(f"the forward pass of {lm.name} never reached the hooked module")
    return box["value"]


def module_input(lm: LoadedModel, module, **forward_kwargs) -> torch.Tensor:
    """The input of `module` ([batch, length, d_in]) for one forward pass stopped right before it."""
    return _stopped_forward(lm, module, "input", **forward_kwargs)


def module_output(lm: LoadedModel, module, **forward_kwargs) -> torch.Tensor:
    """The (first) output of `module` ([batch, length, d]) for one forward pass stopped right after it."""
    return _stopped_forward(lm, module, "output", **forward_kwargs)


def down_proj_dims(lm: LoadedModel, layer: int) -> tuple[int, int]:
    """(d_in, d_out) of a layer's down-projection, whatever way round its weight is stored."""
    weight = lm.down_proj(layer).weight
    rows, cols = weight.shape
    return (rows, cols) if lm.arch.down_proj_transposed else (cols, rows)


def corpus_chunks(lm: LoadedModel, cache_dir: Path, n_tokens: int, chunk_tokens: int = CHUNK_TOKENS) -> list[list[int]]:
    """Exactly `n_tokens` text tokens of the Wikipedia sample, in chunks of `chunk_tokens` (deterministic)."""
    from compute.wiki import load_wiki_paragraphs

    if n_tokens < 1:
        raise ValueError(f"n_tokens must be at least 1, got {n_tokens}")
    tok = lm.tokenizer
    stream: list[int] = []
    for row in load_wiki_paragraphs(cache_dir):
        stream.extend(tok(row["text"] + "\n\n", add_special_tokens=False).input_ids)
        if len(stream) >= n_tokens:
            break
    if len(stream) < n_tokens:
        raise ValueError(
            f"the Wikipedia sample has only {len(stream)} tokens for {lm.name}; ask for fewer than {n_tokens}"
        )
    stream = stream[:n_tokens]
    return [stream[i : i + chunk_tokens] for i in range(0, n_tokens, chunk_tokens)]


def _special_prefix(tokenizer) -> list[int]:
    """Ids a tokenizer puts in front of every input (a BOS), found by encoding one letter both ways."""
    with_special = tokenizer("a", add_special_tokens=True).input_ids
    plain = tokenizer("a", add_special_tokens=False).input_ids
    return with_special[: len(with_special) - len(plain)] if with_special[-len(plain) :] == plain else []


def compute_covariances(
    lm: LoadedModel, layers: Sequence[int], chunks: list[list[int]], progress: bool = False
) -> dict[int, torch.Tensor]:
    """E[k k^T] (float64, [d_in, d_in]) over every text token of `chunks` at the down-projection input of
    each layer; one forward pass per batch serves every layer and stops at the highest."""
    layers = sorted(set(layers))
    modules = {layer: lm.down_proj(layer) for layer in layers}
    dims = {layer: down_proj_dims(lm, layer)[0] for layer in layers}
    special = _special_prefix(lm.tokenizer)
    n_special = len(special)
    totals = {layer: torch.zeros((d, d), dtype=torch.float64, device=lm.device) for layer, d in dims.items()}
    seen: dict[int, torch.Tensor] = {}

    def recorder(layer: int):
        def hook(_mod, args):
            seen[layer] = args[0].detach()
            if layer == layers[-1]:
                raise _StopForward  # nothing above the highest layer is needed

        return hook

    # Chunks of equal length share a batch, so no padding (and no pad keys) ever enters the statistics.
    by_length: dict[int, list[list[int]]] = {}
    for chunk in chunks:
        by_length.setdefault(len(chunk), []).append(chunk)
    count, done = 0, 0
    handles = [modules[layer].register_forward_pre_hook(recorder(layer)) for layer in layers]
    try:
        for _length, group in sorted(by_length.items(), reverse=True):
            for start in range(0, len(group), BATCH_CHUNKS):
                rows = [special + chunk for chunk in group[start : start + BATCH_CHUNKS]]
                ids = torch.tensor(rows, device=lm.device)  # [B, n_special + length]
                with torch.no_grad():
                    try:
                        lm.model(input_ids=ids, use_cache=False)
                    except _StopForward:
                        pass
                for layer in layers:
                    flat = seen.pop(layer)[:, n_special:].reshape(-1, dims[layer]).double()  # [B * length, d_in]
                    totals[layer] += flat.T @ flat
                count += len(rows) * (len(rows[0]) - n_special)
                done += len(rows)
                if progress:
                    print(f"covariance {lm.name} layers {layers}: {done}/{len(chunks)} chunks", file=sys.stderr)
    finally:
        for handle in handles:
            handle.remove()
    return {layer: total / count for layer, total in totals.items()}


def compute_covariance(lm: LoadedModel, layer: int, chunks: list[list[int]], progress: bool = False) -> torch.Tensor:
    """E[k k^T] (float64, [d_in, d_in]) over every text token of `chunks` at a layer's down-projection input."""
    return compute_covariances(lm, [layer], chunks, progress)[layer]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "model"


def model_cache_key(lm: LoadedModel) -> str:
    """A file-name-safe key for cached statistics of a model: its name and a signature of its shapes.

    The shapes guard against two different models that happen to share a name (all in-memory ones do).
    """
    d_in, d_out = down_proj_dims(lm, 0)
    vocab = getattr(lm.model.config, "vocab_size", 0)
    signature = f"{lm.model.config.model_type}:{lm.n_layers}:{d_in}:{d_out}:{vocab}"
    return f"{_slug(lm.name)}-{hashlib.sha256(signature.encode()).hexdigest()[:8]}"


def covariance_path(
    lm: LoadedModel, layer: int, n_tokens: int, cache_dir: Path, chunk_tokens: int = CHUNK_TOKENS
) -> Path:
    """Where the statistics of (model, layer, n_tokens) are cached."""
    name = f"{model_cache_key(lm)}-layer{layer}-n{n_tokens}-c{chunk_tokens}-v{COV_VERSION}.pt"
    return Path(cache_dir) / "covariance" / name


def _read_cached(path: Path, d_in: int) -> torch.Tensor | None:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        cov = data["cov"]
    except Exception:  # noqa: BLE001  (a missing, truncated or foreign file is simply recomputed)
        return None
    if not isinstance(cov, torch.Tensor) or cov.dtype != torch.float64 or tuple(cov.shape) != (d_in, d_in):
        return None
    return cov


def write_atomic(path: Path, write: Callable) -> None:
    """Write a cache file through `write(binary_file)` into a temporary file, then rename it into place,
    so a reader never sees half a file (and two writers leave one whole file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def layer_covariances(
    lm: LoadedModel, layers: Sequence[int], n_tokens: int, cache_dir: Path, progress: bool = False
) -> dict[int, torch.Tensor]:
    """`layer_covariance` for several layers: the cached ones are read, the missing ones computed together
    in one pass over the corpus (MEMIT's five layers cost about what the highest one alone costs)."""
    out: dict[int, torch.Tensor] = {}
    paths = {}
    for layer in sorted(set(layers)):
        d_in, _ = down_proj_dims(lm, layer)  # also refuses a layer out of range
        paths[layer] = covariance_path(lm, layer, n_tokens, cache_dir)
        cov = _read_cached(paths[layer], d_in)
        if cov is not None:
            out[layer] = cov
    missing = [layer for layer in paths if layer not in out]
    if missing:
        chunks = corpus_chunks(lm, cache_dir, n_tokens)
        for layer, cov in compute_covariances(lm, missing, chunks, progress=progress).items():
            cov = cov.cpu()
            payload = {"cov": cov, "model": lm.name, "layer": layer, "n_tokens": n_tokens,
                       "chunk_tokens": CHUNK_TOKENS, "version": COV_VERSION}
            write_atomic(paths[layer], lambda fh, payload=payload: torch.save(payload, fh))
            out[layer] = cov
    return {layer: cov.to(lm.device) for layer, cov in out.items()}


def layer_covariance(
    lm: LoadedModel, layer: int, n_tokens: int, cache_dir: Path, progress: bool = False
) -> torch.Tensor:
    """E[k k^T] (float64, [d_in, d_in], on lm.device) of a layer's down-projection input over `n_tokens`
    tokens of the Wikipedia sample; read from the disk cache when there, else computed and cached."""
    return layer_covariances(lm, [layer], n_tokens, cache_dir, progress)[layer]


def covariance_provider(lm: LoadedModel, ctx_cache_dir: Path, n_tokens: int) -> Callable[[int], torch.Tensor]:
    """The `EditContext.covariance` callable: layer -> E[k k^T] for this model with `n_tokens` tokens.

    Each layer is read (or computed) once per provider and the same tensor is handed out again: callers
    must not modify it in place.
    """
    seen: dict[int, torch.Tensor] = {}

    def covariance(layer: int) -> torch.Tensor:
        if layer not in seen:
            seen[layer] = layer_covariance(lm, layer, n_tokens, Path(ctx_cache_dir))
        return seen[layer]

    return covariance

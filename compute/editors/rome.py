"""ROME: a rank-one update of one MLP down-projection (Meng et al. 2022), with the r-ROME key fix.

A fact (subject, relation, object) is read at the subject's last token: the down-projection W of the
edited layer maps a key k (its input there) to a value v (its output, added to the residual stream).
ROME picks

- the key k* = the mean of k over the prompt behind a few short prefixes ("{prefix}{prompt}", the empty
  prefix included), so that the edit does not depend on one exact context. The prefixes are greedy,
  deterministic continuations of fixed start words by the model itself (`context_prefixes`);
- the value v* = v0 + delta, where delta is added to the down-projection's output at the subject's last
  token and optimised with Adam to minimise

      mean over prefixes of NLL(" " + target_new | prefix + prompt)           (token-averaged)
      + kl_weight * KL(P_edited(. | "{subject} is a") || P_unedited(. | "{subject} is a"))
      + weight_decay * ||delta|| / ||v0||^2,

  with ||delta|| clamped to clamp_norm_factor * ||v0|| after every step, and stopped as soon as the
  target's NLL alone falls below stop_nll (design.md: the decay term alone is 0.07-0.1 on the default
  model, so a stop on the total loss rarely fires);
- the update W += (v* - W k) (C^-1 k*)^T / ((C^-1 k*)^T k), with C = E[k k^T] over Wikipedia text
  (compute.covariance), solved in float64 without forming C^-1. With `key_mismatch=False` (the r-ROME
  fix, default) k = k* everywhere; `key_mismatch=True` reproduces the original code, where k and v0 are
  the unprefixed prompt's key and value while C^-1 k* uses the prefix-averaged key.

The value optimisation (`optimise_values`) and the key/value readers are shared with MEMIT, which runs
the same optimisation at the last of its layers.

Speed (`fast=True`): delta only changes positions from the subject's last token on, so the tokens before
it in every prompt are run once without gradient and their keys and values kept in a bank; each step runs
only the remaining "live" tokens of the active prompts, packed without padding into a few bins whose caches
are gathered from the bank, with a block-diagonal causal mask (`_PackedObjective`), and unembeds only the
scored positions. On Llama-style decoders (the default model) the blocks up to the edited layer never see delta
either: the live tokens' hidden states after it are computed once per layout, and each step runs only the
blocks after it (fewer blocks per step the deeper the edited layer: 26 of 30 for ROME at layer 3, 24 for MEMIT
ending at layer 5; benchmarks/bench_values.py measures the whole against the padded objective). `fast=False` is the straightforward loop (full forward and backward of every prompt,
full logits, at every step), kept as a reference for tests; both optimise the same objective with the same
stopping rule.

Invariant: apply then `undo(lm, result)` leaves every parameter bit-identical; parameters'
`requires_grad` flags and the model's train/eval mode are restored.
"""

from __future__ import annotations

import contextvars
import json
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from transformers.cache_utils import DynamicCache

from compute.covariance import (
    down_proj_dims,
    layer_covariances,
    model_cache_key,
    module_input,
    module_output,
    write_atomic,
)
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
from compute.scoring import generate, target_ids

NAME = "ROME"

# Start words of the context prefixes; the first five are MEMIT's, the rest extend them to twelve.
START_WORDS = ("The", "Therefore", "Because", "I", "You", "In", "It", "When", "However", "This", "We", "After")
KL_TEMPLATE = "{subject} is a"  # ROME's essence-drift prompt
KEY_CONSTRAINTS = ("all", "mean")  # see update_direction; "all" is the default of ROME, MEMIT and AlphaEdit


# --------------------------------------------------------------------------- hyperparameters


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class ValueOptions:
    """The value-optimisation settings ROME and MEMIT share (see the module docstring for the objective)."""

    lr: float
    steps: int  # at most this many forward evaluations (so at most steps - 1 Adam updates)
    kl_weight: float
    weight_decay: float
    clamp_norm_factor: float
    stop_nll: float  # stop once the mean target NLL (nats per token) is below this
    fast: bool


def _is_number(value) -> bool:
    """A finite int or float (not a bool): NaN would pass every range check below, since it compares False."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def value_options(hp) -> ValueOptions:
    """The value-optimisation settings of a ROME or MEMIT hyperparameter object (same field names)."""
    return ValueOptions(
        hp.v_lr, hp.v_steps, hp.kl_weight, hp.v_weight_decay, hp.clamp_norm_factor, hp.stop_nll, hp.fast
    )


def check_value_fields(editor: str, hp) -> None:
    """Validate the value-optimisation and prefix fields both editors have, naming the bad field."""
    for name, low, strict in (("v_lr", 0, True), ("clamp_norm_factor", 0, True), ("kl_weight", 0, False),
                              ("v_weight_decay", 0, False), ("stop_nll", 0, False)):
        value = getattr(hp, name)
        if not _is_number(value) or value < low or (strict and value == low):
            bound = f"{'>' if strict else '>='} {low}"
            raise EditorError(f"{editor} field {name!r} must be a number {bound}, got {value!r}")
    if not _is_int(hp.v_steps) or hp.v_steps < 1:
        raise EditorError(f"{editor} field 'v_steps' must be an integer >= 1, got {hp.v_steps!r}")
    if not _is_int(hp.n_prefixes) or not 0 <= hp.n_prefixes <= len(START_WORDS):
        raise EditorError(
            f"{editor} field 'n_prefixes' must be an integer in 0..{len(START_WORDS)}, got {hp.n_prefixes!r}"
        )
    if not _is_int(hp.prefix_tokens) or hp.prefix_tokens < 1:
        raise EditorError(f"{editor} field 'prefix_tokens' must be an integer >= 1, got {hp.prefix_tokens!r}")
    if not _is_int(hp.cov_n_tokens) or hp.cov_n_tokens < 1:
        raise EditorError(f"{editor} field 'cov_n_tokens' must be an integer >= 1, got {hp.cov_n_tokens!r}")
    if not isinstance(hp.fast, bool):
        raise EditorError(f"{editor} field 'fast' must be true or false, got {hp.fast!r}")


def check_key_constraint(editor: str, hp, allowed: tuple[str, ...] = KEY_CONSTRAINTS) -> None:
    if hp.key_constraint not in allowed:
        raise EditorError(f"{editor} field 'key_constraint' must be one of {list(allowed)}, got {hp.key_constraint!r}")


@dataclass(frozen=True)
class ROMEHyperParams:
    """Hyperparameters of ROME; hparams/ROME/<model>.json says where each value comes from.

    Defaults are the ROME paper's GPT-2 XL settings (lr 0.5, 20 steps, KL 0.0625, decay 0.5, clamp 4)
    except where design.md's measurements on SmolLM2 say otherwise (stop on the target's NLL).
    """

    layer: int  # whose MLP down-projection is rewritten
    v_lr: float = 0.5  # Adam learning rate of delta
    v_steps: int = 20  # at most this many optimisation steps
    kl_weight: float = 0.0625  # weight of the KL term on "{subject} is a"
    v_weight_decay: float = 0.5  # weight of ||delta|| / ||v0||^2
    clamp_norm_factor: float = 4.0  # ||delta|| <= clamp_norm_factor * ||v0||
    n_prefixes: int = 10  # generated context prefixes (the empty prefix is always used as well)
    prefix_tokens: int = 8  # tokens generated after each start word
    stop_nll: float = 0.05  # stop once the mean NLL of the target (not the total loss) is below this
    cov_n_tokens: int = 20_000  # Wikipedia tokens for C = E[k k^T] (design.md: 20k as good as 100k)
    use_covariance: bool = True  # False: C = I (ablation; the leak is 1.1-1.8x worse per design.md)
    key_mismatch: bool = False  # True: the original ROME code's key mismatch; False: the r-ROME fix
    # "all": deliver the optimised change in full on every key the value optimisation used (update_direction);
    # "mean": the paper's u = C^-1 k* for the prefix-mean key only (fails on prompts that begin with the subject)
    key_constraint: str = "all"
    fast: bool = True  # False: the straightforward reference loop (same objective, slower)
    rect_top: float = 1.0  # RECT: keep this share of the update's entries (largest |dW/W|), zero the rest; 1 = off

    def validate(self) -> None:
        """Refuse values that cannot describe an edit, naming the field."""
        check_finite(NAME, self)
        if not _is_int(self.layer) or self.layer < 0:
            raise EditorError(f"ROME field 'layer' must be a non-negative integer, got {self.layer!r}")
        check_value_fields(NAME, self)
        check_key_constraint(NAME, self)
        for name in ("use_covariance", "key_mismatch"):
            if not isinstance(getattr(self, name), bool):
                raise EditorError(f"ROME field {name!r} must be true or false, got {getattr(self, name)!r}")
        if not _is_number(self.rect_top) or not 0 < self.rect_top <= 1:
            raise EditorError(f"ROME field 'rect_top' must be a share in (0, 1] (1 = RECT off), got {self.rect_top!r}")

    def __post_init__(self):
        self.validate()


# --------------------------------------------------------------------------- prompts and token positions


PREFIX_VERSION = "1"  # bump when the way prefixes are generated changes, so cached ones are not reused


def _generate_prefixes(lm: LoadedModel, n_prefixes: int, prefix_tokens: int) -> list[str]:
    words = list(START_WORDS[:n_prefixes])
    # A newline in front makes the start word open a document: alone at position 0, the default model
    # continues "The" with "-the-world-is-a"; after "\n" it writes prose (ROME starts from <|endoftext|>,
    # which not every tokenizer has).
    texts = generate(lm, ["\n" + w for w in words], max_new_tokens=prefix_tokens, batch_size=len(words))
    prefixes = []
    for word, text in zip(words, texts):
        prefix = " ".join((word + text).split()).rstrip(" .")  # one line, no trailing full stop
        prefixes.append((prefix or word) + ". ")
    return prefixes


def context_prefixes(
    lm: LoadedModel, n_prefixes: int, prefix_tokens: int, cache_dir: Path | None = None
) -> tuple[str, ...]:
    """The empty prefix and `n_prefixes` greedy continuations of START_WORDS, each ending in '. '.

    Greedy decoding makes them a function of the model alone (ROME samples them; we want runs to repeat).
    Like ROME, they are made once per model: with `cache_dir` they are kept in
    `<cache_dir>/rome/`, so sequential edits and later runs reuse the unedited model's prefixes instead
    of regenerating them (about a second on the default model).
    """
    if n_prefixes == 0:
        return ("",)
    path = None
    if cache_dir is not None:
        name = f"prefixes-{model_cache_key(lm)}-n{n_prefixes}-t{prefix_tokens}-v{PREFIX_VERSION}.json"
        path = Path(cache_dir) / "rome" / name
        try:
            cached = json.loads(path.read_text())
            if isinstance(cached, list) and len(cached) == n_prefixes and all(isinstance(p, str) for p in cached):
                return ("", *cached)
        except (OSError, ValueError):
            pass  # missing or damaged: regenerate below
    prefixes = _generate_prefixes(lm, n_prefixes, prefix_tokens)
    if path is not None:
        write_atomic(path, lambda fh: fh.write(json.dumps(prefixes).encode()))
    return ("", *prefixes)


def subject_last_token(tokenizer, text: str, subject: str, search_from: int = 0) -> tuple[list[int], int]:
    """Token ids of `text` (with the tokenizer's special tokens) and the index of the subject's last token.

    The subject is its first occurrence at or after character `search_from` (where the prompt starts
    behind a prefix); its last token is the last one whose character span overlaps the subject's, which
    holds whether the tokenizer counts a leading space into a token or not.
    """
    start = text.find(subject, search_from)
    if not subject or start < 0:
        raise EditorError(f"the subject {subject!r} does not occur in {text[search_from:]!r}: the prompt must name it")
    end = start + len(subject)
    enc = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
    hits = [i for i, (a, b) in enumerate(enc.offset_mapping) if a < end and b > start and b > a]
    if not hits:
        raise EditorError(f"no token of {text!r} covers the subject {subject!r}")
    return list(enc.input_ids), hits[-1]


@dataclass
class _Row:
    """One tokenised prompt: ids, the subject's last token, and the positions whose next token is scored."""

    ids: list[int]
    subject: int
    predict: list[int]  # positions whose next-token distribution enters the loss
    labels: list[int]  # the target token at each of those positions (-1 for the KL position)


def _rewrite_rows(lm: LoadedModel, request: EditRequest, prefixes: Sequence[str]) -> list[_Row]:
    """"{prefix}{prompt}" followed by the target's tokens but its last, for each prefix."""
    _, t_ids = target_ids(lm.tokenizer, request.prompt, request.target_new)
    rows = []
    for prefix in prefixes:
        p_ids, s = subject_last_token(lm.tokenizer, prefix + request.prompt, request.subject, len(prefix))
        predict = [len(p_ids) - 1 + j for j in range(len(t_ids))]  # position i predicts token i + 1
        rows.append(_Row(p_ids + t_ids[:-1], s, predict, list(t_ids)))
    return rows


def _kl_row(lm: LoadedModel, request: EditRequest) -> _Row:
    text = KL_TEMPLATE.format(subject=request.subject)
    ids, s = subject_last_token(lm.tokenizer, text, request.subject)
    return _Row(ids, s, [len(ids) - 1], [-1])


@dataclass
class _Batch:
    """Rows left-padded so that every subject's last token sits in column `S`, then right-padded.

    position_ids count from each row's first real token, so padding changes no result.
    """

    ids: torch.Tensor  # [B, W]
    mask: torch.Tensor  # [B, W]
    positions: torch.Tensor  # [B, W]
    S: int
    pred_rows: torch.Tensor  # [P] batch row of each scored position
    pred_cols: torch.Tensor  # [P] its column in the padded batch
    labels: torch.Tensor  # [P] target token, -1 at KL positions
    owner: torch.Tensor  # [P] the row each scored position belongs to


def _align(lm: LoadedModel, rows: Sequence[_Row]) -> _Batch:
    """Pad `rows` into one batch with their subjects' last tokens in one column."""
    S = max(r.subject for r in rows)
    lefts = [S - r.subject for r in rows]
    W = max(a + len(r.ids) for a, r in zip(lefts, rows))
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(rows), W), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), W), dtype=torch.long)
    positions = torch.zeros((len(rows), W), dtype=torch.long)
    pred_rows, pred_cols, labels, owner = [], [], [], []
    for i, (a, r) in enumerate(zip(lefts, rows)):
        ids[i, a : a + len(r.ids)] = torch.tensor(r.ids)
        mask[i, a : a + len(r.ids)] = 1
        positions[i, a:] = torch.arange(W - a)
        for p, label in zip(r.predict, r.labels):
            pred_rows.append(i)
            pred_cols.append(a + p)
            labels.append(label)
            owner.append(i)
    dev = lm.device
    return _Batch(
        ids.to(dev), mask.to(dev), positions.to(dev), S,
        torch.tensor(pred_rows, dtype=torch.long, device=dev), torch.tensor(pred_cols, dtype=torch.long, device=dev),
        torch.tensor(labels, dtype=torch.long, device=dev), torch.tensor(owner, dtype=torch.long, device=dev),
    )


# --------------------------------------------------------------------------- keys and values


def _subject_batch(lm: LoadedModel, requests: Sequence[EditRequest], prefixes: Sequence[str]) -> _Batch:
    """"{prefix}{prompt}" for every (request, prefix), cut after the subject's last token (later tokens
    cannot change anything there: attention is causal), aligned on that token."""
    rows = []
    for request in requests:
        for prefix in prefixes:
            ids, s = subject_last_token(lm.tokenizer, prefix + request.prompt, request.subject, len(prefix))
            rows.append(_Row(ids[: s + 1], s, [], []))
    return _align(lm, rows)


def subject_keys(
    lm: LoadedModel, layer: int, requests: Sequence[EditRequest], prefixes: Sequence[str]
) -> torch.Tensor:
    """Down-projection inputs at each subject's last token: [n_requests, n_prefixes, d_in].

    The forward pass stops at the layer: nothing above it is needed.
    """
    batch = _subject_batch(lm, requests, prefixes)
    keys = module_input(
        lm, lm.down_proj(layer), input_ids=batch.ids, attention_mask=batch.mask, position_ids=batch.positions
    )[:, batch.S]  # [N * T, d_in]
    return keys.reshape(len(requests), len(prefixes), -1)


def subject_block_outputs(
    lm: LoadedModel, layer: int, requests: Sequence[EditRequest], prefixes: Sequence[str]
) -> torch.Tensor:
    """The residual stream after block `layer` at each subject's last token: [n_requests, n_prefixes, d]."""
    batch = _subject_batch(lm, requests, prefixes)
    block = lm.module(lm.arch.layer.format(layer))
    out = module_output(lm, block, input_ids=batch.ids, attention_mask=batch.mask, position_ids=batch.positions)
    return out[:, batch.S].reshape(len(requests), len(prefixes), -1)  # [N, T, d]


def down_proj_value(lm: LoadedModel, layer: int, keys: torch.Tensor) -> torch.Tensor:
    """What the layer's down-projection outputs for keys [..., d_in] (bias included): [..., d_out]."""
    with torch.no_grad():
        return lm.down_proj(layer)(keys)


# --------------------------------------------------------------------------- value optimisation


@contextmanager
def edit_mode(lm: LoadedModel):
    """Eval mode (no dropout noise in the loss) and no parameter gradients for the duration of an edit;
    both restored afterwards, whatever happens."""
    flags = {n: p.requires_grad for n, p in lm.model.named_parameters()}
    was_training = lm.model.training
    try:
        lm.model.eval()
        for p in lm.model.parameters():
            p.requires_grad_(False)
        yield
    finally:
        for n, p in lm.model.named_parameters():
            p.requires_grad_(flags[n])
        lm.model.train(was_training)


@contextmanager
def _add_at(module, where: torch.Tensor, row_delta: torch.Tensor):
    """Add each row's delta (row_delta [B, d]) to the module's output where `where` [B, T] is 1."""

    def hook(_mod, _args, out):
        return out + where[..., None] * row_delta[:, None, :]  # [B, T, d]

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _remap(active: torch.Tensor, pred_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Which scored positions belong to active rows, and their row numbers once only active rows are kept."""
    keep = active[pred_rows]  # [P]
    new_row = torch.cumsum(active.long(), 0) - 1  # [B] row number among the active rows
    return keep, new_row[pred_rows[keep]]


@dataclass
class _Layout:
    """Where the live tokens of a set of active rows sit once packed into bins (see `_PackedObjective`)."""

    rows: tuple[int, ...]  # the active rows
    ids: torch.Tensor  # [n_bins, Q] live tokens, padding where a bin is not full
    positions: torch.Tensor  # [n_bins, Q] each token's position in its own row
    mask: torch.Tensor  # [n_bins, 1, Q, P + Q] bool: which cached prefix slots and live slots each query sees
    gather: torch.Tensor  # [n_bins * P] bank row of each bin's prefix slot (the bank's last row, zeros, pads)
    subject: torch.Tensor  # [B_active] flat slot (bin * Q + column) of each active row's subject token
    scored: torch.Tensor  # [P_active] flat slot of each kept scored position, in the order of `labels`
    keep: torch.Tensor  # [P] bool: scored positions of the active rows


def _first_fit_decreasing(sizes: dict[int, int], capacity: int) -> list[list[int]]:
    """Bins (lists of keys of `sizes`) of total size <= capacity: longest first, each into the first bin with room."""
    bins: list[list[int]] = []
    room: list[int] = []
    for key in sorted(sizes, key=lambda k: -sizes[k]):
        b = next((b for b, left in enumerate(room) if left >= sizes[key]), len(bins))
        if b == len(bins):
            bins.append([])
            room.append(capacity)
        bins[b].append(key)
        room[b] -= sizes[key]
    return bins


class _PackedObjective:
    """Log-probabilities at the scored positions, running only each row's live tokens, packed without padding.

    A row's tokens before its subject's last token ("prefix") never see delta: they are run once without
    gradient and their keys and values are kept, per layer, in a bank of all rows' prefix tokens. Each call
    runs only the live tokens (the subject's last token and after, 2-10 tokens per row on the default model)
    of the active rows, packed first-fit-decreasing into bins. A bin's cache is
    gathered from the bank (one index_select per layer and tensor) and holds only its own rows' prefixes,
    and a block-diagonal causal 4D mask lets each live token see its own row's prefix and earlier live tokens
    only, so every row is computed as if it were alone. Positions count within each row. Slots a bin leaves
    empty are padding queries that see only themselves (a query that sees nothing would give NaN). The bin
    length is the one between the longest row and twice that with the fewest slots in all.

    Why bins rather than one long packed row: attention costs queries times keys, and in one row every row's
    prefix would be a key for every query. On the default model, a MEMIT batch of 10 cases of the 240-case set
    (120 rows) had 600 padded live positions for 426 real ones; the bins hold 432. Five ROME requests: 480
    padded, 367 real, 396 packed. Rows of requests that have stopped leave the batch: the layout (and the
    gathered cache) is rebuilt when the active set changes, a few times per optimisation, and reused on every
    other step (masking stopped rows instead would keep computing their tokens).
    """

    def __init__(self, lm: LoadedModel, layer: int, rows: Sequence[_Row]):
        self.lm = lm
        self.layer = layer
        self.module = lm.down_proj(layer)
        self.base = lm.model.base_model
        self.unembed = lm.model.get_output_embeddings()
        self.rows = list(rows)
        self.lean = _runs_from_a_layer(self.base)
        self._lower: tuple | None = None  # lean: (hidden after `layer` without delta, mask, rotary embeddings)
        self.pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
        dev = lm.device
        owner, labels, offset = [], [], []
        for i, r in enumerate(rows):
            owner += [i] * len(r.predict)
            labels += r.labels
            offset += [p - r.subject for p in r.predict]  # scored position's column among the live tokens
        self.owner = torch.tensor(owner, dtype=torch.long, device=dev)  # [P] its row
        self.labels = torch.tensor(labels, dtype=torch.long, device=dev)  # [P] target token, -1 at KL positions
        self.offset = offset
        # Prefix bank: row i's prefix tokens are bank rows start[i] .. start[i] + s_i - 1; one zero row at the end.
        self.start = [0]
        for r in rows:
            self.start.append(self.start[-1] + r.subject)
        self.bank: list[tuple[torch.Tensor, torch.Tensor]] = []  # per layer ([N_prefix + 1, H * hd] keys, values)
        if self.start[-1] > 0:
            # each prefix ends right before column S (its row's "subject" index is one past its end)
            batch = _align(lm, [_Row(r.ids[: r.subject], r.subject, [], []) for r in rows if r.subject > 0])
            S = batch.S
            with torch.no_grad():
                past = self.base(input_ids=batch.ids, attention_mask=batch.mask, position_ids=batch.positions,
                                 use_cache=True).past_key_values
            take = []  # flat index (batch row * S + column) of every real prefix token, in bank order
            for b, r in enumerate(r for r in rows if r.subject > 0):
                take += [b * S + c for c in range(S - r.subject, S)]
            take = torch.tensor(take, dtype=torch.long, device=dev)
            for layer_cache in past.layers:
                pair = []
                for t in (layer_cache.keys, layer_cache.values):  # [B, H, S, hd]
                    flat = t.transpose(1, 2).reshape(t.shape[0] * S, -1)  # [B * S, H * hd]
                    pair.append(torch.cat([flat.index_select(0, take), flat.new_zeros(1, flat.shape[1])]))
                self.bank.append((pair[0], pair[1]))
            self.heads, self.head_dim = past.layers[0].keys.shape[1], past.layers[0].keys.shape[3]
        self._layout: _Layout | None = None
        self._cache: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def layout(self, active: torch.Tensor) -> _Layout:
        """Pack the live tokens of the active rows [B] into bins (first-fit decreasing, longest row first)."""
        rows = tuple(active.nonzero()[:, 0].tolist())
        live = {i: len(self.rows[i].ids) - self.rows[i].subject for i in rows}
        longest = max(live.values())
        # The bin length with the fewest slots in all, up to twice the longest row (rows of 6 and 7 tokens
        # waste half of bins of 7 but fill bins of 13); attention grows with it, but is a few percent of a step.
        Q, bins = min(((q, _first_fit_decreasing(live, q)) for q in range(longest, 2 * longest + 1)),
                      key=lambda qb: (qb[0] * len(qb[1]), qb[0]))
        P = max(sum(self.rows[i].subject for i in rows_b) for rows_b in bins)
        nb = len(bins)
        ids = torch.full((nb, Q), self.pad, dtype=torch.long)
        positions = torch.zeros((nb, Q), dtype=torch.long)
        mask = torch.zeros((nb, 1, Q, P + Q), dtype=torch.bool)
        gather = torch.full((nb, P), self.start[-1], dtype=torch.long)  # the bank's zero row
        slot = {}  # row -> flat slot of its subject token
        for b, rows_b in enumerate(bins):
            p = q = 0
            for i in rows_b:
                r, n = self.rows[i], live[i]
                ids[b, q : q + n] = torch.tensor(r.ids[r.subject :])
                positions[b, q : q + n] = torch.arange(r.subject, r.subject + n)
                gather[b, p : p + r.subject] = torch.arange(self.start[i], self.start[i + 1])
                mask[b, 0, q : q + n, p : p + r.subject] = True  # its own prefix
                mask[b, 0, q : q + n, P + q : P + q + n] = torch.ones(n, n, dtype=torch.bool).tril()  # causal
                slot[i] = b * Q + q
                p, q = p + r.subject, q + n
            for c in range(q, Q):
                mask[b, 0, c, P + c] = True  # padding sees itself only
        active_set = set(rows)
        keep = [int(o) in active_set for o in self.owner.tolist()]
        scored = [slot[o] + off for o, off, k in zip(self.owner.tolist(), self.offset, keep) if k]
        dev = self.lm.device
        return _Layout(
            rows, ids.to(dev), positions.to(dev), mask.to(dev), gather.flatten().to(dev),
            torch.tensor([slot[i] for i in rows], dtype=torch.long, device=dev),
            torch.tensor(scored, dtype=torch.long, device=dev), torch.tensor(keep, device=dev),
        )

    def __call__(self, row_delta: torch.Tensor, active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-probs [P_active, V], keep [P] bool): the scored positions of the active rows [B] only."""
        rows = tuple(active.nonzero()[:, 0].tolist())
        if self._layout is None or self._layout.rows != rows:
            self._layout = lay = self.layout(active)
            nb, P = lay.ids.shape[0], lay.gather.shape[0] // lay.ids.shape[0]
            self._cache = [
                tuple(t.index_select(0, lay.gather).view(nb, P, self.heads, self.head_dim).transpose(1, 2) for t in pair)
                for pair in self.bank
            ]  # per layer ([n_bins, H, P, hd] keys, values)
            self._lower = self._below(lay) if self.lean else None
        lay = self._layout
        src = row_delta[active]  # [B_active, d]
        if self.lean:
            hidden = self._above(lay, _PrefixCache(self._cache) if self._cache else None, src)
        else:
            cache = DynamicCache(ddp_cache_data=self._cache) if self._cache else None  # the model appends to it
            def add_delta(_mod, _args, out):  # out [n_bins, Q, d]: delta at each row's subject token
                return out.reshape(-1, out.shape[-1]).index_add(0, lay.subject, src.to(out.dtype)).view_as(out)

            handle = self.module.register_forward_hook(add_delta)
            try:
                hidden = self.base(
                    input_ids=lay.ids, attention_mask=lay.mask, position_ids=lay.positions,
                    past_key_values=cache, use_cache=cache is not None,
                ).last_hidden_state  # [n_bins, Q, d]
            finally:
                handle.remove()
        logits = self.unembed(hidden.reshape(-1, hidden.shape[-1])[lay.scored]).float()  # [P_active, V]
        return torch.log_softmax(logits, dim=-1), lay.keep


    def _below(self, lay: _Layout) -> tuple:
        """Lean path, once per layout: the live tokens' hidden states after the edited layer without delta (the
        blocks up to it never see delta, so no step needs to run them), with the layout's attention mask and
        rotary embeddings, which every step reuses."""
        from transformers.masking_utils import create_causal_mask

        base = self.base
        with torch.no_grad():
            hidden = base.embed_tokens(lay.ids)  # [n_bins, Q, d]
            cache = DynamicCache(ddp_cache_data=self._cache) if self._cache else None
            mask = create_causal_mask(config=base.config, inputs_embeds=hidden, attention_mask=lay.mask,
                                      past_key_values=cache, position_ids=lay.positions)
            rotary = base.rotary_emb(hidden, position_ids=lay.positions)
            for block in base.layers[: self.layer + 1]:
                hidden = block(hidden, attention_mask=mask, position_embeddings=rotary, position_ids=lay.positions,
                               past_key_values=cache, use_cache=cache is not None)
        return hidden, mask, rotary

    def _above(self, lay: _Layout, cache, src: torch.Tensor) -> torch.Tensor:
        """Lean path, every step: delta added at each row's subject token to the stored hidden states, then only
        the blocks after the edited layer and the final norm; [n_bins, Q, d]."""
        lower, mask, rotary = self._lower
        hidden = lower.reshape(-1, lower.shape[-1]).index_add(0, lay.subject, src.to(lower.dtype)).view_as(lower)
        for block in self.base.layers[self.layer + 1 : self.base.config.num_hidden_layers]:
            hidden = block(hidden, attention_mask=mask, position_embeddings=rotary, position_ids=lay.positions,
                           past_key_values=cache, use_cache=cache is not None)
        return self.base.norm(hidden)


class _PrefixCache:
    """One step's key/value cache on the lean path (`_PackedObjective._above`, blocks called directly): each
    block's attention gets its bins' cached prefix keys and values followed by the live tokens' own, the tensors
    DynamicCache's `update` returns. DynamicCache would first copy every layer's whole prefix cache into itself,
    at every step (tests/test_rome.py checks that the two give bit-identical values)."""

    __slots__ = ("layers",)

    def __init__(self, layers: Sequence[tuple[torch.Tensor, torch.Tensor]]):
        self.layers = layers  # per layer ([n_bins, H, P, hd] keys, values)

    def update(self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int, *args, **kwargs):
        prefix_keys, prefix_values = self.layers[layer_idx]
        return torch.cat([prefix_keys, keys], dim=-2), torch.cat([prefix_values, values], dim=-2)


def _runs_from_a_layer(base) -> bool:
    """Whether a step can start after the edited layer (`_PackedObjective._below`/`_above`): decoders laid out as
    Llama's (token embeddings, rotary positions inside attention, blocks called with precomputed rotary
    embeddings, a final norm), which have no position embedding added to the input. Others (GPT-2, GPT-NeoX) run
    every block at every step."""
    return (type(base).__name__ in ("LlamaModel", "MistralModel", "Qwen2Model")
            and all(hasattr(base, a) for a in ("embed_tokens", "layers", "norm", "rotary_emb")))


class _ReferenceObjective:
    """The same log-probabilities from a full forward pass of every prompt with full logits."""

    def __init__(self, lm: LoadedModel, layer: int, rows: Sequence[_Row]):
        self.lm = lm
        self.module = lm.down_proj(layer)
        width = max(len(r.ids) for r in rows)
        pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
        self.ids = torch.full((len(rows), width), pad, dtype=torch.long, device=lm.device)
        self.mask = torch.zeros((len(rows), width), dtype=torch.long, device=lm.device)
        self.where = torch.zeros((len(rows), width), device=lm.device)
        pred_rows, pred_cols, labels = [], [], []
        for i, r in enumerate(rows):
            self.ids[i, : len(r.ids)] = torch.tensor(r.ids)
            self.mask[i, : len(r.ids)] = 1
            self.where[i, r.subject] = 1.0
            pred_rows += [i] * len(r.predict)
            pred_cols += r.predict
            labels += r.labels
        self.pred_rows = torch.tensor(pred_rows, dtype=torch.long, device=lm.device)
        self.pred_cols = torch.tensor(pred_cols, dtype=torch.long, device=lm.device)
        self.labels = torch.tensor(labels, dtype=torch.long, device=lm.device)  # [P]
        self.owner = self.pred_rows  # [P]

    def __call__(self, row_delta: torch.Tensor, active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = active.nonzero()[:, 0]  # [B_active]
        keep, rows = _remap(active, self.pred_rows)
        with _add_at(self.module, self.where[idx], row_delta[idx]):
            logits = self.lm.model(input_ids=self.ids[idx], attention_mask=self.mask[idx], use_cache=False).logits
        logp = torch.log_softmax(logits.float(), dim=-1)  # [B_active, T, V]
        return logp[rows, self.pred_cols[keep]], keep  # [P_active, V]


@dataclass
class ValueResult:
    """One request's optimised delta and how the optimisation went."""

    delta: torch.Tensor  # [d_out], detached
    steps: int  # forward evaluations until it stopped
    nll_start: float
    nll_final: float  # mean target NLL at the returned delta
    kl_final: float
    delta_norm: float
    clamped: bool  # whether the norm clamp was active at the end
    nlls: list[float]  # mean target NLL at each step

    def info(self) -> dict:
        return {
            "steps": self.steps,
            "nll_start": round(self.nll_start, 6),
            "nll_final": round(self.nll_final, 6),
            "nlls": [round(x, 4) for x in self.nlls],
            "kl_final": round(self.kl_final, 6),
            "delta_norm": round(self.delta_norm, 6),
            "clamped": self.clamped,
        }


# Grouped-query attention with a mask: transformers' SDPA path copies each key/value head to every query head of
# its group (repeat_kv) unless asked to let torch's kernel share them (`enable_gqa`), which it does only without
# a mask (transformers.integrations.sdpa_attention.use_gqa_in_sdpa). The packed objective always has a mask.
# On this CPU build the shared heads give bit-identical log-probabilities, values and updates (torch.equal on
# the default model: ROME's 40-step optimisations of 3 edits at layer 3, MEMIT batches of 10 at layer 5) and a
# MEMIT batch of 10 about 1.1x faster on 2 threads (30.4 -> 27.4 s, side by side in one process); tests/test_rome.py
# checks the equality on the tiny model. Switched on only inside `optimise_values`, per thread (a ContextVar),
# so evaluation (whose one-token decode steps take another path) is unchanged.
_SHARED_KV_HEADS: contextvars.ContextVar[bool] = contextvars.ContextVar("editscope_shared_kv_heads", default=False)
SHARED_KV_HEADS = True  # the switch's setting: False restores transformers' own choice everywhere


def _install_shared_kv_heads() -> bool:
    """Make transformers' `use_gqa_in_sdpa` answer True while `_SHARED_KV_HEADS` is set in this thread; False
    when this transformers has no such function (nothing changes then)."""
    try:
        from transformers.integrations import sdpa_attention
    except ImportError:
        return False
    original = getattr(sdpa_attention, "use_gqa_in_sdpa", None)
    if original is None:
        return False
    if getattr(original, "editscope", False):
        return True

    def use_gqa_in_sdpa(*args, **kwargs):
        return True if _SHARED_KV_HEADS.get() else original(*args, **kwargs)

    use_gqa_in_sdpa.editscope = True
    sdpa_attention.use_gqa_in_sdpa = use_gqa_in_sdpa
    return True


@contextmanager
def shared_kv_heads(on: bool = True):
    """Within this block (this thread), SDPA attention shares key/value heads across their query group."""
    token = _SHARED_KV_HEADS.set(bool(on) and SHARED_KV_HEADS and _install_shared_kv_heads())
    try:
        yield
    finally:
        _SHARED_KV_HEADS.reset(token)


def optimise_values(
    lm: LoadedModel,
    layer: int,
    requests: Sequence[EditRequest],
    prefixes: Sequence[str],
    opts: ValueOptions,
    reference_norms: Sequence[float],
) -> list[ValueResult]:
    """For each request, the delta that, added to the output of `layer`'s down-projection at its subject's
    last token, makes the model say " " + target_new after every "{prefix}{prompt}" (objective in the
    module docstring).

    `reference_norms[i]` is ||v0|| of request i, the norm of what its delta is added to (ROME: the
    down-projection's output; MEMIT: the residual stream): the clamp and the weight decay are relative to
    it. All requests share each forward pass, but their losses, Adam states (Adam is elementwise), clamps
    and stopping are independent, so the result is that of one optimisation per request; a request that
    has stopped is frozen and its prompts leave the batch. Call inside `edit_mode`.
    """
    rows: list[_Row] = []
    row_request: list[int] = []
    n_rewrite = []
    for i, request in enumerate(requests):
        rewrite = _rewrite_rows(lm, request, prefixes)
        rows += rewrite + [_kl_row(lm, request)]
        row_request += [i] * (len(rewrite) + 1)
        n_rewrite.append(len(rewrite))
    with shared_kv_heads():
        return _optimise(lm, layer, requests, rows, row_request, n_rewrite, opts, reference_norms)


@dataclass
class _Picks:
    """Where a step's loss reads the scored positions' log-probabilities (rows of logp [P_active, V]), for one
    set of active rows: the target tokens by (row, label) pairs, each request's KL row by index. Built once per
    layout. Picking by pairs copies no target row of logp ([P_t, V]) and puts none in the backward pass, where
    masking with a boolean did both (a MEMIT batch of 10: 1.2x faster); the numbers, gradients included, are
    the same (tests/test_rome.py)."""

    keep: torch.Tensor  # [P] bool: the scored positions of the active rows (the layout's own tensor)
    at: torch.Tensor  # [P_t] rows of logp that score a target token
    labels: torch.Tensor  # [P_t] their target tokens
    request_at: torch.Tensor  # [P_t] their request
    weight_at: torch.Tensor  # [P_t] their weight in the request's NLL
    kl_at: torch.Tensor  # [N_active] rows of logp that are KL positions
    request_kl: torch.Tensor  # [N_active] their request

    @classmethod
    def of(cls, keep, labels, is_target, pos_req, weight) -> "_Picks":
        tgt = is_target[keep]
        at, kl_at = tgt.nonzero()[:, 0], (~tgt).nonzero()[:, 0]
        req = pos_req[keep]
        return cls(keep, at, labels[keep][at], req[at], weight[keep][at], kl_at, req[kl_at])

    def nll_and_kl_logp(self, logp: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(each request's weighted target NLL [N], its KL row's log-probs [N, V], zero for inactive ones)."""
        token_nll = -logp[self.at, self.labels]  # [P_t]
        nll = torch.zeros(n, device=logp.device).index_add(0, self.request_at, token_nll * self.weight_at)
        kl_logp = logp.new_zeros((n, logp.shape[1])).index_copy(0, self.request_kl, logp.index_select(0, self.kl_at))
        return nll, kl_logp


def _optimise(lm, layer, requests, rows, row_request, n_rewrite, opts, reference_norms) -> list[ValueResult]:
    """`optimise_values` once its rows are built."""
    n = len(requests)
    dev = lm.device
    objective = _PackedObjective(lm, layer, rows) if opts.fast else _ReferenceObjective(lm, layer, rows)
    row_req = torch.tensor(row_request, device=dev)  # [B] request of each row
    labels, owner = objective.labels, objective.owner  # [P], [P]
    pos_req = row_req[owner]  # [P] request of each scored position
    is_target = labels >= 0  # [P]
    # Weight 1 / (m * R) on each of a row's m target tokens, R rewrite rows per request: summing gives the
    # mean over prefixes of the token-averaged NLL.
    row_tokens = torch.bincount(owner[is_target], minlength=len(rows)).clamp(min=1).float()  # [B]
    weight = 1.0 / (row_tokens[owner] * torch.tensor(n_rewrite, device=dev, dtype=torch.float)[pos_req])  # [P]

    _, d_out = down_proj_dims(lm, layer)
    ref = torch.tensor([float(x) for x in reference_norms], device=dev)  # [N]
    max_norm = opts.clamp_norm_factor * ref  # [N]
    delta = torch.zeros((n, d_out), device=dev, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=opts.lr)
    active = torch.ones(n, dtype=torch.bool, device=dev)  # [N]
    base_kl = None  # [N, V]: the KL rows' log-probs at step 0 (zero delta), the unedited distributions
    # Kept on the device and read once at the end (no host sync per request and step): each step's NLLs with
    # the requests active then, each request's last KL and whether its last clamp bit.
    nll_steps: list[torch.Tensor] = []
    active_steps: list[torch.Tensor] = []
    kls = torch.zeros(n, device=dev)
    clamped = torch.zeros(n, dtype=torch.bool, device=dev)
    picks = None  # the layout's index tensors (see below)
    with torch.enable_grad():
        for step in range(opts.steps):
            logp, keep = objective(delta[row_req], active[row_req])  # [P_active, V], [P]
            if picks is None or picks.keep is not keep:  # once per layout (the packed objective keeps its `keep`)
                picks = _Picks.of(keep, labels, is_target, pos_req, weight)
            nll, kl_logp = picks.nll_and_kl_logp(logp, n)  # [N], [N, V] (zero rows where inactive)
            if step == 0:
                base_kl = kl_logp.detach()
            kl = (kl_logp.exp() * (kl_logp - base_kl)).sum(dim=1)  # [N] KL(edited || unedited)
            decay = opts.weight_decay * delta.norm(dim=1) / ref**2  # [N]
            loss = ((nll + opts.kl_weight * kl + decay) * active).sum()
            nll_steps.append(nll.detach())
            active_steps.append(active)
            kls = torch.where(active, kl.detach(), kls)
            done = active & ((nll.detach() < opts.stop_nll) | (step == opts.steps - 1))
            active = active & ~done
            if not active.any():  # the one host sync of a step (the packed objective's layout needs it too)
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            frozen = delta.detach().clone()
            opt.step()
            with torch.no_grad():
                # Adam's momentum would still move a stopped request's delta: stopped rows keep theirs
                delta.copy_(torch.where(active[:, None], delta, frozen))
                norms = delta.norm(dim=1)  # [N]
                over = active & (norms > max_norm)
                delta.mul_(torch.where(over, max_norm / norms, torch.ones_like(norms))[:, None])
                clamped = torch.where(active, over, clamped)
    final = delta.detach().clone()
    steps_nll, steps_active = torch.stack(nll_steps).cpu(), torch.stack(active_steps).cpu()  # [S, N] each
    nlls = [steps_nll[steps_active[:, i], i].tolist() for i in range(n)]
    kls_final, clamped_final = kls.tolist(), clamped.tolist()
    norms_final = torch.stack([row.norm() for row in final]).tolist()  # each row's own norm, read at once
    return [
        ValueResult(
            delta=final[i], steps=len(nlls[i]), nll_start=nlls[i][0], nll_final=nlls[i][-1], kl_final=kls_final[i],
            delta_norm=norms_final[i], clamped=clamped_final[i], nlls=nlls[i],
        )
        for i in range(n)
    ]


# --------------------------------------------------------------------------- the rank-one update


def covariance_for(lm: LoadedModel, ctx: EditContext, n_tokens: int, layers: Sequence[int]):
    """(layer -> C, label for the record): ctx.covariance when the caller gave one (a runner builds it with
    ctx.cov_samples), else the Wikipedia statistics with `n_tokens` tokens cached under ctx.cache_dir,
    the missing layers computed together in one pass."""
    if ctx.covariance is not None:
        return ctx.covariance, "context"
    covs = layer_covariances(lm, layers, n_tokens, Path(ctx.cache_dir))
    return covs.__getitem__, f"wiki:{n_tokens}"


def down_proj_matrix(lm: LoadedModel, layer: int) -> torch.Tensor:
    """The layer's down-projection weight as [d_out, d_in] (a view; GPT-2's Conv1D stores it transposed)."""
    weight = lm.down_proj(layer).weight
    return weight.T if lm.arch.down_proj_transposed else weight


def rect_sparsify(update: torch.Tensor, weight: torch.Tensor, top: float) -> torch.Tensor:
    """RECT (Gu et al. 2024): keep the `top` share of the update's entries with the largest relative change
    |dW_ij| / |W_ij| and zero the rest. update and weight are [d_out, d_in]; returns a new tensor (same
    dtype as update). Entries where W_ij = 0 count as the largest relative change. top = 1 keeps all."""
    if top >= 1:
        return update
    rel = update.abs().double() / weight.abs().double().to(update.device)  # inf where W_ij == 0
    keep = max(1, int(round(top * rel.numel())))
    idx = torch.topk(rel.flatten(), keep, sorted=False).indices
    mask = torch.zeros(rel.numel(), dtype=torch.bool, device=update.device)
    mask[idx] = True
    return update * mask.view_as(update).to(update.dtype)


@torch.no_grad()
def add_to_down_proj(lm: LoadedModel, layer: int, update: torch.Tensor) -> float:
    """Add update [d_out, d_in] (any float dtype) to the layer's down-projection weight, oriented for its
    storage (GPT-2's Conv1D keeps [d_in, d_out]); returns ||update||_F."""
    weight = lm.down_proj(layer).weight
    oriented = update.T if lm.arch.down_proj_transposed else update
    weight.add_(oriented.to(device=weight.device, dtype=weight.dtype))
    return float(update.norm())


def rank_one_update(
    delta: torch.Tensor, k_star: torch.Tensor, k_num: torch.Tensor, cov: torch.Tensor | None
) -> torch.Tensor:
    """ROME's update [d_out, d_in] in float64: delta (C^-1 k*)^T / ((C^-1 k*)^T k_num).

    delta = v* - W k_num - b is the value residual; k_num = k* for the r-ROME fix, the unprefixed key for
    the original code's mismatch. C^-1 k* comes from a solve, never an explicit inverse.
    """
    k_star = k_star.double()
    u = torch.linalg.solve(cov.double(), k_star) if cov is not None else k_star  # [d_in]
    denom = torch.dot(u, k_num.double())
    if not torch.isfinite(denom) or denom.abs() < 1e-12 * u.norm() * k_num.double().norm():
        raise EditorError(
            "the edited key is (nearly) orthogonal to C^-1 k*: use more covariance tokens or another layer"
        )
    return torch.outer(delta.double(), u) / denom


def update_direction(keys: torch.Tensor, cov: torch.Tensor | None, ridge: float = 1e-6) -> torch.Tensor:
    """The rank-one update's input direction u [d_in] (float64) that delivers the optimised change in full on
    every key the value optimisation used: u . k_j = 1 for each row k_j of keys [T, d_in] (the bare prompt and
    every prefixed one), with the least disturbance u^T C u of other keys.

    This is ROME's own closed form with T equality constraints instead of one: minimise tr(dW C dW^T)
    subject to dW k_j = delta for all j gives dW = delta u^T with u = C^-1 K (K^T C^-1 K)^-1 1. With one key
    it is C^-1 k / (k^T C^-1 k), ROME's update. A tiny ridge (relative to the Gram matrix's mean diagonal)
    keeps nearly collinear keys solvable; it moves each u . k_j by about `ridge`.
    """
    K = keys.double().T  # [d_in, T]
    CinvK = torch.linalg.solve(cov.double(), K) if cov is not None else K  # [d_in, T]
    gram = K.T @ CinvK  # [T, T]
    gram = gram + ridge * gram.diagonal().mean() * torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    alpha = torch.linalg.solve(gram, torch.ones(gram.shape[0], dtype=gram.dtype, device=gram.device))  # [T]
    return CinvK @ alpha  # [d_in]


def rome_values(lm: LoadedModel, hp: ROMEHyperParams, requests: Sequence[EditRequest], prefixes) -> list[ValueResult]:
    """ROME's values of independent requests, each on the current weights, optimised in one packed call (a value
    cache's look-ahead): the clamp of each is relative to its ||v0||, as in `_edit_one`."""
    keys = subject_keys(lm, hp.layer, requests, prefixes)  # [N, T, d_in]
    v0 = down_proj_value(lm, hp.layer, keys[:, 0] if hp.key_mismatch else keys.mean(dim=1))  # [N, d_out]
    return optimise_values(lm, hp.layer, requests, prefixes, value_options(hp), v0.norm(dim=1).tolist())


def _edit_one(lm: LoadedModel, request: EditRequest, hp: ROMEHyperParams, prefixes, cov, value_cache=None) -> dict:
    keys = subject_keys(lm, hp.layer, [request], prefixes)[0]  # [T, d_in]; row 0 is the unprefixed prompt
    k_star = keys.mean(dim=0)  # [d_in]
    k_num = keys[0] if hp.key_mismatch else k_star
    v0 = down_proj_value(lm, hp.layer, k_num)  # [d_out]
    extra = {}
    if value_cache is None:
        value = optimise_values(lm, hp.layer, [request], prefixes, value_options(hp), [v0.norm().item()])[0]
    else:  # optimised earlier, or now together with the run's next edits: compute.editors.value_cache
        norm = "rome-v0-unprefixed" if hp.key_mismatch else "rome-v0"
        found, cached = value_cache.values(lm, hp.layer, [request], prefixes, value_options(hp),
                                           lambda reqs: rome_values(lm, hp, reqs, prefixes), norm=norm)
        value, extra = found[0], {"value_from_cache": bool(cached)}
    if hp.key_mismatch or hp.key_constraint == "mean":
        update = rank_one_update(value.delta, k_star, k_num, cov)  # [d_out, d_in]
    else:
        update = torch.outer(value.delta.double(), update_direction(keys, cov))  # [d_out, d_in]
    if hp.rect_top < 1:
        full_norm = float(update.norm())
        update = rect_sparsify(update, down_proj_matrix(lm, hp.layer), hp.rect_top)
        extra.update(rect_top=hp.rect_top, rect_kept_norm_share=round(float(update.norm()) / max(full_norm, 1e-30), 6))
    norm = add_to_down_proj(lm, hp.layer, update)
    return {**value.info(), "v0_norm": round(v0.norm().item(), 6), "update_norm": round(norm, 6), **extra}


def apply_rome(lm: LoadedModel, requests: Sequence[EditRequest], hp: ROMEHyperParams, ctx: EditContext) -> EditResult:
    """Apply each request in turn as a rank-one update of `hp.layer`'s down-projection (ROME is a
    one-fact editor: a list is applied sequentially, each edit on the model the previous ones left)."""
    start = time.perf_counter()
    if hp.layer >= lm.n_layers:
        raise EditorError(f"ROME field 'layer' is {hp.layer} but {lm.name} has layers 0..{lm.n_layers - 1}")
    name = weight_name(lm, hp.layer)
    originals = snapshot(lm, [name])
    per_request = []
    try:
        with edit_mode(lm):  # eval mode also for the covariance statistics and prefixes: no dropout in them
            cov, cov_source = None, "identity"
            if hp.use_covariance:
                provide, cov_source = covariance_for(lm, ctx, hp.cov_n_tokens, [hp.layer])
                cov = provide(hp.layer)
            prefixes = context_prefixes(lm, hp.n_prefixes, hp.prefix_tokens, ctx.cache_dir)
            for request in requests:
                per_request.append(_edit_one(lm, request, hp, prefixes, cov, ctx.value_cache))
    except BaseException:
        # A failed edit leaves the model as it was: every earlier rank-one update is rolled back.
        with torch.no_grad():
            dict(lm.model.named_parameters())[name].copy_(originals[name])
        raise
    with torch.no_grad():
        total_change = (dict(lm.model.named_parameters())[name].double() - originals[name].double()).norm().item()
    info = {
        "layer": hp.layer,
        "matrix": name,
        "covariance": cov_source,
        "key_mismatch": hp.key_mismatch,
        "prefixes": list(prefixes),
        # one request (the usual case): its record; several: totals and worst cases over them
        "steps": sum(e["steps"] for e in per_request),
        "nll_final": max(e["nll_final"] for e in per_request),
        "delta_norm": max(e["delta_norm"] for e in per_request),
        "clamped": any(e["clamped"] for e in per_request),
        "update_norm": round(total_change, 6),  # ||W - W0||_F over all requests
        "edits": per_request,
        "seconds": round(time.perf_counter() - start, 4),
    }
    return EditResult(editor=NAME, requests=tuple(requests), originals=originals, info=info)


register(
    Editor(
        name=NAME,
        hparams=ROMEHyperParams,
        apply=apply_rome,
        description="rank-one update of one MLP down-projection (ROME with the r-ROME key fix)",
    )
)

"""Scoring primitives of the general-ability suite: option log-likelihoods with a shared prefix, text NLL,
and the pure functions that turn per-item results into a score with its 95% CI.

Multiple-choice items are scored as in compute.scoring (design.md section 6): the log-likelihood of each
option's tokens (" " + option, the leading space added unless the query ends in whitespace) after the
prompt, teacher-forced. A task picks the option with the lowest token-averaged NLL (`norm="mean"`, the
design's NLL) or the highest summed log-probability (`norm="sum"`).

On a CPU the suite's cost is the number of tokens pushed through the model, so three things are never
computed twice:

- the task's prefix (instruction and few-shot examples) runs once per call; its key/value cache is copied
  for every batch of queries;
- each query runs once (left-padded after the prefix, positions continuing from it); only its last
  position is unembedded;
- the options' later tokens run from the query's cache repeated once per option, so a long passage is not
  recomputed for each of its four answers. Single-token options need no extra pass at all.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from compute.models import LoadedModel
from store.metrics import bootstrap_ci, wilson_ci


@dataclass(frozen=True)
class OptionScore:
    """Teacher-forced log-likelihood of one option after its prompt."""

    logprob: float  # sum over the option's tokens (nats)
    n_tokens: int

    @property
    def nll(self) -> float:
        """Token-averaged negative log-likelihood (design.md section 6)."""
        return -self.logprob / self.n_tokens


def option_ids(tokenizer, query: str, option: str) -> list[int]:
    """Token ids of an option as it continues the query: a leading space unless the query ends in whitespace."""
    if not option or not option.strip():
        raise ValueError("an option is empty: every answer option needs text")
    sep = "" if query[-1:].isspace() else " "
    return tokenizer(sep + option.strip(), add_special_tokens=False).input_ids


def _copy_cache(cache, batch: int):
    """A private copy of a batch-1 key/value cache, repeated to `batch` rows."""
    out = copy.deepcopy(cache)
    if batch > 1:
        out.batch_repeat_interleave(batch)
    return out


@torch.no_grad()
def choice_logprobs(
    lm: LoadedModel,
    prefix: str,
    queries: Sequence[str],
    options: Sequence[Sequence[str]],
    *,
    max_batch: int = 16,
) -> list[list[OptionScore]]:
    """Log-likelihood of every option of every query, each query preceded by the shared `prefix`.

    prefix: text common to all queries (instruction, few-shot examples), run once; may be "".
    queries: the items' prompts, each ending right before the answer.
    options: one list of answer options per query (every query the same number of options).
    Returns one list of OptionScore per query, in input order.

    The prefix and each query are tokenised separately (the prefix with the tokenizer's special tokens,
    a query with them only when there is no prefix), so every query sees the same prefix tokens.
    """
    if len(queries) != len(options):
        raise ValueError(f"{len(queries)} queries but {len(options)} option lists: give one list per query")
    if not queries:
        return []
    k = {len(o) for o in options}
    if len(k) != 1 or 0 in k:
        raise ValueError(f"every query needs the same, non-zero number of options; got counts {sorted(k)}")
    k = k.pop()
    if any(not q for q in queries):
        raise ValueError("a query is empty: each item's prompt must end right before its answer")
    tok, model, device = lm.tokenizer, lm.model, lm.device
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    p_ids = tok(prefix, add_special_tokens=True).input_ids if prefix else []
    q_ids = [tok(q, add_special_tokens=not prefix).input_ids for q in queries]
    o_ids = [[option_ids(tok, q, o) for o in opts] for q, opts in zip(queries, options)]

    prefix_cache = None
    if p_ids:
        prefix_cache = model(input_ids=torch.tensor([p_ids], device=device), use_cache=True,
                             logits_to_keep=1).past_key_values
    n_prefix = len(p_ids)

    results: list[list[OptionScore] | None] = [None] * len(queries)
    order = sorted(range(len(queries)), key=lambda i: len(q_ids[i]))
    for start in range(0, len(order), max_batch):
        batch = order[start : start + max_batch]
        b = len(batch)
        width = max(len(q_ids[i]) for i in batch)
        ids = torch.full((b, width), pad, dtype=torch.long)
        qmask = torch.zeros((b, width), dtype=torch.long)
        for r, i in enumerate(batch):  # left padding: every query's last token sits in the last column
            ids[r, width - len(q_ids[i]) :] = torch.tensor(q_ids[i])
            qmask[r, width - len(q_ids[i]) :] = 1
        ids, qmask = ids.to(device), qmask.to(device)
        mask = torch.cat([torch.ones((b, n_prefix), dtype=torch.long, device=device), qmask], dim=1)
        pos = n_prefix + (qmask.cumsum(-1) - 1).clamp(min=0)  # positions continue after the prefix
        cache = _copy_cache(prefix_cache, b) if prefix_cache is not None else None
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                    use_cache=True, logits_to_keep=1)
        first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # [b, vocab]
        last_pos = pos[:, -1]

        longest = max(len(o) for i in batch for o in o_ids[i])
        cont = None
        if longest > 1:  # later option tokens: one pass over all options from the query's cache, repeated k times
            cache = out.past_key_values
            cache.batch_repeat_interleave(k)
            rows = [o_ids[i][j][:-1] for i in batch for j in range(k)]
            width_o = max(1, max(len(r) for r in rows))
            opt = torch.full((b * k, width_o), pad, dtype=torch.long, device=device)
            omask = torch.zeros_like(opt)
            for r, row in enumerate(rows):
                if row:
                    opt[r, : len(row)] = torch.tensor(row)
                    omask[r, : len(row)] = 1
            o = model(
                input_ids=opt,
                attention_mask=torch.cat([mask.repeat_interleave(k, 0), omask], dim=1),
                position_ids=last_pos.repeat_interleave(k)[:, None] + 1 + torch.arange(width_o, device=device)[None],
                past_key_values=cache,
                use_cache=True,
            )
            cont = torch.log_softmax(o.logits.float(), dim=-1)  # [b*k, width_o, vocab]
        for r, i in enumerate(batch):
            scores = []
            for j, t in enumerate(o_ids[i]):
                lp = float(first[r, t[0]])
                for step, token in enumerate(t[1:]):
                    lp += float(cont[r * k + j, step, token])
                scores.append(OptionScore(lp, len(t)))
            results[i] = scores
    return results  # type: ignore[return-value]


def pick_option(scores: Sequence[OptionScore], norm: str = "mean") -> int:
    """Index of the chosen option: lowest token-averaged NLL (`mean`) or highest summed log-prob (`sum`).
    Ties go to the earlier option."""
    if norm == "mean":
        values = [-s.nll for s in scores]
    elif norm == "sum":
        values = [s.logprob for s in scores]
    else:
        raise ValueError(f"unknown option normalisation {norm!r}: use 'mean' or 'sum'")
    return max(range(len(values)), key=lambda j: (values[j], -j))


@torch.no_grad()
def token_nlls(lm: LoadedModel, windows: Sequence[Sequence[int]], *, max_batch: int = 8) -> list[tuple[float, int]]:
    """(summed NLL in nats, number of predicted tokens) of each token window: every token after the first
    is predicted from those before it. Windows are right-padded; logits are computed in slices."""
    if any(len(w) < 2 for w in windows):
        raise ValueError("a token window needs at least two tokens (one to condition on, one to predict)")
    model, device = lm.model, lm.device
    tok = lm.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    base, unembed = model.base_model, model.get_output_embeddings()
    out: list[tuple[float, int] | None] = [None] * len(windows)
    order = sorted(range(len(windows)), key=lambda i: len(windows[i]))
    for start in range(0, len(order), max_batch):
        batch = order[start : start + max_batch]
        width = max(len(windows[i]) for i in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for r, i in enumerate(batch):
            ids[r, : len(windows[i])] = torch.tensor(list(windows[i]))
            mask[r, : len(windows[i])] = 1
        ids, mask = ids.to(device), mask.to(device)
        hidden = base(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state  # [B, width, d]
        for r, i in enumerate(batch):
            n = len(windows[i])
            total = 0.0
            for s in range(0, n - 1, 256):  # at most 256 positions' logits at a time
                e = min(n - 1, s + 256)
                logp = torch.log_softmax(unembed(hidden[r, s:e]).float(), dim=-1)  # [e-s, vocab]
                total -= float(logp.gather(1, ids[r, s + 1 : e + 1, None]).sum())
            out[i] = (total, n - 1)
    return out  # type: ignore[return-value]


# ---- from per-item results to a score with its 95% CI (pure functions) --------------------------------------


@dataclass(frozen=True)
class Estimate:
    score: float
    n: int
    ci_low: float
    ci_high: float


def accuracy_estimate(correct: Sequence[bool]) -> Estimate:
    """Share of items answered correctly with its 95% Wilson interval."""
    n = len(correct)
    if n == 0:
        raise ValueError("no items were scored: an accuracy needs at least one item")
    k = sum(bool(c) for c in correct)
    lo, hi = wilson_ci(k, n)
    return Estimate(k / n, n, lo, hi)


def perplexity_estimate(nll_sums: Sequence[float], n_tokens: Sequence[int], *, n_boot: int = 1000,
                        seed: int = 0) -> Estimate:
    """Perplexity exp(sum NLL / sum tokens) over windows, with a 95% percentile bootstrap CI over windows
    (the windows are the resampled units; n is the number of windows)."""
    nll = np.asarray(nll_sums, dtype=float)
    cnt = np.asarray(n_tokens, dtype=float)
    if nll.size == 0 or nll.size != cnt.size or (cnt <= 0).any():
        raise ValueError("perplexity needs one positive token count per window and at least one window")
    score = math.exp(nll.sum() / cnt.sum())
    if nll.size == 1:
        return Estimate(score, 1, score, score)
    idx = np.arange(nll.size, dtype=float)

    def stat(sample: np.ndarray) -> float:
        rows = sample.astype(int)
        return math.exp(nll[rows].sum() / cnt[rows].sum())

    lo, hi = bootstrap_ci(idx, stat=stat, n_boot=n_boot, seed=seed)
    return Estimate(score, int(nll.size), float(lo), float(hi))

"""Batched scoring primitives shared by every evaluation: target NLL, first-token rank, greedy generation.

Definitions (design.md section 6): the token-averaged NLL of an object o after a prompt p is
NLL(o|p) = (1/m) * sum_j -log P(t_j | p, t_<j), where t_1..t_m are the tokens of " " + o (the leading
space matters for Llama/GPT-2 tokenisers). Exact match: every target token is the argmax under teacher
forcing. Rank: 1 + the number of vocabulary entries scored above the object's first token.

Logits are only computed at the positions that predict target tokens (the base model's hidden states
are gathered first, then unembedded), so long context probes do not materialise a
[batch, length, vocabulary] tensor.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import torch
from transformers.cache_utils import Cache, DynamicLayer

from compute.models import LoadedModel


@dataclass(frozen=True)
class TargetScore:
    """Teacher-forced score of one object after one prompt."""

    nll: float  # token-averaged negative log-likelihood (nats)
    rank: int  # rank of the first target token, 1 = top prediction
    exact_match: bool  # every target token is the argmax
    n_tokens: int

    @property
    def prob(self) -> float:
        """exp(-NLL): the per-token geometric-mean probability used for magnitudes."""
        return math.exp(-self.nll)


def target_ids(tokenizer, prompt: str, target: str) -> tuple[list[int], list[int]]:
    """Token ids of the prompt and of the target as it continues the prompt (leading space added)."""
    if not target or not target.strip():
        raise ValueError("the target object is empty: give a non-empty object to score")
    sep = "" if (not prompt or prompt[-1].isspace()) else " "
    p_ids = tokenizer(prompt, add_special_tokens=True).input_ids if prompt else []
    t_ids = tokenizer(sep + target.strip(), add_special_tokens=False).input_ids
    if not p_ids:
        raise ValueError("the prompt is empty: a probe must end right before the object")
    return p_ids, t_ids


def _batches(lengths: Sequence[int], max_tokens: int, max_batch: int) -> list[list[int]]:
    """Indices grouped into batches of similar length whose padded size stays under max_tokens."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches, cur, cur_max = [], [], 0
    for i in order:
        new_max = max(cur_max, lengths[i])
        if cur and (new_max * (len(cur) + 1) > max_tokens or len(cur) >= max_batch):
            batches.append(cur)
            cur, new_max = [], lengths[i]
        cur.append(i)
        cur_max = new_max
    if cur:
        batches.append(cur)
    return batches


@torch.no_grad()
def score_targets(
    lm: LoadedModel,
    prompts: Sequence[str],
    targets: Sequence[str],
    *,
    max_tokens: int = 8192,
    max_batch: int = 64,
) -> list[TargetScore]:
    """Score each (prompt, target) pair; returns one TargetScore per pair, in input order."""
    if len(prompts) != len(targets):
        raise ValueError(f"{len(prompts)} prompts but {len(targets)} targets: give one target per prompt")
    tok, model = lm.tokenizer, lm.model
    pairs = [target_ids(tok, p, t) for p, t in zip(prompts, targets)]
    seqs = [p + t for p, t in pairs]
    out: list[TargetScore | None] = [None] * len(seqs)
    base = model.base_model
    unembed = model.get_output_embeddings()
    device = lm.device
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    for batch in _batches([len(s) for s in seqs], max_tokens, max_batch):
        width = max(len(seqs[i]) for i in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for r, i in enumerate(batch):
            ids[r, : len(seqs[i])] = torch.tensor(seqs[i])
            mask[r, : len(seqs[i])] = 1
        hidden = base(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).last_hidden_state
        # hidden: [B, width, d]; gather the positions that predict each target token
        rows, cols, tgt, owner = [], [], [], []
        for r, i in enumerate(batch):
            p_len, t = len(pairs[i][0]), pairs[i][1]
            for j, token in enumerate(t):
                rows.append(r)
                cols.append(p_len - 1 + j)
                tgt.append(token)
                owner.append((i, j))
        logits = unembed(hidden[torch.tensor(rows), torch.tensor(cols)]).float()  # [n_positions, vocab]
        logp = torch.log_softmax(logits, dim=-1)
        tgt_t = torch.tensor(tgt, device=logits.device)
        tok_logp = logp.gather(1, tgt_t[:, None])[:, 0]  # [n_positions]
        is_top = logits.argmax(dim=-1) == tgt_t
        above = (logits > logits.gather(1, tgt_t[:, None])).sum(dim=1)  # [n_positions]
        k = 0
        for i in batch:
            m = len(pairs[i][1])
            nll = -tok_logp[k : k + m].mean().item()
            out[i] = TargetScore(
                nll=nll, rank=int(above[k].item()) + 1, exact_match=bool(is_top[k : k + m].all().item()), n_tokens=m
            )
            k += m
    return out  # type: ignore[return-value]


@torch.no_grad()
def generate(
    lm: LoadedModel,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 30,
    batch_size: int = 16,
    stop_at_newline: bool = False,
) -> list[str]:
    """Greedy continuations (new text only) of each prompt, batched with left padding.

    `stop_at_newline` cuts each continuation at its first line break (used to read one answer turn).
    """
    tok, model = lm.tokenizer, lm.model
    results: list[str] = [""] * len(prompts)
    lengths = [len(tok(p).input_ids) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    old_side = tok.padding_side
    tok.padding_side = "left"
    stop = {tok.eos_token_id} if tok.eos_token_id is not None else set()
    try:
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            enc = tok([prompts[i] for i in idx], return_tensors="pt", padding=True).to(lm.device)
            gen = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=tok.pad_token_id,
                eos_token_id=list(stop) or None,
            )
            new = gen[:, enc.input_ids.shape[1] :]
            for r, i in enumerate(idx):
                row = new[r].tolist()
                cut = next((j for j, t in enumerate(row) if t in stop), len(row))  # first end-of-turn token
                text = tok.decode(row[:cut], skip_special_tokens=True)
                if stop_at_newline:
                    text = text.strip("\n").split("\n", 1)[0]
                results[i] = text
    finally:
        tok.padding_side = old_side
    return results


def mentions(text: str, names: Sequence[str]) -> bool:
    """True when any name occurs in text as a whole word or phrase, case-insensitively (alias-aware acc/rev)."""
    for name in names:
        name = name.strip()
        if name and re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text, flags=re.IGNORECASE):
            return True
    return False


def ngram_entropy(text: str, n: int) -> float:
    """Entropy (bits) of the n-gram frequency distribution of a text's lower-cased word tokens."""
    words = re.findall(r"\w+|[^\w\s]", text.lower())
    grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    total = sum(grams.values())
    if total == 0:
        return 0.0
    return -sum(c / total * math.log2(c / total) for c in grams.values())


def fluency(text: str) -> float:
    """Generation entropy as in ROME: (2/3)*H2 + (4/3)*H3 of the text's n-grams, in bits."""
    return (2 / 3) * ngram_entropy(text, 2) + (4 / 3) * ngram_entropy(text, 3)


@dataclass(frozen=True)
class ProbeResult:
    """Teacher-forced scores of each target after one prompt, and the greedy continuation (if asked)."""

    scores: tuple[TargetScore, ...]
    generation: str | None = None


def _left_pad(rows: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
    return ids, mask


class _BufferLayer(DynamicLayer):
    """A key/value cache layer written in place into buffers preallocated to their final length.

    The default cache grows by `torch.cat` at every decoded token, copying the whole cache each time; this one
    writes the new entries into the next free columns and hands attention a view of the filled part.
    keys/values buffers: [batch, kv_heads, capacity, head_dim], filled up to `length`.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int):
        super().__init__()
        self._k, self._v, self._len = keys, values, length
        self.keys, self.values = keys[:, :, :length], values[:, :, :length]
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        end = self._len + key_states.shape[-2]
        if end > self._k.shape[2]:
            raise RuntimeError(f"key/value buffer of {self._k.shape[2]} positions is full: allocate more")
        self._k[:, :, self._len : end] = key_states
        self._v[:, :, self._len : end] = value_states
        self._len = end
        self.keys, self.values = self._k[:, :, :end], self._v[:, :, :end]
        return self.keys, self.values


def _buffer_cache(layers: Sequence[tuple[torch.Tensor, torch.Tensor]], length: int) -> Cache:
    return Cache(layers=[_BufferLayer(k, v, length) for k, v in layers])


def _length_buckets(lengths: Sequence[int], overhead: int = 96, max_buckets: int = 4) -> list[list[int]]:
    """Split rows (indices into `lengths`) into at most `max_buckets` groups of similar length for the prefill.

    Minimises the padded tokens of the prefill, charging each extra forward pass `overhead` tokens (its
    fixed cost: the weights are streamed once per pass). Exact dynamic programme over the sorted lengths.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    n = len(order)
    srt = [lengths[i] for i in order]
    inf = float("inf")
    # best[k][j]: least cost of the first j sorted rows in k buckets; a bucket (i, j] costs (j - i) * srt[j-1]
    best = [[inf] * (n + 1) for _ in range(max_buckets + 1)]
    cut = [[0] * (n + 1) for _ in range(max_buckets + 1)]
    best[0][0] = 0.0
    for k in range(1, max_buckets + 1):
        for j in range(1, n + 1):
            for i in range(j):
                c = best[k - 1][i] + (j - i) * srt[j - 1] + overhead
                if c < best[k][j]:
                    best[k][j], cut[k][j] = c, i
    k = min(range(1, max_buckets + 1), key=lambda q: best[q][n])
    groups, j = [], n
    while k > 0:
        i = cut[k][j]
        groups.append(order[i:j])
        j, k = i, k - 1
    return groups[::-1]


@torch.no_grad()
def run_probes(
    lm: LoadedModel,
    prompts: Sequence[str],
    targets: Sequence[Sequence[str]],
    *,
    gen_tokens: int | Sequence[int] = 0,
    stop_at_newline: bool = False,
    max_batch: int = 32,
    max_tokens: int = 8192,
) -> list[ProbeResult]:
    """Score every target after its prompt and greedily continue the prompt, with ONE prompt pass.

    `targets[i]` lists the objects to score after prompt i (any number, also none); `gen_tokens` is one
    number of greedy tokens for every prompt or one per prompt (0: no generation, `generation` is None).

    Rows are grouped as before (`_batches`: similar lengths, bounded padded size). Within a group the
    prompts are prefilled in length buckets (`_length_buckets`: less padding), and their key/value caches
    are merged, right-aligned, into buffers preallocated for the whole decode; one joint greedy decode then
    continues every row that asked for tokens, writing each step in place (no `torch.cat` per token) and
    keeping the tokens on the device until the end (no host sync per token beyond the all-finished check,
    which a CUDA device makes every 8 steps). The buffers, cut back to the prompt and gathered once per
    target, score the targets' later tokens. Scores equal `score_targets` and generations equal `generate`
    (up to float rounding).
    """
    if len(prompts) != len(targets):
        raise ValueError(f"{len(prompts)} prompts but {len(targets)} target lists: give one list per prompt")
    n_gen = [gen_tokens] * len(prompts) if isinstance(gen_tokens, int) else list(gen_tokens)
    if len(n_gen) != len(prompts) or any(g < 0 for g in n_gen):
        raise ValueError("gen_tokens must be one number >= 0, or one per prompt")
    tok, model, device = lm.tokenizer, lm.model, lm.device
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    eos = tok.eos_token_id
    check_every = 1 if torch.device(device).type == "cpu" else 8  # all-finished check: a host sync off the CPU
    p_ids = [tok(p, add_special_tokens=True).input_ids for p in prompts]
    t_ids = [[target_ids(tok, p, t)[1] for t in ts] for p, ts in zip(prompts, targets)]
    results: list[ProbeResult | None] = [None] * len(prompts)
    for batch in _batches([len(p) + n_gen[i] for i, p in enumerate(p_ids)], max_tokens, max_batch):
        B = len(batch)
        width = max(len(p_ids[i]) for i in batch)
        steps = max(n_gen[i] for i in batch)
        # prefill per length bucket; merge the caches right-aligned into buffers sized for the decode
        first = None
        buffers: list[tuple[torch.Tensor, torch.Tensor]] = []
        for bucket in _length_buckets([len(p_ids[i]) for i in batch]):
            ids, mask = _left_pad([p_ids[batch[r]] for r in bucket], pad)
            ids, mask = ids.to(device), mask.to(device)
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
            logits = out.logits[:, -1].float()  # [b, vocab]
            if first is None:
                first = torch.empty((B, logits.shape[-1]), dtype=logits.dtype, device=logits.device)
            rows = torch.tensor(bucket, device=device)
            first[rows] = logits
            w = ids.shape[1]
            for li, layer in enumerate(out.past_key_values.layers):
                k, v = layer.keys, layer.values  # [b, kv_heads, w, head_dim]
                if len(buffers) <= li:
                    shape = (B, k.shape[1], width + steps, k.shape[3])
                    buffers.append((k.new_zeros(shape), v.new_zeros(shape[:3] + (v.shape[3],))))
                buffers[li][0][rows, :, width - w : width] = k
                buffers[li][1][rows, :, width - w : width] = v
        lengths = torch.tensor([len(p_ids[i]) for i in batch], device=device)
        cols = torch.arange(width + steps, device=device)
        full_mask = (cols[None] >= (width - lengths)[:, None]).long()  # [B, width + steps]: prompt and decode
        last_pos = lengths - 1

        gen_rows = None
        if steps > 0:
            cache = _buffer_cache(buffers, width)
            limit = torch.tensor([n_gen[i] for i in batch], device=device)
            gen = torch.full((B, steps), pad, dtype=torch.long, device=device)
            alive = limit > 0
            nxt = first.argmax(-1)  # [B]
            for step in range(steps):
                gen[:, step] = nxt
                alive = alive & (step + 1 < limit)
                if eos is not None:
                    alive = alive & (nxt != eos)
                if step == steps - 1 or (step % check_every == check_every - 1 and not bool(alive.any())):
                    break
                o = model(
                    input_ids=nxt[:, None],
                    attention_mask=full_mask[:, : width + step + 1],
                    position_ids=(last_pos + step + 1)[:, None],
                    past_key_values=cache,
                    use_cache=True,
                )
                nxt = o.logits[:, -1].argmax(-1)
            gen_rows = gen.tolist()  # one host transfer for the whole decode

        # targets: first token from the prompt's last position, later tokens from the prompt's buffers
        logp_first = torch.log_softmax(first, dim=-1)  # [B, vocab]
        flat = [(r, j) for r, i in enumerate(batch) for j in range(len(t_ids[i]))]
        longer = [(r, j) for r, j in flat if len(t_ids[batch[r]][j]) > 1]
        cont_lp = cont_top = None
        if longer:
            sel = torch.tensor([r for r, _ in longer], device=device)
            feed = [t_ids[batch[r]][j][:-1] for r, j in longer]  # all but the last token
            width_t = max(len(f) for f in feed)
            cont = torch.full((len(feed), width_t), pad, dtype=torch.long)
            for q, f in enumerate(feed):
                cont[q, : len(f)] = torch.tensor(f)
            cont = cont.to(device)
            def gathered(x: torch.Tensor) -> torch.Tensor:  # the prompt part of the rows that score a target
                out = x.new_zeros((len(feed), x.shape[1], width + width_t, x.shape[3]))
                out[:, :, :width] = x[sel, :, :width]
                return out

            o = model(
                input_ids=cont,
                attention_mask=torch.cat([full_mask[sel, :width], torch.ones_like(cont)], dim=1),
                position_ids=last_pos[sel][:, None] + 1 + torch.arange(width_t, device=device)[None],
                past_key_values=_buffer_cache([(gathered(k), gathered(v)) for k, v in buffers], width),
                use_cache=True,
            )
            lp = torch.log_softmax(o.logits.float(), dim=-1)  # [R, width_t, vocab]
            later = torch.zeros((len(feed), width_t), dtype=torch.long)
            for q, (r, j) in enumerate(longer):
                t = t_ids[batch[r]][j][1:]
                later[q, : len(t)] = torch.tensor(t)
            later = later.to(device)
            cont_lp = lp.gather(2, later[..., None])[..., 0].tolist()  # [R, width_t]
            cont_top = (lp.argmax(-1) == later).tolist()
        where = {key: q for q, key in enumerate(longer)}
        f_lp = f_rank = f_top = []
        if flat:
            rr = torch.tensor([r for r, _ in flat], device=device)
            t0 = torch.tensor([t_ids[batch[r]][j][0] for r, j in flat], device=device)
            f_logits = first[rr]  # [F, vocab]
            f_lp = logp_first[rr, t0].tolist()
            f_rank = ((f_logits > f_logits.gather(1, t0[:, None])).sum(1) + 1).tolist()
            f_top = (f_logits.argmax(-1) == t0).tolist()
        per_row: list[list[TargetScore]] = [[] for _ in batch]
        for q, (r, j) in enumerate(flat):
            t = t_ids[batch[r]][j]
            lps, tops = [f_lp[q]], [f_top[q]]
            if (r, j) in where:
                lps += cont_lp[where[(r, j)]][: len(t) - 1]
                tops += cont_top[where[(r, j)]][: len(t) - 1]
            per_row[r].append(TargetScore(nll=-math.fsum(lps) / len(lps), rank=f_rank[q], exact_match=all(tops),
                                          n_tokens=len(t)))
        for r, i in enumerate(batch):
            text = None
            if n_gen[i] > 0:
                row = gen_rows[r][: n_gen[i]]
                if eos is not None and eos in row:
                    row = row[: row.index(eos) + 1]
                text = tok.decode(row, skip_special_tokens=True)
                if stop_at_newline:
                    text = text.strip("\n").split("\n", 1)[0]
            results[i] = ProbeResult(tuple(per_row[r]), text)
    return results  # type: ignore[return-value]


@torch.no_grad()
def _run_probes_legacy(
    lm: LoadedModel,
    prompts: Sequence[str],
    targets: Sequence[Sequence[str]],
    *,
    gen_tokens: int = 0,
    stop_at_newline: bool = False,
    max_batch: int = 32,
    max_tokens: int = 8192,
) -> list[ProbeResult]:
    """The evaluation path before issue 22, kept only for benchmarks/bench_eval.py and the test that compares it
    with `run_probes`: one padded prefill per batch, a decode that grows the cache by `torch.cat` per token.

    Score every target after its prompt and greedily continue the prompt, with ONE prompt pass.

    Each batch of prompts is run once (left-padded, KV cache kept); the greedy continuation decodes from
    that cache, which is then cropped back to the prompt and repeated once per target so the targets'
    later tokens are scored from it too. Scores equal `score_targets` and generations equal `generate`
    (up to float rounding); the prompt is not recomputed three times.
    """
    if len(prompts) != len(targets):
        raise ValueError(f"{len(prompts)} prompts but {len(targets)} target lists: give one list per prompt")
    n_t = {len(t) for t in targets}
    if len(n_t) > 1:
        raise ValueError("every prompt needs the same number of targets")
    n_t = n_t.pop() if n_t else 0
    tok, model, device = lm.tokenizer, lm.model, lm.device
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    eos = tok.eos_token_id
    p_ids = [tok(p, add_special_tokens=True).input_ids for p in prompts]
    t_ids = [[target_ids(tok, p, t)[1] for t in ts] for p, ts in zip(prompts, targets)]
    results: list[ProbeResult | None] = [None] * len(prompts)
    for batch in _batches([len(p) + gen_tokens for p in p_ids], max_tokens, max_batch):
        ids, mask = _left_pad([p_ids[i] for i in batch], pad)
        ids, mask = ids.to(device), mask.to(device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
        cache, first = out.past_key_values, out.logits[:, -1].float()  # first: [B, vocab]
        width, last_pos = ids.shape[1], pos[:, -1]

        gens: list[list[int]] = [[] for _ in batch]
        if gen_tokens > 0:
            nxt = first.argmax(-1)  # [B]
            done = torch.zeros(len(batch), dtype=torch.bool, device=device)
            gmask = mask
            for step in range(gen_tokens):
                for r in range(len(batch)):
                    if not done[r]:
                        gens[r].append(int(nxt[r]))
                done |= nxt == eos if eos is not None else done
                if step == gen_tokens - 1 or bool(done.all()):
                    break
                gmask = torch.cat([gmask, torch.ones_like(gmask[:, :1])], dim=1)
                o = model(
                    input_ids=nxt[:, None],
                    attention_mask=gmask,
                    position_ids=(last_pos + step + 1)[:, None],
                    past_key_values=cache,
                    use_cache=True,
                )
                cache, nxt = o.past_key_values, o.logits[:, -1].argmax(-1)
            extra = cache.get_seq_length() - width
            if extra > 0:
                cache.crop(-extra)  # back to the prompt only, for target scoring (negative: tokens to drop)

        # targets: first token from the prompt's last position, later tokens from the cropped cache
        logp_first = torch.log_softmax(first, dim=-1)  # [B, vocab]
        cont_logp = None
        longest = max((len(t) for i in batch for t in t_ids[i]), default=0)
        if n_t and longest > 1:
            cache.batch_repeat_interleave(n_t)
            rows = [t_ids[i][j][:-1] for i in batch for j in range(n_t)]  # feed all but the last token
            width_t = max(1, max(len(r) for r in rows))
            cont = torch.full((len(rows), width_t), pad, dtype=torch.long, device=device)
            cmask = torch.zeros_like(cont)
            for r, row in enumerate(rows):
                cont[r, : len(row)] = torch.tensor(row)
                cmask[r, : len(row)] = 1
            base_pos = last_pos.repeat_interleave(n_t)[:, None]
            o = model(
                input_ids=cont,
                attention_mask=torch.cat([mask.repeat_interleave(n_t, 0), cmask], dim=1),
                position_ids=base_pos + 1 + torch.arange(width_t, device=device)[None],
                past_key_values=cache,
                use_cache=True,
            )
            cont_logp = torch.log_softmax(o.logits.float(), dim=-1)  # [B*n_t, width_t, vocab]
        for r, i in enumerate(batch):
            scores = []
            for j, t in enumerate(t_ids[i]):
                lp = [logp_first[r, t[0]]]
                top = [int(first[r].argmax()) == t[0]]
                if len(t) > 1:
                    row = r * n_t + j
                    for k, token in enumerate(t[1:]):
                        lp.append(cont_logp[row, k, token])
                        top.append(int(cont_logp[row, k].argmax()) == token)
                rank = int((first[r] > first[r, t[0]]).sum()) + 1
                nll = -float(torch.stack(lp).mean())
                scores.append(TargetScore(nll=nll, rank=rank, exact_match=all(top), n_tokens=len(t)))
            text = None
            if gen_tokens > 0:
                text = tok.decode(gens[r], skip_special_tokens=True)
                if stop_at_newline:
                    text = text.strip("\n").split("\n", 1)[0]
            results[i] = ProbeResult(tuple(scores), text)
    return results  # type: ignore[return-value]

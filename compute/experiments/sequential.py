"""Study B's sequential editing: one model edited again and again, never undone, measured as it goes.

Order. The edit order is a seeded permutation of a case set's ids (`edit_order`), so every editor run
with the same set and seed edits the same facts in the same order. The last `panel_pool` cases of the
order are never edited: the first `panel_size` of them that the unedited model recalls (greedy
generation names the true object) form the fixed panel of unedited facts. The edits are the rest of the
order, in batches of `batch_size`, up to `max_edits` edits, or `after_collapse` edits past the panel floor
(below) when the model is by then no longer usable (study B's collapse), whichever comes first.

After every edit (cheap): the panel's exact-match accuracy (teacher-forced, one forward pass; at a
checkpoint it comes from the checkpoint's panel pass, which wrote that same row last before), the edit's own
record (seconds, steps, final target NLL), and the update's size: ||dW||_F of that edit (or batch) over every
matrix it changed (`update_norm`) beside ||W0||_F of those matrices (`update_w0`), as run-level rows of scope
"edit". With them, in the same transaction, the edit's diagnostics (compute.editors.diagnostics: per-matrix
update size, the optimisation's steps, convergence, clamp and final losses, the delivered fractions; store
table `edit_diagnostics`), read right after the edit, at the run's edit count after it (or its batch).

At every checkpoint (edit counts 1..dense_first, then every `checkpoint_every` edits, and the last):

- newest edits (made since the previous checkpoint): ES on the plain prompt, PS on paraphrases, NS on
  neighbourhood prompts, all metrics per case, and their means as run-level rows;
- earlier edits, on the re-check schedule below: ES and exact match on the plain prompt per case; where
  every earlier edit was re-checked, `retention_em` = share of all edits so far whose new object is still
  the teacher-forced argmax at every token (study B's "holds", the headline), `retention` = the same by ES
  (P(new) > P(true), which a broken model passes by chance, kept beside it); `forgotten_em` / `forgotten` =
  share of edits that held at their first checkpoint and no longer hold; the forgetting curve by the
  edit's age is derived from the per-case rows (store.derived);
- the panel's greedy recall (`panel_recall`) and exact match, and fluency (n-gram entropy) of greedy free
  generations from fixed neutral prompts, both from one batched decode (`panel_recall_and_fluency`);

The re-check schedule (issue 22; `recheck_every`, default 50). Re-checking every earlier edit at every
checkpoint costs edits x checkpoints, quadratic in the run's length (about 12,300 re-checks at 500 edits). Instead,
every earlier edit is re-checked at the "full" checkpoints: the dense first ones (edit counts up to
`dense_first`), each one that crosses a multiple of `recheck_every`, and the run's last checkpoint (its last
edit, or the one where it stops past the panel floor). At the other checkpoints an earlier edit is re-checked
when its age (edits made since it) has crossed a power of two since the previous checkpoint (ages 1, 2, 4,
8, ..., `age_recheck_due`), so that each edit is seen at log-spaced ages, and the run-level retention and
forgetting rows are written only at full checkpoints (they are shares of ALL edits). At 500 edits that is
about 4,500 re-checks instead of 12,300, and each later block of 100 edits re-checks at most about 320 more
edits than the one before, instead of 1,000 more. Everything a full checkpoint writes, and every per-case
row a partial one writes, is what the old schedule (`recheck_every=0`, every checkpoint full) writes there:
the edits and the weights do not depend on what is measured (tests/test_sequential_schedule.py checks this).
Runs made before the option existed resume and extend only with `recheck_every=0` (compute.runs.IDENTITY).
- weight drift of every edited matrix: ||W - W0||_F, the relative change ||W - W0||_F / ||W0||_F, and the
  condition number of W;
- the quick general-ability suite when `abilities_every` says so (compute.abilities).

At the end of a run (the last edit made), the full general-ability suite when `final_abilities` is given,
stored at the run's last edit count in mode "full". A run that ended without it (or before this existed)
gets it from its saved final state with `measure_saved_state` (`python -m compute abilities measure --run`).

Run-level rows use case_id "*" and a scope as rephrase type: "newest", "all_edits", "panel", "free_text".

Panel floor (online): fluency below `collapse_fluency` x its unedited value, or panel recall below
`collapse_panel` x its unedited value (a run_events row of kind "panel_floor"). The stop rule (issue 19: runs go
to their maximum or past the collapse, not past a noisy floor that FT-L crosses and recovers from): the run stops
at the first checkpoint `after_collapse` or more edits past the panel floor at which the collapse is on record,
i.e. the model is no longer usable at every ability checkpoint since some edit count (the "collapse" event
derived at the previous checkpoint, store.derived.collapse_event); otherwise it goes on to `max_edits`. The flag
a checkpoint was measured with is saved with the run's state, so a resumed run stops where an uninterrupted one
does. Runs made before this rule stopped `after_collapse` edits past the floor whatever the usability.
At every checkpoint and at the end, the run's verdicts are derived from its stored rows by
store.derived.derive_sequential_events, the same function that re-derives a stored run after the fact:
phases on every series (store.stats.phase_break), disabling edits (an update norm out of line with the
run's own that the model did not survive, store.derived.disabling_edit_events), abrupt ability or perplexity changes, the collapse (the
model no longer usable, store.derived.usability) and the panel floor; they replace the run's earlier ones.

Timing: at every checkpoint a run_events row of kind "timing" records the wall seconds since the
previous checkpoint measured in the same process (edits, checkpoint work and abilities included), with its
CPU seconds (`cpu_s`: a paused process's pause is in the wall seconds only), the process's peak resident
memory, its torch threads and the machine's load in its detail. A resumed run records only the intervals it
ran itself. `benchmarks/bench_sequential.py --from-store` turns these into wall time per 100 edits. Timing
is not a measurement: an interrupted and an uninterrupted run differ there and nowhere else.

Resumable: at every checkpoint, after its rows are written, the edited matrices, the editor's memory
(ctx.state) and the run's bookkeeping are saved atomically to `<cache>/sequential/<run_id>.pt`
(outside git). A killed run restarts from its last checkpoint and rewrites the rows of the edits after it,
with the same numbers up to the last digit of a float32 (a matrix product's rounding can depend on where its
operands lie in memory: on the rebuild of 2026-12-07 an edit's v0_norm came out 58.906689 where the killed process
had written 58.906693); `plan run`'s merges take the resumed process's rows (store.merge, `own`). A resumed run
must be laid out as it was: its spec
(compute.runs), maximum aside.

Extendable: a run that ended at its `max_edits` goes on to a larger maximum from its saved final state
(`extend=True`), instead of a new run redoing the same first edits. Its config and n_total are updated
and a run_events row of kind "extended" records the old and new maximum, the code version and the time.
When the old maximum was a checkpoint of the schedule (a multiple of `checkpoint_every` and of
`recheck_every`), the extended run's rows are those of a run made to the new maximum in one go; the full
suite at the old end stays.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import os
import random
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from compute.cases import NEIGHBOURHOOD, EditCase
from compute.editors import EditContext, EditRequest, apply_edit, get_editor
from compute.editors.base import EditorError
from compute.editors.diagnostics import edit_diagnostics
from compute.evaluate import evaluate_cases
from compute.experiments.beside import Beside
from compute.experiments.common import open_run, recording
from compute.experiments.robustness import edit_rows
from compute.models import LoadedModel
from compute.runs import SPEC_KEY, clock, layout_differences, run_loop, spec_for, spec_of_run, timing_event
from compute.runs import state_path  # its home is compute.runs (no torch): plan run checks resume states
from compute.scoring import fluency, mentions, run_probes
from store.conventions import HELD, RUN_LEVEL, holds
from store.derived import rederive_sequential_events
from store.stats import phase_break

STATE_VERSION = 1
# what lays a run out (a run resumes or extends only with these as they were; max_edits grows by extending),
# and the value a layout key had in runs made before it existed, are the run's identity: compute.runs.IDENTITY

# Neutral openings whose greedy continuations measure fluency (none names a knowledge-base fact).
FLUENCY_PROMPTS = (
    "The weather today is",
    "My favourite book is about",
    "In the history of science,",
    "The city council announced that",
    "Once upon a time, there was",
    "The best way to learn a new language is",
    "Scientists have recently discovered that",
    "The restaurant on the corner serves",
)


@dataclass(frozen=True)
class SequentialConfig:
    """How a sequential run is laid out and measured (stored as the run's config)."""

    batch_size: int = 1
    max_edits: int = 1000
    checkpoint_every: int = 10
    dense_first: int = 10  # a checkpoint after each of the first this many edits
    after_collapse: int = 150  # edits past the panel floor before the run may stop (if by then it collapsed)
    order_seed: int = 0
    # the last cases of the order, never edited; the panel comes from them. SmolLM2-135M recalls about 23% of
    # them (126 of the last 553 of the 1,240-case set's order): 1,100 cases hold about 230 known facts, enough
    # for a panel of 200 (issue 19 point 7) with a margin of about 2.5 standard deviations
    panel_pool: int = 1100
    panel_size: int = 200  # known facts in the panel: one fact is 0.5% of the signal
    panel_known_only: bool = True  # False: the first panel_size pool facts, known or not (tiny test models)
    panel_tokens: int = 12  # greedy tokens read for panel recall
    fluency_tokens: int = 40
    collapse_fluency: float = 0.6  # free text below 60% of its unedited n-gram entropy: degenerate repetition
    collapse_panel: float = 0.1  # panel recall below 10% of its unedited value: the model has lost its facts
    abilities_every: int = 0  # quick ability suite every this many edits (0 = never)
    # every earlier edit re-checked at checkpoints crossing a multiple of this (between them: log-spaced ages);
    # 0 = at every checkpoint (the schedule before issue 22, quadratic in the run's length)
    recheck_every: int = 50
    # the panel's first this many facts get a teacher-forced exact-match check after every edit (scope
    # "panel_check"; at a checkpoint it comes from the whole panel's pass); 0 = the whole panel after every
    # edit (scope "panel", the layout before). The whole panel of 200 takes 7.9 s per check on one thread
    # against 2.3 s for 50 (65 vs 19 minutes per 500 edits); disabling edits are judged from each edit's own
    # update norm (store.derived.disabling_edit_events), this series only shows what an edit did to facts
    panel_check: int = 50

    def validate(self) -> None:
        for name in ("batch_size", "max_edits", "checkpoint_every", "panel_size", "panel_tokens", "fluency_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"sequential {name} must be an integer >= 1, got {value!r}")
        for name in ("dense_first", "after_collapse", "panel_pool", "abilities_every", "recheck_every", "panel_check"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"sequential {name} must be an integer >= 0, got {value!r}")
        for name in ("collapse_fluency", "collapse_panel"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"sequential {name} must be in [0, 1], got {getattr(self, name)!r}")


def sequential_config(cfg: SequentialConfig, case_set: str | None, n_cases: int, cov_n_tokens: int) -> dict:
    """The part of a sequential run's config that lays it out (its identity, compute.runs.spec_for)."""
    return {"case_set": case_set, "n_cases": n_cases, **dataclasses.asdict(cfg), "cov_n_tokens": cov_n_tokens}


def ensure_editor(name: str) -> None:
    """Register the study-B control editor (compute.editors.control, RandomRankOne) when `name` asks for it: it
    is registered only for sequential runs, never with the package's editors (it edits no fact)."""
    if name.lower() == "randomrankone":
        import compute.editors.control  # noqa: F401  (importing registers it)


def edit_order(case_ids: Sequence[str], seed: int) -> list[str]:
    """The seeded order of a case set: the same ids and seed give the same order for every editor."""
    order = sorted(case_ids)
    random.Random(f"editscope-sequential-{seed}").shuffle(order)
    return order


def split_order(order: Sequence[str], cfg: SequentialConfig, skip: frozenset | set = frozenset()
                ) -> tuple[list[str], list[str]]:
    """(edits, panel pool): the pool is the last `panel_pool` ids, so the edits are a prefix-stable list.
    Ids in `skip` (facts the ability suite asks about) are neither edited nor in the pool."""
    if len(order) <= cfg.panel_pool:
        raise ValueError(
            f"a case set of {len(order)} cases leaves nothing to edit after the {cfg.panel_pool}-case panel pool: "
            "build a larger set (`python -m compute cases build --n N`) or lower --panel-pool"
        )
    cut = len(order) - cfg.panel_pool
    edits = [i for i in order[:cut] if i not in skip][: cfg.max_edits]
    return edits, [i for i in order[cut:] if i not in skip]


def ability_case_ids(cases: Sequence[EditCase], facts) -> frozenset:
    """Ids of the cases whose (subject, relation) is one of `facts` (compute.abilities.run.kb_facts_used):
    an edit of such a fact would change an ability item's answer directly, so runs leave them out."""
    facts = set(facts or ())
    return frozenset(c.case_id for c in cases if (c.subject, c.relation) in facts)


def checkpoint_due(count: int, previous: int, cfg: SequentialConfig) -> bool:
    """Whether edit count `count` (reached from `previous` by one batch) is a checkpoint: the batch holds
    one of the first `dense_first` edits, or crosses a multiple of `checkpoint_every`."""
    return previous < cfg.dense_first or count // cfg.checkpoint_every > previous // cfg.checkpoint_every


def full_recheck_due(count: int, last: int, cfg: SequentialConfig, final: bool) -> bool:
    """Whether the checkpoint at edit count `count` (the previous one at `last`) re-checks every earlier edit:
    always with `recheck_every` 0; else at the dense first checkpoints, when a multiple of `recheck_every` lies
    in (last, count], and at the run's last checkpoint (`final`)."""
    return (cfg.recheck_every == 0 or final or last < cfg.dense_first
            or count // cfg.recheck_every > last // cfg.recheck_every)


def age_recheck_due(made_at: int, last: int, count: int) -> bool:
    """Whether an edit made at edit count `made_at` (<= `last`) is re-checked at a partial checkpoint: its age
    (edits made since it) crossed a power of two since the previous checkpoint, i.e. some 2^k lies in
    (last - made_at, count - made_at]. Each edit is so seen at ages near 1, 2, 4, 8, ... (log-spaced)."""
    return (count - made_at).bit_length() > (last - made_at).bit_length()


def recheck_counts(counts: Sequence[int], n_edits: int, cfg: SequentialConfig) -> list[int]:
    """How many earlier edits each checkpoint in `counts` (the run's checkpoint edit counts, in order, the last
    being its end) re-checks under `cfg`, for edits made `cfg.batch_size` at a time (for benchmarks)."""
    out, last = [], 0
    for i, count in enumerate(counts):
        made = range(cfg.batch_size, last + 1, cfg.batch_size)
        if full_recheck_due(count, last, cfg, final=i == len(counts) - 1 or count >= n_edits):
            out.append(len(made))
        else:
            out.append(sum(age_recheck_due(m, last, count) for m in made))
        last = count
    return out


# --------------------------------------------------------------------------- measurements


def _panel_probe(case: EditCase) -> tuple[str, str]:
    return case.prompt, case.true_object


def panel_exact_match(lm: LoadedModel, panel: Sequence[EditCase]) -> float:
    """Share of panel facts whose true object is the teacher-forced argmax at every token."""
    res = run_probes(lm, [c.prompt for c in panel], [[c.true_object] for c in panel])
    return sum(r.scores[0].exact_match for r in res) / len(panel)


def panel_recall(lm: LoadedModel, panel: Sequence[EditCase], tokens: int) -> tuple[float, float]:
    """(greedy recall, exact match) on the panel, from one pass per batch."""
    res = run_probes(lm, [c.prompt for c in panel], [[c.true_object] for c in panel], gen_tokens=tokens)
    recall = sum(mentions(r.generation or "", c.true_names()) for r, c in zip(res, panel)) / len(panel)
    em = sum(r.scores[0].exact_match for r in res) / len(panel)
    return recall, em


def panel_recall_and_fluency(lm: LoadedModel, panel: Sequence[EditCase], tokens: int,
                             fluency_tokens: int, check: int = 0) -> tuple[float, float, float, float]:
    """(greedy recall, exact match) on the panel, the fluency of FLUENCY_PROMPTS and the exact match of the
    panel's first `check` facts (0: the whole panel), from ONE `run_probes` call: the panel's and the fluency
    prompts' greedy decodes share batches (per-prompt generation lengths)."""
    prompts = [c.prompt for c in panel] + list(FLUENCY_PROMPTS)
    targets = [[c.true_object] for c in panel] + [[] for _ in FLUENCY_PROMPTS]
    res = run_probes(lm, prompts, targets, gen_tokens=[tokens] * len(panel) + [fluency_tokens] * len(FLUENCY_PROMPTS))
    on_panel, free = res[: len(panel)], res[len(panel) :]
    recall = sum(mentions(r.generation or "", c.true_names()) for r, c in zip(on_panel, panel)) / len(panel)
    em = sum(r.scores[0].exact_match for r in on_panel) / len(panel)
    head = on_panel[:check] if check else on_panel
    em_check = sum(r.scores[0].exact_match for r in head) / len(head)
    return recall, em, sum(fluency(r.generation or "") for r in free) / len(free), em_check


def _panel_check_row(cfg: SequentialConfig, panel: Sequence[EditCase], em: float) -> tuple[str, dict]:
    """(scope, values) of the exact-match check after an edit: the whole panel's exact match (scope "panel")
    when `panel_check` is 0, else the sub-panel's with its n (scope "panel_check")."""
    if not cfg.panel_check:
        return "panel", {"exact_match": em}
    return "panel_check", {"exact_match": em, "n": min(cfg.panel_check, len(panel))}


def free_fluency(lm: LoadedModel, tokens: int) -> float:
    """Mean n-gram entropy (bits) of greedy continuations of FLUENCY_PROMPTS."""
    res = run_probes(lm, list(FLUENCY_PROMPTS), [[] for _ in FLUENCY_PROMPTS], gen_tokens=tokens)
    return sum(fluency(r.generation or "") for r in res) / len(res)


def known_panel(lm: LoadedModel, pool: Sequence[EditCase], size: int, tokens: int) -> list[EditCase]:
    """The first `size` pool cases the unedited model recalls (greedy generation names the true object).

    A pool that knows fewer than `size` gives all it knows (the run stores the panel's n), as the shipped runs'
    pool of 240 gave 49 for a panel of 50 (plans/shipped.toml re-creates that layout); fewer than
    min(size, 5) is refused, with the pool size that would hold `size` known facts at the pool's share."""
    res = run_probes(lm, [c.prompt for c in pool], [[c.true_object] for c in pool], gen_tokens=tokens)
    known = [c for c, r in zip(pool, res) if mentions(r.generation or "", c.true_names())]
    if len(known) < min(size, 5):
        need = math.ceil(size * len(pool) / len(known) * 1.15) if known else None
        raise ValueError(f"the unedited model recalls only {len(known)} of the {len(pool)} panel-pool facts, too few "
                         f"for a panel of {size}: use a larger --panel-pool"
                         + (f" (about {need} cases at this share)" if need else "") + " or a smaller --panel-size")
    return known[:size]


@torch.no_grad()
def weight_drift(lm: LoadedModel, w0: dict[str, torch.Tensor]) -> list[dict]:
    """||W - W0||_F, ||W - W0||_F / ||W0||_F and cond(W) for every matrix edited so far."""
    params = dict(lm.model.named_parameters())
    rows = []
    for name, original in sorted(w0.items()):
        w = params[name].detach().double()
        diff = (w - original.double()).norm().item()
        sv = torch.linalg.svdvals(w)
        rows.append({
            "module": name.removesuffix(".weight"),
            "fro_delta": diff,
            "rel_change": diff / max(original.double().norm().item(), 1e-30),
            "cond_number": (sv[0] / sv[-1]).item() if sv[-1] > 0 else math.inf,
        })
    return rows


def _run_level(run_id: str, count: int, scope: str, values: dict) -> list[dict]:
    return [{"run_id": run_id, "case_id": RUN_LEVEL, "edit_count": count, "rephrase_type": scope,
             "metric": m, "value": float(v)} for m, v in values.items()]


# --------------------------------------------------------------------------- phases and disabling edits

detect_phases = phase_break  # the phase rule (its docstring states it), under the name this module gave it


@torch.no_grad()
def update_size(params: dict, originals: dict[str, torch.Tensor], w0: dict[str, torch.Tensor]) -> dict:
    """{"update_norm": ||W_after - W_before||_F, "update_w0": ||W0||_F}, each over every matrix this update
    changed (`originals`: their weights before it; `w0`: before the run)."""
    sq = sum((params[n].detach().double() - o.double()).pow(2).sum().item() for n, o in originals.items())
    w0_sq = sum(w0.get(n, o).double().pow(2).sum().item() for n, o in originals.items())
    return {"update_norm": math.sqrt(sq), "update_w0": math.sqrt(w0_sq)}


# --------------------------------------------------------------------------- state


def _save_state(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _load_state(path: Path) -> dict | None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        return None
    if state.get("version") != STATE_VERSION:
        return None
    return state


# --------------------------------------------------------------------------- the run


def run_sequential(
    lm: LoadedModel,
    cases: Sequence[EditCase],
    store,
    *,
    editor: str,
    hp,
    ctx: EditContext,
    cfg: SequentialConfig = SequentialConfig(),
    case_set: str | None = None,
    run_id: str | None = None,
    abilities: Callable[[LoadedModel], list[dict]] | None = None,
    final_abilities: Callable[[LoadedModel], list[dict]] | None = None,
    exclude_facts=(),
    extend: bool = False,
    progress: bool = False,
    beside: bool = False,
    panel: Sequence[str] | None = None,
) -> str:
    """Edit `cases` one batch after another (module docstring); returns the run id (resumes `run_id`, and
    with `extend` lets it go on past the maximum it was made with, up to `cfg.max_edits`).

    `abilities(lm)` returns ability rows (task, task_version, mode, score, n, ci_low, ci_high) for the
    current model; it is called at edit count 0 and every `cfg.abilities_every` edits when given.
    `final_abilities(lm)` (the full suite) is called once on the model as the run leaves it, its rows stored
    at the last edit count; a run killed during it measures again on resume.
    `exclude_facts`: (subject, relation) pairs never edited (the ability suite's facts).
    `beside`: measure each edit's model on a shadow copy in a background thread while the next edit is made
    (compute.experiments.beside): the same rows, for a run alone on a machine with a spare core; run it with one
    intra-op thread (OMP_NUM_THREADS=1).
    `panel`: for a new run, the case ids `known_panel` already chose on this unedited model (the CLI finds them
    before the run exists); they must be the pool's known facts in order, else ValueError.
    """
    cfg.validate()
    ensure_editor(editor)
    ed = get_editor(editor)
    if not ed.changes_weights:
        raise EditorError(f"{ed.name} edits in context and changes no weight: sequential runs need a weight editor")
    by_id = {c.case_id: c for c in cases}
    order = edit_order(list(by_id), cfg.order_seed)
    skip = ability_case_ids(cases, exclude_facts)
    edit_ids, pool_ids = split_order(order, cfg, skip)
    config = {**sequential_config(cfg, case_set, len(cases), ctx.cov_samples),
              "fluency_prompts": list(FLUENCY_PROMPTS), "excluded_cases": len(skip)}
    n_total = len(edit_ids)
    state = _load_state(state_path(ctx.cache_dir, run_id)) if run_id is not None else None
    spec = spec_for("sequential", lm.name, config, editor=ed.name, hp=hp, seed=ctx.seed)
    extending = run_id is not None and _check_layout(store, run_id, spec, state, extend)
    control_state = None
    if ed.name == "RandomRankOne" and state is None:  # the control: its reference run's per-edit norms, checked
        from compute.editors.control import initial_state  # before the run exists
        from compute.stored import reference_norms

        norms = reference_norms(store, hp.reference_run, cfg.batch_size) if hp.reference_run else None
        control_state = initial_state(hp, norms)
    run_id, resumed = open_run(store, run_id, kind="sequential", lm=lm, editor=ed.name, hp=hp, ctx=ctx,
                               config=config, n_total=n_total,
                               resume_at=None if state is None else int(state["edit_count"]))  # its checkpoint
    if extending:
        _record_extension(store, run_id, cfg.max_edits, n_total)
    path = state_path(ctx.cache_dir, run_id)
    params = dict(lm.model.named_parameters())
    w0: dict[str, torch.Tensor] = {}
    try:
        with recording(store, run_id):  # resuming or starting; the edits then run in run_loop's recording
            start_job = None
            if state is not None:
                with torch.no_grad():
                    for name, tensor in state["weights"].items():
                        w0[name] = params[name].detach().clone()
                        params[name].copy_(tensor)
                ctx.state = state["editor_state"]
                count, held, base = state["edit_count"], state["held"], state["base"]
                held_em = state.get("held_em", {})
                panel = [by_id[i] for i in state["panel"]]
                collapse_at, em_prev = state["collapse_at"], state["panel_em"]
                # the stop rule's flags (states saved before it: the store's record, and no stop yet)
                stop_flag = state.get("stop_flag", False)
                unusable = state.get("unusable", collapse_on_record(store, run_id))
            else:
                ctx.state = control_state or {}
                count, held, held_em, collapse_at = 0, {}, {}, None
                stop_flag = unusable = False
                pool = [by_id[i] for i in pool_ids]
                if panel is not None and cfg.panel_known_only:
                    if not _is_subsequence(panel, pool_ids) or len(panel) > cfg.panel_size:
                        raise ValueError("the panel given is not a choice of this run's panel pool: let the run "
                                         "choose it (panel=None)")
                    panel = [by_id[i] for i in panel]
                else:
                    panel = (known_panel(lm, pool, cfg.panel_size, cfg.panel_tokens) if cfg.panel_known_only
                             else pool[: cfg.panel_size])
                base, em_prev = None, None

                def start(m: LoadedModel) -> dict:  # the unedited model, measured while the first edit is made
                    recall, em = panel_recall(m, panel, cfg.panel_tokens)
                    first = {"panel_recall": recall, "panel_em": em, "fluency": free_fluency(m, cfg.fluency_tokens)}
                    rows = _run_level(run_id, 0, "panel", {"panel_recall": recall, "exact_match": em,
                                                           "n": len(panel)})
                    if cfg.panel_check:
                        rows += _run_level(run_id, 0, *_panel_check_row(
                            cfg, panel, panel_exact_match(m, panel[: cfg.panel_check])))
                    rows += _run_level(run_id, 0, "free_text", {"fluency": first["fluency"],
                                                                "n": len(FLUENCY_PROMPTS)})
                    ability_rows = ([{**r, "run_id": run_id, "edit_count": 0, "batch_size": cfg.batch_size}
                                     for r in abilities(m)] if abilities is not None else [])
                    return {"base": first, "panel_em": em, "rows": rows, "abilities": ability_rows}

                start_job = start
        last_checkpoint = count
        interval_start = clock()
        # Measurements run through `runner`: in this thread on `lm` (Inline), or with `beside` on a shadow copy in
        # a background thread while the next edit is made (compute.experiments.beside). Either way a measurement
        # sees the weights of the edit it belongs to, and its rows are written, in edit order, when it has
        # finished (`settle`): the same rows, in the same transactions, as one after the other.
        runner = Beside(lm) if beside else _Inline(lm)
        pending: dict | None = None

        def settle() -> None:
            nonlocal pending, em_prev, collapse_at, interval_start, base, unusable
            if pending is None:
                return
            job, pending = pending, None
            out = job["future"].result()
            if job["kind"] == "start":
                store.write_measurements(out["rows"])
                if out["abilities"]:
                    store.write_abilities(out["abilities"])
                base, em_prev = out["base"], out["panel_em"]
                _save_state(path, {"version": STATE_VERSION, "edit_count": 0, "weights": {}, "editor_state": {},
                                   "held": {}, "base": base, "panel": [c.case_id for c in panel],
                                   "collapse_at": None, "panel_em": em_prev, "stop_flag": False, "unusable": False})
                return
            if job["kind"] == "check":
                em_prev = out
                store.write_unit(measurements=job["rows"] + _run_level(run_id, job["count"], *_panel_check_row(
                    cfg, panel, out)), diagnostics=job["diagnostics"])
                return
            _write_checkpoint(store, out)
            collapse_at, em_prev = out["collapse_at"], out["panel_em"]
            find_events(store, run_id, cfg)  # verdicts so far (phases once the run spans a fifth of its edits)
            unusable = collapse_on_record(store, run_id)  # what the next checkpoint's stop rule goes by
            _save_state(path, {
                "version": STATE_VERSION, "edit_count": job["count"], "weights": job["weights"],
                "editor_state": job["editor_state"], "held": out["held"], "held_em": out["held_em"],
                "base": base, "panel": [c.case_id for c in panel], "collapse_at": collapse_at, "panel_em": em_prev,
                "stop_flag": job["stop_flag"], "unusable": unusable,
            })
            store.write_events([_timing_event(run_id, job["last"], job["count"], interval_start, lm)])
            interval_start = clock()
            store.heartbeat(run_id, n_done=job["count"], n_total=n_total)

        def units():
            """The batches still to edit, up to the run's end or the stop rule (module docstring): `after_collapse`
            edits past the panel floor, at a checkpoint measured with the collapse on record (`stop_flag`, the
            flag the latest checkpoint was measured with, so the run stops where that checkpoint was final)."""
            while count < len(edit_ids):
                if pending is not None and pending["kind"] == "checkpoint" and cfg.after_collapse == 0:
                    settle()  # a panel floor found there would end the run before this edit
                if collapse_at is not None and count >= collapse_at + cfg.after_collapse and stop_flag:
                    return
                yield edit_ids[count : count + cfg.batch_size]

        def before() -> None:
            nonlocal pending, interval_start
            if start_job is not None:
                pending = {"kind": "start", "future": runner.submit({}, start_job)}
                if not beside:
                    settle()
                    interval_start = clock()

        def step(ids: list[str]) -> None:
            """One edit (or batch), its rows written when its measurements are (`settle`)."""
            nonlocal count, pending, last_checkpoint, stop_flag
            batch = [by_id[i] for i in ids]
            result = apply_edit(lm, [EditRequest.from_case(c) for c in batch], ed.name, hp, ctx)
            # the edit's own diagnostics, read before anything else touches the weights; written in the same
            # transaction as its rows, so a resumed run rewrites both with the same numbers
            diagnostics = edit_diagnostics(lm, result, hp, run_id, count + len(batch), batch)
            if ed.commit is not None:
                ed.commit(ctx, result)
            for name, original in result.originals.items():
                w0.setdefault(name, original)
            previous, count = count, count + len(batch)
            due = checkpoint_due(count, previous, cfg) or count >= len(edit_ids)
            rows = _run_level(run_id, count, "edit", update_size(params, result.originals, w0))
            for c in batch:
                rows += edit_rows(run_id, c.case_id, result.info, edit_count=count)
            edited = {n: params[n] for n in w0}  # Beside.submit snapshots them; Inline reads them in place
            settle()  # the previous edit's measurements (beside: they ran during this edit)
            if not due:  # at a checkpoint the panel's exact match comes with its recall, from the same pass
                sub = panel[: cfg.panel_check] if cfg.panel_check else panel
                pending = {"kind": "check", "count": count, "rows": rows, "diagnostics": diagnostics,
                           "future": runner.submit(edited, functools.partial(panel_exact_match, panel=sub))}
            else:
                store.write_unit(measurements=rows, diagnostics=diagnostics)
                weights = {n: w.detach().clone() for n, w in edited.items()}  # the resume state's copy
                stop_flag = unusable  # the collapse on record as of the previous checkpoint
                measure = functools.partial(
                    _measure_checkpoint, run_id=run_id, cfg=cfg, edit_ids=edit_ids, by_id=by_id,
                    last=last_checkpoint, count=count, held=held, panel=panel, base=base, w0=dict(w0),
                    collapse_at=collapse_at, abilities=abilities, held_em=held_em, unusable=stop_flag)
                pending = {"kind": "checkpoint", "count": count, "last": last_checkpoint, "weights": weights,
                           "stop_flag": stop_flag,
                           "editor_state": copy.deepcopy(ctx.state) if beside else ctx.state,
                           "future": runner.submit(edited, measure)}
                last_checkpoint = count
            if not beside:
                settle()

        def after() -> None:
            settle()
            find_events(store, run_id, cfg)
            if final_abilities is not None:
                final_started = clock()
                _store_final_suite(store, run_id, count, cfg.batch_size, final_abilities(lm), final_started, lm, "run")

        try:
            run_loop(store, run_id, units(), step, n_total=n_total, n_done=count, count=len, heartbeat=False,
                     before=before, after=after, progress=progress, unit="edit",
                     desc=f"sequential {ed.name} b={cfg.batch_size}", timings=lambda: {"edits": count},
                     timing_every=None)  # its checkpoints are timed (_timing_event)
        finally:
            runner.close(wait=False)
    finally:
        with torch.no_grad():  # hand the caller back the unedited model
            for name, original in w0.items():
                params[name].copy_(original)
    return run_id


def _check_layout(store, run_id: str, spec, state: dict | None, extend: bool) -> bool:
    """Whether resuming `run_id` as `spec` (compute.runs.RunSpec) extends it (a larger max_edits, allowed by
    `extend`); a clear error, before anything is written, when the run was laid out differently or cannot be
    extended."""
    if store.get_run(run_id) is None:
        return False  # open_run says the run is not there
    differ, old_max = layout_differences(store, run_id, spec)
    if differ:
        raise ValueError(f"run {run_id} was made with {', '.join(differ)}: resume it with the options it was "
                         "made with, or start a new run (--again)")
    new_max = spec.layout["max_edits"]
    if old_max is None or old_max == new_max:
        return False
    if not extend or new_max < old_max:
        raise ValueError(f"run {run_id} was made with at most {old_max} edits, not {new_max}: resume it with "
                         f"--edits {old_max}" + ("" if new_max < old_max else f", or extend it with --edits {new_max}"))
    after = spec_of_run(store.get_run(run_id)).layout.get("after_collapse")
    after = SequentialConfig.after_collapse if after is None else after
    if (state is not None and state["collapse_at"] is not None and state["edit_count"] >= state["collapse_at"] + after
            and state.get("stop_flag", True)):  # a state saved before the usability half of the rule: it stopped
        raise ValueError(f"run {run_id} stopped {after} edits after its panel floor at {state['collapse_at']} edits, "
                         "past its collapse: there is nothing to extend (start a new run with --again)")
    return True


def _record_extension(store, run_id: str, new_max: int, n_total: int) -> None:
    """The run's config gets its new maximum and spec key (and the run its new n_total), and a run_events row
    (kind "extended") the old and new maximum, the edits stored then, the code version and the time."""
    from datetime import datetime, timezone

    from compute.provenance import code_version

    run = store.get_run(run_id)
    config = json.loads(run["config"] or "{}")
    old_max = config["max_edits"]
    updates = {"max_edits": new_max}
    if SPEC_KEY in config:  # the key hashes the maximum: it follows it
        grown = {**run, "config": json.dumps({**config, **updates})}
        updates[SPEC_KEY] = spec_of_run(grown).key()
    store.update_run_config(run_id, updates)
    store.heartbeat(run_id, n_total=n_total)
    store.write_events([{"run_id": run_id, "kind": "extended", "series": "", "edit_count": old_max,
                         "end_count": new_max, "value": None,
                         "detail": json.dumps({"edits_stored": run["n_done"], "code_version": code_version(),
                                               "at": datetime.now(timezone.utc).isoformat(timespec="seconds")})}])


def measure_saved_state(lm: LoadedModel, store, run_id: str, cache_dir: Path,
                        measure: Callable[[LoadedModel], list[dict]]) -> int:
    """Load a sequential run's saved state (its last checkpoint: the end of a finished run) into `lm`, write
    `measure(lm)`'s ability rows at that edit count into the run, put the unedited weights back, and return
    the edit count. For runs that ended without their full ability suite."""
    run = store.get_run(run_id)
    if run is None:
        raise ValueError(f"no run {run_id!r} in the store (list runs with `python -m compute runs list`)")
    if run["kind"] != "sequential":
        raise ValueError(f"run {run_id} is a {run['kind']} run: only a sequential run leaves an edited model "
                         "behind to measure")
    if run["model"] != lm.name:
        raise ValueError(f"run {run_id} edited {run['model']}, not {lm.name}: pass --model {run['model']}")
    path = state_path(cache_dir, run_id)
    state = _load_state(path)
    if state is None:
        raise ValueError(f"run {run_id} has no saved state at {path} (it lives in the cache of the machine that "
                         "ran it; resume or rerun the run there)")
    config = json.loads(run["config"] or "{}")
    params = dict(lm.model.named_parameters())
    unknown = sorted(set(state["weights"]) - set(params))
    if unknown:
        raise ValueError(f"run {run_id}'s saved state has weights this model lacks: {unknown[:3]}")
    originals = {name: params[name].detach().clone() for name in state["weights"]}
    count = int(state["edit_count"])
    started = clock()
    try:
        with torch.no_grad():
            for name, tensor in state["weights"].items():
                params[name].copy_(tensor)
        rows = measure(lm)
    finally:
        with torch.no_grad():
            for name, original in originals.items():
                params[name].copy_(original)
    _store_final_suite(store, run_id, count, int(config.get("batch_size", 1)), rows, started, lm, "saved state")
    return count


def _is_subsequence(ids: Sequence[str], order: Sequence[str]) -> bool:
    it = iter(order)
    return all(any(i == j for j in it) for i in ids)


class _Inline:
    """The runner that measures in the caller's thread, on the caller's model (the weights are already those
    given): `Beside`'s interface without the second thread."""

    def __init__(self, lm: LoadedModel):
        self.lm = lm

    def submit(self, weights, fn) -> Future:
        future: Future = Future()
        future.set_result(fn(self.lm))
        return future

    def close(self, wait: bool = True) -> None:
        pass


def _timing_event(run_id: str, previous: int, count: int, start: tuple[float, float], lm: LoadedModel,
                  series: str = "checkpoint", **extra) -> dict:
    """The run_events row timing the interval (previous, count] of edits, checkpoint included (series
    "checkpoint"), or the full ability suite at edit count `count` (series "final_abilities", `extra` says
    where and with which code it was measured). `start` is `clock()` at the interval's start: the value is
    its wall seconds, `cpu_s` in the detail its CPU seconds (a process stopped for a while, e.g. while the
    machine benchmarks, counts the pause in the first only; compute.plan estimates from the second)."""
    return timing_event(run_id, previous, count, start, series=series, edits=count - previous,
                        device=str(lm.device), **extra)


def _store_final_suite(store, run_id: str, count: int, batch_size: int, rows: list[dict], start: float,
                       lm: LoadedModel, source: str) -> None:
    """Write the suite's rows at the run's last edit count, and the run_events row saying how long it took,
    where it was measured ("run" or "saved state"), with which code and when."""
    from datetime import datetime, timezone

    from compute.provenance import code_version

    store.write_abilities([{**r, "run_id": run_id, "edit_count": count, "batch_size": batch_size} for r in rows])
    store.write_events([_timing_event(run_id, count, count, start, lm, series="final_abilities", source=source,
                                      code_version=code_version(),
                                      measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))])


def _measure_checkpoint(lm, run_id, cfg, edit_ids, by_id, last, count, held, panel, base, w0, collapse_at,
                        abilities, held_em, unusable: bool = False) -> dict:
    """Measure everything at a checkpoint, without touching the store (it may run on a `Beside` shadow model in
    another thread): returns the rows to write (`_write_checkpoint`), the (possibly new) panel-floor edit count,
    the panel's exact match and copies of `held` / `held_em` for the saved state. `held` / `held_em`: case id ->
    ES / exact match at the edit's first checkpoint (filled here). Earlier edits are re-checked as
    `full_recheck_due` and `age_recheck_due` say. `unusable`: the collapse was on record at the previous
    checkpoint (the stop rule's second half)."""
    rows = []
    recall, em, flu, em_check = panel_recall_and_fluency(lm, panel, cfg.panel_tokens, cfg.fluency_tokens,
                                                         cfg.panel_check)
    rows += _run_level(run_id, count, "panel", {"panel_recall": recall, "exact_match": em, "n": len(panel)})
    if cfg.panel_check:
        rows += _run_level(run_id, count, *_panel_check_row(cfg, panel, em_check))
    rows += _run_level(run_id, count, "free_text", {"fluency": flu, "n": len(FLUENCY_PROMPTS)})
    events = []
    if collapse_at is None:
        reasons = {}
        if flu < cfg.collapse_fluency * base["fluency"]:
            reasons["fluency"] = flu
        if recall < cfg.collapse_panel * base["panel_recall"]:
            reasons["panel_recall"] = recall
        if reasons:
            collapse_at = count
            events = [{"run_id": run_id, "kind": "panel_floor", "series": s, "edit_count": count,
                       "value": v, "detail": json.dumps({"baseline": base[s], "threshold": getattr(
                           cfg, "collapse_fluency" if s == "fluency" else "collapse_panel")})}
                      for s, v in reasons.items()]
    # the run's last checkpoint (its last edit, or where the stop rule ends it) re-checks every edit
    final = count >= len(edit_ids) or (collapse_at is not None and count >= collapse_at + cfg.after_collapse
                                       and unusable)
    full = full_recheck_due(count, last, cfg, final)

    newest = [by_id[i] for i in edit_ids[last:count]]
    older = [by_id[i] for k, i in enumerate(edit_ids[:last])
             if full or age_recheck_due((k // cfg.batch_size + 1) * cfg.batch_size, last, count)]
    new_eval = evaluate_cases(lm, newest, ["plain", "paraphrase"], generation=False, neighbourhood=True,
                              new_exact_match=True)
    for ev in new_eval:
        rows += ev.rows(run_id, edit_count=count)
        held[ev.case_id] = ev.values["plain"]["es"]
        held_em[ev.case_id] = ev.values["plain"]["exact_match_new"]
    old_eval = (evaluate_cases(lm, older, ["plain"], generation=False, neighbourhood=False, new_exact_match=True)
                if older else [])
    now = {ev.case_id: ev.values["plain"]["es"] for ev in new_eval}
    now_em = {ev.case_id: ev.values["plain"]["exact_match_new"] for ev in new_eval}
    for ev in old_eval:
        now[ev.case_id] = ev.values["plain"]["es"]
        now_em[ev.case_id] = ev.values["plain"]["exact_match_new"]
        rows += [{"run_id": run_id, "case_id": ev.case_id, "edit_count": count, "rephrase_type": "plain",
                  "metric": metric, "value": value}
                 for metric, value in (("es", now[ev.case_id]), ("exact_match_new", now_em[ev.case_id]))]

    def mean_of(rtype, metric):
        vals = [ev.values[rtype][metric] for ev in new_eval if metric in ev.values.get(rtype, {})]
        return sum(vals) / len(vals) if vals else float("nan")

    rows += _run_level(run_id, count, "newest", {"es": mean_of("plain", "es"), "ps": mean_of("paraphrase", "es"),
                                                 "ns": mean_of(NEIGHBOURHOOD, "ns"), "n": len(newest)})
    # edits made before exact-match tracking (a run resumed from an older state) count from their next check
    for i in now_em:
        held_em.setdefault(i, now_em[i])
    if full:  # retention and forgetting are shares of ALL edits so far: only where every edit was re-checked
        was_held = [i for i in now if holds(held.get(i, 0))]
        forgotten = sum(now[i] < HELD for i in was_held) / len(was_held) if was_held else 0.0
        was_held_em = [i for i in now_em if holds(held_em[i])]
        forgotten_em = sum(now_em[i] < HELD for i in was_held_em) / len(was_held_em) if was_held_em else 0.0
        rows += _run_level(run_id, count, "all_edits", {
            "retention": sum(holds(v) for v in now.values()) / len(now), "forgotten": forgotten, "n": len(now),
            "n_held": len(was_held), "retention_em": sum(holds(v) for v in now_em.values()) / len(now_em),
            "forgotten_em": forgotten_em, "n_held_em": len(was_held_em)})
    drift = [{**r, "run_id": run_id, "edit_count": count} for r in weight_drift(lm, w0)]
    ability_rows = []
    if abilities is not None and cfg.abilities_every and (count // cfg.abilities_every > last // cfg.abilities_every):
        ability_rows = [{**r, "run_id": run_id, "edit_count": count, "batch_size": cfg.batch_size}
                        for r in abilities(lm)]
    return {"rows": rows, "drift": drift, "abilities": ability_rows, "events": events, "collapse_at": collapse_at,
            "panel_em": em, "held": dict(held), "held_em": dict(held_em)}


def _write_checkpoint(store, measured: dict) -> None:
    """Write what `_measure_checkpoint` measured, in the order the runner always wrote it."""
    store.write_measurements(measured["rows"])
    store.write_weight_drift(measured["drift"])
    if measured["abilities"]:
        store.write_abilities(measured["abilities"])
    if measured["events"]:
        store.write_events(measured["events"])


def collapse_on_record(store, run_id: str) -> bool:
    """Whether the run's derived events hold a collapse: the model no longer usable at every ability checkpoint
    from some edit count through the latest (store.derived.collapse_event), the stop rule's second half."""
    return store.conn.execute("SELECT 1 FROM run_events WHERE run_id = ? AND kind = 'collapse' LIMIT 1",
                              (run_id,)).fetchone() is not None


def find_events(store, run_id: str, cfg: SequentialConfig | None = None) -> int:
    """The run's verdicts from its whole stored history (store.derived.derive_sequential_events: phases on every
    series, disabling edits, abrupt changes, collapse, panel floor), replacing its earlier ones; returns how
    many events were written. `cfg` is not needed (the run's stored config is read) and kept for callers."""
    return rederive_sequential_events(store, run_id)

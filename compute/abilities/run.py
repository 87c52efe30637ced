"""Evaluate a model on the general-ability suite: one score with its n and 95% CI per task.

Two modes (issue 5):

- `quick`: each task's first `quick_n` items (the items are interleaved over their strata, so this is a
  balanced subset); used at every checkpoint of a sequential-editing run. Each task's quick_n gives at
  least 80% power to detect a 0.1 accuracy drop (a 10% perplexity rise) from the unedited model's score
  (compute.abilities.power; nli uses all its 184 items, 79-81%).
- `full`: every item; used on the unedited model and at the end of a run.

Measured on the default model (SmolLM2-135M-Instruct, fp32) on the project's 2-core CPU with
OMP_NUM_THREADS=1, 2026-12-05, while other jobs kept the load average at 6-9: quick mode (task version 2)
took 152 s of CPU time (306 s of wall time at that load; an earlier run with 242 perplexity windows
instead of 250 took 158 s), against 39 s of CPU time for version 1's smaller quick mode in the same
process; the costliest tasks are lm_perplexity
(40 s), nli (31 s) and dialogue_memory (23 s). Full mode took 292 s of wall time (2026-11-21, load about
5). The model reads about 300-400 tokens a second this way, so the cost of a task is the tokens it pushes
through: shared prefixes run once and options reuse their query's cache.

`evaluate_abilities` is a pure function of the model's weights: it reads them and never changes them.
Items can be built once (`load_items`) and passed in, so a sequential run does not rebuild them at
every checkpoint.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

from compute.abilities.data import Item, Sources
from compute.abilities.scoring import (
    Estimate,
    accuracy_estimate,
    choice_logprobs,
    perplexity_estimate,
    pick_option,
    token_nlls,
)
from compute.abilities.tasks import TASKS, Task, get_task
from compute.models import LoadedModel

MODES = ("quick", "full")


@dataclass(frozen=True)
class AbilityScore:
    """One task's score on one model in one mode, with its n and 95% CI."""

    task: str
    category: str
    study_c: str
    task_version: str
    mode: str
    metric: str
    score: float
    n: int
    ci_low: float
    ci_high: float
    chance: float
    higher_is_better: bool
    seconds: float = 0.0

    @property
    def clear_of_chance(self) -> bool:
        """The whole 95% CI is on the good side of chance."""
        return self.ci_low > self.chance if self.higher_is_better else self.ci_high < self.chance


def _tasks(tasks: Sequence[str | Task] | None) -> list[Task]:
    if tasks is None:
        return list(TASKS.values())
    return [t if isinstance(t, Task) else get_task(t) for t in tasks]


def load_items(tasks: Sequence[str | Task] | None = None, sources: Sources | None = None
               ) -> dict[str, tuple[list[Item], list[Item]]]:
    """{task name: (shots, every item)} for the tasks (default: all), built once from package data."""
    sources = sources or Sources()
    return {t.name: t.shots_and_items(sources) for t in _tasks(tasks)}


def kb_facts_used(tasks: Sequence[str | Task] | None = None, sources: Sources | None = None
                  ) -> set[tuple[str, str]]:
    """(subject, relation) pairs of the knowledge-base facts that the tasks (default: all) state or ask:
    edit experiments leave these facts out, so an edit never changes the answer to an ability item."""
    sources = sources or Sources()
    return {pair for t in _tasks(tasks) for pair in t.facts(sources)}


def chance_of(task: Task, lm: LoadedModel) -> float:
    """The task's chance level on this model: its fixed value, or for perplexity the vocabulary size
    (the perplexity of a uniform next-token distribution)."""
    if task.chance is not None:
        return task.chance
    return float(lm.model.get_output_embeddings().weight.shape[0])


def score_choice_task(task: Task, lm: LoadedModel, shots: list[Item], items: list[Item]) -> list[bool]:
    """Whether the model's chosen option is the right one, for each item."""
    prefix, queries = task.prompts(items, shots, lm.tokenizer)
    scores = choice_logprobs(lm, prefix, queries, [it.options for it in items])
    return [pick_option(s, task.norm) == it.answer for s, it in zip(scores, items)]


def score_perplexity_task(task: Task, lm: LoadedModel, items: list[Item]) -> list[tuple[float, int]]:
    """(summed NLL, predicted tokens) of the first `max_tokens` tokens of each item's text."""
    windows = [lm.tokenizer(it.fields["text"], add_special_tokens=True).input_ids[: task.max_tokens] for it in items]
    return token_nlls(lm, windows)


def evaluate_task(task: Task, lm: LoadedModel, shots: list[Item], items: list[Item], mode: str) -> AbilityScore:
    """Score one task on the given items (the caller has already chosen them for the mode)."""
    started = time.monotonic()
    if task.scoring == "choice":
        est: Estimate = accuracy_estimate(score_choice_task(task, lm, shots, items))
    else:
        nlls = score_perplexity_task(task, lm, items)
        est = perplexity_estimate([a for a, _ in nlls], [b for _, b in nlls])
    return AbilityScore(
        task=task.name, category=task.category, study_c=task.study_c, task_version=task.version, mode=mode,
        metric=task.metric, score=est.score, n=est.n, ci_low=est.ci_low, ci_high=est.ci_high,
        chance=chance_of(task, lm), higher_is_better=task.higher_is_better,
        seconds=round(time.monotonic() - started, 2),
    )


def evaluate_abilities(
    lm: LoadedModel,
    mode: str = "quick",
    tasks: Sequence[str | Task] | None = None,
    *,
    items: dict[str, tuple[list[Item], list[Item]]] | None = None,
    sources: Sources | None = None,
    progress: Callable[[AbilityScore], None] | None = None,
) -> list[AbilityScore]:
    """Score the model on each task (default: all) in `mode` ('quick' or 'full'); one AbilityScore per task.

    items: prebuilt {task: (shots, items)} from `load_items` (built here when missing).
    progress: called with each task's score as it is done.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: use 'quick' (first quick_n items per task) or 'full' (every item)")
    chosen = _tasks(tasks)
    items = dict(items or {})
    missing = [t for t in chosen if t.name not in items]
    if missing:
        items.update(load_items(missing, sources))
    out = []
    was_training = lm.model.training
    lm.model.eval()
    try:
        for task in chosen:
            shots, every = items[task.name]
            subset = every if mode == "full" else every[: task.quick_n]
            score = evaluate_task(task, lm, shots, subset, mode)
            out.append(score)
            if progress:
                progress(score)
    finally:
        lm.model.train(was_training)
    return out


def ability_rows(scores: Sequence[AbilityScore], run_id: str | None, edit_count: int | None,
                 batch_size: int | None) -> list[dict]:
    """Rows of the store table `abilities` for these scores. A caller that fills run_id, edit_count or
    batch_size in later (a sequential run at a checkpoint) may pass None for them."""
    return [
        {
            "run_id": run_id,
            "edit_count": edit_count,
            "batch_size": batch_size,
            "task": s.task,
            "task_version": s.task_version,
            "mode": s.mode,
            "score": float(s.score),
            "n": int(s.n),
            "ci_low": float(s.ci_low),
            "ci_high": float(s.ci_high),
            # what the score is, kept beside it (store schema v4) so readers need no task code
            "category": s.category,
            "study_c": s.study_c,
            "metric": s.metric,
            "chance": float(s.chance),
            "higher_is_better": int(bool(s.higher_is_better)),
        }
        for s in scores
    ]


def suite(mode: str | None, tasks: Sequence[str | Task] | None = None, sources: Sources | None = None
          ) -> Callable[[LoadedModel], list[dict]] | None:
    """The suite as the runners call it: a function model -> ability rows (run_id, edit_count and batch_size
    left for the caller to fill), its items built once; None when `mode` is None or "none"."""
    if not mode or mode == "none":
        return None
    items = load_items(tasks, sources)

    def measure(model: LoadedModel) -> list[dict]:
        return ability_rows(evaluate_abilities(model, mode, tasks, items=items), run_id=None, edit_count=None,
                            batch_size=None)

    return measure

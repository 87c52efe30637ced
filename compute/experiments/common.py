"""Steps every experiment shares: recording a run's fate, opening a run, one edit evaluated then undone, and
the values of the next edits optimised together. The loop that runs an experiment's units is compute.runs."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Sequence

from compute.cases import EditCase
from compute.editors import EditContext, EditRequest, apply_edit, undo
from compute.editors.base import EditResult
from compute.evaluate import CaseEvaluation, evaluate_cases
from compute.models import LoadedModel


def how_to_continue(run_id: str, *, resume_flag: bool = True) -> str:
    """What an interrupted run's owner does next: the same command again picks the run up (it finds the
    matching unfinished run), or names it with --resume where the command has that option."""
    if resume_flag:
        return f"run the same command again, or add --resume {run_id}, to continue it"
    return "run the same command again to continue it"


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) inside a run, raised after the run was marked interrupted: it names the run and
    says how to continue it, so the command line's message can too."""

    def __init__(self, run_id: str, next_step: str):
        super().__init__(run_id)
        self.run_id, self.next_step = run_id, next_step


def interrupt(store, run_id: str, next_step: str) -> RunInterrupted:
    """Mark `run_id` interrupted (its stored results stay) and return the exception to raise."""
    store.finish_run(run_id, status="interrupted", error=f"interrupted by the user ({next_step})")
    return RunInterrupted(run_id, next_step)


@contextmanager
def recording(store, run_id: str, *, next_step: str | None = None):
    """Inside: a run in progress. Ctrl-C marks it interrupted and raises `RunInterrupted` naming it (with
    `next_step`, default: the same command again or --resume RUN_ID); an exception marks it failed with the
    error and is re-raised. Marking it done is the caller's last step."""
    try:
        yield
    except KeyboardInterrupt:
        raise interrupt(store, run_id, next_step or how_to_continue(run_id)) from None
    except Exception as exc:
        store.finish_run(run_id, status="failed", error=f"{type(exc).__name__}: {exc}")
        raise


def open_run(store, run_id: str | None, *, kind: str, lm: LoadedModel, editor: str, hp, ctx: EditContext,
             config: dict, n_total: int, resume_at: int | None = None) -> tuple[str, bool]:
    """(run id, resumed): a new run of this kind with its provenance and its spec's key (compute.runs) when
    `run_id` is None, else the run `run_id` reopened for resuming, refused if another editor made it
    (`resume_at`: where the work goes on from, for the run's record of its resumes; default its stored
    progress)."""
    from compute.editors import get_editor
    from compute.editors.base import editor_traits, hparams_dict
    from compute.provenance import provenance
    from compute.runs import spec_for, stored_config
    from store.conventions import TRAITS_KEY

    if run_id is None:
        spec = spec_for(kind, lm.name, config, editor=editor, hp=hp, seed=ctx.seed)
        config = {**stored_config(spec, config), TRAITS_KEY: editor_traits(get_editor(editor), hp)}
        return store.start_run(kind=kind, model=lm.name, editor=editor, hparams=hparams_dict(hp), seed=ctx.seed,
                               config=config, provenance=provenance(str(lm.device)), n_total=n_total), False
    run = store.resume_run(run_id, at=resume_at)
    if run.get("editor") != editor:
        raise ValueError(f"run {run_id} was made with {run.get('editor')}, not {editor}: resume it with that editor")
    return run_id, True


@contextmanager
def values_ahead(ctx: EditContext, cases: Sequence[EditCase]):
    """For runs that undo every edit exactly (robustness, sweeps): inside, ctx.value_cache is an in-memory cache
    (compute.editors.value_cache.MemoryValueCache) that optimises the values of the next AHEAD cases of
    `cases` (those still to do, in order) in one packed call; yields `at(i)`, to call before editing cases[i].
    ROME, MEMIT and AlphaEdit use it; other editors ignore it. A cache the caller set is kept as it is."""
    from compute.editors.value_cache import AHEAD, MemoryValueCache

    outer = ctx.value_cache
    if outer is not None:
        yield lambda i: None
        return
    cache = ctx.value_cache = MemoryValueCache()
    requests = [EditRequest.from_case(c) for c in cases]
    try:
        yield lambda i: cache.plan(requests[i : i + AHEAD])
    finally:
        ctx.value_cache = outer


def edit_and_evaluate(
    lm: LoadedModel,
    case: EditCase,
    others: Sequence[EditCase],
    editor: str,
    hp,
    ctx: EditContext,
    rephrase_types: Sequence[str],
    *,
    run_id: str,
    edit_count: int = 1,
    **evaluate_kwargs,
) -> tuple[CaseEvaluation, EditResult, list[dict]]:
    """Edit one case, evaluate its probes on the edited model, read the edit's diagnostics
    (compute.editors.diagnostics, rows of `run_id` at `edit_count`), and undo the edit whatever happens.

    `others` are the demonstrations an in-context editor may draw on (never the case itself). An edit whose
    probes come back empty or whose diagnostics are not finite raises ValueError: the run fails, it is never
    marked done with missing or NaN numbers.
    """
    from compute.editors.diagnostics import edit_diagnostics

    ctx.demonstrations = [c for c in others if c.case_id != case.case_id]
    result = apply_edit(lm, [EditRequest.from_case(case)], editor, hp, ctx)
    try:
        diagnostics = edit_diagnostics(lm, result, hp, run_id, edit_count, [case])
        ev = evaluate_cases(lm, [case], rephrase_types, prefix=result.prefix, **evaluate_kwargs)[0]
    finally:
        undo(lm, result)
    if not ev.rows(run_id, edit_count):
        raise ValueError(f"case {case.case_id}: no probe of types {list(rephrase_types)} came back with a score; "
                         "check that the case set has probes of these types (`cases show --case ID`)")
    return ev, result, diagnostics

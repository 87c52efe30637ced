"""Steps every experiment shares: recording a run's fate, and one edit evaluated then undone."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Sequence

from compute.cases import EditCase
from compute.editors import EditContext, EditRequest, apply_edit, undo
from compute.editors.base import EditResult
from compute.evaluate import CaseEvaluation, evaluate_cases
from compute.models import LoadedModel

INTERRUPTED = "interrupted by the user (run the same command again, or pass --resume RUN_ID, to continue)"


@contextmanager
def recording(store, run_id: str):
    """Inside: a run in progress. Ctrl-C marks it interrupted, an exception marks it failed with the error;
    both are re-raised. Marking it done is the caller's last step."""
    try:
        yield
    except KeyboardInterrupt:
        store.finish_run(run_id, status="interrupted", error=INTERRUPTED)
        raise
    except Exception as exc:
        store.finish_run(run_id, status="failed", error=f"{type(exc).__name__}: {exc}")
        raise


def open_run(store, run_id: str | None, *, kind: str, lm: LoadedModel, editor: str, hp, ctx: EditContext,
             config: dict, n_total: int) -> tuple[str, bool]:
    """(run id, resumed): a new run of this kind with its provenance when `run_id` is None, else the run
    `run_id` reopened for resuming, refused if another editor made it."""
    from compute.editors.base import hparams_dict
    from compute.provenance import provenance

    if run_id is None:
        return store.start_run(kind=kind, model=lm.name, editor=editor, hparams=hparams_dict(hp), seed=ctx.seed,
                               config=config, provenance=provenance(str(lm.device)), n_total=n_total), False
    run = store.resume_run(run_id)
    if run.get("editor") != editor:
        raise ValueError(f"run {run_id} was made with {run.get('editor')}, not {editor}: resume it with that editor")
    return run_id, True


def edit_and_evaluate(
    lm: LoadedModel,
    case: EditCase,
    others: Sequence[EditCase],
    editor: str,
    hp,
    ctx: EditContext,
    rephrase_types: Sequence[str],
    **evaluate_kwargs,
) -> tuple[CaseEvaluation, EditResult]:
    """Edit one case, evaluate its probes on the edited model, and undo the edit whatever happens.

    `others` are the demonstrations an in-context editor may draw on (never the case itself).
    """
    ctx.demonstrations = [c for c in others if c.case_id != case.case_id]
    result = apply_edit(lm, [EditRequest.from_case(case)], editor, hp, ctx)
    try:
        ev = evaluate_cases(lm, [case], rephrase_types, prefix=result.prefix, **evaluate_kwargs)[0]
    finally:
        undo(lm, result)
    return ev, result

"""The one contract every editor follows, and the registry that names them.

An editor is (hyperparameters class, apply function):

    apply(lm: LoadedModel, requests: Sequence[EditRequest], hp: <its frozen dataclass>, ctx: EditContext) -> EditResult

`apply` edits `lm.model` in place and returns an EditResult that holds an exact copy of every weight it
changed (so `undo` restores the model bit for bit), the prompt prefix an in-context editor needs at
evaluation time, and a record of what was done (steps, losses, norms, seconds). Invariant: apply then
undo leaves every parameter bit-identical to before apply.

Hyperparameters are frozen dataclasses, one JSON file per (editor, model) in compute/editors/hparams/
(`hparams/ROME/smollm2-135m.json`); module names in them are templates from the architecture table, so
files never hard-code another model's names. `load_hparams` refuses unknown keys and bad values with
the field's name.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from compute.cases import EditCase, validate_request
from compute.models import LoadedModel

HPARAMS_DIR = Path(__file__).resolve().parent / "hparams"


class EditorError(ValueError):
    """An editor cannot be used as asked (unknown name, bad hyperparameters); the message says what to do."""


@dataclass(frozen=True)
class EditRequest:
    """Change the object that follows `prompt` (which names `subject`) to `target_new`."""

    subject: str
    prompt: str  # ends right before the object, e.g. "The capital of France is"
    target_new: str
    target_true: str | None = None
    case_id: str | None = None

    def __post_init__(self):
        validate_request(self.subject, self.prompt, self.target_new, self.target_true)

    @classmethod
    def from_case(cls, case: EditCase) -> "EditRequest":
        return cls(case.subject, case.prompt, case.new_object, case.true_object, case.case_id)


@dataclass
class EditContext:
    """What editors may need beyond the model: cached statistics, the cache folder, a seed, a device.

    `covariance(layer)` returns E[k k^T] of the edited matrix's input at that layer (float64, [d_in, d_in]),
    computed once per (model, layer, sample size) and cached on disk (compute.covariance).
    """

    cache_dir: Path
    seed: int = 0
    cov_samples: int = 20_000  # corpus tokens used for covariance statistics (recorded with every run)
    covariance: Callable[[int], torch.Tensor] | None = None
    demonstrations: Sequence[EditCase] = ()  # for in-context editing
    # What an editor remembers across the edits of one sequential run (AlphaEdit: the keys of the edits
    # already made). Editors only read it; the runner passes a kept edit to `Editor.commit`, which updates
    # it, so an edit that is undone leaves no trace here. Tensors only, so a checkpoint can save it.
    state: dict = field(default_factory=dict)
    # compute.editors.value_cache: ROME, MEMIT and AlphaEdit reuse the target values already optimised for the
    # same request on the same weights. The batch-single runner sets a ValueCache, robustness runs and sweeps a
    # MemoryValueCache (the next cases' values optimised together); None everywhere else.
    value_cache: object | None = None


@dataclass
class EditResult:
    """What an edit changed and how it went."""

    editor: str
    requests: tuple[EditRequest, ...]
    originals: dict[str, torch.Tensor] = field(default_factory=dict)  # parameter name -> exact copy before the edit
    prefix: str = ""  # text an in-context editor puts before every probe at evaluation time
    info: dict = field(default_factory=dict)  # steps, losses, norms, layers, seconds: JSON-serialisable
    memory: dict = field(default_factory=dict)  # what `Editor.commit` folds into ctx.state if the edit is kept

    @property
    def changed(self) -> list[str]:
        return sorted(self.originals)


def snapshot(lm: LoadedModel, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """Exact copies of the named parameters (call before changing them)."""
    params = dict(lm.model.named_parameters())
    missing = [n for n in names if n not in params]
    if missing:
        raise EditorError(f"model {lm.name} has no parameters {missing}")
    return {n: params[n].detach().clone() for n in names}


@torch.no_grad()
def undo(lm: LoadedModel, result: EditResult) -> None:
    """Restore every parameter the edit changed, bit for bit."""
    params = dict(lm.model.named_parameters())
    for name, original in result.originals.items():
        params[name].copy_(original)


def weight_name(lm: LoadedModel, layer: int) -> str:
    """Parameter name of the edited MLP down-projection weight at a layer."""
    return lm.arch.mlp_down.format(layer) + ".weight"


@dataclass(frozen=True)
class Editor:
    name: str
    hparams: type
    apply: Callable[..., EditResult]
    description: str
    changes_weights: bool = True
    # commit(ctx, result): called by a sequential runner once an edit is kept (not undone), to fold what
    # the edit leaves behind into ctx.state; None for editors with no memory across edits
    commit: Callable[[EditContext, EditResult], None] | None = None
    mass: bool = False  # made to edit many facts in one update (MEMIT, AlphaEdit): its runs are named by batch size
    # False for a control that changes the weights without aiming at the request's fact (study B's random
    # rank-one updates): readers leave its runs out of the edit series (efficacy, retention) and name it a control
    edits_facts: bool = True


EDITORS: dict[str, Editor] = {}


def editor_traits(editor: Editor, hp) -> dict:
    """What readers of the store need to know of the editor that made a run, written into the run's config
    under store.conventions.TRAITS_KEY so that they never compare editor names: a mass editor (named by batch
    size), whether it changes weights (in-context editors do not), whether it edits facts (a control does not)
    and, for editors with a key variant, which keys it used (r-ROME's shared prefix mean, or the original ROME
    keys)."""
    traits = {"mass_editor": editor.mass, "changes_weights": editor.changes_weights, "edits_facts": editor.edits_facts}
    if hasattr(hp, "key_mismatch"):
        traits["keys"] = "original" if hp.key_mismatch else "r-ROME"
    return traits


def check_finite(editor: str, hp) -> None:
    """Refuse any hyperparameter that is a non-finite number (NaN passes every `<` comparison, and an
    infinite weight turns a loss into NaN): called first by every editor's `validate`."""
    for f in dataclasses.fields(hp):
        value = getattr(hp, f.name)
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                raise EditorError(f"{editor} field {f.name!r} must be a finite number, got {value!r}")


def register(editor: Editor) -> Editor:
    EDITORS[editor.name] = editor
    return editor


def get_editor(name: str) -> Editor:
    """The editor registered under `name` (case-insensitive), or EditorError listing the known ones."""
    from compute import editors  # noqa: F401  (importing the package registers every editor)

    for key, ed in EDITORS.items():
        if key.lower() == name.lower():
            return ed
    raise EditorError(f"unknown editor {name!r}: choose one of {', '.join(sorted(EDITORS))}")


def parse_hparams(cls: type, data: dict, where: str = "hyperparameters"):
    """Build a frozen hyperparameter dataclass from a dict, refusing unknown keys and wrong types by name.

    Keys starting with '_' (e.g. "_source": where the values come from) are documentation, not fields.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {k: v for k, v in data.items() if not k.startswith("_")}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise EditorError(f"{where}: unknown field(s) {unknown}; {cls.__name__} has {sorted(fields)}")
    for name, value in values.items():
        want = fields[name].type
        want = want if isinstance(want, str) else getattr(want, "__name__", str(want))
        if want in ("int",) and (not isinstance(value, int) or isinstance(value, bool)):
            raise EditorError(f"{where}: field {name!r} must be an integer, got {value!r}")
        if want in ("float",) and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            raise EditorError(f"{where}: field {name!r} must be a number, got {value!r}")
        if want in ("bool",) and not isinstance(value, bool):
            raise EditorError(f"{where}: field {name!r} must be true or false, got {value!r}")
        if want in ("str",) and not isinstance(value, str):
            raise EditorError(f"{where}: field {name!r} must be a string, got {value!r}")
        if isinstance(value, list):
            values[name] = tuple(value)
    try:
        hp = cls(**values)
    except TypeError as exc:
        raise EditorError(f"{where}: {exc}") from None
    check = getattr(hp, "validate", None)
    if check is not None:
        check()
    return hp


def hparams_path(editor: str, model: str, variant: str | None = None) -> Path:
    """hparams/<EDITOR>/<model>.json (the default, calibrated for the model), or <model>.<variant>.json for a
    named setting kept beside it (e.g. 'paper': the paper's values, to compare with)."""
    return HPARAMS_DIR / editor / (f"{model}.json" if not variant else f"{model}.{variant}.json")


def hparams_variants(editor: str, model: str) -> list[str]:
    """The named settings shipped beside an editor's default file for a model."""
    prefix = f"{model}."
    return sorted(p.name[len(prefix):-len(".json")] for p in (HPARAMS_DIR / editor).glob(f"{model}.*.json"))


def load_hparams(editor: str, model: str, variant: str | None = None):
    """The hyperparameters of an editor for a model, from compute/editors/hparams/<EDITOR>/<model>.json, or
    the named setting <model>.<variant>.json (`hparams_variants` lists them)."""
    ed = get_editor(editor)
    path = hparams_path(ed.name, model, variant)
    if variant and not path.is_file():
        raise EditorError(f"no {ed.name} setting {variant!r} for model {model!r}: give a hyperparameter JSON file or "
                          f"one of {hparams_variants(ed.name, model) or 'no named settings'}")
    if not path.is_file():
        known = sorted(p.stem for p in (HPARAMS_DIR / ed.name).glob("*.json"))
        raise EditorError(f"no {ed.name} hyperparameters for model {model!r} (have: {known}); add {path}")
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise EditorError(f"{path} is not valid JSON ({exc})") from None
    return parse_hparams(ed.hparams, data, where=str(path))


def hparams_dict(hp) -> dict:
    """A hyperparameter dataclass as a JSON-ready dict (stored with every run)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(hp).items()}


def apply_edit(lm: LoadedModel, requests: Sequence[EditRequest], editor: str, hp, ctx: EditContext) -> EditResult:
    """Run an editor by name, timing it; the result's info gains 'seconds'."""
    ed = get_editor(editor)
    if not isinstance(hp, ed.hparams):
        raise EditorError(f"{ed.name} needs {ed.hparams.__name__}, got {type(hp).__name__}")
    if not requests:
        raise EditorError("no edit requests given")
    start = time.perf_counter()
    result = ed.apply(lm, list(requests), hp, ctx)
    result.info["seconds"] = round(time.perf_counter() - start, 4)
    params = dict(lm.model.named_parameters())
    bad = [name for name in result.originals if not bool(torch.isfinite(params[name]).all())]
    if bad:
        undo(lm, result)
        raise EditorError(
            f"{ed.name} wrote non-finite weights into {', '.join(bad)} (the edit was undone): check the "
            "hyperparameters (learning rate, clamp, lambda) and the covariance statistics"
        )
    return result

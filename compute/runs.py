"""The run engine: what identifies a run, what a command does with the runs a store already holds, and the
one loop every experiment runs its units in.

Identity. A `RunSpec` is what makes two runs the same experiment: kind, model, editor, hyperparameters, case
set, layout (the kind's identity-bearing config keys, `IDENTITY[kind].layout`) and seed. `spec.key()` is a
stable hash of its canonical JSON. A new run stores its key in its config (`SPEC_KEY`), but a run is always
found by the key of the spec rebuilt from its stored row (`spec_of_run`), so runs made before keys were
stored, or before a layout key existed (`IDENTITY[kind].before` gives the value such runs had: a sequential
run made before `recheck_every` re-checked at every checkpoint, 0), are found too. Stored hyperparameters are
read through the editor's class, so a field added later with a default that keeps the old behaviour does not
orphan the runs made before it. A sweep run's identity leaves the hyperparameters out (its swept value is in
its layout): a calibration ends by changing the shipped file its sweep started from, and its runs must still
be found by the same command. What the command itself pins with `--hp` is in its layout (`hp`; runs made
before it, none): the same sweep under other mechanics (`--hp key_constraint=plain`) is another experiment.

Decision. `decide(store, spec, ...)` says what a command does: start a new run, resume the matching
unfinished one, report the matching finished one, and for sequential runs (whose layout has `max_edits`)
extend a shorter run of the same layout or report a longer one that holds these edits as its first. The
command lines (compute/cli.py, compute/abilities/cli.py) and the sweeps call it; its messages are theirs.

Loop. `run_loop(store, run_id, units, step, ...)` owns what every experiment repeats: units already stored
are skipped (resume), `step(unit)` returns the unit's rows and they are written in ONE transaction
(`Store.write_unit`: measurements, generations, edit diagnostics and ability scores land together or not at
all), a heartbeat with the progress, a tqdm bar (silent when stderr is not a terminal, or without
`progress`), Ctrl-C marking the run interrupted and an exception marking it failed
(compute.experiments.common.recording), and the run finished as done with its wall time. Each experiment
file keeps its step and its list of units.

Timing. A run's `timings` hold only its last process's wall time, written when it finishes, so a run resumed
over several sessions, or one still partial, could not be timed by it (`compute.plan` then had nothing to
estimate a robustness, batch, knowledge or sweep unit by). The loop therefore also writes a run_events row of
kind "timing" (series "units") after the first unit done `timing_every` seconds (wall) after the previous
one, and after the last: edit_count and end_count are the units counted before and after the interval
(n_done), value its wall seconds, and its detail the units, the process's CPU seconds over the interval
(`cpu_s`: a paused process's pause is in the wall seconds only), peak memory, torch threads and load
(`timing_event`). An interrupted interval writes none: the events cover the units they count, which is what
`compute.plan` divides by. A sequential run writes its own, per checkpoint (compute.experiments.sequential).
Timing is not a measurement: runs that differ only there are the same computation.

This module imports no torch at import time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

SPEC_KEY = "spec_key"  # the config key a new run stores its spec's key under
TIMING_KIND = "timing"  # run_events kind of a timed interval (run_loop's, series UNITS_SERIES; sequential's)
UNITS_SERIES = "units"
TIMING_EVERY = 300.0  # run_loop's seconds (wall) between two timing events


def clock() -> tuple[float, float]:
    """(wall, CPU) clocks now: time.monotonic() and the process's CPU time, all its threads."""
    return time.monotonic(), time.process_time()


def timing_event(run_id: str, start_count: int, end_count: int, start: tuple[float, float],
                 series: str = UNITS_SERIES, **detail) -> dict:
    """The run_events row timing the interval (start_count, end_count] of a run's work that began at `start`
    (`clock()` then): value its wall seconds; detail `detail` with the interval's CPU seconds (`cpu_s`), the
    process's peak resident memory, its torch threads (where torch is loaded) and the machine's load."""
    import os
    import resource
    import sys

    wall, cpu = clock()
    torch = sys.modules.get("torch")
    info = {**detail, "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}  # KiB
    if torch is not None:
        info["torch_threads"] = torch.get_num_threads()
    info.update(load_avg_1m=round(os.getloadavg()[0], 2), cpu_s=round(cpu - start[1], 3))
    return {"run_id": run_id, "kind": TIMING_KIND, "series": series, "edit_count": start_count,
            "end_count": end_count, "value": round(wall - start[0], 3), "detail": json.dumps(info)}


def state_path(cache_dir, run_id: str):
    """Where a sequential run keeps its resume state (edited matrices, editor memory, counters) under the cache
    folder: without it, a resumed run starts over from its first edit."""
    from pathlib import Path

    return Path(cache_dir) / "sequential" / f"{run_id}.pt"

# what makes two sequential runs the same: every layout key (and max_edits, which an extension grows)
SEQUENTIAL_LAYOUT = ("n_cases", "batch_size", "max_edits", "checkpoint_every", "order_seed", "dense_first",
                     "after_collapse", "panel_pool", "panel_size", "panel_known_only", "panel_tokens",
                     "fluency_tokens", "collapse_fluency", "collapse_panel", "abilities_every", "cov_n_tokens",
                     "recheck_every", "panel_check")


@dataclass(frozen=True)
class Identity:
    """How a kind's runs are told apart: the config keys of its layout, whether its hyperparameters count, and
    the value each layout key had in runs made before it existed (their stored config lacks it)."""

    layout: tuple[str, ...]
    hparams: bool = True
    before: Mapping[str, Any] = field(default_factory=dict)


IDENTITY: dict[str, Identity] = {
    "knowledge": Identity(("rephrase_types", "gen_tokens", "n_cases"), hparams=False),
    "robustness": Identity(("n_cases", "gen_tokens")),
    "batch": Identity(("n_cases", "sizes", "order_seed", "panel_pool")),
    "sweep": Identity(("sweep", "field", "value", "hp"), hparams=False, before={"hp": {}}),
    "sequential": Identity(SEQUENTIAL_LAYOUT, before={"recheck_every": 0, "panel_check": 0}),
    "abilities": Identity(("mode", "tasks", "n_items"), hparams=False),
}


def _plain(value):
    """JSON-ready and canonical: tuples as lists, integral floats as ints (500.0 and 500 are one setting)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def canonical(value) -> str:
    """The canonical JSON of `value`: keys sorted, no spaces, `_plain` numbers."""
    return json.dumps(_plain(value), sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class RunSpec:
    """What identifies a run (module docstring). `hparams` and `layout` are plain dicts (canonical in `key`)."""

    kind: str
    model: str
    editor: str | None
    hparams: Mapping | None
    case_set: str | None
    layout: Mapping
    seed: int | None

    def key(self) -> str:
        """A stable hash of the spec's canonical JSON (16 hex digits)."""
        text = canonical([self.kind, self.model, self.editor, self.hparams, self.case_set, self.layout, self.seed])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def without(self, *names: str) -> "RunSpec":
        """The spec with these layout keys left out (sequential runs alike but for their maximum)."""
        return dataclasses.replace(self, layout={k: v for k, v in self.layout.items() if k not in names})

    __hash__ = None  # dicts inside: compare specs, or their keys


def _identity(kind: str) -> Identity:
    try:
        return IDENTITY[kind]
    except KeyError:
        raise ValueError(f"no run identity for kind {kind!r}: known kinds are {', '.join(IDENTITY)}") from None


def spec_for(kind: str, model: str, config: Mapping, *, editor: str | None = None, hp=None,
             seed: int | None = None) -> RunSpec:
    """The spec of a run about to be made: its layout is the kind's identity keys of `config` (the config the
    run stores; the case set is its `case_set`), its hyperparameters `hp` (an editor's dataclass or a dict).
    A layout key missing from `config` is a ValueError naming it."""
    ident = _identity(kind)
    missing = [k for k in ident.layout if k not in config]
    if missing:
        raise ValueError(f"a {kind} run's config needs {missing} to identify it")
    hparams = None
    if ident.hparams and hp is not None:
        from compute.editors.base import hparams_dict

        hparams = hparams_dict(hp) if dataclasses.is_dataclass(hp) else dict(hp)
    return RunSpec(kind=kind, model=model, editor=editor, hparams=_plain(hparams),
                   case_set=config.get("case_set"), layout=_plain({k: config[k] for k in ident.layout}), seed=seed)


def _stored_hparams(editor: str | None, stored: str | None):
    """A run's stored hyperparameters as its editor's class reads them today (defaults of fields added since
    filled in); the stored dict as it is when the editor or its class no longer reads them."""
    data = json.loads(stored or "null")
    if not editor or not isinstance(data, dict):
        return data
    from compute.editors.base import EditorError, get_editor, hparams_dict, parse_hparams

    try:
        return hparams_dict(parse_hparams(get_editor(editor).hparams, data))
    except (EditorError, TypeError, ValueError):
        return data


def spec_of_run(run: Mapping) -> RunSpec:
    """The spec of a stored run (a runs row as a dict): the layout keys it lacks get the values runs had before
    those keys existed (`IDENTITY[kind].before`), else None."""
    ident = _identity(run["kind"])
    config = json.loads(run.get("config") or "{}")
    config = {**ident.before, **config}
    hparams = _stored_hparams(run.get("editor"), run.get("hparams")) if ident.hparams else None
    return RunSpec(kind=run["kind"], model=run["model"], editor=run.get("editor"), hparams=_plain(hparams),
                   case_set=config.get("case_set"), layout=_plain({k: config.get(k) for k in ident.layout}),
                   seed=run.get("seed"))


def matching_runs(store, spec: RunSpec, *, ignoring: tuple[str, ...] = ()) -> list[dict]:
    """The stored runs whose spec is `spec` (layout keys in `ignoring` aside), newest first, as dicts."""
    from store import queries

    want = spec.without(*ignoring).key()
    out = []
    for run in queries.list_runs(store.conn, kind=spec.kind).iter_rows(named=True):
        if run["model"] != spec.model or (spec.editor is not None and run["editor"] != spec.editor):
            continue
        if spec_of_run(run).without(*ignoring).key() == want:
            out.append(run)
    return out


def stored_config(spec: RunSpec, config: Mapping) -> dict:
    """`config` as a new run of `spec` stores it: with the spec's key."""
    return {**config, SPEC_KEY: spec.key()}


# ---- what a command does ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """What to do: "new" (start a run), "resume" (`run_id`, unfinished), "done" (`run_id` holds it already),
    "extend" (`run_id`, a shorter sequential run, goes on to the spec's maximum) or "longer" (`run_id`, a
    longer sequential run, holds these edits as its first). `message` is the line to print, if any."""

    action: str
    run_id: str | None = None
    message: str | None = None

    @property
    def runs(self) -> bool:
        """Whether the experiment runs (new, resumed or extended), rather than a stored run standing for it."""
        return self.action in ("new", "resume", "extend")


def decide(store, spec: RunSpec, *, resume: str | None = None, again: bool = False, unit: str = "edits",
           done_says: str = "already holds this experiment", resumable: bool = True) -> Decision:
    """What a command with `spec` does (module docstring): `resume` (--resume RUN_ID) resumes that run,
    `again` (--again) starts a new one; else the newest matching run is reported when finished and resumed
    otherwise (a new run when not `resumable`), and a sequential spec with no matching run extends a shorter
    run of its layout or reports a longer one. `unit` names what a resumed run's n_done counts and `done_says`
    what a finished run did, in the messages."""
    if resume:
        return Decision("resume", resume)
    if again:
        return Decision("new")
    found = matching_runs(store, spec)
    if found:
        old = found[0]
        if old["status"] == "done":
            return Decision("done", old["run_id"], f"run {old['run_id']} {done_says} (use --again for a new run)")
        if resumable:
            return Decision("resume", old["run_id"],
                            f"resuming run {old['run_id']} ({old['n_done'] or 0}/{old['n_total']} {unit} stored)")
        return Decision("new")
    if "max_edits" in spec.layout:
        return _other_maximum(store, spec)
    return Decision("new")


def _other_maximum(store, spec: RunSpec) -> Decision:
    """A sequential run laid out like `spec` with another maximum: a longer one holds these edits as its first
    (an unfinished one that has not made them yet must be resumed: ValueError), a shorter one (unfinished, or
    finished at its maximum rather than past a collapse) is extended."""
    most = spec.layout["max_edits"]
    alike = [(r, spec_of_run(r).layout["max_edits"]) for r in matching_runs(store, spec, ignoring=("max_edits",))]
    longer = next((r for r, m in alike if (m or 0) > most), None)
    shorter = next((r for r, m in alike if (most if m is None else m) < most
                    and (r["status"] != "done" or (r["n_done"] or 0) >= m)), None)
    if longer is not None:
        top, made = spec_of_run(longer).layout["max_edits"], longer["n_done"] or 0
        if made < most and longer["status"] != "done":
            raise ValueError(f"run {longer['run_id']} is laid out like this one with at most {top} edits and has "
                             f"{made}: resume it (--resume {longer['run_id']}), or start a new run with --again")
        return Decision("longer", longer["run_id"], f"run {longer['run_id']} (at most {top} edits, {made} made) "
                        f"already holds the first {most} edits (use --again for a new run)")
    if shorter is not None:
        made = spec_of_run(shorter).layout["max_edits"]
        return Decision("extend", shorter["run_id"],
                        f"extending run {shorter['run_id']} (made with --edits {made}, {shorter['n_done'] or 0} "
                        f"edits stored) to at most {most} edits (--again starts a new run instead)")
    return Decision("new")


def layout_differences(store, run_id: str, spec: RunSpec) -> tuple[list[str], Any]:
    """(how the stored run's layout differs from `spec`'s, max_edits aside: "KEY STORED (now NEW)" items; the
    stored max_edits). For refusing to resume a run with options it was not made with."""
    run = store.get_run(run_id)
    if run is None:
        return [], None
    old = spec_of_run(run)
    config = json.loads(run.get("config") or "{}")
    stored, now = {"case_set": old.case_set, **old.layout}, {"case_set": spec.case_set, **spec.layout}
    # a key the stored config lacks (and that has no value from before it existed) is not held against it
    differ = [f"{k} {stored[k]!r} (now {now[k]!r})" for k in now
              if k != "max_edits" and stored[k] != now[k] and (k in config or k in _identity(spec.kind).before)]
    return differ, stored.get("max_edits")


# ---- the loop ---------------------------------------------------------------------------------------------


def run_loop(store, run_id: str, units: Iterable, step: Callable[[Any], Mapping | None], *, n_total: int,
             done: Iterable = (), key: Callable[[Any], Any] | None = None, group: int = 0,
             count: Callable[[Any], int] | None = None, n_done: int | None = None, desc: str = "",
             unit: str = "unit", progress: bool = False, next_step: str | None = None, heartbeat: bool = True,
             before: Callable[[], None] | None = None, after_unit: Callable[[Any], None] | None = None,
             after: Callable[[], None] | None = None, timings: bool | Callable[[], dict] = True,
             timing_every: float | None = TIMING_EVERY) -> int:
    """Run `step` on every unit of `units` not yet stored, then mark the run done; returns the units counted.

    - `done`: keys (`key(unit)`, default the unit itself) of the units already stored: skipped.
    - `group` > 0: the units to do are passed to `step` in lists of up to this many (one evaluation batch).
    - `step(unit)` returns the unit's rows as `Store.write_unit` takes them (measurements, generations,
      diagnostics, abilities), written in one transaction, or None when it wrote nothing.
    - `after_unit(unit)` runs once the unit's rows are written (a sequential run's checkpoint); `before()`
      and `after()` before the first and after the last unit: all inside the run's recording, so Ctrl-C
      marks the run interrupted (message: `next_step`) and an exception marks it failed.
    - progress counts `count(unit)` per unit (default 1; a group its length), from `n_done` (default: the
      stored units); a heartbeat records it after each unit unless `heartbeat` is False (the step does it).
    - `timings`: the finished run's timings: {"seconds": wall time} (True), with a callable's dict merged
      in, or none (False).
    - `timing_every`: seconds (wall) between the run's timing events (module docstring, *Timing*); None writes
      none (a sequential run times its checkpoints itself).
    """
    from compute.experiments.common import recording

    key = key or (lambda u: u)
    done = set(done)
    count = count or ((lambda u: len(u)) if group else (lambda u: 1))
    if n_done is None or done:
        units = list(units)
        todo = [u for u in units if key(u) not in done]
        if n_done is None:
            n_done = sum(1 if group else count(u) for u in units if key(u) in done)
    else:
        todo = units
    if group:
        todo = [todo[i : i + group] for i in range(0, len(todo), group)]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n_total, initial=n_done, desc=desc, unit=unit, disable=None)  # None: silent off a terminal
    started = time.monotonic()
    interval = (clock(), n_done)  # the timed interval's start: its clocks and the units counted before it

    def timed(force: bool = False) -> None:
        nonlocal interval
        (start, before_n) = interval
        if timing_every is None or n_done <= before_n or not (force or clock()[0] - start[0] >= timing_every):
            return
        store.write_events([timing_event(run_id, before_n, n_done, start, units=n_done - before_n, unit=unit)])
        interval = (clock(), n_done)

    try:
        with recording(store, run_id, next_step=next_step):
            if before is not None:
                before()
            for item in todo:
                rows = step(item)
                if rows:
                    store.write_unit(**rows)
                n_done += count(item)
                timed()
                if after_unit is not None:
                    after_unit(item)
                if heartbeat:
                    store.heartbeat(run_id, n_done=n_done, n_total=n_total)
                if bar is not None:
                    bar.update(count(item))
            if after is not None:
                after()
            timed(force=True)
    finally:
        if bar is not None:
            bar.close()
    if timings is False:
        store.finish_run(run_id, status="done")
    else:
        extra = timings() if callable(timings) else {}
        store.finish_run(run_id, status="done", timings={"seconds": round(time.monotonic() - started, 2), **extra})
    return n_done

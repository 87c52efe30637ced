"""Plans: the units of a store written down as specs, and the executors that compute them.

A plan is a TOML file (read with Python's tomllib):

    name = "shipped"             # the plan's folder under the cache (default: the file's stem)
    model = "smollm2-135m"       # given to every unit whose command takes --model (optional)
    finalize = true              # `store finalize` on the target once every unit is done (optional)

    [defaults.sequential]        # options every unit of a kind gets unless it says otherwise (optional)
    panel_pool = 240

    [[unit]]
    id = "robustness-ROME"       # a short name, unique in the plan; `after` refers to it
    kind = "robustness"          # kb, cases, knowledge, robustness, sweep, sequential, batch or abilities
    editor = "ROME"              # every other key is an option of that command: gen_tokens = 30 is --gen-tokens 30
    set = "smollm2-135m-n240-s0"
    hp = { key_mismatch = true } # --hp key_mismatch=true (one --hp per field); grid = { v_lr = [0.5, 0.1] } likewise
    after = ["baseline-240"]     # units that must be done first
    cpus = 1                     # torch threads of the unit and the CPUs it claims (Ray: num_cpus); gpus likewise
    hold = "why"                 # optional: `plan run` does not start the unit (nor units after it) until removed

A held unit keeps its key and whatever its runs stored; `plan status` marks it "held" with the reason, and its
estimate is counted apart from the units that will run.

A unit is one command line of `python -m compute` (`Unit.argv`). Its canonical key is the SHA-256 of the
sorted JSON of its spec (kind and options; a hyperparameter file counts by its content), so renaming a unit
or reordering the file changes nothing. Every unit's command line is parsed by the CLI's own parser before
anything runs; the parser is passed in (`load_plan(path, parser)`), because library code never imports
compute.cli.

Running a plan (`execute`): each unit runs as `python -m compute --store SHARD --quiet ...` with
OMP_NUM_THREADS set to its cpus, in its own shard store, seeded with a copy of the target when the unit
starts. Local shards live under CACHE/plans/<name>/ with the seed's list of runs beside them, so a unit
whose driver was killed resumes its shard. When a unit ends, its shard is trimmed to the runs it made or
changed (every other run it merely read, e.g. a baseline, is deleted from the shard, cascading to its rows)
and the driver alone merges it into the target with store.merge, then records a run_events row of kind
`plan_unit` (series = the unit's key, detail = its id and spec) for each of the unit's runs. A unit's runs
are those its shard gained or changed, and those its command named as already holding its work (an
experiment found done). `plan_status` reads everything back from the target alone.

Executors never write one SQLite file from two processes: a unit writes only its shard, the driver only the
target. `local` runs the units as subprocesses, as many at once as there are worker slots; `ray` runs each
unit as a Ray task that receives the seed's bytes and returns the trimmed shard's bytes, so the nodes need
no shared filesystem.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import tomllib
from contextlib import redirect_stderr
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
EVENT_KIND = "plan_unit"  # run_events rows linking a run to the plan unit that made it

# kind -> the subcommand it runs
KINDS = {
    "kb": ("kb", "build"),
    "cases": ("cases", "build"),
    "knowledge": ("knowledge", "measure"),
    "robustness": ("run", "robustness"),
    "sweep": ("run", "sweep"),
    "sequential": ("run", "sequential"),
    "batch": ("run", "batch"),
    "abilities": ("abilities", "measure"),
}
PLAN_KEYS = {"id", "kind", "after", "cpus", "gpus", "hold"}  # a unit's keys that are not options of its command
NO_MODEL = {"kb"}  # kinds whose command takes no --model / --device
# options that say how to run, not what: they are not part of a unit's key
NOT_IN_KEY = {"device"}
# kinds whose progress lives outside the target until the unit ends: a sequential run's edited matrices and
# editor memory are kept under the cache folder (without them it starts over), an ability suite is not
# resumed. `plan run --deadline` starts such a unit only when its estimate fits before the deadline; the other
# kinds' progress is merged into the target as they go, so they may start at any time.
LOST_IF_CUT = {"sequential", "abilities"}


class PlanError(ValueError):
    """A plan that cannot run: the message names the file and the unit."""


@dataclass(frozen=True)
class Unit:
    id: str
    kind: str
    options: dict
    after: tuple[str, ...]
    cpus: int
    gpus: float
    key: str  # 16 hex digits of the SHA-256 of the canonical spec
    argv: tuple[str, ...]  # the command line after `python -m compute --store SHARD --quiet`
    hold: str = ""  # why `plan run` does not start it (the plan's `hold`), or "" to run it

    def spec(self) -> dict:
        """What the key is made of: the kind and the options that decide the unit's results."""
        return {"kind": self.kind, **{k: v for k, v in self.options.items() if k not in NOT_IN_KEY}}


@dataclass(frozen=True)
class Plan:
    name: str
    path: Path
    units: tuple[Unit, ...]
    finalize: bool = False

    def by_id(self) -> dict[str, Unit]:
        return {u.id: u for u in self.units}


# ---- reading and checking a plan ----------------------------------------------------------------------


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _json_value(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _option_args(key: str, value, where: str) -> list[str]:
    """One plan option as command-line words: true -> --flag, false -> nothing, a list -> 1,2,3 (a list inside
    it -> 1-2-3), the tables hp and grid -> one --hp FIELD=VALUE / --grid FIELD=V1,V2 per field."""
    if key in ("hp", "grid"):
        if not isinstance(value, dict):
            raise PlanError(f"{where}: {key} is a table such as {key} = {{ rect_top = 0.4 }}")
        out = []
        for field_, v in sorted(value.items()):
            v = ",".join(_json_value(x) for x in v) if key == "grid" and isinstance(v, list) else _json_value(v)
            out += [_flag(key), f"{field_}={v}"]
        return out
    if isinstance(value, bool):
        return [_flag(key)] if value else []
    if isinstance(value, list):
        return [_flag(key), ",".join("-".join(map(str, v)) if isinstance(v, list) else str(v) for v in value)]
    if isinstance(value, dict):
        raise PlanError(f"{where}: option {key!r} takes a value, not a table")
    return [_flag(key), str(value)]


def _key_of(spec: dict, base: Path) -> str:
    """The canonical key: a hyperparameter file counts by its content, not its path."""
    spec = dict(spec)
    hp = spec.get("hparams")
    if isinstance(hp, str) and (base / hp).is_file():
        spec["hparams"] = {"file_sha256": hashlib.sha256((base / hp).read_bytes()).hexdigest()}
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _parse_check(parser, argv: list[str], where: str) -> None:
    """PlanError with the parser's own one-line message when `argv` is not a valid command line."""
    err = StringIO()
    try:
        with redirect_stderr(err):
            parser.parse_args(["--store", "shard.sqlite", "--quiet", *argv])
    except SystemExit as exc:
        message = " ".join(err.getvalue().split()) or f"exit status {exc.code}"
        raise PlanError(f"{where}: `{' '.join(argv)}` is refused by the command line: "
                        f"{message.removeprefix('error: ')}") from None


def load_plan(path: Path | str, parser, device: str | None = None) -> Plan:
    """Read and check a plan: every unit's command line is parsed with `parser` (compute.cli.build_parser())
    before anything runs; ids are unique, `after` names units of the plan with no cycle, no two units have the
    same spec. `device` (cpu, cuda, cuda:N) is given to every unit that loads a model. PlanError otherwise."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise PlanError(f"cannot read plan {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(f"plan {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(raw) - {"name", "model", "finalize", "defaults", "unit"})
    if unknown:
        raise PlanError(f"plan {path}: unknown top-level key {unknown[0]!r} (known: name, model, finalize, "
                        "[defaults.KIND], [[unit]])")
    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, dict) or any(k not in KINDS or not isinstance(v, dict) for k, v in defaults.items()):
        raise PlanError(f"plan {path}: [defaults] holds one table per kind, e.g. [defaults.sequential], "
                        f"with kinds among {', '.join(KINDS)}")
    name = str(raw.get("name") or path.stem)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
        raise PlanError(f"plan {path}: name {name!r} must be letters, digits, '.', '_' or '-' (it names a folder)")
    entries = raw.get("unit") or []
    if not isinstance(entries, list) or not entries:
        raise PlanError(f"plan {path} has no units: add [[unit]] tables with an id and a kind")
    units, keys = [], {}
    for n, entry in enumerate(entries, 1):
        uid = entry.get("id")
        where = f"plan {path.name}, unit {uid!r}" if uid else f"plan {path.name}, unit #{n}"
        if not isinstance(uid, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,79}", uid):
            raise PlanError(f"{where}: give each unit an id of letters, digits, '.', '_', '+' or '-'")
        kind = entry.get("kind")
        if kind not in KINDS:
            raise PlanError(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
        options = {**defaults.get(kind, {}), **{k: v for k, v in entry.items() if k not in PLAN_KEYS}}
        if kind not in NO_MODEL:
            if raw.get("model") and "model" not in options:
                options["model"] = raw["model"]
            if device and "device" not in options:
                options["device"] = device
        if kind == "cases" and "set" not in options:
            raise PlanError(f"{where}: a cases unit names its set (set = \"...\") so that its status can be read")
        base = path.parent
        if isinstance(options.get("hparams"), str) and options["hparams"].endswith(".json"):
            options["hparams"] = str((base / options["hparams"]).resolve()) if not Path(options["hparams"]).is_absolute() \
                else options["hparams"]
            if not Path(options["hparams"]).is_file():
                raise PlanError(f"{where}: no hyperparameter file {options['hparams']} (a relative path is read from "
                                f"the plan file's folder, {base})")
        argv = list(KINDS[kind])
        for key, value in options.items():
            argv += _option_args(key, value, where)
        _parse_check(parser, argv, where)
        after = entry.get("after", [])
        if isinstance(after, str):
            after = [after]
        cpus, gpus = entry.get("cpus", 1), entry.get("gpus", 1 if str(options.get("device", "")).startswith("cuda") else 0)
        if not isinstance(cpus, int) or isinstance(cpus, bool) or cpus < 1:
            raise PlanError(f"{where}: cpus must be a whole number >= 1, got {cpus!r}")
        if not isinstance(gpus, (int, float)) or isinstance(gpus, bool) or gpus < 0:
            raise PlanError(f"{where}: gpus must be a number >= 0, got {gpus!r}")
        hold = entry.get("hold", "")
        if not isinstance(hold, str) or ("hold" in entry and not hold.strip()):
            raise PlanError(f"{where}: hold must say why the unit waits (a non-empty string), got {hold!r}")
        spec = {"kind": kind, **{k: v for k, v in options.items() if k not in NOT_IN_KEY}}
        key = _key_of(spec, base)
        if key in keys:
            raise PlanError(f"{where}: the same spec as unit {keys[key]!r}; give each run once")
        keys[key] = uid
        units.append(Unit(uid, kind, options, tuple(after), cpus, float(gpus), key, tuple(argv), hold.strip()))
    ids = [u.id for u in units]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise PlanError(f"plan {path.name}: unit id {dup!r} is used twice")
    for u in units:
        missing = [a for a in u.after if a not in ids]
        if missing:
            raise PlanError(f"plan {path.name}, unit {u.id!r}: after names {missing[0]!r}, which is not a unit of the plan")
    _check_acyclic(units, path.name)
    return Plan(name, path, tuple(units), bool(raw.get("finalize", False)))


def _check_acyclic(units, plan_name: str) -> None:
    deps = {u.id: set(u.after) for u in units}
    done: set[str] = set()
    while deps:
        ready = [u for u, d in deps.items() if d <= done]
        if not ready:
            raise PlanError(f"plan {plan_name}: units {sorted(deps)} wait on each other (a cycle in `after`)")
        for u in ready:
            done.add(u)
            del deps[u]


# ---- status, from the target store alone ----------------------------------------------------------------


@dataclass
class UnitState:
    unit: Unit
    state: str  # done, partial or missing
    runs: list[dict] = field(default_factory=list)
    remaining_s: float | None = 0.0  # estimated CPU seconds left (None: no stored timing to go by)
    basis: str = ""  # where the estimate comes from
    # its runs' hyperparameters that differ from those the unit runs with now ("RUN: FIELD stored X, now Y")
    outdated: tuple[str, ...] = ()


def _connect_ro(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    return conn


def _unit_runs(conn, key: str) -> list[dict]:
    rows = conn.execute(
        "SELECT r.* FROM run_events e JOIN runs r ON r.run_id = e.run_id WHERE e.kind = ? AND e.series = ? "
        "ORDER BY r.started_at", (EVENT_KIND, key)).fetchall()
    return [dict(r) for r in rows]


def unit_hparams_now(unit: Unit) -> dict | None:
    """The hyperparameters the unit's command runs with now, as a run stores them (compute.setup.resolve_hparams:
    the shipped file of its editor and model, or the file or named setting its `hparams` option gives, with its
    `hp` pins); None for a unit without an editor, or one whose hyperparameters cannot be read here (an editor
    without a file of its own, such as the random-update control, or a model without one)."""
    editor = unit.options.get("editor")
    if not editor:
        return None
    from compute.editors.base import hparams_dict
    from compute.models import DEFAULT_MODEL
    from compute.setup import resolve_hparams

    try:
        _, hp = resolve_hparams(editor, str(unit.options.get("model") or DEFAULT_MODEL), unit.options.get("hparams"),
                                dict(unit.options.get("hp") or {}))
    except ValueError:
        return None
    return hparams_dict(hp)


def _swept_values(run: dict) -> dict:
    """A sweep run's own setting (its config's field and value: one field, or 'a+b' with a JSON object)."""
    config = json.loads(run.get("config") or "{}")
    field_, value = config.get("field"), config.get("value")
    if not field_ or value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            pass
    return value if isinstance(value, dict) else {field_: value}


def outdated_hparams(unit: Unit, runs: list[dict]) -> tuple[str, ...]:
    """The fields where the unit's runs' stored hyperparameters differ from those the unit runs with now
    (`unit_hparams_now`; a sweep run's own setting aside): a unit's key counts its options, not the shipped file
    it reads, so a changed shipped file leaves its done units done, made with the old values. A field the run
    did not store (it came later) is not compared."""
    now = unit_hparams_now(unit)
    if not now:
        return ()
    out = []
    for run in runs:
        stored = json.loads(run.get("hparams") or "{}")
        want = {**now, **_swept_values(run)} if unit.kind == "sweep" else now
        diff = [f"{k} stored {json.dumps(stored[k])}, now {json.dumps(want[k])}" for k in sorted(stored)
                if k in want and json.loads(json.dumps(stored[k])) != json.loads(json.dumps(want[k]))]
        if diff:
            out.append(f"{run['run_id']}: {'; '.join(diff)}")
    return tuple(out)


def _event_cpu(detail) -> float | None:
    """The CPU seconds a timing event's detail records (`cpu_s`, written since 2026-12-06), or None."""
    try:
        value = json.loads(detail or "{}").get("cpu_s")
    except (TypeError, ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, (int, float)) else None


PAUSE_FACTOR = 3.0  # a checkpoint interval slower per edit than this x the run's median counts as paused


def _timed_parts(events) -> list[float]:
    """The seconds each of a run's timing events (series, edit_count, end_count, value[, detail]) counts for (see
    `_timed_seconds`), in their order."""
    import statistics

    def edits(series, s, e) -> int:  # edits a checkpoint interval covers (0: not one)
        return e - s if series == "checkpoint" and s is not None and e is not None and e > s else 0

    timed = [(tuple(ev[:4]), _event_cpu(ev[4] if len(ev) > 4 else None)) for ev in events]
    per_edit = [v / edits(series, s, e) for (series, s, e, v), c in timed if c is None and edits(series, s, e)]
    cap = PAUSE_FACTOR * statistics.median(per_edit) if per_edit else float("inf")
    return [c if c is not None else min(float(v), cap * edits(series, s, e)) if edits(series, s, e) else float(v)
            for (series, s, e, v), c in timed]


def _timed_seconds(events) -> float:
    """The seconds a run's timing events (series, edit_count, end_count, value[, detail]) say it computed. An
    event whose detail records `cpu_s` (the process's CPU seconds over the interval, written since 2026-12-06)
    counts those: a pause costs no CPU. Older events have wall seconds only: a checkpoint interval counts at most
    PAUSE_FACTOR x the run's median seconds per edit for its edits, since a process stopped for a while
    (SIGSTOP while the machine benchmarks, a suspended laptop) times its pause too: the shipped rebuild's ROME
    run has one 10-edit interval of 7,459 s among ones of 150-600 s. An interval with the quick ability suite
    costs about 2x the median, within the cap; other series count as they are."""
    return sum(_timed_parts(events))


def _run_seconds(conn, run: dict) -> tuple[float | None, str]:
    """CPU-seconds a run has taken so far (one thread per unit) and where that comes from: the larger of its
    `timings` seconds and the sum of its run_events of kind timing (a sequential run's checkpoints and final
    suite; each covers only part of a resumed run: `timings` its last session), else, for a finished run, the
    wall time from its start to its finish (sweep runs record no timings), else None. Timing events count their
    CPU seconds where recorded, else their wall seconds with paused intervals capped (`_timed_seconds`)."""
    from datetime import datetime

    timings = json.loads(run.get("timings") or "{}")
    events = conn.execute("SELECT series, edit_count, end_count, value, detail FROM run_events WHERE run_id = ? "
                          "AND kind = 'timing' AND value IS NOT NULL", (run["run_id"],)).fetchall()
    found = [(float(timings["seconds"]), "timings")] if isinstance(timings.get("seconds"), (int, float)) else []
    if events:
        found.append((_timed_seconds(events), "timing events"))
    if found:
        return max(found)
    if run.get("status") == "done" and run.get("started_at") and run.get("finished_at"):
        try:
            wall = (datetime.fromisoformat(run["finished_at"]) - datetime.fromisoformat(run["started_at"]))
        except ValueError:
            return None, ""
        return max(wall.total_seconds(), 0.0), "wall time from start to finish"
    return None, ""


def _units_timed(conn, run: dict) -> tuple[float, int] | None:
    """(CPU seconds, units) that a run's timing events of series "units" cover (compute.runs.run_loop writes
    one every few minutes of a robustness, batch, knowledge, sweep or ability run, none for an interrupted
    interval), or None where it has none. Only these units are timed: a run resumed from units made before such
    events existed, or whose last interval was cut, has more units than its events time."""
    from compute.runs import TIMING_KIND, UNITS_SERIES

    rows = conn.execute("SELECT edit_count, end_count, value, detail FROM run_events WHERE run_id = ? AND kind = ? "
                        "AND series = ? AND value IS NOT NULL", (run["run_id"], TIMING_KIND, UNITS_SERIES)).fetchall()
    pairs = [(cpu if (cpu := _event_cpu(detail)) is not None else float(value), end - start)
             for start, end, value, detail in rows if start is not None and end is not None and end > start]
    return (sum(s for s, _ in pairs), sum(n for _, n in pairs)) if pairs else None


def _start_interval(conn, run: dict) -> tuple[float, int]:
    """(seconds, edits) of a sequential run's start: its checkpoint intervals up to `dense_first` edits (its
    config's, else 10), which hold the run's one-off start (the panel's choice, the unedited model's measurements
    and ability suite) and a checkpoint after every edit, where the rest of the run has one every
    `checkpoint_every`: (0, 0) when it has none. Counting them in the rate of the edits left put ROME order 2's
    estimate at 58 CPU-s per edit at 50 edits, where its 10-edit intervals took 31-33."""
    try:
        dense = int(json.loads(run.get("config") or "{}").get("dense_first", 10))
    except (TypeError, ValueError, AttributeError):
        dense = 10
    events = conn.execute("SELECT series, edit_count, end_count, value, detail FROM run_events WHERE run_id = ? AND "
                          "kind = 'timing' AND value IS NOT NULL", (run["run_id"],)).fetchall()
    start = [(ev, part) for ev, part in zip(events, _timed_parts(events))  # counted as `_timed_seconds` counts them
             if ev[0] == "checkpoint" and ev[2] is not None and ev[2] <= max(dense, 1)]
    if not any(ev[1] == 0 for ev, _ in start):  # its start was not timed: nothing to leave out
        return 0.0, 0
    return sum(part for _, part in start), int(max(ev[2] for ev, _ in start))


def _work(conn, unit: Unit) -> int | None:
    """How many work items (cases, edits, batch sizes, swept values x cases) the unit's runs will count in
    n_done when it is done, or None where that is not known from the spec and the store."""
    o = unit.options
    if unit.kind == "sequential":
        return int(o.get("edits", 1000))
    if unit.kind == "batch":
        sizes = o.get("sizes", [1, 10, 50, 100, 200, 500])
        return len(sizes) if isinstance(sizes, list) else len(str(sizes).split(","))
    if unit.kind in ("robustness", "knowledge", "sweep"):
        n = o.get("limit")
        if n is None and o.get("set"):
            n = conn.execute("SELECT COUNT(*) FROM cases WHERE case_set = ?", (o["set"],)).fetchone()[0] or None
        n = n or o.get("cases")
        if n is None:
            return None
        if unit.kind == "sweep":
            values = o.get("values")
            return n * (len(values) if isinstance(values, list) else 1)
        return int(n)
    return None


def _rate(conn, unit: Unit, own: list[dict], reference=None) -> tuple[float | None, str]:
    """Seconds per work item: from the unit's own runs, else from finished runs of the same kind and editor
    in the store, else of the same kind, else the same two in the `reference` store's connection (another
    store's timings, e.g. the shipped store's while a rebuild has few finished runs); (None, reason) when
    none holds any."""
    def per_item(runs, source=conn):
        pairs = []
        for r in runs:  # a run with interval timing events: the units they cover, else all it counted
            units = r["_units"] if "_units" in r else _units_timed(source, r)
            if units:
                pairs.append((units[0], units[1], "timing events"))
            elif (r.get("n_done") or 0) > 0:
                seconds, how = r["_seconds"] if "_seconds" in r else _run_seconds(source, r)
                if seconds:
                    pairs.append((seconds, r["n_done"], how))
        if not pairs:
            return None, ""
        hows = sorted({how for _, _, how in pairs})
        return sum(s for s, _, _ in pairs) / sum(n for _, n, _ in pairs), f" ({', '.join(hows)})"

    def alike(run) -> bool:  # a knowledge run of all 16 types takes longer per case than one of plain only
        if unit.kind != "knowledge":
            return True
        types = str(unit.options.get("types", "plain"))
        n_types = 16 if types == "all" else len(types.split(","))
        return len(json.loads(run["config"] or "{}").get("rephrase_types") or []) == n_types

    if unit.kind == "sequential":  # a run's start is paid once: its edits left go at the rate after it
        steady = []
        for r in own:
            start_s, start_n = r["_start"] if "_start" in r else _start_interval(conn, r)
            seconds, how_ = r["_seconds"] if "_seconds" in r else _run_seconds(conn, r)
            if seconds and (r.get("n_done") or 0) > start_n > 0 and seconds > start_s:
                steady.append({**r, "n_done": r["n_done"] - start_n, "_seconds": (seconds - start_s, how_)})
        rate, how = per_item(steady)
        if rate:
            return rate, "its own runs after their first checkpoint" + how
    rate, how = per_item(own)
    if rate:
        return rate, "its own runs" + how
    editor = unit.options.get("editor")
    for source, where in ((conn, ""), (reference, " of the reference store")):
        if source is None:
            continue
        for label, sql, params in (
            (f"finished {unit.kind} runs" + (f" of {editor}" if editor else ""),
             "SELECT * FROM runs WHERE kind = ? AND editor IS ? AND status = 'done'", (unit.kind, editor)),
            (f"finished {unit.kind} runs", "SELECT * FROM runs WHERE kind = ? AND status = 'done'", (unit.kind,)),
        ):
            rate, how = per_item([r for r in map(dict, source.execute(sql, params)) if alike(r)], source)
            if rate:
                return rate, label + where + how
    return None, f"no timed {unit.kind} run in the store"


def plan_status(plan: Plan, target: Path, shards: Path | None = None,
                timings_from: Path | None = None, states_in: Path | None = None,
                restore_left_out: bool = False) -> list[UnitState]:
    """Each unit's state in `target` (done / partial / missing) with its runs and the estimated CPU-seconds
    left. kb and cases units are read from the store's tables; the others from their `plan_unit` events.
    A unit whose shard (under `shards`, the plan's cache folder) holds progress not yet merged is partial.
    `timings_from`: another store whose finished runs time the units the target has nothing to go by for.
    `states_in` (with `shards`): the cache folder of the machine that would run the plan; an unfinished
    sequential run whose resume state is not there starts over (`orphaned_runs`), so its edits are estimated
    from the first. Without it (the README's table, from the store alone) a partial run counts what it stored.
    `restore_left_out` (what `plan run` will do, and `plan status` says): a cases unit whose set's probes of some
    types were left out of this store (a committed snapshot, Store.leave_out_unread_probes) is partial, since
    `plan run` builds them again (deterministic); without it (a snapshot's own status) it stays done."""
    out = []
    if not Path(target).exists():
        return [UnitState(u, "missing", remaining_s=None, basis="no store yet") for u in plan.units]
    conn = _connect_ro(Path(target))
    reference = _connect_ro(Path(timings_from)) if timings_from else None
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        for unit in plan.units:
            if unit.kind == "kb":
                n = conn.execute("SELECT COUNT(*) FROM kb_facts").fetchone()[0] if "kb_facts" in tables else 0
                out.append(UnitState(unit, "done" if n else "missing", remaining_s=0.0 if n else None,
                                     basis="" if n else "not timed (minutes)"))
                continue
            if unit.kind == "cases":
                n = conn.execute("SELECT COUNT(*) FROM cases WHERE case_set = ?", (unit.options["set"],)).fetchone()[0] \
                    if "cases" in tables else 0
                want = int(unit.options.get("n", 480))
                state = "done" if n >= want else "partial" if n else "missing"
                basis = "" if state == "done" else "not timed (minutes)"
                left = _left_out(conn, tables).get(unit.options["set"], []) if restore_left_out else []
                if state == "done" and left:
                    state, basis = "partial", (f"the probes of {len(left)} type(s) were left out of this store (a "
                                               "committed snapshot): plan run builds them again (minutes)")
                out.append(UnitState(unit, state, remaining_s=0.0 if state == "done" else None, basis=basis))
                continue
            runs = _unit_runs(conn, unit.key) if "run_events" in tables else []
            shard_runs = _shard_progress(shards, unit) if shards else []
            if shard_runs:
                merged = {r["run_id"]: r for r in runs}
                merged.update({r["run_id"]: r for r in shard_runs})
                runs = list(merged.values())
            outdated = outdated_hparams(unit, runs) if runs else ()
            if runs and all(_run_done(unit, r) for r in runs) and not shard_runs:
                out.append(UnitState(unit, "done", runs, outdated=outdated))
                continue
            state = "partial" if runs else "missing"
            rate, basis = _rate(conn, unit, runs, reference)
            work = _work(conn, unit)
            if unit.kind == "abilities":  # one suite: the time of a finished suite, or nothing to go by
                seconds = [s for r in conn.execute("SELECT * FROM runs WHERE kind = 'abilities' AND status = 'done'")
                           for s, _ in [_run_seconds(conn, dict(r))] if s]
                left = (sum(seconds) / len(seconds)) if seconds else None
                basis = "finished abilities runs" if seconds else "no timed abilities run in the store"
            elif rate is None or work is None:
                left = None
                basis = basis if rate is None else "the unit's size is not known from its spec"
            else:
                over = (set(orphaned_runs(unit, target, shards, states_in))
                        if states_in is not None and shards is not None else set())
                done_items = (sum(r.get("n_done") or 0 for r in runs if r["run_id"] not in over)
                              or (0 if over else _extended_from(plan, unit)))
                left = max(work - done_items, 0) * rate
                if over:
                    basis += f"; starts over: {', '.join(sorted(over))} has no resume state here"
            out.append(UnitState(unit, state, runs, left, basis, outdated))
    finally:
        conn.close()
        if reference is not None:
            reference.close()
    return out


def _left_out(conn: sqlite3.Connection, tables: set[str]) -> dict[str, list[str]]:
    """case set -> the probe types this store left out (store.queries.probes_left_out); {} without a meta table."""
    if "meta" not in tables:
        return {}
    from store import queries

    return queries.probes_left_out(conn)


def _extended_from(plan: Plan, unit: Unit) -> int:
    """The edits a sequential unit inherits from a unit it comes after whose spec is its own with fewer edits
    (the CLI extends that run rather than starting over), 0 otherwise."""
    if unit.kind != "sequential":
        return 0
    by = plan.by_id()
    mine = {k: v for k, v in unit.spec().items() if k != "edits"}
    return max([int(by[a].options.get("edits", 1000)) for a in unit.after
                if {k: v for k, v in by[a].spec().items() if k != "edits"} == mine] or [0])


def _run_done(unit: Unit, run: dict) -> bool:
    if run["status"] == "done":
        return True
    # a sequential run another unit is extending holds this unit's edits once it has made them
    return unit.kind == "sequential" and (run.get("n_done") or 0) >= int(unit.options.get("edits", 1000))


# ---- shards ------------------------------------------------------------------------------------------


def plan_folder(plan: Plan, cache_dir: Path | None) -> Path:
    from compute.models import default_cache_dir

    return Path(cache_dir or default_cache_dir()) / "plans" / plan.name


def _shard_paths(folder: Path, unit: Unit) -> tuple[Path, Path, Path]:
    """(shard store, the seed's runs as JSON, the unit's log)."""
    return folder / f"{unit.id}-{unit.key}.sqlite", folder / f"{unit.id}-{unit.key}.seed.json", \
        folder / f"{unit.id}-{unit.key}.log"


def copy_store(src: Path, dst: Path) -> None:
    """A consistent copy of a store (SQLite's backup API: safe while the source is in WAL mode)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(str(dst) + suffix).unlink(missing_ok=True)
    s = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
    d = sqlite3.connect(dst)
    try:
        s.backup(d)
    finally:
        d.close()
        s.close()


def runs_snapshot(path: Path) -> dict[str, list]:
    """run_id -> [pid, heartbeat_at]: what changes when a process works on a run (starting, resuming,
    heartbeating or finishing it), and not when another one merely marks it interrupted (mark_stale_runs)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {r[0]: list(r[1:]) for r in conn.execute("SELECT run_id, pid, heartbeat_at FROM runs")}
    finally:
        conn.close()


def gained_runs(seed: dict[str, list], now: dict[str, list]) -> list[str]:
    """Runs a unit made or worked on: new since its seed, or worked on by another process since."""
    return sorted(r for r, cols in now.items() if seed.get(r) != cols)


_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*[A-Za-z0-9]")


def trim_to_gained(shard: Path, seed: dict[str, list], output: str) -> tuple[list[str], list[str]]:
    """Delete from `shard` every run it holds unchanged since its seed (its rows go with it, by the schema's
    cascades), so that merging it brings only what the unit made. Returns (gained: runs new or changed, named:
    seed runs left unchanged that the unit's output names, i.e. work it found already done)."""
    from store import Store

    now = runs_snapshot(shard)
    gained = gained_runs(seed, now)
    words = set(_TOKEN.findall(output))
    named = sorted(r for r in now if r not in gained and r in words)
    stale = [r for r in now if r not in gained]
    with Store.open(shard) as st:
        with st.conn:
            st.conn.executemany("DELETE FROM runs WHERE run_id = ?", [(r,) for r in stale])
        st.conn.execute("VACUUM")
    return gained, named


def _shard_progress(folder: Path, unit: Unit) -> list[dict]:
    """Runs a unit's live shard has gained since its seed (read-only), for `plan status`."""
    shard, seed_file, _ = _shard_paths(folder, unit)
    if not shard.exists() or not seed_file.exists():
        return []
    try:
        gained = set(gained_runs(json.loads(seed_file.read_text()), runs_snapshot(shard)))
        conn = _connect_ro(shard)
        try:
            runs = [dict(r) for r in conn.execute("SELECT * FROM runs") if r["run_id"] in gained]
            for run in runs:  # timed by the shard's own timing events, which the target has not seen yet
                run["_seconds"], run["_start"] = _run_seconds(conn, run), _start_interval(conn, run)
                run["_units"] = _units_timed(conn, run)
            return runs
        finally:
            conn.close()
    except (sqlite3.Error, ValueError):
        return []


def unit_command(unit: Unit, store: Path, cache_dir: Path | None) -> list[str]:
    """The full command line of a unit writing into `store`."""
    cache = ["--cache-dir", str(cache_dir)] if cache_dir else []
    return [sys.executable, "-m", "compute", "--store", str(store), "--quiet", *cache, *unit.argv]


def _unit_env(unit: Unit) -> dict:
    threads = str(unit.cpus)
    return {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the process that started it dies (Linux), so a killed driver
    leaves no unit writing its shard behind (SIGTERM marks the run interrupted, resumable)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _tail(text: str, lines: int = 1) -> str:
    out = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(out[-lines:]) if out else "(no output)"


def run_in_shard(unit: Unit, shard: Path, seed: dict, cache_dir: Path | None, log: Path,
                 started: Callable[[subprocess.Popen], None] | None = None) -> dict:
    """Run `unit` into `shard` (already seeded) and trim it: {rc, gained, named, tail}. Used by both executors."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as fh:
        fh.write(f"$ {' '.join(unit_command(unit, shard, cache_dir))}\n")
        fh.flush()
        proc = subprocess.Popen(unit_command(unit, shard, cache_dir), cwd=REPO, env=_unit_env(unit), stdout=fh,
                                stderr=subprocess.STDOUT, preexec_fn=_die_with_parent, start_new_session=True)
        if started:
            started(proc)
        rc = proc.wait()
    text = log.read_text(errors="replace")
    out = {"rc": rc, "tail": _tail(text)}
    if rc == 0:
        out["gained"], out["named"] = trim_to_gained(shard, seed, text.rpartition("\n$ ")[2])
    return out


def _ray_unit(unit: Unit, seed_bytes: bytes, cache_dir: str | None) -> dict:
    """A Ray task: the unit in a temporary shard on whichever node runs it; returns the trimmed shard's bytes."""
    with tempfile.TemporaryDirectory(prefix="editscope-unit-") as tmp:
        shard = Path(tmp) / "shard.sqlite"
        shard.write_bytes(seed_bytes)
        seed = runs_snapshot(shard)
        out = run_in_shard(unit, shard, seed, Path(cache_dir) if cache_dir else None, Path(tmp) / "unit.log")
        out["log"] = (Path(tmp) / "unit.log").read_text(errors="replace")
        out["host"] = os.uname().nodename
        if out["rc"] == 0:
            out["shard"] = shard.read_bytes()
        return out


# ---- merging and recording ------------------------------------------------------------------------------


# a resumed run's recomputed edits differ from its killed process's in the last digits (rounding); a replaced number
# that moved more than this is said when the driver merges it (the merged event records the largest change anyway)
ROUNDING = 1e-3


def merge_into(shard: Path, target: Path, own: list[str] = ()) -> list:
    """Merge a unit's shard into the target (store.merge: idempotent, keeps provenance, refuses conflicting runs).
    `own`: the runs the unit made or continued, whose one writer the shard is: their copy in the target is made
    the shard's (a sequential run resumed from its last checkpoint computes again the edits after it, which the
    target may hold from the killed process's progress, equal to the last digit or not)."""
    from store.merge import merge_stores

    return merge_stores([shard], target, own=own)


def _say_large_changes(unit: Unit, reports: list, out) -> None:
    """A line for each owned run whose replaced numbers moved more than rounding does (ROUNDING, relative)."""
    for report in reports:
        for run_id, mirrored in report.replaced_by_run.items():
            change = mirrored.get("largest_change")
            if change and change["relative"] > ROUNDING:
                out(f"  {unit.id}: run {run_id}'s recomputed rows differ from those its earlier process merged by "
                    f"more than rounding: {change['table']}.{change['column']} at {change['key']}: "
                    f"{change['target']!r} before, {change['shard']!r} now (relative {change['relative']:.2g}); "
                    "the run's `merged` event records it")


def record_unit(target: Path, plan: Plan, unit: Unit, run_ids: list[str]) -> None:
    """run_events rows (kind plan_unit, series = the unit's key) linking each of the unit's runs to it."""
    from store import Store

    if not run_ids:
        return
    detail = {"plan": plan.name, "unit": unit.id, "spec": unit.spec(), "argv": list(unit.argv)}
    with Store.open(target) as st:
        st.write_events([{"run_id": r, "kind": EVENT_KIND, "series": unit.key, "edit_count": 0, "detail": detail}
                         for r in run_ids])


# ---- the driver ---------------------------------------------------------------------------------------


class LocalExecutor:
    """Units as subprocesses on this machine, as many at once as `workers` CPU slots allow; each unit's shard
    lives in the plan's cache folder, so a unit whose driver was killed resumes where it stopped."""

    def __init__(self, folder: Path, target: Path, cache_dir: Path | None, workers: int):
        self.folder, self.target, self.cache_dir, self.workers = folder, target, cache_dir, workers
        self.running: dict[str, tuple] = {}  # unit id -> (unit, (result, thread), [its Popen])

    def running_units(self) -> list[Unit]:
        return [unit for unit, _, _ in self.running.values()]

    def free(self) -> int:
        return self.workers - sum(min(u.cpus, self.workers) for u, _, _ in self.running.values())

    def start(self, unit: Unit) -> str:
        import threading

        shard, seed_file, log = _shard_paths(self.folder, unit)
        resumed = shard.exists() and seed_file.exists()
        if not resumed:
            copy_store(self.target, shard)
            seed_file.write_text(json.dumps(runs_snapshot(shard)))
        seed = json.loads(seed_file.read_text())
        result: dict = {}
        procs: list = []

        def work():
            try:
                result.update(run_in_shard(unit, shard, seed, self.cache_dir, log, procs.append))
            except BaseException as exc:  # reported by the driver, never lost in the thread
                result.update(rc=-1, tail=f"{type(exc).__name__}: {exc}")
            result["shard"] = shard

        thread = threading.Thread(target=work, daemon=True)
        self.running[unit.id] = (unit, (result, thread), procs)
        thread.start()
        return "resumed its shard" if resumed else "started"

    def finished(self, timeout: float) -> list[tuple[Unit, dict]]:
        time.sleep(timeout)
        done = []
        for uid, (unit, (result, thread), _) in list(self.running.items()):
            if not thread.is_alive():
                done.append((unit, result))
                del self.running[uid]
        return done

    def progress(self, units: list[Unit]) -> list[tuple[Unit, Path, list[str]]]:
        """(unit, a trimmed copy of its live shard, the runs it holds) for each unit with progress to show."""
        out = []
        for unit in units:
            shard, seed_file, _ = _shard_paths(self.folder, unit)
            if not shard.exists() or not seed_file.exists():
                continue
            seed = json.loads(seed_file.read_text())
            if not gained_runs(seed, runs_snapshot(shard)):
                continue
            copy = self.folder / f"{unit.id}-{unit.key}.progress.sqlite"
            copy_store(shard, copy)
            gained, _ = trim_to_gained(copy, seed, "")
            out.append((unit, copy, gained))
        return out

    def done_with(self, unit: Unit, merged: bool) -> None:
        shard, seed_file, _ = _shard_paths(self.folder, unit)
        for suffix in ("", "-wal", "-shm"):
            Path(str(self.folder / f"{unit.id}-{unit.key}.progress.sqlite") + suffix).unlink(missing_ok=True)
        if merged:
            for suffix in ("", "-wal", "-shm"):
                Path(str(shard) + suffix).unlink(missing_ok=True)
            seed_file.unlink(missing_ok=True)

    def stop(self) -> None:
        """SIGTERM every running unit (each marks its run interrupted in its shard) and wait for them."""
        for _, _, procs in self.running.values():
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
        for _, (_, thread), _ in self.running.values():
            thread.join(timeout=120)


class RayExecutor:
    """Units as Ray tasks (`ray.init()` on this machine, or `address=` of a cluster). A task gets the seed
    store's bytes and returns the trimmed shard's bytes: no shared filesystem. A task whose driver dies is
    lost with its shard; the unit starts again from the target's state on the next `plan run`."""

    def __init__(self, folder: Path, target: Path, cache_dir: Path | None, workers: int | None,
                 address: str | None):
        try:
            import ray
        except ImportError:
            raise PlanError("--executor ray needs Ray: pip install -r requirements-compute.txt") from None
        self.ray, self.folder, self.target, self.cache_dir = ray, folder, target, cache_dir
        if not ray.is_initialized():
            env = {"env_vars": {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}}
            kwargs = {"address": address} if address else {"num_cpus": workers} if workers else {}
            ray.init(runtime_env=env, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
                     **kwargs)
        self.task = ray.remote(_ray_unit)
        self.running: dict = {}  # object ref -> unit

    def running_units(self) -> list[Unit]:
        return list(self.running.values())

    def free(self) -> int:
        return 1_000_000  # Ray queues tasks until their CPUs are free

    def start(self, unit: Unit) -> str:
        seed = self.folder / f"seed-{unit.key}.sqlite"
        copy_store(self.target, seed)
        data = seed.read_bytes()
        seed.unlink()
        ref = self.task.options(num_cpus=unit.cpus, num_gpus=unit.gpus, max_retries=0).remote(
            unit, data, str(self.cache_dir) if self.cache_dir else None)
        self.running[ref] = unit
        return "submitted"

    def finished(self, timeout: float) -> list[tuple[Unit, dict]]:
        if not self.running:
            time.sleep(timeout)
            return []
        ready, _ = self.ray.wait(list(self.running), num_returns=len(self.running), timeout=timeout)
        out = []
        for ref in ready:
            unit = self.running.pop(ref)
            try:
                result = self.ray.get(ref)
            except Exception as exc:  # the task itself failed (a lost node, an import error on the worker)
                result = {"rc": -1, "tail": f"Ray task failed: {' '.join(str(exc).split())[:300]}"}
            _, _, log = _shard_paths(self.folder, unit)
            log.write_text(result.pop("log", "") or "")
            if result.get("shard") is not None:
                path = self.folder / f"{unit.id}-{unit.key}.from-ray.sqlite"
                path.write_bytes(result.pop("shard"))
                result["shard"] = path
            out.append((unit, result))
        return out

    def progress(self, units: list[Unit]) -> list:
        return []  # a Ray task's shard comes back only when the task ends

    def done_with(self, unit: Unit, merged: bool) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(str(self.folder / f"{unit.id}-{unit.key}.from-ray.sqlite") + suffix).unlink(missing_ok=True)

    def stop(self) -> None:
        for ref in list(self.running):
            self.ray.cancel(ref, force=True)
        self.running.clear()


def parse_deadline(value: str, now: float | None = None) -> float:
    """A `--deadline` as a Unix time: an ISO 8601 date and time (local time when it names no zone), `HH:MM`
    (the next such local time, today or tomorrow), or `+2h`, `+90m`, `+1h30m` from now. ValueError with the
    accepted forms otherwise."""
    from datetime import datetime, timedelta

    now = time.time() if now is None else now
    text = value.strip()
    m = re.fullmatch(r"\+(?:(\d+)h)?(?:(\d+)m)?", text)
    if m and (m.group(1) or m.group(2)):
        return now + 3600 * int(m.group(1) or 0) + 60 * int(m.group(2) or 0)
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", text)
    if m and int(m.group(1)) < 24 and int(m.group(2)) < 60:
        base = datetime.fromtimestamp(now)
        at = base.replace(hour=int(m.group(1)), minute=int(m.group(2)), second=0, microsecond=0)
        return (at if at.timestamp() > now else at + timedelta(days=1)).timestamp()
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ValueError(f"deadline {value!r}: give a date and time (2026-12-06T08:00, local time unless it names a "
                         "zone), a time of day (08:00, the next one) or a span from now (+2h, +90m, +1h30m)") from None


def orphaned_runs(unit: Unit, target: Path, folder: Path, cache_dir: Path | None, executor: str = "local"
                  ) -> list[str]:
    """Unfinished runs of a sequential unit that cannot be resumed here: the target holds them, but the unit has no
    shard in `folder` and their resume state (compute.runs.state_path) is not in the cache folder (a new machine,
    a cleared cache; on Ray always: a node's cache is its own). Resumed, such a run starts over from its first
    edit under its old id, and the recomputation need not agree with the stored rows in the last digit, which
    `store merge` refuses."""
    from compute.models import default_cache_dir
    from compute.runs import state_path

    if unit.kind != "sequential" or _shard_paths(folder, unit)[0].exists() or not Path(target).exists():
        return []
    conn = _connect_ro(Path(target))
    try:
        runs = _unit_runs(conn, unit.key)
    finally:
        conn.close()
    cache = Path(cache_dir or default_cache_dir())
    return [r["run_id"] for r in runs if not _run_done(unit, r)
            and (executor != "local" or not state_path(cache, r["run_id"]).exists())]


def thread_speedup(cpus: int) -> float:
    """How much faster than its one-thread estimate a unit of `cpus` torch threads is taken to run: 1.68x for
    two, as measured for a sequential ROME run alone on the machine (README, Benchmarks: 882 s on one thread,
    526 s on two); each further thread is assumed to add as much."""
    return 1.0 + 0.68 * (max(int(cpus), 1) - 1)


def deadline_hold(unit: Unit, need_s: float | None, seconds_left: float) -> str | None:
    """Why a deadline `seconds_left` away keeps `unit` (estimated to need `need_s` CPU-seconds at one thread,
    None: not known) from starting now, or None when it may start. Only kinds in LOST_IF_CUT are held; a unit
    of several CPUs is taken to run `thread_speedup(cpus)` times faster."""
    if unit.kind not in LOST_IF_CUT:
        return None
    if need_s is None:
        return f"held back: no estimate of its time, and a {unit.kind} unit cut by the deadline loses its work"
    wall = need_s / thread_speedup(unit.cpus)
    if wall > seconds_left:
        threads = f" on {unit.cpus} threads" if unit.cpus > 1 else ""
        return (f"held back: needs about {wall / 3600:.2f} h{threads}, {max(seconds_left, 0) / 3600:.2f} h left "
                "before the deadline")
    return None


def execute(plan: Plan, target: Path, *, executor: str = "local", workers: int | None = None,
            address: str | None = None, cache_dir: Path | None = None, out: Callable[[str], None] = print,
            progress_s: float = 300.0, deadline: float | None = None, timings_from: Path | None = None,
            clock: Callable[[], float] = time.time) -> dict:
    """Compute every unit of `plan` that is not done in `target`, dependencies first, and merge each finished
    unit into the target. Returns {unit id: 'done' | 'failed: ...' | 'blocked by ...' | 'held back: ...'}; a
    unit whose command failed keeps its shard (the next run resumes it) and blocks the units after it. Every
    `progress_s` seconds (local executor) the running units' progress is merged too, so the target shows it.
    KeyboardInterrupt stops every running unit (their runs are marked interrupted in their shards), merges what
    they stored and is raised again.

    `deadline` (a Unix time: the end of a machine's reservation, a batch job's wall-time limit) holds back a
    unit of a kind in LOST_IF_CUT whose estimated seconds left (`plan_status`, one thread per unit; timed by
    `timings_from` where the target has nothing to go by) do not fit between the moment it could start and the
    deadline, or that has no estimate; the units after it are blocked. Units of the other kinds start as usual:
    their progress reaches the target as they go. Nothing running is stopped at the deadline."""
    import fcntl

    from compute.models import default_cache_dir
    from store import Store

    target = Path(target)
    with Store.open(target, create=True) as st:  # the target exists (a new plan may start from nothing)
        st.mark_stale_runs()
    folder = plan_folder(plan, cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    lock = open(folder / "driver.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise PlanError(f"another `plan run` of {plan.name} is running (lock {folder / 'driver.lock'}); wait for it "
                        "or stop it first") from None
    workers = workers or os.cpu_count() or 1
    if executor == "local":
        ex = LocalExecutor(folder, target, cache_dir, workers)
    elif executor == "ray":
        ex = RayExecutor(folder, target, cache_dir, workers if address is None else None, address)
    else:
        raise PlanError(f"unknown executor {executor!r}: local or ray")
    first = plan_status(plan, target, restore_left_out=True)
    states = {s.unit.id: s.state for s in first}
    # the deadline's estimates count the progress of shards a restarted driver resumes (local executor)
    # and a sequential run that starts over here (no resume state in this machine's cache) from its first edit
    here = Path(cache_dir or default_cache_dir()) if executor == "local" else None
    left_s = ({s.unit.id: s.remaining_s
               for s in plan_status(plan, target, shards=folder, timings_from=timings_from, states_in=here)}
              if deadline is not None else {})
    outcome = {uid: "done" for uid, s in states.items() if s == "done"}

    def held_back(unit: Unit) -> str | None:
        if unit.hold:
            return f"held: {unit.hold}"
        return None if deadline is None else deadline_hold(unit, left_s.get(unit.id), deadline - clock())
    pending = [u for u in plan.units if u.id not in outcome]
    out(f"plan {plan.name}: {len(outcome)} of {len(plan.units)} units done, {len(pending)} to compute "
        f"({executor} executor, target {target})")
    for line in _outdated_notes(first):  # kept, but said: a changed hyperparameter file does not re-key units
        out(line)
    last_progress = time.monotonic()
    try:
        while pending or ex.running:
            for unit in list(pending):
                blocked = [a for a in unit.after if outcome.get(a, "").startswith(("failed", "blocked", "held"))]
                if blocked:
                    outcome[unit.id] = f"blocked by {blocked[0]}"
                    pending.remove(unit)
                    out(f"  {unit.id}: not run, {blocked[0]} did not finish")
                    continue
                if all(outcome.get(a) == "done" for a in unit.after) and ex.free() >= min(unit.cpus, workers):
                    why = held_back(unit)
                    if why:
                        outcome[unit.id] = why
                        pending.remove(unit)
                        out(f"  {unit.id}: {why}")
                        continue
                    orphans = orphaned_runs(unit, target, folder, cache_dir, executor)
                    if orphans:  # they start over from their first edit: their old rows would conflict
                        with Store.open(target) as st:
                            st.delete_runs(orphans)
                        out(f"  {unit.id}: run(s) {', '.join(orphans)} have no resume state here (a new machine or "
                            "cache?): they start over from their first edit, so their rows were removed from the "
                            "target")
                    how = ex.start(unit)
                    pending.remove(unit)
                    out(f"  {unit.id}: {how} ({' '.join(unit.argv)})")
            for unit, result in ex.finished(0.5):
                outcome[unit.id] = _finish(plan, unit, result, target, ex, folder, out)
                _keep_status_quietly(plan, target, timings_from, out)
            if time.monotonic() - last_progress > progress_s:
                _merge_progress(plan, ex, ex.running_units(), target, out)
                last_progress = time.monotonic()
        _keep_status_quietly(plan, target, timings_from, out)
        if plan.finalize and all(v == "done" for v in outcome.values()):
            rc = subprocess.run([sys.executable, "-m", "compute", "--store", str(target), "store", "finalize"],
                                cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                                text=True).returncode
            out(f"store finalize: {'done' if rc == 0 else f'failed (exit {rc})'}")
    except KeyboardInterrupt:
        stopped = ex.running_units()
        ex.stop()
        _merge_progress(plan, ex, stopped, target, out)
        from compute.experiments.common import RunInterrupted

        raise RunInterrupted(f"(each unit of plan {plan.name})", f"`python -m compute plan run {plan.path}` "
                             "again resumes them") from None
    finally:
        lock.close()
    return outcome


def _held_through(outcome: dict[str, str], mark: str) -> set[str]:
    """The units of an `execute` outcome whose outcome starts with `mark`, or that are blocked by such a unit,
    directly or through the units before them (a plan's `after` has no cycle: load_plan refuses one)."""
    def held(uid: str) -> bool:
        o = outcome.get(uid, "")
        return o.startswith(mark) or o.startswith("blocked by ") and held(o.removeprefix("blocked by "))

    return {u for u in outcome if held(u)}


def held_by_deadline(outcome: dict[str, str]) -> set[str]:
    """The units of an `execute` outcome that the deadline held back, directly or through the units before them."""
    return _held_through(outcome, "held back")


def held_by_plan(outcome: dict[str, str]) -> set[str]:
    """The units of an `execute` outcome that the plan holds (`hold`), directly or through the units before them."""
    return _held_through(outcome, "held: ")


def _merge_progress(plan: Plan, ex, units: list[Unit], target: Path, out) -> None:
    """Merge what running (or just stopped or failed) units have stored so far; the shards stay as they are."""
    for unit, copy, gained in ex.progress(units):
        try:
            _say_large_changes(unit, merge_into(copy, target, own=gained), out)
            record_unit(target, plan, unit, gained)
        except Exception as exc:  # progress is shown on a best-effort basis; the final merge decides
            out(f"  {unit.id}: its progress could not be merged yet: {' '.join(str(exc).split())}")
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(str(copy) + suffix).unlink(missing_ok=True)


def _finish(plan: Plan, unit: Unit, result: dict, target: Path, ex, folder: Path, out) -> str:
    """Merge a finished unit's shard and record its runs; the unit's outcome."""
    _, _, log = _shard_paths(folder, unit)
    if result.get("rc") != 0:
        out(f"  {unit.id}: failed (exit {result.get('rc')}): {result.get('tail')} (log: {log})")
        _merge_progress(plan, ex, [unit], target, out)  # the target shows the failed run; its shard stays
        ex.done_with(unit, merged=False)
        return f"failed: {result.get('tail')}"
    try:
        _say_large_changes(unit, merge_into(Path(result["shard"]), target, own=result.get("gained", [])), out)
    except Exception as exc:
        message = " ".join(str(exc).split())
        out(f"  {unit.id}: its shard could not be merged: {message} (shard kept: {result['shard']})")
        return f"failed: merge: {message}"
    runs = sorted(set(result.get("gained", [])) | set(result.get("named", [])))
    record_unit(target, plan, unit, runs)
    ex.done_with(unit, merged=True)
    out(f"  {unit.id}: done, {len(result.get('gained', []))} run(s) made or continued"
        + (f", {len(result.get('named', []))} found done" if result.get("named") else ""))
    return "done"


def _held_units(states: list[UnitState]) -> dict[str, list[str]]:
    """The plan's holds of the units not done: reason -> unit ids, in the plan's order."""
    out: dict[str, list[str]] = {}
    for s in states:
        if s.unit.hold and s.state != "done":
            out.setdefault(s.unit.hold, []).append(s.unit.id)
    return out


def status_lines(states: list[UnitState]) -> list[str]:
    """`plan status` as text: one line per unit, then the estimated CPU-hours left and what it rests on."""
    w = max([28, *(len(s.unit.id) for s in states)])  # whole ids: they differ at the end (-o0, -o1)
    lines = [f"{'unit':{w}} {'kind':11} {'state':8} {'runs':>4} {'progress':>11} {'CPU-h left':>10}  key"
             f"{' ' * 14}  estimated from"]
    total, held, unknown = 0.0, 0.0, []
    for s in states:
        n_done = sum(r.get("n_done") or 0 for r in s.runs)
        n_total = sum(r.get("n_total") or 0 for r in s.runs)
        left = "-" if s.state == "done" else "?" if s.remaining_s is None else f"{s.remaining_s / 3600:.2f}"
        if s.state != "done":
            if s.remaining_s is None:
                unknown.append(f"{s.unit.id} ({s.basis})")
            elif s.unit.hold:
                held += s.remaining_s
            else:
                total += s.remaining_s
        state = s.state + ("*" if s.unit.hold and s.state != "done" else "") + ("!" if s.outdated else "")
        lines.append(f"{s.unit.id:{w}} {s.unit.kind:11} {state:8} {len(s.runs):>4} "
                     f"{f'{n_done}/{n_total}' if s.runs else '':>11} {left:>10}  {s.unit.key}"
                     + (f"  {s.basis}" if s.state != "done" and s.basis else ""))
    counts = {k: sum(s.state == k for s in states) for k in ("done", "partial", "missing")}
    lines.append(f"{counts['done']} done, {counts['partial']} partial, {counts['missing']} missing; about "
                 f"{total / 3600:.1f} CPU-hours left at one thread per unit, estimated from stored timings "
                 "(a unit's own runs' per-item time, else finished runs of the same kind and editor, else of the "
                 "same kind)" + (f"; held (*), not counted: {held / 3600:.1f} CPU-hours" if held else ""))
    for reason, ids in _held_units(states).items():
        lines.append(f"* held ({len(ids)}: {', '.join(ids)}): {reason}")
    if unknown:
        lines.append(f"not estimated (no stored timing to go by): {', '.join(unknown)}")
    lines += _outdated_notes(states)
    return lines


def _outdated_notes(states: list[UnitState], mark: str = "! ") -> list[str]:
    """One line per unit (after `mark`) whose runs were made with other hyperparameters than it runs with now."""
    return [f"{mark}{s.unit.id}: its runs were made with other hyperparameters than the unit would run with now (a "
            f"hyperparameter file changed after them, e.g. with the setting a calibration sweep chose; plan run "
            f"keeps them, as the unit's key counts its options, not the file): " + " | ".join(s.outdated)
            for s in states if s.outdated]


README_START, README_END = "<!-- plan-status:start -->", "<!-- plan-status:end -->"


def status_markdown(plan: Plan, states: list[UnitState], target_name: str, timings_name: str | None = None) -> str:
    """The README's rebuild status: `plan status` of the store as a table, one row per unit in the plan's order
    (which is its priority), then the totals. Made from the store alone, so a fresh clone gives the same text
    (`plan status --write-readme README.md` writes it; a test checks the README against it)."""
    rows = ["| unit | kind | state | done | CPU-h left |", "|---|---|---|---|---|"]
    total, held, unknown = 0.0, 0.0, 0
    for s in states:
        n_done = sum(r.get("n_done") or 0 for r in s.runs)
        n_total = sum(r.get("n_total") or 0 for r in s.runs)
        if s.state == "done":
            left = "–"
        elif s.remaining_s is None:
            left, unknown = "not estimated", unknown + 1
        elif s.unit.hold:
            left, held = f"{s.remaining_s / 3600:.2f}", held + s.remaining_s
        else:
            left, total = f"{s.remaining_s / 3600:.2f}", total + s.remaining_s
        state = (s.state + (" (held)" if s.unit.hold and s.state != "done" else "")
                 + (" (other hyperparameters)" if s.outdated else ""))
        rows.append(f"| {s.unit.id} | {s.unit.kind} | {state} | {f'{n_done}/{n_total}' if s.runs else ''} | {left} |")
    counts = {k: sum(s.state == k for s in states) for k in ("done", "partial", "missing")}
    timings = f" --timings-from {timings_name}" if timings_name else ""
    head = (f"`python -m compute plan status plans/{Path(plan.path).name} --store {target_name}{timings}`: of the "
            f"plan's {len(states)} units, {counts['done']} are done, {counts['partial']} partial and "
            f"{counts['missing']} missing; about {total / 3600:.1f} CPU-hours are left at one thread per unit "
            f"(estimated from the store's own timings" + (f", else those of {timings_name}" if timings_name else "")
            + (f"; {unknown} unit(s) not estimated" if unknown else "") + ")"
            + (f", besides {held / 3600:.1f} CPU-hours of held units, which `plan run` does not start" if held else "")
            + ".")
    notes = ([f"Held ({', '.join(ids)}): {reason}" for reason, ids in _held_units(states).items()]
             + _outdated_notes(states, mark=""))
    return head + "\n\n" + "\n".join(rows) + ("\n\n" + "\n\n".join(notes) if notes else "")


def status_record(plan: Plan, states: list[UnitState], taken_at: str, timings_name: str | None = None) -> dict:
    """`plan status` as the JSON a snapshot keeps in its own meta table (store.conventions.PLAN_STATUS_META), so
    that a store built from part of a plan says, on the dashboard, which units it holds and which it lacks: one
    entry per unit in the plan's order, with the estimate `status_markdown` gives (the same numbers)."""
    units = []
    for s in states:
        left = None if s.state == "done" or s.remaining_s is None else round(s.remaining_s / 3600, 2)
        units.append({"unit": s.unit.id, "kind": s.unit.kind, "state": s.state, "held": bool(s.unit.hold),
                      "other_hparams": bool(s.outdated),
                      "done": sum(r.get("n_done") or 0 for r in s.runs) if s.runs else None,
                      "total": sum(r.get("n_total") or 0 for r in s.runs) if s.runs else None,
                      "cpu_h_left": left, "estimated": s.state == "done" or s.remaining_s is not None,
                      "runs": [r["run_id"] for r in s.runs]})
    return {"plan": f"plans/{Path(plan.path).name}", "taken_at": taken_at, "timings_from": timings_name,
            "units": units}


def keep_status(plan: Plan, store: Path, timings_from: Path | None = None) -> dict:
    """Write the plan's status in `store` now into its meta table (`status_record`, key
    store.conventions.PLAN_STATUS_META): `plan snapshot` does it in the copy it makes, `plan run` in its target
    whenever a unit ends and when it stops, so the record says how the plan stood when it was written."""
    from datetime import datetime, timezone

    from store import Store
    from store.conventions import PLAN_STATUS_META

    taken = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%MZ")
    record = status_record(plan, plan_status(plan, store, timings_from=timings_from), taken,
                           Path(timings_from).as_posix() if timings_from else None)
    with Store.open(store) as st, st.conn:
        st.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                        (PLAN_STATUS_META, json.dumps(record)))
    return record


def _keep_status_quietly(plan: Plan, target: Path, timings_from: Path | None, out) -> None:
    """`keep_status` on the driver's target: a status that cannot be written is said, and stops nothing."""
    try:
        keep_status(plan, target, timings_from)
    except Exception as exc:
        out(f"  the plan's status could not be kept in {target}: {' '.join(str(exc).split())}")

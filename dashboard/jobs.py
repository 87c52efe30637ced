"""Background jobs started from the dashboard: validated compute-CLI commands, run as detached processes.

Pure logic, no Streamlit and no torch (imports flow `compute -> store <- dashboard`, so the compute package
is only ever reached as a subprocess). The Demo and Launch pages call:

- `edit_argv`, `robustness_argv`, `knowledge_argv`, `sweep_argv`: form values -> CLI arguments. Every bad
  value raises ValueError with a message meant for the user; the limits below keep a launched run small.
- `start_job`: `python -m compute --store PATH --quiet ARGV` in a new session (it outlives the page), output
  to a log file in the jobs folder, with a small JSON record of the job beside it.
- `list_jobs` / `job_status`: the jobs started for a store and whether their process still runs.
- `cancel_run`: SIGINT to the pid recorded in the runs table; the CLI then marks the run interrupted.
- `mark_stale`: the only writable open of the store from the dashboard side (Store.mark_stale_runs); called
  on user actions, never while a page renders.
- `is_public` / `write_access`: the public-mode gate for the pages that start processes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import signal
import socket
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from store import Store, queries

ROOT = Path(__file__).resolve().parent.parent
HPARAMS_DIR = ROOT / "compute" / "editors" / "hparams"
DEFAULT_MODEL = "smollm2-135m"  # compute.models.DEFAULT_MODEL, repeated so that no compute module is imported

MAX_TEXT = 100  # characters in a subject or object
MAX_CASES = 60  # cases in a launched run (a robustness edit costs seconds to minutes on a CPU)
MAX_GEN_TOKENS = 30  # the CLI default; longer generations only slow a launched run down
MAX_SWEEP_VALUES = 8
MAX_EDITS = 100  # edits in a launched sequential run
MAX_BATCH = 50  # edits in one batch of a launched run
MAX_BATCH_SIZES = 4
LAUNCH_PANEL_POOL = 40  # a launched sequential run keeps 40 cases out for a panel of (up to) 10 known facts
LAUNCH_PANEL_SIZE = 10
MAX_SEED = 2**31 - 1
REPHRASE_CHOICES = ("plain", "all")
LOG_TAIL_CHARS = 2000


# ---- validation ---------------------------------------------------------------------------------------


def editor_names(hparams_dir: Path = HPARAMS_DIR) -> list[str]:
    """The registered editors: one folder of hyperparameter files per editor (read without importing torch)."""
    return sorted(p.name for p in hparams_dir.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))


def relation_templates(conn) -> dict[str, dict]:
    """relation -> its templates (prompt, paraphrases, question, ...) from the store's kb_relations."""
    return relation_templates_from(queries.kb_relations(conn))


def relation_templates_from(relations: pl.DataFrame) -> dict[str, dict]:
    """The same from a kb_relations frame (the dashboard's cached query result)."""
    out = {}
    if relations.is_empty():
        return out
    for row in relations.select("relation", "templates").iter_rows(named=True):
        raw = row["templates"]
        out[row["relation"]] = json.loads(raw) if isinstance(raw, str) else dict(raw or {})
    return out


def check_text(label: str, value: str | None, required: bool = True, max_len: int = MAX_TEXT) -> str | None:
    """`value` stripped; ValueError when it is missing (if required), too long or holds control characters."""
    text = (value or "").strip()
    if not text:
        if required:
            raise ValueError(f"{label} is empty: please fill it in")
        return None
    if len(text) > max_len:
        raise ValueError(f"{label} is {len(text)} characters long; at most {max_len} are allowed")
    if any(ord(c) < 32 for c in text):
        raise ValueError(f"{label} contains a line break or control character; use plain text on one line")
    return text


def check_int(label: str, value, lo: int, hi: int) -> int:
    """`value` as an int within [lo, hi], else ValueError naming the field and the range."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{label} must be a whole number; got {value!r}") from None
    if isinstance(value, float) and value != number:
        raise ValueError(f"{label} must be a whole number; got {value!r}")
    if not lo <= number <= hi:
        raise ValueError(f"{label} must be between {lo} and {hi}; got {number}")
    return number


def check_editor(editor: str | None, editors: Sequence[str]) -> str:
    if editor not in editors:
        raise ValueError(f"unknown editor {editor!r}: choose one of {', '.join(editors)}")
    return editor


def check_model(model: str | None) -> list[str]:
    """The --model arguments: nothing for the default model, else a local Hugging Face model directory."""
    text = (model or "").strip()
    if not text or text == DEFAULT_MODEL:
        return []
    path = Path(text)
    if not path.is_dir() or not (path / "config.json").is_file():
        raise ValueError(f"model {text!r} is neither {DEFAULT_MODEL!r} nor a local model directory with a config.json")
    return ["--model", str(path.resolve())]


def edit_prompt(relation: str, subject: str, templates: Mapping[str, Mapping]) -> str:
    """The edit prompt of a relation filled with the subject (the CLI builds the same one)."""
    if relation not in templates:
        raise ValueError(f"unknown relation {relation!r}: choose one of {', '.join(sorted(templates))}")
    template = templates[relation].get("prompt")
    if not template:
        raise ValueError(f"relation {relation!r} has no prompt template in the store")
    return template.replace("{subject}", subject)


def edit_argv(subject: str, relation: str, new_object: str, true_object: str | None, editor: str, *,
              templates: Mapping[str, Mapping], editors: Sequence[str], model: str | None = None,
              gen_tokens: int = 20, seed: int = 0) -> list[str]:
    """CLI arguments of the one-fact demo (`python -m compute edit ...`), validated."""
    subject = check_text("The subject", subject)
    new_object = check_text("The new object", new_object)
    true_object = check_text("The true object", true_object, required=False)
    editor = check_editor(editor, editors)
    prompt = edit_prompt(relation, subject, templates)
    if subject not in prompt:
        raise ValueError(f"the subject {subject!r} does not occur in the prompt {prompt!r}: the prompt must name it")
    if true_object and true_object.lower() == new_object.lower():
        raise ValueError(f"the new object {new_object!r} equals the true object: choose a different one")
    argv = ["edit", "--subject", subject, "--relation", relation, "--new", new_object, "--editor", editor,
            "--gen-tokens", str(check_int("Generated tokens", gen_tokens, 1, MAX_GEN_TOKENS)),
            "--seed", str(check_int("Seed", seed, 0, MAX_SEED))]
    if true_object:
        argv += ["--true", true_object]
    return argv + check_model(model)


def _size_args(cases: int, seed: int, limit: int | None, gen_tokens: int) -> list[str]:
    argv = ["--cases", str(check_int("Number of cases", cases, 1, MAX_CASES)),
            "--seed", str(check_int("Seed", seed, 0, MAX_SEED)),
            "--gen-tokens", str(check_int("Generated tokens", gen_tokens, 1, MAX_GEN_TOKENS))]
    if limit:
        argv += ["--limit", str(check_int("Limit", limit, 1, MAX_CASES))]
    return argv


def robustness_argv(editor: str, cases: int, seed: int = 0, *, editors: Sequence[str], limit: int | None = None,
                    gen_tokens: int = 10, model: str | None = None) -> list[str]:
    """`run robustness` on the balanced set of `cases` cases (built if missing), at most MAX_CASES."""
    return (["run", "robustness", "--editor", check_editor(editor, editors)]
            + _size_args(cases, seed, limit, gen_tokens) + check_model(model))


def knowledge_argv(case_set: str, *, case_sets: Sequence[str], limit: int | None = 20, types: str = "plain",
                   gen_tokens: int = 10, model: str | None = None) -> list[str]:
    """`knowledge measure --again` on the first `limit` cases (at most MAX_CASES) of a stored case set."""
    if case_set not in case_sets:
        raise ValueError(f"unknown case set {case_set!r}: choose one of {', '.join(case_sets) or '(none stored)'}")
    if types not in REPHRASE_CHOICES:
        raise ValueError(f"rephrase types must be one of {', '.join(REPHRASE_CHOICES)}; got {types!r}")
    if limit is None:
        raise ValueError(f"give a limit: a launched knowledge run measures at most {MAX_CASES} cases")
    return ["knowledge", "measure", "--set", case_set, "--types", types, "--again",
            "--limit", str(check_int("Limit", limit, 1, MAX_CASES)),
            "--gen-tokens", str(check_int("Generated tokens", gen_tokens, 1, MAX_GEN_TOKENS))] + check_model(model)


def _case_set_arg(case_set: str, case_sets: Sequence[str]) -> list[str]:
    if case_set not in case_sets:
        raise ValueError(f"unknown case set {case_set!r}: choose one of {', '.join(case_sets) or '(none stored)'}")
    return ["--set", case_set]


def sequential_argv(editor: str, case_set: str, edits: int, batch: int = 1, seed: int = 0, *,
                    editors: Sequence[str], case_sets: Sequence[str], model: str | None = None) -> list[str]:
    """`run sequential` with at most MAX_EDITS edits in batches of at most MAX_BATCH, on a stored case set
    (a small fact panel keeps the launched run short)."""
    edits = check_int("Number of edits", edits, 1, MAX_EDITS)
    batch = check_int("Batch size", batch, 1, MAX_BATCH)
    if batch > edits:
        raise ValueError(f"the batch size ({batch}) is larger than the number of edits ({edits})")
    return (["run", "sequential", "--editor", check_editor(editor, editors)] + _case_set_arg(case_set, case_sets)
            + ["--edits", str(edits), "--batch", str(batch), "--order-seed", str(check_int("Seed", seed, 0, MAX_SEED)),
               "--panel-pool", str(LAUNCH_PANEL_POOL), "--panel-size", str(LAUNCH_PANEL_SIZE)] + check_model(model))


def parse_sizes(values: str) -> list[int]:
    """'1,10,50' -> [1, 10, 50]: distinct batch sizes, at most MAX_BATCH_SIZES of them, each <= MAX_BATCH."""
    text = check_text("Batch sizes", values)
    try:
        sizes = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise ValueError(f"batch sizes must be comma-separated whole numbers such as 1,10,50; got {text!r}") from None
    if not sizes or len(sizes) > MAX_BATCH_SIZES or len(set(sizes)) != len(sizes):
        raise ValueError(f"give 1 to {MAX_BATCH_SIZES} different batch sizes; got {text!r}")
    for size in sizes:
        check_int("Each batch size", size, 1, MAX_BATCH)
    return sizes


def batch_argv(editor: str, case_set: str, sizes: str, seed: int = 0, *, editors: Sequence[str],
               case_sets: Sequence[str], abilities: bool = False, model: str | None = None) -> list[str]:
    """`run batch`: one batch per size (each at most MAX_BATCH edits), measured and undone."""
    return (["run", "batch", "--editor", check_editor(editor, editors)] + _case_set_arg(case_set, case_sets)
            + ["--sizes", ",".join(map(str, parse_sizes(sizes))), "--order-seed",
               str(check_int("Seed", seed, 0, MAX_SEED)), "--panel-pool", str(LAUNCH_PANEL_POOL),
               "--abilities", "quick" if abilities else "none"] + check_model(model))


def parse_layers(values: str, max_layer: int = 63) -> list[int]:
    """'1,3,5' -> [1, 3, 5]: distinct layer numbers, at most MAX_SWEEP_VALUES of them."""
    text = check_text("Layers", values)
    try:
        layers = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise ValueError(f"layers must be comma-separated whole numbers such as 1,3,5; got {text!r}") from None
    if not layers:
        raise ValueError("layers is empty: give comma-separated layer numbers such as 1,3,5")
    if len(layers) > MAX_SWEEP_VALUES:
        raise ValueError(f"at most {MAX_SWEEP_VALUES} layers per launched sweep; got {len(layers)}")
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers repeat in {text!r}: give each layer once")
    for layer in layers:
        check_int("Each layer", layer, 0, max_layer)
    return layers


def sweep_argv(editor: str, layers: str, cases: int, seed: int = 0, *, editors: Sequence[str],
               limit: int | None = None, gen_tokens: int = 10, model: str | None = None) -> list[str]:
    """`run sweep --field layer` over a few layers on the balanced set of `cases` cases."""
    values = ",".join(map(str, parse_layers(layers)))
    return (["run", "sweep", "--editor", check_editor(editor, editors), "--field", "layer", "--values", values]
            + _size_args(cases, seed, limit, gen_tokens) + check_model(model))


# ---- public mode --------------------------------------------------------------------------------------


def _truthy(value) -> bool:
    if isinstance(value, bool):
        return value
    return str(value or "").strip().lower() in {"1", "true", "yes", "on"}


def is_public(env: Mapping[str, str], secrets: Mapping) -> bool:
    """Public mode: EDITSCOPE_PUBLIC=1 in the environment or `public = true` in the Streamlit secrets."""
    return _truthy(env.get("EDITSCOPE_PUBLIC")) or _truthy(secrets.get("public"))


def write_access(env: Mapping[str, str], secrets: Mapping, entered: str | None) -> bool:
    """Whether the Demo and Launch pages (which start processes) are shown: always outside public mode; in
    public mode only to a visitor who entered the secrets' `passcode` (never when no passcode is set)."""
    if not is_public(env, secrets):
        return True
    passcode = str(secrets.get("passcode") or "")
    if not passcode or not entered:
        return False
    return hmac.compare_digest(passcode.encode(), str(entered).encode())


# ---- processes ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One process started from the dashboard."""

    job_id: str
    kind: str  # edit, robustness, knowledge, sweep
    argv: tuple[str, ...]
    pid: int
    log: str
    store: str
    started_at: str


def jobs_dir(store_path: Path) -> Path:
    """The jobs folder of a store: $EDITSCOPE_CACHE (or ~/.cache/editscope)/jobs/<hash of the store path>,
    outside the repository so that logs never land in git."""
    cache = Path(os.environ.get("EDITSCOPE_CACHE") or Path.home() / ".cache" / "editscope")
    digest = hashlib.sha256(str(Path(store_path).resolve()).encode()).hexdigest()[:12]
    return cache / "jobs" / digest


def command(store_path: Path, argv: Sequence[str]) -> list[str]:
    """The full command line of a job."""
    return [sys.executable, "-m", "compute", "--store", str(store_path), "--quiet", *argv]


def mark_stale(store_path: Path) -> int:
    """Mark runs whose process died as interrupted (a writable open; only on user actions)."""
    with Store.open(Path(store_path)) as st:
        return st.mark_stale_runs()


def start_job(store_path: Path, argv: Sequence[str]) -> Job:
    """Start `python -m compute --store PATH --quiet ARGV` as a detached process and record it."""
    store_path = Path(store_path).resolve()
    mark_stale(store_path)
    folder = jobs_dir(store_path)
    folder.mkdir(parents=True, exist_ok=True)
    job_id = datetime.now().strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    log = folder / f"{job_id}.log"
    # posix_spawn instead of Popen: no Popen object is left behind to be reaped behind our back, so
    # job_status can collect the exit status; setsid detaches the job from the page's process group.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    pid = os.posix_spawn(sys.executable, command(store_path, argv), env, setsid=True, file_actions=[
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ])
    kind = argv[1] if argv[0] == "run" else argv[0]
    job = Job(job_id, kind, tuple(argv), pid, str(log), str(store_path),
              datetime.now(timezone.utc).isoformat(timespec="seconds"))
    (folder / f"{job_id}.json").write_text(json.dumps(asdict(job)))
    return job


def _exit_file(job: Job) -> Path:
    return Path(job.log).with_suffix(".rc")


def _alive(job: Job) -> bool:
    """Whether the job's process still runs; reaps it (recording its exit status) when it is our child."""
    try:
        pid, status = os.waitpid(job.pid, os.WNOHANG)
    except ChildProcessError:  # not our child (another dashboard process started it): ask the kernel
        try:
            os.kill(job.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        stat = Path(f"/proc/{job.pid}/stat")
        try:
            return stat.read_text().split(")")[-1].split()[0] != "Z"
        except (OSError, IndexError):
            return True
    if pid == 0:
        return True
    _exit_file(job).write_text(str(os.waitstatus_to_exitcode(status)))
    return False


def log_tail(job: Job, chars: int = LOG_TAIL_CHARS) -> str:
    try:
        data = Path(job.log).read_bytes()
    except OSError:
        return ""
    return data[-chars:].decode("utf-8", "replace")


_STAGE = re.compile(r"^stage (\d+)/(\d+): (.*)$")


def job_stage(job: Job) -> tuple[int, int, str] | None:
    """(k, n, what) from the newest `stage k/n: what` line the job printed (the edit demo prints them),
    or None: the page turns it into a progress bar."""
    for line in reversed(log_tail(job).splitlines()):
        m = _STAGE.match(line.strip())
        if m:
            return int(m.group(1)), int(m.group(2)), m.group(3)
    return None


def job_status(job: Job) -> dict:
    """{'state': running | done | failed | interrupted | finished, 'returncode': int | None, 'error': str | None}."""
    if _alive(job):
        return {"state": "running", "returncode": None, "error": None}
    rc_file = _exit_file(job)
    rc = int(rc_file.read_text()) if rc_file.is_file() else None
    tail = log_tail(job)
    error = next((line[len("error: "):] for line in reversed(tail.splitlines()) if line.startswith("error: ")), None)
    if rc in (130, -signal.SIGINT) or "interrupted:" in tail:
        state = "interrupted"
    elif rc == 0:
        state = "done"
    elif rc is None and error is None:
        state = "finished"  # started by another process: its exit status is unknown
    else:
        state, error = "failed", error or (tail.strip().splitlines() or ["no output"])[-1]
    return {"state": state, "returncode": rc, "error": error}


def load_job(store_path: Path, job_id: str) -> Job:
    """A job record by id (ids are generated, so anything else is refused rather than used as a path)."""
    path = jobs_dir(Path(store_path).resolve()) / f"{job_id}.json"
    if not job_id or "/" in job_id or ".." in job_id or not path.is_file():
        raise ValueError(f"no job {job_id!r} for this store")
    data = json.loads(path.read_text())
    return Job(**{**data, "argv": tuple(data["argv"])})


def list_jobs(store_path: Path, limit: int = 20) -> list[Job]:
    """The newest jobs started for this store."""
    folder = jobs_dir(Path(store_path).resolve())
    if not folder.is_dir():
        return []
    files = sorted(folder.glob("*.json"), reverse=True)[:limit]
    return [load_job(store_path, f.stem) for f in files]


def cancel_job(job: Job) -> None:
    """SIGINT to a job's process (a demo edit has no run row while it runs)."""
    if not _alive(job):
        raise ValueError(f"job {job.job_id} is not running")
    os.kill(job.pid, signal.SIGINT)


def cancel_run(store_path: Path, run_id: str) -> int:
    """Send SIGINT to the process of a running run (the CLI then marks it interrupted); returns the pid."""
    with Store.open(Path(store_path), readonly=True) as st:
        run = st.get_run(run_id)
    if run is None:
        raise ValueError(f"no run {run_id!r} in the store")
    if run["status"] != "running":
        raise ValueError(f"run {run_id} is {run['status']}, not running: nothing to cancel")
    if run.get("host") != socket.gethostname() or not run.get("pid"):
        raise ValueError(f"run {run_id} runs on {run.get('host')!r}, not on this machine: cancel it there")
    try:
        os.kill(int(run["pid"]), signal.SIGINT)
    except ProcessLookupError:
        mark_stale(store_path)
        raise ValueError(f"the process of run {run_id} has already ended; it is now marked interrupted") from None
    return int(run["pid"])


def wait_for(job: Job, timeout_s: float = 10.0) -> bool:
    """Wait until a job's process has ended (recording its exit status); True if it did in time."""
    end = time.monotonic() + timeout_s
    while _alive(job):
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


# ---- runs table ---------------------------------------------------------------------------------------


def runs_overview(store_path: Path, now: datetime | None = None, recent: int = 20) -> pl.DataFrame:
    """Queued and running runs plus the `recent` newest others, with progress and heartbeat age (uncached
    read-only read: this table is polled while runs write)."""
    with Store.open(Path(store_path), readonly=True) as st:
        runs = queries.list_runs(st.conn)
    return runs_table(runs, now or datetime.now(timezone.utc), recent)


def runs_table(runs: pl.DataFrame, now: datetime, recent: int = 20) -> pl.DataFrame:
    """The Launch page's table from list_runs: active runs first, then the newest finished ones."""
    cols = ["run_id", "kind", "editor", "status", "n_done", "n_total", "progress", "heartbeat_age_s", "pid",
            "host", "started_at", "error"]
    if runs.is_empty():
        return pl.DataFrame(schema={c: pl.String for c in cols})
    now_s = now.timestamp()
    active = pl.col("status").is_in(["queued", "running"])
    beat = pl.col("heartbeat_at").str.to_datetime(time_zone="UTC", strict=False)
    table = runs.with_columns(
        (pl.lit(now_s) - beat.dt.epoch("ms") / 1000).round(0).alias("heartbeat_age_s"),
        active.alias("_active"),
    )
    return pl.concat([table.filter(pl.col("_active")), table.filter(~pl.col("_active")).head(recent)]).select(
        [c for c in cols if c in table.columns]
    )

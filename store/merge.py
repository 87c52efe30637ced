"""Merging finished stores into one: `python -m compute store merge SHARD... --into STORE`.

A shard is any EditScope store: one written by an executor's unit, or another researcher's whole store.
Each shard is merged into the target in ONE transaction (all of it or none of it); a shard is only ever
read (opened read-only; an older schema is migrated in a temporary copy, never in place).

What a shard brings, per run (every table that has a `run_id` column belongs to its run: measurements,
generations, abilities, weight_drift, edit_diagnostics, run_events, correlations, found from the schema so
a table added later is not forgotten):

- a run the target lacks: copied whole, its runs row (provenance, config, hyperparameters, status, timings)
  as it is;
- a run the target has: the two copies must be the same computation: the same kind, model, editor,
  hparams, seed and config (a run extended to more edits changes its config's `max_edits`: that may differ
  unless each copy holds rows the other lacks), and every row both hold (same primary key) must hold the
  same values.
  Otherwise the shard is refused (MergeConflict) and nothing of it is written. Then:
  - the shard holds no row the target lacks: nothing changes (so merging a shard twice is a no-op);
  - the target holds no row the shard lacks (the target has no more of the run, e.g. it stopped earlier):
    the missing rows are added and the shard's runs row (status, progress, timings) and derived rows replace
    the target's (its correlations; its run_events kind by kind, log kinds such as `merged` and `plan_unit`
    added beside the target's): a partial run is taken over only this way;
  - each holds rows the other lacks (parts of one run computed apart): the shard's missing data rows are
    added, and the target keeps its runs row and derived rows (re-derive them with `store rederive`).
- a run the shard OWNS (`own`: a plan unit's shard for the runs it makes or continues, compute.plan): the
  shard is that run's one writer, so the target's copy is made the shard's: rows that differ take the shard's
  values and rows the shard lacks are removed, then it is taken over as above. A sequential run killed between
  two checkpoints resumes from the earlier one and computes its later edits again; the target may already hold
  the killed process's rows of them (merged as progress), which a recomputation need not match in the last
  digit (a matrix product's rounding can depend on where its operands lie in memory). The identity check
  (kind, model, editor, hparams, seed, config) still applies; the `merged` row counts what was replaced and
  gives the largest relative change of a replaced number (`largest_change`).
- cases, probes and the knowledge base: the shard's rows the target lacks are added. A case the target
  holds with other content (its `created_at` aside) or another probe set is a conflict; knowledge-base rows
  that differ keep the target's values and are counted in the report.

Every run that received rows gets a run_events row of kind `merged` (series: the shard's path; edit_count:
the run's n_done in the shard; value: rows added; detail: JSON with the shard, its run status, how the run
was merged, rows added per table and the time), so the target records where each run came from. Such rows
in a shard are carried along, so the history survives merges of merged stores.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

from .conventions import DERIVED_EVENT_KINDS, LOG_EVENT_KINDS
from .db import (ENCODED_VIEWS, Store, StoreError, _add_probes_left_out, _connect_readonly, _probes_left_out,
                 _read_header, _validate, encoded_key, settle_probes_left_out)
from .schema import latest_version

MERGED_KIND = LOG_EVENT_KINDS[0]  # "merged": this module's record of where a run's rows came from
LOG_KINDS = LOG_EVENT_KINDS  # a merge adds such rows beside the target's and never replaces them
IDENTITY_COLUMNS = ("kind", "model", "editor", "hparams", "seed", "config")
# config keys a run changes as it goes on: a sequential run extended to more edits records its new maximum
# (compute.experiments.sequential), and with it its spec's key (compute.runs.SPEC_KEY, which hashes the
# maximum). Two copies may differ there when one holds all the other does.
GROWING_CONFIG = ("max_edits", "spec_key")
DERIVED_TABLES = ("run_events", "correlations")  # recomputed from a run's rows: they follow its runs row
KB_TABLES = ("kb_relations", "kb_subjects", "kb_facts")
CASE_IGNORED = ("created_at",)  # when the case set was built, not what it is


class MergeConflict(StoreError):
    """A shard holds a run or case under an id the target uses for different content; nothing was written."""


@dataclass
class MergeReport:
    """What merging one shard did: runs by outcome, rows added per table, what differed and was kept."""

    shard: Path
    migrated_from: int | None = None  # the shard's schema version when an upgraded copy was read
    runs_new: list[str] = field(default_factory=list)
    runs_taken_over: list[str] = field(default_factory=list)  # the target had less of the run
    runs_joined: list[str] = field(default_factory=list)  # each held rows the other lacked
    runs_unchanged: list[str] = field(default_factory=list)
    runs_mirrored: list[str] = field(default_factory=list)  # owned runs whose target rows took the shard's
    rows_replaced: dict[str, int] = field(default_factory=dict)  # their target rows replaced or removed
    # per owned run: {"rows": replaced or removed per table, "largest_change": the largest relative change of a
    # number among them (table, column, key, target and shard values)}
    replaced_by_run: dict[str, dict] = field(default_factory=dict)
    rows_added: dict[str, int] = field(default_factory=dict)
    kb_rows_differing: int = 0

    def largest_change(self) -> float | None:
        """The largest relative change of a number among the rows owned runs replaced (None: none changed)."""
        found = [r["largest_change"]["relative"] for r in self.replaced_by_run.values() if "largest_change" in r]
        return max(found) if found else None

    @property
    def changed(self) -> bool:
        return any(self.rows_added.values())

    def summary(self) -> str:
        """One line for the command line."""
        parts = [f"{len(self.runs_new)} new run(s)"]
        if self.runs_taken_over:
            parts.append(f"{len(self.runs_taken_over)} completed from the shard ({', '.join(self.runs_taken_over)})")
        if self.runs_joined:
            parts.append(f"{len(self.runs_joined)} joined with the target's part ({', '.join(self.runs_joined)}; "
                         "their derived rows are the target's: `store rederive` updates them)")
        if self.runs_mirrored:
            parts.append(f"{len(self.runs_mirrored)} made the shard's copy (rows the shard recomputed or dropped: "
                         f"{', '.join(self.runs_mirrored)})")
        parts.append(f"{len(self.runs_unchanged)} already there")
        rows = ", ".join(f"{n} {table}" for table, n in sorted(self.rows_added.items()) if n)
        parts.append(f"rows added: {rows or 'none'}")
        if self.rows_replaced:
            parts.append("rows replaced or removed: " + ", ".join(
                f"{n} {table}" for table, n in sorted(self.rows_replaced.items()) if n))
            if self.largest_change() is not None:
                parts.append(f"largest relative change of a replaced number: {self.largest_change():.2g}")
        if self.kb_rows_differing:
            parts.append(f"{self.kb_rows_differing} knowledge-base row(s) differ (the target's kept)")
        migrated = f" (read from a copy upgraded from schema v{self.migrated_from})" if self.migrated_from else ""
        return f"{self.shard}{migrated}: " + "; ".join(parts)


def merge_stores(shards: Sequence[str | Path], into: str | Path, own: Iterable[str] = ()) -> list[MergeReport]:
    """Merge each shard into the store at `into` (created when missing), one transaction per shard; `own`: runs
    whose copy in the target is made the shard's (see the module docstring).

    Stops at the first shard that is refused (MergeConflict or StoreError): the shards before it stay merged,
    that one and the ones after it are not. Use `merge_shard` to go on past a refused shard.
    """
    with Store.open(into, create=True) as target:
        return [merge_shard(target, shard, own) for shard in shards]


def merge_shard(target: Store, shard_path: str | Path, own: Iterable[str] = ()) -> MergeReport:
    """Merge one shard store into the open, writable `target` in one transaction; see the module docstring."""
    shard_path = Path(shard_path).expanduser()
    if target.readonly:
        raise StoreError(f"{target.path} was opened read-only; open it writable to merge into it.")
    if shard_path.exists() and target.path.exists() and shard_path.resolve() == target.path.resolve():
        raise StoreError(f"{shard_path} is the target store itself; name another store to merge into it.")
    version = shard_version(shard_path)
    newest = latest_version()
    if version >= newest:  # a newer one is refused by Store.open with what to do
        with Store.open(shard_path, readonly=True) as shard:
            return _merge(target, shard, MergeReport(shard_path), set(own))
    with tempfile.TemporaryDirectory(prefix="editscope-merge-") as tmp:
        copy = Path(tmp) / "shard.sqlite"
        _copy_store(shard_path, copy)
        with Store.open(copy) as shard:  # migrates the copy; the shard file is never opened writable
            return _merge(target, shard, MergeReport(shard_path, migrated_from=version), set(own))


def shard_version(path: Path) -> int:
    """The schema version of the store at `path`, read without writing to it; StoreError when it is none."""
    header = _read_header(path)
    if header is None:
        raise StoreError(f"No store at {path}; check the shard's path.")
    if not header.startswith(b"SQLite format 3\x00"):
        raise StoreError(f"{path} is not an EditScope store (not a SQLite database); check the shard's path.")
    conn = _connect_readonly(path, header)
    try:
        return _validate(conn, path, allow_new=False)
    except sqlite3.DatabaseError as e:
        raise StoreError(f"{path} is not a readable SQLite database ({e}); it may be damaged.") from None
    finally:
        conn.close()


def _copy_store(path: Path, copy: Path) -> None:
    """A consistent copy of the store at `path` (committed WAL content included) through SQLite's backup."""
    source = _connect_readonly(path, _read_header(path) or b"")
    dest = sqlite3.connect(str(copy))
    try:
        source.backup(dest)
    finally:
        dest.close()
        source.close()


# ---- the merge ------------------------------------------------------------------------------------------


def run_tables(conn: sqlite3.Connection) -> list[tuple[str, list[str], list[str]]]:
    """Every table or view holding rows of a run (a `run_id` column; `runs` itself aside), in creation order,
    with its columns and its key columns."""
    out = []
    for name, kind in conn.execute(
        "SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%' "
        "AND name != 'runs' ORDER BY rowid"
    ):
        info = conn.execute("SELECT name, pk FROM pragma_table_info(?) ORDER BY cid", (name,)).fetchall()
        columns = [c for c, _ in info]
        if "run_id" not in columns:
            continue
        key = [c for c, pk in sorted(info, key=lambda r: r[1]) if pk > 0]
        if kind == "view" and name in ENCODED_VIEWS:
            key = encoded_key(name)
        if not key:
            raise StoreError(f"Table {name} holds rows of runs but has no primary key; store.merge cannot "
                             "match its rows (give it one in a migration).")
        out.append((name, columns, key))
    return out


def _q(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _select(conn: sqlite3.Connection, table: str, columns: list[str], where: str = "",
            params: tuple = ()) -> sqlite3.Cursor:
    # identifiers come from the target's own schema; values go through ? parameters
    return conn.execute(f"SELECT {', '.join(map(_q, columns))} FROM {_q(table)}{where}", params)


def _insert(conn: sqlite3.Connection, table: str, columns: list[str], rows: Iterable[tuple]) -> int:
    """Insert `rows` and return how many were given (a cursor's rowcount misses rows a view's trigger wrote)."""
    n = 0

    def counted():
        nonlocal n
        for row in rows:
            n += 1
            yield row

    conn.executemany(
        f"INSERT INTO {_q(table)} ({', '.join(map(_q, columns))}) VALUES ({', '.join('?' * len(columns))})",
        counted())
    return n


def _keyed(rows: Iterable[tuple], key_idx: list[int]) -> dict[tuple, tuple]:
    return {tuple(row[i] for i in key_idx): row for row in rows}


def _same_json(a: Any, b: Any) -> bool:
    """Equal values, JSON text compared as parsed (key order and spacing aside)."""
    if a == b:
        return True
    if isinstance(a, str) and isinstance(b, str):
        try:
            return json.loads(a) == json.loads(b)
        except ValueError:
            return False
    return False


def _same_config(a: Any, b: Any) -> bool:
    """Equal run configs, the keys a run changes as it goes on (GROWING_CONFIG) aside."""
    if _same_json(a, b):
        return True
    try:
        a, b = json.loads(a), json.loads(b)
    except (TypeError, ValueError):
        return False
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return False
    return ({k: v for k, v in a.items() if k not in GROWING_CONFIG}
            == {k: v for k, v in b.items() if k not in GROWING_CONFIG})


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _merge(target: Store, shard: Store, report: MergeReport, own: set[str] = frozenset()) -> MergeReport:
    tconn, sconn = target.conn, shard.conn
    tables = run_tables(tconn)
    shard_tables = {name for name, _, _ in run_tables(sconn)}
    if missing := [name for name, _, _ in tables if name not in shard_tables]:
        raise StoreError(f"{report.shard} lacks the table(s) {missing} of schema v{target.schema_version}; "
                         "it is damaged or not an EditScope store.")
    run_cols = [c for (c,) in tconn.execute("SELECT name FROM pragma_table_info('runs') ORDER BY cid")]
    added = report.rows_added
    tconn.execute("BEGIN IMMEDIATE")
    try:
        _merge_kb(tconn, sconn, report)
        _merge_cases(tconn, sconn, report)
        for shard_run in _select(sconn, "runs", run_cols, " ORDER BY started_at, run_id").fetchall():
            run = dict(zip(run_cols, shard_run))
            run_id = run["run_id"]
            row = _select(tconn, "runs", run_cols, " WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                added["runs"] = added.get("runs", 0) + _insert(tconn, "runs", run_cols, [shard_run])
                per_table = _copy_run(tconn, sconn, run_id, tables)
                report.runs_new.append(run_id)
                how = "new"
            else:
                per_table, how = _merge_run(tconn, sconn, run, dict(zip(run_cols, row)), run_cols, tables,
                                            report, owned=run_id in own)
            for table, n in per_table.items():
                added[table] = added.get(table, 0) + n
            if how != "unchanged":
                _record_merge(tconn, report, run, how, per_table)
    except BaseException:
        tconn.rollback()
        raise
    tconn.commit()
    return report


def _copy_run(tconn, sconn, run_id: str, tables) -> dict[str, int]:
    """Every row of a run the target lacks, table by table (streamed: a run may hold millions of rows)."""
    counts = {}
    for table, columns, _ in tables:
        rows = _select(sconn, table, columns, " WHERE run_id = ?", (run_id,))
        counts[table] = _insert(tconn, table, columns, rows)
    return counts


def _delete_rows(tconn, table: str, key: list[str], keys: list[tuple]) -> None:
    """Delete the target's rows of `table` with these key values (an encoded view: in its table of encoded names)."""
    if table in ENCODED_VIEWS:
        values, columns = ENCODED_VIEWS[table]
        name = "(SELECT id FROM measurement_names WHERE name = ?)"
        where = [f"{columns[c][0]} = {name if columns[c][1] else '?'}" for c in key]
        tconn.executemany(f"DELETE FROM {values} WHERE {' AND '.join(where)}", keys)
        return
    tconn.executemany(f"DELETE FROM {_q(table)} WHERE {' AND '.join(f'{_q(c)} IS ?' for c in key)}", keys)


def _largest_change(columns: list[str], ours: tuple, theirs: tuple) -> tuple[float, str, Any, Any] | None:
    """(relative change, column, target's value, shard's value) of the row's number that changed most, relative to
    the larger magnitude; 1.0 for a text that changed, None when no number or text differs."""
    out = None
    for c, a, b in zip(columns, ours, theirs):
        if a == b or (isinstance(a, float) and isinstance(b, float) and a != a and b != b):  # NaN and NaN agree
            continue
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            scale = max(abs(a), abs(b))
            rel = abs(a - b) / scale if scale and scale == scale else float("inf")
        else:
            rel = 1.0
        if rel == rel and (out is None or rel > out[0]):
            out = (float(rel), c, a, b)
    return out


def _merge_run(tconn, sconn, run: dict, mine: dict, run_cols, tables, report, owned: bool = False
               ) -> tuple[dict[str, int], str]:
    """A run both stores hold: refuse different content, else add what the target lacks (see the module
    docstring for which runs row and derived rows are kept); a run the shard owns is made the shard's copy."""
    run_id = run["run_id"]
    differ = [c for c in IDENTITY_COLUMNS
              if not (_same_config(run[c], mine[c]) if c == "config" else _same_json(run[c], mine[c]))]
    if differ:
        detail = "; ".join(f"{c}: {mine[c]!r} in the target, {run[c]!r} in the shard" for c in differ)
        raise MergeConflict(f"{report.shard}: run {run_id} is also in the target with other settings ({detail}); "
                            f"nothing of this shard was written. One run id must name one computation: keep the "
                            "two in separate stores, or remove the run from one of them.")
    missing: dict[str, list[tuple]] = {}
    replaced: dict[str, int] = {}  # an owned run: the target's rows replaced or removed, per table
    largest: dict = {}  # ... and the largest relative change of a number among the rows replaced
    target_has_more = False
    for table, columns, key in tables:
        if table in DERIVED_TABLES:
            continue
        key_idx = [columns.index(c) for c in key]
        theirs = _keyed(_select(sconn, table, columns, " WHERE run_id = ?", (run_id,)), key_idx)
        ours = _keyed(_select(tconn, table, columns, " WHERE run_id = ?", (run_id,)), key_idx)
        changed = [k for k in theirs.keys() & ours.keys() if theirs[k] != ours[k]]
        # A measured duration is not a result: a resumed run that redid an edit timed it again. Such rows take the
        # shard's (later) value instead of refusing the shard; every other value must agree.
        retimed = [k for k in changed if table == "measurements"
                   and str(theirs[k][columns.index("metric")]).endswith("seconds")]
        changed = [k for k in changed if k not in set(retimed)]
        if owned:  # the shard is the run's one writer: what it recomputed replaces, what it dropped goes
            dropped = list(ours.keys() - theirs.keys())
            if changed or dropped:
                _delete_rows(tconn, table, key, changed + dropped)
                replaced[table] = len(changed) + len(dropped)
                for k in changed:  # how far the shard's values are from the ones they replace, on record
                    change = _largest_change(columns, ours[k], theirs[k])
                    if change and change[0] > largest.get("relative", -1.0):
                        largest.update(relative=change[0], table=table, column=change[1], key=dict(zip(key, k)),
                                       target=change[2], shard=change[3])
            missing[table] = [theirs[k] for k in theirs.keys() - ours.keys()] + [theirs[k]
                                                                                 for k in retimed + changed]
            continue
        if changed:
            k = sorted(changed, key=repr)[0]
            diff = {c: (a, b) for c, a, b in zip(columns, ours[k], theirs[k]) if a != b}
            raise MergeConflict(
                f"{report.shard}: run {run_id} holds {len(changed)} {table} row(s) that differ from the target's, "
                f"e.g. {dict(zip(key, k))}: " + ", ".join(f"{c} {a!r} in the target, {b!r} in the shard"
                                                           for c, (a, b) in diff.items())
                + "; nothing of this shard was written. The two copies are different computations under one run "
                  "id (e.g. a run recomputed on another machine or after a change of numerics): keep them in "
                  f"separate stores, or remove the run from one of them (`python -m compute --store TARGET store "
                  f"delete {run_id}`) and merge again.")
        missing[table] = [theirs[k] for k in theirs.keys() - ours.keys()] + [theirs[k] for k in retimed]
        target_has_more = target_has_more or bool(ours.keys() - theirs.keys())
    if not any(missing.values()) and not replaced:
        report.runs_unchanged.append(run_id)
        return {}, "unchanged"
    counts = {table: _insert(tconn, table, next(c for t, c, _ in tables if t == table), rows)
              for table, rows in missing.items() if rows}
    if target_has_more:
        if not _same_json(run["config"], mine["config"]):
            raise MergeConflict(
                f"{report.shard}: run {run_id} has grown apart: the target and the shard each hold rows the other "
                f"lacks and their configs differ ({mine['config']!r} in the target, {run['config']!r} in the shard); "
                "nothing of this shard was written. Keep the two copies in separate stores.")
        report.runs_joined.append(run_id)
        return counts, "joined"
    # the target had no more of the run than the shard: the shard's runs row and derived rows replace its own
    tconn.execute(f"UPDATE runs SET {', '.join(f'{_q(c)} = ?' for c in run_cols if c != 'run_id')} "
                  "WHERE run_id = ?", [run[c] for c in run_cols if c != "run_id"] + [run_id])
    for table, columns, _ in tables:
        if table == "correlations":
            tconn.execute("DELETE FROM correlations WHERE run_id = ?", (run_id,))
            counts[table] = _insert(tconn, table, columns, _select(sconn, table, columns, " WHERE run_id = ?",
                                                                   (run_id,)))
        elif table == "run_events":
            counts[table] = _take_events(tconn, sconn, run_id, columns)
    if replaced:
        report.runs_mirrored.append(run_id)
        for table, n in replaced.items():
            report.rows_replaced[table] = report.rows_replaced.get(table, 0) + n
        report.replaced_by_run[run_id] = {"rows": replaced, **({"largest_change": largest} if largest else {})}
        return counts, "made the shard's copy"
    report.runs_taken_over.append(run_id)
    return counts, "taken over"


def _take_events(tconn, sconn, run_id: str, columns: list[str]) -> int:
    """The shard's events of a run taken over: each kind the shard holds replaces the target's rows of that kind
    (events are re-derived from a run's whole history), except log kinds, whose rows are added beside the
    target's; a verdict kind (DERIVED_EVENT_KINDS) the shard no longer holds is deleted from the target (a
    disabling edit found early in a run and dropped when its distribution grew); other kinds only the target
    holds stay. Returns the rows written."""
    kind = columns.index("kind")
    by_kind: dict[str, list[tuple]] = {}
    for row in _select(sconn, "run_events", columns, " WHERE run_id = ?", (run_id,)):
        by_kind.setdefault(row[kind], []).append(row)
    n = 0
    for name in DERIVED_EVENT_KINDS:  # the shard derived them from the whole run: a kind it no longer has is gone
        if name not in by_kind:
            tconn.execute("DELETE FROM run_events WHERE run_id = ? AND kind = ?", (run_id, name))
    for name, rows in sorted(by_kind.items()):
        if name in LOG_KINDS:
            cur = tconn.executemany(f"INSERT OR IGNORE INTO run_events ({', '.join(map(_q, columns))}) "
                                    f"VALUES ({', '.join('?' * len(columns))})", rows)
            n += max(cur.rowcount, 0)
            continue
        tconn.execute("DELETE FROM run_events WHERE run_id = ? AND kind = ?", (run_id, name))
        n += _insert(tconn, "run_events", columns, rows)
    return n


def _record_merge(tconn, report: MergeReport, run: dict, how: str, per_table: dict[str, int]) -> None:
    """The run_events row saying which shard the run's rows came from (see the module docstring)."""
    detail = {"shard": str(report.shard.resolve()), "shard_status": run["status"], "how": how,
              "rows_added": {t: n for t, n in sorted(per_table.items()) if n}, "merged_at": _now()}
    if run["run_id"] in report.replaced_by_run:  # an owned run: the target's rows the shard replaced or dropped
        mirrored = report.replaced_by_run[run["run_id"]]
        detail["rows_replaced"] = dict(sorted(mirrored["rows"].items()))
        if "largest_change" in mirrored:
            detail["largest_change"] = mirrored["largest_change"]
    if report.migrated_from:
        detail["shard_schema"] = report.migrated_from
    tconn.execute(
        "INSERT INTO run_events (run_id, kind, series, edit_count, end_count, value, detail) "
        "VALUES (?, ?, ?, ?, NULL, ?, ?) ON CONFLICT (run_id, kind, series, edit_count) DO UPDATE SET "
        "value = excluded.value, detail = excluded.detail",
        (run["run_id"], MERGED_KIND, str(report.shard.resolve()), run["n_done"] or 0, sum(per_table.values()),
         json.dumps(detail, sort_keys=True)))


def _columns(conn: sqlite3.Connection, table: str) -> tuple[list[str], list[str]]:
    info = conn.execute("SELECT name, pk FROM pragma_table_info(?) ORDER BY cid", (table,)).fetchall()
    return [c for c, _ in info], [c for c, pk in sorted(info, key=lambda r: r[1]) if pk > 0]


def _merge_kb(tconn, sconn, report: MergeReport) -> None:
    """Knowledge-base rows the target lacks are added; rows that differ keep the target's values."""
    for table in KB_TABLES:
        columns, key = _columns(tconn, table)
        key_idx = [columns.index(c) for c in key]
        ours = _keyed(_select(tconn, table, columns), key_idx)
        new = []
        for k, row in _keyed(_select(sconn, table, columns), key_idx).items():
            if k not in ours:
                new.append(row)
            elif ours[k] != row:
                report.kb_rows_differing += 1
        if new:
            report.rows_added[table] = _insert(tconn, table, columns, new)


def _merge_cases(tconn, sconn, report: MergeReport) -> None:
    """Cases and their probes the target lacks are added; a case held with other content is a conflict."""
    columns, key = _columns(tconn, "cases")
    compared = [i for i, c in enumerate(columns) if c not in CASE_IGNORED]
    ours = _keyed(_select(tconn, "cases", columns), [columns.index(c) for c in key])
    pcols, _ = _columns(tconn, "probes")
    their_probes, our_probes = _probes(sconn, pcols), _probes(tconn, pcols)
    # probe types a store left out (Store.leave_out_unread_probes) are compared only where both kept them; the
    # target gains the ones the shard kept, and keeps the record of those neither has
    t_left, s_left = _probes_left_out(tconn), _probes_left_out(sconn)
    rtype, cset = pcols.index("rephrase_type"), columns.index("case_set")
    restored, new_cases = [], []
    for k, row in _keyed(_select(sconn, "cases", columns), [columns.index(c) for c in key]).items():
        if k not in ours:
            new_cases.append(row)
            continue
        ours_out, theirs_out = set(t_left.get(row[cset], ())), set(s_left.get(row[cset], ()))
        restored += [p for p in their_probes.get(k[0], []) if p[rtype] in ours_out - theirs_out]
        their_probes[k[0]] = [p for p in their_probes.get(k[0], []) if p[rtype] not in ours_out | theirs_out]
        our_probes[k[0]] = [p for p in our_probes.get(k[0], []) if p[rtype] not in ours_out | theirs_out]
        differ = [columns[i] for i in compared if ours[k][i] != row[i]]
        if differ:
            raise MergeConflict(
                f"{report.shard}: case {k[0]} is also in the target with other content ({', '.join(differ)} "
                "differ); nothing of this shard was written. Runs measured on different cases under one id "
                "cannot share a store: keep them in separate stores.")
        if their_probes.get(k[0], []) != our_probes.get(k[0], []):
            raise MergeConflict(
                f"{report.shard}: case {k[0]} has other probes in the target (its wording was rebuilt); nothing of "
                "this shard was written. Measurements on different probe texts cannot share a case id: keep the "
                "two stores apart.")
    if new_cases:
        report.rows_added["cases"] = _insert(tconn, "cases", columns, new_cases)
        report.rows_added["probes"] = _insert(tconn, "probes", pcols, (
            row for case in new_cases for row in their_probes.get(case[columns.index("case_id")], [])))
        _add_probes_left_out(tconn, {s: t for s, t in s_left.items() if s in {c[cset] for c in new_cases}})
    if restored:
        report.rows_added["probes"] = report.rows_added.get("probes", 0) + _insert(tconn, "probes", pcols, restored)
    if restored or new_cases:
        settle_probes_left_out(tconn)


def _probes(conn, pcols: list[str]) -> dict[str, list[tuple]]:
    """Every case's probe rows, in probe order."""
    out: dict[str, list[tuple]] = {}
    for row in _select(conn, "probes", pcols, " ORDER BY case_id, probe_id"):
        out.setdefault(row[pcols.index("case_id")], []).append(row)
    return out

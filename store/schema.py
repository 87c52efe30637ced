"""Schema of the EditScope results store, as an ordered list of migrations recorded in the database.

Each migration is applied once, inside its own transaction, and leaves a row in the `migrations` table
plus the new number in `meta('schema_version')`. A store written by older code is brought up to date by
applying only the migrations it lacks. To change the schema, append one `Migration` to `MIGRATIONS`
(never edit one that has shipped): SQL text for plain DDL, or a function of the connection when rows
have to be rewritten. The function runs inside the migration's transaction and must not commit.

Version 1 is the store contract shared by compute and dashboard (see README, "The store"), with two additions that only make the
contract stricter: primary-key columns are NOT NULL (SQLite would otherwise let NULL keys through and
an upsert could no longer find the row it replaces), and `edit_count` defaults to 0 wherever it appears.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Sequence

APPLICATION = "editscope"

SCHEMA_V1 = """
CREATE TABLE meta (
    key TEXT PRIMARY KEY NOT NULL,
    value TEXT
);
INSERT INTO meta (key, value) VALUES ('application', 'editscope');

CREATE TABLE migrations (
    version INTEGER PRIMARY KEY,
    name TEXT,
    applied_at TEXT
);

CREATE TABLE runs (
    run_id TEXT PRIMARY KEY NOT NULL,
    kind TEXT NOT NULL,
    model TEXT NOT NULL,
    editor TEXT,
    hparams TEXT,
    seed INTEGER,
    config TEXT,
    code_version TEXT,
    packages TEXT,
    host TEXT,
    device TEXT,
    status TEXT NOT NULL
        CHECK (status IN ('queued', 'running', 'done', 'failed', 'interrupted', 'cancelled')),
    error TEXT,
    started_at TEXT,
    finished_at TEXT,
    heartbeat_at TEXT,
    pid INTEGER,
    n_total INTEGER,
    n_done INTEGER,
    timings TEXT
);
CREATE INDEX runs_kind ON runs (kind, started_at);

CREATE TABLE kb_relations (
    relation TEXT PRIMARY KEY NOT NULL,
    subject_kind TEXT,
    description TEXT,
    templates TEXT
);

CREATE TABLE kb_subjects (
    subject TEXT PRIMARY KEY NOT NULL,
    kind TEXT,
    aliases TEXT,
    frequency REAL,
    connection INTEGER,
    population INTEGER
);

CREATE TABLE kb_facts (
    relation TEXT NOT NULL,
    subject TEXT NOT NULL,
    object TEXT NOT NULL,
    object_aliases TEXT,
    cooccurrence INTEGER,
    PRIMARY KEY (relation, subject, object)
);
CREATE INDEX kb_facts_subject ON kb_facts (subject);

CREATE TABLE cases (
    case_id TEXT PRIMARY KEY NOT NULL,
    case_set TEXT NOT NULL,
    source TEXT NOT NULL,
    relation TEXT,
    subject TEXT NOT NULL,
    prompt TEXT NOT NULL,
    true_object TEXT NOT NULL,
    true_aliases TEXT,
    new_object TEXT NOT NULL,
    new_aliases TEXT,
    frequency REAL,
    connection INTEGER,
    cooccurrence INTEGER,
    population INTEGER,
    popularity_quartile INTEGER,
    seed INTEGER,
    created_at TEXT
);
CREATE INDEX cases_case_set ON cases (case_set);
CREATE INDEX cases_relation ON cases (relation);

-- the primary key (case_id, probe_id) already serves lookups by case_id
CREATE TABLE probes (
    case_id TEXT NOT NULL REFERENCES cases (case_id) ON DELETE CASCADE,
    probe_id INTEGER NOT NULL,
    rephrase_type TEXT NOT NULL,
    text TEXT NOT NULL,
    target_true TEXT NOT NULL,
    target_new TEXT NOT NULL,
    needs_answer INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (case_id, probe_id)
);

CREATE TABLE measurements (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    case_id TEXT NOT NULL,
    edit_count INTEGER NOT NULL DEFAULT 0,
    rephrase_type TEXT NOT NULL,
    metric TEXT NOT NULL,
    value REAL,
    PRIMARY KEY (run_id, case_id, edit_count, rephrase_type, metric)
) WITHOUT ROWID;
CREATE INDEX measurements_run_metric ON measurements (run_id, metric);
CREATE INDEX measurements_case ON measurements (case_id);

CREATE TABLE generations (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    case_id TEXT NOT NULL,
    edit_count INTEGER NOT NULL DEFAULT 0,
    rephrase_type TEXT,
    probe_id INTEGER NOT NULL,
    phase TEXT NOT NULL,
    text TEXT,
    PRIMARY KEY (run_id, case_id, edit_count, probe_id, phase)
);

CREATE TABLE abilities (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    edit_count INTEGER NOT NULL DEFAULT 0,
    batch_size INTEGER NOT NULL,
    task TEXT NOT NULL,
    task_version TEXT,
    mode TEXT NOT NULL,
    score REAL,
    n INTEGER,
    ci_low REAL,
    ci_high REAL,
    PRIMARY KEY (run_id, edit_count, batch_size, task, mode)
);

CREATE TABLE weight_drift (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    edit_count INTEGER NOT NULL DEFAULT 0,
    module TEXT NOT NULL,
    fro_delta REAL,
    rel_change REAL,
    cond_number REAL,
    PRIMARY KEY (run_id, edit_count, module)
);
"""


@dataclass(frozen=True)
class Migration:
    """One step of the schema: `apply` is SQL text (one or more statements) or a function of the
    connection that runs inside the migration's transaction and must not commit."""

    version: int
    name: str
    apply: str | Callable[[sqlite3.Connection], None]


# Events a run finds in its own measurements (study B): the online collapse that stops a sequential run,
# the gradual and catastrophic phases from a change point on a series, and single "disabling" edits.
# `series` names the metric the event was found on ('' when none); `detail` is JSON (slopes, thresholds).
SCHEMA_V2 = """
CREATE TABLE run_events (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    series TEXT NOT NULL DEFAULT '',
    edit_count INTEGER NOT NULL,
    end_count INTEGER,
    value REAL,
    detail TEXT,
    PRIMARY KEY (run_id, kind, series, edit_count)
);
"""

# Spearman correlations of popularity features with a run's per-case values, computed once when a run is
# done (bootstrap CIs are too slow to recompute on every page view of a large store). `relation` '' means
# all relations. store.derived reads them, and computes live what is not stored.
SCHEMA_V3 = """
CREATE TABLE correlations (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    rephrase_type TEXT NOT NULL,
    metric TEXT NOT NULL,
    feature TEXT NOT NULL,
    relation TEXT NOT NULL DEFAULT '',
    rho REAL,
    ci_low REAL,
    ci_high REAL,
    n INTEGER,
    n_boot INTEGER,
    seed INTEGER,
    computed_at TEXT,
    PRIMARY KEY (run_id, rephrase_type, metric, feature, relation)
);
"""

# What each ability score is, stored with it so the dashboard needs no task code (and no torch): the task's
# category in our words, the study-C category it stands for ('own' if none), its metric, chance level
# (model-dependent for perplexity) and direction.
SCHEMA_V4 = """
ALTER TABLE abilities ADD COLUMN category TEXT;
ALTER TABLE abilities ADD COLUMN study_c TEXT;
ALTER TABLE abilities ADD COLUMN metric TEXT;
ALTER TABLE abilities ADD COLUMN chance REAL;
ALTER TABLE abilities ADD COLUMN higher_is_better INTEGER;
"""

# The shipped store must stay small: each secondary index of the WITHOUT ROWID measurements table repeats
# the whole primary key (a third of the file). Run queries use the primary key's (run_id, case_id, ...)
# prefix; a lookup by case scans the table (about 0.1 s per million rows).
SCHEMA_V5 = """
DROP INDEX IF EXISTS measurements_run_metric;
DROP INDEX IF EXISTS measurements_case;
"""

# Measurements dictionary-encoded: the shipped store holds hundreds of thousands of measurement rows, and
# repeating each row's run id, case id, rephrase type and metric as text made them about 100 bytes each
# (most of the file). The rows now live in `measurement_values` with small integer keys into
# `measurement_names` (about 25 bytes a row); `measurements` is a view with the old columns, so every
# query reads it as before, and INSTEAD OF triggers let SQL insert, update and delete through it.
# Store.write_measurements writes through the view too. Deleting a run deletes its rows (trigger).
SCHEMA_V6 = """
CREATE TABLE measurement_names (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
INSERT OR IGNORE INTO measurement_names (name) SELECT DISTINCT run_id FROM measurements;
INSERT OR IGNORE INTO measurement_names (name) SELECT DISTINCT rephrase_type FROM measurements;
INSERT OR IGNORE INTO measurement_names (name) SELECT DISTINCT metric FROM measurements;
INSERT OR IGNORE INTO measurement_names (name) SELECT DISTINCT case_id FROM measurements;

CREATE TABLE measurement_values (
    run INTEGER NOT NULL,
    case_key INTEGER NOT NULL,
    edit_count INTEGER NOT NULL DEFAULT 0,
    rephrase_key INTEGER NOT NULL,
    metric_key INTEGER NOT NULL,
    value REAL,
    PRIMARY KEY (run, case_key, edit_count, rephrase_key, metric_key)
) WITHOUT ROWID;
INSERT INTO measurement_values
SELECT r.id, c.id, m.edit_count, t.id, k.id, m.value
FROM measurements AS m
JOIN measurement_names AS r ON r.name = m.run_id
JOIN measurement_names AS c ON c.name = m.case_id
JOIN measurement_names AS t ON t.name = m.rephrase_type
JOIN measurement_names AS k ON k.name = m.metric;
DROP TABLE measurements;

CREATE VIEW measurements AS
SELECT r.name AS run_id, c.name AS case_id, v.edit_count AS edit_count, t.name AS rephrase_type,
       k.name AS metric, v.value AS value
FROM measurement_values AS v
JOIN measurement_names AS r ON r.id = v.run
JOIN measurement_names AS c ON c.id = v.case_key
JOIN measurement_names AS t ON t.id = v.rephrase_key
JOIN measurement_names AS k ON k.id = v.metric_key;

CREATE TRIGGER measurements_insert INSTEAD OF INSERT ON measurements
BEGIN
    SELECT RAISE(ABORT, 'FOREIGN KEY constraint failed: a measurement names a run that is not in runs')
    WHERE NOT EXISTS (SELECT 1 FROM runs WHERE run_id = NEW.run_id);
    INSERT OR IGNORE INTO measurement_names (name) VALUES (NEW.run_id);
    INSERT OR IGNORE INTO measurement_names (name) VALUES (NEW.case_id);
    INSERT OR IGNORE INTO measurement_names (name) VALUES (NEW.rephrase_type);
    INSERT OR IGNORE INTO measurement_names (name) VALUES (NEW.metric);
    INSERT OR REPLACE INTO measurement_values VALUES (
        (SELECT id FROM measurement_names WHERE name = NEW.run_id),
        (SELECT id FROM measurement_names WHERE name = NEW.case_id),
        coalesce(NEW.edit_count, 0),
        (SELECT id FROM measurement_names WHERE name = NEW.rephrase_type),
        (SELECT id FROM measurement_names WHERE name = NEW.metric),
        NEW.value);
END;

CREATE TRIGGER measurements_delete INSTEAD OF DELETE ON measurements
BEGIN
    DELETE FROM measurement_values
    WHERE run = (SELECT id FROM measurement_names WHERE name = OLD.run_id)
      AND case_key = (SELECT id FROM measurement_names WHERE name = OLD.case_id)
      AND edit_count = OLD.edit_count
      AND rephrase_key = (SELECT id FROM measurement_names WHERE name = OLD.rephrase_type)
      AND metric_key = (SELECT id FROM measurement_names WHERE name = OLD.metric);
END;

CREATE TRIGGER measurements_update INSTEAD OF UPDATE ON measurements
BEGIN
    DELETE FROM measurements
    WHERE run_id = OLD.run_id AND case_id = OLD.case_id AND edit_count = OLD.edit_count
      AND rephrase_type = OLD.rephrase_type AND metric = OLD.metric;
    INSERT INTO measurements (run_id, case_id, edit_count, rephrase_type, metric, value)
    VALUES (NEW.run_id, NEW.case_id, NEW.edit_count, NEW.rephrase_type, NEW.metric, NEW.value);
END;

CREATE TRIGGER runs_delete_measurements AFTER DELETE ON runs
BEGIN
    DELETE FROM measurement_values WHERE run = (SELECT id FROM measurement_names WHERE name = OLD.run_id);
END;
"""

# Per-edit diagnostics (every edit of every run): what each edit did to the weights and how its optimisation
# went. `edit_count` is the run's edit count after the edit (robustness: 1; sequential: n; batch: the batch
# size); `case_id` the request ('*' for the matrices of a batch update); `target` the edited matrix for per-matrix
# values (update_norm, update_rel), the probe for delivered fractions ('plain', 'paraphrase:1', ...), '' else.
# Names and meanings: compute.editors.diagnostics.
SCHEMA_V7 = """
CREATE TABLE edit_diagnostics (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    edit_count INTEGER NOT NULL,
    case_id TEXT NOT NULL,
    target TEXT NOT NULL DEFAULT '',
    name TEXT NOT NULL,
    value REAL,
    PRIMARY KEY (run_id, edit_count, case_id, target, name)
) WITHOUT ROWID;
"""

# Per-edit diagnostics dictionary-encoded as measurements are since v6: every edit of every run writes a dozen
# rows, and repeating run id, case id, matrix and diagnostic name as text made them about 100 bytes each (the
# rebuild's snapshot held 129 thousand of them, 12.9 MB). The rows now live in `edit_diagnostic_values` with keys
# into the same `measurement_names` dictionary (about 25 bytes a row); `edit_diagnostics` is a view with the old
# columns and INSTEAD OF triggers (an insert replaces a row with the same key, as the table's upsert did; a row
# that names no target gets ''); deleting a run deletes its rows (trigger, where the table had a cascade).
SCHEMA_V8 = """
INSERT OR IGNORE INTO measurement_names (name) SELECT DISTINCT run_id FROM edit_diagnostics;
INSERT OR IGNORE INTO measurement_names (name) SELECT DISTINCT case_id FROM edit_diagnostics;
INSERT OR IGNORE INTO measurement_names (name) SELECT DISTINCT target FROM edit_diagnostics;
INSERT OR IGNORE INTO measurement_names (name) SELECT DISTINCT name FROM edit_diagnostics;

CREATE TABLE edit_diagnostic_values (
    run INTEGER NOT NULL,
    edit_count INTEGER NOT NULL,
    case_key INTEGER NOT NULL,
    target_key INTEGER NOT NULL,
    name_key INTEGER NOT NULL,
    value REAL,
    PRIMARY KEY (run, edit_count, case_key, target_key, name_key)
) WITHOUT ROWID;
INSERT INTO edit_diagnostic_values
SELECT r.id, d.edit_count, c.id, t.id, k.id, d.value
FROM edit_diagnostics AS d
JOIN measurement_names AS r ON r.name = d.run_id
JOIN measurement_names AS c ON c.name = d.case_id
JOIN measurement_names AS t ON t.name = d.target
JOIN measurement_names AS k ON k.name = d.name;
DROP TABLE edit_diagnostics;

CREATE VIEW edit_diagnostics AS
SELECT r.name AS run_id, v.edit_count AS edit_count, c.name AS case_id, t.name AS target, k.name AS name,
       v.value AS value
FROM edit_diagnostic_values AS v
JOIN measurement_names AS r ON r.id = v.run
JOIN measurement_names AS c ON c.id = v.case_key
JOIN measurement_names AS t ON t.id = v.target_key
JOIN measurement_names AS k ON k.id = v.name_key;

CREATE TRIGGER edit_diagnostics_insert INSTEAD OF INSERT ON edit_diagnostics
BEGIN
    SELECT RAISE(ABORT, 'FOREIGN KEY constraint failed: an edit diagnostic names a run that is not in runs')
    WHERE NOT EXISTS (SELECT 1 FROM runs WHERE run_id = NEW.run_id);
    SELECT RAISE(ABORT, 'NOT NULL constraint failed: edit_diagnostics needs edit_count, case_id and name')
    WHERE NEW.edit_count IS NULL OR NEW.case_id IS NULL OR NEW.name IS NULL;
    INSERT OR IGNORE INTO measurement_names (name) VALUES (NEW.run_id);
    INSERT OR IGNORE INTO measurement_names (name) VALUES (NEW.case_id);
    INSERT OR IGNORE INTO measurement_names (name) VALUES (coalesce(NEW.target, ''));
    INSERT OR IGNORE INTO measurement_names (name) VALUES (NEW.name);
    INSERT OR REPLACE INTO edit_diagnostic_values VALUES (
        (SELECT id FROM measurement_names WHERE name = NEW.run_id),
        NEW.edit_count,
        (SELECT id FROM measurement_names WHERE name = NEW.case_id),
        (SELECT id FROM measurement_names WHERE name = coalesce(NEW.target, '')),
        (SELECT id FROM measurement_names WHERE name = NEW.name),
        NEW.value);
END;

CREATE TRIGGER edit_diagnostics_delete INSTEAD OF DELETE ON edit_diagnostics
BEGIN
    DELETE FROM edit_diagnostic_values
    WHERE run = (SELECT id FROM measurement_names WHERE name = OLD.run_id)
      AND edit_count = OLD.edit_count
      AND case_key = (SELECT id FROM measurement_names WHERE name = OLD.case_id)
      AND target_key = (SELECT id FROM measurement_names WHERE name = OLD.target)
      AND name_key = (SELECT id FROM measurement_names WHERE name = OLD.name);
END;

CREATE TRIGGER edit_diagnostics_update INSTEAD OF UPDATE ON edit_diagnostics
BEGIN
    DELETE FROM edit_diagnostics
    WHERE run_id = OLD.run_id AND edit_count = OLD.edit_count AND case_id = OLD.case_id
      AND target = OLD.target AND name = OLD.name;
    INSERT INTO edit_diagnostics (run_id, edit_count, case_id, target, name, value)
    VALUES (NEW.run_id, NEW.edit_count, NEW.case_id, NEW.target, NEW.name, NEW.value);
END;

CREATE TRIGGER runs_delete_edit_diagnostics AFTER DELETE ON runs
BEGIN
    DELETE FROM edit_diagnostic_values
    WHERE run = (SELECT id FROM measurement_names WHERE name = OLD.run_id);
END;
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema", SCHEMA_V1),
    Migration(2, "run events: collapse, phases, disabling edits", SCHEMA_V2),
    Migration(3, "stored popularity correlations", SCHEMA_V3),
    Migration(4, "ability task metadata beside each score", SCHEMA_V4),
    Migration(5, "drop the secondary measurement indexes (the primary key serves)", SCHEMA_V5),
    Migration(6, "measurements dictionary-encoded behind a view of the same name", SCHEMA_V6),
    Migration(7, "per-edit diagnostics: update norms, clamp, steps, convergence, delivered fraction", SCHEMA_V7),
    Migration(8, "per-edit diagnostics dictionary-encoded behind a view of the same name", SCHEMA_V8),
)


def latest_version(migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """The schema version a store has once every migration in `migrations` is applied."""
    check_migrations(migrations)
    return migrations[-1].version


def check_migrations(migrations: Sequence[Migration]) -> None:
    """Raise ValueError unless the versions run 1, 2, 3, ... without gaps or repeats."""
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(
            f"Migration versions must be 1, 2, 3, ... in order; got {versions}. "
            "Append new migrations with the next number instead of editing or reordering old ones."
        )


def schema_version(conn: sqlite3.Connection) -> int:
    """The version recorded in meta('schema_version'); 0 for a database without EditScope tables."""
    has_meta = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone()
    if not has_meta:
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None or row[0] is None:
        return 0
    try:
        return int(row[0])
    except ValueError:
        raise ValueError(
            f"meta('schema_version') is {row[0]!r}, not a number: the store is damaged; "
            "rebuild it with `python -m compute kb build`."
        ) from None


def split_statements(sql: str) -> list[str]:
    """Split SQL text into complete statements (semicolons inside strings or triggers stay put)."""
    statements, buffer = [], ""
    for piece in sql.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if _has_code(buffer):
                statements.append(buffer.strip())
            buffer = ""
    if _has_code(buffer):
        raise ValueError(f"Incomplete SQL statement at the end of a migration: {buffer.strip()[:80]!r}")
    return statements


def _has_code(sql: str) -> bool:
    """Whether `sql` holds more than whitespace, semicolons and -- comments."""
    lines = (line.strip() for line in sql.splitlines())
    return any(line.strip(";") and not line.startswith("--") for line in lines)


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> list[int]:
    """Apply the migrations the database lacks, each in its own transaction; return their versions.

    A migration that fails is rolled back whole, so the store stays at the last version that applied,
    and the error propagates. Versions above the newest known one are left alone (the caller decides
    what a store from newer code means).
    """
    check_migrations(migrations)
    if conn.in_transaction:
        raise ValueError("migrate() needs a connection with no open transaction; commit or roll back first.")
    current = schema_version(conn)
    applied = []
    for migration in migrations:
        if migration.version <= current:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            if callable(migration.apply):
                migration.apply(conn)
            else:
                for statement in split_statements(migration.apply):
                    conn.execute(statement)
            conn.execute(
                "INSERT INTO migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, datetime.now(timezone.utc).isoformat(timespec="seconds")),
            )
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(migration.version),),
            )
        except BaseException:
            conn.rollback()
            raise
        conn.commit()
        applied.append(migration.version)
    return applied

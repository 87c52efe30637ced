"""Tests of store.db and store.schema: opening and validating files, migrations, runs, writes, finalize."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from store import Store, StoreError, default_store_path
from store.schema import MIGRATIONS, Migration, check_migrations, latest_version, migrate, split_statements

REPO = Path(__file__).resolve().parents[1]
V1 = MIGRATIONS[:1]  # the first schema alone: the migration tests build on it, whatever the code's latest is
NOTES_V2 = Migration(2, "add run notes", "ALTER TABLE runs ADD COLUMN notes TEXT")


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path / "s.sqlite", create=True) as s:
        yield s


def case(case_id, **extra):
    row = dict(case_id=case_id, case_set="set", source="kb", relation="capital", subject=f"S{case_id}",
               prompt="The capital of {} is", true_object="Paris", new_object="Rome")
    return row | extra


def probe(case_id, probe_id, **extra):
    row = dict(case_id=case_id, probe_id=probe_id, rephrase_type="plain", text="The capital of X is",
               target_true="Paris", target_new="Rome")
    return row | extra


def meas(run_id, case_id, metric="es", value=1.0, **extra):
    return dict(run_id=run_id, case_id=case_id, rephrase_type="plain", metric=metric, value=value) | extra


def count(s, table):
    return s.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# opening and validation ----------------------------------------------------------------------------

def test_create_builds_the_latest_store_with_meta_and_migration_record(tmp_path):
    with Store.open(tmp_path / "new.sqlite", create=True) as s:
        meta = dict(s.conn.execute("SELECT key, value FROM meta"))
        history = s.conn.execute("SELECT version, name FROM migrations").fetchall()
        latest = latest_version()
        assert s.schema_version == latest and s.migrated == tuple(range(1, latest + 1))
    assert meta == {"application": "editscope", "schema_version": str(latest)}
    assert history == [(m.version, m.name) for m in MIGRATIONS]


def test_version_2_adds_run_events(tmp_path):
    with Store.open(tmp_path / "s.sqlite", create=True, migrations=V1) as s:
        s.start_run(kind="sequential", model="m", run_id="r1")
    with Store.open(tmp_path / "s.sqlite") as s:
        assert s.migrated == tuple(range(2, latest_version() + 1))
        s.write_events([{"run_id": "r1", "kind": "collapse", "series": "panel_recall", "edit_count": 40, "value": 0.1}])
        s.replace_events("r1", ["collapse"], [{"run_id": "r1", "kind": "collapse", "series": "fluency", "edit_count": 50}])
        rows = s.conn.execute("SELECT kind, series, edit_count FROM run_events").fetchall()
    assert rows == [("collapse", "fluency", 50)]


def test_create_makes_missing_parent_folders(tmp_path):
    path = tmp_path / "a" / "b" / "s.sqlite"
    Store.open(path, create=True).close()
    assert path.is_file()


def test_create_on_an_existing_store_keeps_its_data(tmp_path):
    path = tmp_path / "s.sqlite"
    with Store.open(path, create=True) as s:
        s.start_run(kind="demo", model="m", run_id="r1")
    with Store.open(path, create=True) as s:
        assert s.get_run("r1")["model"] == "m" and s.migrated == ()


def test_missing_file_says_how_to_build_one_and_creates_nothing(tmp_path):
    path = tmp_path / "none.sqlite"
    with pytest.raises(StoreError) as err:
        Store.open(path)
    message = str(err.value)
    assert str(path) in message
    assert "python -m compute kb build" in message and "python -m compute cases build" in message
    assert not path.exists()


def test_missing_file_read_only_creates_nothing(tmp_path):
    with pytest.raises(StoreError, match="No EditScope store"):
        Store.open(tmp_path / "none.sqlite", readonly=True)
    assert list(tmp_path.iterdir()) == []


def test_read_only_create_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="readonly"):
        Store.open(tmp_path / "x.sqlite", readonly=True, create=True)


@pytest.mark.parametrize("content", [random.Random(0).randbytes(4096), b"case_id,value\nc1,0.5\n" * 20, b"SQLite"],
                         ids=["random-bytes", "csv", "short"])  # fixed ids and bytes: every xdist worker collects the same
@pytest.mark.parametrize("readonly", [False, True])
def test_non_sqlite_file_is_refused_and_left_unchanged(tmp_path, content, readonly):
    path = tmp_path / "results.sqlite"
    path.write_bytes(content)
    with pytest.raises(StoreError, match=r"is not an EditScope store \(not a SQLite database\)"):
        Store.open(path, readonly=readonly, create=not readonly)
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.sqlite"]


def test_empty_file_is_refused_without_create(tmp_path):
    path = tmp_path / "empty.sqlite"
    path.touch()
    with pytest.raises(StoreError, match="empty file"):
        Store.open(path)
    assert path.read_bytes() == b""


def test_empty_file_with_create_becomes_a_store(tmp_path):
    path = tmp_path / "empty.sqlite"
    path.touch()
    with Store.open(path, create=True) as s:
        assert s.schema_version == latest_version()


def make_foreign_db(path, meta_rows=()):
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (x TEXT)")
    if meta_rows:
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        conn.executemany("INSERT INTO meta VALUES (?, ?)", meta_rows)
    conn.commit()
    conn.close()
    return path.read_bytes()


@pytest.mark.parametrize("readonly", [False, True])
def test_other_sqlite_database_is_refused_and_left_unchanged(tmp_path, readonly):
    path = tmp_path / "other.db"
    before = make_foreign_db(path)
    with pytest.raises(StoreError, match="not an EditScope store"):
        Store.open(path, readonly=readonly, create=not readonly)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]


def test_sqlite_with_another_application_in_meta_is_refused(tmp_path):
    path = tmp_path / "other.db"
    before = make_foreign_db(path, [("application", "datasette"), ("schema_version", "1")])
    with pytest.raises(StoreError, match="'datasette'"):
        Store.open(path)
    assert path.read_bytes() == before


def test_directory_is_refused(tmp_path):
    with pytest.raises(StoreError, match="directory"):
        Store.open(tmp_path)


def test_newer_schema_is_refused_and_left_unchanged(tmp_path):
    path = tmp_path / "s.sqlite"
    newer = Migration(len(MIGRATIONS) + 1, "add run notes", NOTES_V2.apply)
    Store.open(path, create=True, migrations=MIGRATIONS + (newer,)).close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match=rf"newer EditScope \(schema v{newer.version}\); .*Update the code"):
        Store.open(path)
    assert path.read_bytes() == before


def test_older_schema_is_migrated_when_writable(tmp_path):
    path = tmp_path / "s.sqlite"
    Store.open(path, create=True, migrations=V1).close()
    with Store.open(path, migrations=V1 + (NOTES_V2,)) as s:
        columns = [r[1] for r in s.conn.execute("PRAGMA table_info(runs)")]
        history = [r[0] for r in s.conn.execute("SELECT version FROM migrations ORDER BY version")]
        version = s.conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        assert (s.schema_version, s.migrated) == (2, (2,))
    assert "notes" in columns and history == [1, 2] and version == "2"


def test_older_schema_read_only_says_to_migrate_and_leaves_file(tmp_path):
    path = tmp_path / "s.sqlite"
    with Store.open(path, create=True, migrations=V1) as s:
        s.finalize()
    before = path.read_bytes()
    with pytest.raises(StoreError, match="python -m compute store migrate"):
        Store.open(path, readonly=True, migrations=V1 + (NOTES_V2,))
    assert path.read_bytes() == before


def test_failed_migration_rolls_back_whole(tmp_path):
    path = tmp_path / "s.sqlite"
    Store.open(path, create=True, migrations=V1).close()
    broken = Migration(2, "broken", "CREATE TABLE extra (x INTEGER); INSERT INTO no_such_table VALUES (1);")
    with pytest.raises(StoreError, match="stays at schema v1"):
        Store.open(path, migrations=V1 + (broken,))
    with Store.open(path, migrations=V1) as s:
        tables = {r[0] for r in s.conn.execute("SELECT name FROM sqlite_master")}
        assert s.schema_version == 1 and "extra" not in tables


def test_function_migration_can_rewrite_rows(tmp_path):
    path = tmp_path / "s.sqlite"
    with Store.open(path, create=True, migrations=V1) as s:
        s.start_run(kind="demo", model="m", run_id="r1")

    def upper_models(conn):
        conn.execute("UPDATE runs SET model = upper(model)")

    with Store.open(path, migrations=V1 + (Migration(2, "upper models", upper_models),)) as s:
        assert s.get_run("r1")["model"] == "M" and s.schema_version == 2


def test_migrate_on_plain_connection_is_idempotent(tmp_path):
    conn = sqlite3.connect(tmp_path / "plain.sqlite")
    assert migrate(conn) == [m.version for m in MIGRATIONS]
    assert migrate(conn) == []
    assert conn.execute("SELECT count(*) FROM migrations").fetchone()[0] == len(MIGRATIONS)
    conn.close()


def test_migration_versions_must_run_from_one_without_gaps():
    with pytest.raises(ValueError, match="1, 2, 3"):
        check_migrations(V1 + (Migration(3, "skips two", "SELECT 1"),))
    assert latest_version(V1 + (NOTES_V2,)) == 2


def test_split_statements_keeps_semicolons_inside_strings():
    sql = "CREATE TABLE t (x TEXT);\nINSERT INTO t VALUES ('a;b');\n-- done\n"
    assert split_statements(sql) == ["CREATE TABLE t (x TEXT);", "INSERT INTO t VALUES ('a;b');"]


def test_default_store_path_is_in_the_repo_unless_env_overrides(monkeypatch, tmp_path):
    monkeypatch.delenv("EDITSCOPE_STORE", raising=False)
    assert default_store_path() == REPO / "store" / "results.sqlite"
    monkeypatch.setenv("EDITSCOPE_STORE", str(tmp_path / "mine.sqlite"))
    assert default_store_path() == tmp_path / "mine.sqlite"


def test_writable_store_uses_wal_and_foreign_keys(store):
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert not store.readonly


def test_read_only_store_refuses_writes(store):
    run_id = store.start_run(kind="demo", model="m")
    with Store.open(store.path, readonly=True) as ro:
        with pytest.raises(StoreError, match="read-only"):
            ro.write_measurements([meas(run_id, "c1")])
        assert ro.done_case_ids(run_id) == set()
        assert ro.readonly


def test_read_only_open_handles_odd_characters_in_path(tmp_path):
    path = tmp_path / "dir with space" / "res?#%ults.sqlite"
    with Store.open(path, create=True) as s:
        s.start_run(kind="demo", model="m", run_id="r1")
    with Store.open(path, readonly=True) as ro:
        assert ro.get_run("r1")["kind"] == "demo"


def test_read_only_open_of_a_wal_store_sees_committed_rows(store):
    store.start_run(kind="demo", model="m", run_id="r1")
    with Store.open(store.path, readonly=True) as ro:
        assert ro.get_run("r1")["status"] == "running"
    store.heartbeat("r1", n_done=3)
    with Store.open(store.path, readonly=True) as ro:
        assert ro.get_run("r1")["n_done"] == 3


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores directory permissions")
@pytest.mark.parametrize("finalized", [False, True])
def test_read_only_open_in_a_read_only_folder(tmp_path, finalized):
    folder = tmp_path / "ro"
    with Store.open(folder / "s.sqlite", create=True) as s:
        s.start_run(kind="demo", model="m", run_id="r1")
        if finalized:
            s.finalize()
    folder.chmod(0o555)
    try:
        with Store.open(folder / "s.sqlite", readonly=True) as ro:
            assert ro.get_run("r1")["model"] == "m"
    finally:
        folder.chmod(0o755)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores directory permissions")
def test_writable_open_in_a_read_only_folder_says_to_open_read_only(tmp_path):
    folder = tmp_path / "ro"
    Store.open(folder / "s.sqlite", create=True).close()
    folder.chmod(0o555)
    try:
        with pytest.raises(StoreError, match="open it read-only"):
            Store.open(folder / "s.sqlite")
    finally:
        folder.chmod(0o755)


def test_context_manager_closes_the_connection(tmp_path):
    with Store.open(tmp_path / "s.sqlite", create=True) as s:
        pass
    with pytest.raises(sqlite3.ProgrammingError):
        s.conn.execute("SELECT 1")


# runs -------------------------------------------------------------------------------------------------

def test_start_run_records_a_running_row(store):
    run_id = store.start_run(kind="knowledge", model="smollm2", seed=3, n_total=10,
                             hparams={"b": 2, "a": 1}, config={"case_set": "kb-200"})
    run = store.get_run(run_id)
    assert run_id.startswith("knowledge-") and len(run_id.rsplit("-", 1)[1]) == 6
    assert (run["status"], run["pid"], run["n_done"], run["n_total"], run["seed"]) == ("running", os.getpid(), 0, 10, 3)
    assert run["hparams"] == '{"a": 1, "b": 2}'
    assert run["started_at"] == run["heartbeat_at"] and run["finished_at"] is None


def test_start_run_records_provenance(store):
    prov = {"code_version": "abc123", "packages": {"torch": "2.5"}, "device": "cpu"}
    run = store.get_run(store.start_run(kind="demo", model="m", provenance=prov))
    assert (run["code_version"], run["packages"], run["device"]) == ("abc123", '{"torch": "2.5"}', "cpu")
    assert run["host"] == socket.gethostname()


def test_start_run_rejects_unknown_provenance_keys(store):
    with pytest.raises(ValueError, match="gpu"):
        store.start_run(kind="demo", model="m", provenance={"gpu": "h100"})
    assert count(store, "runs") == 0


def test_start_run_refuses_an_existing_run_id(store):
    store.start_run(kind="demo", model="m", run_id="r1")
    with pytest.raises(StoreError, match="already exists"):
        store.start_run(kind="demo", model="other", run_id="r1")
    assert store.get_run("r1")["model"] == "m"


def test_heartbeat_records_progress_and_keeps_unset_fields(store):
    run_id = store.start_run(kind="demo", model="m", n_total=50)
    store.heartbeat(run_id, n_done=7)
    run = store.get_run(run_id)
    assert (run["n_done"], run["n_total"]) == (7, 50)
    store.heartbeat(run_id, n_total=60)
    assert (store.get_run(run_id)["n_done"], store.get_run(run_id)["n_total"]) == (7, 60)


def test_heartbeat_of_unknown_run_raises(store):
    with pytest.raises(StoreError, match="No run 'ghost'"):
        store.heartbeat("ghost")


def test_update_run_config_merges_and_keeps_the_rest(store):
    run_id = store.start_run(kind="sequential", model="m", config={"max_edits": 200, "batch_size": 1})
    store.update_run_config(run_id, {"max_edits": 500})
    assert json.loads(store.get_run(run_id)["config"]) == {"batch_size": 1, "max_edits": 500}
    with pytest.raises(StoreError, match="No run 'ghost'"):
        store.update_run_config("ghost", {"max_edits": 1})


def test_finish_run_done_sets_finished_at_and_timings(store):
    run_id = store.start_run(kind="demo", model="m")
    store.finish_run(run_id, timings={"edit_s": 1.5})
    run = store.get_run(run_id)
    assert run["status"] == "done" and run["finished_at"] is not None
    assert run["timings"] == '{"edit_s": 1.5}' and run["error"] is None


def test_finish_run_failed_stores_the_error(store):
    run_id = store.start_run(kind="demo", model="m")
    store.finish_run(run_id, "failed", error="CUDA out of memory")
    run = store.get_run(run_id)
    assert (run["status"], run["error"]) == ("failed", "CUDA out of memory")


def test_finish_run_rejects_a_non_final_status(store):
    run_id = store.start_run(kind="demo", model="m")
    with pytest.raises(ValueError, match="running"):
        store.finish_run(run_id, "running")
    with pytest.raises(StoreError):
        store.finish_run("ghost")


def test_status_check_constraint_rejects_unknown_status(store):
    run_id = store.start_run(kind="demo", model="m")
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        store.conn.execute("UPDATE runs SET status = 'finished' WHERE run_id = ?", (run_id,))
    assert store.get_run(run_id)["status"] == "running"


def test_mark_stale_runs_interrupts_a_run_whose_process_died(store):
    run_id = store.start_run(kind="demo", model="m")
    store.conn.execute("UPDATE runs SET pid = ? WHERE run_id = ?", (dead_pid(), run_id))
    assert store.mark_stale_runs() == 1
    run = store.get_run(run_id)
    assert run["status"] == "interrupted" and "ended without finishing" in run["error"]
    assert store.mark_stale_runs() == 0


def test_mark_stale_runs_leaves_a_live_run_alone(store):
    run_id = store.start_run(kind="demo", model="m")
    store.conn.execute("UPDATE runs SET heartbeat_at = '2020-01-01T00:00:00+00:00' WHERE run_id = ?", (run_id,))
    assert store.mark_stale_runs() == 0
    assert store.get_run(run_id)["status"] == "running"


def test_mark_stale_runs_uses_heartbeat_age_for_other_hosts(store):
    old = store.start_run(kind="demo", model="m", provenance={"host": "elsewhere"})
    fresh = store.start_run(kind="demo", model="m", provenance={"host": "elsewhere"})
    store.conn.execute("UPDATE runs SET heartbeat_at = '2020-01-01T00:00:00+00:00' WHERE run_id = ?", (old,))
    assert store.mark_stale_runs(max_age_s=120) == 1
    assert store.get_run(old)["status"] == "interrupted" and "No heartbeat" in store.get_run(old)["error"]
    assert store.get_run(fresh)["status"] == "running"


def test_mark_stale_runs_ignores_finished_runs(store):
    run_id = store.start_run(kind="demo", model="m")
    store.finish_run(run_id)
    store.conn.execute("UPDATE runs SET pid = ? WHERE run_id = ?", (dead_pid(), run_id))
    assert store.mark_stale_runs() == 0 and store.get_run(run_id)["status"] == "done"


def test_resume_run_marks_an_interrupted_run_running_in_this_process(store):
    run_id = store.start_run(kind="demo", model="m")
    store.conn.execute("UPDATE runs SET pid = ? WHERE run_id = ?", (dead_pid(), run_id))
    store.mark_stale_runs()
    run = store.resume_run(run_id)
    assert (run["status"], run["pid"], run["error"], run["finished_at"]) == ("running", os.getpid(), None, None)


def test_resume_run_refuses_a_run_alive_in_another_process(store):
    run_id = store.start_run(kind="demo", model="m")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        store.conn.execute("UPDATE runs SET pid = ? WHERE run_id = ?", (proc.pid, run_id))
        with pytest.raises(StoreError, match=f"process {proc.pid}"):
            store.resume_run(run_id)
    finally:
        proc.kill()
        proc.wait()


def test_resume_unknown_run_raises(store):
    with pytest.raises(StoreError, match="No run 'ghost'"):
        store.resume_run("ghost")


# writes -------------------------------------------------------------------------------------------

def test_writing_measurements_twice_leaves_one_copy(store):
    run_id = store.start_run(kind="demo", model="m")
    rows = [meas(run_id, f"c{i}", value=i / 10) for i in range(5)]
    store.write_measurements(rows)
    store.write_measurements(rows)
    assert count(store, "measurements") == 5


def test_a_changed_measurement_value_replaces_the_old_one(store):
    run_id = store.start_run(kind="demo", model="m")
    store.write_measurements([meas(run_id, "c1", value=0.25)])
    store.write_measurements([meas(run_id, "c1", value=0.75)])
    rows = store.conn.execute("SELECT value FROM measurements").fetchall()
    assert rows == [(0.75,)]


def test_measurement_edit_count_defaults_to_zero(store):
    run_id = store.start_run(kind="demo", model="m")
    store.write_measurements([meas(run_id, "c1"), meas(run_id, "c1", edit_count=5)])
    counts = [r[0] for r in store.conn.execute("SELECT edit_count FROM measurements ORDER BY edit_count")]
    assert counts == [0, 5]


def test_unknown_measurement_column_is_rejected(store):
    run_id = store.start_run(kind="demo", model="m")
    with pytest.raises(ValueError, match=r"no column\(s\) \['valeu'\]"):
        store.write_measurements([dict(meas(run_id, "c1"), valeu=1.0)])


def test_measurement_of_an_unknown_run_is_rejected(store):
    with pytest.raises(ValueError, match="FOREIGN KEY"):
        store.write_measurements([meas("no-such-run", "c1")])
    assert count(store, "measurements") == 0


def test_a_write_is_one_transaction(store):
    run_id = store.start_run(kind="demo", model="m")
    rows = [meas(run_id, f"c{i}") for i in range(10)]
    rows[7] = meas(run_id, "c7", metric=None)
    with pytest.raises(ValueError, match="NOT NULL"):
        store.write_measurements(rows)
    assert count(store, "measurements") == 0 and not store.conn.in_transaction


def test_write_measurements_handles_many_rows(store):
    run_id = store.start_run(kind="robustness", model="m")
    rows = [meas(run_id, f"c{i // 20}", metric=f"m{i % 20}", value=float(i)) for i in range(20_000)]
    assert store.write_measurements(iter(rows)) == 20_000
    assert count(store, "measurements") == 20_000
    assert len(store.done_case_ids(run_id)) == 1000


def test_numpy_scalars_are_stored_as_numbers(store):
    np = pytest.importorskip("numpy")
    run_id = store.start_run(kind="demo", model="m")
    store.write_measurements([meas(run_id, "c1", value=np.float32(0.5), edit_count=np.int64(2))])
    row = store.conn.execute("SELECT typeof(value), value, typeof(edit_count) FROM measurements").fetchone()
    assert row == ("real", 0.5, "integer")


def test_done_case_ids_are_per_run_and_edit_count(store):
    a = store.start_run(kind="demo", model="m")
    b = store.start_run(kind="demo", model="m")
    store.write_measurements([meas(a, "c1"), meas(a, "c2"), meas(a, "c3", edit_count=1), meas(b, "c4")])
    assert store.done_case_ids(a) == {"c1", "c2"}
    assert store.done_case_ids(a, edit_count=1) == {"c3"}


def kb_rows():
    relations = [dict(relation="capital", subject_kind="country", description="capital city",
                      templates={"prompt": "The capital of {subject} is", "paraphrases": ["a", "b"]})]
    subjects = [dict(subject="France", kind="country", aliases=("French Republic",), frequency=5.1,
                     connection=12, population=67_000_000)]
    facts = [dict(relation="capital", subject="France", object="Paris", object_aliases=[], cooccurrence=4)]
    return relations, subjects, facts


def test_write_kb_stores_json_columns_with_sorted_keys(store):
    store.write_kb(*kb_rows())
    templates = store.conn.execute("SELECT templates FROM kb_relations").fetchone()[0]
    aliases = store.conn.execute("SELECT aliases FROM kb_subjects").fetchone()[0]
    assert templates == '{"paraphrases": ["a", "b"], "prompt": "The capital of {subject} is"}'
    assert aliases == '["French Republic"]'
    store.write_kb(*kb_rows())
    assert (count(store, "kb_relations"), count(store, "kb_subjects"), count(store, "kb_facts")) == (1, 1, 1)


def test_write_kb_replace_drops_facts_of_the_old_knowledge_base(store):
    relations, subjects, facts = kb_rows()
    store.write_kb(relations, subjects, facts + [dict(relation="capital", subject="France", object="Lyon")])
    store.write_kb(relations, subjects, facts, replace=True)
    objects = [r[0] for r in store.conn.execute("SELECT object FROM kb_facts")]
    assert objects == ["Paris"]


def test_write_cases_replaces_the_probe_set_of_each_case(store):
    store.write_cases([case("c1"), case("c2")], [probe("c1", i) for i in range(3)] + [probe("c2", 0)])
    store.write_cases([case("c1")], [probe("c1", 0, text="new text"), probe("c1", 1)])
    rows = store.conn.execute("SELECT case_id, probe_id, text FROM probes ORDER BY case_id, probe_id").fetchall()
    assert [r[:2] for r in rows] == [("c1", 0), ("c1", 1), ("c2", 0)]
    assert rows[0][2] == "new text"


def test_rewriting_a_case_keeps_its_probes(store):
    store.write_cases([case("c1")], [probe("c1", 0), probe("c1", 1)])
    store.write_cases([case("c1", new_object="Berlin")], [])
    assert count(store, "probes") == 2
    assert store.conn.execute("SELECT new_object FROM cases").fetchone()[0] == "Berlin"


def test_probe_of_an_unknown_case_is_rejected(store):
    with pytest.raises(ValueError, match="FOREIGN KEY"):
        store.write_cases([], [probe("ghost", 0)])
    with pytest.raises(ValueError, match="case_id"):
        store.write_cases([], [{"probe_id": 0}])


@pytest.mark.parametrize("method, table, row", [
    ("write_generations", "generations",
     dict(case_id="c1", edit_count=0, rephrase_type="plain", probe_id=0, phase="post", text="Rome")),
    ("write_abilities", "abilities",
     dict(edit_count=10, batch_size=1, task="arith", task_version="1", mode="gen", score=0.5, n=20)),
    ("write_weight_drift", "weight_drift",
     dict(edit_count=10, module="model.layers.4.mlp.down_proj", fro_delta=0.1, rel_change=0.01)),
])
def test_other_tables_upsert_idempotently(store, method, table, row):
    run_id = store.start_run(kind="sequential", model="m")
    getattr(store, method)([dict(row, run_id=run_id)])
    getattr(store, method)([dict(row, run_id=run_id)])
    assert count(store, table) == 1


def test_abilities_key_columns_cannot_be_null(store):
    run_id = store.start_run(kind="abilities", model="m")
    with pytest.raises(ValueError, match="NOT NULL"):
        store.write_abilities([dict(run_id=run_id, batch_size=None, task="arith", mode="gen", score=0.5)])


# finalize and imports -----------------------------------------------------------------------------

def test_the_committed_stores_are_finalized():
    """store/results.sqlite and store/rebuild.sqlite as committed: one file each in rollback-journal mode (a WAL
    header means something opened it writable and nobody finalized it: `python -m compute store finalize`)."""
    from store import is_finalized

    folder = Path(__file__).resolve().parent.parent / "store"
    for name in ("results.sqlite", "rebuild.sqlite"):
        if (folder / name).exists():
            assert is_finalized(folder / name), f"{name} is in WAL mode: run `python -m compute --store store/{name} store finalize`"


def test_finalize_leaves_one_file_that_opens_read_only_elsewhere(tmp_path):
    with Store.open(tmp_path / "s.sqlite", create=True) as s:
        run_id = s.start_run(kind="demo", model="m")
        s.write_measurements([meas(run_id, "c1", value=0.5)])
        s.finalize()
        assert s.conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.sqlite"]
    header = (tmp_path / "s.sqlite").read_bytes()[:20]
    assert (header[18], header[19]) == (1, 1)  # rollback journal, not WAL
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    shutil.copy(tmp_path / "s.sqlite", shipped / "results.sqlite")
    with Store.open(shipped / "results.sqlite", readonly=True) as ro:
        assert ro.done_case_ids(run_id) == {"c1"}


def test_finalize_needs_a_writable_store(store):
    with Store.open(store.path, readonly=True) as ro:
        with pytest.raises(StoreError, match="read-only"):
            ro.finalize()


def test_importing_store_pulls_in_no_heavy_or_sibling_packages():
    code = (
        "import sys, store, store.db, store.schema, store.queries, store.metrics\n"
        "print(','.join(m for m in ('torch', 'transformers', 'streamlit', 'compute', 'dashboard')"
        " if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_the_shipped_store_opens_read_only_at_the_latest_schema_with_results():
    """What `bash run.sh dashboard` opens: it must not need a migration (the dashboard cannot write)."""
    path = REPO / "store" / "results.sqlite"
    with Store.open(path, readonly=True) as s:
        assert s.schema_version == latest_version()
        counts = {t: s.conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("kb_facts", "cases", "measurements")}
        # a store shipped before every unit finished holds partial runs with their status shown (issue 19)
        done = s.conn.execute("SELECT count(*) FROM runs WHERE status = 'done' AND n_done > 0").fetchone()[0]
        robust = s.conn.execute("SELECT count(*) FROM runs WHERE kind = 'robustness' AND n_done > 0").fetchone()[0]
    assert all(n > 0 for n in counts.values()) and done >= 1 and robust >= 1, counts


def test_v6_encodes_measurements_and_keeps_every_row_readable_as_before(tmp_path):
    """A v5 store's measurements survive the v6 migration row for row (same view, same values), raw SQL
    still inserts, updates and deletes through the view, and deleting a run deletes its rows."""
    path = tmp_path / "s.sqlite"
    v5 = MIGRATIONS[:5]
    with Store.open(path, create=True, migrations=v5) as s:
        s.conn.execute("INSERT INTO runs (run_id, kind, model, status) VALUES ('run-a', 'demo', 'm', 'done')")
        s.conn.execute("INSERT INTO runs (run_id, kind, model, status) VALUES ('run-b', 'demo', 'm', 'done')")
        rows = [(r, f"case-{i}", i % 3, t, m, i * 0.25 if m != "acc" else None)
                for r in ("run-a", "run-b") for i in range(40) for t in ("plain", "dialogue") for m in ("es", "acc")]
        s.conn.executemany("INSERT INTO measurements VALUES (?, ?, ?, ?, ?, ?)", rows)
        s.conn.commit()
        before = sorted(s.conn.execute("SELECT * FROM measurements"), key=repr)
    with Store.open(path, migrations=MIGRATIONS[:6]) as s:
        assert s.schema_version == 6 and s.migrated == (6,)
        assert sorted(s.conn.execute("SELECT * FROM measurements"), key=repr) == before
        assert count(s, "measurement_values") == len(before)
        names = {n for (n,) in s.conn.execute("SELECT name FROM measurement_names")}
        assert names == {"run-a", "run-b", "plain", "dialogue", "es", "acc"} | {f"case-{i}" for i in range(40)}
        # raw SQL through the view: insert a new row and replace an existing one
        s.conn.execute("INSERT INTO measurements (run_id, case_id, rephrase_type, metric, value) "
                       "VALUES ('run-a', 'new-case', 'plain', 'es', 0.5)")
        s.conn.execute("INSERT INTO measurements VALUES ('run-a', 'case-0', 0, 'plain', 'es', 9.0)")
        assert s.conn.execute("SELECT edit_count, value FROM measurements WHERE case_id = 'new-case'").fetchall() == [(0, 0.5)]
        assert s.conn.execute("SELECT value FROM measurements WHERE run_id = 'run-a' AND case_id = 'case-0' "
                              "AND rephrase_type = 'plain' AND metric = 'es'").fetchall() == [(9.0,)]
        s.conn.execute("UPDATE measurements SET metric = 'rev' WHERE metric = 'acc' AND run_id = 'run-b'")
        assert s.conn.execute("SELECT count(*) FROM measurements WHERE metric = 'rev'").fetchone()[0] == 80
        s.conn.execute("DELETE FROM measurements WHERE case_id = 'new-case'")
        assert s.conn.execute("SELECT count(*) FROM measurements WHERE case_id = 'new-case'").fetchone()[0] == 0
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
            s.conn.execute("INSERT INTO measurements (run_id, case_id, rephrase_type, metric, value) "
                           "VALUES ('no-run', 'c', 'plain', 'es', 1)")
        s.conn.execute("DELETE FROM runs WHERE run_id = 'run-b'")
        s.conn.commit()
        assert {r for (r,) in s.conn.execute("SELECT DISTINCT run_id FROM measurements")} == {"run-a"}
        assert count(s, "measurement_values") == len(before) // 2
        # Store.write_measurements writes the encoded table directly and reads back through the view
        s.write_measurements([meas("run-a", "case-1", value=0.75, edit_count=5)])
        assert s.conn.execute("SELECT value FROM measurements WHERE case_id = 'case-1' AND edit_count = 5 "
                              "AND metric = 'es'").fetchall() == [(0.75,)]


def test_v8_encodes_edit_diagnostics_and_keeps_every_row_readable_as_before(tmp_path):
    """A v7 store's diagnostics survive the v8 migration row for row, the view takes inserts (replacing a row with
    the same key, a missing target reading ''), updates and deletes, refuses a row of no run or without a key,
    deleting a run deletes its rows, and the file is smaller than with the rows as text."""
    path, plain = tmp_path / "s.sqlite", tmp_path / "plain.sqlite"
    with Store.open(path, create=True, migrations=MIGRATIONS[:7]) as s:
        for r in ("sequential-20261207T000000Z-aaaaaa", "sequential-20261207T000000Z-bbbbbb"):
            s.conn.execute("INSERT INTO runs (run_id, kind, model, status) VALUES (?, 'sequential', 'm', 'done')", (r,))
        rows = [(r, n, f"smollm2-135m-n1800-s0-{n:04d}", t, name, n * 0.5)
                for r in ("sequential-20261207T000000Z-aaaaaa", "sequential-20261207T000000Z-bbbbbb")
                for n in range(1, 401)
                for t, name in [("model.layers.3.mlp.down_proj.weight", "update_norm"),
                                ("model.layers.3.mlp.down_proj.weight", "update_rel"), ("", "steps"),
                                ("plain", "delivered"), ("paraphrase:1", "delivered")]]
        s.conn.executemany("INSERT INTO edit_diagnostics VALUES (?, ?, ?, ?, ?, ?)", rows)
        s.conn.commit()
        before = sorted(s.conn.execute("SELECT * FROM edit_diagnostics"), key=repr)
        s.finalize()
    shutil.copy(path, plain)
    with Store.open(path, migrations=MIGRATIONS[:8]) as s:
        assert s.schema_version == 8 and s.migrated == (8,)
        assert sorted(s.conn.execute("SELECT * FROM edit_diagnostics"), key=repr) == before
        assert count(s, "edit_diagnostic_values") == len(before)
        s.finalize()
    assert path.stat().st_size < 0.6 * plain.stat().st_size, (path.stat().st_size, plain.stat().st_size)
    with Store.open(path) as s:
        a = "sequential-20261207T000000Z-aaaaaa"
        s.write_edit_diagnostics([{"run_id": a, "edit_count": 1, "case_id": "smollm2-135m-n1800-s0-0001",
                                   "target": "", "name": "steps", "value": 7.0},
                                  {"run_id": a, "edit_count": 1, "case_id": "new", "name": "kl", "value": 0.25}])
        assert s.conn.execute("SELECT value FROM edit_diagnostics WHERE run_id = ? AND edit_count = 1 AND "
                              "name = 'steps'", (a,)).fetchall() == [(7.0,)]
        assert s.conn.execute("SELECT target, value FROM edit_diagnostics WHERE case_id = 'new'").fetchall() == [
            ("", 0.25)]
        s.conn.execute("UPDATE edit_diagnostics SET value = 3 WHERE case_id = 'new'")
        assert s.conn.execute("SELECT value FROM edit_diagnostics WHERE case_id = 'new'").fetchall() == [(3.0,)]
        s.conn.execute("DELETE FROM edit_diagnostics WHERE case_id = 'new'")
        assert s.conn.execute("SELECT count(*) FROM edit_diagnostics WHERE case_id = 'new'").fetchone()[0] == 0
        s.conn.commit()
        with pytest.raises(ValueError, match="FOREIGN KEY.*Store.start_run"):
            s.write_edit_diagnostics([{"run_id": "no-run", "edit_count": 1, "case_id": "c", "name": "kl",
                                       "value": 1.0}])
        with pytest.raises(ValueError, match="NOT NULL"):
            s.write_edit_diagnostics([{"run_id": a, "edit_count": 1, "case_id": "c", "value": 1.0}])
        with pytest.raises(ValueError, match="has no column"):
            s.write_edit_diagnostics([{"run_id": a, "edit_count": 1, "case_id": "c", "name": "kl", "oops": 1}])
        assert s.conn.execute("SELECT count(*) FROM edit_diagnostics").fetchone()[0] == len(before)  # none landed
        s.delete_runs(["sequential-20261207T000000Z-bbbbbb"])
        assert {r for (r,) in s.conn.execute("SELECT DISTINCT run_id FROM edit_diagnostics")} == {a}
        assert count(s, "edit_diagnostic_values") == len(before) // 2


def _case_set_with_probes(s, case_set="smollm2-135m-n3-s0", types=("plain", "paraphrase", "neighbourhood", "doubt",
                                                                      "dialogue")):
    cases = [{"case_id": f"{case_set}-{i}", "case_set": case_set, "source": "kb", "subject": f"S{i}",
              "prompt": f"S{i} is in", "true_object": "A", "new_object": "B"} for i in range(3)]
    probes = [{"case_id": c["case_id"], "probe_id": j, "rephrase_type": t, "text": f"{t} text of {c['subject']}",
               "target_true": "A", "target_new": "B"} for c in cases for j, t in enumerate(types)]
    s.write_cases(cases, probes)
    return cases, probes


def test_a_committed_store_leaves_out_only_the_probes_no_run_read_and_says_how_to_restore_them(tmp_path):
    """Store.leave_out_unread_probes (what `plan snapshot` runs) deletes the probes of the types no stored run
    measured on a set, never plain, paraphrase or neighbourhood, and never a set loaded from a file; a run that
    needs them is refused with the command that restores them; writing them again clears the record."""
    from compute.stored import load_case_set
    from store import queries

    path = tmp_path / "s.sqlite"
    with Store.open(path, create=True) as s:
        cases, probes = _case_set_with_probes(s)
        _case_set_with_probes(s, case_set="counterfact-mine")
        s.conn.execute("UPDATE cases SET source = 'counterfact' WHERE case_set = 'counterfact-mine'")
        s.conn.execute("INSERT INTO runs (run_id, kind, model, status) VALUES ('r', 'knowledge', 'm', 'done')")
        s.conn.commit()
        s.write_measurements([meas("r", cases[0]["case_id"], rephrase_type=t) for t in ("plain", "doubt")])
        assert s.leave_out_unread_probes() == {"smollm2-135m-n3-s0": ["dialogue"]}
        assert queries.probes_left_out(s.conn) == {"smollm2-135m-n3-s0": ["dialogue"]}
        kept = {t for (t,) in s.conn.execute("SELECT DISTINCT rephrase_type FROM probes JOIN cases USING (case_id) "
                                             "WHERE case_set = 'smollm2-135m-n3-s0'")}
        assert kept == {"plain", "paraphrase", "neighbourhood", "doubt"}
        assert count(s, "probes") == 2 * len(probes) - 3  # the file's set keeps all of its probes
        with pytest.raises(ValueError, match=r"left out the probes of type\(s\) dialogue .*cases build --set "
                                             r"smollm2-135m-n3-s0 --n 3 --seed 0"):
            load_case_set(s, "smollm2-135m-n3-s0")
        assert len(load_case_set(s, "smollm2-135m-n3-s0", needs=["plain", "doubt"])) == 3
        s.write_cases(cases, probes[:5])  # one case's probes again: the set still lacks dialogue on two
        assert queries.probes_left_out(s.conn) == {"smollm2-135m-n3-s0": ["dialogue"]}
        s.write_cases(cases, probes)
        assert queries.probes_left_out(s.conn) == {}
        assert len(load_case_set(s, "smollm2-135m-n3-s0")[0].probes) == 5

"""Tests of store.merge and `python -m compute store merge`: shards merged equal one store holding both, a second
merge changes nothing, a conflicting run or case is refused with nothing of its shard written, a partial run is
completed only from a shard that has more of it, an older shard is read from an upgraded copy and never written.

Stores are built from plain rows with store.db.Store; one test splits the compute-made fixture store in two.

Compared (`dump`): every table's rows, sorted, with three things left out: run_events rows of kind `merged`
(the merge's own record of where a run came from), `migrations.applied_at` (when the target's schema was
made) and the ids of the dictionary encoding (`measurement_names`, `measurement_values`), which depend on the
order names were first written: measurements are compared through the `measurements` view instead.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from compute.cli import main
from store import Store, StoreError
from store.db import ENCODED_VIEWS
from store.merge import MERGED_KIND, MergeConflict, merge_shard, merge_stores, run_tables
from store.schema import MIGRATIONS

OWNED = {"measurements", "generations", "abilities", "weight_drift", "run_events", "correlations",
         "edit_diagnostics"}


def run_row(run_id, **extra):
    row = dict(run_id=run_id, kind="robustness", model="tiny", editor="ROME", hparams=json.dumps({"layer": 1}),
               seed=0, config=json.dumps({"set": "set1"}), code_version="abc123", packages=json.dumps({"torch": "2"}),
               host=f"host-{run_id}", device="cpu", status="done", started_at="2026-01-01T00:00:00+00:00",
               finished_at="2026-01-01T01:00:00+00:00", heartbeat_at="2026-01-01T01:00:00+00:00", pid=11,
               n_total=2, n_done=2, timings=json.dumps({"edit": 1.5}))
    return row | extra


def put_run(st: Store, row: dict) -> None:
    cols = list(row)
    with st.conn:
        st.conn.execute(f"INSERT INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                        [row[c] for c in cols])


def put_case_rows(st: Store, cases=("c1", "c2", "c3"), wording="The capital of {} is") -> None:
    st.write_kb([{"relation": "capital", "subject_kind": "country", "description": "capital city",
                  "templates": ["The capital of {} is"]}],
                [{"subject": f"S{c}", "kind": "country", "aliases": [], "frequency": 3.5} for c in cases],
                [{"relation": "capital", "subject": f"S{c}", "object": "Paris", "cooccurrence": 2} for c in cases])
    st.write_cases([dict(case_id=c, case_set="set1", source="kb", relation="capital", subject=f"S{c}",
                         prompt="The capital of {} is", true_object="Paris", new_object="Rome", frequency=3.5,
                         created_at="2026-01-01") for c in cases],
                   [dict(case_id=c, probe_id=i, rephrase_type=t, text=wording.format(f"S{c}"), target_true=" Paris",
                         target_new=" Rome") for c in cases for i, t in enumerate(("plain", "paraphrase"))])


def put_run_rows(st: Store, run_id: str, cases=("c1", "c2"), value=0.5, text="Rome is", **run) -> None:
    """A run with rows in every table a run owns: per case measurements, generations and diagnostics; run-level
    abilities, weight drift, events and correlations."""
    put_run(st, run_row(run_id, **run))
    st.write_unit(
        measurements=[dict(run_id=run_id, case_id=c, edit_count=1, rephrase_type=t, metric=m, value=value)
                      for c in cases for t in ("plain", "paraphrase") for m in ("es", "acc")],
        generations=[dict(run_id=run_id, case_id=c, edit_count=1, rephrase_type="plain", probe_id=0, phase="post",
                          text=f"{text} {c}") for c in cases],
        diagnostics=[dict(run_id=run_id, edit_count=1, case_id=c, target="model.layers.1.mlp.down_proj",
                          name="update_norm", value=2.0) for c in cases])
    # checkpoints after each edit: a run further along holds the earlier ones too
    st.write_abilities([dict(run_id=run_id, edit_count=n, batch_size=1, task="sentiment", task_version="1",
                             mode="quick", score=0.7, n=40, ci_low=0.55, ci_high=0.82) for n in range(1, len(cases) + 1)])
    st.write_weight_drift([dict(run_id=run_id, edit_count=n, module="model.layers.1.mlp.down_proj",
                                fro_delta=1.25 * n, rel_change=0.01, cond_number=40.0) for n in range(1, len(cases) + 1)])
    st.write_events([dict(run_id=run_id, kind="phase", series="retention", edit_count=len(cases), end_count=9,
                          value=0.5, detail={"change_at": len(cases)})])
    st.replace_correlations(run_id, [dict(run_id=run_id, rephrase_type="plain", metric="es", feature="frequency",
                                          rho=-0.25 * len(cases), ci_low=-0.9, ci_high=0.4, n=len(cases))])


def build(path: Path, runs=("r1",), **kw) -> Path:
    with Store.open(path, create=True) as st:
        put_case_rows(st)
        for run_id in runs:
            put_run_rows(st, run_id, **kw)
    return path


def dump(path: Path, merged_events: bool = False) -> dict[str, list]:
    """Every table's rows, sorted (see the module docstring for what is left out)."""
    conn = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True)
    try:
        names = [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
                                            "AND name NOT LIKE 'sqlite_%'")]
        out = {}
        for name in names:
            if name == "measurement_names" or name in {table for table, _ in ENCODED_VIEWS.values()}:  # views read
                continue
            sql = {"migrations": "SELECT version, name FROM migrations",
                   "run_events": "SELECT * FROM run_events" + ("" if merged_events else f" WHERE kind != '{MERGED_KIND}'")
                   }.get(name, f'SELECT * FROM "{name}"')
            out[name] = sorted(conn.execute(sql).fetchall(), key=repr)
        return out
    finally:
        conn.close()


def test_every_table_a_run_owns_is_merged(tmp_path):
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        assert {name for name, _, _ in run_tables(st.conn)} == OWNED


def test_merging_two_shards_equals_one_store_holding_both(tmp_path):
    a, b = build(tmp_path / "a.sqlite", ["r1"]), build(tmp_path / "b.sqlite", ["r2"])
    both = build(tmp_path / "both.sqlite", ["r1", "r2"])
    reports = merge_stores([a, b], tmp_path / "t.sqlite")
    assert [r.runs_new for r in reports] == [["r1"], ["r2"]]
    got, want = dump(tmp_path / "t.sqlite"), dump(both)
    assert got == want
    assert all(got[t] for t in OWNED | {"runs", "cases", "probes", "kb_facts"})  # nothing compared empty


def test_each_run_records_the_shard_it_came_from(tmp_path):
    a = build(tmp_path / "a.sqlite", ["r1", "r2"])
    merge_stores([a], tmp_path / "t.sqlite")
    with Store.open(tmp_path / "t.sqlite", readonly=True) as st:
        rows = st.conn.execute("SELECT run_id, series, edit_count, value, detail FROM run_events WHERE kind = ?",
                               (MERGED_KIND,)).fetchall()
    assert [r[:3] for r in sorted(rows)] == [("r1", str(a.resolve()), 2), ("r2", str(a.resolve()), 2)]
    detail = json.loads(rows[0][4])
    assert detail["how"] == "new" and detail["rows_added"]["measurements"] == 8 and rows[0][3] > 8


def test_merging_the_same_shard_twice_changes_nothing(tmp_path):
    a = build(tmp_path / "a.sqlite", ["r1"])
    target = tmp_path / "t.sqlite"
    merge_stores([a], target)
    before = dump(target, merged_events=True)
    (again,) = merge_stores([a], target)
    assert dump(target, merged_events=True) == before
    assert (again.runs_unchanged, again.runs_new, again.changed) == (["r1"], [], False)


def test_a_shard_is_never_written(tmp_path):
    a = build(tmp_path / "a.sqlite", ["r1"])
    with Store.open(a) as st:
        st.finalize()
    before = a.read_bytes()
    merge_stores([a, a], tmp_path / "t.sqlite")
    assert a.read_bytes() == before and not Path(f"{a}-wal").exists()


def test_two_researchers_stores_combine_and_keep_their_cases(tmp_path):
    mine = build(tmp_path / "mine.sqlite", ["r1"])
    theirs = tmp_path / "theirs.sqlite"
    with Store.open(theirs, create=True) as st:
        put_case_rows(st, cases=("c1", "c4"))
        put_run_rows(st, "r9", cases=("c4",), editor="MEMIT")
    (report,) = merge_stores([theirs], mine)
    with Store.open(mine, readonly=True) as st:
        runs = dict(st.conn.execute("SELECT run_id, editor FROM runs").fetchall())
        cases = [c for (c,) in st.conn.execute("SELECT case_id FROM cases ORDER BY case_id")]
        n_probes = st.conn.execute("SELECT count(*) FROM probes WHERE case_id = 'c4'").fetchone()[0]
    assert runs == {"r1": "ROME", "r9": "MEMIT"} and cases == ["c1", "c2", "c3", "c4"] and n_probes == 2
    assert report.rows_added["cases"] == 1 and report.rows_added["kb_subjects"] == 1


@pytest.mark.parametrize("change, message", [
    ({"config": json.dumps({"set": "other"})}, r"run r1 is also in the target with other settings \(config"),
    ({"hparams": json.dumps({"layer": 2})}, r"run r1 .*hparams"),
    ({"value": 0.75}, r"run r1 holds 8 measurements row\(s\) that differ .*value 0.5 in the target, 0.75 in the shard"),
    ({"text": "Paris is"}, r"run r1 holds 2 generations row\(s\) that differ"),
])
def test_a_conflicting_run_is_refused_and_nothing_of_its_shard_is_written(tmp_path, change, message):
    target = build(tmp_path / "t.sqlite", ["r1"])
    shard = tmp_path / "s.sqlite"
    with Store.open(shard, create=True) as st:
        put_case_rows(st, cases=("c1", "c2", "c3", "c5"))
        put_run_rows(st, "r0")  # a run the target lacks, first: it must not be written either
        put_run_rows(st, "r1", cases=("c1", "c2", "c3"), **change)
    before = dump(target, merged_events=True)
    with pytest.raises(MergeConflict, match=message) as exc:
        merge_stores([shard], target)
    assert "nothing of this shard was written" in str(exc.value)
    assert dump(target, merged_events=True) == before


def test_a_case_with_other_probes_is_a_conflict(tmp_path):
    target = build(tmp_path / "t.sqlite", [])
    shard = tmp_path / "s.sqlite"
    with Store.open(shard, create=True) as st:
        put_case_rows(st, wording="Where is the capital of {}?")
    before = dump(target)
    with pytest.raises(MergeConflict, match="case c1 has other probes"):
        merge_stores([shard], target)
    assert dump(target) == before


def test_a_partial_run_is_completed_from_a_shard_that_has_more_of_it(tmp_path):
    partial = build(tmp_path / "t.sqlite", ["r1"], cases=("c1",), status="interrupted", n_done=1)
    full = build(tmp_path / "full.sqlite", ["r1"], cases=("c1", "c2"))
    (report,) = merge_stores([full], partial)
    assert report.runs_taken_over == ["r1"]
    assert dump(partial) == dump(full)  # the run row, derived events and correlations are the shard's too


def test_a_run_extended_to_more_edits_in_the_shard_is_taken_over(tmp_path):
    short = build(tmp_path / "t.sqlite", ["r1"], cases=("c1",), n_done=1, config=json.dumps({"set": "set1", "max_edits": 1}))
    longer = build(tmp_path / "s.sqlite", ["r1"], cases=("c1", "c2"), config=json.dumps({"set": "set1", "max_edits": 2}))
    (report,) = merge_stores([longer], short)
    assert report.runs_taken_over == ["r1"] and dump(short) == dump(longer)
    (back,) = merge_stores([build(tmp_path / "b.sqlite", ["r1"], cases=("c1",), n_done=1,
                                  config=json.dumps({"set": "set1", "max_edits": 1}))], short)
    assert back.runs_unchanged == ["r1"] and dump(short) == dump(longer)


def test_copies_grown_apart_with_other_configs_are_a_conflict(tmp_path):
    one = build(tmp_path / "t.sqlite", ["r1"], cases=("c1",), config=json.dumps({"set": "set1", "max_edits": 1}))
    two = build(tmp_path / "s.sqlite", ["r1"], cases=("c2",), config=json.dumps({"set": "set1", "max_edits": 2}))
    before = dump(one)
    with pytest.raises(MergeConflict, match="run r1 has grown apart"):
        merge_stores([two], one)
    assert dump(one) == before


def test_a_run_taken_over_keeps_the_targets_log_events(tmp_path):
    partial = build(tmp_path / "t.sqlite", ["r1"], cases=("c1",), status="interrupted", n_done=1)
    with Store.open(partial) as st:
        st.write_events([dict(run_id="r1", kind="plan_unit", series="key1", edit_count=0, detail={"unit": "u"})])
    full = build(tmp_path / "full.sqlite", ["r1"], cases=("c1", "c2"))
    merge_stores([full], partial)
    with Store.open(partial, readonly=True) as st:
        kinds = st.conn.execute("SELECT kind, edit_count FROM run_events ORDER BY kind").fetchall()
    assert kinds == [("merged", 2), ("phase", 2), ("plan_unit", 0)]  # the old phase row (at 1) replaced


def test_a_verdict_the_shard_no_longer_derives_is_gone_from_the_target(tmp_path):
    """A disabling edit found early in a run (in the target from a progress merge) and dropped when the run's
    distribution of updates grew is not in the shard: taking the run over deletes it from the target."""
    partial = build(tmp_path / "t.sqlite", ["r1"], cases=("c1",), status="interrupted", n_done=1)
    with Store.open(partial) as st:
        st.write_events([dict(run_id="r1", kind="disabling_edit", series="update_norm", edit_count=1, value=0.03)])
    full = build(tmp_path / "full.sqlite", ["r1"], cases=("c1", "c2"))
    merge_stores([full], partial)
    with Store.open(partial, readonly=True) as st:
        kinds = [k for (k,) in st.conn.execute("SELECT kind FROM run_events WHERE run_id = 'r1' ORDER BY kind")]
    assert "disabling_edit" not in kinds and "phase" in kinds


def test_a_partial_shard_never_overwrites_a_run_the_target_has_more_of(tmp_path):
    full = build(tmp_path / "t.sqlite", ["r1"], cases=("c1", "c2"))
    partial = build(tmp_path / "p.sqlite", ["r1"], cases=("c1",), status="interrupted", n_done=1)
    before = dump(full)
    (report,) = merge_stores([partial], full)
    assert report.runs_unchanged == ["r1"] and dump(full) == before


def test_parts_of_one_run_from_two_shards_are_joined(tmp_path):
    one = build(tmp_path / "one.sqlite", ["r1"], cases=("c1",), n_done=1)
    two = build(tmp_path / "two.sqlite", ["r1"], cases=("c2",), n_done=1, status="interrupted")
    target = tmp_path / "t.sqlite"
    first, second = merge_stores([one, two], target)
    assert first.runs_new == ["r1"] and second.runs_joined == ["r1"] and "store rederive" in second.summary()
    with Store.open(target, readonly=True) as st:
        cases = {c for (c,) in st.conn.execute("SELECT DISTINCT case_id FROM measurements WHERE run_id = 'r1'")}
        status = st.conn.execute("SELECT status FROM runs").fetchone()[0]
    assert cases == {"c1", "c2"} and status == "done"  # the target's runs row is kept


def test_an_older_shard_is_read_from_an_upgraded_copy_and_left_as_it_was(tmp_path):
    old = tmp_path / "old.sqlite"
    with Store.open(old, create=True, migrations=MIGRATIONS[:5]) as st:  # measurements still a plain table
        put_case_rows(st)
        put_run(st, run_row("r1"))
        st.write_measurements([dict(run_id="r1", case_id="c1", edit_count=1, rephrase_type="plain", metric="es",
                                    value=1.0)])
        st.finalize()
    before = old.read_bytes()
    (report,) = merge_stores([old], tmp_path / "t.sqlite")
    assert report.migrated_from == 5 and "upgraded from schema v5" in report.summary()
    assert old.read_bytes() == before
    with Store.open(tmp_path / "t.sqlite", readonly=True) as st:
        assert st.conn.execute("SELECT metric, value FROM measurements WHERE run_id = 'r1'").fetchall() == [("es", 1.0)]


def test_a_newer_shard_is_refused_with_what_to_do(tmp_path):
    from store.schema import Migration

    newer = tmp_path / "new.sqlite"
    Store.open(newer, create=True, migrations=MIGRATIONS + (Migration(len(MIGRATIONS) + 1, "x", "CREATE TABLE x (a)"),)
               ).close()
    before = newer.read_bytes()
    with pytest.raises(StoreError, match="newer EditScope .*Update the code"):
        merge_stores([newer], tmp_path / "t.sqlite")
    assert newer.read_bytes() == before


def test_a_missing_shard_or_the_target_itself_is_refused(tmp_path):
    target = build(tmp_path / "t.sqlite", ["r1"])
    with Store.open(target) as st:
        with pytest.raises(StoreError, match="No store at .*check the shard's path"):
            merge_shard(st, tmp_path / "nope.sqlite")
        with pytest.raises(StoreError, match="is the target store itself"):
            merge_shard(st, target)


def test_store_merge_command(tmp_path, capsys):
    a, b = build(tmp_path / "a.sqlite", ["r1"]), build(tmp_path / "b.sqlite", ["r2"])
    bad = build(tmp_path / "bad.sqlite", ["r1"], value=0.25)
    target = tmp_path / "t.sqlite"
    assert main(["store", "merge", str(a), str(bad), str(b), "--into", str(target)]) == 2
    out, err = capsys.readouterr()
    assert "a.sqlite: 1 new run(s)" in out and "b.sqlite: 1 new run(s)" in out
    lines = err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("refused: ") and "run r1 holds" in lines[0]
    assert lines[1].startswith("error: 1 of 3 shard(s) not merged") and "bad.sqlite" in lines[1]
    with Store.open(target, readonly=True) as st:
        assert [r for (r,) in st.conn.execute("SELECT run_id FROM runs ORDER BY run_id")] == ["r1", "r2"]
    assert main(["store", "merge", str(a), "--into", str(target)]) == 0
    assert "0 new run(s); 1 already there; rows added: none" in capsys.readouterr().out
    assert main(["store", "merge", str(a)]) == 2  # --into is required
    assert "--into" in capsys.readouterr().err


def test_the_compute_made_store_split_in_two_and_merged_is_the_same_store(tmp_path, fixture_store):
    """The fixture store (knowledge, robustness, sequential, batch and abilities runs made by the compute code on
    the tiny model) split by run into two shards, then merged into a new store."""
    with Store.open(fixture_store, readonly=True) as st:
        runs = [r for (r,) in st.conn.execute("SELECT run_id FROM runs ORDER BY started_at, run_id")]
    assert len(runs) >= 6
    shards = []
    for i, keep in enumerate((runs[::2], runs[1::2])):
        shard = tmp_path / f"shard{i}.sqlite"
        src, dst = sqlite3.connect(fixture_store.resolve().as_uri() + "?mode=ro", uri=True), sqlite3.connect(shard)
        src.backup(dst)
        src.close()
        dst.execute("PRAGMA foreign_keys = ON")
        dst.executemany("DELETE FROM runs WHERE run_id = ?", [(r,) for r in runs if r not in keep])
        dst.commit()
        dst.close()
        shards.append(shard)
    reports = merge_stores(shards, tmp_path / "merged.sqlite")
    assert sorted(r for rep in reports for r in rep.runs_new) == sorted(runs)
    got, want = dump(tmp_path / "merged.sqlite"), dump(fixture_store)
    assert got.keys() == want.keys()
    assert all(want[t] for t in OWNED | {"cases", "probes", "kb_facts"}), {t: len(want[t]) for t in OWNED}
    for table in want:
        assert got[table] == want[table], table


def test_a_retimed_edit_is_not_a_conflict_but_another_value_is(tmp_path):
    """A resumed run that redid an edit measured its time again: the shard's duration replaces the target's; any
    other differing value still refuses the shard."""
    from store.merge import MergeConflict, merge_stores

    def make(path, seconds, es):
        s = Store.open(path, create=True)
        s.start_run(kind="sequential", model="m", editor="ROME", run_id="seq")
        s.write_measurements([
            {"run_id": "seq", "case_id": "c", "edit_count": 1, "rephrase_type": "edit", "metric": "edit_seconds",
             "value": seconds},
            {"run_id": "seq", "case_id": "c", "edit_count": 1, "rephrase_type": "plain", "metric": "es", "value": es}])
        s.close()

    make(tmp_path / "t.sqlite", 0.02, 1.0)
    make(tmp_path / "s.sqlite", 0.04, 1.0)
    merge_stores([tmp_path / "s.sqlite"], tmp_path / "t.sqlite")
    with Store.open(tmp_path / "t.sqlite", readonly=True) as t:
        assert t.conn.execute("SELECT value FROM measurements WHERE metric = 'edit_seconds'").fetchone()[0] == 0.04
    make(tmp_path / "s2.sqlite", 0.04, 0.0)
    with pytest.raises(MergeConflict, match="differ"):
        merge_stores([tmp_path / "s2.sqlite"], tmp_path / "t.sqlite")


def test_a_run_the_shard_owns_is_made_the_shards_copy(tmp_path):
    """A plan unit's shard is the one writer of its runs: a sequential run killed between checkpoints resumes from
    the earlier one and recomputes the edits after it, which the target already holds from the killed process's
    progress, equal or not in the last digit (the rebuild, 2026-12-07: v0_norm 58.906693 in the target, 58.906689
    recomputed). Owned, the run's rows take the shard's values and those the shard dropped go, in every table; not
    owned, the same shard is refused and nothing is written."""
    target = build(tmp_path / "t.sqlite", cases=("c1", "c2", "c3"))
    shard = build(tmp_path / "s.sqlite", cases=("c1", "c2"), value=0.5 + 2 ** -20)  # recomputed, last digits
    with Store.open(shard) as st:  # and one more value the killed process never wrote
        st.write_measurements([dict(run_id="r1", case_id="c1", edit_count=2, rephrase_type="plain", metric="es",
                                    value=1.0)])
    before = dump(target)
    with pytest.raises(MergeConflict, match="differ"):
        merge_stores([shard], target)
    assert dump(target) == before
    report = merge_stores([shard], target, own=["r1"])[0]
    assert report.runs_mirrored == ["r1"] and "rows replaced or removed" in report.summary()
    after, theirs = dump(target), dump(shard)
    for table in OWNED - {"run_events"}:
        assert after[table] == theirs[table], table
    assert after["runs"] == theirs["runs"]
    merged = json.loads(sqlite3.connect(target).execute(
        "SELECT detail FROM run_events WHERE kind = ?", (MERGED_KIND,)).fetchone()[0])
    assert merged["how"] == "made the shard's copy"
    # c3's rows (the killed process got further) went, c1 and c2's values took the shard's (their texts agreed)
    assert merged["rows_replaced"]["measurements"] == 12 and merged["rows_replaced"]["generations"] == 1
    # how far the replaced numbers moved is on record: here the last digits of a measurement
    change = merged["largest_change"]
    assert (change["table"], change["column"], change["target"]) == ("measurements", "value", 0.5)
    assert change["relative"] == pytest.approx(2 ** -20 / (0.5 + 2 ** -20)) and report.largest_change() == \
        change["relative"] and "largest relative change of a replaced number: 1.9e-06" in report.summary()
    assert merge_stores([shard], target, own=["r1"])[0].runs_unchanged == ["r1"]  # once is enough


def test_probes_a_store_left_out_are_no_conflict_and_come_back_from_a_store_that_kept_them(tmp_path):
    """A committed store keeps only the probes its runs read (Store.leave_out_unread_probes): merging a full store
    into it is no conflict and brings the left-out probes back (the record then clears); merging it into a full
    store is no conflict and loses nothing; a new case set from it keeps its record in the target."""
    from store import queries

    def pruned(path, runs=("r1",)):
        build(path, runs)
        with Store.open(path) as st:
            st.conn.execute("DELETE FROM measurements WHERE rephrase_type = 'paraphrase'")
            st.conn.commit()
            assert st.leave_out_unread_probes(keep=("plain",)) == {"set1": ["paraphrase"]}
        return path

    full, small = build(tmp_path / "full.sqlite", ["r1"]), pruned(tmp_path / "small.sqlite")
    before = dump(full)
    merge_stores([small], full)
    assert {k: v for k, v in dump(full).items() if k != "run_events"} == {
        k: v for k, v in before.items() if k != "run_events"}  # nothing lost, nothing refused
    target = pruned(tmp_path / "t.sqlite")
    (report,) = merge_stores([build(tmp_path / "f2.sqlite", ["r2"])], target)
    assert report.rows_added.get("probes") == 3
    with Store.open(target, readonly=True) as st:
        assert st.conn.execute("SELECT count(*) FROM probes WHERE rephrase_type = 'paraphrase'").fetchone()[0] == 3
        assert queries.probes_left_out(st.conn) == {}
    empty = tmp_path / "empty.sqlite"
    Store.open(empty, create=True).close()
    merge_stores([pruned(tmp_path / "s3.sqlite")], empty)
    with Store.open(empty, readonly=True) as st:
        assert queries.probes_left_out(st.conn) == {"set1": ["paraphrase"]}

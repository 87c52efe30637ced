"""Tests of store.queries on a small store written through the Store API."""

from __future__ import annotations

import polars as pl
import pytest

from store.schema import MIGRATIONS

from store import Store
from store import queries as q


def case(case_id, case_set="kb-small", relation="capital", subject=None, **extra):
    return dict(case_id=case_id, case_set=case_set, source="kb", relation=relation,
                subject=subject or f"S{case_id}", prompt="The capital of {} is", true_object="Paris",
                new_object="Rome", true_aliases=["City of Light"], frequency=4.0, popularity_quartile=2) | extra


def meas(run_id, case_id, metric, value, rephrase_type="plain", edit_count=0):
    return dict(run_id=run_id, case_id=case_id, metric=metric, value=value, rephrase_type=rephrase_type,
                edit_count=edit_count)


def set_started(s, run_id, when):
    s.conn.execute("UPDATE runs SET started_at = ? WHERE run_id = ?", (when, run_id))


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path / "q.sqlite", create=True) as s:
        s.write_kb(
            [dict(relation="capital", subject_kind="country", description="capital city of a country"),
             dict(relation="currency", subject_kind="country", description="currency of a country"),
             dict(relation="symbol", subject_kind="element", description="chemical symbol")],
            [dict(subject="France", kind="country", aliases=["French Republic"], frequency=5.5, connection=3),
             dict(subject="Peru", kind="country", aliases=[], frequency=4.2, connection=2)],
            [dict(relation="capital", subject="France", object="Paris", cooccurrence=7),
             dict(relation="currency", subject="France", object="Euro", object_aliases=["EUR"], cooccurrence=3),
             dict(relation="capital", subject="Peru", object="Lima", cooccurrence=2)],
        )
        s.write_cases(
            [case("c1", subject="France"), case("c2", subject="Peru"), case("c3", subject="Cote_d"),
             case("z1", case_set="cf-10", relation="currency", subject="Japan", source="counterfact")],
            [dict(case_id="c1", probe_id=i, rephrase_type=t, text=f"probe {i}", target_true="Paris",
                  target_new="Rome") for i, t in ((1, "paraphrase"), (0, "plain"), (2, "doubt"))],
        )
        old = s.start_run(kind="knowledge", model="smol", run_id="k-old")
        new = s.start_run(kind="knowledge", model="smol", run_id="k-new")
        s.start_run(kind="robustness", model="smol", editor="rome", run_id="rob", n_total=4)
        set_started(s, old, "2025-01-01T00:00:00+00:00")
        set_started(s, new, "2025-02-01T00:00:00+00:00")
        set_started(s, "rob", "2025-03-01T00:00:00+00:00")
        s.finish_run(old)
        s.finish_run(new)
        s.heartbeat("rob", n_done=1)
        s.write_measurements(
            [meas(old, "c1", "p_true", 0.1)]
            + [meas(new, "c1", "p_true", 0.6), meas(new, "c1", "rank_true", 1), meas(new, "c1", "recall", 1),
               meas(new, "c1", "nll_true", 0.5), meas(new, "c2", "p_true", 0.2),
               meas(new, "c1", "p_true", 0.9, rephrase_type="paraphrase"),
               meas(new, "c1", "p_true", 0.0, edit_count=3)]
            + [meas("rob", "c1", "es", 1.0), meas("rob", "c1", "es", 0.0, rephrase_type="doubt"),
               meas("rob", "c2", "es", 1.0), meas("rob", "c1", "ps", 0.5)]
        )
        yield s


# overview -----------------------------------------------------------------------------------------

def test_store_summary_counts_rows_of_every_table(store):
    summary = q.store_summary(store.conn)
    rows = dict(summary.iter_rows())
    assert summary.columns == ["table", "rows"]
    assert summary["table"][0] == "meta"
    assert (rows["runs"], rows["cases"], rows["probes"], rows["kb_facts"], rows["abilities"]) == (3, 4, 3, 3, 0)


def test_store_summary_of_a_fresh_store(tmp_path):
    with Store.open(tmp_path / "fresh.sqlite", create=True) as s:
        rows = dict(q.store_summary(s.conn).iter_rows())
    assert rows["migrations"] == len(MIGRATIONS) and rows["measurements"] == 0
    assert {"runs", "kb_relations", "kb_subjects", "weight_drift", "run_events"} <= set(rows)


def test_schema_history_lists_applied_migrations(store):
    history = q.schema_history(store.conn)
    assert history.select("version", "name").rows() == [(m.version, m.name) for m in MIGRATIONS]


def test_list_runs_newest_first_with_progress(store):
    runs = q.list_runs(store.conn)
    assert runs["run_id"].to_list() == ["rob", "k-new", "k-old"]
    assert runs.filter(pl.col("run_id") == "rob")["progress"].item() == pytest.approx(0.25)
    assert runs.filter(pl.col("run_id") == "k-new")["progress"].item() is None


def test_list_runs_filters_by_kind_and_status(store):
    assert q.list_runs(store.conn, kind="knowledge")["run_id"].to_list() == ["k-new", "k-old"]
    assert q.list_runs(store.conn, status="running")["run_id"].to_list() == ["rob"]


def test_list_runs_empty_result_keeps_columns_and_types(store):
    runs = q.list_runs(store.conn, kind="sweep")
    assert runs.height == 0
    assert {"run_id", "status", "n_done", "progress"} <= set(runs.columns)
    assert runs.schema["n_done"] == pl.Int64 and runs.schema["run_id"] == pl.Utf8


# knowledge base -----------------------------------------------------------------------------------

def test_kb_relations_counts_facts_and_subjects(store):
    rel = q.kb_relations(store.conn)
    rows = {r["relation"]: r for r in rel.iter_rows(named=True)}
    assert rel.columns[:5] == ["relation", "description", "subject_kind", "n_facts", "n_subjects"]
    assert (rows["capital"]["n_facts"], rows["capital"]["n_subjects"]) == (2, 2)
    assert (rows["symbol"]["n_facts"], rows["symbol"]["n_subjects"]) == (0, 0)


def test_kb_subject_joins_facts_with_features(store):
    facts = q.kb_subject(store.conn, "France")
    assert facts["object"].to_list() == ["Paris", "Euro"]
    assert set(facts["frequency"].to_list()) == {5.5}
    assert facts["aliases"][0] == '["French Republic"]'


def test_kb_subject_unknown_gives_empty_frame_with_columns(store):
    facts = q.kb_subject(store.conn, "Atlantis")
    assert facts.height == 0 and "frequency" in facts.columns
    assert facts.schema["frequency"] == pl.Float64


def test_kb_facts_filters_by_relation_and_limits(store):
    assert q.kb_facts(store.conn).height == 3
    assert q.kb_facts(store.conn, relation="capital")["object"].to_list() == ["Paris", "Lima"]
    assert q.kb_facts(store.conn, limit=1).height == 1
    assert q.kb_facts(store.conn, limit=0).columns == q.kb_facts(store.conn).columns


def test_kb_facts_rejects_a_bad_limit(store):
    with pytest.raises(ValueError, match="limit"):
        q.kb_facts(store.conn, limit=-2)


# cases --------------------------------------------------------------------------------------------

def test_cases_filters_by_set_and_relation(store):
    assert q.cases(store.conn)["case_id"].to_list() == ["z1", "c1", "c2", "c3"]
    assert q.cases(store.conn, case_set="kb-small").height == 3
    assert q.cases(store.conn, relation="currency")["case_id"].to_list() == ["z1"]


def test_cases_subject_like_is_a_case_insensitive_substring(store):
    assert q.cases(store.conn, subject_like="fra")["subject"].to_list() == ["France"]
    assert q.cases(store.conn, subject_like="_")["subject"].to_list() == ["Cote_d"]
    assert q.cases(store.conn, subject_like="%").height == 0


def test_filter_values_are_parameters_not_sql(store):
    assert q.cases(store.conn, case_set="x' OR '1'='1").height == 0
    assert q.measurements(store.conn, run_ids="rob' --").height == 0
    assert q.cases(store.conn).height == 4


def test_json_columns_come_back_as_strings(store):
    row = q.cases(store.conn, case_set="kb-small").row(0, named=True)
    assert row["true_aliases"] == '["City of Light"]'
    assert row["popularity_quartile"] == 2


def test_case_sets_summarises_each_set(store):
    sets = q.case_sets(store.conn)
    assert sets.select("case_set", "sources", "n_cases", "n_relations").rows() == [
        ("cf-10", "counterfact", 1, 1), ("kb-small", "kb", 3, 1)]


def test_probes_of_a_case_in_probe_order(store):
    probes = q.probes(store.conn, "c1")
    assert probes["probe_id"].to_list() == [0, 1, 2]
    assert probes["rephrase_type"].to_list() == ["plain", "paraphrase", "doubt"]
    assert q.probes(store.conn, "none").columns == probes.columns


# knowledge ------------------------------------------------------------------------------------------

def test_case_knowledge_pivots_the_newest_knowledge_run(store):
    know = q.case_knowledge(store.conn, case_set="kb-small")
    c1 = know.filter(pl.col("case_id") == "c1").row(0, named=True)
    assert (c1["p_true"], c1["rank_true"], c1["recall"], c1["nll_true"]) == (0.6, 1.0, 1.0, 0.5)
    assert c1["knowledge_run_id"] == "k-new"
    assert know.filter(pl.col("case_id") == "c3")["p_true"].item() is None


def test_case_knowledge_keeps_every_case_and_case_columns(store):
    know = q.case_knowledge(store.conn)
    assert know["case_id"].to_list() == q.cases(store.conn)["case_id"].to_list()
    assert know.columns[: len(q.cases(store.conn).columns)] == q.cases(store.conn).columns
    assert know.columns.index("p_true") < know.columns.index("nll_true")


def test_case_knowledge_of_a_given_run(store):
    know = q.case_knowledge(store.conn, run_id="k-old")
    assert know.filter(pl.col("case_id") == "c1")["p_true"].item() == 0.1
    assert know["recall"].null_count() == know.height


def test_case_knowledge_prefers_a_finished_run_over_a_newer_running_one(store):
    store.start_run(kind="knowledge", model="smol", run_id="k-running")
    store.write_measurements([meas("k-running", "c1", "p_true", 0.99)])
    assert q.newest_knowledge_run(store.conn) == "k-new"
    assert q.newest_knowledge_run(store.conn, model="gpt2") is None


def test_case_knowledge_without_any_knowledge_run_has_null_metric_columns(tmp_path):
    with Store.open(tmp_path / "k.sqlite", create=True) as s:
        s.write_cases([case("c1")], [])
        know = q.case_knowledge(s.conn)
    assert know.select("p_true", "rank_true", "recall").rows() == [(None, None, None)]
    assert know.schema["p_true"] == pl.Float64 and know["knowledge_run_id"].item() is None


# measurements and other run tables -------------------------------------------------------------------

def test_measurements_filters_combine(store):
    m = q.measurements(store.conn, run_ids="rob", metrics="es")
    assert m.height == 3
    doubt = q.measurements(store.conn, run_ids=["rob"], metrics=["es"], rephrase_types="doubt")
    assert doubt["value"].to_list() == [0.0]
    assert q.measurements(store.conn, run_ids=["k-new", "rob"], edit_count=3)["value"].to_list() == [0.0]
    assert q.measurements(store.conn, case_ids="c2")["run_id"].to_list() == ["k-new", "rob"]


def test_measurements_empty_filter_list_gives_typed_empty_frame(store):
    m = q.measurements(store.conn, run_ids=[])
    assert m.height == 0
    assert m.schema == pl.Schema({"run_id": pl.Utf8, "case_id": pl.Utf8, "edit_count": pl.Int64,
                                  "rephrase_type": pl.Utf8, "metric": pl.Utf8, "value": pl.Float64})


def test_generations_put_pre_before_post(store):
    store.write_generations([
        dict(run_id="rob", case_id="c1", probe_id=0, rephrase_type="plain", phase=phase, text=text)
        for phase, text in (("post", "Rome"), ("pre", "Paris"))
    ])
    gens = q.generations(store.conn, "rob", case_id="c1")
    assert gens.select("phase", "text").rows() == [("pre", "Paris"), ("post", "Rome")]


def test_abilities_and_weight_drift_filter_by_run(store):
    store.write_abilities([dict(run_id="rob", edit_count=e, batch_size=1, task="arith", mode="gen", score=s)
                           for e, s in ((0, 0.8), (10, 0.6))])
    store.write_weight_drift([dict(run_id="rob", edit_count=10, module="m.4", fro_delta=0.3)])
    assert q.abilities(store.conn, run_ids="rob")["score"].to_list() == [0.8, 0.6]
    assert q.abilities(store.conn, run_ids="k-new").height == 0
    assert q.weight_drift(store.conn)["fro_delta"].to_list() == [0.3]


def test_queries_work_on_a_read_only_connection(store):
    with Store.open(store.path, readonly=True) as ro:
        assert q.measurements(ro.conn, run_ids="rob").height == 4
        assert q.case_knowledge(ro.conn).height == 4
        # every table of the latest schema and the measurements view (v6: two encoded tables behind it; v7:
        # edit_diagnostics; v8: its encoded table behind a view of that name)
        tables = q.store_summary(ro.conn)["table"].to_list()
        assert len(tables) == 18 and {"edit_diagnostics", "edit_diagnostic_values"} <= set(tables)


def test_popularity_points_are_keyed_by_run_never_by_editor(tmp_path):
    with Store.open(tmp_path / "p.sqlite", create=True) as s:
        s.write_cases([case("c1", frequency=2.0), case("c2", frequency=5.0)], [])
        k = s.start_run(kind="knowledge", model="m", run_id="k")
        s.finish_run(k)
        a = s.start_run(kind="robustness", model="m", editor="ROME", run_id="a")
        b = s.start_run(kind="robustness", model="m", editor="ROME", run_id="b")
        s.write_measurements([meas(k, "c1", "rev", 1.0), meas(k, "c2", "rev", 0.0),
                              meas(a, "c1", "rev", 1.0, edit_count=1), meas(a, "c2", "rev", 1.0, edit_count=1),
                              meas(b, "c1", "rev", 0.0, edit_count=1)])
        pts = q.popularity_points_of_runs(s.conn, ["a", "b"], "frequency", "rev", "plain")
        by = {r: sorted(pts.filter(pl.col("series") == r)["value"].to_list()) for r in ("a", "b", "unedited")}
        assert by == {"a": [1.0, 1.0], "b": [0.0], "unedited": [0.0, 1.0]}
        assert q.popularity_points_of_runs(s.conn, ["a"], "frequency", "rev", unedited=False)["series"].unique().to_list() == ["a"]
        with pytest.raises(ValueError, match="popularity feature"):
            q.popularity_points_of_runs(s.conn, ["a"], "nonsense")
        assert q.rephrase_measurability(s.conn, run_id="a")["baseline_run"].to_list() == ["k"]


def test_the_plan_status_a_snapshot_kept_reads_as_rows_and_a_damaged_record_as_none(tmp_path):
    """store.queries.plan_status: compute.plan.status_record's JSON in the meta table, one row per unit in the
    plan's order; a record that is not one reads as no record (the Overview then says nothing of a plan)."""
    import json

    from store import Store, queries
    from store.conventions import PLAN_STATUS_META

    path = tmp_path / "s.sqlite"
    with Store.open(path, create=True) as st:
        assert queries.plan_status(st.conn).is_empty()
        units = [{"unit": "kb", "kind": "kb", "state": "done", "held": False, "other_hparams": False, "done": None,
                  "total": None, "cpu_h_left": None, "estimated": True, "runs": []},
                 {"unit": "seq", "kind": "sequential", "state": "partial", "held": False, "other_hparams": False,
                  "done": 210, "total": 500, "cpu_h_left": 2.04, "estimated": True, "runs": ["r1", "r2"]}]
        for value, n in [(json.dumps({"plan": "plans/p.toml", "taken_at": "2026-12-07T09:00Z", "units": units}), 2),
                         ("{not json", 0), (json.dumps({"units": [1, 2]}), 0), (json.dumps([1]), 0)]:
            with st.conn:
                st.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (PLAN_STATUS_META, value))
            got = queries.plan_status(st.conn)
            assert got.height == n and got.columns[:3] == ["plan", "taken_at", "unit"], value
    assert got.is_empty()
    with Store.open(path) as st, st.conn:
        st.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (PLAN_STATUS_META, json.dumps(
            {"plan": "plans/p.toml", "taken_at": "2026-12-07T09:00Z", "units": units})))
    with Store.open(path, readonly=True) as st:
        got = queries.plan_status(st.conn)
    assert got.select("unit", "state", "done", "total", "runs").rows() == [
        ("kb", "done", None, None, ""), ("seq", "partial", 210, 500, "r1,r2")]

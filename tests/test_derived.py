"""Derived tables and rank statistics: hand-made stores with known answers."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from store import Store, derived
from store.stats import rankdata, spearman, spearman_ci


def _store(tmp_path, recall_by_quartile):
    st = Store.open(tmp_path / "d.sqlite", create=True)
    run = st.start_run(kind="knowledge", model="m")
    cases, rows = [], []
    for q, hits in recall_by_quartile.items():
        for i, hit in enumerate(hits):
            cid = f"c{q}-{i}"
            cases.append({"case_id": cid, "case_set": "s", "source": "kb", "relation": "capital", "subject": f"S{q}{i}",
                          "prompt": f"The capital of S{q}{i} is", "true_object": "A", "new_object": "B",
                          "frequency": q + i / 10, "connection": 1, "popularity_quartile": q})
            rows += [{"run_id": run, "case_id": cid, "rephrase_type": "plain", "metric": "recall", "value": hit},
                     {"run_id": run, "case_id": cid, "rephrase_type": "plain", "metric": "p_true", "value": hit / 2}]
    st.write_cases(cases, [])
    st.write_measurements(rows)
    st.finish_run(run)
    return st


def test_recall_by_quartile_counts_and_wilson_interval(tmp_path):
    with _store(tmp_path, {1: [0, 0, 0, 1], 2: [1, 1, 0, 0], 4: [1, 1, 1, 1]}) as st:
        df = derived.knowledge_by_quartile(st.conn, case_set="s")
    assert df["quartile"].to_list() == [1, 2, 4]
    assert df["n"].to_list() == [4, 4, 4]
    assert df["recall"].to_list() == [0.25, 0.5, 1.0]
    assert df["ci_high"][2] == pytest.approx(1.0) and df["ci_low"][2] < 1.0


def test_correlations_see_recall_rise_with_frequency(tmp_path):
    with _store(tmp_path, {1: [0] * 6, 2: [0, 0, 0, 1, 1, 1], 3: [1] * 6, 4: [1] * 6}) as st:
        df = derived.knowledge_correlations(st.conn, case_set="s")
    row = df.filter((df["feature"] == "frequency") & (df["against"] == "recall")).row(0, named=True)
    assert row["rho"] > 0.8 and row["ci_low"] > 0.5 and row["n"] == 24
    const = df.filter(df["feature"] == "connection").row(0, named=True)
    assert math.isnan(const["rho"])  # a constant feature has no rank correlation


def test_empty_store_gives_empty_frames_with_columns(tmp_path):
    with Store.open(tmp_path / "e.sqlite", create=True) as st:
        assert derived.knowledge_by_quartile(st.conn).columns[:3] == ["quartile", "n", "recall"]
        assert derived.knowledge_correlations(st.conn).is_empty()


def test_rankdata_averages_ties():
    assert rankdata([10, 20, 20, 30]).tolist() == [1.0, 2.5, 2.5, 4.0]


def test_spearman_known_values():
    x = np.arange(10)
    assert spearman(x, x**3) == pytest.approx(1.0)
    assert spearman(x, -x) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 2], [3, 4]))
    with pytest.raises(ValueError, match="paired"):
        spearman([1, 2, 3], [1, 2])


def test_spearman_ci_is_reproducible_and_brackets_rho():
    rng = np.random.default_rng(1)
    x = rng.normal(size=80)
    y = x + rng.normal(size=80)
    a, b = spearman_ci(x, y, seed=3), spearman_ci(x, y, seed=3)
    assert a == b and a.ci_low < a.rho < a.ci_high and a.n == 80


def test_within_relation_correlation_sits_beside_the_pooled_one(tmp_path):
    # two relations: recall rises with frequency across them (the popular relation is easy), not within them
    st = Store.open(tmp_path / "w.sqlite", create=True)
    run = st.start_run(kind="knowledge", model="m")
    cases, rows = [], []
    rng = np.random.default_rng(0)
    for rel, base, easy in (("capital", 5.0, 0.9), ("currency", 2.0, 0.1)):
        for i in range(40):
            cid = f"{rel}-{i}"
            cases.append({"case_id": cid, "case_set": "s", "source": "kb", "relation": rel, "subject": cid,
                          "prompt": f"{cid} is", "true_object": "A", "new_object": "B",
                          "frequency": base + rng.normal(), "connection": 1, "popularity_quartile": 1})
            rows.append({"run_id": run, "case_id": cid, "rephrase_type": "plain", "metric": "recall",
                         "value": float(rng.random() < easy)})
    st.write_cases(cases, [])
    st.write_measurements(rows)
    st.finish_run(run)
    with st:
        row = derived.knowledge_correlations(st.conn, case_set="s").filter(
            (pl.col("feature") == "frequency") & (pl.col("against") == "recall")).row(0, named=True)
    assert row["rho"] > 0.5 and row["ci_low"] > 0.3
    assert row["within_ci_low"] < 0 < row["within_ci_high"] and row["n_within"] == 80


def test_popularity_points_and_equal_count_bins(tmp_path):
    with _store(tmp_path, {1: [0, 0, 0, 1], 2: [1, 1, 0, 0], 3: [1, 0, 1, 1], 4: [1, 1, 1, 1]}) as st:
        st.conn.execute("UPDATE measurements SET metric = 'rev' WHERE metric = 'recall'")
        st.conn.commit()
        pts = derived.popularity_points(st.conn, "frequency", "rev", "plain")
        with pytest.raises(ValueError, match="unknown popularity feature"):
            derived.popularity_points(st.conn, "fame")
    assert pts.height == 16 and set(pts["series"]) == {"unedited"}
    bins = derived.popularity_bins(pts, "frequency", bins=4)
    assert bins["n"].to_list() == [4, 4, 4, 4]
    assert bins["mean"].to_list() == [0.25, 0.5, 0.75, 1.0]
    lo, hi = bins["lo"].to_list(), bins["hi"].to_list()
    assert all(lo[i + 1] > hi[i] for i in range(3))  # bins follow each other without overlap


def test_stored_correlations_equal_the_live_ones_and_are_used(tmp_path, fixture_store):
    import shutil

    from store import Store, derived

    path = tmp_path / "copy.sqlite"
    shutil.copy(fixture_store, path)
    with Store.open(path) as st:
        runs = st.conn.execute("SELECT run_id FROM runs WHERE kind = 'knowledge' AND status = 'done' "
                               "AND n_total = 32").fetchall()
        knowledge = runs[0][0]  # the set's own knowledge run (other tests may add runs to the shared store)
        # the CLI stored them when the runs finished: the same numbers as a live computation
        stored_k = derived.knowledge_correlations(st.conn, run_id=knowledge)
        stored_r = derived.robustness_correlations(st.conn, metrics=("acc",))
        st.conn.execute("DELETE FROM correlations")
        st.conn.commit()
        live_k = derived.knowledge_correlations(st.conn, run_id=knowledge)
        live_r = derived.robustness_correlations(st.conn, metrics=("acc",))
        assert stored_k.height == live_k.height > 0 and stored_r.height == live_r.height > 0
        for a, b in ((stored_k, live_k), (stored_r, live_r)):
            for col in ("rho", "ci_low", "ci_high", "rho_within", "within_ci_low", "within_ci_high", "n_within"):
                assert a[col].to_list() == pytest.approx(b[col].to_list(), nan_ok=True)
        assert derived.store_correlations(st) >= 3  # the knowledge run and both robustness runs
        have = {r for (r,) in st.conn.execute("SELECT DISTINCT run_id FROM correlations")}
        assert knowledge in have
        done = st.conn.execute("SELECT count(*) FROM runs WHERE kind IN ('knowledge', 'robustness') "
                               "AND status = 'done'").fetchone()[0]
        # up to date: only runs with nothing to correlate (too few cases) are looked at again
        assert derived.store_correlations(st) == done - len(have)
        st.conn.execute("UPDATE correlations SET rho = 0.123 WHERE metric = 'recall'")
        st.conn.commit()
        got = derived.knowledge_correlations(st.conn, run_id=knowledge)
        assert set(got.filter(pl.col("against") == "recall")["rho"]) == {0.123}


def test_knowledge_of_a_case_set_comes_from_that_sets_own_run(tmp_path, fixture_store):
    import shutil

    from store import Store, derived

    path = tmp_path / "copy.sqlite"
    shutil.copy(fixture_store, path)
    with Store.open(path) as st:
        # a newer knowledge run of another set must not hide this set's knowledge
        st.start_run(kind="knowledge", model="tiny", config={"case_set": "other"}, run_id="zz-newer")
        st.finish_run("zz-newer", status="done")
        by_q = derived.knowledge_by_quartile(st.conn, case_set="tiny32")
        assert by_q["n"].sum() == 32


def test_editing_performance_carries_a_wilson_ci_over_its_n_edits(tmp_path):
    """The General abilities page's editing-performance table gave ES 1.00 for a batch of one with no interval."""
    from store.conventions import RUN_LEVEL
    from store.metrics import wilson_ci

    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        run = st.start_run(kind="batch", model="m", editor="MEMIT", run_id="b")
        st.write_measurements([dict(run_id=run, case_id=RUN_LEVEL, edit_count=b, rephrase_type="batch", metric=m,
                                    value=v) for b, es in ((1, 1.0), (10, 0.8)) for m, v in (("es", es), ("n", b))]
                              + [dict(run_id=run, case_id=RUN_LEVEL, edit_count=50, rephrase_type="batch", metric="ps",
                                      value=0.5)])  # a row without its n: no interval to give
        perf = {(r["edit_count"], r["measure"]): r for r in derived.editing_performance(st.conn, ["b"]).iter_rows(named=True)}
    assert (perf[1, "reliability (ES)"]["ci_low"], perf[1, "reliability (ES)"]["ci_high"]) == pytest.approx(wilson_ci(1, 1))
    assert (perf[10, "reliability (ES)"]["ci_low"], perf[10, "reliability (ES)"]["ci_high"]) == pytest.approx(wilson_ci(8, 10))
    assert perf[50, "generalisation (PS)"]["ci_low"] is None and perf[50, "generalisation (PS)"]["n"] is None

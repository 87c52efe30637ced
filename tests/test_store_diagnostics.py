"""store.diagnostics on a store built from plain rows: per-edit table, outliers, distributions, calibration."""

from __future__ import annotations

import json

import polars as pl
import pytest

from store import diagnostics as dg
from store.db import Store


def _edit(run, n, case, rel, steps=10, converged=1.0, clamped=0.0, plain=1.0, para=(0.9, 0.7), owner=None):
    owner = owner or case  # a one-request edit owns its matrix rows; a batch's are '*'
    rows = [dict(target="model.layers.3.mlp.down_proj.weight", case_id=owner, name="update_rel", value=rel),
            dict(target="model.layers.3.mlp.down_proj.weight", case_id=owner, name="update_norm", value=rel * 50),
            dict(target="", case_id=case, name="steps", value=steps),
            dict(target="", case_id=case, name="converged", value=converged),
            dict(target="", case_id=case, name="clamped", value=clamped),
            dict(target="plain", case_id=case, name="delivered", value=plain)]
    rows += [dict(target=f"paraphrase:{i + 1}", case_id=case, name="delivered", value=v) for i, v in enumerate(para)]
    return [{"run_id": run, "edit_count": n, **r} for r in rows]


@pytest.fixture()
def st(tmp_path):
    s = Store.open(tmp_path / "d.sqlite", create=True)
    run = s.start_run(kind="sequential", model="m", editor="ROME", run_id="seq")
    rows = []
    for n in range(1, 41):
        rel = 0.05 * (1 + 0.1 * ((n * 7) % 5))  # 0.05-0.07, with some spread
        if n == 23:
            rel = 1.4  # one huge edit, as the original-keys run's edit 111
        rows += _edit(run, n, f"c{n}", rel, clamped=float(n % 4 == 0), plain=0.5 if n == 5 else 1.0)
    s.write_edit_diagnostics(rows)
    return s


def test_per_edit_has_one_row_per_edit_with_its_values(st):
    df = dg.per_edit(st.conn, "seq")
    assert df.height == 40
    row = df.filter(df["edit_count"] == 5).to_dicts()[0]
    assert row["case_id"] == "c5" and row["delivered_plain"] == 0.5 and row["delivered_paraphrase_min"] == 0.7
    assert row["steps"] == 10 and row["converged"] == 1.0
    assert row["update_norm"] == pytest.approx(row["update_rel"] * 50)


def test_the_planted_huge_edit_is_the_only_outlier(st):
    flagged = dg.flag_outliers(dg.per_edit(st.conn, "seq")).filter("outlier")
    assert flagged["edit_count"].to_list() == [23]


def test_run_distribution_summarises_each_run(st):
    d = dg.run_distribution(st.conn).to_dicts()[0]
    assert d["n"] == 40 and d["outliers"] == 1
    assert d["clamped_share"] == pytest.approx(10 / 40)
    assert d["delivered_plain_ge_0.8"] == pytest.approx(39 / 40)
    assert d["delivered_out_plain_ge_0.8"] is None  # a one-layer editor reads nothing at the output
    assert 0.05 <= d["update_rel_median"] <= 0.07


def test_a_multi_layer_edits_output_read_is_kept_beside_the_layer_by_layer_one(tmp_path):
    s = Store.open(tmp_path / "m.sqlite", create=True)
    run = s.start_run(kind="robustness", model="m", editor="MEMIT", run_id="memit")
    rows = []
    for n, (f, f_out) in enumerate([(0.57, 1.03), (1.1, 1.2), (0.9, 0.7), (1.0, 1.0)], start=1):
        rows += _edit(run, n, f"c{n}", 0.04, plain=f)
        rows.append({"run_id": run, "edit_count": n, "target": "plain", "case_id": f"c{n}", "name": "delivered_out",
                     "value": f_out})
    s.write_edit_diagnostics(rows)
    edits = dg.per_edit(s.conn, "memit")
    assert edits["delivered_plain"].to_list() == [0.57, 1.1, 0.9, 1.0]
    assert edits["delivered_out_plain"].to_list() == [1.03, 1.2, 0.7, 1.0]
    d = dg.run_distribution(s.conn).to_dicts()[0]
    assert d["delivered_plain_ge_0.8"] == pytest.approx(3 / 4) and d["delivered_out_plain_ge_0.8"] == pytest.approx(3 / 4)
    # the dashboard's diagnostics table shows both reads in one cell, and the one read of a one-layer run alone
    from dashboard.edit_view import delivered_text

    both = pl.DataFrame({"delivered_plain_ge_0.8": [0.75, 1.0, None], "delivered_out_plain_ge_0.8": [1.0, None, None]})
    assert delivered_text(both).to_list() == ["75% / 100%", "100%", "—"]


def test_calibration_picks_the_smallest_edits_that_keep_es_and_ps(tmp_path):
    s = Store.open(tmp_path / "c.sqlite", create=True)
    settings = [({"v_lr": 0.5, "clamp_norm_factor": 4.0}, 1.0, 0.9, 0.30),
                ({"v_lr": 0.1, "clamp_norm_factor": 4.0}, 1.0, 0.88, 0.10),
                ({"v_lr": 0.05, "clamp_norm_factor": 1.0}, 0.7, 0.5, 0.02)]  # tiny edits that do not take
    for i, (value, es, ps, rel) in enumerate(settings):
        run = s.start_run(kind="sweep", model="m", editor="ROME", run_id=f"r{i}", hparams={"v_steps": 20, **value},
                          config={"sweep": "cal", "field": "clamp_norm_factor+v_lr", "value": value})
        m = []
        for c in range(20):
            m += [{"run_id": run, "case_id": f"c{c}", "edit_count": 1, "rephrase_type": "plain", "metric": "es",
                   "value": float(c < es * 20)},
                  {"run_id": run, "case_id": f"c{c}", "edit_count": 1, "rephrase_type": "paraphrase", "metric": "es",
                   "value": float(c < ps * 20)},
                  {"run_id": run, "case_id": f"c{c}", "edit_count": 1, "rephrase_type": "neighbourhood",
                   "metric": "ns", "value": 0.7}]
        s.write_measurements(m)
        s.write_edit_diagnostics([r for c in range(20) for r in _edit(run, 1, f"c{c}", rel)])
        s.finish_run(run, status="done")
    # a later grid under the same sweep id adds a field: earlier points show the value they ran with
    run = s.start_run(kind="sweep", model="m", editor="ROME", run_id="r3",
                      hparams={"v_steps": 40, "v_lr": 0.1, "clamp_norm_factor": 4.0},
                      config={"sweep": "cal", "field": "clamp_norm_factor+v_lr+v_steps",
                              "value": {"v_lr": 0.1, "clamp_norm_factor": 4.0, "v_steps": 40}})
    s.write_edit_diagnostics([r for c in range(20) for r in _edit(run, 1, f"c{c}", 0.5)])
    summary = dg.calibration_summary(s.conn, "cal")
    assert summary["v_lr"].to_list() == [0.05, 0.1, 0.5, 0.1]  # sorted by edit size
    assert summary["v_steps"].to_list() == [20, 20, 20, 40]
    chosen = dg.choose_setting(summary, reference={"v_lr": 0.5, "clamp_norm_factor": 4.0})
    assert (chosen["v_lr"], chosen["clamp_norm_factor"]) == (0.1, 4.0)
    assert json.loads(chosen["value"]) == {"v_lr": 0.1, "clamp_norm_factor": 4.0}


def test_independent_edits_at_one_edit_count_keep_their_own_sizes_and_a_batch_shares_its_own(tmp_path):
    s = Store.open(tmp_path / "r.sqlite", create=True)
    run = s.start_run(kind="robustness", model="m", editor="ROME", run_id="rob")
    s.write_edit_diagnostics(_edit(run, 1, "a", 0.1) + _edit(run, 1, "b", 0.3))
    batch = s.start_run(kind="batch", model="m", editor="MEMIT", run_id="bat")
    rows = _edit(batch, 10, "x", 0.2, owner="*") + [r for r in _edit(batch, 10, "y", 0.2, owner="*")
                                                     if r["case_id"] != "*"]
    s.write_edit_diagnostics(rows)
    df = dg.per_edit(s.conn)
    got = {(r["run_id"], r["case_id"]): r["update_rel"] for r in df.to_dicts()}
    assert got == {("rob", "a"): 0.1, ("rob", "b"): 0.3, ("bat", "x"): 0.2, ("bat", "y"): 0.2}

"""Tests of store.measurable: which rephrase types the unedited model can answer."""

from __future__ import annotations

import subprocess
import sys

import polars as pl
import pytest

from store import Store
from store import measurable as M


def rows(spec):
    """Measurement rows from {(type, metric): [values]}."""
    return pl.DataFrame(
        [{"rephrase_type": t, "metric": m, "value": v, "edit_count": 0} for (t, m), vs in spec.items() for v in vs],
        schema={"rephrase_type": pl.String, "metric": pl.String, "value": pl.Float64, "edit_count": pl.Int64})


def test_threshold_is_a_stated_share():
    assert 0.0 < M.MEASURABLE_SHARE < 1.0


def test_a_type_recalled_at_the_threshold_is_measurable_and_one_below_is_not():
    t = M.measurability(rows({("plain", "rev"): [1.0] * 5 + [0.0] * 95,
                              ("cloze", "rev"): [1.0] * 4 + [0.0] * 96,
                              ("cloze", "acc"): [1.0] + [0.0] * 99}))
    got = {r["rephrase_type"]: r for r in t.iter_rows(named=True)}
    assert got["plain"]["measurable"] and got["plain"]["n"] == 100 and got["plain"]["recalled"] == 5
    assert not got["cloze"]["measurable"] and got["cloze"]["recall_share"] == pytest.approx(0.04)
    assert got["cloze"]["chance_share"] == pytest.approx(0.01) and got["plain"]["chance_share"] is None
    assert "4 of 100" in got["cloze"]["reason"] and "under the 5% needed" in got["cloze"]["reason"]
    assert M.measurable_types(t) == ["plain"]
    assert list(M.unmeasurable_reasons(t)) == ["cloze"]


def test_rows_after_an_edit_and_null_values_are_ignored():
    df = rows({("plain", "rev"): [0.0, 0.0, None]})
    df = pl.concat([df, rows({("plain", "rev"): [1.0, 1.0]}).with_columns(pl.lit(5).cast(pl.Int64).alias("edit_count"))])
    t = M.measurability(df)
    assert t.row(0, named=True)["n"] == 2 and not t.row(0, named=True)["measurable"]


def test_a_type_never_measured_is_listed_as_unknown():
    t = M.measurability(rows({("plain", "rev"): [1.0]}), rephrase_types=["plain", "doubt"])
    doubt = t.filter(pl.col("rephrase_type") == "doubt").row(0, named=True)
    assert doubt["n"] == 0 and not doubt["measurable"] and "not measured" in doubt["reason"]


def test_bad_input_says_what_is_missing():
    with pytest.raises(ValueError, match="metric"):
        M.measurability(pl.DataFrame({"rephrase_type": ["plain"], "value": [1.0]}))
    with pytest.raises(ValueError, match="threshold"):
        M.measurability(rows({("plain", "rev"): [1.0]}), threshold=5)


def test_run_measurability_reads_a_robustness_runs_baseline(tmp_path):
    with Store.open(tmp_path / "m.sqlite", create=True) as s:
        s.write_cases([dict(case_id=f"c{i}", case_set="set", source="kb", relation="capital", subject=f"S{i}",
                            prompt="The capital of {} is", true_object="Paris", new_object="Rome") for i in range(20)], [])
        k = s.start_run(kind="knowledge", model="m", run_id="k", config={"case_set": "set"})
        s.finish_run(k)
        s.write_measurements(
            [dict(run_id=k, case_id=f"c{i}", metric="rev", value=float(i < 10), rephrase_type="plain", edit_count=0)
             for i in range(20)]
            + [dict(run_id=k, case_id=f"c{i}", metric="rev", value=0.0, rephrase_type="cloze", edit_count=0)
               for i in range(20)])
        s.start_run(kind="robustness", model="m", editor="ROME", run_id="r", config={"baseline_run": k})
        s.start_run(kind="demo", model="m", editor="ROME", run_id="d")
        assert M.baseline_run(s.conn, "r") == "k" and M.baseline_run(s.conn, "d") == "k"
        assert M.baseline_run(s.conn, case_set="other") is None
        t = M.run_measurability(s.conn, "r")
        assert M.measurable_types(t) == ["plain"] and t["baseline_run"].unique().to_list() == ["k"]
        assert "0 of 20" in M.unmeasurable_reasons(t)["cloze"]
        with pytest.raises(ValueError, match="no run"):
            M.baseline_run(s.conn, "nope")
        # a newer, finished knowledge run of 2 cases on the same types (one launched from the dashboard) does
        # not take over from the 20-case baseline: more cases first
        small = s.start_run(kind="knowledge", model="m", run_id="small", config={"case_set": "set"})
        s.finish_run(small)
        s.conn.execute("UPDATE runs SET started_at = '2999-01-01T00:00:00+00:00' WHERE run_id = 'small'")
        s.write_measurements([dict(run_id=small, case_id=f"c{i}", metric="rev", value=0.0, rephrase_type=t,
                                   edit_count=0) for i in range(2) for t in ("plain", "cloze")])
        assert M.baseline_run(s.conn, "d") == "k"


def test_a_chat_probe_that_ends_with_the_edit_prompt_is_a_copy_task_and_unmeasurable(tmp_path):
    """The shipped store's case set was built before the free-answer probes: its dialogue and doubt probes end
    with the edit prompt inside the assistant's turn, so the model copies it. Those types are greyed like the
    ones the model cannot answer, with their own reason; a free-answer chat type stays measurable."""
    chat = "<|im_start|>user\nWhere is S{0}?<|im_end|>\n<|im_start|>assistant\n"
    with Store.open(tmp_path / "m.sqlite", create=True) as s:
        s.write_cases(
            [dict(case_id=f"c{i}", case_set="set", source="kb", relation="capital", subject=f"S{i}",
                  prompt="The capital of {} is", true_object="Paris", new_object="Rome") for i in range(20)],
            [dict(case_id=f"c{i}", probe_id=j, rephrase_type=t, text=text, target_true="Paris", target_new="Rome")
             for i in range(20) for j, (t, text) in enumerate([
                 ("plain", f"The capital of S{i} is"),
                 ("doubt", chat.format(i) + f"The capital of S{i} is"),  # forced: the model's turn begins with it
                 ("dialogue_pronoun", chat.format(i))])])
        k = s.start_run(kind="knowledge", model="m", run_id="k", config={"case_set": "set"})
        s.write_measurements([dict(run_id=k, case_id=f"c{i}", metric="rev", value=float(i < 10), rephrase_type=t,
                                   edit_count=0) for i in range(20) for t in ("plain", "doubt", "dialogue_pronoun")])
        s.finish_run(k)
        assert M.copy_tasks(s.conn, "set") == {"doubt": (20, 20)}
        t = M.run_measurability(s.conn, "k")
        assert M.measurable_types(t) == ["dialogue_pronoun", "plain"]
        assert M.unmeasurable_reasons(t)["doubt"].startswith("a copy task: on 20 of 20 cases")
        assert t.filter(t["copy_task"])["rephrase_type"].to_list() == ["doubt"]  # which reasons are copy tasks
        # the model can answer doubt (10 of 20): judged on no case set (a demo builds its own free probes), it counts
        assert "doubt" in M.measurable_types(M.run_measurability(s.conn))


def test_store_measurable_imports_neither_torch_nor_streamlit():
    code = "import sys, store.measurable; print(any(m in sys.modules for m in ('torch', 'streamlit', 'compute')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_csv_row_says_whether_its_rephrase_type_is_measurable_and_why():
    from store.measurable import with_measurability

    df = pl.DataFrame({"rephrase_type": ["plain", "cloze", "plain"], "mean": [0.9, 0.0, 0.8]})
    out = with_measurability(df, {"cloze": "the unedited model names the true object on 0 of 60 cases"})
    assert out["measurable"].to_list() == [True, False, True]
    assert out["unmeasurable_reason"].to_list() == ["", "the unedited model names the true object on 0 of 60 cases", ""]
    assert out.columns[:2] == ["rephrase_type", "mean"]  # what was there stays as it was

"""store.findings: each claim's rule on small stores built from plain rows, the README block equal to the
function's output on the shipped store, and the Findings page on a copy of the shipped store."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import scipy.stats

from store import Store, derived, findings as fmod
from store.findings import NOT_COMPARABLE, NOT_MEASURED, REFUTED, REPRODUCED, UNSETTLED, findings
from store.metrics import wilson_ci

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "store" / "results.sqlite"
RUN_LEVEL = "*"


def _by_claim(conn) -> dict:
    return {f.claim: f for f in findings(conn)}


def _run(st, run_id, kind, editor=None, hparams=None, config=None, n_done=1):
    st.start_run(kind=kind, model="m", editor=editor, run_id=run_id, hparams=hparams, config=config)
    st.heartbeat(run_id, n_done=n_done, n_total=n_done)
    st.finish_run(run_id)


# --------------------------------------------------------------------------- study A


N_CASES = 60


def _cases(st, doubt_forced: bool = False):
    cases, probes = [], []
    for i in range(N_CASES):
        cid = f"c{i}"
        cases.append({"case_id": cid, "case_set": "s", "source": "kb", "relation": f"r{i % 3}", "subject": f"S{i}",
                      "prompt": f"S{i} lives in", "true_object": "A", "new_object": "B", "frequency": float(i)})
        doubt = "<chat>Where does S{0} live?<answer>Are you sure?<assistant>".format(i)
        probes += [{"case_id": cid, "probe_id": 0, "rephrase_type": "plain", "text": f"S{i} lives in",
                    "target_true": "A", "target_new": "B"},
                   {"case_id": cid, "probe_id": 1, "rephrase_type": "doubt",
                    "text": doubt + (f"S{i} lives in" if doubt_forced else ""), "target_true": "A", "target_new": "B"}]
    st.write_cases(cases, probes)


def _robustness_store(st, acc: dict[str, dict[str, float]], recall: dict[str, float], doubt_forced=False):
    """A knowledge baseline whose unedited recall per type is `recall`, and one robustness run per editor whose
    share of cases naming the new object is acc[editor][type]."""
    _cases(st, doubt_forced)
    _run(st, "k", "knowledge", config={"case_set": "s"}, n_done=N_CASES)
    st.write_measurements([{"run_id": "k", "case_id": f"c{i}", "edit_count": 0, "rephrase_type": t, "metric": m,
                            "value": float(i < share * N_CASES) if m == "rev" else 0.0}
                           for t, share in recall.items() for i in range(N_CASES) for m in ("rev", "acc")])
    for editor, by_type in acc.items():
        rid = f"rob-{editor}"
        _run(st, rid, "robustness", editor=editor, config={"case_set": "s", "baseline_run": "k"}, n_done=N_CASES)
        st.write_measurements([{"run_id": rid, "case_id": f"c{i}", "edit_count": 1, "rephrase_type": t, "metric": m,
                                "value": float(i < share * N_CASES) if m == "acc" else 0.0}
                               for t, share in by_type.items() for i in range(N_CASES) for m in ("acc", "rev")])


KNOWN = {"plain": 0.5, "paraphrase": 0.5, "doubt": 0.5}


def test_a_drop_waits_only_for_the_runs_its_rule_judges(tmp_path):
    """A2 judges ROME and MEMIT (the paper's IKE paraphrase drop is under 10 points), A3 all three: an IKE run
    still computing holds back A3, not A2 (on the 2026-12-08 snapshot A2 read 'not measured yet', waiting for
    IKE at 64 of 240 cases, beside two finished runs whose drops decide it)."""
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        _robustness_store(st, {e: {"plain": 0.95, "paraphrase": 0.4, "context_pronoun": 0.3}
                               for e in ("ROME", "MEMIT", "IKE")}, {**KNOWN, "context_pronoun": 0.5})
        st.conn.execute("UPDATE runs SET status = 'interrupted', n_done = 40, n_total = 240 WHERE run_id = 'rob-IKE'")
        st.conn.commit()
        got = _by_claim(st.conn)
    assert got["A2"].verdict == REPRODUCED and "waits" not in got["A2"].reason
    assert "partial: IKE 40 of 240 cases" in got["A2"].ours  # its figures are shown, labelled
    assert got["A3"].verdict == NOT_MEASURED and got["A3"].reason.startswith("The verdict waits for the runs to "
                                                                             "finish: IKE 40 of 240 cases")


def test_a_partial_run_is_named_with_its_own_n(tmp_path):
    """Runs of different sizes each show their own n (the text said the first one's 'each'), and a run that is
    not done is named partial with how far it got (a rebuild in progress)."""
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        _robustness_store(st, {"ROME": {"plain": 0.95, "paraphrase": 0.4}, "MEMIT": {"plain": 0.9, "paraphrase": 0.3}},
                          KNOWN)
        st.conn.execute("DELETE FROM measurements WHERE run_id = 'rob-MEMIT' AND case_id IN ('c0', 'c1', 'c2')")
        st.conn.execute("UPDATE runs SET status = 'interrupted', n_done = 57, n_total = 240 WHERE run_id = 'rob-MEMIT'")
        st.conn.commit()
        got = _by_claim(st.conn)
    for claim in ("A1", "A2"):
        assert "n = ROME 60, MEMIT 57 cases; partial: MEMIT 57 of 240 cases (interrupted)" in got[claim].ours, claim
    with Store.open(tmp_path / "u.sqlite", create=True) as st:  # a partial run that has reached 2 of 3 relations
        _robustness_store(st, {"ROME": {"plain": 0.95, "paraphrase": 0.4}, "MEMIT": {"plain": 0.9, "paraphrase": 0.3}},
                          KNOWN)
        st.conn.executemany("DELETE FROM measurements WHERE run_id = 'rob-MEMIT' AND case_id = ?",
                            [(f"c{i}",) for i in range(0, N_CASES, 3)])  # relation r0
        st.conn.execute("UPDATE runs SET status = 'interrupted', n_done = 40, n_total = 60 WHERE run_id = 'rob-MEMIT'")
        st.conn.commit()
        a2 = _by_claim(st.conn)["A2"]
    assert "partial: MEMIT 40 of 60 cases, 2 of 3 relations (interrupted)" in a2.ours
    # its first relations are not a sample of the case set: figures, and no verdict until the run finishes
    assert a2.verdict == NOT_MEASURED and a2.reason.startswith(
        "The verdict waits for the runs to finish: MEMIT 40 of 60 cases, 2 of 3 relations (interrupted)")
    assert got["A1"].direction == "undecided" and "waits for the runs to finish" in got["A1"].reason
    with Store.open(tmp_path / "t.sqlite", create=True) as st:  # all done and alike: one n
        _robustness_store(st, {"ROME": {"plain": 0.95, "paraphrase": 0.4}, "MEMIT": {"plain": 0.9, "paraphrase": 0.3}},
                          KNOWN)
        a1 = _by_claim(st.conn)["A1"]
    assert a1.ours.endswith(f"(acc, n = {N_CASES} cases each)") and a1.direction == "agrees"


def test_a_robustness_run_with_another_key_constraint_does_not_stand_for_its_editor(tmp_path):
    """The rebuild's snapshot held a 95-case MEMIT run with every key a least-squares row ("all", shipped before
    2026-12-06); MEMIT ships "plain" now. That run is another variant (its label says so), not MEMIT's."""
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        _robustness_store(st, {"ROME": {"plain": 0.95, "paraphrase": 0.4}}, KNOWN)
        _run(st, "rob-MEMIT-all", "robustness", editor="MEMIT", hparams={"key_constraint": "all"},
             config={"case_set": "s", "baseline_run": "k"}, n_done=N_CASES)
        st.write_measurements([{"run_id": "rob-MEMIT-all", "case_id": f"c{i}", "edit_count": 1, "rephrase_type": t,
                                "metric": "acc", "value": 1.0} for t in ("plain", "paraphrase") for i in range(N_CASES)])
        a2 = _by_claim(st.conn)["A2"]
        assert a2.verdict == NOT_MEASURED and a2.ours == ("no robustness run of MEMIT (the store's MEMIT run has "
                                                          "keys: all, a variant; MEMIT ships with plain)")
        _run(st, "rob-MEMIT", "robustness", editor="MEMIT", hparams={"key_constraint": "plain"},
             config={"case_set": "s", "baseline_run": "k"}, n_done=N_CASES)
        st.write_measurements([{"run_id": "rob-MEMIT", "case_id": f"c{i}", "edit_count": 1, "rephrase_type": t,
                                "metric": "acc", "value": float(t == "plain" or i < 18)}
                               for t in ("plain", "paraphrase") for i in range(N_CASES)])
        a2 = _by_claim(st.conn)["A2"]
        assert a2.verdict == REPRODUCED and "rob-MEMIT-all" not in a2.url and "rob-MEMIT" in a2.url


def test_a_paraphrase_drop_is_reproduced_only_when_the_paired_difference_lies_below_0(tmp_path):
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        _robustness_store(st, {"ROME": {"plain": 0.95, "paraphrase": 0.4}, "MEMIT": {"plain": 0.9, "paraphrase": 0.3}},
                          KNOWN)
        a2 = _by_claim(st.conn)["A2"]
        assert a2.verdict == REPRODUCED and a2.n == N_CASES
        assert a2.value == pytest.approx(0.4) and (a2.ci_low, a2.ci_high) == pytest.approx(wilson_ci(24, N_CASES))
        assert "0.95" in a2.ours and "0.40" in a2.ours and a2.url.startswith("/robustness?")
    with Store.open(tmp_path / "t.sqlite", create=True) as st:  # MEMIT does not drop at all
        _robustness_store(st, {"ROME": {"plain": 0.95, "paraphrase": 0.4}, "MEMIT": {"plain": 0.8, "paraphrase": 0.8}},
                          KNOWN)
        assert _by_claim(st.conn)["A2"].verdict == REFUTED
    with Store.open(tmp_path / "u.sqlite", create=True) as st:  # a small drop within the noise: undecided
        _robustness_store(st, {"ROME": {"plain": 0.9, "paraphrase": 0.8}, "MEMIT": {"plain": 0.9, "paraphrase": 0.3}},
                          KNOWN)
        # ROME's paraphrase fails on 12 cases that pass the plain prompt and passes on the 6 that fail it
        st.write_measurements([{"run_id": "rob-ROME", "case_id": f"c{i}", "edit_count": 1, "rephrase_type": "paraphrase",
                                "metric": "acc", "value": float(i >= 12)} for i in range(N_CASES)])
        a2 = _by_claim(st.conn)["A2"]
        assert a2.verdict == UNSETTLED and "the paired difference's CI includes 0 for ROME" in a2.reason
        assert "ROME 0.90 [0.80, 0.95] → 0.80 [0.68, 0.88] (paired difference -0.10 [" in a2.ours
    with Store.open(tmp_path / "v.sqlite", create=True) as st:  # the same shares, failing on cases that pass plain
        _robustness_store(st, {"ROME": {"plain": 0.9, "paraphrase": 0.8}, "MEMIT": {"plain": 0.9, "paraphrase": 0.3}},
                          KNOWN)
        a2 = _by_claim(st.conn)["A2"]  # paired on the cases: a drop that two intervals side by side would miss
        assert a2.verdict == REPRODUCED, a2
        # 6 of 60 cases lose the edit on the paraphrase, none gains it: -0.10 +- t(59) sd / sqrt(60)
        sd = math.sqrt((6 - 60 * 0.01) / 59)
        half = scipy.stats.t.ppf(0.975, 59) * sd / math.sqrt(60)
        assert f"ROME 0.90 [0.80, 0.95] → 0.80 [0.68, 0.88] (paired difference -0.10 [{-0.1 - half:+.2f}, " \
               f"{-0.1 + half:+.2f}])" in a2.ours
        rome = (0.8, *wilson_ci(48, N_CASES)), (0.9, *wilson_ci(54, N_CASES))
        assert rome[0][2] > rome[1][1]  # the two Wilson intervals overlap


def test_a_type_the_unedited_model_cannot_answer_is_not_comparable(tmp_path):
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        _robustness_store(st, {"ROME": {"plain": 0.95, "paraphrase": 0.4}, "MEMIT": {"plain": 0.9, "paraphrase": 0.3}},
                          {"plain": 0.5, "paraphrase": 0.0})
        a2 = _by_claim(st.conn)["A2"]
        assert a2.verdict == NOT_COMPARABLE and "unmeasurable" in a2.reason


def test_doubt_probes_that_put_the_edit_prompt_in_the_models_mouth_are_not_a_measurement(tmp_path):
    acc = {e: {"plain": 0.95, "doubt": 0.2} for e in ("ROME", "MEMIT", "IKE")}
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        _robustness_store(st, acc, KNOWN, doubt_forced=True)
        a5 = _by_claim(st.conn)["A5"]
        assert a5.verdict == NOT_MEASURED and f"{N_CASES} of {N_CASES} cases" in a5.reason and "copy" in a5.ours
    with Store.open(tmp_path / "t.sqlite", create=True) as st:
        _robustness_store(st, acc, KNOWN, doubt_forced=False)
        assert _by_claim(st.conn)["A5"].verdict == REPRODUCED


def test_a_missing_editor_says_which_run_would_measure_it(tmp_path):
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        _robustness_store(st, {"ROME": {"plain": 0.95, "paraphrase": 0.4}}, KNOWN)
        a2 = _by_claim(st.conn)["A2"]
        assert a2.verdict == NOT_MEASURED and "--editor MEMIT" in a2.reason


def test_a_rephrasing_is_read_against_what_it_does_to_the_models_own_knowledge(tmp_path):
    """A8, study A's control: on the known facts whose edit held on the plain prompt, the edited model naming the
    new object on a type against the unedited model naming the true object on it, paired by fact. A form the
    model handles badly lowers both: A2 then reproduces a drop that A8 does not pin on the edit."""
    from store import derived

    editors = ("ROME", "MEMIT", "IKE")
    with Store.open(tmp_path / "s.sqlite", create=True) as st:  # only ROME: measured, not decided
        _robustness_store(st, {"ROME": {"plain": 0.4, "paraphrase": 0.1}}, KNOWN)
        gaps = derived.edit_against_knowledge(st.conn, run_ids=["rob-ROME"])
        row = gaps.row(0, named=True)  # 30 known facts (c0-c29), the edit held on c0-c23: 24 compared
        assert (row["rephrase_type"], row["n"], row["n_known"]) == ("paraphrase", 24, 30)
        assert (row["edit"], row["knowledge"]) == (pytest.approx(6 / 24), 1.0) and row["gap_ci_high"] < 0
        a8 = _by_claim(st.conn)["A8"]
        assert a8.verdict == NOT_MEASURED and a8.reason.startswith("No robustness run of MEMIT, IKE")
        assert "ROME (n = 24 facts): paraphrase -0.75 [" in a8.ours and "known=1" in a8.url
    with Store.open(tmp_path / "t.sqlite", create=True) as st:  # every editor loses more than knowledge does
        _robustness_store(st, {e: {"plain": 1.0, "paraphrase": 0.1, "doubt": 0.5} for e in editors}, KNOWN)
        a8 = _by_claim(st.conn)["A8"]
        assert a8.verdict == REPRODUCED and (a8.value, a8.n) == (pytest.approx(-0.8), 30), a8
        assert "doubt +0.00 [+0.00, +0.00] (edit 1.00, knowledge 1.00)" in a8.ours
    with Store.open(tmp_path / "u.sqlite", create=True) as st:  # a hard form: the edit fares as knowledge does
        hard = {"plain": 0.5, "paraphrase": 0.1, "doubt": 0.5}
        _robustness_store(st, {e: {"plain": 1.0, "paraphrase": 0.1, "doubt": 0.5} for e in editors}, hard)
        got = _by_claim(st.conn)
        assert got["A2"].verdict == REPRODUCED  # acc 0.10 against 1.00 on the plain prompt
        assert got["A8"].verdict == UNSETTLED and "undecided for ROME, MEMIT, IKE" in got["A8"].reason
    with Store.open(tmp_path / "v.sqlite", create=True) as st:  # edits reach further than knowledge: refuted
        _robustness_store(st, {e: {"plain": 1.0, "paraphrase": 0.5, "doubt": 0.5} for e in editors}, hard)
        assert _by_claim(st.conn)["A8"].verdict == REFUTED
    with Store.open(tmp_path / "w.sqlite", create=True) as st:  # a copy task is left out, not read
        _robustness_store(st, {e: {"plain": 1.0, "paraphrase": 0.1, "doubt": 0.1} for e in editors}, KNOWN,
                          doubt_forced=True)
        a8 = _by_claim(st.conn)["A8"]
        assert "doubt -" not in a8.ours and a8.ours.endswith("left out: doubt (a copy task)"), a8.ours


def _correlations(st, run_id, within: tuple[float, float], pooled: tuple[float, float]):
    rows = []
    for relation, (lo, hi), n in (("", pooled, N_CASES), ("*within*", within, N_CASES - 5)):
        rows.append({"run_id": run_id, "rephrase_type": "paraphrase", "metric": "acc", "feature": "frequency",
                     "relation": relation, "rho": (lo + hi) / 2, "ci_low": lo, "ci_high": hi, "n": n, "n_boot": 1000,
                     "seed": 0, "computed_at": "2099-01-01T00:00:00+00:00"})
    st.replace_correlations(run_id, rows)


@pytest.mark.parametrize("within, verdict", [((-0.4, -0.1), REPRODUCED), ((0.1, 0.4), REFUTED),
                                             ((-0.3, 0.1), UNSETTLED)])
def test_popularity_vs_robustness_is_judged_on_the_within_relation_rho(tmp_path, within, verdict):
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        _robustness_store(st, {e: {"plain": 0.9, "paraphrase": 0.6} for e in ("ROME", "MEMIT", "IKE")}, KNOWN)
        for e in ("ROME", "MEMIT", "IKE"):
            # the pooled rho points the other way: it must not decide
            _correlations(st, f"rob-{e}", within if e == "ROME" else (-0.4, -0.1), pooled=(0.1, 0.3))
        a7 = _by_claim(st.conn)["A7"]
        assert a7.verdict == verdict
        assert "within relation" in a7.ours and "pooled" in a7.ours and "within relation" in a7.rule


def test_popular_facts_that_are_only_harder_to_edit_at_all_are_not_harder_to_edit_robustly(tmp_path):
    """The control: the popular half of the facts never takes on the plain prompt, and the edits that did take
    hold on paraphrases regardless of popularity. Over all cases paraphrase acc falls with popularity; on the
    held edits it does not, so the claim is not reproduced."""
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        _robustness_store(st, {}, KNOWN)
        for e in ("ROME", "MEMIT", "IKE"):
            rid = f"rob-{e}"
            _run(st, rid, "robustness", editor=e, config={"case_set": "s", "baseline_run": "k"}, n_done=N_CASES)
            took = [i < N_CASES // 2 for i in range(N_CASES)]  # frequency is i: the popular half never took
            st.write_measurements([{"run_id": rid, "case_id": f"c{i}", "edit_count": 1, "rephrase_type": t,
                                    "metric": "acc", "value": float(v)}
                                   for i in range(N_CASES)
                                   for t, v in (("plain", took[i]), ("paraphrase", took[i] and (i // 3) % 2 == 0))])
        a7 = _by_claim(st.conn)["A7"]
        everything = derived.robustness_correlations(st.conn, metrics=("acc",), features=("frequency",),
                                                     rephrase_types=("paraphrase",))
        assert (everything["within_ci_high"] < 0).all()  # without the control: reproduced
        assert a7.verdict == UNSETTLED and "ROME on held edits" in a7.reason, a7.reason
        assert a7.ours.count("edits that held on the plain prompt: within relation") == 3 and "n = 30)" in a7.ours


# --------------------------------------------------------------------------- study B


SEQ = {"batch_size": 1, "case_set": "s"}
ROME_HP = {"key_mismatch": False, "rect_top": 1.0}


def _seq(st, run_id, editor="ROME", order=0, n_done=500, hparams=None, config=None):
    _run(st, run_id, "sequential", editor=editor, hparams=hparams if hparams is not None else dict(ROME_HP),
         config={**SEQ, "order_seed": order, **(config or {})}, n_done=n_done)


def _event(st, run_id, kind, at, series="x", value=1.0, detail=None):
    st.write_events([{"run_id": run_id, "kind": kind, "series": series, "edit_count": at, "end_count": at,
                      "value": value, "detail": json.dumps(detail or {})}])


def test_disabling_edits_compare_the_original_keys_with_r_rome_on_the_same_orders(tmp_path):
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        _seq(st, "orig", hparams={**ROME_HP, "key_mismatch": True}, n_done=340)
        assert _by_claim(st.conn)["B3"].verdict == NOT_MEASURED  # no r-ROME run on that order
        _seq(st, "rrome")
        _event(st, "orig", "disabling_edit", 111, value=1.4)
        b3 = _by_claim(st.conn)["B3"]  # one order: which facts come when decides where large updates fall
        assert b3.verdict == NOT_MEASURED and "1 shared order (0): run both ROME runs" in b3.reason \
            and b3.reason.endswith("on `--order-seed 1` and `--order-seed 2`.") and "111" in b3.ours and b3.n == 340
        assert (b3.ci_low, b3.ci_high) == pytest.approx(wilson_ci(1, 340))
        for o in (1, 2):
            _seq(st, f"orig{o}", order=o, hparams={**ROME_HP, "key_mismatch": True}, n_done=340)
            _seq(st, f"rrome{o}", order=o)
            _event(st, f"orig{o}", "disabling_edit", 200 + o, value=1.1)
        b3 = _by_claim(st.conn)["B3"]
        assert b3.verdict == REPRODUCED and "111" in b3.ours and "3 edit orders" in b3.ours and b3.n == 340
        _event(st, "rrome", "disabling_edit", 40, value=0.9)  # r-ROME has one on order 0: the orders disagree
        assert _by_claim(st.conn)["B3"].verdict == UNSETTLED
        for o in (1, 2):
            _event(st, f"rrome{o}", "disabling_edit", 50, value=0.9)
        assert _by_claim(st.conn)["B3"].verdict == REFUTED


def test_a_longer_original_keys_run_counts_its_disabling_edits_only_as_far_as_the_r_rome_run_went(tmp_path):
    """Order 1's original-keys run extended to 1,000 edits beside r-ROME runs of 500: its disabling edit at 700
    gives the claim nothing (the r-ROME run never made those edits); one at 400 does."""
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        for o in (0, 1, 2):
            _seq(st, f"orig{o}", order=o, hparams={**ROME_HP, "key_mismatch": True}, n_done=1000 if o == 1 else 500)
            _seq(st, f"rrome{o}", order=o)
            if o != 1:
                _event(st, f"orig{o}", "disabling_edit", 300, value=2.0)
        _event(st, "orig1", "disabling_edit", 700, value=3.0)
        b3 = _by_claim(st.conn)["B3"]
        assert b3.verdict == UNSETTLED and "0 of 500 edits (of its 1000, counted as far as the r-ROME run went)" \
            in b3.ours, b3.ours
        _event(st, "orig1", "disabling_edit", 400, value=3.0)
        b3 = _by_claim(st.conn)["B3"]
        assert b3.verdict == REPRODUCED and "1 of 500 edits (of its 1000" in b3.ours and "700" not in b3.ours


def test_large_updates_are_counted_as_survived_or_after_the_collapse(tmp_path):
    """Beside the disabling edits, B3 counts the large updates the model survived and, apart, those that came
    after its collapse (an edit cannot disable a model that is no longer usable)."""
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        _seq(st, "orig", hparams={**ROME_HP, "key_mismatch": True}, n_done=420)
        _seq(st, "rrome")
        for at, value in ((166, 1.07), (262, 6.9), (301, 6.2)):
            _event(st, "orig", "large_update", at, value=value)
        _event(st, "orig", "disabling_edit", 262, value=6.9)
        _event(st, "orig", "collapse", 300)
        ours = _by_claim(st.conn)["B3"].ours
    assert "1 of 420 edits (edit 262; largest update 6.90 ||W0||)" in ours
    assert "1 large update(s) the model survived (largest 1.07 ||W0||)" in ours
    assert "1 large update(s) after its collapse at edit 300 (largest 6.20 ||W0||)" in ours


def test_when_models_collapse_is_judged_only_on_three_edit_orders(tmp_path):
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        _seq(st, "rome0")
        _seq(st, "memit0", editor="MEMIT", hparams={})
        _event(st, "rome0", "collapse", 300)
        b4 = _by_claim(st.conn)["B4"]
        assert b4.verdict == NOT_MEASURED and "1 shared order" in b4.reason and "MEMIT lasted longer" in b4.ours
        for o in (1, 2):
            _seq(st, f"rome{o}", order=o)
            _seq(st, f"memit{o}", editor="MEMIT", hparams={}, order=o)
            _event(st, f"rome{o}", "collapse", 200 + 50 * o)
        assert _by_claim(st.conn)["B4"].verdict == REPRODUCED
        _event(st, "memit2", "collapse", 100)  # on one order MEMIT now breaks first
        b4 = _by_claim(st.conn)["B4"]
        assert b4.verdict == NOT_MEASURED and b4.reason == "Measured, but undecided: the orders disagree."
        st.conn.execute("DELETE FROM run_events WHERE run_id IN ('memit2', 'rome2')")
        st.conn.execute("UPDATE runs SET status = 'interrupted', n_total = 500, n_done = 120 WHERE run_id = 'memit2'")
        st.conn.commit()
        b4 = _by_claim(st.conn)["B4"]  # neither collapsed on order 2 yet, and MEMIT's run is still computing
        assert b4.verdict == NOT_MEASURED and "MEMIT, b=1 order 2 (120 of 500 edits, interrupted)" in b4.reason, b4
        assert "extend" not in b4.reason


def test_memit_against_rome_is_judged_with_the_studies_rome_and_with_r_rome_apart(tmp_path):
    """The studies' ROME (original keys) collapses before MEMIT b = 1 on every order while r-ROME never does:
    reproduced by the comparison with the studies' ROME; r-ROME's comparison is reported beside it."""
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        for o in (0, 1, 2):
            _seq(st, f"orig{o}", order=o, hparams={**ROME_HP, "key_mismatch": True})
            _seq(st, f"rome{o}", order=o)
            _seq(st, f"memit{o}", editor="MEMIT", hparams={}, order=o)
            _event(st, f"orig{o}", "collapse", 250 + o)
            _event(st, f"memit{o}", "collapse", 400)
        b4 = _by_claim(st.conn)["B4"]
    assert b4.verdict == REPRODUCED and b4.n == 3
    assert "ROME (original keys) collapsed at edit 250" in b4.ours and "ROME usable through 500" in b4.ours
    with Store.open(tmp_path / "s.sqlite") as st:  # a run not finished says how far it got
        st.conn.execute("UPDATE runs SET status = 'interrupted', n_done = 300 WHERE run_id = 'rome1'")
        b4 = _by_claim(st.conn)["B4"]
    assert "ROME (interrupted, 300 of 500 edits) usable through 300" in b4.ours


def _retention(st, run_id, metric, values):
    held = "n_held_em" if metric == "forgotten_em" else "n_held"
    st.write_measurements([{"run_id": run_id, "case_id": RUN_LEVEL, "edit_count": 50 * (i + 1),
                            "rephrase_type": "all_edits", "metric": m, "value": v}
                           for i, f in enumerate(values) for m, v in ((metric, f), (held, 50.0 * (i + 1)))])


def _phase(st, run_id, series, catastrophic):
    detail = {"phase": "catastrophic" if catastrophic else "gradual", "change_at": 250, "start": 1.0,
              "slope_before": -1e-4, "slope_after": -5e-3, "loss_rate_before": 1e-4, "loss_rate_after": 5e-3,
              "drop_after": 0.5, "catastrophic": catastrophic}
    _event(st, run_id, "phase", 250 if catastrophic else 0, series=series, detail=detail)


def test_two_phase_forgetting_needs_exact_match_retention_on_three_edit_orders(tmp_path):
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        _seq(st, "rome")
        _retention(st, "rome", "forgotten", [0.0, 0.05, 0.1, 0.6])
        _phase(st, "rome", "retention", catastrophic=True)  # by ES: passed by chance by a broken model
        b1 = _by_claim(st.conn)["B1"]
        assert b1.verdict == NOT_MEASURED and "exact-match" in b1.reason and "by ES" in b1.ours
        _retention(st, "rome", "forgotten_em", [0.0, 0.05, 0.1, 0.1])
        _phase(st, "rome", "retention_em", catastrophic=False)
        b1 = _by_claim(st.conn)["B1"]
        assert b1.verdict == NOT_MEASURED and "--edits 1000" in b1.reason  # no phase, no collapse yet
        _event(st, "rome", "collapse", 400)
        b1 = _by_claim(st.conn)["B1"]  # one order goes against the claim: not yet a verdict
        assert b1.verdict == NOT_MEASURED and "ROME on 1 order" in b1.reason and "waits for 3 orders" in b1.reason
        for o in (1, 2):
            _seq(st, f"rome{o}", order=o)
            _retention(st, f"rome{o}", "forgotten_em", [0.0, 0.05, 0.1, 0.1])
            _phase(st, f"rome{o}", "retention_em", catastrophic=False)
            _event(st, f"rome{o}", "collapse", 350 + o)
        b1 = _by_claim(st.conn)["B1"]
        assert b1.verdict == REFUTED and all(f"ROME order {o}:" in b1.ours for o in (0, 1, 2))
        _phase(st, "rome", "retention_em", catastrophic=True)  # order 0 now has its phase: the orders disagree
        b1 = _by_claim(st.conn)["B1"]
        assert b1.verdict == NOT_MEASURED and "disagree" in b1.reason
        for o in (1, 2):
            _phase(st, f"rome{o}", "retention_em", catastrophic=True)
        assert _by_claim(st.conn)["B1"].verdict == REPRODUCED


def test_forgetting_is_read_on_the_studies_rome_with_the_original_keys_too(tmp_path):
    """The studies' ROME had the original keys (before r-ROME's fix): B1 reads that arm beside r-ROME's and
    MEMIT's, each on its own orders; it reproduces when every order of one arm agrees."""
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        for o in (0, 1, 2):
            _seq(st, f"rome{o}", order=o)  # r-ROME keys: no phase, no collapse
            _retention(st, f"rome{o}", "forgotten_em", [0.0, 0.05, 0.1, 0.1])
            _phase(st, f"rome{o}", "retention_em", catastrophic=False)
            _seq(st, f"orig{o}", order=o, hparams={**ROME_HP, "key_mismatch": True})
            _retention(st, f"orig{o}", "forgotten_em", [0.0, 0.3, 0.6, 0.97])
            _phase(st, f"orig{o}", "retention_em", catastrophic=o < 2)
        b1 = _by_claim(st.conn)["B1"]  # original keys: two orders agree, the third has not got there
        assert b1.verdict == NOT_MEASURED and "ROME (original keys) order 0:" in b1.ours and "ROME order 2:" in b1.ours
        assert "Measured on some orders" in b1.reason and "--edits 1000" in b1.reason
        # the orders that decided nothing are named, not "the others"
        assert ("ROME (original keys) order 2, ROME order 0, ROME order 1, ROME order 2 have reached neither"
                in b1.reason)
        _phase(st, "orig2", "retention_em", catastrophic=True)
        assert _by_claim(st.conn)["B1"].verdict == REPRODUCED
        st.conn.execute("UPDATE runs SET status = 'interrupted', n_total = 500 WHERE run_id = 'orig1'")
        st.conn.commit()  # a run not finished is named with how far it got
        assert "ROME (original keys) order 1 (interrupted, 500 of 500 edits):" in _by_claim(st.conn)["B1"].ours


def test_a_run_still_computing_with_no_disabling_edit_yet_decides_nothing(tmp_path):
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        for o in (0, 1, 2):
            _seq(st, f"orig{o}", order=o, hparams={**ROME_HP, "key_mismatch": True}, n_done=420)
            _seq(st, f"rrome{o}", order=o)
        _event(st, "orig0", "disabling_edit", 262, value=6.9)
        _event(st, "orig1", "disabling_edit", 280, value=5.0)
        st.conn.execute("UPDATE runs SET status = 'interrupted', n_total = 500, n_done = 40 WHERE run_id = 'orig2'")
        st.conn.commit()
        b3 = _by_claim(st.conn)["B3"]
        assert b3.verdict == NOT_MEASURED and "Orders 0 and 1 agree with the claim; order 2 not yet" in b3.reason \
            and "order 2 (40 of 500" in b3.reason
        st.conn.execute("UPDATE runs SET status = 'done', n_total = 500, n_done = 500 WHERE run_id = 'orig2'")
        st.conn.commit()
        b3 = _by_claim(st.conn)["B3"]  # finished with none: order 2 goes against the claim
        assert b3.verdict == UNSETTLED and b3.reason == (
            "Measured, but undecided: the orders disagree (orders 0 and 1 as the claim says, order 2 against it).")


def _usable_until(st, run_id, collapse_at, margin_left):
    """Quick-suite checkpoints 0 and 300 of one task (chance 0.5, unedited 0.9) keeping `margin_left` of the
    margin at 300, and a collapse event there when `collapse_at` is given."""
    n = 200
    rows = []
    for at, score in ((0, 0.9), (300, 0.5 + 0.4 * margin_left)):
        lo, hi = wilson_ci(round(score * n), n)
        rows.append({"run_id": run_id, "edit_count": at, "batch_size": 1, "task": "sentiment", "task_version": "1",
                     "mode": "quick", "score": score, "n": n, "ci_low": lo, "ci_high": hi, "chance": 0.5,
                     "higher_is_better": 1, "metric": "accuracy"})
    st.write_abilities(rows)
    if collapse_at is not None:
        _event(st, run_id, "collapse", collapse_at)


def test_abilities_at_the_collapse_are_judged_on_three_edit_orders(tmp_path):
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        _seq(st, "rome0")
        _usable_until(st, "rome0", 300, 0.05)
        b2 = _by_claim(st.conn)["B2"]  # one order at chance after its collapse: waits for the other two
        assert b2.verdict == NOT_MEASURED and "ROME on 1 order" in b2.reason and "unusable from edit 300" in b2.ours
        for o in (1, 2):
            _seq(st, f"rome{o}", order=o)
            _usable_until(st, f"rome{o}", 300, 0.1)
        b2 = _by_claim(st.conn)["B2"]
        assert b2.verdict == REPRODUCED and b2.value == pytest.approx(0.05, abs=0.02)
        assert all(f"ROME order {o}: unusable from edit 300" in b2.ours for o in (0, 1, 2))
        with Store.open(tmp_path / "t.sqlite", create=True) as other:  # collapsed with abilities left: refuted
            for o in range(3):
                _seq(other, f"rome{o}", order=o)
                _usable_until(other, f"rome{o}", 300, 0.8)
            assert _by_claim(other.conn)["B2"].verdict == REFUTED
        with Store.open(tmp_path / "u.sqlite", create=True) as other:  # none collapsed: waits, names the runs
            for o in range(3):
                _seq(other, f"rome{o}", order=o, n_done=300)
                _usable_until(other, f"rome{o}", None, 0.8)
            b2 = _by_claim(other.conn)["B2"]
            assert b2.verdict == NOT_MEASURED and "No run reached its collapse" in b2.reason


# --------------------------------------------------------------------------- study C


def _abilities(st, run_id, scores: dict[int, float], n=200):
    rows = []
    for b, s in scores.items():
        for task in ("sentiment", "nli"):
            lo, hi = wilson_ci(round(s * n), n)
            rows.append({"run_id": run_id, "edit_count": b, "batch_size": b, "task": task, "task_version": "1",
                         "mode": "quick", "score": s, "n": n, "ci_low": lo, "ci_high": hi, "chance": 0.5,
                         "higher_is_better": 1, "metric": "accuracy"})
    st.write_abilities(rows)


def test_batch_sizes_small_batches_intact_large_ones_not_yet_measured(tmp_path):
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        _run(st, "b", "batch", editor="MEMIT", config={"case_set": "s"}, n_done=3)
        _abilities(st, "b", {0: 0.8, 10: 0.8, 100: 0.78, 500: 0.6})
        c2 = _by_claim(st.conn)["C2"]
        assert c2.verdict == NOT_MEASURED and "largest batch measured is 500" in c2.reason
        _abilities(st, "b", {2000: 0.55})
        assert _by_claim(st.conn)["C2"].verdict == REPRODUCED
        _abilities(st, "b", {10: 0.6})  # a small batch already hurts
        assert _by_claim(st.conn)["C2"].verdict == REFUTED


def _study_c(st, run_id, end: dict[str, float], n=200):
    """Quick-suite scores of study C's three tasks: 0.8 unedited and at 50 edits, `end[task]` at 500."""
    rows = []
    for at in (0, 50, 500):
        for task in ("sentiment", "entity_typing", "closed_book_qa"):
            s = end[task] if at == 500 else 0.8
            lo, hi = wilson_ci(round(s * n), n)
            rows.append({"run_id": run_id, "edit_count": at, "batch_size": 1, "task": task, "task_version": "1",
                         "mode": "quick", "score": s, "n": n, "ci_low": lo, "ci_high": hi, "chance": 0.5,
                         "higher_is_better": 1, "metric": "accuracy"})
    st.write_abilities(rows)


def test_rect_keeping_abilities_is_read_on_the_ci_of_the_difference_on_three_orders(tmp_path):
    """C4: the share of the ability margin kept, RECT 20% against ROME, with each share's standard error from its
    tasks' Wilson CIs: a clear difference on every order reproduces the claim, one within the noise leaves it
    undecided (a difference of point estimates alone decided it before)."""
    fall = {"sentiment": 0.6, "entity_typing": 0.6, "closed_book_qa": 0.6}  # 1/3 of the margin (0.3 over chance)
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        for o in range(3):
            _seq(st, f"rome{o}", order=o)
            _seq(st, f"rect{o}", order=o, hparams={**ROME_HP, "rect_top": 0.2})
            _study_c(st, f"rome{o}", fall)
            _study_c(st, f"rect{o}", {t: 0.75 for t in fall})  # 5/6 of it
        c4 = _by_claim(st.conn)["C4"]
        assert c4.verdict == REPRODUCED and "ROME keeps 0.33, RECT 20% 0.83 of the ability margin (difference +0.50 [" \
            in c4.ours, c4
        _study_c(st, "rect2", {t: 0.62 for t in fall})  # 0.40 against 0.33 on 200 items a task: within the noise
        c4 = _by_claim(st.conn)["C4"]
        assert c4.verdict == UNSETTLED and c4.reason == "Measured, but undecided: the CI of the difference includes 0 " \
            "on order 2.", c4


def test_ability_erosion_is_read_on_every_edit_order_of_rome(tmp_path):
    fall = {"sentiment": 0.6, "entity_typing": 0.55, "closed_book_qa": 0.6}
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        _seq(st, "rome0")
        _study_c(st, "rome0", fall)
        c1 = _by_claim(st.conn)["C1"]  # all three fell on one order: the direction waits for the others
        assert (c1.verdict, c1.direction) == (NOT_COMPARABLE, "undecided") and "waits for 3 edit orders" in c1.reason
        for o in (1, 2):
            _seq(st, f"rome{o}", order=o)
            _study_c(st, f"rome{o}", fall)
        c1 = _by_claim(st.conn)["C1"]
        assert c1.direction == "agrees" and all(f"ROME order {o}: all three fell" in c1.reason for o in (0, 1, 2))
        assert all(f"ROME order {o}: 0.80 at 50 edits, 0.60" in c1.ours for o in (0, 1, 2))
        assert c1.value == pytest.approx(0.6) and c1.n == 200
        _study_c(st, "rome2", {**fall, "sentiment": 0.79})  # sentiment holds on one order
        assert _by_claim(st.conn)["C1"].direction == "undecided"
        st.conn.execute("UPDATE runs SET status = 'interrupted', n_total = 1000 WHERE run_id = 'rome2'")
        st.conn.commit()
        c1 = _by_claim(st.conn)["C1"]  # ... but that run is still computing: sentiment may still fall
        assert c1.direction == "undecided" and "ROME order 2: some fell so far" in c1.reason
        assert "waits for the runs still computing: ROME order 2 (500 of 1000 edits, interrupted)" in c1.reason
    with Store.open(tmp_path / "t.sqlite", create=True) as st:
        for o in range(3):
            _seq(st, f"rome{o}", order=o)
            _study_c(st, f"rome{o}", {"sentiment": 0.8, "entity_typing": 0.79, "closed_book_qa": 0.81})
        assert _by_claim(st.conn)["C1"].direction == "disagrees"


def test_ability_erosion_reads_rome_with_the_original_keys_beside_r_rome(tmp_path):
    fall = {"sentiment": 0.6, "entity_typing": 0.55, "closed_book_qa": 0.6}
    hold = {"sentiment": 0.8, "entity_typing": 0.79, "closed_book_qa": 0.81}
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        for o in range(3):  # r-ROME keeps its abilities on every order
            _seq(st, f"rome{o}", order=o)
            _study_c(st, f"rome{o}", hold)
        _seq(st, "orig0", hparams={**ROME_HP, "key_mismatch": True}, n_done=340)
        st.conn.execute("UPDATE runs SET status = 'interrupted', n_total = 500 WHERE run_id = 'orig0'")
        _study_c(st, "orig0", fall)
        c1 = _by_claim(st.conn)["C1"]  # one arm disagrees on 3 orders, the other agrees on its only one
        assert c1.direction == "disagrees"
        assert "ROME (original keys) order 0 (interrupted, 340 of 500 edits): 0.80 at 50 edits, 0.60" in c1.ours
        assert "ROME (original keys) order 0: all three fell" in c1.reason and "ROME order 2: none fell" in c1.reason
        for o in (1, 2):
            _seq(st, f"orig{o}", order=o, hparams={**ROME_HP, "key_mismatch": True})
            _study_c(st, f"orig{o}", fall)
        c1 = _by_claim(st.conn)["C1"]  # every order of the original-keys arm agrees: the direction agrees
        assert c1.direction == "agrees" and c1.reason.endswith(".") and "waits" not in c1.reason


def _newest(st, run_id, es, ps, n=10):
    """Newest-edit ES and PS of 10 edits at checkpoints 100-500."""
    st.write_measurements([{"run_id": run_id, "case_id": RUN_LEVEL, "edit_count": at, "rephrase_type": "newest",
                            "metric": m, "value": v} for at in range(100, 501, 100)
                           for m, v in (("es", es), ("ps", ps), ("n", float(n)))])


def test_rect_keeping_editing_performance_is_judged_on_three_edit_orders(tmp_path):
    rect = {**ROME_HP, "rect_top": 0.4}
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        _seq(st, "rome0")
        _seq(st, "rect0", hparams=rect)
        _newest(st, "rome0", 1.0, 0.9)
        _newest(st, "rect0", 1.0, 0.88)
        c3 = _by_claim(st.conn)["C3"]  # keeps 98% on one order: waits for the others
        assert c3.verdict == NOT_MEASURED and "1 shared order" in c3.reason and "order 0, newest edits" in c3.ours
        st.conn.execute("UPDATE runs SET status = 'interrupted', n_total = 1000 WHERE run_id = 'rect0'")
        c3 = _by_claim(st.conn)["C3"]  # a run not finished is named with how far it got
        assert "order 0 (RECT 40% interrupted, 500 of 1000 edits), newest edits" in c3.ours
        st.conn.execute("UPDATE runs SET status = 'done', n_total = 500 WHERE run_id = 'rect0'")
        for o in (1, 2):
            _seq(st, f"rome{o}", order=o)
            _seq(st, f"rect{o}", order=o, hparams=rect)
            _newest(st, f"rome{o}", 1.0, 0.9)
            _newest(st, f"rect{o}", 1.0, 0.88)
        c3 = _by_claim(st.conn)["C3"]
        assert c3.verdict == REPRODUCED and c3.n == 50 and all(f"order {o}," in c3.ours for o in (0, 1, 2))
        _newest(st, "rect2", 1.0, 0.2)  # far below on one order: the orders disagree
        assert _by_claim(st.conn)["C3"].verdict == UNSETTLED
        for o in (0, 1):
            _newest(st, f"rect{o}", 1.0, 0.2)
        assert _by_claim(st.conn)["C3"].verdict == REFUTED


def _panel(st, run_id, recall: dict[int, float], n=200):
    st.write_measurements([{"run_id": run_id, "case_id": RUN_LEVEL, "edit_count": at, "rephrase_type": "panel",
                            "metric": m, "value": v} for at, r in recall.items()
                           for m, v in (("panel_recall", r), ("n", float(n)))])


def test_alphaedit_against_memit_is_read_on_panel_recall_on_three_edit_orders(tmp_path):
    plain = {"key_constraint": "plain"}
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        assert _by_claim(st.conn)["B6"].verdict == NOT_MEASURED
        for o in range(3):
            _seq(st, f"memit{o}", editor="MEMIT", hparams=plain, order=o, config={"batch_size": 10})
            _seq(st, f"alpha{o}", editor="AlphaEdit", hparams=plain, order=o, config={"batch_size": 10},
                 n_done=300 if o == 0 else 500)
            _panel(st, f"memit{o}", {0: 0.9, 300: 0.3, 500: 0.1})
            _panel(st, f"alpha{o}", {0: 0.9, 300: 0.6} if o == 0 else {0: 0.9, 300: 0.6, 500: 0.5})
        # a variant with another key constraint is not either editor's reference arm
        _seq(st, "memit-all", editor="MEMIT", hparams={"key_constraint": "all"}, order=0, config={"batch_size": 10})
        _panel(st, "memit-all", {0: 0.9, 500: 0.9})
        b6 = _by_claim(st.conn)["B6"]
        assert b6.verdict == REPRODUCED and b6.n == 3 and "memit-all" not in b6.url
        # read at the last checkpoint both reached: order 0 at 300, where AlphaEdit stopped
        assert "order 0, edit 300: panel recall MEMIT 0.30" in b6.ours and "order 1, edit 500:" in b6.ours
        _panel(st, "alpha2", {500: 0.12})  # CIs overlap on one order: undecided
        assert _by_claim(st.conn)["B6"].verdict == UNSETTLED
        for o in (0, 1, 2):  # AlphaEdit below MEMIT on every order: refuted
            _panel(st, f"alpha{o}", {300: 0.1, 500: 0.02})
        assert _by_claim(st.conn)["B6"].verdict == REFUTED


def test_an_order_whose_runs_are_still_computing_decides_nothing_until_they_finish(tmp_path):
    """An order-by-order comparison reads each order at the last checkpoint both runs reached; for a run still
    computing that is as far as it got (edit 30 of 500 on the rebuild), which says nothing about edit 500: the
    order waits. An order that shows neither, or two that disagree, decide "undecided" at once."""
    plain = {"key_constraint": "plain"}
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        for o in range(3):
            _seq(st, f"memit{o}", editor="MEMIT", hparams=plain, order=o, config={"batch_size": 10})
            _seq(st, f"alpha{o}", editor="AlphaEdit", hparams=plain, order=o, config={"batch_size": 10})
            _panel(st, f"memit{o}", {0: 0.9, 30: 0.3, 500: 0.1})
            _panel(st, f"alpha{o}", {0: 0.9, 30: 0.6, 500: 0.5})
        assert _by_claim(st.conn)["B6"].verdict == REPRODUCED
        st.conn.execute("UPDATE runs SET status = 'interrupted', n_total = 500, n_done = 30 WHERE run_id = 'alpha2'")
        st.conn.execute("DELETE FROM measurements WHERE run_id = 'alpha2' AND edit_count = 500")
        st.conn.commit()
        b6 = _by_claim(st.conn)["B6"]  # order 2 at edit 30 agrees, but its AlphaEdit run is not finished
        assert b6.verdict == NOT_MEASURED and b6.n == 2, b6
        assert "order 2, edit 30: panel recall MEMIT 0.30" in b6.ours and "AlphaEdit (interrupted, 30 of 500" in b6.ours
        assert b6.reason == ("Orders 0 and 1 agree with the claim; order 2 not yet: the verdict waits for the runs "
                             "still computing: AlphaEdit order 2 (30 of 500 edits, interrupted).")
        _panel(st, "memit1", {500: 0.135})  # 27 and 47 of 200: the two Wilson intervals overlap, the difference's
        _panel(st, "alpha1", {500: 0.235})  # 95% CI [-0.175, -0.024] does not: order 1 agrees
        assert _by_claim(st.conn)["B6"].reason.startswith("Orders 0 and 1 agree with the claim; order 2 not yet")
        _panel(st, "memit1", {500: 0.1})
        _panel(st, "alpha1", {500: 0.12})  # order 1 within the noise: undecided whatever order 2 shows
        b6 = _by_claim(st.conn)["B6"]
        assert b6.verdict == UNSETTLED and b6.reason == "Measured, but undecided: the CI of the difference includes 0 on order 1."
        for run in ("memit2", "alpha2"):
            st.conn.execute(f"DELETE FROM runs WHERE run_id = '{run}'")
        st.conn.commit()
        b6 = _by_claim(st.conn)["B6"]  # two orders, one showing neither: already undecided, not "too few"
        assert b6.reason == "Measured, but undecided: the CI of the difference includes 0 on order 1."
        _panel(st, "alpha1", {500: 0.5})
        assert _by_claim(st.conn)["B6"].reason == (
            "Which editor keeps more varies with the edit order, and the store has 2 shared orders (0, 1): run both "
            "on `--order-seed 2`.")


def test_ability_loss_beyond_a_size_matched_control_is_read_per_task_on_three_edit_orders(tmp_path):
    """C5 asks C1's erosion what a control would show: ROME against random rank-one updates of its own norms."""
    fall = {"sentiment": 0.6, "entity_typing": 0.55, "closed_book_qa": 0.6}
    hold = {"sentiment": 0.8, "entity_typing": 0.79, "closed_book_qa": 0.81}
    with Store.open(tmp_path / "s.sqlite", create=True) as st:
        _seq(st, "rome0")
        _study_c(st, "rome0", fall)
        c5 = _by_claim(st.conn)["C5"]
        assert c5.verdict == NOT_MEASURED and c5.ours == "no ROME run with its control on one edit order"
        for o in range(3):
            if o:
                _seq(st, f"rome{o}", order=o)
                _study_c(st, f"rome{o}", fall)
            _seq(st, f"control{o}", editor="RandomRankOne", order=o, hparams={"reference_run": f"rome{o}"})
            _study_c(st, f"control{o}", {**hold, "entity_typing": 0.56})  # NER falls under the control too
        c5 = _by_claim(st.conn)["C5"]
        assert c5.verdict == REPRODUCED and (c5.value, c5.n) == (0.6, 200), c5  # the headline: ROME's sentiment
        assert "order 0, edit 500: sentiment, 200 items: ROME 0.60" in c5.ours and "vs control 0.80" in c5.ours
        assert c5.page == "abilities" and "control1" in c5.url
        _study_c(st, "control2", fall)  # on one order the control falls as far: undecided
        assert _by_claim(st.conn)["C5"].verdict == UNSETTLED
        for o in range(3):  # the control worse than ROME on every order: refuted
            _study_c(st, f"rome{o}", hold)
            _study_c(st, f"control{o}", fall)
        assert _by_claim(st.conn)["C5"].verdict == REFUTED


# --------------------------------------------------------------------------- the shipped store, README and page


def test_rules_are_one_sentence_and_every_number_has_its_verdict(tmp_path):
    shutil.copy(SHIPPED, tmp_path / "s.sqlite")
    with Store.open(tmp_path / "s.sqlite", readonly=True) as st:
        items = findings(st.conn)
    assert [f.claim for f in items] == ["A1", "A2", "A3", "A4", "A5", "A6", "A7", "A8", "B1", "B2", "B3", "B4", "B5",
                                        "B6", "C1", "C2", "C3", "C4", "C5"]
    for f in items:
        assert f.verdict in fmod.VERDICTS and f.rule.rstrip(".").count(". ") == 0, f.claim
        assert f.page in ("robustness", "popularity", "forgetting", "abilities") and f.ours
        assert (f.verdict == NOT_COMPARABLE) == bool(f.direction)
        assert f.verdict not in (NOT_COMPARABLE, NOT_MEASURED) or f.reason


def test_the_readme_block_is_the_functions_output_on_the_shipped_store():
    with Store.open(SHIPPED, readonly=True) as st:
        expected = fmod.block(st.conn)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert fmod.readme_block(readme) == expected.strip("\n"), \
        "README block is stale: run `python -m store.findings --store store/results.sqlite --write-readme README.md`"


def test_the_readmes_rebuild_block_is_the_functions_output_on_the_committed_rebuild():
    rebuild = ROOT / "store" / "rebuild.sqlite"
    start, end = fmod.markers_of("rebuild-findings")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    if not rebuild.exists():  # the rebuild has replaced the shipped store: no block left to keep
        assert start not in readme
        return
    with Store.open(rebuild, readonly=True) as st:
        expected = fmod.block(st.conn, "store/rebuild.sqlite", "rebuild-findings")
    assert fmod.readme_block(readme, start, end) == expected.strip("\n"), (
        "README's rebuild block is stale: run `python -m store.findings --store store/rebuild.sqlite --markers "
        "rebuild-findings --write-readme README.md` (or `plan snapshot ... --write-readme README.md`)")
    with pytest.raises(ValueError, match="use one of findings, rebuild-findings"):
        fmod.markers_of("other")


def test_the_readme_block_is_replaced_between_its_markers_only():
    text = f"intro\n{fmod.START}\nold\n{fmod.END}\noutro\n"
    new = fmod.with_block(text, "new\nlines\n")
    assert new == f"intro\n{fmod.START}\nnew\nlines\n{fmod.END}\noutro\n" and fmod.readme_block(new) == "new\nlines"
    with pytest.raises(ValueError, match="exactly one"):
        fmod.readme_block("no markers")


def test_findings_imports_neither_compute_torch_nor_streamlit():
    code = ("import sys, store.findings; bad = [m for m in ('torch', 'streamlit', 'compute') if m in sys.modules]; "
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_findings_page_shows_every_claim_as_text_with_a_link_to_its_evidence(monkeypatch, tmp_path):
    from streamlit.testing.v1 import AppTest

    shutil.copy(SHIPPED, tmp_path / "s.sqlite")
    monkeypatch.setenv("EDITSCOPE_STORE", str(tmp_path / "s.sqlite"))
    monkeypatch.setenv("EDITSCOPE_WORKSPACE", str(tmp_path / "ws.sqlite"))
    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("app_pages/findings.py").run()
    assert not at.exception
    with Store.open(tmp_path / "s.sqlite", readonly=True) as st:
        items = findings(st.conn)
    assert [s.value for s in at.subheader] == [f.claim for f in items]
    texts = [t.value for t in at.text]
    for f in items:  # the store's figures reach the page as plain text, never markdown
        assert "EditScope: " + f.ours in texts and "Rule: " + f.rule in texts
        assert not any(f.ours in m.value for m in at.markdown)
    links = at.get("page_link")
    assert len(links) == len(items)
    assert [(link.proto.page, link.proto.query_string) for link in links] == \
        [(f.page, f.url.partition("?")[2]) for f in items]
    # a measured study-A claim's evidence names the runs it was read on
    assert any("runs=robustness-" in link.proto.query_string for link, f in zip(links, items)
               if f.study == "A" and f.verdict != "not measured yet")


def test_a_claim_not_reached_yet_waits_for_runs_still_computing_before_asking_to_extend_them():
    from store.findings import _not_yet

    going = {"ROME": {"n_done": 240, "n_total": 500, "status": "interrupted"},
             "MEMIT, b=1": {"n_done": 500, "n_total": 500, "status": "done"}}
    assert _not_yet(going) == ("the verdict waits for the runs still computing: ROME (240 of 500 edits, "
                               "interrupted).")
    finished = {"ROME": {"n_done": 500, "n_total": 500, "status": "done"},
                "MEMIT, b=1": {"n_done": 380, "n_total": 1000, "status": "done"}}  # stopped past its collapse
    assert "extend the runs" in _not_yet(finished)


def test_a_bound_zero_but_for_rounding_reads_zero():
    """A8's bootstrap bound of a paired difference came out as -5e-18 on the rebuild and read "-0.00"."""
    assert fmod._signed_ci(0.08, -5e-18, 0.17) == "+0.08 [+0.00, +0.17]"
    assert fmod._signed_ci(0.08, -0.004, 0.17) == "+0.08 [-0.00, +0.17]"  # a real one, however small, keeps its sign
    assert fmod._ci(0.08, -5e-18, 0.17, 22) == "0.08 [0.00, 0.17], n = 22"
    assert fmod._ci(0.5, None, None) == "0.50"

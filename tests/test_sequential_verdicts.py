"""Study B's verdicts on a real sequential run of the tiny model: a planted huge edit is flagged as a
disabling edit and a planted ability cliff as an abrupt change and a catastrophic phase; the same run
without them flags neither. The verdicts the runner records equal those re-derived from the store."""

from __future__ import annotations

import json

import pytest
import torch

import compute.experiments.sequential as seq
from compute.experiments.sequential import SequentialConfig, run_sequential
from store import Store, derived, queries
from store.metrics import wilson_ci

# a checkpoint (and the ability stand-in) after every edit
CFG = SequentialConfig(max_edits=10, checkpoint_every=1, dense_first=10, panel_pool=4, panel_size=3,
                       panel_known_only=False, panel_tokens=3, fluency_tokens=6, abilities_every=1)
HUGE_AT = 6  # the planted huge edit is the 6th
CLIFF_AFTER = 5  # the planted ability falls from 0.9 to chance once more than 5 edits are made


@pytest.fixture(scope="module")
def cases(builder):
    return builder.build(14, seed=5, relations=["capital", "currency", "continent"], case_set="s14")


def _setup(llama, tmp_path):
    from test_editor_contract import FACTORIES, tiny_context

    from compute.editors import get_editor

    ctx = tiny_context(llama, tmp_path)
    ctx.demonstrations = ()
    return FACTORIES["ROME"](get_editor("ROME"), llama), ctx


def _ability(cliff: bool):
    """An ability task stand-in read at edit 0 and after every edit: 0.9 of 200 items, and at chance (0.25)
    once more than CLIFF_AFTER edits are made when `cliff`, small deterministic wobble otherwise."""
    calls = []

    def measure(lm):
        k = len(calls)  # the edit count: called at 0 and after every edit
        calls.append(k)
        score = 0.25 if cliff and k > CLIFF_AFTER else 0.9 - 0.01 * (k % 3)
        lo, hi = wilson_ci(round(score * 200), 200)
        return [{"task": "planted", "task_version": "1", "mode": "quick", "score": score, "n": 200,
                 "ci_low": lo, "ci_high": hi, "chance": 0.25, "higher_is_better": 1, "metric": "accuracy"}]

    return measure


def _planting(monkeypatch, factor: float):
    """apply_edit, with the HUGE_AT-th edit's update multiplied by `factor` (its originals kept, so it is
    still undone exactly)."""
    real = seq.apply_edit
    count = []

    def apply(lm, requests, editor, hp, ctx):
        result = real(lm, requests, editor, hp, ctx)
        count.append(1)
        if len(count) == HUGE_AT:
            params = dict(lm.model.named_parameters())
            with torch.no_grad():
                for name, original in result.originals.items():
                    params[name].copy_(original + factor * (params[name] - original))
        return result

    monkeypatch.setattr(seq, "apply_edit", apply)


def _run(llama, cases, tmp_path, monkeypatch, planted: bool):
    hp, ctx = _setup(llama, tmp_path)
    if planted:
        _planting(monkeypatch, 25.0)
    st = Store.open(tmp_path / "s.sqlite", create=True)
    run = run_sequential(llama, cases, st, editor="ROME", hp=hp, ctx=ctx, cfg=CFG, abilities=_ability(planted))
    return st, run


def test_a_planted_huge_edit_and_ability_cliff_are_flagged_and_re_derived_alike(llama, cases, tmp_path, monkeypatch):
    st, run = _run(llama, cases, tmp_path, monkeypatch, planted=True)
    with st:
        ev = queries.run_events(st.conn, run_ids=run)
        disabling = ev.filter(ev["kind"] == "disabling_edit")
        assert disabling["edit_count"].to_list() == [HUGE_AT] and disabling["series"].to_list() == ["update_norm"]
        detail = json.loads(disabling["detail"][0])
        assert detail["z"] > 3.5 and detail["norm"] > 10 * detail["median_norm"]
        assert len(detail["case_ids"]) == 1  # the edit is named with its case
        jumps = ev.filter(ev["kind"] == "abrupt_change")
        assert jumps.select("series", "edit_count", "end_count").rows() == [("ability:planted", CLIFF_AFTER,
                                                                             CLIFF_AFTER + 1)]
        phases = derived.sequential_phases(st.conn, run)
        planted = phases.filter(phases["series"] == "planted (ability)").row(0, named=True)
        assert planted["catastrophic"] and planted["change_at"] == CLIFF_AFTER + 1
        # what the runner recorded is what the store re-derives from its rows, without an edit
        recorded = sorted(map(tuple, ev.filter(ev["kind"].is_in(list(derived.DERIVED_EVENT_KINDS)))
                              .select("kind", "series", "edit_count", "end_count").rows()))
        again = sorted((e["kind"], e["series"], e["edit_count"], e.get("end_count"))
                       for e in derived.derive_sequential_events(st.conn, run))
        assert recorded == again


def test_the_same_run_without_plants_flags_neither(llama, cases, tmp_path, monkeypatch):
    st, run = _run(llama, cases, tmp_path, monkeypatch, planted=False)
    with st:
        ev = queries.run_events(st.conn, run_ids=run)
        assert ev.filter(ev["kind"].is_in(["disabling_edit", "abrupt_change"])).is_empty()
        phases = derived.sequential_phases(st.conn, run)
        assert not phases.filter(phases["series"] == "planted (ability)")["catastrophic"].any()

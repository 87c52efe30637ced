"""Findings: each headline claim of the three studies beside what the shown store measures (store.findings):
the paper's figure, ours with n and 95% CI, the verdict, the rule that gave it and a link to the evidence.
The README's "What the shipped store shows" block is the same function's output."""

from pathlib import Path

import polars as pl
import streamlit as st

from dashboard.data import previous_version, stamp, store_path
from dashboard.tables import Col, show
from store import Store, changes
from store.findings import (NOT_COMPARABLE, NOT_MEASURED, REFUTED, REPRODUCED, STUDIES, UNSETTLED, findings,
                            plan_part)

PAGES = Path(__file__).resolve().parent
COLOURS = {REPRODUCED: "green", REFUTED: "red", NOT_COMPARABLE: "orange", UNSETTLED: "violet", NOT_MEASURED: "gray"}
TITLES = {"robustness": "Robustness", "popularity": "Popularity", "forgetting": "Forgetting",
          "abilities": "General abilities"}


@st.cache_data(max_entries=4, show_spinner=False)
def _findings(path: str, key: tuple) -> list:
    """The findings of the store at `path`; `key` (dashboard.data.stamp) changes when the store does."""
    with Store.open(Path(path), readonly=True) as st_:
        return findings(st_.conn)


st.title("Findings: the studies' claims, measured")
st.caption("Each claim of the three studies beside what this store measures, with the rule that gives the verdict. "
           "The model is SmolLM2-135M, not the papers' 1.5B-7B models: levels are not compared, directions are. "
           "Verdicts: reproduced, refuted, not comparable (the paper's level; the direction is still compared), "
           "undecided (measured, and the data decide neither way at their n, or the edit orders disagree), not "
           "measured yet (the store lacks what the claim needs, or a run it needs is still computing). Runs started "
           "from this dashboard (the workspace store) are not counted.")


@st.cache_data(max_entries=4, show_spinner=False)
def _plan_part(path: str, key: tuple) -> str:
    """store.findings.plan_part of the store at `path` (the README's findings blocks say the same)."""
    with Store.open(Path(path), readonly=True) as st_:
        return plan_part(st_.conn)


part = _plan_part(str(store_path()), stamp())
if part:  # a store built from part of a plan; the sentence quotes the plan's file and time only in their shapes
    st.caption(part + " The Overview lists the units, with the CPU-hours each still needs.")


@st.cache_data(max_entries=2, show_spinner=False)
def _changes(path: str, previous: str, key: tuple) -> tuple[list[dict], list[tuple[str, list[str]]], str]:
    """What changed from `previous` to the store at `path` (store.changes.compare), and the previous version's
    name."""
    before = changes.load(previous, Path(previous).name)
    with Store.open(Path(path), readonly=True) as st_:
        after = changes.export(st_.conn, Path(path).name)
    return *changes.compare(before, after), Path(str(before["store"])).name  # a file name: no server path


items = _findings(str(store_path()), stamp())
previous = previous_version()
if previous is not None:
    rows, diffs, name = _changes(str(store_path()), str(previous), stamp() + ((str(previous),),))
    with st.expander("What changed from the previous version"):
        st.text(f"Previous version: {name}")
        st.caption("Each claim's verdict and headline number in the previous version and in this store, and what the "
                   "runs behind it did differently (store.changes: hyperparameters and layout from each run's record, "
                   "the probes' form from its case set and the rephrase types that became measurable, the metrics it "
                   "recorded, per-edit diagnostics, the commits it ran). \u2014 stands for a field a version's runs "
                   "did not record.")
        show(pl.DataFrame(rows, schema={"claim": pl.String, "previous": pl.String, "now": pl.String,
                                        "runs": pl.String}),
             {"claim": Col("Claim", width=60), "previous": Col("Previous", width=290),
              "now": Col("This store", width=290),
              "runs": Col("Runs behind it", width=260,
                          help="the run groups (kind: label) the claim reads, in either version; what each did "
                               "differently is listed below the table")})
        for group, diff in diffs:
            st.text(f"{group}: " + ("; ".join(diff) or "the same settings and measures"))

table = pl.DataFrame([{"claim": f.claim, "verdict": f.verdict, "direction": f.direction or None, "value": f.value,
                       "ci_low": f.ci_low, "ci_high": f.ci_high, "n": f.n} for f in items],
                     schema={"claim": pl.String, "verdict": pl.String, "direction": pl.String, "value": pl.Float64,
                             "ci_low": pl.Float64, "ci_high": pl.Float64, "n": pl.Int64})
show(table, {"claim": Col("Claim", width="small"), "verdict": Col("Verdict"),
             "direction": Col("Direction", help="where the paper's level is not comparable: does ours point the same "
                                                "way?"),
             # one precision per column (issue 21 point 7), three decimals: a share of 2 disabling edits in 420
             # reads 0.005, not 0.00, and 0.86 does not turn into 0.9 beside 0.042 as two significant digits did
             "value": Col("Headline number", "{:.3f}", "the claim's own measure for the first editor or run that "
                          "EditScope's column below names, with its CI and n (A2-A5: acc on the rephrase type; A8: "
                          "the gap on the first type; B2: the share of the ability margin kept by the first run that "
                          "collapsed; B3: the share of the original-keys ROME run's edits that disabled the model; "
                          "C1 and C5: the first task's score at the run's end); the column below gives every figure"),
             "ci_low": Col("CI low", "{:.3f}"), "ci_high": Col("CI high", "{:.3f}"), "n": Col("n", "{:,.0f}")})

for study, title in STUDIES.items():
    st.header(title)
    for f in (f for f in items if f.study == study):
        with st.container(border=True):
            head, badge = st.columns([9, 2])  # wide enough for "direction undecided" on one line
            head.subheader(f.claim)
            head.text(f.statement)
            with badge:
                st.badge(f.verdict, color=COLOURS.get(f.verdict, "gray"))
                if f.direction:
                    st.badge(f"direction {f.direction}", color="blue")
            st.text("Paper: " + f.paper)
            st.text("EditScope: " + f.ours)
            st.text("Rule: " + f.rule)
            if f.reason:
                st.text("Note: " + f.reason)
            if f.page in TITLES:
                st.page_link(str(PAGES / f"{f.page}.py"), label=f"Evidence: {TITLES[f.page]} page",
                             icon=":material/arrow_forward:", query_params=dict(f.query))

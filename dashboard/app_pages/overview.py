"""Overview: what the store holds, the pre-edit knowledge of the case sets, and every run with provenance."""

import polars as pl
import streamlit as st

from dashboard import charts
from dashboard.data import query, store_path

st.title("EditScope")
st.caption(f"Results store: `{store_path()}` (read-only)")

summary = query("store_summary")
counts = dict(zip(summary["table"].to_list(), summary["rows"].to_list()))
cols = st.columns(5)
for col, (label, table) in zip(
    cols,
    [("Facts", "kb_facts"), ("Subjects", "kb_subjects"), ("Edit cases", "cases"), ("Probes", "probes"), ("Runs", "runs")],
):
    col.metric(label, f"{counts.get(table, 0):,}")

st.header("Headline findings")
rob = query("robustness_headlines")
if rob.is_empty():
    st.info("No robustness runs yet: the plain-vs-hardest comparison appears once one has results.")
else:
    st.subheader("Edits that hold on the plain prompt fail on rephrasings (study A)")
    cols = st.columns(min(4, rob.height))
    for col, r in zip(cols * 4, rob.iter_rows(named=True)):
        col.metric(f"{r['editor']}: acc plain → {r['hardest_type']}", f"{r['plain']:.2f} → {r['hardest']:.2f}",
                   delta=f"{r['drop']:+.2f}", delta_color="normal",
                   help=f"Generation names the new object. Plain 95% CI [{r['plain_ci_low']:.2f}, "
                        f"{r['plain_ci_high']:.2f}], {r['hardest_type']} [{r['hardest_ci_low']:.2f}, "
                        f"{r['hardest_ci_high']:.2f}]; n = {r['n']} cases ({r['status']}).")
    excluded = sorted({t for e in rob["excluded_types"].to_list() if e for t in e.split(", ")})
    st.caption("Hardest type: the lowest post-edit acc among the rephrase types the unedited model can answer "
               "(its recall there at least half its recall on the plain prompt)"
               + (f"; left out as unanswerable before any edit: {', '.join(excluded)}." if excluded else "."))
    st.dataframe(rob, hide_index=True)
seq = query("sequential_headlines")
if not seq.is_empty():
    st.subheader("Sequential edits: when does the model break? (study B)")
    st.dataframe(seq, hide_index=True, column_config={
        "collapse_at": st.column_config.NumberColumn("collapse at edit", help="online collapse: fluency or "
                                                     "panel recall fell below its threshold (empty: none)"),
        "catastrophic_from": st.column_config.NumberColumn("catastrophic phase from"),
        "retention": st.column_config.NumberColumn("retained edits (last)", format="%.2f"),
        "panel_recall": st.column_config.NumberColumn("panel recall (last)", format="%.2f")})

st.header("Pre-edit knowledge by popularity")
sets = query("case_sets")
if sets.is_empty():
    st.info("No case sets yet: build one with `python -m compute cases build`.")
else:
    import json

    measured = {json.loads(r["config"] or "{}").get("case_set")
                for r in query("list_runs", kind="knowledge").iter_rows(named=True) if r["status"] == "done"}
    # sets with measured pre-edit knowledge first, then the largest
    ordered = sets.with_columns(pl.col("case_set").is_in(list(measured)).alias("_k"))
    names = ordered.sort("_k", "n_cases", "case_set", descending=[True, True, False])["case_set"].to_list()
    chosen = st.selectbox("Case set", names, index=0, key="case_set")
    split = st.toggle("Split by relation", value=False)
    by_q = query("knowledge_by_quartile", case_set=chosen, by_relation=split)
    if by_q.is_empty():
        st.info("No pre-edit knowledge measured for this case set: run `python -m compute knowledge measure`.")
    else:
        st.plotly_chart(charts.recall_by_quartile(by_q), width="stretch")
        st.download_button("Download CSV", by_q.write_csv(), file_name=f"recall-by-quartile-{chosen}.csv")
        corr = query("knowledge_correlations", case_set=chosen)
        st.caption("Spearman rank correlation of each popularity feature with pre-edit recall (95% bootstrap CI).")
        st.dataframe(corr, hide_index=True)

with st.expander(f"Knowledge base: {counts.get('kb_relations', 0)} relations"):
    st.dataframe(query("kb_relations"), hide_index=True)
with st.expander(f"Case sets: {sets.height}"):
    st.dataframe(sets, hide_index=True)

st.header("Runs")
runs = query("list_runs")
show = [c for c in ("run_id", "kind", "model", "editor", "status", "n_done", "n_total", "seed", "started_at",
                    "finished_at", "code_version", "host", "error") if c in runs.columns]
st.dataframe(runs.select(show) if not runs.is_empty() else runs, hide_index=True)

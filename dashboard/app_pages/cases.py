"""Case explorer: find a case by subject; see its popularity features, every probe's text, and what each
run that contains it measured and generated before and after the edit. The subject comes from the visitor
(or a link's `?subject=`) and cases come from the store: both are shown as text, never as markdown."""

import polars as pl
import streamlit as st

from dashboard.data import query
from dashboard.plain import message
from store.metrics import REPHRASE_TYPES

st.title("Case explorer")
needle = st.text_input("Subject contains", value=st.query_params.get("subject", "")[:100], key="subject",
                       max_chars=100, help="Case-insensitive substring of the subject")
if needle:
    st.query_params["subject"] = needle
else:
    st.query_params.pop("subject", None)  # links leave out values equal to the default
found = query("cases", subject_like=needle or None)
if found.is_empty():
    message("No case's subject contains this text:", needle, box=st.info)
    st.stop()
labels = {r["case_id"]: f"{r['subject']} · {r['relation']}: {r['true_object']} → {r['new_object']} ({r['case_set']})"
          for r in found.iter_rows(named=True)}
case_id = st.selectbox(f"{len(labels)} matching cases", list(labels), format_func=labels.get, key="case")
case = found.filter(pl.col("case_id") == case_id).row(0, named=True)

cols = st.columns(5)
for col, (label, key) in zip(cols, [("Word frequency", "frequency"), ("Connection", "connection"),
                                    ("Co-occurrence", "cooccurrence"), ("Population", "population"),
                                    ("Popularity quartile", "popularity_quartile")]):
    value = case.get(key)
    col.metric(label, "n/a" if value is None else f"{value:,.2f}" if isinstance(value, float) else f"{value:,}")

runs = query("case_runs", case_id=case_id)
st.subheader("Runs with this case")
if runs.is_empty():
    st.info("No run has measured this case yet.")
else:
    names = {r["run_id"]: f"{r['kind']} · {r['editor'] or 'unedited'} · {r['status']} · {r.get('store', 'shipped')} · "
                          f"{r['run_id']}" for r in runs.iter_rows(named=True)}
    run_id = st.selectbox("Run", list(names), format_func=names.get, key="run")
    view = query("case_view", case_id=case_id, run_id=run_id)
    order = {t: i for i, t in enumerate(REPHRASE_TYPES)}
    view = view.with_columns(pl.col("rephrase_type").replace_strict(order, default=99).alias("_o")).sort("edit_count", "_o").drop("_o")
    st.dataframe(view, hide_index=True, width="stretch")
    st.download_button("Download CSV", view.write_csv(), file_name=f"case-{case_id}-{run_id}.csv")

st.subheader("Probes")
probes = query("probes", case_id=case_id)
for rtype in [*REPHRASE_TYPES, "neighbourhood"]:
    part = probes.filter(pl.col("rephrase_type") == rtype)
    if part.is_empty():
        continue
    with st.expander(f"{rtype} ({part.height})"):  # rtype is one of the fixed type names
        for p in part.iter_rows(named=True):
            st.code(f"{p['text']} ▸ true: {p['target_true']} | new: {p['target_new']}", language=None, wrap_lines=True)

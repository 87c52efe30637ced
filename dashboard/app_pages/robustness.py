"""Robustness (study A): does an edit that holds on the plain prompt survive rephrasing, context, dialogue
and doubt? Heat maps editor x rephrase type for the chosen metric, and the drop from the plain prompt."""

import polars as pl
import streamlit as st

from dashboard import charts
from dashboard.data import query
from dashboard.filters import shared_multiselect
from dashboard.sidebar import model_runs
from store.metrics import METRICS, REPHRASE_TYPES

st.title("Robustness of single edits")
runs = model_runs("robustness")
if runs.is_empty():
    st.info("No robustness runs in this store yet: `python -m compute run robustness --editor ROME --cases 240`.")
    st.stop()

c1, c2 = st.columns(2)
editors = shared_multiselect("Editors", "editors", sorted(runs["editor"].unique().to_list()), container=c1)
relations_all = sorted(query("kb_relations")["relation"].to_list())
relations = shared_multiselect("Relations", "relations", relations_all, container=c2,
                               help="Cases of these relations only (all by default)")
run_ids = tuple(runs.filter(pl.col("editor").is_in(editors))["run_id"].to_list())
if not run_ids or not relations:
    st.info("Choose at least one editor and one relation.")
    st.stop()

choices = {"acc": "Generation names the new object (acc)", "rev": "Generation names the true object (rev)",
           "es": "New object beats true (ES / PS)", "magnitude": "P(new) - P(true)"}
metric = st.segmented_control("Metric", list(choices), default="acc", format_func=lambda m: choices[m], key="metric")
split = st.segmented_control("Split by", ["none", "relation", "popularity_quartile"], default="none",
                             format_func=lambda s: {"none": "nothing", "relation": "relation",
                                                    "popularity_quartile": "popularity quartile"}[s], key="split")
by = None if split in (None, "none") else split
df = query("robustness_summary", run_ids=run_ids, metrics=(metric or "acc",), by=by,
           relations=None if len(relations) == len(relations_all) else tuple(relations))
if by and not df.is_empty():
    groups = sorted(df[by].drop_nulls().unique().to_list())
    group = st.selectbox("Group", groups, key="group")
    df = df.filter(df[by] == group)
if df.is_empty():
    st.info("No measurements for this choice.")
    st.stop()

label = METRICS[metric].label if metric in METRICS else metric
st.subheader(label)
st.plotly_chart(charts.rephrase_heatmap(df, "mean", label, REPHRASE_TYPES), width="stretch")
st.subheader("Change from the plain prompt")
st.plotly_chart(charts.rephrase_heatmap(df, "drop_from_plain", "Δ vs plain", REPHRASE_TYPES, diverging=True),
                width="stretch")
st.download_button("Download CSV", df.write_csv(), file_name=f"robustness-{metric}.csv")
chosen = runs.filter(pl.col("run_id").is_in(run_ids))
st.caption("Each cell: mean over cases of the per-case value (probes of a type averaged within a case), with its "
           "95% CI (Wilson for shares, bootstrap otherwise) and n in the hover. Runs: "
           + ", ".join(f"{r['editor']} ({r['n_done']}/{r['n_total']}, {r['status']})" for r in chosen.iter_rows(named=True)))

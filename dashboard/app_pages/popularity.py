"""Popularity (study A): are popular facts harder to edit robustly? For a popularity feature, binned curves
of pre-edit recall and post-edit acc/rev per rephrase type, and Spearman correlations with their CIs."""

import polars as pl
import streamlit as st

from dashboard import charts
from dashboard.data import query
from dashboard.filters import shared_multiselect, shared_selectbox
from store.derived import POPULARITY_FEATURES, popularity_bins
from store.metrics import REPHRASE_TYPES

FEATURES = {"frequency": "Word frequency (Zipf)", "connection": "Connection (facts about the subject)",
            "cooccurrence": "Co-occurrence (KB paths subject-object)", "population": "Population"}
METRICS = {"acc": "Post-edit acc (names the new object)", "rev": "Names the true object (rev; pre-edit recall)"}

st.title("Knowledge popularity")
c1, c2, c3 = st.columns(3)
feature = shared_selectbox("Popularity feature", "feature", POPULARITY_FEATURES, format_func=FEATURES.get, container=c1)
metric = c2.selectbox("Metric", list(METRICS), format_func=METRICS.get, key="pop_metric")
rtype = c3.selectbox("Rephrase type", REPHRASE_TYPES, key="rephrase_type")

d1, d2 = st.columns(2)
editor_names = sorted(query("list_runs", kind="robustness")["editor"].drop_nulls().unique().to_list())
editors = shared_multiselect("Editors", "editors", editor_names, container=d1) if editor_names else []
relations_all = sorted(query("kb_relations")["relation"].to_list())
relations = shared_multiselect("Relations", "relations", relations_all, container=d2)
points = query("popularity_points", feature=feature, metric=metric, rephrase_type=rtype,
               editors=tuple(editors), relations=None if len(relations) == len(relations_all) else tuple(relations))
if points.is_empty():
    st.info("No measurements for this choice yet: run `python -m compute knowledge measure` and "
            "`python -m compute run robustness`.")
    st.stop()
bins = popularity_bins(points, feature, bins=4)
left, right = st.columns(2)
with left:
    st.subheader("Binned")
    st.plotly_chart(charts.binned_curves(bins, FEATURES[feature], METRICS[metric]), width="stretch")
with right:
    st.subheader("Every case")
    st.plotly_chart(charts.popularity_scatter(points, feature, FEATURES[feature], METRICS[metric],
                                              log_x=feature == "population"), width="stretch")
st.download_button("Download CSV (bins)", bins.write_csv(), file_name=f"popularity-{feature}-{metric}-{rtype}.csv")

st.subheader("Spearman correlation with the feature")
pre = query("knowledge_correlations").filter((pl.col("feature") == feature) & (pl.col("against") == "recall"))
rel_filter = None if len(relations) == len(relations_all) else tuple(relations)
post = query("robustness_correlations", metrics=(metric,), features=(feature,), rephrase_types=(rtype,),
             relations=rel_filter)
post = post.filter(pl.col("editor").is_in(editors))
rows = post.filter(pl.col("rephrase_type") == rtype).select(pl.col("editor").alias("series"), "rho", "ci_low", "ci_high", "n")
if metric == "rev" and rtype == "plain" and not pre.is_empty():
    rows = pl.concat([rows, pre.select(pl.lit("unedited (recall)").alias("series"), "rho", "ci_low", "ci_high", "n")])
if rows.is_empty():
    st.info("Not enough cases for a correlation here.")
else:
    st.plotly_chart(charts.correlation_forest(rows, "series", f"{FEATURES[feature]} vs {metric} on {rtype}"),
                    width="stretch")
    st.download_button("Download CSV (correlations)", rows.write_csv(), file_name=f"rho-{feature}-{metric}-{rtype}.csv")
with st.expander("Cases behind the curves"):
    st.dataframe(points, hide_index=True)

"""Popularity (study A): are popular facts harder to edit robustly? For a popularity feature, binned curves
of pre-edit recall and post-edit acc/rev per rephrase type, one series per run, and Spearman correlations
with their CIs."""

import polars as pl
import streamlit as st

from dashboard import charts, plain
from dashboard.data import query
from dashboard.filters import held_toggle, known_toggle, shared_multiselect, shared_selectbox, url_selectbox
from dashboard.sidebar import labels_of, partial_references, reference_ids, run_table, styles_of
from store.derived import POPULARITY_FEATURES, WITHIN_COLUMNS, both_estimates, popularity_bins
from store.measurable import unmeasurable_reasons, with_measurability
from store.metrics import REPHRASE_TYPES

FEATURES = {"frequency": "Word frequency (Zipf)", "connection": "Connection (facts about the subject)",
            "cooccurrence": "Co-occurrence (KB paths subject-object)", "population": "Population"}
METRICS = {"acc": "Post-edit acc (names the new object)", "rev": "Names the true object (rev; pre-edit recall)"}
UNEDITED = "unedited"

st.title("Knowledge popularity")
table = run_table("robustness")
labels = labels_of(table)
# judged on a robustness run's case set, whose probes may be copy tasks (store.measurable.run_measurability)
unmeasurable = unmeasurable_reasons(query("rephrase_measurability",
                                          run_id=table["run_id"][0] if table.height else None))
c1, c2, c3 = st.columns(3)
feature = shared_selectbox("Popularity feature", "feature", POPULARITY_FEATURES, format_func=FEATURES.get, container=c1)
metric = url_selectbox("Metric", "pop_metric", list(METRICS), format_func=METRICS.get, container=c2)
rtype = url_selectbox("Rephrase type", "rephrase_type", REPHRASE_TYPES, container=c3,
                      format_func=lambda t: t + (" (unmeasurable)" if t in unmeasurable else ""))

d1, d2 = st.columns(2)
default = reference_ids(table)
chosen = shared_multiselect("Runs", "runs", list(labels), default=default, format_func=labels.get,
                            container=d1, help="Finished reference runs by default; others only when chosen")
if note := partial_references(table, default):  # run labels come from the store: plain text
    plain.line(note, container=d1)
relations_all = sorted(query("kb_relations")["relation"].to_list())
relations = shared_multiselect("Relations", "relations", relations_all, container=d2)
rel_filter = None if len(relations) == len(relations_all) else tuple(relations)
e1, e2 = st.columns(2)
known = known_toggle(e1, "Judged on the plain prompt whatever the rephrase type shown.")
held = held_toggle(e2, "robustness given an edit that took. A popular fact that is merely harder to edit at all "
                       "lowers acc over all facts, not here (the control of Findings A7). The unedited model made no "
                       "edit and keeps its facts.")
if rtype in unmeasurable:
    st.warning(f"{rtype} is unmeasurable here: {unmeasurable[rtype]}. The curves below say nothing "
               "about the edits.")
points = query("popularity_points_of_runs", run_ids=tuple(chosen), feature=feature, metric=metric,
               rephrase_type=rtype, relations=rel_filter, known_only=known, held_only=held)
if points.is_empty():
    st.info("None of these cases was known to the unedited model (on the plain prompt)." if known else
            "No edit of these runs held on the plain prompt." if held else
            "No measurements for this choice yet: run `python -m compute knowledge measure` and "
            "`python -m compute run robustness`.")
    st.stop()
series_labels = {UNEDITED: "unedited model", **{r: labels[r] for r in chosen}}
if known:
    st.caption("Known facts only: each series keeps the facts whose plain prompt the unedited model answered with "
               "the true object (rev = 1 before any edit, from the run's baseline). On the plain prompt the unedited "
               "model's rev is then 1 by construction, and its correlation with the feature is undefined, so it "
               "is left out below. Facts kept:")
    st.dataframe(points.group_by("series").agg(pl.len().alias("n")).sort("series")
                 .with_columns(pl.col("series").replace(series_labels)), hide_index=True,
                 column_config={"series": st.column_config.TextColumn("Series"),
                                "n": st.column_config.NumberColumn("Known facts")})
if held:
    st.caption("Edits that held only: each run's series keeps the facts whose edit named the new object on the plain "
               "prompt; on the plain prompt its acc is then 1 by construction. The unedited model keeps every fact. "
               "Facts kept:")
    st.dataframe(points.filter(pl.col("series") != UNEDITED).group_by("series").agg(pl.len().alias("n"))
                 .sort("series").with_columns(pl.col("series").replace(series_labels)), hide_index=True,
                 column_config={"series": st.column_config.TextColumn("Series"),
                                "n": st.column_config.NumberColumn("Edits that held")})
styles = {UNEDITED: charts.UNEDITED_STYLE, **styles_of(table)}
bins = popularity_bins(points, feature, bins=4)
left, right = st.columns(2)
with left:
    st.subheader("Binned")
    st.plotly_chart(charts.binned_curves(bins, FEATURES[feature], METRICS[metric], labels=series_labels,
                                         styles=styles), width="stretch")
with right:
    st.subheader("Every case")
    st.plotly_chart(charts.popularity_scatter(points, feature, FEATURES[feature], METRICS[metric],
                                              log_x=feature == "population", labels=series_labels, styles=styles),
                    width="stretch")
named = bins.with_columns(pl.col("series").replace(series_labels).alias("run"))
suffix = ("-known" if known else "") + ("-held" if held else "")
def for_csv(df: pl.DataFrame) -> pl.DataFrame:
    """A CSV of this page's rephrase type says which it is and whether the unedited model can answer it."""
    return with_measurability(df.with_columns(pl.lit(rtype).alias("rephrase_type")), unmeasurable)


st.download_button("Download CSV (bins)", for_csv(named).write_csv(),
                   file_name=f"popularity-{feature}-{metric}-{rtype}{suffix}.csv")
st.caption("The unedited model (black) is the knowledge run that measured every rephrase type, before any edit; "
           "each run is one colour, the same on every page.")

st.subheader("Spearman correlation with the feature")
pre = query("knowledge_correlations").filter((pl.col("feature") == feature) & (pl.col("against") == "recall"))
post = query("robustness_correlations", run_ids=tuple(chosen), metrics=(metric,), features=(feature,),
             rephrase_types=(rtype,), relations=rel_filter, known_only=known, held_only=held)
post = post.filter(pl.col("run_id").is_in(chosen) & (pl.col("rephrase_type") == rtype))
cols = ["rho", "ci_low", "ci_high", "n", *WITHIN_COLUMNS]
named = post.select(pl.col("run_id").replace_strict(labels, default=None).alias("series"), *cols)
if metric == "rev" and rtype == "plain" and not pre.is_empty() and not known and not held:
    named = pl.concat([named, pre.select(pl.lit("unedited (recall)").alias("series"), *cols)], how="vertical_relaxed")
rows = both_estimates(named, "series")
if rows.is_empty():
    st.info("Not enough cases for a correlation here.")
else:
    colours = {labels[r]: styles[r][0] for r in chosen if r in labels and r in styles}
    colours["unedited (recall)"] = charts.UNEDITED_STYLE[0]
    st.plotly_chart(charts.correlation_forest(rows, "series", f"{FEATURES[feature]} vs {metric} on {rtype}",
                                              colours=colours), width="stretch")
    st.caption("Pooled: one Spearman rho over every case of the chosen relations. Within relation (diamond): "
               "each relation's rho, combined (Fisher z weighted by n - 3; store.stats.stratified_spearman), so a "
               "case is compared only with cases of its own relation; relations differ in both popularity and "
               "difficulty, which the pooled rho mixes in. n within counts the cases of the relations that enter "
               "(4 or more cases, neither side constant).")
    st.download_button("Download CSV (correlations)", for_csv(rows).write_csv(),
                       file_name=f"rho-{feature}-{metric}-{rtype}{suffix}.csv")
with st.expander("Cases behind the curves"):
    st.dataframe(points.with_columns(pl.col("series").replace(series_labels)), hide_index=True, column_config={
        "series": st.column_config.TextColumn("Run"), "case_id": st.column_config.TextColumn("Case"),
        "relation": st.column_config.TextColumn("Relation"), "subject": st.column_config.TextColumn("Subject"),
        feature: st.column_config.NumberColumn(FEATURES[feature], format="%.2f"),
        "value": st.column_config.NumberColumn(METRICS[metric], format="%.2f")})

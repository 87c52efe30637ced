"""Robustness (study A): does an edit that holds on the plain prompt survive rephrasing, context, dialogue
and doubt? Heat maps run x rephrase type for the chosen metric, and the drop from the plain prompt."""

import polars as pl
import streamlit as st

from dashboard import charts
from dashboard.data import query
from dashboard.filters import (forget, held_toggle, known_toggle, shared_multiselect, url_segmented, url_selectbox,
                               url_toggle)
from dashboard import edit_view, plain, tables
from dashboard.sidebar import labels_of, partial_references, reference_ids, run_table, styles_of
from store.measurable import MEASURABLE_SHARE, unmeasurable_reasons, with_measurability
from store.metrics import METRICS, REPHRASE_TYPES

st.title("Robustness of single edits")
table = run_table("robustness")
if table.is_empty():
    st.info("No robustness runs in this store yet: `python -m compute run robustness --editor ROME --cases 240`.")
    st.stop()

labels = labels_of(table)
c1, c2 = st.columns(2)
default = reference_ids(table)
chosen = shared_multiselect("Runs", "runs", list(labels), default=default, format_func=labels.get,
                            container=c1, help="Finished reference runs by default; a partial, failed or "
                            "superseded run is shown only when chosen, and its name says what it is")
if note := partial_references(table, default):  # run labels come from the store: plain text
    plain.line(note, container=c1)
relations_all = sorted(query("kb_relations")["relation"].to_list())
relations = shared_multiselect("Relations", "relations", relations_all, container=c2,
                               help="Cases of these relations only (all by default)")
if not chosen or not relations:
    st.info("Choose at least one run and one relation.")
    st.stop()

choices = {"acc": "Generation names the new object (acc)", "rev": "Generation names the true object (rev)",
           "es": "New object beats true (ES / PS)", "magnitude": "P(new) - P(true)"}
metric = url_segmented("Metric", "metric", list(choices), default="acc", format_func=choices.get)
c2, c3 = st.columns([3, 2])
split = url_segmented("Split by", "split", ["none", "relation", "popularity_quartile"], default="none",
                      format_func={"none": "nothing", "relation": "relation",
                                   "popularity_quartile": "popularity quartile"}.get, container=c2)
hide = url_toggle("Hide unmeasurable types", "hide_nm", default=False, container=c3,
                  help="Types the unedited model cannot answer, and copy tasks, are marked n/m by default; this "
                       "leaves them out")
known = known_toggle(c3)
held = held_toggle(c3, "what rephrasing does to an edit that took. The plain column is then 1 by construction.")
by = None if split == "none" else split
df = query("robustness_summary", run_ids=tuple(chosen), metrics=(metric,), by=by,
           relations=None if len(relations) == len(relations_all) else tuple(relations), known_only=known,
           held_only=held)
if known:
    counts = query("known_facts_counts", run_ids=tuple(chosen))
    st.caption("Known facts only: the facts whose plain prompt the unedited model answered with the true object "
               "(rev = 1 at edit count 0 in the run's baseline), judged so for every rephrase type, so each column "
               "covers the same facts; the heat maps' n counts them. A run without a baseline keeps none.")
    st.dataframe(counts.select(pl.col("run_id").replace_strict(labels, default=None).alias("run"), "n_known",
                               "n_cases", "baseline_run"), hide_index=True, column_config={
        "run": st.column_config.TextColumn("Run"), "n_known": st.column_config.NumberColumn("Known facts kept"),
        "n_cases": st.column_config.NumberColumn("Facts edited"),
        "baseline_run": st.column_config.TextColumn("Unedited model's run")})
if held:
    st.caption("Edits that held only: in each run the facts whose edit named the new object on the plain prompt "
               "(acc there 1), so the plain column is 1 by construction and every other column says what the type "
               "does to an edit that took; the heat maps' n counts them.")
if by and not df.is_empty():
    groups = sorted(df[by].drop_nulls().unique().to_list())
    group = url_selectbox("Group", "group", groups)
    df = df.filter(df[by] == group)
else:
    forget("group")
if df.is_empty():
    st.info("No measurements for this choice." + (" With 'Known facts only' on, none of the chosen cases was "
                                                  "known to the unedited model." if known else "")
            + (" With 'Edits that held only' on, no edit of these runs held on the plain prompt." if held else ""))
    st.stop()

measurability = query("rephrase_measurability", run_id=chosen[0])
unmeasurable = unmeasurable_reasons(measurability)
if hide:
    df = df.filter(~pl.col("rephrase_type").is_in(list(unmeasurable)))
shown = {r: labels[r] for r in chosen}
label = METRICS[metric].label if metric in METRICS else metric
st.subheader(label)
st.plotly_chart(charts.rephrase_heatmap(df, "mean", label, REPHRASE_TYPES, labels=shown,
                                        unmeasurable={} if hide else unmeasurable), width="stretch")
st.subheader("Change from the plain prompt")
st.plotly_chart(charts.rephrase_heatmap(df, "drop_from_plain", "Δ vs plain", REPHRASE_TYPES, diverging=True,
                                        labels=shown, unmeasurable={} if hide else unmeasurable), width="stretch")
st.download_button("Download CSV", with_measurability(df, unmeasurable).write_csv(),
                   file_name=f"robustness-{metric}{'-known' if known else ''}{'-held' if held else ''}.csv")
if unmeasurable:
    base = measurability["baseline_run"][0]
    st.caption(f"{'Left out' if hide else 'n/m (and * on the axis)'}: rephrase types that do not measure the "
               f"edit: the unedited model cannot answer them, so a low score there is the probe failing, or their "
               f"probes are copy tasks (the edit prompt inside the assistant's turn). A type is measurable when the "
               f"unedited model names the true object on at least {100 * MEASURABLE_SHARE:g}% of the cases "
               f"(from `{base}`) and the model answers freely.")
    # one wrapped line per type: a table cell cut the reasons off at the column's width
    reasons = measurability.filter(~pl.col("measurable")).select("rephrase_type", "reason")
    plain.message("Why each greyed type is unmeasurable:",
                  "\n".join(f"{r['rephrase_type']}: {r['reason']}" for r in reasons.iter_rows(named=True)),
                  box=st.info)
runs = table.filter(pl.col("run_id").is_in(chosen))
st.caption("Each cell: mean over cases of the per-case value (probes of a type averaged within a case), with its "
           "95% CI (Wilson for shares, bootstrap otherwise) and n in the hover. Runs: "
           + "; ".join(f"{r['label']}: {r['n_done']}/{r['n_total']} cases, {r['status']}"
                       for r in runs.iter_rows(named=True)))

st.subheader("Against the model's own knowledge (a control)")
gaps = query("edit_against_knowledge", run_ids=tuple(chosen))
if hide:
    gaps = gaps.filter(~pl.col("rephrase_type").is_in(list(unmeasurable)))
if gaps.is_empty():
    st.info("No run chosen has a baseline with known facts whose edit held on the plain prompt, so the control "
            "cannot be read.")
else:
    st.caption("A rephrasing can fail an edit because the form is hard for this model, whatever it is asked: on the "
               "facts the unedited model knew whose edit held on the plain prompt, each type's acc after the edit "
               "(names the new object) is set against the unedited model's rev (names the true object) on the same "
               "facts. Gap: mean per-fact difference, paired bootstrap 95% CI; below 0, the type costs the edit more "
               "than it costs the model's own knowledge (Findings A8, store.derived.edit_against_knowledge).")
    gaps = gaps.sort("run_id", "rephrase_type")
    shown_gaps = gaps.select(
        pl.col("run_id").replace_strict(labels, default=None).alias("run"),
        (pl.col("rephrase_type") + pl.when(pl.col("rephrase_type").is_in(list(unmeasurable)))
         .then(pl.lit(" (n/m)")).otherwise(pl.lit(""))).alias("type"), "n",
        tables.with_ci(gaps, "edit", "edit_ci_low", "edit_ci_high"),
        tables.with_ci(gaps, "knowledge", "knowledge_ci_low", "knowledge_ci_high"),
        tables.with_ci(gaps, "gap", "gap_ci_low", "gap_ci_high", fmt="{:+.2f}"))
    st.dataframe(shown_gaps, hide_index=True, column_config={
        "run": st.column_config.TextColumn("Run", width="medium"), "type": st.column_config.TextColumn("Type"),
        "n": st.column_config.NumberColumn("Facts", help="Known facts whose edit held on the plain prompt"),
        "edit": st.column_config.TextColumn("Edit: acc [95% CI]"),
        "knowledge": st.column_config.TextColumn("Unedited: rev [95% CI]"),
        "gap": st.column_config.TextColumn("Gap [95% CI]", help="Edit minus unedited, paired by fact")})
    st.download_button("Download CSV (control)", gaps.with_columns(
        pl.col("run_id").replace_strict(labels, default=None).alias("run"),
        pl.col("rephrase_type").is_in(list(unmeasurable)).not_().alias("measurable")).write_csv(),
        file_name="robustness-edit-against-knowledge.csv", key="control_csv")

st.subheader("What each edit did")
edit_view.render(list(chosen), shown, styles_of(table))

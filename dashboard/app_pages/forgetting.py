"""Forgetting (study B): one model edited again and again. Curves against edit count for several runs at
once, phases shaded, disabling edits and collapse marked, weight drift on the same x axis."""

import streamlit as st

from dashboard import charts
from dashboard.data import query
from dashboard.filters import shared_multiselect
from dashboard.sidebar import chosen_model
from store.derived import PHASE_SERIES, phase_verdict

st.title("Sequential editing: forgetting and collapse")
runs = query("run_labels", kind="sequential")
model = chosen_model()
if model is not None and not runs.is_empty():
    runs = runs.filter(runs["model"] == model)
if runs.is_empty():
    st.info("No sequential runs in this store yet: `python -m compute run sequential --editor ROME --edits 500` "
            "(see the README's store recipe).")
    st.stop()

labels = dict(zip(runs["run_id"].to_list(), runs["label"].to_list()))
status = {r["run_id"]: f"{r['label']} — {r['n_done'] or 0}/{r['n_total']} edits, {r['status']}"
          for r in runs.iter_rows(named=True)}
chosen = shared_multiselect("Runs", "runs", list(labels), default=list(labels), format_func=lambda r: status[r])
if not chosen:
    st.info("Choose at least one run.")
    st.stop()
labels = {r: labels[r] for r in chosen}

curves = query("sequential_curves", run_ids=tuple(chosen))
events = query("sequential_events", run_ids=tuple(chosen))
main = ["Newest-edit efficacy (ES)", "Retained edits", "Forgotten edits", "Newest-edit neighbourhood score (NS)",
        "Recall on the unedited fact panel", "Fluency (n-gram entropy, bits)"]
extra = ["Newest-edit paraphrase score (PS)", "Panel exact match (after every edit)"]
picked = st.multiselect("Curves", main + extra, default=main, key="curves")
log_x = st.toggle("Logarithmic edit axis", value=False, key="log_x")
if picked:
    st.plotly_chart(charts.forgetting_curves(curves, events, picked, labels, log_x=log_x), width="stretch")
st.download_button("Download CSV (curves)", curves.write_csv(), file_name="sequential-curves.csv")
st.caption("Lines: run-level values at each checkpoint (after each of the first 10 edits, then every 10); bands: "
           "95% Wilson CI with n (edits or panel facts) in the hover. Shaded: the catastrophic phase found by a "
           "change point on that series; dotted line: a disabling edit (the panel's exact match fell by ≥ 0.2 "
           "after that single edit); dashed line: the online collapse that stops the run 150 edits later.")

st.header("Phases: gradual, then catastrophic?")
phases = query("sequential_phases", run_ids=tuple(chosen))
st.markdown(phase_verdict(phases, labels))
if not phases.is_empty():
    shown = phases.with_columns(phases["run_id"].replace_strict(labels, default=None).alias("run")).sort("run", "series")
    st.dataframe(shown.select("run", "series", "change_at", "slope_before", "slope_after", "drop_after", "faster",
                              "catastrophic", "checked_to"), hide_index=True, column_config={
        "change_at": st.column_config.NumberColumn("change point (edit)", help="the split whose two straight "
                                                   "lines fit the series best"),
        "slope_before": st.column_config.NumberColumn("slope before", format="%.1f", help="% of the series' "
                                                      "starting value per 100 edits, before the change point"),
        "slope_after": st.column_config.NumberColumn("slope after", format="%.1f", help="% of the starting value "
                                                     "per 100 edits, after the change point"),
        "drop_after": st.column_config.NumberColumn("lost after", format="%.2f", help="share of the starting "
                                                    "value lost after the change point"),
        "faster": st.column_config.TextColumn("fell faster", help="the side of the change point where the series "
                                              "fell at least 1.5x faster (steady: neither)"),
        "checked_to": st.column_config.NumberColumn("last checkpoint")})
    st.download_button("Download CSV (phases)", shown.write_csv(), file_name="sequential-phases.csv")
st.caption("A phase is catastrophic when the slope after the change point is at least 3x steeper than before it "
           "and the series loses 25% or more of its starting value after it (study B's gradual-then-catastrophic "
           "pattern). Fluency is n-gram entropy: text that degrades into varied nonsense can keep it high, so "
           "read it beside the perplexity on the General abilities page.")

st.header("Collapse and disabling edits")
marks = events.filter(events["kind"].is_in(["collapse", "disabling_edit"])) if not events.is_empty() else events
if marks.is_empty():
    st.write("No online collapse and no disabling edit in these runs (a disabling edit: the panel's exact match "
             "fell by 0.2 or more after that single edit).")
else:
    shown = marks.with_columns(marks["run_id"].replace_strict(labels, default=None).alias("run"),
                               marks["series"].replace(PHASE_SERIES)).sort("run", "edit_count")
    st.dataframe(shown.select("run", "kind", "series", "edit_count", "value"), hide_index=True, column_config={
        "edit_count": st.column_config.NumberColumn("at edit"),
        "value": st.column_config.NumberColumn("value", format="%.3f", help="collapse: the series' value that "
                                               "crossed its threshold; disabling edit: the panel's exact match after it")})
    missing = [labels[r] for r in chosen if marks.filter(marks["run_id"] == r).is_empty()]
    if missing:
        st.caption("No collapse and no disabling edit in: " + ", ".join(sorted(missing)) + ".")
    st.download_button("Download CSV (events)", events.write_csv(), file_name="sequential-events.csv")

st.header("Forgetting by an edit's age")
age_run = st.selectbox("Run", chosen, format_func=lambda r: labels[r], key="age_run")
by_age = query("forgetting_by_age", run_id=age_run)
if by_age.is_empty():
    st.write("No edit of this run has been re-checked yet.")
else:
    st.plotly_chart(charts.forgetting_by_age_chart(by_age), width="stretch")
    st.download_button("Download CSV (by age)", by_age.write_csv(), file_name=f"forgetting-by-age-{age_run}.csv")

st.header("Weight drift of the edited matrices")
drift = query("weight_drift", run_ids=tuple(chosen))
if drift.is_empty():
    st.write("No weight drift recorded yet.")
else:
    st.plotly_chart(charts.weight_drift_chart(drift, labels), width="stretch")
    st.download_button("Download CSV (weight drift)", drift.write_csv(), file_name="weight-drift.csv")

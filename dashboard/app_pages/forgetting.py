"""Forgetting (study B): one model edited again and again. Curves against edit count for several runs at
once (the reference run of each editor by default, at most four), phases shaded, disabling edits and
collapse marked, weight drift on the same x axis."""

import polars as pl
import streamlit as st

from dashboard import charts
from dashboard.data import query, stamp
from dashboard.jobs import escape_markdown
from dashboard.filters import shared_multiselect, url_multiselect, url_selectbox, url_toggle
from dashboard import edit_view
from dashboard.sidebar import arms_of, headline_ids, labels_of, run_table, styles_of
from dashboard.tables import Col, show
from store.conventions import ALL_EDITS, NEWEST
from store.derived import PHASE_SERIES, SEQUENTIAL_SERIES, order_means, phase_verdict, sequential_rules

# series about the edits themselves (efficacy, retention): a control that edits no fact has none worth drawing
EDIT_SERIES = frozenset(name for (scope, _), name in SEQUENTIAL_SERIES.items() if scope in (NEWEST, ALL_EDITS))


def without_controls(frame: pl.DataFrame, controls) -> pl.DataFrame:
    """`frame`'s curve rows less the edit series of the runs (or arms) in `controls`."""
    if frame.is_empty() or not controls:
        return frame
    return frame.filter(~(pl.col("run_id").is_in(list(controls)) & pl.col("series").is_in(list(EDIT_SERIES))))


st.title("Sequential editing: forgetting and collapse")
table = run_table("sequential")
if table.is_empty():
    st.info("No sequential runs in this store yet: `python -m compute run sequential --editor ROME --edits 500` "
            "(see the README's store recipe).")
    st.stop()

all_labels = labels_of(table)
# a finished run's label does not say how far it went; an unfinished one's already says its status and progress
status = {r["run_id"]: f"{r['label']} — {r['n_done'] or 0} edits" if r["status"] == "done" else r["label"]
          for r in table.iter_rows(named=True)}
chosen = shared_multiselect("Runs", "runs", list(all_labels), default=headline_ids(table, 4),
                            format_func=lambda r: status[r],
                            help="By default one reference run per editor (at most four); add variants to compare")
if not chosen:
    st.info("Choose at least one run.")
    st.stop()
labels = {r: all_labels[r] for r in all_labels if r in chosen}  # display order, not click order
styles = styles_of(table)

# curve key (URL-safe) -> series name
SERIES = {"es": "Newest-edit efficacy (ES)", "retained_em": "Retained edits (exact match)",
          "forgotten_em": "Forgotten edits (exact match)", "retained": "Retained edits",
          "forgotten": "Forgotten edits", "ns": "Newest-edit neighbourhood score (NS)",
          "panel": "Recall on the unedited fact panel", "fluency": "Fluency (n-gram entropy, bits)",
          "ps": "Newest-edit paraphrase score (PS)",
          "panel_check": "Panel exact match, its first facts (after every edit)",
          "panel_em": "Panel exact match (runs before the sub-panel check: after every edit)"}
assert set(SERIES.values()) <= set(SEQUENTIAL_SERIES.values())
picked = url_multiselect("Curves", "curves", list(SERIES), default=["es", "retained_em", "forgotten_em", "ns", "panel", "fluency"],
                         format_func=SERIES.get)
c2, c3, _ = st.columns([1, 1, 2])  # the toggles' labels whole at 1400 px
log_x = url_toggle("Logarithmic edit axis", "log_x", default=False, container=c2)
mean_orders = url_toggle("Mean over edit orders", "mean", default=True, container=c3,
                         help="Each chosen run stands for its arm: every run alike but for the edit order. The line is "
                              "the mean over the arm's orders, the band its 95% t-interval over orders")


@st.cache_data(max_entries=16, show_spinner="Drawing the curves…")
def curves_figure(store_stamp: tuple, run_ids: tuple, series: tuple, log: bool, names: tuple, looks: tuple,
                  controls: tuple = ()):
    """The main figure, built once per choice and state of the shown stores (`store_stamp`: data.stamp(), which
    covers the shipped and the workspace store) — it takes seconds for many runs."""
    return charts.forgetting_curves(without_controls(query("sequential_curves", run_ids=run_ids), controls),
                                    query("sequential_events", run_ids=run_ids), list(series), dict(names),
                                    log_x=log, styles=dict(looks))


@st.cache_data(max_entries=16, show_spinner=False)
def drift_figure(store_stamp: tuple, run_ids: tuple, names: tuple, looks: tuple):
    drift = query("weight_drift", run_ids=run_ids)
    return None if drift.is_empty() else charts.weight_drift_chart(drift, dict(names), styles=dict(looks))


@st.cache_data(max_entries=16, show_spinner="Averaging over edit orders…")
def means_figure(store_stamp: tuple, arms: tuple, series: tuple, log: bool, names: tuple, looks: tuple,
                 controls: tuple = ()):
    """The main figure as means over edit orders: `arms` is ((arm, (run ids...)), ...); `controls`: the arms
    whose runs edit no fact."""
    arm_of = {r: arm for arm, runs in arms for r in runs}
    means = without_controls(order_means(query("sequential_curves", run_ids=tuple(arm_of)), arm_of)
                             .rename({"arm": "run_id"}), controls)
    return charts.forgetting_curves(means, pl.DataFrame(), list(series), dict(names), log_x=log,
                                    styles=dict(looks)), means


run_ids = tuple(labels)
looks = tuple((r, styles[r]) for r in run_ids)
curves = query("sequential_curves", run_ids=run_ids)
events = query("sequential_events", run_ids=run_ids)
arm_runs, arm_names, arm_looks = arms_of(table, chosen)
controls = tuple(table.filter(pl.col("run_id").is_in(run_ids) & ~pl.col("edits_facts"))["run_id"].to_list())
control_arms = tuple(a for a, runs in arm_runs.items() if set(runs) & set(controls))
if picked and mean_orders:
    fig, means = means_figure(stamp(), tuple(arm_runs.items()), tuple(SERIES[k] for k in picked), log_x,
                              tuple(arm_names.items()), tuple(arm_looks.items()), control_arms)
    st.plotly_chart(fig, width="stretch")
    st.download_button("Download CSV (means over orders)",
                       means.with_columns(pl.col("run_id").replace_strict(arm_names, default=None).alias("arm"))
                       .drop("run_id").write_csv(), file_name="sequential-curves-order-means.csv")
    st.caption("Each line: one arm (runs alike but for the edit order), the mean over its orders at each checkpoint "
               "that at least two of them reached; band: the 95% t-interval of that mean over orders (n = orders "
               "in the hover; with 3 orders t = 4.30 and with 2 t = 12.7, so the band is wide; a share's band stops at "
               "0 and 1). An arm with one order shows that run "
               "with its Wilson CI. Events (phases, disabling edits, collapse) belong to single runs: switch the "
               "mean off to see them.")
elif picked:
    st.plotly_chart(curves_figure(stamp(), run_ids, tuple(SERIES[k] for k in picked), log_x,
                                  tuple(labels.items()), looks, controls), width="stretch")
if picked and controls:
    st.caption(escape_markdown(f"{', '.join(labels[r] for r in controls)}: a control that changes the weights "
                               "without aiming at any fact, so it has no efficacy or retention to draw; it is on the "
                               "panel and fluency panels, where it shows what updates of the same size do to facts "
                               "nobody edited."))
st.download_button("Download CSV (curves)", curves.write_csv(), file_name="sequential-curves.csv")
RULES = sequential_rules()
st.caption("Lines: run-level values at each checkpoint (after each of the first 10 edits, then every 10); bands: "
           "95% Wilson CI with n (edits or panel facts) in the hover. Shaded: a catastrophic phase; dotted vertical "
           "line: a disabling edit; dashed vertical line: the collapse. Each run keeps its colour and dash on every "
           "page. " + " ".join(RULES[k] for k in ("phase", "disabling_edit", "collapse")))

st.header("Phases: gradual, then catastrophic?")
phases = query("sequential_phases", run_ids=tuple(chosen))
st.text(phase_verdict(phases, labels))  # run labels come from the store: shown as text
if not phases.is_empty():
    shown = phases.with_columns(phases["run_id"].replace_strict(labels, default=None).alias("run")).sort("run", "series")
    show(shown, {
        "run": Col("Run"), "series": Col("Series"),
        "change_at": Col("Split at", "{:,.0f}", "the edit count where two straight lines fit the series best"),
        "slope_before": Col("Before", "{:+.1f}", "slope before the split: % of the series' starting value per "
                            "100 edits"),
        "slope_after": Col("After", "{:+.1f}", "slope after the split: % of the starting value per 100 edits"),
        "drop_after": Col("Lost after", "{:.2f}", "share of the starting value lost after the split"),
        "faster": Col("Faster", None, "the side of the split where the series fell at least 1.5x faster "
                      "(steady: neither)"),
        "catastrophic": Col("Catastrophic")})  # how far a partial run got: its label says (the CSV has checked_to)
    st.download_button("Download CSV (phases)", shown.write_csv(), file_name="sequential-phases.csv")
st.caption(RULES["phase"] + " Fluency is n-gram entropy: text that degrades into varied nonsense can keep it high, "
           "so read it beside the perplexity on the General abilities page.")

st.header("Collapse and disabling edits")
MARKS = ["collapse", "disabling_edit", "abrupt_change", "panel_floor"]
marks = events.filter(events["kind"].is_in(MARKS)) if not events.is_empty() else events
st.caption(" ".join(RULES[k] for k in MARKS))
if marks.is_empty():
    st.write("None of these events in the chosen runs.")
else:
    shown = marks.with_columns(marks["run_id"].replace_strict(labels, default=None).alias("run"),
                               marks["series"].replace(PHASE_SERIES)).sort("run", "edit_count")
    # an abrupt change is a step between two checkpoints: "0 → 50", not "0" (which read as before any edit)
    shown = shown.with_columns(
        pl.when((pl.col("kind") == "abrupt_change") & pl.col("end_count").is_not_null())
        .then(pl.format("{} → {}", "edit_count", "end_count")).otherwise(pl.col("edit_count").cast(pl.String))
        .alias("at"))
    show(shown, {
        "run": Col("Run"), "kind": Col("Event"), "series": Col("Series"),
        "at": Col("At edit", None, "the edit count of the event; an abrupt change: the step between two ability "
                                   "checkpoints in which the score fell"),
        "value": Col("Value", "{:.3f}", "disabling edit: its ||dW|| / ||W0||; collapse: the share of the ability "
                     "margin left; abrupt change: the score after the step; panel floor: the value that crossed")})
    missing = [labels[r] for r in labels if marks.filter(marks["run_id"] == r).is_empty()]
    if missing:
        st.text("None of these events in: " + ", ".join(sorted(missing)) + ".")
    st.download_button("Download CSV (events)", events.write_csv(), file_name="sequential-events.csv")

st.header("Forgetting by an edit's age")
editing = [r for r in labels if r not in controls]  # a control holds no edit to forget
age_run = url_selectbox("Run", "age_run", editing, format_func=labels.get) if editing else None
by_age = query("forgetting_by_age", run_id=age_run) if age_run else None
if by_age is None:
    st.write("The chosen runs edit no fact (controls only).")
elif by_age.is_empty():
    st.write("No edit of this run has been re-checked yet.")
else:
    st.plotly_chart(charts.forgetting_by_age_chart(by_age), width="stretch")
    st.download_button("Download CSV (by age)", by_age.write_csv(), file_name=f"forgetting-by-age-{age_run}.csv")

st.header("Weight drift of the edited matrices")
drift_fig = drift_figure(stamp(), run_ids, tuple(labels.items()), looks)
if drift_fig is None:
    st.write("No weight drift recorded yet.")
else:
    st.plotly_chart(drift_fig, width="stretch")
    st.caption("One line per edited matrix in the run's colour (MEMIT and AlphaEdit edit five); the hover names "
               "the layer.")
    st.download_button("Download CSV (weight drift)", query("weight_drift", run_ids=run_ids).write_csv(),
                       file_name="weight-drift.csv")

st.header("What each edit did")
edit_view.render(list(labels), labels, styles, x="edit_count")

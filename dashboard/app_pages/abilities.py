"""General abilities (study C): what edits cost the rest of the model. Small multiples per task against
edit count (sequential runs) or batch size (batch runs), with the unedited model's score and chance as
lines; and the RECT comparison, ability scores beside editing performance."""

import polars as pl
import streamlit as st

from dashboard import charts
from dashboard.data import query
from dashboard.filters import shared_multiselect, url_segmented, url_toggle
from dashboard.jobs import escape_markdown
from dashboard.sidebar import arms_of, chosen_model, headline_ids, labels_of, reference_ids, run_table, styles_of
from dashboard.tables import Col, show, with_ci
from store.derived import ability_order_means, start_from_unedited


st.title("General abilities after editing")
scores = query("ability_scores")
model = chosen_model()
if model is not None and not scores.is_empty():
    runs_of_model = query("list_runs").filter(pl.col("model") == model)["run_id"].to_list()
    scores = scores.filter(pl.col("run_id").is_in(runs_of_model))
if scores.is_empty():
    st.info("No ability scores in this store yet: `python -m compute abilities measure --mode full` for the "
            "unedited model, then `python -m compute run sequential ... --abilities-every 50` or "
            "`python -m compute run batch --editor MEMIT`.")
    st.stop()

c1, c2 = st.columns(2)
mode = url_segmented("Suite", "ability_mode", ["quick", "full"], default="quick", container=c1,
                     help="quick: each task's first items (every checkpoint); full: every item")
view = url_segmented("View", "ability_view", ["sequential", "batch", "rect"], default="sequential", container=c2,
                     format_func={"sequential": "Against edit count", "batch": "Against batch size",
                                  "rect": "RECT comparison"}.get)
# the unedited model in this mode: its own abilities run first, else the edit-count-0 scores of edit runs
unedited = scores.filter((pl.col("edit_count") == 0) & (pl.col("mode") == mode))
own = unedited.filter(pl.col("kind") == "abilities")
base = (own if not own.is_empty() else unedited).group_by("task").agg(pl.col("score").first())
baseline = dict(zip(base["task"].to_list(), base["score"].to_list())) if not base.is_empty() else {}

kind = "batch" if view == "batch" else "sequential"
part = scores.filter((pl.col("kind") == kind) & (pl.col("mode") == mode))
table = run_table(kind).filter(pl.col("run_id").is_in(part["run_id"].unique().to_list()))
if view == "rect":  # RECT is an option of ROME with r-ROME keys: the sweep is those runs (100% = plain ROME)
    table = table.filter(pl.col("editor") == "ROME")
    default = table.filter(pl.col("reference") & ~pl.col("key_mismatch") & ~pl.col("other_keys"))["run_id"].to_list()
elif view == "batch":
    default = reference_ids(table)
else:
    default = headline_ids(table, 4)
part = part.filter(pl.col("run_id").is_in(table["run_id"].to_list()))
if part.is_empty():
    st.info(f"No {mode}-mode ability scores from {kind} runs yet.")
    st.stop()
if view == "rect" and not (table["rect_top"] < 1.0).any():
    st.info(f"No ROME + RECT run with {mode}-mode ability scores in this store yet: the comparison shows plain ROME "
            "only (the plan's RECT units are sequential-ROME-rect0.2/0.4/0.6; the Overview lists which are done).")

all_labels = labels_of(table)
chosen = shared_multiselect("Runs", "rect_runs" if view == "rect" else "runs", list(all_labels),
                            format_func=all_labels.get, default=default,
                            help="Reference runs by default (one per editor against edit count); add others to compare")
labels = {r: all_labels[r] for r in all_labels if r in chosen}
part = part.filter(pl.col("run_id").is_in(chosen))
if part.is_empty():
    st.info("Choose at least one run.")
    st.stop()
c1, c2, c3 = st.columns(3)
mean_orders = view == "sequential" and url_toggle(
    "Mean over edit orders", "ability_mean", default=True, container=c3,
    help="Each chosen run stands for its arm (every run alike but for the edit order): the mean over its orders, "
         "with the 95% t-interval over orders as whiskers; perplexity averaged on the log scale")
common = view == "rect" and url_toggle(
    "Shared edit counts only", "ability_common", default=True, container=c1,
    help="Only the edit counts every chosen run reached: runs made to different lengths (the RECT sweep to 200 "
         "edits, ROME to 500) compared on their shared range")
kept_whole = []
if common:
    from store.derived import up_to_common_end

    clipped = up_to_common_end(part)
    # a run with no score inside the shared range (plain ROME's full suite, scored only at its last edit) is the
    # reference the others are read against: it keeps its own points rather than vanishing
    for run in labels:
        if clipped.filter((pl.col("run_id") == run) & (pl.col("edit_count") > 0)).is_empty():
            kept_whole.append(run)
    part = pl.concat([clipped.filter(~pl.col("run_id").is_in(kept_whole)),
                      part.filter(pl.col("run_id").is_in(kept_whole))])

drawn = part
if view != "batch" and mode == "full":  # runs scored on the full suite only at their end start from the unedited model
    drawn = start_from_unedited(part, own.select(part.columns))
x, x_title = ("batch_size", "Edits in the batch") if view == "batch" else ("edit_count", "Edits made")
# one toggle per axis: the batch axis opens logarithmic (sizes 1 to 500), the edit axis linear
log_x = url_toggle("Logarithmic x axis", "batch_log_x" if view == "batch" else "ability_log_x",
                   default=view == "batch", container=c2)
if mean_orders:
    arm_runs, arm_names, arm_looks = arms_of(table, chosen)
    every = scores.filter((pl.col("kind") == kind) & (pl.col("mode") == mode)
                          & pl.col("run_id").is_in([r for rs in arm_runs.values() for r in rs]))
    if mode == "full":
        every = start_from_unedited(every, own.select(every.columns))
    drawn = ability_order_means(every, {r: a for a, rs in arm_runs.items() for r in rs})
    labels_drawn, looks_drawn = arm_names, arm_looks
else:
    labels_drawn, looks_drawn = labels, styles_of(table)
st.plotly_chart(charts.ability_small_multiples(drawn, x, labels_drawn, x_title, baseline=baseline, log_x=log_x,
                                               styles=looks_drawn), width="stretch")
if mean_orders:
    st.caption("Mean over edit orders: each line is an arm (runs alike but for the order); a point is the mean "
               "over the orders that reached that edit count, with the 95% t-interval over orders (n = orders in "
               "the hover; an accuracy's stops at 0 and 1); an arm with one order shows that run with its own CI.")
controls = sorted(set(table.filter(pl.col("run_id").is_in(chosen) & ~pl.col("edits_facts"))["arm_label"]))
if controls:  # what the control's lines mean, and where the comparison with the edits is judged
    st.caption(escape_markdown(
        f"{', '.join(controls)}: a control that changes the weights without aiming at any fact (random rank-one "
        "updates with its reference run's per-edit norms, in order), so its lines show what updates of that size "
        "do to each ability; Findings C5 sets ROME against it task by task on each edit order."))
if kept_whole:
    st.caption("Drawn to their own last score, beyond the shared range, because they have no score inside it: "
               + ", ".join(labels[r] for r in kept_whole) + ".")
st.download_button("Download CSV (ability scores)", part.write_csv(), file_name=f"abilities-{view}-{mode}.csv")
st.caption("Each point: the task's score with its 95% CI (Wilson for accuracies, bootstrap for perplexity) and "
           "n items in the hover. Dashed: the unedited model; dotted: chance. Perplexity panels are logarithmic. "
           "The full suite runs on the unedited model and at the end of a run, so in full mode a run's line goes "
           "from the unedited model's score (edit count 0) to its score after its last edit. Study-C categories: "
           + ", ".join(sorted({f"{r['task']} → {r['study_c']}" for r in part.unique('task').iter_rows(named=True)})))

if view in ("rect", "batch"):
    st.header("Editing performance beside the abilities")
    perf = query("editing_performance", run_ids=tuple(chosen))
    if perf.is_empty():
        st.write("No editing-performance rows for these runs.")
    else:
        if common:
            perf = perf.filter((pl.col("edit_count") <= part["edit_count"].max()))
        shown = perf.with_columns(pl.col("run_id").replace_strict(labels, default=None).alias("run"))
        # each share beside its 95% CI, one column per measure
        table_ = (shown.with_columns(with_ci(shown, "value", "ci_low", "ci_high"))
                  .pivot(on="measure", index=["run", "edit_count", "n"], values="value").sort("run", "edit_count"))
        ci = " [95% Wilson CI over the n edits]"
        show(table_, {"run": Col("Run"), "edit_count": Col("Edits made" if view != "batch" else "Batch", "{:,.0f}"),
                      "n": Col("n", "{:,.0f}", "edits (or facts of the batch) the scores are over"),
                      "reliability (ES)": Col("Reliability (ES)", None, "newest edits: the new object beats the true "
                                              "one on the edit prompt" + ci),
                      "generalisation (PS)": Col("Generalisation (PS)", None, "the same on paraphrases" + ci),
                      "locality (NS)": Col("Locality (NS)", None, "neighbouring facts keep their true object" + ci)})
        st.download_button("Download CSV (editing performance)", shown.write_csv(), file_name=f"editing-{view}.csv")

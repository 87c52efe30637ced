"""General abilities (study C): what edits cost the rest of the model. Small multiples per task against
edit count (sequential runs) or batch size (batch runs), with the unedited model's score and chance as
lines; and the RECT comparison, ability scores beside editing performance."""

import polars as pl
import streamlit as st

from dashboard import charts
from dashboard.data import query
from dashboard.filters import shared_multiselect
from dashboard.sidebar import chosen_model

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

baseline_mode = st.segmented_control("Suite", ["quick", "full"], default="quick", key="ability_mode",
                                     help="quick: each task's first items (every checkpoint); full: every item")
mode = baseline_mode or "quick"
# the unedited model in this mode: its own abilities run first, else the edit-count-0 scores of edit runs
unedited = scores.filter((pl.col("edit_count") == 0) & (pl.col("mode") == mode))
own = unedited.filter(pl.col("kind") == "abilities")
base = (own if not own.is_empty() else unedited).group_by("task").agg(pl.col("score").first())
baseline = dict(zip(base["task"].to_list(), base["score"].to_list())) if not base.is_empty() else {}

view = st.segmented_control("View", ["sequential", "batch", "rect"], default="sequential", key="ability_view",
                            format_func={"sequential": "Against edit count", "batch": "Against batch size",
                                         "rect": "RECT comparison"}.get)
view = view or "sequential"
kind = "batch" if view == "batch" else "sequential"
part = scores.filter((pl.col("kind") == kind) & (pl.col("mode") == mode))
default = None
if view == "rect":  # RECT is an option of ROME with r-ROME keys: the sweep is those runs (100% = plain ROME)
    part = part.filter(pl.col("editor") == "ROME")
    default = part.filter(~pl.col("key_mismatch"))["run_id"].unique().to_list()
if part.is_empty():
    st.info(f"No {mode}-mode ability scores from {kind} runs yet.")
    st.stop()

labels = dict(part.select("run_id", "label").unique().iter_rows())
chosen = shared_multiselect("Runs", "rect_runs" if view == "rect" else "runs", sorted(labels, key=labels.get),
                            format_func=labels.get,
                            default=sorted(default or labels, key=labels.get))
part = part.filter(pl.col("run_id").is_in(chosen))
labels = {r: labels[r] for r in chosen}
if part.is_empty():
    st.info("Choose at least one run.")
    st.stop()
common = view == "rect" and st.toggle(
    "Only edit counts every chosen run reached", value=True, key="ability_common",
    help="Runs made to different lengths (the RECT sweep to 200 edits, ROME to 500) compared on their shared range")
if common:
    from store.derived import up_to_common_end

    part = up_to_common_end(part)

drawn = part
if view != "batch" and mode == "full":  # runs scored on the full suite only at their end start from the unedited model
    from store.derived import start_from_unedited

    drawn = start_from_unedited(part, own.select(part.columns))
x, x_title = ("batch_size", "Edits in the batch") if view == "batch" else ("edit_count", "Edits made")
log_x = st.toggle("Logarithmic x axis", value=view == "batch", key="ability_log_x")
st.plotly_chart(charts.ability_small_multiples(drawn, x, labels, x_title, baseline=baseline, log_x=log_x),
                width="stretch")
st.download_button("Download CSV (ability scores)", part.write_csv(), file_name=f"abilities-{view}-{mode}.csv")
st.caption("Each point: the task's score with its 95% CI (Wilson for accuracies, bootstrap for perplexity) and "
           "n items in the hover. Dashed: the unedited model; dotted: chance. The full suite runs on the "
           "unedited model and at the end of a run, so in full mode a run's line goes from the unedited "
           "model's score (edit count 0) to its score after its last edit. Study-C categories: "
           + ", ".join(sorted({f"{r['task']} → {r['study_c']}" for r in part.unique('task').iter_rows(named=True)})))

if view in ("rect", "batch"):
    st.header("Editing performance beside the abilities")
    perf = query("editing_performance", run_ids=tuple(chosen))
    if perf.is_empty():
        st.write("No editing-performance rows for these runs.")
    else:
        if common:
            perf = perf.filter(pl.col("edit_count") <= part["edit_count"].max())
        shown = perf.with_columns(pl.col("run_id").replace_strict(labels, default=None).alias("run"))
        table = shown.pivot(on="measure", index=["run", "edit_count", "n"], values="value").sort("run", "edit_count")
        st.dataframe(table, hide_index=True)
        st.download_button("Download CSV (editing performance)", shown.write_csv(), file_name=f"editing-{view}.csv")

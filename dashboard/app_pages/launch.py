"""Launch runs: start a small robustness run, knowledge measurement, layer sweep, sequential run or batch
run in the background, watch queued/running/recent runs with their progress and heartbeat, and cancel a
running one."""

import streamlit as st

from dashboard import jobs
from dashboard.data import query, store_path

st.title("Launch runs")
st.caption(f"Runs start as background `python -m compute` processes on `{store_path()}`; launched runs are kept "
           f"small (at most {jobs.MAX_CASES} cases, {jobs.MAX_EDITS} sequential edits, batches of "
           f"{jobs.MAX_BATCH}, {jobs.MAX_GEN_TOKENS} generated tokens).")

editors = jobs.editor_names()
case_sets = query("case_sets")
set_names = case_sets["case_set"].to_list() if not case_sets.is_empty() else []

experiment = st.segmented_control("Experiment", ["robustness", "knowledge", "sweep", "sequential", "batch"],
                                  default="robustness", key="experiment")
with st.form("launch_form"):
    if experiment in ("sequential", "batch"):
        editor = st.selectbox("Editor", [e for e in editors if e != "IKE"], key="launch_editor_w",
                              help="weight editors only: in-context editing changes no weights")
        big = case_sets.filter(case_sets["n_cases"] > jobs.LAUNCH_PANEL_POOL)["case_set"].to_list() if set_names else []
        case_set = st.selectbox("Case set (edit order drawn from it)", big, key="launch_set_w")
        seed = st.number_input("Order seed", 0, jobs.MAX_SEED, 0, key="launch_order_seed")
        if experiment == "sequential":
            edits = st.number_input("Number of edits", 1, jobs.MAX_EDITS, 20, key="launch_edits")
            batch = st.number_input("Batch size", 1, jobs.MAX_BATCH, 1, key="launch_batch")
        else:
            sizes = st.text_input("Batch sizes", value="1,10", max_chars=jobs.MAX_TEXT, key="launch_sizes")
            with_abilities = st.checkbox("Quick ability suite after each batch (about a minute each)",
                                         key="launch_abilities")
    elif experiment == "knowledge":
        case_set = st.selectbox("Case set", set_names, key="launch_set")
        types = st.selectbox("Rephrase types", jobs.REPHRASE_CHOICES, key="launch_types")
    else:
        editor = st.selectbox("Editor", editors, key="launch_editor")
        cases = st.number_input("Number of cases (a balanced set, built if missing)", 1, jobs.MAX_CASES, 8,
                                key="launch_cases")
        seed = st.number_input("Seed", 0, jobs.MAX_SEED, 0, key="launch_seed")
        if experiment == "sweep":
            layers = st.text_input("Layers", value="1,3,5", max_chars=jobs.MAX_TEXT, key="launch_layers")
    if experiment not in ("sequential", "batch"):
        limit = st.number_input("Limit (first N cases)", 1, jobs.MAX_CASES, 8, key="launch_limit")
        gen_tokens = st.number_input("Generated tokens", 1, jobs.MAX_GEN_TOKENS, 10, key="launch_gen_tokens")
    model = st.text_input("Model", value="", key="launch_model",
                          help=f"Empty for {jobs.DEFAULT_MODEL}, or a local Hugging Face model directory")
    submitted = st.form_submit_button("Launch", type="primary")

if submitted:
    try:
        if experiment == "sequential":
            argv = jobs.sequential_argv(editor, case_set, edits, batch, seed, editors=editors, case_sets=set_names,
                                        model=model)
        elif experiment == "batch":
            argv = jobs.batch_argv(editor, case_set, sizes, seed, editors=editors, case_sets=set_names,
                                   abilities=with_abilities, model=model)
        elif experiment == "knowledge":
            argv = jobs.knowledge_argv(case_set, case_sets=set_names, limit=limit, types=types,
                                       gen_tokens=gen_tokens, model=model)
        elif experiment == "sweep":
            argv = jobs.sweep_argv(editor, layers, cases, seed, editors=editors, limit=limit,
                                   gen_tokens=gen_tokens, model=model)
        else:
            argv = jobs.robustness_argv(editor, cases, seed, editors=editors, limit=limit,
                                        gen_tokens=gen_tokens, model=model)
        job = jobs.start_job(store_path(), argv)
        st.success(f"Started job {job.job_id} (process {job.pid}): {' '.join(argv)}")
    except ValueError as exc:
        st.error(str(exc))


@st.fragment(run_every=5)
def _runs() -> None:
    st.subheader("Runs")
    table = jobs.runs_overview(store_path())
    if table.is_empty():
        st.info("No runs in the store yet.")
    else:
        st.dataframe(table, hide_index=True, width="stretch", key="runs_table", column_config={
            "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0),
            "heartbeat_age_s": st.column_config.NumberColumn("heartbeat age (s)"),
        })
        for row in table.filter(table["status"] == "running").iter_rows(named=True):
            label = f"Cancel {row['kind']} run {row['run_id']} ({row['n_done'] or 0}/{row['n_total'] or '?'})"
            if st.button(label, key=f"cancel_{row['run_id']}"):
                try:
                    pid = jobs.cancel_run(store_path(), row["run_id"])
                    st.warning(f"Sent an interrupt to process {pid}: the run will show as interrupted.")
                except ValueError as exc:
                    st.error(str(exc))
    if st.button("Mark runs whose process died", key="mark_stale",
                 help="Runs still 'running' without a live process become 'interrupted'"):
        st.toast(f"{jobs.mark_stale(store_path())} run(s) marked interrupted")

    st.subheader("Jobs started here")
    started = jobs.list_jobs(store_path())
    if not started:
        st.caption("None yet.")
    for job in started:
        status = jobs.job_status(job)
        with st.expander(f"{job.job_id} · {job.kind} · {status['state']}"):
            st.code(" ".join(job.argv), language=None, wrap_lines=True)
            if status["error"]:
                st.error(status["error"])
            st.code(jobs.log_tail(job) or "(no output yet)", language=None)


_runs()

"""Launch runs: start a small robustness run, knowledge measurement, layer sweep, sequential run or batch
run in the background, watch queued/running/recent runs with their progress and heartbeat, and cancel one
this session started. Launched runs write to the workspace store, never to the shipped one."""

import polars as pl
import streamlit as st

from dashboard import commands, jobs
from dashboard.sidebar import run_table
from dashboard.tables import errors_in_full, short_error, to_minute
from dashboard.plain import message
from dashboard.data import (public_mode, query, session_owner, store_path, store_paths, workspace_path,
                            workspace_problem)
from store.conventions import PROBES_ALWAYS_KEPT

st.title("Launch runs")
missing = jobs.missing_compute()
if missing:
    st.info(jobs.missing_compute_message(missing, "Launching a run"))
    st.stop()
if workspace_problem():
    message("Runs cannot be started here: the workspace store is misconfigured.", workspace_problem())
    st.stop()

public, owner = public_mode(), session_owner()
where = "a workspace store kept apart from the shipped results" if public else f"the workspace store `{workspace_path()}`"
st.caption(f"Runs start as background `python -m compute` processes writing to {where}; the shipped store is "
           f"never changed. Launched runs are kept small (at most {commands.MAX_CASES} cases, {commands.MAX_EDITS} "
           f"sequential edits, batches of {commands.MAX_BATCH}, {commands.MAX_GEN_TOKENS} generated tokens, seeds 0-"
           f"{commands.MAX_SEED}), {jobs.MAX_SESSION_JOBS} at a time per visitor and {jobs.MAX_RUNNING_JOBS} on the "
           "machine.")

editors = commands.editor_names()
case_sets = query("case_sets")
set_names = case_sets["case_set"].to_list() if not case_sets.is_empty() else []

experiment = st.segmented_control("Experiment", ["robustness", "knowledge", "sweep", "sequential", "batch"],
                                  default="robustness", key="experiment")
case_set = None
with st.form("launch_form"):
    if experiment in ("sequential", "batch"):
        editor = st.selectbox("Editor", [e for e in editors if e != "IKE"], key="launch_editor_w",
                              help="weight editors only: in-context editing changes no weights")
        big = case_sets.filter(case_sets["n_cases"] > commands.LAUNCH_PANEL_POOL)["case_set"].to_list() if set_names else []
        case_set = st.selectbox("Case set (edit order drawn from it)", big, key="launch_set_w")
        seed = st.number_input("Order seed", 0, commands.MAX_SEED, 0, key="launch_order_seed")
        if experiment == "sequential":
            edits = st.number_input("Number of edits", 1, commands.MAX_EDITS, 20, key="launch_edits")
            batch = st.number_input("Batch size", 1, commands.MAX_BATCH, 1, key="launch_batch")
        else:
            sizes = st.text_input("Batch sizes", value="1,10", max_chars=commands.MAX_TEXT, key="launch_sizes")
            with_abilities = st.checkbox("Quick ability suite after each batch (about a minute each)",
                                         key="launch_abilities")
    elif experiment == "knowledge":
        case_set = st.selectbox("Case set", set_names, key="launch_set")
        types = st.selectbox("Rephrase types", commands.REPHRASE_CHOICES, key="launch_types")
    else:
        editor = st.selectbox("Editor", editors, key="launch_editor")
        cases = st.number_input("Number of cases (a balanced set, built if missing)", 1, commands.MAX_CASES, 8,
                                key="launch_cases")
        seed = st.number_input("Seed", 0, commands.MAX_SEED, 0, key="launch_seed")
        if experiment == "sweep":
            layers = st.text_input("Layers", value="1,3,5", max_chars=commands.MAX_TEXT, key="launch_layers")
    if experiment not in ("sequential", "batch"):
        limit = st.number_input("Limit (first N cases)", 1, commands.MAX_CASES, 8, key="launch_limit")
        gen_tokens = st.number_input("Generated tokens", 1, commands.MAX_GEN_TOKENS, 10, key="launch_gen_tokens")
    model = "" if public else st.text_input(
        "Model", value="", key="launch_model", help=f"Empty for {commands.DEFAULT_MODEL}, or a local Hugging Face model directory")
    device = "cpu" if public else st.text_input("Device", value="cpu", key="launch_device",
                                                help="torch device: cpu, cuda, cuda:N or mps")
    submitted = st.form_submit_button("Launch", type="primary")

if submitted:
    try:
        if experiment == "sequential":
            argv = commands.sequential_argv(editor, case_set, edits, batch, seed, editors=editors, case_sets=set_names,
                                        model=model, device=device)
        elif experiment == "batch":
            argv = commands.batch_argv(editor, case_set, sizes, seed, editors=editors, case_sets=set_names,
                                   abilities=with_abilities, model=model, device=device)
        elif experiment == "knowledge":
            argv = commands.knowledge_argv(case_set, case_sets=set_names, limit=limit, types=types,
                                       gen_tokens=gen_tokens, model=model, device=device)
        elif experiment == "sweep":
            argv = commands.sweep_argv(editor, layers, cases, seed, editors=editors, limit=limit,
                                   gen_tokens=gen_tokens, model=model, device=device)
        else:
            argv = commands.robustness_argv(editor, cases, seed, editors=editors, limit=limit,
                                        gen_tokens=gen_tokens, model=model, device=device)
        workspace = jobs.ensure_workspace(store_path())
        if case_set:
            kept = list(PROBES_ALWAYS_KEPT)  # what sequential and batch runs read; knowledge reads its types too
            needs = None if experiment == "knowledge" and types == "all" else kept + (
                [types] if experiment == "knowledge" else [])
            jobs.copy_case_set(store_path(), workspace, case_set, needs=needs)
        job = jobs.start_job(workspace, argv, owner=owner)
        message(f"Started job {job.job_id}" + ("" if public else f" (process {job.pid})") + ":", " ".join(argv),
                box=st.success)
    except ValueError as exc:
        message("That launch was refused:", jobs.redact(str(exc), [store_path()]) if public else str(exc))


def _hide(text: str) -> str:
    return jobs.redact(text, [store_path(), workspace_path()]) if public else text


@st.fragment(run_every=5)
def _runs() -> None:
    st.subheader("Runs")
    table = jobs.runs_overview(store_paths())
    if public:
        table = table.drop([c for c in ("pid", "host", "error") if c in table.columns])
    if table.is_empty():
        st.info("No runs in the store yet.")
    else:
        if "editor" in table.columns:  # the run's name (variant, batch, edit order) where the pages know it
            every = run_table()
            names = dict(zip(every["run_id"].to_list(), every["base_label"].to_list()))
            table = table.with_columns(pl.col("run_id").replace_strict(names, default=pl.col("editor"),
                                                                       return_dtype=pl.String).alias("editor"))
        first = ["run_id", "store", "kind", "editor", "status", "n_done", "n_total", "progress", "heartbeat_age_s"]
        table = table.select([c for c in first if c in table.columns] + [c for c in table.columns if c not in first])
        active = [status in ("queued", "running") for status in table["status"].to_list()]
        if "heartbeat_age_s" in table.columns:  # only a queued or running run's heartbeat is news: "—" for the rest
            table = table.with_columns(pl.Series("heartbeat_age_s", [
                "—" if a is None or not on else f"{a:,.0f}"
                for a, on in zip(table["heartbeat_age_s"].to_list(), active)], dtype=pl.String))
        # the table fits a 1400 px window: a column goes when no row shown has anything in it (the store when
        # all runs are shipped, the process and heartbeat when none is active, the host when there is one,
        # the error when there is none) or the run ids already say it (the kind)
        if "pid" in table.columns:  # a finished run's process is gone: only an active run's is news
            table = table.with_columns(pl.Series("pid", [p if on else None for p, on in
                                                         zip(table["pid"].to_list(), active)]))
        empty = [c for c in ("pid", "error") if c in table.columns and table[c].drop_nulls().len() == 0]
        if "store" in table.columns and table["store"].n_unique() == 1:
            empty.append("store")
        if "host" in table.columns and table["host"].drop_nulls().n_unique() <= 1:
            empty.append("host")
        if not any(active) and "heartbeat_age_s" in table.columns:
            empty.append("heartbeat_age_s")
        if "kind" in table.columns and all(str(r).startswith(f"{k}-") for r, k in
                                           zip(table["run_id"].to_list(), table["kind"].to_list())):
            empty.append("kind")  # every run id begins with its kind ("sequential-2026...")
        table = table.drop(empty)
        full_errors = []
        if "error" in table.columns:  # the table shows an error's first clause; the whole text follows it
            full_errors = [(r, e) for r, e in zip(table["run_id"].to_list(), table["error"].to_list())
                           if e and short_error(e) != e]
            table = table.with_columns(pl.Series("error", [short_error(e) if e else "—"
                                                           for e in table["error"].to_list()], dtype=pl.String))
        if "started_at" in table.columns:
            table = table.with_columns(to_minute("started_at"))
        if {"n_done", "n_total"} <= set(table.columns):  # one column, "60 / 500": the table fits 1400 px
            table = table.with_columns(pl.Series("n_done", [
                "—" if d is None and t is None else f"{d if d is not None else 0:,} / {t:,}" if t is not None
                else f"{d:,}" for d, t in zip(table["n_done"].to_list(), table["n_total"].to_list())],
                dtype=pl.String)).drop([c for c in ("n_total", "progress") if c in table.columns])
            # the share is what "60 / 500" says: its bar's width goes to the run's name, whole at 1400 px
        st.dataframe(table, hide_index=True, width="stretch", key="runs_table", column_config={
            # whole ids (a run id is about 32 characters; "medium" cut them off, "large" pushed columns out of view)
            "run_id": st.column_config.TextColumn("Run", width=250, pinned=True),
            "store": st.column_config.TextColumn("Store", help="shipped: the results that come with the code; "
                                                 "workspace: runs started from this dashboard"),
            # widths in pixels that add up to the 940 px a 1400 px window leaves beside the sidebar
            "kind": "Kind", "editor": st.column_config.TextColumn("Name", width=260, help="the run's name on every "
                                                                  "page: editor, variant, batch, edit order"),
            "status": st.column_config.TextColumn("Status", width=90),
            "n_done": st.column_config.TextColumn("Done", width=85, help="units done of the run's total (cases, "
                                                  "edits, batch sizes, swept values x cases)"),
            "progress": st.column_config.ProgressColumn("Progress", min_value=0.0, max_value=1.0, width=95),
            "heartbeat_age_s": st.column_config.TextColumn("Heartbeat age (s)",
                                                           help="seconds since a queued or running run last "
                                                                "reported; — for finished runs"),
            "started_at": st.column_config.TextColumn("Started (UTC)", width=130), "pid": "Process", "host": "Host",
            "error": st.column_config.TextColumn("Error", width=105,
                                                 help="its first clause; the whole text is below the table"),
        })
        errors_in_full(full_errors)
    mine = jobs.list_jobs(workspace_path(), owner=owner)
    for job in mine:
        if jobs.job_status(job)["state"] == "running" and st.button(f"Cancel job {job.job_id} ({job.kind})",
                                                                     key=f"cancel_{job.job_id}"):
            try:
                jobs.cancel_job(job, owner=owner)
                st.warning("Sent an interrupt: the run will show as interrupted.")
            except ValueError as exc:
                message("Not cancelled:", str(exc))

    st.subheader("Jobs started in this session" if public else "Jobs started here")
    # a public visitor sees only their own jobs' commands and logs; the operator of a private dashboard all
    started = mine if public else jobs.list_jobs(workspace_path())
    if not started:
        st.caption("None yet.")
    for job in started:
        status = jobs.job_status(job)
        with st.expander(jobs.escape_markdown(f"{job.job_id} · {job.kind} · {status['state']}")):
            st.code(_hide(" ".join(job.argv)), language=None, wrap_lines=True)
            if status["error"]:
                message("The job failed:", _hide(status["error"]))
            st.code(_hide(jobs.log_tail(job)) or "(no output yet)", language=None)


_runs()

"""Edit demo: change one fact with an editor in the demo worker (compute/demo_worker.py, started by
dashboard.jobs.start_demo on the first demo, keeping the model loaded between demos), then show, for every
rephrase type, the probe beside the model's generations before and after the edit, how long each stage took,
and on how many measurable types the edit held. The unedited answers come from the store when it holds them;
after the edit the plain and paraphrase answers are written first and shown while the other types follow
(the watcher fragment redraws its progress bar every second and the page as soon as rows were written).
The run is saved in the workspace store."""

import json

import polars as pl
import streamlit as st

from dashboard import commands, jobs
from dashboard.plain import line, message
from dashboard.tables import show_case_view
from dashboard.data import (public_mode, query, run_store, session_owner, store_path, workspace_path,
                            workspace_problem)
from store.conventions import ANSWER_SLOT, ANSWER_SLOT_NOTE
from store.measurable import MEASURABLE_SHARE, measurable_types, unmeasurable_reasons
from store.metrics import REPHRASE_TYPES

STAGE_NAMES = {1: "loading the model", 2: "the unedited model", 3: "the edit",
               4: "plain and paraphrase after it", 5: "the other types after it", 6: "saving"}
WATCH_S = 1.0  # seconds between the watcher's redraws of a demo in progress (its progress bar)
WAIT_S = 0.8  # within each, how long the watcher waits for new rows, looking at the log's size every 50 ms

st.title("Edit demo")
missing = jobs.missing_compute()
if missing:
    st.info(jobs.missing_compute_message(missing, "The Edit demo"))
    st.stop()
if workspace_problem():
    message("Runs cannot be started here: the workspace store is misconfigured.", workspace_problem())
    st.stop()

public, owner = public_mode(), session_owner()
typical = jobs.typical_seconds(workspace_path())
took = (f"A demo takes about {jobs.seconds_text(typical[0])} on this machine (the median of its last {typical[1]} "
        "demos). " if typical else "No demo has run on this machine yet, so how long one takes here is not known; "
        "the first also loads the model. ")
st.caption(f"One fact, one editor: the model answers every rephrase type, is edited, answers them all again, and "
           f"is restored. The unedited model's answers are read from the store when it holds them for these probes; "
           f"the first demo loads the model, later ones find it loaded (it is let go after "
           f"{jobs.DEMO_IDLE_S / 60:.0f} idle minutes). {took}The run is saved in the workspace store, never in the "
           f"shipped one.")

templates = commands.relation_templates_from(query("kb_relations"))
editors = commands.editor_names()
if not templates:
    st.info("The store has no knowledge base: run `python -m compute kb build` first.")
    st.stop()

with st.form("demo_form"):
    c1, c2 = st.columns(2)
    subject = c1.text_input("Subject", value="France", max_chars=commands.MAX_TEXT, key="demo_subject")
    relation = c2.selectbox("Relation", sorted(templates), key="demo_relation",
                            index=sorted(templates).index("capital") if "capital" in templates else 0)
    new_object = c1.text_input("New object", value="Rome", max_chars=commands.MAX_TEXT, key="demo_new")
    true_object = c2.text_input("True object (only for a subject not in the knowledge base)",
                                max_chars=commands.MAX_TEXT, key="demo_true")
    editor = c1.selectbox("Editor", editors, key="demo_editor", index=editors.index("ROME") if "ROME" in editors else 0)
    gen_tokens = c2.number_input("Generated tokens", 1, commands.MAX_GEN_TOKENS, commands.MAX_GEN_TOKENS, key="demo_gen_tokens",
                                 help="Stored answers of the unedited model are reused only for the same length "
                                      f"(knowledge runs generate {commands.MAX_GEN_TOKENS} tokens by default)")
    model, device = "", "cpu"
    if not public:
        with st.expander("Model"):
            model = st.text_input("Model", value="", key="demo_model",
                                  help=f"Empty for {commands.DEFAULT_MODEL}, or a local Hugging Face model directory")
            device = st.text_input("Device", value="cpu", key="demo_device", help="torch device: cpu, cuda, cuda:N or mps")
    submitted = st.form_submit_button("Run edit", type="primary")

if relation in templates and subject.strip():
    try:
        line(f"Edit prompt: {commands.edit_prompt(relation, subject.strip(), templates)} → {new_object}")
    except ValueError as exc:
        line(str(exc))

if submitted:
    try:
        argv = commands.edit_argv(subject, relation, new_object, true_object, editor, templates=templates,
                              editors=editors, model=model, gen_tokens=gen_tokens, device=device)
        workspace = jobs.ensure_workspace(store_path())
        st.session_state["demo_job"] = jobs.start_demo(workspace, store_path(), argv, owner=owner).job_id
        st.session_state.pop("demo_done", None)
    except ValueError as exc:
        message("That request was refused:", str(exc))


def _model_measurability(run: dict) -> tuple[set[str] | None, dict[str, str], str | None]:
    """(measurable types, reasons for the others, the knowledge run that judged them) for the demo's model,
    from store.measurable: of the baselines the demo run's own store and the shipped store name, the one of the
    same model measured on the most cases (a small knowledge run launched into the workspace must not overrule
    the shipped 240-case baseline). (None, {}, None) when no store has one: the page then judges by this fact
    alone."""
    runs = query("list_runs")
    models = dict(zip(runs["run_id"].to_list(), runs["model"].to_list()))
    best = None
    for kwargs in ({"run_id": run["run_id"]}, {}):
        table = query("rephrase_measurability", **kwargs)
        if table.is_empty():
            continue
        base = table["baseline_run"][0]
        n = int(table["n"].max() or 0)
        if models.get(base) == run["model"] and (best is None or n > best[0]):
            best = (n, table, base)
    if best is None:
        return None, {}, None
    _, table, base = best
    return set(measurable_types(table)), unmeasurable_reasons(table), base


def _stage_line(job: jobs.Job) -> str:
    parts = [f"{STAGE_NAMES.get(k, what)} {jobs.seconds_text(s)}" for k, what, s in jobs.stage_times(job)]
    return "Time per stage: " + " · ".join(parts) if parts else ""


def _progress(job: jobs.Job) -> tuple:
    """What the run view below the watcher depends on: the demo's run id (printed once the unedited answers are
    stored) and how many groups of rows the worker has written after the edit. The watcher redraws the page
    when it changes."""
    written = sum(1 for x in jobs.log_tail(job, 1_000_000).splitlines() if x.startswith("written after the edit:"))
    return (jobs.demo_run(job), written)


@st.fragment(run_every=WATCH_S)
def _watch(job_id: str, shown: tuple) -> None:
    """The demo's progress, polled every WATCH_S seconds. It draws only the progress bar and the stage times
    (cheap: the page's CPU is the demo's, on a small machine); the run's rows are drawn outside it, by a
    full rerun when `_progress` says that something was written (a few times per demo). Between redraws it
    waits up to WAIT_S for that, so the rows appear within about 50 ms of being written rather than at the next
    tick (on average half a tick later). It does not wait when drawn by a full run of the page, which would
    hold back the rows below it."""
    job = jobs.load_job(workspace_path(), job_id)
    if not st.session_state.pop("demo_full_run", False):
        jobs.wait_for_log(job, lambda: _progress(job) != shown, WAIT_S)
    status = jobs.job_status(job)
    if status["state"] == "running":
        if _progress(job) != shown:
            st.rerun()
        stage = jobs.job_stage(job)
        k, n, what = stage if stage else (0, 6, "waiting for the demo worker")
        st.progress(max(k - 1, 0) / n, text=jobs.escape_markdown(f"Step {max(k, 1)} of {n}: {what}"))
        times = _stage_line(job)
        if times:
            st.caption(times)
        if not public:
            st.caption(f"process {job.pid}")
        if st.button("Cancel edit", key="demo_cancel"):
            try:
                jobs.cancel_job(job, owner=owner)
            except ValueError as exc:
                message("Not cancelled:", str(exc))
        return
    st.session_state["demo_done"] = {**status, "job_id": job_id, "run_id": jobs.saved_run(job),
                                     "stages": _stage_line(job)}
    del st.session_state["demo_job"]
    st.rerun()


def _in_progress(job_id: str) -> None:
    """The demo in progress: the watcher, then the run's rows written so far."""
    job = jobs.load_job(workspace_path(), job_id)
    shown = _progress(job)
    st.session_state["demo_full_run"] = True
    _watch(job_id, shown)
    run_id = shown[0]
    runs = query("list_runs", kind="demo") if run_id else None
    if runs is not None and run_id in runs["run_id"].to_list():
        _show(runs.filter(pl.col("run_id") == run_id).row(0, named=True), "Your demo (in progress)")


def _show(run: dict, title: str | None = None) -> None:
    """The demo run's rows as stored so far: verdict, then every rephrase type's probe beside its answers."""
    case_id = json.loads(run["config"] or "{}").get("case_id")
    if title:
        st.subheader(jobs.escape_markdown(f"{title}: {run['editor']} on {run['model']}"))
    line(f"run {run['run_id']} ({run_store(run['run_id'])} store) · case {case_id} · {run['started_at']}")
    before = json.loads(run["config"] or "{}").get("before_from")
    if before:
        line(f"Answers before the edit: from stored run {before} (not recomputed)")
    view = query("case_view", case_id=case_id, run_id=run["run_id"])
    measurable, reasons, judged_by = _model_measurability(run)
    summary = jobs.demo_summary(view, measurable)
    by_type = {t["rephrase_type"]: t for t in summary["types"]}
    if summary["types"]:
        if judged_by:
            rule = (f"A type is measurable on {run['model']} when the unedited model names the true object on at least "
                    f"{MEASURABLE_SHARE:.0%} of the cases of knowledge run {judged_by} (store.measurable).")
        else:
            rule = (f"No knowledge run of {run['model']} says which types it can answer, so a type counts as "
                    f"measurable for this fact when the unedited model's own generations named the true object (at "
                    f"least {jobs.DEMO_MEASURABLE:.0%} of its probes).")
        st.metric("Held on measurable types", f"{summary['held']} of {summary['measurable']}",
                  help=f"A type held when at least {jobs.DEMO_HELD:.0%} of its probes generated the new object after the "
                       f"edit. {rule} On the other types the edit cannot be seen to change an answer.")
        unmeasurable = [t["rephrase_type"] for t in summary["types"] if not t["measurable"]]
        if unmeasurable:
            st.caption(jobs.escape_markdown(f"Not measurable: {', '.join(unmeasurable)}. {rule}"))

    gens = query("generations", run_id=run["run_id"], case_id=case_id)
    answered = set(gens.filter(pl.col("phase") == "post")["rephrase_type"].to_list()) if not gens.is_empty() else set()
    line(f"Answered after the edit: {len(answered)} of {len(REPHRASE_TYPES)} rephrase types"
         + (f" ({', '.join(t for t in REPHRASE_TYPES if t in answered)})" if answered else ""))
    probes = query("probes", case_id=case_id)
    texts = dict(zip(probes["probe_id"].to_list(), probes["text"].to_list())) if not probes.is_empty() else {}
    for rtype in REPHRASE_TYPES:
        part = gens.filter(pl.col("rephrase_type") == rtype) if not gens.is_empty() else gens
        if part.is_empty():
            continue
        info = by_type.get(rtype)
        verdict = "" if info is None else (" · not measurable" if not info["measurable"]
                                           else " · held" if info["held"] else " · did not hold")
        st.markdown(f"**{rtype}**{verdict}")
        if rtype in reasons:
            st.caption(jobs.escape_markdown(reasons[rtype]))
        head = st.columns([2, 1, 1])
        for col, text in zip(head, ("probe", "before the edit", "after the edit")):
            col.caption(text)
        for probe_id in sorted(part["probe_id"].unique().to_list()):
            row = st.columns([2, 1, 1])
            row[0].code(texts.get(probe_id, f"(probe {probe_id} not in the store)"), language=None, wrap_lines=True,
                        height=160 if len(texts.get(probe_id, "")) > 400 else "content")
            if ANSWER_SLOT in texts.get(probe_id, ""):
                row[0].caption(ANSWER_SLOT_NOTE)
            for col, phase in ((row[1], "pre"), (row[2], "post")):
                for text in part.filter((pl.col("phase") == phase) & (pl.col("probe_id") == probe_id))["text"].to_list():
                    col.code(text, language=None, wrap_lines=True)
    with st.expander("Metrics per rephrase type (edit count 0 = before, 1 = after)"):
        show_case_view(view)


if "demo_job" in st.session_state:
    try:
        _in_progress(st.session_state["demo_job"])
        st.stop()  # the watcher shows the demo in progress; the full page comes back when it has ended
    except ValueError as exc:
        st.session_state.pop("demo_job", None)
        message("That request was refused:", str(exc))
done = st.session_state.get("demo_done")
if done and done["state"] != "done":
    error = done["error"] or "see the job log on the Launch page"
    message(f"The edit {done['state']}:", jobs.redact(error, [store_path(), workspace_path()]) if public else error)

demos = query("list_runs", kind="demo")
if demos.is_empty():
    st.info("No demo run yet.")
    st.stop()
mine = done.get("run_id") if done and done["state"] == "done" else None
run = demos.filter(pl.col("run_id") == mine).row(0, named=True) if mine in demos["run_id"].to_list() \
    else demos.row(0, named=True)
st.subheader(jobs.escape_markdown(f"{'Your demo' if run['run_id'] == mine else 'Latest demo'}: {run['editor']} on "
                                  f"{run['model']}"))
if run["run_id"] == mine and done.get("stages"):
    st.caption(done["stages"])
_show(run)

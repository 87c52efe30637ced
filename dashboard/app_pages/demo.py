"""Edit demo: change one fact with an editor in a background `python -m compute edit` process, then show the
model's generations before and after the edit for every rephrase type, side by side, from the store."""

import json

import polars as pl
import streamlit as st

from dashboard import jobs
from dashboard.data import query, store_path
from store.metrics import REPHRASE_TYPES

st.title("Edit demo")
st.caption("One fact, one editor: the edit runs in the background, is undone afterwards, and is saved as a "
           "'demo' run in the store.")

templates = jobs.relation_templates_from(query("kb_relations"))
editors = jobs.editor_names()
if not templates:
    st.info("The store has no knowledge base: run `python -m compute kb build` first.")
    st.stop()

with st.form("demo_form"):
    c1, c2 = st.columns(2)
    subject = c1.text_input("Subject", value="France", max_chars=jobs.MAX_TEXT, key="demo_subject")
    relation = c2.selectbox("Relation", sorted(templates), key="demo_relation",
                            index=sorted(templates).index("capital") if "capital" in templates else 0)
    new_object = c1.text_input("New object", value="Rome", max_chars=jobs.MAX_TEXT, key="demo_new")
    true_object = c2.text_input("True object (only for a subject not in the knowledge base)",
                                max_chars=jobs.MAX_TEXT, key="demo_true")
    editor = c1.selectbox("Editor", editors, key="demo_editor", index=editors.index("ROME") if "ROME" in editors else 0)
    gen_tokens = c2.number_input("Generated tokens", 1, jobs.MAX_GEN_TOKENS, 20, key="demo_gen_tokens")
    with st.expander("Model"):
        model = st.text_input("Model", value="", key="demo_model",
                              help=f"Empty for {jobs.DEFAULT_MODEL}, or a local Hugging Face model directory")
    submitted = st.form_submit_button("Run edit", type="primary")

if relation in templates and subject.strip():
    st.caption(f"Edit prompt: `{jobs.edit_prompt(relation, subject.strip(), templates)}` → {new_object}")

if submitted:
    try:
        argv = jobs.edit_argv(subject, relation, new_object, true_object, editor, templates=templates,
                              editors=editors, model=model, gen_tokens=gen_tokens)
        st.session_state["demo_job"] = jobs.start_job(store_path(), argv).job_id
    except ValueError as exc:
        st.error(str(exc))


@st.fragment(run_every=2)
def _watch(job_id: str) -> None:
    job = jobs.load_job(store_path(), job_id)
    status = jobs.job_status(job)
    if status["state"] == "running":
        stage = jobs.job_stage(job)
        k, n, what = stage if stage else (0, 5, "starting the process")
        st.progress(max(k - 1, 0) / n, text=f"Step {max(k, 1)} of {n}: {what} ({' '.join(job.argv[1:7])})")
        st.caption(f"process {job.pid}")
        if st.button("Cancel edit", key="demo_cancel"):
            jobs.cancel_job(job)
        return
    st.session_state["demo_done"] = status
    del st.session_state["demo_job"]
    st.rerun()


if "demo_job" in st.session_state:
    try:
        _watch(st.session_state["demo_job"])
    except ValueError as exc:
        st.session_state.pop("demo_job", None)
        st.error(str(exc))
done = st.session_state.get("demo_done")
if done and done["state"] != "done":
    st.error(f"The edit {done['state']}: {done['error'] or 'see the job log on the Launch page'}")

demos = query("list_runs", kind="demo")
if demos.is_empty():
    st.info("No demo run in the store yet.")
    st.stop()
run = demos.row(0, named=True)
case_id = json.loads(run["config"] or "{}").get("case_id")
st.subheader(f"Latest demo: {run['editor']} on {run['model']}")
st.caption(f"run {run['run_id']} · case {case_id} · {run['started_at']}")
gens = query("generations", run_id=run["run_id"], case_id=case_id)
view = query("case_view", case_id=case_id, run_id=run["run_id"])
for rtype in REPHRASE_TYPES:
    part = gens.filter(pl.col("rephrase_type") == rtype) if not gens.is_empty() else gens
    if part.is_empty():
        continue
    st.markdown(f"**{rtype}**")
    left, right = st.columns(2)
    left.caption("before the edit")
    right.caption("after the edit")
    for col, phase in ((left, "pre"), (right, "post")):
        for text in part.filter(pl.col("phase") == phase)["text"].to_list():
            col.code(text, language=None, wrap_lines=True)
with st.expander("Metrics per rephrase type (edit count 0 = before, 1 = after)"):
    st.dataframe(view, hide_index=True, width="stretch")

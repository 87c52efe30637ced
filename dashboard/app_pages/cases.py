"""Case explorer: find a case by subject; see its popularity features, every probe's text, and what each
run that contains it measured and generated before and after the edit, and what each run's edit of it did
(its per-edit diagnostics). The subject comes from the visitor (or a link's `?subject=`) and cases come from
the store: both are shown as text, never as markdown."""

import polars as pl
import streamlit as st

from dashboard.data import query
from dashboard.plain import message
from dashboard.sidebar import labels_of, run_table
from dashboard.tables import Col, show, show_case_view
from store.conventions import ANSWER_SLOT, ANSWER_SLOT_NOTE
from store.metrics import REPHRASE_TYPES

st.title("Case explorer")
needle = st.text_input("Subject contains", value=st.query_params.get("subject", "")[:100], key="subject",
                       max_chars=100, help="Case-insensitive substring of the subject")
if needle:
    st.query_params["subject"] = needle
else:
    st.query_params.pop("subject", None)  # links leave out values equal to the default
found = query("cases", subject_like=needle or None)
if found.is_empty():
    message("No case's subject contains this text:", needle, box=st.info)
    st.stop()
# cases some run measured first: the explorer opens on one that has results
measured = set(query("measured_case_ids")["case_id"].to_list())
found = found.with_columns(pl.col("case_id").is_in(list(measured)).alias("_measured")).sort(
    "_measured", descending=True, maintain_order=True)
labels = {r["case_id"]: f"{r['subject']} · {r['relation']}: {r['true_object']} → {r['new_object']} ({r['case_set']})"
          for r in found.iter_rows(named=True)}
case_id = st.selectbox(f"{len(labels)} matching cases", list(labels), format_func=labels.get, key="case")
case = found.filter(pl.col("case_id") == case_id).row(0, named=True)

cols = st.columns(5)
for col, (label, key) in zip(cols, [("Word frequency", "frequency"), ("Connection", "connection"),
                                    ("Co-occurrence", "cooccurrence"), ("Population", "population"),
                                    ("Popularity quartile", "popularity_quartile")]):
    value = case.get(key)
    col.metric(label, "n/a" if value is None else f"{value:,.2f}" if isinstance(value, float) else f"{value:,}")

runs = query("case_runs", case_id=case_id)
st.subheader("Runs with this case")
if runs.is_empty():
    st.info("No run has measured this case yet.")
else:
    # finished shipped runs of an editor first: a visitor's workspace run, or a control (which edits no fact), is
    # shown when chosen, not by default
    runs = runs.with_columns((pl.col("store") == "workspace").alias("_ws"), (pl.col("status") != "done").alias("_nd"),
                             (~pl.col("edits_facts").fill_null(True)).alias("_ctl") if "edits_facts" in runs.columns
                             else pl.lit(False).alias("_ctl"))
    runs = runs.sort(["_ws", "_nd", "_ctl", "started_at"], descending=[False, False, False, True], nulls_last=True)
    # the run's name says what tells it apart from its siblings (variant, batch, edit order); its status follows
    every = run_table()
    run_labels = dict(zip(every["run_id"].to_list(), every["base_label"].to_list()))
    names = {r["run_id"]: f"{r['kind']} · {run_labels.get(r['run_id']) or r['editor'] or 'unedited'} · {r['status']} · "
                          f"{r.get('store', 'shipped')} · {r['run_id']}" for r in runs.iter_rows(named=True)}
    run_id = st.selectbox("Run", list(names), format_func=names.get, key="run")
    view = query("case_view", case_id=case_id, run_id=run_id)
    view = show_case_view(view)
    st.download_button("Download CSV", view.write_csv(), file_name=f"case-{case_id}-{run_id}.csv")

st.subheader("What each run's edit of this case did")
DIAG = {  # pixel widths: the table, with four delivered columns, fits a 1400 px window
    "run": Col("Run", width=192), "edit_count": Col("Edit", "{:,.0f}", "the run's edit count at this edit (a "
                                                     "batch run: the batch size)", width=50),
    "update_rel": Col("||dW||/||W||", "{:.4f}", "relative Frobenius change of the edited matrix (largest over "
                      "matrices; a batch edit's is shared by its cases)", width=72),
    "update_norm": Col("||dW||", "{:.3f}", width=65), "steps": Col("Steps", "{:.0f}", width=50),
    "converged": Col("Conv.", "{:.0f}", "converged: 1 when the target's NLL fell below stop_nll before the step "
                     "cap", width=50),
    "clamped": Col("Clamp", "{:.0f}", "1: the value change ended on the norm clamp", width=50),
    "nll_final": Col("Final NLL", "{:.3f}", width=61), "robust_z": Col("Robust z", "{:+.1f}", "of the log edit "
                                                                          "size within its run; beyond ±3.5 it "
                                                                          "is an outlier", width=65),
}
edited = runs.filter(pl.col("kind").is_in(["knowledge", "abilities"]).not_()) if not runs.is_empty() else runs
edits = (query("edit_diagnostics", run_ids=tuple(edited["run_id"].to_list())).filter(pl.col("case_id") == case_id)
         if not edited.is_empty() else pl.DataFrame())
if edits.is_empty():
    st.write("No per-edit diagnostics for this case: no run that edited it recorded them (runs made before the "
             "store kept them, schema v7, or an editor that optimises nothing).")
else:
    # the delivered fraction on the plain prompt and on each paraphrase, one column each
    delivered = (query("diagnostic_rows", run_ids=tuple(edits["run_id"].unique().to_list()))
                 .filter((pl.col("case_id") == case_id) & (pl.col("name") == "delivered")))
    targets = sorted(delivered["target"].unique().to_list(), key=lambda t: (t != "plain", len(t), t))
    if not delivered.is_empty():
        edits = edits.join(delivered.pivot(on="target", index=["run_id", "edit_count"], values="value",
                                           aggregate_function="first")
                           .rename({t: f"delivered {t}" for t in targets}), on=["run_id", "edit_count"], how="left")
    run_names = {**names, **labels_of(every)}  # edits exist only where runs do (both defined above)
    edits = edits.with_columns(pl.col("run_id").replace_strict(run_names, default=pl.col("run_id")).alias("run"))
    # short headers ("→ plain", "→ para. 1"), the target in full in the help, so the table fits 1400 px
    delivered_cols = {f"delivered {t}": Col("→ " + t.replace("paraphrase:", "para. "), "{:.2f}",
                                            f"delivered to the {t} prompt: the share of the optimised change the "
                                            "weights carry there (1: all of it)", width=70) for t in targets}
    first = ("run", "edit_count", "update_rel")  # then what reached each prompt, then how the optimisation went
    show(edits.sort("run", "edit_count"), {**{k: DIAG[k] for k in first}, **delivered_cols,
                                           **{k: v for k, v in DIAG.items() if k not in first}})
    st.caption("One row per edit of this case. Delivered: (u·k)/(u·k*) for ROME, the same share summed over the "
               "edited layers for MEMIT and AlphaEdit; — where an editor does not record it.")

st.subheader("Probes")
probes = query("probes", case_id=case_id)
for rtype in [*REPHRASE_TYPES, "neighbourhood"]:
    part = probes.filter(pl.col("rephrase_type") == rtype)
    if part.is_empty():
        continue
    with st.expander(f"{rtype} ({part.height})"):  # rtype is one of the fixed type names
        for p in part.iter_rows(named=True):
            st.code(f"{p['text']} ▸ true: {p['target_true']} | new: {p['target_new']}", language=None, wrap_lines=True)
        if any(ANSWER_SLOT in t for t in part["text"].to_list()):
            st.caption(ANSWER_SLOT_NOTE)
left_out = [t for t in query("left_out_probe_types", case_set=case["case_set"])["rephrase_type"].to_list()
            if t in REPHRASE_TYPES]  # fixed type names only
if left_out:
    st.caption(f"This store keeps no probes of {len(left_out)} rephrase types for this case's set "
               f"({', '.join(left_out)}): no stored run measured them there, and a committed store keeps only the "
               "probes its runs read. They are built deterministically from the knowledge base: `python -m compute "
               "cases build` with the set's size and seed restores them in a store of your own.")

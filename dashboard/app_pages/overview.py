"""Overview: what the store holds, the pre-edit knowledge of the case sets, and every run with provenance."""

import polars as pl
import streamlit as st

from dashboard import charts
from dashboard.data import for_visitor, public_mode, query, rebuild_path, showing_rebuild, store_path
from dashboard.filters import known_toggle, url_selectbox, url_toggle
from dashboard.plain import word
from dashboard.sidebar import labels_of, reference_ids, run_table
from dashboard.tables import Col, errors_in_full, show, to_minute, with_ci
from store.conventions import MINUTE, PLAN_FILE
from store.derived import sequential_rules
from store.measurable import MEASURABLE_SHARE, hardest_measurable, unmeasurable_reasons

st.title("EditScope")
# a public visitor learns nothing about the server's files
st.caption("Results: the shipped store, read-only, and the workspace store of runs started from this dashboard"
           if public_mode() else f"Results store: `{store_path()}` (read-only)")

if rebuild_path() is not None:  # a rebuild in progress sits beside the shipped store
    if showing_rebuild():
        st.warning("You are looking at the rebuild in progress (store/rebuild.sqlite): the units of "
                   "plans/shipped.toml finished so far, and partial runs marked with their status. The README's "
                   "'Rebuilding the shipped store' section lists every unit's state.")
    else:
        st.info("The shipped store's runs were made before the edit-mechanics fixes (keys that reach prompts "
                "beginning with the subject, edit sizes calibrated for this model) and the studies' full design "
                "(free answers, a 200-fact panel, three edit orders, controls). The store is being rebuilt with "
                "them: choose Results → Rebuild in progress in the sidebar to see what is finished.")

summary = query("store_summary")
counts = dict(zip(summary["table"].to_list(), summary["rows"].to_list()))
cols = st.columns(5)
for col, (label, table) in zip(
    cols,
    [("Facts", "kb_facts"), ("Subjects", "kb_subjects"), ("Edit cases", "cases"), ("Probes", "probes"), ("Runs", "runs")],
):
    col.metric(label, f"{counts.get(table, 0):,}")

plan = query("plan_status")
if not plan.is_empty():  # a store copied from a plan's run (`plan snapshot`) says which units it holds
    counts_by = {k: plan.filter(pl.col("state") == k).height for k in ("done", "partial", "missing")}
    open_ = plan.filter(pl.col("state") != "done")
    left = open_.filter(~pl.col("held"))["cpu_h_left"].drop_nulls().sum()
    unknown = open_.filter(~pl.col("estimated")).height
    # the store's own text in a markdown element only in a shape that carries no markup (dashboard.plain)
    name, taken = word(plan["plan"][0], PLAN_FILE, "its plan"), word(plan["taken_at"][0], MINUTE, "an unrecorded time")
    where = f"{name}, as it stood at {taken}"
    if open_.is_empty():
        st.caption(f"Complete: every one of the {plan.height} units of {name} is done (the plan as it stood at "
                   f"{taken}).")
    else:
        st.warning(f"Built from part of a plan ({where}): {counts_by['done']} of its {plan.height} units are done, "
                   f"{counts_by['partial']} partial (their runs show their status, e.g. interrupted, wherever they "
                   f"appear) and {counts_by['missing']} missing; about {left:.1f} CPU-hours were left at one thread "
                   "per unit" + (f", besides {unknown} unit(s) with no stored timing to estimate them by" if unknown
                                 else "") + ". A view or a claim that needs a missing unit says it is not measured.")
    with st.expander(f"The plan's units ({counts_by['done']} done, {open_.height} not)"):
        units = plan.with_columns(
            pl.when(pl.col("total").is_null()).then(None)
            .otherwise(pl.format("{}/{}", pl.col("done"), pl.col("total"))).alias("progress"),
            (pl.col("state") + pl.when(pl.col("held")).then(pl.lit(" (held)")).otherwise(pl.lit(""))
             + pl.when(pl.col("other_hparams")).then(pl.lit(" (other hyperparameters)")).otherwise(pl.lit("")))
            .alias("state"))
        show(units, {"unit": Col("Unit", width=240), "kind": Col("Kind", width=90),
                     "state": Col("State", width=230, help="done, partial or missing; (held): the plan holds it back "
                                  "(its `hold`); (other hyperparameters): its runs were made with other "
                                  "hyperparameters than the unit runs with now, e.g. a calibration sweep that "
                                  "chose the setting shipped now"),
                     "progress": Col("Progress", width=90, help="items (edits, cases, sweep points) its runs have "
                                     "done, of their total; —: no run yet"),
                     "cpu_h_left": Col("CPU-h left", "{:.2f}", width=90, help="estimated from stored timings at one "
                                       "thread per unit (`python -m compute plan status`); —: done, or not "
                                       "estimated")})
        st.caption("In the plan's order, which is its priority. `python -m compute plan run "
                   f"{word(plan['plan'][0], PLAN_FILE, 'PLAN')}` computes what is missing and resumes what is "
                   "partial.")

st.header("Headline figures")
st.caption("The studies' questions with this store's numbers; the verdict on each claim, with the rule that gives "
           "it, is on the Findings page.")
share = "{:.2f}"
# one tile per reference run of the shipped settings (a superseded setting, e.g. MEMIT with every key a
# least-squares row, is on the Robustness page when chosen); a partial one says so in its label
rob_runs = run_table("robustness").filter(pl.col("reference") & ~pl.col("other_keys").fill_null(False))
rob = pl.DataFrame()
known = False
if not rob_runs.is_empty():
    st.subheader("Single edits: do they survive rephrasing? (study A)")
    known = known_toggle()
    measurability = query("rephrase_measurability", run_id=rob_runs["run_id"][0])
    summary = query("robustness_summary", run_ids=tuple(rob_runs["run_id"].to_list()), metrics=("acc",),
                    known_only=known)
    # types the unedited model is known not to answer are left out; a type it was never measured on stays in
    answerable = set(summary["rephrase_type"].to_list()) - set(unmeasurable_reasons(measurability))
    rob = (hardest_measurable(summary, answerable)
           .join(rob_runs.select("run_id", "label", "status", "n_done", "n_total"), on="run_id")
           .join(measurability.select(pl.col("rephrase_type").alias("hardest_type"),
                                      pl.col("recall_share").alias("unedited_recall_hardest")),
                 on="hardest_type", how="left"))
    # study A's control on the hardest type (Findings A8): the edit against the model's own knowledge there
    gaps = query("edit_against_knowledge", run_ids=tuple(rob_runs["run_id"].to_list()))
    rob = rob.join(gaps.select("run_id", pl.col("rephrase_type").alias("hardest_type"), "gap", "gap_ci_low",
                               "gap_ci_high", pl.col("n").alias("gap_n")), on=["run_id", "hardest_type"], how="left")
    order = {r: i for i, r in enumerate(rob_runs["run_id"].to_list())}
    rob = rob.sort(pl.col("run_id").replace_strict(order, return_dtype=pl.Int64))
if rob_runs.is_empty():
    st.info("No finished robustness runs yet: the plain-vs-hardest comparison appears once one has results.")
elif rob.is_empty() and known:
    st.info("None of these runs' cases was known to the unedited model (its answer to the plain prompt named the "
            "true object), or the runs have no baseline to tell: turn Known facts only off.")
elif rob.is_empty():
    st.info(f"No rephrase type besides the plain prompt is measurable on this model (the unedited model names the "
            f"true object on fewer than {100 * MEASURABLE_SHARE:g}% of the cases of each), so there is no "
            "plain-vs-hardest comparison to make. The Robustness page shows every type, marked.")
else:
    cols = st.columns(min(4, rob.height))
    for col, r in zip(cols * 4, rob.iter_rows(named=True)):
        col.metric(f"{r['label']}: acc, plain → hardest", f"{r['plain']:.2f} → {r['hardest']:.2f}",
                   delta=f"{r['drop']:+.2f} on {r['hardest_type']}", delta_color="normal",
                   help=f"Generation names the new object. Plain 95% CI [{r['plain_ci_low']:.2f}, "
                        f"{r['plain_ci_high']:.2f}], {r['hardest_type']} [{r['hardest_ci_low']:.2f}, "
                        f"{r['hardest_ci_high']:.2f}]; n = {r['n']} cases ({r['status']}). The unedited model names "
                        f"the true object on {r['hardest_type']} for "
                        + ("an unknown share" if r["unedited_recall_hardest"] is None
                           else f"{r['unedited_recall_hardest']:.2f}") + " of the cases.")
    excluded = sorted(unmeasurable_reasons(measurability))
    partial = rob.filter(pl.col("status") != "done").height
    tiles = (f"One tile per reference run (a finished run of each editor where there is one; {partial} of them "
             "partial, their status in the label). " if partial else "One tile per finished reference run. ")
    st.caption(tiles + f"Hardest type: the lowest post-edit acc among the rephrase "
               f"types the unedited model can answer (names the true object on at least "
               f"{100 * MEASURABLE_SHARE:g}% of cases) and answers freely (no copy task)"
               + (f"; left out as unmeasurable: {', '.join(excluded)}." if excluded else ".")
               + " Gap vs knowledge: study A's control on that type (Findings A8), the edit's acc minus the unedited "
                 "model's recall on the same known facts, paired; below 0 the type costs the edit more than it costs "
                 "the model's own knowledge."
               + (" Known facts only: every type judged on the facts whose plain prompt the unedited model answered "
                  "with the true object (n counts them)." if known else ""))
    # each acc beside its CI in one column, so the table fits a 1400 px window whatever the run labels
    rob = rob.with_columns(with_ci(rob, "plain", "plain_ci_low", "plain_ci_high"),
                           with_ci(rob, "hardest", "hardest_ci_low", "hardest_ci_high"),
                           with_ci(rob, "gap", "gap_ci_low", "gap_ci_high", fmt="{:+.2f}"))
    # the control's n is its known facts, not the run's cases (the n column)
    rob = rob.with_columns(pl.when(pl.col("gap_n").is_null()).then(pl.col("gap"))
                           .otherwise(pl.format("{} n={}", pl.col("gap"), pl.col("gap_n"))).alias("gap"))
    show(rob, {"label": Col("Run"), "plain": Col("acc plain [95% CI]"),
               "hardest_type": Col("Hardest type", help="The lowest post-edit acc among the measurable types; "
                                   "its drop from the plain prompt is on the tile above"),
               "hardest": Col("acc there [95% CI]"),
               "gap": Col("Gap vs knowledge", help="Study A's control (Findings A8): on the known facts whose "
                          "edit held on the plain prompt, acc on that type minus the unedited model's rev there, "
                          "paired by fact, with its bootstrap 95% CI and n, the facts compared; below 0 the type "
                          "costs the edit more than it costs the model's own knowledge"),
               "n": Col("n", "{:,.0f}", "cases the run measured (the gap's n, the known facts it compares, is in "
                                        "its cell)")})
seq = query("sequential_headlines")
if not seq.is_empty():
    st.subheader("Sequential edits: when does the model break? (study B)")
    # a share beside its CI in one column, so the table fits a 1400 px window
    seq = seq.with_columns(
        pl.when(pl.col(c).is_null()).then(None).otherwise(
            pl.format("{} {}", pl.col(c).round(2).cast(pl.String).str.pad_end(4, "0"),
                      pl.col(f"{c}_ci").str.replace(", n = ", " n=", literal=True))).alias(c)
        for c in ("retention_em", "retention", "panel_recall"))
    # runs made before exact-match tracking have retention by ES only: shown as such
    seq = seq.with_columns(pl.coalesce(pl.col("retention_em"), pl.col("retention") + pl.lit(" (ES)")).alias("retention_em"))
    rules = sequential_rules()  # the rule behind each verdict, in words from the code's constants
    # the finished reference runs of the shipped settings in the table; superseded settings (MEMIT and AlphaEdit
    # with every key a least-squares row), partial runs and visitors' runs below it, when asked for
    every = run_table("sequential")
    main_ids = reference_ids(every)
    seq = seq.with_columns(pl.col("run_id").replace_strict(labels_of(every), default=pl.col("run")).alias("run"))
    others = seq.filter(~pl.col("run_id").is_in(main_ids))
    if main_ids:
        seq = seq.filter(pl.col("run_id").is_in(main_ids))
    seq_cols = {"run": Col("Run"), "status": Col("Status"), "edits": Col("Edits", "{:,.0f}"),
               "collapse_at": Col("Collapse", "{:,.0f}",
                                  "The edit count of the collapse. " + rules["collapse"] + " —: none."),
               "catastrophic_from": Col("Catastrophic", "{:,.0f}", "The edit count where a catastrophic phase starts "
                                        "on any series. " + rules["phase"]),
               "disabling_edits": Col("Disabling", "{:,.0f}", "How many disabling edits. " + rules["disabling_edit"]),
               "panel_floor_at": Col("Floor", "{:,.0f}",
                                     "The edit count of the panel floor. " + rules["panel_floor"] + " —: none."),
               "retention_em": Col("Edits held (last)",
                                   help="Share of all edits so far whose new object is still the teacher-forced "
                                        "argmax at every token (study B's 'holds', exact match), at the run's last "
                                        "full re-check, [95% Wilson CI], n edits. (ES): a run made before exact "
                                        "match was tracked, held by ES (P(new) > P(true)) instead"),
               "panel_recall": Col("Panel recall (last)", help="Greedy recall of the panel of unedited facts the "
                                   "model knew, at the last checkpoint, [95% Wilson CI], n facts")}
    show(seq, seq_cols)
    st.caption("Each column's rule is in its header's tooltip; the Forgetting page shows the curves and the events.")
    if main_ids and not others.is_empty():
        with st.expander(f"Other sequential runs ({others.height}): superseded settings, partial runs"):
            show(others, seq_cols)

st.header("Pre-edit knowledge by popularity")
sets = query("case_sets")
if sets.is_empty():
    st.info("No case sets yet: build one with `python -m compute cases build`.")
else:
    import json

    measured = {json.loads(r["config"] or "{}").get("case_set")
                for r in query("list_runs", kind="knowledge").iter_rows(named=True) if r["status"] == "done"}
    # sets with measured pre-edit knowledge first, then the largest
    ordered = sets.with_columns(pl.col("case_set").is_in(list(measured)).alias("_k"))
    names = ordered.sort("_k", "n_cases", "case_set", descending=[True, True, False])["case_set"].to_list()
    chosen = url_selectbox("Case set", "case_set", names)
    split = url_toggle("Split by relation", "by_relation", default=False)
    by_q = query("knowledge_by_quartile", case_set=chosen, by_relation=split)
    if by_q.is_empty():
        st.info("No pre-edit knowledge measured for this case set: run `python -m compute knowledge measure`.")
    else:
        st.plotly_chart(charts.recall_by_quartile(by_q), width="stretch")
        st.download_button("Download CSV", by_q.write_csv(), file_name=f"recall-by-quartile-{chosen}.csv")
        corr = query("knowledge_correlations", case_set=chosen)
        st.caption("Spearman rank correlation of each popularity feature with pre-edit recall (95% bootstrap CI), "
                   "pooled over relations and within relation (each relation's rho, combined by Fisher z weighted "
                   "by n - 3, analytic CI: a case is compared only with cases of its own relation, since relations "
                   "differ in both popularity and difficulty).")
        show(corr, {"feature": Col("Popularity feature"), "against": Col("Against"),
                    "rho": Col("Spearman rho, pooled", "{:+.3f}"), "ci_low": Col("CI low", "{:+.3f}"),
                    "ci_high": Col("CI high", "{:+.3f}"), "n": Col("n", "{:,.0f}"),
                    "rho_within": Col("rho within relation", "{:+.3f}"),
                    "within_ci_low": Col("CI low (within)", "{:+.3f}"),
                    "within_ci_high": Col("CI high (within)", "{:+.3f}"), "n_within": Col("n within", "{:,.0f}")})

with st.expander(f"Knowledge base: {counts.get('kb_relations', 0)} relations"):
    st.dataframe(query("kb_relations"), hide_index=True)
with st.expander(f"Case sets: {sets.height}"):
    st.dataframe(sets, hide_index=True)

st.header("Runs")
runs = run_table()
if runs.is_empty():
    st.write("No runs yet.")
else:
    detail = query("list_runs").select("run_id", "finished_at", "error", "host")
    hosts = detail["host"].drop_nulls().unique().to_list()
    detail = detail.with_columns(pl.Series("error", [for_visitor(e, hosts) for e in detail["error"].to_list()],
                                           dtype=pl.String))
    # where a run lives, once the workspace holds any (the table must fit a 1400 px window)
    where = ({"store": Col("Store", None, "shipped: the results that come with the code; workspace: runs started "
                           "from this dashboard")} if (runs["store"] == "workspace").any() else {})
    # the run's own name (its status, progress and start have their columns here), an error column only when
    # a run has one
    listed = runs.join(detail.drop("host"), on="run_id", how="left")
    errors = {"error": Col("Error", width=60)} if listed["error"].drop_nulls().len() else {}
    show(listed.with_columns(
        to_minute("started_at"),
        to_minute("finished_at"),
        pl.format("{}/{}", pl.col("n_done").fill_null(0), pl.col("n_total").fill_null(0)).alias("progress")), {
        "base_label": Col("Run"), "kind": Col("Kind"), "status": Col("Status"),
        "progress": Col("Done", None, "cases (sequential: edits) done of the run's total"),
        "reference": Col("Ref.", None, "a reference run: finished, shipped, and the largest run of its kind and "
                         "label, what pages show by default"),
        **where, "started_at": Col("Started (UTC)"),
        "run_id": Col("Run id", help="what the CLI takes (--resume RUN)"), **errors})
    # the Error column is 60 px: the whole text of each below the table
    errors_in_full([(r, e) for r, e in zip(listed["run_id"].to_list(), listed["error"].to_list()) if e])

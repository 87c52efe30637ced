"""The sidebar's shared model filter and the run lists pages draw from it.

`run_table` is the one place that names a run and gives it its colour: every page and chart takes a run's
label and (colour, dash) from it, so a run looks the same everywhere. It also says which runs are the
*reference* runs a page shows by default: finished shipped runs, and of the runs with the same label, the one
that covered the most cases (a later 1-case run of the same editor never replaces the 240-case one). Other
runs (partial, failed, stale, superseded, or made from the dashboard into the workspace store) are offered
too, but only shown when chosen, and their label always says what they are.
"""

from __future__ import annotations

import json

import polars as pl
import streamlit as st

from dashboard.charts import EDITOR_FAMILIES, order_symbol, run_style
from dashboard.data import query
from dashboard.filters import current, shared_selectbox
from dashboard.tables import to_minute
from store.conventions import TRAITS_KEY
from store.derived import edits_facts, other_key_constraint, run_label


def results_choice() -> str | None:
    """Draw the sidebar's Results select when the repository holds a rebuild in progress beside the shipped
    store (dashboard.data.rebuild_path); app.py does, before it opens the store. Returns the choice."""
    from dashboard.data import RESULTS_KEY, rebuild_path

    if rebuild_path() is None:
        return None
    names = {"shipped": "Shipped store (complete; edit mechanics before the fixes)",
             "rebuild": "Rebuild in progress (fixed mechanics; finished units only)"}
    return shared_selectbox("Results", RESULTS_KEY, list(names), format_func=names.get, container=st.sidebar,
                            help="The shipped store is being rebuilt by plans/shipped.toml with the fixed edit "
                                 "mechanics and the studies' full design; the rebuild shows what is finished")


def model_filter() -> str | None:
    """Draw the sidebar's model select (app.py does, once per run): the model whose runs pages show."""
    runs = query("list_runs")
    models = sorted(runs["model"].drop_nulls().unique().to_list()) if not runs.is_empty() else []
    if not models:
        return None
    return shared_selectbox("Model", "model", models, container=st.sidebar,
                            help="Every page shows this model's runs; the choice is part of the page's link")


def model_runs(kind: str) -> pl.DataFrame:
    """The runs of a kind for the model chosen in the sidebar."""
    runs = query("list_runs", kind=kind)
    model = chosen_model()
    if model is None or runs.is_empty():
        return runs
    return runs.filter(pl.col("model") == model)


def chosen_model() -> str | None:
    """The model chosen in the sidebar (None before any choice: then pages show every model's runs)."""
    return current("model")


RUN_TABLE = {"run_id": pl.String, "kind": pl.String, "editor": pl.String, "model": pl.String, "status": pl.String,
             "n_done": pl.Int64, "n_total": pl.Int64, "started_at": pl.String, "base_label": pl.String,
             "label": pl.String, "reference": pl.Boolean, "store": pl.String, "colour": pl.String, "dash": pl.String,
             "symbol": pl.String,
             "key_mismatch": pl.Boolean, "rect_top": pl.Float64, "batch_size": pl.Int64, "order_seed": pl.Int64,
             "arm": pl.String, "arm_label": pl.String, "pre_rebuild": pl.Boolean, "edits_facts": pl.Boolean,
             "other_keys": pl.Boolean}


def arm_key(run: dict, hp: dict, cfg: dict, where: str) -> str:
    """Runs alike but for their edit order share this key (an "arm" of a replicated comparison): same kind, model,
    editor, hyperparameters (every field, so runs made before a change of the edit mechanics are another arm),
    layout (the run's config but its order seed and maximum edits) and store. A control's reference run is left
    out with the order: each order's control takes its norms from that order's run (plans/shipped.toml's
    `unit:sequential-ROME-o1` for order 1), so its controls were each an arm of one order, never averaged."""
    import hashlib

    # the editor's traits say nothing its hyperparameters do not (runs made before they were recorded lack them)
    layout = {k: v for k, v in cfg.items() if k not in ("order_seed", "max_edits", "spec_key", TRAITS_KEY)}
    hp = {k: v for k, v in hp.items() if k != "reference_run"}
    spec = [run.get("kind"), run.get("model"), run.get("editor"), hp, layout, where]
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:12]


def describe_runs(runs: pl.DataFrame) -> pl.DataFrame:
    """Label, reference flag and style of each run of `runs` (list_runs' columns, with dashboard.data's `store`
    column when a workspace store is shown), in display order: reference runs first (by editor as the colour families are listed, then label), then the others, newest first.

    The label is store.derived.run_label (editor, original keys, RECT share, batch size) plus the case order
    when it is not the default seed 0; a run that is not a reference also says its status, cases done and
    start time, so two runs never read alike. Only shipped runs are reference runs, one per kind and label: a
    run the store's plan made before one kept from before the rebuild (labelled "pre-rebuild"), then a finished
    one; a reference run that is not finished says its status and progress. A visitor's demo or launch
    (workspace store) is shown only when chosen."""
    if runs.is_empty():
        return pl.DataFrame(schema=RUN_TABLE)
    rows = []
    for r in runs.iter_rows(named=True):
        hp, cfg = json.loads(r["hparams"] or "null") or {}, json.loads(r["config"] or "null") or {}
        arm = run_label(r["editor"], hp, cfg)  # what its arm stands for, whatever the edit order
        group = arm  # what a reference run stands for: label and edit order
        if cfg.get("order_seed") not in (None, 0):
            group += f", order {cfg['order_seed']}"
        where = r.get("store") or "shipped"
        pre_rebuild = bool(r.get("pre_rebuild")) and where != "workspace"  # kept from before the store's rebuild
        suffix = (" · workspace" if where == "workspace" else "") + (" · pre-rebuild" if pre_rebuild else "")
        base = group + suffix
        colour, dash = run_style(r["editor"], hp, cfg)
        symbol = order_symbol(cfg)
        rows.append({"run_id": r["run_id"], "kind": r["kind"], "editor": r["editor"], "model": r["model"],
                     "status": r["status"], "n_done": r["n_done"], "n_total": r["n_total"],
                     "started_at": r["started_at"], "store": where, "base_label": base, "colour": colour, "dash": dash,
                     "symbol": symbol,
                     "key_mismatch": bool(hp.get("key_mismatch", False)),
                     "rect_top": float(hp.get("rect_top", 1.0) or 1.0), "batch_size": cfg.get("batch_size"),
                     "order_seed": cfg.get("order_seed"), "arm": arm_key(r, hp, cfg, where), "arm_label": arm + suffix,
                     "pre_rebuild": pre_rebuild, "edits_facts": edits_facts(r["editor"], cfg), "group": group,
                     "other_keys": other_key_constraint(r["editor"], hp) is not None})
    df = pl.DataFrame(rows, schema={k: v for k, v in RUN_TABLE.items() if k not in ("label", "reference")}
                      | {"group": pl.String})
    # one reference run per kind and label (editor, variant, order): a rebuilt run before one kept from before
    # the rebuild, whatever its progress (a partial run says so in its status); then a finished run, the most
    # done, the newest
    best = (df.filter((pl.col("store") != "workspace") & (pl.col("n_done").fill_null(0) > 0))
            .with_columns((pl.col("status") == "done").alias("_done"))
            .sort(["pre_rebuild", "_done", "n_done", "started_at", "run_id"],
                  descending=[False, True, True, True, True], nulls_last=True)
            .unique(["kind", "group"], keep="first")["run_id"].to_list())
    editor_rank = {e: i for i, e in enumerate(EDITOR_FAMILIES)}
    df = df.with_columns(pl.col("run_id").is_in(best).alias("reference"))
    df = df.drop("group").with_columns(
        pl.when(pl.col("reference") & (pl.col("status") == "done")).then(pl.col("base_label"))
        .when(pl.col("reference")).then(pl.format("{} [{}, {}/{} done]", "base_label", "status",
                                                  pl.col("n_done").fill_null(0), pl.col("n_total").fill_null(0)))
        .otherwise(pl.format("{} [{}, {}/{} {}, started {}]", "base_label", "status",
                             pl.col("n_done").fill_null(0), pl.col("n_total").fill_null(0),
                             pl.when(pl.col("kind") == "sequential").then(pl.lit("edits")).otherwise(pl.lit("cases")),
                             to_minute("started_at")))
        .alias("label"),
        pl.col("editor").replace_strict(editor_rank, default=len(editor_rank), return_dtype=pl.Int64).alias("_e"),
    )
    refs = df.filter(pl.col("reference")).sort(["_e", "base_label"])
    rest = df.filter(~pl.col("reference")).sort(["started_at", "run_id"], descending=True, nulls_last=True)
    return pl.concat([refs, rest]).select(list(RUN_TABLE))


def run_table(kind: str | None = None) -> pl.DataFrame:
    """describe_runs of the chosen model's runs of a kind (all kinds when None)."""
    runs = query("list_runs", kind=kind)
    model = chosen_model()
    if model is not None and not runs.is_empty():
        runs = runs.filter(pl.col("model") == model)
    return describe_runs(runs)


def labels_of(table: pl.DataFrame) -> dict[str, str]:
    """run_id -> label, in the table's display order."""
    return dict(zip(table["run_id"].to_list(), table["label"].to_list()))


def styles_of(table: pl.DataFrame) -> dict[str, tuple[str, str, str]]:
    """run_id -> (colour, dash, marker) for the chart builders: run_style's look and the edit order's marker
    (charts.order_symbol)."""
    return {r: (c, d, m) for r, c, d, m in zip(table["run_id"].to_list(), table["colour"].to_list(),
                                                table["dash"].to_list(), table["symbol"].to_list())}


def reference_ids(table: pl.DataFrame) -> list[str]:
    """The reference runs of a table, in display order: the pages' default (the Overview's study-B table too).
    Only the finished ones of the settings each editor ships with, as a page's help says ("finished reference
    runs by default"): a reference run still computing (the rebuild's, at 6 of 240 cases) or of a superseded
    setting (MEMIT with every key a least-squares row) is offered, labelled, but drawn only when chosen
    (`partial_references` names the unfinished ones under the chooser). Where none qualifies, the reference runs
    of the shipped settings, then all of them, so that a store still being built shows something."""
    refs = table.filter(pl.col("reference"))
    shipped = refs.filter(~pl.col("other_keys").fill_null(False))
    refs = refs if shipped.is_empty() else shipped
    done = refs.filter(pl.col("status") == "done")
    return (refs if done.is_empty() else done)["run_id"].to_list()


def partial_references(table: pl.DataFrame, default: list[str]) -> str | None:
    """A line naming the unfinished reference runs left out of `default`, or None."""
    left = table.filter(pl.col("reference") & (pl.col("status") != "done")
                        & ~pl.col("run_id").is_in(default))["label"].to_list()
    if not left:
        return None
    return (f"Not drawn unless chosen: {len(left)} reference run(s) still computing or stopped part-way "
            f"({'; '.join(left)}). Add them under Runs to see their partial figures.")


def headline_ids(table: pl.DataFrame, limit: int = 4) -> list[str]:
    """At most `limit` reference runs, one per editor (in the colour families' order): each editor's plainest
    run, ROME's own keys without RECT and one edit at a time (study B's setting) before its variants, and the
    key constraint the editor ships with before another (MEMIT "keys: all", finished in the rebuild before the
    shipped "plain" run was)."""
    refs = table.filter(pl.col("reference")).with_columns(
        (pl.col("key_mismatch").cast(pl.Int64) + (pl.col("rect_top") < 1.0).cast(pl.Int64)
         + pl.col("other_keys").fill_null(False).cast(pl.Int64)).alias("_v"),
        (pl.col("batch_size").fill_null(1) != 1).cast(pl.Int64).alias("_b"))
    picked = []
    for editor in dict.fromkeys(refs["editor"].to_list()):
        part = refs.filter(pl.col("editor").eq_missing(editor)).sort(["_v", "_b", "base_label"])
        picked.append(part["run_id"][0])
    return picked[:limit]


def arms_of(table: pl.DataFrame, chosen: list[str]) -> tuple[dict[str, tuple[str, ...]], dict[str, str],
                                                            dict[str, tuple[str, str]]]:
    """The arms of the chosen runs, for a mean over edit orders: (arm -> its runs in `table`, arm -> its name,
    arm -> its look). Each chosen run stands for its arm (`arm_key`: runs alike but for the order): the arm's
    finished runs and its chosen ones (a partial run is averaged in only when chosen: one stopped at 120 edits
    would end a mean over orders there); the first chosen run of an arm gives it its name (its label without
    the order) and its colour and dash."""
    runs, names, looks = {}, {}, {}
    styles = styles_of(table)
    for r in chosen:
        row = table.filter(pl.col("run_id") == r)
        if row.is_empty() or row["arm"][0] in runs:
            continue
        key = row["arm"][0]
        members = table.filter((pl.col("arm") == key) & ((pl.col("status") == "done") | pl.col("run_id").is_in(chosen)))
        runs[key] = tuple(members["run_id"].to_list())
        seeds = sorted(members["order_seed"].fill_null(0).to_list())
        base = row["arm_label"][0]
        names[key] = (f"{base}: mean of {len(seeds)} orders ({', '.join(map(str, seeds))})" if len(seeds) > 1
                      else f"{base} (one order: {seeds[0]})")
        looks[key] = styles[r][:2]  # a mean over orders is no one order: no order marker
    return runs, names, looks

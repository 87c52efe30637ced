"""What each edit did: the per-edit diagnostics of chosen runs (store table edit_diagnostics), shown the same way
on every page that has edits: a per-run summary with the outlier count, and each edit's size with outliers
ringed. Pages call `render`; the rule for an outlier is stated beside the chart (store.diagnostics.OUTLIER_Z)."""

from __future__ import annotations

import polars as pl
import streamlit as st

from dashboard import charts
from dashboard.data import query
from dashboard.tables import Col, show
from store.diagnostics import OUTLIER_Z

SUMMARY = {
    "label": Col("Run", width=300),
    "n": Col("Edits", "{:,.0f}"),
    "update_rel_median": Col("Size, median", "{:.4f}", help="||dW||/||W||: relative Frobenius change of the "
                             "edited matrix by one edit (largest over matrices), median over the run's edits"),
    "update_rel_p90": Col("90th pct", "{:.4f}", help="||dW||/||W||, 90th percentile over the run's edits"),
    "clamped_share": Col("Clamp bound", "{:.0%}", help="share of edits whose value change ended on the norm clamp"),
    "converged_share": Col("Converged", "{:.0%}", help="share whose target NLL fell below stop_nll before the "
                           "step cap"),
    "steps_median": Col("Median steps", "{:.0f}"),
    "delivered": Col("Delivered ≥ 0.8", help="share of edits whose weights carry at least 0.8 of the optimised "
                     "change to the plain prompt (compute.editors.diagnostics); for a multi-layer edit (MEMIT, "
                     "AlphaEdit) read layer by layer / at the last edited layer's output, where its target was set"),
    "outliers": Col("Outliers", "{:,.0f}"),
}


def _both_reads(layers: list, output: list, fmt: str) -> list:
    """One cell per row for a delivered value read layer by layer and (multi-layer edits) at the output:
    "0.97", "0.97 / 1.00" (as `fmt` formats them), None where there is no reading."""
    return [None if f is None else fmt.format(f) + ("" if o is None else " / " + fmt.format(o))
            for f, o in zip(layers, output)]


def delivered_text(summary: pl.DataFrame) -> pl.Series:
    """Each run's share of edits delivering >= 0.8 to the plain prompt as one cell: "97%", or "97% / 100%" where
    the run also read it at the output (multi-layer edits), "—" where it has neither."""
    outs = (summary["delivered_out_plain_ge_0.8"].to_list() if "delivered_out_plain_ge_0.8" in summary.columns
            else [None] * summary.height)
    cells = _both_reads(summary["delivered_plain_ge_0.8"].to_list(), outs, "{:.0%}")
    return pl.Series("delivered", [c or "—" for c in cells], dtype=pl.String)


def render(run_ids: list[str], labels: dict[str, str], styles: dict | None = None, x: str | None = None) -> None:
    """The diagnostics section for `run_ids` (x = 'edit_count' draws a sequential run's edits in order)."""
    summary = query("edit_diagnostics_summary", run_ids=tuple(run_ids))
    if summary.is_empty() or "n" not in summary.columns:
        st.info("These runs carry no per-edit diagnostics: they were made before the store recorded them "
                "(schema v7). Runs made now record every edit's size, clamp, steps and delivered fraction.")
        return
    summary = summary.with_columns(pl.col("run_id").replace_strict(labels, default=pl.col("run_id")).alias("label"),
                                   delivered_text(summary).alias("delivered"))
    show(summary, SUMMARY)
    edits = query("edit_diagnostics", run_ids=tuple(run_ids))
    st.plotly_chart(charts.edit_size_chart(edits, labels, x=x, styles=styles), width="stretch")
    st.caption(f"An edit is flagged as an outlier of its run when the log of its size lies more than {OUTLIER_Z:g} "
               "robust standard deviations (1.4826 × the median absolute deviation of the run's log sizes) from "
               "the run's median: the modified z-score cut of Iglewicz and Hoaglin, which a normal sample passes "
               "about once in 4,000 edits.")
    flagged = edits.filter(pl.col("outlier"))
    if not flagged.is_empty():
        flagged = flagged.with_columns(
            pl.col("run_id").replace_strict(labels, default=pl.col("run_id")).alias("label"),
            pl.Series("delivered_plain", _both_reads(flagged["delivered_plain"].to_list(),
                                                     flagged["delivered_out_plain"].to_list(), "{:.2f}"),
                      dtype=pl.String))
        show(flagged.sort("robust_z", descending=True),
             {"label": Col("Run"), "edit_count": Col("Edit", "{:,.0f}"), "case_id": Col("Case", width="medium"),
              "update_rel": Col("||dW||/||W||", "{:.4f}"), "robust_z": Col("Robust z", "{:+.1f}"),
              "steps": Col("Steps", "{:.0f}"), "clamped": Col("Clamped", "{:.0f}"),
              "delivered_plain": Col("Delivered (plain)", help="the share of the optimised change the plain prompt "
                                     "receives; for a multi-layer edit layer by layer / at the output")})
    st.download_button("Download per-edit diagnostics (CSV)", edits.write_csv(), file_name="edit-diagnostics.csv",
                       key=f"diag-csv-{x or 'strip'}")

"""Pure figure builders: (polars DataFrame, options) -> plotly Figure. No Streamlit, no caching."""

from __future__ import annotations

import math
import zlib

import plotly.graph_objects as go
import polars as pl

from store.derived import PHASE_CURVES, is_mass_editor

# --------------------------------------------------------------------------- one colour (and dash) per run

# Each editor owns a family of four shades of one hue, so a reader sees every ROME variant as a blue and never
# mistakes it for a MEMIT run; the variant (key variant, RECT share, batch size) picks the shade and the dash.
EDITOR_FAMILIES: dict[str, tuple[str, str, str, str]] = {
    "ROME": ("#08519c", "#4292c6", "#2171b5", "#6baed6"),
    "MEMIT": ("#d94801", "#a63603", "#fd8d3c", "#f16913"),
    "AlphaEdit": ("#ae017e", "#f768a1", "#dd3497", "#c51b8a"),
    "FT-L": ("#006d2c", "#41ab5d", "#238b45", "#74c476"),
    "IKE": ("#54278f", "#807dba", "#6a51a3", "#9e9ac8"),
    # the size-matched random control is drawn in greys: it is the reference the edits are read against
    "RandomRankOne": ("#525252", "#969696", "#737373", "#bdbdbd"),
}
# editors not named above take one of these families by a stable hash of their name
_SPARE_FAMILIES = (("#8c510a", "#bf812d", "#a6611a", "#dfc27d"), ("#01665e", "#35978f", "#018571", "#80cdc1"))
UNEDITED_STYLE = ("#000000", "solid")


def run_style(editor: str | None, hparams: dict | None = None, config: dict | None = None) -> tuple[str, str]:
    """(colour, dash) of a run, from the run alone: the editor picks the hue family, the variant the shade and
    the dash. Plain runs are solid in the family's first shade; ROME's original keys are dashed; a RECT share
    is dotted, a smaller share lighter; an instance-sequential mass editor (batch 1) or a batched
    single-fact editor is dash-dotted. Every chart on every page draws a run with this, so a run keeps its
    colour everywhere. No editor (the unedited model) is black."""
    if not editor:
        return UNEDITED_STYLE
    hp, cfg = hparams or {}, config or {}
    family = EDITOR_FAMILIES.get(editor) or _SPARE_FAMILIES[zlib.crc32(editor.encode()) % len(_SPARE_FAMILIES)]
    rect = float(hp.get("rect_top", 1.0) or 1.0)
    batch = cfg.get("batch_size")
    if hp.get("key_mismatch"):
        return family[1], "dash"
    if rect < 1.0:
        return family[3 if rect < 0.3 else 2 if rect < 0.5 else 1], "dot"
    mass = is_mass_editor(editor, cfg)
    if batch is not None and ((batch == 1) if mass else (batch != 1)):
        return family[2], "dashdot"
    if batch is not None and mass and batch != 10:
        # other batch sizes: a stable choice among the remaining shade/dash pairs
        return family[1 + zlib.crc32(str(batch).encode()) % 3], "longdash"
    return family[0], "solid"


# runs alike but for the edit order share colour and dash; the order picks the marker (order 0: a circle)
ORDER_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x", "star", "hexagon", "cross")


def order_symbol(config: dict | None) -> str:
    """The marker of a run's edit order (its config's `order_seed`; none: 0), the third channel after colour and
    dash, so that ROME's three orders, drawn side by side, are three lines a reader tells apart."""
    try:
        seed = int((config or {}).get("order_seed") or 0)
    except (TypeError, ValueError):
        seed = 0
    return ORDER_SYMBOLS[seed % len(ORDER_SYMBOLS)]


def _style(styles: dict | None, run: str, fallback: int) -> tuple[str, str]:
    """A run's (colour, dash) from `styles` (run_id -> run_style, optionally with its order's marker third),
    else a colour from its position."""
    if styles and run in styles:
        return tuple(styles[run][:2])
    return _PALETTE[fallback % len(_PALETTE)], "solid"


def _symbol(styles: dict | None, run: str) -> str:
    """A run's marker (order_symbol) from `styles`, else a circle."""
    look = (styles or {}).get(run)
    return look[2] if look is not None and len(look) > 2 else "circle"


def recall_by_quartile(df: pl.DataFrame) -> go.Figure:
    """Bars of pre-edit greedy recall per popularity quartile with 95% CI whiskers and n in the hover.

    Expects columns: quartile, recall, ci_low, ci_high, n (one row per quartile, optionally `relation`).
    """
    fig = go.Figure()
    groups = df.partition_by("relation", as_dict=True) if "relation" in df.columns else {("all",): df}
    for key, part in sorted(groups.items()):
        part = part.sort("quartile")
        fig.add_trace(
            go.Bar(
                name=str(key[0]),
                x=[f"Q{q}" for q in part["quartile"]],
                y=part["recall"].to_list(),
                error_y=dict(
                    type="data",
                    symmetric=False,
                    array=(part["ci_high"] - part["recall"]).to_list(),
                    arrayminus=(part["recall"] - part["ci_low"]).to_list(),
                ),
                customdata=part["n"].to_list(),
                hovertemplate="%{x}: recall %{y:.2f}<br>n = %{customdata}<extra>%{fullData.name}</extra>",
            )
        )
    fig.update_layout(
        barmode="group",
        xaxis_title="Subject word-frequency quartile (Q1 = rarest)",
        yaxis_title="Pre-edit greedy recall of the true object",
        yaxis_range=[0, 1],
        legend_title="Relation",
        margin=dict(t=30, b=40),
    )
    return fig


def _type_order(types, order) -> list[str]:
    known = [t for t in order if t in set(types)]
    return known + sorted(set(types) - set(known))


def rephrase_heatmap(df: pl.DataFrame, value: str, title: str, rephrase_order=(), diverging: bool = False,
                     labels: dict[str, str] | None = None, unmeasurable: dict[str, str] | None = None) -> go.Figure:
    """Run x rephrase type heat map of `value` (a mean, or `drop_from_plain`), n and CI in the hover (for the drop,
    its own paired CI and n where the frame has them: store.derived.robustness_summary's drop columns).

    Expects columns rephrase_type, n, mean, ci_low, ci_high, `value` and run_id (one row per run; `labels`
    names them, in that order) or, without run_id, editor. Types in `unmeasurable` (type -> reason) are
    drawn blank with "n/m" and the reason in the hover, and their column title ends in "*", so a drop there
    never reads as the edit's.
    """
    unmeasurable = unmeasurable or {}
    key = "run_id" if "run_id" in df.columns else "editor"
    types = _type_order(df["rephrase_type"].unique().to_list(), rephrase_order)
    present = set(df[key].unique().to_list())
    rows = [r for r in labels if r in present] if labels else sorted(present)
    names = [labels.get(r, r) for r in rows] if labels else rows
    cell = {(r[key], r["rephrase_type"]): r for r in df.iter_rows(named=True)}
    paired = value == "drop_from_plain" and "drop_ci_low" in df.columns
    shown = ("drop_n", value, "drop_ci_low", "drop_ci_high") if paired else ("n", "mean", "ci_low", "ci_high")
    z, text, custom = [], [], []
    for run in rows:
        zr, tr, cr = [], [], []
        for t in types:
            r = cell.get((run, t))
            v = None if r is None else r[value]
            if t in unmeasurable:
                zr.append(None)
                tr.append("n/m")
                cr.append([r["n"] if r else None, None, None, None, "unmeasurable: " + unmeasurable[t]])
                continue
            zr.append(v)
            tr.append("" if v is None else f"{v:+.2f}" if diverging else f"{v:.2f}")
            cr.append([r[c] for c in shown] + [""] if r else [None] * 4 + ["no measurement"])
        z.append(zr)
        text.append(tr)
        custom.append(cr)
    x = [t + ("*" if t in unmeasurable else "") for t in types]
    fig = go.Figure(
        go.Heatmap(
            z=z, x=x, y=names, text=text, texttemplate="%{text}", customdata=custom,
            colorscale="RdBu" if diverging else "Viridis", zmid=0 if diverging else None,
            zmin=None if diverging else 0, zmax=None if diverging else 1,
            colorbar_title=title, hoverongaps=True,
            hovertemplate="%{y} · %{x}<br>" + title + ": %{z:.3f}<br>" + ("paired on the same cases" if paired
                                                                         else "mean") + " %{customdata[1]:.3f} "
            "[95% CI %{customdata[2]:.3f}, %{customdata[3]:.3f}]<br>n = %{customdata[0]}<br>%{customdata[4]}"
            "<extra></extra>",
        )
    )
    fig.update_layout(xaxis_title="Rephrase type" + (" (* unmeasurable: the reasons are below)" if unmeasurable
                                                     else ""),
                      yaxis_title="Run", margin=dict(t=30, b=40), height=200 + 45 * len(rows))
    fig.update_xaxes(tickangle=-35, automargin=True, title_standoff=18)
    fig.update_yaxes(automargin=True, autorange="reversed")
    return fig


def _series_order(series, labels: dict | None) -> list:
    present = set(series)
    if labels:
        return [s for s in labels if s in present] + sorted(present - set(labels))
    return sorted(present)


def binned_curves(df: pl.DataFrame, feature_label: str, value_label: str, labels: dict[str, str] | None = None,
                  styles: dict | None = None) -> go.Figure:
    """Mean value per popularity bin, one line per series, 95% CI band whiskers, n and range in the hover.

    Expects columns series, bin, lo, hi, n, mean, ci_low, ci_high. `labels` names the series (a run id) and
    `styles` gives each its (colour, dash) (run_style).
    """
    fig = go.Figure()
    parts = df.partition_by("series", as_dict=True)
    for j, series in enumerate(_series_order([k[0] for k in parts], labels)):
        part = parts[(series,)].sort("bin")
        colour, dash = _style(styles, series, j)
        name = (labels or {}).get(series, str(series))
        fig.add_trace(go.Scatter(
            x=[f"B{b}" for b in part["bin"]], y=part["mean"].to_list(), mode="lines+markers", name=name,
            line=dict(color=colour, dash=dash), marker=dict(color=colour, symbol=_symbol(styles, series)),
            error_y=dict(type="data", symmetric=False, array=(part["ci_high"] - part["mean"]).to_list(),
                         arrayminus=(part["mean"] - part["ci_low"]).to_list()),
            customdata=list(zip(part["n"].to_list(), part["lo"].to_list(), part["hi"].to_list())),
            hovertemplate="%{x}: %{y:.2f}<br>n = %{customdata[0]}<br>" + feature_label
            + " %{customdata[1]:.3g} to %{customdata[2]:.3g}<extra>%{fullData.name}</extra>",
        ))
    fig.update_layout(xaxis_title=f"{feature_label} bin (equal-count, B1 = least popular)", yaxis_title=value_label,
                      yaxis_range=[0, 1.05], legend_title="Run", showlegend=True, margin=dict(t=30, b=40),
                      legend=dict(orientation="h", yanchor="top", y=-0.2, xanchor="left", x=0))
    return fig


ESTIMATE_SYMBOLS = {"pooled": "circle", "within relation": "diamond"}


def correlation_forest(df: pl.DataFrame, label_col: str, title: str, colours: dict[str, str] | None = None) -> go.Figure:
    """Spearman rho with its 95% CI as horizontal whiskers, one row per `label_col` value, n in the hover;
    `colours`: label -> the run's colour (run_style), so each row (point and whiskers) has the colour its run
    has on every page. With an `estimate` column ("pooled", "within relation"), a row is labelled
    "LABEL · ESTIMATE" and drawn with that estimate's marker (ESTIMATE_SYMBOLS), in its run's colour."""
    sort = [label_col, "estimate"] if "estimate" in df.columns else [label_col]
    df = df.sort(sort, descending=[True] + [False] * (len(sort) - 1))
    fig = go.Figure()
    for row in df.iter_rows(named=True):
        colour = (colours or {}).get(row[label_col], _colour(0))
        estimate = row.get("estimate")
        name = f"{row[label_col]} · {estimate}" if estimate else row[label_col]
        if row["rho"] is None or math.isnan(row["rho"]):  # undefined (a constant side, n < 3): said, not drawn
            fig.add_trace(go.Scatter(
                x=[0], y=[name], mode="text", text=["rho undefined"], textposition="middle right",
                textfont=dict(color="grey"), showlegend=False, customdata=[[row["n"]]],
                hovertemplate="%{y}: rho undefined (one side constant, or fewer than 3 cases)<br>n = "
                              "%{customdata[0]}<extra></extra>"))
            continue
        ci_nan = any(row[c] is None or math.isnan(row[c]) for c in ("ci_low", "ci_high"))
        fig.add_trace(go.Scatter(
            x=[row["rho"]], y=[name], mode="markers", showlegend=False,
            marker=dict(color=colour, size=9, symbol=ESTIMATE_SYMBOLS.get(estimate, "circle")),
            error_x=dict(type="data", symmetric=False, color=colour,
                         array=[None if ci_nan else row["ci_high"] - row["rho"]],
                         arrayminus=[None if ci_nan else row["rho"] - row["ci_low"]]),
            customdata=[[row["n"], row["ci_low"], row["ci_high"]]],
            hovertemplate=("%{y}: rho %{x:.3f}, CI undefined (too many bootstrap resamples with a constant side)"
                           if ci_nan else "%{y}: rho %{x:.3f} [%{customdata[1]:.3f}, %{customdata[2]:.3f}]")
                          + "<br>n = %{customdata[0]}<extra></extra>"))
    fig.add_vline(x=0, line_dash="dot", line_color="grey")
    ci = ("95% CI: bootstrap for the pooled rho, analytic within relation" if "estimate" in df.columns
          else "95% bootstrap CI")
    # two lines: on one, the title ran past the chart's right edge in a 1400 px window
    fig.update_layout(xaxis_title=f"Spearman rho, {title}<br>{ci}", yaxis_title=label_col.replace("_", " "),
                      xaxis_range=[-1, 1], height=180 + 22 * df.height, margin=dict(t=30, b=60))
    return fig


# --------------------------------------------------------------------------- sequential editing (study B)

_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")


BAND_ALPHA = 0.12  # a CI band's opacity where at most two runs draw one on a panel


def _colour(i: int) -> str:
    return _PALETTE[i % len(_PALETTE)]


def _rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _tick_text(t: float) -> str:
    if t >= 1e6:
        return f"{t / 1e6:g}M"
    if t >= 1e4:
        return f"{t / 1e3:g}k"
    return f"{t:g}"


def log_axis(values) -> dict:
    """A logarithmic axis whose ticks are written out in full: 1, 2, 5 a decade over up to 3 decades of the
    positive `values`, each decade over more. Plotly's own log ticks label 20 and 50 as small '2' and '5'
    beside '10' and '100', which read as 2 and 5."""
    vals = [float(v) for v in values if v is not None and v == v and 0 < float(v) < math.inf]
    if not vals:
        return {"type": "log"}
    lo, hi = math.floor(math.log10(min(vals))), math.ceil(math.log10(max(vals)))
    steps = (1, 2, 5) if hi - lo <= 3 else (1,)
    ticks = [m * 10.0 ** e for e in range(lo, hi + 1) for m in steps]
    return {"type": "log", "tickvals": ticks, "ticktext": [_tick_text(t) for t in ticks]}


def forgetting_curves(curves: pl.DataFrame, events: pl.DataFrame, series: list[str], labels: dict[str, str],
                      log_x: bool = False, styles: dict | None = None) -> go.Figure:
    """Small multiples, one per series, of run-level values against edit count, one line per run.

    `curves`: run_id, edit_count, series, value, n, ci_low, ci_high (store.derived.sequential_curves).
    `events`: run_id, kind, series, phase, edit_count, end_count (store.derived.sequential_events):
    catastrophic phases are shaded in the run's colour, disabling edits marked with a dotted line and
    collapse with a dashed one. `labels`: run_id -> the legend name, in legend order; `styles`: run_id ->
    (colour, dash) (run_style).
    """
    from plotly.subplots import make_subplots

    cols = 2 if len(series) > 1 else 1
    rows = max(1, -(-len(series) // cols))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=series, shared_xaxes=True,
                        vertical_spacing=0.12 if rows > 1 else 0.1, horizontal_spacing=0.08)
    run_ids = list(labels)
    in_legend: set[str] = set()  # a run's first drawn line carries its legend entry (a control has no ES line)
    for i, name in enumerate(series):
        row, col = i // cols + 1, i % cols + 1
        part = curves.filter(pl.col("series") == name)
        # bands of several runs overlap: each fainter, so that together they stay as light as two (a panel of
        # newest-edit ES, 10 of 10 edits at most checkpoints, has a Wilson band of [0.72, 1] for every run)
        banded = part.filter(pl.col("ci_low").is_not_null())["run_id"].n_unique() if part.height else 0
        alpha = BAND_ALPHA * min(1.0, 2 / banded) if banded else BAND_ALPHA
        for j, run in enumerate(run_ids):
            data = part.filter(pl.col("run_id") == run).sort("edit_count")
            if data.is_empty():
                continue
            colour, dash = _style(styles, run, j)
            has_ci = data["ci_low"].null_count() < data.height
            if has_ci:
                fig.add_trace(go.Scatter(
                    x=data["edit_count"].to_list() + data["edit_count"].reverse().to_list(),
                    y=data["ci_high"].to_list() + data["ci_low"].reverse().to_list(),
                    mode="lines", fill="toself", fillcolor=_rgba(colour, alpha), line=dict(width=0), hoverinfo="skip",
                    showlegend=False, legendgroup=run), row=row, col=col)
            fig.add_trace(go.Scatter(
                x=data["edit_count"].to_list(), y=data["value"].to_list(), mode="lines+markers",
                name=labels[run], legendgroup=run, showlegend=run not in in_legend,
                line=dict(color=colour, width=2, dash=dash),
                marker=dict(size=4 if _symbol(styles, run) == "circle" else 6, symbol=_symbol(styles, run)),
                customdata=list(zip(data["n"].to_list(), data["ci_low"].to_list(), data["ci_high"].to_list())),
                hovertemplate="%{x} edits: %{y:.3f}" + (" [95% CI %{customdata[1]:.3f}, %{customdata[2]:.3f}]"
                                                        if has_ci else "")
                + "<br>n = %{customdata[0]}<extra>" + labels[run] + "</extra>"), row=row, col=col)
            in_legend.add(run)
            ev = events.filter(pl.col("run_id") == run) if not events.is_empty() else events
            for e in ev.iter_rows(named=True) if not ev.is_empty() else []:
                # a phase is shaded on its own series' panel only (exact-match retention's on its panel, not on
                # the ES one: matching panel names by prefix shaded ES phases on both and exact-match ones on none)
                if e["kind"] == "phase" and e["phase"] == "catastrophic" and PHASE_CURVES.get(e["series"]) == name:
                    fig.add_vrect(x0=e["edit_count"], x1=e["end_count"], fillcolor=_rgba(colour, 0.10), line_width=0,
                                  row=row, col=col)
                elif e["kind"] == "disabling_edit":
                    fig.add_vline(x=e["edit_count"], line_dash="dot", line_color=colour, line_width=1, row=row, col=col)
                elif e["kind"] == "collapse":
                    fig.add_vline(x=e["edit_count"], line_dash="dash", line_color=colour, line_width=1.5,
                                  row=row, col=col)
    # every panel's axis (shared x axes do not share their type: set on the bottom row alone, the log toggle
    # left the upper panels linear), the title on the bottom row
    fig.update_xaxes(**(log_axis(curves["edit_count"].to_list()) if log_x else {"type": "linear"}))
    fig.update_xaxes(title_text="Edits made", row=rows)
    if rows > 1 and len(series) % cols:  # the last row's lone panel needs its own axis title
        fig.update_xaxes(title_text="Edits made", row=rows - 1, col=cols)
    fig.update_layout(height=260 * rows + 80, legend_title="Run", margin=dict(t=40, b=40),
                      hovermode="closest", legend=dict(orientation="h", yanchor="bottom", y=1.0 + 40 / (260 * rows),
                                                       xanchor="left", x=0))
    return fig


def weight_drift_chart(drift: pl.DataFrame, labels: dict[str, str], log_y: bool = True,
                       styles: dict | None = None) -> go.Figure:
    """||W - W0||_F, relative change and condition number per edited matrix against edit count, in the run's
    colour and dash (`styles`: run_id -> run_style); a run that edits several matrices (MEMIT's layers) draws
    one line per matrix, named in the hover. The legend has one entry per run, so it fits however many layers
    the runs edit. Expects run_id, edit_count, module, fro_delta, rel_change, cond_number."""
    from plotly.subplots import make_subplots

    titles = ["||W − W0||_F", "Relative change ||W − W0||_F / ||W0||_F", "Condition number of W"]
    fig = make_subplots(rows=1, cols=3, subplot_titles=titles, horizontal_spacing=0.07)
    for j, run in enumerate(labels):
        part = drift.filter(pl.col("run_id") == run)
        modules = sorted(part["module"].unique().to_list())
        colour, dash = _style(styles, run, j)
        name = labels[run] + (f" ({len(modules)} matrices)" if len(modules) > 1 else "")
        for k, module in enumerate(modules):
            data = part.filter(pl.col("module") == module).sort("edit_count")
            layer = "".join(ch for ch in module.split("layers.")[-1].split(".")[0] if ch.isdigit()) or module
            for c, column in enumerate(("fro_delta", "rel_change", "cond_number")):
                fig.add_trace(go.Scatter(
                    x=data["edit_count"].to_list(), y=data[column].to_list(), mode="lines",
                    name=name, legendgroup=run, showlegend=c == 0 and k == 0,
                    line=dict(color=colour, dash=dash, width=1.5),
                    hovertemplate="%{x} edits: %{y:.4g}<br>layer " + layer + " (" + module + ")<extra>"
                    + labels[run] + "</extra>"),
                    row=1, col=c + 1)
    fig.update_xaxes(title_text="Edits made")
    if log_y:
        for c, column in enumerate(("fro_delta", "rel_change", "cond_number")):
            fig.update_yaxes(**log_axis(drift[column].to_list()), row=1, col=c + 1)
    fig.update_layout(height=440, legend_title="Run", margin=dict(t=40, b=40),
                      legend=dict(orientation="h", yanchor="top", y=-0.22, xanchor="left", x=0))
    return fig


def forgetting_by_age_chart(df: pl.DataFrame) -> go.Figure:
    """Share of held edits forgotten against edit count, one line per age bin (edits made since), n and
    the Wilson CI in the hover. Expects edit_count, age_bin, forgotten, n, ci_low, ci_high."""
    fig = go.Figure()
    bins = list(dict.fromkeys(df["age_bin"].to_list()))
    for i, b in enumerate(bins):
        data = df.filter(pl.col("age_bin") == b).sort("edit_count")
        fig.add_trace(go.Scatter(
            x=data["edit_count"].to_list(), y=data["forgotten"].to_list(), mode="lines+markers", name=b,
            line=dict(color=_colour(i)),
            customdata=list(zip(data["n"].to_list(), data["ci_low"].to_list(), data["ci_high"].to_list())),
            hovertemplate="%{x} edits: %{y:.3f} [95% CI %{customdata[1]:.3f}, %{customdata[2]:.3f}]"
            "<br>n = %{customdata[0]}<extra>age " + b + "</extra>"))
    fig.update_layout(xaxis_title="Edits made", yaxis_title="Share of held edits now forgotten", yaxis_range=[0, 1],
                      legend_title="Edit's age (edits since)", margin=dict(t=30, b=40))
    return fig


def ability_small_multiples(df: pl.DataFrame, x: str, labels: dict[str, str], x_title: str,
                            baseline: dict | None = None, log_x: bool = False, styles: dict | None = None) -> go.Figure:
    """One panel per ability task: score against `x` (edit_count or batch_size), one line per run with its
    95% CI as whiskers and n in the hover; the task's chance level (dotted) and the unedited model's score
    (dashed, `baseline`: task -> score) as horizontal lines. Runs are drawn in their `styles` (run_id ->
    run_style), in `labels` order. Perplexity panels have a logarithmic y axis: a broken model's 10^6 would
    flatten every other line on a linear one.

    Expects run_id, task, category, score, n, ci_low, ci_high, chance, metric and the `x` column.
    """
    from plotly.subplots import make_subplots

    tasks = sorted(df["task"].unique().to_list())
    if not tasks:
        return go.Figure()
    meta = {r["task"]: r for r in df.unique("task").iter_rows(named=True)}
    cols = min(3, len(tasks))
    rows = -(-len(tasks) // cols)
    def off_scale(t):  # a chance level far outside the scores (perplexity: the vocabulary size) is named, not drawn
        c, top = meta[t].get("chance"), df.filter(pl.col("task") == t)["score"].max()
        return c is not None and top is not None and c > 5 * top

    titles = [(f"{t} ({meta[t]['category']})" if meta[t].get("category") else t)
              + (f"<br>chance {meta[t]['chance']:,.0f}" if off_scale(t) else "") for t in tasks]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, vertical_spacing=0.14, horizontal_spacing=0.07)
    run_ids = list(labels)
    for i, task in enumerate(tasks):
        row, col = i // cols + 1, i % cols + 1
        part = df.filter(pl.col("task") == task)
        for j, run in enumerate(run_ids):
            data = part.filter(pl.col("run_id") == run).sort(x)
            if data.is_empty():
                continue
            fig.add_trace(go.Scatter(
                x=data[x].to_list(), y=data["score"].to_list(), mode="lines+markers", name=labels[run],
                legendgroup=run, showlegend=i == 0,
                line=dict(color=_style(styles, run, j)[0], dash=_style(styles, run, j)[1]),
                marker=dict(symbol=_symbol(styles, run), size=6 if _symbol(styles, run) != "circle" else None),
                error_y=dict(type="data", symmetric=False, array=(data["ci_high"] - data["score"]).to_list(),
                             arrayminus=(data["score"] - data["ci_low"]).to_list(), thickness=1),
                customdata=list(zip(data["n"].to_list(), data["ci_low"].to_list(), data["ci_high"].to_list())),
                hovertemplate=f"{x_title} %{{x}}: %{{y:.3f}} [95% CI %{{customdata[1]:.3f}}, %{{customdata[2]:.3f}}]"
                "<br>n = %{customdata[0]}<extra>" + labels[run] + "</extra>"), row=row, col=col)
        # reference lines as plain traces (add_hline per panel is slow with many panels)
        xs = part[x].drop_nulls()
        span = [xs.min(), xs.max()] if xs.len() else [0, 1]
        chance = meta[task].get("chance")
        if chance is not None and not off_scale(task):
            fig.add_trace(go.Scatter(x=span, y=[chance, chance], mode="lines", name="chance", legendgroup="chance",
                                     showlegend=i == 0, line=dict(color="grey", dash="dot", width=1),
                                     hovertemplate="chance %{y:.3g}<extra></extra>"), row=row, col=col)
        if baseline and baseline.get(task) is not None:
            fig.add_trace(go.Scatter(x=span, y=[baseline[task]] * 2, mode="lines", name="unedited model",
                                     legendgroup="unedited", showlegend=i == 0,
                                     line=dict(color="black", dash="dash", width=1),
                                     hovertemplate="unedited %{y:.3g}<extra></extra>"), row=row, col=col)
        log_y = (meta[task].get("metric") or "") == "perplexity"
        fig.update_yaxes(title_text=(meta[task].get("metric") or "score") + (" (log)" if log_y else ""),
                         **(log_axis(part["score"].to_list() + part["ci_low"].to_list() + part["ci_high"].to_list())
                            if log_y else {"type": "linear"}), row=row, col=col, title_font_size=10)
    fig.update_xaxes(title_text=x_title, **(log_axis(df[x].to_list()) if log_x else {"type": "linear"}))
    fig.update_layout(height=250 * rows + 90, legend_title="Run", margin=dict(t=50, b=40),
                      legend=dict(orientation="h", yanchor="top", y=-60 / (250 * rows + 90), xanchor="left", x=0))
    return fig


def popularity_scatter(points: pl.DataFrame, feature: str, feature_label: str, value_label: str,
                       log_x: bool = False, labels: dict[str, str] | None = None,
                       styles: dict | None = None) -> go.Figure:
    """One dot per (series, case): the popularity feature against the case's value, one colour per series.
    Values that are shares of a few probes (0, 1/3, 1/2, ...) pile up, so dots are jittered vertically by at
    most ±0.04 (seeded; the hover shows the exact value), and n per series is in the legend and hover.

    Expects series, case_id, subject, relation, value and the `feature` column (store.derived.popularity_points);
    `labels` names the series (run ids) and `styles` colours them (run_style)."""
    import numpy as np

    fig = go.Figure()
    rng = np.random.default_rng(0)
    parts = points.partition_by("series", as_dict=True)
    for j, key in enumerate(_series_order([k[0] for k in parts], labels)):
        part = parts[(key,)].drop_nulls("value")
        series = (labels or {}).get(key, str(key))
        jitter = rng.uniform(-0.04, 0.04, part.height)
        n = part.height
        fig.add_trace(go.Scattergl(
            x=part[feature].to_list(), y=(part["value"].to_numpy() + jitter).tolist(), mode="markers",
            name=f"{series} (n = {n})", marker=dict(size=5, opacity=0.55, color=_style(styles, key, j)[0]),
            customdata=list(zip(part["subject"].to_list(), part["relation"].to_list(), part["value"].to_list())),
            hovertemplate="%{customdata[0]} (%{customdata[1]})<br>" + feature_label + " %{x:.3g}<br>"
            + value_label + " %{customdata[2]:.2f}<br>n = " + str(n) + "<extra>" + str(series) + "</extra>"))
    fig.update_layout(xaxis_title=feature_label, yaxis_title=f"{value_label} (jittered ±0.04)",
                      yaxis_range=[-0.1, 1.1], legend_title="Run", margin=dict(t=30, b=40),
                      legend=dict(orientation="h", yanchor="top", y=-0.2, xanchor="left", x=0))
    if log_x:
        fig.update_xaxes(**log_axis(points[feature].to_list()))
    return fig


def edit_size_chart(edits: pl.DataFrame, labels: dict[str, str], x: str | None = None,
                    styles: dict | None = None) -> go.Figure:
    """Each edit's relative update size ||dW||/||W|| (log axis), one trace per run, outliers (store.diagnostics
    .flag_outliers) drawn as red-ringed points. `edits`: run_id, edit_count, case_id, update_rel, outlier,
    robust_z (store.queries.edit_diagnostics). x = None: one strip of points per run (independent edits);
    x = 'edit_count': against the run's edit count (a sequential run, one point per edit)."""
    fig = go.Figure()
    for i, run in enumerate(_series_order(edits["run_id"].unique().to_list(), labels)):
        part = edits.filter(pl.col("run_id") == run).drop_nulls("update_rel")
        if part.is_empty():
            continue
        colour, _dash = _style(styles, run, i)
        name = (labels or {}).get(run, run)
        xs = part[x].to_list() if x else [name] * part.height
        hover = [f"{name}<br>case {c}<br>edit {n}<br>||dW||/||W|| {v:.4g} (robust z {z:+.1f})"
                 for c, n, v, z in zip(part["case_id"], part["edit_count"], part["update_rel"], part["robust_z"])]
        fig.add_trace(go.Scatter(x=xs, y=part["update_rel"].to_list(), mode="markers" if not x else "lines+markers",
                                 name=name, marker={"color": colour, "size": 5}, line={"color": colour, "width": 1},
                                 hovertext=hover, hoverinfo="text"))
        out = part.filter(pl.col("outlier"))
        if not out.is_empty():
            fig.add_trace(go.Scatter(
                x=out[x].to_list() if x else [name] * out.height, y=out["update_rel"].to_list(), mode="markers",
                name=f"{name}: outliers", showlegend=False,
                marker={"color": "rgba(0,0,0,0)", "size": 13, "line": {"color": "#d62728", "width": 2}},
                hovertext=[f"outlier: case {c}, edit {n}, robust z {z:+.1f}"
                           for c, n, z in zip(out["case_id"], out["edit_count"], out["robust_z"])], hoverinfo="text"))
    fig.update_yaxes(title="||dW||_F / ||W||_F of one edit", **log_axis(edits["update_rel"].to_list()))
    fig.update_xaxes(title="Edits made" if x == "edit_count" else None)
    fig.update_layout(height=360, margin={"l": 60, "r": 20, "t": 30, "b": 40}, legend={"orientation": "h"})
    return fig

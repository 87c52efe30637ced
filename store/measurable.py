"""Which rephrase types can be measured on a model: the unedited model must be able to answer them.

An edit is judged on a rephrase type by whether the edited model's free generation names the new object
(`acc`) or still names the true one (`rev`). Both only mean something if the probe form elicits the fact at
all: when the unedited model never names the true object on a type (on SmolLM2-135M the fill-in-the-blank
cloze forms), a post-edit acc of 0 is the probe failing, not the edit. Such a type is *unmeasurable* on
that model, and every view marks or hides it with the reason given here.

The evidence is the unedited model's rows: `rev` at edit count 0 on each rephrase type, which the
all-types knowledge run stores (a robustness run names it as `config.baseline_run`). `acc` at edit count 0
(the new object named before any edit, which the model was never told) is the rate at which an object
turns up in a generation by accident, reported beside it as `chance_share`.

A chat probe can fail the other way: where it ends with the case's own edit prompt inside the assistant's
turn (the stored probes of case sets built before the free-answer probes of issue 19), the model copies the
prompt and continues it, so a high acc there measures copying, not belief. `copy_tasks` finds such types in
a case set's probes, and `run_measurability` marks them unmeasurable too, with that reason, so every view
that greys unmeasurable types greys them.

Pure functions over frames (`measurability`, `measurable_types`, `unmeasurable_reasons`) and three readers
(`baseline_run`, `copy_tasks`, `run_measurability`) that take a connection, like store.queries. Imports
polars only.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Iterable

import polars as pl

from . import queries

# The share of cases on which the unedited model must name the true object on a rephrase type for that type
# to be measurable. Why 0.05: on the shipped store the unedited SmolLM2-135M names an object it was never told
# (the new object, `acc` at edit count 0) on at most 1.7% of the cases of any type (4 of 240), the rate at
# which an object appears by accident in 30 free tokens. A type must elicit the true object clearly above
# that floor, about three times it; 5% of 240 cases is 12 recalled facts. The plain prompt itself is
# recalled on only 24%, so a stricter bar (say 10%) would also drop pronoun types the model does answer
# (6-8%). With this bar cloze (1.7%), context_cloze (0%) and noisy_context_cloze (0%) are unmeasurable.
MEASURABLE_SHARE = 0.05

# chat-rendered rephrase types (compute.cases.CHAT_TYPES, whose probes end with an assistant turn) and doubt
CHAT_TYPES = frozenset({"dialogue", "dialogue_cloze", "dialogue_pronoun", "noisy_dialogue", "noisy_dialogue_cloze",
                        "noisy_dialogue_pronoun", "doubt"})

RECALL_METRIC = "rev"   # the generation names the true object (or an alias)
CHANCE_METRIC = "acc"   # the generation names the new object; before any edit, an accident

SCHEMA = {"rephrase_type": pl.String, "n": pl.Int64, "recalled": pl.Int64, "recall_share": pl.Float64,
          "chance_share": pl.Float64, "measurable": pl.Boolean, "reason": pl.String}


def _reason(n: int, recalled: int, share: float | None, threshold: float) -> str:
    if n == 0:
        return "not measured on the unedited model, so whether it can answer this type is unknown"
    got = f"the unedited model names the true object on {recalled} of {n} cases ({100 * share:.1f}%)"
    if share >= threshold:
        return f"{got}, at least the {100 * threshold:g}% needed"
    return f"{got}, under the {100 * threshold:g}% needed: a drop here is the probe failing, not the edit"


def measurability(rows: pl.DataFrame, threshold: float = MEASURABLE_SHARE,
                  rephrase_types: Iterable[str] | None = None) -> pl.DataFrame:
    """Per rephrase type, from unedited-model measurement rows (columns rephrase_type, metric, value; rows
    with an `edit_count` other than 0 are ignored): n (cases with a recall value), recalled, recall_share,
    chance_share (share naming the new object; null without acc rows), measurable (recall_share >= threshold)
    and a one-line reason. Types in `rephrase_types` without any row are listed as not measurable (n = 0).
    Sorted by rephrase type."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a share between 0 and 1; got {threshold!r}.")
    missing = {"rephrase_type", "metric", "value"} - set(rows.columns)
    if missing:
        raise ValueError(f"measurability needs columns rephrase_type, metric, value; missing {sorted(missing)}.")
    if "edit_count" in rows.columns:
        rows = rows.filter(pl.col("edit_count") == 0)
    rows = rows.filter(pl.col("value").is_not_null())

    def share(metric: str, name: str) -> pl.DataFrame:
        return (rows.filter(pl.col("metric") == metric).group_by("rephrase_type")
                .agg(pl.len().alias(f"n_{name}"), (pl.col("value") > 0.5).sum().alias(f"k_{name}")))

    recall, chance = share(RECALL_METRIC, "recall"), share(CHANCE_METRIC, "chance")
    types = sorted(set(recall["rephrase_type"].to_list()) | set(rephrase_types or ()))
    out = []
    for t in types:
        r = recall.filter(pl.col("rephrase_type") == t)
        c = chance.filter(pl.col("rephrase_type") == t)
        n = int(r["n_recall"][0]) if r.height else 0
        k = int(r["k_recall"][0]) if r.height else 0
        s = k / n if n else None
        out.append({"rephrase_type": t, "n": n, "recalled": k, "recall_share": s,
                    "chance_share": int(c["k_chance"][0]) / int(c["n_chance"][0]) if c.height else None,
                    "measurable": bool(n and s >= threshold), "reason": _reason(n, k, s, threshold)})
    return pl.DataFrame(out, schema=SCHEMA)


def measurable_types(table: pl.DataFrame) -> list[str]:
    """The measurable rephrase types of a `measurability` table, sorted."""
    return sorted(table.filter(pl.col("measurable"))["rephrase_type"].to_list())


def unmeasurable_reasons(table: pl.DataFrame) -> dict[str, str]:
    """rephrase type -> reason, for the types a `measurability` table marks unmeasurable."""
    bad = table.filter(~pl.col("measurable"))
    return dict(zip(bad["rephrase_type"].to_list(), bad["reason"].to_list()))


def with_measurability(df: pl.DataFrame, unmeasurable: dict[str, str], column: str = "rephrase_type") -> pl.DataFrame:
    """`df` (one row per rephrase type, or with a `column` naming it) with `measurable` (bool) and
    `unmeasurable_reason` ('' where measurable), for a CSV that a reader opens without the page's grey: a type
    the unedited model cannot answer reads as a real 0.00 drop otherwise (`unmeasurable`: type -> reason,
    unmeasurable_reasons)."""
    bad = pl.col(column).is_in(list(unmeasurable))
    return df.with_columns(
        (~bad).alias("measurable"),
        pl.col(column).replace_strict(unmeasurable, default="", return_dtype=pl.String).alias("unmeasurable_reason"))


def baseline_run(conn: sqlite3.Connection, run_id: str | None = None, case_set: str | None = None) -> str | None:
    """The run whose edit-count-0 rows say what the unedited model can answer.

    A knowledge run is its own baseline; a run naming `config.baseline_run` (robustness runs) uses that.
    Otherwise (no run, or a demo or other run): the knowledge run, of `case_set` and of the run's model when
    known, that measured recall on the most rephrase types, then on the most cases (a 2-case run launched
    from the dashboard must not judge what the model can answer over a 240-case baseline), finished first,
    then newest. None if none."""
    model = None
    if run_id is not None:
        row = conn.execute("SELECT kind, model, config FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise ValueError(f"no run {run_id!r} in the store; pick one of the listed runs.")
        kind, model, config = row
        if kind == "knowledge":
            return run_id
        named = json.loads(config or "{}").get("baseline_run")
        if named:
            return named
    found = conn.execute(
        "SELECT r.run_id FROM runs AS r JOIN measurements AS m ON m.run_id = r.run_id "
        "WHERE r.kind = 'knowledge' AND m.edit_count = 0 AND m.metric = ? AND (? IS NULL OR r.model = ?) "
        "AND (? IS NULL OR json_extract(r.config, '$.case_set') = ?) "
        "GROUP BY r.run_id ORDER BY count(DISTINCT m.rephrase_type) DESC, count(DISTINCT m.case_id) DESC, "
        "r.status = 'done' DESC, "
        "r.started_at DESC, r.run_id DESC LIMIT 1",
        (RECALL_METRIC, model, model, case_set, case_set),
    ).fetchone()
    return None if found is None else found[0]


def copy_tasks(conn: sqlite3.Connection, case_set: str | None) -> dict[str, tuple[int, int]]:
    """rephrase type -> (cases whose probe of that type ends with the case's own plain prompt, cases with such a
    probe), for the chat types (and doubt) of `case_set` where any does: a chat probe that ends with the edit
    prompt puts it in the assistant's turn, so the model copies instead of answering. Empty for a case set
    built with the free-answer probes, or for none."""
    if case_set is None:
        return {}
    probes = queries.probes_of_set(conn, case_set)
    if probes.is_empty():
        return {}
    plain: dict[str, set[str]] = {}
    for r in probes.filter(pl.col("rephrase_type") == "plain").iter_rows(named=True):
        plain.setdefault(r["case_id"], set()).add(r["text"].strip())
    forced: dict[str, set[str]] = {}
    cases: dict[str, set[str]] = {}
    for r in probes.filter(pl.col("rephrase_type").is_in(list(CHAT_TYPES))).iter_rows(named=True):
        cases.setdefault(r["rephrase_type"], set()).add(r["case_id"])
        if any(p and r["text"].rstrip().endswith(p) for p in plain.get(r["case_id"], ())):
            forced.setdefault(r["rephrase_type"], set()).add(r["case_id"])
    return {t: (len(ids), len(cases[t])) for t, ids in sorted(forced.items())}


def copy_task_reason(forced: int, total: int) -> str:
    return (f"a copy task: on {forced} of {total} cases the probe ends with the edit prompt inside the assistant's "
            "turn, so the model copies it instead of answering (a case set built before the free-answer probes)")


def run_measurability(conn: sqlite3.Connection, run_id: str | None = None, case_set: str | None = None,
                      threshold: float = MEASURABLE_SHARE,
                      rephrase_types: Iterable[str] | None = None) -> pl.DataFrame:
    """`measurability` of the baseline of `run_id` (see `baseline_run`), plus a `baseline_run` column. Where a
    case set is judged (`case_set`, else the case set `run_id` itself ran on), its copy tasks (`copy_tasks`)
    are marked unmeasurable with that reason, and `copy_task`: whether the model can answer a form is the
    model's, whether a probe lets it answer is the probes' (a demo builds free-answer probes whatever the shipped
    set holds).
    Empty (with the same columns) when the store has no unedited-model rows to judge by."""
    base = baseline_run(conn, run_id=run_id, case_set=case_set)
    rows = (queries.measurements(conn, run_ids=base, metrics=[RECALL_METRIC, CHANCE_METRIC], edit_count=0)
            if base is not None else pl.DataFrame(schema={"rephrase_type": pl.String, "metric": pl.String,
                                                          "value": pl.Float64}))
    if base is None:
        rephrase_types = ()
    table = measurability(rows, threshold, rephrase_types)
    judged = case_set
    if judged is None and run_id is not None:
        row = conn.execute("SELECT config FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        judged = json.loads((row[0] if row else None) or "{}").get("case_set")
    copies = copy_tasks(conn, judged) if base is not None else {}
    table = table.with_columns(pl.col("rephrase_type").is_in(list(copies)).alias("copy_task"))
    if copies:
        table = table.with_columns(
            (pl.col("measurable") & ~pl.col("copy_task")).alias("measurable"),
            pl.col("rephrase_type").replace_strict(
                {t: copy_task_reason(*c) for t, c in copies.items()}, default=pl.col("reason"),
                return_dtype=pl.String).alias("reason"))
    return table.with_columns(pl.lit(base, dtype=pl.String).alias("baseline_run"))


def hardest_measurable(summary: pl.DataFrame, measurable: Iterable[str]) -> pl.DataFrame:
    """Per run of a robustness summary (store.derived.robustness_summary of one metric, no split): the mean
    on the plain prompt and on the hardest measurable rephrase type (the lowest mean among `measurable`
    types other than plain), each with its 95% CI, the drop between them and n on the plain prompt. A run
    without a plain row or without any measurable type measured is left out."""
    schema = {"run_id": pl.String, "plain": pl.Float64, "plain_ci_low": pl.Float64, "plain_ci_high": pl.Float64,
              "hardest_type": pl.String, "hardest": pl.Float64, "hardest_ci_low": pl.Float64,
              "hardest_ci_high": pl.Float64, "drop": pl.Float64, "n": pl.Int64}
    keep = set(measurable) - {"plain"}
    rows = []
    for run_id in summary["run_id"].unique(maintain_order=True).to_list():
        part = summary.filter(pl.col("run_id") == run_id)
        plain = part.filter(pl.col("rephrase_type") == "plain")
        rest = part.filter(pl.col("rephrase_type").is_in(list(keep))).drop_nulls("mean").sort("mean", "rephrase_type")
        if plain.is_empty() or rest.is_empty():
            continue
        p, h = plain.row(0, named=True), rest.row(0, named=True)
        rows.append({"run_id": run_id, "plain": p["mean"], "plain_ci_low": p["ci_low"], "plain_ci_high": p["ci_high"],
                     "hardest_type": h["rephrase_type"], "hardest": h["mean"], "hardest_ci_low": h["ci_low"],
                     "hardest_ci_high": h["ci_high"], "drop": h["mean"] - p["mean"], "n": p["n"]})
    return pl.DataFrame(rows, schema=schema)

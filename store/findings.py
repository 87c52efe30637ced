"""The three studies' headline claims set beside what the store measures: one `Finding` per claim of
/work/shared/design.md section 10 (A1-A7, B1-B4, C1-C4); A8, the control that sets study A's drops against what
each rephrasing does to the unedited model's own knowledge; B5 and C5, the control that reads study B's
forgetting and study C's ability loss as the edits' doing (edits against random updates of their size), and B6,
AlphaEdit's claim against MEMIT on the replicated batch-10 runs, each with the paper's figure, EditScope's figure
(n and 95% CI), a verdict, the rule that gave it and the dashboard view that shows the evidence.

Every number comes from the store through store.derived, store.measurable, store.stats and store.queries; the
papers' figures are the only constants here. The Findings page and the README's "What the shipped store
shows" block both come from `findings`, so they cannot disagree (a test compares the README with
`python -m store.findings --store store/results.sqlite --markdown`).

Verdicts:
- reproduced / refuted: the claim's direction, decided by the rule stated with it;
- not comparable: the paper's figure is an absolute level that a 135M model (or our protocol) cannot be held
  to; the direction is still compared (`direction`: agrees, disagrees or undecided);
- undecided: measured, and the data decide neither way at their n, or the edit orders disagree; `reason` says
  where (a larger case set or more orders would decide, not finishing the plan);
- not measured yet: the store lacks what the claim needs, or a run it needs is still computing; `reason` says
  which, and what run would measure it.
"""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import dataclass, field, replace
from urllib.parse import urlencode

import polars as pl

from . import derived, measurable, queries
from .metrics import wilson_ci
from .stats import difference_ci

REPRODUCED, REFUTED, NOT_COMPARABLE, NOT_MEASURED = "reproduced", "refuted", "not comparable", "not measured yet"
# measured, and the data decide neither way at this n (or the edit orders disagree): more compute will not settle
# it by finishing the plan, only a larger case set or more orders; "not measured yet" waits for what is missing
UNSETTLED = "undecided"
VERDICTS = (REPRODUCED, REFUTED, NOT_COMPARABLE, UNSETTLED, NOT_MEASURED)
AGREES, DISAGREES, UNDECIDED = "agrees", "disagrees", "undecided"

MIN_ORDERS = 3  # edit orders per arm before an order-sensitive comparison (when a model collapses) is judged
# how every order-by-order comparison (_order_verdict) treats orders still computing and orders that disagree
PENDING_RULE = ("an order counts once both its runs are finished (a run still computing is shown as far as it got), "
                "and the claim is undecided as soon as a finished order shows neither or two finished orders disagree")
PAPER_DROP = 10.0  # an editor is held to a rephrase-drop claim where the paper's own drop is at least this (points)
RETAINS = 0.94  # C3: RECT keeps at least this share of plain ROME's reliability and generalisation
STUDY_C_TASKS = {"sentiment": "sentiment", "entity_typing": "NER (entity typing)", "closed_book_qa": "open QA"}

# Study A (Ma et al., CounterFact, Llama-7B): acc (%) per rephrase type and editor, and doubt's rev
PAPER_A = {
    "plain": {"ROME": 99.9, "MEMIT": 99.9, "IKE": 99.7},
    "paraphrase": {"ROME": 74.7, "MEMIT": 78.2, "IKE": 98.0},
    "context_pronoun": {"ROME": 21.3, "MEMIT": 39.6, "IKE": 83.5},
    "dialogue": {"ROME": 56.7, "MEMIT": 81.6, "IKE": 93.6},
    "doubt": {"ROME": 16.9, "MEMIT": 24.2, "IKE": 1.3},
}
PAPER_DOUBT_REV = {"ROME": 40.7, "MEMIT": 33.9, "IKE": 49.3}
EDITORS_A = ("ROME", "MEMIT", "IKE")


@dataclass(frozen=True)
class Finding:
    """One headline claim beside the store's measurement. `ours` states EditScope's figure with its n and 95%
    CI; `value`, `n`, `ci_low`, `ci_high` repeat its headline number where it has one. `page` and `query`
    name the dashboard view with the evidence (`url`); `evidence` names the runs behind the figure that the
    query does not (a page that picks its run itself, as Popularity does its knowledge run)."""

    claim: str
    study: str
    statement: str
    paper: str
    ours: str
    verdict: str
    rule: str
    reason: str = ""
    direction: str = ""
    value: float | None = None
    n: int | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    page: str = ""
    query: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    evidence: tuple[str, ...] = field(default_factory=tuple)

    @property
    def runs(self) -> list[str]:
        """Every run behind the figure: the query's `runs` and `evidence`, in order, once each."""
        named = [r for k, v in self.query if k == "runs" for r in v.split(",") if r]
        return list(dict.fromkeys([*named, *self.evidence]))

    @property
    def url(self) -> str:
        """The evidence view as a relative dashboard link ("/robustness?runs=...")."""
        return f"/{self.page}" + (f"?{urlencode(self.query)}" if self.query else "")


# --------------------------------------------------------------------------- small helpers


def _zero(x: float) -> float:
    """0 for a float that is zero but for rounding (a bootstrap bound of a paired difference came out as -5e-18,
    which read "-0.00")."""
    from .conventions import ZERO

    return 0.0 if x is not None and abs(x) < ZERO else x


def _ci(v: float, lo: float | None, hi: float | None, n: int | None = None, digits: int = 2) -> str:
    """"0.86 [0.81, 0.90], n = 240" (the CI left out when not defined)."""
    v, lo, hi = _zero(v), _zero(lo), _zero(hi)
    text = f"{v:.{digits}f}"
    if lo is not None and hi is not None and lo == lo and hi == hi:
        text += f" [{lo:.{digits}f}, {hi:.{digits}f}]"
    return text + (f", n = {n}" if n is not None else "")


def _estimate(row: dict) -> float:
    """A row's point estimate: `value` (a series' point), `mean` (a summary) or `score` (an ability task)."""
    return next(row[k] for k in ("value", "mean", "score") if row.get(k) is not None)


def _difference(a: dict, b: dict) -> tuple[float, float]:
    """The 95% CI of a - b from their own CIs (store.stats.difference_ci: Newcombe's interval for proportions)."""
    return difference_ci(_estimate(a), a["ci_low"], a["ci_high"], _estimate(b), b["ci_low"], b["ci_high"])


# how a finding reads "a is below b" (DIFFERENCE_RULE is the phrase its rule text uses)
DIFFERENCE_RULE = ("the 95% CI of the difference (Newcombe's interval from the two Wilson intervals, "
                   "store.stats.difference_ci) lies wholly below 0; it takes the two as independent, which errs "
                   "towards no difference where they score the same facts or items")


def _below(a: dict, b: dict) -> bool:
    """a is below b: the 95% CI of a - b lies wholly below 0 (_difference)."""
    return _difference(a, b)[1] < 0


def _worse(row: dict, base: dict) -> bool:
    """An ability score is worse than the unedited one: the 95% CI of their difference lies wholly on the worse
    side of 0 (direction from the task: below for accuracy, above for perplexity)."""
    lo, hi = _difference(row, base)
    return lo > 0 if row.get("higher_is_better") == 0 else hi < 0


def _best(rows: list[dict]) -> dict:
    """The run to show of several alike: one made by the store's plan before one kept from before its rebuild
    (store.queries.list_runs' pre_rebuild), then finished first, then the most done, then the newest."""
    return max(rows, key=lambda r: (not r.get("pre_rebuild"), r["status"] == "done", r["n_done"] or 0,
                                    r["started_at"] or ""))


def _robustness_runs(conn: sqlite3.Connection) -> dict[str, dict]:
    """editor -> its reference robustness run (default hyperparameters: no original keys, no RECT, the key
    constraint the editor ships with, derived.SHIPPED_KEY_CONSTRAINT; runs made before the field existed count
    as default). A MEMIT run of 95 cases with every key a least-squares row ("all", shipped before 2026-12-06)
    stood for MEMIT in the rebuild's snapshot while the plan's own ("plain") run had not started."""
    by_editor: dict[str, list[dict]] = {}
    for r in queries.list_runs(conn, kind="robustness").iter_rows(named=True):
        hp = json.loads(r["hparams"] or "null") or {}
        if (hp.get("key_mismatch") or hp.get("rect_top", 1.0) < 1.0 or derived.other_key_constraint(r["editor"], hp)
                or not r["n_done"]):
            continue
        by_editor.setdefault(r["editor"], []).append(r)
    return {e: _best(rows) for e, rows in by_editor.items()}


def _other_key_robustness(conn: sqlite3.Connection) -> dict[str, set[str]]:
    """editor -> the key constraints of its robustness runs that are not the one it ships with (runs
    _robustness_runs leaves out as variants), so that 'no robustness run of MEMIT' can say one with another
    key constraint stands in the store."""
    out: dict[str, set[str]] = {}
    for r in queries.list_runs(conn, kind="robustness").iter_rows(named=True):
        other = derived.other_key_constraint(r["editor"], json.loads(r["hparams"] or "null") or {})
        if other and r["n_done"]:
            out.setdefault(r["editor"], set()).add(other)
    return out


def _no_run_of(conn: sqlite3.Connection, editors: list[str]) -> str:
    """'no robustness run of MEMIT, IKE', naming a variant left out: '(the store's MEMIT run has keys: all;
    MEMIT ships with plain)'."""
    others = _other_key_robustness(conn)
    notes = [f"the store's {e} run{'s' * (len(others[e]) > 1)} ha{'ve' if len(others[e]) > 1 else 's'} keys: "
             f"{', '.join(sorted(others[e]))}, a variant; {e} ships with {derived.SHIPPED_KEY_CONSTRAINT[e]}"
             for e in editors if e in others]
    return "no robustness run of " + ", ".join(editors) + (f" ({'; '.join(notes)})" if notes else "")


def _arms(conn: sqlite3.Connection, kind: str = "sequential") -> dict[str, dict[int, dict]]:
    """Run label (store.derived.run_label) -> edit order seed -> the run of that arm on that order."""
    labels = dict(zip(*derived.run_labels(conn, kind).select("run_id", "label").to_dict(as_series=False).values()))
    out: dict[str, dict[int, list[dict]]] = {}
    for r in queries.list_runs(conn, kind=kind).iter_rows(named=True):
        if not r["n_done"]:
            continue
        order = int(json.loads(r["config"] or "{}").get("order_seed", 0))
        out.setdefault(labels[r["run_id"]], {}).setdefault(order, []).append(r)
    return {label: {o: _best(rows) for o, rows in orders.items()} for label, orders in out.items()}


def _shared(arms: dict, *labels: str) -> list[int]:
    """Edit orders on which every one of `labels` has a run."""
    orders = [set(arms.get(label, {})) for label in labels]
    return sorted(set.intersection(*orders)) if orders else []


def _agreement(signs: list[int]) -> int | None:
    """What a comparison made on each edit order says (sign +1: as the paper says on that order, -1: against it,
    0: neither): None with fewer than MIN_ORDERS orders, +1 when every order agrees with the paper, -1 when every
    order goes against it, else 0."""
    if len(signs) < MIN_ORDERS:
        return None
    return 1 if all(s == 1 for s in signs) else -1 if all(s == -1 for s in signs) else 0


def _order_verdict(common: dict, ours: str, signs: list[int | None], orders: list[int], query, *, few: str,
                   neither: str, going: dict[str, dict]) -> Finding:
    """The verdict of a comparison made on each shared edit order: `signs[i]` says what order `orders[i]` shows
    (+1 as the paper says, -1 against it, 0 neither: `neither` says what that means here, e.g. "the CIs overlap"),
    or None while a run of that order is still computing (its figure is as far as it got, so it decides nothing
    yet; `going`, "label order o" -> run, names those runs). Undecided as soon as the finished orders disagree or
    one shows neither; otherwise not measured with fewer than MIN_ORDERS orders (`few` says why) or while an order
    waits for its runs; reproduced or refuted when every order says so."""
    decided = [s for s in signs if s is not None]
    named = {sign: [o for o, s in zip(orders, signs) if s == sign] for sign in (1, -1, 0)}
    verdict, reason = NOT_MEASURED, ""
    if named[1] and named[-1]:
        verdict, reason = UNSETTLED, (f"Measured, but undecided: the orders disagree ({_orders(named[1])} as the "
                                      f"claim says, {_orders(named[-1])} against it).")
    elif named[0]:
        verdict, reason = UNSETTLED, f"Measured, but undecided: {neither} on {_orders(named[0])}."
    elif len(signs) < MIN_ORDERS:
        reason = few
    elif len(decided) < len(signs):
        waiting = [o for o, s in zip(orders, signs) if s is None]
        runs = {k: r for k, r in going.items() if any(k.endswith(f" order {o}") for o in waiting)}
        one = len(decided) == 1
        said = ("agrees with the claim" if one else "agree with the claim") if named[1] else \
            ("goes against it" if one else "go against it")
        reason = (f"{_orders(named[1] or named[-1]).capitalize()} {said}; {_orders(waiting)} not yet: "
                  if decided else "") + _not_yet(runs or going)
    else:
        verdict = REPRODUCED if named[1] else REFUTED
    return Finding(**common, ours=ours, verdict=verdict, query=query, n=len(decided), reason=reason)


def _orders(orders: list[int]) -> str:
    """'order 2', 'orders 0 and 1', 'orders 0, 1 and 2'."""
    if len(orders) == 1:
        return f"order {orders[0]}"
    return "orders " + ", ".join(str(o) for o in orders[:-1]) + f" and {orders[-1]}"


def _few(why: str, orders: list[int], run: str, going: dict[str, dict]) -> str:
    """Why a comparison waits for more edit orders: `why` (what varies with the order), the orders the store has
    and the `--order-seed`s still to run (`run`: what to run on them), then the runs still computing."""
    missing = [o for o in range(max(orders, default=-1) + MIN_ORDERS + 1) if o not in orders][:MIN_ORDERS - len(orders)]
    seeds = " and ".join(f"`--order-seed {o}`" for o in missing)
    going = {k: r for k, r in going.items() if r.get("status") != "done"}
    return (f"{why}, and the store has {len(orders)} shared order{'s' * (len(orders) != 1)} "
            f"({', '.join(str(o) for o in orders)}): run {run} on {seeds}" + (f"; {_not_yet(going)}" if going else "."))


def _finished(*runs: dict) -> bool:
    return all(r.get("status") == "done" for r in runs)


def _runs_query(run_ids, key: str = "runs", **extra) -> tuple[tuple[str, str], ...]:
    return tuple(extra.items()) + ((key, ",".join(run_ids)),)


# --------------------------------------------------------------------------- study A


def _paper_a(rtype: str) -> str:
    return ", ".join(f"{e} {PAPER_A['plain'][e]:g} → {PAPER_A[rtype][e]:g}" for e in EDITORS_A) + " (acc %, plain → " \
        + rtype + ", Llama-7B)"


def _a1(conn, refs, summary) -> Finding:
    common = dict(claim="A1", study="A", statement="An edit holds on the plain prompt (acc ≈ 100%).",
                  paper=", ".join(f"{e} {PAPER_A['plain'][e]:g}" for e in EDITORS_A) + " (acc %, Llama-7B)",
                  rule="The paper's level (≈100% on a 7B model) is not asked of a 135M model, and the direction "
                       "(most edits hold) agrees when every editor's plain-prompt acc has its 95% CI above 0.5, "
                       f"disagrees when one lies below 0.5; {PARTIAL_RULE}.", page="robustness")
    have = [e for e in EDITORS_A if e in refs]
    if not have:
        return Finding(**common, ours="no robustness run", verdict=NOT_MEASURED,
                       reason="Run `python -m compute run robustness --editor ROME` (and MEMIT, IKE).")
    rows = {e: _row(summary, refs[e]["run_id"], "plain", "acc") for e in have}
    rows = {e: r for e, r in rows.items() if r}
    if not rows:
        return Finding(**common, ours="no plain-prompt acc stored", verdict=NOT_MEASURED,
                       reason="The robustness runs hold no plain-prompt acc: rerun them.")
    lows = [r["ci_low"] > 0.5 for r in rows.values()]
    highs = [r["ci_high"] < 0.5 for r in rows.values()]
    waits = _waits(refs, rows, conn)
    direction = UNDECIDED if waits else AGREES if all(lows) else DISAGREES if any(highs) else UNDECIDED
    first = next(iter(rows.values()))
    return Finding(**common, ours="; ".join(f"{e} {_ci(r['mean'], r['ci_low'], r['ci_high'])}" for e, r in rows.items())
                   + f" (acc, {_sizes(rows)}{_partial(refs, rows, conn)})", verdict=NOT_COMPARABLE, direction=direction,
                   reason="SmolLM2-135M vs Llama-7B: how often an edit takes is a level that depends on the model."
                          + (f" {waits}" if waits else ""),
                   value=first["mean"], n=first["n"], ci_low=first["ci_low"], ci_high=first["ci_high"],
                   query=_runs_query([refs[e]["run_id"] for e in rows], metric="acc"))


def _sizes(rows: dict[str, dict]) -> str:
    """'n = 240 cases each', or each editor's n where they differ (a partial run of one of them)."""
    ns = {e: r["n"] for e, r in rows.items()}
    if len(set(ns.values())) == 1:
        return f"n = {next(iter(ns.values()))} cases each"
    return "n = " + ", ".join(f"{e} {n}" for e, n in ns.items()) + " cases"


def _relations(conn: sqlite3.Connection, run: dict) -> str:
    """', 8 of 16 relations' for a run whose measured cases cover only some of its case set's relations (a
    robustness run edits its cases in case-id order, so relation by relation), else ''."""
    case_set = json.loads(run.get("config") or "{}").get("case_set")
    if not case_set:
        return ""
    cases = queries.cases(conn, case_set=case_set)
    measured = set(queries.measurements(conn, run["run_id"], metrics="acc", rephrase_types="plain")["case_id"])
    total = cases["relation"].n_unique() if cases.height else 0
    covered = cases.filter(pl.col("case_id").is_in(list(measured)))["relation"].n_unique() if cases.height else 0
    return f", {covered} of {total} relations" if 0 < covered < total else ""


def _going(refs: dict[str, dict], editors, conn: sqlite3.Connection | None = None) -> list[str]:
    """'ROME 115 of 240 cases, 8 of 16 relations (interrupted)' for each of the editors' reference runs that is not
    done (the relations with `conn`: a partial run's cases are the first relations', not a sample)."""
    return [f"{e} {refs[e]['n_done'] or 0} of {refs[e]['n_total']} cases"
            f"{_relations(conn, refs[e]) if conn is not None else ''} ({refs[e]['status']})"
            for e in editors if e in refs and refs[e]["status"] != "done"]


def _partial(refs: dict[str, dict], editors, conn: sqlite3.Connection | None = None) -> str:
    """'; partial: ROME 115 of 240 cases, 8 of 16 relations (interrupted)' (_going), or ''."""
    going = _going(refs, editors, conn)
    return "; partial: " + ", ".join(going) if going else ""


# a study-A verdict on part of a run would judge its first relations, not a sample of the case set
PARTIAL_RULE = ("a run not finished gives its figures and no verdict (its cases come relation by relation, so a part "
                "is not a sample)")


def _waits(refs: dict[str, dict], editors, conn: sqlite3.Connection) -> str:
    """The reason a study-A verdict waits for the editors' reference runs that are not finished, or ''."""
    going = _going(refs, editors, conn)
    return ("The verdict waits for the runs to finish: " + ", ".join(going) + "; a robustness run edits its cases "
            "relation by relation, so its part is not a sample of the case set.") if going else ""


def _row(summary: pl.DataFrame, run_id: str, rtype: str, metric: str) -> dict | None:
    part = summary.filter((pl.col("run_id") == run_id) & (pl.col("rephrase_type") == rtype) & (pl.col("metric") == metric))
    return part.row(0, named=True) if part.height else None


def _drop(conn, refs, summary, claim: str, rtype: str, statement: str) -> Finding:
    """A rephrase type lowers acc below the plain prompt's (A2-A5)."""
    claimed = [e for e in EDITORS_A if PAPER_A["plain"][e] - PAPER_A[rtype][e] >= PAPER_DROP]
    paper = _paper_a(rtype) + (f"; rev {', '.join(f'{e} {v:g}' for e, v in PAPER_DOUBT_REV.items())}"
                               if rtype == "doubt" else "")
    rule = (f"Reproduced when, for each editor with a drop of {PAPER_DROP:g}+ points in the paper "
            f"({', '.join(claimed)}), acc on {rtype} is below acc on the plain prompt on the same cases (the paired "
            f"95% t-interval of the per-case difference, store.derived.robustness_summary's drop from plain, lies "
            f"wholly below 0); "
            f"refuted when one of them has {rtype} acc at or above its plain acc; otherwise undecided at this n; "
            f"{PARTIAL_RULE}.")
    common = dict(claim=claim, study="A", statement=statement, paper=paper, rule=rule, page="robustness")
    missing = [e for e in claimed if e not in refs]
    if missing:
        return Finding(**common, ours=_no_run_of(conn, missing), verdict=NOT_MEASURED,
                       reason="Run `python -m compute run robustness --editor "
                              + "` and `".join(missing) + "` on the robustness case set.")
    ids = [refs[e]["run_id"] for e in EDITORS_A if e in refs]
    query = _runs_query(ids, metric="acc")
    table = measurable.run_measurability(conn, run_id=refs[claimed[0]]["run_id"])
    reasons = measurable.unmeasurable_reasons(table)
    pairs = {e: (_row(summary, refs[e]["run_id"], "plain", "acc"), _row(summary, refs[e]["run_id"], rtype, "acc"))
             for e in EDITORS_A if e in refs}
    pairs = {e: p for e, p in pairs.items() if p[0] and p[1]}
    drops = {e: _drop_row(summary, refs[e]["run_id"], rtype) for e in pairs}
    ours = "; ".join(f"{e} {_ci(p[0]['mean'], p[0]['ci_low'], p[0]['ci_high'])} → "
                     f"{_ci(p[1]['mean'], p[1]['ci_low'], p[1]['ci_high'])}"
                     + (f" (paired difference {_signed_ci(drops[e]['mean'], drops[e]['ci_low'], drops[e]['ci_high'])})"
                        if drops[e] else "")
                     for e, p in pairs.items())
    if rtype == "doubt":
        revs = {e: _row(summary, refs[e]["run_id"], rtype, "rev") for e in pairs}
        ours += "; rev " + ", ".join(f"{e} {_ci(r['mean'], r['ci_low'], r['ci_high'])}" for e, r in revs.items() if r)
    sizes = _sizes({e: p[1] for e, p in pairs.items()}) if pairs else ""
    ours = (ours + f" (acc, plain → {rtype}, {sizes}{_partial(refs, pairs, conn)})") if pairs else f"no {rtype} acc stored"
    if rtype == "doubt" and pairs:
        ours += _known_rev(conn, {e: refs[e]["run_id"] for e in pairs}, rtype)
    head = pairs.get(claimed[0], (None, None))[1]
    nums = dict(value=head["mean"], n=head["n"], ci_low=head["ci_low"], ci_high=head["ci_high"]) if head else {}
    case_set = json.loads(refs[claimed[0]]["config"] or "{}").get("case_set")
    # a copy task first: run_measurability greys it too
    forced, total = measurable.copy_tasks(conn, case_set).get(rtype, (0, 0))
    if rtype in reasons and not forced:
        return Finding(**common, ours=ours, verdict=NOT_COMPARABLE, reason=f"{rtype} is unmeasurable on this model: "
                       + reasons[rtype] + ".", query=query, **nums)
    if forced:
        return Finding(**common, ours=ours + " — a copy task, not an answer", verdict=NOT_MEASURED, query=query,
                       reason=f"The stored {rtype} probes of {case_set} end with the edit prompt inside the assistant's "
                              f"turn ({forced} of {total} cases), so they measure copying. Rebuild the cases with the "
                              f"free-answer probes and rerun `python -m compute run robustness` for "
                              f"{', '.join(claimed)}.", **nums)
    if any(e not in pairs for e in claimed):
        return Finding(**common, ours=ours, verdict=NOT_MEASURED, query=query, **nums,
                       reason=f"Some runs hold no {rtype} acc: rerun robustness with every rephrase type.")
    if waits := _waits(refs, claimed, conn):  # only the runs the rule judges: an unfinished IKE run does not
        verdict, reason = NOT_MEASURED, waits  # hold back A2, whose paper drop for IKE is under 10 points
    elif all(_dropped(drops[e]) for e in claimed):
        verdict, reason = REPRODUCED, ""
    elif any(pairs[e][1]["mean"] >= pairs[e][0]["mean"] for e in claimed):
        verdict, reason = REFUTED, ""
    else:
        open_ = [e for e in claimed if not _dropped(drops[e])]
        verdict = UNSETTLED
        reason = (f"Measured, but undecided: the paired difference's CI includes 0 for {', '.join(open_)} at {sizes}; "
                  f"a larger case set "
                  "(`cases build --n`, then `run robustness`) would decide.")
    return Finding(**common, ours=ours, verdict=verdict, reason=reason, query=query, **nums)


def _drop_row(summary: pl.DataFrame, run_id: str, rtype: str) -> dict | None:
    """A rephrase type's paired drop of acc from the plain prompt (store.derived.robustness_summary's
    drop_from_plain, drop_n and drop CI, as the Robustness page's heat map shows it), or None."""
    row = _row(summary, run_id, rtype, "acc")
    if row is None or row.get("drop_n") is None:
        return None
    return {"mean": row["drop_from_plain"], "n": row["drop_n"], "ci_low": row["drop_ci_low"],
            "ci_high": row["drop_ci_high"]}


def _dropped(drop: dict | None) -> bool:
    """A paired drop (_drop_row) whose 95% CI lies wholly below 0."""
    return drop is not None and drop["ci_high"] == drop["ci_high"] and drop["ci_high"] < 0


def _known_rev(conn, run_ids: dict[str, str], rtype: str) -> str:
    """A5's figure on the facts the unedited model knew (store.queries.known_case_ids, the plain prompt):
    each editor's post-edit rev on `rtype` over those facts, with n and CI, and the unedited model's own rev on
    `rtype` over the same facts (what the old answer's return is measured against). Reported beside the
    all-case figure; the verdict does not use it. Empty when no run has a known fact."""
    known = derived.robustness_summary(conn, run_ids=list(run_ids.values()), metrics=("rev",), known_only=True)
    rows = {e: _row(known, run_id, rtype, "rev") for e, run_id in run_ids.items()}
    rows = {e: r for e, r in rows.items() if r}
    if not rows:
        return ""
    ns = {r["n"] for r in rows.values()}
    text = f"; on the facts the unedited model knew (on the plain prompt), rev on {rtype} " + ", ".join(
        f"{e} {_ci(r['mean'], r['ci_low'], r['ci_high'], None if len(ns) == 1 else r['n'])}" for e, r in rows.items())
    text += f" (n = {next(iter(ns))} facts each)" if len(ns) == 1 else ""
    first = run_ids[next(iter(rows))]
    pre = queries.pre_edit_recall(conn, first, rephrase_types=rtype).filter(
        pl.col("case_id").is_in(queries.known_case_ids(conn, first)))
    if pre.height:
        k = int(pre["known"].sum())
        lo, hi = wilson_ci(k, pre.height)
        text += f"; the unedited model's own rev on {rtype} for them {_ci(k / pre.height, lo, hi, pre.height)}"
    return text


def _corr_verdict(rows: list[tuple[str, float, float]], sign: int) -> tuple[str, str]:
    """Reproduced when every (name, lo, hi) CI lies on `sign`'s side of 0, refuted when one lies on the other."""
    defined = [(name, lo, hi) for name, lo, hi in rows if lo == lo and hi == hi]
    if len(defined) < len(rows):
        return NOT_MEASURED, "Some within-relation CIs are undefined (too few cases per relation)."
    if all((lo > 0) if sign > 0 else (hi < 0) for _, lo, hi in defined):
        return REPRODUCED, ""
    if any((hi < 0) if sign > 0 else (lo > 0) for _, lo, hi in defined):
        return REFUTED, ""
    open_ = [name for name, lo, hi in defined if lo <= 0 <= hi]
    return UNSETTLED, (f"Measured, but undecided: the within-relation CI includes 0 ({', '.join(open_)}); more "
                          "cases per relation would decide.")


def _signed_ci(v: float, lo: float, hi: float) -> str:
    """"+0.08 [-0.01, +0.17]", or "+0.50 (CI undefined)" where it is not (one fact, or a constant side)."""
    v, lo, hi = _zero(v), _zero(lo), _zero(hi)
    return f"{v:+.2f} " + (f"[{lo:+.2f}, {hi:+.2f}]" if lo == lo and hi == hi else "(CI undefined)")


def _rho(r: dict, pooled: bool) -> str:
    if pooled:
        return f"pooled ρ = {_signed_ci(r['rho'], r['ci_low'], r['ci_high'])}, n = {r['n']}"
    return f"within relation ρ = {_signed_ci(r['rho_within'], r['within_ci_low'], r['within_ci_high'])}, " \
           f"n = {r['n_within']}"


def _a6(conn) -> Finding:
    common = dict(claim="A6", study="A", statement="More popular facts are recalled better before editing.",
                  paper="positive correlation of popularity with pre-edit recall (Llama-7B)",
                  rule="Spearman ρ of subject word frequency with the unedited model's recall, within relation "
                       "(per-relation ρ combined: pooling relations mixes their difficulty with popularity): "
                       "reproduced when its 95% CI lies above 0, refuted when below 0; the pooled ρ is shown beside "
                       "it.", page="popularity")
    runs = [r for r in queries.list_runs(conn, kind="knowledge").iter_rows(named=True) if r["n_done"]]
    if not runs:
        return Finding(**common, ours="no knowledge run", verdict=NOT_MEASURED,
                       reason="Run `python -m compute knowledge measure` on a case set.")
    run = _best(runs)
    corr = derived.knowledge_correlations(conn, run_id=run["run_id"])
    row = corr.filter((pl.col("feature") == "frequency") & (pl.col("against") == "recall"))
    if row.is_empty():
        return Finding(**common, ours="no recall correlation stored", verdict=NOT_MEASURED,
                       reason="The knowledge run has no recall with frequency: rerun `knowledge measure`.",
                       evidence=(run["run_id"],))
    r = row.row(0, named=True)
    verdict, reason = _corr_verdict([("frequency", r["within_ci_low"], r["within_ci_high"])], +1)
    return Finding(**common, ours=f"{_rho(r, False)}; {_rho(r, True)} (frequency vs recall, "
                   f"{json.loads(run['config'] or '{}').get('case_set', run['run_id'])})",
                   verdict=verdict, reason=reason, value=r["rho_within"], n=r["n_within"], ci_low=r["within_ci_low"],
                   ci_high=r["within_ci_high"], query=(("pop_metric", "rev"),), evidence=(run["run_id"],))


def _a7(conn, refs) -> Finding:
    common = dict(claim="A7", study="A", statement="More popular facts are harder to edit robustly.",
                  paper="negative correlation of popularity with post-edit robustness (Llama-7B)",
                  rule="Spearman ρ of subject word frequency with post-edit acc on paraphrases, within relation, for "
                       "each editor, on all cases and, as the control, on the cases whose edit held on the plain "
                       "prompt (robustness given an edit that took: a popular fact that is merely harder to edit at "
                       "all lowers the first and not the second): reproduced when every one of these 95% CIs lies "
                       "below 0, refuted when one lies above 0; the pooled ρ is shown beside them (it mixes relation "
                       f"difficulty with popularity); {PARTIAL_RULE}.",
                  page="popularity")
    have = [e for e in EDITORS_A if e in refs]
    if not have:
        return Finding(**common, ours="no robustness run", verdict=NOT_MEASURED,
                       reason="Run `python -m compute run robustness --editor ROME` (and MEMIT, IKE).")
    ids = [refs[e]["run_id"] for e in have]
    corr = derived.robustness_correlations(conn, run_ids=ids, metrics=("acc",), features=("frequency",),
                                           rephrase_types=("paraphrase",))
    rows = {r["editor"]: r for r in corr.iter_rows(named=True)}
    rows = {e: rows[e] for e in have if e in rows}
    query = (("feature", "frequency"), ("rephrase_type", "paraphrase"), ("runs", ",".join(ids)))
    if not rows:
        return Finding(**common, ours="no paraphrase acc correlations", verdict=NOT_MEASURED,
                       reason="The robustness runs hold no paraphrase acc: rerun them with every rephrase type.")
    held = derived.robustness_correlations(conn, run_ids=ids, metrics=("acc",), features=("frequency",),
                                           rephrase_types=("paraphrase",), held_only=True)
    held = {r["editor"]: r for r in held.iter_rows(named=True)}
    nan = float("nan")  # no held edit: undefined, so undecided
    cis = [(e, r["within_ci_low"], r["within_ci_high"]) for e, r in rows.items()]
    cis += [(f"{e} on held edits", *((held[e]["within_ci_low"], held[e]["within_ci_high"]) if e in held
                                     else (nan, nan))) for e in rows]
    verdict, reason = _corr_verdict(cis, -1)
    if waits := _waits(refs, rows, conn):
        verdict, reason = NOT_MEASURED, waits
    head = next(iter(rows.values()))
    ours = "; ".join(f"{e}: {_rho(r, False)}, {_rho(r, True)} (edits that held on the plain prompt: "
                     + (f"{_rho(held[e], False)})" if e in held else "none)") for e, r in rows.items())
    return Finding(**common, ours=ours + _partial(refs, rows, conn),
                   verdict=verdict, reason=reason, value=head["rho_within"], n=head["n_within"],
                   ci_low=head["within_ci_low"], ci_high=head["within_ci_high"], query=query)


# --------------------------------------------------------------------------- study B

ROME, ROME_ORIGINAL, MEMIT_1 = "ROME", "ROME (original keys)", "MEMIT, b=1"
RECT_40, RECT_20 = "ROME + RECT 40%", "ROME + RECT 20%"
ATTACKED = ("paraphrase", "context_pronoun", "dialogue", "doubt")  # the rephrase types of A2-A5
NO_CONTROL_A = ("not measured: the study set each type's post-edit acc against the plain prompt's, not against "
                "what the type does to the unedited model's own knowledge")


def _a8(conn, refs) -> Finding:
    """Study A's control: a rephrasing set against what it does to the model's own knowledge, on the same facts
    (store.derived.edit_against_knowledge)."""
    common = dict(claim="A8", study="A", statement="A rephrasing costs an edit more than it costs the model's own "
                                                   "knowledge.",
                  paper=NO_CONTROL_A,
                  rule="EditScope's control for study A: on the facts the unedited model knew (it named the true "
                       "object on the plain prompt) and whose edit held on the plain prompt, the edited model naming "
                       "the new object against the unedited model naming the true object on the same rephrase type, "
                       "paired by fact (mean difference, 95% bootstrap CI), on each of A2-A5's types ("
                       + ", ".join(ATTACKED) + ") that is measurable and lets the model answer freely; an editor "
                       "agrees when on at least one of them the CI lies wholly below 0 and on none wholly above, and "
                       "goes against the claim when the other way round; reproduced when every one of "
                       + ", ".join(EDITORS_A) + f" agrees, refuted when every one goes against it; {PARTIAL_RULE}.",
                  page="robustness")
    have = [e for e in EDITORS_A if e in refs]
    if not have:
        return Finding(**common, ours="no robustness run", verdict=NOT_MEASURED,
                       reason="Run `python -m compute run robustness --editor ROME` (and MEMIT, IKE).")
    table = measurable.run_measurability(conn, run_id=refs[have[0]]["run_id"])
    reasons = measurable.unmeasurable_reasons(table)
    copies = set(table.filter(pl.col("copy_task"))["rephrase_type"].to_list())
    types = [t for t in ATTACKED if t not in reasons]  # a copy task has its reason there too
    left = [t for t in ATTACKED if t not in types]
    gaps = derived.edit_against_knowledge(conn, run_ids=[refs[e]["run_id"] for e in have], rephrase_types=types)
    parts, signs, head = [], {}, {}
    for e in have:
        rows = {r["rephrase_type"]: r for r in gaps.filter(pl.col("run_id") == refs[e]["run_id"]).iter_rows(named=True)}
        mine = {t: rows[t] for t in types if t in rows}  # in A2-A5's order
        if not mine:
            parts.append(f"{e}: no known fact whose edit held on the plain prompt (or no baseline)")
            continue
        n = {r["n"] for r in mine.values()}
        parts.append(f"{e} ({'n = ' + str(next(iter(n))) + ' facts' if len(n) == 1 else 'n per type'}): " + ", ".join(
            f"{t} {_signed_ci(r['gap'], r['gap_ci_low'], r['gap_ci_high'])} (edit {r['edit']:.2f}, knowledge "
            f"{r['knowledge']:.2f}{'' if len(n) == 1 else ', n = ' + str(r['n'])})" for t, r in mine.items()))
        below = [t for t, r in mine.items() if r["gap_ci_high"] < 0]
        above = [t for t, r in mine.items() if r["gap_ci_low"] > 0]
        signs[e] = 1 if below and not above else -1 if above and not below else 0
        if not head:  # the headline number is the first figure of `ours`
            r = next(iter(mine.values()))
            head = dict(value=r["gap"], n=r["n"], ci_low=r["gap_ci_low"], ci_high=r["gap_ci_high"])
    ours = "; ".join(parts) + " (edit minus knowledge, paired by fact" + _partial(refs, have, conn) + ")"
    if left:
        ours += "; left out: " + ", ".join(t + (" (a copy task)" if t in copies else " (unmeasurable)") for t in left)
    query = _runs_query([refs[e]["run_id"] for e in have], metric="acc", known="1")
    missing = [e for e in EDITORS_A if e not in refs]
    if missing:
        none = _no_run_of(conn, missing)
        return Finding(**common, ours=ours, verdict=NOT_MEASURED, query=query, **head,
                       reason=f"{none[0].upper()}{none[1:]}: run `python -m compute run robustness --editor "
                              + "` and `".join(missing) + "` on the robustness case set.")
    if not types or len(signs) < len(EDITORS_A):
        return Finding(**common, ours=ours, verdict=NOT_MEASURED, query=query, **head,
                       reason="Not every editor has known facts compared on a measurable type.")
    if waits := _waits(refs, have, conn):
        return Finding(**common, ours=ours, verdict=NOT_MEASURED, query=query, **head, reason=waits)
    if all(s == 1 for s in signs.values()):
        return Finding(**common, ours=ours, verdict=REPRODUCED, query=query, **head)
    if all(s == -1 for s in signs.values()):
        return Finding(**common, ours=ours, verdict=REFUTED, query=query, **head)
    open_ = [e for e, s in signs.items() if s != 1]
    return Finding(**common, ours=ours, verdict=UNSETTLED, query=query, **head,
                   reason=f"Measured, but undecided for {', '.join(open_)}: no type's CI lies wholly below 0 (or one "
                          "lies above); more known facts (a larger case set, `cases build --n`) would decide.")


CONTROL = "RandomRankOne (control)"  # its run label (compute/editors/control.py: random rank-one updates with a reference run's norms)


def _lower(sentence: str) -> str:
    """A rule sentence of store.derived.sequential_rules as the clause of another one."""
    return sentence[:1].lower() + sentence[1:]


def _last_share(curves: pl.DataFrame, run_id: str, metric: str) -> dict | None:
    part = curves.filter((pl.col("run_id") == run_id) & (pl.col("metric") == metric)).sort("edit_count")
    return part.row(-1, named=True) if part.height else None


def _collapse_at(events: pl.DataFrame, run_id: str) -> int | None:
    """The collapse (store.derived.collapse_event: no longer usable from there on) of a run, or None."""
    col = events.filter((pl.col("run_id") == run_id) & (pl.col("kind") == "collapse"))["edit_count"]
    return int(col.min()) if col.len() else None


def _unfinished(run: dict) -> str:
    """' (interrupted, 40 of 500 edits)' for a run that is not finished, else '': its figures are as far as it got."""
    if run.get("status") == "done":
        return ""
    return f" ({run.get('status')}, {run.get('n_done') or 0} of {run.get('n_total') or 0} edits)"


def _pair_unfinished(*named: tuple[str, dict]) -> str:
    """' (RECT 40% interrupted, 200 of 500 edits)' naming each of a compared pair's runs that is not finished,
    else ''."""
    bits = [f"{name} {r.get('status')}, {r.get('n_done') or 0} of {r.get('n_total') or 0} edits"
            for name, r in named if r.get("status") != "done"]
    return f" ({'; '.join(bits)})" if bits else ""


def _b_arms(arms: dict) -> dict[str, dict[int, dict]]:
    """The one-edit-at-a-time runs study B's forgetting and collapse are read on: ROME with the original keys
    (the studies' ROME, before r-ROME's key fix), ROME with r-ROME keys (EditScope's default) and MEMIT b = 1;
    label -> edit order -> run. Each arm is judged on its own orders."""
    return {label: dict(sorted(arms[label].items())) for label in (ROME_ORIGINAL, ROME, MEMIT_1) if label in arms}


def _per_editor(signs: dict[str, list[int]]) -> str:
    """The verdict of a claim read per editor on each of its edit orders (+1: as the paper says on that order,
    -1: against it, 0: neither): an editor decides it with at least MIN_ORDERS orders that all agree (reproduced)
    or all go against it (refuted); the claim is reproduced when one editor reproduces it, refuted when one
    refutes it and none reproduces it, else not measured."""
    said = {_agreement(s) for s in signs.values()}
    return REPRODUCED if 1 in said else REFUTED if -1 in said else NOT_MEASURED


def _why_open(signs: dict[str, list[int]], runs: dict[str, dict[int, dict]], not_reached: str,
              pending: dict[str, dict] | None = None) -> str:
    """Why a per-editor verdict (_per_editor) is still open: nothing reached on any order (`not_reached`, then
    what to wait for or run), too few orders, orders that disagree, or orders that have decided nothing yet
    (`pending`: "label order o" -> run, those named; else every run)."""
    if all(x == 0 for s in signs.values() for x in s):
        return not_reached + _not_yet({f"{label} order {o}": r for label, by in runs.items() for o, r in by.items()})
    few = [f"{label} on {len(s)} order{'s' * (len(s) != 1)}" for label, s in signs.items()
           if len(s) < MIN_ORDERS and any(s)]
    if few:
        return (f"Measured {', '.join(few)}; the verdict waits for {MIN_ORDERS} orders of an editor "
                "(`--order-seed 1`, `2`), since which facts come when decides when a model breaks.")
    if any(1 in s and -1 in s for s in signs.values()):
        return "Measured, but undecided: the orders disagree."
    if pending:
        return (f"Measured on some orders; {', '.join(pending)} ha{'ve' if len(pending) > 1 else 's'} reached "
                "neither what the claim says nor its contrary: " + _not_yet(pending))
    return ("Measured on some orders; the others have reached neither what the claim says nor its contrary: "
            + _not_yet({f"{label} order {o}": r for label, by in runs.items() for o, r in by.items()}))


def _not_yet(runs: dict[str, dict]) -> str:
    """What to do when runs have not reached a claim's point yet: wait for the runs still computing (named, with
    their progress), else extend the finished ones."""
    going = [f"{label} ({r['n_done'] or 0} of {r['n_total']} edits, {r['status']})" for label, r in runs.items()
             if r["status"] != "done" and (r["n_total"] or 0) > (r["n_done"] or 0)]
    if going:
        return "the verdict waits for the runs still computing: " + ", ".join(going) + "."
    return "extend the runs (`--edits 1000`)."


def _b1(conn, arms) -> Finding:
    em_label = derived.PHASE_SERIES["retention_em"]
    es_label = derived.PHASE_SERIES["retention"]
    common = dict(claim="B1", study="B", statement="Sequential edits are forgotten gradually, then catastrophically.",
                  paper="ROME ≈0-8% of edits forgotten until ≈560 edits, then ≈78%; MEMIT ≈0-15% until ≈1250, "
                        "then 100% by ≈1300 (GPT-J, exact match)",
                  rule="Retention by exact match (study B's 'holds') of ROME with the original keys (the studies' "
                       "ROME), of ROME with r-ROME keys and of MEMIT b = 1 on each edit order: "
                       "an order agrees when its run's retention has a catastrophic phase and goes against the claim "
                       f"when its run collapsed (no longer usable) with no such phase; with at least {MIN_ORDERS} "
                       "orders of an editor, reproduced when every order of one of them agrees, refuted "
                       "when every order of one goes against it and none reproduces it; otherwise not decided; "
                       + _lower(derived.sequential_rules()["phase"]),
                  page="forgetting")
    runs = _b_arms(arms)
    if not runs:
        return Finding(**common, ours="no sequential ROME or MEMIT run", verdict=NOT_MEASURED,
                       reason="Run `python -m compute run sequential --editor ROME --edits 500` (and MEMIT --batch 1).")
    ids = [r["run_id"] for by in runs.values() for r in by.values()]
    curves = derived.sequential_curves(conn, ids)
    phases = derived.sequential_phases(conn, ids)
    events = derived.sequential_events(conn, ids)
    query = _runs_query(ids, curves="retained_em,forgotten_em,retained,forgotten")
    parts, signs, em_runs, pending = [], {}, {}, {}
    for label, by in runs.items():
        for o, run in by.items():
            rid = run["run_id"]
            em = _last_share(curves, rid, "forgotten_em")
            series = em_label if em else es_label
            last = em or _last_share(curves, rid, "forgotten")
            ph = phases.filter((pl.col("run_id") == rid) & (pl.col("series") == series))
            text = f"{label} order {o}{_unfinished(run)}: " + (f"{_ci(last['value'], last['ci_low'], last['ci_high'])} of {last['n']} "
                                             f"held edits forgotten by edit {last['edit_count']}" if last
                                             else "no forgetting series")
            p = ph.row(0, named=True) if ph.height else None
            if p:
                text += (f", catastrophic phase from edit {p['change_at']}" if p["catastrophic"]
                         else f", no catastrophic phase (change point {p['change_at']})")
            parts.append(text + ("" if em else " [by ES, not exact match]"))
            if em:
                em_runs.setdefault(label, {})[o] = run
                sign = 1 if p and p["catastrophic"] else -1 if _collapse_at(events, rid) is not None else 0
                signs.setdefault(label, []).append(sign)
                if not sign:
                    pending[f"{label} order {o}"] = run
    ours = "; ".join(parts)
    if not em_runs:
        return Finding(**common, ours=ours, verdict=NOT_MEASURED, query=query,
                       reason="The stored runs measured retention by ES only, which a broken model passes by chance. "
                              "Rerun `python -m compute run sequential --editor ROME --edits 500` and `--editor MEMIT "
                              "--batch 1` with the current runner, which records exact-match retention.")
    verdict = _per_editor(signs)
    if verdict != NOT_MEASURED:
        return Finding(**common, ours=ours, verdict=verdict, query=query)
    reach = max(r["n_done"] for by in em_runs.values() for r in by.values())
    return Finding(**common, ours=ours, verdict=NOT_MEASURED, query=query,
                   reason=_why_open(signs, em_runs, f"No catastrophic phase and no collapse in {reach} edits on any "
                                                    "order (the paper's came at ≈560 for ROME on GPT-J): ", pending))


def _b2(conn, arms) -> Finding:
    common = dict(claim="B2", study="B", statement="At the catastrophic point downstream abilities fall to about zero.",
                  paper="GLUE F1 (SST2, MRPC, CoLA, RTE) ≈0 from ROME ≈550-600 edits, MEMIT ≈1250 (GPT-J)",
                  rule="The collapse of a run of ROME with the original keys (the studies' ROME), ROME with r-ROME keys "
                       "or MEMIT b = 1 (store.derived.usability: from there on at least two of "
                       "abilities at chance, perplexity exploded, newest-edit efficacy gone) on each edit order: an "
                       "order agrees when the run collapsed with its abilities at chance (at most a quarter of the "
                       "unedited margin over chance left, mean over tasks) and goes against the claim when it "
                       f"collapsed with abilities above that; with at least {MIN_ORDERS} orders of an editor, "
                       "reproduced when every order of one of them agrees, refuted when every order of one "
                       "goes against it and none reproduces it.", page="forgetting")
    runs = _b_arms(arms)
    if not runs:
        return Finding(**common, ours="no sequential ROME or MEMIT run", verdict=NOT_MEASURED,
                       reason="Run `python -m compute run sequential --editor ROME --edits 500 --abilities-every 50`.")
    ids = [r["run_id"] for by in runs.values() for r in by.values()]
    events = derived.sequential_events(conn, ids)
    phases = derived.sequential_phases(conn, ids)
    scores = derived.ability_scores(conn, kind="sequential", mode="quick")
    query = _runs_query(ids)
    parts, signs, head, unscored, pending = [], {}, {}, 0, {}
    for label, by in runs.items():
        for o, run in by.items():
            name = f"{label} order {o}{_unfinished(run)}"
            use = derived.usability(conn, run["run_id"])
            at = _collapse_at(events, run["run_id"])
            if use.is_empty():
                parts.append(f"{name}: no ability checkpoints")
                pending[f"{label} order {o}"] = run
                continue
            row = (use.filter(pl.col("edit_count") == at).row(0, named=True) if at is not None
                   else use.row(-1, named=True))
            tasks = scores.filter((pl.col("run_id") == run["run_id"])
                                  & (pl.col("edit_count") == row["edit_count"]))["task"].n_unique()
            left, ppl = row["abilities_left"], row["perplexity_ratio"]
            state = f"unusable from edit {at}" if at is not None else f"still usable at edit {row['edit_count']}"
            cliffs = phases.filter((pl.col("run_id") == run["run_id"]) & pl.col("catastrophic")
                                   & pl.col("series").str.ends_with("(ability)"))
            keep = (f"abilities keep {left:.2f} of their unedited margin over chance (mean over {tasks} tasks)"
                    if left is not None else "no unedited ability scores to compare with")
            parts.append(f"{name}: {state}, {keep}" + (f", perplexity x{ppl:,.0f}" if ppl is not None else "")
                         + (f"; a catastrophic phase on {cliffs.height} ability series from edit "
                            f"{int(cliffs['change_at'].min())}" if cliffs.height else ""))
            if at is not None and left is None:
                unscored += 1
            sign = 0 if at is None or left is None else 1 if row["abilities_at_chance"] else -1
            signs.setdefault(label, []).append(sign)
            if not sign:
                pending[f"{label} order {o}"] = run
            if sign and not head:
                head = dict(value=left, n=tasks)
    ours = "; ".join(parts)
    verdict = _per_editor(signs)
    if verdict != NOT_MEASURED:
        return Finding(**common, ours=ours, verdict=verdict, query=query, **head,
                       reason="Our ability suite (9 tasks, scored against chance) stands in for GLUE F1.")
    if unscored and not any(x for s in signs.values() for x in s):
        return Finding(**common, ours=ours, verdict=NOT_MEASURED, query=query,
                       reason="The collapsed runs have no unedited ability scores to compare with: measure them "
                              "(`abilities measure --mode full`).")
    reach = max(r["n_done"] for by in runs.values() for r in by.values())
    return Finding(**common, ours=ours, verdict=NOT_MEASURED, query=query, **head,
                   reason=_why_open(signs, runs, f"No run reached its collapse in {reach} edits: ", pending))


def _b3(conn, arms) -> Finding:
    common = dict(claim="B3", study="B",
                  statement="Single disabling edits with abnormally large updates trigger the collapse; r-ROME's key "
                            "fix removes them.",
                  paper="disabling edits with original ROME; none with r-ROME keys (GPT-J)",
                  rule=f"With at least {MIN_ORDERS} edit orders both have, reproduced when on every order the "
                       "original-keys ROME run has at least one disabling edit and the r-ROME run, editing the same "
                       "facts in the same order, none; refuted when every order goes against that; an order still "
                       "computing counts once what it shows can no longer change (the r-ROME run has a disabling "
                       "edit, or the run that could still add the one that decides is finished), and the claim is "
                       "undecided as soon as two counted orders disagree; the original-keys "
                       "run's edits count up to the edits the r-ROME run made (a longer run gives the claim no more "
                       "chances), the r-ROME run's all; large updates the model survived, and those after its "
                       "collapse, are counted beside them; " + _lower(derived.sequential_rules()["disabling_edit"]),
                  page="forgetting")
    orders = _shared(arms, ROME_ORIGINAL, ROME)
    if not orders:
        return Finding(**common, ours="no pair of ROME runs (original and r-ROME keys) on one edit order",
                       verdict=NOT_MEASURED,
                       reason="Run `python -m compute run sequential --editor ROME --hp key_mismatch=true --edits 500` "
                              "and `--editor ROME --edits 500` with the same --order-seed.")
    events = derived.sequential_events(conn, [arms[label][o]["run_id"] for o in orders for label in (ROME_ORIGINAL, ROME)])
    parts, signs, ids, head = [], [], [], {}
    for o in orders:
        counts = {}
        for label in (ROME_ORIGINAL, ROME):
            run = arms[label][o]
            ids.append(run["run_id"])
            ev = events.filter((pl.col("run_id") == run["run_id"]) & (pl.col("kind") == "disabling_edit")).sort("edit_count")
            large = events.filter((pl.col("run_id") == run["run_id"]) & (pl.col("kind") == "large_update"))
            span, reached = run["n_done"] or 0, arms[ROME][o]["n_done"] or 0
            if label == ROME_ORIGINAL and reached < span:  # as far as the r-ROME run went
                span = reached
                ev, large = ev.filter(pl.col("edit_count") <= span), large.filter(pl.col("edit_count") <= span)
            counts[label] = ev.height
            name = "ROME (r-ROME keys)" if label == ROME else label
            text = (f"order {o}: " if label == ROME_ORIGINAL else "") + f"{name} {ev.height} of {span} edits" + (
                f" (of its {run['n_done']}, counted as far as the r-ROME run went)" if span != (run["n_done"] or 0)
                else "")
            if ev.height:
                text += (f" (edit {', '.join(str(c) for c in ev['edit_count'].to_list())}; largest update "
                         f"{ev['value'].max():.2f} ||W0||)")
            others = large.filter(~pl.col("edit_count").is_in(ev["edit_count"].to_list()))
            collapsed = _collapse_at(events, run["run_id"])
            late = others.filter(pl.col("edit_count") > collapsed) if collapsed is not None else others.clear()
            survived = others.filter(~pl.col("edit_count").is_in(late["edit_count"].to_list()))
            for part, what in ((survived, "the model survived"), (late, f"after its collapse at edit {collapsed}")):
                if part.height:
                    text += f", {part.height} large update(s) {what} (largest {part['value'].max():.2f} ||W0||)"
            parts.append(text)
            if label == ROME_ORIGINAL and not head and span:
                lo, hi = wilson_ci(ev.height, span)
                head = dict(value=ev.height / span, n=span, ci_low=lo, ci_high=hi)
        # a run still computing with none so far decides nothing yet: its disabling edit may be still to come
        done = {label: arms[label][o]["status"] == "done" for label in (ROME_ORIGINAL, ROME)}
        if counts[ROME] > 0 or (counts[ROME_ORIGINAL] == 0 and done[ROME_ORIGINAL]):
            signs.append(-1)
        elif counts[ROME_ORIGINAL] > 0 and done[ROME]:
            signs.append(1)
        else:
            signs.append(None)
    ours = "disabling edits: " + "; ".join(parts) + f" (on {len(orders)} edit order{'s' * (len(orders) > 1)})"
    going = {f"{label} order {o}": arms[label][o] for o in orders for label in (ROME_ORIGINAL, ROME)}
    found = _order_verdict(common, ours, signs, orders, _runs_query(ids), going=going, neither="",
                           few=_few("Which facts come when decides where large updates fall", orders,
                                    "both ROME runs (with `--hp key_mismatch=true` and without)", going))
    return replace(found, **head) if head else found


def _b4(conn, arms) -> Finding:
    common = dict(claim="B4", study="B", statement="MEMIT lasts longer than ROME before collapse.",
                  paper="ROME collapses at ≈560 edits, MEMIT at ≈1250 (GPT-J)",
                  rule=f"Collapse (store.derived.usability) of MEMIT b = 1 against ROME on each shared edit order, "
                       f"ROME with the original keys (the studies' ROME) and with r-ROME keys each compared apart; "
                       f"with at least {MIN_ORDERS} orders of a comparison, reproduced when MEMIT lasts longer on "
                       f"every order of one of them, refuted when ROME lasts at least as long on every order of one "
                       f"and none reproduces it.", page="forgetting")
    pairs = {label: _shared(arms, label, MEMIT_1) for label in (ROME_ORIGINAL, ROME)}
    pairs = {label: orders for label, orders in pairs.items() if orders}
    if not pairs:
        return Finding(**common, ours="no ROME and MEMIT b = 1 runs on one edit order", verdict=NOT_MEASURED,
                       reason="Run `python -m compute run sequential --editor ROME` and `--editor MEMIT --batch 1` "
                              "with the same --order-seed.")
    ids = list(dict.fromkeys(arms[label][o]["run_id"] for rome, orders in pairs.items() for o in orders
                             for label in (rome, MEMIT_1)))
    events = derived.sequential_events(conn, ids)
    lead = {1: "MEMIT lasted longer", -1: "ROME lasted at least as long", 0: "neither collapsed first"}
    parts, signs, pending = [], {}, {}
    for rome, orders in pairs.items():
        for o in orders:
            at = {label: _collapse_at(events, arms[label][o]["run_id"]) for label in (rome, MEMIT_1)}
            done = {label: arms[label][o]["n_done"] for label in (rome, MEMIT_1)}
            r, m = at[rome], at[MEMIT_1]
            if r is not None and (m is None and done[MEMIT_1] > r or m is not None and m > r):
                sign = 1
            elif m is not None and (r is None and done[rome] >= m or r is not None and r >= m):
                sign = -1
            else:  # neither collapsed within the other's reach: extend, or wait for a run still computing
                sign = 0
                pending.update({f"{label} order {o}": arms[label][o] for label in (rome, MEMIT_1)})
            signs.setdefault(rome, []).append(sign)
            parts.append(f"order {o}: " + ", ".join(
                f"{label}{_unfinished(arms[label][o])} " + (f"collapsed at edit {at[label]}" if at[label] is not None
                               else f"usable through {done[label]}") for label in (rome, MEMIT_1))
                + (f" ({lead[sign]})" if len(orders) < MIN_ORDERS else ""))
    verdict = _per_editor(signs)
    n = max(len(v) for v in signs.values())
    if verdict != NOT_MEASURED:
        return Finding(**common, ours="; ".join(parts), verdict=verdict, query=_runs_query(ids), n=n)
    if all(len(v) < MIN_ORDERS for v in signs.values()):
        reason = (f"When a model collapses varies with the edit order, and the store has {n} shared order(s): run "
                  f"`--order-seed` 1 and 2 of ROME and of MEMIT --batch 1.")
    else:
        runs = {label: {o: arms[label][o] for o in orders} for rome, orders in pairs.items() for label in (rome, MEMIT_1)}
        reason = _why_open(signs, runs, "Neither run collapsed first on any order: ", pending)
    return Finding(**common, ours="; ".join(parts), verdict=NOT_MEASURED, query=_runs_query(ids), n=n, reason=reason)


def _panel_at(curves: pl.DataFrame, run_id: str, at: int) -> dict | None:
    part = curves.filter((pl.col("run_id") == run_id) & (pl.col("metric") == "panel_recall")
                         & (pl.col("edit_count") == at))
    return part.row(0, named=True) if part.height else None


def _panel_pairs(conn, arms, lower: tuple[str, str], higher: tuple[str, str]):
    """Panel recall (the unedited known facts) of two arms, (label, name) each, at the last checkpoint both
    reached on each edit order they share: (parts, signs, orders, run ids, runs not finished by name), an order's
    sign +1 when `lower` is below `higher` (_below: the 95% CI of the difference below 0), -1 when the other way
    round, 0 when that CI includes 0, None while one of the two runs is not finished (_order_verdict)."""
    parts, signs, orders, ids, going = [], [], [], [], {}
    for o in _shared(arms, lower[0], higher[0]):
        a, b = arms[lower[0]][o], arms[higher[0]][o]
        ids += [a["run_id"], b["run_id"]]
        going.update({f"{name} order {o}": run for (_, name), run in ((lower, a), (higher, b))
                      if run["status"] != "done"})
        curves = derived.sequential_curves(conn, [a["run_id"], b["run_id"]])
        panel = curves.filter(pl.col("metric") == "panel_recall")
        shared = (set(panel.filter(pl.col("run_id") == a["run_id"])["edit_count"].to_list())
                  & set(panel.filter(pl.col("run_id") == b["run_id"])["edit_count"].to_list()))
        if not shared or max(shared) == 0:
            continue
        at = max(shared)
        ra, rb = _panel_at(curves, a["run_id"], at), _panel_at(curves, b["run_id"], at)
        parts.append(f"order {o}, edit {at}: panel recall {lower[1]}{_unfinished(a)} "
                     f"{_ci(ra['value'], ra['ci_low'], ra['ci_high'], ra['n'])}, "
                     f"{higher[1]}{_unfinished(b)} {_ci(rb['value'], rb['ci_low'], rb['ci_high'], rb['n'])}")
        signs.append((1 if _below(ra, rb) else -1 if _below(rb, ra) else 0) if _finished(a, b) else None)
        orders.append(o)
    return parts, signs, orders, ids, going


def _panel_claim(conn, arms, common: dict, lower: tuple[str, str], higher: tuple[str, str], *,
                 none: tuple[str, str], unshared: str, few: tuple[str, str]) -> Finding:
    """A claim that `lower` keeps less of the panel than `higher` on each edit order (_panel_pairs), judged by
    _order_verdict: `none` (what the store lacks, what to run) when the two share no order, `unshared` when
    they share no checkpoint past the unedited model, `few` (what varies with the order, what to run on more
    orders: _few) before MIN_ORDERS."""
    if not _shared(arms, lower[0], higher[0]):
        return Finding(**common, ours=none[0], verdict=NOT_MEASURED, reason=none[1])
    parts, signs, orders, ids, going = _panel_pairs(conn, arms, lower, higher)
    query = _runs_query(ids, curves="panel,retained_em")
    if not signs:
        return Finding(**common, ours="no shared checkpoint yet", verdict=NOT_MEASURED, query=query, reason=unshared)
    return _order_verdict(common, "; ".join(parts), signs, orders, query, going=going,
                          few=_few(few[0], orders, few[1], going), neither="the CI of the difference includes 0")


NO_CONTROL = "not measured: the studies ran no size-matched random update"
CONTROL_RULE = ("EditScope's control (issue 19 point 11): on each edit order, ROME against random rank-one updates at "
                "ROME's layer with that ROME run's per-edit norms, in order (RandomRankOne), ")


def _b5(conn, arms) -> Finding:
    common = dict(claim="B5", study="B", statement="Unedited facts are lost because of what the edits write, not only "
                                                   "because the weights move that much.",
                  paper=NO_CONTROL,
                  rule=CONTROL_RULE + "by recall of the panel of unedited known facts at the last checkpoint both "
                       "reached; an order agrees when ROME's is below the control's (" + DIFFERENCE_RULE + ") and "
                       "goes against it when the control's is below ROME's; with at least "
                       f"{MIN_ORDERS} orders, reproduced when every order agrees, refuted when every order goes "
                       f"against it; {PENDING_RULE}.", page="forgetting")
    return _panel_claim(conn, arms, common, (ROME, "ROME"), (CONTROL, "control"),
                        none=("no ROME run with its control on one edit order",
                              "Run `python -m compute run sequential --editor RandomRankOne --hparams "
                              "compute/editors/control.json --hp reference_run=ROME_RUN_ID` beside a ROME run."),
                        unshared="The control run has not reached a checkpoint of its ROME run yet.",
                        few=("Whether edits cost more than random updates of their size varies with the edit order",
                             "ROME and its control"))


MEMIT_10, ALPHAEDIT_10 = "MEMIT, b=10", "AlphaEdit, b=10"


def _b6(conn, arms) -> Finding:
    common = dict(claim="B6", study="B", statement="AlphaEdit's null-space projection keeps unedited knowledge that "
                                                   "MEMIT's sequential edits lose.",
                  paper="AlphaEdit (Fang et al., ICLR 2025): an update projected onto the null space of the preserved "
                        "knowledge leaves the model's output on that knowledge unchanged, where sequential MEMIT "
                        "edits disrupt it (LLaMA3-8B, GPT-J, GPT2-XL)",
                  rule="EditScope's replicated comparison (issue 19 point 11): on each edit order, AlphaEdit b = 10 "
                       "against MEMIT b = 10 (each with the key constraint it ships with), by recall of the panel of "
                       "unedited known facts at the last checkpoint both reached; an order agrees when MEMIT's is "
                       f"below AlphaEdit's ({DIFFERENCE_RULE}) and goes against it when AlphaEdit's is below "
                       f"MEMIT's; with at least {MIN_ORDERS} orders, reproduced when every order agrees, "
                       f"refuted when every order goes against it; {PENDING_RULE}.", page="forgetting")
    return _panel_claim(conn, arms, common, (MEMIT_10, "MEMIT"), (ALPHAEDIT_10, "AlphaEdit"),
                        none=("no MEMIT and AlphaEdit b = 10 runs on one edit order",
                              "Run `python -m compute run sequential --editor MEMIT --batch 10` and `--editor "
                              "AlphaEdit --batch 10` with the same --order-seed."),
                        unshared="The runs have no checkpoint past the unedited model in common yet.",
                        few=("Which editor keeps more varies with the edit order", "both"))


# --------------------------------------------------------------------------- study C


def _scores(ab: pl.DataFrame, run_id: str, edit_count: int) -> dict[str, dict]:
    part = ab.filter((pl.col("run_id") == run_id) & (pl.col("edit_count") == edit_count))
    return {r["task"]: r for r in part.iter_rows(named=True) if r["score"] is not None}


def _c1(conn, arms) -> Finding:
    common = dict(claim="C1", study="C", statement="Sequential ROME edits erode general abilities.",
                  paper="GPT-2 XL within 20 edits: sentiment 0.56 → 0.0, NER 0.43 → 0.18, open QA 0.20 → 0.01",
                  rule="How many edits break a model depends on its size, so the paper's speed is not asked of a 135M "
                       "model; on each edit order of ROME with the original keys (ROME as published, before r-ROME's "
                       "key fix) and of ROME with r-ROME keys, each read apart, the direction (abilities fall) agrees "
                       "when sentiment, entity typing (NER) and closed-book QA (open QA) each end below the unedited "
                       f"model's ({DIFFERENCE_RULE}) and disagrees when none does; with at least "
                       f"{MIN_ORDERS} orders of one of them, the claim's direction agrees when every order of one "
                       "agrees, disagrees when every order of one disagrees and none agrees, else undecided; a run "
                       "still computing counts once all three have fallen (before that, they may still fall).",
                  page="abilities")
    runs = {label: dict(sorted(arms[label].items())) for label in (ROME_ORIGINAL, ROME) if label in arms}
    if not runs:
        return Finding(**common, ours="no sequential ROME run", verdict=NOT_MEASURED,
                       reason="Run `python -m compute run sequential --editor ROME --edits 500 --abilities-every 50`.")
    ab = derived.ability_scores(conn, kind="sequential", mode="quick")
    query = _runs_query([r["run_id"] for by in runs.values() for r in by.values()], ability_view="sequential")
    signs: dict[str, list[int]] = {}
    head, missing, by_task, per_order, waiting = {}, [], {}, [], {}
    for label, by in runs.items():
        for o, run in by.items():
            name = f"{label} order {o}{_unfinished(run)}"
            mine = ab.filter(pl.col("run_id") == run["run_id"])
            counts = sorted(set(mine["edit_count"].to_list()))
            if 0 not in counts or len(counts) < 2:
                missing.append(f"{name}: no ability checkpoints")
                continue
            first = next((c for c in counts if c >= 20), counts[-1])
            base, early, end = (_scores(mine, run["run_id"], c) for c in (0, first, counts[-1]))
            tasks = [t for t in STUDY_C_TASKS if t in base and t in end and t in early]
            if not tasks:
                missing.append(f"{name}: none of study C's tasks measured")
                continue
            for t in tasks:
                b0, e, z = base[t], early[t], end[t]
                unedited = f"unedited {_ci(b0['score'], b0['ci_low'], b0['ci_high'])}"
                entry = by_task.setdefault(t, {"unedited": unedited, "n": z["n"], "orders": []})
                entry["orders"].append(name + (f" ({unedited})" if unedited != entry["unedited"] else "")
                                       + f": {e['score']:.2f} at {first} edits, "
                                       f"{_ci(z['score'], z['ci_low'], z['ci_high'])} at {counts[-1]}")
            fell = [_worse(end[t], base[t]) for t in tasks]
            sign = 1 if all(fell) else -1 if not any(fell) else 0
            if sign != 1 and run["status"] != "done":  # what has not fallen yet may still fall
                waiting[f"{label} order {o}"] = run
                per_order.append(f"{label} order {o}: {'none' if sign < 0 else 'some'} fell so far")
            else:
                signs.setdefault(label, []).append(sign)
                per_order.append(f"{label} order {o}: " + {1: "all three fell", -1: "none fell", 0: "some fell"}[sign])
            if not head:
                t0 = tasks[0]
                head = dict(value=end[t0]["score"], n=end[t0]["n"], ci_low=end[t0]["ci_low"],
                            ci_high=end[t0]["ci_high"])
    parts = [f"{STUDY_C_TASKS[t]} ({e['n']} items): {e['unedited']}; " + "; ".join(e["orders"])
             for t, e in by_task.items()] + missing
    if not signs and not waiting:
        return Finding(**common, ours="; ".join(parts), verdict=NOT_MEASURED, query=query,
                       reason="Rerun the ROME run with `--abilities-every 50` (the quick ability suite with "
                              "sentiment, entity typing and closed-book QA).")
    said = {_agreement(s) for s in signs.values()}
    direction = AGREES if 1 in said else DISAGREES if -1 in said else UNDECIDED
    decided = direction != UNDECIDED or (bool(signs) and all(s is not None for s in said))
    outcome = f" Per order: {', '.join(per_order)}" + ("." if decided else "; " + (
        _not_yet(waiting) if waiting else f"the direction waits for {MIN_ORDERS} edit orders of one of them."))
    return Finding(**common, ours=" | ".join(parts) + " (quick suite)", verdict=NOT_COMPARABLE,
                   direction=direction, query=query, **head,
                   reason="GPT-2 XL on study C's data vs SmolLM2-135M on our quick suite, scored every 50 edits "
                          "(no checkpoint at 20)." + outcome)


def _c5(conn, arms) -> Finding:
    common = dict(claim="C5", study="C", statement="Abilities fall because of what the edits write, not only because "
                                                   "the weights move that much.",
                  paper=NO_CONTROL,
                  rule=CONTROL_RULE + "on study C's tasks (sentiment, NER, open QA) at the last ability checkpoint "
                       "both reached; an order agrees when on at least one task ROME's score is below the control's "
                       f"({DIFFERENCE_RULE}) and on none the control's below ROME's, and goes against it when the other way "
                       f"round; with at least {MIN_ORDERS} orders, reproduced when every order agrees, refuted when "
                       f"every order goes against it; {PENDING_RULE}.", page="abilities")
    orders = _shared(arms, ROME, CONTROL)
    if not orders:
        return Finding(**common, ours="no ROME run with its control on one edit order", verdict=NOT_MEASURED,
                       reason="Run `python -m compute run sequential --editor RandomRankOne --hparams "
                              "compute/editors/control.json --hp reference_run=ROME_RUN_ID --abilities-every 50` "
                              "beside a ROME run.")
    ab = derived.ability_scores(conn, kind="sequential", mode="quick")
    parts, signs, measured, ids, going, head = [], [], [], [], {}, {}
    for o in orders:
        rome, control = arms[ROME][o], arms[CONTROL][o]
        ids += [rome["run_id"], control["run_id"]]
        going.update({f"{name} order {o}": run for name, run in (("ROME", rome), ("control", control))
                      if run["status"] != "done"})
        shared = (set(ab.filter(pl.col("run_id") == rome["run_id"])["edit_count"].to_list())
                  & set(ab.filter(pl.col("run_id") == control["run_id"])["edit_count"].to_list())) - {0}
        if not shared:
            continue
        at = max(shared)
        mine, theirs = _scores(ab, rome["run_id"], at), _scores(ab, control["run_id"], at)
        tasks = [t for t in STUDY_C_TASKS if t in mine and t in theirs]
        if not tasks:
            continue
        lower = [t for t in tasks if _worse(mine[t], theirs[t])]
        higher = [t for t in tasks if _worse(theirs[t], mine[t])]
        signs.append((1 if lower and not higher else -1 if higher and not lower else 0)
                     if _finished(rome, control) else None)
        measured.append(o)
        scores = "; ".join(f"{STUDY_C_TASKS[t]}, {mine[t]['n']} items: ROME "
                           f"{_ci(mine[t]['score'], mine[t]['ci_low'], mine[t]['ci_high'])} vs control "
                           f"{_ci(theirs[t]['score'], theirs[t]['ci_low'], theirs[t]['ci_high'])}" for t in tasks)
        parts.append(f"order {o}, edit {at}{_pair_unfinished(('ROME', rome), ('control', control))}: {scores}")
        if not head:
            t0 = tasks[0]
            head = dict(value=mine[t0]["score"], n=mine[t0]["n"], ci_low=mine[t0]["ci_low"], ci_high=mine[t0]["ci_high"])
    query = _runs_query(ids, ability_view="sequential")
    if not signs:
        return Finding(**common, ours="no shared ability checkpoint yet", verdict=NOT_MEASURED, query=query,
                       reason="The control run has no ability checkpoint of its ROME run past the unedited model yet"
                              + (f"; {_not_yet(going)}" if going else "."))
    finding = _order_verdict(common, " | ".join(parts), signs, measured, query, going=going,
                             few=_few("Whether edits cost more abilities than random updates of their size "
                                      "varies with the edit order", measured, "ROME and its control", going),
                             neither="no task lies apart (or tasks lie apart both ways)")
    return replace(finding, **head)


SMALL_BATCH, LARGE_BATCH = 100, 2000


def _c2(conn) -> Finding:
    common = dict(claim="C2", study="C", statement="Small MEMIT batches leave abilities intact; very large ones "
                                                   "destroy them.",
                  paper="GPT-2 XL, batch-single MEMIT: batch 1-100 ≈ unedited, 2000 large drop, 3000 ≈ 0",
                  rule=f"Each ability task after one MEMIT batch against the unedited model, worse when the 95% CI "
                       f"of the difference (store.stats.difference_ci: Newcombe's interval for an accuracy) lies "
                       f"wholly on the worse side of 0: reproduced when "
                       f"no task is worse at batches up to {SMALL_BATCH} and at least half the tasks are worse at a "
                       f"batch of {LARGE_BATCH} or more; refuted when a task is already worse at {SMALL_BATCH} or "
                       f"fewer, or fewer than half are worse at {LARGE_BATCH}+.", page="abilities")
    runs = [r for r in queries.list_runs(conn, kind="batch").iter_rows(named=True)
            if r["editor"] == "MEMIT" and r["n_done"]]
    if not runs:
        return Finding(**common, ours="no MEMIT batch run", verdict=NOT_MEASURED,
                       reason="Run `python -m compute run batch --editor MEMIT --sizes 1,10,100,1000,2000,3000`.")
    run = _best(runs)
    ab = derived.ability_scores(conn, kind="batch", mode="quick").filter(pl.col("run_id") == run["run_id"])
    query = _runs_query([run["run_id"]], ability_view="batch")
    sizes = sorted(b for b in set(ab["batch_size"].to_list()) if b)
    base = {r["task"]: r for r in ab.filter(pl.col("batch_size") == 0).iter_rows(named=True)}
    if not base or not sizes:
        return Finding(**common, ours="no unedited or batch scores", verdict=NOT_MEASURED, query=query,
                       reason="Rerun the batch run: it measures the unedited model first.")

    def worse_at(b: int) -> list[str]:
        return [r["task"] for r in ab.filter(pl.col("batch_size") == b).iter_rows(named=True)
                if r["task"] in base and r["score"] is not None and _worse(r, base[r["task"]])]

    small = {b: worse_at(b) for b in sizes if b <= SMALL_BATCH}
    large = {b: worse_at(b) for b in sizes if b >= LARGE_BATCH}
    n_tasks = len(base)
    worst = max(sizes)
    ours = (f"tasks worse than unedited (the difference's 95% CI on the worse side of 0, of {n_tasks}): "
            + ", ".join(f"b = {b}: {len(worse_at(b))}" for b in sizes) + f"; largest batch {worst}")
    bad_small = sorted({t for ts in small.values() for t in ts})
    if bad_small:
        return Finding(**common, ours=ours, verdict=REFUTED, query=query, n=n_tasks,
                       reason=f"Worse already at {SMALL_BATCH} or fewer: {', '.join(bad_small)}.")
    if not large:
        return Finding(**common, ours=ours, verdict=NOT_MEASURED, query=query, n=n_tasks,
                       reason=f"Batches up to {SMALL_BATCH} match the paper; the largest batch measured is {worst}. "
                              f"Build a case set of 3,000+ cases and run `python -m compute run batch --editor MEMIT "
                              f"--sizes 1000,2000,3000`.")
    hit = any(len(ts) >= n_tasks / 2 for ts in large.values())
    return Finding(**common, ours=ours, verdict=REPRODUCED if hit else REFUTED, query=query, n=n_tasks)


def _pooled(perf: pl.DataFrame, run_id: str, measure: str) -> dict | None:
    """A run's newest-edit measure pooled over its checkpoints: share, n (edits scored) and a Wilson CI."""
    part = perf.filter((pl.col("run_id") == run_id) & (pl.col("measure") == measure) & pl.col("n").is_not_null())
    n = int(part["n"].sum()) if part.height else 0
    if not n:
        return None
    k = float((part["value"] * part["n"]).sum())
    lo, hi = wilson_ci(round(k), n)
    return {"mean": k / n, "n": n, "ci_low": lo, "ci_high": hi}


def _c3(conn, arms) -> Finding:
    common = dict(claim="C3", study="C", statement="RECT top-40% keeps editing performance.",
                  paper="ROME GPT-2 XL reliability/generalisation 1.00/0.90 → 1.00/0.84 with RECT 40% (≥ 94% kept)",
                  rule=f"Newest-edit reliability (ES) and generalisation (PS) pooled over the checkpoints both runs "
                       f"reached, ROME + RECT 40% against ROME on each shared edit order: an order agrees when both "
                       f"keep at least {RETAINS:.0%} of ROME's value and goes against the claim when a 95% CI upper "
                       f"bound lies below {RETAINS:.0%} of it; with at least {MIN_ORDERS} orders, reproduced when "
                       f"every order agrees, refuted when every order goes against it; {PENDING_RULE}.",
                  page="abilities")
    orders = _shared(arms, ROME, RECT_40)
    if not orders:
        return Finding(**common, ours="no ROME and ROME + RECT 40% runs on one edit order", verdict=NOT_MEASURED,
                       reason="Run `python -m compute run sequential --editor ROME --hp rect_top=0.4` beside the plain "
                              "ROME run (same --order-seed).")
    ids = [arms[label][o]["run_id"] for o in orders for label in (ROME, RECT_40)]
    query = _runs_query(ids, key="rect_runs", ability_view="rect")
    parts, signs, head = [], [], {}
    going = {f"{name} order {o}": arms[label][o] for o in orders for label, name in ((ROME, "ROME"), (RECT_40, "RECT 40%"))
             if arms[label][o]["status"] != "done"}
    for o in orders:
        plain, rect = arms[ROME][o], arms[RECT_40][o]
        perf = derived.up_to_common_end(derived.editing_performance(conn, [plain["run_id"], rect["run_id"]]))
        texts, keep, low = [], [], []
        for measure, name in (("reliability (ES)", "ES"), ("generalisation (PS)", "PS")):
            p, r = _pooled(perf, plain["run_id"], measure), _pooled(perf, rect["run_id"], measure)
            if not p or not r:
                return Finding(**common, ours=f"no newest-edit {name} on order {o}", verdict=NOT_MEASURED,
                               query=query, reason="The runs hold no newest-edit scores: rerun them with the current "
                                                   "runner.")
            texts.append(f"{name} {_ci(p['mean'], p['ci_low'], p['ci_high'])} → "
                         f"{_ci(r['mean'], r['ci_low'], r['ci_high'])} ({r['mean'] / p['mean']:.0%} kept)"
                         if p["mean"] else f"{name} 0 → {r['mean']:.2f}")
            keep.append(r["mean"] >= RETAINS * p["mean"])
            low.append(r["ci_high"] < RETAINS * p["mean"])
            head = head or dict(value=r["mean"], n=r["n"], ci_low=r["ci_low"], ci_high=r["ci_high"])
        parts.append(f"order {o}{_pair_unfinished(('ROME', plain), ('RECT 40%', rect))}, newest edits pooled to "
                     f"edit {int(perf['edit_count'].max())}: " + "; ".join(texts))
        signs.append((1 if all(keep) else -1 if any(low) else 0) if _finished(plain, rect) else None)
    found = _order_verdict(common, "; ".join(parts) + " (ROME → RECT 40%)", signs, orders, query, going=going,
                           few=_few("Whether RECT costs editing performance may vary with the edit order", orders,
                                    "the RECT sweep and plain ROME", going),
                           neither=f"a share is below {RETAINS:.0%} of ROME's within its CI")
    return replace(found, **head)


def _c4(conn, arms) -> Finding:
    common = dict(claim="C4", study="C", statement="RECT slows the erosion of abilities.",
                  paper="ROME GPT-2 XL at 20 edits: sentiment 0.0 unregularised vs 0.47 with RECT top-20%",
                  rule=f"Share of the unedited ability margin over chance kept (store.derived.usability, mean over "
                       f"tasks) at the last ability checkpoint both reached, ROME + RECT 20% against ROME on each shared "
                       f"edit order: RECT keeps more when the 95% CI of the difference lies above 0, less when below "
                       f"(normal, from each share's standard error, which its tasks' Wilson CIs give: "
                       f"usability's abilities_left_se); with at least {MIN_ORDERS} orders, reproduced when RECT keeps "
                       f"more on every order, refuted when less on every order; {PENDING_RULE}.", page="abilities")
    orders = _shared(arms, ROME, RECT_20)
    if not orders:
        return Finding(**common, ours="no ROME and ROME + RECT 20% runs on one edit order", verdict=NOT_MEASURED,
                       reason="Run `python -m compute run sequential --editor ROME --hp rect_top=0.2 --abilities-every "
                              "50` beside the plain ROME run (same --order-seed).")
    parts, signs, measured, ids, going = [], [], [], [], {}
    for o in orders:
        plain, rect = arms[ROME][o], arms[RECT_20][o]
        ids += [plain["run_id"], rect["run_id"]]
        going.update({f"{name} order {o}": run for name, run in (("ROME", plain), ("RECT 20%", rect))
                      if run["status"] != "done"})
        up, ur = derived.usability(conn, plain["run_id"]), derived.usability(conn, rect["run_id"])
        common_counts = sorted(set(up["edit_count"].to_list()) & set(ur["edit_count"].to_list()))
        if not common_counts or common_counts[-1] == 0:
            continue
        at = common_counts[-1]
        rp, rr = (u.filter(pl.col("edit_count") == at).row(0, named=True) for u in (up, ur))
        kp, kr = rp["abilities_left"], rr["abilities_left"]
        if kp is None or kr is None:
            continue
        se = math.hypot(rp["abilities_left_se"] or 0.0, rr["abilities_left_se"] or 0.0)
        lo, hi = kr - kp - 1.96 * se, kr - kp + 1.96 * se
        parts.append(f"order {o}{_pair_unfinished(('ROME', plain), ('RECT 20%', rect))}, edit {at}: ROME keeps "
                     f"{kp:.2f}, RECT 20% {kr:.2f} of the ability margin (difference {_signed_ci(kr - kp, lo, hi)})")
        signs.append((1 if lo > 0 else -1 if hi < 0 else 0) if _finished(plain, rect) else None)
        measured.append(o)
    query = _runs_query(ids, key="rect_runs", ability_view="rect")
    if not signs:
        return Finding(**common, ours="no shared ability checkpoints", verdict=NOT_MEASURED, query=query,
                       reason="Rerun both with `--abilities-every 50`.")
    return _order_verdict(common, "; ".join(parts), signs, measured, query, going=going,
                          few=_few("A difference between two runs varies with the edit order", measured,
                                   "the RECT sweep and plain ROME", going), neither="the CI of the difference includes 0")


# --------------------------------------------------------------------------- all claims, and the README block


def findings(conn: sqlite3.Connection) -> list[Finding]:
    """Every headline claim of the three studies beside what this store measures, in claim order."""
    refs = _robustness_runs(conn)
    summary = derived.robustness_summary(conn, run_ids=[r["run_id"] for r in refs.values()] or None,
                                         metrics=("acc", "rev")) if refs else pl.DataFrame()
    arms = _arms(conn)
    return [
        _a1(conn, refs, summary),
        _drop(conn, refs, summary, "A2", "paraphrase", "A paraphrase lowers acc below the plain prompt's."),
        _drop(conn, refs, summary, "A3", "context_pronoun",
              "A related context with the subject as a pronoun lowers acc far below the plain prompt's."),
        _drop(conn, refs, summary, "A4", "dialogue", "A dialogue lowers acc below the plain prompt's."),
        _drop(conn, refs, summary, "A5", "doubt", "Raising doubt is the strongest attack: acc falls, the old "
                                                  "answer returns."),
        _a6(conn),
        _a7(conn, refs),
        _a8(conn, refs),
        _b1(conn, arms),
        _b2(conn, arms),
        _b3(conn, arms),
        _b4(conn, arms),
        _b5(conn, arms),
        _b6(conn, arms),
        _c1(conn, arms),
        _c2(conn),
        _c3(conn, arms),
        _c4(conn, arms),
        _c5(conn, arms),
    ]


def plan_part(conn: sqlite3.Connection) -> str:
    """One sentence for a store built from part of a plan (the plan status `plan snapshot` keeps in it,
    store.queries.plan_status, with units not done): how many of the plan's units it holds, as it stood when;
    '' for any other store. The plan's file and the time are quoted only in their own shapes (a record written
    by hand shows neither)."""
    import re

    from .conventions import MINUTE, PLAN_FILE

    plan = queries.plan_status(conn)
    if plan.is_empty() or not (plan["state"] != "done").any():
        return ""
    name, taken = plan["plan"][0], plan["taken_at"][0]
    name = name if isinstance(name, str) and re.fullmatch(PLAN_FILE, name) else "its plan"
    taken = taken if isinstance(taken, str) and re.fullmatch(MINUTE, taken) else "an unrecorded time"
    return (f"This store holds {(plan['state'] == 'done').sum()} of the {plan.height} units of {name} (as it stood at "
            f"{taken}): a claim that needs a unit not computed yet reads not measured yet.")


STUDIES = {"A": "Study A (robustness of single edits, Ma et al.)", "B": "Study B (sequential editing, Gupta et al.)",
           "C": "Study C (general abilities, Gu et al.)"}


def markdown(items: list[Finding], store: str = "store/results.sqlite", markers: str = "findings",
             part: str = "") -> str:
    """A README block: one bullet per claim (claim, paper, EditScope, verdict, rule, reason), by study, headed by
    the command that writes it (`store`: the store's path as the command names it; `markers`: the block's) and,
    for a store built from part of a plan, what part (`part`: plan_part)."""
    which = "" if markers == "findings" else f" --markers {markers}"
    lines = [f"Generated from the store by `python -m store.findings --store {store}{which} --markdown` "
             "(store/findings.py; `--write-readme README.md` rewrites this block, a test keeps it equal to the "
             "output, and the dashboard's Findings page shows the same). The model is SmolLM2-135M, not the papers' "
             "1.5B-7B models: levels are not compared, directions are." + (f" {part}" if part else "")]
    counts = {v: sum(f.verdict == v for f in items) for v in VERDICTS}
    lines.append("")
    lines.append("Verdicts: " + ", ".join(f"{k} {v}" for v, k in counts.items() if k) + ".")
    for study, title in STUDIES.items():
        lines += ["", f"**{title}**", ""]
        for f in items:
            if f.study != study:
                continue
            verdict = f.verdict + (f" (direction {f.direction})" if f.direction else "")
            text = (f"- **{f.claim}** {f.statement} Paper: {f.paper}. EditScope: {f.ours}. "
                    f"**Verdict: {verdict}.** Rule: {f.rule}")
            if f.reason:
                text += f" Note: {f.reason}"
            lines.append(text)
    return "\n".join(lines) + "\n"


START, END = "<!-- findings:start -->", "<!-- findings:end -->"
MARKERS = ("findings", "rebuild-findings")  # the shipped store's block, and the rebuild's (`plan snapshot`)


def markers_of(name: str, allowed: tuple[str, ...] = MARKERS) -> tuple[str, str]:
    """The start and end markers of the README block called `name` (one of `allowed`: this module's MARKERS, or
    another generator's, e.g. store.changes.MARKERS)."""
    if name not in allowed:
        raise ValueError(f"no README block {name!r}: use one of {', '.join(allowed)}")
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def readme_block(text: str, start: str = START, end: str = END) -> str:
    """The generated block of a README's text: what lies between the `start` and `end` markers, stripped."""
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise ValueError(f"the README needs exactly one {start} ... {end} pair; put them where the block belongs.")
    return text[text.index(start) + len(start):text.index(end)].strip("\n")


def with_block(text: str, block: str, start: str = START, end: str = END) -> str:
    """`text` with the block between the markers replaced by `block`."""
    readme_block(text, start, end)  # checks the markers
    return text[:text.index(start) + len(start)] + "\n" + block.strip("\n") + "\n" + text[text.index(end):]


def block(conn: sqlite3.Connection, store: str = "store/results.sqlite", markers: str = "findings") -> str:
    """The README block of the store open on `conn` (markdown of its findings and plan_part)."""
    return markdown(findings(conn), store, markers, plan_part(conn))


def write_readme(readme, text_block: str, markers: str = "findings", allowed: tuple[str, ...] = MARKERS) -> None:
    """Replace the README's block called `markers` (one of `allowed`, see markers_of) with `text_block`."""
    from pathlib import Path

    readme = Path(readme)
    text = with_block(readme.read_text(encoding="utf-8"), text_block, *markers_of(markers, allowed))
    readme.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    import argparse
    from pathlib import Path

    from . import Store, StoreError, default_store_path

    parser = argparse.ArgumentParser(prog="python -m store.findings", description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=None, help="the store to read (read-only; default: the shipped one)")
    parser.add_argument("--markdown", action="store_true", help="print the README block instead of plain lines")
    parser.add_argument("--write-readme", metavar="README", default=None,
                        help="replace the block between the findings markers of this README with the new one")
    parser.add_argument("--markers", choices=MARKERS, default="findings",
                        help="which README block: the shipped store's (findings) or the rebuild's (rebuild-findings)")
    args = parser.parse_args(argv)
    path = args.store or default_store_path()
    try:
        with Store.open(path, readonly=True) as st:
            items = findings(st.conn)
            text = markdown(items, Path(path).as_posix() if args.store else "store/results.sqlite", args.markers,
                            plan_part(st.conn))
    except StoreError as exc:
        parser.exit(2, f"{exc}\n")
    if args.write_readme:
        readme = Path(args.write_readme)
        try:
            write_readme(readme, text, args.markers)
        except (OSError, ValueError) as exc:
            parser.exit(2, f"{readme}: {exc}\n")
    if args.markdown:
        print(text, end="")
    else:
        for f in items:
            print(f"{f.claim}  {f.verdict}{f' ({f.direction})' if f.direction else ''}  {f.ours}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

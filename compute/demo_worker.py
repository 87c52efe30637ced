"""The one-fact edit demo: its engine (`run_demo`, shared by `python -m compute edit` and the dashboard) and the
long-lived worker process that keeps the model loaded between the dashboard's demos.

Where the time of a demo went before issue 22 (168 s in a browser at load 6): loading the model, evaluating the
unedited model on all 16 rephrase types, the edit, evaluating the edited model. Now:

- The unedited model's answers come from the store when it has them (`stored_before`): a finished knowledge
  run that covers a stored case of the same fact (subject, relation, true object), or an earlier demo of that
  fact, with the same model and generation length, whose probes digest (compute.cases.probes_digest) says it
  measured exactly the probes the store holds. A type is reused only where its probe texts and true-object
  targets equal the demo case's (the demo case is built with the stored case's seed, so the wording matches).
  With a different new object, the scores of the new object (nll_new, p_new, es, magnitude) are taken from
  a scoring-only pass (no generation), and `acc` is read again from the stored answers. Types the store lacks
  are evaluated as before; the output names them.
- After the edit the plain and paraphrase probes are evaluated and written first, the other types after
  them (`stream`): the dashboard's page polls the run's rows while the worker writes them.
- The edit's optimised target value is kept on disk (compute.editors.value_cache, keyed on the unedited
  weights' content hash, the request and the settings): a fact edited before is not optimised again.
- `serve` is the worker: `python -m compute.demo_worker --store WORKSPACE --queue DIR ...`, started by
  dashboard.jobs.start_demo on the first demo. It takes request files (`*.json`: the `edit` command's
  arguments and the path of the request's log) from DIR one at a time, loads a model only when a request asks
  for another (model, device) than the one it holds, writes each request's `stage k/n` lines and outcome into
  that request's log and its exit status into `<log>.rc`, and stops after `idle_s` seconds without a request
  or when the dashboard process that started it is gone. It writes only to its --store (the workspace store)
  and opens --shipped read-only; it refuses to start when the two are the same file.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

FIRST_TYPES = ("plain", "paraphrase")  # what a visitor reads first after the edit
NEW_SIDE = ("nll_new", "p_new", "es", "magnitude")  # scores that depend on the new object
TRUE_SIDE = ("nll_true", "p_true", "rank_true", "exact_match", "rev", "fluency")  # and those that do not
STAGES = 6  # `stage k/6: ...` lines are what the dashboard's progress bar reads


class Cancelled(KeyboardInterrupt):
    """The dashboard asked to stop this demo (its cancel file appeared)."""


# ---- the unedited model's answers from the store ---------------------------------------------------------


@dataclass
class StoredBefore:
    """Pre-edit rows of one stored run for the demo case: values[rtype][metric] and generations
    (demo probe id, rtype, text) for the `types` whose wording matched; `new_scores` are the types whose
    stored rows scored the same new object (all their metrics are reused)."""

    store: str
    run_id: str
    case_id: str
    types: list = field(default_factory=list)
    new_scores: list = field(default_factory=list)
    values: dict = field(default_factory=dict)
    generations: list = field(default_factory=list)


def _by_type(probes) -> dict[str, list]:
    out: dict[str, list] = {}
    for pid, p in enumerate(probes):
        out.setdefault(p.rephrase_type, []).append((pid, p))
    return out


def stored_cases(conn, subject: str, relation: str, true_object: str) -> list[dict]:
    """Stored knowledge-base cases of this fact (any case set), newest case set name first."""
    cur = conn.execute("SELECT case_id, case_set, seed FROM cases WHERE subject = ? AND relation = ? "
                       "AND lower(true_object) = lower(?) AND source = 'kb' ORDER BY case_set DESC",
                       (subject, relation, true_object))
    return [dict(zip(("case_id", "case_set", "seed"), row)) for row in cur.fetchall()]


def _load_cases(st, case_ids: Sequence[str]):
    from compute.cases import case_from_rows

    out = []
    for cid in sorted(case_ids):
        row = st.conn.execute("SELECT * FROM cases WHERE case_id = ?", (cid,))
        names = [d[0] for d in row.description]
        values = row.fetchone()
        if values is None:
            return None
        cur = st.conn.execute("SELECT * FROM probes WHERE case_id = ? ORDER BY probe_id", (cid,))
        pnames = [d[0] for d in cur.description]
        out.append(case_from_rows(dict(zip(names, values)), [dict(zip(pnames, r)) for r in cur.fetchall()]))
    return out


def _candidate_runs(st, model: str, gen_tokens: int, case: dict) -> list[dict]:
    """Finished knowledge runs of the case's set (all-types ones first) and demo runs of the case, newest first."""
    from store import queries

    know, demo = [], []
    for run in queries.list_runs(st.conn, status="done").iter_rows(named=True):
        if run["model"] != model:
            continue
        cfg = json.loads(run["config"] or "{}")
        if cfg.get("gen_tokens") != gen_tokens or not cfg.get("probes_digest"):
            continue  # other answer lengths, or measured before runs recorded their probes' digest
        if run["kind"] == "knowledge" and cfg.get("case_set") == case["case_set"]:
            know.append((len(cfg.get("rephrase_types") or []), run, cfg))
        elif run["kind"] == "demo" and cfg.get("case_id") == case["case_id"]:
            demo.append((0, run, cfg))
    know.sort(key=lambda t: -t[0])  # stable: newest first within the same coverage
    return [{**r, "cfg": c} for _, r, c in know + demo]


def stored_before(st, model: str, gen_tokens: int, case) -> StoredBefore | None:
    """The unedited model's stored answers for the demo `case` (an EditCase) in the open store `st`, or None.

    A run qualifies when it is finished, of the same model and `gen_tokens`, covers a stored case of the same
    fact, and its config's probes_digest equals the digest of the probes the store holds for the cases it
    measured (so its rows answer these very texts). Per type, the stored probes must have the demo's texts
    and true-object targets."""
    from compute.cases import probes_digest

    for cand in stored_cases(st.conn, case.subject, case.relation, case.true_object):
        for run in _candidate_runs(st, model, gen_tokens, cand):
            cfg = run["cfg"]
            done = st.done_case_ids(run["run_id"])
            if cand["case_id"] not in done:
                continue
            measured = _load_cases(st, sorted(done))
            if not measured:
                continue
            types = cfg.get("rephrase_types") if run["kind"] == "knowledge" else None
            if probes_digest(measured, types) != cfg["probes_digest"]:
                continue  # the store's probes are not the ones this run measured
            stored_case = next(c for c in measured if c.case_id == cand["case_id"])
            found = _reuse(st, run["run_id"], stored_case, case)
            if found.types:
                found.store = str(st.path)
                return found
    return None


def _reuse(st, run_id: str, stored_case, case) -> StoredBefore:
    mine, theirs = _by_type(case.probes), _by_type(stored_case.probes)
    rows = st.conn.execute("SELECT rephrase_type, metric, value FROM measurements WHERE run_id = ? AND case_id = ? "
                           "AND edit_count = 0", (run_id, stored_case.case_id)).fetchall()
    values: dict = {}
    for rtype, metric, value in rows:
        values.setdefault(rtype, {})[metric] = value
    gens = {pid: text for pid, text in st.conn.execute(
        "SELECT probe_id, text FROM generations WHERE run_id = ? AND case_id = ? AND edit_count = 0 AND phase = 'pre'",
        (run_id, stored_case.case_id)).fetchall()}
    from compute.cases import NEIGHBOURHOOD
    from compute.scoring import mentions

    out = StoredBefore("", run_id, stored_case.case_id)
    for rtype, probes in mine.items():
        if rtype == NEIGHBOURHOOD or rtype not in values or rtype not in theirs:
            continue
        other = theirs[rtype]
        if [(p.text, p.target_true) for _, p in probes] != [(p.text, p.target_true) for _, p in other]:
            continue
        texts = [gens.get(pid) for pid, _ in other]
        if any(t is None for t in texts):
            continue
        same_new = [p.target_new for _, p in probes] == [p.target_new for _, p in other]
        metrics = {m: v for m, v in values[rtype].items() if m in TRUE_SIDE or (same_new and m in NEW_SIDE + ("acc",))}
        if not same_new:  # the stored answers read again for this demo's new object
            metrics["acc"] = sum(float(mentions(t, case.new_names())) for t in texts) / len(texts)
        out.types.append(rtype)
        if same_new:
            out.new_scores.append(rtype)
        out.values[rtype] = metrics
        out.generations += [(pid, rtype, t) for (pid, _), t in zip(probes, texts)]
    return out


def before_edit(lm, case, types: Sequence[str], gen_tokens: int, found: StoredBefore | None):
    """(CaseEvaluation of the unedited model, what is left for `after_undo`, what was recomputed): stored rows
    where `found` has them and a full evaluation of the other types (with the neighbourhood prompts, as before
    issue 22). The new object's scores of reused types that scored another new object, and the neighbourhood
    prompts when no full evaluation ran, need no generation and no one waits for them: they are left for
    `after_undo`, which runs them on the restored (bit-identical) weights once the edited answers are out."""
    from compute.evaluate import CaseEvaluation, evaluate_cases

    pre = CaseEvaluation(case.case_id)
    reused = list(found.types) if found else []
    full = [t for t in types if t not in reused]
    rescore = [t for t in reused if t not in found.new_scores] if found else []
    if found:
        pre.values.update({rtype: dict(found.values[rtype]) for rtype in reused})
        pre.generations = list(found.generations)
    if full:
        ev = evaluate_cases(lm, [case], full, gen_tokens=gen_tokens)[0]
        pre.values.update(ev.values)
        pre.generations += ev.generations
    pre.generations.sort(key=lambda g: g[0])
    later = {"types": rescore, "neighbourhood": not full} if rescore or not full else None
    return pre, later, {"full": full, "new_object_scores": rescore}


def after_undo(lm, case, pre, later) -> list[str]:
    """Complete `pre` with what before_edit left for later (scoring only, no generation); returns the rephrase
    types (and 'neighbourhood') whose rows changed."""
    from compute.evaluate import evaluate_cases

    if not later:
        return []
    ev = evaluate_cases(lm, [case], later["types"], generation=False, neighbourhood=later["neighbourhood"])[0]
    for rtype, metrics in ev.values.items():
        if rtype in later["types"]:
            pre.values[rtype].update({m: metrics[m] for m in NEW_SIDE if m in metrics})
        else:
            pre.values[rtype] = metrics  # the neighbourhood prompts
    return list(ev.values)


# ---- the engine -------------------------------------------------------------------------------------------


class DemoEngine:
    """What a demo needs loaded, kept between demos: the model (one (model, device) at a time), the case builder
    and each editor's setup. `loads` counts model loads."""

    def __init__(self):
        self.loads = 0
        self._key = None
        self._lm = None
        self._builder = None
        self._editors: dict = {}

    def model(self, args, out: Callable[[str], None]):
        from compute.setup import load_model_for

        key = (args.model, args.device)
        if key != self._key:
            self._lm = self._builder = None
            self._editors = {}
            t = time.monotonic()
            self._lm = load_model_for(args)
            self.loads += 1
            self._key = key
            out(f"model {self._lm.name} on {args.device}: loaded in {time.monotonic() - t:.1f} s (load {self.loads} "
                f"of this process)")
        else:
            out(f"model {self._lm.name} on {args.device}: already loaded (load {self.loads} of this process)")
        return self._lm

    def builder(self, args, lm):
        from compute.cases import CaseBuilder
        from compute.setup import load_kb, paragraphs

        if self._builder is None:
            self._builder = CaseBuilder(load_kb(args), lm.tokenizer, paragraphs(args))
        return self._builder

    def editor(self, args, lm):
        from compute.editors.value_cache import ValueCache
        from compute.setup import editor_setup

        key = (args.editor, getattr(args, "hparams", None), args.seed)
        if key not in self._editors:
            ed, hp, ctx = editor_setup(args, lm, args.editor)
            # every demo edits the unedited model, so a fact edited before (the page's default one, a visitor's
            # second try) finds its optimised value on disk, keyed on the weights' content hash
            # (compute.editors.value_cache; ROME, MEMIT and AlphaEdit read it, other editors ignore it)
            ctx.value_cache = ValueCache(Path(ctx.cache_dir) / "values")
            self._editors[key] = (ed, hp, ctx)
        return self._editors[key]


def _open_readonly(path):
    from store import Store, StoreError

    try:
        return Store.open(Path(path), readonly=True) if path and Path(path).is_file() else None
    except StoreError:
        return None


def demo_case(builder, args, lookup: Sequence[Path]):
    """The demo's EditCase: as `CaseBuilder.custom_case` builds it, but with the seed of a stored case of the same
    fact when a store holds one (the probes' wording depends on the seed, so the stored answers fit)."""
    case = builder.custom_case(args.subject, args.relation, args.new, args.true)
    for path in lookup:
        st = _open_readonly(path)
        if st is None:
            continue
        with st:
            found = stored_cases(st.conn, case.subject, case.relation, case.true_object)
        seeds = [c["seed"] for c in found if c["seed"] is not None]
        if seeds and seeds[0] != case.seed:
            fact = next(f for f in builder.kb.facts_of(case.subject)
                        if f.relation == case.relation and f.object == case.true_object)
            return builder.case(fact, int(seeds[0]), case.case_set, None, new_object=case.new_object)
        if seeds:
            break
    return case


def run_demo(args, engine: DemoEngine, *, out: Callable[[str], None], lookup: Sequence[Path] = (),
             stream: bool = True, cancelled: Callable[[], bool] = lambda: False) -> str | None:
    """Edit one fact, show every rephrase type before and after, save the demo as a run in args.store (unless
    args.no_save). `lookup`: stores searched for the unedited model's answers (read-only; args.store first).
    With `stream` the edited model's plain and paraphrase answers are written before the other types'.
    Returns the run id (None with --no-save)."""
    from compute.cases import probes_digest
    from compute.editors import EditRequest, apply_edit, undo
    from compute.editors.base import hparams_dict
    from compute.evaluate import CaseEvaluation, evaluate_cases
    from compute.experiments.common import recording
    from compute.experiments.robustness import edit_rows
    from compute.provenance import provenance
    from store import Store
    from store.metrics import REPHRASE_TYPES

    def check():
        if cancelled():
            raise Cancelled()

    out(f"stage 1/{STAGES}: loading the model and the knowledge base")
    lm = engine.model(args, out)
    ed, hp, ctx = engine.editor(args, lm)
    builder = engine.builder(args, lm)
    stores = [p for p in dict.fromkeys([Path(args.store), *map(Path, lookup)])]
    case = demo_case(builder, args, stores)
    out(f"edit: {case.prompt} {case.true_object} -> {case.new_object}   ({ed.name}, {lm.name})")
    check()
    out(f"stage 2/{STAGES}: the unedited model on every rephrase type")
    found = None
    for path in stores:
        st = _open_readonly(path)
        if st is None:
            continue
        with st:
            found = stored_before(st, lm.name, args.gen_tokens, case)
        if found:
            break
    pre, later, redone = before_edit(lm, case, REPHRASE_TYPES, args.gen_tokens, found)
    if found:
        out(f"unedited answers from the store: run {found.run_id} ({len(found.types)} types"
            + (f"; recomputed: {', '.join(redone['full'])}" if redone["full"] else "")
            + (f"; the new object's scores on {len(redone['new_object_scores'])} types follow after the edit (the "
               "store scored another new object)" if redone["new_object_scores"] else "") + ")")
    else:
        out("unedited answers recomputed: the store holds no baseline of this fact with these probes")
    check()

    st = None if args.no_save else Store.open(args.store, create=True)
    run_id = None
    try:
        if st is not None:
            row, probes = case.to_rows()
            st.write_cases([row], probes)
            run_id = st.start_run(kind="demo", model=lm.name, editor=ed.name, hparams=hparams_dict(hp), seed=args.seed,
                                  config={"case_id": case.case_id, "gen_tokens": args.gen_tokens,
                                          "probes_digest": probes_digest([case]),
                                          "before_from": found.run_id if found else None,
                                          "before_recomputed": redone["full"]},
                                  provenance=provenance(str(lm.device)), n_total=1)
            st.write_measurements(pre.rows(run_id, 0))
            st.write_generations(pre.generation_rows(run_id, 0, "pre"))
            out(f"demo run {run_id}")
        with _recording(st, run_id, recording):
            check()
            out(f"stage 3/{STAGES}: editing with {ed.name}")
            hits = getattr(ctx.value_cache, "hits", 0)
            result = apply_edit(lm, [EditRequest.from_case(case)], ed.name, hp, ctx)
            if getattr(ctx.value_cache, "hits", 0) > hits:
                out("the edit's target value came from the value cache (this fact was edited before on these weights)")
            post = CaseEvaluation(case.case_id)
            try:
                rest = [t for t in REPHRASE_TYPES if t not in FIRST_TYPES]
                groups = [(4, "the edited model: plain and paraphrase", list(FIRST_TYPES), False),
                          (5, "the edited model: the other rephrase types", rest, True)] if stream \
                    else [(4, "the edited model on every rephrase type", list(REPHRASE_TYPES), True)]
                for k, what, types, neighbours in groups:
                    check()
                    out(f"stage {k}/{STAGES}: {what}")
                    ev = evaluate_cases(lm, [case], types, gen_tokens=args.gen_tokens, prefix=result.prefix,
                                        neighbourhood=neighbours)[0]
                    post.values.update(ev.values)
                    post.generations += ev.generations
                    if st is not None:
                        extra = edit_rows(run_id, case.case_id, result.info) if neighbours else []
                        st.write_measurements(ev.rows(run_id, 1) + extra)
                        st.write_generations(ev.generation_rows(run_id, 1, "post"))
                        out(f"written after the edit: {', '.join(ev.values)}")
            finally:
                undo(lm, result)
            check()
            done_later = after_undo(lm, case, pre, later)
            if st is not None and done_later:
                st.write_measurements([r for r in pre.rows(run_id, 0) if r["rephrase_type"] in done_later])
            _print_table(out, case, pre, post, result)
            if st is not None:
                out(f"stage 6/{STAGES}: saving the run")
                st.heartbeat(run_id, n_done=1)  # its one edit is measured: the run reads 1/1 done
                st.finish_run(run_id, status="done", timings={"edit_seconds": result.info.get("seconds")})
    finally:
        if st is not None:
            st.close()
    if run_id:
        out(f"saved as run {run_id}")
    return run_id


class _recording:
    """compute.experiments.common.recording when there is a run to mark, else nothing."""

    def __init__(self, st, run_id, recording):
        self.cm = recording(st, run_id) if st is not None and run_id else None

    def __enter__(self):
        return self.cm.__enter__() if self.cm else None

    def __exit__(self, *exc):
        return self.cm.__exit__(*exc) if self.cm else False


def _print_table(out, case, pre, post, result) -> None:
    from store.metrics import REPHRASE_TYPES

    gens_pre = {r: t for _, r, t in pre.generations}
    gens_post = {r: t for _, r, t in post.generations}
    for rtype in REPHRASE_TYPES:
        a, b = pre.values.get(rtype, {}), post.values.get(rtype, {})
        out(f"\n[{rtype}]  P(new) {a.get('p_new', float('nan')):.3f} -> {b.get('p_new', float('nan')):.3f}   "
            f"P(true) {a.get('p_true', float('nan')):.3f} -> {b.get('p_true', float('nan')):.3f}"
            f"   acc {a.get('acc', float('nan')):.0f} -> {b.get('acc', float('nan')):.2f}   "
            f"rev {a.get('rev', float('nan')):.2f} -> {b.get('rev', float('nan')):.2f}")
        out(f"  before: {gens_pre.get(rtype, '')!r}")
        out(f"  after:  {gens_post.get(rtype, '')!r}")
    ns = post.values.get("neighbourhood", {}).get("ns", float("nan"))
    out(f"\nneighbourhood score after the edit: {ns:.2f}   edit took {result.info.get('seconds', 0):.1f} s")


# ---- the worker process -----------------------------------------------------------------------------------


def _same_file(a: Path, b: Path) -> bool:
    a, b = Path(a).resolve(), Path(b).resolve()
    return a == b or (a.exists() and b.exists() and os.path.samefile(a, b))


def _claim(queue: Path) -> Path | None:
    """The oldest waiting request, renamed to *.taken so that it is handled once."""
    for path in sorted(queue.glob("*.json")):
        taken = path.with_suffix(".taken")
        try:
            path.rename(taken)
        except OSError:
            continue
        return taken
    return None


def handle(request: Path, engine: DemoEngine, store: Path, shipped: Path | None, parser: argparse.ArgumentParser,
           parent: int | None = None) -> int:
    """Run one request file; its log gets the demo's output, `<log>.rc` its exit status (written last). The demo
    stops at its next stage when its cancel file appears or the process `parent` is gone. `parser` checks the
    request's command line: the CLI's own (compute.cli.build_parser), which the worker's entry point `main`
    passes in, so that this module, like every library module, never imports compute.cli."""
    from compute.editors import EditorError
    from compute.models import ModelError
    from store import StoreError

    data = json.loads(request.read_text())
    log = Path(data["log"])
    cancel = log.with_suffix(".cancel")
    with open(log, "a", buffering=1) as f:
        def out(text: str = "") -> None:
            if text.startswith("stage "):  # when it began, for the page's time per stage (dashboard.jobs.stage_times)
                text += f"  [at {time.time():.3f}]"
            f.write(text + "\n")

        try:
            if cancel.exists():
                raise Cancelled()
            args = parser.parse_args(["--store", str(store), "--quiet", *data["argv"]])
            if args.command != "edit":
                raise ValueError(f"the demo worker runs `edit` only, not {args.command!r}")
            run_demo(args, engine, out=out, lookup=[shipped] if shipped else [], stream=True,
                     cancelled=lambda: cancel.exists() or (parent is not None and os.getppid() != parent))
            rc = 0
        except SystemExit as exc:  # the parser refused an argument (its line went to stderr)
            out("error: the demo's arguments were refused")
            rc = exc.code if isinstance(exc.code, int) else 2
        except KeyboardInterrupt as exc:
            out(f"interrupted: {getattr(exc, 'run_id', None) or 'the demo'} was cancelled")
            rc = 130
        except (StoreError, ModelError, EditorError, ValueError, OSError) as exc:
            out("error: " + " ".join(str(exc).split()))
            rc = 2
        except Exception as exc:  # keep serving: one broken demo must not take the loaded model with it
            traceback.print_exc()
            out(f"error: {type(exc).__name__}: {exc}")
            rc = 1
    rc_file = log.with_suffix(".rc")  # whole or absent: the dashboard polls it, and a half-written '' is no status
    partial = rc_file.with_name(rc_file.name + ".partial")
    partial.write_text(str(rc))
    os.replace(partial, rc_file)
    request.unlink(missing_ok=True)
    return rc


def serve(queue: Path, store: Path, shipped: Path | None, idle_s: float, parser: argparse.ArgumentParser,
          lock: Path | None = None, poll_s: float = 0.1, engine: DemoEngine | None = None) -> DemoEngine:
    """Answer request files in `queue` until idle for `idle_s` seconds or the parent process is gone. Before
    stopping it writes `queue/stopping` under `lock` (the file lock dashboard.jobs.start_demo takes), so that
    no request is queued for a worker that is leaving."""
    if shipped is not None and _same_file(store, shipped):
        raise ValueError(f"the demo worker writes to {store}, which is the shipped store: give it the workspace store")
    engine = engine or DemoEngine()
    parent = os.getppid()
    last = time.monotonic()
    queue.mkdir(parents=True, exist_ok=True)
    while True:
        request = _claim(queue)
        if request is not None:
            handle(request, engine, store, shipped, parser, parent)
            last = time.monotonic()
            continue
        if os.getppid() != parent or time.monotonic() - last > idle_s:
            with open(lock or queue / ".lock", "a") as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                if any(queue.glob("*.json")) and os.getppid() == parent:
                    continue
                (queue / "stopping").write_text(str(os.getpid()))
            print(f"demo worker {os.getpid()}: stopping ({'idle' if os.getppid() == parent else 'parent gone'}, "
                  f"{engine.loads} model load(s))", flush=True)
            return engine
        time.sleep(poll_s)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m compute.demo_worker", description="the Edit demo's worker")
    p.add_argument("--store", type=Path, required=True, help="the workspace store it writes demos to")
    p.add_argument("--shipped", type=Path, help="the shown store, read for stored answers (never written)")
    p.add_argument("--queue", type=Path, required=True, help="folder of request files")
    p.add_argument("--lock", type=Path, help="the file lock that dashboard.jobs takes while queueing")
    p.add_argument("--idle-s", type=float, default=600.0, help="stop after this many seconds without a request")
    args = p.parse_args(argv)
    from compute.cli import build_parser  # the process's entry point, as compute/__main__.py is the CLI's
    try:
        serve(args.queue, args.store, args.shipped, args.idle_s, build_parser(), args.lock)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

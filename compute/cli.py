"""Command line: `python -m compute --help`.

Every subcommand works on one store (`--store`, else $EDITSCOPE_STORE, else store/results.sqlite).
Every option is checked before a run row is written: by the parser's types, then (hyperparameter layers, a
sweep's values, a sequential run's panel) right after the model loads. Errors print one line and exit with
status 2; Ctrl-C marks the running run interrupted (exit 130).

This module parses arguments and calls the compute library; library code never imports it (what the
commands share with it lives in compute/stored.py; what a command does with the runs a store holds, start,
resume, report or extend, is compute.runs.decide). Signal handlers are installed by compute/__main__.py
only, never on import or by `main`, so that calling `main` in a test leaves the process's handlers alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from compute.setup import check_layers_fit
from compute.setup import editor_setup as _editor_setup
from compute.setup import pinned_hparams
from compute.setup import load_kb as _load_kb
from compute.setup import load_model_for as _load_model
from compute.setup import paragraphs as _paragraphs
from compute.runs import decide, matching_runs, spec_for
from compute.stored import load_case_set
from store.conventions import PROBES_ALWAYS_KEPT
from store import Store, StoreError, default_store_path

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
MAX_TEXT = 200  # characters in a subject, an object, a relation or a case-set name given on the command line


# ---- option checks: every option is checked here or right after the model loads, before any run row exists --


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `error: argument --limit: ...` and exit status 2, no usage block."""

    def error(self, message: str):
        self.exit(EXIT_ERROR, f"error: {message} (see `{self.prog} --help`)\n")


def at_least(lo: int):
    """An argparse type: a whole number >= lo."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be at least {lo}, got {value}")
        return value

    parse.__name__ = f"whole number >= {lo}"
    return parse


def text(max_len: int = MAX_TEXT):
    """An argparse type: non-empty text on one line, at most `max_len` characters (stripped)."""

    def parse(value: str) -> str:
        out = value.strip()
        if not out:
            raise argparse.ArgumentTypeError("is empty")
        if len(out) > max_len:
            raise argparse.ArgumentTypeError(f"is {len(out)} characters long; at most {max_len} are allowed")
        if any(ord(c) < 32 for c in out):
            raise argparse.ArgumentTypeError("holds a line break or control character; give plain text on one line")
        return out

    parse.__name__ = "text"
    return parse


def deadline_arg(value: str) -> str:
    """A --deadline checked when parsed (the plan module reads it again when the run starts)."""
    from compute.plan import parse_deadline

    try:
        parse_deadline(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def device(value: str) -> str:
    """An argparse type: a torch device name (cpu, cuda, cuda:N or mps)."""
    import re

    if not re.fullmatch(r"cpu|cuda(:\d+)?|mps", value):
        raise argparse.ArgumentTypeError(f"must be cpu, cuda, cuda:N or mps, got {value!r}")
    return value


def int_list(value: str) -> list[int]:
    """An argparse type: '1,10,50' -> [1, 10, 50], each a whole number >= 1, none repeated."""
    try:
        out = [int(v) for v in value.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated whole numbers such as 1,10,50, got {value!r}") from None
    if not out or min(out) < 1 or len(set(out)) != len(out):
        raise argparse.ArgumentTypeError(f"must be distinct whole numbers >= 1 such as 1,10,50, got {value!r}")
    return out


def layer_values(value: str) -> list:
    """An argparse type for `run sweep --values`: '1,3,5' (layers) or '2-3-4,4-5-6' (layer lists), each >= 0."""
    try:
        out = [[int(x) for x in v.split("-")] if "-" in v else int(v) for v in value.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be layers such as 1,3,5 or layer lists such as 2-3-4,4-5-6, "
                                         f"got {value!r}") from None
    flat = [x for v in out for x in (v if isinstance(v, list) else [v])]
    if not out or min(flat) < 0:
        raise argparse.ArgumentTypeError(f"must be layers >= 0 such as 1,3,5, got {value!r}")
    return out


def grid_item(value: str) -> tuple[str, list]:
    """An argparse type for `run sweep --grid FIELD=V1,V2,...`: a hyperparameter and its candidate values (JSON
    numbers, true/false or strings)."""
    field, sep, values = value.partition("=")
    if not sep or not field.strip() or not values.strip():
        raise argparse.ArgumentTypeError(f"write FIELD=V1,V2,..., e.g. v_lr=0.5,0.1, got {value!r}")
    out = []
    for v in values.split(","):
        try:
            out.append(json.loads(v))
        except ValueError:
            out.append(v.strip())
    return field.strip(), out


def _out(text: str = "") -> None:
    print(text, flush=True)


def _table(df, max_rows: int = 60) -> None:
    import polars as pl

    with pl.Config(tbl_rows=max_rows, tbl_cols=20, fmt_str_lengths=60, tbl_width_chars=160, tbl_hide_dataframe_shape=True):
        _out(str(df))


def _open_store(args, create: bool = False) -> Store:
    return Store.open(args.store, create=create)


# ---- kb ------------------------------------------------------------------------------------------------


def cmd_kb_build(args) -> None:
    from compute.kb import kb_to_rows

    kb = _load_kb(args)
    with _open_store(args, create=True) as st:
        st.write_kb(*kb_to_rows(kb))
        _out(f"knowledge base {kb.version}: {len(kb.facts)} facts, {len(kb.subjects)} subjects, "
             f"{len(kb.relations())} relations -> {st.path}")


def cmd_kb_show(args) -> None:
    from store import queries

    with Store.open(args.store, readonly=True) as st:
        if args.subject:
            df = queries.kb_subject(st.conn, args.subject)
            if df.is_empty():
                raise ValueError(f"no subject {args.subject!r} in the knowledge base (names are case-sensitive)")
            _table(df)
        elif args.relation:
            _table(queries.kb_facts(st.conn, relation=args.relation, limit=args.limit))
        else:
            _table(queries.kb_relations(st.conn))


# ---- cases ---------------------------------------------------------------------------------------------


def _default_set_name(args) -> str:
    model = Path(args.model).name if args.model else "model"
    rel = "" if not args.relations else "-" + "+".join(args.relations.split(","))
    return f"{model}{rel}-n{args.n}-s{args.seed}"


def cmd_cases_build(args) -> None:
    from compute.cases import CaseBuilder

    kb = _load_kb(args)
    lm = _load_model(args)
    builder = CaseBuilder(kb, lm.tokenizer, _paragraphs(args))
    relations = args.relations.split(",") if args.relations else None
    name = args.set or _default_set_name(args)
    cases = builder.build(args.n, seed=args.seed, relations=relations, case_set=name, balanced=not args.unbalanced)
    with _open_store(args, create=True) as st:
        from store import queries

        stored = set(queries.cases(st.conn, case_set=name)["case_id"])
    if stored and stored != {c.case_id for c in cases}:
        raise ValueError(f"case set {name!r} already exists with other cases: choose another --set name")
    _write_cases(args, cases)
    _out(f"case set {name}: {len(cases)} cases, {sum(len(c.probes) for c in cases)} probes")


def _write_cases(args, cases) -> None:
    rows, probes = [], []
    for case in cases:
        r, p = case.to_rows()
        rows.append(r)
        probes += p
    with _open_store(args, create=True) as st:
        st.write_cases(rows, probes)


def cmd_cases_load(args) -> None:
    from compute.formats import load_cases_file

    name = args.set or f"{args.format}-{Path(args.file).stem}"
    cases = load_cases_file(Path(args.file), args.format, name, _paragraphs(args), limit=args.limit)
    _write_cases(args, cases)
    _out(f"case set {name}: {len(cases)} {args.format} cases loaded from {args.file}")


def cmd_cases_show(args) -> None:
    from store import queries

    with Store.open(args.store, readonly=True) as st:
        if args.case:
            df = queries.probes(st.conn, args.case)
            if df.is_empty():
                raise ValueError(f"no case {args.case!r}: list cases with `python -m compute cases show`")
            for row in df.iter_rows(named=True):
                _out(f"--- probe {row['probe_id']} [{row['rephrase_type']}] true={row['target_true']!r} "
                     f"new={row['target_new']!r}")
                _out(row["text"])
            return
        if not args.set and not args.subject:
            _table(queries.case_sets(st.conn))
            return
        df = queries.cases(st.conn, case_set=args.set, subject_like=args.subject)
        cols = [c for c in ("case_id", "relation", "subject", "true_object", "new_object", "frequency",
                            "connection", "cooccurrence", "popularity_quartile") if c in df.columns]
        _table(df.select(cols).head(args.limit), max_rows=args.limit)


# ---- knowledge ------------------------------------------------------------------------------------------


def cmd_knowledge_measure(args) -> None:
    from compute.knowledge import measure_knowledge
    from store.metrics import REPHRASE_TYPES

    types = list(REPHRASE_TYPES) if args.types == "all" else args.types.split(",")
    unknown = [t for t in types if t not in REPHRASE_TYPES]
    if unknown:
        raise ValueError(f"unknown rephrase type(s) {unknown}: choose from {', '.join(REPHRASE_TYPES)} or 'all'")
    with _open_store(args) as st:
        st.mark_stale_runs()
        cases = load_case_set(st, args.set, args.limit, needs=[*types, *PROBES_ALWAYS_KEPT])
        lm = _load_model(args)
        spec = spec_for("knowledge", lm.name, {"case_set": args.set, "rephrase_types": types,
                                               "gen_tokens": args.gen_tokens, "n_cases": len(cases)})
        found = decide(st, spec, resume=args.resume, again=args.again, unit="cases", done_says="already measured this")
        if found.message:
            _out(found.message)
        run_id = found.run_id
        if found.runs:
            run_id = measure_knowledge(lm, cases, st, rephrase_types=types, gen_tokens=args.gen_tokens,
                                       run_id=found.run_id, case_set=args.set, progress=not args.quiet)
        from store.derived import store_correlations

        store_correlations(st, run_id)
    _out(f"run {run_id}: pre-edit knowledge of {len(cases)} cases stored")
    args.run = run_id
    cmd_knowledge_show(args)


def cmd_knowledge_show(args) -> None:
    from store import derived

    with Store.open(args.store, readonly=True) as st:
        by_q = derived.knowledge_by_quartile(st.conn, case_set=args.set, run_id=args.run)
        if by_q.is_empty():
            raise ValueError("no pre-edit knowledge stored: run `python -m compute knowledge measure --set NAME`")
        _out("Greedy recall of the true object by frequency quartile (1 = rarest), 95% Wilson CI:")
        _table(by_q)
        corr = derived.knowledge_correlations(st.conn, case_set=args.set, run_id=args.run)
        _out("Spearman rank correlation with pre-edit knowledge (95% bootstrap CI; nan = feature constant):")
        _table(corr)


# ---- editing: robustness runs, sweeps, one-fact demo -----------------------------------------------------


def _case_set_for(args, st, lm, kb=None) -> str:
    """The case set named by --set, or the balanced set of --cases N (built when missing)."""
    from store import queries

    name = args.set or f"{Path(args.model).name}-n{args.cases}-s{args.seed}"
    if queries.cases(st.conn, case_set=name).is_empty():
        if args.set:
            raise ValueError(f"no case set {name!r} in {st.path}: build one with `python -m compute cases build`")
        from compute.cases import CaseBuilder

        builder = CaseBuilder(kb or _load_kb(args), lm.tokenizer, _paragraphs(args))
        cases = builder.build(args.cases, seed=args.seed, case_set=name)
        rows, probes = zip(*(c.to_rows() for c in cases))
        st.write_cases(list(rows), [p for ps in probes for p in ps])
        _out(f"built case set {name}: {len(cases)} cases")
    return name


def _baseline(args, st, lm, cases, name: str) -> str | None:
    """A finished all-types knowledge run of the case set (the edit-count-0 numbers), run first if missing."""
    from compute.cases import probes_digest
    from compute.knowledge import measure_knowledge
    from store.metrics import REPHRASE_TYPES

    spec = spec_for("knowledge", lm.name, {"case_set": name, "rephrase_types": list(REPHRASE_TYPES),
                                           "gen_tokens": args.gen_tokens, "n_cases": len(cases)})
    # the baseline must have measured these very probe texts: a case set rebuilt with new wording gets a new one
    digest = probes_digest(cases, REPHRASE_TYPES)
    old = next((r for r in matching_runs(st, spec) if json.loads(r["config"] or "{}").get("probes_digest") == digest),
               None)
    if old and old["status"] == "done":
        return old["run_id"]
    if args.no_baseline:
        return None
    _out(f"measuring the unedited model on every rephrase type of {name} first (the baseline)")
    return measure_knowledge(lm, cases, st, rephrase_types=REPHRASE_TYPES, gen_tokens=args.gen_tokens,
                             run_id=old["run_id"] if old else None, case_set=name, progress=not args.quiet)


def _run_or_resume(st, args, spec, run, unit: str) -> str:
    """The run id of this experiment (compute.runs.decide): the finished matching run (reported; --again starts
    a new one), else `run(run_id)` on the matching unfinished run (resumed) or on None (a new run)."""
    found = decide(st, spec, resume=args.resume, again=args.again, unit=unit)
    if found.message:
        _out(found.message)
    return run(found.run_id) if found.runs else found.run_id


def cmd_run_robustness(args) -> None:
    from compute.experiments.robustness import run_robustness
    from store import derived

    with _open_store(args) as st:
        st.mark_stale_runs()
        lm = _load_model(args)
        ed, hp, ctx = _editor_setup(args, lm, args.editor)
        name = _case_set_for(args, st, lm)
        cases = load_case_set(st, name, args.limit)
        baseline = _baseline(args, st, lm, cases, name)
        spec = spec_for("robustness", lm.name, {"case_set": name, "n_cases": len(cases),
                                                "gen_tokens": args.gen_tokens}, editor=ed.name, hp=hp, seed=ctx.seed)
        run_id = _run_or_resume(
            st, args, spec,
            lambda rid: run_robustness(lm, cases, st, editor=ed.name, hp=hp, ctx=ctx, gen_tokens=args.gen_tokens,
                                       case_set=name, baseline_run=baseline, run_id=rid, progress=not args.quiet),
            "edits")
        _out(f"run {run_id}: {ed.name} on {len(cases)} cases of {name}")
        derived.store_correlations(st, run_id)
        summary = derived.robustness_summary(st.conn, run_ids=run_id, metrics=("acc", "rev"))
        _table(summary.drop("run_id"), max_rows=40)


def cmd_run_sequential(args) -> None:
    from compute.abilities.run import suite
    from compute.experiments.sequential import SequentialConfig, ensure_editor, run_sequential, sequential_config
    from store import derived

    ensure_editor(args.editor)  # the study-B control (RandomRankOne) is registered for sequential runs only
    with _open_store(args) as st:
        st.mark_stale_runs()
        edits = args.edits
        if edits is None:  # a resumed run keeps its own maximum; a new one makes at most 1,000 edits
            run = st.get_run(args.resume) if args.resume else None
            edits = json.loads(run["config"] or "{}").get("max_edits", 1000) if run else 1000
        cfg = SequentialConfig(batch_size=args.batch, max_edits=edits, checkpoint_every=args.every,
                               after_collapse=args.after_collapse, order_seed=args.order_seed,
                               panel_pool=args.panel_pool, panel_size=args.panel_size,
                               abilities_every=args.abilities_every, panel_known_only=not args.panel_any,
                               recheck_every=args.recheck_every, panel_check=args.panel_check)
        cfg.validate()
        lm = _load_model(args)
        ed, hp, ctx = _editor_setup(args, lm, args.editor)
        name = _case_set_for(args, st, lm)
        cases = load_case_set(st, name, args.limit, needs=PROBES_ALWAYS_KEPT)
        abilities = suite("quick") if cfg.abilities_every else None
        final = args.final_abilities or ("full" if cfg.abilities_every else "none")
        spec = spec_for("sequential", lm.name, sequential_config(cfg, name, len(cases), ctx.cov_samples),
                        editor=ed.name, hp=hp, seed=ctx.seed)
        # --resume RUN_ID --edits N: N may be larger; a shorter run of this layout is extended
        found = decide(st, spec, resume=args.resume, again=args.again, unit="edits, resumed from the last checkpoint")
        panel = None
        if found.action == "new":  # a new run: its panel must exist before its run row does (and is found once)
            panel = _check_panel(lm, cases, cfg)
        if found.message:
            _out(found.message)
        run_id = found.run_id
        if found.runs:
            extend = found.action == "extend" or (bool(args.resume) and args.edits is not None)
            run_id = run_sequential(lm, cases, st, editor=ed.name, hp=hp, ctx=ctx, cfg=cfg, case_set=name,
                                    run_id=found.run_id, abilities=abilities, final_abilities=suite(final),
                                    exclude_facts=_ability_facts(), extend=extend, progress=not args.quiet,
                                    beside=args.beside, panel=panel)
        if found.action != "longer" and final != "none":
            _final_suite_if_missing(st, lm, run_id, final, ctx.cache_dir)
        _out(f"run {run_id}: sequential {ed.name}, batch size {cfg.batch_size}, on {name}")
        _table(derived.sequential_curves(st.conn, run_id).drop("run_id"), max_rows=80)
        events = derived.sequential_events(st.conn, run_id)
        if not events.is_empty():
            _out("events:")
            _table(events.drop("run_id"))


def _check_panel(lm, cases, cfg) -> list[str] | None:
    """ValueError unless a new sequential run of `cases` has cases to edit and a fact panel: the panel pool
    holds a case, and (with known facts only) the unedited model recalls enough of the pool. This is the
    panel the run then picks again (the same pure functions of the order, the pool and the model)."""
    from compute.experiments.sequential import ability_case_ids, edit_order, known_panel, split_order

    skip = ability_case_ids(cases, _ability_facts())
    edits, pool_ids = split_order(edit_order([c.case_id for c in cases], cfg.order_seed), cfg, skip)
    if not edits:
        raise ValueError(f"the {len(cases)} cases leave nothing to edit (the ability suite's facts are never "
                         "edited): build a larger set or lower --panel-pool")
    if not pool_ids:
        raise ValueError(f"the panel pool holds no case (--panel-pool {cfg.panel_pool}): a sequential run needs at "
                         f"least one, and {cfg.panel_size} for a full panel; raise --panel-pool")
    if cfg.panel_known_only:
        by_id = {c.case_id: c for c in cases}
        return [c.case_id for c in known_panel(lm, [by_id[i] for i in pool_ids], cfg.panel_size, cfg.panel_tokens)]
    return None


def _final_suite_if_missing(st, lm, run_id: str, mode: str, cache_dir) -> None:
    """A finished sequential run without `mode` ability scores at its last edit count (it ended before
    runs measured them) gets them from its saved final state; a run whose state is not in this cache is
    reported, not failed."""
    from compute.abilities.run import suite
    from compute.experiments.sequential import measure_saved_state
    from store import queries

    run = st.get_run(run_id)
    if run is None or run["status"] != "done":
        return
    ab = queries.abilities(st.conn, run_id)
    if not ab.is_empty() and not ab.filter((ab["mode"] == mode) & (ab["edit_count"] == run["n_done"])).is_empty():
        return
    try:
        count = measure_saved_state(lm, st, run_id, cache_dir, suite(mode))
    except ValueError as exc:
        print(f"note: the {mode} ability suite at the end of run {run_id} is missing: {exc}", file=sys.stderr)
        return
    _out(f"run {run_id}: {mode} ability suite measured on its saved final state ({count} edits)")


def _ability_facts() -> set:
    """The knowledge-base facts the ability suite asks about: every edit experiment leaves them out (with
    or without ability checkpoints, so that runs share one edit order)."""
    from compute.abilities.run import kb_facts_used

    return kb_facts_used()


def cmd_run_batch(args) -> None:
    from compute.abilities.run import suite
    from compute.experiments.batch import run_batch_single

    sizes = args.sizes
    with _open_store(args) as st:
        st.mark_stale_runs()
        lm = _load_model(args)
        ed, hp, ctx = _editor_setup(args, lm, args.editor)
        name = _case_set_for(args, st, lm)
        cases = load_case_set(st, name, args.limit, needs=PROBES_ALWAYS_KEPT)
        spec = spec_for("batch", lm.name, {"case_set": name, "n_cases": len(cases), "sizes": sorted(set(sizes)),
                                           "order_seed": args.order_seed, "panel_pool": args.panel_pool},
                        editor=ed.name, hp=hp, seed=ctx.seed)
        run_id = _run_or_resume(
            st, args, spec,
            lambda rid: run_batch_single(lm, cases, st, editor=ed.name, hp=hp, ctx=ctx, sizes=sizes,
                                         order_seed=args.order_seed, panel_pool=args.panel_pool, case_set=name,
                                         run_id=rid, abilities=suite(args.abilities),
                                         exclude_facts=_ability_facts(), progress=not args.quiet),
            "batch sizes")
        _out(f"run {run_id}: batch-single {ed.name}, sizes {sorted(set(sizes))}, on {name}")
        from store import queries

        m = queries.measurements(st.conn, run_ids=run_id, case_ids="*")
        _table(m.select("edit_count", "metric", "value").sort("edit_count", "metric"))


def cmd_run_grid(args) -> None:
    """`run sweep --grid ...`: a calibration sweep over every combination of the grid (compute.experiments.sweep
    .run_grid), then each setting's ES/PS/NS beside its edits' sizes, and the setting the calibration rule picks."""
    from compute.editors.base import hparams_dict, parse_hparams
    from compute.experiments.sweep import grid_points, run_grid
    from store import diagnostics

    grid = dict(args.grid)
    if len(grid) != len(args.grid):
        raise ValueError("--grid names a field twice: give each field once with all its values")
    with _open_store(args) as st:
        st.mark_stale_runs()
        lm = _load_model(args)
        ed, hp, ctx = _editor_setup(args, lm, args.editor)
        for point in grid_points(grid):  # every setting is checked before the first run exists
            where = "--grid " + " ".join(f"{k}={v}" for k, v in point.items())
            check_layers_fit(ed, parse_hparams(ed.hparams, {**hparams_dict(hp), **point}, where=where), lm, where=where)
        name = _case_set_for(args, st, lm)
        cases = load_case_set(st, name, args.limit, needs=PROBES_ALWAYS_KEPT)
        sweep = args.sweep or f"{ed.name}-calibration-{name}"
        run_grid(lm, cases, st, editor=ed.name, base_hp=hp, grid=grid, ctx=ctx, sweep=sweep, case_set=name,
                 progress=not args.quiet, pinned=pinned_hparams(args, hp))
        summary = diagnostics.calibration_summary(st.conn, sweep)
        _out(f"calibration sweep {sweep} (sorted by median ||dW||/||W|| of one edit):")
        cols = [c for c in (*sorted(grid), "ES", "PS", "NS", "S", "n", "update_rel_median", "clamped_share",
                             "converged_share", "steps_median", "delivered_plain_ge_0.8") if c in summary.columns]
        _table(summary.select(cols))
        reference = {k: getattr(hp, k) for k in grid}
        chosen = diagnostics.choose_setting(summary, reference=reference)
        _out(f"rule: the smallest median edit among settings keeping ES and PS >= 0.95 x those of {reference}: "
             + (", ".join(f"{k}={chosen[k]}" for k in sorted(grid)) + f" (run {chosen['run_id']})" if chosen
                else "no setting qualifies"))


def cmd_run_sweep(args) -> None:
    from compute.experiments.sweep import run_sweep
    from store import derived

    from compute.editors.base import hparams_dict, parse_hparams

    if args.grid:
        if args.values:
            raise ValueError("give either --values (one field) or --grid (a calibration grid), not both")
        return cmd_run_grid(args)
    if not args.values:
        raise ValueError("run sweep needs --values (e.g. --values 1,3,5 for the layer) or --grid FIELD=V1,V2")
    if args.field == "layer" and any(isinstance(v, list) for v in args.values):
        raise ValueError("--field layer takes single layers such as --values 1,3,5; lists such as 2-3-4 "
                         "need --field layers")
    values = [v if args.field == "layer" or isinstance(v, list) else [v] for v in args.values]
    with _open_store(args) as st:
        st.mark_stale_runs()
        lm = _load_model(args)
        ed, hp, ctx = _editor_setup(args, lm, args.editor)
        for value in values:  # each swept setting is checked before the first run exists
            where = f"--values {'-'.join(map(str, value)) if isinstance(value, list) else value}"
            check_layers_fit(ed, parse_hparams(ed.hparams, {**hparams_dict(hp), args.field: value}, where=where),
                             lm, where=where)
        name = _case_set_for(args, st, lm)
        cases = load_case_set(st, name, args.limit, needs=PROBES_ALWAYS_KEPT)
        sweep = args.sweep or f"{ed.name}-{args.field}-{name}"
        run_sweep(lm, cases, st, editor=ed.name, base_hp=hp, field=args.field, values=values, ctx=ctx,
                  sweep=sweep, case_set=name, progress=not args.quiet, pinned=pinned_hparams(args, hp))
        _out(f"sweep {sweep}:")
        _table(derived.sweep_summary(st.conn, sweep).drop("sweep", "run_id"))


def cmd_edit(args) -> None:
    """One-fact demo (compute.demo_worker.run_demo): the unedited model's answers from the store when it holds
    them for these probes, else computed; the edit; the edited model on every rephrase type; the run saved."""
    from compute.demo_worker import DemoEngine, run_demo

    run_demo(args, DemoEngine(), out=_out, stream=False)


# ---- runs, store, model -----------------------------------------------------------------------------------


def cmd_runs_list(args) -> None:
    from store import queries

    with Store.open(args.store, readonly=True) as st:
        df = queries.list_runs(st.conn, kind=args.kind)
        cols = [c for c in ("run_id", "kind", "model", "editor", "status", "n_done", "n_total", "started_at",
                            "finished_at", "code_version", "error") if c in df.columns]
        _table(df.select(cols))


def cmd_store_info(args) -> None:
    from store import queries

    with Store.open(args.store, readonly=True) as st:
        _out(f"{st.path}: EditScope store, schema v{st.schema_version}")
        _table(queries.store_summary(st.conn))


def cmd_store_migrate(args) -> None:
    with Store.open(args.store) as st:
        _out(f"{st.path}: schema v{st.schema_version}")


def cmd_store_finalize(args) -> None:
    from store.derived import store_correlations

    with Store.open(args.store) as st:
        st.mark_stale_runs()
        n = store_correlations(st)
        if n:
            _out(f"stored the popularity correlations of {n} finished run(s)")
        st.finalize()
        _out(f"{st.path}: checkpointed, vacuumed, journal mode DELETE ({st.path.stat().st_size / 1e6:.1f} MB)")


def cmd_store_merge(args) -> None:
    """Merge finished shard stores into --into (created when missing), one transaction per shard; a refused shard
    is reported and skipped, the others still merge, and the command then fails naming the refused ones."""
    from store.merge import merge_shard

    refused = []
    with Store.open(args.into, create=True) as target:
        for shard in args.shards:
            try:
                _out(merge_shard(target, shard).summary())
            except StoreError as exc:
                refused.append(str(shard))
                print("refused: " + " ".join(str(exc).split()), file=sys.stderr)
    if refused:
        raise StoreError(f"{len(refused)} of {len(args.shards)} shard(s) not merged ({', '.join(refused)}); "
                         f"the others are in {args.into}")


def cmd_store_delete(args) -> None:
    """Delete runs and every row they own (the schema's cascades and the measurements trigger), one transaction.
    For a run that must be merged again from a shard that recomputed part of it; a running run is refused."""
    with Store.open(args.store) as st:
        found = {r[0]: r[1] for r in st.conn.execute(
            f"SELECT run_id, status FROM runs WHERE run_id IN ({','.join('?' * len(args.runs))})", args.runs)}
        missing = [r for r in args.runs if r not in found]
        if missing:
            raise ValueError(f"no run {', '.join(map(repr, missing))} in {st.path}: see `runs list`; nothing deleted")
        live = [r for r, status in found.items() if status == "running"]
        if live and not args.force:
            raise ValueError(f"run(s) {', '.join(live)} are marked running: stop the process that computes them "
                             f"(or pass --force if it is dead); nothing deleted")
        st.delete_runs(args.runs)
    _out(f"deleted {len(args.runs)} run(s) and their rows from {args.store}")


def cmd_store_rederive(args) -> None:
    """Re-derive what the store's rules find in stored runs (sequential runs' phases, disabling edits, collapse and
    panel floor; knowledge and robustness runs' popularity correlations) with the current code: no edit or
    measurement is recomputed, only the derived rows are replaced. A finalized store (the shipped one) is
    finalized again after it, so it stays one file in rollback-journal mode, ready to commit."""
    from store import is_finalized, queries
    from store.derived import rederive_sequential_events, store_correlations

    shipped = is_finalized(args.store)
    with Store.open(args.store) as st:
        try:
            runs = queries.list_runs(st.conn, kind="sequential")
            if args.run:
                runs = runs.filter(runs["run_id"] == args.run)
                if runs.is_empty():
                    raise ValueError(f"no sequential run {args.run!r} in {st.path}: see `runs list --kind sequential`")
            for run_id in runs["run_id"].to_list():
                n = rederive_sequential_events(st, run_id)
                _out(f"{run_id}: {n} derived event(s)")
            if not args.run:
                with st.conn:  # every run's correlations again, with the current statistics
                    st.conn.execute("DELETE FROM correlations")
                _out(f"stored the popularity correlations of {store_correlations(st)} finished run(s)")
        finally:
            if shipped:  # opening it writable switched it to WAL, error or not
                st.finalize()
                _out(f"{st.path}: finalized again (journal mode DELETE), as it was")


def cmd_model_info(args) -> None:
    lm = _load_model(args)
    n_params = sum(p.numel() for p in lm.model.parameters())
    _out(f"{lm.name}: {type(lm.model).__name__}, {n_params / 1e6:.1f}M parameters, {lm.n_layers} layers, "
         f"model_type={lm.model.config.model_type}, source={lm.source}")
    _out(f"edited matrix template: {lm.arch.mlp_down}  shape {tuple(lm.down_proj(0).weight.shape)}")
    if args.prompt:
        from compute.scoring import generate

        _out(f"{args.prompt!r} -> {generate(lm, [args.prompt], max_new_tokens=20)[0]!r}")


# ---- plans -----------------------------------------------------------------------------------------------


def _write_status_block(plan, store: Path, timings_from: Path | None, readme: Path) -> None:
    """The plan's status in `store` between the README's plan-status markers (from the stores alone: a fresh
    clone writes the same block)."""
    from compute import plan as plans
    from store.findings import with_block

    block = plans.status_markdown(plan, plans.plan_status(plan, store, timings_from=timings_from), store.as_posix(),
                                  Path(timings_from).as_posix() if timings_from else None)
    readme.write_text(with_block(readme.read_text(), block, plans.README_START, plans.README_END))
    _out(f"wrote the plan status of {store} into {readme}")


def _keep_plan_status(plan, store: Path, timings_from: Path | None) -> None:
    """The plan's status in the copy's own meta table (compute.plan.keep_status), for the dashboard's Overview:
    which units the copy holds, which are partial or missing, and the CPU-hours they need."""
    from compute import plan as plans
    from store.conventions import PLAN_STATUS_META

    record = plans.keep_status(plan, store, timings_from)
    done = sum(u["state"] == "done" for u in record["units"])
    _out(f"kept the plan's status in {store} (meta {PLAN_STATUS_META}: {done} of {len(record['units'])} units done)")


def _write_rebuild_findings(store: Path, readme: Path) -> None:
    """The studies' verdicts on a rebuild snapshot (store.findings) between the README's rebuild-findings
    markers, headed by the command that writes the same block; a README without those markers is left as it is."""
    from store import findings as fmod

    start, end = fmod.markers_of("rebuild-findings")
    text = readme.read_text(encoding="utf-8")
    if start not in text:
        _out(f"{readme} has no {start} ... {end} block: the rebuild's findings were not written")
        return
    with Store.open(store, readonly=True) as st:
        fmod.write_readme(readme, fmod.block(st.conn, store.as_posix(), "rebuild-findings"), "rebuild-findings")
    _out(f"wrote the findings of {store} into {readme}")


def _write_rebuild_changes(store: Path, previous: Path, readme: Path) -> None:
    """What changed from `previous` to the snapshot (store.changes) between the README's rebuild-changes markers."""
    from store import changes

    start, end = changes.markers_of("rebuild-changes")
    if start not in readme.read_text(encoding="utf-8"):
        _out(f"{readme} has no {start} ... {end} block: what changed from {previous} was not written")
        return
    with Store.open(store, readonly=True) as st:
        after = changes.export(st.conn, store.as_posix())
    block = changes.markdown(changes.load(previous), after, store.as_posix(), previous.as_posix(), "rebuild-changes")
    changes.write_readme(readme, block, "rebuild-changes")
    _out(f"wrote what changed from {previous} to {store} into {readme}")


def cmd_plan(args) -> None:
    """`plan run` computes a plan's missing and partial units into the store; `plan status` reads their state
    (compute/plan.py). Every unit's command line is checked with this module's parser before anything runs."""
    from compute import plan as plans

    target = args.plan_store or args.store
    plan = plans.load_plan(args.plan, build_parser(), device=getattr(args, "device", None))
    if args.sub == "snapshot":
        source, to = Path(target), Path(args.to)
        if not source.exists():
            raise ValueError(f"no store at {source}: name the plan's store with --store")
        if to.resolve() == source.resolve():
            raise ValueError(f"--to {to} is the plan's store itself: name another file")
        if args.changes_from and not args.write_readme:
            raise ValueError("--changes-from writes into a README: name it with --write-readme")
        if args.changes_from and not args.changes_from.is_file():
            raise ValueError(f"--changes-from {args.changes_from}: no such file; name the store the copy will "
                             "replace, or an export of it (python -m store.changes --export)")
        plans.copy_store(source, to)  # SQLite's backup API: consistent while the driver writes the source
        with Store.open(to) as st:
            running = [r[0] for r in st.conn.execute("SELECT run_id FROM runs WHERE status = 'running'")]
            for run_id in running:  # in the copy: their processes go on computing the source
                st.finish_run(run_id, status="interrupted")
        _out(f"copied {source} to {to}; {len(running)} running run(s) marked interrupted in the copy")
        cmd_store_rederive(argparse.Namespace(store=to, run=None))
        with Store.open(to) as st:  # a file to commit: only the probes its runs read (the rest restorable)
            left = st.leave_out_unread_probes()
        for case_set, types in left.items():
            _out(f"left out the probes of case set {case_set} of the types no run in the copy measured: "
                 f"{', '.join(types)}")
        _keep_plan_status(plan, to, args.timings_from)
        cmd_store_finalize(argparse.Namespace(store=to))
        if args.write_readme:
            _write_status_block(plan, to, args.timings_from, Path(args.write_readme))
            _write_rebuild_findings(to, Path(args.write_readme))
            if args.changes_from:
                _write_rebuild_changes(to, args.changes_from, Path(args.write_readme))
        return
    if args.sub == "status":
        if args.write_readme:
            _write_status_block(plan, Path(target), args.timings_from, Path(args.write_readme))
            return
        from compute.models import default_cache_dir

        folder = plans.plan_folder(plan, args.cache_dir)
        for line in plans.status_lines(plans.plan_status(plan, target, shards=folder, timings_from=args.timings_from,
                                                         states_in=Path(args.cache_dir or default_cache_dir()),
                                                         restore_left_out=True)):
            _out(line)
        return
    deadline = plans.parse_deadline(args.deadline) if args.deadline else None
    outcome = plans.execute(plan, target, executor=args.executor, workers=args.workers, address=args.address,
                            cache_dir=args.cache_dir, out=_out, progress_s=args.progress_s, deadline=deadline,
                            timings_from=args.timings_from)
    bad = {u: o for u, o in outcome.items() if o != "done"}
    held, kept = plans.held_by_deadline(outcome), plans.held_by_plan(outcome)
    if bad and held | kept == set(bad):
        _out(f"plan {plan.name}: {sum(o == 'done' for o in outcome.values())} of {len(outcome)} units done"
             + (f"; {len(kept)} held by the plan (its `hold`, or after one that is): remove the `hold` to run them"
                if kept else "")
             + (f"; {len(held)} held back by the deadline (or after one that was): run it again with more time"
                if held else ""))
        return
    if bad:
        raise ValueError(f"plan {plan.name}: {len(bad)} of {len(outcome)} units did not finish "
                         f"({', '.join(f'{u}: {o}' for u, o in list(bad.items())[:3])}); run it again to resume")
    _out(f"plan {plan.name}: all {len(outcome)} units done in {target}")


# ---- parser ----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from compute.models import DEFAULT_MODEL

    p = Parser(prog="python -m compute", description="EditScope compute side: knowledge "
                                "base, edit cases, pre-edit knowledge, editors and experiments, written to one "
                                "SQLite store.")
    p.add_argument("--store", type=Path, default=None, help="store file (default: $EDITSCOPE_STORE or store/results.sqlite)")
    p.add_argument("--cache-dir", type=Path, default=None, help="cache folder (default: $EDITSCOPE_CACHE or ~/.cache/editscope)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def model_args(q):
        q.add_argument("--model", default=DEFAULT_MODEL, help=f"{DEFAULT_MODEL!r} (embedded) or a local HF model directory")
        q.add_argument("--device", type=device, default="cpu", help="torch device, e.g. cpu or cuda")

    kb = sub.add_parser("kb", help="build and inspect the knowledge base").add_subparsers(dest="sub", required=True)
    q = kb.add_parser("build", help="build the knowledge base from package data and write it into the store")
    q.set_defaults(func=cmd_kb_build)
    q = kb.add_parser("show", help="relations and counts; a relation's facts; a subject's facts and features")
    q.add_argument("--relation", type=text())
    q.add_argument("--subject", type=text())
    q.add_argument("--limit", type=at_least(1), default=40)
    q.set_defaults(func=cmd_kb_show)

    cs = sub.add_parser("cases", help="build, import and inspect edit cases").add_subparsers(dest="sub", required=True)
    q = cs.add_parser("build", help="sample counterfactual cases (balanced across relations and popularity quartiles)")
    q.add_argument("--n", type=at_least(1), default=480, help="number of cases")
    q.add_argument("--seed", type=at_least(0), default=0)
    q.add_argument("--relations", type=text(), help="comma-separated relation names (default: all)")
    q.add_argument("--set", type=text(), help="case set name (default: MODEL[-RELATIONS]-nN-sSEED)")
    q.add_argument("--unbalanced", action="store_true", help="draw uniformly instead of balancing the cells")
    model_args(q)
    q.set_defaults(func=cmd_cases_build)
    q = cs.add_parser("load", help="import CounterFact- or zsRE-format JSON records as a case set")
    q.add_argument("file")
    q.add_argument("--format", required=True, choices=["counterfact", "zsre"])
    q.add_argument("--set", type=text())
    q.add_argument("--limit", type=at_least(1))
    q.set_defaults(func=cmd_cases_load)
    q = cs.add_parser("show", help="list case sets; a set's cases; one case's probes")
    q.add_argument("--set", type=text())
    q.add_argument("--subject", type=text(), help="substring of the subject")
    q.add_argument("--case", type=text(), help="case id: print every probe's text")
    q.add_argument("--limit", type=at_least(1), default=40)
    q.set_defaults(func=cmd_cases_show)

    kn = sub.add_parser("knowledge", help="measure and summarise the unedited model's knowledge of a case set")
    kn = kn.add_subparsers(dest="sub", required=True)
    q = kn.add_parser("measure", help="P(true object), its rank and greedy recall for each case (a 'knowledge' run)")
    q.add_argument("--set", type=text(), required=True, help="case set name (see `cases show`)")
    q.add_argument("--types", type=text(), default="plain", help="rephrase types: comma-separated, or 'all' (default: plain)")
    q.add_argument("--gen-tokens", type=at_least(1), default=30, help="greedy tokens generated per probe")
    q.add_argument("--limit", type=at_least(1), help="only the first N cases")
    q.add_argument("--resume", type=text(), metavar="RUN_ID", help="continue this interrupted run (default: the matching one)")
    q.add_argument("--again", action="store_true", help="start a new run even if a matching one exists")
    model_args(q)
    q.set_defaults(func=cmd_knowledge_measure)
    q = kn.add_parser("show", help="recall by popularity quartile and Spearman correlations")
    q.add_argument("--set", type=text())
    q.add_argument("--run", type=text(), help="knowledge run id (default: the newest)")
    q.set_defaults(func=cmd_knowledge_show)

    def edit_args(q, cases_default=240):
        q.add_argument("--editor", type=text(), required=True, help="ROME, MEMIT, AlphaEdit, FT-L or IKE")
        q.add_argument("--set", type=text(), help="case set name (default: the balanced set of --cases, built if missing)")
        q.add_argument("--cases", type=at_least(1), default=cases_default, help="number of cases when --set is not given")
        q.add_argument("--seed", type=at_least(0), default=0)
        q.add_argument("--limit", type=at_least(1), help="only the first N cases of the set")
        q.add_argument("--hparams", type=text(), help="a hyperparameter JSON file, or the name of a shipped setting "
                       "such as 'paper' (default: the shipped calibrated one for the model)")
        q.add_argument("--hp", action="append", metavar="FIELD=VALUE",
                       help="override one hyperparameter, e.g. --hp key_mismatch=true (repeatable)")
        q.add_argument("--gen-tokens", type=at_least(1), default=30)
        model_args(q)

    ex = sub.add_parser("run", help="run an experiment (resumable)").add_subparsers(dest="sub", required=True)
    q = ex.add_parser("robustness", help="study A: single edits, undone before the next, in all 16 rephrase types")
    edit_args(q)
    q.add_argument("--resume", type=text(), metavar="RUN_ID", help="continue this interrupted run (default: the matching one)")
    q.add_argument("--again", action="store_true", help="start a new run even if a matching one exists")
    q.add_argument("--no-baseline", action="store_true", help="skip the unedited all-types knowledge run")
    q.set_defaults(func=cmd_run_robustness)
    q = ex.add_parser("sequential", help="study B: edits one after another, never undone; forgetting and collapse")
    edit_args(q, cases_default=1240)
    q.add_argument("--batch", type=at_least(1), default=1, help="edits per batch (1 for ROME and FT-L)")
    q.add_argument("--edits", type=at_least(1),
                   help="at most this many edits (default 1000; a resumed run keeps its own). A run made with "
                        "fewer that ended at its maximum is extended from where it stopped, not started again")
    q.add_argument("--every", type=at_least(1), default=10, help="a checkpoint every N edits (and after each of the first 10)")
    q.add_argument("--after-collapse", type=at_least(0), default=150,
                   help="edits past the panel floor after which the run stops if the model has collapsed by then "
                        "(no longer usable); else it goes on to --edits")
    q.add_argument("--order-seed", type=at_least(0), default=0, help="seed of the edit order (shared across editors)")
    q.add_argument("--panel-pool", type=at_least(1), default=1100,
                   help="cases kept out of the edits for the fact panel (SmolLM2-135M knows about 23%% of them)")
    q.add_argument("--panel-size", type=at_least(1), default=200, help="known facts in the panel")
    q.add_argument("--panel-any", action="store_true",
                   help="take the panel's facts whether the unedited model recalls them or not (tiny test models)")
    q.add_argument("--abilities-every", type=at_least(0), default=0, help="quick ability suite every N edits (0 = never)")
    q.add_argument("--recheck-every", type=at_least(0), default=50,
                   help="re-check every earlier edit every N edits, and at log-spaced ages between (0 = at every "
                        "checkpoint, as runs made before this option did; resume those with 0)")
    q.add_argument("--panel-check", type=at_least(0), default=50,
                   help="the panel's first N facts get an exact-match check after every edit, the whole panel at "
                        "checkpoints (0 = the whole panel after every edit, as runs made before this option did; "
                        "resume those with 0)")
    q.add_argument("--beside", action="store_true",
                   help="measure each edit's model on a copy in a second thread while the next edit is made: the "
                        "same rows as one thread, 1.2x faster than one thread, but slower than two intra-op threads "
                        "on a 2-core machine (README, Benchmarks); run it with OMP_NUM_THREADS=1")
    q.add_argument("--final-abilities", choices=["full", "quick", "none"],
                   help="ability suite on the model as the run leaves it (default: full with --abilities-every, "
                        "else none; a finished run gets it later with `abilities measure --run RUN_ID`)")
    q.add_argument("--resume", type=text(), metavar="RUN_ID", help="continue this interrupted run (default: the matching one)")
    q.add_argument("--again", action="store_true", help="start a new run even if a matching one exists")
    q.set_defaults(func=cmd_run_sequential)
    q = ex.add_parser("batch", help="study C: one batch of b edits at once, measured (editing and abilities), undone")
    edit_args(q, cases_default=1240)
    q.add_argument("--sizes", type=int_list, default="1,10,50,100,200,500", help="comma-separated batch sizes")
    q.add_argument("--order-seed", type=at_least(0), default=0, help="seed of the edit order (shared with sequential runs)")
    q.add_argument("--panel-pool", type=at_least(0), default=240, help="cases kept out of the edits (as in sequential runs)")
    q.add_argument("--abilities", default="quick", choices=["none", "quick", "full"],
                   help="general-ability suite after each batch")
    q.add_argument("--resume", type=text(), metavar="RUN_ID", help="continue this interrupted run (default: the matching one)")
    q.add_argument("--again", action="store_true", help="start a new run even if a matching one exists")
    q.set_defaults(func=cmd_run_batch)
    q = ex.add_parser("sweep", help="choose an editor's layer(s): ES/PS/NS for each candidate value")
    edit_args(q, cases_default=30)
    q.add_argument("--field", default="layer", choices=["layer", "layers"])
    q.add_argument("--values", type=layer_values, help="e.g. 1,3,5,9 for layer, or 2-3-4,4-5-6 for layers")
    q.add_argument("--grid", type=grid_item, action="append", metavar="FIELD=V1,V2",
                   help="calibration: sweep every combination of these hyperparameter values (repeatable), "
                        "e.g. --grid v_lr=0.5,0.1 --grid clamp_norm_factor=4,1")
    q.add_argument("--sweep", type=text(), help="sweep id (default: EDITOR-FIELD-SET)")
    q.set_defaults(func=cmd_run_sweep)

    q = sub.add_parser("edit", help="one-fact demo: edit, print pre/post generations in every rephrase type")
    q.add_argument("--subject", type=text(), required=True, help=f"at most {MAX_TEXT} characters")
    q.add_argument("--relation", type=text(), required=True, help="a knowledge-base relation, e.g. capital (see `kb show`)")
    q.add_argument("--new", type=text(), required=True, help=f"the new object (at most {MAX_TEXT} characters)")
    q.add_argument("--true", type=text(), help="the true object, when the subject is not in the knowledge base")
    q.add_argument("--editor", type=text(), default="ROME")
    q.add_argument("--hparams", type=text(), help="a hyperparameter JSON file or a shipped setting's name ('paper')")
    q.add_argument("--seed", type=at_least(0), default=0)
    q.add_argument("--gen-tokens", type=at_least(1), default=30)
    q.add_argument("--no-save", action="store_true", help="do not save the demo as a run in the store")
    model_args(q)
    q.set_defaults(func=cmd_edit)

    rn = sub.add_parser("runs", help="runs in the store").add_subparsers(dest="sub", required=True)
    q = rn.add_parser("list", help="runs with status and provenance")
    q.add_argument("--kind", type=text())
    q.set_defaults(func=cmd_runs_list)

    sp = sub.add_parser("store", help="store maintenance").add_subparsers(dest="sub", required=True)
    sp.add_parser("info", help="schema version and row counts").set_defaults(func=cmd_store_info)
    sp.add_parser("migrate", help="bring an older store to the current schema").set_defaults(func=cmd_store_migrate)
    sp.add_parser("finalize", help="checkpoint and vacuum before shipping the file").set_defaults(func=cmd_store_finalize)
    q = sp.add_parser("merge", help="merge finished shard stores (or another researcher's store) into one store: "
                      "idempotent, provenance kept, conflicting runs refused")
    q.add_argument("shards", nargs="+", type=Path, metavar="SHARD", help="stores to merge (only read, never written)")
    q.add_argument("--into", type=Path, required=True, metavar="STORE",
                   help="the store to merge into (created when missing; --store is not used)")
    q.set_defaults(func=cmd_store_merge)
    q = sp.add_parser("delete", help="delete runs and all their rows (e.g. to merge a recomputed run again)")
    q.add_argument("runs", nargs="+", type=text(), metavar="RUN_ID")
    q.add_argument("--force", action="store_true", help="also delete runs marked running (their process is dead)")
    q.set_defaults(func=cmd_store_delete)
    q = sp.add_parser("rederive", help="re-derive events and correlations of stored runs with the current rules "
                      "(no edit is recomputed)")
    q.add_argument("--run", type=text(), help="only this sequential run (default: every run, and all correlations)")
    q.set_defaults(func=cmd_store_rederive)

    md = sub.add_parser("model", help="the model").add_subparsers(dest="sub", required=True)
    q = md.add_parser("info", help="load the model (caching a safetensors copy) and describe it")
    q.add_argument("--prompt", type=text(), help="also print the greedy continuation of this prompt")
    model_args(q)
    q.set_defaults(func=cmd_model_info)

    pl = sub.add_parser("plan", help="compute a store's units from a plan file, or show their state")
    pl = pl.add_subparsers(dest="sub", required=True)
    for name, helptext in (("run", "compute what is missing and resume what is partial"),
                           ("status", "done / partial / missing per unit, and the CPU-hours left"),
                           ("snapshot", "copy the plan's store (while it runs) into a file to commit: running runs "
                                        "marked interrupted, derived rows re-derived, finalized")):
        q = pl.add_parser(name, help=helptext)
        q.add_argument("plan", type=Path, help="a plan file such as plans/shipped.toml")
        q.add_argument("--store", dest="plan_store", type=Path, help="the target store (default: the global --store)")
        if name == "run":
            q.add_argument("--executor", choices=["local", "ray"], default="local")
            q.add_argument("--workers", type=at_least(1), help="units at once (default: one per core; ray: its CPUs)")
            q.add_argument("--progress-s", type=at_least(1), default=300,
                           help="merge running units' progress into the target every this many seconds (local "
                                "executor; the dashboard's launches use 15)")
            q.add_argument("--address", type=text(), help="ray: a cluster's address (default: a local Ray)")
            q.add_argument("--device", type=device, help="given to every unit that loads a model (cuda: each unit "
                           "asks Ray for one GPU)")
            q.add_argument("--deadline", type=deadline_arg, metavar="WHEN",
                           help="the machine's time ends then (2026-12-06T08:00, 08:00 or +2h30m): a sequential or "
                                "abilities unit, whose work is lost when cut, starts only if its estimate fits "
                                "before it; other units start as usual")
        q.add_argument("--timings-from", type=Path, metavar="STORE",
                       help="another store whose finished runs time the units this store has no timing for "
                            "(e.g. store/results.sqlite while a rebuild has few finished runs)"
                            + ("; used by --deadline" if name == "run" else ""))
        if name == "snapshot":
            q.add_argument("--to", type=Path, required=True, metavar="FILE",
                           help="the copy to write, e.g. store/rebuild.sqlite (replaced)")
            q.add_argument("--changes-from", type=Path, metavar="STORE",
                           help="with --write-readme: the version the copy will replace (a store, or an export of "
                                "one: store.changes); what changed from it goes between the README's "
                                "<!-- rebuild-changes:start/end --> markers")
        if name in ("status", "snapshot"):
            q.add_argument("--write-readme", type=Path, metavar="README",
                           help="write the status (from the store alone) between the README's "
                                "<!-- plan-status:start/end --> markers"
                                + (" instead of printing it" if name == "status" else
                                   ": the copy's status, and its findings (store.findings) between the "
                                   "<!-- rebuild-findings:start/end --> markers where the README has them"))
        q.set_defaults(func=cmd_plan)

    from compute.abilities.cli import add_abilities_parser

    add_abilities_parser(sub, model_args)
    return p


def main(argv=None) -> int:
    """Parse `argv` and run its command; returns the exit status: 0, 2 after a one-line error (a bad option
    is refused by the parser before anything is loaded), 130 after a KeyboardInterrupt during a run. This installs no
    signal handler: `python -m compute` (compute/__main__.py) does, for the whole process."""
    from compute.editors import EditorError
    from compute.formats import FormatError
    from compute.models import ModelError

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0), or a bad option: its one line is already printed (2)
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    if args.store is None:
        args.store = default_store_path()
    try:
        args.func(args)
    except KeyboardInterrupt as exc:
        if getattr(exc, "run_id", None):  # compute.experiments.common.RunInterrupted
            print(f"interrupted: run {exc.run_id} keeps what it stored; {exc.next_step}", file=sys.stderr)
        else:
            print("interrupted before any run started or after the last one ended "
                  "(`python -m compute runs list` shows the runs)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (StoreError, ModelError, FormatError, EditorError, ValueError, OSError) as exc:
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        return EXIT_ERROR
    return 0

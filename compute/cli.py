"""Command line: `python -m compute --help`.

Every subcommand works on one store (`--store`, else $EDITSCOPE_STORE, else store/results.sqlite).
Errors print one line and exit with status 2; Ctrl-C marks the running run interrupted (exit 130).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from store import Store, StoreError, default_store_path

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def _out(text: str = "") -> None:
    print(text, flush=True)


def _table(df, max_rows: int = 60) -> None:
    import polars as pl

    with pl.Config(tbl_rows=max_rows, tbl_cols=20, fmt_str_lengths=60, tbl_width_chars=160, tbl_hide_dataframe_shape=True):
        _out(str(df))


def _open_store(args, create: bool = False) -> Store:
    return Store.open(args.store, create=create)


def _load_kb(args):
    from compute.kb import load_knowledge_base

    return load_knowledge_base(args.cache_dir, progress=not args.quiet)


def _load_model(args):
    from compute.models import load_model

    return load_model(args.model, device=args.device, cache_dir=args.cache_dir, progress=not args.quiet)


def _paragraphs(args):
    from compute.models import default_cache_dir
    from compute.wiki import load_wiki_paragraphs

    return load_wiki_paragraphs(args.cache_dir or default_cache_dir())


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


def load_case_set(st: Store, case_set: str, limit: int | None = None):
    """The EditCases of a stored case set, in case-id order."""
    from compute.cases import case_from_rows
    from store import queries

    df = queries.cases(st.conn, case_set=case_set)
    if df.is_empty():
        raise ValueError(f"no case set {case_set!r} in {st.path}: build one with `python -m compute cases build`")
    rows = df.sort("case_id").to_dicts()[:limit]
    probes = queries.probes_of_set(st.conn, case_set)
    by_case: dict[str, list] = {}
    for p in probes.to_dicts():
        by_case.setdefault(p["case_id"], []).append(p)
    return [case_from_rows(r, by_case.get(r["case_id"], [])) for r in rows]


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
        cases = load_case_set(st, args.set, args.limit)
        lm = _load_model(args)
        run_id = measure_knowledge(
            lm, cases, st, rephrase_types=types, gen_tokens=args.gen_tokens, run_id=args.resume,
            case_set=args.set, progress=not args.quiet,
        )
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
    with Store.open(args.store) as st:
        st.mark_stale_runs()
        st.finalize()
        _out(f"{st.path}: checkpointed, vacuumed, journal mode DELETE ({st.path.stat().st_size / 1e6:.1f} MB)")


def cmd_model_info(args) -> None:
    lm = _load_model(args)
    n_params = sum(p.numel() for p in lm.model.parameters())
    _out(f"{lm.name}: {type(lm.model).__name__}, {n_params / 1e6:.1f}M parameters, {lm.n_layers} layers, "
         f"model_type={lm.model.config.model_type}, source={lm.source}")
    _out(f"edited matrix template: {lm.arch.mlp_down}  shape {tuple(lm.down_proj(0).weight.shape)}")
    if args.prompt:
        from compute.scoring import generate

        _out(f"{args.prompt!r} -> {generate(lm, [args.prompt], max_new_tokens=20)[0]!r}")


# ---- parser ----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from compute.models import DEFAULT_MODEL

    p = argparse.ArgumentParser(prog="python -m compute", description="EditScope compute side: knowledge "
                                "base, edit cases, pre-edit knowledge and runs, written to one SQLite store.")
    p.add_argument("--store", type=Path, default=None, help="store file (default: $EDITSCOPE_STORE or store/results.sqlite)")
    p.add_argument("--cache-dir", type=Path, default=None, help="cache folder (default: $EDITSCOPE_CACHE or ~/.cache/editscope)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def model_args(q):
        q.add_argument("--model", default=DEFAULT_MODEL, help=f"{DEFAULT_MODEL!r} (embedded) or a local HF model directory")
        q.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")

    kb = sub.add_parser("kb", help="build and inspect the knowledge base").add_subparsers(dest="sub", required=True)
    q = kb.add_parser("build", help="build the knowledge base from package data and write it into the store")
    q.set_defaults(func=cmd_kb_build)
    q = kb.add_parser("show", help="relations and counts; a relation's facts; a subject's facts and features")
    q.add_argument("--relation")
    q.add_argument("--subject")
    q.add_argument("--limit", type=int, default=40)
    q.set_defaults(func=cmd_kb_show)

    cs = sub.add_parser("cases", help="build, import and inspect edit cases").add_subparsers(dest="sub", required=True)
    q = cs.add_parser("build", help="sample counterfactual cases (balanced across relations and popularity quartiles)")
    q.add_argument("--n", type=int, default=480, help="number of cases")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--relations", help="comma-separated relation names (default: all)")
    q.add_argument("--set", help="case set name (default: MODEL[-RELATIONS]-nN-sSEED)")
    q.add_argument("--unbalanced", action="store_true", help="draw uniformly instead of balancing the cells")
    model_args(q)
    q.set_defaults(func=cmd_cases_build)
    q = cs.add_parser("load", help="import CounterFact- or zsRE-format JSON records as a case set")
    q.add_argument("file")
    q.add_argument("--format", required=True, choices=["counterfact", "zsre"])
    q.add_argument("--set")
    q.add_argument("--limit", type=int)
    q.set_defaults(func=cmd_cases_load)
    q = cs.add_parser("show", help="list case sets; a set's cases; one case's probes")
    q.add_argument("--set")
    q.add_argument("--subject", help="substring of the subject")
    q.add_argument("--case", help="case id: print every probe's text")
    q.add_argument("--limit", type=int, default=40)
    q.set_defaults(func=cmd_cases_show)

    kn = sub.add_parser("knowledge", help="measure and summarise the unedited model's knowledge of a case set")
    kn = kn.add_subparsers(dest="sub", required=True)
    q = kn.add_parser("measure", help="P(true object), its rank and greedy recall for each case (a 'knowledge' run)")
    q.add_argument("--set", required=True, help="case set name (see `cases show`)")
    q.add_argument("--types", default="plain", help="rephrase types: comma-separated, or 'all' (default: plain)")
    q.add_argument("--gen-tokens", type=int, default=30, help="greedy tokens generated per probe")
    q.add_argument("--limit", type=int, help="only the first N cases")
    q.add_argument("--resume", metavar="RUN_ID", help="continue an interrupted run")
    model_args(q)
    q.set_defaults(func=cmd_knowledge_measure)
    q = kn.add_parser("show", help="recall by popularity quartile and Spearman correlations")
    q.add_argument("--set")
    q.add_argument("--run", help="knowledge run id (default: the newest)")
    q.set_defaults(func=cmd_knowledge_show)

    rn = sub.add_parser("runs", help="runs in the store").add_subparsers(dest="sub", required=True)
    q = rn.add_parser("list", help="runs with status and provenance")
    q.add_argument("--kind")
    q.set_defaults(func=cmd_runs_list)

    sp = sub.add_parser("store", help="store maintenance").add_subparsers(dest="sub", required=True)
    sp.add_parser("info", help="schema version and row counts").set_defaults(func=cmd_store_info)
    sp.add_parser("migrate", help="bring an older store to the current schema").set_defaults(func=cmd_store_migrate)
    sp.add_parser("finalize", help="checkpoint and vacuum before shipping the file").set_defaults(func=cmd_store_finalize)

    md = sub.add_parser("model", help="the model").add_subparsers(dest="sub", required=True)
    q = md.add_parser("info", help="load the model (caching a safetensors copy) and describe it")
    q.add_argument("--prompt", help="also print the greedy continuation of this prompt")
    model_args(q)
    q.set_defaults(func=cmd_model_info)
    return p


def main(argv=None) -> int:
    from compute.formats import FormatError
    from compute.models import ModelError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.store is None:
        args.store = default_store_path()
    try:
        args.func(args)
    except KeyboardInterrupt:
        print("interrupted: partial results are stored; resume the run with --resume RUN_ID "
              "(`python -m compute runs list` shows it)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (StoreError, ModelError, FormatError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return 0

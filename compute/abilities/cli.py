"""Command line of the general-ability suite, wired into `python -m compute` by compute/cli.py (which
imports this module; this module never imports compute.cli):

    python -m compute abilities measure --mode full|quick [--tasks a,b]   # the unedited model, as a run
    python -m compute abilities measure --run RUN_ID                       # a sequential run's final model
    python -m compute abilities show [--run RUN_ID]                        # a table of stored scores
    python -m compute abilities tasks                                      # the registry
    python -m compute abilities power                                      # quick mode's power to see a drop

`measure` stores an `abilities` run (provenance, config with each task's version, chance level and
direction) and one row per task at edit count 0, batch size 0 (each task a unit of compute.runs.run_loop); the
same command again reports the newest matching run when it finished (compute.runs.decide; --again measures
anew), and measures afresh otherwise: a suite is not resumed. With `--run`, it loads the saved final
state of a sequential run (its last checkpoint) and stores the scores in that run at its last edit count,
with a run_events row (kind timing, series final_abilities) saying when and with which code. `show` prints the newest finished
abilities run, or any run's ability rows (a sequential run's checkpoints included).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from store import Store

RUN_KIND = "abilities"


def _out(text: str = "") -> None:
    print(text, flush=True)


def _task_list(spec: str | None):
    from compute.abilities.tasks import TASKS, get_task

    if not spec:
        return list(TASKS.values())
    return [get_task(name.strip()) for name in spec.split(",") if name.strip()]


def task_config(tasks, lm) -> dict:
    """What a run needs to read its rows back: each task's version, category, metric, chance and direction."""
    from compute.abilities.run import chance_of

    return {t.name: {"version": t.version, "category": t.category, "study_c": t.study_c, "metric": t.metric,
                     "chance": chance_of(t, lm), "higher_is_better": t.higher_is_better, "quick_n": t.quick_n}
            for t in tasks}


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"
    return f"{value:.3f}"


def print_scores(rows: list[dict], tasks_cfg: dict) -> None:
    """A fixed-width table: task, category, study-C, mode, score, 95% CI, chance, n (and edit count if any)."""
    from compute.abilities.tasks import TASKS

    with_edits = any((r.get("edit_count") or 0) > 0 for r in rows)
    head = f"{'task':16} {'category':28} {'study C':17} {'mode':5} {'score':>8} {'95% CI':>19} {'chance':>8} {'n':>5}"
    if with_edits:
        head = f"{'edits':>6} {'batch':>5} " + head
    _out(head)
    for r in rows:
        cfg = tasks_cfg.get(r["task"]) or {}
        task = TASKS.get(r["task"])
        category = cfg.get("category") or (task.category if task else "?")
        study_c = cfg.get("study_c") or (task.study_c if task else "?")
        chance = cfg.get("chance", task.chance if task else None)
        arrow = "" if cfg.get("higher_is_better", task.higher_is_better if task else True) else " (lower is better)"
        line = (f"{r['task']:16} {category[:28]:28} {study_c:17} {r['mode']:5} {_fmt(r['score']):>8} "
                f"{'[' + _fmt(r['ci_low']) + ', ' + _fmt(r['ci_high']) + ']':>19} {_fmt(chance):>8} {r['n']:>5}{arrow}")
        if with_edits:
            line = f"{r['edit_count']:>6} {r['batch_size']:>5} " + line
        _out(line)


def cmd_abilities_measure(args) -> None:
    """Score the unedited model on the suite and store it as an `abilities` run (edit count 0, batch size 0)."""
    from compute.abilities.data import Sources
    from compute.abilities.run import ability_rows, evaluate_abilities, load_items
    from compute.models import load_model
    from compute.provenance import provenance
    from compute.runs import decide, run_loop, spec_for, stored_config

    tasks = _task_list(getattr(args, "tasks", None))
    quiet = getattr(args, "quiet", False)
    if getattr(args, "run", None):
        return _measure_run_state(args, tasks)
    with Store.open(args.store, create=True) as st:
        st.mark_stale_runs()
        lm = load_model(args.model, device=args.device, cache_dir=args.cache_dir, progress=not quiet)
        items = load_items(tasks, Sources(args.cache_dir))
        config = {"mode": args.mode, "tasks": task_config(tasks, lm),
                  "n_items": {t.name: len(items[t.name][1]) if args.mode == "full" else
                              min(t.quick_n, len(items[t.name][1])) for t in tasks}}
        spec = spec_for(RUN_KIND, lm.name, json.loads(json.dumps(config)))
        # a suite is not resumed: only a finished one stands for this command
        found = decide(st, spec, again=getattr(args, "again", False), resumable=False,
                       done_says=f"already measured this suite on {lm.name}")
        if found.action == "done":
            _out(found.message)
            args.run = found.run_id
            cmd_abilities_show(args)
            return
        run_id = st.start_run(kind=RUN_KIND, model=lm.name, config=stored_config(spec, config),
                              provenance=provenance(str(lm.device)), n_total=len(tasks))
        started = time.monotonic()
        done: list = []

        def step(task) -> dict:
            (score,) = evaluate_abilities(lm, args.mode, [task], items=items)
            done.append(score)
            if not quiet:
                _out(f"  {score.task}: {_fmt(score.score)} [{_fmt(score.ci_low)}, {_fmt(score.ci_high)}] "
                     f"n={score.n} ({score.seconds:.1f} s)")
            return {"abilities": ability_rows([score], run_id, edit_count=0, batch_size=0)}

        run_loop(st, run_id, tasks, step, n_total=len(tasks), desc="abilities", unit="task",
                 next_step="a suite is not resumed: the same command again measures it afresh in a new run",
                 timings=lambda: {"tasks": {s.task: s.seconds for s in done}})
        seconds = round(time.monotonic() - started, 1)
    _out(f"run {run_id}: {args.mode} ability suite, {len(tasks)} tasks, {seconds} s")
    args.run = run_id
    cmd_abilities_show(args)


def _measure_run_state(args, tasks) -> None:
    """`abilities measure --run RUN_ID`: the suite on the model a sequential run left behind."""
    from compute.abilities.data import Sources
    from compute.abilities.run import suite
    from compute.experiments.sequential import measure_saved_state
    from compute.models import DEFAULT_MODEL, default_cache_dir, load_model

    quiet = getattr(args, "quiet", False)
    with Store.open(args.store) as st:
        run = st.get_run(args.run)
        if run is None:
            raise ValueError(f"no run {args.run!r} in the store (list runs with `python -m compute runs list`)")
        model = run["model"] if args.model == DEFAULT_MODEL else args.model
        lm = load_model(model, device=args.device, cache_dir=args.cache_dir, progress=not quiet)
        measure = suite(args.mode, tasks, Sources(args.cache_dir))
        started = time.monotonic()
        count = measure_saved_state(lm, st, args.run, Path(args.cache_dir or default_cache_dir()), measure)
    _out(f"run {args.run}: {args.mode} ability suite on its model after {count} edits, "
         f"{round(time.monotonic() - started, 1)} s")
    cmd_abilities_show(args)


def cmd_abilities_show(args) -> None:
    """Print a run's ability scores (default: the newest finished abilities run)."""
    import polars as pl

    from store import queries

    with Store.open(args.store, readonly=True) as st:
        run_id = getattr(args, "run", None)
        if not run_id:
            done = queries.list_runs(st.conn, kind=RUN_KIND, status="done")
            if done.is_empty():
                raise ValueError("no finished abilities run in the store: run `python -m compute abilities measure`")
            run_id = done["run_id"][0]
        run = queries.list_runs(st.conn).filter(pl.col("run_id") == run_id)
        rows = queries.abilities(st.conn, run_id).to_dicts()
    if run.is_empty():
        raise ValueError(f"no run {run_id!r} in the store (list runs with `python -m compute runs list`)")
    if not rows:
        raise ValueError(f"run {run_id!r} has no ability scores")
    config = json.loads(run["config"][0] or "{}")
    tasks_cfg = config.get("tasks") if isinstance(config.get("tasks"), dict) else {}
    from compute.abilities.tasks import TASKS

    order = {name: i for i, name in enumerate([*TASKS, *(t for t in tasks_cfg if t not in TASKS)])}
    rows.sort(key=lambda r: (r["mode"], r["batch_size"], r["edit_count"], order.get(r["task"], len(order)), r["task"]))
    _out(f"run {run_id} ({run['kind'][0]}, model {run['model'][0]}, {run['status'][0]})")
    print_scores(rows, tasks_cfg)


def cmd_abilities_tasks(args) -> None:
    """Print the task registry: category, study-C mapping, metric, chance, quick n and full n."""
    from compute.abilities.data import Sources

    sources = Sources(getattr(args, "cache_dir", None))
    _out(f"{'task':16} {'version':7} {'category':28} {'study C':17} {'metric':10} {'chance':>7} "
         f"{'quick':>5} {'full':>5}")
    for t in _task_list(None):
        n_full = len(t.items(sources))
        chance = "1/|V|" if t.chance is None else f"{t.chance:g}"
        _out(f"{t.name:16} {t.version:7} {t.category[:28]:28} {t.study_c:17} {t.metric:10} {chance:>7} "
             f"{min(t.quick_n, n_full):>5} {n_full:>5}")


def cmd_abilities_power(args) -> None:
    """Print quick mode's power per task (compute.abilities.power): the unedited model's full-mode scores
    from the newest finished abilities run that has them, each task's quick n, the power there to detect a
    0.1 accuracy drop (a 10% perplexity rise), and the n that 80% power needs."""
    import polars as pl

    from compute.abilities.power import power_rows
    from compute.abilities.tasks import TASKS
    from store import queries

    with Store.open(args.store, readonly=True) as st:
        rows, run_id = [], None
        for rid in queries.list_runs(st.conn, kind=RUN_KIND, status="done")["run_id"]:
            ab = queries.abilities(st.conn, rid)
            rows = ab.filter(pl.col("mode") == "full").to_dicts() if not ab.is_empty() else []
            if rows:
                run_id = rid
                break
    if not rows:
        raise ValueError("no finished full-mode abilities run in the store: run "
                         "`python -m compute abilities measure --mode full`")
    versions = {r["task"]: r["task_version"] for r in rows}
    order = {name: i for i, name in enumerate(TASKS)}
    rows.sort(key=lambda r: (order.get(r["task"], len(order)), r["task"]))
    table = power_rows(rows, {t.name: t.quick_n for t in TASKS.values()})
    _out(f"unedited scores from run {run_id}; test: two-sided one-sample z-test, alpha 0.05, against a 0.1 "
         "accuracy drop (a 10% perplexity rise)")
    _out(f"{'task':16} {'stored v':>8} {'unedited':>9} {'items':>5} {'quick':>5} {'power':>6} {'exact':>6} "
         f"{'n@80%':>6}  reaches 80%")
    for r in table:
        exact = "-" if r["power_exact"] is None else f"{r['power_exact']:.2f}"
        reach = "yes" if r["reaches"] else ("no: every item used" if r["quick_n"] >= r["items"] else "no")
        _out(f"{r['task']:16} {versions[r['task']] or '-':>8} {_fmt(r['unedited']):>9} {r['items']:>5} "
             f"{r['quick_n']:>5} {r['power']:>6.2f} {exact:>6} {r['n_needed']:>6}  {reach}")


def add_abilities_parser(sub, model_args) -> None:
    """Add `abilities measure|show|tasks` to the subparsers of `python -m compute` (compute/cli.py, which
    passes its own `model_args(parser)` so that --model and --device are declared and checked as there)."""

    ab = sub.add_parser("abilities", help="general-ability suite (study C): measure the unedited model, show scores")
    ab = ab.add_subparsers(dest="sub", required=True)
    q = ab.add_parser("measure", help="score the model on every ability task and store the scores as a run")
    q.add_argument("--mode", choices=["quick", "full"], default="full",
                   help="quick: each task's first quick_n items (about 2.5 min of one CPU core); full: every item")
    q.add_argument("--tasks", help="comma-separated task names (default: all; see `abilities tasks`)")
    q.add_argument("--again", action="store_true", help="measure again even if a finished run of this suite exists")
    q.add_argument("--run", metavar="RUN_ID",
                   help="measure a sequential run's model as it left it (its saved final state), into that run")
    model_args(q)
    q.set_defaults(func=cmd_abilities_measure)
    q = ab.add_parser("show", help="a table of a run's ability scores (default: the newest abilities run)")
    q.add_argument("--run", help="run id (an abilities run, or a sequential run with ability checkpoints)")
    q.set_defaults(func=cmd_abilities_show)
    q = ab.add_parser("tasks", help="the ability tasks: category, study-C mapping, chance, items in each mode")
    q.set_defaults(func=cmd_abilities_tasks)
    q = ab.add_parser("power", help="quick mode's power to detect a 0.1 drop per task, from the stored unedited scores")
    q.set_defaults(func=cmd_abilities_power)

"""Sequential runs, today's re-check schedule against the new one (issue 22 point 2), side by side in ONE process.

One real sequential run (compute.experiments.sequential.run_sequential, new code, `--recheck-every`) makes the
first `--edits` ROME edits of the shipped 1,240-case set in its order (seed 0, the shipped runs' layout: panel
pool 240, panel of 50, a checkpoint after each of the first 10 edits then every 10). The edits do not depend
on what is measured, so both schedules share them: at every checkpoint the same edited model is measured by
today's checkpoint (`_checkpoint` of the sequential module at OLD_REV, read from git, writing into its own
scratch store, plus the panel's exact match that today's runner also ran after a checkpoint's edit) and by the
new one, alternating which goes first. Each side's cost per checkpoint is timed, with the time its
re-checks of earlier edits took (evaluate_cases on them) and how many it re-checked.

Identity: every row today's checkpoint wrote is compared with the new run's row under the same key; the only
rows allowed to be missing from the new run are per-case re-checks and retention rows at partial checkpoints
(the schedule's rule); no value may differ.

Estimate of a full run: per edit (edit, diagnostics, the panel check between checkpoints, writes: measured, the
same on both sides), per checkpoint (each side's fixed part: measured mean over the non-dense checkpoints;
bookkeeping shared by both: the interval's remainder), and per re-checked edit (measured once at scale by
re-checking `--scale` cases in one call), times the number of checkpoints and re-checks each schedule makes in
each block of 100 edits (compute.experiments.sequential.recheck_counts).

    OMP_NUM_THREADS=1 python benchmarks/bench_sequential_schedule.py --edits 40 \
        --out benchmarks/results/sequential-schedule-DATE.json

Reads a COPY of store/results.sqlite (made in a temporary folder), never the shipped file itself.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import importlib.util
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OLD_REV = "bdf288d"  # the sequential runner with per-edit diagnostics and today's schedule (every checkpoint full)
CASE_SET = "smollm2-135m-n1240-s0"


def _old_module():
    """compute/experiments/sequential.py as of OLD_REV, imported under its own name."""
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{OLD_REV}:compute/experiments/sequential.py"],
                         capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "sequential_old.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("sequential_old", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["sequential_old"] = mod  # dataclasses look their module up while the class is made
    spec.loader.exec_module(mod)
    return mod


def _read_checkpoints(tmp: Path, log: str | None) -> list[dict]:
    """The paired checkpoint records of a benchmark: checkpoints.jsonl, or its printed lines (`--log`; those
    lack the re-checks' own seconds, left at 0, and the load at each checkpoint is the printed one)."""
    import re

    path = tmp / "checkpoints.jsonl"
    if path.is_file():
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not log:
        raise SystemExit(f"{tmp} has no checkpoints.jsonl: give the benchmark's printed output with --log")
    pat = re.compile(r"checkpoint (\d+): old ([\d.]+) s \((\d+) re-checked\), new ([\d.]+) s \((\d+)\), load ([\d.]+)")
    out, last = [], 0
    for line in Path(log).read_text().splitlines():
        m = pat.match(line)
        if m:
            count = int(m[1])
            out.append({"count": count, "last": last, "load_1m": float(m[6]), "from_log": True,
                        "old": {"seconds": float(m[2]), "recheck_s": 0.0, "rechecked": int(m[3])},
                        "new": {"seconds": float(m[4]), "recheck_s": 0.0, "rechecked": int(m[5])}})
            last = count
    return out


def _load(n: int) -> float:
    return round(os.getloadavg()[n], 2)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--edits", type=int, default=100)
    ap.add_argument("--recheck-every", type=int, default=50)
    ap.add_argument("--scale", type=int, default=500, help="earlier edits re-checked in one call to time a re-check")
    ap.add_argument("--blocks", type=int, default=10, help="blocks of 100 edits in the estimate")
    ap.add_argument("--out", required=True)
    ap.add_argument("--analyse", metavar="TMPDIR",
                    help="measure nothing new: report an interrupted benchmark from its scratch folder (its stores, "
                         "and checkpoints.jsonl or, for a run from before that file, --log)")
    ap.add_argument("--log", help="the interrupted benchmark's printed output (its checkpoint lines)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    import compute.experiments.sequential as seq
    from compute.covariance import covariance_provider
    from compute.editors import EditContext, load_hparams
    from compute.experiments.sequential import SequentialConfig, checkpoint_due, recheck_counts, run_sequential
    from compute.models import default_cache_dir, load_model
    from compute.stored import load_case_set
    from store import Store, queries

    old = _old_module()
    if args.analyse:
        tmp = Path(args.analyse)
    else:
        tmp = Path(tempfile.mkdtemp(prefix="bench-seq-schedule-"))
        shutil.copy(ROOT / "store" / "results.sqlite", tmp / "shipped-copy.sqlite")
    with Store.open(tmp / "shipped-copy.sqlite") as shipped:
        cases = load_case_set(shipped, CASE_SET)
    lm = load_model(progress=False)
    cache = default_cache_dir()
    hp = load_hparams("ROME", lm.name)
    n_tok = getattr(hp, "cov_n_tokens", 0)

    def ctx():
        return EditContext(cache_dir=tmp / "state", seed=0, cov_samples=n_tok,
                           covariance=covariance_provider(lm, cache, n_tok) if n_tok else None)

    cfg = SequentialConfig(max_edits=args.edits, panel_pool=240, panel_size=50, recheck_every=args.recheck_every,
                           panel_check=0)  # the whole panel after every edit, as the old code path checks it
    from compute.cli import _ability_facts

    facts = _ability_facts()
    new_store = Store.open(tmp / "new.sqlite", create=True)
    old_store = Store.open(tmp / "old.sqlite", create=True)
    old_run = "old-schedule"
    if not args.analyse:
        old_store.start_run(kind="sequential", model=lm.name, editor="ROME", run_id=old_run)

    # time each side's re-checks of earlier edits (evaluate_cases on plain prompts only)
    timed = {"side": None, "older_s": 0.0, "older_n": 0}

    def timing_eval(real):
        def wrapped(lm_, cases_, types, **kw):
            t0 = time.perf_counter()
            out = real(lm_, cases_, types, **kw)
            if list(types) == ["plain"] and not kw.get("neighbourhood", True):
                timed["older_s"] += time.perf_counter() - t0
                timed["older_n"] += len(cases_)
            return out
        return wrapped

    seq.evaluate_cases = timing_eval(seq.evaluate_cases)
    old.evaluate_cases = timing_eval(old.evaluate_cases)
    old_state = {"held": {}, "held_em": {}, "collapse_at": None}
    checkpoints = []
    real_checkpoint = seq._measure_checkpoint

    def paired(lm_, run_id, cfg, edit_ids, by_id, last, count, held, panel, base, w0, collapse_at,
               abilities, held_em):
        record = {"count": count, "last": last, "load_1m": _load(0)}
        result = None
        sides = ("old", "new") if len(checkpoints) % 2 == 0 else ("new", "old")
        for side in sides:
            timed["older_s"], timed["older_n"] = 0.0, 0
            t0 = time.perf_counter()
            if side == "old":
                old_state["collapse_at"] = old._checkpoint(
                    lm_, old_store, old_run, cfg, edit_ids, by_id, last, count, old_state["held"], panel, base, w0,
                    old_state["collapse_at"], None, old_state["held_em"])
                old.panel_exact_match(lm_, panel)  # today's runner also checked the panel after this edit
            else:
                result = real_checkpoint(lm_, run_id, cfg, edit_ids, by_id, last, count, held, panel, base,
                                         w0, collapse_at, abilities, held_em)
            record[side] = {"seconds": round(time.perf_counter() - t0, 3), "recheck_s": round(timed["older_s"], 3),
                            "rechecked": timed["older_n"]}
        record["first"] = sides[0]
        checkpoints.append(record)
        with open(tmp / "checkpoints.jsonl", "a") as fh:  # an interrupted benchmark is reported with --analyse
            fh.write(json.dumps(record) + "\n")
        print(f"checkpoint {count}: old {record['old']['seconds']:.1f} s ({record['old']['rechecked']} re-checked), "
              f"new {record['new']['seconds']:.1f} s ({record['new']['rechecked']}), load {record['load_1m']}",
              flush=True)
        return result

    seq._measure_checkpoint = paired
    load_start = os.getloadavg()
    started = time.perf_counter()
    if args.analyse:
        (run,) = queries.list_runs(new_store.conn, kind="sequential")["run_id"]
        checkpoints = _read_checkpoints(tmp, args.log)
        wall = None
    else:
        run = run_sequential(lm, cases, new_store, editor="ROME", hp=hp, ctx=ctx(), cfg=cfg, case_set=CASE_SET,
                             exclude_facts=facts)
        wall = time.perf_counter() - started
    load_end = os.getloadavg()

    # count-0 rows (unedited panel and fluency) come from the run itself; the old store gets the same ones
    # only for comparison of what each checkpoint wrote, so compare checkpoint counts only
    counts = [c["count"] for c in checkpoints]
    new_m = queries.measurements(new_store.conn, run_ids=run)
    old_m = queries.measurements(old_store.conn, run_ids=old_run)

    def keyed(df):
        return {(r[0], r[1], r[2], r[3]): r[4] for r in
                df.select("case_id", "edit_count", "rephrase_type", "metric", "value").rows()
                if r[1] in counts and r[2] != "edit" and r[3] != "edit_seconds"}

    new_rows, old_rows = keyed(new_m), keyed(old_m)
    full_at = {c["count"] for c in checkpoints
               if seq.full_recheck_due(c["count"], c["last"], cfg, final=c["count"] == args.edits)}
    differ = [k for k in old_rows.keys() & new_rows.keys() if old_rows[k] != new_rows[k]]
    extra = sorted(set(new_rows) - set(old_rows))
    missing = sorted(set(old_rows) - set(new_rows))
    allowed = [k for k in missing if k[1] not in full_at and (
        (k[0] == "*" and k[2] == "all_edits")
        or (k[0] != "*" and k[2] == "plain" and k[3] in ("es", "exact_match_new")))]

    # per-edit cost (both sides): each timed interval minus both sides' checkpoint work, per edit made in it
    events = queries.run_events(new_store.conn, run_ids=run)
    timing = events.filter(events["kind"] == "timing").sort("end_count")
    by_end = {c["count"]: c for c in checkpoints}
    intervals = []
    for prev, end, secs in timing.select("edit_count", "end_count", "value").rows():
        if end not in by_end:
            continue
        c = by_end[end]
        intervals.append({"from": prev, "to": end, "seconds": secs,
                          "edits_and_bookkeeping_s": round(secs - c["old"]["seconds"] - c["new"]["seconds"], 3)})
    # the 10-edit intervals spread a checkpoint's bookkeeping (state save, verdicts) over their edits as a run does
    spread = [i for i in intervals if i["to"] - i["from"] > 1] or intervals
    per_edit = statistics.median(i["edits_and_bookkeeping_s"] / (i["to"] - i["from"]) for i in spread)

    # one re-check's cost at scale: the first `scale` cases of the order (the cost does not depend on the weights)
    from compute.experiments.sequential import edit_order

    by_id = {c.case_id: c for c in cases}
    sample = [by_id[i] for i in edit_order(list(by_id), 0)[: args.scale]]
    t0 = time.perf_counter()
    seq.evaluate_cases(lm, sample, ["plain"], generation=False, neighbourhood=False, new_exact_match=True)
    per_recheck = (time.perf_counter() - t0) / len(sample)

    late = [c for c in checkpoints if c["count"] > cfg.dense_first] or checkpoints
    def recheck_part(c, side):  # printed records (--log) lack the re-checks' own seconds: the measured rate
        return per_recheck * c[side]["rechecked"] if c.get("from_log") else c[side]["recheck_s"]

    fixed = {side: statistics.median(c[side]["seconds"] - recheck_part(c, side) for c in late)
             for side in ("old", "new")}

    def estimate(rule_cfg):
        n = 100 * args.blocks
        pts, prev = [], 0
        for count in range(1, n + 1):
            if checkpoint_due(count, prev, rule_cfg) or count == n:
                pts.append(count)
            prev = count
        side = "old" if rule_cfg.recheck_every == 0 else "new"
        blocks = [{"edits": 100, "checkpoints": 0, "rechecks": 0} for _ in range(args.blocks)]
        for count, k in zip(pts, recheck_counts(pts, n, rule_cfg)):
            b = blocks[(count - 1) // 100]
            b["checkpoints"] += 1
            b["rechecks"] += k
        for b in blocks:
            b["seconds"] = round(100 * per_edit + b["checkpoints"] * fixed[side] + b["rechecks"] * per_recheck, 1)
        first = blocks[0]["seconds"]
        for b in blocks:
            b["vs_first"] = round(b["seconds"] / first, 3)
        return blocks

    import dataclasses

    est_old = estimate(dataclasses.replace(cfg, recheck_every=0))
    est_new = estimate(cfg)

    def total(blocks, k):
        return round(sum(b["seconds"] for b in blocks[:k]), 1)

    result = {
        "what": "sequential ROME run, first edits of the shipped 1,240-case set (order seed 0, panel 50 of pool 240, "
                "checkpoints 1-10 then every 10): today's re-check schedule (every earlier edit at every checkpoint) "
                f"vs the new one (recheck_every={cfg.recheck_every}, log-spaced ages between), the same edits, each "
                "checkpoint measured by both on the same model, alternating order",
        "command": "OMP_NUM_THREADS=" + os.environ.get("OMP_NUM_THREADS", "unset") + " python "
                   + " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])]),
        "code_version": subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                                       capture_output=True, text=True).stdout.strip(),
        "old_code": f"compute/experiments/sequential.py at {OLD_REV}",
        "edits": args.edits,
        "edits_made": counts[-1],
        "interrupted": bool(args.analyse),
        "wall_seconds_whole_run_both_sides": round(wall, 1) if wall is not None else None,
        "identity": {"rows_compared": len(old_rows.keys() & new_rows.keys()), "values_differing": len(differ),
                     "rows_only_in_new": len(extra), "rows_left_out_by_the_schedule": len(allowed),
                     "rows_left_out_otherwise": len(missing) - len(allowed), "full_checkpoints": sorted(full_at),
                     "examples_differing": [list(k) for k in differ[:5]]},
        "measured": {
            "checkpoint_seconds_old": round(sum(c["old"]["seconds"] for c in checkpoints), 1),
            "checkpoint_seconds_new": round(sum(c["new"]["seconds"] for c in checkpoints), 1),
            "rechecks_old": sum(c["old"]["rechecked"] for c in checkpoints),
            "rechecks_new": sum(c["new"]["rechecked"] for c in checkpoints),
            "per_edit_seconds_shared": round(per_edit, 3),
            "per_recheck_seconds_at_scale": round(per_recheck, 4), "scale": len(sample),
            "checkpoint_fixed_seconds_median": {k: round(v, 3) for k, v in fixed.items()},
            "checkpoint_fixed_from": "checkpoints after the dense first ones" if late is not checkpoints else "all",
            "checkpoints": checkpoints, "intervals": intervals},
        "estimate": {
            "rule": "block seconds = 100 x per-edit + checkpoints x fixed checkpoint seconds (side) + re-checks x "
                    "per-re-check seconds, with the checkpoint and re-check counts of each schedule",
            "old_blocks": est_old, "new_blocks": est_new,
            "old_500_edits_s": total(est_old, 5), "new_500_edits_s": total(est_new, 5),
            "ratio_500": round(total(est_old, 5) / total(est_new, 5), 3),
            "old_1000_edits_s": total(est_old, 10), "new_1000_edits_s": total(est_new, 10),
            "ratio_1000": round(total(est_old, 10) / total(est_new, 10), 3),
            "new_worst_block_vs_first_to_500": max(b["vs_first"] for b in est_new[:5]),
            "new_worst_block_vs_first_to_1000": max(b["vs_first"] for b in est_new),
            "old_worst_block_vs_first_to_500": max(b["vs_first"] for b in est_old[:5])},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                    "loadavg_start": load_start, "loadavg_end": load_end,
                    "load_1m_at_checkpoints": [c["load_1m"] for c in checkpoints]},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("identity", "estimate")}, indent=1)[:4000])
    new_store.close()
    old_store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A sequential run alone on the machine, three ways, side by side (issue 22 point 2): is measuring beside the
edits (`run sequential --beside`) faster end to end, and are its rows the same? A script, not a test.

The same command (the shipped plan's study-B layout: ROME, order seed 0, checkpoints after each of the first 10
edits then every 10, a known-fact panel of 200 from a pool of 1,100, the 50-fact check after every edit, the
quick ability suite every 50 edits) runs for `--edits` edits, each way in its own process and scratch store
copied from `--source-store`, one after the other on an otherwise idle machine:

- `inline-1`: measurements after each edit in the same thread, one torch thread (the rebuild's workers);
- `inline-2`: the same with two torch threads (what a run alone on this 2-core machine did before);
- `beside`:   `--beside`, one torch thread in each of two threads (edits in one, measurements in the other).

Reported per way: the command's wall seconds, and the run's own timed checkpoint intervals (run_events
"timing"), split into the dense first 10 edits and the steady state after them (one checkpoint per 10 edits);
the ratios of `beside` against each inline way; and whether `beside`'s rows equal `inline-1`'s (they must: the
same code at the same weights, each op on one thread), every measurement, drift, diagnostic, ability score and
derived event but the timings. `inline-2` rounds differently (two-thread reductions): its largest difference
from `inline-1` is reported, not required to be 0.

    python benchmarks/bench_sequential_beside.py --source-store /work/rebuild/results.sqlite --edits 30 \
        --out benchmarks/results/sequential-beside-DATE.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LAYOUT = ["--every", "10", "--after-collapse", "150", "--panel-pool", "1100", "--panel-size", "200",
          "--recheck-every", "50", "--panel-check", "50", "--abilities-every", "50", "--final-abilities", "none",
          "--order-seed", "0"]
WAYS = {"inline-1": ("1", []), "inline-2": ("2", []), "beside": ("1", ["--beside"])}


def _rows(path: Path) -> dict[str, dict]:
    """Every stored row of the one sequential run in `path`, keyed, timings left out."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        (run,) = [r[0] for r in conn.execute("SELECT run_id FROM runs WHERE kind = 'sequential'")]
        out = {
            "measurements": {(c, e, t, m): v for c, e, t, m, v in conn.execute(
                "SELECT case_id, edit_count, rephrase_type, metric, value FROM measurements WHERE run_id = ? "
                "AND metric != 'edit_seconds'", (run,))},
            "weight_drift": {tuple(r[:-3]): r[-3:] for r in conn.execute(
                "SELECT edit_count, module, fro_delta, rel_change, cond_number FROM weight_drift WHERE run_id = ?",
                (run,))},
            "diagnostics": {tuple(r[:-1]): r[-1] for r in conn.execute(
                "SELECT edit_count, case_id, target, name, value FROM edit_diagnostics WHERE run_id = ?", (run,))},
            "abilities": {tuple(r[:-1]): r[-1] for r in conn.execute(
                "SELECT edit_count, task, mode, score FROM abilities WHERE run_id = ?", (run,))},
            "events": {tuple(r[:-2]): r[-2:] for r in conn.execute(
                "SELECT kind, series, edit_count, end_count, value, detail FROM run_events WHERE run_id = ? "
                "AND kind NOT IN ('timing', 'merged')", (run,))},
        }
        timing = [(s, e, v) for s, e, v in conn.execute(
            "SELECT edit_count, end_count, value FROM run_events WHERE run_id = ? AND kind = 'timing' "
            "AND series = 'checkpoint' ORDER BY edit_count", (run,))]
        return {"rows": out, "timing": timing}
    finally:
        conn.close()


def _compare(a: dict, b: dict) -> dict:
    differing, largest, missing = 0, 0.0, 0
    for table, rows in a.items():
        other = b[table]
        missing += len(set(rows) ^ set(other))
        for key, value in rows.items():
            if key not in other or other[key] == value:
                continue
            differing += 1
            for x, y in zip(value if isinstance(value, tuple) else (value,),
                            other[key] if isinstance(other[key], tuple) else (other[key],)):
                if isinstance(x, float) and isinstance(y, float):
                    largest = max(largest, abs(x - y) / max(abs(x), 1e-12))
    return {"rows": sum(len(r) for r in a.values()), "keys_in_one_only": missing, "values_differing": differing,
            "largest_relative_difference": largest}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source-store", type=Path, required=True, help="a store holding the case set --set")
    ap.add_argument("--set", default="smollm2-135m-n1800-s0")
    ap.add_argument("--editor", default="ROME")
    ap.add_argument("--edits", type=int, default=30)
    ap.add_argument("--ways", default="inline-1,beside,inline-2")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if not args.source_store.exists():
        raise SystemExit(f"no store at {args.source_store}: give one that holds the case set {args.set}")
    ways = [w.strip() for w in args.ways.split(",") if w.strip()]
    unknown = [w for w in ways if w not in WAYS]
    if unknown:
        raise SystemExit(f"unknown way {unknown[0]!r}: choose from {', '.join(WAYS)}")
    results, rows = {}, {}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        for way in ways:
            threads, extra = WAYS[way]
            scratch = Path(tmp) / f"{way}.sqlite"
            src = sqlite3.connect(f"file:{args.source_store}?mode=ro", uri=True)
            dst = sqlite3.connect(scratch)
            src.backup(dst)
            src.close()
            dst.execute("DELETE FROM runs")  # only this way's run in its scratch store
            dst.commit()
            dst.close()
            env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
            cmd = [sys.executable, "-m", "compute", "--store", str(scratch), "--quiet", "run",
                   "sequential", "--editor", args.editor, "--set", args.set, "--edits", str(args.edits), *LAYOUT,
                   *extra]
            load = os.getloadavg()[0]
            start = time.perf_counter()
            done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
            seconds = time.perf_counter() - start
            if done.returncode != 0:
                raise SystemExit(f"{way} failed ({done.returncode}): {done.stderr[-2000:]}")
            got = _rows(scratch)
            rows[way] = got["rows"]
            dense = sum(v for s, e, v in got["timing"] if e <= 10)
            steady = [(e - s, v) for s, e, v in got["timing"] if s >= 10]
            results[way] = {
                "torch_threads": int(threads), "beside": bool(extra), "wall_seconds": round(seconds, 1),
                "in_run_seconds": round(sum(v for *_, v in got["timing"]), 1),
                "first_10_edits_seconds": round(dense, 1),
                "steady_seconds_per_10_edits": (round(10 * sum(v for _, v in steady) / sum(n for n, _ in steady), 1)
                                                if steady else None),
                "load_1m_before": round(load, 2), "load_1m_after": round(os.getloadavg()[0], 2),
            }
            print(json.dumps({way: results[way]}), flush=True)
    ratios = {}
    if "beside" in results:
        for way in ("inline-1", "inline-2"):
            if way in results:
                a, b = results[way], results["beside"]
                ratios[f"{way}/beside"] = {
                    "wall": round(a["wall_seconds"] / b["wall_seconds"], 3),
                    "steady": (round(a["steady_seconds_per_10_edits"] / b["steady_seconds_per_10_edits"], 3)
                               if a["steady_seconds_per_10_edits"] and b["steady_seconds_per_10_edits"] else None),
                    "first_10_edits": round(a["first_10_edits_seconds"] / b["first_10_edits_seconds"], 3)}
    identity = {}
    if "inline-1" in rows:
        for way in rows:
            if way != "inline-1":
                identity[f"{way} vs inline-1"] = _compare(rows["inline-1"], rows[way])
    report = {
        "what": __doc__.split("\n")[0], "command": " ".join(["python", *sys.argv]), "editor": args.editor,
        "set": args.set, "edits": args.edits, "layout": LAYOUT, "results": results, "ratios": ratios,
        "identity": identity,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_before": load_before,
                    "load_after": os.getloadavg()},
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"ratios": ratios, "identity": identity}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

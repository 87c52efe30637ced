"""Benchmark of sequential editing on the embedded default model (a script, not a test).

For each editor configuration, runs `compute.experiments.sequential.run_sequential` for `--edits` edits
(default 100) in a scratch store, checkpoints included (after each of the first 10 edits, then every 10:
newest-edit scores, re-checking every earlier edit, panel recall, fluency, weight drift), without the
ability suite unless `--abilities-every` is given, and reports the wall time per 100 edits and the peak
resident memory. Each configuration runs in its own process, so peak memory is that configuration's
own. The covariance statistics and prefixes come from the ordinary cache (warm them first).

    python benchmarks/bench_sequential.py --out benchmarks/results/sequential.json [--edits 100]
        [--configs "ROME;ROME key_mismatch=true;MEMIT b=10;AlphaEdit b=10;FT-L;ROME rect_top=0.4"]

`--from-store STORE` measures nothing new: it reports the same figures for the sequential runs already in a
store, from the wall time every checkpoint interval took inside the run itself (run_events of kind
"timing", written by the sequential runner with the process's peak memory, torch threads and load): wall
time per 100 edits over all timed intervals and per block of 100 edits (later edits cost more, since every
checkpoint re-checks every earlier edit), and the peak resident memory; and, where the run measured it
(series "final_abilities"), the seconds its full ability suite took at the end.

    python benchmarks/bench_sequential.py --from-store store/results.sqlite --out FILE
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_CONFIGS = "ROME;ROME key_mismatch=true;MEMIT b=10;AlphaEdit b=10;FT-L;ROME rect_top=0.4;MEMIT b=1"


def _one(config: str, edits: int, set_name: str, store: str, abilities_every: int) -> dict:
    """Run one configuration in this process; returns its figures."""
    from compute.cli import main

    words = config.split()
    editor, batch, hp = words[0], 1, []
    for w in words[1:]:
        if w.startswith("b="):
            batch = int(w[2:])
        else:
            hp += ["--hp", w]
    argv = ["--store", store, "--quiet", "run", "sequential", "--editor", editor, "--set", set_name,
            "--edits", str(edits), "--batch", str(batch), "--abilities-every", str(abilities_every), *hp]
    start = time.perf_counter()
    rc = main(argv)
    seconds = time.perf_counter() - start
    return {"config": config, "edits": edits, "returncode": rc, "seconds": round(seconds, 1),
            "seconds_per_100_edits": round(100 * seconds / edits, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def from_store(path: Path) -> list[dict]:
    """Per sequential run: wall time per 100 edits from its own timed checkpoint intervals."""
    import sqlite3

    from store import queries
    from store.derived import run_labels

    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    out = []
    for run in run_labels(conn, kind="sequential").sort("started_at").iter_rows(named=True):
        events = queries.run_events(conn, run_ids=run["run_id"], kind="timing")
        timing = events.filter(events["series"] == "checkpoint")
        final = events.filter(events["series"] == "final_abilities")
        if timing.is_empty():
            continue
        intervals = list(zip(timing["edit_count"], timing["end_count"], timing["value"]))
        details = [json.loads(d) for d in timing["detail"]]
        edits = sum(end - start for start, end, _ in intervals)
        seconds = sum(value for *_, value in intervals)
        blocks: dict[int, list[float]] = {}
        for start, end, value in intervals:
            b = blocks.setdefault((end - 1) // 100, [0, 0.0])
            b[0] += end - start
            b[1] += value
        out.append({
            "run_id": run["run_id"], "config": run["label"], "status": run["status"], "n_done": run["n_done"],
            "n_total": run["n_total"], "edits_timed": edits,
            "seconds": round(seconds, 1), "seconds_per_100_edits": round(100 * seconds / edits, 1),
            "per_100_by_block": {f"{100 * k + 1}-{100 * (k + 1)}": {"edits": n, "seconds_per_100_edits":
                                                                    round(100 * sec / n, 1)}
                                 for k, (n, sec) in sorted(blocks.items())},
            "peak_rss_mb": max(d["peak_rss_mb"] for d in details),
            "torch_threads": sorted({d["torch_threads"] for d in details}),
            "load_avg_1m_mean": round(sum(d["load_avg_1m"] for d in details) / len(details), 2),
            "devices": sorted({d["device"] for d in details}),
            "full_ability_suite_seconds": round(float(final["value"][0]), 1) if final.height else None,
        })
    conn.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--edits", type=int, default=100)
    ap.add_argument("--configs", default=DEFAULT_CONFIGS, help="';'-separated: EDITOR [b=N] [field=value ...]")
    ap.add_argument("--source-store", type=Path, default=ROOT / "store" / "results.sqlite",
                    help="store holding the case set (copied to a scratch store first)")
    ap.add_argument("--set", default="smollm2-135m-n1240-s0")
    ap.add_argument("--abilities-every", type=int, default=0)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--from-store", type=Path, help="report the timed intervals of the runs in this store instead")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one configuration and print its JSON
    ap.add_argument("--store", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(_one(args.one, args.edits, args.set, args.store, args.abilities_every)))
        return
    if args.from_store:
        if not args.from_store.exists():
            raise SystemExit(f"no store at {args.from_store}: give the path of a results store")
        results = from_store(args.from_store)
        for r in results:
            print(json.dumps({k: r[k] for k in ("config", "status", "edits_timed", "seconds_per_100_edits",
                                                 "peak_rss_mb", "torch_threads")}), flush=True)
        if not results:
            print("no sequential run in that store has timed checkpoints (runs started before they were recorded)")
        if args.out:
            args.out.write_text(json.dumps({"source": str(args.from_store), "results": results,
                                            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                                            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
                                           indent=2) + "\n")
        return
    import sqlite3

    results = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        for config in [c.strip() for c in args.configs.split(";") if c.strip()]:
            scratch = Path(tmp) / f"bench-{len(results)}.sqlite"
            src = sqlite3.connect(f"file:{args.source_store}?mode=ro", uri=True)
            dst = sqlite3.connect(scratch)
            src.backup(dst)  # a consistent copy even while a run writes to the source
            src.close()
            dst.close()
            out = subprocess.run([sys.executable, __file__, "--one", config, "--edits", str(args.edits), "--set",
                                  args.set, "--store", str(scratch), "--abilities-every", str(args.abilities_every)],
                                 capture_output=True, text=True)
            lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
            result = json.loads(lines[-1]) if lines else {"config": config, "error": out.stderr[-2000:]}
            results.append(result)
            print(json.dumps(result), flush=True)
    report = {"results": results, "threads": os.environ.get("OMP_NUM_THREADS"), "load_avg_before": load_before,
              "load_avg_after": os.getloadavg(), "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()

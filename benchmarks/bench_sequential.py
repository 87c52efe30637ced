"""Benchmark of sequential editing on the embedded default model (a script, not a test).

For each editor configuration, runs `compute.experiments.sequential.run_sequential` for `--edits` edits
(default 100) in a scratch store, checkpoints included (after each of the first 10 edits, then every 10:
newest-edit scores, re-checking every earlier edit, panel recall, fluency, weight drift), without the
ability suite unless `--abilities-every` is given, and reports the wall time per 100 edits and the peak
resident memory. Each configuration runs in its own process, so peak memory is that configuration's
own. The covariance statistics and prefixes come from the ordinary cache (warm them first).

    python benchmarks/bench_sequential.py --out benchmarks/results/sequential.json [--edits 100]
        [--configs "ROME;ROME key_mismatch=true;MEMIT b=10;AlphaEdit b=10;FT-L;ROME rect_top=0.4"]
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--edits", type=int, default=100)
    ap.add_argument("--configs", default=DEFAULT_CONFIGS, help="';'-separated: EDITOR [b=N] [field=value ...]")
    ap.add_argument("--source-store", type=Path, default=ROOT / "store" / "results.sqlite",
                    help="store holding the case set (copied to a scratch store first)")
    ap.add_argument("--set", default="smollm2-135m-n1240-s0")
    ap.add_argument("--abilities-every", type=int, default=0)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one configuration and print its JSON
    ap.add_argument("--store", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(_one(args.one, args.edits, args.set, args.store, args.abilities_every)))
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

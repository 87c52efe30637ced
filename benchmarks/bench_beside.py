"""Benchmark of measuring beside the edits (compute.experiments.beside): does a second thread overlap a
sequential run's measurements with its next edit on this machine? A script, not a test.

On the default model, in one process, for `--pairs` pairs (edit i, measurements of the model after edit i-1):
- one after the other: ROME edit i, then the measurements, in the caller's thread;
- side by side: the measurements submitted to a `Beside` shadow model, ROME edit i in the caller's thread
  meanwhile; the pair ends when both have.
The measurements are a sequential checkpoint's bulk: the panel-style greedy recall of `--panel` facts (12
tokens) and the newest cases' plain and paraphrase scores. Each pair is undone before the next, so both orders
see the same weights; the two ways alternate (ABAB). Reports the wall seconds per pair of each way, their ratio,
whether the side-by-side measurements equal the one-after-the-other ones (they must: same weights, same code),
torch's intra-op threads and the machine's load before and after.

    OMP_NUM_THREADS=1 python benchmarks/bench_beside.py --pairs 4 --out benchmarks/results/beside-DATE.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=4, help="(edit, measurements) pairs timed each way")
    ap.add_argument("--panel", type=int, default=50, help="panel-style facts read per measurement")
    ap.add_argument("--store", default=str(ROOT / "store" / "results.sqlite"))
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    import torch

    from bench_values import read_cases
    from compute.editors import EditContext, apply_edit, load_hparams, undo
    from compute.experiments.beside import Beside
    from compute.models import default_cache_dir, load_model
    from compute.scoring import run_probes

    lm = load_model(progress=False)
    hp = load_hparams("ROME", lm.name)
    ctx = EditContext(cache_dir=default_cache_dir())
    requests = read_cases(Path(args.store), 2 * args.pairs + 1 + args.panel, 1)
    panel, edits = requests[: args.panel], requests[args.panel :]
    params = dict(lm.model.named_parameters())

    def measure(model):
        res = run_probes(model, [r.prompt for r in panel], [[r.target_true] for r in panel], gen_tokens=12)
        return [(r.generation, round(r.scores[0].nll, 6)) for r in res]

    undo(lm, apply_edit(lm, edits[:1], "ROME", hp, ctx))  # warm: covariance, prefixes
    load_before = os.getloadavg()[0]
    timings = {"one_after_the_other": [], "side_by_side": []}
    same = []
    with Beside(lm) as beside:
        for i in range(args.pairs):
            first = edits[1 + 2 * i]
            previous = apply_edit(lm, [first], "ROME", hp, ctx)  # "edit i-1": the model measured in this pair
            edited = {n: params[n].detach().clone() for n in previous.originals}
            ways = ["one_after_the_other", "side_by_side"] if i % 2 == 0 else ["side_by_side", "one_after_the_other"]
            outs = {}
            for way in ways:
                with torch.no_grad():
                    for n, w in edited.items():
                        params[n].copy_(w)
                start = time.perf_counter()
                if way == "side_by_side":
                    job = beside.submit(edited, measure)
                    result = apply_edit(lm, [edits[2 + 2 * i]], "ROME", hp, ctx)
                    outs[way] = job.result()
                else:
                    outs[way] = measure(lm)
                    result = apply_edit(lm, [edits[2 + 2 * i]], "ROME", hp, ctx)
                timings[way].append(time.perf_counter() - start)
                undo(lm, result)
            undo(lm, previous)
            same.append(outs["one_after_the_other"] == outs["side_by_side"])
            print(f"pair {i}: " + ", ".join(f"{w} {timings[w][-1]:.1f} s" for w in timings), flush=True)
    med = {w: statistics.median(t) for w, t in timings.items()}
    report = {
        "what": __doc__.split("\n")[0],
        "command": "python benchmarks/bench_beside.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": lm.name, "pairs": args.pairs, "panel": args.panel,
        "seconds_per_pair": timings, "median_s": med,
        "ratio_of_medians": round(med["one_after_the_other"] / med["side_by_side"], 3),
        "measurements_identical": all(same),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                    "load1_before": round(load_before, 2), "load1_after": round(os.getloadavg()[0], 2)},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps({k: report[k] for k in ("median_s", "ratio_of_medians", "measurements_identical")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

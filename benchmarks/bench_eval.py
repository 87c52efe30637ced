"""Benchmark of the per-case evaluation (issue 22, point 4): the old path against the new one, side by side.

A script, not a test. On the embedded default model it evaluates cases one at a time, as a robustness run
does after each edit (`compute.evaluate.evaluate_cases` on one case, all 16 rephrase types plus the
neighbourhood prompts, 30 greedy tokens), once by the old path (`legacy=True`: a separate `generate` for
doubt's first turn, one padded prefill per batch, a decode that grows the cache by `torch.cat`) and once by
the new one (length-bucketed prefill merged into preallocated buffers, one joint decode with doubt's first
turn in it). Both run in this one process on the same cases, alternating old/new and new/old from case to
case so that a change in the machine's load falls on both alike. It reports seconds per case of each path
and their ratio (median over cases and total), whether every generation is identical, the largest
difference of any stored value, the number of model forward calls per case (each a launch of every layer's
kernels: on a GPU this count, not the FLOPs, bounds a small batch), and the machine's load before and after.

    OMP_NUM_THREADS=1 python benchmarks/bench_eval.py --cases 12 --out benchmarks/results/eval-DATE.json

The cases are the balanced case set that `run robustness --cases 240` uses, built afresh (current probe
wording) from the knowledge base; every `--every`-th case is taken.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class _Counter:
    """Counts forward calls of a module (a forward pre-hook; removed on exit)."""

    def __init__(self, module):
        self.module, self.calls = module, 0

    def __enter__(self):
        self.handle = self.module.register_forward_pre_hook(lambda *_: setattr(self, "calls", self.calls + 1))
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=12, help="number of cases to evaluate by each path")
    ap.add_argument("--n", type=int, default=240, help="size of the balanced case set the cases are taken from")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gen-tokens", type=int, default=30)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    import torch

    from compute.cases import CaseBuilder
    from compute.evaluate import evaluate_cases
    from compute.kb import load_knowledge_base
    from compute.models import default_cache_dir, load_model
    from compute.wiki import load_wiki_paragraphs
    from store.metrics import REPHRASE_TYPES

    lm = load_model(progress=False)
    cache = default_cache_dir()
    builder = CaseBuilder(load_knowledge_base(cache), lm.tokenizer, load_wiki_paragraphs(cache))
    every = max(1, args.n // args.cases)
    cases = builder.build(args.n, seed=args.seed)[::every][: args.cases]
    evaluate_cases(lm, cases[:1], ["plain"], gen_tokens=2)  # warm-up: first-call allocations, lazy imports

    load_start = os.getloadavg()
    per_case, identical, max_diff, calls = [], 0, 0.0, {"old": 0, "new": 0}
    n_gens = 0
    for i, case in enumerate(cases):
        out, secs = {}, {}
        for path in (("old", "new") if i % 2 == 0 else ("new", "old")):
            with _Counter(lm.model) as counter:
                t0 = time.perf_counter()
                out[path] = evaluate_cases(lm, [case], REPHRASE_TYPES, gen_tokens=args.gen_tokens,
                                           legacy=path == "old")[0]
                secs[path] = time.perf_counter() - t0
            calls[path] += counter.calls
        old, new = out["old"], out["new"]
        same = [a == b for a, b in zip(old.generations, new.generations)] + [len(old.generations) ==
                                                                            len(new.generations)]
        identical += sum(same[:-1]) if same[-1] else 0
        n_gens += len(old.generations)
        diff = max(abs(old.values[t][m] - new.values[t][m]) for t in old.values for m in old.values[t])
        max_diff = max(max_diff, diff)
        per_case.append({"case_id": case.case_id, "old_s": round(secs["old"], 3), "new_s": round(secs["new"], 3),
                         "ratio": round(secs["old"] / secs["new"], 3), "generations_identical": all(same),
                         "max_value_diff": diff})
        print(f"{i + 1}/{len(cases)} {case.case_id}: old {secs['old']:.2f} s, new {secs['new']:.2f} s, "
              f"x{secs['old'] / secs['new']:.2f}, identical={all(same)}", flush=True)
    load_end = os.getloadavg()
    old_total = sum(c["old_s"] for c in per_case)
    new_total = sum(c["new_s"] for c in per_case)
    result = {
        "what": "per-case evaluation (16 rephrase types + neighbourhood, 30 greedy tokens), old path vs new path",
        "command": "OMP_NUM_THREADS=" + os.environ.get("OMP_NUM_THREADS", "unset") + " python "
                   + " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])]),
        "code_version": subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                                       capture_output=True, text=True).stdout.strip(),
        "model": lm.name,
        "n_cases": len(cases),
        "gen_tokens": args.gen_tokens,
        "old_seconds_per_case": round(old_total / len(cases), 3),
        "new_seconds_per_case": round(new_total / len(cases), 3),
        "ratio_total": round(old_total / new_total, 3),
        "ratio_median": round(statistics.median(c["ratio"] for c in per_case), 3),
        "generations_identical": f"{identical}/{n_gens}",
        "all_generations_identical": identical == n_gens,
        "max_value_diff": max_diff,
        "forward_calls_per_case": {k: round(v / len(cases), 1) for k, v in calls.items()},
        "per_case": per_case,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                    "loadavg_start": load_start, "loadavg_end": load_end},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("old_seconds_per_case", "new_seconds_per_case", "ratio_total",
                                             "ratio_median", "generations_identical", "max_value_diff",
                                             "forward_calls_per_case")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

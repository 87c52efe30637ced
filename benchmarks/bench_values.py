"""Benchmark of the packed value optimisation (issue 22, point 1): the old path against the new one, side by side.

A script, not a test. On the embedded default model, in one process, on the same cases of the 240-case set
of the shipped store (read from a copy under /tmp, opened read-only):

- ROME, as a robustness run edits: each case edited, then undone. Old path: today's padded objective
  (left-padded rows aligned on the subject, `_FastObjective` of commit --old-commit, loaded from git), one
  request at a time. New path: the packed objective with a `MemoryValueCache` that optimises the next
  `--ahead` cases' values in one call. Blocks of `--ahead` cases, old/new then new/old (ABAB).
- MEMIT, batches of `--batch` cases: old path the padded objective on the whole batch, new path the packed one.
  Old/new, then new/old for the next batch.

It reports wall and process-CPU seconds per edit (median over blocks or batches) of each path and their
ratios (on a shared machine the CPU time is the steadier of the two), the largest
difference of any entry of the update dW between the paths (and that over the largest entry), the
optimisation steps of both, the threads, and the machine's 1-minute load before and after each part.

    python benchmarks/bench_values.py --rome-threads 2 --memit-threads 1 --out benchmarks/results/values-DATE.json

Only `rome.optimise_values` is swapped for the old one; keys, covariance and the updates are the same code.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OLD_COMMIT = "87fb6bc"  # the last commit with the left-padded objective
CASE_SET = "smollm2-135m-n240-s0"


def load_old_rome(commit: str):
    """compute/editors/rome.py as of `commit`, as a separate module (the editor registry left as it was)."""
    from compute.editors import base

    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:compute/editors/rome.py"],
                            capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "rome_padded.py"
    path.write_text(source)
    saved = dict(base.EDITORS)
    spec = importlib.util.spec_from_file_location("rome_padded", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["rome_padded"] = module
    spec.loader.exec_module(module)
    base.EDITORS.clear()
    base.EDITORS.update(saved)  # its register() call must not replace today's ROME
    return module


def read_cases(store: Path, n: int, every: int):
    """`n` cases of the 240-case set (every `every`-th by case id), from a read-only copy of the store."""
    from compute.editors import EditRequest

    copy = Path(tempfile.mkdtemp()) / "results.sqlite"
    shutil.copyfile(store, copy)
    conn = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
    rows = conn.execute("SELECT case_id, subject, prompt, new_object, true_object FROM cases WHERE case_set = ? "
                        "ORDER BY case_id", (CASE_SET,)).fetchall()
    conn.close()
    if not rows:
        raise SystemExit(f"{store} holds no case set {CASE_SET!r}: give the shipped store with --store")
    picked = rows[::every][:n]
    return [EditRequest(s, p, new, true, case_id=cid) for cid, s, p, new, true in picked]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rome-edits", type=int, default=10, help="ROME edits by each path")
    ap.add_argument("--ahead", type=int, default=None, help="cases whose values are optimised together "
                    "(default: compute.editors.value_cache.AHEAD)")
    ap.add_argument("--memit-batches", type=int, default=2, help="MEMIT batches by each path")
    ap.add_argument("--batch", type=int, default=10, help="requests per MEMIT batch")
    ap.add_argument("--rome-threads", type=int, default=2)
    ap.add_argument("--memit-threads", type=int, default=1)
    ap.add_argument("--old-commit", default=OLD_COMMIT)
    ap.add_argument("--store", default=str(ROOT / "store" / "results.sqlite"))
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    import torch

    import compute.editors.memit as memit
    import compute.editors.rome as rome
    from compute.editors import EditContext, apply_edit, load_hparams, undo
    from compute.editors.value_cache import AHEAD, MemoryValueCache
    from compute.models import default_cache_dir, load_model

    ahead = args.ahead or AHEAD
    old = load_old_rome(args.old_commit)
    new_optimise = rome.optimise_values
    lm = load_model(progress=False)
    params = dict(lm.model.named_parameters())
    n_rome = max(args.rome_edits // ahead, 1) * ahead if args.rome_edits > 0 else 0  # whole blocks
    requests = read_cases(Path(args.store), n_rome + args.memit_batches * args.batch, 2)
    rome_reqs, memit_reqs = requests[:n_rome], requests[n_rome:]
    ctx = EditContext(cache_dir=default_cache_dir())

    def run(editor, hp, reqs, path, plan=None):
        """Apply each of `reqs` (one edit each; MEMIT: one batch) by `path`; (seconds, updates, steps)."""
        rome.optimise_values = memit.optimise_values = old.optimise_values if path == "old" else new_optimise
        ctx.value_cache = MemoryValueCache(ahead) if plan else None
        groups = [[r] for r in reqs] if editor == "ROME" else [list(reqs)]
        updates, steps = [], []
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            for i, group in enumerate(groups):
                if plan:
                    ctx.value_cache.plan(reqs[i:])
                result = apply_edit(lm, group, editor, hp, ctx)
                updates.append({n: params[n].detach() - result.originals[n] for n in result.originals})
                steps += [e["steps"] for e in result.info["edits"]]
                undo(lm, result)
        finally:
            rome.optimise_values = memit.optimise_values = new_optimise
            ctx.value_cache = None
        return (time.perf_counter() - t0, time.process_time() - c0), updates, steps

    def compare(a, b):
        diff = max((x[n] - y[n]).abs().max().item() for x, y in zip(a, b) for n in x)
        scale = max(x[n].abs().max().item() for x in a for n in x)
        rel = max(((x[n] - y[n]).norm() / x[n].norm()).item() for x, y in zip(a, b) for n in x)
        return diff, diff / scale, rel

    def section(editor, hp, blocks, threads, plan):
        torch.set_num_threads(threads)
        run(editor, hp, blocks[0][:1], "new", plan)  # warm-up: covariance, prefixes, first-call allocations
        load_start = os.getloadavg()[0]
        out = []
        for j, block in enumerate(blocks):
            secs, cpu, ups, steps = {}, {}, {}, {}
            for path in (("old", "new") if j % 2 == 0 else ("new", "old")):
                (secs[path], cpu[path]), ups[path], steps[path] = run(editor, hp, block, path, plan and path == "new")
            n_edits = len(block)
            diff, diff_rel, norm_rel = compare(ups["old"], ups["new"])
            out.append({"cases": [r.case_id for r in block], "old_s_per_edit": round(secs["old"] / n_edits, 3),
                        "new_s_per_edit": round(secs["new"] / n_edits, 3),
                        "ratio": round(secs["old"] / secs["new"], 3),
                        "old_cpu_s_per_edit": round(cpu["old"] / n_edits, 3), "new_cpu_s_per_edit": round(cpu["new"] / n_edits, 3),
                        "cpu_ratio": round(cpu["old"] / cpu["new"], 3), "max_abs_dW_diff": diff,
                        "max_abs_dW_diff_over_max_abs_dW": diff_rel, "max_rel_norm_dW_diff": norm_rel,
                        "steps_old": steps["old"], "steps_new": steps["new"]})
            print(f"{editor} block {j + 1}/{len(blocks)}: old {secs['old'] / n_edits:.2f} s/edit, "
                  f"new {secs['new'] / n_edits:.2f} s/edit, x{secs['old'] / secs['new']:.2f} (CPU x{cpu['old'] / cpu['new']:.2f}), "
                  f"max|dW diff| {diff:.2e} ({diff_rel:.1e} of max), load {os.getloadavg()[0]:.2f}", flush=True)
        old_med = statistics.median(b["old_s_per_edit"] for b in out)
        new_med = statistics.median(b["new_s_per_edit"] for b in out)
        old_cpu = statistics.median(b["old_cpu_s_per_edit"] for b in out)
        new_cpu = statistics.median(b["new_cpu_s_per_edit"] for b in out)
        return {"threads": threads, "old_s_per_edit_median": old_med, "new_s_per_edit_median": new_med,
                "ratio_of_medians": round(old_med / new_med, 3), "old_cpu_s_per_edit_median": old_cpu,
                "new_cpu_s_per_edit_median": new_cpu, "cpu_ratio_of_medians": round(old_cpu / new_cpu, 3),
                "max_abs_dW_diff": max(b["max_abs_dW_diff"] for b in out),
                "max_abs_dW_diff_over_max_abs_dW": max(b["max_abs_dW_diff_over_max_abs_dW"] for b in out),
                "max_rel_norm_dW_diff": max(b["max_rel_norm_dW_diff"] for b in out),
                "same_steps": all(b["steps_old"] == b["steps_new"] for b in out),
                "load1_before": load_start, "load1_after": os.getloadavg()[0], "blocks": out}

    rome_hp, memit_hp = load_hparams("ROME", lm.name), load_hparams("MEMIT", lm.name)
    result = {
        "what": "value optimisation, old (left-padded objective; ROME one request at a time) vs new (packed "
                "objective; ROME the next --ahead cases optimised together) on the same cases, ABAB",
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])]),
        "code_version": subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                                       capture_output=True, text=True).stdout.strip(),
        "old_commit": args.old_commit, "model": lm.name, "case_set": CASE_SET, "ahead": ahead,
    }
    result["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                         "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)

    def save():  # after each part, so a long run stopped early keeps what it measured
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")

    if n_rome:
        blocks = [rome_reqs[i : i + ahead] for i in range(0, n_rome, ahead)]
        result["rome"] = section("ROME", rome_hp, blocks, args.rome_threads, True)
        save()
    if args.memit_batches:
        blocks = [memit_reqs[i : i + args.batch] for i in range(0, len(memit_reqs), args.batch)]
        result["memit"] = section("MEMIT", memit_hp, blocks, args.memit_threads, False)
        for b in result["memit"]["blocks"]:  # per batch, not per request
            b["old_s_per_batch"] = round(b["old_s_per_edit"] * args.batch, 2)
            b["new_s_per_batch"] = round(b["new_s_per_edit"] * args.batch, 2)
        save()
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "blocks"} for k, v in result.items()
                      if k in ("rome", "memit")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

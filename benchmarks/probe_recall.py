"""Which rephrase types the unedited default model can answer, before and after a probe-wording change.

A measurement script, not a test. For a spread subset of a stored case set (every `--every`-th case in
case-id order), it evaluates the unedited model on every rephrase type twice, in one process:

- `before`: the probe texts stored with the case set (the wording the store was built with);
- `after`: the probes that compute.cases builds now for the same facts (same case set, seed and case ids).

Types whose texts are identical in both are evaluated once and reported for both. Per type it reports the
recall of the true object (alias-aware, in 30 greedy tokens) and whether the type is measurable by
store.measurable's stated threshold, with n and the reason, plus the same from the store's own unedited
(knowledge) run of those cases when there is one, as a cross-check of `before`.

    OMP_NUM_THREADS=1 python benchmarks/probe_recall.py --store /tmp/results-copy.sqlite \
        --set smollm2-135m-n240-s0 --every 4 --out benchmarks/results/probe-recall-DATE.json

Open a copy of the shipped store (it is only read).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _rows(evals, wanted_types) -> list[dict]:
    return [
        {"case_id": ev.case_id, "rephrase_type": rtype, "metric": m, "value": ev.values[rtype][m]}
        for ev in evals for rtype in wanted_types if rtype in ev.values for m in ("rev", "acc")
        if m in ev.values[rtype]
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", required=True, help="a COPY of the store holding the case set")
    ap.add_argument("--set", default="smollm2-135m-n240-s0")
    ap.add_argument("--every", type=int, default=4, help="take every N-th case in case-id order")
    ap.add_argument("--gen-tokens", type=int, default=30)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    import polars as pl
    import torch

    from compute.cases import CaseBuilder, EditCase
    from compute.evaluate import evaluate_cases
    from compute.kb import load_knowledge_base
    from compute.models import default_cache_dir, load_model
    from compute.stored import load_case_set
    from compute.wiki import load_wiki_paragraphs
    from store import Store, measurable, queries
    from store.metrics import REPHRASE_TYPES

    load_start = os.getloadavg()
    with Store.open(args.store, readonly=True) as st:
        stored = load_case_set(st, args.set)
        base = measurable.baseline_run(st.conn, case_set=args.set)
        base_rows = (queries.measurements(st.conn, run_ids=base, metrics=["rev", "acc"], edit_count=0)
                     if base else None)
    subset = stored[:: args.every]
    ids = {c.case_id for c in subset}
    lm = load_model(progress=False)
    cache = default_cache_dir()
    builder = CaseBuilder(load_knowledge_base(cache), lm.tokenizer, load_wiki_paragraphs(cache))
    seed = int(subset[0].seed or 0)
    rebuilt = {c.case_id: c for c in builder.build(len(stored), seed=seed, case_set=args.set)}
    missing = ids - set(rebuilt)
    if missing:
        raise SystemExit(f"{len(missing)} cases of {args.set} are not rebuilt with the same ids: wrong --set or seed")
    new_cases = [rebuilt[c.case_id] for c in subset]

    def texts(case: EditCase, rtype: str) -> list[str]:
        return [p.text for p in case.probes_of(rtype)]

    changed = [t for t in REPHRASE_TYPES if any(texts(o, t) != texts(n, t) for o, n in zip(subset, new_cases))]
    same = [t for t in REPHRASE_TYPES if t not in changed]
    timings = {}
    t0 = time.perf_counter()
    ev_same = evaluate_cases(lm, subset, same, gen_tokens=args.gen_tokens, neighbourhood=False) if same else []
    timings["unchanged_types_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    ev_old = evaluate_cases(lm, subset, changed, gen_tokens=args.gen_tokens, neighbourhood=False)
    timings["before_changed_types_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    ev_new = evaluate_cases(lm, new_cases, changed, gen_tokens=args.gen_tokens, neighbourhood=False)
    timings["after_changed_types_s"] = round(time.perf_counter() - t0, 1)

    def table(rows: list[dict]) -> list[dict]:
        df = pl.DataFrame(rows, schema={"case_id": pl.String, "rephrase_type": pl.String, "metric": pl.String,
                                        "value": pl.Float64})
        return measurable.measurability(df, rephrase_types=REPHRASE_TYPES).to_dicts()

    before = table(_rows(ev_same, same) + _rows(ev_old, changed))
    after = table(_rows(ev_same, same) + _rows(ev_new, changed))
    stored_table = None
    if base_rows is not None:
        stored_table = table(base_rows.filter(pl.col("case_id").is_in(list(ids)))
                             .select("case_id", "rephrase_type", "metric", "value").to_dicts())
    example = {t: {"before": texts(subset[0], t)[0], "after": texts(new_cases[0], t)[0]} for t in changed}
    gens_new = {t: [g[2] for ev in ev_new[:5] for g in ev.generations if g[1] == t] for t in changed}
    out = {
        "what": "recall of the true object by the unedited model per rephrase type, before/after the probe wording",
        "command": "OMP_NUM_THREADS=" + os.environ.get("OMP_NUM_THREADS", "unset") + " python "
                   + " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])]),
        "model": lm.name,
        "code_version": subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                                       capture_output=True, text=True).stdout.strip(),
        "case_set": args.set,
        "n_cases": len(subset),
        "every": args.every,
        "gen_tokens": args.gen_tokens,
        "threshold": measurable.MEASURABLE_SHARE,
        "changed_types": changed,
        "before": before,
        "after": after,
        "stored_baseline_run": base,
        "stored_baseline_on_subset": stored_table,
        "example_texts_first_case": example,
        "example_generations_after": gens_new,
        "timings": timings,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "loadavg_start": load_start,
                    "loadavg_end": os.getloadavg()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    for b, a in zip(before, after):
        print(f"{b['rephrase_type']:24s} before {b['recalled']:3d}/{b['n']} ({100 * (b['recall_share'] or 0):5.1f}%) "
              f"{'M' if b['measurable'] else '-'}   after {a['recalled']:3d}/{a['n']} "
              f"({100 * (a['recall_share'] or 0):5.1f}%) {'M' if a['measurable'] else '-'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

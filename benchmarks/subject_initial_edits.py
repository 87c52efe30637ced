"""Do edits of facts whose prompt begins with the subject take? ROME (and optionally MEMIT/AlphaEdit, b = 1)
with each key constraint, on the CounterFact-format check set and on the stored case set's subject-initial cases.

For each edit: ES on the plain prompt (NLL(new) < NLL(true)), PS over the paraphrases, and the per-edit
diagnostics the runners store (compute.editors.diagnostics: delivered fraction, steps, convergence, clamp,
||dW||/||W||). Each edit is undone before the next (as in the robustness runs). One JSON out.

Usage:
  python benchmarks/subject_initial_edits.py --store store/results.sqlite --editors ROME \
      --constraints all,mean --out benchmarks/results/subject-initial-edits.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compute.editors import EditContext, EditRequest, apply_edit, load_hparams, undo  # noqa: E402
from compute.editors.diagnostics import edit_diagnostics  # noqa: E402
from compute.models import default_cache_dir, load_model  # noqa: E402
from compute.scoring import score_targets  # noqa: E402


def _cases(store_path: str, case_set: str, counterfact: str):
    from compute.cases import case_from_rows
    from compute.formats import load_cases_file
    from store import queries
    from store.db import Store

    st = Store.open(store_path, readonly=True)
    df = queries.cases(st.conn, case_set=case_set)
    by_case: dict[str, list] = {}
    for p in queries.probes_of_set(st.conn, case_set).to_dicts():
        by_case.setdefault(p["case_id"], []).append(p)
    stored = [case_from_rows(r, by_case.get(r["case_id"], [])) for r in df.sort("case_id").to_dicts()]
    initial = [c for c in stored if c.prompt.startswith(c.subject)]
    return {"counterfact": load_cases_file(Path(counterfact), "counterfact", "subject-initial-check"),
            "case_set_subject_initial": initial}


def one_edit(lm, case, editor: str, hp, ctx) -> dict:
    request = EditRequest.from_case(case)
    result = apply_edit(lm, [request], editor, hp, ctx)
    try:
        rows = edit_diagnostics(lm, result, hp, "bench", 1, [case])
        paraphrases = [p.text for p in case.probes_of("paraphrase")]
        prompts = [case.prompt] + paraphrases
        scores = score_targets(lm, prompts * 2, [case.new_object] * len(prompts) + [case.true_object] * len(prompts))
    finally:
        undo(lm, result)
    n = len(prompts)
    wins = [scores[i].nll < scores[n + i].nll for i in range(n)]
    diag = {(r["target"], r["name"]): r["value"] for r in rows}
    return {
        "case_id": case.case_id,
        "es": float(wins[0]),
        "ps": sum(wins[1:]) / max(len(wins) - 1, 1) if paraphrases else None,
        "delivered_plain": diag.get(("plain", "delivered")),
        "delivered_out_plain": diag.get(("plain", "delivered_out")),
        "steps": diag.get(("", "steps")),
        "converged": diag.get(("", "converged")),
        "clamped": diag.get(("", "clamped")),
        "update_rel": max(r["value"] for r in rows if r["name"] == "update_rel"),
    }


def _out_summary(rows: list[dict]) -> dict:
    """The share of the value change reaching the plain prompt's residual stream after the last edited layer
    (multi-layer editors only: compute.editors.diagnostics.delivered_at_output)."""
    out = [r["delivered_out_plain"] for r in rows if r.get("delivered_out_plain") is not None]
    if not out:
        return {}
    return {"delivered_out_plain_ge_0.8": round(sum(d >= 0.8 for d in out) / len(out), 4),
            "delivered_out_plain_median": round(statistics.median(out), 4)}


def summary(rows: list[dict]) -> dict:
    def mean(key):
        vals = [r[key] for r in rows if r[key] is not None]
        return round(sum(vals) / len(vals), 4) if vals else None

    deliv = [r["delivered_plain"] for r in rows if r["delivered_plain"] is not None]
    return {"n": len(rows), "es": mean("es"), "ps": mean("ps"), "converged": mean("converged"),
            "clamped": mean("clamped"), "steps_median": statistics.median(r["steps"] for r in rows),
            "delivered_plain_ge_0.8": round(sum(d >= 0.8 for d in deliv) / max(len(deliv), 1), 4),
            "delivered_plain_median": round(statistics.median(deliv), 4) if deliv else None,
            **_out_summary(rows),
            "update_rel_median": round(statistics.median(r["update_rel"] for r in rows), 5)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", default="store/results.sqlite")
    ap.add_argument("--set", default="smollm2-135m-n240-s0")
    ap.add_argument("--counterfact", default="benchmarks/data/counterfact_subject_initial.json")
    ap.add_argument("--editors", default="ROME")
    ap.add_argument("--constraints", default="all,mean")
    ap.add_argument("--limit", type=int, default=None, help="at most this many cases per group")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    lm = load_model()
    ctx = EditContext(cache_dir=default_cache_dir())
    groups = _cases(args.store, args.set, args.counterfact)
    out = {"command": " ".join(sys.argv), "threads": torch.get_num_threads(),
           "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "load_start": os.getloadavg()[0], "results": {}}
    start = time.time()
    for editor in args.editors.split(","):
        base = load_hparams(editor, "smollm2-135m")
        for constraint in args.constraints.split(","):
            hp = dataclasses.replace(base, key_constraint=constraint)
            for group, cases in groups.items():
                rows = [one_edit(lm, c, editor, hp, ctx) for c in cases[: args.limit]]
                key = f"{editor} key_constraint={constraint} {group}"
                out["results"][key] = {"summary": summary(rows), "rows": rows}
                print(key, json.dumps(out["results"][key]["summary"]), flush=True)
    out["seconds"] = round(time.time() - start, 1)
    out["load_end"] = os.getloadavg()[0]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()

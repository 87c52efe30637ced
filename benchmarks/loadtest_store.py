"""Make a LOAD-TEST store: synthetic measurements for timing the dashboard, never results, never shipped.

Writes a store with the real schema (store.Store) whose every run says `host = "load-test"` and whose
meta table carries `load_test = synthetic data for dashboard benchmarks; not results`. The numbers are
random draws shaped like real ones (shares in [0, 1]); nothing in it was measured on a model. The
default output is under artifacts/ (ignored by git).

Contents for the default --rows 1000000: the knowledge base's relations (names only), `--cases` cases with
popularity features, one knowledge run (all rephrase types), robustness runs for four editors (every case x
16 rephrase types + neighbourhood x 6 metrics), and sequential runs with checkpoints and per-case
retention rows, until the measurements table holds about --rows rows.

    python benchmarks/loadtest_store.py [--out artifacts/loadtest.sqlite] [--rows 1000000] [--cases 2000]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from store import Store  # noqa: E402
from store.metrics import REPHRASE_TYPES  # noqa: E402

LABEL = "synthetic data for dashboard benchmarks; not results"
RELATIONS = ("capital", "continent", "currency", "official_language", "demonym", "city_country",
             "element_symbol", "atomic_number")
EDITORS = ("ROME", "MEMIT", "FT-L", "IKE")
ROB_METRICS = ("acc", "rev", "es", "magnitude", "p_new", "p_true")
TASKS = ("sentiment", "analogy", "nli", "closed_book_qa", "reading", "entity_typing", "dialogue_memory", "topic")


def build(out: Path, rows: int, n_cases: int, seed: int = 0) -> dict:
    rnd = random.Random(seed)
    if out.exists():
        out.unlink()
    started = time.perf_counter()
    with Store.open(out, create=True) as st:
        st.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('load_test', ?)", (LABEL,))
        st.write_kb([{"relation": r, "subject_kind": "synthetic", "description": "load test", "templates": "{}"}
                     for r in RELATIONS], [], [])
        cases, probes = [], []
        for i in range(n_cases):
            rel = RELATIONS[i % len(RELATIONS)]
            cid = f"{rel}:S{i}"
            cases.append({"case_id": cid, "case_set": "loadtest", "source": "synthetic", "relation": rel,
                          "subject": f"Subject {i}", "prompt": f"Subject {i} prompt", "true_object": "A",
                          "new_object": "B", "frequency": rnd.uniform(1, 7), "connection": rnd.randint(1, 40),
                          "cooccurrence": rnd.randint(0, 30), "population": rnd.randint(0, 10**7),
                          "popularity_quartile": 1 + i % 4, "seed": seed})
            probes.append({"case_id": cid, "probe_id": 0, "rephrase_type": "plain", "text": f"Subject {i} prompt",
                           "target_true": "A", "target_new": "B"})
        st.write_cases(cases, probes)
        ids = [c["case_id"] for c in cases]

        def run(kind, editor=None, hparams=None, config=None, n_total=None):
            return st.start_run(kind=kind, model="smollm2-135m", editor=editor, hparams=hparams or {}, seed=0,
                                config={"case_set": "loadtest", **(config or {})},
                                provenance={"host": "load-test", "code_version": "load-test"}, n_total=n_total)

        written = 0
        types = list(REPHRASE_TYPES) + ["neighbourhood"]
        knowledge = run("knowledge", config={"rephrase_types": list(REPHRASE_TYPES)}, n_total=n_cases)
        batch = [{"run_id": knowledge, "case_id": c, "edit_count": 0, "rephrase_type": t, "metric": m,
                  "value": rnd.random()} for c in ids for t in REPHRASE_TYPES for m in ("recall", "rev", "p_true")]
        st.write_measurements(batch)
        written += len(batch)
        st.finish_run(knowledge, status="done")
        for ed in EDITORS:
            rid = run("robustness", ed, n_total=n_cases)
            batch = [{"run_id": rid, "case_id": c, "edit_count": 1, "rephrase_type": t, "metric": m,
                      "value": float(rnd.random() < 0.6) if m in ("acc", "rev", "es") else rnd.random()}
                     for c in ids for t in types for m in ROB_METRICS]
            st.write_measurements(batch)
            written += len(batch)
            st.heartbeat(rid, n_done=n_cases, n_total=n_cases)
            st.finish_run(rid, status="done")
        s = 0
        while written < rows:
            ed = EDITORS[s % 3]
            rid = run("sequential", ed, config={"batch_size": 1}, n_total=1000)
            batch, drift = [], []
            checkpoints = list(range(1, 11)) + list(range(20, 1001, 10))
            for k in checkpoints:
                frac = k / 1000
                for scope, metric, value in (("newest", "es", 1 - frac / 2), ("newest", "ns", 0.7 - frac / 3),
                                             ("all_edits", "retention", 1 - frac), ("all_edits", "forgotten", frac),
                                             ("panel", "panel_recall", 1 - frac), ("free_text", "fluency", 5 - 3 * frac),
                                             ("all_edits", "n", k), ("panel", "n", 50), ("newest", "n", 10)):
                    noisy = value if metric == "n" else value + rnd.gauss(0, 0.01)
                    if metric not in ("n", "fluency"):
                        noisy = min(max(noisy, 0.0), 1.0)
                    batch.append({"run_id": rid, "case_id": "*", "edit_count": k, "rephrase_type": scope,
                                  "metric": metric, "value": noisy})
                for c in ids[:k]:
                    batch.append({"run_id": rid, "case_id": c, "edit_count": k, "rephrase_type": "plain",
                                  "metric": "es", "value": float(rnd.random() < 1 - frac)})
                drift.append({"run_id": rid, "edit_count": k, "module": "model.layers.3.mlp.down_proj",
                              "fro_delta": frac * 10, "rel_change": frac, "cond_number": 100 + k})
                if written + len(batch) >= rows:
                    break
            st.write_measurements(batch)
            st.write_weight_drift(drift)
            st.write_abilities([
                {"run_id": rid, "edit_count": k, "batch_size": 1, "task": task, "task_version": "1", "mode": "quick",
                 "score": max(0.0, 0.8 - k / 2000 + rnd.gauss(0, 0.02)), "n": 60, "ci_low": 0.5, "ci_high": 0.9,
                 "category": task, "study_c": "own", "metric": "accuracy", "chance": 0.25, "higher_is_better": 1}
                for k in range(0, 1001, 50) for task in TASKS])
            written += len(batch)
            st.heartbeat(rid, n_done=k, n_total=1000)
            st.finish_run(rid, status="done")
            s += 1
        total = st.conn.execute("SELECT count(*) FROM measurements").fetchone()[0]
        from store.derived import store_correlations

        store_correlations(st)  # as `store finalize` does for a real store
        st.finalize()
    return {"path": str(out), "measurement_rows": total, "cases": n_cases, "label": LABEL,
            "seconds": round(time.perf_counter() - started, 1), "size_mb": round(out.stat().st_size / 2**20, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("artifacts/loadtest.sqlite"))
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--cases", type=int, default=2000)
    args = ap.parse_args()
    print(json.dumps(build(args.out, args.rows, args.cases), indent=2))


if __name__ == "__main__":
    main()

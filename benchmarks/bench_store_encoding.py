"""The per-edit diagnostics before and after schema v8 (dictionary-encoded behind a view): file size, the reads
the dashboard and the findings make, and the write of one sequential run's diagnostics (a script, not a test).

    python benchmarks/bench_store_encoding.py OLD.sqlite [--out benchmarks/results/store-encoding.json]

OLD is a store at schema v7 (e.g. `git show 2d14704:store/rebuild.sqlite > /tmp/v7.sqlite`); the script makes a
v8 copy of it with this code (store migrate + finalize) and times the same reads on both, side by side in this
process, best of --repeat. The reading code is the same on both (store.queries, store.diagnostics read the
`edit_diagnostics` table at v7 and the view of the same name at v8); the write is each schema's own path: v7 an
INSERT .. ON CONFLICT into the table (store.db._upsert at 2d14704), v8 an INSERT through the view's trigger.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from store import Store, queries  # noqa: E402
from store.diagnostics import per_edit  # noqa: E402


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def _reads(path: Path, repeat: int) -> dict[str, float]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        runs = [r[0] for r in conn.execute("SELECT DISTINCT run_id FROM runs WHERE kind = 'sequential' "
                                           "ORDER BY run_id")]
        one = runs[0]
        return {
            "edit_diagnostics, every run": _best(lambda: queries.edit_diagnostics(conn), repeat),
            "edit_diagnostics, one sequential run": _best(lambda: queries.edit_diagnostics(conn, one), repeat),
            "edit_diagnostics_summary, every run": _best(lambda: queries.edit_diagnostics_summary(conn), repeat),
            "per_edit, one sequential run": _best(lambda: per_edit(conn, one), repeat),
            "sum of squares per edit, one run (verdicts)": _best(lambda: conn.execute(
                "SELECT edit_count, SUM(value * value) FROM edit_diagnostics WHERE run_id = ? AND name = "
                "'update_norm' GROUP BY edit_count", (one,)).fetchall(), repeat),
        }
    finally:
        conn.close()


def _write(path: Path, v8: bool, n_edits: int = 500) -> float:
    """Write one sequential run's worth of diagnostic rows (n_edits x 15) in one transaction, into a copy."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "w.sqlite"
        shutil.copy(path, copy)
        conn = sqlite3.connect(copy)
        conn.execute("INSERT INTO runs (run_id, kind, model, status, started_at) VALUES "
                     "('bench-run', 'sequential', 'm', 'running', '2026-12-07T00:00:00')")
        conn.commit()
        rows = [("bench-run", n, f"case-{n}", target, name, 0.5 + n)
                for n in range(1, n_edits + 1)
                for target, name in [("model.layers.3.mlp.down_proj.weight", "update_norm"),
                                     ("model.layers.3.mlp.down_proj.weight", "update_rel"), ("", "steps"),
                                     ("", "converged"), ("", "clamped"), ("", "target_nll"), ("", "kl"),
                                     ("plain", "delivered"), ("paraphrase:1", "delivered"),
                                     ("paraphrase:2", "delivered"), ("paraphrase:3", "delivered"),
                                     ("", "v_norm"), ("", "delta_norm"), ("", "seconds"), ("", "lr")]]
        sql = ("INSERT INTO edit_diagnostics (run_id, edit_count, case_id, target, name, value) VALUES "
               "(?, ?, ?, ?, ?, ?)") + ("" if v8 else " ON CONFLICT (run_id, edit_count, case_id, target, name) "
                                              "DO UPDATE SET value = excluded.value")
        t = time.perf_counter()
        with conn:
            conn.executemany(sql, rows)
        out = time.perf_counter() - t
        conn.close()
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", type=Path, help="a store at schema v7")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        new = Path(tmp) / "v8.sqlite"
        shutil.copy(args.old, new)
        with Store.open(new) as st:  # migrates
            rows = st.conn.execute("SELECT COUNT(*) FROM edit_diagnostics").fetchone()[0]
            st.finalize()
        result = {
            "machine": platform.platform(), "python": platform.python_version(), "old": str(args.old),
            "diagnostic_rows": rows,
            "size_mb": {"v7": round(args.old.stat().st_size / 1e6, 1), "v8": round(new.stat().st_size / 1e6, 1)},
            "reads_s": {"v7": _reads(args.old, args.repeat), "v8": _reads(new, args.repeat)},
            "write_500_edits_s": {"v7": min(_write(args.old, False) for _ in range(args.repeat)),
                                  "v8": min(_write(new, True) for _ in range(args.repeat))},
        }
    result["ratio_v8_over_v7"] = {k: round(result["reads_s"]["v8"][k] / result["reads_s"]["v7"][k], 2)
                                  for k in result["reads_s"]["v7"]}
    result["ratio_v8_over_v7"]["write_500_edits"] = round(
        result["write_500_edits_s"]["v8"] / result["write_500_edits_s"]["v7"], 2)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()

"""Benchmark of the CLI's one-fact demo (issue 22, point 3): `python -m compute edit` end to end, the code before
issue 22 against the new one, side by side in one script.

A script, not a test. Each measured run is a fresh process (import, model load, knowledge base, edit, evaluation,
saving: what a user waits for), on the same fact and the same scratch copy of the shown store, so that both
paths save into a store of the same size:

- old: the `edit` command as it was before issue 22 (`old_edit` below, kept here only for this comparison):
  the unedited model evaluated on every rephrase type, the edit, the edited model on every type, then saved.
- new: today's `edit` (compute.demo_worker.run_demo): the unedited model's answers from the store when it holds
  them for these probes (here: the demo run that the first new run saved, matched by its probes digest), the
  edit, the edited model on every type, saved.
  Two variants: "new" also finds the edit's optimised target value in the disk value cache (the same fact
  edited before on the same weights, compute.editors.value_cache), "new-answers" has that cache emptied before
  it runs, so only the stored answers help.
- new, cold: the first new run, on a store without stored answers for this fact and an empty value cache (it
  recomputes the answers, as the old path always does); reported beside the others.

Every run uses a scratch cache folder (EDITSCOPE_CACHE) whose model copy, knowledge base, Wikipedia paragraphs,
prefixes and covariance statistics link to the real cache, while its value cache is its own.

Old and new runs alternate (old, new-answers, new, then new, new-answers, old, ...) so that a change in the machine's load falls on both
alike; the machine's 1-minute load average is recorded before and after every run. OMP_NUM_THREADS is passed
on to every run (the default here: 1).

    python benchmarks/bench_demo.py --repeats 2 --out benchmarks/results/demo-cli-DATE.json

`--browser` measures the Edit demo instead, in Chromium driven by Playwright (executable /usr/bin/chromium) on
the running app: it starts the dashboard on the shown store (opened read-only, checksummed before and after)
with a scratch workspace, clicks "Run edit" on the page's default fact (France, capital -> Rome, ROME) twice, then once
with the new object Berlin, and records for each click the seconds until the page first shows the edited model's plain and paraphrase
answers and until it shows all 16 types (the page's "Answered after the edit: N of 16" line), with the load
average at the click. The first click starts the demo worker (model load) on a fact whose answers the store
does not hold; the second finds the worker warm, the answers stored by the first and the edit's target value
in the value cache; the third (another new object) reuses the stored answers (the new object's scores
recomputed) but optimises its value. The app runs on a scratch cache folder (as for the CLI runs), so the value
cache starts empty.

    python benchmarks/bench_demo.py --browser --out benchmarks/results/demo-browser-DATE.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FACT = ["--subject", "France", "--relation", "capital", "--new", "Rome"]


def old_edit(args) -> None:
    """`cmd_edit` as it was before issue 22 (commit 87fb6bc), unchanged but for its name."""
    from compute.cases import CaseBuilder
    from compute.cli import _open_store, _out
    from compute.setup import editor_setup as _editor_setup
    from compute.setup import load_kb as _load_kb
    from compute.setup import load_model_for as _load_model
    from compute.setup import paragraphs as _paragraphs
    from compute.editors import EditRequest, apply_edit, undo
    from compute.editors.base import hparams_dict
    from compute.evaluate import evaluate_cases
    from compute.experiments.robustness import edit_rows
    from compute.provenance import provenance
    from store.metrics import REPHRASE_TYPES

    stages = 5

    _out(f"stage 1/{stages}: loading the model and the knowledge base")
    lm = _load_model(args)
    ed, hp, ctx = _editor_setup(args, lm, args.editor)
    builder = CaseBuilder(_load_kb(args), lm.tokenizer, _paragraphs(args))
    case = builder.custom_case(args.subject, args.relation, args.new, args.true)
    _out(f"edit: {case.prompt} {case.true_object} -> {case.new_object}   ({ed.name}, {lm.name})")
    _out(f"stage 2/{stages}: the unedited model on every rephrase type")
    pre = evaluate_cases(lm, [case], REPHRASE_TYPES, gen_tokens=args.gen_tokens)[0]
    _out(f"stage 3/{stages}: editing with {ed.name}")
    result = apply_edit(lm, [EditRequest.from_case(case)], ed.name, hp, ctx)
    try:
        _out(f"stage 4/{stages}: the edited model on every rephrase type")
        post = evaluate_cases(lm, [case], REPHRASE_TYPES, gen_tokens=args.gen_tokens, prefix=result.prefix)[0]
    finally:
        undo(lm, result)
    gens_pre = {r: t for _, r, t in pre.generations}
    gens_post = {r: t for _, r, t in post.generations}
    for rtype in REPHRASE_TYPES:
        a, b = pre.values[rtype], post.values[rtype]
        _out(f"\n[{rtype}]  P(new) {a['p_new']:.3f} -> {b['p_new']:.3f}   P(true) {a['p_true']:.3f} -> {b['p_true']:.3f}"
             f"   acc {a['acc']:.0f} -> {b['acc']:.2f}   rev {a['rev']:.2f} -> {b['rev']:.2f}")
        _out(f"  before: {gens_pre.get(rtype, '')!r}")
        _out(f"  after:  {gens_post.get(rtype, '')!r}")
    ns = post.values.get("neighbourhood", {}).get("ns")
    _out(f"\nneighbourhood score after the edit: {ns:.2f}   edit took {result.info.get('seconds', 0):.1f} s")
    if args.no_save:
        return
    _out(f"stage 5/{stages}: saving the run")
    with _open_store(args, create=True) as st:
        row, probes = case.to_rows()
        st.write_cases([row], probes)
        run_id = st.start_run(kind="demo", model=lm.name, editor=ed.name, hparams=hparams_dict(hp), seed=args.seed,
                              config={"case_id": case.case_id, "gen_tokens": args.gen_tokens},
                              provenance=provenance(str(lm.device)), n_total=1)
        st.write_measurements(pre.rows(run_id, 0) + post.rows(run_id, 1) + edit_rows(run_id, case.case_id, result.info))
        st.write_generations(pre.generation_rows(run_id, 0, "pre") + post.generation_rows(run_id, 1, "post"))
        st.heartbeat(run_id, n_done=1)
        st.finish_run(run_id, status="done", timings={"edit_seconds": result.info.get("seconds")})
    _out(f"saved as run {run_id}")


def _one(path: str, argv: list[str]) -> int:
    """One end-to-end run in this process (the orchestrator starts a process per run)."""
    from compute.cli import build_parser, cmd_edit

    args = build_parser().parse_args(argv)
    (old_edit if path == "old" else cmd_edit)(args)
    return 0


def _scratch_cache(folder: Path) -> Path:
    """A cache folder linking to the real one's contents, with a value cache of its own."""
    real = Path(os.environ.get("EDITSCOPE_CACHE") or Path.home() / ".cache" / "editscope")
    folder.mkdir(parents=True)
    for item in real.iterdir():
        if item.name not in ("values", "jobs", "workspace"):
            (folder / item.name).symlink_to(item)
    return folder


def _timed(path: str, store: Path, gen_tokens: int, threads: str, cache: Path, hparams: str | None = None) -> dict:
    argv = ["--store", str(store), "--quiet", "edit", *FACT, "--gen-tokens", str(gen_tokens)]
    if hparams:
        argv += ["--hparams", hparams]
    if path == "new-answers":
        shutil.rmtree(cache / "values", ignore_errors=True)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "PYTHONPATH": str(ROOT), "EDITSCOPE_CACHE": str(cache)}
    load0 = os.getloadavg()[0]
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--one", "old" if path == "old" else "new", "--", *argv],
                          env=env, capture_output=True,
                          text=True)
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{path} run failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    out = proc.stdout
    took = next((float(x.split("edit took ")[1].split(" s")[0]) for x in out.splitlines() if "edit took" in x), None)
    source = next((x for x in out.splitlines() if x.startswith("unedited answers")), "evaluated (old path)")
    return {"path": path, "seconds": round(seconds, 2), "edit_seconds": took, "load_before": round(load0, 2),
            "load_after": round(os.getloadavg()[0], 2), "before_answers": source,
            "value_from_cache": "came from the value cache" in out}


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _worker_stages(workspace: Path, cache: Path) -> dict:
    """The newest demo's seconds per stage by the worker's own stamps (dashboard.jobs.stage_times)."""
    from dashboard import jobs

    kept = os.environ.get("EDITSCOPE_CACHE")
    os.environ["EDITSCOPE_CACHE"] = str(cache)
    try:
        demos = [j for j in jobs.list_jobs(workspace) if j.kind == "edit"]
        return {what: round(s, 2) for _, what, s in jobs.stage_times(demos[0])} if demos else {}
    finally:
        if kept is None:
            os.environ.pop("EDITSCOPE_CACHE")
        else:
            os.environ["EDITSCOPE_CACHE"] = kept


def browser(args, threads: str) -> dict:
    """Two demos clicked in Chromium on the running app (see the module docstring)."""
    import re
    import socket
    import urllib.request

    from playwright.sync_api import sync_playwright

    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage"]
    scratch = Path(tempfile.mkdtemp(prefix="bench-demo-browser-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    before = _sha(args.store)
    cache = _scratch_cache(scratch / "cache")
    env = {**os.environ, "EDITSCOPE_STORE": str(args.store), "EDITSCOPE_WORKSPACE": str(scratch / "ws.sqlite"),
           "EDITSCOPE_CACHE": str(cache),
           "EDITSCOPE_PUBLIC": "", "OMP_NUM_THREADS": threads, "PYTHONPATH": str(ROOT)}
    log = open(scratch / "streamlit.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "dashboard" / "app.py"),
                             "--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless", "true",
                             "--browser.gatherUsageStats", "false"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    pattern = re.compile(r"Answered after the edit: (\d+) of (\d+) rephrase types(?: \(([^)]*)\))?")
    clicks = []
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("streamlit did not start: " + (scratch / "streamlit.log").read_text()[-2000:])
            time.sleep(0.5)
        with sync_playwright() as pw:
            chrome = pw.chromium.launch(executable_path="/usr/bin/chromium", args=flags)
            page = chrome.new_page()
            page.goto(url + "/demo", timeout=120_000)
            page.get_by_role("button", name="Run edit").wait_for(timeout=120_000)
            for label, new in (("first: worker started, nothing stored", None),
                               ("second, same fact: worker warm, answers and target value stored", None),
                               ("third, new object Berlin: worker warm, answers stored, value optimised", "Berlin")):
                if new:
                    page.get_by_label("New object").fill(new)
                load0 = os.getloadavg()[0]
                page.get_by_role("button", name="Run edit").click()
                t0 = time.perf_counter()
                first = every = done = None
                text, started, fresh = "", False, False
                while time.perf_counter() - t0 < args.timeout:
                    # textContent needs no layout (innerText does, and at five reads a second over the page's
                    # code blocks it took CPU from the demo it measures); innerText once at the end
                    text = page.evaluate("document.body.textContent")
                    now = time.perf_counter() - t0
                    if not started:  # the page still shows the previous demo until the watcher takes over
                        started = "Your demo (in progress)" in text or re.search(r"Step \d of 6", text) is not None
                        if not started:
                            time.sleep(0.1)
                            continue
                    m = pattern.search(text)
                    if not fresh:  # Streamlit keeps the previous demo's elements (faded) until the rerun
                        # replaces them: its "N of N answered" can sit beside the new progress bar. Count only
                        # once that line is gone or shows fewer than all types (this demo's own rows).
                        fresh = m is None or m.group(1) != m.group(2)
                        if not fresh:
                            time.sleep(0.1)
                            continue
                    if m and first is None and {"plain", "paraphrase"} <= set((m.group(3) or "").split(", ")):
                        first = now
                    if m and every is None and m.group(1) == m.group(2):
                        every = now
                    if "Your demo:" in text and every is not None:
                        done = now
                        break
                    time.sleep(0.2)
                text = page.inner_text("body")
                stages = next((x for x in text.splitlines() if x.startswith("Time per stage:")), None)
                clicks.append({"click": label, "first_answers_s": first and round(first, 1),
                               "worker_stages_s": _worker_stages(scratch / "ws.sqlite", cache),
                               "all_types_s": every and round(every, 1), "page_final_s": done and round(done, 1),
                               "load_at_click": round(load0, 2), "load_after": round(os.getloadavg()[0], 2),
                               "before_from_store": "from stored run" in text, "stages": stages,
                               "new_object": new or "Rome"})
                print(clicks[-1], flush=True)
            page.screenshot(path=str(scratch / "demo.png"), full_page=True)
            shutil.copy(scratch / "demo.png", ROOT / "artifacts" / "screenshots" / "demo-after-issue22.png") \
                if (ROOT / "artifacts" / "screenshots").is_dir() else None
            chrome.close()
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
        shutil.rmtree(scratch, ignore_errors=True)
    if _sha(args.store) != before:
        raise SystemExit(f"{args.store} changed during the benchmark")
    return {"what": "Edit demo in Chromium (Playwright) on the running app: seconds from the click to the edited "
                    "model's plain and paraphrase answers on the page, and to all 16 types",
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "omp_num_threads": threads},
            "targets": {"first_answers_s": 10, "all_types_s": 20, "when": "quiet machine"},
            "clicks": clicks, "shown_store_unchanged": True}


def main(argv=None) -> int:
    if argv is None and "--one" in sys.argv:
        i = sys.argv.index("--one")
        return _one(sys.argv[i + 1], sys.argv[sys.argv.index("--") + 1:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=2, help="old and new (warm) runs each")
    ap.add_argument("--gen-tokens", type=int, default=30)
    ap.add_argument("--store", type=Path, default=ROOT / "store" / "results.sqlite",
                    help="the store to copy (read once, never written)")
    ap.add_argument("--browser", action="store_true", help="measure the Edit demo in Chromium instead")
    ap.add_argument("--timeout", type=float, default=600, help="seconds to wait for one demo in the browser")
    ap.add_argument("--hparams", help="the editor's setting for every run, e.g. 'paper' (ROME's setting when issue 22 "
                    "measured the command: 20 steps at lr 0.5); default: the shipped, calibrated one")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    threads = os.environ.get("OMP_NUM_THREADS", "1")
    if args.browser:
        result = browser(args, threads)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        return 0
    scratch = Path(tempfile.mkdtemp(prefix="bench-demo-"))
    store = scratch / "results.sqlite"
    shutil.copy(args.store, store)
    cache = _scratch_cache(scratch / "cache")
    runs = []
    try:
        runs.append({**_timed("new-answers", store, args.gen_tokens, threads, cache, args.hparams), "path": "new-cold"})
        print(runs[-1], flush=True)
        kinds = ("old", "new-answers", "new")
        order = [p for k in range(args.repeats) for p in (kinds if k % 2 == 0 else kinds[::-1])]
        for path in order:
            runs.append(_timed(path, store, args.gen_tokens, threads, cache, args.hparams))
            print(runs[-1], flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    old = [r["seconds"] for r in runs if r["path"] == "old"]
    new = [r["seconds"] for r in runs if r["path"] == "new"]
    answers = [r["seconds"] for r in runs if r["path"] == "new-answers"]
    result = {
        "what": "python -m compute edit " + " ".join(FACT) + f" --gen-tokens {args.gen_tokens}"
                + (f" --hparams {args.hparams}" if args.hparams else "") + ", end to end, "
                "a fresh process per run: old (before issue 22) vs new (stored unedited answers and the cached "
                "target value of this fact), new-answers (stored answers, value optimised again) and new-cold "
                "(nothing stored)",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "omp_num_threads": threads},
        "runs": runs,
        "old_median_s": statistics.median(old),
        "new_median_s": statistics.median(new),
        "ratio_median": round(statistics.median(old) / statistics.median(new), 3),
        "ratio_total": round(sum(old) / sum(new), 3),
        "new_answers_median_s": statistics.median(answers),
        "ratio_answers_only": round(statistics.median(old) / statistics.median(answers), 3),
        "new_cold_s": runs[0]["seconds"],
        "ratio_cold": round(statistics.median(old) / runs[0]["seconds"], 3),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark of the ROME and MEMIT editors on the embedded default model (a script, not a test).

Measures, on a fixed list of knowledge-base edits (CaseBuilder.sample with seed 0 over four relations,
the new object drawn by the same seed):

- per-edit wall time of ROME with the fast value loop and with the straightforward reference loop
  (`fast=False`: full forward and backward of every prompt at every step), median and p90, and the ratio;
  both optimise the same objective with the same stopping rule, so their edits agree;
- the wall time of one MEMIT batch of `--memit-batch` edits;
- the time to compute the key covariance for one layer (ROME's) and for MEMIT's layers in one pass,
  in a fresh cache folder so nothing is read from disk;
- evaluation throughput: probes per second when `compute.evaluate.evaluate_cases` scores every probe of
  `--eval-cases` cases (all 16 rephrase types and the neighbourhood prompts: both objects and a 30-token
  greedy generation per probe, as in the robustness experiment);
- peak resident memory of the process (getrusage maxrss);
- a floor for ROME's per-edit time: each timed edit's essential matrix-product FLOPs (`step_flops`: the live
  tokens through the blocks after the edited layer and the unembedding of the scored positions, forward at
  every step and backward at every step but the last, `edit_flops`), divided by the FLOP rate this CPU
  reaches on the model's weight matrices at that many tokens, cycling through every layer as a step does
  (`matmul_rate`). No implementation of the same optimisation (same prompts, same steps) runs faster than its
  products;
- whether a CUDA run of one step would be launch-bound: its operators counted with a dispatch mode
  (`ops_per_step`) times a stated launch cost, against its FLOPs at a stated GPU rate (`launch_bound`).

Every edit is undone before the next. The covariance statistics and context prefixes used by the timed
edits come from the ordinary cache ($EDITSCOPE_CACHE), warmed by one untimed edit first. The load
average before and after is recorded: on a shared machine other processes change the numbers.

    python benchmarks/bench_editors.py --out bench.json [--edits 10] [--memit-batch 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RELATIONS = ("capital", "continent", "currency", "official_language")


def percentile(values: list[float], q: float) -> float:
    """The q-quantile by linear interpolation between order statistics."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def fixed_requests(lm, cache_dir: Path, n: int):
    """n edit requests drawn deterministically from the knowledge base (seed 0)."""
    from compute.cases import CaseBuilder
    from compute.editors import EditRequest
    from compute.kb import load_knowledge_base
    from compute.relations import RELATIONS as TEMPLATES
    from compute.wiki import load_wiki_paragraphs

    builder = CaseBuilder(load_knowledge_base(cache_dir), lm.tokenizer, load_wiki_paragraphs(cache_dir))
    requests = []
    for fact, _quartile in builder.sample(n, seed=0, relations=RELATIONS):
        prompt = TEMPLATES[fact.relation].prompt.format(subject=fact.subject)
        requests.append(EditRequest(fact.subject, prompt, builder.new_object(fact, 0), fact.object))
    return requests


def time_edits(lm, requests, editor: str, hp, ctx) -> tuple[list[float], list[dict]]:
    """Wall time of each single-request edit (each undone before the next) and whether it took."""
    from compute.editors import apply_edit, undo
    from compute.scoring import score_targets

    seconds, outcomes = [], []
    for request in requests:
        start = time.perf_counter()
        result = apply_edit(lm, [request], editor, hp, ctx)
        seconds.append(time.perf_counter() - start)
        new, true = score_targets(lm, [request.prompt] * 2, [request.target_new, request.target_true])
        outcomes.append({"subject": request.subject, "new": request.target_new, "took": new.nll < true.nll,
                         "steps": result.info["steps"], "seconds": round(seconds[-1], 3)})
        undo(lm, result)
    return seconds, outcomes


def step_flops(lm, request, layer: int, prefixes) -> dict:
    """The essential floating-point operations of one step of ROME's value optimisation for `request`, matrix
    products with the model's weights only (attention scores, norms and element-wise work come on top).

    Essential: delta enters after the edited layer at the subject's last token, so a step needs only the live
    tokens (each prompt's subject's last token and after; no padding) through the blocks after that layer, and
    the unembedding of the scored positions; its backward pass (gradients of activations only: no weight is
    trained) repeats those products once. `forward` and `backward` are given apart, because the last step of
    an edit runs forward only (it stops there)."""
    from compute.editors import rome

    rows = rome._rewrite_rows(lm, request, prefixes) + [rome._kl_row(lm, request)]
    tokens = sum(len(r.ids) - r.subject for r in rows)
    block = lm.module(lm.arch.layer.format(0))
    per_layer = sum(p.numel() for p in block.parameters() if p.dim() == 2)
    vocab, d = lm.model.get_output_embeddings().weight.shape
    scored = sum(len(r.predict) for r in rows)
    above = lm.n_layers - layer - 1
    forward = 2 * tokens * per_layer * above + 2 * scored * vocab * d
    return {"tokens": tokens, "scored": scored, "forward": forward, "backward": forward}


def edit_flops(shape: dict, steps: int) -> int:
    """FLOPs of an edit of `steps` steps: a forward pass each, a backward pass for all but the last."""
    return steps * shape["forward"] + max(steps - 1, 0) * shape["backward"]


def matmul_rate(lm, tokens: int, repeat: int = 5) -> float:
    """FLOP/s of this CPU on the model's weight matrices with `tokens` input rows, cycling through every
    layer's matrices in order as a step does (each step streams all of them, about 0.5 GB in float32, so none
    stays in cache), forward and activation-gradient products alike."""
    import torch

    weights = [p.detach() for layer in range(lm.n_layers)
               for p in lm.module(lm.arch.layer.format(layer)).parameters() if p.dim() == 2]
    xs = {w.shape[1]: torch.randn(tokens, w.shape[1]) for w in weights}
    gs = {w.shape[0]: torch.randn(tokens, w.shape[0]) for w in weights}
    with torch.no_grad():
        for w in weights:  # warm-up pass
            xs[w.shape[1]] @ w.T
        start = time.perf_counter()
        for _ in range(repeat):
            for w in weights:
                xs[w.shape[1]] @ w.T
            for w in reversed(weights):
                gs[w.shape[0]] @ w
        seconds = time.perf_counter() - start
    flops = repeat * sum(2 * (2 * tokens * w.numel()) for w in weights)
    return flops / seconds


# Stated, not measured here (no GPU on this machine): what one kernel launch and one FLOP cost on a GPU, for the
# launch-bound estimate below. 5 us is a typical CUDA launch-plus-dispatch cost from Python for small kernels;
# 400 TFLOP/s is of the order of a current data-centre GPU's dense float32-via-TF32 / bf16 rate.
GPU_LAUNCH_S = 5e-6
GPU_FLOPS = 400e12


def ops_per_step(lm, request, hp, prefixes) -> int:
    """Operators (aten calls: on a GPU, kernel launches) of one step of ROME's value optimisation for `request`:
    the packed objective's forward, the loss and its backward, counted with a dispatch mode."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from compute.editors import rome

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.n += 1
            return func(*args, **(kwargs or {}))

    rows = rome._rewrite_rows(lm, request, prefixes) + [rome._kl_row(lm, request)]
    with rome.edit_mode(lm):
        objective = rome._PackedObjective(lm, hp.layer, rows)
        _, d_out = rome.down_proj_dims(lm, hp.layer)
        delta = torch.zeros((len(rows), d_out), requires_grad=True)
        active = torch.ones(len(rows), dtype=torch.bool)
        objective(delta, active)  # the layout and its cache are built once per edit, not per step
        with torch.enable_grad(), Count():
            logp, keep = objective(delta, active)
            targets = objective.labels[keep].clamp(min=0)
            loss = -logp.gather(1, targets[:, None]).sum()
            loss.backward()
    return Count.n


def launch_bound(shape: dict, ops: int) -> dict:
    """Whether a CUDA run of one step would be launch-bound: the launches' time (ops x GPU_LAUNCH_S) against the
    essential FLOPs' time at GPU_FLOPS (both stated constants, not measurements)."""
    flops = shape["forward"] + shape["backward"]
    launch_s, flop_s = ops * GPU_LAUNCH_S, flops / GPU_FLOPS
    return {"ops_per_step": ops, "launch_s": launch_s, "flop_s": flop_s, "launch_bound": launch_s > flop_s,
            "launch_over_flop": launch_s / flop_s, "assumed_launch_s": GPU_LAUNCH_S, "assumed_gpu_flops": GPU_FLOPS}


def time_evaluation(lm, cache_dir: Path, n_cases: int) -> dict:
    """Probes per second of the full evaluation (all rephrase types, neighbourhood, 30-token generations)."""
    from compute.cases import CaseBuilder
    from compute.evaluate import evaluate_cases
    from compute.kb import load_knowledge_base
    from compute.wiki import load_wiki_paragraphs
    from store.metrics import REPHRASE_TYPES

    builder = CaseBuilder(load_knowledge_base(cache_dir), lm.tokenizer, load_wiki_paragraphs(cache_dir))
    cases = builder.build(n_cases, seed=0)
    probes = sum(len(c.probes) for c in cases)
    start = time.perf_counter()
    for case in cases:  # one case at a time, as after each edit in the robustness experiment
        evaluate_cases(lm, [case], REPHRASE_TYPES, gen_tokens=30)
    seconds = time.perf_counter() - start
    return {"cases": n_cases, "probes": probes, "seconds": seconds, "probes_per_s": probes / seconds,
            "seconds_per_case": seconds / n_cases}


def machine(load_before) -> dict:
    """The machine and its load before and now."""
    import torch

    return {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
            "torch": torch.__version__, "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()]}


def timed_summary(seconds: list[float], outs: list[dict]) -> dict:
    return {"median_s": statistics.median(seconds), "p90_s": percentile(seconds, 0.9),
            "took": sum(o["took"] for o in outs), "edits": outs}


def rome_floor(lm, timed, hp, fast_s: list[float], fast_out: list[dict], cache_dir: Path):
    """Each timed edit's floor (its steps x the essential FLOPs of a step, at this CPU's product rate), written
    into `fast_out`; returns (the floor summary, the first edit's step shape, the prefixes)."""
    from compute.editors.rome import context_prefixes

    prefixes = context_prefixes(lm, hp.n_prefixes, hp.prefix_tokens, cache_dir)
    shapes = [step_flops(lm, r, hp.layer, prefixes) for r in timed]
    rate = matmul_rate(lm, int(statistics.median(x["tokens"] for x in shapes)))
    for out, shape in zip(fast_out, shapes):
        out.update(step_tokens=shape["tokens"], step_gflop=round((shape["forward"] + shape["backward"]) / 1e9, 3),
                   floor_s=round(edit_flops(shape, out["steps"]) / rate, 3))
    summary = {"matmul_gflops": round(rate / 1e9, 1),
               "median_steps": statistics.median(o["steps"] for o in fast_out),
               "median_step_gflop": statistics.median(o["step_gflop"] for o in fast_out),
               "median_floor_s": statistics.median(o["floor_s"] for o in fast_out),
               "median_over_floor": statistics.median(t / o["floor_s"] for t, o in zip(fast_s, fast_out)),
               "rule": "essential products only (live tokens through the blocks after the edited layer, "
                       "unembedding of scored positions; backward the same), every step's forward, "
                       "every step but the last's backward, at the rate cycling through all layers"}
    return summary, shapes[0], prefixes


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON results")
    parser.add_argument("--edits", type=int, default=10, help="ROME edits timed per variant (>= 10 for a p90)")
    parser.add_argument("--memit-batch", type=int, default=10, help="requests in the timed MEMIT batch")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--eval-cases", type=int, default=8, help="cases whose probes are timed for throughput")
    parser.add_argument("--floor-only", action="store_true",
                        help="only ROME's fast edits, their floor and the GPU launch count, and one MEMIT batch "
                             "with its value optimisation's floor (--memit-batch 0: none) (minutes, not the "
                             "covariance from scratch, the reference loop or the evaluation)")
    args = parser.parse_args(argv)

    import torch

    from compute.covariance import corpus_chunks, layer_covariances
    from compute.editors import EditContext, apply_edit, load_hparams, undo
    from compute.models import DEFAULT_MODEL, default_cache_dir, load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    cache_dir = default_cache_dir()
    lm = load_model(DEFAULT_MODEL, cache_dir=cache_dir)
    ctx = EditContext(cache_dir=cache_dir)
    rome_hp = load_hparams("ROME", DEFAULT_MODEL)
    memit_hp = load_hparams("MEMIT", DEFAULT_MODEL)
    requests = fixed_requests(lm, cache_dir, max(args.edits, args.memit_batch))

    if args.floor_only:
        return floor_only(args, lm, ctx, rome_hp, requests, load_before)
    # Covariance from scratch, in a fresh folder (the Wikipedia paragraphs are copied, not re-parsed).
    with tempfile.TemporaryDirectory() as fresh:
        for path in cache_dir.glob("wiki-paragraphs-*.json"):
            (Path(fresh) / path.name).write_bytes(path.read_bytes())
        start = time.perf_counter()
        corpus_chunks(lm, Path(fresh), rome_hp.cov_n_tokens)
        tokenise_s = time.perf_counter() - start
        start = time.perf_counter()
        layer_covariances(lm, [rome_hp.layer], rome_hp.cov_n_tokens, Path(fresh))
        cov_one_s = time.perf_counter() - start
        start = time.perf_counter()
        layer_covariances(lm, [x for x in memit_hp.layers if x != rome_hp.layer], memit_hp.cov_n_tokens, Path(fresh))
        cov_memit_s = time.perf_counter() - start

    # Warm the ordinary cache (covariances, prefixes) with one untimed edit of each editor.
    layer_covariances(lm, sorted({rome_hp.layer, *memit_hp.layers}), rome_hp.cov_n_tokens, cache_dir)
    undo(lm, apply_edit(lm, requests[:1], "ROME", rome_hp, ctx))

    timed = requests[: args.edits]
    fast_s, fast_out = time_edits(lm, timed, "ROME", rome_hp, ctx)
    # The floor: each edit's steps x the FLOPs of one step, at the measured speed of the model's products.
    floor, shape, prefixes = rome_floor(lm, timed, rome_hp, fast_s, fast_out, cache_dir)
    gpu = launch_bound(shape, ops_per_step(lm, timed[0], rome_hp, prefixes))
    ref_s, ref_out = time_edits(lm, timed, "ROME", dataclasses.replace(rome_hp, fast=False), ctx)

    batch = requests[: args.memit_batch]
    start = time.perf_counter()
    result = apply_edit(lm, batch, "MEMIT", memit_hp, ctx)
    memit_s = time.perf_counter() - start
    from compute.scoring import score_targets

    new = score_targets(lm, [r.prompt for r in batch], [r.target_new for r in batch])
    true = score_targets(lm, [r.prompt for r in batch], [r.target_true for r in batch])
    memit_took = sum(n.nll < t.nll for n, t in zip(new, true))
    memit_steps = result.info["steps"]
    undo(lm, result)

    eval_report = time_evaluation(lm, cache_dir, args.eval_cases)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    report = {
        "model": lm.name,
        "machine": machine(load_before),
        "rome_hparams": dataclasses.asdict(rome_hp),
        "memit_hparams": {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(memit_hp).items()},
        "rome_fast": timed_summary(fast_s, fast_out),
        "rome_reference": timed_summary(ref_s, ref_out),
        "rome_speedup_median": statistics.median(ref_s) / statistics.median(fast_s),
        "rome_floor": floor,
        "rome_step_on_a_gpu": gpu,
        "memit": {"batch": len(batch), "seconds": memit_s, "took": memit_took, "steps": memit_steps},
        "covariance": {"tokens": rome_hp.cov_n_tokens, "tokenise_s": tokenise_s,
                       "one_layer_s": cov_one_s, "one_layer": rome_hp.layer,
                       "other_memit_layers_one_pass_s": cov_memit_s,
                       "other_memit_layers": [x for x in memit_hp.layers if x != rome_hp.layer]},
        "evaluation": eval_report,
        "peak_rss_mb": peak_mb,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(markdown(report))
    return report


def memit_floor(lm, batch, hp, ctx) -> dict:
    """One MEMIT batch timed, its value optimisation timed apart, and that optimisation's floor: step by step,
    the essential FLOPs of the requests still active (`step_flops` at MEMIT's last layer: a request that has
    stopped leaves the packed batch; its last step runs forward only) at this CPU's rate for that step's live
    tokens (fewer rows multiply at a lower rate). The rest of a batch (keys at every layer, the covariance
    solves) is reported beside, without a floor."""
    import compute.editors.memit as memit
    from compute.editors import apply_edit, undo
    from compute.editors.rome import context_prefixes

    undo(lm, apply_edit(lm, batch[:1], "MEMIT", hp, ctx))  # warm: covariances, prefixes
    inner, timing = memit.optimise_values, {"seconds": 0.0, "results": []}

    def timed(*a, **kw):
        start = time.perf_counter()
        out = inner(*a, **kw)
        timing["seconds"] += time.perf_counter() - start
        timing["results"] += out
        return out

    memit.optimise_values = timed
    try:
        start = time.perf_counter()
        result = apply_edit(lm, batch, "MEMIT", hp, ctx)
        total = time.perf_counter() - start
    finally:
        memit.optimise_values = inner
    undo(lm, result)
    prefixes = context_prefixes(lm, hp.n_prefixes, hp.prefix_tokens, ctx.cache_dir)
    layer = max(hp.layers)
    shapes = [step_flops(lm, r, layer, prefixes) for r in batch]
    steps = [v.steps for v in timing["results"]]
    flops = sum(edit_flops(shape, n) for shape, n in zip(shapes, steps))
    rates: dict[int, float] = {}
    floor_s = 0.0
    for step in range(max(steps)):
        on = [i for i, n in enumerate(steps) if n > step]  # forward this step
        tokens = sum(shapes[i]["tokens"] for i in on)
        work = sum(shapes[i]["forward"] + (shapes[i]["backward"] if steps[i] > step + 1 else 0) for i in on)
        if tokens not in rates:
            rates[tokens] = matmul_rate(lm, tokens)
        floor_s += work / rates[tokens]
    return {"batch": len(batch), "seconds": round(total, 2), "value_optimisation_s": round(timing["seconds"], 2),
            "rest_s": round(total - timing["seconds"], 2), "steps": steps, "layer": layer,
            "live_tokens_per_step_all_active": sum(x["tokens"] for x in shapes),
            "gflop": round(flops / 1e9, 1), "floor_s": round(floor_s, 2),
            "matmul_gflops_by_live_tokens": {str(k): round(v / 1e9, 1) for k, v in sorted(rates.items())},
            "value_optimisation_over_floor": round(timing["seconds"] / floor_s, 2),
            "rule": "the value optimisation's essential products (step_flops at MEMIT's last layer, each request "
                    "its own steps, backward on all but its last), each step at the rate cycling through all "
                    "layers with that step's live tokens"}


def floor_only(args, lm, ctx, rome_hp, requests, load_before) -> dict:
    """`--floor-only`: ROME's fast edits, each one's floor, and the launch count of one step on a GPU; with
    `--memit-batch` > 0, one MEMIT batch and its value optimisation's floor (`memit_floor`)."""
    from compute.editors import apply_edit, load_hparams, undo

    undo(lm, apply_edit(lm, requests[:1], "ROME", rome_hp, ctx))  # warm: covariance, prefixes
    timed = requests[: args.edits]
    fast_s, fast_out = time_edits(lm, timed, "ROME", rome_hp, ctx)
    floor, shape, prefixes = rome_floor(lm, timed, rome_hp, fast_s, fast_out, ctx.cache_dir)
    ops = [ops_per_step(lm, r, rome_hp, prefixes) for r in timed]
    report = {
        "what": "bench_editors.py --floor-only: ROME's fast edits, their floor and a step's launches on a GPU",
        "model": lm.name, "machine": machine(load_before), "rome_hparams": dataclasses.asdict(rome_hp),
        "rome_fast": timed_summary(fast_s, fast_out), "rome_floor": floor,
        "rome_step_on_a_gpu": launch_bound(shape, ops[0]), "ops_per_step_each_edit": ops,
    }
    if args.memit_batch:
        memit_hp = load_hparams("MEMIT", lm.name)
        report["memit_hparams"] = {k: list(v) if isinstance(v, tuple) else v
                                   for k, v in dataclasses.asdict(memit_hp).items()}
        report["memit"] = memit_floor(lm, requests[: args.memit_batch], memit_hp, ctx)
        m = report["memit"]
        print(f"MEMIT batch of {m['batch']}: {m['seconds']:.1f} s, its value optimisation {m['value_optimisation_s']:.1f} s "
              f"against a floor of {m['floor_s']:.1f} s ({m['value_optimisation_over_floor']:.2f}x)")
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    g = report["rome_step_on_a_gpu"]
    print(f"ROME fast: median {report['rome_fast']['median_s']:.2f} s per edit, floor median "
          f"{floor['median_floor_s']:.2f} s ({floor['median_over_floor']:.1f}x); a step: {g['ops_per_step']} "
          f"operators, {g['launch_s'] * 1e3:.1f} ms of launches vs {g['flop_s'] * 1e3:.3f} ms of FLOPs "
          f"({g['launch_over_flop']:.0f}x)")
    return report


def markdown(r: dict) -> str:
    """The report as a markdown table."""
    fast, ref, cov = r["rome_fast"], r["rome_reference"], r["covariance"]
    n = len(fast["edits"])
    def spread(x: dict) -> str:
        return f"median {x['median_s']:.2f} s, p90 {x['p90_s']:.2f} s"

    rows = [
        ("ROME fast, per edit", spread(fast), f"{fast['took']}/{n} took"),
        ("ROME reference loop, per edit", spread(ref), f"{ref['took']}/{n} took"),
        ("ROME speed-up (median)", f"{r['rome_speedup_median']:.2f}x", ""),
        ("ROME floor: steps x matrix-product FLOPs per step / measured product speed",
         f"median {r['rome_floor']['median_floor_s']:.2f} s",
         f"median {r['rome_floor']['median_steps']} steps x {r['rome_floor']['median_step_gflop']:.1f} GFLOP "
         f"at {r['rome_floor']['matmul_gflops']:.0f} GFLOP/s"),
        ("ROME step on a GPU (stated launch cost and FLOP rate)",
         "launch-bound" if r["rome_step_on_a_gpu"]["launch_bound"] else "FLOP-bound",
         f"{r['rome_step_on_a_gpu']['ops_per_step']} operators: {r['rome_step_on_a_gpu']['launch_s'] * 1e3:.1f} ms "
         f"of launches vs {r['rome_step_on_a_gpu']['flop_s'] * 1e3:.2f} ms of FLOPs"),
        (f"MEMIT batch of {r['memit']['batch']}", f"{r['memit']['seconds']:.1f} s",
         f"{r['memit']['took']}/{r['memit']['batch']} took, {r['memit']['steps']} steps"),
        (f"covariance, layer {cov['one_layer']} ({cov['tokens']} tokens)", f"{cov['one_layer_s']:.1f} s",
         f"tokenising {cov['tokenise_s']:.1f} s of it"),
        (f"covariance, layers {cov['other_memit_layers']} in one pass",
         f"{cov['other_memit_layers_one_pass_s']:.1f} s", ""),
        ("evaluation, all rephrase types", f"{r['evaluation']['probes_per_s']:.1f} probes/s",
         f"{r['evaluation']['seconds_per_case']:.1f} s per case ({r['evaluation']['probes']} probes)"),
        ("peak resident memory", f"{r['peak_rss_mb']:.0f} MB", ""),
    ]
    m = r["machine"]
    head = (f"{r['model']}, {m['cpus']} CPUs, {m['torch_threads']} torch threads, load average "
            f"{m['load_average_before'][0]} before / {m['load_average_after'][0]} after\n\n")
    lines = ["| measurement | time | outcome |", "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return head + "\n".join(lines)


if __name__ == "__main__":
    main()

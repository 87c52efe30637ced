"""The shadow model that measures beside the edits (compute.experiments.beside)."""

import threading

import torch

from compute.experiments.beside import Beside
from compute.scoring import run_probes

PROMPTS = ["The capital of France is", "Paris is a city in"]


def measure(lm):
    res = run_probes(lm, PROMPTS, [["Paris"], ["Europe"]], gen_tokens=4)
    return [r.scores[0].nll for r in res], [r.generation for r in res]


def test_a_job_sees_the_weights_it_was_given_whatever_the_caller_does_next(llama):
    name = "model.layers.0.mlp.down_proj.weight"
    params = dict(llama.model.named_parameters())
    before = measure(llama)
    with Beside(llama) as beside:
        gate = threading.Event()
        blocked = beside.submit({}, lambda lm: gate.wait(10))  # the thread is busy while the caller edits
        with torch.no_grad():
            params[name].add_(0.5 * torch.randn(params[name].shape, generator=torch.Generator().manual_seed(0)))
        edited = measure(llama)
        job = beside.submit({name: params[name]}, measure)
        with torch.no_grad():  # the caller moves on before the job has run
            params[name].mul_(-1.0)
        gate.set()
        assert blocked.result(10) is True
        assert job.result(60) == edited  # the weights at submission, not the caller's current ones
        assert edited != before
        assert beside.submit({}, lambda lm: lm.model is not llama.model).result(10)  # a copy, not the caller's


def test_jobs_run_in_the_order_they_were_submitted_and_on_another_thread(llama):
    order, threads = [], set()
    with Beside(llama) as beside:
        futures = [beside.submit({}, lambda lm, i=i: (order.append(i), threads.add(threading.get_ident())))
                   for i in range(5)]
        for f in futures:
            f.result(10)
    assert order == list(range(5))
    assert threads and threading.get_ident() not in threads


def test_an_unknown_parameter_is_refused_before_anything_runs(llama):
    import pytest

    with Beside(llama) as beside, pytest.raises(KeyError, match="no parameter"):
        beside.submit({"model.layers.9.mlp.down_proj.weight": torch.zeros(1)}, measure)

"""Key statistics for ROME/MEMIT (compute.covariance) on the tiny in-process models."""

from __future__ import annotations


import pytest
import torch

from compute.covariance import (

    compute_covariance,
    corpus_chunks,
    covariance_path,
    covariance_provider,
    layer_covariance,
    module_input,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread

N_TOKENS = 600  # two full chunks of 256 and a shorter one: exercises both batch shapes





def test_covariance_is_symmetric_positive_semidefinite(llama, wiki_cache):
    cov = layer_covariance(llama, 1, N_TOKENS, wiki_cache)
    assert cov.dtype == torch.float64 and tuple(cov.shape) == (128, 128)
    assert torch.equal(cov, cov.T)
    assert torch.linalg.eigvalsh(cov).min() > -1e-10 * cov.diagonal().max()


def test_covariance_equals_a_direct_computation_over_the_same_tokens(llama, wiki_cache):
    chunks = corpus_chunks(llama, wiki_cache, N_TOKENS)
    assert sum(len(c) for c in chunks) == N_TOKENS
    seen = []
    # Direct: a full, unstopped forward pass of each chunk alone with a plain hook on the down-projection.
    handle = llama.down_proj(1).register_forward_hook(lambda m, args, out: seen.append(args[0].reshape(-1, 128)))
    try:
        with torch.no_grad():
            for chunk in chunks:
                llama.model(input_ids=torch.tensor([chunk]), use_cache=False)
    finally:
        handle.remove()
    keys = torch.cat(seen).double()  # [N_TOKENS, 128]
    direct = keys.T @ keys / keys.shape[0]
    assert torch.allclose(layer_covariance(llama, 1, N_TOKENS, wiki_cache), direct, rtol=1e-4, atol=1e-6)


def test_cache_hit_returns_the_identical_tensor_and_a_corrupt_file_is_recomputed(llama, wiki_cache):
    first = layer_covariance(llama, 0, N_TOKENS, wiki_cache)
    path = covariance_path(llama, 0, N_TOKENS, wiki_cache)
    assert path.is_file() and not list(path.parent.glob("*.partial"))
    stamp = path.stat().st_mtime_ns
    again = layer_covariance(llama, 0, N_TOKENS, wiki_cache)
    assert torch.equal(first, again) and path.stat().st_mtime_ns == stamp  # read, not recomputed
    path.write_bytes(b"not a tensor")
    assert torch.equal(layer_covariance(llama, 0, N_TOKENS, wiki_cache), first)


def test_gpt2_keys_are_its_conv1d_input(gpt2, wiki_cache):
    cov = layer_covariance(gpt2, 0, N_TOKENS, wiki_cache)
    assert tuple(cov.shape) == (256, 256)  # GPT-2's MLP is 4 x hidden; c_proj stores [256, 64]
    assert torch.equal(cov, cov.T)
    chunks = corpus_chunks(gpt2, wiki_cache, N_TOKENS)
    assert torch.allclose(cov, compute_covariance(gpt2, 0, chunks), rtol=0, atol=0)


def test_provider_reads_each_layer_once(llama, wiki_cache):
    provide = covariance_provider(llama, wiki_cache, N_TOKENS)
    assert provide(1) is provide(1)
    assert not torch.equal(provide(0), provide(1))


def test_stopped_forward_matches_the_full_forward(llama):
    ids = torch.tensor([[5, 6, 7, 8]])
    seen = []
    handle = llama.down_proj(0).register_forward_hook(lambda m, args, out: seen.append(args[0]))
    try:
        with torch.no_grad():
            llama.model(input_ids=ids, use_cache=False)
    finally:
        handle.remove()
    assert torch.equal(module_input(llama, llama.down_proj(0), input_ids=ids), seen[0])
    assert not llama.down_proj(0)._forward_pre_hooks  # the capture hook removed itself


def test_several_layers_in_one_pass_equal_one_layer_at_a_time(llama, wiki_cache):
    from compute.covariance import layer_covariances

    together = layer_covariances(llama, [1, 0], N_TOKENS, wiki_cache)
    chunks = corpus_chunks(llama, wiki_cache, N_TOKENS)
    for layer in (0, 1):
        assert torch.equal(together[layer], compute_covariance(llama, layer, chunks))

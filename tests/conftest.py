"""Shared fixtures: tiny in-process models, the real knowledge base (built once per session in a temporary
cache), the Wikipedia paragraphs, and the embedded default model for the few `model` tests."""

from __future__ import annotations

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `bash run.sh test` runs two pytest-xdist workers on the two cores: one torch/OpenMP thread each (and in the
    # processes the tests start), as the background runs do; two each would oversubscribe the cores, where
    # idle OpenMP threads spinning against the other worker make torch many times slower. Set before torch loads.
    os.environ["OMP_NUM_THREADS"] = "1"

import pytest

from tiny import tiny_gpt2, tiny_llama, tiny_tokenizer


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """A per-session cache for the knowledge base and wiki paragraphs (the model cache is separate)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def tok_plain():
    """A tiny tokenizer without a chat template (dialogues fall back to 'User:/Assistant:')."""
    return tiny_tokenizer(chat_template=False)


@pytest.fixture()
def llama(tok):
    return tiny_llama(tok)


@pytest.fixture()
def gpt2(tok):
    return tiny_gpt2(tok)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tok):
    """A tiny Llama saved as a local Hugging Face directory, usable wherever --model takes a path."""
    path = tmp_path_factory.mktemp("tiny-model")
    tiny_llama(tok).model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def kb(cache_dir):
    from compute.kb import load_knowledge_base

    return load_knowledge_base(cache_dir)


@pytest.fixture(scope="session")
def paragraphs(cache_dir):
    from compute.wiki import load_wiki_paragraphs

    return load_wiki_paragraphs(cache_dir)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for a module that asks for it (`pytestmark = pytest.mark.usefixtures(...)`):
    tiny models gain nothing from more, and on a busy two-core machine idle OpenMP threads spinning against
    other processes made such tests about 10x slower."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture()
def wiki_cache(tmp_path, cache_dir, paragraphs):
    """A fresh cache folder holding only the parsed Wikipedia paragraphs (so no test sees another's statistics)."""
    import shutil

    for path in cache_dir.glob("wiki-paragraphs-*.json"):
        shutil.copy(path, tmp_path / path.name)
    return tmp_path


@pytest.fixture(scope="session")
def builder(kb, tok, paragraphs):
    from compute.cases import CaseBuilder

    return CaseBuilder(kb, tok, paragraphs)


@pytest.fixture(scope="session")
def _default_lm_session():
    """The embedded SmolLM2-135M-Instruct, loaded once (the safetensors copy is cached in EDITSCOPE_CACHE
    or ~/.cache/editscope, so only the first run of the suite on a machine pays the GGUF conversion)."""
    from compute.models import load_model

    lm = load_model(cache_dir=os.environ.get("EDITSCOPE_CACHE") or None)
    return lm, {n: p.detach().clone() for n, p in lm.model.named_parameters()}


@pytest.fixture()
def default_lm(_default_lm_session):
    """The shared default model; a test that leaves it edited fails here (and the weights are restored),
    so one test's leak cannot change another test's result."""
    import torch

    lm, pristine = _default_lm_session
    yield lm
    changed = [n for n, p in lm.model.named_parameters() if not torch.equal(p, pristine[n])]
    if changed:
        with torch.no_grad():
            for n, p in lm.model.named_parameters():
                p.copy_(pristine[n])
        pytest.fail(f"the test left the shared default model edited ({len(changed)} tensors, e.g. {changed[0]})")


@pytest.fixture(scope="session")
def fixture_store(tmp_path_factory, tiny_model_dir, cache_dir, kb):
    """A store made by the real compute code on the tiny model: knowledge base, 32 cases, a knowledge run,
    FT-L and IKE robustness runs, two sequential ROME runs (both key variants, one with ability checkpoints),
    a batch-single MEMIT run and the unedited model's quick ability suite, for the dashboard tests."""
    from compute.cli import main

    store = tmp_path_factory.mktemp("dash") / "results.sqlite"
    base = ["--store", str(store), "--cache-dir", str(cache_dir), "--quiet"]
    assert main(base + ["kb", "build"]) == 0
    assert main(base + ["cases", "build", "--n", "32", "--set", "tiny32", "--model", tiny_model_dir]) == 0
    assert main(base + ["knowledge", "measure", "--set", "tiny32", "--gen-tokens", "2", "--model", tiny_model_dir]) == 0
    hp = store.parent / "ft.json"
    hp.write_text('{"layer": 1, "lr": 0.05, "steps": 4, "norm_constraint": 0.05, "stop_nll": 0.0}')
    for editor, extra in (("FT-L", ["--hparams", str(hp)]), ("IKE", ["--hparams", str(hp.parent / "ike.json")])):
        (hp.parent / "ike.json").write_text("{}")
        assert main(base + ["run", "robustness", "--editor", editor, "--set", "tiny32", "--limit", "4",
                            "--gen-tokens", "2", "--model", tiny_model_dir, *extra]) == 0
    rome = store.parent / "rome.json"
    rome.write_text('{"layer": 0, "v_steps": 6, "n_prefixes": 2, "prefix_tokens": 3, "use_covariance": false}')
    # the full ability suite at a run's end takes minutes even on the tiny model: tests/test_sequential.py
    # covers it with a stand-in suite and the quick suite through the CLI
    for variant in (["--abilities-every", "3", "--final-abilities", "none"], ["--hp", "key_mismatch=true"]):
        assert main(base + ["run", "sequential", "--editor", "ROME", "--set", "tiny32", "--edits", "6", "--every", "3",
                            "--panel-pool", "4", "--panel-size", "3", "--panel-any", "--hparams", str(rome),
                            "--model", tiny_model_dir, *variant]) == 0
    memit = store.parent / "memit.json"
    memit.write_text('{"layers": [0], "lam": 1.0, "v_steps": 6, "n_prefixes": 2, "prefix_tokens": 3, "key_constraint": "plain"}')
    assert main(base + ["run", "batch", "--editor", "MEMIT", "--set", "tiny32", "--sizes", "1,3", "--panel-pool", "4",
                        "--hparams", str(memit), "--model", tiny_model_dir]) == 0
    assert main(base + ["abilities", "measure", "--mode", "quick", "--model", tiny_model_dir]) == 0
    return store

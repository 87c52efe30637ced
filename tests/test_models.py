"""The architecture table and offline loading, on tiny models built in-process."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

from compute.models import ARCHITECTURES, ModelError, arch_for, load_model, wrap_model
from tiny import tiny_gpt2, tiny_llama


def test_llama_and_gpt2_module_templates_resolve(tok):
    for lm in (tiny_llama(tok), tiny_gpt2(tok)):
        for layer in range(lm.n_layers):
            assert lm.down_proj(layer).weight.ndim == 2
        assert lm.module(lm.arch.final_norm) is not None
        assert lm.module(lm.arch.unembed) is lm.model.get_output_embeddings()
        assert lm.module(lm.arch.embed) is lm.model.get_input_embeddings()


def test_gpt2_down_proj_is_marked_transposed(tok):
    lm = tiny_gpt2(tok)
    assert lm.arch.down_proj_transposed
    assert tuple(lm.down_proj(0).weight.shape) == (4 * 64, 64)  # Conv1D stores (in, out)
    assert not tiny_llama(tok).arch.down_proj_transposed


@pytest.mark.parametrize("model_type", ["gptj", "gpt_neox"])
def test_gptj_and_neox_templates_match_real_module_names(tok, model_type):
    from transformers import AutoModelForCausalLM, GPTJConfig, GPTNeoXConfig

    small = dict(vocab_size=len(tok), num_hidden_layers=2, num_attention_heads=4, hidden_size=64)
    config = (
        GPTJConfig(vocab_size=len(tok), n_embd=64, n_layer=2, n_head=4, rotary_dim=8)
        if model_type == "gptj"
        else GPTNeoXConfig(intermediate_size=128, **small)
    )
    lm = wrap_model(AutoModelForCausalLM.from_config(config), tok)
    assert lm.arch is ARCHITECTURES[model_type]
    assert lm.down_proj(1).weight.ndim == 2
    assert lm.module(lm.arch.final_norm) is not None


def test_unsupported_architecture_is_refused_by_name():
    with pytest.raises(ModelError, match="unsupported architecture 't5'"):
        arch_for(types.SimpleNamespace(model_type="t5"))


def test_layer_out_of_range_says_the_valid_range(tok):
    with pytest.raises(ModelError, match=r"layers 0\.\.1"):
        tiny_llama(tok).down_proj(5)


def test_load_a_local_model_directory_offline(tok, tmp_path):
    lm = tiny_llama(tok)
    lm.model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    again = load_model(str(tmp_path))
    assert again.arch is ARCHITECTURES["llama"]
    w0, w1 = lm.down_proj(1).weight, again.down_proj(1).weight
    assert (w0 == w1).all()
    assert not any(p.requires_grad for p in again.model.parameters())


def test_unknown_model_name_says_what_to_give(tmp_path):
    with pytest.raises(ModelError, match="local Hugging Face model directory"):
        load_model(str(tmp_path / "nowhere"))


def test_unsupported_directory_refused_before_loading_weights(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "t5"}')
    with pytest.raises(ModelError, match="unsupported architecture 't5'"):
        load_model(str(tmp_path))


def test_a_model_copy_is_published_whole_and_a_copy_another_process_published_first_is_kept(tmp_path):
    """Two processes converting the default model at once (two test workers on a fresh machine) each save into
    their own folder; the first rename wins, the second keeps it and removes its own; a damaged copy is replaced."""
    from compute.models import _publish_copy

    def saved(name: str, text: str) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "model.safetensors").write_text(text)
        (folder / "editscope.json").write_text("{}")
        return folder

    copy = tmp_path / "models" / "smollm2"
    _publish_copy(saved("a.partial-1", "first"), copy, damaged=False)
    assert (copy / "model.safetensors").read_text() == "first" and not (tmp_path / "a.partial-1").exists()
    _publish_copy(saved("b.partial-2", "second"), copy, damaged=False)  # another process was first: theirs stays
    assert (copy / "model.safetensors").read_text() == "first" and not (tmp_path / "b.partial-2").exists()
    _publish_copy(saved("c.partial-3", "rebuilt"), copy, damaged=True)  # this process found it damaged
    assert (copy / "model.safetensors").read_text() == "rebuilt"

"""Tiny in-process models and tokenizer for unit tests: nothing is downloaded, everything builds in ms.

`tiny_tokenizer()` trains a byte-level BPE tokenizer with `tokenizers` on a few hundred sentences;
`tiny_llama()` and `tiny_gpt2()` are random 2-layer models with SmolLM2's / GPT-2's module names.
"""

from __future__ import annotations

import torch

CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_WORDS = (
    "the capital of is a city country in continent Europe Asia Africa currency euro language French German "
    "Paris Rome Berlin Tokyo Madrid France Italy Germany Japan Spain what fill blank answer its it user "
    "assistant question about sure are you that right not think chemical element symbol discovered by"
).split()


def _corpus() -> list[str]:
    lines = []
    for i, w in enumerate(_WORDS):
        nxt = _WORDS[(i * 7 + 3) % len(_WORDS)]
        lines.append(f"The {w} of {nxt} is {(_WORDS[(i * 5 + 1) % len(_WORDS)])}.")
        lines.append(f"What is the {w}? Fill in the blank: {nxt} ____. Answer: {w}")
    return lines * 3


def tiny_tokenizer(chat_template: bool = True):
    """A byte-level BPE tokenizer trained in-process (vocabulary about 400)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_corpus(), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token="<|endoftext|>"
    )
    if chat_template:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_llama(tokenizer, seed: int = 0, layers: int = 2):
    """A random LlamaForCausalLM with hidden 64 and SmolLM2's module names, wrapped as a LoadedModel."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from compute.models import wrap_model

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return wrap_model(LlamaForCausalLM(config), tokenizer, name="tiny-llama")


def tiny_gpt2(tokenizer, seed: int = 0, layers: int = 2):
    """A random GPT2LMHeadModel with hidden 64, wrapped as a LoadedModel."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from compute.models import wrap_model

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=64,
        n_layer=layers,
        n_head=4,
        n_positions=1024,
        bos_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return wrap_model(GPT2LMHeadModel(config), tokenizer, name="tiny-gpt2")

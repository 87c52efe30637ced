"""What the dashboard may ask the compute CLI to run: form values checked and turned into command lines.

Pure logic, no Streamlit, no torch and no process handling (dashboard/jobs.py starts and watches processes).
Every bad value raises ValueError with a message meant for the visitor; the limits below keep a launched run
small. Every command line built here is parsed by the CLI's own parser in tests/test_jobs_argv.py, so a
renamed flag fails a test rather than a visitor's click.

- `edit_argv`: the Edit demo's `edit` command.
- `robustness_argv`, `knowledge_argv`, `sweep_argv`, `sequential_argv`, `batch_argv`: the Launch page's runs.
- `editor_names`, `relation_templates`, `edit_prompt`: what the forms offer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import polars as pl

from store import queries

ROOT = Path(__file__).resolve().parent.parent
HPARAMS_DIR = ROOT / "compute" / "editors" / "hparams"
DEFAULT_MODEL = "smollm2-135m"  # compute.models.DEFAULT_MODEL, repeated so that no compute module is imported

MAX_TEXT = 100  # characters in a subject or object
MAX_CASES = 60  # cases in a launched run (a robustness edit costs seconds to minutes on a CPU)
MAX_GEN_TOKENS = 30  # the CLI default; longer generations only slow a launched run down
MAX_SWEEP_VALUES = 8
MAX_EDITS = 100  # edits in a launched sequential run
MAX_BATCH = 50  # edits in one batch of a launched run
MAX_BATCH_SIZES = 4
LAUNCH_PANEL_POOL = 40  # a launched sequential run keeps 40 cases out for a panel of (up to) 10 known facts
LAUNCH_PANEL_SIZE = 10
MAX_SEED = 9  # seeds of launched runs: each new seed draws a new case set, so a visitor cannot fill the store
REPHRASE_CHOICES = ("plain", "all")


# ---- validation ---------------------------------------------------------------------------------------


def editor_names(hparams_dir: Path = HPARAMS_DIR) -> list[str]:
    """The registered editors: one folder of hyperparameter files per editor (read without importing torch)."""
    return sorted(p.name for p in hparams_dir.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))


def relation_templates(conn) -> dict[str, dict]:
    """relation -> its templates (prompt, paraphrases, question, ...) from the store's kb_relations."""
    return relation_templates_from(queries.kb_relations(conn))


def relation_templates_from(relations: pl.DataFrame) -> dict[str, dict]:
    """The same from a kb_relations frame (the dashboard's cached query result)."""
    out = {}
    if relations.is_empty():
        return out
    for row in relations.select("relation", "templates").iter_rows(named=True):
        raw = row["templates"]
        out[row["relation"]] = json.loads(raw) if isinstance(raw, str) else dict(raw or {})
    return out


def check_text(label: str, value: str | None, required: bool = True, max_len: int = MAX_TEXT) -> str | None:
    """`value` stripped; ValueError when it is missing (if required), too long or holds control characters."""
    text = (value or "").strip()
    if not text:
        if required:
            raise ValueError(f"{label} is empty: please fill it in")
        return None
    if len(text) > max_len:
        raise ValueError(f"{label} is {len(text)} characters long; at most {max_len} are allowed")
    if any(ord(c) < 32 for c in text):
        raise ValueError(f"{label} contains a line break or control character; use plain text on one line")
    return text


def check_int(label: str, value, lo: int, hi: int) -> int:
    """`value` as an int within [lo, hi], else ValueError naming the field and the range."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{label} must be a whole number; got {value!r}") from None
    if isinstance(value, float) and value != number:
        raise ValueError(f"{label} must be a whole number; got {value!r}")
    if not lo <= number <= hi:
        raise ValueError(f"{label} must be between {lo} and {hi}; got {number}")
    return number


def check_editor(editor: str | None, editors: Sequence[str]) -> str:
    if editor not in editors:
        raise ValueError(f"unknown editor {editor!r}: choose one of {', '.join(editors)}")
    return editor


def check_model(model: str | None) -> list[str]:
    """The --model arguments: nothing for the default model, else a local Hugging Face model directory."""
    text = (model or "").strip()
    if not text or text == DEFAULT_MODEL:
        return []
    path = Path(text)
    if not path.is_dir() or not (path / "config.json").is_file():
        raise ValueError(f"model {text!r} is neither {DEFAULT_MODEL!r} nor a local model directory with a config.json")
    return ["--model", str(path.resolve())]


_DEVICE = re.compile(r"cpu|cuda(:\d+)?|mps")


def check_device(device: str | None) -> list[str]:
    """The --device arguments: nothing for the CPU (the CLI's default), else cuda, cuda:N or mps."""
    text = (device or "").strip() or "cpu"
    if not _DEVICE.fullmatch(text):
        raise ValueError(f"device must be cpu, cuda, cuda:N or mps; got {text!r}")
    return [] if text == "cpu" else ["--device", text]


def edit_prompt(relation: str, subject: str, templates: Mapping[str, Mapping]) -> str:
    """The edit prompt of a relation filled with the subject (the CLI builds the same one)."""
    if relation not in templates:
        raise ValueError(f"unknown relation {relation!r}: choose one of {', '.join(sorted(templates))}")
    template = templates[relation].get("prompt")
    if not template:
        raise ValueError(f"relation {relation!r} has no prompt template in the store")
    return template.replace("{subject}", subject)


def edit_argv(subject: str, relation: str, new_object: str, true_object: str | None, editor: str, *,
              templates: Mapping[str, Mapping], editors: Sequence[str], model: str | None = None,
              gen_tokens: int = MAX_GEN_TOKENS, seed: int = 0, device: str | None = None) -> list[str]:
    """CLI arguments of the one-fact demo (`python -m compute edit ...`), validated."""
    subject = check_text("The subject", subject)
    new_object = check_text("The new object", new_object)
    true_object = check_text("The true object", true_object, required=False)
    editor = check_editor(editor, editors)
    prompt = edit_prompt(relation, subject, templates)
    if subject not in prompt:
        raise ValueError(f"the subject {subject!r} does not occur in the prompt {prompt!r}: the prompt must name it")
    if true_object and true_object.lower() == new_object.lower():
        raise ValueError(f"the new object {new_object!r} equals the true object: choose a different one")
    argv = ["edit", "--subject", subject, "--relation", relation, "--new", new_object, "--editor", editor,
            "--gen-tokens", str(check_int("Generated tokens", gen_tokens, 1, MAX_GEN_TOKENS)),
            "--seed", str(check_int("Seed", seed, 0, MAX_SEED))]
    if true_object:
        argv += ["--true", true_object]
    return argv + check_model(model) + check_device(device)


def _size_args(cases: int, seed: int, limit: int | None, gen_tokens: int) -> list[str]:
    argv = ["--cases", str(check_int("Number of cases", cases, 1, MAX_CASES)),
            "--seed", str(check_int("Seed", seed, 0, MAX_SEED)),
            "--gen-tokens", str(check_int("Generated tokens", gen_tokens, 1, MAX_GEN_TOKENS))]
    if limit:
        argv += ["--limit", str(check_int("Limit", limit, 1, MAX_CASES))]
    return argv


def robustness_argv(editor: str, cases: int, seed: int = 0, *, editors: Sequence[str], limit: int | None = None,
                    gen_tokens: int = 10, model: str | None = None, device: str | None = None) -> list[str]:
    """`run robustness` on the balanced set of `cases` cases (built if missing), at most MAX_CASES."""
    return (["run", "robustness", "--editor", check_editor(editor, editors)]
            + _size_args(cases, seed, limit, gen_tokens) + check_model(model) + check_device(device))


def knowledge_argv(case_set: str, *, case_sets: Sequence[str], limit: int | None = 20, types: str = "plain",
                   gen_tokens: int = 10, model: str | None = None, device: str | None = None) -> list[str]:
    """`knowledge measure --again` on the first `limit` cases (at most MAX_CASES) of a stored case set."""
    if case_set not in case_sets:
        raise ValueError(f"unknown case set {case_set!r}: choose one of {', '.join(case_sets) or '(none stored)'}")
    if types not in REPHRASE_CHOICES:
        raise ValueError(f"rephrase types must be one of {', '.join(REPHRASE_CHOICES)}; got {types!r}")
    if limit is None:
        raise ValueError(f"give a limit: a launched knowledge run measures at most {MAX_CASES} cases")
    return (["knowledge", "measure", "--set", case_set, "--types", types, "--again",
             "--limit", str(check_int("Limit", limit, 1, MAX_CASES)),
             "--gen-tokens", str(check_int("Generated tokens", gen_tokens, 1, MAX_GEN_TOKENS))] + check_model(model)
            + check_device(device))


def _case_set_arg(case_set: str, case_sets: Sequence[str]) -> list[str]:
    if case_set not in case_sets:
        raise ValueError(f"unknown case set {case_set!r}: choose one of {', '.join(case_sets) or '(none stored)'}")
    return ["--set", case_set]


def sequential_argv(editor: str, case_set: str, edits: int, batch: int = 1, seed: int = 0, *,
                    editors: Sequence[str], case_sets: Sequence[str], model: str | None = None,
                    device: str | None = None) -> list[str]:
    """`run sequential` with at most MAX_EDITS edits in batches of at most MAX_BATCH, on a stored case set
    (a small fact panel keeps the launched run short)."""
    edits = check_int("Number of edits", edits, 1, MAX_EDITS)
    batch = check_int("Batch size", batch, 1, MAX_BATCH)
    if batch > edits:
        raise ValueError(f"the batch size ({batch}) is larger than the number of edits ({edits})")
    return (["run", "sequential", "--editor", check_editor(editor, editors)] + _case_set_arg(case_set, case_sets)
            + ["--edits", str(edits), "--batch", str(batch), "--order-seed", str(check_int("Seed", seed, 0, MAX_SEED)),
               "--panel-pool", str(LAUNCH_PANEL_POOL), "--panel-size", str(LAUNCH_PANEL_SIZE)] + check_model(model)
            + check_device(device))


def parse_sizes(values: str) -> list[int]:
    """'1,10,50' -> [1, 10, 50]: distinct batch sizes, at most MAX_BATCH_SIZES of them, each <= MAX_BATCH."""
    text = check_text("Batch sizes", values)
    try:
        sizes = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise ValueError(f"batch sizes must be comma-separated whole numbers such as 1,10,50; got {text!r}") from None
    if not sizes or len(sizes) > MAX_BATCH_SIZES or len(set(sizes)) != len(sizes):
        raise ValueError(f"give 1 to {MAX_BATCH_SIZES} different batch sizes; got {text!r}")
    for size in sizes:
        check_int("Each batch size", size, 1, MAX_BATCH)
    return sizes


def batch_argv(editor: str, case_set: str, sizes: str, seed: int = 0, *, editors: Sequence[str],
               case_sets: Sequence[str], abilities: bool = False, model: str | None = None,
               device: str | None = None) -> list[str]:
    """`run batch`: one batch per size (each at most MAX_BATCH edits), measured and undone."""
    return (["run", "batch", "--editor", check_editor(editor, editors)] + _case_set_arg(case_set, case_sets)
            + ["--sizes", ",".join(map(str, parse_sizes(sizes))), "--order-seed",
               str(check_int("Seed", seed, 0, MAX_SEED)), "--panel-pool", str(LAUNCH_PANEL_POOL),
               "--abilities", "quick" if abilities else "none"] + check_model(model) + check_device(device))


def parse_layers(values: str, max_layer: int = 63) -> list[int]:
    """'1,3,5' -> [1, 3, 5]: distinct layer numbers, at most MAX_SWEEP_VALUES of them."""
    text = check_text("Layers", values)
    try:
        layers = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise ValueError(f"layers must be comma-separated whole numbers such as 1,3,5; got {text!r}") from None
    if not layers:
        raise ValueError("layers is empty: give comma-separated layer numbers such as 1,3,5")
    if len(layers) > MAX_SWEEP_VALUES:
        raise ValueError(f"at most {MAX_SWEEP_VALUES} layers per launched sweep; got {len(layers)}")
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers repeat in {text!r}: give each layer once")
    for layer in layers:
        check_int("Each layer", layer, 0, max_layer)
    return layers


def sweep_argv(editor: str, layers: str, cases: int, seed: int = 0, *, editors: Sequence[str],
               limit: int | None = None, gen_tokens: int = 10, model: str | None = None,
               device: str | None = None) -> list[str]:
    """`run sweep --field layer` over a few layers on the balanced set of `cases` cases."""
    values = ",".join(map(str, parse_layers(layers)))
    return (["run", "sweep", "--editor", check_editor(editor, editors), "--field", "layer", "--values", values]
            + _size_args(cases, seed, limit, gen_tokens) + check_model(model) + check_device(device))

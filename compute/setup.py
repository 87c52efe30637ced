"""What a `python -m compute` command sets up from its parsed options: the model, the knowledge base, the
Wikipedia paragraphs and an editor with its hyperparameters and context. Library code shared by the CLI
(compute/cli.py) and the demo worker (compute/demo_worker.py), so that neither reaches into the other's
private helpers; `args` is the CLI parser's namespace (compute.cli.build_parser)."""

from __future__ import annotations

from pathlib import Path


def check_layers_fit(ed, hp, lm, where: str = "hyperparameters") -> None:
    """ValueError when an editor's `layer` or `layers` lies outside the model (checked before a run exists)."""
    top = lm.n_layers - 1
    for field in ("layer", "layers"):
        value = getattr(hp, field, None)
        if value is None:
            continue
        bad = [x for x in (value if isinstance(value, (list, tuple)) else [value]) if not 0 <= x <= top]
        if bad:
            raise ValueError(f"{where}: {ed.name} field {field!r} has layer {bad[0]}, but {lm.name} has layers 0..{top}")


def load_kb(args):
    from compute.kb import load_knowledge_base

    return load_knowledge_base(args.cache_dir, progress=not args.quiet)


def load_model_for(args):
    from compute.models import load_model

    return load_model(args.model, device=args.device, cache_dir=args.cache_dir, progress=not args.quiet)


def paragraphs(args):
    from compute.models import default_cache_dir
    from compute.wiki import load_wiki_paragraphs

    return load_wiki_paragraphs(args.cache_dir or default_cache_dir())


def pinned_hparams(args, hp) -> dict:
    """The fields the command line set with --hp, at the values `hp` (from `editor_setup`) holds: what a sweep
    pins beside its swept field (compute.experiments.sweep.run_sweep)."""
    from compute.editors.base import hparams_dict

    names = [item.partition("=")[0].strip() for item in getattr(args, "hp", None) or []]
    values = hparams_dict(hp)
    return {name: values[name] for name in names if name in values}


def resolve_hparams(editor: str, model: str, choice: str | None = None, overrides: dict | None = None):
    """(editor, hyperparameters) a command runs with: the shipped file of the editor for `model`, or `choice`
    (--hparams: a JSON file, or a named setting beside the shipped file such as 'paper'), with `overrides`
    (--hp FIELD=VALUE, values parsed) on top. EditorError (a ValueError) names what is wrong."""
    import json

    from compute.editors import get_editor, load_hparams
    from compute.editors.base import hparams_dict, parse_hparams

    ed = get_editor(editor)
    if choice and Path(choice).is_file():
        hp = parse_hparams(ed.hparams, json.loads(Path(choice).read_text()), where=str(choice))
    else:  # the shipped file, or a named setting beside it (e.g. --hparams paper)
        hp = load_hparams(ed.name, model, variant=str(choice) if choice else None)
    if overrides:
        hp = parse_hparams(ed.hparams, {**hparams_dict(hp), **overrides}, where="--hp")
    return ed, hp


def editor_setup(args, lm, editor: str):
    """(editor, hyperparameters, EditContext) for an editor on the loaded model; --hparams FILE overrides the shipped file."""
    import json

    from compute.covariance import covariance_provider
    from compute.editors import EditContext
    from compute.models import default_cache_dir

    overrides = {}
    for item in getattr(args, "hp", None) or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--hp {item!r}: write FIELD=VALUE, e.g. --hp key_mismatch=true or --hp rect_top=0.4")
        try:
            overrides[key.strip()] = json.loads(value)
        except ValueError:
            overrides[key.strip()] = value
    ed, hp = resolve_hparams(editor, lm.name, getattr(args, "hparams", None), overrides)
    check_layers_fit(ed, hp, lm, where="--hp" if overrides else str(getattr(args, "hparams", None) or
                                                                   "the shipped hyperparameters"))
    cache = args.cache_dir or default_cache_dir()
    n_tokens = getattr(hp, "cov_n_tokens", 0)
    ctx = EditContext(cache_dir=cache, seed=args.seed, cov_samples=n_tokens,
                      covariance=covariance_provider(lm, cache, n_tokens) if n_tokens else None)
    return ed, hp, ctx

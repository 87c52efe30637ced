"""Run labels: a run's short name (editor plus what sets it apart), as every page and finding names it."""

from __future__ import annotations

import sqlite3

import polars as pl

from .. import queries
from ..conventions import TRAITS_KEY


# Editors made to edit many facts at once: their sequential runs come at several batch sizes (study C's
# instance- and batch-sequential), so every label says which, b=1 included. Runs record it themselves (their
# config's editor traits, store.conventions.TRAITS_KEY); this list stands in for runs made before they did.
MASS_EDITORS = frozenset({"MEMIT", "AlphaEdit"})


# Editors that change the weights without aiming at a fact (controls); runs record it (the edits_facts trait),
# this list stands in for runs made before they did.
CONTROL_EDITORS = frozenset({"RandomRankOne"})


def edits_facts(editor: str | None, config: dict | None) -> bool:
    """Whether the run's editor edits facts (a control does not): from the run's traits, else (older runs) by
    name."""
    traits = (config or {}).get(TRAITS_KEY) or {}
    return bool(traits["edits_facts"]) if "edits_facts" in traits else editor not in CONTROL_EDITORS


def is_mass_editor(editor: str | None, config: dict | None) -> bool:
    """Whether the run's editor is a mass editor: from the traits the run recorded, else (older runs) by name."""
    traits = (config or {}).get(TRAITS_KEY) or {}
    return bool(traits["mass_editor"]) if "mass_editor" in traits else editor in MASS_EDITORS


# the key constraint each editor ships with (its hparams file): a run made with another one is labelled with it, so
# MEMIT's runs with every key a least-squares row ("all", before 2026-12-06) are told apart from "plain" ones
SHIPPED_KEY_CONSTRAINT = {"ROME": "all", "MEMIT": "plain", "AlphaEdit": "plain"}


def other_key_constraint(editor: str | None, hparams: dict | None) -> str | None:
    """The run's key constraint where it is not the one its editor ships with (a variant, labelled so; not the
    editor's reference run), else None; runs made before the field existed say nothing."""
    constraint = (hparams or {}).get("key_constraint")
    return constraint if constraint is not None and constraint != SHIPPED_KEY_CONSTRAINT.get(editor, "all") else None


def run_label(editor: str | None, hparams: dict | None, config: dict | None) -> str:
    """A run's short name: the editor plus what sets it apart (original ROME keys, a key constraint other than the
    shipped one, RECT share, batch size: always for a mass editor, else where it is not 1; a sweep's setting)."""
    hp, cfg = hparams or {}, config or {}
    label = editor or "unedited"
    if not edits_facts(editor, cfg):
        label += " (control)"
    if hp.get("key_mismatch"):
        label += " (original keys)"
    constraint = other_key_constraint(editor, hp)
    if constraint:
        label += f" (keys: {constraint})"
    if hp.get("rect_top", 1.0) < 1.0:
        label += f" + RECT {round(100 * hp['rect_top'])}%"
    if "batch_size" in cfg and (cfg["batch_size"] != 1 or is_mass_editor(editor, cfg)):
        label += f", b={cfg['batch_size']}"
    if "sweep" in cfg and "value" in cfg:  # a sweep's run is one setting of it
        value = cfg["value"]
        setting = (", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in value.items())
                   if isinstance(value, dict) else f"{cfg.get('field', 'value')} {value}")
        label += f" ({setting})"
    return label


def run_labels(conn: sqlite3.Connection, kind: str | None = None) -> pl.DataFrame:
    """run_id, label (run_label), editor, status, n_done, started_at for the runs of a kind."""
    import json

    runs = queries.list_runs(conn, kind=kind)
    labels = [run_label(r["editor"], json.loads(r["hparams"] or "null"), json.loads(r["config"] or "null"))
              for r in runs.iter_rows(named=True)]
    return runs.select("run_id", "kind", "model", "editor", "status", "n_done", "n_total", "started_at").with_columns(
        pl.Series("label", labels, dtype=pl.Utf8))

"""Hyperparameter files (compute/editors/hparams/<EDITOR>/<model>.json): every shipped file parses, and bad
files are refused with the offending field's name."""

from __future__ import annotations

import dataclasses
import json

import pytest

import compute.editors  # noqa: F401  (importing the package registers every editor)
from compute.editors.base import HPARAMS_DIR, EditorError, get_editor, hparams_dict, load_hparams, parse_hparams
from compute.editors.ft import FTHyperParams
from compute.editors.ike import IKEHyperParams

SHIPPED = sorted((p.parent.name, p.stem) for p in HPARAMS_DIR.glob("*/*.json"))


def shipped_data(editor: str, model: str) -> dict:
    return json.loads((HPARAMS_DIR / editor / f"{model}.json").read_text())


def test_ft_l_and_ike_ship_hyperparameters_for_the_default_model():
    assert {("FT-L", "smollm2-135m"), ("IKE", "smollm2-135m")} <= set(SHIPPED)


@pytest.mark.parametrize("editor,model", SHIPPED)
def test_every_shipped_file_parses(editor, model):
    hp = load_hparams(editor, model)
    assert isinstance(hp, get_editor(editor).hparams)
    assert json.loads(json.dumps(hparams_dict(hp)))  # JSON-ready for the run record


@pytest.mark.parametrize("editor,model", SHIPPED)
def test_every_shipped_file_says_where_its_values_come_from(editor, model):
    data = shipped_data(editor, model)
    assert data.get("_source"), f"hparams/{editor}/{model}.json needs a '_source' key"


@pytest.mark.parametrize("editor,model", SHIPPED)
def test_unknown_key_is_refused_by_name(editor, model):
    data = {**shipped_data(editor, model), "learning_rate_typo": 1.0}
    with pytest.raises(EditorError, match="learning_rate_typo"):
        parse_hparams(get_editor(editor).hparams, data)


@pytest.mark.parametrize("editor,model", SHIPPED)
def test_wrong_type_is_refused_by_name(editor, model):
    data = shipped_data(editor, model)
    cls = get_editor(editor).hparams
    numeric = [f.name for f in dataclasses.fields(cls) if f.type in ("int", "float") and f.name in data]
    if not numeric:
        pytest.skip(f"{editor} has no numeric field in its file")
    name = numeric[0]
    with pytest.raises(EditorError, match=repr(name)):
        parse_hparams(cls, {**data, name: "three"})


@pytest.mark.parametrize(
    "field,value",
    [("lr", -1e-3), ("lr", 0), ("steps", 0), ("norm_constraint", 0.0), ("stop_nll", -0.1), ("layer", -1)],
)
def test_ft_l_bad_values_are_refused_by_name(field, value):
    data = {**shipped_data("FT-L", "smollm2-135m"), field: value}
    with pytest.raises(EditorError, match=repr(field)):
        parse_hparams(FTHyperParams, data)


def test_ft_l_prefixes_must_be_a_list_of_strings():
    with pytest.raises(EditorError, match="'prefixes'"):
        parse_hparams(FTHyperParams, {"layer": 1, "prefixes": "The "})
    assert parse_hparams(FTHyperParams, {"layer": 1, "prefixes": ["A. ", "B. "]}).prefixes == ("A. ", "B. ")


@pytest.mark.parametrize(
    "field,value",
    [
        ("n_demonstrations", -1),
        ("kinds", ["copy", "paraphrase"]),
        ("kinds", []),
        ("fact_template", "New Fact: {prompt}.\n"),
        ("demo_template", "Prompt: {prompt} {target} {extra}\n"),
        ("fact_template", "New Fact: {prompt {target}"),
        ("query", "Prompt: {prompt}"),
    ],
)
def test_ike_bad_values_are_refused_by_name(field, value):
    data = {**shipped_data("IKE", "smollm2-135m"), field: value}
    with pytest.raises(EditorError, match=repr(field)):
        parse_hparams(IKEHyperParams, data)


def test_missing_file_says_which_files_exist():
    with pytest.raises(EditorError) as err:
        load_hparams("FT-L", "no-such-model")
    assert "no-such-model" in str(err.value) and "smollm2-135m" in str(err.value)


def test_hyperparameters_are_frozen():
    hp = load_hparams("IKE", "smollm2-135m")
    with pytest.raises(dataclasses.FrozenInstanceError):
        hp.seed = 3  # type: ignore[misc]

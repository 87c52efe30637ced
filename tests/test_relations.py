"""Tests of compute.relations: the relation table and its prompt templates."""

import json
import string

import pytest

from compute.relations import MULTI_VALUED_RELATIONS, RELATIONS, Relation, get_relation

PLAIN_FIELDS = ("prompt", "question", "cloze")
PRONOUN_FIELDS = ("pronoun_prompt", "pronoun_question", "pronoun_cloze")


def _placeholders(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


def _all_plain(relation: Relation) -> list[str]:
    return [relation.prompt, *relation.paraphrases, relation.question, relation.cloze]


def test_at_least_ten_relations_keyed_by_their_names():
    assert len(RELATIONS) >= 10
    assert all(name == relation.name for name, relation in RELATIONS.items())
    assert {r.subject_kind for r in RELATIONS.values()} <= {"country", "city", "us_state", "element", "airport"}


@pytest.mark.parametrize("name", sorted(RELATIONS))
def test_plain_templates_have_exactly_one_subject_placeholder(name):
    for template in _all_plain(RELATIONS[name]):
        assert _placeholders(template) == ["subject"], template


@pytest.mark.parametrize("name", sorted(RELATIONS))
def test_pronoun_templates_have_no_placeholder_and_use_it(name):
    relation = RELATIONS[name]
    for field in PRONOUN_FIELDS:
        template = getattr(relation, field)
        assert _placeholders(template) == [], template
        assert {"it", "its"} & set(template.lower().rstrip("?._").split()), template


@pytest.mark.parametrize("name", sorted(RELATIONS))
def test_prompts_end_right_before_the_object(name):
    relation = RELATIONS[name]
    for prompt in (relation.prompt, *relation.paraphrases, relation.pronoun_prompt):
        assert prompt == prompt.strip(), repr(prompt)
        assert prompt[-1].isalpha(), repr(prompt)
        assert "____" not in prompt


@pytest.mark.parametrize("name", sorted(RELATIONS))
def test_paraphrases_are_three_or_more_and_distinct(name):
    relation = RELATIONS[name]
    assert len(relation.paraphrases) >= 3
    assert len({relation.prompt, *relation.paraphrases}) == len(relation.paraphrases) + 1


@pytest.mark.parametrize("name", sorted(RELATIONS))
def test_questions_and_clozes_are_well_formed(name):
    relation = RELATIONS[name]
    assert relation.question.endswith("?") and relation.pronoun_question.endswith("?")
    for cloze in (relation.cloze, relation.pronoun_cloze):
        assert cloze.count("____") == 1 and cloze.endswith("____.")


def test_country_and_element_templates_never_start_with_the_subject():
    # country names may start with a lower-case "the", element names are lower case
    for relation in RELATIONS.values():
        if relation.subject_kind in ("country", "element"):
            for template in _all_plain(relation):
                assert not template.startswith("{subject}"), template


def test_templates_fill_in_to_plain_sentences():
    relation = get_relation("capital")
    assert relation.prompt.format(subject="France") + " Paris." == "The capital of France is Paris."
    assert relation.cloze.format(subject="the United States") == "The capital of the United States is ____."


def test_templates_dict_has_the_store_keys_and_is_json():
    templates = get_relation("currency").templates()
    assert set(templates) == {"prompt", "paraphrases", "question", "cloze",
                              "pronoun_prompt", "pronoun_question", "pronoun_cloze"}
    assert json.loads(json.dumps(templates))["paraphrases"] == list(get_relation("currency").paraphrases)


def test_get_relation_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError) as raised:
        get_relation("capitol")
    assert "capitol" in str(raised.value)
    assert all(name in str(raised.value) for name in RELATIONS)


def test_get_relation_returns_the_table_entry_and_relations_are_frozen():
    relation = get_relation("element_symbol")
    assert relation is RELATIONS["element_symbol"]
    with pytest.raises(AttributeError):
        relation.prompt = "x"


def test_multi_valued_relations_are_known_relations():
    assert MULTI_VALUED_RELATIONS <= set(RELATIONS)
    assert "capital" not in MULTI_VALUED_RELATIONS

"""Edit cases and probes built from the real knowledge base with a tiny tokenizer."""

from __future__ import annotations

from collections import Counter

import pytest

from compute.cases import (
    ANSWER_SLOT,
    CHAT_TYPES,
    NEIGHBOURHOOD,
    CaseBuilder,
    EditCase,
    case_from_rows,
    render_chat,
)
from compute.scoring import mentions
from store.metrics import REPHRASE_TYPES


@pytest.fixture(scope="module")
def cases(builder):
    return builder.build(64, seed=0)


def test_every_case_has_all_16_rephrase_types_and_neighbours(cases):
    assert len(REPHRASE_TYPES) == 16
    for case in cases:
        types = Counter(p.rephrase_type for p in case.probes)
        assert set(REPHRASE_TYPES) <= set(types)
        assert types["paraphrase"] >= 3
        assert types[NEIGHBOURHOOD] >= 1


def test_new_object_is_another_object_of_the_same_relation(cases, kb):
    for case in cases:
        assert case.new_object in kb.objects_of(case.relation)
        true_objects = {f.object for f in kb.facts_of(case.subject) if f.relation == case.relation}
        assert case.new_object not in true_objects


OPEN_TURN = "<|im_start|>assistant\n"


def test_text_probes_end_before_the_object_and_chat_probes_with_an_empty_assistant_turn(cases):
    for case in cases:
        for p in case.probes:
            assert p.target_new == case.new_object
            if p.rephrase_type in CHAT_TYPES:
                assert p.text.endswith(OPEN_TURN), (p.rephrase_type, p.text[-40:])
            else:
                assert p.text == p.text.rstrip() and "<|im_start|>" not in p.text, (p.rephrase_type, p.text[-30:])


def test_no_probe_puts_the_edit_prompt_or_an_answer_into_the_assistants_turn(cases):
    """design.md section 5: the model's answers are free. The last assistant turn is empty, and no earlier
    assistant turn holds the edit prompt, the true or the new object (doubt's holds only the model's own answer)."""
    for case in cases:
        for p in case.probes:
            if p.rephrase_type not in CHAT_TYPES:
                continue
            turns = p.text.split(OPEN_TURN)
            assert turns[-1] == "", (p.rephrase_type, turns[-1])
            for said in turns[1:-1]:
                said = said.split("<|im_end|>")[0]
                assert case.prompt not in said, (p.rephrase_type, said)
                assert not mentions(said, case.true_names() + case.new_names()), (p.rephrase_type, said)
                assert p.rephrase_type != "doubt" or said == ANSWER_SLOT


def test_cloze_family_asks_to_fill_the_blank_in_a_user_turn(cases):
    for case in cases:
        for rtype in ("cloze", "context_cloze", "noisy_context_cloze", "dialogue_cloze", "noisy_dialogue_cloze"):
            text = case.probes_of(rtype)[0].text
            user = text.rsplit("<|im_start|>user\n", 1)[1]
            assert "Fill in the blank: " in user and "____" in user and "Answer:" not in text, rtype
        assert case.probes_of("cloze")[0].text.count("<|im_start|>user") == 1
        context = case.probes_of("context")[0].text.rsplit("\n", 1)[0]
        assert context in case.probes_of("context_cloze")[0].text


def test_related_contexts_never_name_the_true_or_new_object(cases):
    for case in cases:
        for p in case.probes_of("context"):
            passage = p.text.rsplit("\n", 1)[0]
            assert not mentions(passage, case.true_names() + case.new_names()), case.case_id


def test_noisy_context_does_not_mention_the_subject(cases):
    for case in cases:
        noise = case.probes_of("noisy_context")[0].text.rsplit("\n", 1)[0]
        assert not mentions(noise, [case.subject])
        assert case.probes_of("noisy_context_pronoun")[0].text.startswith(case.subject[:1].upper())


def test_dialogues_use_the_chat_template_and_doubt_waits_for_the_answer(cases):
    case = cases[0]
    dialogue = case.probes_of("dialogue")[0].text
    assert dialogue.count("<|im_start|>user") >= 2 and dialogue.endswith(OPEN_TURN)
    assert case.prompt not in dialogue
    doubt = case.probes_of("doubt")[0]
    assert doubt.needs_answer and ANSWER_SLOT in doubt.text
    assert doubt.first_turn().endswith(OPEN_TURN) and doubt.text.endswith(OPEN_TURN)
    assert ANSWER_SLOT not in doubt.filled("Paris.") and "Paris." in doubt.filled("Paris.")


def test_neighbourhood_prompts_are_about_other_subjects(cases):
    for case in cases:
        for p in case.probes_of(NEIGHBOURHOOD):
            assert not mentions(p.text, [case.subject])
            assert p.target_true.lower() != case.new_object.lower()


def test_sampling_is_balanced_across_relations_and_quartiles(builder, kb):
    drawn = builder.sample(len(kb.relations()) * 4 * 2, seed=1)
    cells = Counter((f.relation, q) for f, q in drawn)
    assert set(cells.values()) == {2}


def test_same_seed_same_cases_other_seed_other_cases(builder):
    a = builder.build(20, seed=3, relations=["capital"])
    b = builder.build(20, seed=3, relations=["capital"])
    c = builder.build(20, seed=4, relations=["capital"])
    assert a == b
    assert [x.new_object for x in a] != [x.new_object for x in c]


def test_unknown_relation_and_too_many_cases_are_refused(builder):
    with pytest.raises(ValueError, match="unknown relation"):
        builder.sample(5, relations=["capitol"])
    with pytest.raises(ValueError, match="only"):
        builder.sample(10_000_000, relations=["capital"])


def test_case_round_trips_through_store_rows(cases):
    row, probes = cases[0].to_rows()
    assert case_from_rows(row, probes) == cases[0]


@pytest.mark.parametrize(
    "subject,prompt,new,message",
    [
        ("France", "The capital of Spain is", "Rome", "does not occur in the prompt"),
        ("France", "The capital of France is", " ", "new object is empty"),
        ("France", "The capital of France is", "paris", "equals the true object"),
    ],
)
def test_bad_edit_requests_are_refused_clearly(subject, prompt, new, message):
    with pytest.raises(ValueError, match=message):
        EditCase("x", "s", "kb", "capital", subject, prompt, "Paris", (), new, ())


def test_chat_fallback_without_a_template(tok_plain):
    text = render_chat(tok_plain, [("user", "What is the capital of France?")], "The capital of France is")
    assert text == "User: What is the capital of France?\nAssistant: The capital of France is"
    assert render_chat(tok_plain, [("user", "What is the capital of France?")]).endswith("\nAssistant:")


def test_builder_with_a_plain_tokenizer_builds_dialogues(kb, tok_plain, paragraphs):
    case = CaseBuilder(kb, tok_plain, paragraphs).build(1, seed=0, relations=["capital"])[0]
    assert case.probes_of("dialogue")[0].text.startswith("User: ")
    assert case.probes_of("doubt")[0].text.endswith("\nAssistant:")

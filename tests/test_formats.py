"""CounterFact- and zsRE-format files load into cases; malformed records are refused with their index."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compute.cases import NEIGHBOURHOOD
from compute.formats import FormatError, load_cases_file, load_counterfact, load_zsre

FIX = Path(__file__).parent / "fixtures"


def test_counterfact_records_become_cases_with_probes(paragraphs):
    cases = load_counterfact(FIX / "counterfact_sample.json", "cf", paragraphs)
    assert len(cases) == 3
    first = cases[0]
    assert (first.subject, first.true_object, first.new_object) == ("Danielle Darrieux", "French", "English")
    assert first.prompt == "The mother tongue of Danielle Darrieux is"
    assert len(first.probes_of("paraphrase")) == 2
    assert [p.target_true for p in first.probes_of(NEIGHBOURHOOD)] == ["French", "French"]
    assert first.probes_of("noisy_context")[0].text.endswith(first.prompt)
    assert first.features["frequency"] >= 0 and first.source == "counterfact"


def test_zsre_records_become_question_cases(paragraphs):
    cases = load_zsre(FIX / "zsre_sample.json", "z", paragraphs)
    assert [c.subject for c in cases] == ["Watts Humphrey", "Ramalinaceae"]
    c = cases[0]
    assert c.true_object == "Illinois Institute of Technology" and c.new_object == "University of Michigan"
    assert c.probes_of("paraphrase")[0].text == "What university did Watts Humphrey take part in?"
    loc = c.probes_of(NEIGHBOURHOOD)[0]
    assert loc.target_true == "Hugo Weaving" and loc.target_new == "University of Michigan"


def test_case_ids_are_stable_and_distinct():
    a = load_counterfact(FIX / "counterfact_sample.json", "cf")
    b = load_counterfact(FIX / "counterfact_sample.json", "cf")
    assert [c.case_id for c in a] == [c.case_id for c in b]
    assert len({c.case_id for c in a}) == 3


def test_subject_missing_from_prompt_names_the_record(tmp_path):
    rec = json.loads((FIX / "zsre_sample.json").read_text())
    rec[1]["src"] = "Which family does it belong to?"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(rec))
    with pytest.raises(FormatError, match=r"record 1: the subject 'Ramalinaceae' does not occur"):
        load_zsre(path, "z")


def test_missing_field_and_bad_json_are_refused(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('[{"requested_rewrite": {"prompt": "{} is", "subject": "A"}}]')
    with pytest.raises(FormatError, match="missing field 'target_true.str'"):
        load_counterfact(path, "cf")
    path.write_text("{not json")
    with pytest.raises(FormatError, match="not valid JSON"):
        load_counterfact(path, "cf")


def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="unknown format 'mquake'"):
        load_cases_file(FIX / "zsre_sample.json", "mquake", "s")

"""Tests of compute.kb: the knowledge base built from package data, its cache and its store rows.

The KB is built once per session (about 2 s) into a temporary cache folder; the tests share it.
"""

import json

import pytest
import wordfreq

import compute.kb as kb_module
from compute.kb import (KB_VERSION, KnowledgeBase, build_graph, build_knowledge_base, count_paths,
                        default_cache_dir, kb_to_rows, kb_version, load_knowledge_base)
from compute.relations import MULTI_VALUED_RELATIONS, RELATIONS


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("kb-cache")


@pytest.fixture(scope="session")
def kb(cache_dir) -> KnowledgeBase:
    return load_knowledge_base(cache_dir)


def _objects(kb, relation, subject):
    return [f.object for f in kb.facts_of(subject) if f.relation == relation]


# ---------------------------------------------------------------- size and content

def test_kb_has_enough_facts_and_relations(kb):
    assert len(kb.facts) >= 3000
    assert len(kb.relations()) >= 10
    assert set(kb.relations()) <= set(RELATIONS)


def test_capital_of_france_is_paris_and_renamed_capitals_keep_old_names(kb):
    assert _objects(kb, "capital", "France") == ["Paris"]
    kyiv = [f for f in kb.facts_of("Ukraine") if f.relation == "capital"][0]
    assert kyiv.object == "Kyiv" and "Kiev" in kyiv.object_aliases
    assert "Nur-Sultan" in kb.aliases_of("Astana")


def test_united_states_aliases(kb):
    usa = kb.subjects["the United States"]
    assert usa.kind == "country"
    assert {"United States", "USA", "US", "United States of America"} <= set(usa.aliases)
    chicago = kb.facts_of("Chicago")
    assert [(f.object, "USA" in f.object_aliases) for f in chicago if f.relation == "city_country"] == [
        ("the United States", True)]


def test_currency_objects_are_prose_names_with_codes_as_aliases(kb):
    euro = [f for f in kb.facts_of("France") if f.relation == "currency"][0]
    assert euro.object == "euro" and "EUR" in euro.object_aliases


def test_single_valued_relations_have_one_object_per_subject(kb):
    seen = {}
    for fact in kb.facts:
        if fact.relation not in MULTI_VALUED_RELATIONS:
            key = (fact.relation, fact.subject)
            assert key not in seen, (key, seen.get(key), fact.object)
            seen[key] = fact.object


def test_every_fact_subject_is_a_subject_of_the_relations_kind(kb):
    for fact in kb.facts:
        assert kb.subjects[fact.subject].kind == RELATIONS[fact.relation].subject_kind, fact
        assert fact.subject != fact.object


def test_ambiguous_names_are_not_subjects(kb):
    assert "Georgia" not in kb.subjects  # country and US state
    assert _objects(kb, "city_country", "Tbilisi") == ["Georgia"]
    assert "Birmingham" not in kb.subjects  # England and Alabama, neither ten times the other
    assert "London" in kb.subjects  # London, Ontario is much smaller
    assert _objects(kb, "city_country", "Springfield") == ["the United States"]
    assert _objects(kb, "us_city_state", "Springfield") == []  # Illinois and Missouri


def test_subject_names_are_capitalised_except_countries_with_the_and_elements(kb):
    for subject in kb.subjects.values():
        if subject.kind == "element":
            assert subject.name == subject.name.lower()
        elif subject.kind == "country" and subject.name.startswith("the "):
            assert subject.name[4].isupper()
        else:
            assert subject.name[0].isupper(), subject.name


def test_facts_are_sorted_and_unique(kb):
    keys = [(f.relation, f.subject, f.object) for f in kb.facts]
    assert keys == sorted(set(keys))


# ---------------------------------------------------------------- popularity features

def test_population_is_set_for_places_only(kb):
    assert kb.subjects["France"].population > 60_000_000
    assert kb.subjects["Paris"].population > 1_000_000
    assert kb.subjects["iron"].population is None
    assert all(s.population is None for s in kb.subjects.values() if s.kind in ("element", "airport"))


def test_frequency_is_wordfreq_zipf(kb):
    for name in ("France", "Paris", "iron", "the United States"):
        assert kb.subjects[name].frequency == wordfreq.zipf_frequency(name, "en")
    assert kb.subjects["France"].frequency > kb.subjects["Tuvalu"].frequency


def test_connection_counts_facts_as_subject_or_object(kb):
    for name in ("France", "Paris", "iron", "Texas"):
        expected = sum(1 for f in kb.facts if name in (f.subject, f.object))
        assert kb.subjects[name].connection == expected


def test_every_fact_cooccurs_at_least_once(kb):
    assert min(f.cooccurrence for f in kb.facts) >= 1
    # France - Europe is linked through many European neighbours and euro countries
    assert [f.cooccurrence for f in kb.facts_of("France") if f.relation == "continent"][0] > 10


def test_count_paths_on_a_five_node_graph():
    # a-b twice (parallel facts), a-c, b-c, c-d, b-d, d-e
    graph = build_graph([("a", "b"), ("b", "a"), ("a", "c"), ("b", "c"), ("c", "d"), ("b", "d"), ("d", "e")])
    # a..b: direct x2; a-c-b; a-c-d-b
    assert count_paths(graph, "a", "b") == 4
    # a..d: a-b-d x2, a-c-d, a-b-c-d x2, a-c-b-d
    assert count_paths(graph, "a", "d") == 6
    # a..e: a-b-d-e x2, a-c-d-e (e has one neighbour, so no 2-edge path)
    assert count_paths(graph, "a", "e") == 3
    assert count_paths(graph, "e", "a") == 3


def test_count_paths_ignores_longer_and_missing_paths():
    chain = build_graph([("a", "b"), ("b", "c"), ("c", "d"), ("d", "e")])
    assert count_paths(chain, "a", "d") == 1
    assert count_paths(chain, "a", "e") == 0
    assert count_paths(chain, "a", "zzz") == 0
    with pytest.raises(ValueError):
        count_paths(chain, "a", "a")


# ---------------------------------------------------------------- KB methods

def test_kb_lookups(kb):
    assert kb.objects_of("continent") == sorted(set(kb.objects_of("continent")))
    assert "Europe" in kb.objects_of("continent")
    assert all(f.relation == "element_symbol" for f in kb.facts_by_relation("element_symbol"))
    assert kb.facts_of("no such subject") == [] and kb.facts_by_relation("nope") == []
    assert kb.aliases_of("no such name") == ()
    assert "EUR" in kb.aliases_of("euro")


# ---------------------------------------------------------------- build, cache, version

def test_build_is_deterministic(kb):
    assert build_knowledge_base() == kb


def test_version_names_kb_version_and_data_packages(kb):
    assert kb.version == kb_version()
    assert kb.version.startswith(KB_VERSION + "_")
    assert all(package in kb.version for package in kb_module.DATA_PACKAGES)


def test_cache_round_trip_equals_build(kb, cache_dir):
    path = cache_dir / f"kb-{kb.version}.json"
    assert path.is_file()
    assert kb_module.kb_from_json(path.read_text(encoding="utf-8")) == kb
    assert load_knowledge_base(cache_dir) == kb


@pytest.mark.parametrize("garbage", ["{not json", '{"version": "x"}', "[]"])
def test_corrupt_cache_is_rebuilt(kb, tmp_path, monkeypatch, garbage):
    path = tmp_path / f"kb-{kb.version}.json"
    path.write_text(garbage, encoding="utf-8")
    builds = []
    monkeypatch.setattr(kb_module, "build_knowledge_base", lambda progress=False: builds.append(1) or kb)
    assert load_knowledge_base(tmp_path) == kb
    assert builds == [1]
    assert kb_module.kb_from_json(path.read_text(encoding="utf-8")) == kb


def test_default_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("EDITSCOPE_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("EDITSCOPE_CACHE")
    assert default_cache_dir().parts[-2:] == (".cache", "editscope")


# ---------------------------------------------------------------- store rows

def test_kb_to_rows_uses_the_store_columns(kb):
    relations, subjects, facts = kb_to_rows(kb)
    assert set(relations[0]) == {"relation", "subject_kind", "description", "templates"}
    assert set(subjects[0]) == {"subject", "kind", "aliases", "frequency", "connection", "population"}
    assert set(facts[0]) == {"relation", "subject", "object", "object_aliases", "cooccurrence"}
    assert len(relations) == len(kb.relations()) and len(subjects) == len(kb.subjects)
    assert len(facts) == len(kb.facts)


def test_kb_rows_carry_python_objects_that_serialise(kb):
    relations, subjects, facts = kb_to_rows(kb)
    capital = next(r for r in relations if r["relation"] == "capital")
    assert capital["templates"]["prompt"] == "The capital of {subject} is"
    usa = next(s for s in subjects if s["subject"] == "the United States")
    assert isinstance(usa["aliases"], list) and "USA" in usa["aliases"]
    json.dumps([relations, subjects, facts])

"""store.changes: what changed from one version of a store to the next, on two small stores built from plain rows,
through an export and back, from the CLI, and the README's rebuild block equal to its output on the committed
stores."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from store import Store, StoreError, changes
from store.findings import NOT_MEASURED, REPRODUCED
from test_findings import N_CASES, ROOT, _robustness_store, _run

ACC = {"ROME": {"plain": 0.95, "paraphrase": 0.4}, "MEMIT": {"plain": 0.9, "paraphrase": 0.3}}
KNOWN = {"plain": 0.5, "paraphrase": 0.5, "doubt": 0.5}


def _previous(path: Path) -> None:
    """ROME and MEMIT with a paraphrase drop (A2 reproduced), doubt probes that end with the edit prompt, ROME at
    v_lr 0.5, no per-edit diagnostics, one sequential ROME run of order 0."""
    with Store.open(path, create=True) as st:
        _robustness_store(st, ACC, KNOWN, doubt_forced=True)
        st.conn.execute("UPDATE runs SET hparams = ? WHERE run_id = 'rob-ROME'", (json.dumps({"v_lr": 0.5}),))
        st.conn.execute("UPDATE runs SET code_version = 'c0ffee' WHERE run_id = 'rob-ROME'")
        st.conn.commit()
        _run(st, "seq-0", "sequential", editor="ROME", hparams={"v_lr": 0.5},
             config={"order_seed": 0, "panel_size": 50, "tasks": {"sentiment": {"quick_n": 80, "version": 1}}})


def _current(path: Path) -> None:
    """The same cases with free-answer doubt probes, ROME at v_lr 0.1 with per-edit diagnostics and no paraphrase
    drop for MEMIT (A2 no longer reproduced), sequential ROME on orders 0-2 with a 200-fact panel, and a control."""
    acc = {"ROME": ACC["ROME"], "MEMIT": {"plain": 0.9, "paraphrase": 0.9}}
    with Store.open(path, create=True) as st:
        _robustness_store(st, acc, KNOWN, doubt_forced=False)
        st.conn.execute("UPDATE runs SET hparams = ? WHERE run_id = 'rob-ROME'", (json.dumps({"v_lr": 0.1}),))
        st.conn.commit()
        st.write_edit_diagnostics([{"run_id": "rob-ROME", "edit_count": 1, "case_id": "c0", "target": "W",
                                    "name": "dw_rel", "value": 0.05}])
        for order in range(3):
            _run(st, f"seq-{order}", "sequential", editor="ROME", hparams={"v_lr": 0.1},
                 config={"order_seed": order, "panel_size": 200, "tasks": {"sentiment": {"quick_n": 160, "version": 1}},
                         "types": [f"t{i}" for i in range(8)]})
        _run(st, "ctl-0", "sequential", editor="RandomRankOne", config={"order_seed": 0, "panel_size": 200})


@pytest.fixture
def two_versions(tmp_path):
    before, after = tmp_path / "before.sqlite", tmp_path / "after.sqlite"
    _previous(before)
    _current(after)
    return before, after


def test_a_claim_shows_its_verdict_in_both_versions_and_what_its_runs_did_differently(two_versions):
    before, after = two_versions
    old, new = changes.load(before), changes.load(after)
    a2_old = next(f for f in old["findings"] if f["claim"] == "A2")
    a2_new = next(f for f in new["findings"] if f["claim"] == "A2")
    assert a2_old["verdict"] == REPRODUCED and a2_new["verdict"] != REPRODUCED
    assert a2_new["groups"] == ["robustness: MEMIT", "robustness: ROME"]
    rome = changes.group_changes(old["groups"]["robustness: ROME"], new["groups"]["robustness: ROME"])
    assert "v_lr 0.5 → 0.1" in rome
    assert "probes copy task: doubt → free answers" in rome
    # which rephrase types the unedited model could answer, judged by the same rule in each version
    assert "measurable now: doubt" in rome and not [d for d in rome if d.startswith("unmeasurable now")]
    assert "per-edit diagnostics in 0 of 1 run(s) → 1 of 1" in rome
    code = new["groups"]["robustness: ROME"]["settings"].get("code", "—")
    assert code != "c0ffee" and rome[-1] == f"code c0ffee → {code}"  # the commits, to read what changed between
    # MEMIT's runs were made alike: only its probes and what they let it measure changed
    assert changes.group_changes(old["groups"]["robustness: MEMIT"], new["groups"]["robustness: MEMIT"]) == [
        "probes copy task: doubt → free answers", "measurable now: doubt"]
    seq = changes.group_changes(old["groups"]["sequential: ROME"], new["groups"]["sequential: ROME"])
    assert seq[0] == "1 run (1 done), edit order 0 → 3 runs (3 done), edit orders 0, 1, 2"
    assert "panel_size 50 → 200" in seq and "v_lr 0.5 → 0.1" in seq
    # a dict's entries are compared one by one (an ability task's items), a long list by its length and first items
    assert "tasks.sentiment.quick_n 80 → 160" in seq and not [d for d in seq if "version" in d]
    assert "types — → 8 values (t0, t1, t2, …)" in seq
    assert changes.group_changes(None, new["groups"]["sequential: RandomRankOne (control)"]) == [
        "new: 1 run (1 done), edit order 0"]
    assert changes.group_changes(old["groups"]["sequential: ROME"], old["groups"]["sequential: ROME"]) == []

    block = changes.markdown(old, new, "after.sqlite", "before.sqlite")
    row = next(line for line in block.splitlines() if line.startswith("| A2 |"))
    assert row.startswith(f"| A2 | {REPRODUCED}: 0.40 [") and f"n = {N_CASES} | {a2_new['verdict']}" in row
    assert "robustness: ROME (changed)" in row and "robustness: MEMIT (changed)" in row
    assert "- **robustness: ROME**: " in block and "v_lr 0.5 → 0.1" in block
    assert f"Previous: `{before.as_posix()}` as it was (sha256 " in block


def test_a_group_in_one_version_only_is_named_so(two_versions):
    before, after = two_versions
    old, new = changes.load(after), changes.load(before)  # read backwards: the control and orders 1-2 are missing
    assert changes.group_changes(old["groups"]["sequential: RandomRankOne (control)"], None) == [
        "not in this store: 1 run (1 done), edit order 0"]
    block = changes.markdown(old, new, "before.sqlite", "after.sqlite")
    assert NOT_MEASURED in block and "3 runs (3 done), edit orders 0, 1, 2 → 1 run (1 done), edit order 0" in block


def test_an_export_compares_as_the_store_it_was_made_from(two_versions, tmp_path):
    before, after = two_versions
    exported = tmp_path / "previous.json"
    cli = [sys.executable, "-m", "store.changes"]
    done = subprocess.run(cli + ["--store", str(before), "--export", str(exported)], capture_output=True, text=True,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr
    from_store = subprocess.run(cli + ["--store", str(after), "--previous", str(before), "--markdown"],
                                capture_output=True, text=True, cwd=ROOT)
    from_export = subprocess.run(cli + ["--store", str(after), "--previous", str(exported), "--markdown"],
                                 capture_output=True, text=True, cwd=ROOT)
    assert from_store.returncode == 0 and from_export.returncode == 0, from_store.stderr + from_export.stderr
    # the same block, but for the command that writes it; the export still names the store it was made from
    assert from_export.stdout == from_store.stdout.replace(f"--previous {before}", f"--previous {exported}")
    assert f"Previous: `{before}` as it was (sha256 " in from_export.stdout
    assert changes.load(exported)["sha256"] == changes.load(before)["sha256"]


def test_a_bad_previous_version_is_refused_with_what_to_do(two_versions, tmp_path):
    _, after = two_versions
    with pytest.raises(ValueError, match="use one of changes, rebuild-changes"):
        changes.markers_of("findings")  # the findings' blocks are store.findings' to write
    with pytest.raises(StoreError, match="no file at .*--export"):
        changes.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": 0}', encoding="utf-8")
    with pytest.raises(StoreError, match="write it again with"):
        changes.load(bad)
    bad.write_text("not json", encoding="utf-8")
    with pytest.raises(StoreError, match="not an export"):
        changes.load(bad)
    done = subprocess.run([sys.executable, "-m", "store.changes", "--store", str(after)], capture_output=True,
                          text=True, cwd=ROOT)
    assert done.returncode == 2 and "--previous" in done.stderr


def test_the_readmes_rebuild_changes_block_is_the_functions_output_on_the_committed_stores():
    rebuild = ROOT / "store" / "rebuild.sqlite"
    start, end = changes.markers_of("rebuild-changes")
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    if not rebuild.is_file():  # the rebuild has replaced the shipped store: its block is gone with it
        assert start not in text
        return
    block = changes.markdown(changes.load(ROOT / "store" / "results.sqlite", "store/results.sqlite"),
                             changes.load(rebuild, "store/rebuild.sqlite"),
                             "store/rebuild.sqlite", "store/results.sqlite", "rebuild-changes")
    assert changes.fmod.readme_block(text, start, end) == block.strip("\n"), (
        "README's rebuild-changes block is stale: run `python -m store.changes --store store/rebuild.sqlite "
        "--previous store/results.sqlite --markers rebuild-changes --write-readme README.md`")


def test_the_readmes_changes_block_is_the_functions_output_against_the_committed_export():
    """Once the rebuild has replaced the shipped store, the README compares it with the outgoing store's export
    (store/previous.json); before that the README has no such block."""
    start, end = changes.markers_of("changes")
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    exported = ROOT / "store" / "previous.json"
    if not exported.is_file():
        assert start not in text
        return
    block = changes.markdown(changes.load(exported), changes.load(ROOT / "store" / "results.sqlite",
                                                                  "store/results.sqlite"),
                             "store/results.sqlite", "store/previous.json")
    assert changes.fmod.readme_block(text, start, end) == block.strip("\n"), (
        "README's changes block is stale: run `python -m store.changes --previous store/previous.json "
        "--write-readme README.md`")


def test_the_findings_page_shows_what_changed_from_the_version_the_shown_store_follows(monkeypatch, tmp_path,
                                                                                      two_versions):
    """The rebuild in progress is compared with the shipped store; the shipped store with the export of the one it
    replaced where the repository has one (store/previous.json), and with nothing otherwise. As text."""
    import shutil

    from streamlit.testing.v1 import AppTest

    import dashboard.data
    import store as store_pkg

    folder = tmp_path / "store"
    folder.mkdir()
    shutil.copy(two_versions[0], folder / "results.sqlite")
    shutil.copy(two_versions[1], folder / "rebuild.sqlite")
    monkeypatch.delenv("EDITSCOPE_STORE", raising=False)
    monkeypatch.setattr(store_pkg, "default_store_path", lambda: folder / "results.sqlite")
    monkeypatch.setattr(dashboard.data, "default_store_path", lambda: folder / "results.sqlite")
    app = str(ROOT / "dashboard" / "app.py")

    def findings_page(rebuild: bool):
        at = AppTest.from_file(app, default_timeout=90)
        if rebuild:
            at.query_params["results"] = "rebuild"
        at.run()
        at.switch_page("app_pages/findings.py").run()
        assert not at.exception
        return at

    at = findings_page(rebuild=False)  # the shipped store, no export of a previous version: nothing to compare
    assert not [e for e in at.expander if e.label.startswith("What changed")]
    at = findings_page(rebuild=True)
    assert [e.label for e in at.expander if e.label.startswith("What changed")] == [
        "What changed from the previous version"]
    texts = [t.value for t in at.text]
    assert "Previous version: results.sqlite" in texts
    before, after = changes.load(folder / "results.sqlite"), changes.load(folder / "rebuild.sqlite")
    for group in sorted(set(before["groups"]) | set(after["groups"])):
        if any(group in f["groups"] for f in before["findings"] + after["findings"]):
            assert any(t.startswith(f"{group}: ") for t in texts), group
    subprocess.run([sys.executable, "-m", "store.changes", "--store", str(folder / "rebuild.sqlite"), "--export",
                    str(folder / "previous.json")], check=True, cwd=ROOT, capture_output=True)
    at = findings_page(rebuild=False)  # the shipped store beside an export of its previous version
    assert "Previous version: rebuild.sqlite" in [t.value for t in at.text]  # its name, no server path


def test_per_edit_diagnostics_are_told_by_none_some_or_all_of_a_groups_runs():
    def group(runs, diagnostics):
        return {"runs": runs, "orders": [], "status": {"done": runs}, "settings": {}, "metrics": [],
                "diagnostics": diagnostics}

    assert changes.group_changes(group(1, 1), group(3, 3))[-1] == "1 run (1 done) → 3 runs (3 done)"  # all, both
    assert changes.group_changes(group(3, 1), group(3, 3)) == ["per-edit diagnostics in 1 of 3 run(s) → 3 of 3"]
    assert changes.group_changes(group(2, 0), group(2, 1)) == ["per-edit diagnostics in 0 of 2 run(s) → 1 of 2"]


def test_a_claim_whose_page_picks_its_own_run_still_names_it(two_versions):
    """A6 links to Popularity, which picks the knowledge run itself; its figure still comes from that run, so the
    comparison lists the knowledge run's group behind it (it was "—"), here where that run stores no correlation."""
    _, after = two_versions
    a6 = next(f for f in changes.load(after)["findings"] if f["claim"] == "A6")
    assert a6["verdict"] == NOT_MEASURED and a6["groups"] == ["knowledge: unedited"]

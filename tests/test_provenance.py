"""Provenance: the code version is the commit, '-dirty' only for uncommitted code (not the store file)."""

from __future__ import annotations

import subprocess

from compute.provenance import code_version, package_versions, provenance


def _git(repo, *args):
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def test_code_version_ignores_the_store_but_not_code(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "results.sqlite").write_bytes(b"one")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "c")
    clean = code_version(tmp_path)
    assert len(clean) == 12 and not clean.endswith("-dirty")
    (tmp_path / "results.sqlite").write_bytes(b"two")
    assert code_version(tmp_path) == clean
    (tmp_path / "a.py").write_text("x = 2\n")
    assert code_version(tmp_path) == clean + "-dirty"


def test_outside_a_repository_the_version_is_unknown(tmp_path):
    assert code_version(tmp_path) == "unknown"


def test_provenance_names_packages_host_and_device():
    p = provenance("cpu")
    assert p["device"] == "cpu" and p["host"] and "torch" in p["packages"] and "python" in package_versions()

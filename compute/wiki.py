"""Plain text from the Wikipedia sample that ships inside the gensim wheel.

The file `enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2` holds about 200 pages
(about 105 real articles) of raw wiki markup. gensim's own `extract_pages` and `filter_wiki` strip the
markup; we then keep paragraphs that read as prose (no tables, lists, headings or leftover templates).

Two users: noisy contexts (unrelated passages for the `noisy_*` rephrase types) and, later, covariance
statistics for ROME/MEMIT. The parsed paragraphs are cached as JSON in the cache folder.
"""

from __future__ import annotations

import bz2
import json
import os
import re
from pathlib import Path

WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
WIKI_VERSION = "1"


def wiki_path() -> Path:
    """Location of the sample inside the installed gensim package."""
    from gensim.test.utils import datapath

    path = Path(datapath(WIKI_FILE))
    if not path.is_file():
        raise FileNotFoundError(f"{WIKI_FILE} is missing from gensim's test data: reinstall gensim")
    return path


_JUNK = re.compile(r"(\(\s*[;,)]|\s[,;]\s*[,;)]|\ban? [,.]|\|\s*\w+\s*=|\{\{|\}\}|\[\[|\]\]|^\s*[*#:;!|=]|https?://|&\w+;|<[^>]+>)", re.MULTILINE)


def _clean_paragraph(par: str) -> str | None:
    par = re.sub(r"'{2,}", "", par)  # bold/italic quote marks
    par = re.sub(r"\s+", " ", par).strip()
    if len(par) < 200 or _JUNK.search(par):
        return None
    if par.count("(") != par.count(")") or not par.endswith("."):
        return None
    letters = sum(ch.isalpha() for ch in par)
    if letters < 0.75 * len(par):
        return None
    return par


def parse_wiki_sample() -> list[dict]:
    """Prose paragraphs of the sample: [{'title', 'text'}], in file order, deterministic."""
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    rows = []
    with bz2.open(wiki_path()) as fh:
        for title, text, _pageid in extract_pages(fh):
            if not text or text.lstrip().upper().startswith("#REDIRECT"):
                continue
            for par in filter_wiki(text).split("\n"):
                clean = _clean_paragraph(par)
                if clean:
                    rows.append({"title": title, "text": clean})
    return rows


def load_wiki_paragraphs(cache_dir: Path) -> list[dict]:
    """Cached `parse_wiki_sample()`; a missing or corrupt cache is rebuilt."""
    path = Path(cache_dir) / f"wiki-paragraphs-v{WIKI_VERSION}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        rows = parse_wiki_sample()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.partial")  # its own: two processes may parse at once
        tmp.write_text(json.dumps(rows))
        tmp.replace(path)
        return rows


def sentences(text: str) -> list[str]:
    """Split prose into sentences at '. ', '! ', '? ' followed by a capital letter."""
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", text) if s.strip()]

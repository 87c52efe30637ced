"""The dashboard's data layer: the one place that owns Streamlit caching.

The store is opened read-only. Query results are cached with `st.cache_data`, keyed on the store's path
and modification time (of the file and of its WAL), so a run that writes new rows shows up on the next rerun without a restart.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import streamlit as st

from store import Store, StoreError, default_store_path, derived, queries


def store_path() -> Path:
    """The store to show: $EDITSCOPE_STORE, else the shipped store/results.sqlite."""
    return default_store_path()


def store_status() -> tuple[Path, str | None]:
    """(path, None) when the store opens, else (path, the error message saying what to do)."""
    path = store_path()
    try:
        with Store.open(path, readonly=True):
            return path, None
    except StoreError as exc:
        return path, str(exc)


def _mtime(path: Path) -> float:
    """When the store last changed: a writer in WAL mode appends to `<store>-wal` before the main file."""
    times = []
    for p in (path, path.with_name(path.name + "-wal")):
        try:
            times.append(p.stat().st_mtime_ns)
        except OSError:
            continue
    return float(max(times, default=0))


@st.cache_data(max_entries=64, show_spinner=False)
def _query(path: str, mtime: float, name: str, kwargs: tuple) -> pl.DataFrame:
    fn = getattr(queries, name, None) or getattr(derived, name)
    with Store.open(Path(path), readonly=True) as st_:
        return fn(st_.conn, **dict(kwargs))


def query(name: str, **kwargs) -> pl.DataFrame:
    """Run store.queries.<name> or store.derived.<name>(conn, **kwargs) on the current store, cached until
    the file changes."""
    path = store_path()
    return _query(str(path), _mtime(path), name, tuple(sorted(kwargs.items())))

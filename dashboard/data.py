"""The dashboard's data layer: the one place that owns Streamlit caching.

Two stores are shown together: the shipped store (store/results.sqlite, or $EDITSCOPE_STORE) and the
workspace store that runs started from the dashboard write to (dashboard.jobs.workspace_path: outside git,
under the cache folder or $EDITSCOPE_WORKSPACE). Both are opened read-only here. `query` runs a store query
on each and combines the answers: run lists gain a `store` column ('shipped' or 'workspace') and workspace
runs' labels say so; a query about given runs goes to the store that holds them; catalogue queries (cases,
relations, case sets) keep the shipped rows and add the workspace's own. Without a workspace store every
answer is the shipped store's, as before.

Query results are cached with `st.cache_data`, keyed on the store's path and modification time (of the
file and of its WAL), so a run that writes new rows shows up on the next rerun without a restart.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import streamlit as st

from dashboard.jobs import workspace_path as _workspace_for
from store import Store, StoreError, default_store_path, derived, diagnostics, queries

SHIPPED, WORKSPACE, REBUILD = "shipped", "workspace", "rebuild"
# catalogue queries: the key that tells rows apart; the workspace adds only rows the shipped store lacks
CATALOGUE_KEYS = {
    "kb_relations": ["relation"], "case_sets": ["case_set"], "cases": ["case_id"], "probes": ["case_id", "probe_id"],
    "kb_facts": ["relation", "subject", "object"], "kb_subject": ["relation", "subject", "object"],
}
SHIPPED_ONLY = {"store_summary", "schema_history", "plan_status"}  # describe the shipped file itself
RUN_LISTS = {"list_runs", "run_labels", "case_runs"}  # answers that list runs: marked with where each lives
RUN_ARGS = ("run_id", "run_ids")


REBUILD_FILE = "rebuild.sqlite"  # the shipped plan's rebuild in progress, beside the shipped store
RESULTS_KEY = "results"  # the sidebar's choice (and URL key): "shipped" or "rebuild"


def rebuild_path() -> Path | None:
    """store/rebuild.sqlite: the store `plans/shipped.toml` is being rebuilt into, with what is finished so far,
    when the repository has one (it replaces store/results.sqlite once complete). None under
    $EDITSCOPE_STORE, which names the one store to show."""
    import os

    if os.environ.get("EDITSCOPE_STORE"):
        return None
    path = default_store_path().with_name(REBUILD_FILE)
    return path if path.is_file() else None


def showing_rebuild() -> bool:
    """Whether the visitor chose the rebuild in progress (sidebar, or ?results=rebuild in the link)."""
    from dashboard.filters import current

    return rebuild_path() is not None and current(RESULTS_KEY) == REBUILD


def store_path() -> Path:
    """The store to show: $EDITSCOPE_STORE, else the shipped store/results.sqlite, or the rebuild in progress
    (store/rebuild.sqlite) when the visitor chose it."""
    return rebuild_path() if showing_rebuild() else default_store_path()


def store_name() -> str:
    """What the shown store is called where a run says where it lives: 'rebuild' for the rebuild in progress, else
    'shipped' (the other is the 'workspace')."""
    return REBUILD if showing_rebuild() else SHIPPED


PREVIOUS_FILE = "previous.json"  # the shipped store's previous version, exported when the rebuild replaced it


def previous_version() -> Path | None:
    """The version the shown store follows (store.changes): the shipped store when the rebuild in progress is
    shown, else the export of the store it replaced (store/previous.json) where the repository has one; None
    under $EDITSCOPE_STORE."""
    import os

    if os.environ.get("EDITSCOPE_STORE"):
        return None
    shipped = default_store_path()
    path = shipped if showing_rebuild() else shipped.with_name(PREVIOUS_FILE)
    return path if path.is_file() else None


def workspace_path() -> Path:
    """The workspace store of the shown store (it may not exist yet)."""
    return _workspace_for(store_path())


def _workspace_or_none() -> Path | None:
    """The workspace store, or None when EDITSCOPE_WORKSPACE names the shown store itself (browsing goes
    on without it; the Demo and Launch pages say what is wrong)."""
    try:
        return workspace_path()
    except ValueError:
        return None


def store_paths() -> dict[str, Path]:
    """{'shipped' (or 'rebuild', store_name): path, 'workspace': path} for the stores that exist."""
    out = {store_name(): store_path()}
    ws = _workspace_or_none()
    if ws is not None and ws.is_file():
        out[WORKSPACE] = ws
    return out


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
    fn = getattr(queries, name, None) or getattr(derived, name, None) or getattr(diagnostics, name)
    with Store.open(Path(path), readonly=True) as st_:
        return fn(st_.conn, **dict(kwargs))


def _one(path: Path, name: str, kwargs: dict) -> pl.DataFrame:
    return _query(str(path), _mtime(path), name, tuple(sorted(kwargs.items())))


def _workspace_runs(ws: Path) -> set[str]:
    try:
        return set(_one(ws, "list_runs", {})["run_id"].to_list())
    except StoreError:
        return set()  # a workspace being created right now, or damaged: show the shipped store alone


def _concat(frames: list[pl.DataFrame]) -> pl.DataFrame:
    frames = [f for f in frames if f is not None]
    nonempty = [f for f in frames if not f.is_empty()]
    if len(nonempty) <= 1:
        return nonempty[0] if nonempty else frames[0]
    return pl.concat(nonempty, how="diagonal_relaxed")


def _mark(df: pl.DataFrame, ws_ids: set[str]) -> pl.DataFrame:
    """A `store` column on run lists, and ' · workspace' after a workspace run's label."""
    if "run_id" not in df.columns:
        return df
    in_ws = pl.col("run_id").is_in(list(ws_ids))
    df = df.with_columns(pl.when(in_ws).then(pl.lit(WORKSPACE)).otherwise(pl.lit(store_name())).alias("store"))
    if "label" in df.columns:
        df = df.with_columns(pl.when(in_ws).then(pl.col("label") + " · workspace").otherwise(pl.col("label"))
                             .alias("label"))
    return df


def query(name: str, **kwargs) -> pl.DataFrame:
    """Run store.queries.<name>, store.derived.<name> or store.diagnostics.<name>(conn, **kwargs) on the shown stores, cached until a
    file changes (see the module docstring for how the shipped and workspace answers are combined)."""
    shipped, ws = store_path(), _workspace_or_none()
    has_ws = ws is not None and ws.is_file()
    ws_ids = _workspace_runs(ws) if has_ws and name not in SHIPPED_ONLY else set()
    if not ws_ids and not (has_ws and name in CATALOGUE_KEYS):
        out = _one(shipped, name, kwargs)
        return _mark(out, set()) if name in RUN_LISTS else out
    arg = next((a for a in RUN_ARGS if kwargs.get(a) is not None), None)
    if arg is not None:
        value = kwargs[arg]
        if isinstance(value, str):
            return _one(ws if value in ws_ids else shipped, name, kwargs)
        ids = list(value)
        mine, theirs = [i for i in ids if i in ws_ids], [i for i in ids if i not in ws_ids]
        if not mine:
            return _one(shipped, name, kwargs)
        parts = [_one(ws, name, {**kwargs, arg: mine})]
        if theirs:
            parts.insert(0, _one(shipped, name, {**kwargs, arg: theirs}))
        out = _concat(parts)
    elif name in CATALOGUE_KEYS:
        main, extra = _one(shipped, name, kwargs), _one(ws, name, kwargs)
        key = [k for k in CATALOGUE_KEYS[name] if k in main.columns and k in extra.columns]
        if key and not extra.is_empty():
            extra = extra.join(main.select(key), on=key, how="anti")
        out = _concat([main, extra]) if key else main
    else:
        main, extra = _one(shipped, name, kwargs), _one(ws, name, kwargs)
        out = _concat([main, extra]) if "run_id" in main.columns and "run_id" in extra.columns else main
    if name in RUN_LISTS:
        out = _mark(out, ws_ids)
        if "started_at" in out.columns:
            out = out.sort("started_at", descending=True, nulls_last=True)
    return out


def run_store(run_id: str) -> str:
    """'workspace' when the run lives in the workspace store, else the shown store's name (store_name)."""
    ws = _workspace_or_none()
    return WORKSPACE if ws is not None and ws.is_file() and run_id in _workspace_runs(ws) else store_name()


def secrets() -> dict:
    """The Streamlit secrets as a plain dict ({} without a secrets file: Streamlit raises then)."""
    try:
        return dict(st.secrets)
    except Exception:
        return {}


def public_mode() -> bool:
    """Whether this dashboard is public (dashboard.jobs.is_public on the environment and the secrets)."""
    import os

    from dashboard.jobs import is_public

    return is_public(os.environ, secrets())


def session_owner() -> str:
    """An id for this browser session: jobs record it, and only their owner sees their logs or cancels them."""
    import uuid

    if "job_owner" not in st.session_state:
        st.session_state["job_owner"] = uuid.uuid4().hex
    return st.session_state["job_owner"]


def stamp() -> tuple:
    """(path, modification time) of every shown store: a cache key for figures a page builds from several
    queries, so that they follow new rows in either store."""
    return tuple((str(p), _mtime(p)) for p in store_paths().values())


def workspace_problem() -> str | None:
    """Why runs cannot be started (a misconfigured workspace store), or None."""
    try:
        workspace_path()
    except ValueError as exc:
        return str(exc)
    return None


def for_visitor(text: str | None, hosts=()) -> str | None:
    """`text` (a run's stored error, a message) as this dashboard may show it: unchanged for the operator of a
    private dashboard; for a public visitor without server paths, pids and host names (dashboard.jobs.redact,
    plus `hosts`: the hosts the store's runs record, which need not be this machine)."""
    if text is None or not public_mode():
        return text
    from dashboard.jobs import redact

    paths = [store_path(), *([ws] if (ws := _workspace_or_none()) is not None else [])]
    text = redact(str(text), paths)
    for host in sorted({h for h in hosts if h and len(h) > 1}, key=len, reverse=True):
        text = text.replace(host, "<host>")
    return text

"""What changed from one version of a store to the next: each headline finding's verdict and figure before and
after (store.findings), and what the runs behind it did differently (hyperparameters, layout, probes, what they
measured), computed from the two stores.

The previous version is a store file or an export of it (`--export`: a small JSON of its findings and run
settings), so that the comparison outlives the file it was made from: when the shipped store is replaced by its
rebuild, the outgoing store is exported first and the README's block compares the new one with that export.

    python -m store.changes --store store/rebuild.sqlite --previous store/results.sqlite --markdown
    python -m store.changes --store store/results.sqlite --export store/previous.json
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

from . import findings as fmod
from . import measurable
from .derived.labels import run_label

FORMAT = 1
# the kinds of run whose settings are compared: those the findings read (sweeps choose settings, demos show one edit)
KINDS = ("knowledge", "robustness", "sequential", "batch", "abilities")
# config fields that name a run's inputs by id, repeat what a label says or list fixed text: not settings to compare
SKIP_CONFIG = frozenset({"fluency_prompts", "baseline_run", "spec_key", "excluded_cases", "editor_traits",
                         "probes_digest", "order_seed"})
MARKERS = ("changes", "rebuild-changes")  # the shipped store's block, and the rebuild's (before it replaces it)
NONE = "—"


LONG_LIST = 6  # a list longer than this is written as its length and its first items


def _text(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value == int(value) and abs(value) < 1e15:
        return f"{value:g}"
    if isinstance(value, list) and len(value) > LONG_LIST:
        return f"{len(value)} values ({', '.join(_text(v) for v in value[:3])}, …)"
    return json.dumps(value, sort_keys=True, separators=(", ", ": "))


def _flat(prefix: str, value) -> dict[str, str]:
    """A setting as NAME -> text, a dict's entries each under NAME.KEY (an ability task's quick_n and version are
    told apart, not one long JSON)."""
    if isinstance(value, dict) and value:
        return {k: v for key, sub in value.items() for k, v in _flat(f"{prefix}.{key}", sub).items()}
    return {prefix: _text(value)}


def _probes(conn: sqlite3.Connection, case_set: str | None, cache: dict) -> str:
    """How the case set's chat probes (and doubt) end: the types that are a copy task (measurable.copy_tasks),
    else free answers."""
    if case_set not in cache:
        copies = measurable.copy_tasks(conn, case_set) if case_set else {}
        cache[case_set] = ("copy task: " + ", ".join(copies)) if copies else "free answers"
    return cache[case_set]


def _metrics(conn: sqlite3.Connection, run_id: str) -> set[str]:
    rows = conn.execute(
        "SELECT DISTINCT k.name FROM measurement_values v JOIN measurement_names k ON k.id = v.metric_key "
        "WHERE v.run = (SELECT id FROM measurement_names WHERE name = ?)", (run_id,)).fetchall()
    return {r[0] for r in rows}


def _has_diagnostics(conn: sqlite3.Connection, run_id: str) -> bool:
    return conn.execute("SELECT 1 FROM edit_diagnostics WHERE run_id = ? LIMIT 1", (run_id,)).fetchone() is not None


def run_groups(conn: sqlite3.Connection) -> tuple[dict[str, dict], dict[str, str]]:
    """The store's runs of KINDS grouped by kind and label (store.derived.labels.run_label: the editor and what sets
    it apart, so a run's edit orders fall in one group), and run id -> group name. A group holds `kind`, `runs`,
    `orders` (edit-order seeds), `status` (count per status), `settings` (hp.NAME and cfg.NAME -> the values its
    runs have, " / " between distinct ones; `probes` for runs that probe a case set), `metrics` (every metric its
    runs recorded) and `diagnostics` (how many of its runs stored per-edit diagnostics); `code` is the commit its
    runs ran. A knowledge or robustness group also holds `judged` and `unmeasurable`: the rephrase types its runs'
    measurability was judged on and those found unmeasurable (store.measurable.run_measurability: the unedited
    model's recall on the type, copy tasks), where the store has the recall to judge by."""
    groups: dict[str, dict] = {}
    of_run: dict[str, str] = {}
    probes_cache: dict = {}
    marks = ",".join("?" * len(KINDS))
    rows = conn.execute(f"SELECT run_id, kind, editor, hparams, config, status, code_version FROM runs "
                        f"WHERE kind IN ({marks}) ORDER BY run_id", KINDS).fetchall()
    for run_id, kind, editor, hp_text, cfg_text, status, code in rows:
        hp, cfg = json.loads(hp_text or "null") or {}, json.loads(cfg_text or "null") or {}
        name = f"{kind}: {run_label(editor, hp, cfg)}"
        of_run[run_id] = name
        g = groups.setdefault(name, {"kind": kind, "runs": 0, "orders": set(), "status": {}, "settings": {},
                                     "metrics": set(), "diagnostics": 0})
        g["runs"] += 1
        g["status"][status] = g["status"].get(status, 0) + 1
        if "order_seed" in cfg:
            g["orders"].add(int(cfg["order_seed"]))
        values = {k: v for key, val in hp.items() for k, v in _flat(f"hp.{key}", val).items()}
        values.update({k: v for key, val in cfg.items() if key not in SKIP_CONFIG
                       for k, v in _flat(f"cfg.{key}", val).items()})
        if kind in ("knowledge", "robustness") and cfg.get("case_set"):
            values["probes"] = _probes(conn, cfg["case_set"], probes_cache)
            judged = measurable.run_measurability(conn, run_id=run_id)
            if judged.height:  # the rephrase types the run could measure (its baseline's recall; no copy task)
                g.setdefault("unmeasurable", set()).update(judged.filter(~judged["measurable"])["rephrase_type"])
                g.setdefault("judged", set()).update(judged["rephrase_type"])
        if code:
            values["code"] = code  # the commit it ran (git log OLD..NEW says what changed in between)
        for k, v in values.items():
            g["settings"].setdefault(k, set()).add(v)
        g["metrics"] |= _metrics(conn, run_id)
        g["diagnostics"] += _has_diagnostics(conn, run_id)
    for g in groups.values():
        for key in ("unmeasurable", "judged"):
            if key in g:
                g[key] = sorted(g[key])
        g["orders"] = sorted(g["orders"])
        g["settings"] = {k: " / ".join(sorted(v)) for k, v in sorted(g["settings"].items())}
        g["metrics"] = sorted(g["metrics"])
    return groups, of_run


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export(conn: sqlite3.Connection, name: str, sha256: str = "") -> dict:
    """A version of a store as the comparison needs it: its findings (claim, verdict, direction, headline figure
    and the groups of the runs behind each) and its run groups (`run_groups`). `name` and `sha256` say which file."""
    groups, of_run = run_groups(conn)
    items = []
    for f in fmod.findings(conn):
        behind = sorted({of_run[r] for r in f.runs if r in of_run})
        items.append({"claim": f.claim, "verdict": f.verdict, "direction": f.direction, "value": f.value, "n": f.n,
                      "ci_low": f.ci_low, "ci_high": f.ci_high, "groups": behind})
    return {"format": FORMAT, "store": name, "sha256": sha256, "findings": items, "groups": groups}


def load(path: str | Path, name: str | None = None) -> dict:
    """A version to compare: an export (.json, `export`) as written, or a store file, exported on the fly and
    named `name` (default: the path as given)."""
    from . import Store, StoreError

    path = Path(path)
    if not path.is_file():
        raise StoreError(f"no file at {path}: name a store (.sqlite) or an export of one (.json, --export)")
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StoreError(f"{path} is not an export of a store ({exc}): write one with --export") from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise StoreError(f"{path} is not an export of format {FORMAT}: write it again with "
                             f"`python -m store.changes --store STORE --export {path}`")
        return data
    with Store.open(path, readonly=True) as st:
        return export(st.conn, name or path.as_posix(), _sha256(path))


def _figure(item: dict) -> str:
    verdict = item["verdict"] + (f" ({item['direction']})" if item.get("direction") else "")
    if item.get("value") is None:
        return verdict
    return f"{verdict}: {fmod._ci(item['value'], item.get('ci_low'), item.get('ci_high'), item.get('n'))}"


def _orders(orders: list[int]) -> str:
    return ", ".join(str(o) for o in orders) or NONE


def _runs(g: dict) -> str:
    """"3 runs (2 done, 1 interrupted)", with the edit orders where the runs have them."""
    status = ", ".join(f"{n} {s}" for s, n in sorted(g["status"].items()))
    return (f"{g['runs']} run{'s' if g['runs'] != 1 else ''} ({status})"
            + (f", edit order{'s' if len(g['orders']) != 1 else ''} {_orders(g['orders'])}" if g["orders"] else ""))


def group_changes(before: dict | None, after: dict | None) -> list[str]:
    """What a group of runs did differently from one version to the next, one phrase per difference: its runs
    (how many, their status, edit orders), each setting (NAME before → after, "—" where a version's runs did not
    record the field; the layout, then the editor's, then the probes' form), the rephrase types that became
    measurable or unmeasurable, the metrics recorded, per-edit diagnostics (none, some or all of its runs), the
    commits its runs ran. Empty when nothing differs; one phrase when the group is in one version only."""
    if before is None or after is None:
        return [("new: " if before is None else "not in this store: ") + _runs(after or before)]
    out = []
    if _runs(before) != _runs(after):
        out.append(f"{_runs(before)} → {_runs(after)}")
    rank = {"cfg": 0, "hp": 1}  # the layout, then the editor's settings, then the probes (the commit comes last)
    keys = (set(before["settings"]) | set(after["settings"])) - {"code"}
    for key in sorted(keys, key=lambda k: (rank.get(k.split(".")[0], 2), k)):
        b, a = before["settings"].get(key, NONE), after["settings"].get(key, NONE)
        if b != a:
            out.append(f"{key.split('.', 1)[-1]} {b} → {a}")
    if "judged" in before and "judged" in after:  # study A's types: which the probes now let the model answer
        both = set(before["judged"]) & set(after["judged"])
        now = sorted(both & set(before["unmeasurable"]) - set(after["unmeasurable"]))
        lost = sorted(both & set(after["unmeasurable"]) - set(before["unmeasurable"]))
        if now:
            out.append("measurable now: " + ", ".join(now))
        if lost:
            out.append("unmeasurable now: " + ", ".join(lost))
    added = sorted(set(after["metrics"]) - set(before["metrics"]))
    dropped = sorted(set(before["metrics"]) - set(after["metrics"]))
    if added:
        out.append("measures new: " + ", ".join(added))
    if dropped:
        out.append("measures no more: " + ", ".join(dropped))
    def cover(g: dict) -> str:
        return "none" if not g["diagnostics"] else "all" if g["diagnostics"] >= g["runs"] else "some"

    if cover(before) != cover(after):
        out.append(f"per-edit diagnostics in {before['diagnostics']} of {before['runs']} run(s) → "
                   f"{after['diagnostics']} of {after['runs']}")
    code = before["settings"].get("code", NONE), after["settings"].get("code", NONE)
    if code[0] != code[1]:
        out.append(f"code {code[0]} → {code[1]}")
    return out


def compare(before: dict, after: dict) -> tuple[list[dict], list[tuple[str, list[str]]]]:
    """One row per claim of `after` (claim; previous and now: verdict and headline figure; runs: each run group
    behind it in either version, marked new, not in this store, changed or as before), and what each run group of
    either version did differently (`group_changes`): those the claims name first, in that order, then the rest."""
    prev = {f["claim"]: f for f in before["findings"]}
    rows: list[dict] = []
    named: list[str] = []
    for f in after["findings"]:
        p = prev.get(f["claim"])
        behind = sorted(set(f["groups"]) | set(p["groups"] if p else ()))
        named += [g for g in behind if g not in named]
        marks = []
        for g in behind:
            diff = group_changes(before["groups"].get(g), after["groups"].get(g))
            marks.append(f"{g}" + (" (new)" if g not in before["groups"] else " (not in this store)"
                                   if g not in after["groups"] else " (changed)" if diff else " (as before)"))
        rows.append({"claim": f["claim"], "previous": _figure(p) if p else "not in that version",
                     "now": _figure(f), "runs": "; ".join(marks) or None})
    rest = sorted((set(before["groups"]) | set(after["groups"])) - set(named))  # e.g. knowledge runs: no claim names
    return rows, [(g, group_changes(before["groups"].get(g), after["groups"].get(g))) for g in named + rest]


def markdown(before: dict, after: dict, store: str, previous: str, markers: str = "changes") -> str:
    """A README block: a table of each claim's verdict and headline figure in the previous version and in this
    one, with the run groups behind it, then what each of those groups did differently (`compare`)."""
    which = "" if markers == "changes" else f" --markers {markers}"
    lines = [f"Generated from the two stores by `python -m store.changes --store {store} --previous {previous}"
             f"{which} --markdown` (store/changes.py; `--write-readme README.md` rewrites this block and a test keeps "
             f"it equal to the output). Previous: `{before['store']}` as it was"
             + (f" (sha256 {before['sha256'][:12]})" if before.get("sha256") else "") + "; this store: "
             f"`{after['store']}`. A figure is the claim's headline number (the first of its EditScope text in the "
             "findings), with its 95% CI and n; a run group is a kind of run and its label, its edit orders together; "
             f"\"{NONE}\" stands for a field a version's runs did not record.",
             "", "| Claim | Previous | This store | Runs behind it |", "| --- | --- | --- | --- |"]
    rows, diffs = compare(before, after)
    lines += [f"| {r['claim']} | {r['previous']} | {r['now']} | {r['runs'] or NONE} |" for r in rows]
    lines += ["", "What each run group did differently (previous → this store; those behind a claim first):", ""]
    lines += [f"- **{g}**: " + ("; ".join(diff) if diff else "the same settings and measures") + "."
              for g, diff in diffs]
    return "\n".join(lines) + "\n"


def markers_of(name: str) -> tuple[str, str]:
    """The markers of this module's README block `name` (one of MARKERS; store.findings.markers_of)."""
    return fmod.markers_of(name, MARKERS)


def write_readme(readme, block: str, markers: str = "changes") -> None:
    """Replace the README's block `markers` (one of MARKERS) with `block` (store.findings.write_readme)."""
    fmod.write_readme(readme, block, markers, MARKERS)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from . import Store, StoreError, default_store_path

    parser = argparse.ArgumentParser(prog="python -m store.changes", description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=None, help="the store to read (read-only; default: the shipped one)")
    parser.add_argument("--previous", default=None,
                        help="the previous version: a store file, or an export of one (.json, --export)")
    parser.add_argument("--export", metavar="JSON", default=None,
                        help="write the store's findings and run settings to this file, to compare with later")
    parser.add_argument("--markdown", action="store_true", help="print the README block")
    parser.add_argument("--write-readme", metavar="README", default=None,
                        help="replace the block between this README's markers with the new one")
    parser.add_argument("--markers", choices=MARKERS, default="changes",
                        help="which README block: the shipped store's (changes) or the rebuild's (rebuild-changes)")
    args = parser.parse_args(argv)
    path = Path(args.store or default_store_path())
    name = path.as_posix() if args.store else "store/results.sqlite"
    if args.export is None and args.previous is None:
        parser.error("name the previous version with --previous (or write an export with --export)")
    try:
        with Store.open(path, readonly=True) as st:
            after = export(st.conn, name, _sha256(path))
        if args.export:
            Path(args.export).write_text(json.dumps(after, indent=1, sort_keys=True) + "\n", encoding="utf-8")
            print(f"wrote the findings and run settings of {name} to {args.export}")
        if args.previous is None:
            return 0
        before = load(args.previous)
    except (StoreError, OSError) as exc:
        parser.exit(2, f"{exc}\n")
    block = markdown(before, after, name, Path(args.previous).as_posix(), args.markers)
    if args.write_readme:
        try:
            write_readme(args.write_readme, block, args.markers)
        except (OSError, ValueError) as exc:
            parser.exit(2, f"{args.write_readme}: {exc}\n")
    if args.markdown:
        print(block, end="")
    elif not args.write_readme:
        for item in after["findings"]:
            p = next((f for f in before["findings"] if f["claim"] == item["claim"]), None)
            print(f"{item['claim']}  {_figure(p) if p else 'not in that version'}  →  {_figure(item)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

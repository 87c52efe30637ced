"""store.conventions: one declared home for run-level rows, scopes, the held rule and series labels, importable
without anything heavy, and the only place they are declared."""

import ast
import subprocess
import sys
from pathlib import Path

from store import conventions

ROOT = Path(__file__).resolve().parents[1]


def test_importing_the_conventions_in_a_fresh_process_loads_nothing_heavy():
    code = ("import sys, store.conventions\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'polars', 'numpy', 'scipy', 'streamlit', 'compute', 'dashboard')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[]"]


def test_an_edit_holds_from_half_on():
    assert conventions.holds(0.5) and conventions.holds(1.0) and conventions.holds(1)
    assert not conventions.holds(0.4999) and not conventions.holds(0.0) and not conventions.holds(float("nan"))
    assert conventions.HELD == 0.5


def test_every_series_is_on_a_declared_scope_and_the_old_names_still_import():
    from store.derived import RUN_LEVEL, SEQUENTIAL_SERIES

    assert RUN_LEVEL is conventions.RUN_LEVEL == "*"
    assert SEQUENTIAL_SERIES is conventions.SEQUENTIAL_SERIES
    assert {scope for scope, _ in SEQUENTIAL_SERIES} <= set(conventions.SEQUENTIAL_SCOPES)
    assert len(set(conventions.SCOPES)) == len(conventions.SCOPES) == 7 and conventions.BATCH in conventions.SCOPES


def _modules():
    for folder in ("compute", "store", "dashboard"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield path, ast.parse(path.read_text(), filename=str(path))


def test_no_other_module_declares_the_conventions_again():
    declared = []
    for path, tree in _modules():
        if path == ROOT / "store" / "conventions.py":
            continue
        for node in ast.walk(tree):
            targets = (node.targets if isinstance(node, ast.Assign)
                       else [node.target] if isinstance(node, ast.AnnAssign) and node.value is not None else [])
            for t in targets:
                if isinstance(t, ast.Name) and t.id in ("RUN_LEVEL", "SEQUENTIAL_SERIES", "HELD"):
                    declared.append(f"{path.relative_to(ROOT)}: {t.id}")
    assert declared == []


def test_every_scope_the_sequential_runner_writes_is_declared():
    tree = ast.parse((ROOT / "compute" / "experiments" / "sequential.py").read_text())
    written = set()
    for node in ast.walk(tree):
        # _run_level(run_id, count, SCOPE, values) and _panel_check_row's `return SCOPE, {...}`
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "_run_level" and len(node.args) >= 3:
            if isinstance(node.args[2], ast.Constant):
                written.add(node.args[2].value)
        if isinstance(node, ast.FunctionDef) and node.name == "_panel_check_row":
            for ret in ast.walk(node):
                if isinstance(ret, ast.Return) and isinstance(ret.value, ast.Tuple):
                    written.add(ret.value.elts[0].value)
    assert written == set(conventions.SEQUENTIAL_SCOPES)

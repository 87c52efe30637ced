"""store.derived is a package split by study; `store.derived.<name>` reaches every public name of its modules (the
dashboard's data layer looks names up there by string), and `__all__` lists exactly those."""

import ast
import importlib
import pkgutil


def _defined(mod) -> set[str]:
    """Public names a module defines itself (def, class or assignment at its top level)."""
    tree = ast.parse(open(mod.__file__).read())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if not n.startswith("_")}


def test_the_package_re_exports_every_public_name_of_its_modules():
    import store.derived as derived

    modules = [importlib.import_module(f"store.derived.{m.name}") for m in pkgutil.iter_modules(derived.__path__)]
    assert {m.__name__.rsplit(".", 1)[1] for m in modules} >= {"robustness", "sequential", "verdicts", "abilities",
                                                               "sweeps"}
    everything = set()
    for mod in modules:
        own = _defined(mod)
        assert not own & everything, f"{mod.__name__} defines a name another module does too"
        everything |= own
        missing = sorted(n for n in own if getattr(derived, n, None) is not getattr(mod, n))
        assert missing == [], f"store.derived does not re-export {missing} of {mod.__name__}"
    conventions = {"RUN_LEVEL", "SEQUENTIAL_SERIES", "DERIVED_EVENT_KINDS", "HELD_ACC"}
    assert set(derived.__all__) == everything | conventions
    assert derived.disabling_edit_events.__module__ == "store.derived.verdicts"
    assert derived.robustness_summary.__module__ == "store.derived.robustness"

"""The apps depend one way: a new upward, sideways or hidden import fails here.

Order (lower may not import higher, nor an app its sibling on the same floor):

    {shared modules (auditapp/*.py: appendonly, errors, env, textcheck, ...), engine}
    accounts -> approvals -> registry -> decisions -> {explain, reviews, monitoring}
    -> {reports, dossier, serving} -> web -> demo

Approvals (four-eyes) sits below every app whose changes it gates: those apps register
their kinds of change with it (approvals/changes.py), so it imports none of them.

The engine is the pure part of explain/ (ENGINE below: the schema, the features, the ranking,
the SHAP and LIME backends and their lookup, the counterfactual search): it imports nothing
of auditapp, Django or Celery, so that it runs, and is tested, without the project
(tests/explain/test_engine_import.py).

`auditapp.settings`, `celery`, `urls` and `wsgi` wire the project together and
may import anything. An import of a project module inside a function (not at a
module's top level) counts as a violation too: that is how cycles hide
(AppConfig.ready() aside, where Django wants signal handlers imported).

The imports that break the order today are listed in ARCHITECTURE_DEBT below.
The test fails on any violation not listed (do not add one: fix the import)
and on a listed one that is gone (delete its line): the list only shrinks.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOORS = {
    "shared": 0,
    "engine": 0,
    "accounts": 1,
    "approvals": 2,
    "registry": 3,
    "decisions": 4,
    "explain": 5,
    "reviews": 5,
    "monitoring": 5,
    "reports": 6,
    "dossier": 6,
    "serving": 6,
    "web": 7,
    "demo": 8,
    "project": 9,
}
PROJECT = {"settings", "celery", "urls", "wsgi", "test_settings"}
ENGINE = {
    "engine",
    "features",
    "frames",
    "schema",
    "packing",
    "ranking",
    "backends",
    "shap_backend",
    "lime_backend",
    "counterfactual",
}
NOT_IN_ENGINE = ("auditapp", "django", "celery")


def app_of(module: str) -> str | None:
    """The app a dotted module belongs to; None if it is not the project's."""
    parts = module.split(".")
    if parts[0] == "explain":
        return "engine" if len(parts) > 1 and parts[1] in ENGINE else "explain"
    if parts[0] != "auditapp":
        return None
    if len(parts) == 1:
        return "project"  # auditapp/__init__.py loads the Celery app, as Celery's Django setup does
    if parts[1] in FLOORS:
        return parts[1]
    return "project" if parts[1] in PROJECT else "shared"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path):
    """(imported module, hidden in a function?) for each project import of a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = (
        module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(path)
    )

    def visit(node, hidden: bool):
        for child in ast.iter_child_nodes(node):
            function = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            # AppConfig.ready() is where Django wants signal handlers imported
            inner = hidden or (function and not (path.name == "apps.py" and child.name == "ready"))
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                continue  # annotations only: no import at run time
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name, hidden
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in child.names:
                    yield f"{base}.{alias.name}" if app_of(base) else base, hidden
            yield from visit(child, inner)

    yield from visit(tree, False)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def violations() -> set[str]:
    found = set()
    for path in sorted([*ROOT.glob("auditapp/**/*.py"), *ROOT.glob("explain/**/*.py")]):
        if "migrations" in path.parts:
            continue  # migrations are history: they import what they need of their time
        importer = module_name(path)
        here = app_of(importer)
        for imported, hidden in imports(path):
            there = app_of(imported)
            if there is None or there == here:
                if hidden and there == here and here not in ("project",):
                    found.add(f"{importer} -> {_trim(imported)} (hidden)")
                continue
            if here == "project":
                continue
            if FLOORS[there] > FLOORS[here]:
                found.add(f"{importer} -> {_trim(imported)} (upward)")
            elif FLOORS[there] == FLOORS[here]:
                found.add(f"{importer} -> {_trim(imported)} (sideways)")
            elif hidden:
                found.add(f"{importer} -> {_trim(imported)} (hidden)")
    return found


def _trim(module: str) -> str:
    """A module, not the name imported from it: auditapp.reviews.rules.reason -> ...rules."""
    path = ROOT.joinpath(*module.split("."))
    while module.count(".") and not (path.with_suffix(".py").exists() or path.is_dir()):
        module, path = module.rsplit(".", 1)[0], path.parent
    return module


ARCHITECTURE_DEBT: tuple[str, ...] = ()


def test_apps_depend_one_way():
    debt = set(ARCHITECTURE_DEBT)
    found = violations()

    new = sorted(found - debt)
    gone = sorted(debt - found)
    assert not new, "imports against the apps' order (fix them, do not list them):\n" + "\n".join(
        new
    )
    assert not gone, "fixed: delete these lines from ARCHITECTURE_DEBT:\n" + "\n".join(gone)


def engine_violations() -> set[str]:
    """Imports of auditapp, Django or Celery by an engine module, top-level or hidden."""
    return {
        f"{module_name(path)} -> {imported}"
        for path in sorted(ROOT.glob("explain/*.py"))
        if app_of(module_name(path)) == "engine"
        for imported, _ in imports(path)
        if imported.split(".")[0] in NOT_IN_ENGINE
    }


def test_the_engine_imports_nothing_of_the_project_django_or_celery():
    """No debt here: one such import and the engine no longer runs on its own."""
    found = sorted(engine_violations())
    assert not found, "the engine must not import these:\n" + "\n".join(found)


def test_every_engine_module_exists():
    """A renamed module would silently leave the engine's floor (and its rule)."""
    assert {p.stem for p in ROOT.glob("explain/*.py")} >= ENGINE


def test_the_checker_sees_each_kind_of_violation(tmp_path, monkeypatch):
    """The walk itself can fail: an upward, a sideways and a hidden import are each found."""
    package = tmp_path / "auditapp"
    for app in ("accounts", "reviews", "explain_like"):
        (package / app).mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "hashing.py").write_text("")
    for app, module in (("reports", "services"), ("monitoring", "x")):
        (package / app).mkdir()
        (package / app / f"{module}.py").write_text("")
    (package / "accounts" / "__init__.py").write_text("")
    (package / "accounts" / "up.py").write_text("from auditapp.reports import services\n")
    (package / "reviews" / "__init__.py").write_text("")
    (package / "reviews" / "side.py").write_text(
        "def f():\n    from auditapp.accounts import roles\n\nfrom auditapp.monitoring import x\n"
    )
    (tmp_path / "explain").mkdir()
    (tmp_path / "explain" / "features.py").write_text(
        "import django\n\nfrom auditapp import hashing\n"
    )
    monkeypatch.setitem(globals(), "ROOT", tmp_path)

    assert violations() == {
        "auditapp.accounts.up -> auditapp.reports.services (upward)",
        "auditapp.reviews.side -> auditapp.accounts (hidden)",  # (roles.py does not exist)
        "auditapp.reviews.side -> auditapp.monitoring.x (sideways)",
        "explain.features -> auditapp.hashing (sideways)",  # a shared module, on its floor
    }
    assert engine_violations() == {
        "explain.features -> django",
        "explain.features -> auditapp.hashing",
    }

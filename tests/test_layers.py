"""The apps are layers and imports only go down: inference <- annotation <- training.

The demo package stands on top of all of them, and product code never imports it.
Every import statement counts, also those inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("inference", "annotation", "training", "config")


def imported_packages(package: str) -> dict[str, set[str]]:
    """Return {module file: top-level packages it imports} for every module of `package`."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


def offenders(package: str, forbidden: set[str]) -> list[str]:
    """Return "module imports package" for each import of `forbidden` from `package`."""
    return [
        f"{module} imports {name}"
        for module, names in imported_packages(package).items()
        for name in sorted(names & forbidden)
    ]


@pytest.mark.parametrize("package", PRODUCT)
def test_product_code_never_imports_the_demo(package):
    assert offenders(package, {"demo"}) == []


@pytest.mark.parametrize(
    ("package", "above"),
    [("inference", {"annotation", "training"}), ("annotation", {"training"})],
)
def test_a_layer_never_imports_a_layer_above_it(package, above):
    assert offenders(package, above) == []


def test_the_walk_sees_imports_inside_functions(tmp_path, monkeypatch):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text(
        "def f():\n    from demo.world import judge\n    import training.rounds\n"
    )
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    assert offenders("pkg", {"demo", "training"}) == [
        "pkg/m.py imports demo",
        "pkg/m.py imports training",
    ]

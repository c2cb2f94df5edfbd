"""The tree's shape: functions short enough to read, unless they say why not."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("annotation", "inference", "training", "config", "demo")
MAX_LINES = 80
# A long function keeps its length only with a reason in its docstring, in a
# sentence that starts with these words.
REASON = "Long on purpose"


def product_functions() -> list[tuple[str, ast.FunctionDef]]:
    found = []
    for package in PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    found.append((str(path.relative_to(ROOT)), node))
    return found


def test_the_walk_sees_the_product_code():
    names = {node.name for _, node in product_functions()}
    assert {"freeze_snapshot", "submit_ranking", "run_ppo"} <= names


def test_no_function_is_over_80_lines_without_a_reason_in_its_docstring():
    long_ones = [
        f"{path}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path, node in product_functions()
        if node.end_lineno - node.lineno + 1 > MAX_LINES
        and REASON not in (ast.get_docstring(node) or "")
    ]
    assert long_ones == [], (
        f"split these, or say why they are long in a docstring sentence starting "
        f"{REASON!r}: {long_ones}"
    )


@pytest.mark.parametrize("length, reason, ok", [(81, "", False), (81, REASON, True)])
def test_the_rule_catches_a_long_function_without_a_reason(length, reason, ok):
    body = "\n".join(f"    x{i} = {i}" for i in range(length - 2))
    source = f'def f():\n    """{reason} it must be."""\n{body}\n'
    node = ast.parse(source).body[0]
    is_long = node.end_lineno - node.lineno + 1 > MAX_LINES
    assert (not is_long or REASON in ast.get_docstring(node)) is ok

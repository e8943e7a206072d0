"""Layers point down: an import scan of every package (issue: one owner per concern)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# What each package may not import (see the README's folder map).
FORBIDDEN = {
    "fanout": {"fanout_cli", "splitter", "writer", "dlq_replayer"},
    "splitter": {"fanout_cli", "writer", "dlq_replayer"},
    "writer": {"fanout_cli", "splitter", "dlq_replayer"},
    "fanout_cli": {"dlq_replayer"},
    "dlq_replayer": {"splitter", "writer"},
}


def imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.lineno, node.module))
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_package_imports_what_sits_above_or_beside_it(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no {package}/ package"
    wrong = [f"{path.relative_to(ROOT)}:{line} imports {module}"
             for path in files for line, module in imports(path)
             if module.split(".")[0] in FORBIDDEN[package]]
    assert wrong == []


def test_the_scan_sees_an_import_that_points_up(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom splitter.handler import lambda_handler\n")
    assert imports(bad) == [(1, "os"), (2, "splitter.handler")]

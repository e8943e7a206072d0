"""The ledger has one door: no module of the core or the Lambdas but fanout/ledger.py names
an attribute of the ledger table (its items' attributes, as its requests write them)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LEDGER = ROOT / "fanout" / "ledger.py"
EXPRESSION_WORDS = {"attribute_exists", "attribute_not_exists", "begins_with"}


def strings(path: Path) -> list[tuple[int, str]]:
    return [(node.lineno, node.value) for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def ledger_attributes() -> set[str]:
    """The attribute names the ledger's requests use: the keys of the items it puts and the
    names in its update and condition expressions (the ones with an underscore, which no
    other module has a reason to spell), plus the table's key."""
    names = {"pk", "sk"}
    tree = ast.parse(LEDGER.read_text())
    docstrings = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
    for node in ast.walk(tree):
        if id(node) in docstrings:
            continue
        if isinstance(node, ast.Dict):
            names |= {k.value for k in node.keys if isinstance(k, ast.Constant)
                      and isinstance(k.value, str) and re.fullmatch(r"[a-z]+_[a-z_]+", k.value)}
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and re.search(
                r"\b(SET|ADD|REMOVE)\b|attribute_|#st = ", node.value):
            names |= set(re.findall(r"\b[a-z]+_[a-z_]+\b", node.value)) - EXPRESSION_WORDS
    return names


def test_the_scan_finds_the_ledgers_attributes() -> None:
    found = ledger_attributes()
    assert {"split_owner", "split_lease_until", "ledger_format", "messages_reported",
            "ticket_at", "counted_through", "summary_published", "parallel_ranges",
            "pk", "sk"} <= found


def test_only_the_ledger_module_names_the_ledger_tables_attributes() -> None:
    attributes = ledger_attributes()
    files = [p for package in ("fanout", "splitter", "writer")
             for p in sorted((ROOT / package).rglob("*.py")) if p != LEDGER]
    named = [f"{path.relative_to(ROOT)}:{line} names {text!r}"
             for path in files for line, text in strings(path) if text in attributes
             # the mapping spec's own key names (an items table's pk/sk), not the ledger's
             and not (path.name == "mapping.py" and text in ("pk", "sk"))]
    assert named == []

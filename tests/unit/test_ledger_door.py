"""The ledger has one door: no module of the core or the Lambdas outside fanout/ledger/ names
an attribute of the ledger table (its items' attributes, as its requests write them); the
rest of fanout imports the package, never its modules; and inside it, a module imports
only from the floors below its own."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LEDGER = ROOT / "fanout" / "ledger"
EXPRESSION_WORDS = {"attribute_exists", "attribute_not_exists", "begins_with"}


def strings(path: Path) -> list[tuple[int, str]]:
    return [(node.lineno, node.value) for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def ledger_attributes() -> set[str]:
    """The attribute names the ledger's requests use: the keys of the items it puts and the
    names in its update and condition expressions (the ones with an underscore, which no
    other module has a reason to spell), plus the table's key."""
    names = {"pk", "sk"}
    trees = [ast.parse(path.read_text()) for path in sorted(LEDGER.glob("*.py"))]
    docstrings = {id(node.value) for tree in trees for node in ast.walk(tree)
                  if isinstance(node, ast.Expr)}
    for node in (node for tree in trees for node in ast.walk(tree)):
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
             for p in sorted((ROOT / package).rglob("*.py"))
             if LEDGER not in p.parents and ".assets" not in p.parts]
    named = [f"{path.relative_to(ROOT)}:{line} names {text!r}"
             for path in files for line, text in strings(path) if text in attributes
             # the mapping spec's own key names (an items table's pk/sk), not the ledger's
             and not (path.name == "mapping.py" and text in ("pk", "sk"))]
    assert named == []


# The floors, bottom up (see the door's docstring): a module imports the ledger's modules of
# lower floors only.
FLOORS = [{"layout"}, {"legacy", "log"}, {"split", "tally", "folding", "steps", "cancel"},
          {"complete", "reads"}, {"reconciler"}, {"__init__"}]


def ledger_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "fanout.ledger":
                found |= {alias.name for alias in node.names}
            elif node.module.startswith("fanout.ledger."):
                found.add(node.module.rsplit(".", 1)[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.rsplit(".", 1)[1] for a in node.names
                      if a.name.startswith("fanout.ledger.")}
    return found


def test_every_ledger_module_sits_on_a_floor_and_imports_only_lower_floors() -> None:
    floor_of = {name: level for level, names in enumerate(FLOORS) for name in names}
    modules = {p.stem for p in LEDGER.glob("*.py")}
    assert modules == set(floor_of)
    wrong = [f"{name} imports {other}" for name in sorted(modules)
             for other in sorted(ledger_imports(LEDGER / f"{name}.py"))
             if other in floor_of and floor_of[other] >= floor_of[name]]
    assert wrong == []


def test_the_rest_of_fanout_enters_the_ledger_by_its_door() -> None:
    files = [p for package in ("fanout", "splitter", "writer", "dlq_replayer", "fanout_cli", "infra")
             for p in sorted((ROOT / package).rglob("*.py"))
             if LEDGER not in p.parents and ".assets" not in p.parts]
    inside = [f"{path.relative_to(ROOT)} imports fanout.ledger.{name}"
              for path in files for name in sorted(ledger_imports(path))
              if (LEDGER / f"{name}.py").exists()]
    assert inside == []

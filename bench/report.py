"""How the bench prints: one markdown table of (metric, measured, baseline, ratio, goal)
rows, and notes under it. Shared by `python -m bench` and the modules that also run alone."""

from __future__ import annotations

import sys
from collections.abc import Callable

Row = tuple[str, str, str, str, str]


def goal(ok: bool, text: str) -> str:
    return f"{text} ({'met' if ok else 'MISSED'})"


def table(rows: list[Row]) -> str:
    head = ("metric", "measured", "baseline", "ratio", "goal")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def print_alone(add_rows: Callable[[list[Row], list[str], bool], None]) -> None:
    """A bench module's own rows and notes (`python -m bench.X [--quick]`)."""
    rows: list[Row] = []
    notes: list[str] = []
    add_rows(rows, notes, "--quick" in sys.argv)
    print(table(rows) + "\n\n" + "\n".join(f"- {x}" for x in notes))

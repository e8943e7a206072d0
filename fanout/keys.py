"""Key templates: how a DynamoDB key value is built from a CSV row.

A template is either a bare column name (`account`) or text that mixes literals and
`{column}` references (`A_{DOL Vehicle ID}`, `{carrier}#{flight}`); `{_line}` is the
row's source line number. `{{` and `}}` are literal braces.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass

LINE_FIELD = "_line"


class TemplateError(ValueError):
    """A key template that cannot be used with this file."""


@dataclass(frozen=True)
class KeyTemplate:
    text: str
    # (literal, column-or-None) pairs; column None means the part is only a literal.
    parts: tuple[tuple[str, str | None], ...]

    @classmethod
    def parse(cls, text: str) -> KeyTemplate:
        if not text or not text.strip():
            raise TemplateError("a key template must not be empty")
        if "{" not in text and "}" not in text:
            return cls(text, (("", text),))
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as exc:
            raise TemplateError(f"bad key template {text!r}: {exc}") from exc
        parts: list[tuple[str, str | None]] = []
        for literal, field_name, spec, conversion in parsed:
            if spec or conversion:
                # Format specs are not supported; put the ':' back so the column name is whole.
                raise TemplateError(
                    f"bad key template {text!r}: format specs and conversions are not supported"
                )
            if field_name == "":
                raise TemplateError(f"bad key template {text!r}: empty {{}} reference")
            parts.append((literal, field_name))
        return cls(text, tuple(parts))

    @property
    def columns(self) -> list[str]:
        return [c for _, c in self.parts if c is not None and c != LINE_FIELD]

    @property
    def is_bare_column(self) -> bool:
        return len(self.parts) == 1 and self.parts[0][0] == "" and self.parts[0][1] == self.text

    def bind(self, header: Sequence[str]) -> BoundTemplate:
        """Resolve column names to positions; fail naming the missing column."""
        index = {name: i for i, name in enumerate(header)}
        bound: list[tuple[str, int | None]] = []
        for literal, column in self.parts:
            if column is None:
                bound.append((literal, None))
            elif column == LINE_FIELD:
                bound.append((literal, -1))
            elif column in index:
                bound.append((literal, index[column]))
            else:
                raise TemplateError(
                    f"key template {self.text!r} names column {column!r}, "
                    f"which is not in the header ({', '.join(header)})"
                )
        return BoundTemplate(self.text, tuple(bound))


@dataclass(frozen=True)
class BoundTemplate:
    text: str
    parts: tuple[tuple[str, int | None], ...]

    def render(self, row: Sequence[str], line: int) -> tuple[str, list[int]]:
        """The key text for a row, and the positions of the referenced columns that were empty."""
        out: list[str] = []
        empty: list[int] = []
        for literal, position in self.parts:
            out.append(literal)
            if position is None:
                continue
            if position == -1:
                out.append(str(line))
                continue
            value = row[position]
            if value == "":
                empty.append(position)
            out.append(value)
        return "".join(out), empty

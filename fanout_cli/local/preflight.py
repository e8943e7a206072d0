"""Before anything starts: how a local file is stored (as the splitter will decide it) and
whether its header fits the spec, so a usage error costs no start-up (`fanout ingest`,
`fanout check`)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from fanout import dialect
from fanout.keys import TemplateError
from fanout.mapping import Spec


class UsageError(ValueError):
    """The file and the spec or flags do not fit (a key column not in the header, ...):
    found before anything starts; `fanout ingest` exits 2."""


class InputFileError(ValueError):
    """The file cannot be read as it claims to be (bad gzip, ...): `fanout ingest` exits 1."""


def preflight(path: Path, spec: Spec) -> dialect.Dialect:
    """Decide how the file is stored, as the splitter will, and check its header against
    the spec, before the emulator starts: a usage error costs no start-up."""
    with open(path, "rb") as f:
        head = f.read(dialect.HEAD_BYTES)
        whole = not f.read(1)
    try:
        found = dialect.detect(head, encoding=spec.set_encoding(), delimiter=spec.set_delimiter())
    except dialect.SettingConflict as exc:
        raise UsageError(f"{path}: {exc}") from None
    except dialect.DialectError as exc:
        raise InputFileError(f"{path}: {exc}") from None
    header = dialect.header_of(head, found, whole=whole)
    if header is not None:
        try:
            replace(spec, delimiter=found.delimiter).bind(header)
        except TemplateError as exc:
            raise UsageError(f"{path}: header: {exc}"
                             f"{dialect.hint_one_column(header, found.delimiter)}") from None
    return found

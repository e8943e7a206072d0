"""The manual's generated parts, filled in by mkdocs at build time (mkdocs.yml `hooks`).

* `<!-- generated: cli-reference -->` becomes the `--help` of every command of `fanout` and
  `dlq-replayer`, rendered from their argparse parsers: the reference cannot differ from
  what the commands print.
* `{{ code: MODULE:ATTR.ATTR }}` becomes that value of the code (`{{ code:
  fanout.settings:DEFAULT_CONFIG.batch_size }}` is `1,000`), so a number quoted in the
  manual is the code's. `!mib` after the path prints bytes in MiB. An unknown name fails
  the build. (A module is written in lower case: `MODULE:NAME` stays as written.)

tests/docs/ imports this module to check the README, which GitHub shows unbuilt.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


def _import(module: str) -> Any:
    """The module, from the repository (the CDK app's package, `fanout_stack`, lives in
    infra/, as `cdk` runs it). At import time, not load time: mkdocs restores sys.path
    after it loads a hook."""
    for folder in (REPO_ROOT, REPO_ROOT / "infra"):
        if str(folder) not in sys.path:
            sys.path.append(str(folder))
    return importlib.import_module(module)

CLI_MARKER = "<!-- generated: cli-reference -->"
VALUE = re.compile(r"\{\{\s*code:\s*([a-z_][a-z0-9_.]*):([\w.]+)\s*(?:!(\w+))?\s*\}\}")
# The width the reference is rendered at (argparse reads COLUMNS).
HELP_COLUMNS = "96"
COMMANDS = (("fanout", "fanout_cli.cli"), ("dlq-replayer", "dlq_replayer.cli"))


def parsers() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every command and subcommand of the tools, by its full name, parents first."""
    for _, module in COMMANDS:
        yield from _walk(_import(module).build_parser())


def _walk(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield parser.prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases once
                yield from _walk(sub)


def help_text(parser: argparse.ArgumentParser) -> str:
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_COLUMNS
    try:
        return parser.format_help().rstrip()
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


def cli_reference() -> str:
    parts = []
    for name, parser in parsers():
        level = "##" if " " not in name else "###"
        parts.append(f"{level} `{name}`\n\n```text\n{help_text(parser)}\n```\n")
    return "\n".join(parts)


def value(module: str, path: str, fmt: str | None = None) -> str:
    found: Any = _import(module)
    for name in path.split("."):
        found = getattr(found, name)
    if fmt == "mib":
        return f"{found / (1 << 20):g} MiB"
    if fmt is not None:
        raise ValueError(f"unknown format !{fmt} for {module}:{path}")
    if isinstance(found, bool) or not isinstance(found, int | float):
        return str(found)
    return f"{found:,}" if isinstance(found, int) else f"{found:,g}"


def render(markdown: str) -> str:
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_reference())
    return VALUE.sub(lambda m: value(m.group(1), m.group(2), m.group(3)), markdown)


def on_page_markdown(markdown: str, **_: Any) -> str:
    return render(markdown)

"""Every shell example marked `<!-- run -->` in README.md and docs/ runs here.

A page's runnable blocks run in order, in one temporary folder, each with `bash -euo
pipefail` and the virtualenv's commands first on PATH, on the embedded runtime (no
AWS_ENDPOINT_URL, no credentials: nothing leaves this machine). A block followed by
`<!-- output of the block above -->` and a text block must print those lines, in order;
numbers and ids may differ in their digits only where the page shows a timing, so each
shown line is matched with its digits free and its words fixed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs.test_docs import FENCE, PAGES, SHELL, blocks

OUTPUT_MARK = "<!-- output of the block above -->"


def runnable(page: Path) -> list[tuple[int, str, str | None]]:
    """(line, commands, shown output or None) of each runnable block of a page."""
    text = page.read_text()
    found = []
    for lang, body, marker, line in blocks(page):
        if lang in SHELL and marker == "run":
            end = text.index(body) + len(body) + 4
            rest = text[end:].lstrip("\n")
            shown = None
            if rest.startswith(OUTPUT_MARK) or re.match(r"[^\n]*\n\n?" + re.escape(OUTPUT_MARK), rest):
                after = rest[rest.index(OUTPUT_MARK) + len(OUTPUT_MARK):]
                match = FENCE.search(after)
                assert match is not None, f"{page.name}:{line}: {OUTPUT_MARK} without a block"
                shown = match.group(2)
            found.append((line, body, shown))
    return found


def pattern(line: str) -> re.Pattern[str]:
    """A shown output line as a pattern: words fixed, digits free, spaces any width."""
    parts = re.split(r"(\d[\d,.]*|\s+)", line.strip())
    regex = "".join(r"\d[\d,.]*" if re.fullmatch(r"\d[\d,.]*", p) else r"\s+" if p.isspace()
                    else re.escape(p) for p in parts if p)
    return re.compile(regex)


PAGES_WITH_EXAMPLES = [p for p in PAGES if runnable(p)]


def test_the_manual_has_runnable_examples():
    assert sum(len(runnable(p)) for p in PAGES) >= 2


@pytest.mark.parametrize("page", PAGES_WITH_EXAMPLES, ids=[p.name for p in PAGES_WITH_EXAMPLES])
def test_runnable_examples_run_and_print_what_the_page_shows(page: Path, tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for line, commands, shown in runnable(page):
        ran = subprocess.run(["bash", "-euo", "pipefail", "-c", commands], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
        assert ran.returncode == 0, f"{page.name}:{line} exited {ran.returncode}:\n{ran.stderr[-2000:]}"
        if shown is None:
            continue
        printed = ran.stdout.splitlines()
        at = 0
        for expected in (s for s in shown.splitlines() if s.strip()):
            wanted = pattern(expected)
            while at < len(printed) and not wanted.fullmatch(printed[at].strip()):
                at += 1
            assert at < len(printed), (f"{page.name}:{line}: the page shows {expected!r}, which the "
                                       f"commands did not print (in order):\n{ran.stdout[-3000:]}")
            at += 1

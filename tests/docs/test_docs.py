"""The manual is checked, not trusted: README.md and docs/ against the code.

* the site builds with `mkdocs build --strict` (a broken link, anchor or page fails);
* every shell block is marked `<!-- run -->` (tests/docs/test_examples.py runs it),
  `<!-- run: deployed -->` (a deployed test runs it against `fanout serve`) or
  `<!-- not run: why -->`;
* every `fanout` / `dlq-replayer` command, subcommand and flag the manual shows exists in
  the parsers; every `make` target in the Makefile; every `-c KEY=` context option in the
  stack's config, and the deploy page's table lists exactly those;
* numbers the README quotes are the code's (the manual's own come from the code at build
  time: docs/hooks.py);
* the alarms table is the stack's alarms; the folder map names every module; files and
  functions the manual points to exist; nothing points outside the repository.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL = ("bash", "sh", "shell", "console")
FENCE = re.compile(r"^[ \t]*```(\w*)[^\n]*\n(.*?)^[ \t]*```", re.S | re.M)
MARK = re.compile(r"<!--\s*(run: deployed|run|not run:\s*\S[^>]*?)\s*-->\s*$")


def hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fanout_docs_hooks", REPO / "docs" / "hooks.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


HOOKS = hooks()


def blocks(page: Path) -> list[tuple[str, str, str | None, int]]:
    """(language, body, marker, line) of every fenced block of a page."""
    text = page.read_text()
    out = []
    for match in FENCE.finditer(text):
        before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = MARK.search(before)
        out.append((match.group(1), match.group(2), marker.group(1) if marker else None,
                    text.count("\n", 0, match.start()) + 1))
    return out


def shell_lines(body: str) -> list[str]:
    """The commands of a shell block: continuations joined, comments dropped."""
    joined = body.replace("\\\n", " ")
    return [line.split(" #")[0].strip() for line in joined.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_the_site_builds_strictly(tmp_path: Path):
    env = os.environ | {"NO_MKDOCS_2_WARNING": "1", "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "1",
                        "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1"}
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                            str(tmp_path / "site")], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    reference = (tmp_path / "site" / "cli" / "index.html").read_text()
    # The generated reference holds every command's help
    for name, _ in HOOKS.parsers():
        assert f"<code>{name}</code>" in reference, name


def test_every_shell_block_is_marked_run_or_not_run_with_a_reason():
    unmarked = [f"{page.name}:{line}" for page in PAGES
                for lang, _, marker, line in blocks(page) if lang in SHELL and marker is None]
    assert not unmarked, f"shell blocks without <!-- run --> or <!-- not run: why -->: {unmarked}"


def documented_commands() -> list[tuple[str, str]]:
    """(where, command line) of every fanout / dlq-replayer command the manual shows: in
    shell blocks, and in inline code in prose."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for lang, body, _, line in blocks(page):
            if lang in SHELL:
                for command in shell_lines(body):
                    for part in re.split(r"\s*(?:&&|\|\||;|\|(?=\s))\s*", command):
                        if part.startswith(("fanout ", "dlq-replayer ")):
                            found.append((f"{page.name}:{line}", part))
        prose = FENCE.sub("", text)
        for span in re.findall(r"`((?:fanout|dlq-replayer) [^`]+)`", prose):
            if not re.match(r"[\w-]+ [\w-]+:", span):  # a message a command prints
                found.append((page.name, span))
    return found


def parser_for(words: list[str]) -> tuple[Any, list[str]]:
    """The deepest parser the words name, and the words left after it."""
    parsers = dict(HOOKS.parsers())
    name, rest = words[0], words[1:]
    while rest and f"{name} {rest[0]}" in parsers:
        name, rest = f"{name} {rest[0]}", rest[1:]
    return parsers[name], rest


def options_of(parser: Any) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def test_every_documented_command_and_flag_exists():
    commands = documented_commands()
    assert len(commands) > 60  # the manual shows many; a broken scan finds none
    wrong = []
    for where, command in commands:
        try:
            words = shlex.split(command.replace("[", " ").replace("]", " ").replace("|", " "))
        except ValueError:
            words = command.split()
        parser, rest = parser_for(words)
        if parser._subparsers is not None and not any(w.startswith("-") for w in rest[:1]) and \
                rest and rest[0] not in ("...", "…") and not rest[0].isupper():
            # a subcommand that does not exist
            choices = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
            if choices and rest[0] not in choices[0].choices:
                wrong.append(f"{where}: {command!r}: no command {rest[0]!r}")
        for word in rest:
            if word.startswith("-") and len(word) > 1 and not word[1].isdigit():
                flag = word.split("=", 1)[0]
                if flag not in options_of(parser):
                    wrong.append(f"{where}: {command!r}: no option {flag} of {parser.prog!r}")
    assert not wrong, "\n".join(wrong)


def makefile_targets() -> set[str]:
    return set(re.findall(r"^([a-z][\w-]*):", (REPO / "Makefile").read_text(), re.M))


def test_every_documented_make_target_exists():
    targets = makefile_targets()
    wrong, seen = [], 0
    for page in PAGES:
        text = page.read_text()
        commands = [line for lang, body, _, _ in blocks(page) if lang in SHELL for line in shell_lines(body)]
        commands += re.findall(r"`(make [^`]+)`", FENCE.sub("", text))
        for command in commands:
            for target in re.findall(r"(?:^|[;&|]\s*)make ([a-z][\w-]*)", command):
                seen += 1
                if target not in targets:
                    wrong.append((page.name, command))
    assert seen > 5 and not wrong, wrong


def context_keys() -> set[str]:
    """Every context key the stack reads: StackConfig.from_context asks for them."""
    sys.path.insert(0, str(REPO / "infra"))
    try:
        from fanout_stack.config import StackConfig
    finally:
        sys.path.remove(str(REPO / "infra"))
    asked: set[str] = set()

    def get(key: str) -> Any:
        asked.add(key)
        return None
    StackConfig.from_context(get)
    return asked


def test_the_deploy_table_lists_exactly_the_stacks_context_options():
    keys = context_keys()
    assert {"spec", "write_budget", "stack_name"} <= keys  # the scan sees the config
    table = (REPO / "docs" / "deploy.md").read_text().split("| context |", 1)[1].split("\n\n", 1)[0]
    documented = set()
    for row in table.splitlines()[2:]:
        documented |= set(re.findall(r"`([a-z0-9_]+)`", row.split("|")[1]))
    assert documented == keys, (f"documented, not read by the stack: {sorted(documented - keys)}; "
                                f"read by the stack, not documented: {sorted(keys - documented)}")
    # and every -c KEY= anywhere in the manual is one of them
    used = {key for page in PAGES for key in re.findall(r"-c ([a-z0-9_]+)=", page.read_text())}
    assert used <= keys, sorted(used - keys)


def test_numbers_the_readme_quotes_are_the_codes():
    from fanout.settings import DEFAULT_CONFIG, ROWS_PER_MESSAGE
    readme = (REPO / "README.md").read_text()
    assert f"{ROWS_PER_MESSAGE}-row messages" in readme or f"{ROWS_PER_MESSAGE} rows a message" in readme
    assert f"batches of {DEFAULT_CONFIG.batch_size:,} messages" in readme
    assert f"after {DEFAULT_CONFIG.max_receive_count} receives" in readme
    # the ledger's 2 writes per writer invocation, against a full batch's data writes
    design = (REPO / "docs" / "design.md").read_text()
    share = 2 / (DEFAULT_CONFIG.batch_size * ROWS_PER_MESSAGE) * 100
    assert f"{share:.3g}% at the stack's batches of {DEFAULT_CONFIG.batch_size:,}" in design


def test_the_alarms_table_is_the_stacks_alarms():
    source = (REPO / "infra" / "fanout_stack" / "observability.py").read_text()
    alarms = set(re.findall(r'^\s+"(\w+)": alarm\(', source, re.M))
    assert len(alarms) >= 8
    page = (REPO / "docs" / "operations.md").read_text()
    table = page.split("| alarm |", 1)[1].split("\n\n", 1)[0]
    documented = {m for row in table.splitlines()[2:] for m in re.findall(r"^\| `(\w+)`", row)}
    assert documented == alarms, (sorted(alarms - documented), sorted(documented - alarms))


def test_the_folder_map_names_every_module():
    design = (REPO / "docs" / "design.md").read_text()
    table = design.split("| package |", 1)[1].split("\n\n", 1)[0]
    missing = [f"{package}/{path.name}" for package in ("fanout", "splitter", "writer", "fanout_cli", "dlq_replayer")
               for path in sorted((REPO / package).glob("*.py"))
               if path.name != "__init__.py" and f"`{path.name}`" not in table
               and f"{path.stem}.py" not in table]
    assert not missing, f"modules the folder map in docs/design.md leaves out: {missing}"


def repo_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    return [f for f in listed if (REPO / f).is_file()]


def test_every_file_and_function_the_manual_names_exists():
    files = repo_files()
    names = {Path(f).name for f in files}
    wrong = []
    for page in PAGES:
        text = page.read_text()
        for path in set(re.findall(r"`([\w/.-]+\.py)(?::[^`]*)?`", text)):
            if Path(path).name not in names and path not in files:
                wrong.append(f"{page.name}: {path}")
        for path, name in set(re.findall(r"`([\w/.-]+\.py): (\w+)`", text)):
            matches = [f for f in files if f.endswith(path)]
            if matches and not any(re.search(rf"\b(def|class) {name}\b|^{name} =", (REPO / f).read_text(),
                                             re.M) for f in matches):
                wrong.append(f"{page.name}: {path}: {name}")
    assert not wrong, wrong


def test_nothing_points_outside_the_repository():
    wrong = [f for f in repo_files() if f.endswith((".md", ".py", ".toml", ".yml", ".json", "Makefile"))
             and not f.startswith("tests/docs/")
             and re.search(r"\.\./shared|AWS_FACTS", (REPO / f).read_text(errors="replace"))]
    assert not wrong, f"files that point to the team's private notes: {wrong}"


@pytest.mark.parametrize("page", [p.name for p in PAGES])
def test_no_stale_sentence_from_before(page: str):
    """Drift that was found once and fixed: it stays fixed."""
    text = (REPO / ("README.md" if page == "README.md" else f"docs/{page}")).read_text()
    assert "_hole_voidable" not in text
    assert "(1,769 MB)" not in text  # the splitter is priced at the memory the stack gives it
    assert "only grants `BatchWriteItem`" not in text

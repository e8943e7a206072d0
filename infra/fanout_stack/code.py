"""Each Lambda's code asset: the core (`fanout/`) plus that Lambda's own package, nothing
else. The two are copied into a folder named by a hash of their content, so an unchanged
tree is reused across synths and an asset's hash changes only with its own code: the
splitter's zip holds no writer code and the other way round, and neither holds the tool
layer (`fanout_cli/`), the tests or the infra."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_ROOT = Path(__file__).resolve().parents[1] / ".assets"
CORE = "fanout"


def source_files(package: str, root: Path = REPO_ROOT) -> list[Path]:
    """The package's Python files, relative to `root`, in a stable order."""
    return sorted(path.relative_to(root) for path in (root / package).rglob("*.py")
                  if "__pycache__" not in path.parts)


def build_code_dir(package: str, root: Path = REPO_ROOT, build_root: Path = BUILD_ROOT) -> Path:
    """A folder holding `fanout/` and `package/` as they are in `root`."""
    files = source_files(CORE, root) + source_files(package, root)
    digest = hashlib.sha256()
    for relative in files:
        digest.update(f"{relative}\n".encode())
        digest.update((root / relative).read_bytes())
    folder = build_root / f"{package}-{digest.hexdigest()[:16]}"
    if folder.is_dir():
        return folder
    build_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="building-", dir=build_root))
    for relative in files:
        (staging / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / relative, staging / relative)
    try:
        os.rename(staging, folder)
    except OSError:  # another synth built it first
        shutil.rmtree(staging, ignore_errors=True)
    return folder

"""The Powertools layer, built at synth from the installed package the tests pin.

The public Powertools layer drifts from the pin (its version 27 is Powertools 3.23.0; the
project pins 3.37.0), and its bytes are not available offline, so the stack ships its own
layer: the files of the installed `aws-lambda-powertools[tracer]` and of what it needs
beyond the Lambda runtime (boto3, botocore and their dependencies are in the runtime).
Compiled extensions are left out, so the layer is pure Python and runs on arm64 whatever
machine synthesizes it (wrapt, under aws-xray-sdk, falls back to its Python code).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
import shutil
import tempfile
from pathlib import Path

POWERTOOLS = "aws-lambda-powertools"
POWERTOOLS_EXTRAS = ("tracer",)
# What the python3.13 Lambda runtime already provides.
RUNTIME_PROVIDED = frozenset({"boto3", "botocore", "s3transfer", "jmespath", "urllib3",
                              "python-dateutil", "six"})
COMPILED_SUFFIXES = (".so", ".pyd", ".c", ".pyc")
BUILD_ROOT = Path(__file__).resolve().parents[1] / ".layers"


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def layer_distributions(root: str = POWERTOOLS, extras: tuple[str, ...] = POWERTOOLS_EXTRAS,
                        ) -> list[importlib.metadata.Distribution]:
    """The installed distribution of `root[extras]` and what it needs beyond the runtime."""
    found: dict[str, importlib.metadata.Distribution] = {}
    pending = [(root, extras)]
    while pending:
        name, wanted_extras = pending.pop()
        key = _normalise(name)
        if key in found or key in RUNTIME_PROVIDED:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            if key == _normalise(root):
                raise RuntimeError(f"{root} is not installed: run `make setup`") from None
            continue  # an optional requirement for another Python or platform
        found[key] = dist
        for requirement in dist.requires or []:
            spec, _, marker = requirement.partition(";")
            extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", marker)
            if extra and extra.group(1) not in wanted_extras:
                continue
            match = re.match(r"[A-Za-z0-9._-]+", spec.strip())
            if match:
                pending.append((match.group(0), ()))
    return list(found.values())


def layer_files() -> list[tuple[Path, str]]:
    """(installed file, path inside the layer under python/) for every file shipped."""
    files = []
    for dist in layer_distributions():
        for file in dist.files or []:
            parts = Path(str(file)).parts
            if (not parts or parts[0] == ".." or "__pycache__" in parts
                    or str(file).endswith(COMPILED_SUFFIXES)):
                continue
            files.append((Path(str(dist.locate_file(file))), str(Path("python", *parts))))
    return sorted(files, key=lambda pair: pair[1])


def powertools_version() -> str:
    return importlib.metadata.version(POWERTOOLS)


def build_layer_dir(root: Path = BUILD_ROOT) -> Path:
    """A folder holding `python/...`, the layer's content; reused while the installed
    files are the same (the name hashes their paths and sizes)."""
    files = layer_files()
    digest = hashlib.sha256()
    for source, target in files:
        digest.update(f"{target}:{source.stat().st_size}\n".encode())
    folder = root / f"powertools-{powertools_version()}-{digest.hexdigest()[:12]}"
    if folder.is_dir():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="building-", dir=root))
    for source, target in files:
        destination = staging / target
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, destination)
    try:
        os.rename(staging, folder)
    except OSError:  # another synth built it first
        shutil.rmtree(staging, ignore_errors=True)
    return folder

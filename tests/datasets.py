"""Public datasets shipped inside data packages, for tests that no test here was tuned on.

`make setup` installs the packages without their pandas dependency; the CSVs are found
without importing the packages.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def dataset(package: str, *parts: str) -> Path:
    """The path of a CSV inside an installed data package."""
    spec = importlib.util.find_spec(package)
    assert spec and spec.submodule_search_locations, f"{package} is not installed: run make setup"
    return Path(next(iter(spec.submodule_search_locations)), *parts)

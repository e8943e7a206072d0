"""Synthesize the CDK app offline, once per distinct context, and hand tests the pieces.

Synthesis goes through jsii (node), which costs seconds, so each test module asks for
its stacks through module-scoped fixtures backed by one cache for the whole session.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "1")

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA_DIR = REPO_ROOT / "infra"
if str(INFRA_DIR) not in sys.path:
    sys.path.insert(0, str(INFRA_DIR))

from app import build_app  # noqa: E402
from aws_cdk import Environment  # noqa: E402
from aws_cdk.assertions import Annotations, Template  # noqa: E402


@dataclass
class Synth:
    stack: Any
    template: Template
    annotations: Annotations
    outdir: Path

    @property
    def json(self) -> dict[str, Any]:
        return self.template.to_json()

    def resources(self, type_: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.json["Resources"].items() if v["Type"] == type_}

    def one(self, type_: str) -> tuple[str, dict[str, Any]]:
        found = self.resources(type_)
        assert len(found) == 1, f"expected one {type_}, found {sorted(found)}"
        return next(iter(found.items()))

    def logical_id(self, construct: Any) -> str:
        child = construct.node.default_child
        return str(self.stack.resolve(self.stack.get_logical_id(child)))


_cache: dict[str, Synth] = {}


def synth(tmp_root: Path, *, env: tuple[str, str] | None = None, **context: Any) -> Synth:
    """The app synthesized with this context (cdk-nag aspect included); with `env`
    (account, region), as the cdk CLI synthesizes it with credentials: partition, account
    and region are then literals in the template, not tokens."""
    key = json.dumps([context, env], sort_keys=True)
    if key not in _cache:
        outdir = tmp_root / f"cdk.out.{len(_cache)}"
        environment = Environment(account=env[0], region=env[1]) if env else None
        app, stack = build_app({k: v for k, v in context.items()}, outdir=str(outdir),
                               env=environment)
        template = Template.from_stack(stack)
        _cache[key] = Synth(stack, template, Annotations.from_stack(stack), outdir)
    return _cache[key]


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("infra")


@pytest.fixture(scope="module")
def default_stack(synth_root: Path) -> Synth:
    return synth(synth_root)


SPEC_TOML = """
[table]
name = "offers-test"
partition_key = { name = "pk", type = "S", template = "A_{account}" }
sort_key = { name = "offer_id", type = "N" }

[columns]
types = { price = "N" }
"""


@pytest.fixture(scope="session")
def spec_file(synth_root: Path) -> Path:
    path = synth_root / "offers.toml"
    path.write_text(SPEC_TOML)
    return path


@pytest.fixture(scope="module")
def custom_stack(synth_root: Path, spec_file: Path) -> Synth:
    """A spec file, a custom upload prefix, gzip uploads, a write budget and names."""
    return synth(synth_root, spec=str(spec_file), upload_prefix="incoming/csv",
                 gzip="true", write_budget="10000", stack_name="fanout-custom",
                 bucket_name="fanout-custom-uploads", ledger_table_name="fanout-custom-jobs",
                 splitter_function_name="fanout-custom-splitter",
                 writer_function_name="fanout-custom-writer",
                 splitter_role_name="fanout-custom-splitter-role",
                 writer_role_name="fanout-custom-writer-role", versioned="true")


@pytest.fixture(scope="module")
def existing_table_stack(synth_root: Path) -> Synth:
    return synth(synth_root, existing_table="legacy-offers", stack_name="fanout-existing")

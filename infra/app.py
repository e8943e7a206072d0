#!/usr/bin/env python3
"""CDK app: `cd infra && ../.venv/bin/python app.py` synthesizes offline to infra/cdk.out.

Options come from CDK context (`-c key=value` with the cdk CLI, or `--context`), e.g.
`npx aws-cdk@2 deploy -c spec=../offers.toml -c write_budget=2000`. See fanout_stack/config.py.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

INFRA_DIR = Path(__file__).resolve().parent
# The stack imports the shared settings and mapping spec from the repo root packages.
for path in (INFRA_DIR, INFRA_DIR.parent):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from fanout_stack import FanoutStack, StackConfig  # noqa: E402

# Feature flags: cdk.json's context holds the recommended flags of the pinned aws-cdk-lib
# (its recommended-feature-flags.json, as `cdk init` writes them), so an upgrade of the
# library cannot change the template silently. Read here too, so `python app.py`, `cdk
# synth` and the tests build the same template. Among them: S3 server access logging is
# granted by a bucket policy on the log bucket instead of the legacy LogDeliveryWrite ACL.
FEATURE_FLAGS: dict[str, object] = json.loads((INFRA_DIR / "cdk.json").read_text())["context"]


def build_app(context: dict | None = None, *, outdir: str | None = None,
              nag: bool = True, env: cdk.Environment | None = None) -> tuple[cdk.App, FanoutStack]:
    """The app with one stack; cdk-nag's AWS Solutions checks run at synth. Its account
    and region are the cdk CLI's (from your credentials), unless `env` names them."""
    app = cdk.App(context={**FEATURE_FLAGS, **(context or {})}, outdir=outdir)
    config = StackConfig.from_context(app.node.try_get_context, base_dir=INFRA_DIR)
    stack = FanoutStack(
        app, config.stack_name, config=config,
        description="fanout: S3 CSV -> splitter Lambda -> SQS -> writer Lambda -> DynamoDB",
        env=env or cdk.Environment(account=os.environ.get("CDK_DEFAULT_ACCOUNT"),
                                   region=os.environ.get("CDK_DEFAULT_REGION")),
    )
    if nag:
        cdk.Aspects.of(app).add(AwsSolutionsChecks(verbose=True))
    return app, stack


if __name__ == "__main__":
    app, _ = build_app(outdir=None if os.environ.get("CDK_OUTDIR") else str(INFRA_DIR / "cdk.out"))
    app.synth()

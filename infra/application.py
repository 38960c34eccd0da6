"""Build the CDK app: config from context, the stack, cdk-nag. Used by ``app.py`` and the tests."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aws_cdk import App

from infra.config import TriageConfig, context_from_app
from infra.nag import enable_nag
from infra.stack import REPO_ROOT, TicketTriageStack


def build_app(
    *, context: Mapping[str, Any] | None = None, outdir: str | None = None, repo_root: Path = REPO_ROOT
) -> tuple[App, TicketTriageStack]:
    """An app holding one stack, validated by cdk-nag's AwsSolutions pack at synth time.

    The stack is environment-agnostic (account and region are deploy-time tokens): nothing
    here reads AWS credentials or the network.
    """
    # CDK's built-in CloudFormation validation adds ~20 s to every synth here and found nothing
    # that cfn-lint (run by the tests on the same template) does not check: off.
    app = App(
        context=dict(context) if context else None, outdir=outdir, builtin_cloud_formation_validation=False
    )
    config = TriageConfig.from_context(context_from_app(app.node))
    stack = TicketTriageStack(
        app,
        "TicketTriage",
        stack_name=config.stack_name,
        description="Ticket triage: S3 ticket files -> SageMaker async inference -> aggregated results",
        config=config,
        repo_root=repo_root,
    )
    enable_nag(app)
    return app, stack

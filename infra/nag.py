"""cdk-nag 3 (AwsSolutions) wiring and the one way this app records a suppression.

cdk-nag 3 is a CDK policy-validation plugin: ``Validations.of(app).add_plugins(...)`` runs it
after synthesis, its findings go to ``cdk.out/policy-validation-report.json`` and any
unacknowledged finding fails the synth. A suppression is a CDK acknowledgment
(``Validations.of(construct).acknowledge``) on the resource or one of its parents; findings
with a detail (IAM4/IAM5) are acknowledged one by one as ``RuleId[Finding]``.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, CfnElement, CfnResource, Stack, Validations
from cdk_nag import AwsSolutionsChecks
from constructs import IConstruct

MIN_REASON_LENGTH = 20


def enable_nag(scope: IConstruct) -> AwsSolutionsChecks:
    """Run the AwsSolutions pack on every stack of ``scope`` (an App or a Stage)."""
    checks = AwsSolutionsChecks(scope, verbose=True)
    Validations.of(scope).add_plugins(checks)
    return checks


def acknowledge(construct: IConstruct, rule_id: str, reason: str) -> None:
    """Suppress ``rule_id`` on ``construct`` (and its children); ``reason`` says why it is acceptable."""
    if len(reason.strip()) < MIN_REASON_LENGTH:
        raise ValueError(f"a suppression of {rule_id} needs a real reason, got {reason!r}")
    Validations.of(construct).acknowledge(Acknowledgment(id=rule_id, reason=reason))


def arn_finding(element: CfnElement, suffix: str = "", attribute: str = "Arn") -> str:
    """The IAM5 finding id cdk-nag reports for a wildcard under ``element``'s ARN.

    cdk-nag names token resources by logical id: ``Resource::<InputBucket1234.Arn>/chunks/*``.
    """
    logical_id = Stack.of(element).get_logical_id(element)
    return f"Resource::<{logical_id}.{attribute}>{suffix}"


def skip_checkov(element: CfnElement | IConstruct, check_id: str, reason: str) -> None:
    """Record an accepted checkov finding on one resource (``Metadata.checkov.skip``), with why.

    checkov reads this CloudFormation metadata and reports the check as skipped; the runbook's
    checkov section lists the same ids.
    """
    if len(reason.strip()) < MIN_REASON_LENGTH:
        raise ValueError(f"a checkov skip of {check_id} needs a real reason, got {reason!r}")
    resource = element if isinstance(element, CfnResource) else element.node.default_child
    metadata = resource.get_metadata("checkov") or {"skip": []}
    metadata["skip"] = [*metadata["skip"], {"id": check_id, "comment": reason}]
    resource.add_metadata("checkov", metadata)

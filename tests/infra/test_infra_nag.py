"""cdk-nag 3 AwsSolutions: no unsuppressed finding, and every suppression is needed and explained."""

from __future__ import annotations

from pathlib import Path

import pytest
from aws_cdk import App, Stack, Validations
from aws_cdk import aws_s3 as s3
from cdk_nag import AwsSolutionsChecks
from infra_helpers import cdk_json_context

import infra.nag
from infra.application import build_app


def acknowledgments(app: App) -> dict[tuple[str, str], str]:
    """(construct path, rule id) -> reason, for every acknowledgment in the tree."""
    found = {}
    for construct in app.node.find_all():
        for entry in construct.node.metadata:
            if entry.type == Validations.ACKNOWLEDGED_RULES_METADATA_KEY:
                for rule_id, reason in entry.data.items():
                    found[(construct.node.path, rule_id.removeprefix("Annotation::"))] = reason
    return found


def findings(app: App) -> set[tuple[str, str]]:
    """(construct path, rule id) of every AwsSolutions finding cdk-nag reports for ``app``."""
    report = AwsSolutionsChecks().validate_scope(app)
    return {(r.construct_path, v.rule_name) for v in report.violations for r in v.violating_resources}


def test_the_app_has_no_unsuppressed_awssolutions_finding(synth) -> None:
    report = AwsSolutionsChecks().validate_scope(synth.app)
    unsuppressed = sorted(
        f"{v.rule_name} at {[r.construct_path for r in v.violating_resources]}" for v in report.violations
    )
    assert unsuppressed == []
    assert report.success


def test_nag_is_registered_as_a_validation_plugin_so_synth_fails_on_a_finding(tmp_path: Path) -> None:
    app = App(outdir=str(tmp_path), builtin_cloud_formation_validation=False)
    s3.Bucket(Stack(app, "Insecure"), "Bucket")  # no TLS policy, no access logs
    infra.nag.enable_nag(app)
    with pytest.raises(RuntimeError, match="AwsSolutions-S10"):
        app.synth()


def test_every_suppression_names_a_real_reason(synth) -> None:
    acks = acknowledgments(synth.app)
    assert acks, "expected the documented suppressions"
    for (path, rule_id), reason in acks.items():
        assert rule_id.startswith("AwsSolutions-"), (path, rule_id)
        assert len(reason) >= infra.nag.MIN_REASON_LENGTH, (path, rule_id, reason)


def test_a_suppression_without_a_reason_is_refused(tmp_path: Path) -> None:
    stack = Stack(App(outdir=str(tmp_path)), "S")
    with pytest.raises(ValueError, match="needs a real reason"):
        infra.nag.acknowledge(stack, "AwsSolutions-S1", "because")


def test_every_suppression_silences_a_finding_that_exists_without_it(
    synth, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Build the app again with acknowledgments recorded instead of applied: cdk-nag must then
    report exactly the suppressed findings (no stale suppression, nothing hidden by a parent)."""
    recorded: list[tuple[str, str]] = []

    class RecordingValidations:
        @staticmethod
        def of(construct):
            class _Recorder:
                def acknowledge(self, ack) -> None:
                    recorded.append((construct.node.path, ack.id))

                def add_plugins(self, *plugins) -> None:
                    pass  # findings are collected below with validate_scope

            return _Recorder()

    monkeypatch.setattr(infra.nag, "Validations", RecordingValidations)
    context = {**cdk_json_context(), "triage:modelArtifact": str(synth.model_tarball)}
    app, _ = build_app(context=context, outdir=str(tmp_path), repo_root=synth.repo_root)
    raw = findings(app)

    def covered(ack_path: str, rule_id: str) -> set[tuple[str, str]]:
        return {(p, r) for p, r in raw if r == rule_id and (p == ack_path or p.startswith(ack_path + "/"))}

    stale = [ack for ack in recorded if not covered(*ack)]
    assert stale == [], "\n".join(map(str, stale))
    suppressed = set().union(*(covered(*ack) for ack in recorded))
    assert raw == suppressed, "\n".join(map(str, sorted(raw - suppressed)))

"""The synthesized template through AWS's own checkers, and the pinned CDK CLI's offline synth."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from infra_helpers import REPO_ROOT

# cfn-lint warnings that are accepted, with the reason (errors are never accepted):
ACCEPTED_CFN_LINT_WARNINGS = {
    # CDK adds DependsOn on a Lambda's role next to the GetAtt of its ARN (harmless redundancy).
    "W3005",
}


def test_cfn_lint_finds_no_errors_in_the_template(synth) -> None:
    template = synth.outdir / f"{synth.stack.artifact_id}.template.json"
    result = subprocess.run(
        [str(Path(sys.executable).parent / "cfn-lint"), "--format", "json", str(template)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 1, result.stderr  # 1: cfn-lint itself failed; else a bit mask of levels
    matches = json.loads(result.stdout or "[]")
    errors = [m for m in matches if m["Level"] == "Error"]
    assert errors == []
    unexpected = [
        m for m in matches if m["Level"] == "Warning" and m["Rule"]["Id"] not in ACCEPTED_CFN_LINT_WARNINGS
    ]
    assert unexpected == []


def test_the_pinned_cdk_cli_synthesizes_the_default_context_offline(tmp_path: Path) -> None:
    """What ``make synth`` runs, without Docker, AWS credentials or a trained model."""
    env = {
        **os.environ,
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
        "AWS_ACCESS_KEY_ID": "",
        "AWS_SECRET_ACCESS_KEY": "",
        "AWS_PROFILE": "",
        "AWS_EC2_METADATA_DISABLED": "true",
        "PATH": f"{REPO_ROOT / '.venv' / 'bin'}:{os.environ['PATH']}",
    }
    outdir = tmp_path / "cdk.out"
    result = subprocess.run(
        ["npx", "--no-install", "cdk", "synth", "--quiet", "--no-notices", "--output", str(outdir)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    template = json.loads((outdir / "TicketTriage.template.json").read_text())
    types = {r["Type"] for r in template["Resources"].values()}
    assert {"AWS::SageMaker::EndpointConfig", "AWS::ApplicationAutoScaling::ScalableTarget"} <= types
    report = json.loads((outdir / "validation-report.json").read_text())
    assert [r for r in report["pluginReports"] if r.get("conclusion") != "success"] == []

    trained = (REPO_ROOT / "artifacts" / "model.tar.gz").is_file()
    guarded = "ModelArtifactRequireTrainedModel" in json.dumps(template.get("Rules", {}))
    assert guarded is not trained  # a placeholder model is refused at deploy time, a real one is not
    if not trained:
        assert "No model artifact at 'artifacts/model.tar.gz'" in result.stdout + result.stderr
    (image,) = json.loads((outdir / "TicketTriage.assets.json").read_text())["dockerImages"].values()
    staged = {p.name for p in (outdir / image["source"]["directory"]).iterdir()}
    assert staged <= {"container", "triage_core", ".dockerignore"}

"""Synthesize the CDK app ONCE per test session (jsii start-up and synthesis are the slow part).

The app gets the exact context of ``cdk.json`` except the model artifact, which is a tiny
``model.tar.gz`` made here: no test depends on a trained model, Docker or AWS credentials.
Registered in ``tests/conftest.py``: the infrastructure tests read the template, the pipeline and
chaos tests replay the AWS calls of their runs against its roles (``tests/iam_replay.py``).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

REPO_ROOT = Path(__file__).resolve().parents[1]


def cdk_json_context() -> dict[str, Any]:
    """The context ``cdk synth`` uses by default (cdk.json)."""
    return json.loads((REPO_ROOT / "cdk.json").read_text())["context"]


@dataclass
class Synth:
    app: Any
    stack: Any
    outdir: Path
    template: dict[str, Any]
    model_tarball: Path
    repo_root: Path

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        return self.template["Resources"]

    def of_type(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {k: r for k, r in self.resources.items() if r["Type"] == resource_type}

    def one(self, resource_type: str) -> tuple[str, dict[str, Any]]:
        found = self.of_type(resource_type)
        assert len(found) == 1, f"expected one {resource_type}, found {sorted(found)}"
        return next(iter(found.items()))

    def logical_id(self, construct: Any) -> str:
        from aws_cdk import CfnElement

        element = construct if CfnElement.is_cfn_element(construct) else construct.node.default_child
        return self.stack.resolve(element.logical_id)

    def properties(self, construct: Any) -> dict[str, Any]:
        return self.resources[self.logical_id(construct)]["Properties"]


def _repo_root_for_synth(tmp: Path) -> Path:
    """The real repo root; a stand-in only while container/Dockerfile has not landed yet."""
    if (REPO_ROOT / "container" / "Dockerfile").is_file():
        return REPO_ROOT
    root = tmp / "repo"
    (root / "container").mkdir(parents=True)
    (root / "container" / "Dockerfile").write_text("FROM scratch\n")
    shutil.copytree(REPO_ROOT / "triage_core", root / "triage_core")
    (root / "lambda").symlink_to(REPO_ROOT / "lambda")
    return root


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    from infra.application import build_app
    from infra.model import placeholder_tarball

    tmp = tmp_path_factory.mktemp("infra")
    tarball = placeholder_tarball(tmp)  # any small tar.gz: the app treats it as a trained model
    context = {**cdk_json_context(), "triage:modelArtifact": str(tarball)}
    outdir = tmp / "cdk.out"
    repo_root = _repo_root_for_synth(tmp)
    app, stack = build_app(context=context, outdir=str(outdir), repo_root=repo_root)
    app.synth()
    template = json.loads((outdir / f"{stack.artifact_id}.template.json").read_text())
    return Synth(app, stack, outdir, template, tarball, repo_root)


def render(value: Any) -> str:
    """A ``Fn::Join`` of strings and tokens as one string; tokens become ``<...>`` placeholders."""
    if isinstance(value, str):
        return value
    separator, parts = value["Fn::Join"]
    return separator.join(
        p if isinstance(p, str) else "<" + json.dumps(p).replace('"', "'") + ">" for p in parts
    )


def watched_metrics(template: dict[str, Any]) -> list[tuple[str, str, dict[str, Any], str]]:
    """(namespace, metric, dimensions, alarm id or widget title) of every alarm and every metric
    line of every dashboard widget of the template."""
    found = []
    for alarm_id, alarm in template["Resources"].items():
        if alarm["Type"] != "AWS::CloudWatch::Alarm":
            continue
        props = alarm["Properties"]
        metrics = [props] if "MetricName" in props else []
        metrics += [q["MetricStat"]["Metric"] for q in props.get("Metrics", []) if "MetricStat" in q]
        for m in metrics:
            found.append(
                (
                    m["Namespace"],
                    m["MetricName"],
                    {d["Name"]: d["Value"] for d in m.get("Dimensions", [])},
                    alarm_id,
                )
            )
    for dashboard in template["Resources"].values():
        if dashboard["Type"] != "AWS::CloudWatch::Dashboard":
            continue
        for widget in json.loads(render(dashboard["Properties"]["DashboardBody"]))["widgets"]:
            for line in widget["properties"].get("metrics", []):
                fields = [f for f in line if not isinstance(f, dict)]
                if not fields:  # a math expression line
                    continue
                namespace, name, *pairs = fields
                dims = dict(zip(pairs[::2], pairs[1::2], strict=True))
                found.append((namespace, name, dims, widget["properties"]["title"]))
    return found

"""Guarded roll-outs: what the synthesized template says about an endpoint update, checked against
AWS's documentation and the SDK's service model.

Amazon SageMaker AI Developer Guide, "Exclusions" (deployment guardrails,
https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-exclusions.html), verbatim:

    When doing a blue/green or rolling deployment, your new endpoint configuration must have the
    same variant name as the old endpoint configuration. There are also feature-based exclusions
    that make your endpoint incompatible with deployment guardrails at this time. If your endpoint
    uses any of the following features, you cannot use deployment guardrails on your endpoint, and
    your endpoint will fall back to using a blue/green deployment with all at once traffic shifting
    and no final baking period:
      - Marketplace containers
      - Endpoints that use Inf1 (Inferentia-based) instances
    If you're doing a rolling deployment, there are additional feature-based exclusions:
      - Serverless inference endpoints
      - Multi-variant inference endpoints

Asynchronous endpoints are not excluded; the guide's "Deployment guardrails for updating models in
production" page has a note that they apply only to the asynchronous and real-time inference
endpoint types (seen in its Chinese edition: "部署防护机制仅适用于 异步推理 和 实时推理 端点类型").
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import botocore.loaders
import pytest
from infra_helpers import cdk_json_context

from infra.config import STEP_SHARE_BOUNDS, ConfigError, TriageConfig
from infra.rollout import MICROSECONDS


def service_shapes() -> dict:
    return botocore.loaders.create_loader().load_service_model("sagemaker", "service-2")["shapes"]


def endpoint_props(synth) -> dict:
    _, endpoint = synth.one("AWS::SageMaker::Endpoint")
    return endpoint["Properties"]


def rollback_alarm_ids(props: dict) -> list[str]:
    return [a["AlarmName"]["Ref"] for a in props["DeploymentConfig"]["AutoRollbackConfiguration"]["Alarms"]]


# --- the deployment the template asks for -------------------------------------------------------------


def test_an_endpoint_update_is_a_canary_blue_green_deployment_with_the_cdk_json_settings(synth) -> None:
    context = cdk_json_context()
    policy = endpoint_props(synth)["DeploymentConfig"]["BlueGreenUpdatePolicy"]
    assert policy == {
        "TrafficRoutingConfiguration": {
            "Type": context["triage:rolloutMode"],
            "CanarySize": {"Type": "INSTANCE_COUNT", "Value": context["triage:rolloutStepInstances"]},
            "WaitIntervalInSeconds": context["triage:rolloutWaitSeconds"],
        },
        "TerminationWaitInSeconds": context["triage:rolloutTerminationWaitSeconds"],
        "MaximumExecutionTimeoutInSeconds": context["triage:rolloutTimeoutSeconds"],
    }
    assert "RollingUpdatePolicy" not in endpoint_props(synth)["DeploymentConfig"]


def test_the_canary_is_at_most_half_of_the_new_fleet(synth) -> None:
    """CanarySize: "Value must be less than or equal to 50% of the variant's total instance count"
    (SageMaker API Reference, TrafficRoutingConfig). The new fleet is the config's variant."""
    _, config = synth.one("AWS::SageMaker::EndpointConfig")
    (variant,) = config["Properties"]["ProductionVariants"]
    canary = endpoint_props(synth)["DeploymentConfig"]["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]
    assert variant["InitialInstanceCount"] == cdk_json_context()["triage:rolloutInstanceCount"]
    assert 2 * canary["CanarySize"]["Value"] <= variant["InitialInstanceCount"]


def test_every_rollback_alarm_named_by_the_endpoint_exists_in_the_template_and_notifies(synth) -> None:
    alarms = synth.of_type("AWS::CloudWatch::Alarm")
    named = rollback_alarm_ids(endpoint_props(synth))
    assert len(named) == len(cdk_json_context()["triage:rolloutAlarms"]) == 3
    alarm_topic = synth.logical_id(synth.stack.notifications.alarm_topic)
    for alarm_id in named:
        assert alarm_id in alarms
        assert alarms[alarm_id]["Properties"]["AlarmActions"] == [{"Ref": alarm_topic}]
        assert alarms[alarm_id]["Properties"]["TreatMissingData"] == "notBreaching"


def test_rollback_alarms_watch_this_endpoint_its_variant_and_the_new_config_fleet(synth) -> None:
    """AWS's examples (Auto-Rollback Configuration and Monitoring): errors on both fleets with
    EndpointName + VariantName, model latency on the new fleet with EndpointConfigName of the config
    being deployed ("CloudWatch publishes the metrics with the dimension
    EndpointConfigName:{New-Ep-Config} after the new fleet starts receiving traffic")."""
    alarms = synth.of_type("AWS::CloudWatch::Alarm")
    props = endpoint_props(synth)
    config_id, config = synth.one("AWS::SageMaker::EndpointConfig")
    (variant,) = config["Properties"]["ProductionVariants"]
    watched = {}
    for alarm_id in rollback_alarm_ids(props):
        alarm = alarms[alarm_id]["Properties"]
        dims = {d["Name"]: d["Value"] for d in alarm["Dimensions"]}
        assert alarm["Namespace"] == "AWS/SageMaker"
        assert dims["EndpointName"] == props["EndpointName"]
        assert dims["VariantName"] == variant["VariantName"]
        watched[alarm["MetricName"]] = (dims, alarm)
    assert set(watched) == {"InvocationFailures", "Invocation5XXErrors", "ModelLatency"}
    latency_dims, latency = watched["ModelLatency"]
    assert latency_dims["EndpointConfigName"] == props["EndpointConfigName"]
    assert props["EndpointConfigName"] == {"Fn::GetAtt": [config_id, "EndpointConfigName"]}
    seconds = cdk_json_context()["triage:rolloutMaxModelLatencySeconds"]
    assert latency["Threshold"] == seconds * MICROSECONDS  # ModelLatency is in microseconds
    assert "EndpointConfigName" not in watched["InvocationFailures"][0]


def test_a_new_artifact_makes_a_new_model_and_config_so_the_update_is_a_deployment(synth) -> None:
    """ "To update an endpoint, you must create a new EndpointConfig" (SageMaker API Reference,
    UpdateEndpoint). Neither the model nor the config has a fixed name: a new model.tar.gz replaces
    the model (ModelDataUrl), hence the config (its ModelName), and the endpoint moves to the new
    config through the deployment above. The endpoint's own name is fixed (its alarms watch it)."""
    _, model = synth.one("AWS::SageMaker::Model")
    _, config = synth.one("AWS::SageMaker::EndpointConfig")
    model_id = synth.logical_id(synth.stack.inference.model)
    assert "ModelName" not in model["Properties"] and "EndpointConfigName" not in config["Properties"]
    (variant,) = config["Properties"]["ProductionVariants"]
    assert variant["ModelName"] == {"Fn::GetAtt": [model_id, "ModelName"]}
    assert endpoint_props(synth)["EndpointName"] == cdk_json_context()["triage:stackName"]
    name_shape = service_shapes()["EndpointName"]
    assert re.fullmatch(name_shape["pattern"], endpoint_props(synth)["EndpointName"])
    assert len(endpoint_props(synth)["EndpointName"]) <= name_shape["max"]


def test_the_execution_role_may_describe_exactly_the_rollback_alarms_before_the_endpoint_exists(
    synth,
) -> None:
    """ "Ensure that your IAM execution role has permission to perform the cloudwatch:DescribeAlarms
    action on the auto-rollback alarms you specify" (Auto-Rollback Configuration and Monitoring)."""
    role_id = synth.logical_id(synth.stack.inference.role)
    _, endpoint = synth.one("AWS::SageMaker::Endpoint")
    grants = []
    for policy_id, policy in synth.of_type("AWS::IAM::Policy").items():
        if {"Ref": role_id} not in policy["Properties"]["Roles"]:
            continue
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            if "cloudwatch:DescribeAlarms" in actions:
                grants.append((policy_id, actions, statement["Resource"]))
    ((policy_id, actions, resources),) = grants
    assert actions == ["cloudwatch:DescribeAlarms"]
    resources = resources if isinstance(resources, list) else [resources]
    assert sorted(r["Fn::GetAtt"][0] for r in resources) == sorted(rollback_alarm_ids(endpoint["Properties"]))
    assert policy_id in endpoint["DependsOn"]


def test_the_endpoint_uses_no_feature_the_exclusions_page_lists(synth) -> None:
    """Module docstring: not a Marketplace container (our own image, no ModelPackageName), no Inf1
    instance, one variant, no serverless config; and the variant name is fixed, so every new config
    has "the same variant name as the old endpoint configuration"."""
    from infra.async_endpoint import VARIANT_NAME

    _, model = synth.one("AWS::SageMaker::Model")
    _, config = synth.one("AWS::SageMaker::EndpointConfig")
    container = model["Properties"]["PrimaryContainer"]
    assert "ModelPackageName" not in container and "Image" in container
    (variant,) = config["Properties"]["ProductionVariants"]
    assert variant["VariantName"] == VARIANT_NAME
    assert not variant["InstanceType"].startswith("ml.inf1.")
    assert "ServerlessConfig" not in variant


# --- the limits AWS documents, read from the SDK's service model ----------------------------------


def test_step_share_bounds_are_the_ones_the_service_model_documents() -> None:
    shapes = service_shapes()
    docs = {
        "CANARY": shapes["TrafficRoutingConfig"]["members"]["CanarySize"]["documentation"],
        "LINEAR": shapes["TrafficRoutingConfig"]["members"]["LinearStepSize"]["documentation"],
        "ROLLING": shapes["RollingUpdatePolicy"]["members"]["MaximumBatchSize"]["documentation"],
    }
    assert "less than or equal to 50% of the variant's total instance count" in docs["CANARY"]
    assert re.search(r"(\d+)-(\d+)% of the variant", docs["LINEAR"]).groups() == tuple(
        str(b) for b in STEP_SHARE_BOUNDS["LINEAR"]
    )
    assert re.search(r"between (\d+)% to (\d+)% of the variant", docs["ROLLING"]).groups() == tuple(
        str(b) for b in STEP_SHARE_BOUNDS["ROLLING"]
    )
    assert STEP_SHARE_BOUNDS["CANARY"][1] == 50


def test_the_modes_and_second_ranges_are_the_service_models() -> None:
    shapes = service_shapes()
    modes = TriageConfig.model_fields["rollout_mode"].annotation.__args__
    assert set(modes) == set(shapes["TrafficRoutingConfigType"]["enum"]) | {"ROLLING"}

    def bounds(field: str) -> tuple[int, int]:
        meta = TriageConfig.model_fields[field].metadata
        return next(m.ge for m in meta if hasattr(m, "ge")), next(m.le for m in meta if hasattr(m, "le"))

    for field, shape in (
        ("rollout_wait_seconds", "WaitIntervalInSeconds"),
        ("rollout_termination_wait_seconds", "TerminationWaitInSeconds"),
        ("rollout_timeout_seconds", "MaximumExecutionTimeoutInSeconds"),
    ):
        assert bounds(field) == (shapes[shape]["min"], shapes[shape]["max"]), field
    assert len(TriageConfig().rollout_alarms) <= shapes["AlarmList"]["max"]


# --- what cdk.json (or -c) may ask for ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"triage:rolloutInstanceCount": 1}, "a canary needs a fleet of 2"),
        ({"triage:rolloutMode": "LINEAR", "triage:rolloutStepInstances": 2}, "LINEAR step must be 10-50%"),
        (  # 1 of 20 = 5 %: allowed for a rolling update, not for a linear one
            {"triage:rolloutMode": "LINEAR", "triage:rolloutInstanceCount": 20, "triage:maxCapacity": 20},
            "is 5% of rolloutInstanceCount",
        ),
        ({"triage:rolloutInstanceCount": 3}, "within minCapacity..maxCapacity"),
        ({"triage:rolloutTimeoutSeconds": 1800}, "must exceed the deployment's waits"),
        ({"triage:rolloutAlarms": "InvocationFailures,Latency"}, "unknown roll-back alarm"),
        ({"triage:rolloutMode": "BLUE_GREEN"}, "rolloutMode"),
        ({"triage:stackName": "T" * 64}, "at most 63 characters"),
    ],
)
def test_rollout_settings_aws_would_refuse_fail_the_synth(context: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TriageConfig.from_context(context)


def test_rollout_settings_from_the_command_line() -> None:
    config = TriageConfig.from_context(
        {
            "triage:rolloutMode": "ROLLING",
            "triage:rolloutInstanceCount": "20",
            "triage:maxCapacity": "20",
            "triage:rolloutWaitSeconds": "60",  # 20 batches of one: 20 bakes within the hour
            "triage:rolloutAlarms": "ModelLatency, InvocationFailures",
        }
    )
    assert (config.rollout_mode, config.rollout_instance_count) == ("ROLLING", 20)
    assert config.rollout_alarms == ("ModelLatency", "InvocationFailures")
    assert TriageConfig.from_context({"triage:rolloutAlarms": ""}).rollout_alarms == ()
    linear = TriageConfig.from_context({"triage:rolloutMode": "LINEAR", "triage:rolloutStepInstances": "1"})
    assert linear.rollout_steps == 2 and linear.rollout_total_wait_seconds == 2 * 600 + 600


@pytest.mark.slow
def test_a_rolling_update_without_alarms_synthesizes_passes_cfn_lint_and_warns(synth, tmp_path: Path) -> None:
    """A second synth: ROLLING, 4 instances in batches of 1 (25 %), no roll-back alarms."""
    from aws_cdk.assertions import Annotations, Match

    from infra.application import build_app

    context = {
        **cdk_json_context(),
        "triage:modelArtifact": str(synth.model_tarball),
        "triage:rolloutMode": "ROLLING",
        "triage:rolloutInstanceCount": "4",
        "triage:maxCapacity": "4",
        "triage:rolloutAlarms": "",
    }
    app, stack = build_app(context=context, outdir=str(tmp_path), repo_root=synth.repo_root)
    app.synth()
    path = tmp_path / f"{stack.artifact_id}.template.json"
    template = json.loads(path.read_text())
    (endpoint,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::SageMaker::Endpoint"]
    assert endpoint["Properties"]["DeploymentConfig"] == {
        "RollingUpdatePolicy": {
            "MaximumBatchSize": {"Type": "INSTANCE_COUNT", "Value": 1},
            "WaitIntervalInSeconds": 600,
            "MaximumExecutionTimeoutInSeconds": 3600,
        }
    }
    descriptions = [
        r["Properties"]["AlarmDescription"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::CloudWatch::Alarm"
    ]
    assert descriptions and not [d for d in descriptions if d.startswith("Roll-back guard")]
    Annotations.from_stack(stack).has_warning(
        f"/{stack.node.path}/Inference", Match.string_like_regexp("rolloutAlarms is empty")
    )
    result = subprocess.run(
        [str(Path(sys.executable).parent / "cfn-lint"), "--format", "json", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 1, result.stderr
    assert [m for m in json.loads(result.stdout or "[]") if m["Level"] == "Error"] == []


def test_the_runbook_documents_every_rollback_alarm_and_rollout_setting(synth) -> None:
    from infra_helpers import REPO_ROOT

    from infra.rollout import ROLLBACK_ALARMS

    runbook = (REPO_ROOT / "docs" / "deploy-and-operate.md").read_text()
    section = runbook[runbook.index("**Roll-back.**") : runbook.index("**With autoscaling")]
    assert [name for name in ROLLBACK_ALARMS if f"| `{name}` |" not in section] == []
    assert set(synth.stack.inference.rollout.alarms) == set(ROLLBACK_ALARMS)
    keys = [k for k in TriageConfig.context_keys() if k.startswith("triage:rollout")]
    assert len(keys) == 8 and [k for k in keys if f"`{k}`" not in runbook] == []

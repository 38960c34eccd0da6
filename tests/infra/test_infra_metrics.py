"""Every alarm, scaling metric and dashboard widget of the synthesized template uses a metric with
the dimension set AWS documents for it (``infra.metrics.DOCUMENTED_METRICS``, copied from the
pages it names). An alarm on another dimension set sees no data and never fires."""

from __future__ import annotations

import json
from typing import Any

import pytest
from synth_fixture import render

from infra.metrics import (
    DOCUMENTED_METRICS,
    PIPELINE,
    SAGEMAKER,
    documented_dimension_sets,
    documented_metric,
)

NAMESPACE = "TicketTriage"  # triage:stackName in cdk.json: the pipeline's own metric namespace


def dashboard_metrics(synth) -> list[tuple[str, str, dict[str, str], str]]:
    """(namespace, metric, dimensions, widget title) of every metric line of every widget."""
    found = []
    for dashboard in synth.of_type("AWS::CloudWatch::Dashboard").values():
        body = json.loads(render(dashboard["Properties"]["DashboardBody"]))
        for widget in body["widgets"]:
            for line in widget["properties"].get("metrics", []):
                fields = [f for f in line if not isinstance(f, dict)]
                if not fields:  # a math expression line
                    continue
                namespace, name, *pairs = fields
                found.append(
                    (
                        namespace,
                        name,
                        dict(zip(pairs[::2], pairs[1::2], strict=True)),
                        widget["properties"]["title"],
                    )
                )
    return found


def alarm_metrics(synth) -> list[tuple[str, str, dict[str, Any], str]]:
    found = []
    for alarm_id, alarm in synth.of_type("AWS::CloudWatch::Alarm").items():
        props = alarm["Properties"]
        if "MetricName" in props:
            found.append(
                (
                    props["Namespace"],
                    props["MetricName"],
                    {d["Name"]: d["Value"] for d in props["Dimensions"]},
                    alarm_id,
                )
            )
        for query in props.get("Metrics", []):
            if "MetricStat" in query:
                metric = query["MetricStat"]["Metric"]
                dims = {d["Name"]: d["Value"] for d in metric.get("Dimensions", [])}
                found.append((metric["Namespace"], metric["MetricName"], dims, alarm_id))
    return found


def scaling_metrics(synth) -> list[tuple[str, str, dict[str, Any], str]]:
    found = []
    for policy_id, policy in synth.of_type("AWS::ApplicationAutoScaling::ScalingPolicy").items():
        spec = (
            policy["Properties"]
            .get("TargetTrackingScalingPolicyConfiguration", {})
            .get("CustomizedMetricSpecification")
        )
        if spec:
            dims = {d["Name"]: d["Value"] for d in spec["Dimensions"]}
            found.append((spec["Namespace"], spec["MetricName"], dims, policy_id))
    return found


def test_every_alarm_scaling_metric_and_widget_uses_a_documented_dimension_set(synth) -> None:
    checked = alarm_metrics(synth) + scaling_metrics(synth) + dashboard_metrics(synth)
    assert len(checked) > 40
    wrong = []
    for namespace, name, dims, where in checked:
        try:
            expected = documented_dimension_sets(namespace, name, NAMESPACE)
        except KeyError:
            wrong.append(f"{where}: {namespace} {name} is not in DOCUMENTED_METRICS")
            continue
        if sorted(dims) not in [sorted(dimension_set) for dimension_set in expected]:
            wrong.append(f"{where}: {namespace} {name} with {sorted(dims)}, documented {expected}")
    assert wrong == []


def test_endpoint_metrics_name_this_endpoint_and_its_variant(synth, stack) -> None:
    """By its attribute, or (the roll-back alarms, which the endpoint itself names) by the fixed name
    the endpoint is given in the template."""
    endpoint = {"Fn::GetAtt": [synth.logical_id(stack.inference.endpoint), "EndpointName"]}
    fixed_name = synth.properties(stack.inference.endpoint)["EndpointName"]
    sagemaker = [m for m in alarm_metrics(synth) + scaling_metrics(synth) if m[0] == SAGEMAKER]
    assert sagemaker
    for _, name, dims, where in sagemaker:
        assert dims["EndpointName"] in (endpoint, fixed_name), where
        if "VariantName" in dims:
            assert dims["VariantName"] == "AllTraffic", (where, name)


def test_per_variant_failure_metrics_are_alarmed_with_endpoint_and_variant(synth, stack) -> None:
    """InvocationFailures and NotificationFailures are published per variant (the async
    monitoring page): an alarm with EndpointName alone would never see a data point."""
    alarms = stack.monitoring.alarms
    for alarm_id, metric in (
        ("InvocationFailures", "InvocationFailures"),
        ("NotificationFailures", "NotificationFailures"),
    ):
        props = synth.properties(alarms[alarm_id])
        assert props["MetricName"] == metric
        assert [d["Name"] for d in props["Dimensions"]] == ["EndpointName", "VariantName"]
        assert (props["Statistic"], props["Threshold"]) == ("Sum", 1)


def test_pipeline_alarms_watch_the_counts_of_the_function_that_emits_them(synth, stack) -> None:
    alarms = stack.monitoring.alarms
    expected = {
        "OverdueJobs": "ticket-sweeper",
        "InvalidNotifications": "ticket-aggregator",
        "UnknownNotifications": "ticket-aggregator",
    }
    for alarm_id, service in expected.items():
        props = synth.properties(alarms[alarm_id])
        assert (props["Namespace"], props["MetricName"]) == (NAMESPACE, alarm_id)
        assert props["Dimensions"] == [{"Name": "service", "Value": service}]
    for fn_id, fn in stack.pipeline.functions.items():
        env = synth.properties(fn.function)["Environment"]["Variables"]
        assert env["POWERTOOLS_METRICS_NAMESPACE"] == NAMESPACE
        assert env["POWERTOOLS_SERVICE_NAME"] == f"ticket-{fn_id.lower()}"


def test_the_lambda_code_emits_exactly_the_pipeline_metrics_of_the_table() -> None:
    from ticket_pipeline.metrics import METRIC_NAMES

    assert set(METRIC_NAMES) == {name for namespace, name in DOCUMENTED_METRICS if namespace == PIPELINE}


@pytest.mark.parametrize(
    ("namespace", "name", "dims"),
    [
        (SAGEMAKER, "InvocationFailures", {"EndpointName": "ep"}),  # the defect this table fixes
        (SAGEMAKER, "ApproximateBacklogSize", {"EndpointName": "ep", "VariantName": "AllTraffic"}),
        ("AWS/SageMaker", "NoSuchMetric", {"EndpointName": "ep"}),
    ],
)
def test_a_metric_off_the_documented_table_cannot_be_built(namespace: str, name: str, dims: dict) -> None:
    with pytest.raises(ValueError, match=name):
        documented_metric(namespace, name, dims, statistic="Sum")

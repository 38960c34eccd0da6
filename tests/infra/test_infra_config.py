"""The typed config: defaults, cdk.json, command-line strings and clear errors."""

from __future__ import annotations

import pytest
from infra_helpers import cdk_json_context

from infra.config import ConfigError, TriageConfig


def test_cdk_json_context_equals_the_field_defaults() -> None:
    from_json = TriageConfig.from_context(cdk_json_context())
    assert from_json == TriageConfig()


def test_cdk_json_sets_every_setting_so_the_defaults_are_visible_to_deployers() -> None:
    keys = {k for k in cdk_json_context() if k.startswith("triage:")}
    assert keys == set(TriageConfig.context_keys())


def test_values_given_with_dash_c_arrive_as_strings_and_are_coerced() -> None:
    config = TriageConfig.from_context(
        {"triage:maxCapacity": "4", "triage:reviewThreshold": "0.7", "triage:minCapacity": "1"}
    )
    assert (config.max_capacity, config.review_threshold, config.min_capacity) == (4, 0.7, 1)


def test_the_ticket_field_map_comes_from_cdk_json_or_a_json_string_on_the_command_line() -> None:
    assert TriageConfig().ticket_fields == {"id": "id", "text": ["text"]}
    value = '{"id": "ticket_id", "text": ["subject", "description"]}'
    config = TriageConfig.from_context({"triage:ticketFields": value})
    assert config.ticket_fields == {"id": "ticket_id", "text": ["subject", "description"]}
    assert config.ticket_fields_json == '{"id":"ticket_id","text":["subject","description"]}'
    single = TriageConfig.from_context({"triage:ticketFields": {"text": "body"}})
    assert single.ticket_fields == {"id": "id", "text": ["body"]}


def test_autoscaling_can_be_switched_off_from_the_command_line() -> None:
    assert TriageConfig.from_context({"triage:autoscaling": "false"}).autoscaling is False
    assert TriageConfig().autoscaling is True


def test_context_keys_without_the_prefix_are_ignored() -> None:
    config = TriageConfig.from_context({"@aws-cdk/core:checkSecretUsage": True, "maxCapacity": "x"})
    assert config == TriageConfig()


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"triage:maxCapacity": "0"}, "triage:maxCapacity='0': Input should be greater than or equal to 1"),
        ({"triage:minCapacity": 3, "triage:maxCapacity": 2}, "minCapacity (3) exceeds maxCapacity (2)"),
        ({"triage:reviewThreshold": 1.5}, "triage:reviewThreshold=1.5"),
        ({"triage:instanceType": "c6i.large"}, "SageMaker instance type"),
        ({"triage:inputPrefix": "/incoming"}, "triage:inputPrefix='/incoming': must be an S3 key prefix"),
        ({"triage:chunkPrefix": "incoming/chunks/"}, "chunkPrefix ('incoming/chunks/') and inputPrefix"),
        ({"triage:resultsPrefix": "async-results/"}, "overlap"),
        ({"triage:invocationTimeoutSeconds": 7200}, "triage:invocationTimeoutSeconds=7200"),
        ({"triage:requestTtlSeconds": 600}, "requestTtlSeconds must be at least invocationTimeoutSeconds"),
        ({"triage:modelArtifact": "s3://bucket-only"}, "an S3 URI must name an object"),
        ({"triage:modelArtifact": "https://example.com/model.tar.gz"}, "only local paths and s3://"),
        ({"triage:modelArtifact": "artifacts/model"}, "must be a model.tar.gz file"),
        ({"triage:logRetentionDays": 10}, "retention periods"),
        ({"triage:alarmEmail": "not-an-email"}, "triage:alarmEmail"),
        ({"triage:stackName": "1stack"}, "must start with a letter"),
        ({"triage:ticketFields": {"id": "id", "body": ["x"]}}, 'expected {"id": "<field>", "text"'),
        ({"triage:ticketFields": "subject,description"}, "ticketFields='subject,description': not JSON"),
        ({"triage:ticketFields": {"text": ["id"]}}, "field names must differ"),
        ({"triage:maxCapcity": 4}, "triage:maxCapcity: unknown setting (known: triage:stackName"),
    ],
)
def test_bad_values_are_rejected_with_the_key_value_and_reason(context: dict, message: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        TriageConfig.from_context(context)
    assert message in str(excinfo.value)


def test_every_bad_key_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as excinfo:
        TriageConfig.from_context({"triage:maxCapacity": "lots", "triage:chunkSize": 0})
    text = str(excinfo.value)
    assert "triage:maxCapacity='lots'" in text
    assert "triage:chunkSize=0" in text


def test_an_s3_model_artifact_is_recognised() -> None:
    config = TriageConfig.from_context({"triage:modelArtifact": "s3://models/triage/v3/model.tar.gz"})
    assert config.model_artifact_is_s3
    assert not TriageConfig().model_artifact_is_s3


def test_the_config_is_immutable() -> None:
    config = TriageConfig()
    with pytest.raises(ValueError):
        config.max_capacity = 10  # type: ignore[misc]

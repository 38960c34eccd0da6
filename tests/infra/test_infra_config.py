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


def test_the_review_threshold_is_the_artifacts_unless_the_context_sets_one() -> None:
    """cdk.json leaves it null: the container then uses the threshold the model artifact carries
    (chosen on the validation split when it was trained)."""
    assert cdk_json_context()["triage:reviewThreshold"] is None
    assert TriageConfig().review_threshold is None
    for unset in ("", "artifact", None):
        assert TriageConfig.from_context({"triage:reviewThreshold": unset}).review_threshold is None
    assert TriageConfig.from_context({"triage:reviewThreshold": 0}).review_threshold == 0.0


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
        ({"triage:instanceType": "c6i.large"}, "SageMaker endpoint instance type"),
        ({"triage:instanceType": "ml.c6i.lrge"}, "did you mean ml.c6i.large"),
        ({"triage:instanceType": "ml.c7i.huge"}, "ProductionVariantInstanceType"),
        ({"triage:maxDispatchRuns": 16}, "triage:maxDispatchRuns=16"),
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


def test_instance_types_are_checked_against_the_sdks_list_of_endpoint_instance_types() -> None:
    import botocore.session

    from infra.config import endpoint_instance_types

    enum = (
        botocore.session.get_session()
        .get_service_model("sagemaker")
        .shape_for("ProductionVariantInstanceType")
    )
    assert endpoint_instance_types() == frozenset(enum.enum)
    assert TriageConfig.from_context({"triage:instanceType": "ml.g5.xlarge"}).instance_type == "ml.g5.xlarge"


@pytest.mark.parametrize(
    ("instance_type", "nvme"),
    [
        # the instance types the CreateEndpointConfig KmsKeyId text is about: local NVMe storage
        ("ml.g4dn.xlarge", True),
        ("ml.g5.2xlarge", True),
        ("ml.m5d.large", True),
        ("ml.c5d.xlarge", True),
        ("ml.p4d.24xlarge", True),
        ("ml.r6gd.large", True),
        ("ml.trn1.2xlarge", True),
        # EBS-only instance types
        ("ml.c6i.large", False),
        ("ml.c5.xlarge", False),
        ("ml.m5.large", False),
        ("ml.c6gn.large", False),
        ("ml.inf2.xlarge", False),
        ("ml.p3.2xlarge", False),
        ("ml.t2.medium", False),
    ],
)
def test_instance_types_with_local_nvme_storage_are_recognised(instance_type: str, nvme: bool) -> None:
    from infra.config import has_local_nvme_storage

    assert has_local_nvme_storage(instance_type) is nvme


def test_the_nvme_families_listed_by_hand_are_real_endpoint_instance_families() -> None:
    from infra.config import _NVME_FAMILIES, endpoint_instance_types

    families = {t.split(".")[1] for t in endpoint_instance_types()}
    assert families >= _NVME_FAMILIES


def test_the_finalization_lease_is_derived_from_the_longest_finalizer_timeout() -> None:
    assert TriageConfig().finalize_lease_seconds == 900 + 60  # the aggregator's default timeout
    config = TriageConfig.from_context({"triage:aggregatorTimeoutSeconds": 120})
    assert config.finalize_lease_seconds == 300 + 60 and config.sweeper_timeout_seconds == 120
    config = TriageConfig.from_context(
        {"triage:aggregatorTimeoutSeconds": 120, "triage:dispatcherTimeoutSeconds": 600}
    )
    assert config.finalize_lease_seconds == 660


def test_the_job_deadline_is_ttl_plus_invocation_timeout_plus_margin() -> None:
    config = TriageConfig.from_context(
        {
            "triage:requestTtlSeconds": 3600,
            "triage:invocationTimeoutSeconds": 900,
            "triage:jobDeadlineMarginSeconds": 600,
        }
    )
    assert config.job_deadline_seconds == 3600 + 900 + 600

"""What the synthesized template must say: security, the async endpoint, scaling, the pipeline."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from aws_cdk.assertions import Template
from infra_helpers import REPO_ROOT

from ticket_pipeline.settings import DispatcherSettings
from triage_core.records import FieldMap

ROLE_POLICY = "AWS::IAM::Policy"


# --- helpers over the template dict -------------------------------------------------------------


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statements_of_role(synth, role) -> list[dict[str, Any]]:
    """Every statement of every inline policy attached to ``role``."""
    role_id = synth.stack.resolve(role.node.default_child.logical_id)
    found = []
    for resource in synth.of_type(ROLE_POLICY).values():
        if {"Ref": role_id} in resource["Properties"]["Roles"]:
            found.extend(resource["Properties"]["PolicyDocument"]["Statement"])
    return found


def actions_of(statements: list[dict[str, Any]]) -> set[str]:
    return {action for s in statements for action in as_list(s["Action"])}


def statements_with(statements: list[dict[str, Any]], action: str) -> list[dict[str, Any]]:
    return [s for s in statements if action in as_list(s["Action"])]


def resources_text(statement: dict[str, Any]) -> list[str]:
    return [json.dumps(r, sort_keys=True) for r in as_list(statement["Resource"])]


def ref(synth, construct) -> dict[str, str]:
    return {"Ref": synth.logical_id(construct)}


def arn(synth, construct) -> dict[str, list[str]]:
    return {"Fn::GetAtt": [synth.logical_id(construct), "Arn"]}


def endpoint_name_of(synth, stack) -> dict[str, list[str]]:
    return {"Fn::GetAtt": [synth.logical_id(stack.inference.endpoint), "EndpointName"]}


def denies_insecure_transport(policy_document: dict[str, Any]) -> bool:
    return any(
        s["Effect"] == "Deny"
        and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"
        and s["Principal"] in ({"AWS": "*"}, "*")
        for s in policy_document["Statement"]
    )


@pytest.fixture(scope="module")
def template(synth) -> Template:
    return Template.from_json(synth.template)


# --- storage ---------------------------------------------------------------------------------------


def test_every_bucket_blocks_public_access_is_versioned_and_is_kept_on_stack_deletion(synth) -> None:
    buckets = synth.of_type("AWS::S3::Bucket")
    assert len(buckets) == 3
    for logical_id, bucket in buckets.items():
        props = bucket["Properties"]
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }, logical_id
        assert props["VersioningConfiguration"] == {"Status": "Enabled"}, logical_id
        assert bucket["DeletionPolicy"] == "Retain", logical_id
        assert bucket["UpdateReplacePolicy"] == "Retain", logical_id


def test_every_bucket_rejects_requests_without_tls(synth) -> None:
    policies = synth.of_type("AWS::S3::BucketPolicy").values()
    protected = {
        json.dumps(p["Properties"]["Bucket"])
        for p in policies
        if denies_insecure_transport(p["Properties"]["PolicyDocument"])
    }
    assert protected == {json.dumps({"Ref": logical_id}) for logical_id in synth.of_type("AWS::S3::Bucket")}


def test_data_buckets_are_encrypted_with_the_stack_key_and_log_to_the_access_log_bucket(synth, stack) -> None:
    key = arn(synth, stack.encryption.key)
    for bucket in (stack.storage.input_bucket, stack.storage.output_bucket):
        props = synth.properties(bucket)
        sse = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
        assert sse["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key}
        assert sse["BucketKeyEnabled"] is True
        assert props["LoggingConfiguration"]["DestinationBucketName"] == ref(synth, stack.storage.access_logs)


def test_raw_async_results_failures_and_chunks_expire_but_consolidated_results_do_not(synth, stack) -> None:
    def expiring(bucket) -> dict[str, int]:
        rules = synth.properties(bucket)["LifecycleConfiguration"]["Rules"]
        return {r["Prefix"]: r["ExpirationInDays"] for r in rules if {"Prefix", "ExpirationInDays"} <= set(r)}

    assert expiring(stack.storage.output_bucket) == {"async-results/": 30, "async-failures/": 30}
    assert expiring(stack.storage.input_bucket) == {"chunks/": 7}


def test_the_key_rotates_and_is_retained(synth, stack) -> None:
    logical_id = synth.logical_id(stack.encryption.key)
    key = synth.resources[logical_id]
    assert key["Properties"]["EnableKeyRotation"] is True
    assert key["DeletionPolicy"] == "Retain"


# --- notifications and state -----------------------------------------------------------------------


def test_every_topic_is_encrypted_with_the_key_and_denies_publishing_without_tls(synth, stack) -> None:
    topics = synth.of_type("AWS::SNS::Topic")
    assert len(topics) == 5  # success, error, results, alarms, review
    for topic in topics.values():
        assert topic["Properties"]["KmsMasterKeyId"] == arn(synth, stack.encryption.key)
    protected = [
        p["Properties"]["Topics"]
        for p in synth.of_type("AWS::SNS::TopicPolicy").values()
        if denies_insecure_transport(p["Properties"]["PolicyDocument"])
    ]
    assert sorted(json.dumps(t) for t in protected) == sorted(json.dumps([{"Ref": t}]) for t in topics)


def test_jobs_table_is_on_demand_kms_encrypted_with_pitr_and_the_agreed_key_schema(synth, stack) -> None:
    props = synth.properties(stack.job_state.table)
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert props["AttributeDefinitions"][:2] == [
        {"AttributeName": "pk", "AttributeType": "S"},
        {"AttributeName": "sk", "AttributeType": "S"},
    ]
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert props["SSESpecification"] == {
        "KMSMasterKeyId": arn(synth, stack.encryption.key),
        "SSEEnabled": True,
        "SSEType": "KMS",
    }


def test_queues_are_kms_encrypted_and_reject_requests_without_tls(synth, stack) -> None:
    queues = synth.of_type("AWS::SQS::Queue")
    assert len(queues) == 4  # the dead-letter queues of the dispatcher, aggregator, sweeper, corrections
    for queue in queues.values():
        assert queue["Properties"]["KmsMasterKeyId"] == arn(synth, stack.encryption.key)
    protected = [
        p
        for p in synth.of_type("AWS::SQS::QueuePolicy").values()
        if denies_insecure_transport(p["Properties"]["PolicyDocument"])
    ]
    assert len(protected) == 4


def test_jobs_table_has_a_sparse_index_of_open_jobs_by_deadline_named_as_the_code_queries_it(
    synth, stack
) -> None:
    from ticket_pipeline import jobs

    props = synth.properties(stack.job_state.table)
    (index,) = props["GlobalSecondaryIndexes"]
    assert index["IndexName"] == jobs.OPEN_JOBS_INDEX
    assert index["KeySchema"] == [
        {"AttributeName": jobs.OPEN_JOBS_PARTITION, "KeyType": "HASH"},
        {"AttributeName": jobs.DEADLINE_ATTRIBUTE, "KeyType": "RANGE"},
    ]
    assert index["Projection"] == {"ProjectionType": "KEYS_ONLY"}
    types = {a["AttributeName"]: a["AttributeType"] for a in props["AttributeDefinitions"]}
    assert types[jobs.OPEN_JOBS_PARTITION] == "S" and types[jobs.DEADLINE_ATTRIBUTE] == "N"


# --- model and endpoint ----------------------------------------------------------------------------


def test_model_runs_the_container_asset_with_the_model_artifact_and_async_limits(synth, stack) -> None:
    model = synth.properties(stack.inference.model)["PrimaryContainer"]
    assert "container-assets" in json.dumps(model["Image"])
    assert model["Image"]["Fn::Sub"].endswith(":" + stack.image.asset_hash)
    assert model["ModelDataUrl"] == stack.resolve(stack.model_source.artifact.s3_url)
    assert model["Environment"] == {
        "SAGEMAKER_MODEL_SERVER_TIMEOUT": "3600",
        "SAGEMAKER_MODEL_SERVER_WORKERS": "1",
        "TRIAGE_THREADS_PER_WORKER": "2",
        "TRIAGE_MAX_PAYLOAD_MB": "1024",
        "LOG_LEVEL": "INFO",
    }  # no TRIAGE_REVIEW_THRESHOLD: cdk.json leaves it unset, so the artifact's threshold applies


def test_model_container_is_network_isolated(synth, stack) -> None:
    assert synth.properties(stack.inference.model)["EnableNetworkIsolation"] is True


def test_model_is_created_after_the_execution_role_policy(synth, stack) -> None:
    model = synth.resources[synth.logical_id(stack.inference.model)]
    policy = stack.inference.role.node.find_child("DefaultPolicy").node.default_child
    assert synth.stack.resolve(policy.logical_id) in model["DependsOn"]


def test_endpoint_config_is_async_with_outputs_failures_notifications_and_the_key(synth, stack) -> None:
    config = synth.properties(stack.inference.endpoint_config)
    output_bucket = ref(synth, stack.storage.output_bucket)
    key = arn(synth, stack.encryption.key)
    assert "EndpointConfigName" not in config  # every async property replaces the config
    assert config["KmsKeyId"] == key
    assert config["AsyncInferenceConfig"] == {
        "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 2},
        "OutputConfig": {
            "S3OutputPath": {"Fn::Join": ["", ["s3://", output_bucket, "/async-results/"]]},
            "S3FailurePath": {"Fn::Join": ["", ["s3://", output_bucket, "/async-failures/"]]},
            "KmsKeyId": key,
            "NotificationConfig": {
                "SuccessTopic": ref(synth, stack.notifications.success_topic),
                "ErrorTopic": ref(synth, stack.notifications.error_topic),
            },
        },
    }
    (variant,) = config["ProductionVariants"]
    assert variant["InstanceType"] == "ml.c6i.large"
    assert variant["VariantName"] == "AllTraffic"
    assert variant["ModelName"] == {"Fn::GetAtt": [synth.logical_id(stack.inference.model), "ModelName"]}


def test_endpoint_uses_the_generated_endpoint_config(template: Template, synth, stack) -> None:
    template.has_resource_properties(
        "AWS::SageMaker::Endpoint",
        {
            "EndpointConfigName": {
                "Fn::GetAtt": [synth.logical_id(stack.inference.endpoint_config), "EndpointConfigName"]
            }
        },
    )


def test_execution_role_has_no_managed_policies_and_only_the_permissions_it_needs(synth, stack) -> None:
    role = synth.properties(stack.inference.role)
    assert "ManagedPolicyArns" not in role
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "sagemaker.amazonaws.com"
    }
    statements = statements_of_role(synth, stack.inference.role)
    actions = actions_of(statements)
    assert not {a for a in actions if a.endswith(":*") or a == "*"}
    assert not {a for a in actions if a.startswith(("sagemaker:", "dynamodb:", "iam:", "sqs:"))}
    assert "s3:DeleteObject*" not in actions
    # writes go only to the two async prefixes of the output bucket
    put_resources = {r for s in statements_with(statements, "s3:PutObject") for r in resources_text(s)}
    output = synth.logical_id(stack.storage.output_bucket)
    assert put_resources == {
        json.dumps({"Fn::Join": ["", [{"Fn::GetAtt": [output, "Arn"]}, f"/{prefix}*"]]}, sort_keys=True)
        for prefix in ("async-results/", "async-failures/")
    }
    # reads: the model archive object itself (not the whole CDK assets bucket) and the chunks
    (reads,) = statements_with(statements, "s3:GetObject")
    model_key = model_archive_key(synth)
    assert sorted(resources_text(reads)) == sorted(
        [
            json.dumps(
                {
                    "Fn::Join": [
                        "",
                        [
                            "arn:",
                            {"Ref": "AWS::Partition"},
                            ":s3:::",
                            {"Fn::Sub": "cdk-hnb659fds-assets-${AWS::AccountId}-${AWS::Region}"},
                            f"/{model_key}",
                        ],
                    ]
                },
                sort_keys=True,
            ),
            json.dumps(
                {"Fn::Join": ["", [arn(synth, stack.storage.input_bucket), "/chunks/*"]]}, sort_keys=True
            ),
        ]
    )
    assert not {a for a in actions if a.startswith(("s3:List", "s3:GetBucket", "s3:Abort"))}
    # the key: decrypt what it reads, data keys for what it writes and publishes; never
    # kms:Encrypt / kms:ReEncrypt* (SageMaker does not call them)
    kms_actions = {a for a in actions if a.startswith("kms:")}
    assert kms_actions == {"kms:Decrypt", "kms:GenerateDataKey", "kms:GenerateDataKey*"}
    publish = {r for s in statements_with(statements, "sns:Publish") for r in resources_text(s)}
    assert publish == {
        json.dumps(ref(synth, stack.notifications.success_topic)),
        json.dumps(ref(synth, stack.notifications.error_topic)),
    }
    (metrics,) = statements_with(statements, "cloudwatch:PutMetricData")
    assert "cloudwatch:namespace" in metrics["Condition"]["StringLike"]


def test_the_execution_role_reads_the_model_archive_as_aws_scopes_it_for_create_model(synth, stack) -> None:
    """What the execution role needs to download ``ModelDataUrl``, per AWS (Amazon SageMaker
    Developer Guide, "How to use SageMaker execution roles", section "CreateModel API: Execution
    Role Permissions"): its policy scoped to resources has, for S3, only

        "Action": ["s3:GetObject"], "Resource": ["arn:aws:s3:::inputbucket/object"]

    with "Scope S3 permissions to objects that you specify in the PrimaryContainer.ModelDataUrl in
    a CreateModel request" ("s3:ListBucket" appears only in the unscoped ``"Resource": "*"``
    variant). So: s3:GetObject on exactly the object ModelDataUrl names, and no s3:ListBucket."""
    from iam_replay import Resolver

    resolve = Resolver({}, synth.template)
    url = resolve(synth.properties(stack.inference.model)["PrimaryContainer"]["ModelDataUrl"])
    assert url.startswith("s3://cdk-hnb659fds-assets-123456789012-us-east-1/") and url.endswith(".tar.gz")
    statements = statements_of_role(synth, stack.inference.role)
    model_reads = [  # every grant on the assets bucket (it holds every asset of the account)
        (action, resolve(resource))
        for st in statements
        for action in as_list(st["Action"])
        for resource in as_list(st["Resource"])
        if "cdk-hnb659fds-assets-" in json.dumps(resource)
    ]
    assert model_reads == [("s3:GetObject", "arn:aws:s3:::" + url.removeprefix("s3://"))]
    assert not [a for a in actions_of(statements) if a.startswith("s3:List")]


def model_archive_key(synth) -> str:
    """The S3 object key the asset manifest uploads the model archive to."""
    manifest = json.loads((synth.outdir / f"{synth.stack.artifact_id}.assets.json").read_text())
    (archive,) = [
        f
        for f in manifest["files"].values()
        if f["source"].get("packaging") == "file" and not f["source"]["path"].endswith(".json")
    ]
    (destination,) = archive["destinations"].values()
    return destination["objectKey"]


def test_the_model_archive_is_uploaded_under_a_key_ending_in_tar_gz_and_is_what_model_data_url_names(
    synth, stack
) -> None:
    """ModelDataUrl: "a single gzip compressed tar archive (.tar.gz suffix)" (SageMaker API
    Reference, ContainerDefinition); s3_assets.Asset would upload it as <hash>.gz
    (aws/aws-cdk#30257). The asset manifest's object key, the file it uploads (byte for byte the
    archive given) and the template's ModelDataUrl agree."""
    manifest = json.loads((synth.outdir / f"{synth.stack.artifact_id}.assets.json").read_text())
    key = model_archive_key(synth)
    assert re.fullmatch(r"[0-9a-f]{64}\.tar\.gz", key)
    (archive,) = [
        f for f in manifest["files"].values() if key in [d["objectKey"] for d in f["destinations"].values()]
    ]
    assert archive["source"]["packaging"] == "file"
    assert (synth.outdir / archive["source"]["path"]).read_bytes() == synth.model_tarball.read_bytes()
    url = synth.properties(stack.inference.model)["PrimaryContainer"]["ModelDataUrl"]
    assert url == {"Fn::Sub": f"s3://cdk-hnb659fds-assets-${{AWS::AccountId}}-${{AWS::Region}}/{key}"}


@pytest.mark.parametrize(
    ("instance_type", "architecture"),
    [
        *[
            (t, "arm64")
            for t in (
                "ml.c7g.large",
                "ml.m6g.xlarge",
                "ml.r6gd.large",
                "ml.c6gn.large",
                "ml.p6e-gb200.36xlarge",
            )
        ],
        *[
            (t, "x86_64")
            for t in ("ml.c6i.large", "ml.m5.large", "ml.g5.xlarge", "ml.inf2.xlarge", "ml.c7i.large")
        ],
    ],
)
def test_graviton_families_are_arm64_and_the_others_x86(instance_type: str, architecture: str) -> None:
    """The processor letter after the generation: g = AWS Graviton (the families
    aws/aws-graviton-getting-started lists: C6g[d], M6g[d], R6g[d], C6gn, C7g[d][n], M7g[d], ...)."""
    from infra.config import endpoint_instance_types, instance_architecture

    assert instance_type in endpoint_instance_types()
    assert instance_architecture(instance_type) == architecture


def test_the_default_instance_type_gets_an_amd64_image(synth) -> None:
    manifest = json.loads((synth.outdir / f"{synth.stack.artifact_id}.assets.json").read_text())
    (image,) = manifest["dockerImages"].values()
    assert image["source"]["platform"] == "linux/amd64"


@pytest.mark.parametrize(("instance_type", "platform"), [("ml.c7g.large", "linux/arm64")])
def test_the_image_is_built_for_the_architecture_of_the_instance_type(
    synth, tmp_path, instance_type: str, platform: str
) -> None:
    """Graviton families (processor letter g: c7g, m6g, r6g, ...) run arm64 images only; an amd64
    image fails at start. The image asset's platform follows the configured instance type."""
    from aws_cdk import App
    from infra_helpers import cdk_json_context

    from infra.config import TriageConfig
    from infra.stack import TicketTriageStack

    context = {
        **cdk_json_context(),
        "triage:modelArtifact": str(synth.model_tarball),
        "triage:instanceType": instance_type,
    }
    app = App(context=context, outdir=str(tmp_path))
    stack = TicketTriageStack(app, "T", config=TriageConfig.from_context(context), repo_root=synth.repo_root)
    app.synth()
    manifest = json.loads((tmp_path / f"{stack.artifact_id}.assets.json").read_text())
    (image,) = manifest["dockerImages"].values()
    assert image["source"]["platform"] == platform
    assert instance_type in json.dumps(
        json.loads((tmp_path / f"{stack.artifact_id}.template.json").read_text())
    )


# --- autoscaling -----------------------------------------------------------------------------------


def test_scalable_target_scales_the_variant_between_zero_and_the_configured_max(synth, stack) -> None:
    target = synth.properties(stack.autoscaling.target)
    assert target["ServiceNamespace"] == "sagemaker"
    assert target["ScalableDimension"] == "sagemaker:variant:DesiredInstanceCount"
    assert (target["MinCapacity"], target["MaxCapacity"]) == (0, 2)
    endpoint_name = endpoint_name_of(synth, stack)
    assert target["ResourceId"] == {"Fn::Join": ["", ["endpoint/", endpoint_name, "/variant/AllTraffic"]]}
    assert "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint" in json.dumps(target["RoleARN"])


def test_target_tracking_follows_backlog_per_instance_of_this_endpoint(template, synth, stack) -> None:
    endpoint_name = endpoint_name_of(synth, stack)
    template.has_resource_properties(
        "AWS::ApplicationAutoScaling::ScalingPolicy",
        {
            "PolicyType": "TargetTrackingScaling",
            "ScalingTargetId": ref(synth, stack.autoscaling.target),
            "TargetTrackingScalingPolicyConfiguration": {
                "CustomizedMetricSpecification": {
                    "Namespace": "AWS/SageMaker",
                    "MetricName": "ApproximateBacklogSizePerInstance",
                    "Dimensions": [{"Name": "EndpointName", "Value": endpoint_name}],
                    "Statistic": "Average",
                },
                "TargetValue": 5,
                "ScaleInCooldown": 600,
                "ScaleOutCooldown": 300,
            },
        },
    )


def test_a_backlog_without_capacity_alarm_steps_the_endpoint_up_from_zero(synth, stack) -> None:
    step_id, step = next(
        (k, r)
        for k, r in synth.of_type("AWS::ApplicationAutoScaling::ScalingPolicy").items()
        if r["Properties"]["PolicyType"] == "StepScaling"
    )
    config = step["Properties"]["StepScalingPolicyConfiguration"]
    assert config["AdjustmentType"] == "ChangeInCapacity"
    assert config["StepAdjustments"] == [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}]
    assert step["Properties"]["ScalingTargetId"] == ref(synth, stack.autoscaling.target)

    alarm = synth.properties(stack.autoscaling.has_backlog_without_capacity)
    assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/SageMaker", "HasBacklogWithoutCapacity")
    assert alarm["Dimensions"] == [{"Name": "EndpointName", "Value": endpoint_name_of(synth, stack)}]
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert alarm["Threshold"] == 1
    assert alarm["AlarmActions"] == [{"Ref": step_id}]


# --- Lambdas ---------------------------------------------------------------------------------------

AGGREGATOR_ENV = {
    "JOBS_TABLE",
    "OUTPUT_BUCKET",
    "RESULTS_PREFIX",
    "RESULTS_TOPIC_ARN",
    "FINALIZE_LEASE_SECONDS",
    "FUNCTION_TIMEOUT_SECONDS",
    "POWERTOOLS_METRICS_NAMESPACE",
    "POWERTOOLS_SERVICE_NAME",
    "LOG_LEVEL",
}
# the review queue and the drift numbers (lambda/ticket_pipeline/review.py): every function that
# finalizes jobs; TRAINING_MIX when the model artifact carries one
REVIEW_ENV = {"REVIEW_TOPIC_ARN", "REVIEW_PREFIX", "OUT_OF_SCOPE_BELOW", "DRIFT_MIN_TICKETS"}
FINALIZER_ENV = AGGREGATOR_ENV | REVIEW_ENV
DISPATCHER_ENV = FINALIZER_ENV | {
    "ENDPOINT_NAME",
    "CHUNK_PREFIX",
    "CHUNK_SIZE",
    "MAX_FILE_MB",
    "MAX_TICKETS_PER_FILE",
    "TICKET_FIELDS",
    "REQUEST_TTL_SECONDS",
    "INVOCATION_TIMEOUT_SECONDS",
    "JOB_DEADLINE_MARGIN_SECONDS",
    "DISPATCH_THREADS",
    "MAX_DISPATCH_RUNS",
}


@pytest.mark.parametrize(
    ("name", "handler", "env_keys", "timeout", "concurrency"),
    [
        ("dispatcher", "ticket_pipeline.dispatcher.handler", DISPATCHER_ENV, 300, 5),
        ("aggregator", "ticket_pipeline.aggregator.handler", FINALIZER_ENV, 900, 5),
        ("sweeper", "ticket_pipeline.sweeper.handler", FINALIZER_ENV, 900, 1),
    ],
)
def test_each_lambda_has_its_handler_env_dlq_concurrency_timeout_and_kms_log_group(
    synth, stack, name, handler, env_keys, timeout, concurrency
) -> None:
    fn = getattr(stack.pipeline, name)
    props = synth.properties(fn.function)
    assert props["Handler"] == handler
    assert props["Runtime"] in ("python3.12", "python3.13")
    assert set(props["Environment"]["Variables"]) - {"TRAINING_MIX"} == env_keys
    assert props["Timeout"] == timeout
    assert props["Environment"]["Variables"]["FUNCTION_TIMEOUT_SECONDS"] == str(timeout)
    assert props["ReservedConcurrentExecutions"] == concurrency
    assert props["EphemeralStorage"] == {"Size": 2048}
    assert props["DeadLetterConfig"] == {"TargetArn": arn(synth, fn.dead_letter_queue)}
    assert props["Role"] == arn(synth, fn.role)
    assert props["LoggingConfig"] == {"LogGroup": ref(synth, fn.log_group)}
    assert props["KmsKeyArn"] == arn(synth, stack.encryption.key)  # environment variables
    log_group = synth.properties(fn.log_group)
    assert log_group["RetentionInDays"] == 30
    assert log_group["KmsKeyId"] == arn(synth, stack.encryption.key)
    (layer,) = props["Layers"]
    layer_text = json.dumps(layer)
    assert "AWSLambdaPowertoolsPythonV3-python313-x86_64:27" in layer_text
    assert '{"Ref": "AWS::Region"}' in layer_text  # region from the deployment, not hard-coded


def test_dispatcher_env_points_at_this_endpoint_table_bucket_and_topic(synth, stack) -> None:
    env = synth.properties(stack.pipeline.dispatcher.function)["Environment"]["Variables"]
    assert env["ENDPOINT_NAME"] == endpoint_name_of(synth, stack)
    assert env["JOBS_TABLE"] == ref(synth, stack.job_state.table)
    assert env["OUTPUT_BUCKET"] == ref(synth, stack.storage.output_bucket)
    assert env["RESULTS_TOPIC_ARN"] == ref(synth, stack.notifications.results_topic)
    assert (env["CHUNK_PREFIX"], env["RESULTS_PREFIX"]) == ("chunks/", "results/")
    assert (env["CHUNK_SIZE"], env["MAX_FILE_MB"], env["MAX_TICKETS_PER_FILE"]) == ("500", "1024", "2000000")
    assert (env["REQUEST_TTL_SECONDS"], env["INVOCATION_TIMEOUT_SECONDS"]) == ("21600", "3600")
    assert (env["JOB_DEADLINE_MARGIN_SECONDS"], env["DISPATCH_THREADS"], env["MAX_DISPATCH_RUNS"]) == (
        "1800",
        "8",
        "12",
    )
    # the field map (triage:ticketFields) as the dispatcher's own settings read it
    settings = DispatcherSettings.from_env(
        {
            "JOBS_TABLE": "jobs",
            "OUTPUT_BUCKET": "out",
            "RESULTS_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:results",
            "ENDPOINT_NAME": "endpoint",
            "TICKET_FIELDS": env["TICKET_FIELDS"],
        }
    )
    assert settings.fields == FieldMap("id", ("text",))


def test_the_finalization_lease_outlives_every_function_that_finalizes(synth, stack) -> None:
    """Dispatcher, aggregator and sweeper all finalize jobs: the lease they share must be longer
    than the longest of their timeouts, or a second finalizer takes over a live one."""
    functions = [synth.properties(fn.function) for fn in stack.pipeline.functions.values()]
    leases = {int(f["Environment"]["Variables"]["FINALIZE_LEASE_SECONDS"]) for f in functions}
    assert leases == {max(f["Timeout"] for f in functions) + 60}


def test_the_lambda_settings_accept_the_environment_the_stack_gives_each_function(synth, stack) -> None:
    from ticket_pipeline.settings import AggregatorSettings, DispatcherSettings, SweeperSettings

    placeholders = {
        "JOBS_TABLE": "jobs-table",
        "OUTPUT_BUCKET": "output-bucket",
        "RESULTS_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:results",
        "REVIEW_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:review",
        "ENDPOINT_NAME": "endpoint",
    }
    for fn, settings_class in (
        (stack.pipeline.dispatcher, DispatcherSettings),
        (stack.pipeline.aggregator, AggregatorSettings),
        (stack.pipeline.sweeper, SweeperSettings),
    ):
        env = synth.properties(fn.function)["Environment"]["Variables"]
        resolved = {k: v if isinstance(v, str) else placeholders[k] for k, v in env.items()}
        settings = settings_class.from_env(resolved)
        assert settings.finalize_lease_seconds > settings.function_timeout_seconds


def test_the_dispatcher_may_invoke_itself_to_continue_a_long_file_and_nothing_else(synth, stack) -> None:
    statements = statements_of_role(synth, stack.pipeline.dispatcher.role)
    (invoke,) = statements_with(statements, "lambda:InvokeFunction")
    assert invoke["Resource"] == arn(synth, stack.pipeline.dispatcher.function)
    for fn in (stack.pipeline.aggregator, stack.pipeline.sweeper):
        assert not statements_with(statements_of_role(synth, fn.role), "lambda:InvokeFunction")


def test_the_sweeper_runs_on_a_schedule(synth, stack) -> None:
    rule = synth.properties(stack.pipeline.sweep_schedule)
    assert rule["ScheduleExpression"] == "rate(5 minutes)"
    assert rule["State"] == "ENABLED"
    (target,) = rule["Targets"]
    assert target["Arn"] == arn(synth, stack.pipeline.sweeper.function)
    permissions = [
        p["Properties"]
        for p in synth.of_type("AWS::Lambda::Permission").values()
        if p["Properties"]["FunctionName"] == arn(synth, stack.pipeline.sweeper.function)
    ]
    assert [p["Principal"] for p in permissions] == ["events.amazonaws.com"]
    assert permissions[0]["SourceArn"] == arn(synth, stack.pipeline.sweep_schedule)


def test_dispatcher_is_triggered_by_objects_created_under_the_input_prefix_only(synth, stack) -> None:
    (notifications,) = synth.of_type("Custom::S3BucketNotifications").values()
    props = notifications["Properties"]
    assert props["BucketName"] == ref(synth, stack.storage.input_bucket)
    configs = props["NotificationConfiguration"]["LambdaFunctionConfigurations"]
    by_function = {json.dumps(c["LambdaFunctionArn"], sort_keys=True): c for c in configs}
    assert len(configs) == len(by_function) == 2  # the dispatcher's and the corrections function's
    config = by_function[json.dumps(arn(synth, stack.pipeline.dispatcher.function), sort_keys=True)]
    assert config["Events"] == ["s3:ObjectCreated:*"]
    assert config["Filter"] == {"Key": {"FilterRules": [{"Name": "prefix", "Value": "incoming/"}]}}


def test_correction_files_reach_only_the_corrections_function(synth, stack) -> None:
    """Its own notification on ``corrections/``, a prefix that neither contains nor is contained
    in the dispatcher's (S3 refuses overlapping filters for one event type, and a correction file
    must never be read as tickets)."""
    (notifications,) = synth.of_type("Custom::S3BucketNotifications").values()
    configs = notifications["Properties"]["NotificationConfiguration"]["LambdaFunctionConfigurations"]
    corrections = arn(synth, stack.pipeline.corrections.function)
    (config,) = [c for c in configs if c["LambdaFunctionArn"] == corrections]
    assert config["Events"] == ["s3:ObjectCreated:*"]
    assert config["Filter"] == {"Key": {"FilterRules": [{"Name": "prefix", "Value": "corrections/"}]}}
    prefixes = [c["Filter"]["Key"]["FilterRules"][0]["Value"] for c in configs]
    assert not any(a != b and a.startswith(b) for a in prefixes for b in prefixes)
    env = synth.properties(stack.pipeline.corrections.function)["Environment"]["Variables"]
    assert env["CORRECTIONS_PREFIX"] == "corrections/" and env["INPUT_PREFIX"] == "incoming/"
    # the labels come from the archive the endpoint serves (the same S3 object as ModelDataUrl)
    model_url = synth.properties(stack.inference.model)["PrimaryContainer"]["ModelDataUrl"]
    assert env["LABELS_LOCATION"] == model_url


def test_the_corrections_role_reads_its_files_the_sources_and_results_and_writes_only_its_reports(
    synth, stack
) -> None:
    statements = statements_of_role(synth, stack.pipeline.corrections.role)
    actions = actions_of(statements)
    assert {a for a in actions if a.startswith("dynamodb:")} == {
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
    }
    writes = statements_with(statements, "s3:PutObject")
    assert len(writes) == 1 and "corrections/*" in json.dumps(writes[0]["Resource"])
    assert not any(a.startswith(("sns:", "sagemaker:", "lambda:")) for a in actions)


def test_aggregator_is_subscribed_to_the_success_and_error_topics(synth, stack) -> None:
    subscriptions = synth.of_type("AWS::SNS::Subscription").values()
    aggregator = arn(synth, stack.pipeline.aggregator.function)
    topics = [s["Properties"]["TopicArn"] for s in subscriptions if s["Properties"]["Endpoint"] == aggregator]
    expected = (stack.notifications.success_topic, stack.notifications.error_topic)
    assert sorted(json.dumps(t) for t in topics) == sorted(json.dumps(ref(synth, t)) for t in expected)
    assert all(s["Properties"]["Protocol"] == "lambda" for s in subscriptions)


def test_dispatcher_may_invoke_only_this_endpoint_and_only_asynchronously(synth, stack) -> None:
    statements = statements_of_role(synth, stack.pipeline.dispatcher.role)
    sagemaker_actions = {a for a in actions_of(statements) if a.startswith("sagemaker:")}
    assert sagemaker_actions == {"sagemaker:InvokeEndpointAsync"}
    (invoke,) = statements_with(statements, "sagemaker:InvokeEndpointAsync")
    assert invoke["Resource"] == ref(synth, stack.inference.endpoint)  # Ref of an endpoint is its ARN


def under(bucket_arn, prefix: str) -> str:
    return json.dumps({"Fn::Join": ["", [bucket_arn, f"/{prefix}*"]]}, sort_keys=True)


def objects_with(statements: list[dict[str, Any]], action: str) -> set[str]:
    return {r for s in statements_with(statements, action) for r in resources_text(s)}


def test_dispatcher_reads_incoming_and_outputs_writes_chunks_and_results_only(synth, stack) -> None:
    """Exactly what the local runs record it calling (tests/iam_replay.py): versioned reads of
    uploads, reads of the async outputs and results/, writes of chunks/ and results/; no bucket
    listing or metadata, no object-lock or tagging writes."""
    statements = statements_of_role(synth, stack.pipeline.dispatcher.role)
    actions = actions_of(statements)
    assert not {a for a in actions if a.endswith(":*") or a == "*"}
    assert not {a for a in actions if a.startswith(("s3:List", "s3:GetBucket", "s3:Abort", "s3:Delete"))}
    s3_actions = {a for a in actions if a.startswith("s3:")}
    assert s3_actions == {"s3:GetObjectVersion", "s3:GetObject", "s3:PutObject"}
    input_arn = arn(synth, stack.storage.input_bucket)
    output_arn = arn(synth, stack.storage.output_bucket)
    assert objects_with(statements, "s3:GetObjectVersion") == {under(input_arn, "incoming/")}
    # it finalizes jobs that never reached the endpoint, and those whose every chunk reported
    # before it finished (their review queue: the chunks' texts, review/, the review topic)
    assert objects_with(statements, "s3:GetObject") == {
        under(output_arn, "results/"),
        under(output_arn, "async-results/"),
        under(output_arn, "async-failures/"),
        under(input_arn, "chunks/"),
    }
    assert objects_with(statements, "s3:PutObject") == {
        under(input_arn, "chunks/"),
        under(output_arn, "results/"),
        under(output_arn, "review/"),
    }
    publish = objects_with(statements, "sns:Publish")
    assert publish == {
        json.dumps(ref(synth, stack.notifications.results_topic)),
        json.dumps(ref(synth, stack.notifications.review_topic)),
    }
    dynamodb = {a for a in actions if a.startswith("dynamodb:")}
    assert dynamodb == {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query", "dynamodb:UpdateItem"}
    assert objects_with(statements, "dynamodb:PutItem") == {json.dumps(arn(synth, stack.job_state.table))}


@pytest.mark.parametrize("name", ["aggregator", "sweeper"])
def test_finalizers_read_async_outputs_and_results_write_results_and_cannot_invoke(
    synth, stack, name
) -> None:
    statements = statements_of_role(synth, getattr(stack.pipeline, name).role)
    actions = actions_of(statements)
    assert not {a for a in actions if a.startswith(("sagemaker:", "lambda:"))}
    assert not {a for a in actions if a.startswith(("s3:List", "s3:GetBucket", "s3:Abort", "s3:Delete"))}
    output_arn = arn(synth, stack.storage.output_bucket)
    input_arn = arn(synth, stack.storage.input_bucket)
    assert objects_with(statements, "s3:GetObject") == {
        under(output_arn, "async-results/"),
        under(output_arn, "async-failures/"),
        under(output_arn, "results/"),  # the dispatcher's rejected records
        under(input_arn, "chunks/"),  # the flagged tickets' texts, for the review queue
    }
    # the sweeper reads the ticket file of a job whose dispatch never finished (every record is
    # accounted for), the version the job names, and only under the input prefix
    versions = {under(input_arn, "incoming/")} if name == "sweeper" else set()
    assert objects_with(statements, "s3:GetObjectVersion") == versions
    assert objects_with(statements, "s3:PutObject") == {
        under(output_arn, "results/"),
        under(output_arn, "review/"),
    }
    assert objects_with(statements, "sns:Publish") == {
        json.dumps(ref(synth, stack.notifications.results_topic)),
        json.dumps(ref(synth, stack.notifications.review_topic)),
    }
    dynamodb = {a for a in actions if a.startswith("dynamodb:")}
    assert dynamodb == {"dynamodb:GetItem", "dynamodb:Query", "dynamodb:UpdateItem"}
    table = arn(synth, stack.job_state.table)
    index = {"Fn::Join": ["", [table, "/index/OpenJobsByDeadline"]]}
    queried = objects_with(statements, "dynamodb:Query")
    assert queried == (
        {json.dumps(table), json.dumps(index, sort_keys=True)} if name == "sweeper" else {json.dumps(table)}
    )


@pytest.mark.parametrize("name", ["dispatcher", "aggregator", "sweeper"])
def test_each_function_uses_the_table_key_only_to_decrypt_and_only_through_dynamodb(
    synth, stack, name
) -> None:
    """The jobs table is encrypted with the stack key (customer managed). What DynamoDB does with
    that key as the caller, per AWS (Amazon DynamoDB Developer Guide, "DynamoDB encryption at rest
    usage notes", section "Monitoring DynamoDB interaction with AWS KMS"):

    "When you access an encrypted DynamoDB table, DynamoDB needs to decrypt the table key so that
    it can decrypt the keys below it in the hierarchy. [...] DynamoDB sends a Decrypt request to
    AWS KMS that specifies the KMS key for the table. The event that records the Decrypt operation
    is similar to the following example event. The user is the principal in your AWS account who
    is accessing the table."

    The other key operations are not the caller's: GenerateDataKey "The user is the DynamoDB
    service account"; CreateGrant "The principal in the CreateGrant request is the user who
    created the table"; DescribeKey "to determine whether the KMS key you selected exists". The
    list "At a minimum, DynamoDB requires the following permissions on a customer managed key:
    kms:Encrypt, kms:Decrypt, kms:ReEncrypt*, kms:GenerateDataKey*, kms:DescribeKey,
    kms:CreateGrant" is for "the principal who makes the selection" (the deploy role, through the
    key policy's account statement), not for the functions. So each function gets kms:Decrypt on
    the key with kms:ViaService = dynamodb.<region>.amazonaws.com, and nothing of
    grant_encrypt_decrypt's kms:Encrypt / kms:ReEncrypt*. (Its other key use is the S3 objects
    and the encrypted results topic it reads, writes and publishes to.)"""
    table = synth.properties(stack.job_state.table)
    key = arn(synth, stack.encryption.key)
    assert table["SSESpecification"] == {"KMSMasterKeyId": key, "SSEEnabled": True, "SSEType": "KMS"}
    statements = statements_of_role(synth, getattr(stack.pipeline, name).role)
    kms_actions = {a for a in actions_of(statements) if a.startswith("kms:")}
    assert kms_actions == {"kms:Decrypt", "kms:GenerateDataKey", "kms:GenerateDataKey*"}
    via_dynamodb = [s for s in statements if "kms:ViaService" in json.dumps(s.get("Condition", {}))]
    (statement,) = via_dynamodb
    assert statement["Action"] == "kms:Decrypt" and statement["Resource"] == key
    assert statement["Condition"] == {
        "StringEquals": {
            "kms:ViaService": {"Fn::Join": ["", ["dynamodb.", {"Ref": "AWS::Region"}, ".amazonaws.com"]]}
        }
    }


@pytest.mark.parametrize("name", ["dispatcher", "aggregator", "sweeper"])
def test_each_function_may_write_its_own_log_group_and_nothing_else_of_cloudwatch_logs(
    synth, stack, name
) -> None:
    """ "Your execution role needs the following permissions to upload logs to CloudWatch Logs:
    logs:CreateLogGroup, logs:CreateLogStream, logs:PutLogEvents" (AWS Lambda Developer Guide,
    "Sending Lambda function logs to CloudWatch Logs"). The stack creates the group and points the
    function at it (LoggingConfig), so the role needs the other two, on that group only: its
    ``Arn`` attribute is ``arn:...:log-group:<name>:*``, which covers its streams."""
    fn = getattr(stack.pipeline, name)
    statements = statements_of_role(synth, fn.role)
    logs = [s for s in statements if any(a.startswith("logs:") for a in as_list(s["Action"]))]
    assert len(logs) == 1
    (statement,) = logs
    assert statement["Effect"] == "Allow" and "Condition" not in statement
    assert sorted(as_list(statement["Action"])) == ["logs:CreateLogStream", "logs:PutLogEvents"]
    assert statement["Resource"] == arn(synth, fn.log_group)
    assert synth.properties(fn.function)["LoggingConfig"] == {"LogGroup": ref(synth, fn.log_group)}
    # the function waits for its role's policy, so its first invocation can already log
    function_id = synth.logical_id(fn.function)
    policy_id = synth.logical_id(fn.role.node.find_child("DefaultPolicy"))
    assert policy_id in synth.resources[function_id]["DependsOn"]


def test_lambda_roles_have_no_managed_policies(synth, stack) -> None:
    for fn in stack.pipeline.functions.values():
        assert "ManagedPolicyArns" not in synth.properties(fn.role)


# --- operations ------------------------------------------------------------------------------------


def topic_policy_statements(synth, topic_ref: dict[str, str]) -> list[dict[str, Any]]:
    return [
        statement
        for policy in synth.of_type("AWS::SNS::TopicPolicy").values()
        if topic_ref in policy["Properties"]["Topics"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def cloudwatch_may_publish(statements: list[dict[str, Any]], alarm_arn: dict[str, Any]) -> bool:
    """An Allow for cloudwatch.amazonaws.com to sns:Publish, from this account, for this alarm."""
    for s in statements:
        condition = s.get("Condition", {})
        if (
            s["Effect"] == "Allow"
            and s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}
            and "sns:Publish" in as_list(s["Action"])
            and condition.get("StringEquals", {}).get("aws:SourceAccount") == {"Ref": "AWS::AccountId"}
            and alarm_arn in as_list(condition.get("ArnLike", {}).get("aws:SourceArn", []))
        ):
            return True
    return False


def test_every_topic_an_alarm_notifies_lets_cloudwatch_publish_for_that_alarm(synth, stack) -> None:
    """Read from the template: each alarm action that is an SNS topic, and that topic's policies.
    enforce_ssl's topic policy replaces SNS's default one, so without an explicit statement for
    the CloudWatch service principal no alarm notification is ever delivered."""
    topics = synth.of_type("AWS::SNS::Topic")
    notified = 0
    for alarm_id, alarm in synth.of_type("AWS::CloudWatch::Alarm").items():
        props = alarm["Properties"]
        for action in (
            props.get("AlarmActions", [])
            + props.get("OKActions", [])
            + props.get("InsufficientDataActions", [])
        ):
            if isinstance(action, dict) and action.get("Ref") in topics:
                notified += 1
                statements = topic_policy_statements(synth, action)
                assert cloudwatch_may_publish(statements, {"Fn::GetAtt": [alarm_id, "Arn"]}), alarm_id
    assert notified >= 2 * len(stack.monitoring.alarms)
    # the topic is KMS-encrypted: CloudWatch may also use the key, for this account only
    key_statements = synth.properties(stack.encryption.key)["KeyPolicy"]["Statement"]
    (cloudwatch,) = [
        s for s in key_statements if s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}
    ]
    assert {"kms:Decrypt", "kms:GenerateDataKey*"} <= set(as_list(cloudwatch["Action"]))
    assert cloudwatch["Condition"]["StringEquals"]["aws:SourceAccount"] == {"Ref": "AWS::AccountId"}


def test_alarms_cover_the_endpoint_the_lambdas_their_dlqs_and_the_jobs(synth, stack) -> None:
    alarm_topic = ref(synth, stack.notifications.alarm_topic)
    watched = {}
    for alarm_id, alarm in stack.monitoring.alarms.items():
        props = synth.properties(alarm)
        assert props["AlarmActions"] == [alarm_topic], alarm_id
        assert props["OKActions"] == [alarm_topic], alarm_id
        if "Metrics" in props:  # a metric-math alarm: the metrics it reads
            metrics = [m["MetricStat"]["Metric"] for m in props["Metrics"] if "MetricStat" in m]
            watched[alarm_id] = tuple(sorted((m["Namespace"], m["MetricName"]) for m in metrics))
            continue
        watched[alarm_id] = (props["Namespace"], props["MetricName"])
    assert watched["OldestRequestAge"] == ("AWS/SageMaker", "ApproximateAgeOfOldestRequest")
    assert watched["InvocationFailures"] == ("AWS/SageMaker", "InvocationFailures")
    assert watched["NotificationFailures"] == ("AWS/SageMaker", "NotificationFailures")
    assert watched["Invocation5xx"] == ("AWS/SageMaker", "Invocation5XXErrors")
    assert watched["ReviewedAccuracy"] == (
        ("TicketTriage", "ReviewedCorrect"),
        ("TicketTriage", "ReviewedTickets"),
    )
    for fn_id in ("Dispatcher", "Aggregator", "Sweeper", "Corrections"):
        assert watched[f"{fn_id}Errors"] == ("AWS/Lambda", "Errors")
        assert watched[f"{fn_id}DeadLetterErrors"] == ("AWS/Lambda", "DeadLetterErrors")
        assert watched[f"{fn_id}DeadLetters"] == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
    assert watched["OverdueJobs"] == ("TicketTriage", "OverdueJobs")
    assert watched["InvalidNotifications"] == ("TicketTriage", "InvalidNotifications")
    assert watched["UnknownNotifications"] == ("TicketTriage", "UnknownNotifications")
    # the review and drift alarms, hourly, on what the aggregator emits (review.py)
    assert set(watched["ReviewShareHigh"]) == {
        ("TicketTriage", "TicketsToReview"),
        ("TicketTriage", "TicketsSucceeded"),
    }
    assert set(watched["OutOfScopeShareHigh"]) == {
        ("TicketTriage", "TicketsOutOfScope"),
        ("TicketTriage", "TicketsSucceeded"),
    }
    assert watched["CategoryDriftHigh"] == (("TicketTriage", "CategoryDrift"),)
    drift = synth.properties(stack.monitoring.alarms["CategoryDriftHigh"])
    (stat,) = [m["MetricStat"] for m in drift["Metrics"]]
    assert (stat["Period"], stat["Stat"], drift["Threshold"]) == (3600, "Average", 0.25)
    share = synth.properties(stack.monitoring.alarms["ReviewShareHigh"])
    assert {m["MetricStat"]["Period"] for m in share["Metrics"] if "MetricStat" in m} == {3600}
    # every function that finalizes a job publishes its counts (results.py): the share adds them up
    services = {
        fn_id: synth.properties(fn.function)["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"]
        for fn_id, fn in stack.pipeline.functions.items()
    }
    read = {
        (m["MetricStat"]["Metric"]["MetricName"], d["Value"])
        for m in share["Metrics"]
        if "MetricStat" in m
        for d in m["MetricStat"]["Metric"]["Dimensions"]
    }
    assert read == {
        (name, services[fn_id])
        for name in ("TicketsToReview", "TicketsSucceeded")
        for fn_id in ("Aggregator", "Dispatcher", "Sweeper")
    }
    (expression,) = [m["Expression"] for m in share["Metrics"] if "Expression" in m]
    assert expression.count("FILL(") == 9 and expression.startswith("IF((")  # 3 + 3 twice
    aggregator_alarm = synth.properties(stack.monitoring.alarms["AggregatorErrors"])
    assert aggregator_alarm["Dimensions"] == [
        {"Name": "FunctionName", "Value": ref(synth, stack.pipeline.aggregator.function)}
    ]
    runbook = (REPO_ROOT / "docs" / "deploy-and-operate.md").read_text()
    undocumented = [alarm_id for alarm_id in stack.monitoring.alarms if f"`{alarm_id}`" not in runbook]
    assert undocumented == [], "every alarm needs a runbook entry in docs/deploy-and-operate.md"


def test_dashboard_shows_backlog_instances_latency_errors_and_the_pipeline_counts(synth) -> None:
    (dashboard,) = synth.of_type("AWS::CloudWatch::Dashboard").values()
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    for needle in (
        "ApproximateBacklogSize",
        "HasBacklogWithoutCapacity",
        "CPUUtilization",
        "ModelLatency",
        "TimeInBacklog",
        "InvocationFailures",
        "NotificationFailures",
        "Invocation5XXErrors",
        "ApproximateNumberOfMessagesVisible",
        "FilesReceived",
        "TicketsDispatched",
        "ChunksSubmitted",
        "RecordsRejected",
        "ResultsPublished",
        "TicketsFailed",
        "OverdueJobs",
        "InvalidNotifications",
        "UnknownNotifications",
        "LateNotifications",
    ):
        assert needle in body, needle


def test_template_names_no_account_and_no_region(synth) -> None:
    text = json.dumps(synth.template)
    accounts = set(re.findall(r"(?<![0-9a-f])\d{12}(?![0-9a-f])", text))
    assert accounts <= {"017000801446"}  # the AWS-owned account that publishes the Powertools layer
    region = r"\b(us|eu|ap|sa|ca|me|af|il|mx)-(north|south|east|west|central|northeast|southeast)-\d\b"
    assert not re.search(region, text)


def test_a_trained_model_deploys_without_the_placeholder_guard(synth) -> None:
    assert "ModelArtifactRequireTrainedModel" not in json.dumps(synth.template.get("Rules", {}))


def test_image_asset_context_holds_only_the_container_and_the_shared_core(synth) -> None:
    manifest = json.loads((synth.outdir / f"{synth.stack.artifact_id}.assets.json").read_text())
    (image,) = manifest["dockerImages"].values()
    assert image["source"]["dockerFile"] == "container/Dockerfile"
    staged = synth.outdir / image["source"]["directory"]
    assert {p.name for p in staged.iterdir()} <= {"container", "triage_core", ".dockerignore"}
    assert (staged / "triage_core" / "records.py").is_file()


def test_lambda_asset_ships_the_handlers_and_the_shared_core_through_the_symlink(synth) -> None:
    manifest = json.loads((synth.outdir / f"{synth.stack.artifact_id}.assets.json").read_text())
    directories = [
        synth.outdir / f["source"]["path"]
        for f in manifest["files"].values()
        if f["source"].get("packaging") == "zip"
    ]
    (code,) = [d for d in directories if (d / "ticket_pipeline").is_dir()]
    assert (code / "triage_core" / "records.py").is_file() and not (code / "triage_core").is_symlink()
    assert not list(code.rglob("__pycache__"))


def test_an_instance_type_with_local_nvme_storage_gets_no_volume_key_and_a_warning(synth, tmp_path) -> None:
    """CreateEndpointConfig fails when a KmsKeyId is given for an instance type with local NVMe
    storage (SageMaker API Reference, CreateEndpointConfig, KmsKeyId): the key is left out for
    them, the synth warns, and the async outputs keep the stack key. (This second synth also
    sets ``-c triage:reviewThreshold=0.72``: it reaches the container as TRIAGE_REVIEW_THRESHOLD,
    which overrides the artifact's own threshold.)"""
    from aws_cdk.assertions import Annotations, Match
    from infra_helpers import cdk_json_context

    from infra.application import build_app

    context = {
        **cdk_json_context(),
        "triage:modelArtifact": str(synth.model_tarball),
        "triage:instanceType": "ml.g5.xlarge",
        "triage:reviewThreshold": "0.72",  # as `cdk synth -c` passes it: a string
    }
    app, nvme_stack = build_app(context=context, outdir=str(tmp_path), repo_root=synth.repo_root)
    app.synth()  # cdk-nag runs here: no finding for the missing key either
    template = json.loads((tmp_path / f"{nvme_stack.artifact_id}.template.json").read_text())
    (model,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::SageMaker::Model"]
    assert model["Properties"]["PrimaryContainer"]["Environment"]["TRIAGE_REVIEW_THRESHOLD"] == "0.72"
    (config,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::SageMaker::EndpointConfig"]
    props = config["Properties"]
    assert "KmsKeyId" not in props
    assert props["ProductionVariants"][0]["InstanceType"] == "ml.g5.xlarge"
    assert "KmsKeyId" in props["AsyncInferenceConfig"]["OutputConfig"]
    skips = {s["id"] for s in config["Metadata"]["checkov"]["skip"]}
    assert skips == {"CKV_AWS_98"}
    Annotations.from_stack(nvme_stack).has_warning(
        f"/{nvme_stack.node.path}/Inference", Match.string_like_regexp("ml.g5.xlarge has local NVMe storage")
    )


def test_the_stack_outputs_what_the_redrive_command_reads(synth, stack) -> None:
    """``python -m ticket_pipeline.redrive --stack`` finds each function and its dead-letter queue
    in the stack's outputs: the outputs must be there, pointing at those resources."""
    from ticket_pipeline.redrive import targets_from_stack

    outputs = synth.template["Outputs"]

    class CloudFormation:  # describe_stacks as CloudFormation answers it, from the template
        def describe_stacks(self, StackName: str) -> dict:
            rendered = [{"OutputKey": k, "OutputValue": json.dumps(o["Value"])} for k, o in outputs.items()]
            return {"Stacks": [{"StackName": StackName, "Outputs": rendered}]}

    targets = {t.function: t for t in targets_from_stack(CloudFormation(), "TicketTriage")}
    assert set(targets) == {"dispatcher", "aggregator", "sweeper", "corrections"}
    for name, fn in (
        ("dispatcher", stack.pipeline.dispatcher),
        ("aggregator", stack.pipeline.aggregator),
        ("corrections", stack.pipeline.corrections),
    ):
        assert json.loads(targets[name].function_name) == ref(synth, fn.function)
        assert json.loads(targets[name].queue_url) == ref(synth, fn.dead_letter_queue)


def test_review_subscribers_find_the_review_topic_in_the_outputs_and_the_finalizers_publish(
    synth, stack
) -> None:
    outputs = synth.template["Outputs"]
    assert outputs["ReviewTopicArn"]["Value"] == ref(synth, stack.notifications.review_topic)
    review_topic = json.dumps(ref(synth, stack.notifications.review_topic))
    publishers = {
        name
        for name in ("dispatcher", "aggregator", "sweeper")
        if review_topic
        in objects_with(statements_of_role(synth, getattr(stack.pipeline, name).role), "sns:Publish")
    }
    assert publishers == {"dispatcher", "aggregator", "sweeper"}  # every function that finalizes
    env = synth.properties(stack.pipeline.aggregator.function)["Environment"]["Variables"]
    assert env["REVIEW_TOPIC_ARN"] == ref(synth, stack.notifications.review_topic)
    assert (env["REVIEW_PREFIX"], env["OUT_OF_SCOPE_BELOW"]) == ("review/", "0.2")

"""The replay of recorded AWS calls against the template's roles (``tests/iam_replay.py``), on
calls written here: a call the role allows passes, one it does not is found, and the mapping
follows the Service Authorization Reference (a versioned read is s3:GetObjectVersion; a
transaction is authorized item by item)."""

from __future__ import annotations

from iam_replay import LOCAL_KEY_ARN, requests_of, stack_replay

from local_pipeline.aws import Names
from local_pipeline.calls import SAGEMAKER_ENDPOINT, AwsCall, CallRecorder

NAMES = Names()
TOPIC = "arn:aws:sns:us-east-1:123456789012:"


class LocalResources:  # the topic ARNs provision() returns
    success_topic_arn = TOPIC + NAMES.success_topic
    error_topic_arn = TOPIC + NAMES.error_topic
    results_topic_arn = TOPIC + NAMES.results_topic
    review_topic_arn = TOPIC + NAMES.review_topic


def calls(*rows: tuple[str, str, str, dict]) -> list[AwsCall]:
    recorder = CallRecorder()
    for principal, service, operation, params in rows:
        recorder.add(principal, service, operation, params)
    return recorder.snapshot()


def test_a_versioned_read_is_get_object_version_and_implies_decrypt_on_an_encrypted_bucket() -> None:
    (call,) = calls(("d", "s3", "GetObject", {"Bucket": "b", "Key": "k", "VersionId": "v"}))
    assert [(r.action, r.resource) for r in requests_of(call, {"b"}, set())] == [
        ("s3:GetObjectVersion", "arn:aws:s3:::b/k"),
        ("kms:Decrypt", LOCAL_KEY_ARN),
    ]


def test_a_transaction_is_authorized_item_by_item() -> None:
    (call,) = calls(
        ("a", "dynamodb", "TransactWriteItems",
         {"TransactItems": [{"Update": {"TableName": "t"}}, {"ConditionCheck": {"TableName": "t"}}]}),
    )  # fmt: skip
    assert sorted(r.action for r in requests_of(call, set(), set())) == [
        "dynamodb:ConditionCheckItem",
        "dynamodb:UpdateItem",
    ]


def test_the_roles_allow_what_each_part_calls_and_deny_what_it_must_not(synth) -> None:
    allowed = calls(
        ("ticket-dispatcher", "s3", "GetObject", {"Bucket": NAMES.input_bucket, "Key": "incoming/a.jsonl",
                                                   "VersionId": "1"}),
        ("ticket-dispatcher", "s3", "PutObject", {"Bucket": NAMES.input_bucket, "Key": "chunks/a/c1"}),
        ("ticket-dispatcher", "sagemaker-runtime", "InvokeEndpointAsync",
         {"EndpointName": NAMES.endpoint_name}),
        ("ticket-dispatcher", "lambda", "Invoke",
         {"FunctionName": "arn:aws:lambda:us-east-1:123456789012:function:ticket-dispatcher"}),
        ("ticket-aggregator", "logs", "PutLogEvents", {"logGroupName": "/aws/lambda/ticket-aggregator",
                                                        "logStreamName": "2026/12/06/[$LATEST]abc"}),
        (SAGEMAKER_ENDPOINT, "s3", "GetObject", {"Bucket": NAMES.input_bucket, "Key": "chunks/a/c1"}),
        (SAGEMAKER_ENDPOINT, "s3", "PutObject",
         {"Bucket": NAMES.output_bucket, "Key": "async-results/x.out"}),
        (SAGEMAKER_ENDPOINT, "sns", "Publish", {"TopicArn": LocalResources.success_topic_arn}),
        ("ticket-aggregator", "sns", "Publish", {"TopicArn": LocalResources.review_topic_arn}),
        ("ticket-dispatcher", "s3", "GetObject", {"Bucket": NAMES.input_bucket, "Key": "chunks/a/c1"}),
        ("ticket-sweeper", "s3", "PutObject", {"Bucket": NAMES.output_bucket, "Key": "review/j/r.jsonl"}),
        ("ticket-sweeper", "s3", "GetObject", {"Bucket": NAMES.input_bucket, "Key": "chunks/a/c1"}),
    )  # fmt: skip
    result = stack_replay(synth, allowed, NAMES, LocalResources)
    assert result.denied == []
    assert len(result.allowed) >= 12  # the calls and the key use they imply
    denied = calls(
        ("ticket-aggregator", "sagemaker-runtime", "InvokeEndpointAsync",
         {"EndpointName": NAMES.endpoint_name}),
        ("ticket-aggregator", "logs", "PutLogEvents", {"logGroupName": "/aws/lambda/ticket-dispatcher",
                                                        "logStreamName": "s"}),
        ("ticket-dispatcher", "s3", "PutObject", {"Bucket": NAMES.input_bucket, "Key": "incoming/x"}),
        (SAGEMAKER_ENDPOINT, "s3", "GetObject", {"Bucket": NAMES.input_bucket, "Key": "incoming/a.jsonl"}),
        (SAGEMAKER_ENDPOINT, "sns", "Publish", {"TopicArn": LocalResources.results_topic_arn}),
        # the review queue is the finalizers' (issue #24): not the endpoint's; chunks the dispatcher's
        (SAGEMAKER_ENDPOINT, "s3", "PutObject", {"Bucket": NAMES.output_bucket, "Key": "review/j/r.jsonl"}),
        ("ticket-aggregator", "s3", "PutObject", {"Bucket": NAMES.input_bucket, "Key": "chunks/a/c1"}),
    )  # fmt: skip
    result = stack_replay(synth, denied, NAMES, LocalResources)
    assert {(r.principal, r.resource) for r in result.denied} >= {
        (SAGEMAKER_ENDPOINT, f"arn:aws:s3:::{NAMES.output_bucket}/review/j/r.jsonl"),
        ("ticket-aggregator", f"arn:aws:s3:::{NAMES.input_bucket}/chunks/a/c1"),
    }
    assert {(r.principal, r.action) for r in result.denied} == {
        (SAGEMAKER_ENDPOINT, "s3:PutObject"),
        ("ticket-aggregator", "s3:PutObject"),  # chunks are the dispatcher's to write
        ("ticket-aggregator", "sagemaker:InvokeEndpointAsync"),
        ("ticket-aggregator", "logs:PutLogEvents"),  # another function's log group
        ("ticket-dispatcher", "s3:PutObject"),
        (SAGEMAKER_ENDPOINT, "s3:GetObject"),
        (SAGEMAKER_ENDPOINT, "sns:Publish"),
    }
    # a grant no call used is reported: here the sweeper made no call at all
    assert result.unused["ticket-sweeper"]


def test_every_service_the_stack_wires_up_is_allowed_by_the_key_topic_and_function_policies(synth) -> None:
    """The requests AWS services make on the stack's behalf, read from its wiring (encrypted log
    groups, alarm actions, the S3 notification, the SNS subscriptions, the schedule), against the
    key policy, the topic policies and the Lambda permissions: CloudWatch Logs may use the key for
    each function's log group, CloudWatch may publish every alarm to the encrypted alarm topic,
    S3, SNS and EventBridge may invoke the function they deliver to, and nothing else."""
    from iam_replay import (
        Resolver,
        _condition_holds,
        local_bindings,
        names_service,
        resource_statements,
        service_replay,
        service_requests,
    )

    functions = {
        "Dispatcher": "ticket-dispatcher",
        "Aggregator": "ticket-aggregator",
        "Sweeper": "ticket-sweeper",
        "Corrections": "ticket-corrections",
    }
    resolve = Resolver(local_bindings(synth.stack, NAMES, LocalResources, functions), synth.template)
    allowed, denied = service_replay(synth.template, resolve)
    assert denied == []
    kinds = {(r.service, r.action) for r in allowed}
    assert kinds == {
        ("logs.us-east-1.amazonaws.com", "kms:GenerateDataKey"),
        ("logs.us-east-1.amazonaws.com", "kms:Decrypt"),
        ("cloudwatch.amazonaws.com", "sns:Publish"),
        ("cloudwatch.amazonaws.com", "kms:GenerateDataKey"),
        ("cloudwatch.amazonaws.com", "kms:Decrypt"),
        ("s3.amazonaws.com", "lambda:InvokeFunction"),
        ("sns.amazonaws.com", "lambda:InvokeFunction"),
        ("events.amazonaws.com", "lambda:InvokeFunction"),
    }
    alarms = synth.of_type("AWS::CloudWatch::Alarm")
    topics = synth.of_type("AWS::SNS::Topic")
    notifying = {
        a
        for a, r in alarms.items()
        if any(t.get("Ref") in topics for t in r["Properties"].get("AlarmActions", []))
    }
    rollback_alarms = len(synth.stack.inference.rollout.alarms)  # infra/rollout.py: 3 with cdk.json's
    assert {r.because for r in allowed if r.action == "sns:Publish"} == notifying
    # 16 + 4 of the corrections function (errors, dead letters, dead-letter errors, reviewed accuracy)
    # + 3 of the review queue (ReviewShareHigh, OutOfScopeShareHigh, CategoryDriftHigh)
    assert len(notifying) == 23 + rollback_alarms and rollback_alarms == 3

    # the same requests from the wrong place are refused: another account's alarm, a bucket that
    # is not the input bucket, CloudWatch Logs for a log group of another account
    requests = service_requests(synth.template, resolve)
    wrong = [
        type(r)(
            r.service,
            r.action,
            r.resource,
            tuple((k, v.replace("123456789012", "999999999999")) for k, v in r.context),
            r.because,
        )
        for r in requests
        if r.service in ("cloudwatch.amazonaws.com", "s3.amazonaws.com", "logs.us-east-1.amazonaws.com")
    ]
    statements = resource_statements(synth.template, resolve)
    for request in wrong:
        assert not any(
            names_service(s, request.service)
            and _condition_holds(s.get("Condition", {}), dict(request.context))
            for s in statements
        ), request


def test_every_call_to_the_encrypted_table_implies_the_callers_decrypt_of_its_key_via_dynamodb() -> None:
    """AWS: "When you access an encrypted DynamoDB table, DynamoDB needs to decrypt the table key [...]
    DynamoDB sends a Decrypt request to AWS KMS [...] The user is the principal in your AWS
    account who is accessing the table" (Amazon DynamoDB Developer Guide, "DynamoDB encryption at
    rest usage notes"): every call to the jobs table, reads and writes alike, is that Decrypt,
    made through DynamoDB; a table without a customer-managed key implies none."""
    get, transact = calls(
        ("a", "dynamodb", "GetItem", {"TableName": "jobs"}),
        ("a", "dynamodb", "TransactWriteItems", {"TransactItems": [{"Put": {"TableName": "jobs"}}]}),
    )
    via = (("kms:ViaService", "dynamodb.us-east-1.amazonaws.com"),)
    for call in (get, transact):
        (table, key) = requests_of(call, set(), set(), {"jobs"})
        assert table.resource == "arn:aws:dynamodb:us-east-1:123456789012:table/jobs"
        assert (key.action, key.resource, key.context) == ("kms:Decrypt", LOCAL_KEY_ARN, via)
        assert len(requests_of(call, set(), set())) == 1


def test_a_statement_conditioned_on_the_calling_service_allows_that_service_only() -> None:
    """The condition of a role's statement is checked against the request (moto's evaluator would
    skip a key the request lacks): a Decrypt allowed through DynamoDB only is refused through S3
    and when called directly, and the grant shows used only after the DynamoDB request."""
    from iam_replay import replay

    statement = {
        "Effect": "Allow",
        "Action": "kms:Decrypt",
        "Resource": LOCAL_KEY_ARN,
        "Condition": {"StringEquals": {"kms:ViaService": "dynamodb.us-east-1.amazonaws.com"}},
    }
    policies = {"a": [{"Version": "2012-10-17", "Statement": [statement]}]}
    s3_read, table_read = calls(
        ("a", "s3", "GetObject", {"Bucket": "b", "Key": "k"}),
        ("a", "dynamodb", "GetItem", {"TableName": "jobs"}),
    )
    through_s3 = replay([s3_read], policies, {"b"}, set())
    assert [(r.action, r.context) for r in through_s3.denied] == [
        ("s3:GetObject", ()),
        ("kms:Decrypt", (("kms:ViaService", "s3.us-east-1.amazonaws.com"),)),
    ]
    assert len(through_s3.unused["a"]) == 1
    through_dynamodb = replay([table_read], policies, set(), set(), {"jobs"})
    assert [r.action for r in through_dynamodb.allowed] == ["kms:Decrypt"]
    assert [r.action for r in through_dynamodb.denied] == ["dynamodb:GetItem"]
    assert through_dynamodb.unused["a"] == []

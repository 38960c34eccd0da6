"""Replay the AWS calls a local run recorded against the synthesized template's IAM policies.

Each recorded call (``local_pipeline.calls``) becomes the IAM request AWS would authorize: the
action and the resource ARN, per the Service Authorization Reference for S3, DynamoDB, SNS,
SageMaker, Lambda and CloudWatch Logs, plus the KMS requests the call implies on the stack's key
(an SSE-KMS object read needs ``kms:Decrypt`` and a write ``kms:GenerateDataKey``, Amazon S3 User
Guide "Using server-side encryption with AWS KMS keys"; publishing to an encrypted topic needs
``kms:GenerateDataKey*`` and ``kms:Decrypt``, Amazon SNS Developer Guide "Data encryption"). The
template's policies of the caller's role are resolved to the local resources (``Ref``,
``Fn::GetAtt``, ``Fn::Join``, ``Fn::Sub``) and every request is evaluated statement by statement
with moto's IAM statement evaluator (``moto.iam.access_control.IAMPolicyStatement``, the one
moto's server uses to authorize requests). A request the role would be denied is a finding; a
(role, action, resource) of the policies that no request used is listed in the usage report, so
the policies can shrink.

Every call to the jobs table (KMS-encrypted with the stack key, a customer-managed key) implies
the caller's ``kms:Decrypt`` of the table key through DynamoDB (``kms:ViaService`` =
``dynamodb.<region>.amazonaws.com``): "When you access an encrypted DynamoDB table, DynamoDB
needs to decrypt the table key [...] The user is the principal in your AWS account who is
accessing the table" (Amazon DynamoDB Developer Guide, "DynamoDB encryption at rest usage notes").
Each key request carries the ``kms:ViaService`` of the service that makes it, and the conditions
of the roles' statements are checked against the request's context here (moto's evaluator
ignores a condition key the request lacks and answers an Allow whose condition fails with Deny).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from moto.iam.access_control import IAMPolicyStatement, PermissionResult

from local_pipeline.calls import SAGEMAKER_ENDPOINT, AwsCall

PARTITION, REGION, ACCOUNT = "aws", "us-east-1", "123456789012"
LOCAL_KEY_ARN = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/00000000-0000-0000-0000-00000000c0de"
PSEUDO = {
    "AWS::Partition": PARTITION,
    "AWS::Region": REGION,
    "AWS::AccountId": ACCOUNT,
    "AWS::URLSuffix": "amazonaws.com",
}
# What the bootstrap bucket and repository of the default synthesizer are called here.
ASSETS_BUCKET = f"cdk-hnb659fds-assets-{ACCOUNT}-{REGION}"
CONTAINER_ASSETS = f"cdk-hnb659fds-container-assets-{ACCOUNT}-{REGION}"


@dataclass(frozen=True)
class Request:
    """One IAM authorization: who, which action, on which resource, and the call it comes from."""

    principal: str
    action: str
    resource: str
    because: str  # the recorded call (or "implied by ...")
    context: tuple[tuple[str, str], ...] = ()  # the condition keys the request carries


# --- recorded call -> IAM requests -------------------------------------------------------------------
def _s3_object(p: Mapping[str, Any]) -> str:
    return f"arn:{PARTITION}:s3:::{p['Bucket']}/{p['Key']}"


def _via(service: str) -> tuple[tuple[str, str], ...]:
    """The context of a key request a service makes on the caller's behalf."""
    return (("kms:ViaService", f"{service}.{REGION}.amazonaws.com"),)


def requests_of(
    call: AwsCall,
    encrypted_buckets: set[str],
    encrypted_topics: set[str],
    encrypted_tables: frozenset[str] | set[str] = frozenset(),
) -> list[Request]:
    """The IAM requests one call makes (``KeyError`` naming the call when it is not mapped yet:
    add its row, with the action the Service Authorization Reference gives it)."""
    p, op, who = call.args, call.operation, call.principal
    what = f"{call.service}.{op}"
    out: list[tuple[str, str]] = []
    keys: list[tuple[str, str]] = []  # the key operations the service makes on the caller's behalf
    if call.service == "s3":
        versioned = "VersionId" in p
        if op in ("GetObject", "HeadObject"):  # HeadObject is authorized as s3:GetObject
            out.append(("s3:GetObjectVersion" if versioned else "s3:GetObject", _s3_object(p)))
            kms = ["kms:Decrypt"]
        elif op in ("PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"):
            out.append(("s3:PutObject", _s3_object(p)))  # the multipart steps are s3:PutObject
            kms = ["kms:GenerateDataKey"] if op in ("PutObject", "CreateMultipartUpload") else ["kms:Decrypt"]
        elif op == "AbortMultipartUpload":
            out.append(("s3:AbortMultipartUpload", _s3_object(p)))
            kms = []
        elif op in ("ListObjectsV2", "ListObjects"):
            out.append(("s3:ListBucket", f"arn:{PARTITION}:s3:::{p['Bucket']}"))
            kms = []
        elif op == "ListObjectVersions":
            out.append(("s3:ListBucketVersions", f"arn:{PARTITION}:s3:::{p['Bucket']}"))
            kms = []
        else:
            raise KeyError(f"no IAM mapping for {what}")
        if p.get("Bucket") in encrypted_buckets:
            keys += [(action, LOCAL_KEY_ARN) for action in kms]
    elif call.service == "dynamodb":
        table = f"arn:{PARTITION}:dynamodb:{REGION}:{ACCOUNT}:table/"
        if op in ("TransactWriteItems", "TransactGetItems"):
            kinds = {
                "Put": "PutItem",
                "Update": "UpdateItem",
                "Delete": "DeleteItem",
                "ConditionCheck": "ConditionCheckItem",
                "Get": "GetItem",
            }
            out += [(f"dynamodb:{kinds[kind]}", table + name) for kind, name in p["TransactItems"]]
        elif op in ("BatchWriteItem", "BatchGetItem"):
            out += [(f"dynamodb:{op}", table + name) for name in p["RequestItems"]]
        elif "TableName" in p:
            index = f"/index/{p['IndexName']}" if "IndexName" in p else ""
            out.append((f"dynamodb:{op}", table + p["TableName"] + index))
        else:
            raise KeyError(f"no IAM mapping for {what}")
        tables = {resource.removeprefix(table).split("/")[0] for _, resource in out}
        if tables & set(encrypted_tables):  # DynamoDB decrypts the table key as the caller
            keys.append(("kms:Decrypt", LOCAL_KEY_ARN))
    elif call.service == "sns" and op == "Publish":
        out.append(("sns:Publish", p["TopicArn"]))
        if p["TopicArn"] in encrypted_topics:
            keys += [("kms:GenerateDataKey", LOCAL_KEY_ARN), ("kms:Decrypt", LOCAL_KEY_ARN)]
    elif call.service == "sagemaker-runtime" and op == "InvokeEndpointAsync":
        name = p["EndpointName"].lower()  # SageMaker ARNs carry the name in lower case
        out.append(
            ("sagemaker:InvokeEndpointAsync", f"arn:{PARTITION}:sagemaker:{REGION}:{ACCOUNT}:endpoint/{name}")
        )
    elif call.service == "lambda" and op == "Invoke":
        name = p["FunctionName"]
        arn = (
            name if name.startswith("arn:") else f"arn:{PARTITION}:lambda:{REGION}:{ACCOUNT}:function:{name}"
        )
        out.append(("lambda:InvokeFunction", arn))
    elif call.service == "logs" and op in ("CreateLogStream", "PutLogEvents", "DescribeLogStreams"):
        group = f"arn:{PARTITION}:logs:{REGION}:{ACCOUNT}:log-group:{p['logGroupName']}"
        out.append((f"logs:{op}", f"{group}:log-stream:{p['logStreamName']}"))
    elif call.service == "logs" and op == "CreateLogGroup":
        out.append((f"logs:{op}", f"arn:{PARTITION}:logs:{REGION}:{ACCOUNT}:log-group:{p['logGroupName']}"))
    elif call.service == "sqs" and op == "SendMessage":  # the queue's name: the last part of its URL
        queue = p["QueueUrl"].rsplit("/", 1)[-1]
        out.append(("sqs:SendMessage", f"arn:{PARTITION}:sqs:{REGION}:{ACCOUNT}:{queue}"))
        # every queue of the stack is SSE-KMS with the stack key: a producer needs
        # kms:GenerateDataKey and kms:Decrypt (Amazon SQS Developer Guide, "Key management")
        keys += [("kms:GenerateDataKey", LOCAL_KEY_ARN), ("kms:Decrypt", LOCAL_KEY_ARN)]
    elif call.service == "ecr" and op == "GetAuthorizationToken":  # no resource-level permissions
        out.append(("ecr:GetAuthorizationToken", "*"))
    elif call.service == "ecr":
        out.append((f"ecr:{op}", f"arn:{PARTITION}:ecr:{REGION}:{ACCOUNT}:repository/{p['repositoryName']}"))
    elif call.service == "cloudwatch" and op == "PutMetricData":  # no resource-level permissions
        namespace = (("cloudwatch:namespace", p["Namespace"]),)
        return [Request(who, "cloudwatch:PutMetricData", "*", what, namespace)]
    else:
        raise KeyError(f"no IAM mapping for {what}")
    via = _via(call.service)
    return [Request(who, action, resource, what) for action, resource in out] + [
        Request(who, action, resource, what, via) for action, resource in keys
    ]


# --- the template's policies, resolved to the local resources -------------------------------------------
# Resources with no local counterpart are named by their logical id, in their service's ARN form.
_BY_TYPE = {
    "AWS::CloudWatch::Alarm": ("Arn", f"arn:{PARTITION}:cloudwatch:{REGION}:{ACCOUNT}:alarm:{{}}"),
    "AWS::Events::Rule": ("Arn", f"arn:{PARTITION}:events:{REGION}:{ACCOUNT}:rule/{{}}"),
    "AWS::SNS::Topic": ("Ref", f"arn:{PARTITION}:sns:{REGION}:{ACCOUNT}:{{}}"),
}


class Resolver:
    """``Ref`` / ``Fn::GetAtt`` / ``Fn::Join`` / ``Fn::Sub`` of a template value, with the local
    value of each logical id (``bindings[logical_id][attribute]``, ``"Ref"`` for a ``Ref``); the
    alarms, rules and topics the local stack has no counterpart of get ARNs named after their
    logical ids (``template`` says which type a logical id is)."""

    def __init__(self, bindings: Mapping[str, Mapping[str, str]], template: Mapping[str, Any] | None = None):
        self.bindings = bindings
        self.template = template or {"Resources": {}}

    def attribute(self, logical_id: str, attribute: str) -> str:
        if attribute == "Ref" and logical_id in PSEUDO:
            return PSEUDO[logical_id]
        try:
            return self.bindings[logical_id][attribute]
        except KeyError:
            kind = self.template["Resources"].get(logical_id, {}).get("Type")
            if kind in _BY_TYPE and _BY_TYPE[kind][0] == attribute:
                return _BY_TYPE[kind][1].format(logical_id)
            raise KeyError(f"no local value for {logical_id}.{attribute}: bind it") from None

    def __call__(self, value: Any) -> Any:
        if isinstance(value, str):
            return value
        if isinstance(value, list):
            return [self(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) != 1 or not next(iter(value)).startswith(("Ref", "Fn::")):
            return {k: self(v) for k, v in value.items()}  # a plain object (a document, a statement)
        ((function, argument),) = value.items()
        if function == "Ref":
            return self.attribute(argument, "Ref")
        if function == "Fn::GetAtt":
            return self.attribute(argument[0], argument[1])
        if function == "Fn::Join":
            return argument[0].join(self(part) for part in argument[1])
        if function == "Fn::Sub":
            text, variables = (argument, {}) if isinstance(argument, str) else argument

            def sub(match: re.Match[str]) -> str:
                name = match.group(1)
                if name in variables:
                    return self(variables[name])
                logical_id, _, attribute = name.partition(".")
                return self.attribute(logical_id, attribute or "Ref")

            return re.sub(r"\$\{([^}!]+)\}", sub, text)
        raise KeyError(f"cannot resolve {function}")


def role_policies(
    template: Mapping[str, Any], role_logical_id: str, resolve: Resolver
) -> list[dict[str, Any]]:
    """The inline policy documents attached to a role, resolved to local ARNs."""
    return [
        resolve(resource["Properties"]["PolicyDocument"])
        for resource in template["Resources"].values()
        if resource["Type"] == "AWS::IAM::Policy"
        and {"Ref": role_logical_id} in resource["Properties"]["Roles"]
    ]


# --- evaluation -------------------------------------------------------------------------------------------
@dataclass
class Replay:
    denied: list[Request] = field(default_factory=list)
    allowed: list[Request] = field(default_factory=list)
    unused: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # principal -> (action, resource)

    def report(self) -> str:
        lines = ["# IAM grants no recorded call used", ""]
        lines.append(f"{len(self.allowed)} distinct requests allowed, {len(self.denied)} denied.")
        for principal, grants in sorted(self.unused.items()):
            lines += ["", f"## {principal}", ""]
            listed = [f"- `{action}` on `{resource}`" for action, resource in grants]
            lines += listed or ["(every grant used)"]
        return "\n".join(lines) + "\n"


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _statements(documents: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    for document in documents:
        yield from _as_list(document["Statement"])


def _verdict(statement: Mapping[str, Any], request: Request) -> PermissionResult:
    """One statement on one request: its condition checked against the request's context here
    (an unmet condition: the statement does not apply), action and resource by moto."""
    if not _condition_holds(statement.get("Condition", {}), dict(request.context)):
        return PermissionResult.NEUTRAL
    bare = {k: v for k, v in statement.items() if k != "Condition"}
    return IAMPolicyStatement(bare).is_action_permitted(request.action, request.resource)


def _grant(statement: Mapping[str, Any], action: str, resource: str) -> tuple[str, str]:
    """A grant as the report names it: action, and resource with the statement's condition."""
    condition = statement.get("Condition")
    return action, resource + (f" if {json.dumps(condition, sort_keys=True)}" if condition else "")


def replay(
    calls: Iterable[AwsCall],
    policies: Mapping[str, list[dict[str, Any]]],
    encrypted_buckets: set[str],
    encrypted_topics: set[str],
    encrypted_tables: frozenset[str] | set[str] = frozenset(),
) -> Replay:
    """Evaluate every request of ``calls`` against ``policies[principal]`` (resolved documents)."""
    result = Replay()
    seen: set[Request] = set()
    used: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for call in calls:
        for request in requests_of(call, encrypted_buckets, encrypted_topics, encrypted_tables):
            key = Request(request.principal, request.action, request.resource, "", request.context)
            if key in seen:
                continue
            seen.add(key)
            statements = list(_statements(policies[request.principal]))
            verdicts = [_verdict(st, request) for st in statements]
            if PermissionResult.DENIED in verdicts or PermissionResult.PERMITTED not in verdicts:
                result.denied.append(request)
                continue
            result.allowed.append(request)
            for statement in statements:
                for action in _as_list(statement["Action"]):
                    for resource in _as_list(statement["Resource"]):
                        single = {**statement, "Action": action, "Resource": resource}
                        if _verdict(single, request) == PermissionResult.PERMITTED:
                            used[request.principal].add(_grant(statement, action, resource))
    for principal, documents in policies.items():
        granted = {
            _grant(statement, action, resource)
            for statement in _statements(documents)
            if statement["Effect"] == "Allow"
            for action in _as_list(statement["Action"])
            for resource in _as_list(statement["Resource"])
        }
        result.unused[principal] = sorted(granted - used[principal])
    return result


# --- the template's roles and resources, bound to the local stack's ---------------------------------------
def local_bindings(
    stack: Any, names: Any, resources: Any, functions: Mapping[str, str]
) -> dict[str, dict[str, str]]:
    """The local value of each resource the roles' policies name. ``stack`` is the synthesized
    ``TicketTriageStack``, ``names``/``resources`` the local stack's (``local_pipeline.aws``),
    ``functions`` maps the stack's function ids (Dispatcher, ...) to the local function names."""
    from aws_cdk import Stack

    def logical_id(construct: Any) -> str:
        element = construct if hasattr(construct, "logical_id") else construct.node.default_child
        return Stack.of(element).resolve(element.logical_id)

    def bucket(name: str) -> dict[str, str]:
        return {"Ref": name, "Arn": f"arn:{PARTITION}:s3:::{name}"}

    endpoint_arn = f"arn:{PARTITION}:sagemaker:{REGION}:{ACCOUNT}:endpoint/{names.endpoint_name.lower()}"
    bound = {
        logical_id(stack.storage.input_bucket): bucket(names.input_bucket),
        logical_id(stack.storage.output_bucket): bucket(names.output_bucket),
        logical_id(stack.job_state.table): {
            "Ref": names.jobs_table,
            "Arn": f"arn:{PARTITION}:dynamodb:{REGION}:{ACCOUNT}:table/{names.jobs_table}",
        },
        logical_id(stack.notifications.success_topic): {"Ref": resources.success_topic_arn},
        logical_id(stack.notifications.error_topic): {"Ref": resources.error_topic_arn},
        logical_id(stack.notifications.results_topic): {"Ref": resources.results_topic_arn},
        logical_id(stack.notifications.review_topic): {"Ref": resources.review_topic_arn},
        logical_id(stack.inference.endpoint): {"Ref": endpoint_arn, "EndpointName": names.endpoint_name},
        logical_id(stack.encryption.key): {"Arn": LOCAL_KEY_ARN},
    }
    for fn_id, fn in stack.pipeline.functions.items():
        name = functions[fn_id]
        group = f"/aws/lambda/{name}"
        bound[logical_id(fn.function)] = {
            "Ref": name,
            "Arn": f"arn:{PARTITION}:lambda:{REGION}:{ACCOUNT}:function:{name}",
        }
        bound[logical_id(fn.log_group)] = {
            "Ref": group,
            "Arn": f"arn:{PARTITION}:logs:{REGION}:{ACCOUNT}:log-group:{group}:*",
        }
        bound[logical_id(fn.dead_letter_queue)] = {
            "Arn": f"arn:{PARTITION}:sqs:{REGION}:{ACCOUNT}:{getattr(names, fn_id.lower() + '_dlq')}"
        }
    return bound


def platform_calls(synth: Any, names: Any, functions: Mapping[str, str]) -> list[AwsCall]:
    """What AWS itself does with the roles, which no local run can record:

    - Lambda sends an event that failed every retry to the function's dead-letter queue with the
      function's execution role: "your function's execution role needs sqs:SendMessage" (AWS
      Lambda Developer Guide, "Dead-letter queues").
    - SageMaker, when it starts the endpoint's instances, pulls the image from ECR, downloads the
      model archive named by ModelDataUrl, and then writes the container's logs under
      ``/aws/sagemaker/Endpoints/<endpoint name>`` and its instance metrics (SageMaker AI Developer
      Guide, "How to use SageMaker AI execution roles", CreateModel API execution role permissions).
    """
    from local_pipeline.calls import CallRecorder

    recorder = CallRecorder()
    for fn_id, name in functions.items():
        queue = getattr(names, f"{fn_id.lower()}_dlq")
        recorder.add(name, "sqs", "SendMessage", {"QueueUrl": queue})
    model = synth.properties(synth.stack.inference.model)["PrimaryContainer"]["ModelDataUrl"]["Fn::Sub"]
    key = model.rsplit("/", 1)[1]
    recorder.add(SAGEMAKER_ENDPOINT, "s3", "GetObject", {"Bucket": ASSETS_BUCKET, "Key": key})
    recorder.add(SAGEMAKER_ENDPOINT, "ecr", "GetAuthorizationToken", {})
    for operation in ("BatchCheckLayerAvailability", "GetDownloadUrlForLayer", "BatchGetImage"):
        recorder.add(SAGEMAKER_ENDPOINT, "ecr", operation, {"repositoryName": CONTAINER_ASSETS})
    group = f"/aws/sagemaker/Endpoints/{names.endpoint_name}"
    for operation in ("CreateLogGroup", "CreateLogStream", "DescribeLogStreams", "PutLogEvents"):
        recorder.add(
            SAGEMAKER_ENDPOINT, "logs", operation, {"logGroupName": group, "logStreamName": "AllTraffic/i-0"}
        )
    recorder.add(SAGEMAKER_ENDPOINT, "cloudwatch", "PutMetricData", {"Namespace": "/aws/sagemaker/Endpoints"})
    return recorder.snapshot()


def as_model_archive(call: AwsCall, synth: Any, names: Any) -> AwsCall:
    """The local stack keeps the model's manifest in its own bucket (``names.model_bucket``); on
    AWS the corrections function reads the labels from the archive ``ModelDataUrl`` names (its
    ``LABELS_LOCATION``). A read of the local copy is replayed as a read of that archive."""
    model_bucket = getattr(names, "model_bucket", None)
    if call.service != "s3" or model_bucket is None or call.args.get("Bucket") != model_bucket:
        return call
    model = synth.properties(synth.stack.inference.model)["PrimaryContainer"]["ModelDataUrl"]["Fn::Sub"]
    params = {**call.args, "Bucket": ASSETS_BUCKET, "Key": model.rsplit("/", 1)[1]}
    return AwsCall(call.principal, call.service, call.operation, tuple(sorted(params.items())))


def stack_replay(synth: Any, calls: Iterable[AwsCall], names: Any, resources: Any) -> Replay:
    """Replay a local run's calls, and what AWS does with the roles (:func:`platform_calls`),
    against the roles of the synthesized stack ``synth``."""
    stack = synth.stack
    functions = {
        "Dispatcher": "ticket-dispatcher",
        "Aggregator": "ticket-aggregator",
        "Sweeper": "ticket-sweeper",
        "Corrections": "ticket-corrections",
    }
    resolve = Resolver(local_bindings(stack, names, resources, functions), synth.template)
    roles = {functions[fn_id]: fn.role for fn_id, fn in stack.pipeline.functions.items()}
    roles[SAGEMAKER_ENDPOINT] = stack.inference.role
    policies = {
        principal: role_policies(synth.template, synth.logical_id(role), resolve)
        for principal, role in roles.items()
    }
    topics = {
        resources.success_topic_arn,
        resources.error_topic_arn,
        resources.results_topic_arn,
        resources.review_topic_arn,
    }
    calls = [as_model_archive(call, synth, names) for call in calls]
    everything = [*calls, *platform_calls(synth, names, functions)]
    buckets = {names.input_bucket, names.output_bucket}
    return replay(everything, policies, buckets, topics, {names.jobs_table})


# --- what AWS services do with the stack's resource policies --------------------------------------------
@dataclass(frozen=True)
class ServiceRequest:
    """A request an AWS service makes on its own behalf, authorized by a resource policy."""

    service: str  # the service principal
    action: str
    resource: str
    context: tuple[tuple[str, str], ...]  # the condition keys the service sends
    because: str


def service_requests(template: Mapping[str, Any], resolve: Resolver) -> list[ServiceRequest]:
    """The requests the template's wiring makes AWS services send, read from the wiring itself
    (not from the permissions): CloudWatch Logs encrypting each KMS-encrypted log group
    (encryption context ``aws:logs:arn`` = the group's ARN, CloudWatch Logs User Guide "Encrypt log
    data in CloudWatch Logs using AWS KMS"); CloudWatch publishing each alarm action to its topic
    and using the topic's key (``aws:SourceArn`` = the alarm, ``aws:SourceAccount``; Amazon SNS
    Developer Guide, "Enable compatibility between event sources from AWS services and encrypted
    topics"); S3, SNS and EventBridge invoking the functions they deliver to."""
    resources = template["Resources"]
    out: list[ServiceRequest] = []

    def arn_of(logical_id: str) -> str:
        return resolve({"Fn::GetAtt": [logical_id, "Arn"]})

    for logical_id, r in resources.items():
        props = r.get("Properties", {})
        if r["Type"] == "AWS::Logs::LogGroup" and "KmsKeyId" in props:
            group = resolve({"Fn::GetAtt": [logical_id, "Arn"]}).removesuffix(":*")
            for action in ("kms:GenerateDataKey", "kms:Decrypt"):
                out.append(
                    ServiceRequest(
                        f"logs.{REGION}.amazonaws.com",
                        action,
                        resolve(props["KmsKeyId"]),
                        (("kms:EncryptionContext:aws:logs:arn", group),),
                        logical_id,
                    )
                )
        if r["Type"] == "AWS::CloudWatch::Alarm":
            for target in props.get("AlarmActions", []) + props.get("OKActions", []):
                if "Ref" not in target or resources[target["Ref"]]["Type"] != "AWS::SNS::Topic":
                    continue
                context = (("aws:SourceAccount", ACCOUNT), ("aws:SourceArn", arn_of(logical_id)))
                out.append(
                    ServiceRequest(
                        "cloudwatch.amazonaws.com", "sns:Publish", resolve(target), context, logical_id
                    )
                )
                key = resources[target["Ref"]]["Properties"].get("KmsMasterKeyId")
                if key is not None:
                    for action in ("kms:GenerateDataKey", "kms:Decrypt"):
                        out.append(
                            ServiceRequest(
                                "cloudwatch.amazonaws.com",
                                action,
                                resolve(key),
                                (("aws:SourceAccount", ACCOUNT),),
                                logical_id,
                            )
                        )
        if r["Type"] == "Custom::S3BucketNotifications":
            bucket = resolve(props["BucketName"])
            for config in props["NotificationConfiguration"].get("LambdaFunctionConfigurations", []):
                context = (
                    ("aws:SourceAccount", ACCOUNT),
                    ("aws:SourceArn", f"arn:{PARTITION}:s3:::{bucket}"),
                )
                out.append(
                    ServiceRequest(
                        "s3.amazonaws.com",
                        "lambda:InvokeFunction",
                        resolve(config["LambdaFunctionArn"]),
                        context,
                        logical_id,
                    )
                )
        if r["Type"] == "AWS::SNS::Subscription" and props.get("Protocol") == "lambda":
            out.append(
                ServiceRequest(
                    "sns.amazonaws.com",
                    "lambda:InvokeFunction",
                    resolve(props["Endpoint"]),
                    (("aws:SourceArn", resolve(props["TopicArn"])),),
                    logical_id,
                )
            )
        if r["Type"] == "AWS::Events::Rule":
            for target in props.get("Targets", []):
                out.append(
                    ServiceRequest(
                        "events.amazonaws.com",
                        "lambda:InvokeFunction",
                        resolve(target["Arn"]),
                        (("aws:SourceArn", arn_of(logical_id)),),
                        logical_id,
                    )
                )
    return out


def resource_statements(template: Mapping[str, Any], resolve: Resolver) -> list[dict[str, Any]]:
    """The statements of the key policies, the topic policies and the Lambda permissions (as the
    statement each one adds to its function's policy), resolved."""
    statements: list[dict[str, Any]] = []
    for r in template["Resources"].values():
        props = r.get("Properties", {})
        if r["Type"] == "AWS::KMS::Key":
            key = {**props["KeyPolicy"]}
            statements += [
                {**st, "Resource": "*"} for st in resolve(key)["Statement"]
            ]  # a key policy's "*": the key
        elif r["Type"] == "AWS::SNS::TopicPolicy":
            statements += resolve(props["PolicyDocument"])["Statement"]
        elif r["Type"] == "AWS::Lambda::Permission":
            condition: dict[str, dict[str, str]] = {}
            if "SourceArn" in props:
                condition["ArnLike"] = {"aws:SourceArn": resolve(props["SourceArn"])}
            if "SourceAccount" in props:
                condition["StringEquals"] = {"aws:SourceAccount": resolve(props["SourceAccount"])}
            statements.append(
                {
                    "Effect": "Allow",
                    "Principal": {"Service": props["Principal"]},
                    "Action": props["Action"],
                    "Resource": resolve(props["FunctionName"]),
                    "Condition": condition,
                }
            )
    return statements


_TLS_ONLY = {"Bool": {"aws:SecureTransport": "false"}}


def names_service(statement: Mapping[str, Any], service: str) -> bool:
    """An Allow statement whose principal is ``service``."""
    principal = statement.get("Principal")
    return (
        statement["Effect"] == "Allow"
        and isinstance(principal, dict)
        and service in _as_list(principal.get("Service", []))
    )


def _condition_holds(condition: Mapping[str, Mapping[str, Any]], context: Mapping[str, str]) -> bool:
    """The condition operators the stack's resource policies use; moto's evaluator checks only
    ``StringEquals``, so ``ArnLike`` / ``StringLike`` are matched here with moto's wildcard match."""
    for operator, keys in condition.items():
        for key, expected in keys.items():
            value = context.get(key)
            options = _as_list(expected)
            if value is None:
                return False
            if operator in ("StringEquals", "ArnEquals") and value not in options:
                return False
            if operator in ("ArnLike", "StringLike") and not any(
                IAMPolicyStatement._match(o, value) for o in options
            ):
                return False
            if operator not in ("StringEquals", "ArnEquals", "ArnLike", "StringLike"):
                raise KeyError(f"condition operator {operator} is not evaluated here")
    return True


def service_replay(
    template: Mapping[str, Any], resolve: Resolver
) -> tuple[list[ServiceRequest], list[ServiceRequest]]:
    """(allowed, denied) service requests against the resource policies. A statement applies when
    it names the requesting service and its condition holds; moto's statement evaluator then
    matches action and resource. The only Deny statements are the TLS-only ones (the test fails on
    any other), which a service's TLS request never meets."""
    statements = resource_statements(template, resolve)
    for st in statements:
        assert st["Effect"] == "Allow" or st.get("Condition") == _TLS_ONLY, st
    allowed, denied = [], []
    for request in service_requests(template, resolve):
        context = dict(request.context)
        ok = False
        for st in statements:
            if not names_service(st, request.service):
                continue
            if not _condition_holds(st.get("Condition", {}), context):
                continue
            bare = {k: v for k, v in st.items() if k not in ("Principal", "Condition")}
            if (
                IAMPolicyStatement(bare).is_action_permitted(request.action, request.resource)
                == PermissionResult.PERMITTED
            ):
                ok = True
                break
        (allowed if ok else denied).append(request)
    return allowed, denied

"""What the pipeline's code calls on AWS, recorded while the local stack (or the chaos harness) runs.

Each Lambda function's boto3 clients and the async endpoint stand-in's clients get a botocore
``before-parameter-build`` hook that records the call (service, operation and the parameters that
name its resource) with the *principal* that would make it on AWS: the function's execution role
(``ticket-dispatcher``, ...) or the SageMaker execution role (``sagemaker-endpoint``, which the
stand-in acts for). What the Lambda runtime itself does with the role (create the log stream,
put the log events) is recorded per invocation. ``tests/iam_replay.py`` evaluates every recorded
call against the synthesized template's policy for that role.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SAGEMAKER_ENDPOINT = "sagemaker-endpoint"  # the principal of the endpoint's calls (its execution role)
# The parameters that name what a call is about (the rest: bodies, expressions, values).
_RESOURCE_PARAMS = (
    "Bucket",
    "Key",
    "VersionId",
    "TableName",
    "IndexName",
    "TopicArn",
    "EndpointName",
    "FunctionName",
    "logGroupName",
    "logStreamName",
    "QueueUrl",
    "repositoryName",
    "Namespace",
)


@dataclass(frozen=True)
class AwsCall:
    principal: str
    service: str  # botocore's service id, hyphenized: s3, dynamodb, sns, sagemaker-runtime, lambda, logs
    operation: str  # the API operation: GetObject, TransactWriteItems, ...
    params: tuple[tuple[str, Any], ...]  # the resource-naming parameters, sorted

    @property
    def args(self) -> dict[str, Any]:
        return dict(self.params)

    def as_dict(self) -> dict[str, Any]:
        return {"principal": self.principal, "service": self.service, "operation": self.operation,
                "params": self.args}  # fmt: skip


def _resource_params(service: str, operation: str, params: dict[str, Any]) -> dict[str, Any]:
    # strings only: a DynamoDB ``Key`` is the item's key (a map), not a resource
    found: dict[str, Any] = {k: params[k] for k in _RESOURCE_PARAMS if isinstance(params.get(k), str)}
    if operation in ("TransactWriteItems", "TransactGetItems"):
        # which kind of write (Put, Update, Delete, ConditionCheck or Get) on which table
        kinds = {
            (kind, body["TableName"])
            for item in params.get("TransactItems", [])
            for kind, body in item.items()
        }
        found["TransactItems"] = tuple(sorted(kinds))
    if operation in ("BatchWriteItem", "BatchGetItem"):
        found["RequestItems"] = tuple(sorted(params.get("RequestItems", {})))
    return found


def find_clients(obj: Any, depth: int = 3) -> list[Any]:
    """The boto3 clients inside ``obj`` (a handler's ``runtime()`` tuple, its ``Deps``, a store):
    anything with ``meta.events``, looked for through tuples, lists and object attributes."""
    if hasattr(obj, "meta") and hasattr(obj.meta, "events"):
        return [obj]
    if depth == 0:
        return []
    if isinstance(obj, (tuple, list)):
        children = list(obj)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        children = [getattr(obj, f.name) for f in dataclasses.fields(obj)]
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        children = list(vars(obj).values())
    else:
        return []
    found: list[Any] = []
    for child in children:
        for client in find_clients(child, depth - 1):
            if all(client is not other for other in found):
                found.append(client)
    return found


class CallRecorder:
    """Thread-safe list of :class:`AwsCall`, counted per distinct call."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: Counter[AwsCall] = Counter()

    def add(self, principal: str, service: str, operation: str, params: dict[str, Any]) -> None:
        call = AwsCall(
            principal, service, operation, tuple(sorted(_resource_params(service, operation, params).items()))
        )
        with self._lock:
            self.calls[call] += 1

    def attach(self, client: Any, principal: str) -> None:
        """Record every call ``client`` makes, as ``principal``'s."""

        def record(params: dict[str, Any], model: Any, **_: Any) -> None:
            service = model.service_model.service_id.hyphenize()
            self.add(principal, service, model.name, params)

        client.meta.events.register("before-parameter-build", record)

    def attach_runtime(self, runtime: Any, principal: str) -> int:
        """Attach to every client of a handler's ``runtime()``; how many were found."""
        clients = find_clients(runtime)
        for client in clients:
            self.attach(client, principal)
        return len(clients)

    def lambda_invocation(self, function: str, log_stream: str) -> None:
        """What the Lambda runtime does with the function's role on every invocation: ship its
        output (log lines, EMF metrics) to the function's log group."""
        group = f"/aws/lambda/{function}"
        for operation in ("CreateLogStream", "PutLogEvents"):
            self.add(function, "logs", operation, {"logGroupName": group, "logStreamName": log_stream})

    def snapshot(self) -> list[AwsCall]:
        with self._lock:
            return list(self.calls)

    def save(self, path: Path) -> Path:
        rows = [{**call.as_dict(), "count": n} for call, n in sorted(self.calls.items(), key=str)]
        path.write_text("".join(json.dumps(row, default=list) + "\n" for row in rows))
        return path

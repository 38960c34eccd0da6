"""SageMaker asynchronous inference notifications (what the endpoint publishes to SNS).

Documented shape (success; the error notification has ``invocationStatus`` ``"Failed"`` and a
``failureReason``)::

    {"awsRegion": "us-east-1", "eventTime": "...", "receivedTime": "...",
     "invocationStatus": "Completed",
     "requestParameters": {"accept": "...", "contentType": "...", "endpointName": "...",
                           "inputLocation": "s3://bucket/chunks/job/00001.jsonl"},
     "responseParameters": {"contentType": "...", "outputLocation": "s3://out/async-results/x.out"},
     "inferenceId": "...", "eventVersion": "1.0", "eventSource": "aws:sagemaker",
     "eventName": "InferenceResult"}

Variants seen in the wild and tolerated here: ``failureLocation`` inside ``responseParameters``
or at the top level (or absent when no S3FailurePath is configured), a ``responseBody`` when
``IncludeInferenceResponseIn`` is set, missing ``responseParameters`` on errors, and statuses
other than Completed/Failed (e.g. ``Expired``), which count as failures.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

COMPLETED = "Completed"


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class RequestParameters(_Lenient):
    accept: str | None = None
    contentType: str | None = None
    endpointName: str | None = None
    inputLocation: str | None = None


class ResponseParameters(_Lenient):
    contentType: str | None = None
    outputLocation: str | None = None
    failureLocation: str | None = None


class AsyncInferenceNotification(_Lenient):
    inferenceId: str = Field(min_length=1)
    invocationStatus: str = Field(min_length=1)
    awsRegion: str | None = None
    eventTime: str | None = None
    receivedTime: str | None = None
    requestParameters: RequestParameters = Field(default_factory=RequestParameters)
    responseParameters: ResponseParameters | None = None
    failureReason: str | None = None
    failureLocation: str | None = None
    responseBody: Any = None
    eventVersion: str | None = None
    eventSource: str | None = None
    eventName: str | None = None

    @property
    def output_location(self) -> str | None:
        return self.responseParameters.outputLocation if self.responseParameters else None

    @property
    def failure_location(self) -> str | None:
        nested = self.responseParameters.failureLocation if self.responseParameters else None
        return nested or self.failureLocation

    @property
    def succeeded(self) -> bool:
        """Completed *and* pointing at an output; anything else is a failed chunk."""
        return self.invocationStatus == COMPLETED and bool(self.output_location)

    @property
    def failure_description(self) -> str:
        if self.invocationStatus == COMPLETED:
            return "notification reported Completed without an outputLocation"
        reason = (self.failureReason or "").strip()
        return reason or f"async invocation ended with status {self.invocationStatus!r}"


def success_notification(
    *,
    inference_id: str,
    endpoint_name: str,
    input_location: str,
    output_location: str,
    received_time: str,
    event_time: str,
    region: str,
    content_type: str | None,
    accept: str | None,
    response_content_type: str | None,
) -> dict[str, Any]:
    """The documented success notification, as the local endpoint stand-in publishes it."""
    return {
        "awsRegion": region,
        "eventTime": event_time,
        "receivedTime": received_time,
        "invocationStatus": COMPLETED,
        "requestParameters": _request_parameters(endpoint_name, input_location, content_type, accept),
        "responseParameters": {"contentType": response_content_type, "outputLocation": output_location},
        "inferenceId": inference_id,
        "eventVersion": "1.0",
        "eventSource": "aws:sagemaker",
        "eventName": "InferenceResult",
    }


def error_notification(
    *,
    inference_id: str,
    endpoint_name: str,
    input_location: str,
    failure_location: str | None,
    failure_reason: str,
    received_time: str,
    event_time: str,
    region: str,
    content_type: str | None,
    accept: str | None,
    response_content_type: str | None = None,
) -> dict[str, Any]:
    """The documented error notification (``failureLocation`` inside ``responseParameters``)."""
    response: dict[str, Any] = {"contentType": response_content_type}
    if failure_location:
        response["failureLocation"] = failure_location
    return {
        "awsRegion": region,
        "eventTime": event_time,
        "receivedTime": received_time,
        "invocationStatus": "Failed",
        "failureReason": failure_reason,
        "requestParameters": _request_parameters(endpoint_name, input_location, content_type, accept),
        "responseParameters": response,
        "inferenceId": inference_id,
        "eventVersion": "1.0",
        "eventSource": "aws:sagemaker",
        "eventName": "InferenceResult",
    }


def _request_parameters(
    endpoint_name: str, input_location: str, content_type: str | None, accept: str | None
) -> dict[str, Any]:
    params: dict[str, Any] = {"endpointName": endpoint_name, "inputLocation": input_location}
    if content_type:
        params["contentType"] = content_type
    if accept:
        params["accept"] = accept
    return params

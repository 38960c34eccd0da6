"""Typed Lambda events: the S3 event notification and the continuation (dispatcher), SNS
(aggregator), the EventBridge schedule (sweeper).

The S3 model keeps only what the dispatcher needs and ignores the rest, so it accepts the event
as Lambda delivers it (``userIdentity``, ``requestParameters``, ... present) and as moto emits it
(those omitted). Object keys arrive URL-encoded (``my+file%281%29.jsonl``): :attr:`S3Object.key`
decodes them with ``unquote_plus``, exactly like S3 encoded them.
SNS events use Powertools' own :class:`SnsModel` (``Records[].Sns.Message`` is a string).
"""

from __future__ import annotations

from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.parser.models import SnsModel
from pydantic import BaseModel, ConfigDict, Field

from ticket_pipeline.intake import Upload

__all__ = ["ContinuationEvent", "DispatcherEvent", "S3EventRecord", "ScheduledEvent", "SnsModel"]


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class S3Bucket(_Lenient):
    name: str = Field(min_length=1)


class S3Object(_Lenient):
    raw_key: str = Field(alias="key", min_length=1)
    size: int | None = Field(None, ge=0)
    eTag: str | None = None
    versionId: str | None = None
    sequencer: str | None = None

    @property
    def key(self) -> str:
        return unquote_plus(self.raw_key)


class S3Entity(_Lenient):
    bucket: S3Bucket
    object: S3Object


class S3EventRecord(_Lenient):
    eventSource: str = "aws:s3"
    eventName: str
    eventTime: str = ""
    awsRegion: str = ""
    s3: S3Entity

    @property
    def is_object_created(self) -> bool:
        return self.eventName.startswith("ObjectCreated")

    @property
    def upload(self) -> Upload:
        """The object version this event is about (Amazon S3 User Guide, "Event message
        structure": ``versionId`` when the bucket is versioned, ``sequencer`` for ordering)."""
        obj = self.s3.object
        return Upload(
            bucket=self.s3.bucket.name,
            key=obj.key,
            version_id=obj.versionId,
            sequencer=obj.sequencer,
            etag=obj.eTag,
            event_time=self.eventTime,
        )


class ContinuationEvent(_Lenient):
    """What a dispatcher run that stopped early sends to the next: the upload and the cursor."""

    job_id: str = Field(min_length=1)
    bucket: str = Field(min_length=1)
    key: str = Field(min_length=1)
    version_id: str | None = None
    sequencer: str | None = None
    etag: str | None = None
    event_time: str = ""
    cursor: int = Field(ge=1)

    @property
    def upload(self) -> Upload:
        return Upload(self.bucket, self.key, self.version_id, self.sequencer, self.etag, self.event_time)


class DispatcherEvent(_Lenient):
    """``{"Records": [...]}`` from S3, or ``{"continuation": {...}}`` from a previous run (S3's
    ``s3:TestEvent``, sent once when a notification is configured, has neither: ignored)."""

    Records: list[S3EventRecord] = Field(default_factory=list)
    continuation: ContinuationEvent | None = None


class ScheduledEvent(_Lenient):
    """EventBridge's scheduled event (only ``time`` is read, for the logs)."""

    time: str = ""
    detail_type: str = Field("", alias="detail-type")

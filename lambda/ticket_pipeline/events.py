"""Typed Lambda events: the S3 event notification (dispatcher) and SNS (aggregator).

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

__all__ = ["S3Event", "S3EventRecord", "SnsModel"]


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
    def idempotency_token(self) -> str:
        """What distinguishes this upload of the key from another upload of the same key.

        ``sequencer`` is S3's per-key ordering token (present on real ObjectCreated events); moto
        omits it, so fall back to version id, then eTag + event time (a duplicate delivery of the
        same event repeats both; a re-upload has a new event time).
        """
        obj = self.s3.object
        return obj.sequencer or obj.versionId or f"{obj.eTag}|{self.eventTime}"


class S3Event(_Lenient):
    """``{"Records": [...]}``. S3's ``s3:TestEvent`` (sent once when a queue notification is
    configured) has no ``Records``: it parses to an empty list and is ignored."""

    Records: list[S3EventRecord] = Field(default_factory=list)

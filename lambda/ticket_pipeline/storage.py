"""S3 access for the logic modules: a small object store over a boto3 S3 client.

Logic code depends on :class:`ObjectStore` (reads stream line by line, writes bytes or files)
and never on boto3 directly; tests pass one built on a client pointed at moto's server.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC
from typing import IO, Any
from urllib.parse import unquote

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

_S3_URI = re.compile(r"^s3://(?P<bucket>[^/]+)/(?P<key>.+)$")
_HTTPS_URI = re.compile(r"^https://(?P<bucket>[^/.]+)\.s3[.-][^/]*amazonaws\.com/(?P<key>.+)$")
# Multipart uploads of the consolidated results: 8 MiB parts, at most 4 in memory at once.
_UPLOAD = TransferConfig(multipart_chunksize=8 * 1024 * 1024, max_concurrency=4)
_MISSING = {"NoSuchKey", "404", "NotFound", "NoSuchBucket", "NoSuchVersion"}


class ObjectNotFound(LookupError):
    """The object (or its bucket) does not exist."""


class ObjectUnreadable(OSError):
    """The object exists but cannot be read (e.g. access denied)."""


@dataclass(frozen=True)
class S3Location:
    """An object, optionally one version of it (``version_id``: reads get exactly that version)."""

    bucket: str
    key: str
    version_id: str | None = None

    @classmethod
    def parse(cls, uri: str) -> S3Location:
        """``s3://bucket/key`` or a virtual-hosted ``https://bucket.s3.<region>.amazonaws.com/key``."""
        match = _S3_URI.match(uri)
        if match:
            return cls(match["bucket"], match["key"])
        match = _HTTPS_URI.match(uri)
        if match:
            return cls(match["bucket"], unquote(match["key"]))
        raise ValueError(f"not an S3 URI: {uri!r}")

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def __str__(self) -> str:
        return self.uri


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    content_type: str | None
    etag: str | None = None
    version_id: str | None = None
    content_encoding: str | None = None  # e.g. gzip: the ticket reader decompresses
    metadata: dict[str, str] = field(default_factory=dict)  # user metadata (x-amz-meta-*)
    last_modified: str | None = None  # ISO 8601 UTC, when S3 stored this version


def _iso_utc(value: Any) -> str | None:
    """botocore's LastModified (a timezone-aware datetime) as a sortable UTC string."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class ObjectStore:
    """Thin wrapper over a boto3 S3 client."""

    def __init__(self, s3_client: Any):
        self.client = s3_client

    @staticmethod
    def _object(loc: S3Location, **extra: Any) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"Bucket": loc.bucket, "Key": loc.key, **extra}
        if loc.version_id:
            kwargs["VersionId"] = loc.version_id
        return kwargs

    def _raise(self, exc: ClientError, loc: S3Location) -> None:
        if _code(exc) in _MISSING:
            raise ObjectNotFound(f"{loc} does not exist") from exc
        if _code(exc) in {"AccessDenied", "403", "InvalidObjectState", "KMS.DisabledException"}:
            raise ObjectUnreadable(f"{loc} cannot be read: {_code(exc)}") from exc
        raise exc

    def head(self, loc: S3Location) -> ObjectInfo:
        try:
            head = self.client.head_object(**self._object(loc))
        except ClientError as exc:
            self._raise(exc, loc)
        etag = head.get("ETag")
        return ObjectInfo(
            int(head["ContentLength"]),
            head.get("ContentType"),
            etag.strip('"') if etag else None,
            head.get("VersionId"),
            head.get("ContentEncoding"),
            dict(head.get("Metadata") or {}),
            _iso_utc(head.get("LastModified")),
        )

    def iter_chunks(self, loc: S3Location, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Stream the object's bytes in chunks (never the whole object in memory)."""
        try:
            body = self.client.get_object(**self._object(loc))["Body"]
        except ClientError as exc:
            self._raise(exc, loc)
        try:
            yield from body.iter_chunks(chunk_size)
        finally:
            body.close()

    def iter_lines(self, loc: S3Location, chunk_size: int = 1 << 16) -> Iterator[bytes]:
        """Stream the object's lines, line endings kept (CSV needs them for quoted newlines)."""
        try:
            body = self.client.get_object(**self._object(loc))["Body"]
        except ClientError as exc:
            self._raise(exc, loc)
        try:
            yield from body.iter_lines(chunk_size=chunk_size, keepends=True)
        finally:
            body.close()

    def read_bytes(self, loc: S3Location, limit: int | None = None) -> bytes:
        kwargs = self._object(loc)
        if limit is not None:
            kwargs["Range"] = f"bytes=0-{max(limit - 1, 0)}"
        try:
            body = self.client.get_object(**kwargs)["Body"]
        except ClientError as exc:
            self._raise(exc, loc)
        with body:
            return body.read()

    def put_bytes(self, loc: S3Location, data: bytes, content_type: str) -> None:
        self.client.put_object(Bucket=loc.bucket, Key=loc.key, Body=data, ContentType=content_type)

    def put_file(self, loc: S3Location, fileobj: IO[bytes], content_type: str) -> None:
        fileobj.seek(0)
        self.client.upload_fileobj(
            fileobj, loc.bucket, loc.key, ExtraArgs={"ContentType": content_type}, Config=_UPLOAD
        )

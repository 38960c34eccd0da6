"""HTTP media negotiation of ``POST /invocations`` and whole-request errors.

Request formats (``Content-Type``) are parsed in ``reading.py``; responses (``Accept``, default
JSON) are ``application/json`` (records wrapped as ``{"predictions": [...]}``, or the Hugging
Face toolkit's list for its request shape) or ``application/jsonlines`` (one record per line);
see ``outputs.py``. ``top_k`` can also come from SageMaker's ``CustomAttributes``
(``top_k=3``), the only way to pass it with a JSON Lines or CSV body.
"""

from __future__ import annotations

import orjson

from triage_core.reader import JSONL_TYPES, split_media_type

JSON = "application/json"
JSONL = "application/jsonlines"
CSV = "text/csv"
REQUEST_TYPES = (JSON, JSONL, CSV)
RESPONSE_TYPES = (JSON, JSONL)


class HttpError(Exception):
    """A whole-request failure: becomes ``{"error": message, "status": status}``."""

    def __init__(self, status: int, message: str, **extra: object):
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra

    def body(self) -> bytes:
        return orjson.dumps({"error": self.message, "status": self.status, **self.extra})


def response_format(accept: str | None) -> str:
    """``json`` or ``jsonl`` from the Accept header (absent or ``*/*``: JSON); 406 otherwise."""
    if not accept or not accept.strip():
        return "json"
    choices: list[tuple[float, int, str]] = []
    for position, entry in enumerate(accept.split(",")):
        if not entry.strip():
            continue
        media, params = split_media_type(entry)
        try:
            quality = float(params.get("q", "1"))
        except ValueError:
            quality = 1.0
        if quality <= 0:
            continue
        if media in (JSON, "*/*", "application/*"):
            choices.append((-quality, position, "json"))
        elif media in JSONL_TYPES:
            choices.append((-quality, position, "jsonl"))
    if not choices:
        raise HttpError(406, f"cannot produce {accept.strip()!r}", supported=list(RESPONSE_TYPES))
    return min(choices)[2]


def top_k_from_custom_attributes(value: str | None) -> int | None:
    """``top_k=N`` inside SageMaker's ``X-Amzn-SageMaker-Custom-Attributes`` header."""
    if not value:
        return None
    for part in value.replace(";", ",").split(","):
        key, sep, raw = part.partition("=")
        if sep and key.strip().lower() == "top_k":
            return validate_top_k(raw.strip())
    return None


def validate_top_k(value: object) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise HttpError(400, "top_k must be a positive integer")
    return value

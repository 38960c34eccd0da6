"""Request and response formats of ``POST /invocations``.

Requests (``Content-Type``):

* ``application/json``: ``{"inputs": "text"}``, ``{"inputs": ["t1", ...]}`` (the Hugging Face
  toolkit's shape) with optional ``"parameters": {"top_k": N}``; or
  ``{"instances": [{"id": ..., "text": ...}, ...]}``.
* ``application/jsonlines`` (also ``application/jsonl``, ``application/x-jsonlines``): one
  ``{"id": ..., "text": ...}`` per line (streamed).
* ``text/csv``: a header naming ``text`` and optionally ``id`` (streamed).

Responses (``Accept``, default JSON): one record per input record, in input order::

    {"id": "t-1", "index": 0, "label": "card_arrival", "score": 0.93, "needs_review": false,
     "top_k": [{"label": ..., "score": ...}, ...]}        # top_k only when asked for
    {"id": "t-2", "index": 1, "error": "empty text"}      # a bad record

``application/json`` wraps them as ``{"predictions": [...]}``; ``application/jsonlines`` writes
one per line. ``top_k`` can also come from SageMaker's ``CustomAttributes`` (``top_k=3``), the
only way to pass it with a JSON Lines or CSV body.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import orjson

from triage_core.records import CSV_TYPES, JSONL_TYPES, TicketRecord, make_record

JSON = "application/json"
JSONL = "application/jsonlines"
CSV = "text/csv"
REQUEST_TYPES = (JSON, JSONL, CSV)
RESPONSE_TYPES = (JSON, JSONL)
_UTF8 = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})


class HttpError(Exception):
    """A whole-request failure: becomes ``{"error": message, "status": status}``."""

    def __init__(self, status: int, message: str, **extra: object):
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra

    def body(self) -> bytes:
        return orjson.dumps({"error": self.message, "status": self.status, **self.extra})


def _split_media_type(value: str) -> tuple[str, dict[str, str]]:
    main, *params = value.split(";")
    parsed = {}
    for param in params:
        key, _, val = param.partition("=")
        parsed[key.strip().lower()] = val.strip().strip('"').lower()
    return main.strip().lower(), parsed


def request_format(content_type: str | None) -> str:
    """``json``, ``jsonl`` or ``csv`` from the Content-Type header; 415 otherwise."""
    if not content_type or not content_type.strip():
        raise HttpError(415, "missing Content-Type", supported=list(REQUEST_TYPES))
    media, params = _split_media_type(content_type)
    charset = params.get("charset")
    if charset and charset not in _UTF8:
        raise HttpError(415, f"unsupported charset {charset!r}: send UTF-8", supported=list(REQUEST_TYPES))
    if media == JSON:
        return "json"
    if media in JSONL_TYPES:
        return "jsonl"
    if media in CSV_TYPES:
        return "csv"
    raise HttpError(415, f"unsupported Content-Type {media!r}", supported=list(REQUEST_TYPES))


def response_format(accept: str | None) -> str:
    """``json`` or ``jsonl`` from the Accept header (absent or ``*/*``: JSON); 406 otherwise."""
    if not accept or not accept.strip():
        return "json"
    choices: list[tuple[float, int, str]] = []
    for position, entry in enumerate(accept.split(",")):
        if not entry.strip():
            continue
        media, params = _split_media_type(entry)
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
            return _validate_top_k(raw.strip())
    return None


def _validate_top_k(value: object) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise HttpError(400, "top_k must be a positive integer")
    return value


def decode_json_request(body: bytes) -> tuple[list[TicketRecord], int | None]:
    """Records and ``top_k`` from an ``application/json`` body; 400 for a malformed body."""
    if not body.strip():
        raise HttpError(400, "empty body")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            raise HttpError(400, "body is not valid UTF-8") from None
        raise HttpError(400, f"malformed JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise HttpError(400, 'expected a JSON object: {"inputs": ...} or {"instances": [...]}')
    top_k = None
    parameters = payload.get("parameters")
    if parameters is not None:
        if not isinstance(parameters, dict):
            raise HttpError(400, "'parameters' must be an object")
        if parameters.get("top_k") is not None:
            top_k = _validate_top_k(parameters["top_k"])
    if "inputs" in payload:
        inputs = payload["inputs"]
        if isinstance(inputs, str):
            inputs = [inputs]
        elif not isinstance(inputs, list):
            raise HttpError(400, "'inputs' must be a string or a list of strings")
    elif "instances" in payload:
        inputs = payload["instances"]
        if not isinstance(inputs, list):
            raise HttpError(400, '\'instances\' must be a list of {"id", "text"} objects')
    else:
        raise HttpError(400, 'expected a JSON object: {"inputs": ...} or {"instances": [...]}')
    if not inputs:
        raise HttpError(400, "no tickets in the request")
    records = []
    for index, item in enumerate(inputs):
        if isinstance(item, str):
            records.append(make_record(index, None, item))
        elif isinstance(item, dict):
            records.append(make_record(index, item.get("id"), item.get("text")))
        else:
            records.append(
                TicketRecord(index, None, None, "a ticket must be a string or an object with 'text'")
            )
    return records, top_k


class RecordEncoder:
    """Turns records and their score rows into response records (bytes, no separators)."""

    def __init__(self, labels: Sequence[str], review_threshold: float, top_k: int | None):
        self.labels = list(labels)
        self.threshold = review_threshold
        self.top_k = None if top_k is None else min(top_k, len(self.labels))

    def encode(self, records: Sequence[TicketRecord], scores: np.ndarray) -> list[bytes]:
        """``scores[j]`` belongs to the j-th record with ``ok``; bad records become errors."""
        labels, threshold, dumps = self.labels, self.threshold, orjson.dumps
        best = scores.argmax(axis=1).tolist() if len(scores) else []
        best_scores = scores[np.arange(len(scores)), best].tolist() if len(scores) else []
        ranked = None
        if self.top_k is not None and len(scores):
            ranked = np.argsort(-scores, axis=1, kind="stable")[:, : self.top_k]
        out: list[bytes] = []
        row = 0
        for record in records:
            if record.error is not None:
                out.append(dumps({"id": record.id, "index": record.index, "error": record.error}))
                continue
            score = best_scores[row]
            entry = {
                "id": record.id,
                "index": record.index,
                "label": labels[best[row]],
                "score": round(score, 6),
                "needs_review": score < threshold,
            }
            if ranked is not None:
                entry["top_k"] = [
                    {"label": labels[i], "score": round(float(scores[row, i]), 6)}
                    for i in ranked[row].tolist()
                ]
            out.append(dumps(entry))
            row += 1
        return out


def error_record(message: str) -> bytes:
    """A trailing record for a failure after the response had started (index unknown)."""
    return orjson.dumps({"id": None, "index": None, "error": message})

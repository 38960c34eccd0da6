"""Post-processing: score rows -> response records, in this project's shape or the Hugging Face
toolkit's.

**This project's shape** (``instances``, JSON Lines, CSV, and ``inputs`` with ``Accept:
application/jsonlines``): one record per input record, in input order::

    {"id": "t-1", "index": 0, "label": "card_arrival", "score": 0.93, "needs_review": false,
     "top_k": [{"label": ..., "score": ...}, ...]}        # top_k only when asked for
    {"id": "t-2", "index": 1, "error": "empty text"}      # a bad record

**The Hugging Face inference toolkit's shape** (``{"inputs": str | [str, ...], "parameters":
{...}}`` answered as JSON), so an existing client of a toolkit endpoint works unchanged. The toolkit
(``sagemaker_huggingface_inference_toolkit.handler_service.HuggingFaceHandlerService.predict``)
calls ``pipeline(inputs, **parameters)`` and JSON-encodes what transformers'
``TextClassificationPipeline`` returns:

==================================  ====================================  ==========================
parameters                          ``inputs`` a string                   ``inputs`` a list
==================================  ====================================  ==========================
none (or ``return_all_scores``      ``[{"label", "score"}]``              ``[{"label", "score"}, ...]``
false)
``top_k: N`` (N >= 0)               ``[{...}]`` * N, best first           ``[[{...}] * N, ...]``
``top_k: null``                     every label, best first               ``[[every label], ...]``
``return_all_scores: true``         ``[[every label, label order]]``      ``[[every label], ...]``
                                    (transformers 4.x; removed in 5)
==================================  ====================================  ==========================

``top_k`` wins over ``return_all_scores``, as in transformers 4.x's ``_sanitize_parameters``.
``function_to_apply`` (``softmax`` / ``sigmoid`` / ``none``, any case) is honoured when it is the
function the model's scores already are (the artifact's ``scoring``), else answered with 400:
the server keeps scores, not logits. ``truncation: true`` is what the server always does. Any
other parameter is a 400, never silently ignored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson

from inference_server.codecs import HttpError, validate_top_k
from triage_core.records import TicketRecord

_UNSET = object()


class RecordEncoder:
    """This project's response records (bytes, no separators)."""

    wrapper = (b'{"predictions":[', b"]}")

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

    def unscored(self, records: Sequence[TicketRecord], reason: str) -> list[bytes]:
        """One error record per record that will not be scored (the request ran out of time)."""
        dumps = orjson.dumps
        return [
            dumps({"id": r.id, "index": r.index, "error": r.error if r.error is not None else reason})
            for r in records
        ]


def project_top_k(parameters: Mapping[str, Any] | None, attribute_top_k: int | None) -> int | None:
    """``top_k`` of a request in this project's shape: ``parameters.top_k`` (a positive integer),
    else SageMaker's ``CustomAttributes`` value; any other parameter is a 400."""
    if not parameters:
        return attribute_top_k
    unknown = sorted(set(parameters) - {"top_k"})
    if unknown:
        raise HttpError(400, f"unsupported parameter(s) {unknown}: this endpoint takes 'top_k'")
    if parameters.get("top_k") is None:
        return attribute_top_k
    return validate_top_k(parameters["top_k"])


class ToolkitEncoder(RecordEncoder):
    """Hugging Face toolkit responses (see the module docstring); the list wrapper is ``[...]``."""

    wrapper = (b"[", b"]")

    def __init__(
        self, labels: Sequence[str], scoring: str, single: bool, parameters: Mapping[str, Any] | None
    ):
        super().__init__(labels, 0.0, None)
        self.single = single
        parameters = dict(parameters or {})
        unknown = sorted(set(parameters) - {"top_k", "function_to_apply", "return_all_scores", "truncation"})
        if unknown:
            raise HttpError(
                400,
                f"unsupported parameter(s) {unknown}: this endpoint takes top_k, function_to_apply, "
                "return_all_scores and truncation (always on)",
            )
        if "truncation" in parameters and parameters["truncation"] is not True:
            raise HttpError(400, "truncation: the model's inputs are always truncated to its maximum length")
        function = parameters.get("function_to_apply")
        if function is not None:
            if not isinstance(function, str) or function.lower() not in ("softmax", "sigmoid", "none"):
                raise HttpError(400, "function_to_apply must be 'softmax', 'sigmoid' or 'none'")
            if function.lower() != scoring:
                raise HttpError(
                    400,
                    f"function_to_apply={function!r} is not available: this model's scores are "
                    f"{scoring} scores (send {scoring!r} or leave it out)",
                )
        top_k = parameters.get("top_k", _UNSET)
        all_scores = parameters.get("return_all_scores", _UNSET)
        if all_scores is not _UNSET and not isinstance(all_scores, bool):
            raise HttpError(400, "return_all_scores must be true or false")
        if (
            top_k is not _UNSET
            and top_k is not None
            and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0)
        ):
            raise HttpError(400, "top_k must be a non-negative integer or null")
        # transformers 4.x: an explicit top_k (int or null) wins and switches off the legacy
        # shape; otherwise return_all_scores=true means every label in label order, legacy shape.
        if top_k is not _UNSET:
            self.legacy, self.k, self.sort = False, top_k, True
        elif all_scores is True:
            self.legacy, self.k, self.sort = True, None, False
        else:
            self.legacy, self.k, self.sort = True, 1, True

    def encode(self, records: Sequence[TicketRecord], scores: np.ndarray) -> list[bytes]:
        labels, dumps = self.labels, orjson.dumps
        out: list[bytes] = []
        row = 0
        for record in records:
            if record.error is not None:  # only after a timeout: toolkit requests are checked first
                out.append(dumps({"index": record.index, "error": record.error}))
                continue
            values = scores[row].tolist()
            row += 1
            if self.legacy and self.k == 1:
                best = int(np.argmax(scores[row - 1]))
                out.append(dumps({"label": labels[best], "score": values[best]}))
                continue
            order = range(len(labels))
            if self.sort:
                order = np.argsort(-scores[row - 1], kind="stable").tolist()
            if self.k is not None:
                order = order[: self.k]
            ranked = [{"label": labels[i], "score": values[i]} for i in order]
            if self.single and not self.legacy:  # a string with top_k: the list itself
                out.append(dumps(ranked)[1:-1])
            else:
                out.append(dumps(ranked))
        return out

    def unscored(self, records: Sequence[TicketRecord], reason: str) -> list[bytes]:
        return [orjson.dumps({"index": r.index, "error": r.error or reason}) for r in records]


def check_toolkit_records(records: Sequence[TicketRecord]) -> None:
    """The toolkit's shape has no place for a per-item error: a bad item fails the request."""
    bad = [(r.index, r.error) for r in records if r.error is not None]
    if bad:
        shown = "; ".join(f"inputs[{index}]: {error}" for index, error in bad[:5])
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise HttpError(400, f"{shown}{more}", hint="send 'instances' or JSON Lines for per-record errors")


def error_record(message: str) -> bytes:
    """A trailing record for a failure after the response had started (index unknown)."""
    return orjson.dumps({"id": None, "index": None, "error": message})

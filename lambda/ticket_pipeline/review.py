"""The review queue and the drift numbers of a job, built while the job is finalized.

While :func:`.results.consolidate` writes ``results.jsonl``, a :class:`ReviewRun` sees every
classified ticket once (the same exactly-once guard) and keeps:

* the flagged tickets: ``needs_review`` (top score under the review threshold, decided by the
  model server) or *out of scope* (top score under ``OUT_OF_SCOPE_BELOW``: the ticket fits no
  category; see docs/pipeline.md, "The review queue"). Each is written to
  ``<REVIEW_PREFIX><job>/review.jsonl`` in the output bucket with the text as the dispatcher sent
  it (read back from its chunk), the top three labels with their scores and why it is flagged;
* the predicted category mix, the share to review and the share out of scope, published as
  EMF metrics per file (:func:`drift_metrics`), and the Jensen-Shannon distance of the mix from
  the training mix the model artifact carries (``TRAINING_MIX``).

Then every flagged ticket is published to the review topic, in as many messages as the SNS size
limit needs (:func:`review_messages`): a subscriber that cannot read S3 (a help desk webhook)
still receives every flagged ticket. The messages are a pure function of the job's review file,
so the re-publication a takeover may do after a crash repeats the same messages with the same
``dedup_id`` (the results message has the same window; docs/chaos.md).
"""

from __future__ import annotations

import json
import math
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from ticket_pipeline.logs import child_logger
from ticket_pipeline.metrics import PipelineMetrics
from ticket_pipeline.storage import ObjectNotFound, ObjectStore, ObjectUnreadable, S3Location

logger = child_logger()

# Labels with scores per flagged ticket; the dispatcher asks the server for as many
# (``CustomAttributes: top_k=3``, :func:`.submission.invoke_chunk`).
TOP_K = 3
# Amazon SNS API Reference, Publish, Message: "messages must be UTF-8 encoded strings and at most
# 256 KB in size (262,144 bytes, not 262,144 characters)"; the attributes count towards it.
SNS_MESSAGE_BYTES = 262_144
MESSAGE_BUDGET = SNS_MESSAGE_BYTES - 8 * 1024  # the envelope fields and the attributes
# An item whose text alone would crowd a message goes inline with its text cut here (the whole
# text stays in review.jsonl; the item says ``text_truncated``).
INLINE_TEXT_CHARS = 8_000
SPOOL_BYTES = 8 * 1024 * 1024  # review items in memory up to this, then on /tmp
OUT_OF_SCOPE = "out_of_scope"
LOW_CONFIDENCE = "low_confidence"


def js_distance(observed: Mapping[str, float], reference: Mapping[str, float]) -> float:
    """Jensen-Shannon distance (base 2, so within [0, 1]) between two category mixes given as
    counts or shares; a category missing from one side counts 0 there."""
    labels = sorted(set(observed) | set(reference))
    p_total = sum(max(0.0, float(observed.get(label, 0))) for label in labels)
    q_total = sum(max(0.0, float(reference.get(label, 0))) for label in labels)
    if p_total <= 0 or q_total <= 0:
        raise ValueError("both mixes need a positive total")
    divergence = 0.0
    for label in labels:
        p = max(0.0, float(observed.get(label, 0))) / p_total
        q = max(0.0, float(reference.get(label, 0))) / q_total
        m = (p + q) / 2
        if p > 0:
            divergence += 0.5 * p * math.log2(p / m)
        if q > 0:
            divergence += 0.5 * q * math.log2(q / m)
    return math.sqrt(max(0.0, divergence))


@dataclass(frozen=True)
class ReviewConfig:
    """What the review run needs from the settings (:class:`.settings.AggregatorSettings`)."""

    topic_arn: str
    output_bucket: str
    prefix: str  # "review/"
    out_of_scope_below: float
    training_mix: Mapping[str, float] | None
    drift_min_tickets: int


@dataclass
class ReviewRun:
    """One job's review queue and category mix; ``observe`` is :func:`.results.consolidate`'s
    observer (called once per classified ticket)."""

    config: ReviewConfig
    meta: dict[str, Any]
    objects: ObjectStore
    publisher: Any  # .results.Publisher
    metrics: PipelineMetrics
    spool: IO[bytes] = field(default_factory=lambda: tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES))  # noqa: SIM115
    labels: Counter = field(default_factory=Counter)
    succeeded: int = 0
    flagged: int = 0
    out_of_scope: int = 0
    _texts: tuple[str, list[dict[str, Any]] | Exception] | None = None

    @property
    def location(self) -> S3Location:
        key = f"{self.config.prefix}{self.meta['job_id']}/review.jsonl"
        return S3Location(self.config.output_bucket, key)

    def observe(self, chunk: dict[str, Any], index: int, ticket_id: str, record: dict[str, Any]) -> None:
        label, score = record["label"], float(record["score"])
        self.succeeded += 1
        self.labels[label] += 1
        below = self.config.out_of_scope_below
        if score < below:
            reason, why = OUT_OF_SCOPE, f"top score {score:.4f} is below the out-of-scope threshold {below:g}"
        elif record.get("needs_review"):
            reason, why = LOW_CONFIDENCE, f"top score {score:.4f} is below the review threshold"
        else:
            return
        self.flagged += 1
        self.out_of_scope += reason == OUT_OF_SCOPE
        top = record.get("top_k") if isinstance(record.get("top_k"), list) else None
        labels = [
            {"label": str(entry["label"]), "score": round(float(entry["score"]), 6)}
            for entry in (top or [{"label": label, "score": score}])[:TOP_K]
            if isinstance(entry, dict) and "label" in entry and "score" in entry
        ]
        item: dict[str, Any] = {"id": ticket_id, "text": None, "labels": labels, "reason": reason, "why": why}
        text = self._text(chunk, index, ticket_id)
        if isinstance(text, str):
            item["text"] = text
        else:
            item["text_unavailable"] = text[1]
        self.spool.write(json.dumps(item, ensure_ascii=False).encode("utf-8") + b"\n")

    def _text(self, chunk: dict[str, Any], index: int, ticket_id: str) -> str | tuple[None, str]:
        """The ticket's text as the dispatcher wrote it into its chunk (read once per chunk)."""
        where = str(chunk.get("input_location", ""))
        if self._texts is None or self._texts[0] != where:
            try:
                lines = self.objects.iter_lines(S3Location.parse(where))
                self._texts = (where, [json.loads(line) for line in lines if line.strip()])
            except (ObjectNotFound, ObjectUnreadable, ValueError) as exc:
                self._texts = (where, exc)
        rows = self._texts[1]
        if isinstance(rows, Exception):
            return None, f"the chunk {where} cannot be read: {rows}"
        if index >= len(rows) or not isinstance(rows[index], dict) or rows[index].get("id") != ticket_id:
            return None, f"the chunk {where} does not hold this ticket at position {index}"
        return str(rows[index].get("text", ""))

    def write(self) -> S3Location | None:
        """Write review.jsonl for a job with classified tickets (empty when none is flagged); a job
        without any (the dispatcher finalizes those) has no review file."""
        if not self.succeeded:
            return None
        self.spool.seek(0)
        self.objects.put_file(self.location, _KeepOpen(self.spool), "application/jsonlines")
        return self.location

    def items(self) -> Iterator[dict[str, Any]]:
        self.spool.seek(0)
        for line in self.spool:
            if line.strip():
                yield json.loads(line)

    def publish(self, report_message: Mapping[str, Any]) -> list[str]:
        """Publish the review messages of the job (none when nothing is flagged)."""
        if not self.flagged:
            return []
        envelope = {
            "type": "review",
            "job_id": self.meta["job_id"],
            "source": report_message.get("source"),
            "status": report_message.get("status"),
            "review": self.location.uri,
            "results": report_message.get("results"),
            "flagged": self.flagged,
            "out_of_scope": self.out_of_scope,
        }
        if report_message.get("version_id") is not None:
            envelope["version_id"] = report_message["version_id"]
        ids = []
        for message in review_messages(envelope, self.items()):
            response = self.publisher.client.publish(
                TopicArn=self.config.topic_arn,
                Message=json.dumps(message, ensure_ascii=False),
                MessageAttributes={
                    "type": {"DataType": "String", "StringValue": "review"},
                    "dedup_id": {"DataType": "String", "StringValue": message["dedup_id"]},
                },
            )
            ids.append(response.get("MessageId", ""))
        return ids

    def drift(self) -> dict[str, float]:
        """This file's numbers: shares of the classified tickets, and the mix's distance from the
        training mix (only with at least ``drift_min_tickets``: a small file's mix is noise)."""
        if not self.succeeded:
            return {}
        numbers = {
            "ReviewShare": self.flagged / self.succeeded,
            "OutOfScopeShare": self.out_of_scope / self.succeeded,
        }
        if self.config.training_mix and self.succeeded >= self.config.drift_min_tickets:
            numbers["CategoryDrift"] = js_distance(self.labels, self.config.training_mix)
        return numbers

    def count(self, messages: int) -> dict[str, float]:
        """Counts and per-file numbers into the invocation's EMF metrics (once the job's messages
        are out: a finalization that fails and is retried counts once)."""
        self.metrics.count("ReviewMessagesPublished", messages)
        self.metrics.count("TicketsToReview", self.flagged)
        self.metrics.count("TicketsOutOfScope", self.out_of_scope)
        numbers = self.drift()
        for name, value in numbers.items():
            self.metrics.sample(name, round(value, 6))
        return numbers

    def close(self) -> None:
        self.spool.close()


class _KeepOpen:
    """The spool as boto3's upload sees it: the upload closes its file object when done, and the
    review messages are read from the same spool afterwards."""

    def __init__(self, spool: IO[bytes]):
        self._spool = spool

    def __getattr__(self, name: str) -> Any:
        return getattr(self._spool, name)

    def close(self) -> None:
        pass


def _bytes(message: Mapping[str, Any]) -> int:
    return len(json.dumps(message, ensure_ascii=False).encode("utf-8"))


def inline_item(item: dict[str, Any]) -> dict[str, Any]:
    """The item as it goes into a message: a very long text is cut (review.jsonl has all of it)."""
    text = item.get("text")
    if isinstance(text, str) and len(text) > INLINE_TEXT_CHARS:
        return {**item, "text": text[:INLINE_TEXT_CHARS], "text_truncated": True}
    return item


def review_messages(envelope: Mapping[str, Any], items: Iterator[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every item, in order, packed into messages of at most :data:`MESSAGE_BUDGET` bytes each;
    each message carries the envelope, ``part``/``parts`` and ``dedup_id`` ``<job>/review/<part>``."""
    batches: list[list[dict[str, Any]]] = [[]]
    probe = {**envelope, "part": 10**6, "parts": 10**6, "dedup_id": f"{envelope['job_id']}/review/{10**6}"}
    base = _bytes({**probe, "items": []})
    size = base
    for item in items:
        entry = inline_item(item)
        cost = _bytes(entry) + 1  # the comma
        if batches[-1] and size + cost > MESSAGE_BUDGET:
            batches.append([])
            size = base
        batches[-1].append(entry)
        size += cost
    parts = len(batches)
    return [
        {
            **envelope,
            "part": number,
            "parts": parts,
            "dedup_id": f"{envelope['job_id']}/review/{number}",
            "items": batch,
        }
        for number, batch in enumerate(batches, start=1)
        if batch
    ]


def review_for(settings: Any, deps: Any) -> Callable[[dict[str, Any]], ReviewRun] | None:
    """A factory of review runs over a handler's stores, or None when the function has no review
    topic (a stack without the review queue)."""
    if not getattr(settings, "review_topic_arn", None):
        return None
    config = ReviewConfig(
        topic_arn=settings.review_topic_arn,
        output_bucket=settings.output_bucket,
        prefix=settings.review_prefix,
        out_of_scope_below=settings.out_of_scope_below,
        training_mix=settings.training_mix,
        drift_min_tickets=settings.drift_min_tickets,
    )
    return lambda meta: ReviewRun(config, meta, deps.objects, deps.publisher, deps.metrics)

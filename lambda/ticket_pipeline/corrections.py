"""Corrections that come back: reviewers' labels for tickets the pipeline classified.

A correction file (JSON Lines or CSV, any charset, gzip or not: the shared ticket reader reads
it) dropped under ``corrections/`` in the input bucket holds one ``{"id", "source", "label"}``
per line, optionally ``text`` (the ticket text as the reviewer saw it). ``source`` is the key of
the ticket file the ticket came in (``incoming/...``, or ``s3://<input bucket>/incoming/...``),
``id`` the ticket's id in that file's ``results.jsonl``.

Every line ends up **accepted** (``recorded``, ``superseded``: a newer label for a ticket already
corrected, ``duplicate``: the same label again, ``stale``: older than the correction recorded
for the ticket) or **rejected** with a reason, in
``<CORRECTIONS_OUTPUT_PREFIX><file key>/<version>/`` of the output bucket: ``report.json`` (the
outcome counts) and ``rejections.jsonl`` (one line per rejected line: ``line``, ``id``,
``source``, ``label``, ``error``). A file that cannot be read as a whole is one rejection with
``line`` null. Both files are a pure function of the correction file and the table, so a
re-delivered event rewrites the same bytes.

Checks, in order: the reader's own per-record errors; an id; a label the deployed model has
(read from the model archive the endpoint serves, :func:`load_labels`); a source under the
input prefix; the source's results (the *current* version of the source key: its job id is
:func:`.intake.job_id_for` of that version) holding the id among its classified tickets.

Recording (the jobs table, kept out of the jobs' TTL)::

    pk = CORRECTIONS  sk = T#<sha256(source, id)>   source, ticket_id, label, predicted, correct,
                                                    text, job_id, order, file, line, recorded_at
    pk = ACCURACY     sk = ALL | LABEL#<label>       reviewed, correct (by the reviewer's label),
                                                    predicted, predicted_correct (by the model's)

One correction per ticket. Which one: the greatest ``order`` = (the correction file's S3
``LastModified``, its key, the event's ``sequencer``, the line number): a later file supersedes
(two uploads of one key within the same second: S3's per-key sequencer orders them), within a
file a later line does; a line with the label already recorded is a ``duplicate``.
Each write is one DynamoDB transaction: the ticket's item, conditioned on the
item read just before being unchanged (absent, or the same ``order``), together with the net
change of the accuracy counters (the old correction's counts out, the new one's in), so the
counters always equal the corrections recorded: a re-delivered event or the same file dropped
twice finds its order (or its label) already there and changes nothing.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import tarfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from ticket_pipeline.chunking import GENERATED_PREFIX
from ticket_pipeline.intake import job_id_for
from ticket_pipeline.jobs import _plain
from ticket_pipeline.logs import child_logger
from ticket_pipeline.metrics import PipelineMetrics
from ticket_pipeline.settings import CorrectionsSettings
from ticket_pipeline.storage import ObjectNotFound, ObjectStore, ObjectUnreadable, S3Location
from triage_core.reader import TicketReader
from triage_core.records import FieldMap, RecordFormatError
from triage_core.textstream import ChunkStream

logger = child_logger()

CORRECTIONS_PK = "CORRECTIONS"
ACCURACY_PK = "ACCURACY"
ALL = "ALL"
COUNTERS = ("reviewed", "correct", "predicted", "predicted_correct")
MANIFEST = "triage_artifact.json"
RECORDED, SUPERSEDED, DUPLICATE, STALE, REJECTED = "recorded", "superseded", "duplicate", "stale", "rejected"
ACCEPTED = (RECORDED, SUPERSEDED, DUPLICATE, STALE)
MAX_ATTEMPTS = 8  # transaction retries when another invocation wrote the same ticket in between
# The fields of a correction line: the reader reads one of them as the record's "text" per pass.
ID, SOURCE, LABEL, TEXT = "id", "source", "label", "text"


# --- the labels the deployed model serves ---------------------------------------------------------
def labels_from_manifest(data: bytes) -> tuple[str, ...]:
    labels = json.loads(data)["labels"]
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels) or len(labels) < 2:
        raise ValueError(f"{MANIFEST} has no list of labels")
    return tuple(labels)


def load_labels(objects: ObjectStore, location: S3Location) -> tuple[str, ...]:
    """The model's labels: from ``triage_artifact.json`` itself, or streamed out of the
    ``model.tar.gz`` the endpoint serves (read up to that member, never the whole archive in
    memory)."""
    if location.key.endswith(".json"):
        return labels_from_manifest(objects.read_bytes(location))
    stream = ChunkStream(objects.iter_chunks(location))
    with tarfile.open(fileobj=stream, mode="r|gz") as tar:
        for member in tar:
            if member.name.lstrip("./") == MANIFEST and member.isfile():
                handle = tar.extractfile(member)
                assert handle is not None
                return labels_from_manifest(handle.read())
    raise ValueError(f"{location} holds no {MANIFEST}")


# --- reading a correction file ----------------------------------------------------------------------
@dataclass(frozen=True)
class Line:
    """One line (record) of a correction file, as read; ``error`` set when it cannot be used."""

    line: int  # 1-based record number
    id: str | None
    source: str | None
    label: str | None
    text: str | None = None
    error: str | None = None


def _pass(data: bytes, key: str, info: Any, name: str, *, optional: bool = False) -> list[Any] | None:
    """The file's records with ``name`` read as the record's "text" (the shared reader joins
    fields into a text; one field per pass keeps each field's own errors)."""
    reader = TicketReader(
        [data],
        key=key,
        content_type=info.content_type,
        content_encoding=info.content_encoding,
        fields=FieldMap(ID, (name,)),
    )
    try:
        return list(reader)
    except RecordFormatError:
        if optional:
            return None
        raise


def read_lines(data: bytes, key: str, info: Any) -> list[Line]:
    """Every record of a correction file, good or bad (``RecordFormatError``: the file as a whole)."""
    sources = _pass(data, key, info, SOURCE)
    labels = _pass(data, key, info, LABEL)
    texts = _pass(data, key, info, TEXT, optional=True)
    assert sources is not None and labels is not None
    if len(sources) != len(labels) or (texts is not None and len(texts) != len(sources)):
        raise RecordFormatError("the file's records could not be read consistently")  # pragma: no cover
    out = []
    for i, (s, lab) in enumerate(zip(sources, labels, strict=True)):
        t = texts[i] if texts is not None else None
        error = _named(s.error, SOURCE) or _named(lab.error, LABEL)
        out.append(
            Line(
                line=s.index + 1,
                id=s.id if s.id is not None else lab.id,
                source=s.text.strip() if s.text else None,
                label=lab.text.strip() if lab.text else None,
                text=t.text if t is not None and t.ok else None,
                error=error,
            )
        )
    return out


def _named(error: str | None, name: str) -> str | None:
    """The reader says "empty text" of the field it reads as the text: name the field."""
    if error is None:
        return None
    return error.replace("empty text", f"empty {name}").replace("field 'text'", f"field {name!r}")


# --- the store -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Recorded:
    """What is recorded for a ticket."""

    source: str
    ticket_id: str
    label: str
    predicted: str
    job_id: str
    order: str
    file: str
    line: int
    text: str | None = None

    @property
    def correct(self) -> bool:
        return self.label == self.predicted


def ticket_sk(source: str, ticket_id: str) -> str:
    return "T#" + hashlib.sha256(f"{source}\n{ticket_id}".encode()).hexdigest()


def _counts(rec: Recorded, sign: int) -> dict[str, Counter]:
    """The counters one correction adds (``sign`` 1) or takes back (-1); the reviewer's label and
    the model's are one item when they agree."""
    c = int(rec.correct) * sign
    out: dict[str, Counter] = defaultdict(Counter)
    out[ALL].update(reviewed=sign, correct=c)
    out[f"LABEL#{rec.label}"].update(reviewed=sign, correct=c)
    out[f"LABEL#{rec.predicted}"].update(predicted=sign, predicted_correct=c)
    return out


def counter_deltas(old: Recorded | None, new: Recorded) -> dict[str, dict[str, int]]:
    """The net change of the accuracy counters when ``new`` replaces ``old`` (zeros dropped)."""
    total: dict[str, Counter] = defaultdict(Counter)
    for part in ([_counts(old, -1)] if old else []) + [_counts(new, 1)]:
        for sk, counts in part.items():
            total[sk].update(counts)
    return {
        sk: {k: v for k, v in counts.items() if v} for sk, counts in total.items() if any(counts.values())
    }


class CorrectionStore:
    """The corrections and the accuracy counters in the jobs table (a boto3 DynamoDB client)."""

    def __init__(self, client: Any, table: str):
        self.client, self.table = client, table

    def get(self, source: str, ticket_id: str) -> Recorded | None:
        resp = self.client.get_item(
            TableName=self.table,
            Key={"pk": {"S": CORRECTIONS_PK}, "sk": {"S": ticket_sk(source, ticket_id)}},
            ConsistentRead=True,
        )
        if "Item" not in resp:
            return None
        item = _plain(resp["Item"])
        return Recorded(**{k: item.get(k) for k in Recorded.__dataclass_fields__})

    def put(self, old: Recorded | None, new: Recorded, now: float) -> bool:
        """Record ``new`` in place of ``old`` with the counters' change; False when the item is
        no longer ``old`` (another invocation wrote it in between)."""
        item = {k: v for k, v in asdict(new).items() if v is not None}
        item.update(pk=CORRECTIONS_PK, sk=ticket_sk(new.source, new.ticket_id), correct=new.correct)
        item["recorded_at"] = datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds")
        put: dict[str, Any] = {"TableName": self.table, "Item": _ddb(item)}
        if old is None:
            put["ConditionExpression"] = "attribute_not_exists(pk)"
        else:
            put["ConditionExpression"] = "#order = :order"
            put["ExpressionAttributeNames"] = {"#order": "order"}
            put["ExpressionAttributeValues"] = {":order": {"S": old.order}}
        actions: list[dict[str, Any]] = [{"Put": put}]
        for sk, delta in sorted(counter_deltas(old, new).items()):
            names = {f"#c{i}": name for i, name in enumerate(sorted(delta))}
            values = {f":c{i}": {"N": str(delta[name])} for i, name in enumerate(sorted(delta))}
            actions.append(
                {
                    "Update": {
                        "TableName": self.table,
                        "Key": {"pk": {"S": ACCURACY_PK}, "sk": {"S": sk}},
                        "UpdateExpression": "ADD "
                        + ", ".join(f"{n} {v}" for n, v in zip(names, values, strict=True)),
                        "ExpressionAttributeNames": names,
                        "ExpressionAttributeValues": values,
                    }
                }
            )
        try:
            self.client.transact_write_items(TransactItems=actions)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "TransactionCanceledException":
                reasons = exc.response.get("CancellationReasons") or [{"Code": "ConditionalCheckFailed"}]
                if reasons[0].get("Code") == "ConditionalCheckFailed":
                    return False
            raise
        return True

    def accuracy(self) -> dict[str, dict[str, int]]:
        """``{"ALL": {...}, "<label>": {...}}``: the counters (0 where a count was never touched)."""
        out: dict[str, dict[str, int]] = {}
        for item in self._query(ACCURACY_PK):
            name = item["sk"].removeprefix("LABEL#")
            out[name] = {
                k: int(item.get(k, 0)) for k in ("reviewed", "correct", "predicted", "predicted_correct")
            }
        return out

    def corrections(self) -> Iterator[dict[str, Any]]:
        """Every recorded correction (what the training export writes)."""
        for item in self._query(CORRECTIONS_PK):
            yield {k: v for k, v in item.items() if k not in ("pk", "sk")}

    def _query(self, pk: str) -> Iterator[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": pk}},
            "ConsistentRead": True,
        }
        while True:
            resp = self.client.query(**kwargs)
            yield from (_plain(i) for i in resp.get("Items", []))
            if "LastEvaluatedKey" not in resp:
                return
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]


def _ddb(item: dict[str, Any]) -> dict[str, Any]:
    from ticket_pipeline.jobs import _item

    return _item(item)


def accuracy_share(counts: dict[str, int]) -> float | None:
    return round(counts["correct"] / counts["reviewed"], 4) if counts.get("reviewed") else None


# --- one correction file ------------------------------------------------------------------------------
@dataclass
class Deps:
    objects: ObjectStore
    store: CorrectionStore
    labels: Callable[[], tuple[str, ...]]
    metrics: PipelineMetrics = field(default_factory=PipelineMetrics)
    clock: Callable[[], float] = time.time


@dataclass
class FileOutcome:
    file: str
    version: str
    outcomes: Counter = field(default_factory=Counter)
    rejections: list[dict[str, Any]] = field(default_factory=list)
    report: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "version": self.version,
            "outcomes": dict(self.outcomes),
            "report": self.report,
        }


@dataclass
class _Results:
    """What one source's results say: its job and the model's label per classified ticket."""

    job_id: str | None = None
    version: str | None = None
    predicted: dict[str, str] = field(default_factory=dict)
    error: str | None = None


def _source_key(source: str, input_bucket: str, input_prefix: str) -> tuple[str | None, str | None]:
    """The source's key in the input bucket, or the reason it is not one."""
    key = source
    if source.startswith("s3://"):
        loc = S3Location.parse(source)
        if loc.bucket != input_bucket:
            return None, f"source {source!r} is not in the input bucket {input_bucket!r}"
        key = loc.key
    if not key.startswith(input_prefix) or key.endswith("/"):
        return None, f"source {source!r} is not a ticket file key under {input_prefix!r}"
    return key, None


def _results_of(
    bucket: str, key: str, wanted: set[str], deps: Deps, settings: CorrectionsSettings
) -> _Results:
    """The model's labels for ``wanted`` in the results of the current version of ``key``."""
    loc = S3Location(bucket, key)
    try:
        head = deps.objects.head(loc)
    except ObjectNotFound:
        return _Results(error=f"source {key!r} does not exist in the input bucket")
    job_id = job_id_for(bucket, key, f"v:{head.version_id}")
    results = S3Location(settings.output_bucket, f"{settings.results_prefix}{job_id}/results.jsonl")
    found = _Results(job_id=job_id, version=head.version_id)
    try:
        for raw in deps.objects.iter_lines(results):
            if not raw.strip():
                continue
            row = json.loads(raw)
            if row.get("id") in wanted:
                found.predicted[row["id"]] = row["label"]
    except ObjectNotFound:
        found.error = f"no results yet for source {key!r} (job {job_id}): correct it once its results are out"
    return found


def _texts(
    bucket: str, key: str, version: str | None, wanted: set[str], deps: Deps, settings: CorrectionsSettings
) -> dict[str, str]:
    """The ticket texts of ``wanted`` keys, read from the source version with the shared reader
    and the keys the dispatcher gives (an id keeps it the first time; ``<record n>`` otherwise)."""
    loc = S3Location(bucket, key, version)
    head = deps.objects.head(loc)
    reader = TicketReader(
        deps.objects.iter_chunks(loc),
        key=key,
        content_type=head.content_type,
        content_encoding=head.content_encoding,
        metadata=head.metadata,
        fields=settings.fields,
    )
    found: dict[str, str] = {}
    try:
        for record in reader:
            if not record.ok or record.text is None:
                continue
            generated = f"{GENERATED_PREFIX}{record.index + 1}>"
            for k in (record.id, generated):
                if k in wanted and k not in found:
                    found[k] = record.text
            if len(found) == len(wanted):
                break
    except RecordFormatError as exc:
        logger.warning("source unreadable for ticket texts", extra={"source": key, "error": str(exc)})
    return found


def _reject(outcome: FileOutcome, line: Line | None, error: str) -> None:
    outcome.outcomes[REJECTED] += 1
    row = {"line": None, "id": None, "source": None, "label": None, "error": error}
    if line is not None:
        row.update(line=line.line, id=line.id, source=line.source, label=line.label)
    outcome.rejections.append(row)


def _unknown_label(label: str, labels: tuple[str, ...]) -> str:
    by_lower = {known.lower(): known for known in labels}
    close = difflib.get_close_matches(label.lower(), list(by_lower), n=1)
    hint = f" (did you mean {by_lower[close[0]]!r}?)" if close else ""
    return f"unknown label {label!r}: not one of the deployed model's {len(labels)} labels{hint}"


def sequencer_order(sequencer: str | None) -> str:
    """S3's per-key event ``sequencer`` as a sortable string: "right-pad the shorter value with
    zeros" before comparing (Amazon S3 User Guide, "Event message structure")."""
    return (sequencer or "").upper().ljust(32, "0")


def record_file(
    bucket: str,
    key: str,
    version_id: str | None,
    deps: Deps,
    settings: CorrectionsSettings,
    sequencer: str | None = None,
) -> FileOutcome:
    """Validate and record every line of one correction file version; write its report."""
    loc = S3Location(bucket, key, version_id)
    head = deps.objects.head(loc)
    version = head.version_id or version_id or head.etag or "unversioned"
    modified = head.last_modified or ""
    outcome = FileOutcome(file=f"s3://{bucket}/{key}", version=version)
    try:
        if head.size > settings.max_file_bytes:
            raise RecordFormatError(
                f"correction file of {head.size} bytes is larger than "
                f"MAX_CORRECTIONS_MB ({settings.max_file_mb})"
            )
        lines = read_lines(deps.objects.read_bytes(loc), key, head)
    except (RecordFormatError, ObjectUnreadable) as exc:
        _reject(outcome, None, f"file rejected as a whole: {exc}")
        lines = []
    labels = deps.labels() if lines else ()
    candidates: list[tuple[Line, str]] = []
    for line in lines:
        if line.error is not None:
            _reject(outcome, line, line.error)
        elif line.id is None:
            _reject(outcome, line, "missing field 'id'")
        elif line.label not in labels:
            _reject(outcome, line, _unknown_label(str(line.label), labels))
        else:
            source_key, error = _source_key(str(line.source), bucket, settings.input_prefix)
            if error is not None:
                _reject(outcome, line, error)
            else:
                candidates.append((line, str(source_key)))
    by_source: dict[str, list[Line]] = defaultdict(list)
    for line, source_key in candidates:
        by_source[source_key].append(line)
    order_base = f"{modified}|{key}|{sequencer_order(sequencer)}"
    for source_key, source_lines in by_source.items():
        results = _results_of(bucket, source_key, {str(li.id) for li in source_lines}, deps, settings)
        good = []
        for li in source_lines:
            if results.error is not None:
                _reject(outcome, li, results.error)
            elif li.id not in results.predicted:
                _reject(
                    outcome,
                    li,
                    f"ticket {li.id!r} is not among the classified tickets of {source_key!r} "
                    f"({settings.results_prefix}{results.job_id}/results.jsonl)",
                )
            else:
                good.append(li)
        missing = {str(li.id) for li in good if not li.text}
        texts = _texts(bucket, source_key, results.version, missing, deps, settings) if missing else {}
        for li in good:
            new = Recorded(
                source=source_key,
                ticket_id=str(li.id),
                label=str(li.label),
                predicted=results.predicted[str(li.id)],
                job_id=str(results.job_id),
                order=f"{order_base}|{li.line:09d}",
                file=outcome.file,
                line=li.line,
                text=li.text or texts.get(str(li.id)),
            )
            outcome.outcomes[_record_one(new, deps)] += 1
    _write_report(outcome, key, deps, settings)
    counts = outcome.outcomes
    deps.metrics.count("CorrectionsReceived", sum(counts.values()))
    deps.metrics.count("CorrectionsRecorded", counts[RECORDED] + counts[SUPERSEDED])
    deps.metrics.count("CorrectionsRejected", counts[REJECTED])
    return outcome


def _record_one(new: Recorded, deps: Deps) -> str:
    for _ in range(MAX_ATTEMPTS):
        old = deps.store.get(new.source, new.ticket_id)
        if old is not None:
            if old.order == new.order or (old.label, old.predicted) == (new.label, new.predicted):
                return DUPLICATE  # this line again, or the same label again (the file dropped twice)
            if old.order > new.order:
                return STALE
        if deps.store.put(old, new, deps.clock()):
            delta = counter_deltas(old, new).get(ALL, {})
            deps.metrics.count("ReviewedTickets", delta.get("reviewed", 0))
            deps.metrics.count("ReviewedCorrect", delta.get("correct", 0))
            return RECORDED if old is None else SUPERSEDED
    raise RuntimeError(f"ticket {new.ticket_id!r} of {new.source!r} kept changing: retry the event")


def _write_report(outcome: FileOutcome, key: str, deps: Deps, settings: CorrectionsSettings) -> None:
    relative = key.removeprefix(settings.corrections_prefix)
    base = f"{settings.corrections_output_prefix}{relative}/{outcome.version}/"
    body = b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in outcome.rejections)
    deps.objects.put_bytes(
        S3Location(settings.output_bucket, base + "rejections.jsonl"), body, "application/jsonlines"
    )
    report = {
        "file": outcome.file,
        "version": outcome.version,
        "lines": sum(outcome.outcomes.values()),
        "outcomes": {k: outcome.outcomes[k] for k in (*ACCEPTED, REJECTED)},
        "rejections": f"s3://{settings.output_bucket}/{base}rejections.jsonl",
    }
    outcome.report = f"s3://{settings.output_bucket}/{base}report.json"
    deps.objects.put_bytes(
        S3Location(settings.output_bucket, base + "report.json"),
        json.dumps(report, indent=2).encode(),
        "application/json",
    )

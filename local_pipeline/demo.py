"""``python -m local_pipeline demo``: sample files through the whole local async pipeline."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from tqdm import tqdm

from local_pipeline.aws import results_message
from local_pipeline.samples import SampleFile
from local_pipeline.stack import LocalStack


@dataclass
class FileResult:
    sample: SampleFile
    message: dict[str, Any]
    summary: dict[str, Any]
    results: list[dict[str, Any]]
    failures: list[dict[str, Any]]


def _read(stack: LocalStack, uri: str) -> bytes:
    bucket, key = uri[len("s3://") :].split("/", 1)
    return stack.clients["s3"].get_object(Bucket=bucket, Key=key)["Body"].read()


def _jsonl(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def drop_samples(stack: LocalStack, samples: list[SampleFile]) -> dict[str, SampleFile]:
    """Upload the samples; returns them by the ``source`` URI the results message will carry."""
    by_source = {}
    bucket = stack.names.input_bucket
    for sample in samples:
        extra = {"ContentType": sample.content_type} if sample.content_type else {}
        stack.clients["s3"].put_object(Bucket=bucket, Key=sample.key, Body=sample.body, **extra)
        by_source[f"s3://{bucket}/{sample.key}"] = sample
    return by_source


def wait_for_results(
    stack: LocalStack, expected: dict[str, SampleFile], timeout: float, show_progress: bool = True
) -> dict[str, dict[str, Any]]:
    """Collect one results message per dropped file from the results queue, with a progress bar
    over the chunks the async endpoint has taken in and finished."""
    assert stack.resources and stack.endpoint
    sqs = stack.clients["sqs"]
    queue_url = stack.resources.results_queue_url
    received: dict[str, dict[str, Any]] = {}
    deadline = time.time() + timeout
    with tqdm(total=1, unit="chunk", desc="chunks", disable=not show_progress, dynamic_ncols=True) as bar:
        while len(received) < len(expected) and time.time() < deadline:
            resp = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
            for message in resp.get("Messages", []):
                body = results_message(message["Body"])
                if body.get("source") in expected:
                    received[body["source"]] = body
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            stats = stack.endpoint.stats
            bar.total = max(stats.received, 1)
            bar.n = stats.finished
            bar.set_postfix(files=f"{len(received)}/{len(expected)}", backlog=stack.endpoint.backlog())
            bar.refresh()
    return received


def collect(
    stack: LocalStack, expected: dict[str, SampleFile], messages: dict[str, dict]
) -> list[FileResult]:
    out = []
    for source, sample in expected.items():
        message = messages.get(source)
        if message is None:
            continue
        out.append(
            FileResult(
                sample,
                message,
                json.loads(_read(stack, message["summary"])),
                _jsonl(_read(stack, message["results"])),
                _jsonl(_read(stack, message["failures"])),
            )
        )
    return out


def save(stack: LocalStack, results: list[FileResult], out_dir: Path) -> None:
    for result in results:
        job_dir = out_dir / result.message["job_id"]
        job_dir.mkdir(parents=True, exist_ok=True)
        for name in ("results", "failures", "summary"):
            uri = result.message[name]
            (job_dir / uri.rsplit("/", 1)[-1]).write_bytes(_read(stack, uri))
        (job_dir / "message.json").write_text(json.dumps(result.message, indent=2) + "\n", encoding="utf-8")


def report(results: list[FileResult], elapsed: float, busy_seconds: float, out_dir: Path) -> str:
    lines = []
    tickets = sum(r.message["tickets"] for r in results)
    classified = sum(r.message.get("succeeded", 0) for r in results)
    review = sum(r.summary.get("needs_review", 0) for r in results)
    lines.append("")
    lines.append(f"{len(results)} files, {tickets:,} tickets, {classified:,} classified in {elapsed:.1f} s")
    lines.append(
        f"  end to end (drop -> results message): {classified / elapsed:,.0f} tickets/s;"
        f" model server busy {busy_seconds:.1f} s ({classified / max(busy_seconds, 1e-9):,.0f} tickets/s)"
    )
    lines.append("")
    header = (
        f"  {'file':<42} {'status':<9} {'tickets':>7} {'ok':>6} {'failed':>6} {'review':>7}  top categories"
    )
    lines.append(header)
    for r in results:
        key = r.sample.key.split("/", 1)[-1]
        succeeded = r.summary["succeeded"]
        share = f"{100 * r.summary['needs_review_share']:.1f}%" if succeeded else "-"
        top = ", ".join(f"{label} {n}" for label, n in list(r.summary["categories"].items())[:3])
        if r.summary.get("error"):
            top = f"(whole file: {r.summary['error'][:60]})"
        lines.append(
            f"  {key[:42]:<42} {r.message['status']:<9} {r.message['tickets']:>7,} {succeeded:>6,}"
            f" {r.message['failed']:>6,} {share:>7}  {top}"
        )
    categories: Counter[str] = Counter()
    for r in results:
        categories.update(r.summary["categories"])
    if categories:
        lines.append("")
        lines.append(f"Top categories over all files ({len(categories)} of them seen):")
        for label, n in categories.most_common(8):
            lines.append(f"  {n:>6,}  {label}")
    for r in results:
        known = [(row["label"], r.sample.expected_labels.get(row["id"])) for row in r.results]
        if r.sample.expected_labels and {p for p, _ in known} & set(r.sample.expected_labels.values()):
            hits = sum(pred == gold for pred, gold in known if gold)
            lines.append("")
            lines.append(
                f"Agreement with the known categories of {r.sample.key.split('/', 1)[-1]}: "
                f"{hits:,}/{len(known):,} = {100 * hits / max(len(known), 1):.1f}%"
            )
    lines.append("")
    lines.append(
        f"Tickets needing review: {review:,} of {classified:,} ({100 * review / max(classified, 1):.1f}%)"
    )
    examples = [
        (row, r.sample.texts.get(row["id"], ""))
        for r in results
        for row in r.results
        if row["needs_review"] and r.sample.texts
    ]
    for row, text in sorted(examples, key=lambda e: e[0]["score"])[:5]:
        lines.append(f"  {row['id']:<8} {row['score']:.2f} {row['label']:<32} {text[:60]!r}")
    failed = [(r, f) for r in results for f in r.failures]
    if failed:
        lines.append("")
        lines.append(f"Failed tickets: {len(failed):,} (every one listed in its failures.jsonl)")
        for r, f in failed[:10]:
            lines.append(f"  {r.sample.key.split('/', 1)[-1][:24]:<24} {f['id']:<12} {f['error'][:80]}")
    lines.append("")
    lines.append(f"Results, failures and summaries saved under {out_dir}/<job id>/")
    return "\n".join(lines)


def review_queue_report(stack: LocalStack, results: list[FileResult], wait: float = 5.0) -> str:
    """The review queue of the run: what the SQS queue subscribed to the review topic received
    (the real path: aggregator -> SNS -> SQS), each file's review.jsonl and its drift numbers."""
    from ticket_pipeline.review import js_distance
    from triage_core.artifact import load_manifest

    assert stack.resources
    sqs = stack.clients["sqs"]
    items: dict[str, int] = Counter()
    messages = 0
    deadline = time.time() + wait
    while time.time() < deadline:
        resp = sqs.receive_message(
            QueueUrl=stack.resources.review_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        )
        for message in resp.get("Messages", []):
            body = results_message(message["Body"])
            messages += 1
            items[body["job_id"]] += len(body["items"])
            sqs.delete_message(
                QueueUrl=stack.resources.review_queue_url, ReceiptHandle=message["ReceiptHandle"]
            )
        if not resp.get("Messages") and messages:
            break
    mix = load_manifest(stack.config.model_dir).training_mix
    lines = ["", f"Review queue: {messages} messages, {sum(items.values()):,} tickets on the review topic"]
    lines.append(
        f"  {'file':<42} {'flagged':>7} {'out of scope':>12} {'review share':>12} {'drift (JS)':>10}"
    )
    for r in results:
        succeeded = r.summary["succeeded"]
        if not succeeded:
            continue
        review = _jsonl(
            _read(stack, f"s3://{stack.names.output_bucket}/review/{r.message['job_id']}/review.jsonl")
        )
        out_of_scope = sum(row["reason"] == "out_of_scope" for row in review)
        drift = f"{js_distance(r.summary['categories'], mix):.3f}" if mix else "-"
        lines.append(
            f"  {r.sample.key.split('/', 1)[-1][:42]:<42} {len(review):>7,} {out_of_scope:>12,}"
            f" {100 * len(review) / succeeded:>11.1f}% {drift:>10}"
        )
    return "\n".join(lines)


# --- corrections coming back (issue #24) ------------------------------------------------------------
CORRECTIONS_KEY = "corrections/demo-review.jsonl"


def review_lines(results: list[FileResult], limit: int = 12) -> list[dict[str, str]]:
    """What a reviewer sends back from the review queue of the files the demo knows the categories
    of: flagged tickets spread over the scores (the lowest are mostly wrong, those near the
    threshold mostly right), each with its known category."""
    flagged = sorted(
        (row["score"], r.sample.key, row["id"], r.sample.expected_labels[row["id"]])
        for r in results
        if r.sample.expected_labels
        for row in r.results
        if row["needs_review"] and row["id"] in r.sample.expected_labels
    )
    step = max(1, len(flagged) // limit)
    return [{"id": tid, "source": key, "label": label} for _, key, tid, label in flagged[::step][:limit]]


def _accuracy_line(counts: dict[str, int] | None) -> str:
    if not counts or not counts.get("reviewed"):
        return "no reviewed tickets yet"
    share = 100 * counts["correct"] / counts["reviewed"]
    return f"{counts['correct']}/{counts['reviewed']} reviewed tickets right ({share:.0f}%)"


def _wait_for_report(stack: LocalStack, key: str, timeout: float) -> dict[str, Any] | None:
    """The correction file's report.json, once the corrections function has written it."""
    deadline = time.time() + timeout
    while True:
        try:
            return json.loads(_read(stack, f"s3://{stack.names.output_bucket}/{key}"))
        except ClientError:
            if time.time() > deadline:
                return None
            time.sleep(0.2)


def drop_corrections(stack: LocalStack, results: list[FileResult], timeout: float = 60) -> str:
    """Drop a reviewer's corrections for some results (plus one line with a misspelt label), then
    the same file again; the accuracy measure before and after, the rejection with its reason."""
    from ticket_pipeline.corrections import CorrectionStore

    lines = review_lines(results)
    if not lines:
        return ""
    lines.append({"id": lines[0]["id"], "source": lines[0]["source"], "label": lines[0]["label"].upper()})
    store = CorrectionStore(stack.clients["dynamodb"], stack.names.jobs_table)
    before = store.accuracy().get("ALL")
    body = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    s3, bucket = stack.clients["s3"], stack.names.input_bucket
    out = ["", f"Corrections: a reviewer drops {len(lines)} lines into s3://{bucket}/{CORRECTIONS_KEY}"]
    out.append(f"  accuracy on reviewed tickets before: {_accuracy_line(before)}")
    for attempt in ("first", "again (the same file dropped twice)"):
        version = s3.put_object(Bucket=bucket, Key=CORRECTIONS_KEY, Body=body)["VersionId"]
        key = f"{stack.names.corrections_prefix}{CORRECTIONS_KEY.split('/', 1)[1]}/{version}/report.json"
        summary = _wait_for_report(stack, key, timeout)
        if summary is None:
            out.append(f"  {attempt}: no report within {timeout:.0f} s (see lambda.log)")
            continue
        outcomes = ", ".join(f"{n} {k}" for k, n in summary["outcomes"].items() if n)
        out.append(f"  {attempt}: {outcomes}; accuracy now {_accuracy_line(store.accuracy().get('ALL'))}")
        if attempt == "first":
            for rejected in _jsonl(_read(stack, summary["rejections"])):
                out.append(f"    rejected line {rejected['line']}: {rejected['error'][:100]}")
    per_label = {k: v for k, v in store.accuracy().items() if k != "ALL" and v.get("reviewed")}
    if per_label:
        out.append("  per category (the reviewer's label), the least accurate first:")
    for label, counts in sorted(
        per_label.items(), key=lambda kv: (kv[1]["correct"] / kv[1]["reviewed"], kv[0])
    )[:6]:
        out.append(f"    {label:<40} {_accuracy_line(counts)}")
    out.append(
        "  make export-corrections LOCAL=1 (with make local) writes them for make train CORRECTIONS=..."
    )
    return "\n".join(out)

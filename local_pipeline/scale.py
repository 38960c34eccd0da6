"""``make scale``: a generated ticket file of ``--tickets`` tickets through the real dispatcher.

What runs: moto's server (S3, SNS, SQS, DynamoDB) with the pipeline's resources, the async
endpoint stand-in in front of a *stub* model (it answers one prediction per ticket, no model), a
local Lambda ``Invoke`` front, and the real handlers, each Lambda run in a child process of its
own so its peak RSS is the process's (``ru_maxrss`` from ``wait4``), like one Lambda execution:

1. The file (JSON Lines, ids ``T-0000001``..., texts from the bundled Banking77 data) is uploaded
   with a multipart upload, as ``aws s3 cp`` does; its S3 event comes from moto's notification.
2. Dispatcher runs, each with the configured Lambda timeout: a run that reaches its reserve
   hands off with an asynchronous self-invoke, which starts the next run, until the job is
   ``submitted``.
3. (unless ``--no-finalize``) The endpoint works off the chunks, and one aggregator process
   takes every notification until the job's results message is out.

The last line printed is one JSON object: ``tickets``, ``chunks``, ``invocations`` (dispatcher
runs), ``peak_rss_mb`` (the dispatcher's, highest of its runs), ``max_run_seconds`` (longest
dispatcher run), ``timeout_seconds``, ``seconds`` (the whole dispatch, first run to last), plus
the aggregator's figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from local_pipeline.loopback import LoopbackServer
from local_pipeline.model_server import REPO_ROOT

WORK_DIR = REPO_ROOT / "artifacts" / "scale"
BUNDLED = REPO_ROOT / "data" / "banking77" / "train.csv"


# --- the stub model ----------------------------------------------------------------------------
class StubModel(LoopbackServer):
    """``POST /invocations`` with JSON Lines ``{"id", "text"}`` -> one prediction line per ticket
    (the inference server's response shape), without a model."""

    def __init__(self) -> None:
        super().__init__(_stub_handler(), "stub-model")


def _stub_handler() -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            out = []
            for index, line in enumerate(body.splitlines()):
                ticket = json.loads(line)
                out.append({"id": ticket.get("id"), "index": index, "label": "card_arrival", "score": 0.9,
                            "needs_review": False})  # fmt: skip
            data = b"".join(json.dumps(o).encode() + b"\n" for o in out)
            self.send_response(200)
            self.send_header("Content-Type", "application/jsonlines")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


# --- the file ------------------------------------------------------------------------------------
def write_tickets(path: Path, tickets: int) -> int:
    """A JSON Lines file of ``tickets`` tickets with texts cycled from the bundled data."""
    import csv

    with BUNDLED.open(encoding="utf-8", newline="") as handle:
        texts = [row["text"] for row in csv.DictReader(handle) if row.get("text")]
    with path.open("wb") as out:
        for i in range(1, tickets + 1):
            text = texts[(i * 7919) % len(texts)]
            out.write(json.dumps({"id": f"T-{i:07d}", "text": text}, ensure_ascii=False).encode() + b"\n")
    return path.stat().st_size


# --- one Lambda run in a child process -------------------------------------------------------------
def run_child(args: list[str], env: dict[str, str], log_path: Path) -> tuple[dict[str, Any], float]:
    """Run ``python -m local_pipeline.scale <args>`` and return (its JSON result, its peak RSS MB)."""
    out_path = Path(tempfile.mkstemp(prefix="scale-run-", suffix=".json")[1])
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "local_pipeline.scale", *args, "--result", str(out_path)],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{args[0]} run failed with exit code {proc.returncode}; see {log_path}")
    result = json.loads(out_path.read_text())
    out_path.unlink()
    return result, usage.ru_maxrss / 1024  # KiB on Linux


def _child_dispatcher(event_path: Path, timeout: int) -> dict[str, Any]:
    from local_pipeline.router import LambdaContext
    from ticket_pipeline import dispatcher

    event = json.loads(event_path.read_text())
    started = time.perf_counter()
    response = dispatcher.handler(event, LambdaContext("ticket-dispatcher", timeout_ms=timeout * 1000))
    return {"seconds": time.perf_counter() - started, "response": response}


def _child_aggregator(queues: list[str], job_id: str, subscription: str, timeout: int) -> dict[str, Any]:
    """Play Lambda's SNS subscription: every notification to the real aggregator handler, until
    the job is finalized."""
    import boto3

    from local_pipeline.router import LambdaContext, sns_event
    from ticket_pipeline import aggregator

    sqs = boto3.client("sqs")
    dynamodb = boto3.client("dynamodb")
    table = os.environ["JOBS_TABLE"]
    longest = 0.0
    handled = 0
    while True:
        got = 0
        for queue in queues:
            for message in sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
                "Messages", []
            ):
                got += 1
                started = time.perf_counter()
                aggregator.handler(
                    sns_event(message["Body"], subscription),
                    LambdaContext("ticket-aggregator", timeout_ms=timeout * 1000),
                )
                longest = max(longest, time.perf_counter() - started)
                handled += 1
                sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
        item = dynamodb.get_item(
            TableName=table, Key={"pk": {"S": f"JOB#{job_id}"}, "sk": {"S": "META"}}, ConsistentRead=True
        )["Item"]
        if item["status"]["S"] in ("complete", "partial"):
            return {"notifications": handled, "max_run_seconds": longest, "status": item["status"]["S"]}
        if not got:
            time.sleep(0.1)


# --- the harness ----------------------------------------------------------------------------------
def _object_created_event(sqs: Any, queue_url: str) -> str:
    """The upload's S3 event from the notification queue (skipping S3's s3:TestEvent)."""
    deadline = time.time() + 30
    while time.time() < deadline:
        for message in sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1).get("Messages", []):
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            if "Records" in json.loads(message["Body"]):
                return message["Body"]
    raise TimeoutError("no ObjectCreated event for the upload")


def measure(
    tickets: int, chunk_size: int, timeout: int, threads: int, finalize: bool, work_dir: Path
) -> dict:
    from local_pipeline.async_endpoint import AsyncEndpoint, AsyncEndpointConfig, AsyncEndpointHTTPServer
    from local_pipeline.aws import DUMMY_CREDENTIALS, REGION, MotoServer, provision
    from local_pipeline.lambda_front import LambdaInvokeFront

    work_dir.mkdir(parents=True, exist_ok=True)
    log_path = work_dir / f"scale-{tickets}.log"
    log_path.unlink(missing_ok=True)
    moto = MotoServer(log_path=str(work_dir / "moto.log")).start()
    stub = StubModel().start()
    continuations: list[bytes] = []
    front = LambdaInvokeFront(
        lambda _name, payload: continuations.append(payload), {"ticket-dispatcher"}
    ).start()
    endpoint = http = None
    try:
        clients = {s: moto.client(s) for s in ("s3", "sns", "sqs", "dynamodb")}
        resources = provision(clients["s3"], clients["sns"], clients["sqs"], clients["dynamodb"])
        names = resources.names
        endpoint = AsyncEndpoint(
            AsyncEndpointConfig(
                endpoint_name=names.endpoint_name,
                region=REGION,
                model_url=stub.url,
                s3_output_path=f"s3://{names.output_bucket}/async-results/",
                s3_failure_path=f"s3://{names.output_bucket}/async-failures/",
                success_topic_arn=resources.success_topic_arn,
                error_topic_arn=resources.error_topic_arn,
                max_concurrent_invocations=4,
            ),
            moto.client("s3"),
            moto.client("sns"),
        )  # workers start after the dispatch: the dispatcher runs measured on their own
        http = AsyncEndpointHTTPServer(endpoint).start()
        env = {
            **os.environ,
            **DUMMY_CREDENTIALS,
            "PYTHONPATH": os.pathsep.join(str(REPO_ROOT / p) for p in ("", "lambda", "container")),
            "AWS_ENDPOINT_URL": moto.url,
            "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": http.url,
            "AWS_ENDPOINT_URL_LAMBDA": front.url,
            "ENDPOINT_NAME": names.endpoint_name,
            "JOBS_TABLE": names.jobs_table,
            "OUTPUT_BUCKET": names.output_bucket,
            "RESULTS_PREFIX": "results/",
            "RESULTS_TOPIC_ARN": resources.results_topic_arn,
            "CHUNK_PREFIX": "chunks/",
            "CHUNK_SIZE": str(chunk_size),
            "MAX_FILE_MB": "1024",
            "REQUEST_TTL_SECONDS": "21600",
            "INVOCATION_TIMEOUT_SECONDS": "3600",
            "FUNCTION_TIMEOUT_SECONDS": str(timeout),
            "FINALIZE_LEASE_SECONDS": str(timeout + 60),
            "DISPATCH_THREADS": str(threads),
            "POWERTOOLS_SERVICE_NAME": "ticket-dispatcher",
            "POWERTOOLS_METRICS_NAMESPACE": "TicketTriageScale",
            "LOG_LEVEL": "WARNING",
        }
        path = work_dir / f"tickets-{tickets}.jsonl"
        size = write_tickets(path, tickets)
        upload_started = time.perf_counter()
        clients["s3"].upload_file(str(path), names.input_bucket, f"{names.input_prefix}{path.name}")
        upload_seconds = time.perf_counter() - upload_started
        path.unlink()
        event_path = work_dir / "event.json"
        event_path.write_text(_object_created_event(clients["sqs"], resources.s3_events_queue_url))

        runs: list[dict[str, Any]] = []
        started = time.perf_counter()
        while True:
            args = ["dispatcher", "--event", str(event_path), "--timeout", str(timeout)]
            result, rss = run_child(args, env, log_path)
            (job,) = result["response"]["jobs"]
            runs.append({"seconds": round(result["seconds"], 2), "rss_mb": round(rss, 1), **job})
            line = f"  dispatcher run {len(runs)}: {job['outcome']}, {result['seconds']:.1f} s, {rss:.0f} MB"
            print(line, file=sys.stderr, flush=True)
            if not continuations:
                break
            event_path.write_bytes(continuations.pop(0))
        dispatch_seconds = time.perf_counter() - started
        final = runs[-1]
        figures: dict[str, Any] = {
            "tickets": final["tickets"],
            "chunks": final["chunks"],
            "invocations": len(runs),
            "peak_rss_mb": round(max(r["rss_mb"] for r in runs), 1),
            "max_run_seconds": round(max(r["seconds"] for r in runs), 2),
            "timeout_seconds": timeout,
            "seconds": round(dispatch_seconds, 2),
            "file_mb": round(size / 1048576, 1),
            "upload_seconds": round(upload_seconds, 2),
            "endpoint_invocations": endpoint.stats.received,
            "dispatch_threads": threads,
            "runs": [{k: r[k] for k in ("outcome", "tickets", "seconds", "rss_mb")} for r in runs],
        }
        if finalize:
            endpoint.start()
            started = time.perf_counter()
            result, rss = run_child(
                [
                    "aggregator",
                    "--job-id",
                    final["job_id"],
                    "--queues",
                    resources.success_queue_url,
                    resources.error_queue_url,
                    "--subscription",
                    resources.success_subscription_arn,
                    "--timeout",
                    str(timeout),
                ],
                {**env, "POWERTOOLS_SERVICE_NAME": "ticket-aggregator"},
                log_path,
            )
            messages = clients["sqs"].receive_message(QueueUrl=resources.results_queue_url, WaitTimeSeconds=2)
            results = [json.loads(json.loads(m["Body"])["Message"]) for m in messages.get("Messages", [])]
            figures.update(
                {
                    "results_status": results[0]["status"] if results else None,
                    "results_succeeded": results[0]["succeeded"] if results else None,
                    "aggregator_notifications": result["notifications"],
                    "aggregator_peak_rss_mb": round(rss, 1),
                    "aggregator_max_run_seconds": round(result["max_run_seconds"], 2),
                    "finalize_seconds": round(time.perf_counter() - started, 2),
                }
            )
        return figures
    finally:
        for stop in (
            front.stop,
            stub.stop,
            http.stop if http else None,
            endpoint.stop if endpoint else None,
            moto.stop,
        ):
            if stop is not None:
                try:
                    stop()
                except Exception as exc:  # best effort
                    print(f"could not stop: {exc}", file=sys.stderr)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m local_pipeline.scale", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="measure (the default)")
    for p in (parser, run):
        p.add_argument("--tickets", type=int, default=1_000_000)
        p.add_argument("--chunk-size", type=int, default=500, help="CHUNK_SIZE (cdk.json: 500)")
        p.add_argument("--timeout", type=int, default=300, help="dispatcher timeout, s (cdk.json: 300)")
        p.add_argument("--threads", type=int, default=8, help="DISPATCH_THREADS (cdk.json: 8)")
        p.add_argument("--no-finalize", action="store_true", help="dispatch only")
        p.add_argument("--work-dir", type=Path, default=WORK_DIR)
    child = sub.add_parser("dispatcher", help=argparse.SUPPRESS)
    child.add_argument("--event", type=Path, required=True)
    child.add_argument("--timeout", type=int, required=True)
    child.add_argument("--result", type=Path, required=True)
    agg = sub.add_parser("aggregator", help=argparse.SUPPRESS)
    agg.add_argument("--job-id", required=True)
    agg.add_argument("--queues", nargs="+", required=True)
    agg.add_argument("--subscription", required=True)
    agg.add_argument("--timeout", type=int, required=True)
    agg.add_argument("--result", type=Path, required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "dispatcher":
        args.result.write_text(json.dumps(_child_dispatcher(args.event, args.timeout)))
        return 0
    if args.command == "aggregator":
        args.result.write_text(
            json.dumps(_child_aggregator(args.queues, args.job_id, args.subscription, args.timeout))
        )
        return 0
    print(
        f"Pushing {args.tickets:,} tickets through the dispatcher (logs in {args.work_dir}):", file=sys.stderr
    )
    figures = measure(
        args.tickets, args.chunk_size, args.timeout, args.threads, not args.no_finalize, args.work_dir
    )
    (args.work_dir / f"scale-{args.tickets}.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())

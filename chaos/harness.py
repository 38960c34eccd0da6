"""One chaos run: the local stack with the real handlers and inference server, seeds one after the
other, each checked by :mod:`chaos.checker`.

moto's server and the inference server (tiny model) start once; every seed gets a fresh account
(moto reset, resources provisioned as the local stack does), a fresh endpoint stand-in, Lambda
service, event router, sweeper schedule and operator, then:

1. the seed's files are uploaded to the versioned input bucket (moto emits the S3 events);
2. the faults of the seed's plan happen while the pipeline works;
3. an *operator* replays the dead-letter queues with the project's redrive code
   (``ticket_pipeline.redrive``) whenever they fill, as the runbook says to;
4. the seed ends once every upload has its results message and the stack is idle (no message
   queued or in flight, no invocation running, the endpoint idle, no job left in the open-jobs
   index: the harness looks there to know when to stop, the checker never does), or at the
   latest time the deadline rules allow;
5. the checker compares what went in with what came out.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from chaos.checker import (
    Arrived,
    CheckReport,
    Expected,
    ReferenceScorer,
    ReviewRule,
    check,
    latest_results_time,
)
from chaos.clock import VirtualClock
from chaos.delivery import CONTINUATION, NOTIFICATION, REDRIVE, S3, SCHEDULE, ChaosRouter
from chaos.endpoint import ChaosEndpoint
from chaos.faults import FaultLog, FaultPlan, Rates
from chaos.lambda_service import Labels, LambdaService
from chaos.workload import Upload, plan_uploads
from infra.config import TriageConfig
from local_pipeline.async_endpoint import AsyncEndpointConfig, AsyncEndpointHTTPServer
from local_pipeline.aws import DUMMY_CREDENTIALS, REGION, MotoServer, Resources, patched_environ, provision
from local_pipeline.calls import SAGEMAKER_ENDPOINT, CallRecorder
from local_pipeline.lambda_front import LambdaInvokeFront
from local_pipeline.model_server import ModelServerProcess
from local_pipeline.router import Route, s3_event, sns_event
from local_pipeline.stack import (
    AGGREGATOR,
    CORRECTIONS,
    DISPATCHER,
    MANIFEST,
    SWEEPER,
    routed_logs,
    scheduled_event,
)

FUNCTIONS = (DISPATCHER, AGGREGATOR, SWEEPER, CORRECTIONS)
# the review queue's out-of-scope threshold: the stack's default (cdk.json, infra/config.py)
CHAOS_OUT_OF_SCOPE_BELOW = TriageConfig().out_of_scope_below


@dataclass(frozen=True)
class Timing:
    """The functions' settings in virtual seconds (see :mod:`chaos.clock`), and the harness's own
    periods in wall-clock seconds.

    The proportions follow the deployed stack's: the lease outlives every function's timeout, a
    job's deadline (TTL + invocation timeout + margin) is well past a dispatcher run and Lambda's
    retries, the sweeper looks several times per deadline."""

    speed: float = 20.0
    function_timeout: int = 40  # all three functions (one process hosts them, as in the local stack)
    lease: int = 50  # FINALIZE_LEASE_SECONDS: longer than the function timeout
    request_ttl: int = 60  # the API's minimum
    invocation_timeout: int = 2  # also the wall-clock cut of the model call in the endpoint stand-in
    deadline_margin: int = 18
    sweep_interval: float = 0.5  # wall seconds between scheduled sweeps
    dispatch_allowance: float = 15.0  # wall seconds an upload may take to be dispatched (see checker)

    @property
    def deadline(self) -> int:
        return self.request_ttl + self.invocation_timeout + self.deadline_margin

    def for_round_trip(self, round_trip: float) -> Timing:
        """This timing on a machine whose AWS call (to moto's server) takes ``round_trip`` wall
        seconds: the clock runs at most ``speed`` x, and slower when a function's timeout would
        hold fewer than :data:`CALLS_PER_TIMEOUT` calls. A machine busy with other work then gets
        a slower clock (the wall-clock periods stretched alike) instead of Lambda timeouts that
        AWS would not have: the proportions to the handlers' own work stay those of the stack."""
        speed = min(self.speed, self.function_timeout / (CALLS_PER_TIMEOUT * round_trip))
        slower = self.speed / speed
        return replace(
            self,
            speed=round(speed, 2),
            sweep_interval=self.sweep_interval * slower,
            dispatch_allowance=self.dispatch_allowance * slower,
        )


# AWS calls a function's timeout must hold, measured on the machine before each seed: a dispatcher
# run of a 40-record file makes about 50 (8 chunks x object, item, invocation, state; the job),
# botocore's retries of the injected errors more. At 5 ms a call (moto on an idle 2-core machine)
# the clock runs at the full 20x; at 100 ms (the same machine shared by a dozen busy processes), 4x.
CALLS_PER_TIMEOUT = 100


def round_trip_seconds(s3: Any, bucket: str, calls: int = 10) -> float:
    """The median wall time of one small S3 call to moto's server, right now (PutObject and
    GetObject of a 2 KB object, as the handlers make)."""
    times = []
    for i in range(calls):
        started = time.perf_counter()
        s3.put_object(Bucket=bucket, Key=f"probe/{i}", Body=b"x" * 2048)
        s3.get_object(Bucket=bucket, Key=f"probe/{i}")["Body"].read()
        times.append((time.perf_counter() - started) / 2)
    return statistics.median(times)


@dataclass
class SeedResult:
    seed: int
    uploads: list[Upload]
    check: CheckReport
    faults: Counter[str]
    seconds: float
    invocations: Counter[str] = field(default_factory=Counter)
    redriven: int = 0
    timed_out: bool = False
    speed: float = 20.0  # the virtual clock's, chosen for the machine (Timing.for_round_trip)

    @property
    def tickets(self) -> int:
        return self.check.tickets

    def line(self) -> str:
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(self.check.statuses.items()))
        verdict = "ok" if not self.check.violations else f"{len(self.check.violations)} VIOLATIONS"
        return (
            f"seed {self.seed}: {len(self.uploads)} files, {self.tickets} tickets, "
            f"{sum(self.faults.values())} faults, {statuses}, {self.redriven} redriven, "
            f"{self.seconds:.1f} s at {self.speed:g}x: {verdict}"
        )


class ChaosStack:
    """moto's server and the inference server, shared by the seeds of one run."""

    def __init__(
        self,
        model_dir: Path,
        work_dir: Path,
        timing: Timing | None = None,
        chunk_size: int = 5,
        dispatch_threads: int = 4,
        endpoint_concurrency: int = 2,
    ):
        self.model_dir = Path(model_dir)
        self.work_dir = Path(work_dir)
        self.timing = timing or Timing()
        self.chunk_size = chunk_size
        self.dispatch_threads = dispatch_threads
        self.endpoint_concurrency = endpoint_concurrency
        self.moto: MotoServer | None = None
        self.model_server: ModelServerProcess | None = None
        self.scorer: ReferenceScorer | None = None  # the checker's own scoring of ticket texts
        self._logs: Any = None
        self.calls = CallRecorder()  # every AWS call of the functions and the endpoint, all seeds

    def __enter__(self) -> ChaosStack:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        try:
            with patched_environ(DUMMY_CREDENTIALS):
                self.moto = MotoServer(log_path=str(self.work_dir / "moto.log")).start()
            self.model_server = ModelServerProcess(
                self.model_dir, self.work_dir / "inference-server.log", env={"TRIAGE_THREADS_PER_WORKER": "1"}
            ).start()
            self._logs = routed_logs(self.work_dir, "WARNING")
            self._logs.__enter__()
            self.scorer = ReferenceScorer(self.model_dir)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._logs is not None:
            self._logs.__exit__(None, None, None)
            self._logs = None
        for server in (self.model_server, self.moto):
            if server is not None:
                server.stop()
        self.model_server = self.moto = None

    # --- one seed -------------------------------------------------------------------------------
    def run_seed(
        self,
        seed: int,
        files: int,
        rates: Rates | None = None,
        tamper: Callable[[str, tuple[Any, ...]], None] | None = None,
    ) -> SeedResult:
        assert self.moto and self.model_server
        started = time.time()
        self.moto.reset()
        clients = {s: self.moto.client(s) for s in ("s3", "sns", "sqs", "dynamodb")}
        resources = provision(clients["s3"], clients["sns"], clients["sqs"], clients["dynamodb"])
        names = resources.names  # the model's manifest, where the corrections function reads its labels
        clients["s3"].create_bucket(Bucket=names.model_bucket)
        manifest = (self.model_dir / MANIFEST).read_bytes()
        clients["s3"].put_object(Bucket=names.model_bucket, Key=f"model/{MANIFEST}", Body=manifest)
        uploads = plan_uploads(seed, files, prefix=resources.names.input_prefix)
        timing = self.timing.for_round_trip(round_trip_seconds(clients["s3"], resources.names.output_bucket))
        with _SeedRun(self, seed, resources, clients, rates, tamper, timing) as run:
            run.phases["set_up"] = time.time() - started
            run.upload(uploads)
            timed_out = not run.wait(uploads)
            run.phases["idle"] = time.time() - started
            corrections = [] if timed_out else run.correct(seed, json.loads(manifest)["labels"])
            run.phases["corrected"] = time.time() - started
        run.phases["torn_down"] = time.time() - started
        result = SeedResult(
            seed,
            uploads,
            check(
                run.expected(uploads),
                list(run.arrived),
                run.read,
                resources.names.output_bucket,
                score=self.scorer,
                review=ReviewRule("review/", CHAOS_OUT_OF_SCOPE_BELOW),
            ),
            run.log.counts,
            time.time() - started,
            run.service.invocations,
            run.redriven,
            timed_out,
            timing.speed,
        )
        result.check.violations.extend(corrections)
        _save(self.work_dir / f"seed-{seed}.json", result, run)
        return result


class _SeedRun:
    """Everything that lives for one seed."""

    def __init__(
        self,
        stack: ChaosStack,
        seed: int,
        resources: Resources,
        clients: dict[str, Any],
        rates: Rates | None,
        tamper: Callable[[str, tuple[Any, ...]], None] | None,
        timing: Timing,
    ):
        assert stack.moto and stack.model_server
        self.stack = stack
        self.timing = timing
        self.resources = resources
        self.clients = clients
        self.sqs = clients["sqs"]
        self.plan = FaultPlan(seed, rates)
        self.log = FaultLog()
        self.labels = Labels()
        self.clock = VirtualClock(self.timing.speed)
        self.arrived: list[Arrived] = []
        self.redriven = 0
        self.phases: dict[str, float] = {}  # seconds from the seed's start, for the report
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._tamper = tamper
        self._cleanup = contextlib.ExitStack()  # what _start started, stopped in reverse order

    # --- set-up and tear-down ---------------------------------------------------------------------
    def __enter__(self) -> _SeedRun:
        try:
            self._start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self) -> None:
        from ticket_pipeline import aggregator, corrector, dispatcher, sweeper

        stack, res, names = self.stack, self.resources, self.resources.names
        assert stack.moto and stack.model_server
        out = f"s3://{names.output_bucket}"
        endpoint_s3, endpoint_sns = stack.moto.client("s3"), stack.moto.client("sns")
        for client in (endpoint_s3, endpoint_sns):  # what SageMaker does with the execution role
            stack.calls.attach(client, SAGEMAKER_ENDPOINT)
        self.endpoint = ChaosEndpoint(
            AsyncEndpointConfig(
                endpoint_name=names.endpoint_name,
                region=REGION,
                model_url=stack.model_server.url,
                s3_output_path=f"{out}/async-results/",
                s3_failure_path=f"{out}/async-failures/",
                success_topic_arn=res.success_topic_arn,
                error_topic_arn=res.error_topic_arn,
                max_concurrent_invocations=stack.endpoint_concurrency,
            ),
            endpoint_s3,
            endpoint_sns,
            self.plan,
            self.log,
            self.labels,
        ).start()
        self._cleanup.callback(self.endpoint.stop)
        self.endpoint_http = AsyncEndpointHTTPServer(self.endpoint).start()
        self._cleanup.callback(self.endpoint_http.stop)
        self.invoke_queues = {
            fn: self.sqs.create_queue(QueueName=f"{fn}-async-invocations")["QueueUrl"] for fn in FUNCTIONS
        }
        self.lambda_front = LambdaInvokeFront(
            lambda function, payload: self.sqs.send_message(
                QueueUrl=self.invoke_queues[function], MessageBody=payload.decode("utf-8")
            ),
            set(FUNCTIONS),
        ).start()
        self._cleanup.callback(self.lambda_front.stop)
        self._cleanup.enter_context(patched_environ(self.lambda_environment()))
        modules = {DISPATCHER: dispatcher, AGGREGATOR: aggregator, SWEEPER: sweeper, CORRECTIONS: corrector}
        timeouts = dict.fromkeys(FUNCTIONS, float(self.timing.function_timeout))
        self.service = LambdaService(
            modules, self.clock, timeouts, self.plan, self.log, self.labels, self._tamper, stack.calls
        )
        self._cleanup.enter_context(self.service.installed())
        timeout = self.timing.function_timeout
        dlq = res.dead_letter_queue_urls

        def route(function: str, queue: str, make_event: Callable, handler: Callable, n: int = 1) -> Route:
            return Route(
                function, queue, make_event, handler, n, timeout, dlq[function.removeprefix("ticket-")]
            )

        self.router = ChaosRouter(
            self.sqs,
            [
                (route(DISPATCHER, res.s3_events_queue_url, s3_event, dispatcher.handler, 2), S3),
                (
                    route(
                        AGGREGATOR,
                        res.success_queue_url,
                        lambda body: sns_event(body, res.success_subscription_arn),
                        aggregator.handler,
                        3,
                    ),
                    NOTIFICATION,
                ),
                (
                    route(
                        AGGREGATOR,
                        res.error_queue_url,
                        lambda body: sns_event(body, res.error_subscription_arn),
                        aggregator.handler,
                        2,
                    ),
                    NOTIFICATION,
                ),
                (
                    route(DISPATCHER, self.invoke_queues[DISPATCHER], json.loads, dispatcher.handler),
                    CONTINUATION,
                ),
                (route(AGGREGATOR, self.invoke_queues[AGGREGATOR], json.loads, aggregator.handler), REDRIVE),
                (route(SWEEPER, self.invoke_queues[SWEEPER], json.loads, sweeper.handler), SCHEDULE),
                # correction files: S3 events with the same delivery faults as ticket files
                (route(CORRECTIONS, res.corrections_queue_url, s3_event, corrector.handler, 2), S3),
                (route(CORRECTIONS, self.invoke_queues[CORRECTIONS], json.loads, corrector.handler), REDRIVE),
            ],
            self.service,
            self.plan,
            self.log,
            self.labels,
        ).start()
        self._cleanup.callback(self._drain_invocations)
        for target in (self._collect_results, self._schedule_sweeps, self._operate):
            thread = threading.Thread(target=target, name=target.__name__, daemon=True)
            thread.start()
            self._threads.append(thread)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()  # the harness's threads end with their current poll, meanwhile:
        try:
            self._cleanup.close()
        except Exception as exc:  # best effort: the next seed resets everything anyway
            print(f"chaos: could not stop a part of the seed's stack: {exc}", flush=True)
        for thread in self._threads:
            thread.join(5)

    def _drain_invocations(self) -> None:
        """Stop what still runs (as if the functions were deleted) and wait for it to return."""
        self.router.stop()
        self.service.kill_all()
        deadline = time.time() + 15
        while (self.service.active or self.router.pending_copies) and time.time() < deadline:
            time.sleep(0.05)

    def lambda_environment(self) -> dict[str, str]:
        """What the CDK stack sets on the functions, with the chaos timing and local endpoints."""
        t, names, stack = self.timing, self.resources.names, self.stack
        assert stack.moto
        return {
            **DUMMY_CREDENTIALS,
            "AWS_ENDPOINT_URL": stack.moto.url,
            "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": self.endpoint_http.url,
            "AWS_ENDPOINT_URL_LAMBDA": self.lambda_front.url,
            "POWERTOOLS_METRICS_NAMESPACE": "TicketTriageChaos",
            "LOG_LEVEL": "WARNING",
            "FUNCTION_TIMEOUT_SECONDS": str(t.function_timeout),
            "FINALIZE_LEASE_SECONDS": str(t.lease),
            "REQUEST_TTL_SECONDS": str(t.request_ttl),
            "INVOCATION_TIMEOUT_SECONDS": str(t.invocation_timeout),
            "JOB_DEADLINE_MARGIN_SECONDS": str(t.deadline_margin),
            "ENDPOINT_NAME": names.endpoint_name,
            "JOBS_TABLE": names.jobs_table,
            "CHUNK_PREFIX": "chunks/",
            "CHUNK_SIZE": str(stack.chunk_size),
            "DISPATCH_THREADS": str(stack.dispatch_threads),
            "MAX_FILE_MB": "10",
            "OUTPUT_BUCKET": names.output_bucket,
            "RESULTS_PREFIX": "results/",
            "RESULTS_TOPIC_ARN": self.resources.results_topic_arn,
            "REVIEW_TOPIC_ARN": self.resources.review_topic_arn,
            "REVIEW_PREFIX": "review/",
            "OUT_OF_SCOPE_BELOW": str(CHAOS_OUT_OF_SCOPE_BELOW),
            "INPUT_PREFIX": names.input_prefix,
            "CORRECTIONS_PREFIX": names.corrections_prefix,
            "LABELS_LOCATION": f"s3://{names.model_bucket}/model/{MANIFEST}",
        }

    # --- the seed's traffic -----------------------------------------------------------------------
    def upload(self, uploads: list[Upload]) -> None:
        s3, bucket = self.clients["s3"], self.resources.names.input_bucket
        for upload in uploads:
            time.sleep(upload.after_seconds)
            extra = {"ContentType": upload.file.content_type} if upload.file.content_type else {}
            version = s3.put_object(Bucket=bucket, Key=upload.file.key, Body=upload.file.body, **extra)[
                "VersionId"
            ]
            upload.version_id = version
            upload.uploaded_at = time.time()
            self.labels.add(upload.label, bucket, upload.file.key, version)

    def latest_at(self, upload: Upload) -> float:
        t = self.timing
        assert upload.uploaded_at is not None
        return latest_results_time(
            upload.uploaded_at,
            deadline_seconds=t.deadline,
            lease_seconds=t.lease,
            speed=t.speed,
            sweep_interval=t.sweep_interval,
            dispatch_allowance=t.dispatch_allowance,
        )

    def expected(self, uploads: list[Upload]) -> list[Expected]:
        bucket = self.resources.names.input_bucket
        return [
            Expected(
                u.label,
                f"s3://{bucket}/{u.file.key}",
                u.version_id,
                u.file.expected,
                u.file.whole_file_error,
                u.uploaded_at or 0.0,
                self.latest_at(u),
                u.file.texts,
            )
            for u in uploads
        ]

    def wait(self, uploads: list[Upload]) -> bool:
        """Until every upload has its message and the stack is idle (True), or the latest time
        the deadline rules allow for the last upload has passed (False)."""
        give_up = max(self.latest_at(u) for u in uploads) + 1.0
        wanted = {(f"s3://{self.resources.names.input_bucket}/{u.file.key}", u.version_id) for u in uploads}
        calm = 0
        while time.time() < give_up:
            got = {(a.message.get("source"), a.message.get("version_id")) for a in list(self.arrived)}
            calm = calm + 1 if wanted <= got and self._idle() else 0
            if calm >= 3:
                return True
            time.sleep(0.25)
        return False

    def _idle(self) -> bool:
        stats = self.endpoint.stats
        if (
            self.service.active
            or self.router.pending_copies
            or self.endpoint.backlog()
            or stats.finished < stats.received
        ):
            return False
        res = self.resources
        queues = [
            res.s3_events_queue_url,
            res.corrections_queue_url,
            res.success_queue_url,
            res.error_queue_url,
            *self.invoke_queues.values(),
            *res.dead_letter_queue_urls.values(),
        ]
        for url in queues:
            attrs = self.sqs.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                    "ApproximateNumberOfMessagesDelayed",
                ],
            )["Attributes"]
            if any(int(v) for v in attrs.values()):
                return False
        from ticket_pipeline import jobs

        open_jobs = self.clients["dynamodb"].query(
            TableName=res.names.jobs_table,
            IndexName=jobs.OPEN_JOBS_INDEX,
            KeyConditionExpression="#open = :open",
            ExpressionAttributeNames={"#open": jobs.OPEN_JOBS_PARTITION},
            ExpressionAttributeValues={":open": {"S": jobs.OPEN}},
            Select="COUNT",
        )
        return open_jobs["Count"] == 0

    def correct(self, seed: int, labels: list[str], timeout: float = 60) -> list[Any]:
        """Reviewers' corrections for the seed's results (:mod:`chaos.corrections`): file ``a``
        twice, then ``b``; once the stack is idle again, the independent check of what was
        recorded. Returns its violations."""
        from chaos.corrections import check_corrections, plan_corrections
        from ticket_pipeline.corrections import CorrectionStore
        from ticket_pipeline.export_corrections import export_lines

        s3, bucket = self.clients["s3"], self.resources.names.input_bucket
        predicted: dict[str, dict[str, str]] = {}  # the results of each key's current version
        for item in list(self.arrived):
            key = str(item.message.get("source", "")).split("/", 3)[3]
            current = s3.head_object(Bucket=bucket, Key=key).get("VersionId")
            if item.message.get("results") and item.message.get("version_id") == current:
                rows = [json.loads(x) for x in self.read(item.message["results"]).splitlines() if x.strip()]
                predicted[key] = {r["id"]: r["label"] for r in rows}
        files = plan_corrections(seed, predicted, labels)
        for f, copies in zip(files, (2, 1), strict=True):
            for n in range(copies):
                version = s3.put_object(Bucket=bucket, Key=f.key, Body=f.body)["VersionId"]
                modified = s3.head_object(Bucket=bucket, Key=f.key, VersionId=version)["LastModified"]
                f.versions.append((version, modified.strftime("%Y-%m-%dT%H:%M:%S")))
                self.labels.add(f"{f.key.rsplit('/', 1)[-1]}{n}", bucket, f.key, version)
            time.sleep(1.1)  # S3's LastModified has whole seconds: b is stored after a
        give_up, calm = time.time() + timeout, 0
        while time.time() < give_up and calm < 3:
            calm = calm + 1 if self._idle() else 0
            time.sleep(0.25)
        store = CorrectionStore(self.clients["dynamodb"], self.resources.names.jobs_table)
        recorded = [json.loads(line) for line in export_lines(store)]  # what make export-corrections writes
        return check_corrections(
            list(files), predicted, recorded, store.accuracy(), self.read, self.resources.names.output_bucket
        )

    def read(self, uri: str) -> bytes:
        bucket, key = uri[len("s3://") :].split("/", 1)
        return self.clients["s3"].get_object(Bucket=bucket, Key=key)["Body"].read()

    # --- the harness's threads ----------------------------------------------------------------------
    def _collect_results(self) -> None:
        from local_pipeline.aws import results_message

        url = self.resources.results_queue_url
        while not self._stop.is_set():
            try:
                resp = self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
            except Exception:
                time.sleep(0.2)
                continue
            for message in resp.get("Messages", []):
                self.arrived.append(Arrived(time.time(), results_message(message["Body"])))
                self.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

    def _schedule_sweeps(self) -> None:
        """EventBridge's schedule: a scheduled event to the sweeper every interval."""
        rule = f"arn:aws:events:{REGION}:123456789012:rule/ticket-triage-sweep"
        while not self._stop.wait(self.timing.sweep_interval):
            with contextlib.suppress(Exception):
                self.sqs.send_message(
                    QueueUrl=self.invoke_queues[SWEEPER],
                    MessageBody=json.dumps(scheduled_event(rule, self.clock())),
                )

    def _operate(self) -> None:
        """The operator of the runbook: a dead-letter queue alarm -> ``make redrive``."""
        import boto3

        from ticket_pipeline.redrive import Target, redrive_queue

        lambda_client = boto3.client(
            "lambda",
            endpoint_url=self.lambda_front.url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        targets = [
            Target(fn, f"ticket-{fn}", url) for fn, url in self.resources.dead_letter_queue_urls.items()
        ]
        while not self._stop.wait(0.5):
            for target in targets:
                try:
                    report = redrive_queue(self.sqs, lambda_client, target, wait_seconds=0)
                except Exception:
                    continue
                self.redriven += report.replayed


def _save(path: Path, result: SeedResult, run: _SeedRun) -> None:
    """The seed's details next to the logs: uploads, faults in order, messages, violations."""
    t0 = min((u.uploaded_at or 0) for u in result.uploads) if result.uploads else 0
    path.write_text(
        json.dumps(
            {
                "seed": result.seed,
                "seconds": round(result.seconds, 2),
                "timed_out": result.timed_out,
                "speed": result.speed,
                "uploads": [
                    {
                        "label": u.label,
                        "key": u.file.key,
                        "kind": u.file.kind,
                        "keys": len(u.file.expected),
                        "version_id": u.version_id,
                        "at": round((u.uploaded_at or 0) - t0, 3),
                    }
                    for u in result.uploads
                ],
                "violations": [str(v) for v in result.check.violations],
                "faults": dict(sorted(result.faults.items())),
                "fault_log": [(round(t - t0, 3), kind, who) for t, kind, who in run.log.events],
                "messages": [
                    {
                        "at": round(a.arrived_at - t0, 3),
                        **{
                            k: a.message.get(k)
                            for k in ("source", "version_id", "status", "tickets", "failed", "error")
                        },
                    }
                    for a in run.arrived
                ],
                "invocations": dict(result.invocations),
                "phases": {k: round(v, 2) for k, v in run.phases.items()},
            },
            indent=1,
        )
    )

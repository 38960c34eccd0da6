"""Plays AWS Lambda for the chaos stack, and injects the faults that happen *inside* a function.

* **Execution environments.** Each function gets environments of its own, each with the
  function's ``runtime()`` (settings and boto3 clients) built once by the module's own code, as a
  cold start does; an environment runs one invocation at a time (Lambda's model). The handler
  modules' ``runtime`` is pointed at the environment of the thread that runs the invocation, so
  the unmodified handler code receives that environment's clients. Nothing else of the handler
  code is touched.
* **Faults in the clients.** botocore's event hooks on those clients (``before-parameter-build``,
  ``before-send``, ``after-call``) inject transient errors as real HTTP answers (botocore's retry
  policy runs on them), crash the invocation before or after a chosen call (its *steps*: records
  read, chunk written, job recorded, invocations made, results written, ...), and enforce the
  function's timeout on the virtual clock. A crashed or timed-out invocation is *dead*: every
  further AWS call it makes raises again, so no ``except``/``finally`` path of the handler can
  act after the crash, as after a real process death.
* **The clock.** Each environment's dependencies get the virtual clock (``Stores.clock``), and the
  handler's context counts its remaining time on it.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from botocore.hooks import first_non_none_response

from chaos.clock import VirtualClock
from chaos.faults import (
    DYNAMODB_THROTTLES,
    Burst,
    FaultLog,
    FaultPlan,
    dynamodb_error,
    invoke_error,
    s3_error,
    transaction_canceled,
)
from local_pipeline.aws import ACCOUNT, REGION
from local_pipeline.calls import CallRecorder
from ticket_pipeline.logs import serving_as


class InjectedCrash(Exception):
    """The invocation died here (a crash point or Lambda's timeout)."""


# --- where an invocation can crash ----------------------------------------------------------------
def _key(params: dict[str, Any]) -> str:
    return str(params.get("Key", "")) if isinstance(params.get("Key"), str) else ""


def _sort_key(params: dict[str, Any]) -> str:
    item = params.get("Item") or params.get("Key") or {}
    value = item.get("sk", {}) if isinstance(item, dict) else {}
    return value.get("S", "") if isinstance(value, dict) else ""


def _expression(params: dict[str, Any]) -> str:
    return str(params.get("UpdateExpression", ""))


@dataclass(frozen=True)
class CrashPoint:
    name: str
    operation: str  # "<service>.<Operation>"
    when: str  # "before" | "after" the call
    matches: Callable[[dict[str, Any]], bool] = lambda _params: True
    repeats: bool = False  # a step done once per chunk or file (crash at its 1st, 2nd or 3rd time)


DISPATCH_STEPS = (
    CrashPoint("records_read", "s3.PutObject", "before", lambda p: _key(p).startswith("chunks/")),
    CrashPoint("chunk_written", "s3.PutObject", "after", lambda p: _key(p).startswith("chunks/"), True),
    CrashPoint("job_recorded", "dynamodb.PutItem", "after", lambda p: _sort_key(p) == "META"),
    CrashPoint(
        "chunk_recorded", "dynamodb.PutItem", "after", lambda p: _sort_key(p).startswith("CHUNK#"), True
    ),
    CrashPoint("invoked", "sagemaker-runtime.InvokeEndpointAsync", "after", repeats=True),
    CrashPoint(
        "chunk_marked", "dynamodb.UpdateItem", "after", lambda p: _sort_key(p).startswith("CHUNK#"), True
    ),
    CrashPoint("rejected_written", "s3.PutObject", "after", lambda p: "/rejected/" in _key(p)),
    CrashPoint(
        "progress_recorded",
        "dynamodb.UpdateItem",
        "after",
        lambda p: ":expected" in p.get("ExpressionAttributeValues", {}),
    ),
    CrashPoint("handed_off", "lambda.Invoke", "after"),
)
# Finalizing a job (aggregator, sweeper, and the dispatcher for files with nothing to wait for).
# Not a crash point: right after SNS accepted the results message and before the job is marked
# complete (docs/chaos.md: no protocol over a standard SNS topic closes that window).
FINALIZE_STEPS = (
    CrashPoint(
        "lease_taken", "dynamodb.UpdateItem", "after", lambda p: "lease_until = :until" in _expression(p)
    ),
    CrashPoint("chunks_read", "dynamodb.Query", "after", lambda p: "IndexName" not in p),
    CrashPoint("results_written", "s3.PutObject", "after", lambda p: _key(p).startswith("results/"), True),
    CrashPoint("before_publish", "sns.Publish", "before"),  # consolidated, not yet published
    CrashPoint("completed", "dynamodb.UpdateItem", "after", lambda p: "REMOVE lease_until" in _expression(p)),
)
STEPS = {
    "ticket-dispatcher": DISPATCH_STEPS + FINALIZE_STEPS,
    "ticket-aggregator": (
        CrashPoint("outcome_recorded", "dynamodb.TransactWriteItems", "after"),
        *FINALIZE_STEPS,
    ),
    "ticket-sweeper": (
        CrashPoint("overdue_listed", "dynamodb.Query", "after", lambda p: "IndexName" in p),
        *FINALIZE_STEPS,
    ),
    # a correction recorded (its item and the counters, one transaction), then the crash: the
    # retry must find it recorded and change nothing; or the report written and the crash
    "ticket-corrections": (
        CrashPoint("correction_recorded", "dynamodb.TransactWriteItems", "after", repeats=True),
        CrashPoint("report_written", "s3.PutObject", "after", lambda p: _key(p).endswith("report.json")),
    ),
}


# --- one invocation ------------------------------------------------------------------------------
@dataclass(eq=False)
class Invocation:
    function: str
    identity: str  # the event's stable label (see chaos.delivery)
    attempt: int  # 1 for the first delivery, +1 per Lambda retry
    clock: VirtualClock
    timeout: float  # virtual seconds
    steps: tuple[CrashPoint, ...]
    crash: tuple[int, int] | None  # (step index, occurrence) chosen by the plan
    log: FaultLog
    started: float = field(init=False)
    dead: str | None = None
    # Between SNS accepting the results message and the write recording the job finished: no
    # crash and no timeout here (docs/chaos.md, "Not injected, on purpose").
    published: bool = False
    hits: Counter[Any] = field(default_factory=Counter)
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.started = self.clock()

    def remaining(self) -> float:
        return self.started + self.timeout - self.clock()

    def kill(self, why: str) -> InjectedCrash:
        """Mark the invocation dead (a Lambda timeout is counted as a fault of its own)."""
        with self._lock:
            if self.dead is None:
                self.dead = why
                if why == "lambda_timeout":
                    self.log.add(why, f"{self.function}:{self.identity}#{self.attempt}")
        return InjectedCrash(f"{self.function} {self.identity} attempt {self.attempt}: {self.dead}")

    def check_alive(self) -> None:
        if self.dead is None and self.remaining() < 0 and not self.published:
            raise self.kill("lambda_timeout")
        if self.dead is not None:
            raise InjectedCrash(f"{self.function} {self.identity}: already dead ({self.dead})")

    def count(self, key: Any) -> int:
        with self._lock:
            self.hits[key] += 1
            return self.hits[key]


class ChaosContext:
    """Lambda's context object, counting the remaining time on the virtual clock."""

    memory_limit_in_mb = 1024
    function_version = "$LATEST"
    log_stream_name = "chaos"

    def __init__(self, invocation: Invocation):
        self._invocation = invocation
        self.function_name = invocation.function
        self.aws_request_id = invocation.request_id
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{invocation.function}"
        self.log_group_name = f"/aws/lambda/{invocation.function}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int(self._invocation.remaining() * 1000))


# --- labels: stable names for what the faults are about ------------------------------------------
class Labels:
    """Maps the run's random names (job ids, derived from S3 version ids) to the uploads' labels,
    so fault identities are the same from one run of a seed to the next."""

    def __init__(self) -> None:
        self._job_ids: dict[str, str] = {}
        self._versions: dict[tuple[str, str | None], str] = {}
        self._changed = threading.Condition()
        self._pattern: re.Pattern[str] | None = None

    def add(self, label: str, bucket: str, key: str, version_id: str | None) -> None:
        from ticket_pipeline.intake import Upload, job_id_for

        upload = Upload(bucket, key, version_id)
        with self._changed:
            self._job_ids[job_id_for(bucket, key, upload.token)] = label
            self._versions[(key, version_id)] = label
            self._pattern = re.compile(
                "|".join(re.escape(j) for j in sorted(self._job_ids, key=len, reverse=True))
            )
            self._changed.notify_all()

    def upload(self, key: str, version_id: str | None, wait: float = 2.0) -> str:
        """The label of an upload (waits a moment for the harness to register it)."""
        with self._changed:
            self._changed.wait_for(lambda: (key, version_id) in self._versions, timeout=wait)
            return self._versions.get((key, version_id), f"{key}@{version_id}")

    def normalize(self, text: str) -> str:
        pattern = self._pattern
        return pattern.sub(lambda m: self._job_ids[m.group(0)], text) if pattern else text


def call_identity(operation: str, params: dict[str, Any]) -> str:
    """What a call is about: the object key, the item key, the inference id, the topic."""
    if "Key" in params and isinstance(params["Key"], str):  # a run's rejected records: drop its random id
        return re.sub(r"(/rejected/\d+)-[0-9a-f]+(\.jsonl)$", r"\1\2", params["Key"])
    for name in ("Key", "Item"):
        item = params.get(name)
        if isinstance(item, dict) and "pk" in item:
            return f"{item['pk'].get('S')}/{item.get('sk', {}).get('S')}"
    if operation == "dynamodb.TransactWriteItems":
        first = next(iter(params["TransactItems"][0].values()))
        return "tx:" + call_identity("dynamodb.UpdateItem", first)
    if operation == "dynamodb.Query":
        values = params.get("ExpressionAttributeValues", {})
        return "query:" + str(params.get("IndexName") or values.get(":pk", {}).get("S"))
    for name in ("InferenceId", "TopicArn", "FunctionName"):
        if name in params:
            return str(params[name])
    return ""


# --- the service --------------------------------------------------------------------------------
@dataclass(eq=False)
class Environment:
    function: str
    runtime: tuple[Any, ...]
    current: Invocation | None = None


@dataclass
class _Call:
    invocation: Invocation
    burst: Burst | None
    crash_after: bool = False
    attempts: int = 0
    items: int = 1  # TransactWriteItems: how many
    about: str = ""  # for the fault log
    operation: str = ""
    completes: bool = False  # the write that records a job as finished


class LambdaService:
    def __init__(
        self,
        modules: dict[str, ModuleType],
        clock: VirtualClock,
        timeouts: dict[str, float],
        plan: FaultPlan,
        log: FaultLog,
        labels: Labels,
        tamper: Callable[[str, tuple[Any, ...]], None] | None = None,
        calls: CallRecorder | None = None,
    ):
        self.modules = modules
        self.calls = calls  # records every AWS call of the functions (local_pipeline.calls)
        self.clock = clock
        self.timeouts = timeouts
        self.plan = plan
        self.log = log
        self.labels = labels
        self.tamper = tamper  # chaos.broken: swaps a store for a deliberately broken one
        self._builders = {name: module.runtime for name, module in modules.items()}
        self._idle: dict[str, list[Environment]] = {name: [] for name in modules}
        self._lock = threading.Lock()
        self._build_lock = threading.Lock()
        self._local = threading.local()
        self.active: set[Invocation] = set()
        self.invocations: Counter[str] = Counter()
        self.environments: Counter[str] = Counter()

    # --- installation ---------------------------------------------------------------------------
    @contextmanager
    def installed(self) -> Iterator[LambdaService]:
        """Point the handler modules' ``runtime`` at this service's environments while it runs."""
        for name, module in self.modules.items():
            module.runtime = self._runtime_of(name)  # type: ignore[attr-defined]
        try:
            yield self
        finally:
            for name, module in self.modules.items():
                module.runtime = self._builders[name]  # type: ignore[attr-defined]

    def _runtime_of(self, function: str) -> Callable[[], tuple[Any, ...]]:
        def runtime() -> tuple[Any, ...]:
            env: Environment | None = getattr(self._local, "env", None)
            if env is None or env.function != function:
                raise RuntimeError(f"{function} runtime() called outside one of its invocations")
            return env.runtime

        return runtime

    # --- environments -----------------------------------------------------------------------------
    def _build(self, function: str) -> Environment:
        with self._build_lock:  # settings and clients come from os.environ, like a cold start's
            runtime = self._builders[function].__wrapped__()
        env = Environment(function, runtime)
        for client in _clients(runtime):
            self._attach(env, client)
        if self.calls is not None:
            self.calls.attach_runtime(runtime, function)
        for part in runtime:
            if hasattr(part, "clock"):
                part.clock = self.clock
        if self.tamper is not None:
            self.tamper(function, runtime)
        self.environments[function] += 1
        return env

    def _acquire(self, function: str) -> Environment:
        with self._lock:
            if self._idle[function]:
                return self._idle[function].pop()
        return self._build(function)

    def _release(self, env: Environment) -> None:
        with self._lock:
            self._idle[env.function].append(env)

    # --- invocations ------------------------------------------------------------------------------
    def invoke(
        self,
        function: str,
        handler: Callable[[dict[str, Any], Any], Any],
        event: dict[str, Any],
        identity: str,
        attempt: int,
        barrier: threading.Barrier | None = None,
    ) -> Any:
        """Run one invocation in a free environment; raises if it failed (crashed, timed out, or the
        handler raised), so the event source retries it as Lambda would."""
        env = self._acquire(function)
        steps = STEPS[function]
        invocation = Invocation(
            function,
            identity,
            attempt,
            self.clock,
            self.timeouts[function],
            steps,
            self.plan.crash(function, identity, attempt, [step.repeats for step in steps]),
            self.log,
        )
        env.current = invocation
        self._local.env = env
        with self._lock:
            self.active.add(invocation)
            self.invocations[function] += 1
        try:
            if barrier is not None:
                barrier.wait(timeout=10)
            if self.calls is not None:
                self.calls.lambda_invocation(function, f"environment-{id(env)}")
            with serving_as(function):
                result = handler(event, ChaosContext(invocation))
            if invocation.dead is None and invocation.remaining() < 0:
                invocation.kill("lambda_timeout")  # returned, but after Lambda had stopped it
            if invocation.dead is not None:
                raise InjectedCrash(f"{function} {identity} attempt {attempt}: {invocation.dead}")
            return result
        finally:
            env.current = None
            self._local.env = None
            with self._lock:
                self.active.discard(invocation)
            self._release(env)

    def kill_all(self, why: str = "stack_stopped") -> None:
        with self._lock:
            running = list(self.active)
        for invocation in running:
            invocation.kill(why)

    # --- the client hooks --------------------------------------------------------------------------
    def _attach(self, env: Environment, client: Any) -> None:
        events = client.meta.events
        events.register("before-parameter-build", lambda **kw: self._before_call(env, **kw))
        events.register("before-send", lambda **kw: self._before_send(**kw))
        events.register("after-call", lambda **kw: self._after_call(**kw))
        _back_off_on(client, self.clock)

    def _before_call(
        self, env: Environment, params: dict[str, Any], model: Any, context: dict, **_: Any
    ) -> None:
        invocation = env.current
        if invocation is None:
            return
        invocation.check_alive()
        operation = f"{model.service_model.service_id.hyphenize()}.{model.name}"
        crash_after = False
        if invocation.crash is not None:
            index, occurrence = invocation.crash
            point = invocation.steps[index]
            if (
                point.operation == operation
                and point.matches(params)
                and invocation.count(index) == occurrence
            ):
                self.log.add(
                    f"crash_{invocation.function.removeprefix('ticket-')}_{point.name}",
                    f"{invocation.identity}#{invocation.attempt}",
                )
                if point.when == "before":
                    raise invocation.kill("crashed")
                crash_after = True
        resource = self.labels.normalize(call_identity(operation, params))
        nth = invocation.count((operation, resource))
        identity = (
            f"{invocation.function}|{invocation.identity}|{invocation.attempt}|{operation}|{resource}|{nth}"
        )
        context["chaos"] = _Call(
            invocation,
            self.plan.burst(operation, identity),
            crash_after,
            items=len(params.get("TransactItems", [1])),
            about=f"{invocation.function.removeprefix('ticket-')}:{resource}",
            operation=operation,
            completes="REMOVE lease_until" in _expression(params),
        )

    def _before_send(self, request: Any, **_: Any) -> Any:
        call: _Call | None = (request.context or {}).get("chaos")
        if call is None:
            return None
        call.invocation.check_alive()  # a retry attempt after the invocation died or timed out
        call.attempts += 1
        burst = call.burst
        if burst is None or call.attempts > burst.attempts:
            return None
        self.log.add(burst.kind, call.about)
        url = request.url
        if burst.kind.startswith("s3_"):
            return s3_error(url, burst.code)
        if burst.kind.startswith("dynamodb_transaction_"):
            return transaction_canceled(url, call.items, burst.code)
        if burst.kind.startswith("dynamodb_"):
            return dynamodb_error(url, burst.code, DYNAMODB_THROTTLES[burst.code])
        return invoke_error(url, burst.code)

    def _after_call(self, http_response: Any, context: dict, **_: Any) -> None:
        call: _Call | None = context.get("chaos")
        if call is None:
            return
        if http_response.status_code >= 300:
            return
        if call.operation == "sns.Publish":
            call.invocation.published = True
        elif call.completes:
            call.invocation.published = False
        if call.crash_after:
            raise call.invocation.kill("crashed")


def _clients(runtime: tuple[Any, ...]) -> list[Any]:
    """The boto3 clients inside a handler's runtime() (settings, deps[, lambda client])."""
    clients = []
    for part in runtime:
        if hasattr(part, "meta") and hasattr(part.meta, "events"):
            clients.append(part)
        for name in ("objects", "jobs", "publisher", "store"):
            store = getattr(part, name, None)
            if store is not None and hasattr(store, "client"):
                clients.append(store.client)
        runtime_client = getattr(part, "runtime", None)
        if runtime_client is not None and hasattr(runtime_client, "meta"):
            clients.append(runtime_client)
    return clients


def _back_off_on(client: Any, clock: VirtualClock) -> None:
    """botocore's retries as they are (which errors, how many attempts, how long to wait), the wait
    on the virtual clock: a retry's back-off is a configured duration, like a deadline, and passes
    ``speed`` times faster. This is ``botocore.endpoint.Endpoint._needs_retry`` with the sleep
    scaled (tests/chaos pins it against botocore's own)."""
    endpoint = client._endpoint
    emitter = endpoint._event_emitter

    def needs_retry(
        attempts: int,
        operation_model: Any,
        request_dict: dict[str, Any],
        response: Any = None,
        caught_exception: Exception | None = None,
    ) -> bool:
        service_id = operation_model.service_model.service_id.hyphenize()
        responses = emitter.emit(
            f"needs-retry.{service_id}.{operation_model.name}",
            response=response,
            endpoint=endpoint,
            operation=operation_model,
            attempts=attempts,
            caught_exception=caught_exception,
            request_dict=request_dict,
        )
        delay = first_non_none_response(responses)
        if delay is None or delay is False:
            return False
        time.sleep(clock.wall_seconds(delay))
        return True

    endpoint._needs_retry = needs_retry

"""End to end on one machine: moto's server + the real inference server process (tiny artifact)
+ the async endpoint stand-in + the event router calling the real handlers (one stack for the
module). Checks the rule that every ticket id appears exactly once in the results or the
failures, with a failed chunk injected and every SageMaker notification delivered a second time;
then two quick uploads to one key, a lost notification that only the sweeper can finish, the
scheduled sweeper and the EMF metrics of the three functions."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest

from local_pipeline.demo import wait_for_results
from local_pipeline.samples import SampleFile
from local_pipeline.stack import LocalStack, StackConfig


def _jsonl(rows: list[dict]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def _read(stack: LocalStack, uri: str) -> bytes:
    bucket, key = uri[len("s3://") :].split("/", 1)
    return stack.clients["s3"].get_object(Bucket=bucket, Key=key)["Body"].read()


def _rows(stack: LocalStack, uri: str) -> list[dict]:
    return [json.loads(line) for line in _read(stack, uri).splitlines() if line.strip()]


@pytest.fixture(scope="module")
def stack(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory):
    import shutil

    from triage_core.artifact import load_manifest, store_training_mix

    # the artifact as training leaves it: with its training split's category mix (the drift reference)
    model_dir = tmp_path_factory.mktemp("e2e-artifact") / "model"
    shutil.copytree(tiny_artifact, model_dir)
    labels = load_manifest(model_dir).labels
    store_training_mix(model_dir, [label for i, label in enumerate(labels) for _ in range(i + 1)])

    def inject(request) -> str | None:  # chunk 2 of the big file fails like a model error would
        if request.inference_id.startswith("big-file") and request.inference_id.endswith("-c00002"):
            return "ModelError: injected failure for chunk 2"
        return None

    def lose(request) -> bool:  # chunk 2 of "lost" files: SageMaker cannot publish its notification
        return request.inference_id.startswith("lost-") and request.inference_id.endswith("-c00002")

    config = StackConfig(
        model_dir=model_dir,
        work_dir=tmp_path_factory.mktemp("e2e") / "stack",
        drift_min_tickets=1,
        chunk_size=4,
        max_concurrent_invocations=2,
        log_level="INFO",
        server_env={"TRIAGE_THREADS_PER_WORKER": "1"},
        fault_injector=inject,
        notification_fault=lose,
        sweep_interval_seconds=0.5,
    )
    with LocalStack(config) as running:
        yield running


def test_files_come_out_exactly_once_despite_failed_chunks_and_duplicate_notifications(stack: LocalStack):
    prefix = stack.names.input_prefix
    files = {
        f"{prefix}normal.jsonl": _jsonl(
            [{"id": f"n{i}", "text": f"my card number {i} has not arrived"} for i in range(10)]
        ),
        f"{prefix}big file+v2 (final).jsonl": _jsonl(
            [{"id": f"b{i}", "text": f"I want a refund for payment {i}"} for i in range(18)]
        ),
        f"{prefix}bad.jsonl": b'{"id": "x1", "text": "lost my card"}\n{"id": "x1", "text": "dup"}\nnot json\n'
        b'{"id": "x2", "text": ""}\n{"text": "no id given"}\n',
        f"{prefix}tickets.csv": b'id,text\nc1,"exchange rate, please"\nc2,top up failed\n',
    }
    expected_ids = {
        f"{prefix}normal.jsonl": {f"n{i}" for i in range(10)},
        f"{prefix}big file+v2 (final).jsonl": {f"b{i}" for i in range(18)},
        f"{prefix}bad.jsonl": {"x1", "<record 2>", "<record 3>", "x2", "<record 5>"},
        f"{prefix}tickets.csv": {"c1", "c2"},
    }
    expected = {}
    for key, body in files.items():
        stack.clients["s3"].put_object(Bucket=stack.names.input_bucket, Key=key, Body=body)
        expected[f"s3://{stack.names.input_bucket}/{key}"] = SampleFile(key, body, "", 0)
    messages = wait_for_results(stack, expected, timeout=60, show_progress=False)
    assert set(messages) == set(expected), "a file never produced its results message"

    snapshot = {}
    for source, message in messages.items():
        key = source.split("/", 3)[3]
        results = _rows(stack, message["results"])
        failures = _rows(stack, message["failures"])
        ids = [r["id"] for r in results] + [f["id"] for f in failures]
        assert len(ids) == len(set(ids)), f"duplicated ticket in {key}"
        assert set(ids) == expected_ids[key], key
        assert message["tickets"] == len(expected_ids[key]) and message["failed"] == len(failures)
        assert all(isinstance(r["score"], float) and isinstance(r["needs_review"], bool) for r in results)
        snapshot[source] = {name: _read(stack, message[name]) for name in ("results", "failures", "summary")}
        if key.endswith("normal.jsonl") or key.endswith(".csv"):
            assert message["status"] == "complete" and not failures
    big = messages[f"s3://{stack.names.input_bucket}/{prefix}big file+v2 (final).jsonl"]
    assert big["status"] == "partial" and big["failed"] == 4
    failed = {f["id"]: f["error"] for f in _rows(stack, big["failures"])}
    assert set(failed) == {"b4", "b5", "b6", "b7"}  # exactly the tickets of chunk 2
    assert all("injected failure for chunk 2" in reason for reason in failed.values())
    summary = json.loads(_read(stack, big["summary"]))
    assert summary["chunks"] == {"total": 5, "succeeded": 4, "failed": 1}
    assert summary["failed_chunks"][0]["tickets"] == 4

    # SNS delivers at least once: publish every notification the endpoint sent a second time.
    router = stack.router
    aggregator = router.stats["ticket-aggregator"]  # the sweeper's scheduled runs count apart
    before = aggregator.invocations
    notifications = list(stack.endpoint.notifications)
    sns = stack.clients["sns"]
    for notification in notifications:
        topic = (
            stack.resources.success_topic_arn
            if notification["invocationStatus"] == "Completed"
            else stack.resources.error_topic_arn
        )
        sns.publish(TopicArn=topic, Message=json.dumps(notification))
    deadline = time.time() + 30
    while aggregator.invocations < before + len(notifications):
        assert time.time() < deadline, "the duplicates were not all delivered to the aggregator"
        time.sleep(0.1)
    extra = stack.clients["sqs"].receive_message(
        QueueUrl=stack.resources.results_queue_url, WaitTimeSeconds=2
    )
    assert extra.get("Messages", []) == [], "a job published its results twice"
    for source, message in messages.items():
        for name in ("results", "failures", "summary"):
            assert _read(stack, message[name]) == snapshot[source][name], f"{name} rewritten for {source}"
    assert all(s.dead_lettered == 0 for s in router.stats.values())
    assert stack.endpoint.stats.failed == 1 and stack.endpoint.stats.expired == 0


def test_flagged_tickets_reach_review_jsonl_and_an_sqs_subscriber_of_the_review_topic_once(
    stack: LocalStack,
):
    """After the run above (duplicate notifications included): every file with classified tickets
    has review/<job>/review.jsonl holding exactly its flagged tickets (needs_review, or a top
    score under OUT_OF_SCOPE_BELOW), once each, with the text as uploaded and the server's top
    labels; the SQS queue subscribed to the review topic (moto's SNS -> SQS, the real path)
    received each of them once, in messages under SNS's 256 KB."""
    from local_pipeline.aws import results_message

    out_of_scope_below = float(stack.lambda_environment()["OUT_OF_SCOPE_BELOW"])
    texts = {"n3": "my card number 3 has not arrived", "c1": "exchange rate, please"}
    sqs, queue_url = stack.clients["sqs"], stack.resources.review_queue_url
    received: dict[str, list[dict]] = {}
    while True:
        resp = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=2)
        if not resp.get("Messages"):
            break
        for m in resp["Messages"]:
            # Amazon SNS API Reference, Publish, Message: "at most 256 KB in size (262,144 bytes,
            # not 262,144 characters)"
            assert len(json.loads(m["Body"])["Message"].encode("utf-8")) <= 262_144
            body = results_message(m["Body"])
            assert body["type"] == "review" and body["dedup_id"] == f"{body['job_id']}/review/{body['part']}"
            received.setdefault(body["job_id"], []).extend(body["items"])
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
    checked = 0
    for message in _results_messages_of_the_first_run(stack):
        results = _rows(stack, message["results"])
        if not results:
            continue
        flagged = {r["id"] for r in results if r["needs_review"] or r["score"] < out_of_scope_below}
        review_uri = f"s3://{stack.names.output_bucket}/review/{message['job_id']}/review.jsonl"
        review = _rows(stack, review_uri)
        ids = [row["id"] for row in review]
        assert len(ids) == len(set(ids)) and set(ids) == flagged, message["source"]
        by_id = {r["id"]: r for r in results}
        for row in review:
            assert row["labels"][0] == {
                "label": by_id[row["id"]]["label"],
                "score": by_id[row["id"]]["score"],
            }
            assert len(row["labels"]) == 3  # the dispatcher asks the server for top_k=3
            assert [e["score"] for e in row["labels"]] == sorted(
                (e["score"] for e in row["labels"]), reverse=True
            )
            assert row["reason"] == (
                "out_of_scope" if by_id[row["id"]]["score"] < out_of_scope_below else "low_confidence"
            )
            if row["id"] in texts:
                assert row["text"] == texts[row["id"]]
        delivered = [item["id"] for item in received.get(message["job_id"], [])]
        assert sorted(delivered) == sorted(ids), (
            f"the review topic's subscriber missed or repeated tickets of {message['source']}"
        )
        checked += bool(flagged)
    assert checked >= 2


def _results_messages_of_the_first_run(stack: LocalStack) -> list[dict]:
    """The jobs of the first test's four files, from the jobs table's finished rows."""
    from ticket_pipeline.jobs import JobStore

    store = JobStore(stack.clients["dynamodb"], stack.names.jobs_table, 30)
    messages = []
    for item in stack.clients["dynamodb"].scan(TableName=stack.names.jobs_table)["Items"]:
        if item["sk"]["S"] == "META" and "results_location" in item:
            meta = store.get_job(item["pk"]["S"].removeprefix("JOB#"))
            messages.append(
                {"job_id": meta["job_id"], "source": meta.get("source"), "results": meta["results_location"]}
            )
    return messages


def _messages(stack: LocalStack, count: int, timeout: float = 60) -> list[dict]:
    from local_pipeline.aws import results_message

    sqs, queue_url = stack.clients["sqs"], stack.resources.results_queue_url
    found: list[dict] = []
    deadline = time.time() + timeout
    while len(found) < count and time.time() < deadline:
        for m in sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
            "Messages", []
        ):
            found.append(results_message(m["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
    return found


def test_versions_a_lost_notification_the_scheduled_sweeper_and_emf_on_the_local_stack(stack: LocalStack):
    s3, bucket, prefix = stack.clients["s3"], stack.names.input_bucket, stack.names.input_prefix
    # two uploads to one key in quick succession: two versions, two jobs
    v1 = s3.put_object(
        Bucket=bucket,
        Key=f"{prefix}daily.jsonl",
        Body=_jsonl([{"id": f"a{i}", "text": f"card {i} lost"} for i in range(5)]),
    )
    v2 = s3.put_object(
        Bucket=bucket,
        Key=f"{prefix}daily.jsonl",
        Body=_jsonl([{"id": f"b{i}", "text": f"refund {i}"} for i in range(4)]),
    )
    s3.put_object(
        Bucket=bucket,
        Key=f"{prefix}lost.jsonl",
        Body=_jsonl([{"id": f"l{i}", "text": f"top up {i}"} for i in range(7)]),
    )
    by_version = {m["version_id"]: m for m in _messages(stack, 2)}
    assert set(by_version) == {v1["VersionId"], v2["VersionId"]}
    for version, ids in (
        (v1["VersionId"], {f"a{i}" for i in range(5)}),
        (v2["VersionId"], {f"b{i}" for i in range(4)}),
    ):
        message = by_version[version]
        assert message["status"] == "complete" and message["source"].endswith("/daily.jsonl")
        assert {r["id"] for r in _rows(stack, message["results"])} == ids

    from ticket_pipeline import sweeper, sweeping
    from ticket_pipeline.metrics import PipelineMetrics

    settings, deps = sweeper.runtime()
    later = time.time() + settings.function_timeout_seconds + 7 * 3600  # past TTL + timeout + margin
    waited = time.time() + 60
    while not (stack.endpoint.stats.notification_failures == 1 and stack.endpoint.wait_idle(1)):
        assert time.time() < waited, (
            "lost.jsonl was not dispatched and processed"
        )  # its chunk 2's notification
    while len(deps.jobs.overdue_jobs(later, 10)) != 1:  # the two daily jobs finished, lost.jsonl waits
        assert time.time() < waited, f"open jobs: {deps.jobs.overdue_jobs(later, 10)}"
        time.sleep(0.2)
    assert _messages(stack, 1, timeout=2) == []  # the lost job waits for its deadline
    while stack.router.stats["ticket-sweeper"].invocations < 2:  # the schedule runs the real sweeper handler
        assert time.time() < waited, "the sweeper schedule did not run"
        time.sleep(0.2)
    report = sweeping.sweep(replace(deps, metrics=PipelineMetrics()), settings, clock=lambda: later)
    assert list(report.finalized.values()) == ["partial"]
    (message,) = _messages(stack, 1)
    assert message["status"] == "partial" and message["source"].endswith("/lost.jsonl")
    failures = _rows(stack, message["failures"])
    assert {f["id"] for f in failures} == {"l4", "l5", "l6"}  # chunk 2 of 4 tickets each
    assert all("no notification received by the job deadline" in f["error"] for f in failures)

    metrics = [json.loads(line) for line in (stack.config.work_dir / "metrics.log").read_text().splitlines()]
    names = {m["Name"] for doc in metrics for m in doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert {
        "FilesReceived",
        "TicketsDispatched",
        "ChunksSubmitted",
        "ResultsPublished",
        "OverdueJobs",
    } <= names
    files = sum(sum(doc.get("FilesReceived", [])) for doc in metrics)
    assert files >= 3  # and the first test's files when it ran before


def _wait_for_aggregator(stack: LocalStack, invocations: int, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while stack.router.stats["ticket-aggregator"].invocations < invocations:
        assert time.time() < deadline, "the aggregator did not get the messages"
        time.sleep(0.1)


def test_a_correction_file_is_routed_to_the_corrections_function_and_moves_the_accuracy(
    stack: LocalStack,
) -> None:
    """A file under corrections/ reaches the corrections function (and not the dispatcher: no
    job, no results message for it); dropped twice, it is recorded once."""
    from ticket_pipeline.corrections import CorrectionStore

    s3, bucket = stack.clients["s3"], stack.names.input_bucket
    s3.put_object(
        Bucket=bucket,
        Key=f"{stack.names.input_prefix}reviewed.jsonl",
        Body=_jsonl([{"id": f"r{i}", "text": f"my card {i} has not arrived"} for i in range(3)]),
    )
    (message,) = _messages(stack, 1)
    predicted = {r["id"]: r["label"] for r in _rows(stack, message["results"])}
    labels = json.loads((stack.config.model_dir / "triage_artifact.json").read_text())["labels"]
    wrong = next(label for label in labels if label != predicted["r1"])
    body = _jsonl([
        {"id": "r0", "source": "incoming/reviewed.jsonl", "label": predicted["r0"]},
        {"id": "r1", "source": "incoming/reviewed.jsonl", "label": wrong},
        {"id": "r2", "source": "incoming/reviewed.jsonl", "label": "no such label"},
    ])  # fmt: skip
    store = CorrectionStore(stack.clients["dynamodb"], stack.names.jobs_table)
    dispatched = stack.router.stats["ticket-dispatcher"].invocations
    for _ in range(2):  # the same file dropped twice
        s3.put_object(Bucket=bucket, Key="corrections/today.jsonl", Body=body)
    deadline = time.time() + 30
    while stack.router.stats["ticket-corrections"].invocations < 2:
        assert time.time() < deadline, "the corrections function did not run twice"
        time.sleep(0.1)
    counts = store.accuracy()["ALL"]
    assert (counts["reviewed"], counts["correct"]) == (2, 1)
    assert len(list(store.corrections())) == 2
    assert stack.router.stats["ticket-dispatcher"].invocations == dispatched  # not a ticket file
    assert _messages(stack, 1, timeout=2) == []


def test_every_metric_an_alarm_or_widget_watches_is_one_its_function_emits_on_the_local_stack(
    stack: LocalStack, synth
):
    """Read from the EMF lines the run printed (the ``_aws.CloudWatchMetrics`` directive of the
    embedded metric format specification: Namespace, Dimensions, Metrics), not from a constant:
    every metric of the template's pipeline namespace that an alarm or a dashboard widget watches
    was emitted with exactly the dimensions it is watched with. A message that is not a SageMaker
    notification and a notification of no job of this pipeline go to the success topic first, so
    the aggregator's InvalidNotifications and UnknownNotifications alarms have their data too."""
    from synth_fixture import watched_metrics

    before = stack.router.stats["ticket-aggregator"].invocations
    sns, topic = stack.clients["sns"], stack.resources.success_topic_arn
    sns.publish(TopicArn=topic, Message="not a notification")
    from ticket_pipeline.notifications import success_notification

    unknown = success_notification(  # as SageMaker writes it, for an inference id of no job
        inference_id="no-such-job-c00001",
        endpoint_name=stack.names.endpoint_name,
        input_location=f"s3://{stack.names.input_bucket}/chunks/none/c00001.jsonl",
        output_location=f"s3://{stack.names.output_bucket}/async-results/none.out",
        received_time="2026-12-06T11:59:59.000Z",
        event_time="2026-12-06T12:00:00.000Z",
        region="us-east-1",
        content_type="application/jsonlines",
        accept="application/jsonlines",
        response_content_type="application/jsonlines",
    )
    sns.publish(TopicArn=topic, Message=json.dumps(unknown))
    _wait_for_aggregator(stack, before + 2)

    emitted: set[tuple[str, str, tuple[tuple[str, str], ...]]] = set()
    for line in (stack.config.work_dir / "metrics.log").read_text().splitlines():
        document = json.loads(line)
        for directive in document["_aws"]["CloudWatchMetrics"]:
            for dimension_set in directive["Dimensions"]:
                dims = tuple(sorted((name, document[name]) for name in dimension_set))
                for metric in directive["Metrics"]:
                    emitted.add((directive["Namespace"], metric["Name"], dims))
    local_namespace = stack.lambda_environment()["POWERTOOLS_METRICS_NAMESPACE"]
    functions = {  # the template's namespace and service of each function, from its environment
        (env["POWERTOOLS_METRICS_NAMESPACE"], env["POWERTOOLS_SERVICE_NAME"])
        for fn in synth.stack.pipeline.functions.values()
        for env in [synth.properties(fn.function)["Environment"]["Variables"]]
    }
    (namespace,) = {ns for ns, _ in functions}
    watched = [m for m in watched_metrics(synth.template) if m[0] == namespace]
    assert len(watched) >= 20  # 3 alarms and the pipeline widgets
    missing = []
    for _, name, dims, where in watched:
        assert set(dims) == {"service"} and (namespace, dims["service"]) in functions, where
        key = (local_namespace, name, tuple(sorted(dims.items())))
        if key not in emitted:
            missing.append(f"{where}: {name} {dims}")
    assert missing == [], f"watched but never emitted: {missing}"


def test_every_aws_call_of_the_run_is_allowed_by_the_role_the_template_gives_its_caller(
    stack: LocalStack, synth
):
    """Every call the three functions and the endpoint stand-in made in this module's runs (the
    runtime's log writes and the key use the calls imply included), replayed against the
    synthesized template's policy of the role that makes it on AWS, is allowed. The grants no call
    used go to ``iam-usage.md`` next to the run's logs (and into the directory
    ``$TRIAGE_IAM_REPORT`` when set)."""
    import os

    from iam_replay import stack_replay

    calls = stack.calls.snapshot()
    principals = {c.principal for c in calls}
    assert principals == {
        "ticket-dispatcher",
        "ticket-aggregator",
        "ticket-sweeper",
        "ticket-corrections",
        "sagemaker-endpoint",
    }
    result = stack_replay(synth, calls, stack.names, stack.resources)
    assert result.denied == []
    actions = {(r.principal, r.action) for r in result.allowed}
    assert {
        ("ticket-dispatcher", "s3:GetObjectVersion"),
        ("ticket-dispatcher", "sagemaker:InvokeEndpointAsync"),
        ("ticket-dispatcher", "logs:PutLogEvents"),
        ("ticket-aggregator", "sns:Publish"),
        ("ticket-sweeper", "dynamodb:Query"),
        ("ticket-corrections", "dynamodb:PutItem"),
        ("sagemaker-endpoint", "s3:PutObject"),
        ("sagemaker-endpoint", "kms:GenerateDataKey"),
    } <= actions
    report = result.report()
    (stack.config.work_dir / "iam-usage.md").write_text(report)
    stack.calls.save(stack.config.work_dir / "aws-calls.jsonl")
    if os.environ.get("TRIAGE_IAM_REPORT"):  # a directory: keep the report past pytest's tmp dirs
        Path(os.environ["TRIAGE_IAM_REPORT"], "iam-usage-e2e.md").write_text(report)

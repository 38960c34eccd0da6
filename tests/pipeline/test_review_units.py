"""The review queue's pure parts: the Jensen-Shannon distance against SciPy's, the packing of
flagged tickets into review-topic messages under SNS's size limit, the settings and the
artifact's training mix."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import jensenshannon

from ticket_pipeline.metrics import PipelineMetrics
from ticket_pipeline.review import INLINE_TEXT_CHARS, MESSAGE_BUDGET, js_distance, review_messages
from ticket_pipeline.settings import AggregatorSettings

# Amazon SNS API Reference, Publish, Message: "With the exception of SMS, messages must be UTF-8
# encoded strings and at most 256 KB in size (262,144 bytes, not 262,144 characters)."
# https://docs.aws.amazon.com/sns/latest/api/API_Publish.html
SNS_LIMIT_FROM_AWS = 262_144

labels = st.sampled_from([f"label_{i}" for i in range(12)])
mixes = st.dictionaries(labels, st.integers(0, 10_000), min_size=1).filter(lambda m: sum(m.values()) > 0)


@given(mixes, mixes)
def test_js_distance_equals_scipys_jensenshannon_base_2(observed: dict, reference: dict) -> None:
    names = sorted(set(observed) | set(reference))
    expected = jensenshannon(
        [observed.get(n, 0) for n in names], [reference.get(n, 0) for n in names], base=2
    )
    assert js_distance(observed, reference) == pytest.approx(float(expected), abs=1e-9)


@given(mixes, mixes)
def test_js_distance_is_a_bounded_symmetric_distance_zero_for_the_same_mix(a: dict, b: dict) -> None:
    assert 0.0 <= js_distance(a, b) <= 1.0
    assert js_distance(a, b) == pytest.approx(js_distance(b, a), abs=1e-12)
    scaled = {k: 3 * v for k, v in a.items()}  # counts or shares: the same mix
    assert js_distance(a, scaled) == pytest.approx(0.0, abs=1e-6)


def test_js_distance_of_disjoint_mixes_is_one_and_an_empty_mix_is_refused() -> None:
    assert js_distance({"a": 5}, {"b": 7}) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        js_distance({}, {"a": 1})


texts = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=3 * INLINE_TEXT_CHARS
)
items = st.lists(
    st.builds(
        lambda i, text, reason: {
            "id": f"t-{i}",
            "text": text,
            "labels": [{"label": "card_arrival", "score": 0.4}],
            "reason": reason,
            "why": "top score under the threshold",
        },
        st.integers(0, 10**9),
        texts,
        st.sampled_from(["low_confidence", "out_of_scope"]),
    ),
    max_size=80,
    unique_by=lambda item: item["id"],
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(items, st.integers(0, 4))
def test_every_flagged_ticket_is_in_exactly_one_message_in_order_and_each_fits_sns(
    flagged: list[dict], blow_up: int
) -> None:
    # some items far over the inline limit (control characters escape to 6 bytes each in JSON)
    flagged = [
        {**item, "text": "\x01" * (INLINE_TEXT_CHARS * 2)} if n < blow_up else item
        for n, item in enumerate(flagged)
    ]
    envelope = {
        "type": "review",
        "job_id": "job-1",
        "review": "s3://out/review/job-1/review.jsonl",
        "flagged": 0,
    }
    messages = review_messages(envelope, iter(flagged))
    assert [item["id"] for m in messages for item in m["items"]] == [item["id"] for item in flagged]
    assert [m["part"] for m in messages] == list(range(1, len(messages) + 1))
    for m in messages:
        assert m["parts"] == len(messages) and m["dedup_id"] == f"job-1/review/{m['part']}"
        attributes = (
            len("type") + len("String") + len("review") + len("dedup_id") + len("String") + len(m["dedup_id"])
        )
        assert len(json.dumps(m, ensure_ascii=False).encode("utf-8")) + attributes <= SNS_LIMIT_FROM_AWS
    for original, sent in zip(flagged, (item for m in messages for item in m["items"]), strict=True):
        if len(original["text"]) > INLINE_TEXT_CHARS:
            assert sent["text_truncated"] and original["text"].startswith(sent["text"])
        else:
            assert sent == original
    assert review_messages(envelope, iter(flagged)) == messages  # a re-publication repeats them


def test_parts_are_full_before_the_next_begins_and_no_items_make_no_message() -> None:
    envelope = {"type": "review", "job_id": "j", "review": "s3://o/review/j/review.jsonl"}
    flagged = [
        {"id": f"t{i}", "text": "x" * 1000, "labels": [], "reason": "low_confidence"} for i in range(1000)
    ]
    messages = review_messages(envelope, iter(flagged))
    assert len(messages) >= math.ceil(len(json.dumps(flagged).encode()) / SNS_LIMIT_FROM_AWS)
    for current, following in itertools.pairwise(messages):  # greedy: the next item did not fit
        grown = {**current, "items": [*current["items"], following["items"][0]]}
        assert len(json.dumps(grown).encode()) > MESSAGE_BUDGET - 64  # the part numbers' digits
    assert review_messages(envelope, iter([])) == []


def _env(**extra: str) -> dict[str, str]:
    return {
        "JOBS_TABLE": "jobs",
        "OUTPUT_BUCKET": "out-bucket",
        "RESULTS_TOPIC_ARN": "arn:aws:sns:eu-west-1:123456789012:results",
        **extra,
    }


def test_review_settings_parse_the_training_mix_and_refuse_a_bad_one() -> None:
    settings_ = AggregatorSettings.from_env(
        _env(
            REVIEW_TOPIC_ARN="arn:aws:sns:eu-west-1:123456789012:review",
            TRAINING_MIX='{"a":3,"b":1}',
            OUT_OF_SCOPE_BELOW="0.2",
            REVIEW_PREFIX="review",
        )
    )
    assert settings_.training_mix == {"a": 3.0, "b": 1.0} and settings_.review_prefix == "review/"
    assert AggregatorSettings.from_env(_env()).review_topic_arn is None  # no review queue
    for bad in ('{"a": -1}', "{}", "not json", '["a"]'):
        with pytest.raises(ValueError):
            AggregatorSettings.from_env(_env(TRAINING_MIX=bad))
    with pytest.raises(ValueError):
        AggregatorSettings.from_env(_env(OUT_OF_SCOPE_BELOW="1.0"))


def test_per_file_samples_keep_every_value_and_counts_refuse_them() -> None:
    metrics = PipelineMetrics(service="t", namespace="N")
    metrics.sample("CategoryDrift", 0.25)
    metrics.sample("CategoryDrift", 0.5)
    document = metrics.publish()
    assert document["CategoryDrift"] == [0.25, 0.5]
    with pytest.raises(ValueError):
        metrics.count("CategoryDrift")
    with pytest.raises(ValueError):
        metrics.sample("TicketsToReview", 1)


def test_the_artifact_carries_its_training_mix_for_every_label(tiny_artifact: Path, tmp_path: Path) -> None:
    import shutil

    from triage_core.artifact import ArtifactError, load_manifest, store_training_mix

    model = tmp_path / "model"
    shutil.copytree(tiny_artifact, model)
    labels = load_manifest(model).labels
    store_training_mix(model, [labels[0]] * 3 + [labels[1]])
    mix = load_manifest(model).training_mix
    assert mix == {label: {labels[0]: 3, labels[1]: 1}.get(label, 0) for label in labels}
    manifest = json.loads((model / "triage_artifact.json").read_text())
    manifest["training_mix"] = {"not-a-label": 1}
    (model / "triage_artifact.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError):
        load_manifest(model)


def test_a_review_run_on_moto_keeps_every_flagged_ticket_even_when_its_chunk_is_gone(aws) -> None:
    """ReviewRun against moto's S3 and SNS: texts read back from the chunks, a ticket whose chunk
    cannot be read any more is queued anyway with the reason, the shares and the distance, and
    the review topic's SQS subscriber gets every flagged ticket."""
    from local_pipeline.aws import results_message
    from ticket_pipeline.results import Publisher
    from ticket_pipeline.review import ReviewConfig, ReviewRun

    bucket = aws.names.input_bucket
    chunk = {"input_location": f"s3://{bucket}/chunks/j/00001.jsonl"}
    gone = {"input_location": f"s3://{bucket}/chunks/j/00002.jsonl"}
    aws.s3.put_object(
        Bucket=bucket,
        Key="chunks/j/00001.jsonl",
        Body=b'{"id": "a", "text": "where is my card"}\n{"id": "b", "text": "hello \\u00e9"}\n'
        b'{"id": "c", "text": "x"}\n',
    )
    config = ReviewConfig(
        topic_arn=aws.resources.review_topic_arn,
        output_bucket=aws.names.output_bucket,
        prefix="review/",
        out_of_scope_below=0.2,
        training_mix={"card_arrival": 1, "exchange_rate": 1},
        drift_min_tickets=1,
    )
    run = ReviewRun(config, {"job_id": "j"}, aws.objects(), Publisher(aws.sns), PipelineMetrics(service="t"))
    top = [{"label": "card_arrival", "score": 0.4}, {"label": "exchange_rate", "score": 0.35}]
    run.observe(chunk, 0, "a", {"label": "card_arrival", "score": 0.4, "needs_review": True, "top_k": top})
    run.observe(chunk, 1, "b", {"label": "card_arrival", "score": 0.1, "needs_review": True})
    run.observe(chunk, 2, "c", {"label": "card_arrival", "score": 0.9, "needs_review": False})
    run.observe(gone, 0, "d", {"label": "exchange_rate", "score": 0.3, "needs_review": True})
    run.write()
    queued = [
        json.loads(line)
        for line in aws.s3.get_object(Bucket=aws.names.output_bucket, Key="review/j/review.jsonl")[
            "Body"
        ].iter_lines()
    ]
    assert [(q["id"], q["reason"], q["text"]) for q in queued] == [
        ("a", "low_confidence", "where is my card"),
        ("b", "out_of_scope", "hello é"),
        ("d", "low_confidence", None),
    ]
    assert queued[0]["labels"] == top and "cannot be read" in queued[2]["text_unavailable"]
    assert run.drift() == pytest.approx(
        {
            "ReviewShare": 0.75,
            "OutOfScopeShare": 0.25,
            "CategoryDrift": float(jensenshannon([3, 1], [1, 1], base=2)),
        }
    )
    assert len(run.publish({"source": "s3://in/incoming/f.jsonl", "status": "complete"})) == 1
    run.close()
    received = aws.sqs.receive_message(QueueUrl=aws.resources.review_queue_url, WaitTimeSeconds=2)["Messages"]
    (body,) = [results_message(m["Body"]) for m in received]
    assert [item["id"] for item in body["items"]] == ["a", "b", "d"] and body["flagged"] == 3

"""Corrections that come back (issue #24 point 2): the corrections handler against moto's real
server, on results the real dispatcher and aggregator wrote, correction files read by the shared
ticket reader. Every line ends up recorded or rejected with a reason, none twice; a redelivered
event or the same file dropped again changes nothing; a later correction supersedes; the accuracy
counters always equal the corrections recorded."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pipeline_helpers import LABELS, Aws, Context, complete, drop, notify, queued, s3_put_event

from local_pipeline.async_endpoint import AsyncEndpoint
from local_pipeline.aws import patched_environ
from ticket_pipeline import corrector
from ticket_pipeline.corrections import ACCEPTED, CorrectionStore

SEQUENCE: list[int] = []
MODEL_BUCKET = "ticket-triage-model"
SOURCE = "incoming/desk.jsonl"
TICKETS = [{"id": f"t{i}", "text": f"my card number {i} never arrived"} for i in range(6)]


@pytest.fixture
def corrections_env(aws: Aws, lambda_env: dict[str, str]) -> Any:
    aws.s3.create_bucket(Bucket=MODEL_BUCKET)
    manifest = json.dumps({"labels": LABELS}).encode()
    aws.s3.put_object(Bucket=MODEL_BUCKET, Key="model/triage_artifact.json", Body=manifest)
    env = {"LABELS_LOCATION": f"s3://{MODEL_BUCKET}/model/triage_artifact.json", "INPUT_PREFIX": "incoming/"}
    with patched_environ(env):
        corrector.runtime.cache_clear()
        yield env
    corrector.runtime.cache_clear()


@pytest.fixture
def classified(aws: Aws, endpoint: AsyncEndpoint, corrections_env: Any) -> dict[str, str]:
    """SOURCE through the real dispatcher and aggregator: the model's label per ticket id."""
    body = b"".join(json.dumps(t).encode() + b"\n" for t in TICKETS)
    drop(aws, SOURCE, body)
    for request in queued(endpoint):
        notify(aws, complete(aws, request))
    (message,) = aws.results_messages()
    return {row["id"]: row["label"] for row in aws.read_jsonl(message["results"])}


def put_corrections(aws: Aws, key: str, body: bytes, **extra: Any) -> dict[str, Any]:
    """Drop a correction file and run the handler on its S3 event; the event is returned too."""
    version = aws.s3.put_object(Bucket=aws.names.input_bucket, Key=key, Body=body, **extra)["VersionId"]
    SEQUENCE.append(len(SEQUENCE) + 1)  # S3's sequencer grows with each PUT of a key
    event = s3_put_event(
        aws.names.input_bucket, key, len(body), version_id=version, sequencer=f"{SEQUENCE[-1]:016X}"
    )
    return {"event": event, **run(event)}


def run(event: dict[str, Any]) -> dict[str, Any]:
    (outcome,) = corrector.handler(event, Context("ticket-corrections"))["files"]
    return outcome


def jsonl(*rows: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def other(label: str) -> str:
    return next(x for x in LABELS if x != label)


def store(aws: Aws) -> CorrectionStore:
    return CorrectionStore(aws.dynamodb, aws.names.jobs_table)


def report(aws: Aws, outcome: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    summary = aws.read_json(outcome["report"])
    return summary, aws.read_jsonl(summary["rejections"])


def recount(aws: Aws) -> dict[str, dict[str, int]]:
    """The accuracy counters recomputed here from the recorded corrections themselves: per
    category, the tickets reviewers gave that label (and how many the model had right), and the
    tickets the model gave it (and how many of those were right)."""
    total: dict[str, Counter] = {}
    for item in store(aws).corrections():
        right = int(item["label"] == item["predicted"])
        total.setdefault("ALL", Counter()).update(reviewed=1, correct=right)
        total.setdefault(item["label"], Counter()).update(reviewed=1, correct=right)
        total.setdefault(item["predicted"], Counter()).update(predicted=1, predicted_correct=right)
    return {k: {c: v for c, v in counts.items() if v} for k, counts in total.items()}


def counters(aws: Aws) -> dict[str, dict[str, int]]:
    nonzero = {k: {c: v for c, v in counts.items() if v} for k, counts in store(aws).accuracy().items()}
    return {k: counts for k, counts in nonzero.items() if counts}


def test_each_line_is_recorded_or_rejected_with_its_reason_and_accuracy_counts_the_agreements(
    aws: Aws, classified: dict[str, str]
) -> None:
    body = (
        jsonl(
            {"id": "t0", "source": SOURCE, "label": classified["t0"]},  # the model was right
            {"id": "t1", "source": SOURCE, "label": other(classified["t1"])},  # corrected
            {"id": "t2", "source": SOURCE, "label": "card_arival"},
            {"id": "t99", "source": SOURCE, "label": LABELS[0]},
            {"id": "t3", "source": SOURCE},
            {"id": "t4", "source": "elsewhere/desk.jsonl", "label": LABELS[0]},
            {"id": "t4", "source": "incoming/never-dropped.jsonl", "label": LABELS[0]},
        )
        + b'{"id": "t5", "source": \n'
    )
    outcome = put_corrections(aws, "corrections/2026-12-06/review.jsonl", body)
    summary, rejected = report(aws, outcome)
    assert summary["lines"] == 8
    assert summary["outcomes"]["recorded"] == 2 and summary["outcomes"]["rejected"] == 6
    reasons = {r["line"]: r["error"] for r in rejected}
    assert sorted(reasons) == [3, 4, 5, 6, 7, 8]
    assert "unknown label 'card_arival'" in reasons[3] and "did you mean 'card_arrival'" in reasons[3]
    assert "not among the classified tickets" in reasons[4] and "results.jsonl" in reasons[4]
    assert reasons[5] == "missing field 'label'"
    assert "not a ticket file key under 'incoming/'" in reasons[6]
    assert "does not exist" in reasons[7]
    assert reasons[8]  # the reader's own reason for a cut JSON line
    recorded = {c["ticket_id"]: c for c in store(aws).corrections()}
    assert set(recorded) == {"t0", "t1"}
    assert recorded["t1"]["predicted"] == classified["t1"] and recorded["t1"]["correct"] is False
    assert recorded["t0"]["text"] == TICKETS[0]["text"]  # found in the source file version
    acc = store(aws).accuracy()
    assert (acc["ALL"]["reviewed"], acc["ALL"]["correct"]) == (2, 1)
    assert counters(aws) == recount(aws)


def test_a_redelivered_event_or_the_same_file_dropped_again_changes_nothing(
    aws: Aws, classified: dict[str, str]
) -> None:
    body = jsonl(
        {"id": "t0", "source": SOURCE, "label": other(classified["t0"])},
        {"id": "t1", "source": SOURCE, "label": classified["t1"]},
    )
    first = put_corrections(aws, "corrections/a.jsonl", body)
    before = (list(store(aws).corrections()), store(aws).accuracy())
    again = run(first["event"])  # S3 delivers the same event twice
    assert again["outcomes"] == {"duplicate": 2}
    dropped_again = put_corrections(aws, "corrections/a.jsonl", body)  # a new version, same lines
    assert dropped_again["outcomes"] == {"duplicate": 2}
    assert (list(store(aws).corrections()), store(aws).accuracy()) == before


def test_a_later_correction_supersedes_and_an_older_one_arriving_late_does_not(
    aws: Aws, classified: dict[str, str]
) -> None:
    wrong = other(classified["t2"])
    csv = f"id,source,label\nt2,{SOURCE},{wrong}\n".encode()
    first = put_corrections(aws, "corrections/first.csv", csv)
    assert first["outcomes"] == {"recorded": 1}
    assert store(aws).accuracy()["ALL"]["correct"] == 0
    later = put_corrections(aws, "corrections/later.jsonl.gz", gzip.compress(jsonl(
        {"id": "t2", "source": f"s3://{aws.names.input_bucket}/{SOURCE}", "label": classified["t2"]},
    )))  # fmt: skip
    assert later["outcomes"] == {"superseded": 1}
    acc = store(aws).accuracy()
    assert (acc["ALL"]["reviewed"], acc["ALL"]["correct"]) == (1, 1)
    assert acc[wrong]["reviewed"] == 0  # the superseded label's count moved, not doubled
    assert run(first["event"])["outcomes"] == {"stale": 1}  # the older file redelivered after
    (item,) = store(aws).corrections()
    assert item["label"] == classified["t2"]
    assert counters(aws) == recount(aws)


def test_the_labels_come_from_the_model_archive_the_endpoint_serves(
    aws: Aws, classified: dict[str, str], corrections_env: Any
) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        manifest = json.dumps({"labels": LABELS[:2]}).encode()
        for name, data in (("model.onnx", bytes(300_000)), ("triage_artifact.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    aws.s3.put_object(Bucket=MODEL_BUCKET, Key="assets/abc.tar.gz", Body=raw.getvalue())
    with patched_environ({"LABELS_LOCATION": f"s3://{MODEL_BUCKET}/assets/abc.tar.gz"}):
        corrector.runtime.cache_clear()
        out = put_corrections(
            aws, "corrections/x.jsonl", jsonl({"id": "t0", "source": SOURCE, "label": LABELS[2]})
        )
    _, (rejected,) = report(aws, out)
    assert "not one of the deployed model's 2 labels" in rejected["error"]


def test_a_file_that_cannot_be_read_is_one_rejection_naming_why(aws: Aws, classified: dict[str, str]) -> None:
    out = put_corrections(aws, "corrections/notes.txt", b"t0 should be card_arrival\n")
    summary, (rejected,) = report(aws, out)
    assert summary["outcomes"]["rejected"] == 1 and rejected["line"] is None
    assert "unsupported file type" in rejected["error"]


LINE_KINDS = ("agree", "correct", "bad_label", "unknown_id", "no_label", "junk", "other_source")


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kinds=st.lists(st.tuples(st.sampled_from(LINE_KINDS), st.integers(0, 5)), min_size=1, max_size=12),
       as_csv=st.booleans(), redeliver=st.booleans())  # fmt: skip
def test_every_line_is_accounted_for_exactly_once_and_the_counters_match_the_records(
    aws: Aws, classified: dict[str, str], kinds: list[tuple[str, int]], as_csv: bool, redeliver: bool
) -> None:
    rows = []
    for kind, n in kinds:
        tid = f"t{n}"
        label = {"agree": classified[tid], "bad_label": "nonsense"}.get(kind, other(classified[tid]))
        rows.append(
            {
                "id": "nope" if kind == "unknown_id" else tid,
                "source": "incoming/other.jsonl" if kind == "other_source" else SOURCE,
                "label": "" if kind == "no_label" else label,
                "junk": kind == "junk",
            }
        )
    if as_csv:
        body = "id,source,label\n" + "".join(
            ('"broken,\n' if r["junk"] else f"{r['id']},{r['source']},{r['label']}\n") for r in rows
        )
        key, data = "corrections/gen.csv", body.encode()
    else:
        fields = ("id", "source", "label")
        data = b"".join(
            b"{not json\n" if r["junk"] else json.dumps({k: r[k] for k in fields}).encode() + b"\n"
            for r in rows
        )
        key = "corrections/gen.jsonl"
    out = put_corrections(aws, key, data)
    summary, rejected = report(aws, out)
    accepted = sum(summary["outcomes"][k] for k in ACCEPTED)
    assert summary["lines"] == accepted + len(rejected) == sum(out["outcomes"].values())
    lines = [r["line"] for r in rejected]
    assert len(lines) == len(set(lines)) and all(r["error"] for r in rejected)
    expected_rejections = sum(r["junk"] or r["label"] in ("", "nonsense") or r["id"] == "nope"
                              or r["source"] != SOURCE for r in rows)  # fmt: skip
    if not as_csv:  # a CSV junk row may swallow the rows after it into one bad record
        assert summary["lines"] == len(rows) and len(rejected) == expected_rejections
    if redeliver:
        again = run(out["event"])
        assert set(again["outcomes"]) <= {"duplicate", "stale", "rejected"}
    assert counters(aws) == recount(aws)


def test_the_corrections_role_allows_every_call_the_handler_makes_and_grants_nothing_unused(
    aws: Aws, classified: dict[str, str], synth: Any
) -> None:
    """The handler's calls (a correction file with every kind of line, the labels read from the
    model archive at the S3 location the stack gives it) replayed against the synthesized
    template's corrections role (``tests/iam_replay.py``): none denied, and every grant of the
    role used by some call (the Lambda runtime's log writes recorded as on every invocation)."""
    from iam_replay import ASSETS_BUCKET, stack_replay

    from local_pipeline.calls import CallRecorder

    model_url = synth.properties(synth.stack.inference.model)["PrimaryContainer"]["ModelDataUrl"]["Fn::Sub"]
    model_key = model_url.rsplit("/", 1)[1]
    aws.s3.create_bucket(Bucket=ASSETS_BUCKET)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        manifest = json.dumps({"labels": LABELS}).encode()
        info = tarfile.TarInfo("triage_artifact.json")
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
    aws.s3.put_object(Bucket=ASSETS_BUCKET, Key=model_key, Body=raw.getvalue())
    calls = CallRecorder()
    with patched_environ({"LABELS_LOCATION": f"s3://{ASSETS_BUCKET}/{model_key}"}):
        corrector.runtime.cache_clear()
        calls.attach_runtime(corrector.runtime(), "ticket-corrections")  # the cold start's clients
        body = jsonl(
            {"id": "t0", "source": SOURCE, "label": other(classified["t0"])},
            {"id": "t1", "source": SOURCE, "label": "nonsense"},
        )
        out = put_corrections(aws, "corrections/iam.jsonl", body)
    calls.lambda_invocation("ticket-corrections", "2026/12/06/[$LATEST]abc")
    assert out["outcomes"] == {"recorded": 1, "rejected": 1}
    result = stack_replay(synth, calls.snapshot(), aws.names, aws.resources)
    assert result.denied == []
    assert result.unused["ticket-corrections"] == []


def test_the_export_carries_each_ticket_text_and_training_folds_it_in(
    aws: Aws, classified: dict[str, str], tmp_path: Any
) -> None:
    """make export-corrections writes what the Lambda recorded (the text found in the source file,
    or the one the reviewer gave); training reads that file and relabels / adds the tickets."""
    from ticket_pipeline.export_corrections import main as export
    from training.corrections import fold_corrections, read_corrections
    from training.data import Splits, TicketDataset

    reviewer_text = "the reviewer's own copy of ticket t1"
    put_corrections(aws, "corrections/e.jsonl", jsonl(
        {"id": "t0", "source": SOURCE, "label": other(classified["t0"])},
        {"id": "t1", "source": SOURCE, "label": classified["t1"], "text": reviewer_text},
    ))  # fmt: skip
    out = tmp_path / "corrections.jsonl"
    assert export(["--table", aws.names.jobs_table, "--out", str(out)]) == 0
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["id"], r["source"], r["text"]) for r in exported] == [
        ("t0", SOURCE, TICKETS[0]["text"]),
        ("t1", SOURCE, reviewer_text),
    ]
    train = TicketDataset([TICKETS[0]["text"], "something else"], [classified["t0"], LABELS[0]])
    held = TicketDataset(["held out"], [LABELS[1]])
    folded, report = fold_corrections(Splits(train, held, held, {}), read_corrections(str(out)), str.lower)
    assert (report["relabelled"], report["added"]) == (1, 1)
    assert folded.train.labels[0] == other(classified["t0"]) and folded.train.texts[-1] == reviewer_text
    # the same through S3: exported to a key, read back by training from its prefix
    uri = f"s3://{aws.names.output_bucket}/exports/corrections.jsonl"
    assert export(["--table", aws.names.jobs_table, "--out", uri]) == 0
    from_s3 = read_corrections(f"s3://{aws.names.output_bucket}/exports/")
    assert [(r.text, r.label) for r in from_s3] == [(r.text, r.label) for r in read_corrections(str(out))]

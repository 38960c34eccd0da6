"""The checker on outputs made by hand: it accepts a correct outcome and names each invariant a
wrong one breaks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chaos.checker import (
    NEAR_TIE,
    Arrived,
    Expected,
    ReferenceScorer,
    ReviewRule,
    check,
    check_labels,
    check_review,
    latest_results_time,
)
from chaos.workload import _texts

BUCKET = "out"
SOURCE = "s3://in/incoming/a.jsonl"


def upload(**overrides) -> Expected:
    values = {
        "label": "u0",
        "source": SOURCE,
        "version_id": "v1",
        "keys": {"t1": False, "t2": False, "#3": True},  # record 3 is broken
        "whole_file_error": False,
        "uploaded_at": 100.0,
        "latest_at": 130.0,
    }
    return Expected(**{**values, **overrides})


def outcome(results: list[dict], failures: list[dict], **message) -> tuple[dict, dict[str, bytes]]:
    files = {
        f"s3://{BUCKET}/results/j/results.jsonl": b"".join(json.dumps(r).encode() + b"\n" for r in results),
        f"s3://{BUCKET}/results/j/failures.jsonl": b"".join(json.dumps(f).encode() + b"\n" for f in failures),
    }
    body = {
        "status": "partial" if failures else "complete",
        "source": SOURCE,
        "version_id": "v1",
        "results": f"s3://{BUCKET}/results/j/results.jsonl",
        "failures": f"s3://{BUCKET}/results/j/failures.jsonl",
        "tickets": len(results) + len(failures),
        "failed": len(failures),
        "succeeded": len(results),
        **message,
    }
    return body, files


def ok(key: str) -> dict:
    return {"id": key, "label": "card_arrival", "score": 0.9, "needs_review": False}


def failed(key: str, error: str = "invalid JSON: Expecting value") -> dict:
    return {"id": key, "error": error}


def run(expected: Expected, messages: list[tuple[float, dict]], files: dict[str, bytes]) -> list[str]:
    report = check(expected and [expected], [Arrived(t, m) for t, m in messages], files.__getitem__, BUCKET)
    return [f"{v.invariant}: {v.detail}" for v in report.violations]


def test_a_correct_outcome_passes():
    message, files = outcome([ok("t1"), ok("t2")], [failed("#3")])
    assert run(upload(), [(110.0, message)], files) == []


@pytest.mark.parametrize(
    ("results", "failures", "message", "arrivals", "broken"),
    [
        ([ok("t1"), ok("t2")], [failed("#3")], {}, [110.0, 111.0], "one_message: 2 results messages"),
        ([ok("t1")], [failed("#3")], {}, [110.0], "exactly_once: 1 keys in neither results nor failures"),
        ([ok("t1"), ok("t2"), ok("t2")], [failed("#3")], {}, [110.0], "exactly_once: keys more than once"),
        (
            [ok("t1"), ok("t2")],
            [failed("#3"), failed("t2")],
            {},
            [110.0],
            "exactly_once: keys more than once",
        ),
        ([ok("t1"), ok("t2"), ok("x")], [failed("#3")], {}, [110.0], "exactly_once: 1 keys that no record"),
        (
            [ok("t1"), ok("t2"), ok("#3")],
            [],
            {},
            [110.0],
            "exactly_once: broken or duplicate records classified",
        ),
        ([ok("t1"), ok("t2")], [failed("#3", " ")], {}, [110.0], "reasons: 1 failures without a reason"),
        ([ok("t1"), ok("t2")], [failed("#3")], {"status": "complete"}, [110.0], "reasons: complete with 1"),
        ([ok("t1"), ok("t2")], [failed("#3")], {"failed": 0}, [110.0], "exactly_once: message counts"),
        ([ok("t1"), ok("t2")], [failed("#3")], {"status": "done"}, [110.0], "one_message: status 'done'"),
        ([ok("t1"), ok("t2")], [failed("#3")], {}, [140.0], "deadline: results message 10.0 s after"),
        ([{"id": "t1"}, ok("t2")], [failed("#3")], {}, [110.0], "reasons: result without a label and score"),
    ],
)
def test_each_broken_invariant_is_reported(results, failures, message, arrivals, broken):
    body, files = outcome(results, failures, **message)
    violations = run(upload(), [(t, body) for t in arrivals], files)
    assert any(v.startswith(broken) for v in violations), violations


def test_an_upload_without_a_message_is_stuck_and_a_message_for_no_upload_is_reported():
    body, files = outcome([ok("t1"), ok("t2")], [failed("#3")], version_id="v2")
    report = check([upload()], [Arrived(110.0, body)], files.__getitem__, BUCKET)
    assert report.stuck == ["u0"]
    assert {v.invariant for v in report.violations} == {"deadline", "one_message"}


def test_a_file_that_fails_as_a_whole_must_say_so_with_no_tickets():
    whole = upload(keys={}, whole_file_error=True)
    body, files = outcome([], [], status="partial", error="file is empty")
    assert run(whole, [(110.0, body)], files) == []
    body, files = outcome([], [], status="complete")
    assert run(whole, [(110.0, body)], files) == [
        "reasons: a file that fails as a whole came out complete with 0 tickets"
    ]


def test_outputs_outside_the_output_bucket_or_unreadable_are_violations():
    body, files = outcome([ok("t1"), ok("t2")], [failed("#3")])
    body["results"] = "s3://elsewhere/r.jsonl"
    assert run(upload(), [(110.0, body)], files)[0].startswith(
        "exactly_once: results 's3://elsewhere/r.jsonl'"
    )
    body, _ = outcome([ok("t1"), ok("t2")], [failed("#3")])
    assert run(upload(), [(110.0, body)], {})[0].startswith("exactly_once: cannot read results")


def test_the_latest_time_adds_the_dispatch_allowance_the_deadline_the_lease_and_two_sweeps():
    latest = latest_results_time(
        100.0, deadline_seconds=100, lease_seconds=60, speed=20, sweep_interval=0.5, dispatch_allowance=15
    )
    assert latest == 100.0 + 15 + 160 / 20 + 1.0


# --- integrity: each result carries its own ticket's label (issue #21) ---------------------------
@pytest.fixture(scope="module")
def scorer(tiny_artifact: Path) -> ReferenceScorer:
    return ReferenceScorer(tiny_artifact)


def _two_tickets_the_model_tells_apart(scorer: ReferenceScorer) -> tuple[str, str, list[dict[str, float]]]:
    """Two Banking77 texts whose labels differ by more than the near-tie tolerance: a result
    swapped between them must be caught (two tickets that score alike cannot be told apart)."""
    texts = list(_texts()[:40])
    scores = scorer(texts)
    for i, a in enumerate(scores):
        for j in range(i + 1, len(texts)):
            b = scores[j]
            best_a, best_b = max(a, key=a.get), max(b, key=b.get)
            if (
                best_a != best_b
                and a[best_a] - a[best_b] > 2 * NEAR_TIE
                and b[best_b] - b[best_a] > 2 * NEAR_TIE
            ):
                return texts[i], texts[j], [a, b]
    raise AssertionError("the tiny model gives every text the same label")


def test_results_with_their_own_labels_pass_and_swapped_ones_are_caught(scorer: ReferenceScorer):
    text1, text2, (s1, s2) = _two_tickets_the_model_tells_apart(scorer)
    exp = upload(texts={"t1": text1, "t2": text2})

    def result(key: str, scores: dict[str, float]) -> dict:
        label = max(scores, key=scores.get)
        return {"id": key, "label": label, "score": scores[label], "needs_review": False}

    body, files = outcome([result("t1", s1), result("t2", s2)], [failed("#3")])
    report = check([exp], [Arrived(110.0, body)], files.__getitem__, BUCKET, score=scorer)
    assert report.violations == []
    # the pipeline attached each ticket's result to the other's key: every key is still there
    # once (a presence check passes), the labels are not their texts'
    body, files = outcome([result("t1", s2), result("t2", s1)], [failed("#3")])
    report = check([exp], [Arrived(110.0, body)], files.__getitem__, BUCKET, score=scorer)
    found = [(v.invariant, v.detail.split(" came back")[0]) for v in report.violations]
    assert found == [("integrity", "'t1'"), ("integrity", "'t2'")]
    # the right label with another ticket's score is caught too
    wrong_score = {**result("t1", s1), "score": s2[max(s1, key=s1.get)]}
    assert check_labels({"t1": text1}, [wrong_score], scorer)[0].startswith("'t1' came back")


def test_the_reference_scores_are_the_served_models_within_the_tolerance(scorer, tiny_artifact):
    """What the checker computes on its own is what the inference server answers for the same
    texts (the server batches them its own way: within the near-tie tolerance)."""
    from tests.container.serverproc import start_server, stop_server

    texts = list(_texts()[:24])
    server = start_server(tiny_artifact, tiny_artifact.parent / "integrity-server.log")
    try:
        body = b"".join(json.dumps({"id": str(i), "text": t}).encode() + b"\n" for i, t in enumerate(texts))
        resp = server.invoke(body, "application/jsonlines", accept="application/jsonlines")
        assert resp.status == 200, resp.body[:300]
        served = resp.jsonl()
    finally:
        stop_server(server)
    rows = [{"id": p["id"], "label": p["label"], "score": p["score"]} for p in served]
    assert [r["id"] for r in rows] == [str(i) for i in range(len(texts))]
    assert check_labels({str(i): t for i, t in enumerate(texts)}, rows, scorer) == []


RULE = ReviewRule("review/", 0.2)


def flagged(key: str, score: float = 0.4) -> dict:
    return {"id": key, "label": "card_arrival", "score": score, "needs_review": True}


def queued(key: str, reason: str = "low_confidence") -> dict:
    return {"id": key, "text": "…", "labels": [], "reason": reason}


def test_a_review_file_with_each_flagged_ticket_once_passes_and_each_flaw_is_named():
    results = [ok("t1"), flagged("t2"), flagged("t3", 0.1)]
    good = [queued("t2"), queued("t3", "out_of_scope")]
    assert check_review(results, good, RULE) == []
    for review, broken in (
        ([queued("t2")], "1 flagged tickets not in the review file"),
        ([*good, queued("t2")], "tickets queued more than once"),
        ([*good, queued("t1")], "1 tickets in the review file that are not flagged"),
        ([queued("t2"), queued("t3")], "1 queued with the wrong reason"),
    ):
        assert any(v.startswith(broken) for v in check_review(results, review, RULE)), broken


def test_the_checker_reads_the_review_file_of_a_job_with_classified_tickets():
    message, files = outcome([ok("t1"), flagged("t2")], [failed("#3")], job_id="j")
    exp, arrivals = upload(), [Arrived(110.0, message)]
    report = check([exp], arrivals, files.__getitem__, BUCKET, review=RULE)
    assert [v.invariant for v in report.violations] == ["review"]  # no review file at all
    files[f"s3://{BUCKET}/review/j/review.jsonl"] = json.dumps(queued("t2")).encode() + b"\n"
    assert check([exp], arrivals, files.__getitem__, BUCKET, review=RULE).violations == []


def test_the_corrections_checker_finds_a_ticket_recorded_twice_a_stale_label_and_wrong_counters() -> None:
    """Written by hand from the documented rule (later LastModified, then key, then line): file a
    says t1 is x, file b (stored a second later) says y; the checker wants y, once, and counters
    that count exactly the recorded corrections."""
    import json

    from chaos.corrections import CorrectionFile, check_corrections

    a = CorrectionFile("corrections/a.jsonl", [{"id": "t1", "source": "incoming/f", "label": "x"}], set())
    b = CorrectionFile("corrections/b.csv", [{"id": "t1", "source": "incoming/f", "label": "y"}], set())
    a.versions, b.versions = [("va", "2026-12-06T10:00:00")], [("vb", "2026-12-06T10:00:01")]
    reports = {
        f"s3://out/{f.key}/{v}/report.json": json.dumps(
            {"lines": 1, "outcomes": {"recorded": 1}, "rejections": f"s3://out/{f.key}/{v}/rejections.jsonl"}
        ).encode()
        for f in (a, b)
        for v, _ in f.versions
    }

    def read(uri: str) -> bytes:
        return reports.get(uri, b"")

    predicted = {"incoming/f": {"t1": "y"}}
    good = [{"id": "t1", "source": "incoming/f", "label": "y", "predicted": "y"}]
    counters = {"ALL": {"reviewed": 1, "correct": 1}, "y": {"reviewed": 1, "correct": 1}}
    assert check_corrections([a, b], predicted, good, counters, read, "out") == []
    stale = [{**good[0], "label": "x"}]
    kinds = {v.invariant for v in check_corrections([a, b], predicted, stale, counters, read, "out")}
    assert "corrections_latest" in kinds
    twice = check_corrections([a, b], predicted, good * 2, counters, read, "out")
    assert {v.invariant for v in twice} >= {"corrections_once", "corrections_accuracy"}
    off = {"ALL": {"reviewed": 2, "correct": 1}, "y": {"reviewed": 1, "correct": 1}}
    assert [v.invariant for v in check_corrections([a, b], predicted, good, off, read, "out")] == [
        "corrections_accuracy"
    ]

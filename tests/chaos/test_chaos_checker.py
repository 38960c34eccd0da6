"""The checker on outputs made by hand: it accepts a correct outcome and names each invariant a
wrong one breaks."""

from __future__ import annotations

import json

import pytest

from chaos.checker import Arrived, Expected, check, latest_results_time

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

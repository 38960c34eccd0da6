"""The real server on generated and damaged bodies (issue #21): every record answered in order
under its own id, or the body refused as a whole with a 4xx; never a 500, never an answer for a
ticket that was not sent.

The bodies come from :mod:`chaos.generated` (independent writers: ``json``, ``csv``, ``codecs``,
``gzip``), as in tests/core/test_reader_properties.py, which checks the reader itself on many more
files; here the HTTP path end to end, bounded (``max_examples`` below, about 20 s).
"""

from __future__ import annotations

import codecs
import gzip
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chaos.generated import JSONL, GeneratedFile, write_file
from tests.core.test_reader_properties import HypothesisDraw

SERVER_PROPERTY = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
    derandomize=True,
)


@st.composite
def files(draw) -> GeneratedFile:
    return write_file(HypothesisDraw(draw))


def answers(resp) -> list[dict]:
    if resp.headers["content-type"].startswith("application/jsonlines"):
        return resp.jsonl()
    return resp.json()["predictions"]


def assert_answered_in_order(resp, gf: GeneratedFile) -> None:
    assert resp.status == 200, (resp.status, resp.body[:300], gf.description)
    got = answers(resp)
    assert [a["index"] for a in got] == list(range(len(gf.expected)))
    for answer, want in zip(got, gf.expected, strict=True):
        assert answer.get("id") == want.id, (answer, want)
        if want.text is None:
            assert answer.get("error") and "label" not in answer, (answer, want)
        else:
            assert "error" not in answer and answer["label"], (answer, want)


@SERVER_PROPERTY
@given(gf=files())
def test_generated_bodies_are_answered_record_by_record_under_their_ids(server, gf: GeneratedFile) -> None:
    assert_answered_in_order(server.invoke(gf.body, gf.content_type), gf)


@SERVER_PROPERTY
@given(
    gf=files(),
    damage=st.sampled_from(["truncate", "join", "bom", "utf16-label", "jsonl-type", "csv-type", "nul"]),
    where=st.floats(0.05, 0.95),
)
def test_damaged_bodies_are_never_a_500_nor_an_invented_answer(server, gf, damage, where) -> None:
    body, content_type = gf.body, gf.content_type
    media = content_type.split(";")[0]
    if damage == "truncate":
        body = body[: max(1, int(len(body) * where))]
    elif damage == "join":
        body = body + body
    elif damage == "bom":
        body = codecs.BOM_UTF8 + body
    elif damage == "utf16-label":
        content_type = f"{media}; charset=utf-16"
    elif damage == "jsonl-type":
        content_type = JSONL
    elif damage == "csv-type":
        content_type = "text/csv"
    else:
        body = b"\x00" + body
    resp = server.invoke(body, content_type)
    assert resp.status in (200, 400, 413, 415), (resp.status, resp.body[:300])
    if resp.status != 200:
        assert resp.json()["error"]
        return
    good = [e.id for e in gf.expected if e.text is not None] * (2 if damage == "join" else 1)
    for answer in answers(resp):
        if "label" in answer:  # classified: a ticket that was sent, under its own id
            assert answer.get("id") in good, (answer, gf.expected)
            good.remove(answer.get("id"))
    server.assert_healthy()


# --- the classes of issue #21, over HTTP --------------------------------------------------------
def test_a_lone_surrogate_or_a_deeply_nested_record_is_one_answer_with_an_error(server) -> None:
    body = (
        b'{"id": "cut", "text": "my card \\ud83d"}\n'
        + b'{"id": "deep", "text": '
        + b"[" * 50_000
        + b"]" * 50_000
        + b"}\n"
        + b'{"id": "ok", "text": "my card has not arrived"}\n'
    )
    for content_type, data in [
        (JSONL, body),
        ("application/json", b"[" + body.strip().replace(b"\n", b",") + b"]"),
    ]:
        resp = server.invoke(data, content_type)
        got = answers(resp)
        assert resp.status == 200 and [a.get("id") for a in got] == ["cut", "deep", "ok"]
        assert "surrogate" in got[0]["error"] and "nested deeper" in got[1]["error"]
        assert got[2]["label"]
    server.assert_healthy()


@pytest.mark.parametrize(
    "body, what",
    [
        (gzip.compress(gzip.compress(b'{"id": "a", "text": "card"}\n')), "compressed twice"),
        (b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00[Content_Types].xml", "ZIP archive"),
    ],
)
def test_bytes_that_are_not_text_are_a_400_naming_what_they_are(server, body: bytes, what: str) -> None:
    resp = server.invoke(body, JSONL)
    assert resp.status == 400 and what in resp.json()["error"]


def test_utf8_json_lines_labelled_utf16_and_two_records_on_one_line(server) -> None:
    body = b'{"id": "a", "text": "card lost"}{"id": "b", "text": "refund"}\n'
    resp = server.invoke(body, f"{JSONL}; charset=utf-16")
    assert resp.status == 200 and [(a["id"], "label" in a) for a in answers(resp)] == [
        ("a", True),
        ("b", True),
    ]


def test_one_ticket_object_is_one_ticket_and_its_tags_are_not_tickets(server) -> None:
    body = json.dumps({"id": "T-1", "text": "my card has not arrived", "tags": ["card", "urgent"]}).encode()
    resp = server.invoke(body, "application/json")
    got = answers(resp)
    assert resp.status == 200 and [a["id"] for a in got] == ["T-1"] and got[0]["label"]

"""Ticket files as real tools write them, posted to the real server process.

The server reads bodies with the dispatcher's reader (tests/core/test_ticket_reader.py has the
reader's own cases); here: each file is accepted over HTTP, every record is answered in order,
and a text read from cp1252 / UTF-16 / gzip / CR-only bytes scores exactly like the same text sent
as plain UTF-8 (so it was decoded to the same characters).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.container.serverproc import Server, start_server, stop_server
from tests.core.ticket_files import (
    EXCEL_ROWS,
    broken_quote_csv,
    excel_csv,
    excel_unicode_text,
    freshdesk_export,
    gzip_cli,
    mac_classic_csv,
    zendesk_export,
)

CSV = "text/csv"
JSONL = "application/jsonlines"
ACCENTED = [("1", "Ma carte n'est pas arrivée"), ("2", "Débité deux fois de 20 € – pourquoi ?")]


def utf8_csv(rows) -> bytes:
    return ("id,text\n" + "".join(f'{i},"{t}"\n' for i, t in rows)).encode()


def scores(resp) -> list[tuple]:
    assert resp.status == 200, resp.body[:500]
    preds = resp.jsonl() if resp.headers["content-type"] == JSONL else resp.json()["predictions"]
    return [(p["index"], p.get("id"), p.get("label"), p.get("score"), p.get("error")) for p in preds]


@pytest.fixture(scope="module")
def mapped_server(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A deployment configured for help-desk exports and batch transform's headerless CSV."""
    log = tmp_path_factory.mktemp("mapped-server") / "server.log"
    srv = start_server(
        tiny_artifact,
        log,
        TRIAGE_ID_FIELD="ticket_id",
        TRIAGE_TEXT_FIELDS="subject,body",
        TRIAGE_CSV_HEADER="ticket_id,subject,body,channel",
        TRIAGE_MAX_JSON_RECORDS="1000",
    )
    yield srv
    stop_server(srv)


@pytest.mark.parametrize("content_type", [CSV, f"{CSV}; charset=windows-1252", f"{CSV}; charset=ISO-8859-1"])
def test_an_excel_cp1252_csv_scores_like_the_same_text_in_utf8(server, content_type):
    reference = scores(server.invoke(utf8_csv(ACCENTED), CSV, JSONL))
    cp1252 = utf8_csv(ACCENTED).decode().encode("cp1252")
    assert scores(server.invoke(cp1252, content_type, JSONL)) == reference
    assert all(label for _, _, label, _, _ in reference)


def test_utf16_and_utf8_bom_csv_score_like_plain_utf8(server):
    reference = scores(server.invoke(utf8_csv(ACCENTED), CSV, JSONL))
    text = utf8_csv(ACCENTED).decode()
    assert scores(server.invoke(b"\xff\xfe" + text.encode("utf-16-le"), CSV, JSONL)) == reference
    assert scores(server.invoke(b"\xef\xbb\xbf" + text.encode(), CSV, JSONL)) == reference


def test_a_utf8_bom_loses_no_record_in_json_lines_and_json(server):
    body = b'{"id": "a", "text": "card lost"}\n{"id": "b", "text": "rate"}\n'
    preds = scores(server.invoke(b"\xef\xbb\xbf" + body, JSONL, JSONL))
    assert [(i, ticket_id) for i, ticket_id, *_ in preds] == [(0, "a"), (1, "b")]
    resp = server.invoke(b'\xef\xbb\xbf{"instances": [{"id": "a", "text": "card lost"}]}', "application/json")
    assert [p[1] for p in scores(resp)] == ["a"]


def test_cr_only_line_endings_are_read_not_a_500(server):
    preds = scores(server.invoke(mac_classic_csv(), CSV, JSONL))
    assert [(i, ticket_id, err) for i, ticket_id, _, _, err in preds] == [
        (0, "1", None),
        (1, "2", None),
        (2, "3", None),
    ]
    server.assert_healthy()


def test_a_broken_quote_is_one_record_error_and_the_rows_after_it_are_classified(server):
    preds = scores(server.invoke(broken_quote_csv(), CSV, JSONL))
    assert [(i, ticket_id) for i, ticket_id, *_ in preds] == [
        (0, "1"),
        (1, "2"),
        (2, "3"),
        (3, "4"),
        (4, "5"),
    ]
    assert preds[1][4].startswith("unclosed quote") and "line 3" in preds[1][4]
    assert all(p[2] for k, p in enumerate(preds) if k != 1)


def same_answers(served: list[tuple], reference: list[tuple]) -> None:
    """The same records in the same order with the same scores. Batches of a large body are
    formed as tickets arrive, and int8 dynamic quantization scales activations per batch, so
    scores of a streamed body may move a little with their batch-mates."""
    assert [(i, ticket_id, err) for i, ticket_id, _, _, err in served] == [
        (i, ticket_id, err) for i, ticket_id, _, _, err in reference
    ]
    assert [p[3] for p in served] == pytest.approx([p[3] for p in reference], abs=0.05)


@pytest.mark.parametrize("size", [1, 3000])  # small (read whole) and large (streamed) gzip bodies
def test_gzip_bodies_by_header_or_by_their_bytes_and_concatenated(server, size):
    rows = [(str(i), f"my card number {i} has not arrived") for i in range(size)]
    plain = utf8_csv(rows)
    reference = scores(server.invoke(plain, CSV, JSONL))
    assert len(reference) == size
    compressed = gzip_cli(plain)
    same_answers(scores(server.invoke(compressed, CSV, JSONL, **{"Content-Encoding": "gzip"})), reference)
    same_answers(scores(server.invoke(compressed, CSV, JSONL)), reference)  # no header: the bytes say gzip
    half = len(plain) // 2
    cut = plain.rfind(b"\n", 0, half) + 1
    two_members = gzip_cli(plain[:cut]) + gzip_cli(plain[cut:])  # cat a.gz b.gz
    same_answers(scores(server.invoke(two_members, CSV, JSONL)), reference)


def test_a_corrupt_gzip_body_and_an_unknown_encoding_are_refused(server):
    data = gzip.compress(utf8_csv([(str(i), "card lost " * 20) for i in range(500)]))
    resp = server.invoke(data[: len(data) // 2], CSV, JSONL)
    if resp.status == 200:  # streamed: records before the cut were answered, then the error
        assert "gzip" in resp.jsonl()[-1]["error"]
    else:
        assert resp.status == 400 and "gzip data is corrupt or truncated" in resp.json()["error"]
    resp = server.invoke(b"id,text\n1,x\n", CSV, JSONL, **{"Content-Encoding": "br"})
    assert resp.status == 415
    server.assert_healthy()


def test_help_desk_exports_with_subject_and_body_fields(mapped_server):
    reference = scores(
        mapped_server.invoke(
            json.dumps(
                {"instances": [{"ticket_id": r[0], "subject": r[1], "body": r[2]} for r in EXCEL_ROWS]}
            ).encode(),
            "application/json",
            JSONL,
        )
    )
    assert [p[1] for p in reference] == ["1001", "1002", "1003"] and all(p[2] for p in reference)
    assert scores(mapped_server.invoke(excel_csv(), CSV, JSONL)) == reference  # the Excel export itself
    assert scores(mapped_server.invoke(excel_unicode_text(), CSV, JSONL)) == reference


def test_json_array_exports_are_accepted_and_a_wrong_field_map_is_a_400_naming_fields(server):
    # Zendesk's {"tickets": [...]} has subject/description: not this server's default id/text
    resp = server.invoke(zendesk_export(), "application/json")
    assert resp.status == 400
    message = resp.json()["error"]
    assert "no record has the text field(s) ['text']" in message and "'subject'" in message
    freshdesk = json.loads(freshdesk_export())
    for ticket in freshdesk:
        ticket["text"] = ticket["description_text"]
    preds = scores(server.invoke(json.dumps(freshdesk, indent=2).encode(), "application/json"))
    assert [p[1] for p in preds] == ["20", "21"]


def _batch_transform_mini_batches(data: bytes, batches: int) -> list[bytes]:
    """SplitType=Line, BatchStrategy=MultiRecord: lines, the header only in the first batch."""
    lines = data.splitlines(keepends=True)
    per = -(-len(lines) // batches)
    return [b"".join(lines[i : i + per]) for i in range(0, len(lines), per)]


def test_batch_transform_headerless_csv_mini_batches(mapped_server, server):
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["ticket_id", "subject", "body", "channel"])
    for i in range(30):
        writer.writerow([f"T{i}", f"subject {i}", "my card, the new one, has not arrived", "email"])
    batches = _batch_transform_mini_batches(buf.getvalue().encode(), 3)
    assert batches[0].startswith(b"ticket_id,") and not batches[1].startswith(b"ticket_id,")
    ids = []
    for batch in batches:
        preds = scores(mapped_server.invoke(batch, CSV, JSONL))
        assert all(label for _, _, label, _, _ in preds)
        ids += [ticket_id for _, ticket_id, *_ in preds]
    assert ids == [f"T{i}" for i in range(30)]
    params = mapped_server.request("GET", "/execution-parameters").json()
    assert params["BatchStrategy"] == "MULTI_RECORD"
    resp = server.invoke(batches[1], CSV, JSONL)  # not configured: a clear 400 saying what to set
    assert resp.status == 400 and "TRIAGE_CSV_HEADER" in resp.json()["error"]


def test_json_bodies_over_the_record_cap_are_413_and_the_route_follows_the_total_count(mapped_server):
    over = json.dumps({"inputs": ["card"] * 1001}).encode()
    resp = mapped_server.invoke(over, "application/json")
    assert resp.status == 413 and resp.json()["limit_records"] == 1000
    # 900 empty texts and 10 good ones: 910 records, too many to encode on the event loop
    mixed = {"instances": [{"subject": "", "body": ""}] * 900 + [{"subject": "card", "body": "lost"}] * 10}
    preds = scores(mapped_server.invoke(json.dumps(mixed).encode(), "application/json", JSONL))
    assert len(preds) == 910 and sum(1 for p in preds if p[2]) == 10
    small = {"instances": [{"subject": "card", "body": "lost"}] * 11}
    assert len(scores(mapped_server.invoke(json.dumps(small).encode(), "application/json", JSONL))) == 11
    # The server logs a request once its response is finished, so the two lines may come in
    # either order (and a moment after the client has read the response): wait for both.
    deadline = time.monotonic() + 10
    while True:
        invocations = [i for i in mapped_server.log_lines() if i.get("msg") == "invocation"]
        routes = {(i["records"], i["pipelined"]) for i in invocations if i["records"] in (910, 11)}
        if len(routes) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert routes == {(910, True), (11, False)}


def test_charsets_the_server_cannot_decode_are_415(server):
    resp = server.invoke(b"id,text\n1,x\n", "text/csv; charset=x-unknown-1")
    assert resp.status == 415 and "x-unknown-1" in resp.json()["error"]

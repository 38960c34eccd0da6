"""Bad input, big input and many clients, over HTTP against the real server process.

Every case checks the answer (a clear JSON error with the right status, or a per-record error
inside a successful response that accounts for every input record) and then that the server
still serves (``assert_healthy``).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest

from tests.container.serverproc import MB

GOOD = {"id": "g", "text": "my card still has not arrived"}


def jsonl(*records: object) -> bytes:
    return b"\n".join(r if isinstance(r, bytes) else json.dumps(r).encode() for r in records) + b"\n"


def test_malformed_json_is_400(server):
    resp = server.invoke(b'{"inputs": ["card", ', "application/json")
    assert resp.status == 400
    assert resp.json()["error"].startswith("malformed JSON")
    server.assert_healthy()


@pytest.mark.parametrize(
    "body",
    [
        b'"just a string"',
        # an object whose only array is not under a known name: not read as tickets (issue #21;
        # one ticket object on its own is one ticket: test_ingest_damage.py)
        b'{"columns": ["id", "text"], "rows_total": 2}',
        b'{"inputs": 42}',
        b'{"inputs": []}',
        b'{"instances": "x"}',
    ],
)
def test_wrong_json_shapes_are_400(server, body):
    resp = server.invoke(body, "application/json")
    assert resp.status == 400
    assert resp.json()["status"] == 400
    server.assert_healthy()


def test_a_json_array_is_read_as_tickets_with_per_record_errors(server):
    """A top-level array is a ticket file (help-desk exports), read like the dispatcher reads it."""
    preds = server.invoke(b'[1, {"id": "x", "text": "card lost"}]', "application/json").json()["predictions"]
    assert [p["index"] for p in preds] == [0, 1]
    assert "JSON object" in preds[0]["error"] and preds[1]["label"]


@pytest.mark.parametrize("top_k", [0, -1, "three", True])
def test_bad_top_k_is_400(server, top_k):
    body = json.dumps({"instances": [{"text": "card"}], "parameters": {"top_k": top_k}}).encode()
    resp = server.invoke(body, "application/json")
    assert resp.status == 400
    assert "top_k" in resp.json()["error"]


def test_an_unknown_parameter_is_400_not_ignored(server):
    body = json.dumps(
        {"instances": [{"text": "card"}], "parameters": {"top_k": 2, "temperature": 0}}
    ).encode()
    resp = server.invoke(body, "application/json")
    assert resp.status == 400 and "temperature" in resp.json()["error"]


def test_one_bad_jsonl_line_among_good_ones(server):
    body = jsonl(
        {"id": "a", "text": "lost card"},
        b'{"id": "b", "text": "unterminated',
        {"id": "c", "text": "exchange rate"},
        b"[1, 2, 3]",
        {"id": "e", "text": 12},
        {"id": {"nested": 1}, "text": "bad id"},
        {"id": "g", "text": "top up failed"},
    )
    preds = server.invoke(body, "application/jsonlines", "application/jsonlines").jsonl()
    assert [p["index"] for p in preds] == list(range(7))
    assert [("error" in p) for p in preds] == [False, True, False, True, True, True, False]
    assert preds[1]["error"].startswith("invalid JSON")
    assert [p["id"] for p in preds if "label" in p] == ["a", "c", "g"]
    server.assert_healthy()


@pytest.mark.parametrize(
    "content_type", [None, "", "text/plain", "application/xml", "application/json; charset=klingon-8"]
)
def test_wrong_or_missing_content_type_is_415(server, content_type):
    resp = server.invoke(b'{"inputs": "card"}', content_type)
    assert resp.status == 415
    err = resp.json()
    assert "application/jsonlines" in err["supported"]
    server.assert_healthy()


@pytest.mark.parametrize("accept", ["text/html", "application/xml", "application/json;q=0"])
def test_unsupported_accept_is_406(server, accept):
    resp = server.invoke(b'{"inputs": "card"}', "application/json", accept)
    assert resp.status == 406
    assert resp.json()["supported"] == ["application/json", "application/jsonlines"]
    server.assert_healthy()


@pytest.mark.parametrize("content_type", ["application/json", "application/jsonlines", "text/csv"])
def test_empty_body_is_400(server, content_type):
    resp = server.invoke(b"", content_type)
    assert resp.status == 400
    assert resp.json()["error"] == "empty body"
    server.assert_healthy()


def test_body_without_records_is_400(server):
    assert server.invoke(b"\n\n  \n", "application/jsonlines").status == 400
    assert server.invoke(b"id,text\n", "text/csv").status == 400
    resp = server.invoke(b"id,body\n1,hello\n", "text/csv")
    assert resp.status == 400
    assert "text" in resp.json()["error"]
    server.assert_healthy()


def test_empty_and_whitespace_text_are_per_record_errors(server):
    body = json.dumps({"inputs": ["card lost", "", "   \n\t ", "rate"]}).encode()
    preds = server.invoke(body, "application/json", "application/jsonlines").jsonl()
    assert [p.get("error") for p in preds] == [None, "empty text", "empty text", None]
    server.assert_healthy()


def test_windows_1252_bytes_are_tickets_not_errors(server):
    """A ticket that can be decoded is never a failure: cp1252 bytes (no charset declared) are
    read as windows-1252 in every format, and a declared charset is honoured."""
    resp = server.invoke(b'{"instances": [{"id": "a", "text": "caf\xe9 card \x80 5"}]}', "application/json")
    assert resp.status == 200 and "label" in resp.json()["predictions"][0]
    body = jsonl(GOOD) + b'{"id": "cp", "text": "caf\xe9"}\n' + jsonl(GOOD)
    preds = server.invoke(body, "application/jsonlines", "application/jsonlines").jsonl()
    assert [p.get("error") for p in preds] == [None, None, None] and preds[1]["id"] == "cp"
    body = b"id,text\n1,fine\n2,caf\xe9\n3,also fine\n"
    preds = server.invoke(body, "text/csv; charset=windows-1252").json()["predictions"]
    assert [p.get("error") for p in preds] == [None, None, None]
    server.assert_healthy()


def test_one_megabyte_ticket(server):
    big = ("I lost my card yesterday near the station and need a new one. " * 17000)[: 1 * MB]
    for body, ctype in [
        (json.dumps({"instances": [{"text": big}, {"text": "rate"}]}).encode(), "application/json"),
        (jsonl({"id": "big", "text": big}, GOOD), "application/jsonlines"),
        (b"id,text\nbig," + big.encode() + b"\nsmall,top up\n", "text/csv"),
    ]:
        started = time.perf_counter()
        resp = server.invoke(body, ctype, "application/jsonlines")
        assert resp.status == 200, resp.body[:300]
        preds = resp.jsonl()
        assert len(preds) == 2 and all("label" in p for p in preds)
        assert time.perf_counter() - started < 10
    server.assert_healthy()


def test_record_over_the_record_limit_is_a_per_record_error(server):
    huge = "x" * (2 * MB + 10)  # TRIAGE_MAX_RECORD_MB=2 in this server
    body = jsonl(GOOD, {"id": "huge", "text": huge}, GOOD)
    preds = server.invoke(body, "application/jsonlines", "application/jsonlines").jsonl()
    assert [p["index"] for p in preds] == [0, 1, 2]
    assert preds[1]["error"] == f"record is larger than {2 * MB} characters (line 2)"
    assert "label" in preds[0] and "label" in preds[2]
    server.assert_healthy()


def test_missing_and_duplicate_ids(server):
    body = jsonl(
        {"id": "dup", "text": "card"},
        {"text": "rate"},
        {"id": "dup", "text": "top up"},
        {"id": None, "text": "pin"},
    )
    preds = server.invoke(body, "application/jsonlines", "application/jsonlines").jsonl()
    assert [(p["index"], p["id"]) for p in preds] == [(0, "dup"), (1, None), (2, "dup"), (3, None)]
    assert all("label" in p for p in preds)
    server.assert_healthy()


def test_body_over_the_limit_is_413(server):
    body = b"x" * (4 * MB + 1)  # TRIAGE_MAX_PAYLOAD_MB=4 in this server
    resp = server.invoke(body, "application/jsonlines")
    assert resp.status == 413
    assert resp.json()["limit"] == 4 * MB
    resp = server.invoke(b'{"inputs": "' + b"y" * (4 * MB) + b'"}', "application/json")
    assert resp.status == 413
    server.assert_healthy()


def test_chunked_body_over_the_limit_without_content_length(server):
    def chunks() -> Iterator[bytes]:
        yield jsonl(GOOD) * 10
        for _ in range(5):
            yield b"z" * MB  # one endless line: no inference work, the byte count still grows

    resp = server.invoke(chunks(), "application/jsonlines", "application/jsonlines")
    if resp.status == 200:  # the stream had started: it ends with an error record
        last = resp.jsonl()[-1]
        assert last["index"] is None and "limit" in last["error"]
    else:
        assert resp.status == 413
        assert resp.json()["limit"] == 4 * MB
    server.assert_healthy()


def test_large_streamed_body_accounts_for_every_record(server):
    """A chunked JSON Lines upload (no Content-Length) goes through the streaming path."""
    n = 3000
    texts = ["card lost", "exchange rate please", "why did my top up fail at the shop", "pin"]

    def body() -> Iterator[bytes]:
        lines = []
        for i in range(n):
            if i % 997 == 5:
                lines.append(b"{broken json")
            else:
                lines.append(json.dumps({"id": f"id-{i}", "text": texts[i % 4] * (1 + i % 5)}).encode())
            if len(lines) == 250:
                yield b"\n".join(lines) + b"\n"
                lines = []
        if lines:
            yield b"\n".join(lines)  # no trailing newline on the last line

    for accept in ("application/jsonlines", "application/json"):
        resp = server.invoke(body(), "application/jsonlines", accept)
        assert resp.status == 200
        preds = resp.jsonl() if accept.endswith("jsonlines") else resp.json()["predictions"]
        assert [p["index"] for p in preds] == list(range(n))
        bad = [p["index"] for p in preds if "error" in p]
        assert bad == [i for i in range(n) if i % 997 == 5]
        assert all(p["id"] == f"id-{p['index']}" for p in preds if "error" not in p)
    server.assert_healthy()


def test_client_disconnect_mid_upload_does_not_hurt_the_server(server):
    conn = server.connection()
    conn.putrequest("POST", "/invocations")
    conn.putheader("Content-Type", "application/jsonlines")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    chunk = jsonl(GOOD) * 2000
    for _ in range(3):
        conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    conn.close()
    time.sleep(0.3)
    server.assert_healthy()


def test_concurrent_clients_no_errors_and_flat_memory(server):
    """16 clients, single tickets and small batches mixed, for a bounded time."""
    single = b'{"inputs": "my card payment was declined"}'
    batch = jsonl(*({"id": str(i), "text": f"exchange rate number {i}"} for i in range(40)))

    def hammer(seconds: float, errors: list, counts: list) -> None:
        deadline = time.monotonic() + seconds
        n = 0
        conn = server.connection(timeout=30)
        try:
            while time.monotonic() < deadline and n < 2000:
                is_batch = n % 5 == 4
                conn.request(
                    "POST",
                    "/invocations",
                    body=batch if is_batch else single,
                    headers={"Content-Type": "application/jsonlines" if is_batch else "application/json"},
                )
                resp = conn.getresponse()
                data = resp.read()
                if resp.status != 200:
                    errors.append((resp.status, data[:200]))
                else:
                    preds = json.loads(data)
                    preds = preds if isinstance(preds, list) else preds["predictions"]
                    if len(preds) != (40 if is_batch else 1):
                        errors.append(("count", len(preds)))
                n += 1
        except Exception as exc:
            errors.append(repr(exc))
        finally:
            conn.close()
            counts.append(n)

    def run(seconds: float) -> int:
        errors: list = []
        counts: list = []
        threads = [threading.Thread(target=hammer, args=(seconds, errors, counts)) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        return sum(counts)

    run(1.0)  # warm: allocator pools, thread stacks, connection buffers
    before = server.rss_kb()
    requests = run(3.0)
    after = server.rss_kb()
    assert requests > 100
    assert after - before < 30 * 1024, f"RSS grew from {before} kB to {after} kB over {requests} requests"
    server.assert_healthy()


def test_request_logs_are_json_with_timings_and_no_ticket_text(server):
    secret = "SECRET-TICKET-TEXT-4242"
    server.invoke(json.dumps({"inputs": [secret]}).encode(), "application/json")
    server.invoke(b'{"inputs": "' + secret.encode() + b'"', "application/json")  # malformed
    time.sleep(0.2)
    raw = server.log_path.read_text()
    assert secret not in raw
    lines = server.log_lines()
    assert all("raw" not in line for line in lines), [line for line in lines if "raw" in line][:3]
    invocations = [line for line in lines if line.get("msg") == "invocation"]
    assert invocations
    assert {"status", "records", "ms", "bytes_in", "in_format"} <= set(invocations[-1])
    assert invocations[-1]["status"] == 400


def test_half_duplex_client_with_a_large_response_does_not_deadlock(tiny_artifact, tmp_path):
    """The client sends the whole body before it reads (like most HTTP clients). 24 MB in and
    24 MB out is far more than the socket buffers: writing results while the body is still
    arriving would stall both sides; the server must spool them instead. (This server also
    has a review threshold of 1.0: every classified ticket needs review.)"""
    from tests.container.serverproc import start_server, stop_server

    srv = start_server(
        tiny_artifact, tmp_path / "log", TRIAGE_MAX_PAYLOAD_MB="64", TRIAGE_REVIEW_THRESHOLD="1.0"
    )
    try:
        n = 24_000
        pad = "i" * 1000  # long ids: big bodies, no inference cost (empty text)
        body = b"".join(
            json.dumps({"id": f"{pad}{k}", "text": "card" if k % 1000 == 0 else ""}).encode() + b"\n"
            for k in range(n)
        )
        started = time.perf_counter()
        conn = srv.connection(timeout=30)
        conn.request(
            "POST",
            "/invocations",
            body=body,
            headers={"Content-Type": "application/jsonlines", "Accept": "application/jsonlines"},
        )
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        assert resp.status == 200
        lines = data.splitlines()
        assert len(lines) == n
        last = json.loads(lines[-1])
        assert last["index"] == n - 1 and last["id"] == f"{pad}{n - 1}"
        classified = [json.loads(line) for line in lines if b'"label"' in line]
        assert len(classified) == n // 1000
        assert all(p["needs_review"] for p in classified)
        assert time.perf_counter() - started < 20
        srv.assert_healthy()
    finally:
        stop_server(srv)

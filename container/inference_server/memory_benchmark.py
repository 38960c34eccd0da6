"""Memory benchmark: 1 GB bodies through the real server, and the dispatcher's reading path.

``python -m inference_server.memory_benchmark --model artifacts/model`` (``make bench-memory``):

1. **JSON Lines, 1 GB**: a generated JSON Lines body (tickets of ``--record-kb`` of words, each
   with its id) POSTed in chunks to ``python -m inference_server serve`` (a fresh process per
   case) and answered as JSON Lines; every line is checked (one per record, in order).
2. **gzip, 1 GB**: a gzip body of ``--gb`` compressed (several GB of the same kind of JSON Lines
   once inflated), ``Content-Encoding: gzip``.
3. **JSON, ~100 MB**: ``{"instances": [...]}`` of short tickets (under the record cap): the body
   parsed into compact records before scoring.
4. **The dispatcher's reader**: ``triage_core.reader.TicketReader`` over the 1 GB JSON Lines and
   the gzip stream, in 1 MiB chunks as the S3 body arrives, each in its own process (its peak
   RSS, next to the same process only generating the bytes).

Bodies are generated on the fly (nothing on disk). The server's peak is its ``VmHWM`` (peak
resident set) read from /proc after the request; the reader's is ``ru_maxrss``. The last line
printed is one JSON object with every number. Goal: every peak under 1 GB.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

from inference_server.benchmark import BUNDLED_DATA, _free_port, start_server

MB = 1024 * 1024
CHUNK = 1 << 20


def _words() -> list[str]:
    with BUNDLED_DATA.open(encoding="utf-8") as fh:
        text = fh.read()
    return sorted({w for w in text.split() if w.isalpha()})


def jsonl_chunks(total_bytes: int, record_bytes: int, seed: int = 7) -> Iterator[bytes]:
    """~``total_bytes`` of JSON Lines in 1 MiB pieces; tickets of ``record_bytes`` of words."""
    rng = random.Random(seed)
    words = _words()
    # A pool of distinct texts (built once) keeps generation fast; a 64 KB text is longer than
    # gzip's 32 KB window, so compression sees word-level redundancy only, as in real tickets.
    pool = [" ".join(rng.choices(words, k=max(1, record_bytes // 7))) for _ in range(64)]
    sent, index, size = 0, 0, 0
    pending: list[bytes] = []
    while sent < total_bytes:
        line = json.dumps({"id": f"m-{index}", "text": pool[index % len(pool)]}).encode() + b"\n"
        pending.append(line)
        size += len(line)
        index += 1
        if size >= CHUNK:
            data = b"".join(pending)
            pending, size = [], 0
            sent += len(data)
            yield data
    if pending:
        yield b"".join(pending)


def gzip_chunks(compressed_bytes: int, record_bytes: int) -> Iterator[bytes]:
    """A gzip stream of at most ``compressed_bytes`` (JSON Lines inside), in pieces."""
    squeeze = zlib.compressobj(1, zlib.DEFLATED, 31)  # wbits 31: a gzip member (level 1: fast)
    out = 0
    for piece in jsonl_chunks(compressed_bytes * 8, record_bytes):
        data = squeeze.compress(piece)
        if data:
            out += len(data)
            yield data
        if out >= compressed_bytes:
            break
    yield squeeze.flush()


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def serve_case(model: Path, chunks: Iterator[bytes], headers: dict[str, str]) -> dict[str, float]:
    """POST a body to a fresh server; its peak RSS, the body size and the records answered."""
    port = _free_port()
    env = {
        "TRIAGE_MAX_PAYLOAD_MB": "4096",
        "TRIAGE_MAX_JSON_MB": "4096",
        "SAGEMAKER_MODEL_SERVER_TIMEOUT": "7200",
    }
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        proc = start_server(model, port, Path(tmp) / "server.log", env)
        try:
            idle_kb = _status_kb(proc.pid, "VmRSS")
            sent = 0

            def body() -> Iterator[bytes]:
                nonlocal sent
                for chunk in chunks:
                    sent += len(chunk)
                    yield chunk

            started = time.perf_counter()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=7200)
            conn.request("POST", "/invocations", body=body(), headers=headers, encode_chunked=True)
            resp = conn.getresponse()
            records = errors = 0
            expected = 0
            while line := resp.readline():
                item = json.loads(line)
                if item.get("index") != expected:
                    raise RuntimeError(f"line {expected}: {line[:200]!r}")
                expected += 1
                records += 1
                errors += "error" in item
            conn.close()
            seconds = time.perf_counter() - started
            if resp.status != 200 or records == 0:
                raise RuntimeError(f"server answered {resp.status} with {records} records")
            peak_kb = _status_kb(proc.pid, "VmHWM")
        finally:
            proc.terminate()
            proc.wait(60)
    return {
        "body_mb": round(sent / MB, 1),
        "records": records,
        "record_errors": errors,
        "seconds": round(seconds, 1),
        "idle_rss_mb": round(idle_kb / 1024, 1),
        "peak_rss_mb": round(peak_kb / 1024, 1),
    }


def _reader_child(kind: str, size: int, record_bytes: int, read: bool) -> None:
    """Child process: generate the bytes, optionally read them, print the peak RSS."""
    from triage_core.reader import TicketReader

    if kind == "json":
        chunks = json_body(size, record_bytes)
    elif kind == "jsonl":
        chunks = jsonl_chunks(size, record_bytes)
    else:
        chunks = gzip_chunks(size, record_bytes)
    records = 0
    if not read:
        for _ in chunks:
            pass
    elif kind == "json":
        from inference_server.reading import RequestSpec, read_json_request
        from inference_server.settings import Settings

        spec = RequestSpec("json", "application/json", None, None)
        records = len(read_json_request(chunks, spec, Settings()).records)
    else:
        for _ in TicketReader(chunks, key=f"tickets.{kind}"):
            records += 1
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"records": records, "peak_rss_mb": round(peak_kb / 1024, 1)}))


def reader_case(kind: str, size: int, record_bytes: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for read in (False, True):
        code = (
            "from inference_server.memory_benchmark import _reader_child; "
            f"_reader_child({kind!r}, {size}, {record_bytes}, {read})"
        )
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        key = "reader" if read else "generator_only"
        out[f"{key}_peak_rss_mb"] = result["peak_rss_mb"]
        if read:
            out["records"] = result["records"]
            out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def json_body(total_bytes: int, record_bytes: int) -> Iterator[bytes]:
    yield b'{"instances": ['
    for n, piece in enumerate(jsonl_chunks(total_bytes, record_bytes)):
        yield (b"," if n else b"") + piece.rstrip(b"\n").replace(b"\n", b",")
    yield b"]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference_server.memory_benchmark", description=__doc__)
    parser.add_argument("--model", type=Path, required=True, help="serving artifact directory")
    parser.add_argument("--gb", type=float, default=1.0, help="body size in GB (gzip: compressed)")
    parser.add_argument("--record-kb", type=int, default=64, help="size of one generated ticket")
    parser.add_argument("--json-mb", type=int, default=100, help="size of the application/json body")
    args = parser.parse_args(argv)
    size = int(args.gb * 1000**3)
    record = args.record_kb * 1024
    model = args.model.resolve()
    result: dict[str, object] = {"gb": args.gb, "record_kb": args.record_kb}
    jsonl_headers = {"Content-Type": "application/jsonlines", "Accept": "application/jsonlines"}

    print(f"(1) {args.gb:g} GB JSON Lines body through the server ...", flush=True)
    result["server_jsonl"] = serve_case(model, jsonl_chunks(size, record), jsonl_headers)
    print(f"    {result['server_jsonl']}", flush=True)
    print(f"(2) {args.gb:g} GB gzip body (compressed size) through the server ...", flush=True)
    gzip_headers = {**jsonl_headers, "Content-Encoding": "gzip"}
    result["server_gzip"] = serve_case(model, gzip_chunks(size, record), gzip_headers)
    print(f"    {result['server_gzip']}", flush=True)
    print(f"(3) {args.json_mb} MB application/json body of 1 KB tickets through the server ...", flush=True)
    json_headers = {"Content-Type": "application/json", "Accept": "application/jsonlines"}
    result["server_json"] = serve_case(model, json_body(args.json_mb * MB, 1024), json_headers)
    print(f"    {result['server_json']}", flush=True)
    print(
        "(4) the readers alone: dispatcher (JSON Lines, gzip), server JSON at the record cap ...", flush=True
    )
    result["reader_jsonl"] = reader_case("jsonl", size, record)
    result["reader_gzip"] = reader_case("jsonl.gz", size, record)
    # 1,000,000 tickets of ~80 bytes: the server's default TRIAGE_MAX_JSON_RECORDS
    result["json_parse_at_cap"] = reader_case("json", 1_000_000 * 100, 80)
    for key in ("reader_jsonl", "reader_gzip", "json_parse_at_cap"):
        print(f"    {key}: {result[key]}", flush=True)
    peaks = [result[k]["peak_rss_mb"] for k in ("server_jsonl", "server_gzip", "server_json")]
    peaks += [result[k]["reader_peak_rss_mb"] for k in ("reader_jsonl", "reader_gzip", "json_parse_at_cap")]
    result["max_peak_rss_mb"] = max(peaks)
    result["under_1gb"] = max(peaks) < 1024
    print(json.dumps(result))
    return 0 if result["under_1gb"] else 1


if __name__ == "__main__":
    sys.exit(main())

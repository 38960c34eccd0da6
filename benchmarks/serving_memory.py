"""Memory benchmark: 1 GB bodies through the real server, and the dispatcher's reading path.

``python -m benchmarks.serving_memory --model artifacts/model`` (``make bench-memory``),
each server case on a fresh ``python -m inference_server serve`` process, bodies POSTed in
chunks and answered as JSON Lines (every line checked: one per record, in order):

* ``server_small``: 16 MB of JSON Lines: the part of the peak any body costs (the model, ONNX
  Runtime's buffers, the threads);
* ``server_jsonl``: a ``--gb`` (1 GB) JSON Lines body of ``--record-kb`` (64 KB) tickets;
* ``server_gzip``: a gzip body of ``--gb`` *compressed* (about 2.5 times that once inflated),
  ``Content-Encoding: gzip``, of 1 MB tickets (the bytes path, not thousands of inferences);
* ``server_json``: a ``--json-mb`` (100 MB) ``{"instances": [...]}`` body of 1 KB tickets;
* ``reader_jsonl`` / ``reader_gzip``: the dispatcher's reader
  (``triage_core.reader.TicketReader``) over the same streams in 1 MiB chunks, as an S3 body
  arrives, each in its own process, next to the same process only generating the bytes;
* ``json_parse_at_cap``: the server's JSON parsing of 1,000,000 short tickets (the default
  ``TRIAGE_MAX_JSON_RECORDS``), alone in a process.

Bodies are generated on the fly (nothing on disk). The server's peak is its ``VmHWM`` (peak
resident set) read from /proc after the request; a reader's is ``ru_maxrss``. ``--only`` picks
cases. The last line printed is one JSON object with every number. Goal: every peak under 1 GB,
and the 1 GB body's peak close to the 16 MB one.
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

from benchmarks.serving import BUNDLED_DATA, _free_port, start_server

MB = 1024 * 1024
CHUNK = 1 << 20
CASE_HELP = {
    "server_small": "16 MB of JSON Lines through the server (the part of the peak any body costs)",
    "server_jsonl": "the JSON Lines body through the server",
    "server_gzip": "the gzip body (its compressed size) through the server",
    "server_json": "an application/json body of 1 KB tickets through the server",
    "reader_jsonl": "the dispatcher's reader over the JSON Lines stream",
    "reader_gzip": "the dispatcher's reader over the gzip stream",
    "json_parse_at_cap": "the server's JSON parsing of 1,000,000 short tickets (the record cap)",
}
CASES = tuple(CASE_HELP)


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
            "from benchmarks.serving_memory import _reader_child; "
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
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serving_memory", description=__doc__)
    parser.add_argument("--model", type=Path, required=True, help="serving artifact directory")
    parser.add_argument("--gb", type=float, default=1.0, help="body size in GB (gzip: compressed)")
    parser.add_argument("--record-kb", type=int, default=64, help="size of one generated ticket")
    parser.add_argument(
        "--gzip-record-kb", type=int, default=1024, help="ticket size in the gzip body (bytes, not scoring)"
    )
    parser.add_argument("--json-mb", type=int, default=100, help="size of the application/json body")
    parser.add_argument("--only", default=",".join(CASES), help=f"comma-separated cases of {CASES}")
    args = parser.parse_args(argv)
    size = int(args.gb * 1000**3)
    record = args.record_kb * 1024
    cases = set(args.only.split(","))
    model = args.model.resolve()
    result: dict[str, object] = {
        "gb": args.gb,
        "record_kb": args.record_kb,
        "gzip_record_kb": args.gzip_record_kb,
    }
    jsonl_headers = {"Content-Type": "application/jsonlines", "Accept": "application/jsonlines"}
    gzip_headers = {**jsonl_headers, "Content-Encoding": "gzip"}
    json_headers = {"Content-Type": "application/json", "Accept": "application/jsonlines"}
    runs = {
        "server_small": lambda: serve_case(model, jsonl_chunks(16 * MB, record), jsonl_headers),
        "server_jsonl": lambda: serve_case(model, jsonl_chunks(size, record), jsonl_headers),
        "server_gzip": lambda: serve_case(model, gzip_chunks(size, args.gzip_record_kb * 1024), gzip_headers),
        "server_json": lambda: serve_case(model, json_body(args.json_mb * MB, 1024), json_headers),
        "reader_jsonl": lambda: reader_case("jsonl", size, record),
        "reader_gzip": lambda: reader_case("jsonl.gz", size, args.gzip_record_kb * 1024),
        # 1,000,000 tickets of ~80 bytes: the server's default TRIAGE_MAX_JSON_RECORDS
        "json_parse_at_cap": lambda: reader_case("json", 1_000_000 * 100, 80),
    }
    for case in CASES:
        if case in cases:
            print(f"{case}: {CASE_HELP[case]} ...", flush=True)
            result[case] = runs[case]()
            print(f"    {result[case]}", flush=True)
    peaks = [
        v.get("peak_rss_mb", v.get("reader_peak_rss_mb")) for v in result.values() if isinstance(v, dict)
    ]
    result["max_peak_rss_mb"] = max(peaks)
    result["under_1gb"] = max(peaks) < 1024
    if "server_small" in result and "server_jsonl" in result:
        growth = result["server_jsonl"]["peak_rss_mb"] - result["server_small"]["peak_rss_mb"]
        result["server_growth_1gb_vs_16mb_mb"] = round(growth, 1)
    print(json.dumps(result))
    return 0 if result["under_1gb"] else 1


if __name__ == "__main__":
    sys.exit(main())

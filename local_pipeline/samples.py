"""Sample ticket files for the demo: a normal file, a large one, one with bad records, a CSV,
and two that fail as a whole (unsupported type, empty)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from local_pipeline.model_server import REPO_ROOT

TEST_SPLIT = REPO_ROOT / "artifacts" / "splits" / "test.csv"
BUNDLED = REPO_ROOT / "data" / "banking77" / "train.csv"


@dataclass
class SampleFile:
    key: str  # under the input prefix
    body: bytes
    description: str
    records: int  # records in the file (what the results must account for)
    expected_labels: dict[str, str] = field(default_factory=dict)  # ticket id -> known category
    texts: dict[str, str] = field(default_factory=dict)  # ticket id -> text (for the report)
    content_type: str | None = None


def _rows(path: Path) -> list[tuple[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        label_col = "category" if "category" in (reader.fieldnames or []) else "label"
        return [(row["text"], row.get(label_col, "")) for row in reader if row.get("text")]


def _jsonl(rows: list[dict]) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode("utf-8") + b"\n" for r in rows)


def build_samples(prefix: str = "incoming/", large: int = 3000, normal_limit: int = 1500) -> list[SampleFile]:
    if TEST_SPLIT.is_file():
        held_out, held_out_name = _rows(TEST_SPLIT)[:normal_limit], "the held-out test split"
    else:  # no training run yet: the last rows of the bundled data
        held_out, held_out_name = _rows(BUNDLED)[-min(normal_limit, 1000) :], "the bundled Banking77 data"
    pool = _rows(BUNDLED)
    samples = []

    normal = [{"id": f"T-{i:05d}", "text": text} for i, (text, _) in enumerate(held_out, 1)]
    samples.append(
        SampleFile(
            f"{prefix}banking77-test.jsonl",
            _jsonl(normal),
            f"{len(normal)} tickets from {held_out_name}",
            len(normal),
            {row["id"]: label for row, (_, label) in zip(normal, held_out, strict=True)},
            texts={row["id"]: row["text"] for row in normal},
        )
    )

    big = [{"id": f"L-{i:05d}", "text": pool[(i * 7919) % len(pool)][0]} for i in range(1, large + 1)]
    samples.append(
        SampleFile(
            f"{prefix}large batch/tickets 2024+archive.jsonl",  # S3 events URL-encode this key
            _jsonl(big),
            f"{large} tickets, several chunks, key with spaces and '+'",
            large,
            texts={row["id"]: row["text"] for row in big},
        )
    )

    good = [{"id": f"B-{i}", "text": pool[i * 31][0]} for i in range(1, 9)]
    bad_lines = [
        _jsonl(good[:4]),
        b'{"id": "B-broken", "text": "unterminated\n',  # bad JSON
        b'{"id": "B-empty", "text": "   "}\n',  # empty text
        b'{"id": "B-1", "text": "same id as an earlier ticket"}\n',  # duplicate id
        b'{"id": "B-latin1", "text": "r\xe9sum\xe9 of my complaint"}\n',  # windows-1252: still a ticket
        b'{"text": "my card was declined and there is no id on this line"}\n',  # no id
        b'{"id": ["not", "a", "string"], "text": "bad id type"}\n',
        _jsonl(good[4:]),
    ]
    samples.append(
        SampleFile(
            f"{prefix}bad-records.jsonl",
            b"".join(bad_lines),
            "10 tickets (one in windows-1252, one without id) + bad JSON, empty text, duplicate id, bad id",
            14,
        )
    )

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["id", "text"])
    for i in range(1, 41):
        text = pool[i * 53][0]
        if i == 5:
            text = "Hello,\nmy card, the new one, has not arrived.\nThanks, Sam"
        writer.writerow([f"C-{i}", text])
    samples.append(
        SampleFile(
            f"{prefix}tickets.csv",
            buffer.getvalue().encode("utf-8"),
            "40 tickets as CSV (quoted newlines)",
            40,
        )
    )
    samples.append(SampleFile(f"{prefix}notes.txt", b"not a ticket file\n", "unsupported file type", 0))
    samples.append(SampleFile(f"{prefix}empty.jsonl", b"", "empty file", 0))
    return samples

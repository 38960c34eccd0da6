"""Ticket files the way the tools that write them write them (shared by the reader, server and
pipeline tests).

* Excel for Windows, "CSV (Comma delimited)": windows-1252, CRLF row ends, a cell's own line
  breaks (Alt+Enter) as a bare LF inside quotes, quotes doubled, a field quoted only when it holds
  a comma, quote or line break, no BOM. "CSV UTF-8": the same in UTF-8 with a BOM. In locales
  with a decimal comma (de-DE, fr-FR) the separator is ``;``. "Unicode Text": UTF-16 LE with a
  BOM, tab-separated.
* Classic Mac OS tools: CR (``\\r``) alone ends a line.
* ``gzip`` (the command-line tool; its header carries the file name) and ``cat a.gz b.gz``.
* Help desks: Zendesk's ``GET /api/v2/tickets.json`` answers ``{"tickets": [...], "next_page",
  "previous_page", "count"}`` with ``subject``, ``raw_subject`` and ``description`` per ticket;
  Freshdesk's ``GET /api/v2/tickets`` a top-level array with ``subject``, ``description`` (HTML)
  and ``description_text``. Both pretty-printed here, as a saved export is.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
import subprocess

from triage_core.records import FieldMap

EXCEL_FIELDS = FieldMap("ticket_id", ("subject", "body"))
EXCEL_ROWS = [
    ("1001", "Carte pas arrivée", "Bonjour,\nma carte n'est toujours pas arrivée.\nMerci", "email"),
    ("1002", "Débit en double", "J'ai été débité deux fois de 20 € chez Müller", "chat"),
    ("1003", 'Taux "spécial"', "Quel taux pour l’€ ? – urgent", "email"),
]


def _excel_cell(value: str, separator: str) -> str:
    if any(ch in value for ch in (separator, '"', "\n", "\r")):
        return '"' + value.replace('"', '""') + '"'
    return value


def excel_csv(encoding: str = "cp1252", separator: str = ",", bom: bool = False) -> bytes:
    """An Excel export of :data:`EXCEL_ROWS` (header ticket_id, subject, body, channel)."""
    rows = [("ticket_id", "subject", "body", "channel"), *EXCEL_ROWS]
    text = "".join(separator.join(_excel_cell(c, separator) for c in row) + "\r\n" for row in rows)
    data = text.encode(encoding)
    return (b"\xef\xbb\xbf" + data) if bom else data


def excel_unicode_text() -> bytes:
    """Excel's "Unicode Text (*.txt)": UTF-16 LE with BOM, tab-separated, CRLF."""
    rows = [("ticket_id", "subject", "body"), *(r[:3] for r in EXCEL_ROWS)]
    text = "".join("\t".join(_excel_cell(c, "\t") for c in row) + "\r\n" for row in rows)
    return b"\xff\xfe" + text.encode("utf-16-le")


def expected_excel_texts() -> list[str]:
    return [f"{subject}\n\n{body}" for _, subject, body, _ in EXCEL_ROWS]


def mac_classic_csv() -> bytes:
    """CR-only line endings (classic Mac OS), a quoted cell with a line break of its own."""
    return b'id,text\r1,"my card\rhas not arrived"\r2,exchange rate please\r3,top up failed\r'


def broken_quote_csv() -> bytes:
    """Five rows; row 2 opens a quote it never closes; quoted rows follow it."""
    return (
        b"id,text\n"
        b"1,my card has not arrived\n"
        b'2,"the quote opens here and never closes\n'
        b'3,"what is the exchange rate, please?"\n'
        b"4,top up failed\n"
        b'5,"refund, not showing up"\n'
    )


def gzip_cli(data: bytes, name: str = "tickets.jsonl") -> bytes:
    """``gzip -c`` output (the tool stores the file name in the header), when the tool is here."""
    tool = shutil.which("gzip")
    if tool is None:
        buf = io.BytesIO()
        with gzip.GzipFile(filename=name, mode="wb", fileobj=buf, mtime=1_700_000_000) as fh:
            fh.write(data)
        return buf.getvalue()
    return subprocess.run([tool, "-c", "-n"], input=data, capture_output=True, check=True).stdout


def jsonl(records: list[dict]) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in records)


ZENDESK_FIELDS = FieldMap("id", ("subject", "description"))


def zendesk_export() -> bytes:
    tickets = [
        {
            "url": "https://example.zendesk.com/api/v2/tickets/35436.json",
            "id": 35436,
            "external_id": None,
            "via": {"channel": "web", "source": {"from": {}, "to": {}, "rel": None}},
            "created_at": "2026-07-20T22:55:29Z",
            "type": "incident",
            "subject": "My card has not arrived",
            "raw_subject": "My card has not arrived",
            "description": "I ordered a new card three weeks ago and it still hasn't come. Can you check?",
            "priority": "high",
            "status": "open",
            "requester_id": 20978392,
            "tags": ["card", "delivery"],
            "custom_fields": [{"id": 27642, "value": "745"}, {"id": 27648, "value": "yes"}],
        },
        {
            "url": "https://example.zendesk.com/api/v2/tickets/35437.json",
            "id": 35437,
            "external_id": "ahg35h3jh",
            "via": {"channel": "email", "source": {"from": {"address": "a@example.com"}, "to": {}}},
            "created_at": "2026-07-21T08:01:12Z",
            "type": "question",
            "subject": "Exchange rate",
            "raw_subject": "Exchange rate",
            "description": "Which rate do you use when I pay in euros?\n\nThanks, Ann",
            "priority": None,
            "status": "new",
            "requester_id": 20978393,
            "tags": [],
            "custom_fields": [],
        },
        {
            "url": "https://example.zendesk.com/api/v2/tickets/35438.json",
            "id": 35438,
            "subject": "Top up failed",
            "raw_subject": "Top up failed",
            "description": None,
            "tags": ["top-up"],
        },
    ]
    document = {
        "tickets": tickets,
        "next_page": "https://example.zendesk.com/api/v2/tickets.json?page=2",
        "previous_page": None,
        "count": 1234,
    }
    return json.dumps(document, indent=2, ensure_ascii=False).encode()


def zendesk_texts() -> list[str]:
    return [
        "My card has not arrived\n\n"
        "I ordered a new card three weeks ago and it still hasn't come. Can you check?",
        "Exchange rate\n\nWhich rate do you use when I pay in euros?\n\nThanks, Ann",
        "Top up failed",
    ]


FRESHDESK_FIELDS = FieldMap("id", ("subject", "description_text"))


def freshdesk_export() -> bytes:
    tickets = [
        {
            "cc_emails": ["user@cc.com"],
            "fwd_emails": [],
            "reply_cc_emails": ["user@cc.com"],
            "fr_escalated": False,
            "spam": False,
            "priority": 1,
            "requester_id": 1,
            "source": 2,
            "status": 2,
            "subject": "Refund not showing up",
            "description": "<div>The refund from last week <b>is not</b> on my statement.</div>",
            "description_text": "The refund from last week is not on my statement.",
            "id": 20,
            "type": None,
            "due_by": "2026-09-05T10:00:00Z",
            "is_escalated": False,
            "custom_fields": {"category": "Default"},
            "created_at": "2026-09-03T10:00:00Z",
            "tags": [],
        },
        {"subject": "Lost card", "description_text": "I lost my card yesterday", "id": 21, "tags": ["card"]},
    ]
    return json.dumps(tickets, indent=2).encode()


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]

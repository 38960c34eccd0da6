"""Export the recorded corrections for training: ``make export-corrections``.

Writes every correction the corrections Lambda recorded (one per ticket: ``id``, ``source``,
``label``, ``predicted``, ``correct``, ``text``, ``order``, ``job_id``, ``file``, ``line``,
``recorded_at``) as JSON Lines to a local file or an ``s3://bucket/key``, plus the accuracy
counters on stderr. ``make train CORRECTIONS=<that file or S3 key>`` folds them in
(``training/corrections.py``). The jobs table comes from the stack's ``JobsTableName`` output
(``--stack``), the local stack's ``local-stack.json`` (``--local``) or ``--table``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ticket_pipeline.corrections import ALL, CorrectionStore, accuracy_share


def export_lines(store: CorrectionStore) -> Iterable[bytes]:
    """The corrections as JSON Lines, in a stable order (source, then ticket id)."""
    rows = sorted(store.corrections(), key=lambda c: (c.get("source", ""), c.get("ticket_id", "")))
    for row in rows:
        row = {"id": row.pop("ticket_id", None), **row}
        yield json.dumps(row, ensure_ascii=False, default=str).encode("utf-8") + b"\n"


def accuracy_lines(store: CorrectionStore) -> list[str]:
    """One line per category with reviewed tickets, overall first: ``<label>: correct/reviewed``."""
    counts = store.accuracy()
    names = [ALL, *sorted(k for k in counts if k != ALL)]
    out = []
    for name in names:
        c = counts.get(name)
        if c and c["reviewed"]:
            out.append(f"{name}: {c['correct']}/{c['reviewed']} right ({accuracy_share(c):.1%})")
    return out


def main(argv: list[str] | None = None) -> int:
    import boto3

    parser = argparse.ArgumentParser(prog="python -m ticket_pipeline.export_corrections", description=__doc__)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--stack", help="CloudFormation stack name (credentials and region from the environment)"
    )
    where.add_argument("--local", type=Path, nargs="?", const=Path("local-stack.json"))
    where.add_argument("--table", help="the jobs table's name")
    parser.add_argument("--out", required=True, help="a .jsonl path or s3://bucket/key")
    args = parser.parse_args(argv)
    kwargs: dict[str, Any] = {}
    table = args.table
    if args.local:
        info = json.loads(args.local.read_text())
        kwargs = {
            "endpoint_url": info["endpoint_url"],
            "region_name": info["region"],
            "aws_access_key_id": info["aws_access_key_id"],
            "aws_secret_access_key": info["aws_secret_access_key"],
        }
        table = info["jobs_table"]
    elif args.stack:
        stack = boto3.client("cloudformation").describe_stacks(StackName=args.stack)["Stacks"][0]
        table = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}["JobsTableName"]
    store = CorrectionStore(boto3.client("dynamodb", **kwargs), table)
    body = b"".join(export_lines(store))
    if args.out.startswith("s3://"):
        bucket, _, key = args.out[len("s3://") :].partition("/")
        boto3.client("s3", **kwargs).put_object(Bucket=bucket, Key=key, Body=body)
    else:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_bytes(body)
    lines = body.count(b"\n")
    print(f"{lines} corrections -> {args.out}", file=sys.stderr)
    for line in accuracy_lines(store):
        print(f"  accuracy on reviewed tickets, {line}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

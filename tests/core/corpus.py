"""The bundled Banking77 training texts, read once per test process (shared by the tests that
run every ticket through a piece of the serving path)."""

from __future__ import annotations

import csv
from functools import cache
from pathlib import Path

BANKING77 = Path(__file__).resolve().parents[2] / "data" / "banking77" / "train.csv"


@cache
def banking77() -> list[str]:
    with BANKING77.open(encoding="utf-8", newline="") as handle:
        return [row["text"] for row in csv.DictReader(handle)]

"""Preprocessing cost per ticket: today's ``preprocess`` against the frozen one of issue #23.

``python -m benchmarks.preprocessing`` (``--model`` for the artifact whose preprocessing config
to use, ``--data`` for the tickets, ``--rounds``). In one process, on one thread, interleaved
(before, after, before, after, ...), best round of each: microseconds per ticket for the
Banking77 tickets as they are ("clean") and wrapped as e-mail or chat bodies (``dev`` pool,
:func:`benchmarks.serving.email_texts`, what the server's benchmark sends), and the ratio
before / after. Both functions are first checked to return the same string for every ticket.
The frozen reference is tests/core/data/preprocessing_before_issue23.py (main at a07687a).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import sys
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from types import ModuleType

from benchmarks.serving import email_texts
from triage_core.artifact import load_manifest
from triage_core.preprocessing import PreprocessConfig, preprocess

ROOT = Path(__file__).resolve().parents[1]
ORACLE = ROOT / "tests" / "core" / "data" / "preprocessing_before_issue23.py"


@cache
def frozen_module() -> ModuleType:
    """The frozen ``triage_core.preprocessing`` of before issue #23 (the tests' oracle), loaded once."""
    spec = importlib.util.spec_from_file_location("preprocessing_before_issue23", ORACLE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves the module's annotations through it
    spec.loader.exec_module(module)
    return module


def frozen_preprocess(text: str, config: PreprocessConfig) -> str:
    """``preprocess`` as it was before issue #23, with the same config."""
    module = frozen_module()
    return module.preprocess(text, module.PreprocessConfig(**config.model_dump()))


def best_us(fn: Callable[[str, PreprocessConfig], str], texts: list[str], config: PreprocessConfig) -> float:
    start = time.perf_counter()
    for text in texts:
        fn(text, config)
    return (time.perf_counter() - start) / len(texts) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "artifacts" / "model")
    parser.add_argument("--data", type=Path, default=ROOT / "artifacts" / "splits" / "test.csv")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    config = load_manifest(args.model).preprocessing if args.model.is_dir() else PreprocessConfig()
    with args.data.open(encoding="utf-8", newline="") as f:
        clean = [row["text"] for row in csv.DictReader(f)]
    before = frozen_preprocess
    print(f"config {config.model_dump()}\ndata   {args.data} ({len(clean)} tickets)")
    print(f"load   {os.getloadavg()} (1, 5, 15 min) at start")
    for name, texts in (("clean", clean), ("e-mail", email_texts(clean))):
        differ = sum(before(t, config) != preprocess(t, config) for t in texts)
        assert differ == 0, f"{differ} {name} tickets differ from the frozen preprocess"
        times: dict[str, list[float]] = {"before": [], "after": []}
        for _ in range(args.rounds):
            times["before"].append(best_us(before, texts, config))
            times["after"].append(best_us(preprocess, texts, config))
        b, a = min(times["before"]), min(times["after"])
        print(f"{name:7s} before {b:7.1f} us/ticket  after {a:6.1f} us/ticket  ratio {b / a:5.2f}x")
    print(f"load   {os.getloadavg()} (1, 5, 15 min) at end")


if __name__ == "__main__":
    main()

"""Time the training loop against a baseline loop from git, in one process, in alternating rounds.

    python -m training.bench_loop [--baseline-ref REF] [--rows 2000] [--epochs 1] [--rounds 2] [--threads 1]

The baseline is ``training/train.py`` as committed at ``--baseline-ref`` (default ``dae8cbe``:
the last commit with the hand-written loop, the parent of the Accelerate one; ``main`` has the
Accelerate loop since issue #13 was merged), loaded from git into this process; the candidate is the current
``training.train``. Both fine-tune the default config (MiniLM preset) on the same stratified
subset of the default data, with the same seed and the same preprocessing, for ``--epochs``;
rounds alternate the order (ABBA...), so a change in the machine's load hits both. Each line
has the load average; the last line is one JSON object with the median seconds of each and the
ratio candidate / baseline.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BASELINE_REF = "dae8cbe"  # training/train.py before the Accelerate loop (b394b87)


def load_baseline_loop(ref: str) -> types.ModuleType:
    """``training/train.py`` at git ``ref`` as a module of its own (the rest of the package is
    today's: the old loop only imports config, data, noise, modeling and preprocessing)."""
    source = subprocess.run(
        ["git", "show", f"{ref}:training/train.py"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout
    module = types.ModuleType("training._baseline_train")
    module.__file__ = f"<git {ref}:training/train.py>"
    sys.modules[module.__name__] = module
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module


def _subset(rows: int, seed: int):
    from sklearn.model_selection import train_test_split

    from training.data import TicketDataset, load_tickets, split_dataset

    splits = split_dataset(load_tickets(), seed=42)
    train = splits.train
    if rows < len(train):
        idx, _ = train_test_split(
            list(range(len(train))), train_size=rows, random_state=seed, stratify=train.labels
        )
        train = TicketDataset([train.texts[i] for i in idx], [train.labels[i] for i in idx])
    return train, splits.validation


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.bench_loop", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--baseline-ref", default=BASELINE_REF)
    parser.add_argument("--rows", type=int, default=2000, help="training rows (stratified subset)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2, help="each round times both loops")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (1 on a busy machine)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TQDM_DISABLE", "1")

    from training.config import TrainConfig
    from training.train import train as candidate

    baseline = load_baseline_loop(args.baseline_ref).train
    config = TrainConfig.for_base_model(epochs=args.epochs, early_stopping_patience=0, threads=args.threads)
    train_data, validation = _subset(args.rows, config.seed)
    labels = sorted(set(train_data.labels) | set(validation.labels))
    loops = {"baseline": baseline, "candidate": candidate}
    seconds: dict[str, list[float]] = {name: [] for name in loops}
    scores: dict[str, list[float]] = {name: [] for name in loops}
    with tempfile.TemporaryDirectory(prefix="bench-loop-") as tmp:
        for round_ in range(args.rounds):
            order = list(loops) if round_ % 2 == 0 else list(reversed(loops))
            for name in order:
                load = os.getloadavg()[0]
                t0 = time.perf_counter()
                result = loops[name](
                    config, train_data, validation, Path(tmp) / f"{name}-{round_}", labels=labels
                )
                elapsed = time.perf_counter() - t0
                seconds[name].append(elapsed)
                scores[name].append(result.best_val_macro_f1)
                print(
                    f"round {round_ + 1} {name:9s} {elapsed:7.1f} s"
                    f"  val macro-F1 {result.best_val_macro_f1:.4f}"
                    f"  loadavg {load:.2f} -> {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
    median = {name: statistics.median(values) for name, values in seconds.items()}
    print(
        json.dumps(
            {
                "baseline_ref": args.baseline_ref,
                "rows": len(train_data),
                "epochs": args.epochs,
                "rounds": args.rounds,
                "threads": args.threads,
                "baseline_seconds": round(median["baseline"], 1),
                "candidate_seconds": round(median["candidate"], 1),
                "ratio": round(median["candidate"] / median["baseline"], 3),
                "baseline_val_macro_f1": scores["baseline"],
                "candidate_val_macro_f1": scores["candidate"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

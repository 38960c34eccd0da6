"""``python -m chaos``: seeded fault injection on the local stack, checked by an independent checker.

    python -m chaos                      # seeds 1..20 (make chaos)
    python -m chaos --seed 7             # replay seed 7 alone
    python -m chaos --seeds 3 --files 4  # a short run

One line per seed, the details in ``<work-dir>/seed-<n>.json`` (uploads, every injected fault in
order, the results messages, the violations) and the logs next to them; the last line printed is
one JSON object: ``seeds``, ``files``, ``tickets``, ``faults_injected``, ``faults_by_kind``,
``violations``, ``stuck_jobs``, ``seconds``. The exit code is 1 when any invariant was violated.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections import Counter
from pathlib import Path

from local_pipeline.model_server import REPO_ROOT

WORK_DIR = REPO_ROOT / "artifacts" / "chaos"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=20, help="how many seeds (default 20)")
    parser.add_argument("--first-seed", type=int, default=1, help="the first seed (default 1)")
    parser.add_argument("--seed", type=int, help="replay this one seed")
    parser.add_argument(
        "--files", type=int, default=5, help="ticket files per seed (plus a second version of one)"
    )
    parser.add_argument("--speed", type=float, default=20.0, help="virtual clock speed (see chaos/clock.py)")
    parser.add_argument("--model", type=Path, help="serving artifact (default: a tiny one, built once)")
    parser.add_argument("--work-dir", type=Path, default=WORK_DIR, help="logs and per-seed details")
    parser.add_argument(
        "--broken",
        choices=["no-dedup"],
        help="run a deliberately broken aggregator (the checker must report violations)",
    )
    return parser


def summary(results: list, seconds: float) -> dict:
    faults: Counter[str] = Counter()
    for result in results:
        faults.update(result.faults)
    return {
        "seeds": len(results),
        "files": sum(len(r.uploads) for r in results),
        "tickets": sum(r.tickets for r in results),
        "faults_injected": sum(faults.values()),
        "faults_by_kind": dict(sorted(faults.items())),
        "violations": sum(len(r.check.violations) for r in results),
        "stuck_jobs": sum(len(r.check.stuck) for r in results),
        "seconds": round(seconds, 1),
    }


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from chaos.broken import TAMPERS
    from chaos.harness import ChaosStack, Timing
    from chaos.model import tiny_artifact

    started = time.time()
    seeds = (
        [args.seed] if args.seed is not None else list(range(args.first_seed, args.first_seed + args.seeds))
    )
    model = args.model or tiny_artifact(args.work_dir / "model")
    tamper = TAMPERS[args.broken] if args.broken else None
    results = []
    with ChaosStack(model, args.work_dir, Timing(speed=args.speed)) as stack:
        for seed in seeds:
            result = stack.run_seed(seed, args.files, tamper=tamper)
            results.append(result)
            print(result.line(), flush=True)
            for violation in result.check.violations:
                print(f"  {violation}", flush=True)
    figures = summary(results, time.time() - started)
    print(json.dumps(figures), flush=True)
    return 1 if figures["violations"] else 0


if __name__ == "__main__":
    # SIGTERM (a CI timeout, kill) unwinds like Ctrl-C: the moto and inference server children stop
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())

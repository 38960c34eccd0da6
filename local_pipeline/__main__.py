"""``python -m local_pipeline demo|up --model DIR``."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path

from local_pipeline.model_server import REPO_ROOT

WORK_DIR = REPO_ROOT / "artifacts" / "local-pipeline"
STATE_FILE = REPO_ROOT / "local-stack.json"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m local_pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("demo", "run sample ticket files through the local async pipeline and print a summary"),
        ("up", "start the local stack and keep it up until interrupted (writes local-stack.json)"),
    ):
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("--model", required=True, type=Path, help="serving artifact directory")
        cmd.add_argument("--chunk-size", type=int, default=500, help="tickets per chunk (CHUNK_SIZE)")
        cmd.add_argument(
            "--concurrency", type=int, default=2, help="async endpoint MaxConcurrentInvocationsPerInstance"
        )
        cmd.add_argument("--max-file-mb", type=float, default=100, help="MAX_FILE_MB of the dispatcher")
        cmd.add_argument("--work-dir", type=Path, default=WORK_DIR, help="logs (and demo results) go here")
        cmd.add_argument(
            "--log-level", default="WARNING", help="level of the Lambda handler logs (lambda.log)"
        )
    demo = sub.choices["demo"]
    demo.add_argument("--large", type=int, default=3000, help="tickets in the large sample file")
    demo.add_argument("--timeout", type=float, default=900, help="seconds to wait for all results")
    return parser


def _check_model(model: Path) -> str | None:
    from triage_core.artifact import ArtifactError, load_manifest

    try:
        load_manifest(model)
    except ArtifactError as exc:
        return f"{exc}\nTrain one first: make train (or pass --model <artifact dir>)."
    return None


def _stack(args: argparse.Namespace):
    from local_pipeline.stack import LocalStack, StackConfig

    return LocalStack(
        StackConfig(
            model_dir=args.model.resolve(),
            work_dir=args.work_dir,
            chunk_size=args.chunk_size,
            max_concurrent_invocations=args.concurrency,
            max_file_mb=args.max_file_mb,
            log_level=args.log_level.upper(),
        )
    )


def _step(message: str) -> None:
    print(f"  - {message}", flush=True)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def demo(args: argparse.Namespace) -> int:
    from local_pipeline.demo import (
        collect,
        drop_corrections,
        drop_samples,
        report,
        review_queue_report,
        save,
        wait_for_results,
    )
    from local_pipeline.samples import build_samples

    # Ctrl-C and SIGTERM both end in the same clean shutdown (also when started from a shell
    # that ignores SIGINT for background jobs).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    stack = _stack(args)
    try:
        print("Starting the local async pipeline:", flush=True)
        started = time.time()
        stack.start(progress=_step)
        _step(f"ready in {time.time() - started:.1f} s (logs in {args.work_dir})")
        samples = build_samples(prefix=stack.names.input_prefix, large=args.large)
        print(
            f"\nDropping {len(samples)} files into s3://{stack.names.input_bucket}/{stack.names.input_prefix}:"
        )
        for sample in samples:
            _step(f"{sample.key.split('/', 1)[-1]}: {sample.description}")
        t0 = time.time()
        expected = drop_samples(stack, samples)
        messages = wait_for_results(stack, expected, args.timeout)
        elapsed = time.time() - t0
        results = collect(stack, expected, messages)
        out_dir = args.work_dir / "results"
        save(stack, results, out_dir)
        print(report(results, elapsed, stack.endpoint.stats.busy_seconds, out_dir))
        print(review_queue_report(stack, results))
        print(drop_corrections(stack, results))
        missing = [s.key for source, s in expected.items() if source not in messages]
        if missing:
            print(
                f"\nNo results message within {args.timeout:.0f} s for: {', '.join(missing)}", file=sys.stderr
            )
            return 1
        dead = sum(s.dead_lettered for s in stack.router.stats.values())
        if dead:
            print(f"\n{dead} events failed repeatedly; see {args.work_dir / 'lambda.log'}", file=sys.stderr)
            return 1
        return 0
    except KeyboardInterrupt:
        print("\nInterrupted: shutting down.", file=sys.stderr)
        return 130
    finally:
        stack.stop()


def up(args: argparse.Namespace) -> int:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stack = _stack(args)
    try:
        print("Starting the local async pipeline:", flush=True)
        stack.start(progress=_step)
        if stop.is_set():
            return 130
        info = stack.info()
        STATE_FILE.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        print(
            f"\nReady. Connection details in {STATE_FILE.name}:\n{json.dumps(info, indent=2)}\n\n"
            "Drop a ticket file (JSON Lines or CSV with id,text) and read the results, e.g.:\n"
            f"  AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing aws --region {info['region']} \\\n"
            f"    --endpoint-url {info['endpoint_url']} s3 cp tickets.jsonl "
            f"s3://{info['input_bucket']}/{info['input_prefix']}\n"
            f"Results messages arrive on {info['results_topic_arn']} (queue {info['results_queue_url']});\n"
            f"files under s3://{info['output_bucket']}/results/<job id>/. Ctrl-C stops everything.",
            flush=True,
        )
        while not stop.wait(1.0):
            if (
                stack.model_server
                and stack.model_server.process
                and stack.model_server.process.poll() is not None
            ):
                print("The inference server exited; stopping.", file=sys.stderr)
                return 1
        print("\nStopping.", flush=True)
        return 0
    finally:
        STATE_FILE.unlink(missing_ok=True)
        stack.stop()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    problem = _check_model(args.model)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    return demo(args) if args.command == "demo" else up(args)


if __name__ == "__main__":
    sys.exit(main())

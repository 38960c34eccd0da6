"""`make scale` on a small file: the harness runs the real dispatcher in a child process per Lambda
run, reads its peak RSS, lets the aggregator finish the job, and ends with the one JSON line the
numbers in docs/pipeline.md come from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from local_pipeline.model_server import REPO_ROOT

FIELDS = {"tickets", "chunks", "invocations", "peak_rss_mb", "max_run_seconds", "timeout_seconds", "seconds"}


def test_make_scale_ends_with_one_json_line_of_the_dispatchers_figures(tmp_path: Path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "local_pipeline.scale",
            "--tickets",
            "2000",
            "--chunk-size",
            "500",
            "--work-dir",
            str(tmp_path),
        ],
        cwd=REPO_ROOT,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(str(REPO_ROOT / p) for p in ("", "lambda", "container")),
        },
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(figures) >= FIELDS
    assert (figures["tickets"], figures["chunks"], figures["invocations"]) == (2000, 4, 1)
    assert figures["endpoint_invocations"] == 4
    assert figures["peak_rss_mb"] > 20  # a real process's peak
    assert figures["peak_rss_mb"] < 512  # the goal, and well under the Lambda's 1024 MB
    assert 0 < figures["max_run_seconds"] < figures["timeout_seconds"] == 300
    assert (figures["results_status"], figures["results_succeeded"]) == ("complete", 2000)
    assert figures["aggregator_notifications"] == 4
    assert json.loads((tmp_path / "scale-2000.json").read_text()) == figures

"""``make bench``'s interface: runs end to end (tiny model, few texts) and ends with the JSON line."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from inference_server.settings import available_cpus
from tests.container.serverproc import ROOT, server_env

KEYS = {
    "baseline_tps",
    "limit_tps",
    "server_tps",
    "server_vs_baseline",
    "server_vs_limit",
    "single_p50_ms",
    "single_p99_ms",
    "server_email_tps",
    "limit_email_tps",
    "server_vs_limit_email",
    "classifier_tps",
    "default_vs_reference",
    "classifier_vs_reference",
}


def run_benchmark(model: Path, *extra: str, texts: int = 64, repeats: int = 1) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.serving", "--model", str(model)]
    cmd += [
        "--limit",
        str(texts),
        "--single",
        "10",
        "--repeats",
        str(repeats),
        "--long-tickets",
        "16",
        *extra,
    ]
    proc = subprocess.run(
        cmd, env=server_env(model, 0), capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(summary) >= KEYS
    assert summary["texts"] == texts
    assert all(summary[k] > 0 for k in ("limit_tps", "server_tps", "single_p50_ms", "single_p99_ms"))
    assert abs(summary["server_vs_limit_best"] - summary["server_tps"] / summary["limit_tps"]) < 0.01
    # the headline ratio: the median of the interleaved rounds' own ratios (one measurement a side)
    rounds = summary["server_vs_limit_rounds"]
    assert summary["server_vs_limit"] == statistics.median(r[0] for r in rounds)
    assert summary["server_vs_limit_email"] == statistics.median(r[1] for r in rounds)
    return summary


def test_benchmark_without_baseline_prints_the_summary_json_last(tiny_artifact):
    summary = run_benchmark(tiny_artifact, "--skip-baseline", "--long-lengths", "32,128")
    assert summary["baseline_tps"] is None and summary["server_vs_baseline"] is None
    # (d) long tickets: one row per length, each as a ratio to the shortest one's throughput
    for tokens in (32, 128):
        assert summary[f"long_{tokens}_tps"] > 0 and summary[f"long_{tokens}_p99_ms"] > 0
    assert summary["long_32_vs_32"] == 1.0
    ratio = summary["long_128_tps"] / summary["long_32_tps"]
    assert abs(summary["long_128_vs_32"] - ratio) < 0.01
    assert summary["long_mixed_vs_separate"] > 0
    assert summary["reference"] is None and summary["default_vs_reference"] is None
    assert summary["server_paired_tps"] is None


def test_benchmark_beside_a_reference_with_a_profile(tiny_artifact, tmp_path):
    """The reference section and e-mail bodies, and py-spy's samples of the real server process."""
    profile = tmp_path / "profile.txt"
    summary = run_benchmark(
        tiny_artifact,
        "--skip-baseline",
        "--long-lengths",
        "",
        "--reference",
        str(tiny_artifact),
        "--profile",
        str(profile),
        # long enough for py-spy's 200 samples a second to catch the tiny model's runner threads in
        # ONNX Runtime on busy cores (64 texts once took a few milliseconds: no sample landed there)
        texts=1000,
        repeats=3,
    )
    ratio = summary["server_paired_tps"] / summary["reference_server_tps"]
    assert abs(summary["default_vs_reference"] - ratio) < 0.01
    ratio = summary["classifier_tps"] / summary["reference_classifier_tps"]
    assert abs(summary["classifier_vs_reference"] - ratio) < 0.01
    ratio = summary["server_email_tps"] / summary["limit_email_tps"]
    assert abs(summary["server_vs_limit_email_best"] - ratio) < 0.01
    assert not any(key.startswith("long_") for key in summary)
    assert summary["cascade_skip_share"] == 0.0  # a transformer artifact has no cascade
    # py-spy's collapsed stacks of the server: its runner threads ran ONNX Runtime's session
    stacks = profile.read_text().splitlines()
    assert any("onnx-runner" in line and "onnxruntime_inference_collection.py" in line for line in stacks)


@pytest.mark.slow
def test_benchmark_with_the_torch_baseline(request, tiny_artifact, tiny_hf_model):
    """Opt-in (``pytest -m slow``): ~20 s on idle cores, over a minute on busy ones (torch)."""
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("loads torch + transformers: run with pytest -m slow")
    summary = run_benchmark(tiny_artifact, "--hf-model", str(tiny_hf_model))
    assert summary["baseline_tps"] > 0 and summary["baseline_bs32_tps"] > 0
    assert summary["server_vs_baseline"] > 0


def test_the_timeline_counts_every_ticket_s_model_row_once(tiny_artifact, tmp_path):
    """``benchmarks.timeline``: the real server's model calls, recorded in its own process. Every
    ticket of each body reaches the model once (the tiny artifact has no cascade), the runners'
    busy share and the CPU share are shares, and the gaps fit in the request."""
    data = tmp_path / "tickets.csv"
    data.write_text("text\n" + "".join(f"ticket number {i} about my card\n" for i in range(40)))
    cmd = [sys.executable, "-m", "benchmarks.timeline", "--model", str(tiny_artifact), "--data", str(data)]
    cmd += ["--requests", "2", "--server-env", "TRIAGE_MAX_BATCH_SIZE=4"]
    proc = subprocess.run(
        cmd, env=server_env(tiny_artifact, 0), capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["tickets"] == 40 and summary["requests"] == 2
    assert summary["onnx_rows"] == 40
    assert summary["model_calls"] >= 10  # batches of at most 4
    assert 0 < summary["busy"] <= 1 and 0 <= summary["cpu"] <= 1.05  # (CPU in 10 ms clock ticks)
    assert 0 <= summary["first_call_ms"] <= summary["wall_ms"]
    assert 0 <= summary["longest_idle_ms"] <= summary["idle_ms"]
    # per-thread CPU from /proc: not negative, and no more than the cores could give in the
    # requests (plus a 10 ms clock tick per thread and request of rounding)
    spent_ms = (summary["runner_cpu_us"] + summary["server_cpu_us"]) * 40 * 2 / 1000
    assert summary["runner_cpu_us"] >= 0 and summary["server_cpu_us"] >= 0
    assert spent_ms <= 2 * (available_cpus() * summary["wall_ms"] + 10 * 8)

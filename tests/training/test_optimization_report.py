"""torch fp32 vs ONNX fp32 vs ONNX int8 report on the tiny model (fast settings)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from training.export import fp32_onnx_path
from training.optimization_report import (
    REPORT_JSON,
    REPORT_MD,
    format_markdown,
    optimization_report,
    run_optimization_report,
)

TEXTS = [
    "my new card still has not arrived",
    "I lost my card on the train",
    "what exchange rate do you use?",
    "my top up did not go through",
    "where is my refund?",
] * 6
LABELS = [
    "card_arrival",
    "lost_or_stolen_card",
    "exchange_rate",
    "top_up_failed",
    "refund_not_showing_up",
] * 6


@pytest.fixture(scope="module")
def report(tiny_hf_model: Path, tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("opt-report")
    return optimization_report(
        tiny_hf_model,
        fp32_onnx_path(tiny_artifact),
        tiny_artifact,
        TEXTS,
        LABELS,
        out,
        batch_size=8,
        single_tickets=5,
        repeats=1,
        threads=1,
    )


def test_three_variants_measured_in_one_run(report: dict) -> None:
    assert list(report["variants"]) == ["torch fp32", "onnx fp32", "onnx int8 (served)"]
    for variant in report["variants"].values():
        assert variant["size_mb"] > 0
        assert 0.0 <= variant["macro_f1"] <= 1.0
        for key in ("batch32_tickets_per_s", "single_tickets_per_s", "batch32_p50_ms", "single_p50_ms"):
            assert variant[key] > 0, key
    assert report["examples"] == 30
    assert report["threads"] == 1


def test_sizes_and_parity(report: dict) -> None:
    v = report["variants"]
    assert v["onnx int8 (served)"]["size_mb"] < 0.4 * v["onnx fp32"]["size_mb"]
    # The fp32 export is the torch model: same predictions, so the same macro-F1.
    assert v["onnx fp32"]["macro_f1"] == v["torch fp32"]["macro_f1"]
    c = report["int8_vs_fp32"]
    assert c["macro_f1_delta_points_vs_torch_fp32"] == pytest.approx(
        (v["onnx int8 (served)"]["macro_f1"] - v["torch fp32"]["macro_f1"]) * 100, abs=0.01
    )
    assert c["int8_within_tolerance"] == (
        min(c["macro_f1_delta_points_vs_torch_fp32"], c["macro_f1_delta_points_vs_onnx_fp32"]) >= -0.5
    )
    assert c["argmax_agreement_vs_torch_fp32"] >= 0.8


def test_files_written(report: dict) -> None:
    data = json.loads(Path(report["paths"]["json"]).read_text("utf-8"))
    assert data["variants"] == report["variants"]
    markdown = Path(report["paths"]["markdown"]).read_text("utf-8")
    assert markdown.count("\n| torch fp32 |") == 1 and "| onnx int8 (served) |" in markdown
    assert Path(report["paths"]["json"]).name == REPORT_JSON
    assert Path(report["paths"]["markdown"]).name == REPORT_MD


def test_markdown_flags_a_failed_tolerance(report: dict) -> None:
    bad = copy.deepcopy(report)
    bad["int8_vs_fp32"]["int8_within_tolerance"] = False
    assert "**OUTSIDE**" in format_markdown(bad)
    assert "**OUTSIDE**" not in format_markdown(report) or not report["int8_vs_fp32"]["int8_within_tolerance"]


def test_pipeline_entry_point(tiny_hf_model: Path, tiny_artifact: Path, tmp_path: Path) -> None:
    """What ``python -m training train`` calls: finds the fp32 ONNX next to the artifact."""
    path = run_optimization_report(
        hf_model_dir=tiny_hf_model,
        artifact_dir=tiny_artifact,
        texts=TEXTS[:10],
        labels=LABELS[:10],
        out_dir=tmp_path,
        single_tickets=2,
        repeats=1,
    )
    assert path == tmp_path / REPORT_MD
    assert (tmp_path / REPORT_JSON).is_file()

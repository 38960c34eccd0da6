"""Export + quantize: the artifact loads and scores like the torch model."""

from __future__ import annotations

from pathlib import Path

from triage_core.artifact import load_manifest


def test_tiny_artifact_loads(tiny_artifact: Path, tiny_labels: list[str]) -> None:
    manifest = load_manifest(tiny_artifact)
    assert manifest.labels == tiny_labels

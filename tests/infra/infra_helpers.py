"""Helpers shared by the infrastructure tests (plain functions, no CDK import)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]


def cdk_json_context() -> dict[str, Any]:
    """The context ``cdk synth`` uses by default (cdk.json)."""
    return json.loads((REPO_ROOT / "cdk.json").read_text())["context"]

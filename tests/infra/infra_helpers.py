"""Helpers shared by the infrastructure tests (plain functions, no CDK import)."""

from __future__ import annotations

from synth_fixture import REPO_ROOT, cdk_json_context

__all__ = ["REPO_ROOT", "cdk_json_context"]

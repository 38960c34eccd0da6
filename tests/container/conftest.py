"""Fixtures: the real inference server process, started once for the container tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.container.serverproc import Server, start_server, stop_server

# Small limits so the 413 and oversized-record cases need only a few MB. The review threshold is
# the tiny artifact's own: it has none, so the server's 0.5 (test_http_contract relies on it).
SERVER_LIMITS = {"TRIAGE_MAX_PAYLOAD_MB": "4", "TRIAGE_MAX_RECORD_MB": "2"}


@pytest.fixture(scope="session")
def server(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server process for the module's tests (they must leave it healthy)."""
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    srv = start_server(tiny_artifact, log_path, **SERVER_LIMITS)
    yield srv
    stop_server(srv)

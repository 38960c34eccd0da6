"""Fixtures of the infrastructure tests. The app is synthesized ONCE per test session by the
``synth`` fixture of ``tests/synth_fixture.py`` (registered in ``tests/conftest.py``, so the
pipeline and chaos tests replay their calls against the same template)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def stack(synth):
    return synth.stack

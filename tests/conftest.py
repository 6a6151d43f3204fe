"""Shared test helpers.

Tests that read the real data in ``../shared/data`` use the ``shared_data``
fixture: in a clone without that folder they are skipped with a reason naming it.
Integration fixtures (anvil, mosquitto) live in ``tests/plugins``; they fail with
an install hint when a component is missing, never skip.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

pytest_plugins = ["tests.plugins.chain", "tests.plugins.broker"]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ``../shared/data``; skips (with the folder named) when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f"real-data fixture folder {SHARED_DATA} is absent (it sits beside the clone in CI)"
        )
    return SHARED_DATA

from __future__ import annotations

import pytest

import tests._hypothesis_profiles  # noqa: F401  (registers and loads the profile)

pytest_plugins = ["tests.support.fixtures", "tests._js"]


@pytest.fixture
def anyio_backend() -> str:
    """Tests that drive real sockets run on asyncio; core tests parametrise over trio too."""
    return "asyncio"

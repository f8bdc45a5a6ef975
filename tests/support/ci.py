"""Skip a test whose tool is missing, except under CI, where that is a failure.

CI sets the ``CI`` environment variable, so CI can never pass by skipping tests.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import NoReturn

import pytest

_FALSE_VALUES = frozenset({"", "0", "false", "no", "off"})


def in_ci() -> bool:
    """True when the ``CI`` environment variable is set to a true value."""
    return os.environ.get("CI", "").strip().lower() not in _FALSE_VALUES


def unavailable(message: str) -> NoReturn:
    """Skip the current test with ``message``; fail it instead under CI."""
    if in_ci():
        pytest.fail(f"{message} (CI is set, so this fails instead of skipping)", pytrace=False)
    pytest.skip(message)


def npm_ci(directory: Path, npm: str, timeout: float) -> None:
    """Install ``directory``'s pinned node packages; a failure is :func:`unavailable`."""
    command = [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"]
    try:
        result = subprocess.run(
            command, cwd=directory, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        unavailable(f"'npm ci' in {directory} took more than {timeout:.0f} s")
    if result.returncode != 0:
        unavailable(f"'npm ci' in {directory} failed:\n{result.stderr[-2000:]}")

"""Hypothesis profiles for the whole suite; import this module from ``tests/conftest.py``.

* ``ci`` (the default): quick, for every run and for CI.
* ``thorough``: many more examples, on demand: ``HYPOTHESIS_PROFILE=thorough pytest``.

No deadline in either: timings on shared CI machines vary too much to be a failure.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

PROFILE_ENV = "HYPOTHESIS_PROFILE"

settings.register_profile(
    "ci",
    max_examples=50,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    max_examples=2000,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get(PROFILE_ENV, "ci"))

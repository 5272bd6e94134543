"""Shared pytest configuration: hypothesis profiles.

``dev`` (default outside CI) draws new random examples each run; ``ci``
(default when the ``CI`` environment variable is set) is derandomized, so a
CI failure reproduces exactly on a rerun; ``large`` is for runs on demand:
``SKSIM_HYPOTHESIS_PROFILE=large python -m pytest tests/test_properties.py``.
A failing example is printed with its reproduction blob either way.
"""

import os

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # hypothesis is in the test extras; other tests run without it
    pass
else:
    _COMMON = dict(deadline=None, print_blob=True,
                   suppress_health_check=[HealthCheck.too_slow,
                                          HealthCheck.data_too_large])
    settings.register_profile("dev", max_examples=30, derandomize=False, **_COMMON)
    settings.register_profile("ci", max_examples=30, derandomize=True, **_COMMON)
    settings.register_profile("large", max_examples=500, derandomize=False, **_COMMON)
    settings.load_profile(os.environ.get("SKSIM_HYPOTHESIS_PROFILE",
                                         "ci" if os.environ.get("CI") else "dev"))

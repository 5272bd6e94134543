"""Shared pytest configuration: hypothesis profiles.

``ci`` (default) keeps the property tests fast; ``large`` is for runs on
demand: ``SKSIM_HYPOTHESIS_PROFILE=large python -m pytest tests/test_properties.py``.
"""

import os

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # hypothesis is in the test extras; other tests run without it
    pass
else:
    _COMMON = dict(deadline=None, derandomize=False, print_blob=True,
                   suppress_health_check=[HealthCheck.too_slow,
                                          HealthCheck.data_too_large])
    settings.register_profile("ci", max_examples=30, **_COMMON)
    settings.register_profile("large", max_examples=500, **_COMMON)
    settings.load_profile(os.environ.get("SKSIM_HYPOTHESIS_PROFILE", "ci"))

"""The fuzzers' budget: a short one in the host suite (CI), a long one by hand.

``LVSD_FUZZ_EXAMPLES=N`` sets how many examples each fuzz test draws (default: the test's short
budget); e.g. ``LVSD_FUZZ_EXAMPLES=200000 python -m pytest tests/fuzz`` for a night's run.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings


def budget(short: int) -> settings:
    """Hypothesis settings drawing ``short`` examples, or ``$LVSD_FUZZ_EXAMPLES`` if set."""
    n = int(os.environ.get("LVSD_FUZZ_EXAMPLES", "0") or 0) or short
    return settings(
        max_examples=n,
        deadline=None,
        database=None,  # no .hypothesis directory in the tree; failures print their reproducer
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
    )

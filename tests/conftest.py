"""Settings shared by every test tier."""

from __future__ import annotations

from hypothesis import settings

# Property tests stay bounded in `make test`: few examples each, and no per-example deadline (the
# shared 2-core machine makes timings meaningless; "no timing thresholds in unit tests").
settings.register_profile("mirror", max_examples=60, deadline=None, derandomize=True)
settings.load_profile("mirror")

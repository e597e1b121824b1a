"""`python -m tests.bench`."""

from __future__ import annotations

from tests.bench.cli import main

raise SystemExit(main())

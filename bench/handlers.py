"""The no-op handler the benchmarks run."""

from __future__ import annotations

from typing import Any

from jobs_lib import JobContext, handler


@handler("bench_noop", max_attempts=3)
def bench_noop(ctx: JobContext[Any]) -> None:
    """Do nothing: what is measured is the runner."""

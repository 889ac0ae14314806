"""The no-op handler the benchmarks run."""

from __future__ import annotations

from typing import Any

from jobs_lib import JobContext, handler


@handler("bench_noop", max_attempts=3)
def bench_noop(ctx: JobContext[Any]) -> None:
    """Do nothing: what is measured is the runner."""


@handler("bench_rated", max_attempts=3, rate="50/s")
def bench_rated(ctx: JobContext[Any]) -> None:
    """Do nothing, at most 50 starts a second across every worker (bench/ratelimit.py)."""

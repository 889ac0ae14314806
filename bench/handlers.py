"""The no-op handler the benchmarks run."""

from __future__ import annotations

import time
from typing import Any

from jobs_lib import JobContext, handler


@handler("bench_noop", max_attempts=3)
def bench_noop(ctx: JobContext[Any]) -> None:
    """Do nothing: what is measured is the runner."""


@handler("bench_rated", max_attempts=3, rate="50/s")
def bench_rated(ctx: JobContext[Any]) -> None:
    """Do nothing, at most 50 starts a second across every worker (bench/ratelimit.py)."""


@handler("bench_rated10", max_attempts=3, rate="10/s")
def bench_rated10(ctx: JobContext[Any]) -> None:
    """Do nothing, at most 10 starts a second (bench/appjobs.py)."""


@handler("bench_rated100", max_attempts=3, rate="100/s")
def bench_rated100(ctx: JobContext[Any]) -> None:
    """Do nothing, at most 100 starts a second (bench/appjobs.py)."""


@handler("bench_limited5", max_attempts=3, concurrency=5)
def bench_limited5(ctx: JobContext[Any]) -> None:
    """Sleep 50 ms, at most 5 at once across every worker (bench/appjobs.py): 100 jobs/s at best."""
    time.sleep(0.05)


@handler("bench_fair", max_attempts=3, fair_key="orgId")
def bench_fair(ctx: JobContext[Any]) -> None:
    """Sleep ``metadata.seconds`` (default 20 ms), shared round-robin between organisations
    (bench/fairness.py)."""
    time.sleep(float(ctx.metadata.get("seconds", 0.02)))


@handler("bench_unfair", max_attempts=3)
def bench_unfair(ctx: JobContext[Any]) -> None:
    """`bench_fair` without `fair_key`: oldest first, whatever the organisation."""
    time.sleep(float(ctx.metadata.get("seconds", 0.02)))

"""Handlers the soak's workers load (`--handlers bench.soakhandlers`): quick, failing, retried, all
kept briefly."""

from __future__ import annotations

import random
import time
from datetime import timedelta
from typing import Any

from jobs_lib import Backoff, JobContext, PermanentError, handler

#: Finished soak jobs may be deleted this soon (the cleanup schedule does so, in bounded batches).
KEEP = timedelta(seconds=20)


@handler("soak_ok", retention=KEEP, timeout=30)
def soak_ok(ctx: JobContext[Any]) -> int:
    """A little work."""
    time.sleep(random.uniform(0.0, 0.05))
    return 1


@handler("soak_fail", retention=KEEP, timeout=30)
def soak_fail(ctx: JobContext[Any]) -> None:
    """A job that cannot succeed."""
    raise PermanentError("this soak job always fails")


@handler("soak_retry", retention=KEEP, timeout=30, max_attempts=3, backoff=Backoff.fixed(1))
def soak_retry(ctx: JobContext[Any]) -> int:
    """Fails its first attempt, then succeeds."""
    if ctx.attempt == 1:
        raise ConnectionError("first attempt fails")
    return ctx.attempt

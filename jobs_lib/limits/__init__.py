"""What may run now: each policy one module with the hooks of `jobs_lib.limits.policy.Policy`
(pause, circuit breakers, concurrency slots, rate tokens, fair shares), registered in
`registered`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jobs_lib.limits.breakers import Breakers
from jobs_lib.limits.fair import FairShares
from jobs_lib.limits.pause import Pause
from jobs_lib.limits.policy import Hold, Policy
from jobs_lib.limits.rates import RateClaimer
from jobs_lib.limits.slots import SlotClaimer
from jobs_lib.observability.logs import JobLogger
from jobs_lib.registry import HandlerSpec
from jobs_lib.store import JobStore

__all__ = ["Hold", "Policy", "registered"]


def registered(
    store: JobStore,
    holder: str,
    lease_seconds: float,
    log: JobLogger,
    *,
    paused: Callable[[], set[str]],
    control: Callable[[], dict[str, dict[str, Any]]],
    specs: Callable[[str], HandlerSpec | None],
    all_specs: Callable[[], list[HandlerSpec]],
) -> list[Policy]:
    """Every policy an engine applies, in the order it asks them: the first that holds a job back
    names the reason, and the first that takes a job claims it."""
    return [
        Pause(paused),
        Breakers(store, holder, lease_seconds, log, control, specs),
        SlotClaimer(store, holder, lease_seconds, log),
        RateClaimer(store, holder, lease_seconds, log),
        FairShares(store, log, all_specs),
    ]

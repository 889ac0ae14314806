"""`jobs.webhook`: POST a job's end to the URL it named, signed, retried with backoff
(jobs_lib.engine.webhooks)."""

from __future__ import annotations

import json
import time
from typing import Any

from jobs_lib.context import JobContext
from jobs_lib.engine.webhooks import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WEBHOOK_TYPE,
    DeliveryFailed,
    WebhookRefused,
    checked_target,
    post,
    signature,
)
from jobs_lib.errors import PermanentError
from jobs_lib.model.retry import Backoff
from jobs_lib.registry import handler

#: Answers that will not change on a retry (the others, 408, 425, 429 and 5xx, are retried).
_FINAL_REFUSALS = frozenset(range(400, 500)) - {408, 425, 429}


@handler(
    WEBHOOK_TYPE, max_attempts=8, timeout=30, backoff=Backoff.exponential(delay=2, max_delay=300)
)
def deliver(ctx: JobContext[Any]) -> dict[str, Any]:
    """One delivery attempt; returns the receiver's status.

    The URL is the job's own (``metadata.url``, given at enqueue), or else its handler's declared
    default, looked up now in this process's registry (``metadata.jobType``): a handler's URL is
    never written to a document.
    """
    settings = ctx.store.settings
    if not settings.webhook_secret:
        raise PermanentError(
            "JOBS_WEBHOOK_SECRET is not set where this delivery ran: webhooks are always signed"
        )
    url = ctx.metadata.get("url")
    if url is None:
        spec = ctx.registry.get(ctx.metadata.get("jobType"))
        url = spec.webhook if spec is not None else None
        if url is None:
            raise PermanentError(
                f"no webhook to call: the job names none and the handler of "
                f"{ctx.metadata.get('jobType')!r} here declares none"
            )
    try:
        url, addresses = checked_target(
            url, settings.webhook_allow
        )  # again: the name may resolve elsewhere now
    except WebhookRefused as exc:
        raise PermanentError(str(exc)) from None
    body = json.dumps(ctx.metadata.get("payload"), sort_keys=True, separators=(",", ":")).encode()
    stamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "jobs_lib-webhook/1",
        DELIVERY_HEADER: ctx.job_id,
        TIMESTAMP_HEADER: stamp,
        SIGNATURE_HEADER: signature(settings.webhook_secret, stamp, body),
    }
    status = post(url, body, headers, addresses)
    if 200 <= status < 300:
        return {"status": status, "attempt": ctx.attempt}
    if status in _FINAL_REFUSALS:
        raise PermanentError(f"the receiver answered {status}; not retried")
    raise DeliveryFailed(f"the receiver answered {status}")


__all__ = ["deliver"]

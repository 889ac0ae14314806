"""The policy seam (jobs_lib.limits.policy): an application's own policy is one class and its
registration, and the engine asks it at every point of a job's way, as it asks the built-in ones."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

from jobs_lib import JobContext, JobsClient, Status
from jobs_lib.limits import Hold, Policy
from jobs_lib.model.job import Job
from jobs_lib.model.outcomes import Outcome
from jobs_lib.registry import HandlerRegistry, HandlerSpec
from jobs_lib.store import JobStore

from .conftest import wait_finished, wait_for


class QuietTenant(Policy):
    """Holds back one tenant's jobs while it is quiet; counts what ended, by how it was claimed."""

    name = "quiet-tenant"

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        self.quiet = threading.Event()
        self.quiet.set()
        self.ends: list[tuple[str, str, str | None]] = []
        self.released_jobs: list[str] = []

    def gate(self, job: Job, spec: HandlerSpec, now: datetime) -> Hold | None:
        if self.quiet.is_set() and job.metadata.get("tenant") == self.tenant:
            return Hold.skip(f"tenant {self.tenant} is quiet")
        return None

    def released(self, job: Job, spec: HandlerSpec | None, ended: bool) -> None:
        self.released_jobs.append(job.id)

    def ended(self, spec: HandlerSpec, outcome: Outcome, claimed_by: str | None) -> None:
        self.ends.append((spec.type, type(outcome).__name__, claimed_by))


def test_an_applications_policy_holds_jobs_back_and_hears_their_ends(
    client: JobsClient, store: JobStore, registry: HandlerRegistry, worker_factory: Any
) -> None:
    @registry.handler("report")
    def report(ctx: JobContext[Any]) -> str:
        return str(ctx.metadata["tenant"])

    @registry.handler("limited_report", concurrency=2)
    def limited_report(ctx: JobContext[Any]) -> str:
        return str(ctx.metadata["tenant"])

    policy = QuietTenant("b")
    jobs = client.enqueue_many(
        [
            {"type": kind, "metadata": {"tenant": tenant}}
            for kind in ("report", "limited_report")
            for tenant in ("a", "b")
            for _ in range(3)
        ]
    )
    loud = [j.id for j in jobs if j.metadata["tenant"] == "a"]
    quiet = [j.id for j in jobs if j.metadata["tenant"] == "b"]
    worker_factory(concurrency=4, policies=[policy])
    done = wait_finished(store, loud)
    assert {j.status for j in done.values()} == {Status.COMPLETED}
    # Held back by the application's policy: still pending, untouched, while the rest ran.
    assert all(
        store.get(job_id).status is Status.PENDING and store.get(job_id).attempts == 0
        for job_id in quiet
    )
    policy.quiet.clear()
    done = wait_finished(store, quiet)
    assert {j.status for j in done.values()} == {Status.COMPLETED}
    # Every end was heard, with the policy that claimed the job: the concurrency slots for the
    # limited type, a plain claim for the other.
    wait_for(lambda: len(policy.ends) == 12, message="every end to reach the policy")
    assert sorted(policy.ends) == sorted(
        [("report", "Completed", None)] * 6 + [("limited_report", "Completed", "slots")] * 6
    )
    assert set(policy.released_jobs) >= {j.id for j in jobs if j.type == "limited_report"}


def test_the_engine_knows_no_policy_by_name(engine_factory: Any) -> None:
    engine = engine_factory()
    names = [policy.name for policy in engine.policies]
    assert names == ["pause", "breaker", "slots", "rate", "fair"]
    assert all(isinstance(policy, Policy) for policy in engine.policies)
    from pathlib import Path

    import jobs_lib.engine.runner as runner

    source = Path(runner.__file__).read_text()
    for name in (
        "SlotClaimer",
        "RateClaimer",
        "Breakers",
        "FairShares",
        "fair_key",
        "Pause(",
        "spec.concurrency is not None and",
        "spec.rate is not None and",
    ):
        assert name not in source, f"the engine names a policy: {name}"

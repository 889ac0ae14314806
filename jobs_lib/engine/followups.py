"""Flows: jobs that wait for other jobs (``dependsOn``), released exactly once; and the other
follow-up of a job's end, its completion webhook (jobs_lib.engine.webhooks), kept the same way.

A flow is a set of jobs written together (`jobs_lib.client.JobsClient.flow`):
each job names the jobs it waits for by their names in the flow; those that
wait start ``blocked`` with ``dependsOn`` (the parents' ids), and the parents
carry ``dependentsSettled: false``. No document is shared by the flow's jobs:
the flow is the ``flowId`` they all carry.

When a parent ends, the runner's final write also writes
``dependentsSettled: false`` (the obligation), then `Releaser.release` reads
each blocked child with all of its parents and decides: every parent
completed, the child becomes ``pending``; a parent failed or cancelled, the
flow's ``onParentFailure`` says (``fail``: the child ends ``cancelled`` naming
the parent; ``ignore``: it runs once every parent has finished; ``wait``: it
stays blocked until the parent is retried to success). Each child's write is
conditioned on the version read, so when parents end at the same moment in
different processes the child is released once: every process reads the
child after its own parent's final write, so the last of them sees every
parent finished, and of two that both see it, one write is refused and its
process finds the child released. Then the parent's ``dependentsSettled``
becomes true. A process that dies in between leaves the obligation written:
`Releaser.repair` (each tick, and a worker's housekeeping) finds such parents
and finishes the job, and audits the blocked set a page at a time for
children whose parents were deleted or never written.
"""

from __future__ import annotations

import graphlib
import logging
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from jobs_lib.engine.webhooks import WEBHOOK_TYPE, delivery_key, payload
from jobs_lib.errors import ConfigurationError, StoreRefused
from jobs_lib.model.job import FINISHED, Job, Status, key_to_id
from jobs_lib.model.outcomes import Cancelled, Failed
from jobs_lib.observability.logs import event, job_fields
from jobs_lib.registry import DEFAULT_RETENTION, HandlerRegistry

if TYPE_CHECKING:
    from jobs_lib.store import JobStore

log = logging.getLogger("jobs_lib.flows")

Policy = Literal["fail", "ignore", "wait"]
POLICIES: tuple[Policy, ...] = ("fail", "ignore", "wait")
#: Writes in one atomic Firestore commit: a flow up to this size is created all at once.
ATOMIC_LIMIT = 500
#: The largest flow `JobsClient.flow` writes (in commits of 500 when `atomic=False`).
MAX_FLOW_JOBS = 20_000
#: Parents per job: each parent's end reads the child and all its parents, so a fan-in of N costs
#: about N * (N + 1) reads in all; 50 keeps the worst case at 2,550 reads.
MAX_PARENTS = 50
#: Children read per page when a parent ends (one query and one BatchWrite per page; 500 is the
#: most one BatchWrite takes).
PAGE = 500
#: A finished parent whose release is this recent is left to the process doing it.
REPAIR_GRACE_SECONDS = 10.0
#: The audit of the blocked set reads this many jobs per repair, at most this often.
AUDIT_PAGE = 100
AUDIT_EVERY = 60.0


@dataclass(frozen=True)
class FlowStep:
    """One job of a flow as given: its name in the flow, the names it waits for, `enqueue`'s
    arguments."""

    name: str
    depends_on: tuple[str, ...]
    arguments: dict[str, Any]


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _done(value: Any) -> Future[Any]:
    future: Future[Any] = Future()
    future.set_result(value)
    return future


def plan(items: Iterable[Mapping[str, Any]], *, atomic: bool) -> list[FlowStep]:
    """Check a flow and put its jobs in creation order (children before the jobs they wait for).

    Raises `ConfigurationError` naming the problem: a job without a name, a name used twice, a
    reference to no job of the flow, a cycle, too many parents, or a flow too large.
    """
    steps: list[FlowStep] = []
    names: set[str] = set()
    for n, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise ConfigurationError(
                f"flow job {n}: each job is a mapping with a name, a type and enqueue's "
                f"arguments, got {item.__class__.__name__}"
            )
        arguments = dict(item)
        name = arguments.pop("name", None)
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise ConfigurationError(
                f"flow job {n}: needs a name (a non-empty string of at most 200 characters) that "
                f"the others' depends_on refer to"
            )
        if name in names:
            raise ConfigurationError(f"flow job {n}: the name {name!r} is used twice in this flow")
        names.add(name)
        depends = arguments.pop("depends_on", arguments.pop("dependsOn", ()))
        if (
            isinstance(depends, str)
            or not isinstance(depends, Sequence)
            or not all(isinstance(d, str) for d in depends)
        ):
            raise ConfigurationError(
                f"flow job {name!r}: depends_on must be a list of the names of other jobs in the "
                f"flow"
            )
        if len(set(depends)) > MAX_PARENTS:
            raise ConfigurationError(
                f"flow job {name!r}: depends on {len(set(depends))} jobs; at most {MAX_PARENTS} "
                f"(each parent's end reads them all)"
            )
        if "key" in arguments:
            raise ConfigurationError(
                f"flow job {name!r}: idempotency keys are per job; a flow is created once, as a "
                f"whole (give the flow an id instead)"
            )
        steps.append(FlowStep(name, tuple(dict.fromkeys(depends)), arguments))
    if not steps:
        raise ConfigurationError("a flow needs at least one job")
    if len(steps) > MAX_FLOW_JOBS:
        raise ConfigurationError(
            f"a flow of {len(steps)} jobs is too large: at most {MAX_FLOW_JOBS}"
        )
    if len(steps) > ATOMIC_LIMIT and atomic:
        raise ConfigurationError(
            f"a flow of {len(steps)} jobs does not fit one atomic Firestore commit (at most "
            f"{ATOMIC_LIMIT} writes); "
            f"pass atomic=False to write it in commits of {ATOMIC_LIMIT}, the jobs that wait "
            f"first and the first ones to run last"
        )
    for step in steps:
        unknown = [d for d in step.depends_on if d not in names]
        if unknown:
            raise ConfigurationError(
                f"flow job {step.name!r} depends on {', '.join(map(repr, unknown))}, which is "
                f"not a job of this flow"
            )
        if step.name in step.depends_on:
            raise ConfigurationError(f"flow job {step.name!r} depends on itself")
    sorter = graphlib.TopologicalSorter({s.name: s.depends_on for s in steps})
    try:
        order = list(sorter.static_order())
    except graphlib.CycleError as exc:
        cycle = exc.args[1]
        raise ConfigurationError(
            f"the flow has a cycle: {' -> '.join(map(str, cycle))}; a job cannot wait for "
            f"itself, even through others"
        ) from None
    by_name = {s.name: s for s in steps}
    return [by_name[name] for name in reversed(order)]


def verdict(
    child: Job, parents: Mapping[str, Job | None], expire_at: datetime
) -> tuple[bool, Failed | Cancelled | None]:
    """What a blocked child's parents, as read, mean for it: (act, outcome).

    (True, None): release it (pending); (True, outcome): end it so; (False, None): keep waiting.
    """
    if child.problems:
        return True, Failed("; ".join(child.problems), {"reason": "invalid_job"}, expire_at)
    policy = child.on_parent_failure
    if policy not in POLICIES:
        return True, Failed(
            f"onParentFailure must be one of {', '.join(POLICIES)}, got {policy!r}",
            {"reason": "invalid_job"},
            expire_at,
        )
    if child.cancel_requested:
        return True, Cancelled(
            "cancelled at the owner's request while it waited for the jobs it depends on", expire_at
        )
    waiting = False
    for parent_id in child.depends_on:
        parent = parents.get(parent_id)
        if parent is None:
            return True, Cancelled(
                f"the job it depends on, {parent_id}, does not exist (deleted, or the flow's "
                f"creation stopped before writing it)",
                expire_at,
            )
        if parent.status in (Status.FAILED, Status.CANCELLED) and policy == "fail":
            label = (
                f"{parent.flow_name!r} ({parent_id}, {parent.type})"
                if parent.flow_name
                else f"{parent_id} ({parent.type})"
            )
            why = f": {parent.error}" if parent.error else ""
            return True, Cancelled(
                f"the job it depends on, {label}, ended {parent.status.value}{why}"[:1500],
                expire_at,
            )
        if parent.status is Status.COMPLETED or (parent.status in FINISHED and policy == "ignore"):
            continue
        waiting = True  # unfinished, or failed under "wait"
    return (False, None) if waiting else (True, None)


@dataclass
class ReleaseSummary:
    """What one release pass did."""

    released: list[str] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)
    settled: list[str] = field(default_factory=list)
    deliveries: list[str] = field(default_factory=list)


class Releaser:
    """Releases (or ends) the jobs that wait for a job once it has ended, exactly once."""

    def __init__(
        self, store: JobStore, registry: HandlerRegistry | None = None, holder: str = "flows"
    ) -> None:
        self.store = store
        self.registry = registry
        self.holder = holder
        self._audit_after: str | None = None
        self._audit_at = float("-inf")

    def _declared_webhook(self, job: Job) -> bool:
        """True when the job's handler declares a webhook (an app's job whose end came before any
        claim wrote the ``webhook: true`` mark)."""
        spec = self.registry.get(job.type) if self.registry is not None else None
        return spec is not None and spec.webhook is not None

    def _expire_at(self, job: Job) -> datetime:
        spec = self.registry.get(job.type) if self.registry is not None else None
        return self.store.now() + (spec.retention if spec else DEFAULT_RETENTION)

    def release(self, parent_ids: Iterable[str]) -> ReleaseSummary:
        """Deal with the blocked dependents of these jobs (those that have ended); children ended
        here (cancelled under ``fail``) have their own dependents dealt with in the same pass."""
        summary = ReleaseSummary()
        todo = list(dict.fromkeys(parent_ids))
        while todo:
            batch, todo = todo[:ATOMIC_LIMIT], todo[ATOMIC_LIMIT:]
            for parent in self.store.get_many(batch, "flows:parent").values():
                if parent.status not in FINISHED or not parent.has_follow_ups:
                    continue
                if parent.flow_id:
                    todo += self._settle_children(parent, summary)
                extra = {}
                if parent.webhook or self._declared_webhook(parent):
                    extra["webhookJobId"] = self._deliver_later(parent)
                    summary.deliveries.append(extra["webhookJobId"])
                if parent.dependents_settled is not True and self.store.mark_settled(parent, extra):
                    summary.settled.append(parent.id)
        return summary

    def _deliver_later(self, job: Job) -> str:
        """Create the ``jobs.webhook`` job that POSTs this end of `job` (once: its id names the
        end).

        The delivery belongs to the system (no owner fields: the job's owner can neither read,
        cancel nor retry it). Its metadata holds the URL only when the job named its own; a
        handler's declared URL is looked up by the delivery (``jobType``) and never written down.
        """
        delivery_id = key_to_id(WEBHOOK_TYPE, delivery_key(job))
        target: dict[str, Any] = {"url": job.webhook} if isinstance(job.webhook, str) else {}
        metadata = {**target, "jobId": job.id, "jobType": job.type, "payload": payload(job)}
        data = self.store.new_job_fields(
            WEBHOOK_TYPE,
            metadata,
            scheduled_for=None,
            priority=0,
            max_attempts=None,
            extra={"webhookFor": job.id},
        )
        for _attempt in range(2):
            [created] = self.store.create_many([(delivery_id, data)])
            if created.job is not None:
                return delivery_id
            if not created.exists:
                raise StoreRefused(
                    f"creating the webhook delivery of job {job.id} failed: {created.message}"
                )
            held = self.store.get(delivery_id)
            if held is not None and held.type == WEBHOOK_TYPE and held.webhook_for == job.id:
                return delivery_id  # created before (a repair)
            # A document the library did not write holds the id: deliver under one nobody can guess.
            log.warning(
                "the id %s of the webhook delivery of job %s is held by another document; "
                "delivering under another id",
                delivery_id,
                job.id,
            )
            delivery_id = f"{delivery_id}-{secrets.token_hex(6)}"
        return delivery_id

    def _settle_children(self, parent: Job, summary: ReleaseSummary) -> list[str]:
        """Every blocked child of `parent`, page by page; returns the children this ended that have
        dependents."""
        known: dict[str, Job | None] = {parent.id: parent}
        ended_parents: list[str] = []
        # The next page is read while this one is written (a fan-out of thousands is mostly
        # waiting).
        with ThreadPoolExecutor(1, thread_name_prefix="jobs-flows") as reader:
            upcoming = reader.submit(self.store.dependents, parent.id, None, PAGE)
            while True:
                page = upcoming.result()
                if not page:
                    return ended_parents
                if len(page) == PAGE:
                    upcoming = reader.submit(self.store.dependents, parent.id, page[-1].id, PAGE)
                else:
                    upcoming = _done([])
                known = self._settle_page(parent, page, known, summary, ended_parents)

    def _settle_page(
        self,
        parent: Job,
        page: list[Job],
        known: dict[str, Job | None],
        summary: ReleaseSummary,
        ended_parents: list[str],
    ) -> dict[str, Job | None]:
        """Release or end one page of `parent`'s blocked children; returns the parents known now."""
        for _attempt in range(10):
            unknown = {p for child in page for p in child.depends_on if p not in known}
            for chunk in _chunks(sorted(unknown), ATOMIC_LIMIT):
                found = self.store.get_many(chunk, "flows:parents")
                known.update({p: found.get(p) for p in chunk})
            decisions = []
            for child in page:
                act, outcome = verdict(child, known, self._expire_at(child))
                if act:
                    decisions.append((child, outcome))
            results = self.store.resolve_blocked(decisions, holder=self.holder)
            refused = []
            for (child, outcome), ok in zip(decisions, results, strict=True):
                if not ok:
                    refused.append(child.id)
                elif outcome is None:
                    summary.released.append(child.id)
                    event(
                        log,
                        "job_released",
                        f"job {child.id} released: the jobs it depends on have ended",
                        level=logging.DEBUG,
                        **job_fields(child.id, child.type),
                    )
                else:
                    summary.ended.append(child.id)
                    if child.has_follow_ups:
                        ended_parents.append(child.id)
                    event(
                        log,
                        "job_cancelled" if isinstance(outcome, Cancelled) else "job_failed",
                        f"job {child.id} ended without running: "
                        f"{outcome.reason if isinstance(outcome, Cancelled) else outcome.error}",
                        **job_fields(child.id, child.type),
                    )
            if not refused:
                break
            # Changed since read (another parent's process released or ended it, or the owner
            # asked to cancel): read those again, with their parents, and decide anew.
            fresh = self.store.get_many(refused, "flows:reread")
            page = [job for job in fresh.values() if job.status is Status.BLOCKED]
            known = {parent.id: parent}
            if not page:
                break
        return known

    def repair(self, limit: int = 100) -> ReleaseSummary:
        """Finish what a process that died left: parents ended whose dependents were not dealt with;
        and, at most every `AUDIT_EVERY` seconds, a page of the blocked set checked against its
        parents."""
        now = self.store.now()
        parents = [
            job.id
            for job in self.store.unsettled_parents(limit)
            if job.version is None or (now - job.version).total_seconds() >= REPAIR_GRACE_SECONDS
        ]
        summary = self.release(parents) if parents else ReleaseSummary()
        if parents:
            event(
                log,
                "flows_repaired",
                f"dealt with the dependents of {len(parents)} ended job(s) a process had left",
                count=len(parents),
                released=len(summary.released),
                ended=len(summary.ended),
            )
        if time.monotonic() - self._audit_at >= AUDIT_EVERY:
            self._audit_at = time.monotonic()
            self._audit(summary)
        return summary

    def _audit(self, summary: ReleaseSummary) -> None:
        """One page of the blocked set: release or end what its parents (or their absence) decide.

        The pages follow on in a long-lived process; each fresh one (a tick) starts at a random id.
        """
        if self._audit_after is None:
            self._audit_after = self.store.new_id()
        page = self.store.blocked_page(self._audit_after, AUDIT_PAGE)
        if len(page) < AUDIT_PAGE:
            page += self.store.blocked_page(None, AUDIT_PAGE - len(page))  # wrap around
        self._audit_after = page[-1].id if page else None
        page = list({job.id: job for job in page}.values())
        if not page:
            return
        parents: dict[str, Job | None] = {}
        for chunk in _chunks(sorted({p for child in page for p in child.depends_on}), ATOMIC_LIMIT):
            found = self.store.get_many(chunk, "flows:audit")
            parents.update({p: found.get(p) for p in chunk})
        decisions = []
        for child in page:
            act, outcome = verdict(child, parents, self._expire_at(child))
            # A parent that ended moments ago is its own process's to deal with.
            if act and not self._recent(child, parents):
                decisions.append((child, outcome))
        ended = []
        for (child, outcome), ok in zip(
            decisions, self.store.resolve_blocked(decisions, holder=self.holder), strict=True
        ):
            if ok:
                (summary.released if outcome is None else summary.ended).append(child.id)
                if outcome is not None and child.has_follow_ups:
                    ended.append(child.id)
        if decisions:
            event(
                log,
                "flows_audited",
                f"the blocked-job audit released {sum(o is None for _c, o in decisions)} and "
                f"ended {sum(o is not None for _c, o in decisions)}",
                level=logging.WARNING,
            )
        if ended:
            self.release(ended)

    def _recent(self, child: Job, parents: Mapping[str, Job | None]) -> bool:
        now = self.store.now()
        return any(
            p is not None
            and p.version is not None
            and (now - p.version).total_seconds() < REPAIR_GRACE_SECONDS
            for p in (parents.get(i) for i in child.depends_on)
        )


__all__ = [
    "ATOMIC_LIMIT",
    "MAX_FLOW_JOBS",
    "MAX_PARENTS",
    "POLICIES",
    "FlowStep",
    "Policy",
    "ReleaseSummary",
    "Releaser",
    "plan",
    "verdict",
]

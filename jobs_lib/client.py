"""The Python client apps use: enqueue, get, cancel, retry.

    jobs = JobsClient()
    job = jobs.enqueue(
        "process_notifications", {"targetUsers": ["u1"], "notificationType": "course_reminder"}
    )

`enqueue` with a `key` is idempotent: the same key always names the same job
document, created once. Passing `transaction=` or `batch=` creates the job
atomically with the app's own writes.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from jobs_lib.config import Settings
from jobs_lib.engine.followups import ATOMIC_LIMIT, POLICIES, Policy, Releaser, plan
from jobs_lib.engine.webhooks import check_url
from jobs_lib.errors import (
    ConfigurationError,
    DocumentExists,
    EnqueueFailed,
    IdTaken,
    InvalidJobState,
    JobNotFound,
)
from jobs_lib.limits.fair import fair_value
from jobs_lib.model.job import Job, Status, key_to_id
from jobs_lib.model.outcomes import Cancelled, CancelRequest, Change, Retried
from jobs_lib.observability.telemetry import Telemetry
from jobs_lib.registry import HandlerRegistry, default_registry
from jobs_lib.store import JobStore, open_store, shard_of
from jobs_lib.store.fair import MAX_WEIGHT

log = logging.getLogger("jobs_lib.client")

#: Creates per BatchWrite RPC in `enqueue_many` (Firestore's limit per request).
BATCH_LIMIT = 500
_ENQUEUE_ARGUMENTS = frozenset(
    {
        "type",
        "metadata",
        "scheduled_for",
        "priority",
        "max_attempts",
        "key",
        "org_id",
        "created_by",
        "webhook",
    }
)


def _keyed(existing: Job, job_type: str, key: Any) -> Job:
    """The job an idempotency key names, found already written: ours only if enqueue wrote it with
    that type and key (a client cannot write ``key``; docs: discussions/security.md). Raises
    `IdTaken`."""
    if existing.key != key or existing.type != job_type:
        raise IdTaken(
            f"the id {existing.id} that key {key!r} of {job_type} names is held by a document "
            f"jobs_lib did not write "
            f"(type {existing.type!r}, created by {existing.created_by!r}); it is not treated as "
            f"this key's job"
        )
    return existing


@dataclass(frozen=True)
class Flow:
    """A flow as created: its id and its jobs' ids by name (`JobsClient.flow_jobs` reads their
    states)."""

    id: str
    job_ids: dict[str, str]


class JobsClient:
    """Create and manage jobs from Python."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        store: JobStore | None = None,
        registry: HandlerRegistry | None = None,
        validate_types: bool = False,
        telemetry: Telemetry | None = None,
    ) -> None:
        if store is None:
            store = open_store(settings)
        self.store = store
        self.registry = registry if registry is not None else default_registry
        self.validate_types = validate_types
        self.telemetry = telemetry or Telemetry()
        self.flows = Releaser(self.store, self.registry, "client")

    @property
    def db(self) -> Any:
        """The Firestore client, for transactions and batches that include a job."""
        return self.store.db

    def enqueue(
        self,
        type: str,
        metadata: dict[str, Any] | None = None,
        *,
        scheduled_for: datetime | None = None,
        priority: int = 0,
        max_attempts: int | None = None,
        key: str | None = None,
        org_id: str | None = None,
        created_by: str | None = None,
        webhook: str | None = None,
        transaction: Any = None,
        batch: Any = None,
    ) -> Job:
        """Create a pending job and return it.

        `key` makes the call idempotent: a second enqueue with the same type
        and key returns the job the first created. `webhook` (default: the
        handler's) is POSTed to when the job ends (jobs_lib.engine.webhooks). With `transaction` or
        `batch` the job is written when the caller commits them; with a key
        and a transaction, enqueue reads the job id first, so call it before
        the transaction's own writes (Firestore wants reads before writes).
        """
        if batch is not None and key is not None:
            raise ConfigurationError(
                "a key needs a read to be idempotent; use a transaction, not a batch"
            )
        job_id, data = self._prepare(
            type,
            metadata,
            scheduled_for=scheduled_for,
            priority=priority,
            max_attempts=max_attempts,
            key=key,
            org_id=org_id,
            created_by=created_by,
            webhook=webhook,
        )
        if transaction is not None and key is not None:
            existing = self.store.get_in_transaction(job_id, transaction)
            if existing is not None:
                return _keyed(existing, type, key)
        if transaction is not None or batch is not None:
            self.store.create(job_id, data, transaction=transaction, batch=batch)
            self._register_fair_keys([(job_id, data)], writer=transaction or batch)
            self.telemetry.count("enqueued", type)  # counted when written into the caller's commit
            return Job.from_document(
                job_id, {**data, "createdAt": None, "scheduledFor": scheduled_for}
            )
        try:
            self.store.create(job_id, data)
        except DocumentExists:
            existing = self.store.get(job_id)
            if existing is None:  # deleted between the two calls: create again
                self.store.create(job_id, data)
            else:
                return _keyed(existing, type, key)
        self.telemetry.count("enqueued", type)
        self._register_fair_keys([(job_id, data)])
        job = self.store.get(job_id)
        assert job is not None
        return job

    def enqueue_once(
        self,
        type: str,
        metadata: dict[str, Any] | None = None,
        *,
        key: str,
        period: float,
        mode: Literal["throttle", "debounce"] = "throttle",
        **options: Any,
    ) -> Job:
        """One job per `key` (and type) per `period` seconds; returns it.

        Periods are windows of `period` seconds on the server's clock, counted from the epoch.
        ``throttle``: the first call in a window creates the job, due at once; the window's later
        calls return that job unchanged. ``debounce``: the job is due at the end of its window, and
        each later call in the window replaces its metadata while it is still pending, so the last
        call's metadata is what runs (once it has started, calls return it unchanged). The id is
        the key's and window's (as for `enqueue(key=...)`), so it holds across every process.
        `options` are `enqueue`'s (priority, max_attempts, org_id, created_by).
        """
        if not isinstance(period, int | float) or isinstance(period, bool) or not period > 0:
            raise ConfigurationError(f"period must be a positive number of seconds, got {period!r}")
        if mode not in ("throttle", "debounce"):
            raise ConfigurationError(f"mode must be 'throttle' or 'debounce', got {mode!r}")
        if "scheduled_for" in options or "key" in options:
            raise ConfigurationError("enqueue_once sets the job's key and due time itself")
        window = math.floor(self.store.now().timestamp() / period)
        due = datetime.fromtimestamp((window + 1) * period, UTC) if mode == "debounce" else None
        job = self.enqueue(
            type, metadata, key=f"{key}|{mode} {period:g}s|{window}", scheduled_for=due, **options
        )
        wanted = metadata or {}
        for _ in range(5):
            if mode == "throttle" or job.status is not Status.PENDING or job.metadata == wanted:
                return job
            if self.store.replace_metadata(job, wanted):
                return self.get(job.id)
            job = self.get(
                job.id
            )  # changed meanwhile (another call, or a worker took it): look again
        return job

    def _prepare(
        self,
        type: str,
        metadata: dict[str, Any] | None = None,
        *,
        scheduled_for: datetime | None = None,
        priority: int = 0,
        max_attempts: int | None = None,
        key: str | None = None,
        org_id: str | None = None,
        created_by: str | None = None,
        webhook: str | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """A job's id and document, checked as `enqueue` checks it; raises `ConfigurationError`."""
        if not isinstance(type, str) or not type.strip():
            raise ConfigurationError("a job needs a non-empty string type")
        if metadata is not None and not isinstance(metadata, dict):
            raise ConfigurationError(f"metadata must be a dict, got {metadata.__class__.__name__}")
        if self.validate_types and type not in self.registry:
            raise ConfigurationError(f"no handler is registered for job type {type!r}")
        if max_attempts is not None and max_attempts < 1:
            raise ConfigurationError("max_attempts must be at least 1")
        if scheduled_for is not None and scheduled_for.tzinfo is None:
            raise ConfigurationError(
                "scheduled_for must be timezone-aware (use datetime.now(timezone.utc))"
            )
        extra: dict[str, Any] = {}
        if org_id is not None:
            extra["orgId"] = org_id
        if created_by is not None:
            extra["createdBy"] = created_by
        if key is not None:
            extra["key"] = key
        spec = self.registry.get(type)
        if webhook is not None:
            extra["webhook"] = check_url(webhook, self.store.settings.webhook_allow)
        elif spec is not None and spec.webhook is not None:
            extra["webhook"] = (
                True  # the handler's own URL, looked up at delivery: it stays on the server
            )
        traceparent = self.telemetry.current_traceparent()
        if traceparent is not None:
            extra["traceparent"] = traceparent  # the run's span continues the caller's trace
        data = self.store.new_job_fields(
            type,
            metadata or {},
            scheduled_for=scheduled_for,
            priority=priority,
            max_attempts=max_attempts,
            extra=extra,
        )
        job_id = key_to_id(type, key) if key is not None else self.store.new_id()
        data["shard"] = shard_of(job_id)
        return job_id, data

    def enqueue_many(self, jobs: Iterable[Mapping[str, Any]]) -> list[Job]:
        """Create many pending jobs; returns them in the order given.

        Each item holds `enqueue`'s arguments by name (``{"type": "send_email", "metadata": {...},
        "key": "welcome:u1", "priority": 3}``). Every item is checked before anything is written
        (a `ConfigurationError` names the first bad one), then the jobs go out in BatchWrite RPCs of
        up to 500 creates each. Creates are conditional, so an idempotency key already used (or
        used twice in the call) returns the job it names, as `enqueue` does, and the others are
        written all the same. A write refused for another reason is retried once, then raised
        (`EnqueueFailed`, listing what was created and what was not).
        """
        prepared: list[tuple[str, dict[str, Any]]] = []
        for n, item in enumerate(jobs):
            if not isinstance(item, Mapping):
                raise ConfigurationError(
                    f"job {n}: each job is a mapping of enqueue's arguments, got "
                    f"{item.__class__.__name__}"
                )
            unknown = set(item) - _ENQUEUE_ARGUMENTS
            if unknown:
                raise ConfigurationError(
                    f"job {n}: unknown argument(s) {', '.join(sorted(map(str, unknown)))}; "
                    f"expected {', '.join(sorted(_ENQUEUE_ARGUMENTS))}"
                )
            if "type" not in item:
                raise ConfigurationError(f"job {n}: a job needs a type")
            try:
                prepared.append(self._prepare(**item))
            except (ConfigurationError, TypeError, AttributeError) as error:
                raise ConfigurationError(f"job {n}: {error}") from None
        first_of: dict[str, int] = {}
        for n, (job_id, _data) in enumerate(prepared):
            first_of.setdefault(job_id, n)  # the same key twice in one call: one job
        unique = [
            (job_id, data) for n, (job_id, data) in enumerate(prepared) if first_of[job_id] == n
        ]
        found: dict[str, Job] = {}
        existing: list[str] = []
        for start in range(0, len(unique), BATCH_LIMIT):
            chunk = unique[start : start + BATCH_LIMIT]
            pending = chunk
            for attempt in range(2):
                results = self.store.create_many(pending)
                retry = []
                for (job_id, data), created in zip(pending, results, strict=True):
                    if created.job is not None:
                        found[job_id] = created.job
                        self.telemetry.count("enqueued", str(data["type"]))
                    elif created.exists:
                        existing.append(job_id)
                    else:
                        retry.append((job_id, data, created.message))
                if not retry:
                    break
                if attempt == 1:
                    made = [job_id for job_id, _d in unique if job_id in found]
                    raise EnqueueFailed(made, {job_id: message for job_id, _d, message in retry})
                pending = [(job_id, data) for job_id, data, _m in retry]
        self._register_fair_keys((job_id, data) for job_id, data in unique if job_id in found)
        wanted = dict(unique)
        for start in range(0, len(existing), BATCH_LIMIT):
            for job_id, job in self.store.get_many(
                existing[start : start + BATCH_LIMIT], "enqueue_many:existing"
            ).items():
                found[job_id] = _keyed(job, str(wanted[job_id]["type"]), wanted[job_id].get("key"))
        missing = {job_id for job_id in existing if job_id not in found}
        if missing:  # deleted between the refused create and the read: create those again
            again = [(job_id, data) for job_id, data in unique if job_id in missing]
            for (job_id, _data), created in zip(again, self.store.create_many(again), strict=True):
                if created.job is None:
                    raise EnqueueFailed(
                        [job_id for job_id, _d in unique if job_id in found],
                        {job_id: created.message or "created and deleted meanwhile"},
                    )
                found[job_id] = created.job
        return [found[job_id] for job_id, _data in prepared]

    def _register_fair_keys(
        self, jobs: Iterable[tuple[str, Mapping[str, Any]]], writer: Any = None
    ) -> None:
        """Tell the runners the keys of new jobs (id, document fields) of fair types
        (jobs_lib.limits.fair): one write per key, after the jobs exist. Best effort: a key missed
        here is found by the runners' sweep."""
        entries: list[tuple[str, str, str, str | None]] = []
        for job_id, data in jobs:
            spec = self.registry.get(str(data.get("type")))
            if spec is not None and spec.fair_key is not None:
                key = fair_value(data.get(spec.fair_key))
                entries.append((spec.type, spec.fair_key, key, job_id))
        if not entries:
            return
        if writer is not None:
            self.store.fair.register(entries, writer)
            return
        try:
            self.store.fair.register(entries)
        except Exception:
            log.warning("could not note the fair-share keys of new jobs", exc_info=True)

    def set_fair_weight(self, job_type: str, key: str, weight: float | None) -> None:
        """Give a key of a fair type (``fair_key=``) a larger or smaller share of the runners: a
        weight of 3 takes three turns where a key of weight 1 takes one; None restores 1. Runners
        read weights within `jobs_lib.limits.fair.WEIGHTS_TTL` seconds."""
        if weight is not None and not (
            isinstance(weight, int | float)
            and not isinstance(weight, bool)
            and 0 < weight <= MAX_WEIGHT
        ):
            raise ConfigurationError(
                f"a fair-share weight must be a number above 0 and at most {MAX_WEIGHT:g}, got "
                f"{weight!r}"
            )
        if not isinstance(key, str) or not key:
            raise ConfigurationError(f"a fair-share key must be a non-empty string, got {key!r}")
        self.store.fair.set_weight(job_type, key, weight)

    def wait(self, job_id: str, timeout: float = 60.0) -> Job:
        """Block until the job is completed, failed or cancelled, and return it as it ended.

        Built on a snapshot listener on that one document (one read per change it sees, none
        while it waits); raises `JobNotFound` if there is no such document (or it is deleted
        while waited on), and `TimeoutError` when it has not finished within `timeout` seconds.
        """
        done = threading.Event()
        ended: list[Job | None] = []

        def changed(job: Job | None) -> None:
            if job is None or (job.status is not None and job.status.finished):
                ended.append(job)  # None: the document does not exist, or was just deleted
                done.set()

        stop = self.store.watch(job_id, changed)
        try:
            if not done.wait(timeout):
                raise TimeoutError(f"job {job_id!r} did not finish within {timeout:g}s")
        finally:
            stop()
        if ended[0] is None:
            raise JobNotFound(f"no job with id {job_id!r}")
        return ended[0]

    def get(self, job_id: str) -> Job:
        """The job with this id; raises `JobNotFound`."""
        job = self.store.get(job_id)
        if job is None:
            raise JobNotFound(f"no job with id {job_id!r}")
        return job

    def cancel(self, job_id: str) -> Job:
        """Cancel a job: a pending or blocked one ends ``cancelled`` now, a running one is asked to
        stop.

        Raises `InvalidJobState` for a finished job, `JobNotFound` for no job. The jobs of its flow
        that wait for it are then dealt with by their flow's ``onParentFailure``.
        """
        job, ended = self._cancel(job_id)
        if ended and job.has_follow_ups:
            self.flows.release([job_id])
        return self.get(job_id)

    def _cancel(self, job_id: str) -> tuple[Job, bool]:
        """Cancel without dealing with the jobs that wait for it; returns the job as read and
        whether it ended cancelled here."""

        def decide(job: Job) -> Change | None:
            if job.status in (Status.PENDING, Status.BLOCKED):
                return Cancelled()
            if job.status is Status.IN_PROGRESS:
                return None if job.cancel_requested else CancelRequest()
            raise InvalidJobState(
                f"job {job_id} is {job.status.value if job.status else 'unreadable'}; only "
                f"pending, blocked and running jobs can be cancelled"
            )

        job, written = self.store.update_checked(job_id, decide)
        if job is None:
            raise JobNotFound(f"no job with id {job_id!r}")
        return job, written and job.status is not Status.IN_PROGRESS

    # -- flows -----------------------------------------------------------------

    def flow(
        self,
        jobs: Iterable[Mapping[str, Any]],
        *,
        on_parent_failure: Policy = "fail",
        flow_id: str | None = None,
        atomic: bool = True,
    ) -> Flow:
        """Create jobs that wait for one another: each item holds `enqueue`'s arguments, a ``name``
        and ``depends_on`` (the names of the jobs it waits for).

        A job with parents starts ``blocked`` and becomes ``pending`` once every parent has
        completed. `on_parent_failure` says what a failed or cancelled parent means for the jobs
        that wait for it: ``fail`` (they end ``cancelled``, naming the parent), ``ignore`` (they run
        once every parent has ended) or ``wait`` (they stay blocked until the parent is retried to
        success). Everything is checked first (`ConfigurationError`: unknown names, cycles, more
        than 50 parents, too many jobs); up to 500 jobs are written in one atomic commit. Larger
        flows (up to 20,000) need ``atomic=False``: commits of 500, the jobs that wait first and
        the first to run last, so that nothing starts before the whole flow is written.

        The job ids derive from the flow id, so creating a flow again with the same `flow_id`
        creates nothing new (and finishes a non-atomic creation that stopped partway).
        """
        if on_parent_failure not in POLICIES:
            raise ConfigurationError(
                f"on_parent_failure must be one of {', '.join(POLICIES)}, got {on_parent_failure!r}"
            )
        steps = plan(jobs, atomic=atomic)
        flow_id = flow_id or self.store.new_id()
        if not isinstance(flow_id, str) or not flow_id or len(flow_id) > 200:
            raise ConfigurationError("flow_id must be a non-empty string of at most 200 characters")
        ids = {step.name: key_to_id(f"flow:{flow_id}", step.name) for step in steps}
        parents = {d for step in steps for d in step.depends_on}
        prepared: list[tuple[str, dict[str, Any]]] = []
        for step in steps:
            unknown = set(step.arguments) - _ENQUEUE_ARGUMENTS
            if unknown:
                raise ConfigurationError(
                    f"flow job {step.name!r}: unknown argument(s) "
                    f"{', '.join(sorted(map(str, unknown)))}"
                )
            if "type" not in step.arguments:
                raise ConfigurationError(f"flow job {step.name!r}: a job needs a type")
            try:
                _id, data = self._prepare(**step.arguments)
            except (ConfigurationError, TypeError, AttributeError) as error:
                raise ConfigurationError(f"flow job {step.name!r}: {error}") from None
            job_id = ids[step.name]
            data.update({"shard": shard_of(job_id), "flowId": flow_id, "flowName": step.name})
            if step.depends_on:
                data.update(
                    {
                        "status": Status.BLOCKED.value,
                        "dependsOn": [ids[d] for d in step.depends_on],
                        "onParentFailure": on_parent_failure,
                    }
                )
            if step.name in parents:
                data["dependentsSettled"] = False
            prepared.append((job_id, data))
        for start in range(0, len(prepared), ATOMIC_LIMIT):
            chunk = prepared[start : start + ATOMIC_LIMIT]
            try:
                self.store.create_atomically(chunk)
            except DocumentExists:
                existing = self.store.get_many([job_id for job_id, _d in chunk], "flow:existing")
                names = {job_id: data.get("flowName") for job_id, data in chunk}
                if any(
                    job.flow_id != flow_id or job.flow_name != names.get(job.id)
                    for job in existing.values()
                ):
                    raise IdTaken(
                        f"the ids of flow {flow_id!r} are held by documents that are not this "
                        f"flow's jobs"
                    ) from None
                if atomic:
                    break  # created before (the same flow id): nothing new
                # A creation that stopped partway: write what is missing, one document at a time.
                missing = [(job_id, data) for job_id, data in chunk if job_id not in existing]
                for (job_id, _d), created in zip(
                    missing, self.store.create_many(missing), strict=True
                ):
                    if created.job is None and not created.exists:
                        raise EnqueueFailed([], {job_id: created.message}) from None
            for _job_id, data in chunk:
                self.telemetry.count("enqueued", str(data["type"]))
            self._register_fair_keys(chunk)
        return Flow(flow_id, ids)

    def flow_jobs(self, flow_id: str, limit: int = 20_000) -> list[Job]:
        """The jobs of a flow, in id order (one query per 500)."""
        found: list[Job] = []
        after: str | None = None
        while len(found) < limit:
            page = self.store.flow_page(flow_id, after, min(500, limit - len(found)))
            found += page
            if len(page) < 500:
                break
            after = page[-1].id
        return found

    def cancel_flow(self, flow_id: str) -> list[str]:
        """Cancel what has not finished in a flow: blocked and pending jobs end ``cancelled`` now,
        running ones are asked to stop. Returns the ids it cancelled or asked to stop; raises
        `JobNotFound` when no job has this flow id."""
        jobs = self.flow_jobs(flow_id)
        if not jobs:
            raise JobNotFound(f"no flow with id {flow_id!r}")
        # The jobs that wait first, so that no parent's end releases one of them meanwhile; their
        # release is dealt with once all are cancelled (it then finds none still blocked).
        order = {Status.BLOCKED: 0, Status.PENDING: 1, Status.IN_PROGRESS: 2}
        touched: list[str] = []
        ended: list[str] = []
        for job in sorted(
            (j for j in jobs if j.status in order), key=lambda j: order[j.status] if j.status else 3
        ):
            with contextlib.suppress(InvalidJobState, JobNotFound):
                found, cancelled = self._cancel(job.id)
                touched.append(job.id)
                if cancelled and found.has_follow_ups:
                    ended.append(job.id)
        self.flows.release(ended)
        return touched

    def retry_failed(
        self, job_type: str | None = None, limit: int = 10_000, *, org_id: str | None = None
    ) -> list[str]:
        """Send failed jobs (the dead letters: attempts exhausted or poison) back to pending, in
        bulk.

        Returns the ids retried. Jobs that change meanwhile are left as they are.
        """
        retried: list[str] = []
        after: str | None = None
        while len(retried) < limit:
            page = self.store.page(
                status=Status.FAILED.value,
                job_type=job_type,
                after=after,
                limit=min(200, limit - len(retried)),
                org_id=org_id,
            )
            if not page:
                break
            for job in page:
                _found, written = self.store.update_checked(
                    job.id, lambda j: Retried() if j.status is Status.FAILED else None
                )
                if written:
                    retried.append(job.id)
            after = page[-1].id
        return retried

    def pause(self, job_type: str) -> None:
        """Pause a job type: its pending jobs stay pending until `resume` (running ones finish)."""
        self.store.limits.set_paused(job_type, True)

    def resume(self, job_type: str) -> None:
        """Resume a paused job type."""
        self.store.limits.set_paused(job_type, False)

    def paused(self) -> set[str]:
        """The paused job types."""
        return self.store.limits.paused_types()

    def retry(self, job_id: str) -> Job:
        """Send a failed or cancelled job back to pending with its attempts reset."""

        def decide(job: Job) -> Change | None:
            if not job.can_retry:
                state = job.status.value if job.status else "unreadable"
                raise InvalidJobState(
                    f"job {job_id} is {state}; only failed and cancelled jobs can be retried"
                )
            return Retried()

        job, _written = self.store.update_checked(job_id, decide)
        if job is None:
            raise JobNotFound(f"no job with id {job_id!r}")
        return self.get(job_id)


__all__ = ["Flow", "JobsClient", "key_to_id"]

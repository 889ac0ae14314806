"""The handler registry: a plain mapping from job type to handler, no I/O.

    from jobs_lib import handler

    @handler("resize_image", input=ResizeInput, max_attempts=5, timeout=120)
    def resize(ctx):
        ...

A type registered twice is an error; `aliases` let a type be renamed without
stranding jobs already queued under the old name.
"""

from __future__ import annotations

import builtins
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import BaseModel

from jobs_lib.errors import ConfigurationError, CronError, DuplicateHandlerError
from jobs_lib.model.retry import Backoff

if TYPE_CHECKING:
    from jobs_lib.context import JobContext

HandlerFn = Callable[["JobContext[Any]"], Any]

DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_TIMEOUT = 300.0
DEFAULT_RETENTION = timedelta(days=30)
#: Event-driven Cloud Functions stop at 540 s; a created-event runs handlers whose
#: timeout leaves a margin under that, and leaves longer ones to the tick.
EVENT_BUDGET = 510.0
#: HTTP Cloud Functions (2nd gen) stop at 60 minutes: handlers with a longer
#: timeout must be declared ``worker_only`` and run on ``jobs worker``.
MAX_FUNCTION_TIMEOUT = 3540.0


_PERIODS = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
}
#: Starts per window a rate may allow (one token document each).
MAX_RATE = 100_000
#: The job fields a handler may share its capacity by (`fair_key`): top-level fields the indexes
#: of firestore.indexes.json cover.
FAIR_FIELDS = ("orgId", "createdBy")


def parse_rate(rate: str, job_type: str = "") -> tuple[int, float]:
    """``"100/s"`` -> (100, 1.0): starts per window and the window's seconds; raises
    `ConfigurationError`."""
    count, _, unit = str(rate).partition("/")
    period = _PERIODS.get(unit.strip().lower())
    try:
        starts = int(count.strip())
    except ValueError:
        starts = 0
    if period is None or not 1 <= starts <= MAX_RATE:
        raise ConfigurationError(
            f"{job_type}: rate must look like '100/s', '20/m' or '1000/h' (1 to {MAX_RATE} "
            f"starts per second, minute or hour), got {rate!r}"
        )
    return starts, period


@dataclass(frozen=True)
class HandlerSpec:
    """A handler and the options it runs with."""

    type: str
    fn: HandlerFn
    #: A pydantic model class, or "module:Name" naming one (imported when first used, so that a
    #: function instance that never runs this handler never imports pydantic for it).
    input: builtins.type[BaseModel] | str | None = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    backoff: Backoff = field(default_factory=Backoff)
    timeout: float = DEFAULT_TIMEOUT
    aliases: tuple[str, ...] = ()
    retention: timedelta = DEFAULT_RETENTION
    description: str = ""
    #: Only ``jobs worker`` runs this handler; Cloud Functions leave its jobs alone.
    worker_only: bool = False
    #: At most this many jobs of this type run at once, across every worker and instance ...
    concurrency: int | None = None
    #: ... per value of this job field (e.g. "orgId": at most N per organisation).
    concurrency_key: str | None = None
    #: A URL to POST to when one of its jobs ends (jobs_lib.engine.webhooks), unless the job names
    #: its own; it stays on the server (jobs carry `webhook: true`, the delivery looks the URL up
    #: here).
    webhook: str | None = None
    #: At most this many starts per second, minute or hour ("100/s", "20/m", "1000/h"), across every
    #: worker and function instance (jobs_lib.limits.rates) ...
    rate: str | None = None
    #: ... per value of this job field (e.g. "orgId": that many per organisation).
    rate_key: str | None = None
    #: After this many failed attempts in a row (seen by one runner), the type pauses itself for
    #: `breaker_cooldown` seconds, then lets one job through and resumes when it succeeds
    #: (jobs_lib.limits.breakers).
    breaker: int | None = None
    breaker_cooldown: float = 60.0
    #: The runner's own type: never created, retried or scheduled by users (the REST API and the
    #: project's rules refuse it). Every ``jobs.*`` type is internal whatever this says.
    internal: bool = False
    #: The handler checkpoints (``ctx.checkpoint``) and may be continued in another invocation when
    #: this one nears its end (jobs_lib.engine.durable): its `timeout` is then its time over all its
    #: slices, and it runs on the functions however long that is.
    continuable: bool = False
    #: Share the runner's capacity for this type round-robin between the values of this job field
    #: (``orgId`` or ``createdBy``), weighted (jobs_lib.limits.fair): one tenant's backlog never
    #: starves another's jobs.
    fair_key: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.type, str) or not self.type.strip():
            raise ConfigurationError(
                f"a handler type must be a non-empty string, got {self.type!r}"
            )
        if self.max_attempts < 1:
            raise ConfigurationError(
                f"{self.type}: max_attempts must be at least 1, got {self.max_attempts}"
            )
        if self.timeout <= 0:
            raise ConfigurationError(f"{self.type}: timeout must be positive, got {self.timeout}")
        if self.concurrency is not None and not 1 <= self.concurrency <= 100:
            raise ConfigurationError(
                f"{self.type}: concurrency must be between 1 and 100, got {self.concurrency}"
            )
        if self.concurrency_key is not None and self.concurrency is None:
            raise ConfigurationError(f"{self.type}: concurrency_key needs concurrency")
        if self.rate is not None:
            parse_rate(self.rate, self.type)
            if self.concurrency is not None:
                raise ConfigurationError(
                    f"{self.type}: rate and concurrency together are not supported; choose one"
                )
        if self.breaker is not None and not 1 <= self.breaker <= 1000:
            raise ConfigurationError(
                f"{self.type}: breaker (failures in a row before it opens) must be between 1 and "
                f"1000, got {self.breaker}"
            )
        if not 1 <= self.breaker_cooldown <= 86400:
            raise ConfigurationError(
                f"{self.type}: breaker_cooldown must be between 1 and 86400 seconds, got "
                f"{self.breaker_cooldown}"
            )
        if self.fair_key is not None and self.fair_key not in FAIR_FIELDS:
            raise ConfigurationError(
                f"{self.type}: fair_key must be one of {', '.join(FAIR_FIELDS)} (the fields its "
                f"indexes cover), got {self.fair_key!r}"
            )
        if self.rate_key is not None and self.rate is None:
            raise ConfigurationError(f"{self.type}: rate_key needs rate")
        if self.webhook is not None:
            from jobs_lib.engine.webhooks import check_url

            check_url(
                self.webhook, resolve=False
            )  # its address is checked at each delivery (it is never written to a job)
        if self.timeout > MAX_FUNCTION_TIMEOUT and not self.worker_only and not self.continuable:
            raise ConfigurationError(
                f"{self.type}: a timeout of {self.timeout:g}s is longer than any Cloud Function "
                f"may run "
                f"({MAX_FUNCTION_TIMEOUT:g}s with margin); make it continuable=True (it "
                f"checkpoints and runs in slices) "
                "or declare worker_only=True and run it with `jobs worker`"
            )
        if isinstance(self.input, str):
            module, _, name = self.input.partition(":")
            if not module or not name.isidentifier():
                raise ConfigurationError(
                    f"{self.type}: input must be a pydantic model class or 'module:Name', got "
                    f"{self.input!r}"
                )
        elif self.input is not None:
            from pydantic import BaseModel

            if not (inspect.isclass(self.input) and issubclass(self.input, BaseModel)):
                raise ConfigurationError(
                    f"{self.type}: input must be a pydantic model class, got {self.input!r}"
                )
        if not callable(self.fn):
            raise ConfigurationError(f"{self.type}: handler {self.fn!r} is not callable")

    @property
    def input_model(self) -> builtins.type[BaseModel] | None:
        """The handler's input model (imported on first use when named as "module:Name")."""
        if not isinstance(self.input, str):
            return self.input
        import importlib

        module, _, name = self.input.partition(":")
        model: builtins.type[BaseModel] = getattr(importlib.import_module(module), name)
        return model

    @property
    def is_internal(self) -> bool:
        """True for a type users may not create, retry or schedule (`internal`, or ``jobs.*``)."""
        return self.internal or is_internal_type(self.type)

    @property
    def is_async(self) -> bool:
        """True when the handler is a coroutine function."""
        return inspect.iscoroutinefunction(self.fn)


@dataclass(frozen=True)
class CodeSchedule:
    """A recurring job declared in code (a system schedule): no document needed."""

    name: str
    type: str
    cron: str
    timezone: str = "UTC"
    metadata: dict[str, Any] = field(default_factory=dict)


class HandlerRegistry:
    """Job types mapped to their handlers, and the schedules declared in code."""

    def __init__(self) -> None:
        self._specs: dict[str, HandlerSpec] = {}
        self._aliases: dict[str, str] = {}
        self._schedules: dict[str, CodeSchedule] = {}

    def register(self, spec: HandlerSpec) -> HandlerSpec:
        """Add a handler; a type or alias already taken raises `DuplicateHandlerError`."""
        for name in (spec.type, *spec.aliases):
            if name in self._specs or name in self._aliases:
                owner = self.get(name)
                where = f"{owner.fn.__module__}.{owner.fn.__qualname__}" if owner else "?"
                raise DuplicateHandlerError(
                    f"a handler for job type {name!r} is already registered ({where})"
                )
        self._specs[spec.type] = spec
        for alias in spec.aliases:
            self._aliases[alias] = spec.type
        return spec

    def handler(
        self,
        type: str,
        *,
        input: type[BaseModel] | str | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        backoff: Backoff | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        aliases: Iterable[str] = (),
        retention: timedelta = DEFAULT_RETENTION,
        worker_only: bool = False,
        schedule: str | None = None,
        timezone: str = "UTC",
        concurrency: int | None = None,
        concurrency_key: str | None = None,
        webhook: str | None = None,
        rate: str | None = None,
        rate_key: str | None = None,
        breaker: int | None = None,
        breaker_cooldown: float = 60.0,
        internal: bool = False,
        continuable: bool = False,
        fair_key: str | None = None,
    ) -> Callable[[HandlerFn], HandlerFn]:
        """Decorator that registers a function as the handler for `type`.

        With `schedule` (a cron expression, in `timezone`), the job also runs on that schedule,
        declared here in code (see `add_schedule`). With `internal`, users may not create, retry or
        schedule its jobs (the REST API refuses them; the rules' list of client types should not
        hold it): only the server's own code enqueues it. With `continuable`, the handler
        checkpoints and may run in slices (jobs_lib.engine.durable): `timeout` is then its time over
        every slice, and the functions run it however long that is. With `fair_key` ("orgId" or
        "createdBy"), the runner shares its capacity for the type between that field's values
        (jobs_lib.limits.fair)."""

        def decorate(fn: HandlerFn) -> HandlerFn:
            self.register(
                HandlerSpec(
                    type=type,
                    fn=fn,
                    input=input,
                    max_attempts=max_attempts,
                    backoff=backoff or Backoff(),
                    timeout=timeout,
                    aliases=tuple(aliases),
                    retention=retention,
                    description=(inspect.getdoc(fn) or "").split("\n")[0],
                    worker_only=worker_only,
                    concurrency=concurrency,
                    concurrency_key=concurrency_key,
                    webhook=webhook,
                    rate=rate,
                    rate_key=rate_key,
                    breaker=breaker,
                    breaker_cooldown=breaker_cooldown,
                    internal=internal,
                    continuable=continuable,
                    fair_key=fair_key,
                )
            )
            if schedule is not None:
                self.add_schedule(type, type, schedule, timezone=timezone)
            return fn

        return decorate

    def add_schedule(
        self,
        name: str,
        job_type: str,
        cron: str,
        *,
        timezone: str = "UTC",
        metadata: dict[str, Any] | None = None,
    ) -> CodeSchedule:
        """Declare a recurring job in code; a bad cron or timezone raises at once."""
        from jobs_lib.model.cron import check

        try:
            check(cron, timezone)
        except CronError as exc:
            raise ConfigurationError(f"schedule {name!r}: {exc}") from None
        if name in self._schedules:
            raise DuplicateHandlerError(f"a schedule named {name!r} is already declared")
        declared = CodeSchedule(name, job_type, cron, timezone, dict(metadata or {}))
        self._schedules[name] = declared
        return declared

    def schedules(self) -> list[CodeSchedule]:
        """The schedules declared in code."""
        return list(self._schedules.values())

    def get(self, job_type: str | None) -> HandlerSpec | None:
        """The handler for a type or alias, or None."""
        if job_type is None:
            return None
        spec = self._specs.get(job_type)
        if spec is None and job_type in self._aliases:
            spec = self._specs[self._aliases[job_type]]
        return spec

    def unregister(self, job_type: str) -> None:
        """Remove a type, its aliases and its code schedules (tests use this to stay
        independent)."""
        spec = self._specs.pop(job_type, None)
        if spec:
            for alias in spec.aliases:
                self._aliases.pop(alias, None)
        for name in [n for n, s in self._schedules.items() if s.type == job_type]:
            del self._schedules[name]

    def types(self) -> list[str]:
        """Registered type names, sorted."""
        return sorted(self._specs)

    def specs(self) -> list[HandlerSpec]:
        """Every registered handler, by type."""
        return [self._specs[name] for name in sorted(self._specs)]

    def user_types(self) -> list[str]:
        """The registered types users may create (every type but the internal ones), sorted."""
        return sorted(name for name, spec in self._specs.items() if not spec.is_internal)

    def is_internal(self, job_type: str | None) -> bool:
        """True for a type users may not create, retry or schedule: ``jobs.*``, or a handler
        registered with ``internal=True`` (an alias of one too)."""
        if job_type is None:
            return False
        spec = self.get(job_type)
        return is_internal_type(job_type) or (spec is not None and spec.is_internal)

    def __contains__(self, job_type: object) -> bool:
        return isinstance(job_type, str) and self.get(job_type) is not None

    def __len__(self) -> int:
        return len(self._specs)


#: Job types in this namespace are jobs_lib's own (webhook deliveries, housekeeping).
INTERNAL_PREFIX = "jobs."


def is_internal_type(job_type: str) -> bool:
    """True for a type in jobs_lib's own namespace (``jobs.*``), whether or not it is registered."""
    return job_type.startswith(INTERNAL_PREFIX)


#: The registry that `jobs_lib.handler` registers into and the worker and functions use.
default_registry = HandlerRegistry()
handler = default_registry.handler


__all__ = [
    "EVENT_BUDGET",
    "INTERNAL_PREFIX",
    "MAX_FUNCTION_TIMEOUT",
    "CodeSchedule",
    "HandlerRegistry",
    "HandlerSpec",
    "default_registry",
    "handler",
    "is_internal_type",
]

"""The errors jobs_lib raises, as one small tree.

    JobsError
    ├── ConfigurationError        the library was set up wrongly (handler, option, setting)
    │   ├── DuplicateHandlerError  two handlers claim the same type
    │   ├── InvalidSchedule        a cron, timezone, type or input that cannot be scheduled
    │   ├── CronError              a cron expression or timezone that cannot be used (ValueError)
    │   ├── WebhookRefused         a webhook URL that may not be called (scheme, private address)
    │   └── InitRefused            `jobs init` cannot merge into a project safely (nothing written)
    ├── InvalidValue               a value read from outside cannot be used (also a ValueError)
    │   ├── TimeParseError         a field holds something that is not a time
    │   └── InvalidPageToken       a page token this listing did not issue
    ├── IdTaken                    an id jobs_lib derives is held by a document it did not write
    ├── JobNotFound                no job document with that id
    ├── ScheduleNotFound           no schedule document with that id
    ├── InvalidJobState            the job is not in a state that allows the action
    ├── StoreError                 Firestore did not do what the store asked
    │   ├── DocumentExists         a create found the id taken
    │   ├── EnqueueFailed          Firestore refused some jobs of an enqueue_many
    │   ├── Contention             the document kept changing under a read-decide-write
    │   ├── StoreUnavailable       Firestore could not be reached in time (retried already)
    │   └── StoreRefused           Firestore refused the request (invalid content, permission)
    ├── EmulatorUnavailable        the Firestore emulator cannot be started here
    ├── ApiError                   a REST answer other than success (status code, field errors)
    ├── Unauthenticated            the request has no valid Firebase ID token
    ├── AuthUnavailable            the keys that verify tokens could not be fetched
    └── JobInterrupt               raised inside a handler to stop it early
        ├── JobCancelled           the owner asked to cancel the running job
        └── LeaseLost              this run no longer owns the job (timed out or taken over)

    PermanentError                 raised by a handler: fail now, do not retry

Handlers raise ordinary exceptions to ask for a retry; `PermanentError` ends the
job `failed` at once. The docstring of each class is its default message.
Nothing outside ``jobs_lib.store`` sees a Google API exception: the store
translates them into the `StoreError` branch.

Three exceptions live beside the code that raises and catches them, because they never leave
it: `jobs_lib.engine.runner.InvalidInput` (metadata that fails a handler's model, recorded as the
job's error), `jobs_lib.engine.webhooks.DeliveryFailed` (a delivery to retry) and
`jobs_lib.store.rate_tokens.TokenTaken` (another claimer has a rate token). The durable jobs'
`Suspend` is a `BaseException` for the same reason: a handler's ``except Exception`` must not
catch it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class JobsError(Exception):
    """Something went wrong in jobs_lib."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigurationError(JobsError):
    """jobs_lib is configured wrongly."""


class DuplicateHandlerError(ConfigurationError):
    """A handler is already registered for this job type."""


class InvalidSchedule(ConfigurationError):
    """The schedule cannot be saved as given."""


class WebhookRefused(ConfigurationError):
    """A webhook URL that may not be called (bad scheme, private address)."""


class InitRefused(ConfigurationError):
    """`jobs init` cannot merge into this project safely; nothing was written."""


class CronError(ConfigurationError, ValueError):
    """A cron expression or timezone that cannot be used."""


class InvalidValue(JobsError, ValueError):
    """A value read from outside cannot be used."""


class TimeParseError(InvalidValue):
    """A field holds something that is not a timestamp."""


class InvalidPageToken(InvalidValue):
    """The page token is not one this listing issued for these filters."""


class IdTaken(JobsError):
    """An id jobs_lib derives (an idempotency key's, a flow's) is held by a document jobs_lib did
    not write; the library never treats such a document as its own."""


class JobNotFound(JobsError):
    """No job document has this id."""


class ScheduleNotFound(JobsError):
    """No schedule document has this id."""


class InvalidJobState(JobsError):
    """The job's status does not allow this action."""


class StoreError(JobsError):
    """Firestore did not do what the store asked."""


class DocumentExists(StoreError):
    """A document with this id already exists."""


class Contention(StoreError):
    """The document kept changing while we tried to update it; try again later."""


class StoreUnavailable(StoreError):
    """Firestore could not be reached in time."""


class StoreRefused(StoreError):
    """Firestore refused the request."""


class EnqueueFailed(StoreError):
    """Firestore refused some of the jobs of an `enqueue_many`."""

    def __init__(self, created: list[str], refused: dict[str, str]) -> None:
        self.created = created
        self.refused = refused
        first = next(iter(refused.items()))
        super().__init__(
            f"{len(refused)} job(s) were not created ({first[0]}: {first[1]}); {len(created)} were"
        )


class EmulatorUnavailable(JobsError):
    """The Firestore emulator cannot be started on this machine."""


class ApiError(JobsError):
    """An answer other than success: status code, message, field errors, extra headers."""

    def __init__(
        self,
        code: int,
        message: str,
        details: Iterable[Any] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = list(details)
        self.headers = headers or {}


class Unauthenticated(JobsError):
    """The request has no valid Firebase ID token."""


class AuthUnavailable(JobsError):
    """The keys that verify tokens could not be fetched; the request may be retried."""


class JobInterrupt(JobsError):
    """The running job was interrupted."""


class JobCancelled(JobInterrupt):
    """The job was cancelled at its owner's request."""


class LeaseLost(JobInterrupt):
    """This run no longer holds the job's lease; its writes are refused."""


class PermanentError(Exception):
    """The job cannot succeed; retrying will not help."""


__all__ = [
    "ApiError",
    "AuthUnavailable",
    "ConfigurationError",
    "Contention",
    "CronError",
    "DocumentExists",
    "DuplicateHandlerError",
    "EmulatorUnavailable",
    "EnqueueFailed",
    "IdTaken",
    "InitRefused",
    "InvalidJobState",
    "InvalidPageToken",
    "InvalidSchedule",
    "InvalidValue",
    "JobCancelled",
    "JobInterrupt",
    "JobNotFound",
    "JobsError",
    "LeaseLost",
    "PermanentError",
    "ScheduleNotFound",
    "StoreError",
    "StoreRefused",
    "StoreUnavailable",
    "TimeParseError",
    "Unauthenticated",
    "WebhookRefused",
]

"""The errors jobs_lib raises, as one small tree.

    JobsError
    ├── ConfigurationError        the library was set up wrongly (bad handler, bad option)
    │   └── DuplicateHandlerError  two handlers claim the same type
    ├── JobNotFound                no job document with that id
    ├── ScheduleNotFound           no schedule document with that id
    ├── InvalidSchedule            a cron, timezone, type or input that cannot be scheduled
    ├── InvalidJobState            the job is not in a state that allows the action
    ├── EmulatorUnavailable        the Firestore emulator cannot be started here
    └── JobInterrupt               raised inside a handler to stop it early
        ├── JobCancelled           the owner asked to cancel the running job
        └── LeaseLost              this run no longer owns the job (timed out or taken over)

    PermanentError                 raised by a handler: fail now, do not retry

Handlers raise ordinary exceptions to ask for a retry; `PermanentError` ends the
job `failed` at once. The docstring of each class is its default message.
"""

from __future__ import annotations


class JobsError(Exception):
    """Something went wrong in jobs_lib."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigurationError(JobsError):
    """jobs_lib is configured wrongly."""


class DuplicateHandlerError(ConfigurationError):
    """A handler is already registered for this job type."""


class JobNotFound(JobsError):
    """No job document has this id."""


class ScheduleNotFound(JobsError):
    """No schedule document has this id."""


class InvalidSchedule(ConfigurationError):
    """The schedule cannot be saved as given."""


class InvalidJobState(JobsError):
    """The job's status does not allow this action."""


class EmulatorUnavailable(JobsError):
    """The Firestore emulator cannot be started on this machine."""


class JobInterrupt(JobsError):
    """The running job was interrupted."""


class JobCancelled(JobInterrupt):
    """The job was cancelled at its owner's request."""


class LeaseLost(JobInterrupt):
    """This run no longer holds the job's lease; its writes are refused."""


class PermanentError(Exception):
    """The job cannot succeed; retrying will not help."""


__all__ = [
    "ConfigurationError",
    "DuplicateHandlerError",
    "EmulatorUnavailable",
    "InvalidJobState",
    "InvalidSchedule",
    "JobCancelled",
    "JobInterrupt",
    "JobNotFound",
    "JobsError",
    "LeaseLost",
    "PermanentError",
    "ScheduleNotFound",
]

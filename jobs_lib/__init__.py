"""jobs_lib: a Firestore-native background job runner.

Apps create documents in ``backgroundJobs``; Cloud Functions or a long-lived
worker claim them atomically, run the handler registered for their ``type``
and write status, progress, result or error back.

    from jobs_lib import JobContext, handler

    @handler("send_welcome_email", max_attempts=5)
    def send_welcome_email(ctx: JobContext) -> dict:
        ...
"""

import typing as _typing

if _typing.TYPE_CHECKING:
    from jobs_lib.app import App
    from jobs_lib.client import JobsClient
    from jobs_lib.config import Settings
    from jobs_lib.context import JobContext
    from jobs_lib.errors import (
        ConfigurationError,
        DuplicateHandlerError,
        InvalidJobState,
        JobCancelled,
        JobNotFound,
        JobsError,
        LeaseLost,
        PermanentError,
    )
    from jobs_lib.model.job import Job, Status
    from jobs_lib.model.retry import Backoff
    from jobs_lib.registry import HandlerRegistry, default_registry, handler

#: Where each public name lives: imported on first access (PEP 562), so that a Cloud Function that
#: imports one module of the package does not load all of it (cold start).
_EXPORTS = {
    "App": "jobs_lib.app",
    "Backoff": "jobs_lib.model.retry",
    "ConfigurationError": "jobs_lib.errors",
    "DuplicateHandlerError": "jobs_lib.errors",
    "HandlerRegistry": "jobs_lib.registry",
    "InvalidJobState": "jobs_lib.errors",
    "Job": "jobs_lib.model.job",
    "JobCancelled": "jobs_lib.errors",
    "JobContext": "jobs_lib.context",
    "JobNotFound": "jobs_lib.errors",
    "JobsClient": "jobs_lib.client",
    "JobsError": "jobs_lib.errors",
    "LeaseLost": "jobs_lib.errors",
    "PermanentError": "jobs_lib.errors",
    "Settings": "jobs_lib.config",
    "Status": "jobs_lib.model.job",
    "default_registry": "jobs_lib.registry",
    "handler": "jobs_lib.registry",
}


def __getattr__(name: str) -> _typing.Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'jobs_lib' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "App",
    "Backoff",
    "ConfigurationError",
    "DuplicateHandlerError",
    "HandlerRegistry",
    "InvalidJobState",
    "Job",
    "JobCancelled",
    "JobContext",
    "JobNotFound",
    "JobsClient",
    "JobsError",
    "LeaseLost",
    "PermanentError",
    "Settings",
    "Status",
    "default_registry",
    "handler",
]

"""jobs_lib: a Firestore-native background job runner.

Apps create documents in ``backgroundJobs``; Cloud Functions or a long-lived
worker claim them atomically, run the handler registered for their ``type``
and write status, progress, result or error back.

    from jobs_lib import JobContext, handler

    @handler("send_welcome_email", max_attempts=5)
    def send_welcome_email(ctx: JobContext) -> dict:
        ...
"""

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
from jobs_lib.job import Job, Status
from jobs_lib.registry import HandlerRegistry, default_registry, handler
from jobs_lib.retry import Backoff

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

"""Settings shared by the worker, the functions and the client, and the Firestore client itself."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, replace
from typing import Any, Literal

from jobs_lib.errors import ConfigurationError

DEFAULT_PROJECT = "demo-jobs"


@dataclass(frozen=True)
class Settings:
    """Where the jobs live and how the runner writes them.

    `project` comes from ``--project`` or ``GOOGLE_CLOUD_PROJECT``; the emulator
    is used when ``FIRESTORE_EMULATOR_HOST`` is set. `timestamps` is
    ``"timestamp"`` (Firestore timestamps, server time) or ``"iso"`` for
    collections whose readers expect ISO-8601 strings.
    """

    project: str = DEFAULT_PROJECT
    database: str = "(default)"
    collection: str = "backgroundJobs"
    schedules_collection: str = "scheduledJobs"
    lease_seconds: float = 30.0
    timestamps: Literal["timestamp", "iso"] = "timestamp"

    def __post_init__(self) -> None:
        if self.timestamps not in ("timestamp", "iso"):
            raise ConfigurationError(f"timestamps must be 'timestamp' or 'iso', got {self.timestamps!r}")
        if not 1 <= self.lease_seconds <= 600:
            raise ConfigurationError(f"lease_seconds must be between 1 and 600, got {self.lease_seconds}")

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """Settings from the environment (``JOBS_*``, ``GOOGLE_CLOUD_PROJECT``), then `overrides`."""
        env = os.environ
        settings = cls(
            project=env.get("GOOGLE_CLOUD_PROJECT") or env.get("GCLOUD_PROJECT") or DEFAULT_PROJECT,
            database=env.get("JOBS_DATABASE", "(default)"),
            collection=env.get("JOBS_COLLECTION", "backgroundJobs"),
            schedules_collection=env.get("JOBS_SCHEDULES_COLLECTION", "scheduledJobs"),
            lease_seconds=float(env.get("JOBS_LEASE_SECONDS", "30")),
            timestamps="iso" if env.get("JOBS_TIMESTAMPS") == "iso" else "timestamp",
        )
        return replace(settings, **{k: v for k, v in overrides.items() if v is not None})


_clients: dict[tuple[str, str, str], Any] = {}
_clients_lock = threading.Lock()


def firestore_client(settings: Settings) -> Any:
    """The process's Firestore client for these settings, created on first use."""
    from google.cloud import firestore

    key = (settings.project, settings.database, os.environ.get("FIRESTORE_EMULATOR_HOST", ""))
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = firestore.Client(project=settings.project, database=settings.database)
            _clients[key] = client
        return client


__all__ = ["DEFAULT_PROJECT", "Settings", "firestore_client"]

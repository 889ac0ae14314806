"""`jobs scheduler sync`: keep the Cloud Scheduler job that calls the tick function as it should be.

It creates or updates, with google-cloud-scheduler, one job that POSTs to the
tick every minute with an OIDC token for a service account (Cloud Run checks
the token; the function is private), with retry settings, and deletes jobs it
created earlier that are no longer wanted. Jobs it manages are marked by their
description (Cloud Scheduler jobs have no labels).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from google.cloud import scheduler_v1
from google.protobuf import duration_pb2, field_mask_pb2

MARKER = "[managed by jobs_lib]"


@dataclass(frozen=True)
class TickTarget:
    """Where and how often the tick is called."""

    project: str
    location: str
    uri: str
    service_account: str
    name: str = "jobs-tick"
    schedule: str = "* * * * *"
    time_zone: str = "Etc/UTC"
    attempt_deadline_seconds: int = 180

    @property
    def parent(self) -> str:
        """The Cloud Scheduler location resource."""
        return f"projects/{self.project}/locations/{self.location}"

    @property
    def job_name(self) -> str:
        """The Cloud Scheduler job resource name."""
        return f"{self.parent}/jobs/{self.name}"


@dataclass
class SyncResult:
    """What a sync changed."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[str]]:
        """A JSON-friendly summary."""
        return {
            "created": self.created,
            "updated": self.updated,
            "deleted": self.deleted,
            "unchanged": self.unchanged,
        }


def desired_job(target: TickTarget) -> scheduler_v1.Job:
    """The Cloud Scheduler job that calls the tick."""
    return scheduler_v1.Job(
        name=target.job_name,
        description=f"{MARKER} calls the jobs_lib tick ({target.uri})",
        schedule=target.schedule,
        time_zone=target.time_zone,
        http_target=scheduler_v1.HttpTarget(
            uri=target.uri,
            http_method=scheduler_v1.HttpMethod.POST,
            headers={"Content-Type": "application/json"},
            body=b"{}",
            oidc_token=scheduler_v1.OidcToken(
                service_account_email=target.service_account, audience=target.uri
            ),
        ),
        # A missed tick is harmless (the next one catches up); retry briefly, never pile up.
        retry_config=scheduler_v1.RetryConfig(
            retry_count=1,
            max_retry_duration=duration_pb2.Duration(seconds=50),
            min_backoff_duration=duration_pb2.Duration(seconds=5),
            max_backoff_duration=duration_pb2.Duration(seconds=20),
            max_doublings=2,
        ),
        attempt_deadline=duration_pb2.Duration(seconds=target.attempt_deadline_seconds),
    )


_COMPARED = (
    "description",
    "schedule",
    "time_zone",
    "http_target",
    "retry_config",
    "attempt_deadline",
)


def _differences(current: scheduler_v1.Job, wanted: scheduler_v1.Job) -> list[str]:
    cur, want = scheduler_v1.Job.pb(current), scheduler_v1.Job.pb(wanted)
    return [name for name in _COMPARED if getattr(cur, name) != getattr(want, name)]


def sync(client: Any, targets: list[TickTarget], *, parents: list[str] | None = None) -> SyncResult:
    """Make Cloud Scheduler hold exactly `targets` among the jobs jobs_lib manages.

    `parents` are the locations to clean up (default: those of the targets).
    """
    result = SyncResult()
    wanted = {t.job_name: desired_job(t) for t in targets}
    locations = parents or sorted({t.parent for t in targets})
    existing: dict[str, scheduler_v1.Job] = {}
    for parent in locations:
        for job in client.list_jobs(parent=parent):
            existing[job.name] = job
    for name, job in wanted.items():
        current = existing.get(name)
        if current is None:
            client.create_job(parent=name.rsplit("/jobs/", 1)[0], job=job)
            result.created.append(name)
            continue
        changed = _differences(current, job)
        if changed:
            client.update_job(job=job, update_mask=field_mask_pb2.FieldMask(paths=changed))
            result.updated.append(name)
        else:
            result.unchanged.append(name)
    for name, job in existing.items():
        if name not in wanted and job.description.startswith(MARKER):
            client.delete_job(name=name)
            result.deleted.append(name)
    return result


def client_for(endpoint: str | None = None) -> Any:
    """A Cloud Scheduler client; `endpoint` (e.g. ``http://127.0.0.1:8123``) points it at a
    stand-in."""
    if endpoint is None:
        return scheduler_v1.CloudSchedulerClient()
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials

    return scheduler_v1.CloudSchedulerClient(
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        transport="rest",
        client_options=ClientOptions(api_endpoint=endpoint),
    )


__all__ = ["MARKER", "SyncResult", "TickTarget", "client_for", "desired_job", "sync"]

"""The Cloud Functions entry points: thin adapters over jobs_lib.functions, for both toolchains.

A codebase's ``main.py`` (this repository's ``functions/main.py`` and the one `jobs init` writes
into a project it adopts) re-exports them: functions-framework and the firebase-functions SDK both
look them up by name in ``main``.

Two declarations of the same three functions share one `jobs`:

* functions-framework targets `on_job_created`, `tick`, `api`: what `jobs dev`, the tests and
  `gcloud functions deploy` (the commands `jobs deploy` prints) serve;
* firebase-functions SDK declarations `jobs_created`, `jobs_tick`, `jobs_api`: what the Firebase CLI
  discovers, runs in its emulator (`jobs dev --firebase`) and deploys (`jobs deploy --firebase`).

They are two sets, not one, because the SDK decodes the created-event into a DocumentSnapshot itself
(with a Firestore client of its own per event), its scheduled wrapper drops the tick's summary, and
importing it costs about 0.3 s of cold start; so the SDK is imported only when this process may
serve one of its targets (`jobs_lib.deploy.firebase.sdk_wanted`). Each function parses its trigger,
calls one library function and maps the outcome to a response; this is the only place with a
catch-all, so that no unexpected error turns into endless redelivery (the tick picks up whatever was
left). `jobs` holds the instance's jobs_lib, built from the environment on the first call, not at
import."""

from __future__ import annotations

import logging
from typing import Any

import functions_framework

from jobs_lib.config import Settings, codebase_env
from jobs_lib.deploy.firebase import declarations, sdk_wanted
from jobs_lib.functions import Functions
from jobs_lib.observability.logs import configure

codebase_env()
configure()
log = logging.getLogger("functions")
jobs = Functions()


@functions_framework.cloud_event
def on_job_created(cloud_event: Any) -> None:
    """Firestore document.v1.created on backgroundJobs/{jobId}: run that job now."""
    try:
        jobs.on_job_created(cloud_event)
    except Exception:  # the tick recovers the job; a redelivery loop would not help
        log.exception("on_job_created failed for event %s", cloud_event["id"])


@functions_framework.http
def tick(request: Any) -> tuple[dict[str, Any], int]:
    """Cloud Scheduler target: run due, retried, orphaned and expired jobs within a budget."""
    try:
        return jobs.tick(request), 200
    except Exception as exc:
        log.exception("tick failed")
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}, 500


@functions_framework.http
def api(request: Any) -> Any:
    """The REST jobs API (/v1/jobs...): Firebase ID token auth, see jobs_lib.api."""
    try:
        return jobs.api(request)
    except Exception:  # the API answers every request itself; this is start-up failing
        log.exception("api failed to start")
        return {
            "error": {"code": 500, "status": "INTERNAL", "message": "internal error", "details": []}
        }, 500


_settings = Settings.from_env()
if sdk_wanted(_settings):
    from firebase_functions import firestore_fn, https_fn, options, scheduler_fn

    declared = declarations(_settings)

    @firestore_fn.on_document_created(
        **{**declared.created, "memory": options.MemoryOption(declared.created["memory"])}
    )
    def jobs_created(event: Any) -> None:
        """The Firebase declaration of on_job_created (retry is off: the tick is the safety net)."""
        try:
            jobs.on_document_created(event.document, event.data)
        except Exception:
            log.exception("jobs_created failed for event %s", event.id)

    def _scheduled_tick(name: str, sweeper: int | None) -> Any:
        def scheduled(event: Any) -> None:
            """The Firebase declaration of tick (its summary goes to the log: the SDK answers Cloud
            Scheduler itself)."""
            jobs.tick(schedule_time=event.schedule_time, sweeper=sweeper)

        # The SDK names the deployed function (and its entry point) after the function it wraps.
        scheduled.__name__ = scheduled.__qualname__ = name
        return scheduler_fn.on_schedule(
            **{
                **declared.tick,
                "memory": options.MemoryOption(declared.tick["memory"]),
                "timezone": scheduler_fn.Timezone(declared.tick["timezone"]),  # type: ignore[attr-defined]
            }
        )(scheduled)

    # One scheduled function per tick sweeper (JOBS_TICK_SWEEPERS): jobs_tick is sweeper 0 (all
    # lanes when there is one sweeper), jobs_tick_1 ... the others. The SDK has no request body to
    # name a sweeper in, so each sweeper is a function of its own.
    jobs_tick = _scheduled_tick("jobs_tick", 0 if _settings.tick_sweepers > 1 else None)
    for _k in range(1, _settings.tick_sweepers):
        globals()[f"jobs_tick_{_k}"] = _scheduled_tick(f"jobs_tick_{_k}", _k)

    @https_fn.on_request(**{**declared.api, "memory": options.MemoryOption(declared.api["memory"])})
    def jobs_api(request: Any) -> Any:
        """The Firebase declaration of api."""
        return api(request)


#: What ``from jobs_lib.deploy.entrypoints import *`` gives main.py: the functions of both sets (the
#: SDK's only when it is wanted), and `jobs`.
__all__ = [
    "jobs",
    "on_job_created",
    "tick",
    "api",
    *(name for name, value in list(globals().items()) if hasattr(value, "__firebase_endpoint__")),
]

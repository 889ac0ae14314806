"""Deploying to a real project: the commands `jobs deploy` prints, and the functions package.

The Cloud Functions build installs ``functions/requirements.txt`` and imports
``functions/main.py``; `package_functions` copies the jobs_lib package next to
them so that the folder is complete on its own.
"""

from __future__ import annotations

import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from jobs_lib.registry import EVENT_BUDGET, HandlerRegistry

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class DeployPlan:
    """What to deploy where."""

    project: str
    region: str
    trigger_location: str
    service_account: str
    handlers: str = ""
    collection: str = "backgroundJobs"
    runtime: str = "python312"
    tick_budget: float = 50.0
    source: str = "functions"


def tick_timeout(plan: DeployPlan, registry: HandlerRegistry) -> int:
    """The tick's function timeout: 540 s, or more to fit the longest handler (up to 60 min)."""
    longest = max((spec.timeout for spec in (registry.get(t) for t in registry.types()) if spec and not spec.worker_only), default=0.0)
    return int(min(max(EVENT_BUDGET + 30, plan.tick_budget + 30, longest + 30), 3600))


def commands(plan: DeployPlan, registry: HandlerRegistry) -> list[str]:
    """The shell commands that deploy jobs_lib to a project, in order."""
    q = shlex.quote
    env = f"JOBS_HANDLERS={plan.handlers},JOBS_COLLECTION={plan.collection}"
    timeout = tick_timeout(plan, registry)
    tick_env = f"{env},JOBS_TICK_BUDGET={plan.tick_budget:g},JOBS_FUNCTION_TIMEOUT={timeout}"
    common = f"--gen2 --project={q(plan.project)} --region={q(plan.region)} --runtime={plan.runtime} --source={q(plan.source)} --service-account={q(plan.service_account)}"
    return [
        "# 1. Make the functions folder self-contained (copies jobs_lib next to main.py).",
        f"jobs functions-package {q(plan.source)}",
        "# 2. Security rules, composite indexes and the TTL policy on expireAt.",
        f"firebase deploy --project={q(plan.project)} --only firestore:rules,firestore:indexes",
        f"gcloud firestore fields ttls update expireAt --collection-group={q(plan.collection)} --enable-ttl --project={q(plan.project)}",
        "# 3. The created-event function (Eventarc trigger on the job documents; no retries: the tick is the safety net).",
        f"gcloud functions deploy jobs-on-job-created {common} --entry-point=on_job_created"
        f" --trigger-event-filters=type=google.cloud.firestore.document.v1.created"
        f" --trigger-event-filters=database='(default)'"
        f" --trigger-event-filters-path-pattern=document={q(plan.collection + '/{jobId}')}"
        f" --trigger-location={q(plan.trigger_location)} --timeout=540s --memory=512Mi --concurrency=8 --cpu=1"
        f" --set-env-vars={q(env)}",
        "# 4. The tick function (private: only Cloud Scheduler's service account may call it).",
        f"gcloud functions deploy jobs-tick {common} --entry-point=tick --trigger-http --no-allow-unauthenticated"
        f" --timeout={timeout}s --memory=512Mi --set-env-vars={q(tick_env)}",
        f"gcloud functions add-invoker-policy-binding jobs-tick --region={q(plan.region)} --project={q(plan.project)} --member={q('serviceAccount:' + plan.service_account)}",
        "# 5. The REST API (public: it verifies Firebase ID tokens itself; see README, REST API).",
        f"gcloud functions deploy jobs-api {common} --entry-point=api --trigger-http --allow-unauthenticated"
        f" --timeout=60s --memory=512Mi --concurrency=16 --cpu=1 --set-env-vars={q(env)}",
        "# 6. Cloud Scheduler calls the tick every minute with an OIDC token.",
        f"TICK_URL=$(gcloud functions describe jobs-tick --gen2 --region={q(plan.region)} --project={q(plan.project)} --format='value(serviceConfig.uri)')",
        f"gcloud scheduler jobs create http jobs-tick --project={q(plan.project)} --location={q(plan.region)} --schedule='* * * * *'"
        f' --uri="$TICK_URL" --http-method=POST --message-body=\'{{}}\' --oidc-service-account-email={q(plan.service_account)}'
        f' --oidc-token-audience="$TICK_URL" --attempt-deadline={min(timeout, 1800)}s --max-retry-attempts=0',
    ]


def package_functions(destination: Path) -> Path:
    """Copy the jobs_lib package into the functions folder (replacing an older copy)."""
    target = destination / "jobs_lib"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(PACKAGE, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


__all__ = ["DeployPlan", "commands", "package_functions", "tick_timeout"]

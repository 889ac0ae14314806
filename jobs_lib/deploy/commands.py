"""Deploying to a real project: the commands `jobs deploy` prints (gcloud, or the Firebase CLI), and
the functions package.

The Cloud Functions build installs ``functions/requirements.txt`` and imports
``functions/main.py``; `package_functions` copies the jobs_lib package next to
them so that the folder is complete on its own. Both paths deploy the same
settings: the gcloud commands pass them as flags and ``--set-env-vars``; the
Firebase path writes them to ``functions/.env`` (which ``firebase deploy``
uploads and the SDK declarations in main.py read at discovery).
"""

from __future__ import annotations

import json
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from jobs_lib.deploy.firebase import API_CONCURRENCY, API_TIMEOUT, EVENT_TIMEOUT
from jobs_lib.registry import EVENT_BUDGET, HandlerRegistry

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = Path(__file__).resolve().parents[1]


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
    database: str = "(default)"
    tick_schedule: str = "* * * * *"
    memory: int = 512
    event_concurrency: int = 8
    max_instances: int | None = None
    tick_sweepers: int = 1


def tick_timeout(plan: DeployPlan, registry: HandlerRegistry) -> int:
    """The tick's function timeout: 540 s, or more to fit the longest handler (up to 60 min)."""
    longest = max(
        (
            spec.timeout
            for spec in (registry.get(t) for t in registry.types())
            if spec and not spec.worker_only
        ),
        default=0.0,
    )
    return int(min(max(EVENT_BUDGET + 30, plan.tick_budget + 30, longest + 30), 3600))


def commands(plan: DeployPlan, registry: HandlerRegistry) -> list[str]:
    """The shell commands that deploy jobs_lib to a project with gcloud, in order."""
    q = shlex.quote
    env = _env_flags(plan)
    timeout = tick_timeout(plan, registry)
    tick_env = (
        f"{env},JOBS_TICK_BUDGET={plan.tick_budget:g},JOBS_FUNCTION_TIMEOUT={timeout},"
        f"JOBS_TICK_SWEEPERS={plan.tick_sweepers}"
    )
    common = (
        f"--gen2 --project={q(plan.project)} --region={q(plan.region)} "
        f"--runtime={plan.runtime} --source={q(plan.source)} "
        f"--service-account={q(plan.service_account)}"
    )
    scale = f" --max-instances={plan.max_instances}" if plan.max_instances else ""
    return [
        "# 1. Make the functions folder self-contained (copies jobs_lib next to main.py).",
        f"jobs functions-package {q(plan.source)}",
        "# 2. Security rules, composite indexes and the TTL policy on expireAt.",
        f"firebase deploy --project={q(plan.project)} --only firestore:rules,firestore:indexes",
        _ttl_command(plan),
        "# 3. The created-event function (Eventarc trigger on the job documents; no retries: the "
        "tick is the safety net).",
        f"gcloud functions deploy jobs-on-job-created {common} --entry-point=on_job_created"
        f" --trigger-event-filters=type=google.cloud.firestore.document.v1.created"
        f" --trigger-event-filters=database={q(plan.database)}"
        f" --trigger-event-filters-path-pattern=document={q(plan.collection + '/{jobId}')}"
        f" --trigger-location={q(plan.trigger_location)} --timeout={EVENT_TIMEOUT}s "
        f"--memory={plan.memory}Mi --concurrency={plan.event_concurrency} --cpu=1{scale}"
        f" --set-env-vars={q(env)}",
        "# 4. The tick function (private: only Cloud Scheduler's service account may call it).",
        f"gcloud functions deploy jobs-tick {common} --entry-point=tick --trigger-http "
        f"--no-allow-unauthenticated"
        f" --timeout={timeout}s --memory={plan.memory}Mi --set-env-vars={q(tick_env)}",
        f"gcloud functions add-invoker-policy-binding jobs-tick --region={q(plan.region)} "
        f"--project={q(plan.project)} --member={q('serviceAccount:' + plan.service_account)}",
        "# 5. The REST API (public: it verifies Firebase ID tokens itself; see "
        "docs/reference/rest-api.md).",
        f"gcloud functions deploy jobs-api {common} --entry-point=api --trigger-http "
        f"--allow-unauthenticated"
        f" --timeout={API_TIMEOUT}s --memory={plan.memory}Mi --concurrency={API_CONCURRENCY} "
        f"--cpu=1 --set-env-vars={q(env)}",
        "# 6. Cloud Scheduler calls the tick every minute with an OIDC token"
        + (
            f" (JOBS_TICK_SWEEPERS={plan.tick_sweepers}: one scheduler job per sweeper, each "
            f"sweeping its share of the shard lanes)."
            if plan.tick_sweepers > 1
            else "."
        ),
        f"TICK_URL=$(gcloud functions describe jobs-tick --gen2 --region={q(plan.region)} "
        f"--project={q(plan.project)} --format='value(serviceConfig.uri)')",
        *(
            f"gcloud scheduler jobs create http {name} --project={q(plan.project)} "
            f"--location={q(plan.region)} --schedule={q(plan.tick_schedule)}"
            f' --uri="$TICK_URL" --http-method=POST --message-body={q(body)} '
            f"--headers=Content-Type=application/json "
            f"--oidc-service-account-email={q(plan.service_account)}"
            f' --oidc-token-audience="$TICK_URL" --attempt-deadline={min(timeout, 1800)}s '
            f"--max-retry-attempts=0"
            for name, body in tick_jobs(plan.tick_sweepers)
        ),
    ]


def tick_jobs(sweepers: int) -> list[tuple[str, str]]:
    """The Cloud Scheduler jobs that call the tick, and the body each sends: one, or one per
    sweeper."""
    if sweepers <= 1:
        return [("jobs-tick", "{}")]
    return [(f"jobs-tick-{k}", json.dumps({"sweeper": k})) for k in range(sweepers)]


def _env_flags(plan: DeployPlan) -> str:
    env = f"JOBS_HANDLERS={plan.handlers},JOBS_COLLECTION={plan.collection}"
    return env if plan.database == "(default)" else f"{env},JOBS_DATABASE={plan.database}"


def _ttl_command(plan: DeployPlan) -> str:
    q = shlex.quote
    database = "" if plan.database == "(default)" else f" --database={q(plan.database)}"
    return (
        f"gcloud firestore fields ttls update expireAt "
        f"--collection-group={q(plan.collection)} --enable-ttl "
        f"--project={q(plan.project)}{database}"
    )


def firebase_env(plan: DeployPlan, registry: HandlerRegistry) -> dict[str, str]:
    """What ``functions/.env`` holds for ``firebase deploy``: the settings the three functions (and
    the SDK declarations' options in main.py) read, the same values the gcloud commands pass."""
    env = {
        "JOBS_HANDLERS": plan.handlers,
        "JOBS_COLLECTION": plan.collection,
        "JOBS_DATABASE": plan.database,
        "JOBS_REGION": plan.region,
        "JOBS_SERVICE_ACCOUNT": plan.service_account,
        "JOBS_FUNCTION_MEMORY": str(plan.memory),
        "JOBS_EVENT_CONCURRENCY": str(plan.event_concurrency),
        "JOBS_TICK_SCHEDULE": plan.tick_schedule,
        "JOBS_TICK_SWEEPERS": str(plan.tick_sweepers),
        "JOBS_TICK_BUDGET": f"{plan.tick_budget:g}",
        "JOBS_FUNCTION_TIMEOUT": str(tick_timeout(plan, registry)),
    }
    if plan.max_instances:
        env["JOBS_MAX_INSTANCES"] = str(plan.max_instances)
    return env


def firebase_databases(config: Path) -> list[str]:
    """The Firestore databases a firebase.json deploys rules and indexes to."""
    entries = json.loads(config.read_text()).get("firestore", {})
    return [
        entry.get("database", "(default)")
        for entry in (entries if isinstance(entries, list) else [entries])
    ]


def firebase_commands(
    plan: DeployPlan, registry: HandlerRegistry, config: Path | None = None
) -> list[str]:
    """The shell commands that deploy jobs_lib with the Firebase CLI (rules, indexes, the three
    functions)."""
    q = shlex.quote
    config = config or ROOT / "firebase.json"
    lines = []
    databases = firebase_databases(config) if config.is_file() else []
    if plan.database not in databases:
        lines += [
            f"# !! {config.name} deploys rules and indexes to "
            f"{', '.join(databases) or 'no database'}, not to {plan.database!r}:",
            f'# !! set "database": "{plan.database}" in its "firestore" section (or add an entry '
            f"for it) before deploying.",
        ]
    env_file = Path(plan.source) / ".env"
    body = "\n".join(f"{key}={value}" for key, value in firebase_env(plan, registry).items())
    lines += [
        "# 1. functions/venv, from which the Firebase CLI reads the function declarations "
        "(python3.12 for python312).",
        f"jobs functions-venv {q(plan.source)}",
        "# 2. Make the functions folder self-contained (copies jobs_lib next to main.py).",
        f"jobs functions-package {q(plan.source)}",
        f"# 3. The settings the deployed functions read ({env_file}; firebase deploy uploads it "
        f"with the code).",
        f"cat > {q(str(env_file))} <<'ENV'\n{body}\nENV",
        "# 4. Rules, indexes, and the functions jobs_created (Firestore trigger, no retries), "
        "jobs_tick (scheduled), jobs_api (public HTTPS).",
        f"firebase deploy --project={q(plan.project)} --only firestore,functions:jobs",
        "# 5. The TTL policy on expireAt (firebase deploy does not set TTL policies).",
        _ttl_command(plan),
    ]
    return lines


def package_functions(destination: Path) -> Path:
    """Copy the jobs_lib package into the functions folder (replacing an older copy)."""
    target = destination / "jobs_lib"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(PACKAGE, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


__all__ = [
    "DeployPlan",
    "commands",
    "firebase_commands",
    "firebase_databases",
    "firebase_env",
    "package_functions",
    "tick_jobs",
    "tick_timeout",
]

"""The `jobs` command line: run a worker, manage jobs, run the local demo."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from jobs_lib.config import Settings
from jobs_lib.errors import JobsError
from jobs_lib.model.job import Job

app = typer.Typer(
    help="jobs_lib: a Firestore-native background job runner.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()

ProjectOpt = Annotated[
    str | None,
    typer.Option("--project", help="Google Cloud project (default: $GOOGLE_CLOUD_PROJECT)."),
]
CollectionOpt = Annotated[
    str | None, typer.Option("--collection", help="Jobs collection (default: backgroundJobs).")
]


def _settings(project: str | None, collection: str | None, **extra: Any) -> Settings:
    return Settings.from_env(project=project, collection=collection, **extra)


def _client(project: str | None, collection: str | None) -> Any:
    from jobs_lib.client import JobsClient

    return JobsClient(_settings(project, collection))


def job_dict(job: Job) -> dict[str, Any]:
    """A job as JSON-friendly fields (the command line and the demo print this)."""
    data = {"id": job.id, **job.raw}
    converted: dict[str, Any] = json.loads(
        json.dumps(data, default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v))
    )
    return converted


@app.command()
def worker(
    handlers: Annotated[
        str | None,
        typer.Option(
            "--handlers",
            help="Comma-separated modules that register handlers (default: $JOBS_HANDLERS).",
        ),
    ] = None,
    concurrency: Annotated[int, typer.Option(help="Jobs run at once by this process.")] = 10,
    poll_interval: Annotated[float, typer.Option(help="Seconds between polls when idle.")] = 0.25,
    lease: Annotated[
        float | None, typer.Option(help="Lease seconds (renewed while a job runs).")
    ] = None,
    grace: Annotated[
        float, typer.Option(help="Seconds running jobs get to finish on SIGTERM.")
    ] = 30.0,
    burst: Annotated[bool, typer.Option(help="Run what is due, then exit.")] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Serve Prometheus metrics at /metrics on this port (needs the telemetry extra)."
        ),
    ] = None,
    health_port: Annotated[
        int | None, typer.Option(help="Serve /healthz and /readyz on this port.")
    ] = None,
    project: ProjectOpt = None,
    collection: CollectionOpt = None,
) -> None:
    """Run jobs until stopped (SIGTERM or Ctrl-C stop it gracefully)."""
    from jobs_lib.app import App
    from jobs_lib.observability import logs

    settings = _settings(
        project,
        collection,
        lease_seconds=lease,
        handlers=handlers,
        metrics_port=metrics_port,
        health_port=health_port,
    )
    logs.configure(settings.log_level, project=settings.project)
    if (
        settings.metrics_port
        or settings.metrics_exporter != "none"
        or settings.traces_exporter != "none"
    ):
        from jobs_lib.observability.export import enable

        exporting = enable(
            metrics_exporter=settings.metrics_exporter,
            traces_exporter=settings.traces_exporter,
            metrics_port=settings.metrics_port,
            project=settings.project,
            service="jobs_lib-worker",
        )
        if exporting.metrics_port:
            logs.event(
                logging.getLogger("jobs_lib.worker"),
                "metrics_serving",
                f"Prometheus metrics at http://0.0.0.0:{exporting.metrics_port}/metrics",
            )
    app = App(settings)
    runner = app.worker(
        concurrency=concurrency, poll_interval=poll_interval, grace=grace, burst=burst
    )
    health = None
    if settings.health_port:
        from jobs_lib.observability.health import HealthServer

        health = HealthServer(
            settings.health_port,
            loop_turned=lambda: runner.last_loop,
            firestore_answered=lambda: app.connection.last_answer,
        ).start()
    runner.install_signal_handlers()
    try:
        runner.run()
    finally:
        if health is not None:
            health.stop()


@app.command()
def enqueue(
    job_type: Annotated[
        str, typer.Argument(metavar="TYPE", help="The job type, e.g. process_notifications.")
    ],
    metadata: Annotated[str, typer.Option(help="The job's metadata as a JSON object.")] = "{}",
    delay: Annotated[float, typer.Option(help="Seconds from now before it may run.")] = 0.0,
    priority: Annotated[int, typer.Option(help="Higher runs first among due jobs.")] = 0,
    max_attempts: Annotated[
        int | None, typer.Option(help="Attempts before it fails for good.")
    ] = None,
    key: Annotated[
        str | None, typer.Option(help="Idempotency key: the same key gives the same job.")
    ] = None,
    project: ProjectOpt = None,
    collection: CollectionOpt = None,
) -> None:
    """Create a job and print it."""
    try:
        data = json.loads(metadata)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"--metadata is not JSON: {exc}") from None
    when = datetime.now(UTC) + timedelta(seconds=delay) if delay else None
    job = _client(project, collection).enqueue(
        job_type, data, scheduled_for=when, priority=priority, max_attempts=max_attempts, key=key
    )
    console.print_json(data=job_dict(job))


@app.command()
def get(job_id: str, project: ProjectOpt = None, collection: CollectionOpt = None) -> None:
    """Print one job as JSON."""
    _run(lambda: console.print_json(data=job_dict(_client(project, collection).get(job_id))))


@app.command()
def cancel(job_id: str, project: ProjectOpt = None, collection: CollectionOpt = None) -> None:
    """Cancel a pending job, or ask a running one to stop."""
    _run(lambda: console.print_json(data=job_dict(_client(project, collection).cancel(job_id))))


@app.command()
def retry(
    job_id: Annotated[str | None, typer.Argument(help="The job to retry.")] = None,
    failed: Annotated[
        bool, typer.Option("--failed", help="Retry every failed job (the dead letters) instead.")
    ] = False,
    job_type: Annotated[
        str | None, typer.Option("--type", help="With --failed: only jobs of this type.")
    ] = None,
    project: ProjectOpt = None,
    collection: CollectionOpt = None,
) -> None:
    """Send a failed or cancelled job back to pending, or with --failed every failed job (of a
    --type)."""
    client = _client(project, collection)
    if failed:
        ids = client.retry_failed(job_type)
        console.print_json(data={"retried": len(ids), "ids": ids})
    elif job_id:
        _run(lambda: console.print_json(data=job_dict(client.retry(job_id))))
    else:
        raise typer.BadParameter("give a JOB_ID, or --failed")


@app.command()
def pause(
    job_type: Annotated[str, typer.Argument(metavar="TYPE")],
    project: ProjectOpt = None,
    collection: CollectionOpt = None,
) -> None:
    """Pause a job type: its pending jobs wait until it is resumed."""
    client = _client(project, collection)
    client.pause(job_type)
    console.print_json(data={"paused": sorted(client.paused())})


@app.command()
def resume(
    job_type: Annotated[str, typer.Argument(metavar="TYPE")],
    project: ProjectOpt = None,
    collection: CollectionOpt = None,
) -> None:
    """Resume a paused job type."""
    client = _client(project, collection)
    client.resume(job_type)
    console.print_json(data={"paused": sorted(client.paused())})


@app.command(name="list")
def list_jobs(
    status: Annotated[str | None, typer.Option(help="Only jobs in this state.")] = None,
    job_type: Annotated[str | None, typer.Option("--type", help="Only jobs of this type.")] = None,
    limit: int = 50,
    project: ProjectOpt = None,
    collection: CollectionOpt = None,
) -> None:
    """List jobs in a table."""
    jobs = _client(project, collection).store.list_jobs(
        status=status, job_type=job_type, limit=limit
    )
    console.print(jobs_table(jobs))


@app.command()
def stats(project: ProjectOpt = None, collection: CollectionOpt = None) -> None:
    """Count jobs by state."""
    from jobs_lib.console.overview import breaker_view, fair_view

    store = _client(project, collection).store
    counts = store.count_by_status()
    table = Table("status", "jobs")
    for name, count in counts.items():
        table.add_row(name, str(count))
    console.print(table)
    paused, breakers = store.limits.control_state()
    if paused:
        console.print(f"paused: {', '.join(sorted(paused))}")
    for job_type, field in sorted(store.fair.types().items()):
        fair = fair_view(store, job_type, field, store.now())
        if fair is None or not fair["keys"]:
            continue
        fair_table = Table(
            fair["field"],
            "due",
            "running",
            "weight",
            title=f"{job_type}: fair shares ({fair['keysWithJobs']} keys with jobs)",
        )
        for row in fair["keys"]:
            fair_table.add_row(
                row["key"], str(row["due"]), str(row["running"]), f"{row['weight']:g}"
            )
        console.print(fair_table)
    if breakers:
        now = store.now()
        open_table = Table(
            "type",
            "circuit breaker",
            "open until",
            "failures in a row",
            "last error",
            title="circuit breakers",
        )
        for job_type, entry in sorted(breakers.items()):
            view = breaker_view(entry, now) or {}
            open_table.add_row(
                job_type,
                str(view.get("state")),
                str(view.get("openUntil")),
                str(view.get("failures")),
                str(view.get("lastError") or "")[:80],
            )
        console.print(open_table)


@app.command()
def watch(
    job_id: str,
    timeout: float = 300.0,
    project: ProjectOpt = None,
    collection: CollectionOpt = None,
) -> None:
    """Follow a job's status and progress until it finishes."""
    client = _client(project, collection)
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        job = client.get(job_id)
        progress = job.progress or {}
        line = (
            f"{job.status.value if job.status else '?'} {progress.get('percent', '')} "
            f"{progress.get('message', '')}"
        ).strip()
        if line != last:
            console.print(line)
            last = line
        if job.status and job.status.finished:
            console.print_json(data=job_dict(job))
            return
        time.sleep(0.5)
    raise typer.Exit(1)


@app.command(name="console")
def console_command(
    port: Annotated[
        int, typer.Option(help="Port to serve the console (and the REST API) on.")
    ] = 8090,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    dev: Annotated[
        bool,
        typer.Option(
            "--dev", help="Sign in with emulator tokens as ready-made dev users (emulators only)."
        ),
    ] = False,
    handlers: Annotated[
        str | None,
        typer.Option(
            "--handlers", help="Modules that register handlers (default: $JOBS_HANDLERS)."
        ),
    ] = None,
    project: ProjectOpt = None,
) -> None:
    """Serve the operators' console and the REST API on a local port; print its URL."""
    import contextlib

    from jobs_lib.app import App
    from jobs_lib.config import exported
    from jobs_lib.console import DEV_USERS
    from jobs_lib.console.server import ConsoleServer
    from jobs_lib.observability import logs

    settings = _settings(project, None, handlers=handlers)
    logs.configure(settings.log_level, project=settings.project)
    with contextlib.ExitStack() as stack:
        if dev:
            if not settings.project.startswith("demo-"):
                raise typer.BadParameter(
                    "--dev signs in with unsigned emulator tokens: use it only with a demo- "
                    "project on the emulators"
                )
            host_value = settings.auth_emulator_host or "127.0.0.1:9099"
            settings = settings.with_(console_auth="emulator-tokens", auth_emulator_host=host_value)
            stack.enter_context(
                exported(FIREBASE_AUTH_EMULATOR_HOST=host_value)
            )  # firebase-admin then accepts emulator tokens
        server = ConsoleServer(App(settings).api(), host=host, port=port).start()
        console.print(f"[bold green]jobs console[/] at {server.url}", highlight=False)
        if dev:
            console.print(
                "  sign in as: " + ", ".join(u["label"] for u in DEV_USERS) + " (emulator tokens)",
                highlight=False,
            )
        stopping = threading.Event()
        import signal as signal_mod

        signal_mod.signal(signal_mod.SIGTERM, lambda *_: stopping.set())
        try:
            while not stopping.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        server.stop()


@app.command()
def settings(
    markdown: Annotated[
        bool,
        typer.Option(
            "--markdown",
            help="Print the table of every setting (docs/reference/settings.md) instead.",
        ),
    ] = False,
) -> None:
    """Show every setting: its variable, the value in effect here, and its default."""
    from jobs_lib.config import SECRET_SETTINGS, documented, settings_table

    if markdown:
        print(settings_table())
        return
    current = Settings.from_env()
    table = Table("variable", "setting", "value here", "default")
    for item in documented():
        value = getattr(current, item.name)
        table.add_row(
            item.env,
            item.name,
            "********" if item.name in SECRET_SETTINGS and value else str(value),
            str(item.default),
        )
    console.print(table)


@app.command(name="types")
def types_command(
    handlers: Annotated[
        str | None,
        typer.Option(
            "--handlers", help="Modules that register handlers (default: $JOBS_HANDLERS)."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the TypeScript here (default: print it).")
    ] = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check", help="Exit 1, changing nothing, when --out is not what would be written."
        ),
    ] = False,
) -> None:
    """TypeScript declarations of the handlers' input models for the web client (jobs-lib-web):
    `enqueueJob(db, "resize_image", {...})` is then checked by tsc against the pydantic model."""
    from jobs_lib.api.webtypes import typescript
    from jobs_lib.app import load_handler_modules
    from jobs_lib.registry import default_registry

    load_handler_modules(
        handlers if handlers is not None else ",".join(Settings.from_env().handlers)
    )
    try:
        text = typescript(default_registry)
    except JobsError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    if out is None:
        print(text, end="")
    elif check:
        if not out.exists() or out.read_text() != text:
            console.print(f"[red]{out} is out of date[/red]: run jobs types --out {out}")
            raise typer.Exit(1)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        console.print(f"wrote {out} ({len(default_registry.user_types())} job types)")


@app.command()
def demo(
    jobs: Annotated[int, typer.Option(help="How many process_notifications jobs to create.")] = 20,
    stay: Annotated[
        bool,
        typer.Option(
            "--stay", help="Keep the stack and its console up after the results (Ctrl-C stops it)."
        ),
    ] = False,
) -> None:
    """Start the local stack (emulator, functions, scheduler), send real jobs through it, print the
    results."""
    from jobs_lib.devstack.demo import run_demo

    raise typer.Exit(run_demo(console, jobs=jobs, stay=stay))


@app.command()
def dev(
    handlers: Annotated[
        str | None,
        typer.Option(
            "--handlers", help="Modules that register handlers (default: $JOBS_HANDLERS)."
        ),
    ] = None,
    tick_interval: Annotated[
        float, typer.Option(help="Seconds between scheduler ticks (Cloud Scheduler: 60).")
    ] = 60.0,
    project: Annotated[
        str, typer.Option(help="A demo- project id for the emulator.")
    ] = "demo-jobs",
    console_port: Annotated[
        int, typer.Option(help="Port of the operators' console (0: any free port).")
    ] = 8090,
    firebase_cli: Annotated[
        bool,
        typer.Option(
            "--firebase",
            help="Run the Firebase CLI's emulators (firebase emulators:start on firebase.json) "
            "and tick them.",
        ),
    ] = False,
) -> None:
    """Run the whole stack locally: emulator, functions with real trigger delivery, scheduler ticks,
    the console. Ctrl-C stops it."""
    import signal as signal_mod

    from jobs_lib.devstack.dev import DevStack
    from jobs_lib.observability import logs

    settings = Settings.from_env(handlers=handlers)
    logs.configure(settings.log_level)
    stack: DevStack
    if firebase_cli:
        from jobs_lib.devstack.firebase_dev import FirebaseStack

        stack = FirebaseStack(
            project=project,
            handlers=",".join(settings.handlers),
            tick_interval=tick_interval,
            console_port=console_port,
        )
    else:
        stack = DevStack(
            project=project,
            handlers=",".join(settings.handlers),
            tick_interval=tick_interval,
            console_port=console_port,
        )
    stopping = threading.Event()
    signal_mod.signal(signal_mod.SIGTERM, lambda *_: stopping.set())
    with stack:
        console.print(f"[bold green]jobs dev is up[/] (logs in {stack.log_dir})")
        address = stack.emulator_address
        console.print(
            f"  emulator          http://{address}  (export FIRESTORE_EMULATOR_HOST={address} "
            f"GOOGLE_CLOUD_PROJECT={project})"
        )
        if firebase_cli:
            from jobs_lib.devstack.firebase_dev import FirebaseStack

            assert isinstance(stack, FirebaseStack)
            for note in stack.notes:
                console.print(f"  note              {note}", highlight=False)
            console.print(
                f"  firebase          emulators:start ready in {stack.ready_seconds or 0:.1f}s "
                f"(its log: {stack.cli_log})"
            )
            console.print(
                f"  functions         {stack.functions_url} (jobs_created on "
                f"{settings.collection}/{{jobId}}, jobs_api at {stack.api_url})"
            )
            console.print(
                f"  tick              jobs_tick on functions-framework at "
                f"{stack.hosts['jobs_tick'].url}, every {tick_interval:g}s (the Functions "
                f"emulator does not fire schedules)"
            )
        else:
            for name, host in stack.hosts.items():
                console.print(f"  function {name:<16} {host.url}")
            console.print(
                f"  created-trigger   {settings.collection}/{{jobId}} -> dispatcher "
                f"{stack.dispatcher.address if stack.dispatcher else '?'}"
            )
            console.print(f"  scheduler tick    every {tick_interval:g}s")
        if stack.console is not None:
            from jobs_lib.console import DEV_USERS

            how = (
                f"Firebase Auth emulator at {stack.auth.host}, password dev-password"
                if stack.auth
                else "emulator tokens"
            )
            console.print(
                f"  console           {stack.console.url}  (sign in as: "
                f"{', '.join(u['label'] for u in DEV_USERS)}; {how})",
                highlight=False,
            )
        console.print(
            'Try: jobs enqueue process_notifications --metadata \'{"targetUsers": ["u1"]}\'   '
            "(Ctrl-C stops everything)"
        )
        try:
            while not stopping.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    console.print("stopped")


@app.command()
def deploy(
    project: Annotated[str, typer.Option(help="Your Google Cloud project id.")],
    region: Annotated[
        str | None,
        typer.Option(
            help="Region for the functions and the scheduler (default: $JOBS_REGION, us-central1)."
        ),
    ] = None,
    trigger_location: Annotated[
        str | None,
        typer.Option(help="Location of the Firestore database (e.g. nam5); default: the region."),
    ] = None,
    service_account: Annotated[
        str | None, typer.Option(help="Service account the functions and the scheduler use.")
    ] = None,
    handlers: Annotated[
        str | None, typer.Option("--handlers", help="Modules that register handlers.")
    ] = None,
    tick_budget: Annotated[float, typer.Option(help="Seconds a tick may spend.")] = 50.0,
    firebase_cli: Annotated[
        bool,
        typer.Option(
            "--firebase",
            help="Print the Firebase CLI's commands (firebase deploy) instead of gcloud's.",
        ),
    ] = False,
) -> None:
    """Print the commands that deploy jobs_lib to a project (functions, trigger, scheduler, rules,
    indexes)."""
    from jobs_lib.app import App
    from jobs_lib.deploy.commands import DeployPlan, commands, firebase_commands

    app = App(_settings(None, None, handlers=handlers))
    settings = app.settings
    region = region or settings.region
    plan = DeployPlan(
        project=project,
        region=region,
        trigger_location=trigger_location or region,
        service_account=service_account
        or settings.service_account
        or f"jobs-runner@{project}.iam.gserviceaccount.com",
        handlers=",".join(settings.handlers),
        collection=settings.collection,
        tick_budget=tick_budget,
        database=settings.database,
        tick_schedule=settings.tick_schedule,
        tick_sweepers=settings.tick_sweepers,
        memory=settings.function_memory,
        event_concurrency=settings.event_concurrency,
        max_instances=settings.max_instances,
    )
    for line in (firebase_commands if firebase_cli else commands)(plan, app.registry):
        print(line)


@app.command(name="init")
def init_command(
    directory: Annotated[
        str, typer.Argument(help="Your Firebase project's folder (the one with firebase.json).")
    ] = ".",
    new: Annotated[
        str | None,
        typer.Option("--new", metavar="DIR", help="Make a new project in DIR instead."),
    ] = None,
    source: Annotated[
        str | None,
        typer.Option(
            help="The folder of jobs_lib's codebase (default: jobs; functions with --new)."
        ),
    ] = None,
    codebase: Annotated[str, typer.Option(help="The codebase's name in firebase.json.")] = "jobs",
    database: Annotated[
        str | None,
        typer.Option(help="The Firestore database, when firebase.json configures several."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the changes as a diff; write nothing.")
    ] = False,
) -> None:
    """Add jobs_lib to an existing Firebase project: a Python codebase, the indexes merged, the
    rules in a marked block, the emulator settings. Running it again changes nothing."""
    from pathlib import Path

    from jobs_lib.deploy.adopt import InitRefused, plan

    root = Path(new if new is not None else directory)
    try:
        planned = plan(
            root,
            source=source or ("functions" if new is not None else "jobs"),
            codebase=codebase,
            database=database,
            new=new is not None,
        )
    except InitRefused as exc:
        console.print(f"[red]jobs init refused, nothing was changed:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from None
    if dry_run:
        print(planned.diff(), end="")
    elif planned.changes:
        planned.apply()
    if not planned.changes:
        console.print(f"{planned.root}: jobs_lib is already set up; nothing to change.")
    else:
        verb = "would change" if dry_run else "changed"
        console.print(f"[bold]jobs init {verb} {planned.root}:[/bold]")
        for line in planned.done:
            console.print(f"  - {line}", soft_wrap=True, markup=False)
    for line in planned.conflicts:
        console.print(f"[yellow]conflict:[/yellow] {line}", soft_wrap=True)
    console.print("[bold]Left for you:[/bold]")
    for number, line in enumerate(planned.todo, 1):
        console.print(f"  {number}. {line}", soft_wrap=True, markup=False)


@app.command(name="functions-venv")
def functions_venv_command(
    directory: Annotated[str, typer.Argument(help="The functions folder.")] = "functions",
    with_tests: Annotated[
        bool,
        typer.Option(
            help="Also install pytest, to run the tests on the SDK's pinned dependencies."
        ),
    ] = False,
) -> None:
    """Create functions/venv for the Firebase CLI: the runtime's Python (python312 ->
    python3.12), requirements.txt, this checkout."""
    from pathlib import Path

    from jobs_lib.deploy.firebase import functions_venv

    venv = functions_venv(Path(directory), with_tests=with_tests, echo=console.print)
    console.print(f"functions venv ready: {venv}")


@app.command(name="functions-package")
def functions_package(
    directory: Annotated[str, typer.Argument(help="The functions folder.")] = "functions",
) -> None:
    """Copy jobs_lib into the functions folder so that it deploys on its own."""
    from pathlib import Path

    from jobs_lib.deploy.commands import package_functions

    target = package_functions(Path(directory))
    console.print(f"copied jobs_lib to {target}")


monitoring_app = typer.Typer(
    help="Cloud Monitoring over the JSON log lines (no code changes needed).", no_args_is_help=True
)
app.add_typer(monitoring_app, name="monitoring")


@monitoring_app.command("setup")
def monitoring_setup(
    project: Annotated[str, typer.Option(help="Your Google Cloud project id.")],
) -> None:
    """Print the commands that create log-based metrics and two alert policies (failure rate, queue
    lag)."""
    from jobs_lib.deploy.monitoring import setup_commands

    for line in setup_commands(project):
        print(line)


flow_app = typer.Typer(
    help="Flows: jobs that wait for one another (dependsOn).", no_args_is_help=True
)
app.add_typer(flow_app, name="flow")

#: The keys of a job in a flow file, and the argument of JobsClient.flow each becomes.
_FLOW_FILE_KEYS = {
    "name": "name",
    "type": "type",
    "metadata": "metadata",
    "dependsOn": "depends_on",
    "priority": "priority",
    "maxAttempts": "max_attempts",
    "scheduledFor": "scheduled_for",
}


def flow_items(document: Any) -> tuple[list[dict[str, Any]], str, str | None]:
    """The jobs, failure policy and flow id of a flow file (``{"jobs": [...], "onParentFailure":
    ..., "flowId": ...}``); raises `typer.BadParameter` naming what is wrong."""
    if not isinstance(document, dict) or not isinstance(document.get("jobs"), list):
        raise typer.BadParameter(
            'a flow file holds {"jobs": [{"name": ..., "type": ..., "dependsOn": [...]}, ...]}'
        )
    unknown = set(document) - {"jobs", "onParentFailure", "flowId"}
    if unknown:
        raise typer.BadParameter(
            f"unknown key(s) {', '.join(sorted(unknown))}; a flow file has jobs, onParentFailure "
            f"and flowId"
        )
    items = []
    for n, job in enumerate(document["jobs"]):
        if not isinstance(job, dict) or set(job) - set(_FLOW_FILE_KEYS):
            raise typer.BadParameter(
                f"jobs[{n}]: a job is an object with some of {', '.join(_FLOW_FILE_KEYS)}"
            )
        item = {_FLOW_FILE_KEYS[k]: v for k, v in job.items()}
        if isinstance(item.get("scheduled_for"), str):
            try:
                item["scheduled_for"] = datetime.fromisoformat(item["scheduled_for"])
            except ValueError:
                raise typer.BadParameter(
                    f"jobs[{n}].scheduledFor is not an ISO 8601 time: {item['scheduled_for']!r}"
                ) from None
        items.append(item)
    return items, str(document.get("onParentFailure", "fail")), document.get("flowId")


def _print_flow(flow_id: str, jobs: list[Job]) -> None:
    table = Table(title=f"flow {flow_id}")
    for column in ("name", "id", "type", "status", "waits for", "error"):
        table.add_column(column, overflow="fold")
    names = {job.id: job.flow_name or job.id for job in jobs}
    for job in jobs:
        table.add_row(
            job.flow_name or "",
            job.id,
            job.type or "?",
            job.status.value if job.status else "?",
            ", ".join(names.get(p, p) for p in job.depends_on),
            (job.error or "")[:70],
        )
    console.print(table)


@flow_app.command("create")
def flow_create(
    path: Annotated[
        Path,
        typer.Argument(
            metavar="FILE",
            help='A JSON file: {"jobs": [{"name", "type", "metadata", "dependsOn"}...], '
            '"onParentFailure": "fail|ignore|wait"}.',
        ),
    ],
    project: ProjectOpt = None,
    collection: CollectionOpt = None,
) -> None:
    """Create the flow a JSON file describes (checked whole first) and print its jobs."""
    try:
        document = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise typer.BadParameter(f"{path}: {exc}") from None
    items, policy, flow_id = flow_items(document)
    client = _client(project, collection)

    def create() -> None:
        flow = client.flow(
            items, on_parent_failure=policy, flow_id=flow_id, atomic=len(items) <= 500
        )
        _print_flow(flow.id, client.flow_jobs(flow.id))

    _run(create)


@flow_app.command("show")
def flow_show(flow_id: str, project: ProjectOpt = None, collection: CollectionOpt = None) -> None:
    """A flow's jobs, what each waits for, and their states."""
    jobs = _client(project, collection).flow_jobs(flow_id)
    if not jobs:
        console.print(f"[red]no flow with id {flow_id!r}[/red]")
        raise typer.Exit(1)
    _print_flow(flow_id, jobs)


@flow_app.command("cancel")
def flow_cancel(flow_id: str, project: ProjectOpt = None, collection: CollectionOpt = None) -> None:
    """Cancel what has not finished in a flow (running jobs are asked to stop)."""
    client = _client(project, collection)

    def cancel() -> None:
        client.cancel_flow(flow_id)
        _print_flow(flow_id, client.flow_jobs(flow_id))

    _run(cancel)


schedules_app = typer.Typer(
    help="Recurring jobs in scheduledJobs (and those declared in code).", no_args_is_help=True
)
app.add_typer(schedules_app, name="schedules")
scheduler_app = typer.Typer(
    help="The Cloud Scheduler job that calls the tick.", no_args_is_help=True
)
app.add_typer(scheduler_app, name="scheduler")


def _schedules(project: str | None, handlers: str | None = None) -> Any:
    from jobs_lib.app import App

    return App(_settings(project, None, handlers=handlers)).schedules


def schedule_dict(schedule: Any) -> dict[str, Any]:
    """A schedule as JSON-friendly fields."""
    data = {"id": schedule.id, **schedule.raw}
    converted: dict[str, Any] = json.loads(
        json.dumps(data, default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v))
    )
    return converted


HandlersOpt = Annotated[
    str | None,
    typer.Option("--handlers", help="Modules that register handlers (default: $JOBS_HANDLERS)."),
]


@schedules_app.command("create")
def schedules_create(
    job_type: Annotated[str, typer.Argument(metavar="TYPE")],
    cron_expression: Annotated[
        str, typer.Argument(metavar="CRON", help="e.g. '0 * * * *' (quote it).")
    ],
    timezone: Annotated[str, typer.Option(help="IANA timezone the cron is read in.")] = "UTC",
    metadata: Annotated[str, typer.Option(help="The jobs' metadata as JSON.")] = "{}",
    schedule_id: Annotated[
        str | None, typer.Option("--id", help="Document id (default: generated).")
    ] = None,
    disabled: Annotated[bool, typer.Option(help="Create it switched off.")] = False,
    project: ProjectOpt = None,
    handlers: HandlersOpt = None,
) -> None:
    """Save a schedule (a bad cron, timezone or type is refused)."""
    try:
        data = json.loads(metadata)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"--metadata is not JSON: {exc}") from None
    _run(
        lambda: console.print_json(
            data=schedule_dict(
                _schedules(project, handlers).create(
                    job_type,
                    cron_expression,
                    timezone=timezone,
                    metadata=data,
                    schedule_id=schedule_id,
                    enabled=not disabled,
                )
            )
        )
    )


@schedules_app.command("list")
def schedules_list(project: ProjectOpt = None) -> None:
    """List schedules with their next and last runs."""
    table = Table("id", "type", "cron", "timezone", "enabled", "next run", "last run", "error")
    for s in _schedules(project).list(limit=500):
        table.add_row(
            s.id,
            s.type or "?",
            s.cron or "?",
            s.timezone,
            str(s.enabled),
            s.next_run_at.isoformat() if s.next_run_at else "-",
            s.last_run_at.isoformat() if s.last_run_at else "-",
            s.error or "",
        )
    console.print(table)


@schedules_app.command("get")
def schedules_get(schedule_id: str, project: ProjectOpt = None) -> None:
    """Print one schedule as JSON."""
    _run(lambda: console.print_json(data=schedule_dict(_schedules(project).get(schedule_id))))


@schedules_app.command("update")
def schedules_update(
    schedule_id: str,
    cron_expression: Annotated[str | None, typer.Option("--cron")] = None,
    timezone: Annotated[str | None, typer.Option()] = None,
    metadata: Annotated[str | None, typer.Option(help="JSON")] = None,
    project: ProjectOpt = None,
    handlers: HandlersOpt = None,
) -> None:
    """Change a schedule's cron, timezone or metadata (nextRunAt is recomputed)."""
    data = json.loads(metadata) if metadata is not None else None
    _run(
        lambda: console.print_json(
            data=schedule_dict(
                _schedules(project, handlers).update(
                    schedule_id, cron_expression=cron_expression, timezone=timezone, metadata=data
                )
            )
        )
    )


@schedules_app.command("enable")
def schedules_enable(
    schedule_id: str, project: ProjectOpt = None, handlers: HandlersOpt = None
) -> None:
    """Switch a schedule on; it next runs at its first slot from now."""
    _run(
        lambda: console.print_json(
            data=schedule_dict(_schedules(project, handlers).enable(schedule_id))
        )
    )


@schedules_app.command("disable")
def schedules_disable(
    schedule_id: str, project: ProjectOpt = None, handlers: HandlersOpt = None
) -> None:
    """Switch a schedule off."""
    _run(
        lambda: console.print_json(
            data=schedule_dict(_schedules(project, handlers).disable(schedule_id))
        )
    )


@schedules_app.command("delete")
def schedules_delete(schedule_id: str, project: ProjectOpt = None) -> None:
    """Delete a schedule (the jobs it created stay)."""
    _run(lambda: _schedules(project).delete(schedule_id))


@schedules_app.command("fire")
def schedules_fire(project: ProjectOpt = None, handlers: HandlersOpt = None) -> None:
    """Fire every due slot now (what each tick and worker does) and print what fired."""
    from jobs_lib.app import App

    app = App(_settings(project, None, handlers=handlers))
    console.print_json(data=app.scheduler.fire_due().as_dict())


@scheduler_app.command("sync")
def scheduler_sync(
    project: Annotated[str, typer.Option(help="Google Cloud project.")],
    uri: Annotated[str, typer.Option(help="The tick function's URL.")],
    service_account: Annotated[
        str, typer.Option(help="Service account whose OIDC token Cloud Scheduler sends.")
    ],
    location: Annotated[str, typer.Option(help="Cloud Scheduler location.")] = "us-central1",
    schedule: Annotated[str, typer.Option(help="How often to tick (cron).")] = "* * * * *",
    remove: Annotated[
        bool, typer.Option(help="Remove the tick job instead (and any other jobs_lib created).")
    ] = False,
    endpoint: Annotated[
        str | None,
        typer.Option(help="Cloud Scheduler API endpoint (tests point it at a stand-in)."),
    ] = None,
) -> None:
    """Create or update the Cloud Scheduler job that calls the tick; delete ones jobs_lib made that
    are no longer wanted."""
    from jobs_lib.deploy.cloud_scheduler import TickTarget, client_for, sync

    target = TickTarget(
        project=project,
        location=location,
        uri=uri,
        service_account=service_account,
        schedule=schedule,
    )
    result = sync(client_for(endpoint), [] if remove else [target], parents=[target.parent])
    console.print_json(data=result.as_dict())


def jobs_table(jobs: list[Job], title: str | None = None) -> Table:
    """A rich table of jobs."""
    table = Table(title=title)
    table.add_column("id", no_wrap=True, min_width=20)
    table.add_column("type", overflow="fold")
    table.add_column("status", no_wrap=True)
    table.add_column("attempts", justify="right")
    table.add_column("result", overflow="fold")
    table.add_column("error", overflow="fold")
    for job in jobs:
        table.add_row(
            job.id,
            job.type or "?",
            job.status.value if job.status else "?",
            str(job.attempts),
            json.dumps(job.result)[:40],
            (job.error or "")[:70],
        )
    return table


def _run(action: Any) -> None:
    try:
        action()
    except JobsError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None


def main() -> None:
    """Entry point of the `jobs` console script."""
    # As `python -m` does: the project's own modules (``--handlers myapp.jobs``) import from the
    # directory the command runs in.
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    app()


__all__ = ["app", "job_dict", "jobs_table", "main"]

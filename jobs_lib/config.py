"""Every setting jobs_lib reads, validated once; the only module that touches ``os.environ``.

`Settings` is a frozen value. `Settings.from_env` reads each setting from its
environment variable (the table in docs/reference/settings.md is checked against `SETTINGS`
by a test), and any invalid value raises `ConfigurationError` naming the
variable and what it accepts. Everything else in the package receives a
`Settings` (through `jobs_lib.app.App`) and never looks at the environment.

Why not pydantic-settings: every Cloud Function reads these at cold start, and
a table of a dozen plain parsers costs nothing to import, while pydantic's
model machinery costs tens of milliseconds per instance start.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from jobs_lib.errors import ConfigurationError

DEFAULT_PROJECT = "demo-jobs"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: Settings shown masked (`jobs settings`, error messages).
SECRET_SETTINGS = frozenset({"webhook_secret"})


def _setting(default: Any, env: str, doc: str, accepts: str, *, also: tuple[str, ...] = ()) -> Any:
    """A dataclass field that knows its environment variable, its meaning and what it accepts."""
    return field(
        default=default, metadata={"env": env, "also": also, "doc": doc, "accepts": accepts}
    )


@dataclass(frozen=True)
class Settings:
    """Where the jobs live, how the runner writes them, and how each entry point behaves.

    Build it with keywords (`Settings(project="demo-x")`) or from the environment
    (`Settings.from_env()`); either way every value is checked here.
    """

    project: str = _setting(
        DEFAULT_PROJECT,
        "GOOGLE_CLOUD_PROJECT",
        "Google Cloud project of the Firestore database",
        "a project id",
        also=("GCLOUD_PROJECT",),
    )
    database: str = _setting("(default)", "JOBS_DATABASE", "Firestore database id", "a database id")
    collection: str = _setting(
        "backgroundJobs", "JOBS_COLLECTION", "collection of job documents", "a collection id"
    )
    schedules_collection: str = _setting(
        "scheduledJobs",
        "JOBS_SCHEDULES_COLLECTION",
        "collection of schedule documents",
        "a collection id",
    )
    lease_seconds: float = _setting(
        30.0,
        "JOBS_LEASE_SECONDS",
        "how long a claim lasts before it must be renewed",
        "seconds, 1 to 600",
    )
    timestamps: Literal["timestamp", "iso"] = _setting(
        "timestamp", "JOBS_TIMESTAMPS", "how the runner writes times", "`timestamp` or `iso`"
    )
    handlers: tuple[str, ...] = _setting(
        (),
        "JOBS_HANDLERS",
        "modules that register handlers, imported at start",
        "comma-separated module paths",
    )
    log_level: str = _setting(
        "INFO",
        "JOBS_LOG_LEVEL",
        "level of the JSON log lines",
        "DEBUG, INFO, WARNING, ERROR or CRITICAL",
    )
    orphan_seconds: float = _setting(
        300.0,
        "JOBS_ORPHAN_SECONDS",
        "how long a job marked in_progress without a lease of ours (an app's own write) may sit "
        "untouched before it counts as orphaned and is recovered",
        "seconds, 1 to 86400",
    )
    tick_budget: float = _setting(
        50.0,
        "JOBS_TICK_BUDGET",
        "seconds a scheduler tick keeps claiming jobs",
        "seconds, 1 to 3600",
    )
    function_timeout: float = _setting(
        540.0,
        "JOBS_FUNCTION_TIMEOUT",
        "timeout of the deployed tick function (jobs it claims must fit)",
        "seconds, 60 to 3600",
    )
    slice_seconds: float | None = _setting(
        None,
        "JOBS_SLICE_SECONDS",
        "the longest a continuable handler runs in one invocation before it is continued in the "
        "next (default: as long as the invocation may run)",
        "seconds, 0.1 to 3600",
    )
    tick_concurrency: int = _setting(
        10, "JOBS_TICK_CONCURRENCY", "jobs a tick runs at once", "an integer, 1 to 1000"
    )
    api_create_limit: int = _setting(
        60,
        "JOBS_API_CREATE_LIMIT",
        "jobs (and schedules) one user may create through the API per window",
        "an integer, 1 to 1000000",
    )
    api_create_window: float = _setting(
        60.0,
        "JOBS_API_CREATE_WINDOW",
        "length of the API's rate-limit window",
        "seconds, 1 to 86400",
    )
    client_max_priority: int = _setting(
        0,
        "JOBS_CLIENT_MAX_PRIORITY",
        "the highest priority a user may give their own job or schedule through the API "
        "(operators: up to 10; the rules have their own `clientMaxPriority()`)",
        "an integer, 0 to 10",
    )
    schedules_per_user: int = _setting(
        20,
        "JOBS_SCHEDULES_PER_USER",
        "schedules one user may have (through the API or the rules); the scheduler switches off "
        "a user's schedules beyond it, naming the limit",
        "an integer, 1 to 10000",
    )
    cleanup_cron: str | None = _setting(
        "*/15 * * * *",
        "JOBS_CLEANUP_CRON",
        "when the built-in `jobs.cleanup` schedule runs",
        "a cron expression, or `off`",
    )
    metrics_exporter: str = _setting(
        "none",
        "JOBS_METRICS_EXPORTER",
        "where metrics go (needs the `telemetry` extra)",
        "none, prometheus, gcp, otlp or console",
    )
    traces_exporter: str = _setting(
        "none",
        "JOBS_TRACES_EXPORTER",
        "where traces go (needs the `telemetry` extra)",
        "none, gcp, otlp or console",
    )
    metrics_port: int | None = _setting(
        None,
        "JOBS_METRICS_PORT",
        "port of a long-lived worker's Prometheus `/metrics` (`jobs worker --metrics-port`)",
        "a port, 1 to 65535",
    )
    health_port: int | None = _setting(
        None,
        "JOBS_HEALTH_PORT",
        "port of a long-lived worker's `/healthz` and `/readyz` (`jobs worker --health-port`)",
        "a port, 1 to 65535",
    )
    console_auth: str = _setting(
        "firebase",
        "JOBS_CONSOLE_AUTH",
        "how the console signs people in: the Firebase JS SDK, or unsigned emulator tokens (jobs "
        "dev without the Auth emulator)",
        "`firebase` or `emulator-tokens`",
    )
    firebase_api_key: str | None = _setting(
        None,
        "JOBS_FIREBASE_API_KEY",
        "the web API key the console's Firebase sign-in uses (Firebase console, project settings)",
        "a Firebase web API key",
    )
    firebase_auth_domain: str | None = _setting(
        None,
        "JOBS_FIREBASE_AUTH_DOMAIN",
        "the console's Firebase Auth domain (default: PROJECT.firebaseapp.com)",
        "a host name",
    )
    auth_emulator_host: str | None = _setting(
        None,
        "FIREBASE_AUTH_EMULATOR_HOST",
        "the Firebase Auth emulator (firebase-admin then accepts its tokens; the console signs "
        "in there)",
        "host:port",
    )
    emulator_jar: str | None = _setting(
        None,
        "FIRESTORE_EMULATOR_JAR",
        "the Firestore emulator jar `jobs dev` and the tests start",
        "a path to cloud-firestore-emulator.jar",
    )
    java: str | None = _setting(
        None,
        "JAVA",
        "the java binary that runs the emulator (default: java on the PATH)",
        "a path to java",
    )
    region: str = _setting(
        "us-central1",
        "JOBS_REGION",
        "region of the deployed functions and of the tick's scheduler job (`jobs deploy`, the "
        "Firebase declarations)",
        "a Cloud Functions region",
    )
    service_account: str | None = _setting(
        None,
        "JOBS_SERVICE_ACCOUNT",
        "service account the deployed functions run as (default: the platform's)",
        "a service account email",
    )
    function_memory: int = _setting(
        512,
        "JOBS_FUNCTION_MEMORY",
        "memory of each deployed function, in MiB",
        "128, 256, 512, 1024, 2048, 4096, 8192, 16384 or 32768",
    )
    event_concurrency: int = _setting(
        8,
        "JOBS_EVENT_CONCURRENCY",
        "created-events one function instance handles at once",
        "an integer, 1 to 1000",
    )
    max_instances: int | None = _setting(
        None,
        "JOBS_MAX_INSTANCES",
        "most instances of the created-event function (default: the platform's, 100)",
        "an integer, 1 to 10000",
    )
    tick_sweepers: int = _setting(
        1,
        "JOBS_TICK_SWEEPERS",
        "sweepers per tick: Cloud Scheduler calls the tick this many times per schedule, each "
        "sweeping its share of the shard lanes",
        "an integer, 1 to 30",
    )
    tick_schedule: str = _setting(
        "* * * * *",
        "JOBS_TICK_SCHEDULE",
        "when Cloud Scheduler calls the tick (the Firebase declaration and `jobs deploy`)",
        "a cron expression",
    )
    webhook_secret: str | None = _setting(
        None,
        "JOBS_WEBHOOK_SECRET",
        "the shared secret completion webhooks are signed with (HMAC-SHA256; never written to a "
        "document, `jobs settings` shows it masked)",
        "a string of at least 16 characters",
    )
    webhook_allow: tuple[str, ...] = _setting(
        (),
        "JOBS_WEBHOOK_ALLOW",
        "hosts, addresses or networks webhooks may call although private (loopback, 10.0.0.0/8, "
        "...)",
        "comma-separated host names, IP addresses or CIDR networks",
    )
    function_target: str | None = _setting(
        None,
        "FUNCTION_TARGET",
        "the function this process serves, set by Cloud Functions and the Firebase emulator "
        "(functions/main.py loads the firebase-functions SDK only for its own targets)",
        "a function name",
    )

    def __post_init__(self) -> None:
        for name in ("handlers", "webhook_allow"):
            value = getattr(self, name)
            if isinstance(value, str):  # "--handlers a,b" as given on the command line
                object.__setattr__(self, name, _modules(value))
            elif isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            problem = _CHECKS[item.name](value)
            if problem:
                env = item.metadata["env"]
                shown = "(hidden)" if item.name in SECRET_SETTINGS else repr(value)
                raise ConfigurationError(
                    f"{env} ({item.name}) must be {item.metadata['accepts']}; got {shown}: "
                    f"{problem}"
                )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from the environment (or `environ`), then `overrides` (None values are
        ignored)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for item in dataclasses.fields(cls):
            names = (item.metadata["env"], *item.metadata["also"])
            raw = next((env[name] for name in names if env.get(name)), None)
            if raw is None:
                continue
            try:
                values[item.name] = _PARSERS.get(item.name, _text)(raw)
            except ValueError as exc:
                shown = "(hidden)" if item.name in SECRET_SETTINGS else repr(raw)
                raise ConfigurationError(
                    f"{names[0]} must be {item.metadata['accepts']}; got {shown}: {exc}"
                ) from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        """A copy with some values changed (None values are ignored), checked again."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def environment(self) -> dict[str, str]:
        """These settings as environment variables, for a child process (a function host, a
        worker)."""
        out: dict[str, str] = {}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if value is None:
                value = "off" if item.name == "cleanup_cron" else None
            if value is None:
                continue
            out[item.metadata["env"]] = ",".join(value) if isinstance(value, tuple) else str(value)
        return out


@dataclass(frozen=True)
class SettingDoc:
    """One row of the settings table."""

    env: str
    name: str
    default: Any
    doc: str
    accepts: str


def documented() -> list[SettingDoc]:
    """Every setting, in declaration order: what the settings table of the docs must list."""
    return [
        SettingDoc(f.metadata["env"], f.name, f.default, f.metadata["doc"], f.metadata["accepts"])
        for f in dataclasses.fields(Settings)
    ]


def settings_table() -> str:
    """The settings table of docs/reference/settings.md, as Markdown."""
    rows = [
        "| variable | setting | default | accepts | what it does |",
        "| --- | --- | --- | --- | --- |",
    ]
    for s in documented():
        default = (
            "off"
            if s.default is None and s.name == "cleanup_cron"
            else ("" if s.default in (None, ()) else s.default)
        )
        rows.append(
            f"| `{s.env}` | `{s.name}` | {f'`{default}`' if default != '' else 'none'} | "
            f"{s.accepts} | {s.doc} |"
        )
    return "\n".join(rows)


# -- parsing and checking -------------------------------------------------------------------------


def _text(raw: str) -> str:
    return raw.strip()


def _number(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ValueError("not a number") from None


def _integer(raw: str) -> int:
    try:
        return int(raw.strip())
    except ValueError:
        raise ValueError("not an integer") from None


def _modules(raw: str) -> tuple[str, ...]:
    return tuple(m.strip() for m in raw.split(",") if m.strip())


def _cron(raw: str) -> str | None:
    return None if raw.strip().lower() == "off" else raw.strip()


_PARSERS: dict[str, Callable[[str], Any]] = {
    "lease_seconds": _number,
    "orphan_seconds": _number,
    "tick_budget": _number,
    "function_timeout": _number,
    "api_create_window": _number,
    "tick_concurrency": _integer,
    "tick_sweepers": _integer,
    "function_memory": _integer,
    "event_concurrency": _integer,
    "max_instances": _integer,
    "api_create_limit": _integer,
    "client_max_priority": _integer,
    "schedules_per_user": _integer,
    "handlers": _modules,
    "webhook_allow": _modules,
    "metrics_port": _integer,
    "slice_seconds": _number,
    "health_port": _integer,
    "metrics_exporter": lambda raw: raw.strip().lower(),
    "traces_exporter": lambda raw: raw.strip().lower(),
    "cleanup_cron": _cron,
    "log_level": lambda raw: raw.strip().upper(),
}


def _nonempty(value: Any) -> str:
    return (
        ""
        if isinstance(value, str) and value.strip() and "/" not in value
        else "empty or contains '/'"
    )


def _between(low: float, high: float, integer: bool = False) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
            return "wrong type"
        return "" if low <= value <= high else "out of range"

    return check


def _check_cron(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        return "wrong type"
    from jobs_lib.model.cron import CronError, check

    try:
        check(value, "UTC")
    except CronError as exc:
        return str(exc)
    return ""


def _optional_text(value: Any) -> str:
    return "" if value is None or (isinstance(value, str) and value) else "wrong type"


_CHECKS: dict[str, Callable[[Any], str]] = {
    "project": _nonempty,
    "database": _nonempty,
    "collection": _nonempty,
    "schedules_collection": _nonempty,
    "lease_seconds": _between(1, 600),
    "orphan_seconds": _between(1, 86400),
    "timestamps": lambda v: "" if v in ("timestamp", "iso") else "not one of the choices",
    "handlers": lambda v: (
        "" if isinstance(v, tuple) and all(isinstance(m, str) and m for m in v) else "wrong type"
    ),
    "log_level": lambda v: "" if v in LOG_LEVELS else "not one of the choices",
    "tick_budget": _between(1, 3600),
    "function_timeout": _between(60, 3600),
    "tick_concurrency": _between(1, 1000, integer=True),
    "tick_sweepers": _between(1, 30, integer=True),
    "api_create_limit": _between(1, 1_000_000, integer=True),
    "api_create_window": _between(1, 86400),
    "client_max_priority": _between(0, 10, integer=True),
    "schedules_per_user": _between(1, 10000, integer=True),
    "cleanup_cron": _check_cron,
    "metrics_exporter": lambda v: (
        "" if v in ("none", "prometheus", "gcp", "otlp", "console") else "not one of the choices"
    ),
    "traces_exporter": lambda v: (
        "" if v in ("none", "gcp", "otlp", "console") else "not one of the choices"
    ),
    "slice_seconds": lambda v: (
        ""
        if v is None
        or (isinstance(v, int | float) and not isinstance(v, bool) and 0.1 <= v <= 3600)
        else "out of range"
    ),
    "metrics_port": lambda v: (
        ""
        if v is None or (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 65535)
        else "out of range"
    ),
    "health_port": lambda v: (
        ""
        if v is None or (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 65535)
        else "out of range"
    ),
    "console_auth": lambda v: (
        "" if v in ("firebase", "emulator-tokens") else "not one of the choices"
    ),
    "firebase_api_key": _optional_text,
    "firebase_auth_domain": _optional_text,
    "auth_emulator_host": _optional_text,
    "emulator_jar": _optional_text,
    "java": _optional_text,
    "region": _nonempty,
    "service_account": _optional_text,
    "function_memory": lambda v: (
        ""
        if v in (128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
        else "not one of the choices"
    ),
    "event_concurrency": _between(1, 1000, integer=True),
    "max_instances": lambda v: "" if v is None else _between(1, 10000, integer=True)(v),
    "tick_schedule": _check_cron,
    "function_target": _optional_text,
    "webhook_secret": lambda v: (
        ""
        if v is None or (isinstance(v, str) and len(v) >= 16)
        else "too short (at least 16 characters)"
    ),
    "webhook_allow": lambda v: (
        "" if isinstance(v, tuple) and all(isinstance(a, str) and a for a in v) else "wrong type"
    ),
}


# -- the process environment, for the few places that must set or pass it ----------------------


def child_environment(overrides: Mapping[str, str]) -> dict[str, str]:
    """This process's environment plus `overrides`: what a child process (a function host) starts
    with."""
    return {**os.environ, **overrides}


def environment_value(name: str) -> str | None:
    """One variable that a library reads by itself (``FIRESTORE_EMULATOR_HOST``), for display."""
    return os.environ.get(name)


def read_env_file(path: Path) -> dict[str, str]:
    """The variables a codebase's ``.env`` sets (none when there is no such file).

    Written by hand: the Firebase CLI's format is ``KEY=VALUE`` lines with ``#`` comments and
    optional quotes, and a dependency would load on every cold start for a dozen lines.
    """
    found: dict[str, str] = {}
    if not path.is_file():
        return found
    for line in path.read_text().splitlines():
        key, sep, value = line.strip().partition("=")
        key = key.removeprefix("export ").strip()
        if not sep or not key or key.startswith("#"):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        found[key] = value
    return found


def codebase_env(path: Path | None = None) -> dict[str, str]:
    """Set the variables of the codebase's ``.env`` that the environment lacks; returns them.

    The Firebase CLI gives a deployed or emulated function its ``.env``, but it discovers the SDK
    declarations (the trigger's database, region, memory, the tick's schedule) in a process that
    gets only its own variables (firebase-tools 14: ``discoverBuild`` runs main.py with
    ``FIREBASE_CONFIG`` and ``GCLOUD_PROJECT`` alone). Discovery runs in the codebase's folder, so
    reading ``./.env`` here makes the declarations agree with what the functions read.
    """
    missing = {
        key: value
        for key, value in read_env_file(path or Path.cwd() / ".env").items()
        if key not in os.environ
    }
    os.environ.update(missing)
    return missing


@contextlib.contextmanager
def exported(**values: str) -> Iterator[None]:
    """Set environment variables for this process (libraries such as the Firestore client read
    ``FIRESTORE_EMULATOR_HOST`` themselves) and restore them afterwards."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


__all__ = [
    "DEFAULT_PROJECT",
    "LOG_LEVELS",
    "SECRET_SETTINGS",
    "SettingDoc",
    "Settings",
    "child_environment",
    "codebase_env",
    "documented",
    "environment_value",
    "exported",
    "read_env_file",
    "settings_table",
]

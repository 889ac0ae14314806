"""One assembly: everything jobs_lib runs on, built once from one `Settings`.

    app = App.from_env()            # or App(Settings(project="demo-x"))
    app.worker(concurrency=10).run()

`App` creates the Firestore connection (client, server clock, operation
counts), the store and its parts, the engine, the schedule firer and the
clients, each once and on first use, and hands the same ones to whoever asks:
the long-lived worker (`jobs worker`), the Cloud Functions
(`jobs_lib.functions.Functions`), the REST API, the command line and `jobs
dev`. Nothing in the package keeps a module-level instance of any of them.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import jobs_lib.builtin  # noqa: F401  (the built-in handlers are always registered)
from jobs_lib.builtin.housekeeping import CLEANUP_TYPE
from jobs_lib.config import Settings
from jobs_lib.engine.runner import Engine, new_holder_id
from jobs_lib.errors import ConfigurationError
from jobs_lib.model.clock import ServerClock
from jobs_lib.observability.telemetry import Telemetry
from jobs_lib.registry import CodeSchedule, HandlerRegistry, default_registry
from jobs_lib.store import open_store

if TYPE_CHECKING:
    from jobs_lib.api import JobsApi
    from jobs_lib.client import JobsClient
    from jobs_lib.engine.schedules import ScheduleClient, Scheduler
    from jobs_lib.worker import Worker

# The client, the schedule firer and the worker are imported where first used: a created-event
# function instance needs none of them (cold start, see bench/coldstart.py).


def load_handler_modules(modules: str | Iterable[str] | None) -> list[str]:
    """Import the user's handler modules so their ``@handler`` decorators run; returns their names.

    `modules` is a comma-separated string or a list (`Settings.handlers`). The
    built-in handlers are registered by importing this module.
    """
    names = [
        m.strip()
        for m in ((modules or "").split(",") if isinstance(modules, str | None) else modules)
        if m.strip()
    ]
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigurationError(f"cannot import handler module {name!r}: {exc}") from exc
    return names


class App:
    """The process's jobs_lib: one connection, store, engine, schedule firer and clients."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        registry: HandlerRegistry | None = None,
        db: Any | None = None,
        clock: ServerClock | None = None,
        runtime: str = "worker",
        holder: str | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        """`runtime` is ``"worker"`` or ``"function"`` (Cloud Functions leave ``worker_only``
        handlers alone). Handler modules named in `settings.handlers` are imported now."""
        self.settings = settings or Settings.from_env()
        self.registry = registry if registry is not None else default_registry
        self.handler_modules = load_handler_modules(self.settings.handlers)
        self.runtime = runtime
        self.holder = holder or new_holder_id()
        self.store = open_store(self.settings, db=db, clock=clock)
        self.connection = self.store.connection
        #: The instruments every part records into (no-ops until an OpenTelemetry SDK is installed).
        self.telemetry = telemetry or Telemetry(runtime)
        self._lock = threading.Lock()
        self._engine: Engine | None = None
        self._scheduler: Scheduler | None = None
        self._api: JobsApi | None = None
        self._engines: list[Engine] = []

    @classmethod
    def from_env(cls, **settings: Any) -> App:
        """An app from the environment's settings (`Settings.from_env`), with `settings`
        overriding."""
        return cls(Settings.from_env(**settings))

    # -- the parts, built once ----------------------------------------------------------

    @property
    def db(self) -> Any:
        """The Firestore client (created on first use)."""
        return self.connection.db

    @property
    def engine(self) -> Engine:
        """The process's engine: claims and runs jobs (created-events share it)."""
        with self._lock:
            if self._engine is None:
                self._engine = self._build_engine()
            return self._engine

    def new_engine(self, **options: Any) -> Engine:
        """An engine of its own on the same store (a tick's recorder and keeper end with it)."""
        with self._lock:
            return self._build_engine(**options)

    def _build_engine(self, **options: Any) -> Engine:
        options.setdefault("runtime", self.runtime)
        options.setdefault("telemetry", self.telemetry)
        engine = Engine(self.store, self.registry, **options)
        self._engines.append(engine)
        return engine

    def system_schedules(self) -> list[CodeSchedule]:
        """Schedules the configuration declares: the built-in cleanup, unless switched off."""
        if self.settings.cleanup_cron is None:
            return []
        return [CodeSchedule(CLEANUP_TYPE, CLEANUP_TYPE, self.settings.cleanup_cron)]

    @property
    def scheduler(self) -> Scheduler:
        """The schedule firer (shared by the worker and every tick of this process)."""
        from jobs_lib.engine.schedules import Scheduler

        with self._lock:
            if self._scheduler is None:
                self._scheduler = Scheduler(
                    self.store.schedules,
                    self.store,
                    self.registry,
                    holder=self.holder,
                    system_schedules=self.system_schedules(),
                    telemetry=self.telemetry,
                )
            return self._scheduler

    @property
    def client(self) -> JobsClient:
        """The Python client: enqueue, get, cancel, retry, pause."""
        from jobs_lib.client import JobsClient

        return JobsClient(store=self.store, registry=self.registry, telemetry=self.telemetry)

    @property
    def schedules(self) -> ScheduleClient:
        """The schedules client: create, list, update, enable, disable, delete."""
        from jobs_lib.engine.schedules import ScheduleClient

        return ScheduleClient(store=self.store.schedules, registry=self.registry, jobs=self.client)

    def worker(self, *, engine: Engine | None = None, **options: Any) -> Worker:
        """A worker on the app's engine (or `engine`) and schedule firer; `options` as for
        `Worker`."""
        from jobs_lib.worker import Worker

        schedules = options.pop("schedules", True)
        return Worker(
            engine or self.engine,
            schedules=schedules,
            scheduler=self.scheduler if schedules else None,
            **options,
        )

    def api(self) -> JobsApi:
        """The REST API over this app (its dependencies are imported only when first asked for)."""
        from jobs_lib.api import JobsApi

        with self._lock:
            if self._api is None:
                self._api = JobsApi(
                    self.client,
                    schedules=self.schedules,
                    create_limit=self.settings.api_create_limit,
                    create_window=self.settings.api_create_window,
                )
            return self._api

    def close(self) -> None:
        """Stop every engine's keeper and flush its recorder."""
        with self._lock:
            engines, self._engines = self._engines, []
            self._engine = None
        for engine in engines:
            engine.close()


__all__ = ["App", "load_handler_modules"]

"""`jobs dev --firebase`: the whole stack under the Firebase CLI's own emulators.

    firebase emulators:start --only firestore,functions   (the repository's firebase.json)
        Firestore emulator ──created-event──> Functions emulator: jobs_created
                                              (the firebase-functions SDK)
    ticker ──Cloud Scheduler POST──> functions-framework serving jobs_tick from functions/venv

The Functions emulator loads the SDK declarations in functions/main.py from ``functions/venv``
(made here with the runtime's Python) and fires the created-trigger on documents any client
writes. It does not fire scheduled functions (it would need the Pub/Sub emulator), so the
ticker calls ``jobs_tick`` the way Cloud Scheduler calls the deployed function: over HTTP, on
functions-framework, as Cloud Run serves it. Offline, the CLI runs the Google Cloud SDK's
Firestore emulator through `jobs_lib.deploy.firebase.firestore_binary`.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jobs_lib.config import child_environment, environment_value, exported, read_env_file
from jobs_lib.deploy import firebase
from jobs_lib.devstack.auth_emulator import INSTALL_HELP as FIREBASE_INSTALL_HELP
from jobs_lib.devstack.auth_emulator import find_firebase
from jobs_lib.devstack.dev import SCHEDULER_HEADERS, DevStack
from jobs_lib.devstack.emulator import find_java, stop_process_group
from jobs_lib.errors import EmulatorUnavailable

READY = "All emulators ready"


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(
            socket.SOL_SOCKET, socket.SO_REUSEADDR, 1
        )  # a closed connection in TIME_WAIT does not count
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class FirebaseStack(DevStack):
    """`firebase emulators:start` on the repository's firebase.json, the tick beside it, the
    console."""

    def __init__(
        self,
        *,
        config: Path | None = None,
        firebase_cli: str | None = None,
        ready_timeout: float = 240.0,
        only: str = "firestore,functions",
        venv: Path | None = None,
        functions: tuple[str, ...] = (),
        **kwargs: Any,
    ) -> None:
        """`config` is a project's firebase.json (this repository's by default), `only` the
        emulators to start, `venv` the Python codebase's virtualenv when it is made already (else
        `functions_venv` makes it), `functions` more functions to wait for besides jobs_created."""
        super().__init__(**kwargs)
        self.config = (config or firebase.ROOT / "firebase.json").resolve()
        self.only = only
        self.venv = venv
        self.functions = functions
        self.firebase_cli = firebase_cli
        self.ready_timeout = ready_timeout
        self.cli: subprocess.Popen[bytes] | None = None
        self.cli_log = self.log_dir / "firebase-emulators.log"
        #: What was done to make the CLI run here (shown by `jobs dev --firebase`).
        self.notes: list[str] = []
        emulators = json.loads(self.config.read_text()).get("emulators", {})
        self.firestore_host = emulators.get("firestore", {}).get("host", "127.0.0.1")
        self.firestore_port = int(emulators.get("firestore", {}).get("port", 8080))
        self.functions_host = emulators.get("functions", {}).get("host", "127.0.0.1")
        self.functions_port = int(emulators.get("functions", {}).get("port", 5001))
        #: Seconds from starting `firebase emulators:start` to "All emulators ready".
        self.ready_seconds: float | None = None
        self.started_at: float | None = None

    @property
    def functions_url(self) -> str:
        """The Functions emulator's base URL."""
        return f"http://{self.functions_host}:{self.functions_port}"

    @property
    def api_url(self) -> str:
        """The REST API, as the Functions emulator serves the jobs_api function."""
        return f"{self.functions_url}/{self.project}/{self.settings.region}/jobs_api"

    def _cli_environment(self) -> dict[str, str]:
        java = find_java()
        # This process may point at another emulator or project (a test session's): the CLI's
        # functions must see the CLI's own Firestore emulator and this stack's project.
        # What the codebase's .env sets (a project `jobs init` adopted) is the codebase's to say.
        own = read_env_file(self.functions_dir / ".env")
        jobs = {
            "JOBS_HANDLERS": self.handlers,
            "JOBS_DATABASE": self.settings.database,
            "JOBS_COLLECTION": self.settings.collection,
        }
        overrides = {
            "GOOGLE_CLOUD_PROJECT": self.project,
            "GCLOUD_PROJECT": self.project,
            **{key: value for key, value in jobs.items() if key not in own},
            **self.extra_env,
        }
        if java is not None:  # the CLI runs `java` from the PATH: make it this one
            overrides["PATH"] = os.pathsep.join(
                p for p in (str(Path(java).resolve().parent), environment_value("PATH") or "") if p
            )
        binary, note = firebase.firestore_binary()
        self.notes.append(note)
        if binary is not None:
            overrides["FIRESTORE_EMULATOR_BINARY_PATH"] = binary
        env = child_environment(overrides)
        auth_host = self.extra_env.get("FIREBASE_AUTH_EMULATOR_HOST")
        for inherited in (
            "FUNCTION_TARGET",
            "FUNCTION_SIGNATURE_TYPE",
            "K_SERVICE",
            "FIRESTORE_EMULATOR_HOST",
            "FIREBASE_AUTH_EMULATOR_HOST",
        ):
            env.pop(
                inherited, None
            )  # the CLI and its runtimes set their own; a stale one would mislead them
        if auth_host:
            env["FIREBASE_AUTH_EMULATOR_HOST"] = auth_host  # asked for by the caller
        return env

    def check(self) -> str:
        """The firebase CLI to run, after checking what it needs; raises `EmulatorUnavailable`
        naming what to install."""
        cli = self.firebase_cli or find_firebase()
        if cli is None:
            raise EmulatorUnavailable(
                f"jobs dev --firebase needs the Firebase CLI: {FIREBASE_INSTALL_HELP}"
            )
        if shutil.which("node") is None:
            raise EmulatorUnavailable(
                "the Firebase CLI needs Node.js 20 or newer: apt-get install -y nodejs npm"
            )
        java = find_java()
        problem = firebase.check_java_for_cli(
            firebase.firebase_tools_version(cli), firebase.java_major(java) if java else None
        )
        if problem:
            raise EmulatorUnavailable(problem)
        for host, port, what in (
            (self.firestore_host, self.firestore_port, "Firestore"),
            (self.functions_host, self.functions_port, "Functions"),
        ):
            if not _port_free(host, port):
                raise EmulatorUnavailable(
                    f"port {port} ({what} emulator, from {self.config}) is taken: stop what "
                    f"listens there or change the port in firebase.json"
                )
        return cli

    def start(self) -> FirebaseStack:
        """Start everything; returns once the Functions emulator has loaded the created-trigger."""
        try:
            cli = self.check()
            venv = self.venv or firebase.functions_venv(self.functions_dir, echo=self.notes.append)
            env = self._cli_environment()
            handle = open(self.cli_log, "ab")  # noqa: SIM115 - the CLI writes it until stopped
            self.started_at = time.monotonic()
            command = [
                cli,
                "emulators:start",
                "--only",
                self.only,
                "--project",
                self.project,
                "--config",
                str(self.config),
            ]
            self.cli = subprocess.Popen(
                command,
                cwd=self.config.parent,
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            self._wait_ready()
            self.emulator_address = f"{self.firestore_host}:{self.firestore_port}"
            self._exported.enter_context(
                exported(
                    FIRESTORE_EMULATOR_HOST=self.emulator_address, GOOGLE_CLOUD_PROJECT=self.project
                )
            )
            self.start_host("jobs_tick", "http", python=str(venv / "bin" / "python"))
            self.wait_for_hosts()
            self.start_console_and_ticker()
        except BaseException:
            self.stop()
            raise
        return self

    def log_tail(self, characters: int = 4000) -> str:
        """The end of what the CLI printed."""
        try:
            return self.cli_log.read_text(errors="replace")[-characters:]
        except OSError:
            return ""

    def _wait_ready(self) -> None:
        assert self.cli is not None and self.started_at is not None
        deadline = time.monotonic() + self.ready_timeout
        wanted = ("jobs_created", *self.functions)
        while time.monotonic() < deadline:
            text = self.log_tail(200_000)
            if self.cli.poll() is not None:
                raise EmulatorUnavailable(
                    f"firebase emulators:start exited with code "
                    f"{self.cli.returncode}:\n{self.log_tail()}"
                )
            if READY in text:
                missing = [name for name in wanted if f"-{name}]: " not in text]
                if missing:
                    raise EmulatorUnavailable(
                        f"the Functions emulator did not load {', '.join(missing)}:\n"
                        f"{self.log_tail()}"
                    )
                self.ready_seconds = time.monotonic() - self.started_at
                return
            time.sleep(0.2)
        raise EmulatorUnavailable(
            f"firebase emulators:start was not ready within "
            f"{self.ready_timeout:g}s:\n{self.log_tail()}"
        )

    def tick_now(self, timeout: float = 600.0) -> dict[str, Any]:
        """Call jobs_tick the way Cloud Scheduler does; the SDK answers with an empty 200 (the
        summary is in its log)."""
        headers = {
            **SCHEDULER_HEADERS,
            "X-CloudScheduler-ScheduleTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        request = urllib.request.Request(
            self.hosts["jobs_tick"].url, data=b"{}", headers=headers, method="POST"
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = {"status": response.status, "body": response.read().decode(errors="replace")}
        self.ticks.append(answer)
        return answer

    def stop(self) -> None:
        """Stop the CLI (it stops its emulators), the tick host and the console."""
        super().stop()
        if self.cli is not None:
            stop_process_group(self.cli)
            self.cli = None

    def __enter__(self) -> FirebaseStack:
        return self.start()


__all__ = ["FirebaseStack"]

"""Start and stop the real Cloud Firestore emulator (tests, `jobs demo`, `jobs dev`, the
benchmarks).

The emulator is a Java program shipped with the Google Cloud SDK (or the
Firebase CLI). It is started directly with ``java -cp <jar>`` in its own
process group, so stopping it never leaves a ``java`` child behind.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from jobs_lib.config import Settings, exported
from jobs_lib.errors import EmulatorUnavailable

MAIN_CLASS = "com.google.cloud.datastore.emulator.firestore.CloudFirestore"

INSTALL_HELP = """\
The Cloud Firestore emulator needs Java 11+ and the emulator jar. Install them with one of:
  * Google Cloud SDK:  gcloud components install cloud-firestore-emulator
  * Debian/Ubuntu (Google Cloud apt repository):
        sudo apt-get install -y default-jre-headless google-cloud-cli-firestore-emulator
  * Firebase CLI:      npm install -g firebase-tools && firebase setup:emulators:firestore
or point FIRESTORE_EMULATOR_JAR at cloud-firestore-emulator.jar (and JAVA at a java binary)."""


def find_java() -> str | None:
    """The java binary to use (``JAVA`` or ``java`` on the PATH)."""
    java = Settings.from_env().java or shutil.which("java")
    return java if java and os.access(java, os.X_OK) else None


def find_jar() -> str | None:
    """Locate cloud-firestore-emulator.jar in the usual installation places."""
    explicit = Settings.from_env().emulator_jar
    if explicit:
        return explicit if os.path.isfile(explicit) else None
    roots = []
    gcloud = shutil.which("gcloud")
    if gcloud:
        roots.append(Path(os.path.realpath(gcloud)).parent.parent)
    roots += [
        Path("/usr/lib/google-cloud-sdk"),
        Path("/usr/share/google-cloud-sdk"),
        Path("/opt/google-cloud-sdk"),
        Path.home() / "google-cloud-sdk",
    ]
    for root in roots:
        jar = root / "platform" / "cloud-firestore-emulator" / "cloud-firestore-emulator.jar"
        if jar.is_file():
            return str(jar)
    cached = sorted(
        glob.glob(
            str(
                Path.home()
                / ".cache"
                / "firebase"
                / "emulators"
                / "cloud-firestore-emulator-v*.jar"
            )
        )
    )
    return cached[-1] if cached else None


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM a process started in its own session and everything it started; SIGKILL after 10
    s."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


@dataclass
class Emulator:
    """A running emulator process."""

    host: str
    port: int
    project: str
    process: subprocess.Popen[bytes]
    log_path: str
    rules: str | None = None
    functions_emulator: str | None = None
    _log_file: object = field(default=None, repr=False)

    @property
    def address(self) -> str:
        """``host:port``, the value of FIRESTORE_EMULATOR_HOST."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The emulator's base URL."""
        return f"http://{self.address}"

    def clear(self) -> None:
        """Delete every document (registered triggers are kept)."""
        request = urllib.request.Request(
            f"{self.url}/emulator/v1/projects/{self.project}/databases/(default)/documents",
            method="DELETE",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()

    def alive(self) -> bool:
        """True while the process runs and answers HTTP."""
        if self.process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(self.url + "/", timeout=2) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the emulator printed."""
        try:
            return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the emulator and everything it started."""
        stop_process_group(self.process)
        log_file = self._log_file
        if log_file is not None:
            log_file.close()  # type: ignore[attr-defined]
            # Its output is read only while it runs (log_tail); each run left one in /tmp before.
            with contextlib.suppress(OSError):
                os.unlink(self.log_path)


def start(
    *,
    project: str = "demo-jobs",
    port: int | None = None,
    host: str = "127.0.0.1",
    rules: str | None = None,
    functions_emulator: str | None = None,
    timeout: float = 60.0,
    java_heap: str | None = None,
) -> Emulator:
    """Start the emulator on a free port and wait until it answers.

    Raises `EmulatorUnavailable` naming what to install when Java or the
    emulator is missing, or with the emulator's own output when it fails.
    """
    if not project.startswith("demo-"):
        raise EmulatorUnavailable(
            f"use a 'demo-' project id with the emulator (got {project!r}) so nothing can reach "
            f"a real project"
        )
    java, jar = find_java(), find_jar()
    if java is None or jar is None:
        missing = "Java" if java is None else "the Cloud Firestore emulator jar"
        raise EmulatorUnavailable(
            f"cannot start the Firestore emulator: {missing} not found.\n{INSTALL_HELP}"
        )
    for attempt in range(3):
        try:
            return _start(
                java,
                jar,
                project,
                port or free_port(),
                host,
                rules,
                functions_emulator,
                timeout,
                java_heap,
            )
        except _PortTaken:
            # A free port was taken between our check and the emulator's bind (or one of the ports
            # it opens on its own collided): another port, unless the caller chose this one.
            if port is not None or attempt == 2:
                raise EmulatorUnavailable(
                    f"the Firestore emulator could not bind its ports "
                    f"({'port ' + str(port) if port else 'three free ports tried'})"
                ) from None
    raise AssertionError("unreachable")


class _PortTaken(Exception):
    """The emulator exited at start because an address was in use."""


def _start(
    java: str,
    jar: str,
    project: str,
    port: int,
    host: str,
    rules: str | None,
    functions_emulator: str | None,
    timeout: float,
    java_heap: str | None,
) -> Emulator:
    command = [java, "-Duser.language=en"]
    if java_heap:
        command.append(f"-Xmx{java_heap}")
    command += [
        "-cp",
        jar,
        MAIN_CLASS,
        "start",
        f"--host={host}",
        f"--port={port}",
        f"--project_id={project}",
    ]
    if rules:
        command.append(f"--rules={rules}")
    if functions_emulator:
        command.append(f"--functions_emulator={functions_emulator}")
    log_fd, log_path = tempfile.mkstemp(prefix="firestore-emulator-", suffix=".log")
    log_file = os.fdopen(log_fd, "wb")
    process = subprocess.Popen(
        command,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    emulator = Emulator(host, port, project, process, log_path, rules, functions_emulator, log_file)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = emulator.log_tail()
            emulator.stop()
            if "Address already in use" in tail:
                raise _PortTaken(tail)
            raise EmulatorUnavailable(
                f"the Firestore emulator exited with code "
                f"{process.returncode}:\n{tail}\n{INSTALL_HELP}"
            )
        if emulator.alive():
            return emulator
        time.sleep(0.2)
    tail = emulator.log_tail()  # read before stop() deletes the log
    emulator.stop()
    raise EmulatorUnavailable(
        f"the Firestore emulator did not answer on {emulator.address} within {timeout:g}s:\n{tail}"
    )


@contextlib.contextmanager
def running(**kwargs: object) -> Iterator[Emulator]:
    """Start an emulator for the duration of a ``with`` block, with FIRESTORE_EMULATOR_HOST set."""
    emulator = start(**kwargs)  # type: ignore[arg-type]
    try:
        with exported(FIRESTORE_EMULATOR_HOST=emulator.address):
            yield emulator
    finally:
        emulator.stop()


__all__ = [
    "INSTALL_HELP",
    "Emulator",
    "find_jar",
    "find_java",
    "free_port",
    "running",
    "start",
    "stop_process_group",
]

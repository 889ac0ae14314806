"""The Firebase Auth emulator (from firebase-tools) for `jobs dev` and the tests, with ready-made
users.

When firebase-tools is installed (on the PATH, or where `scripts/bootstrap` puts it), `jobs dev`
starts its Auth emulator and creates the console's dev users in it, each with the custom claims
the API reads; the console then signs in through the Firebase JS SDK exactly as in production,
against the emulator. Without firebase-tools, `jobs dev` signs people in with emulator tokens.
The Auth emulator is plain Node.js: it needs no Java.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs_lib.devstack.emulator import free_port, stop_process_group
from jobs_lib.errors import EmulatorUnavailable

#: The firebase-tools release `scripts/bootstrap` installs (14.18 is the last to run on Java 17).
FIREBASE_TOOLS_VERSION = "14.18.0"
#: Where `scripts/bootstrap` installs it when it is not on the PATH.
CACHE = Path.home() / ".cache" / "jobs_lib" / "firebase-tools"
INSTALL_HELP = (
    f"install firebase-tools: npm install --prefix {CACHE} "
    f"firebase-tools@{FIREBASE_TOOLS_VERSION} (scripts/bootstrap does), or npm "
    f"install -g firebase-tools"
)


def find_firebase() -> str | None:
    """The firebase CLI: on the PATH, or the copy `scripts/bootstrap` installed."""
    cached = CACHE / "node_modules" / ".bin" / "firebase"
    return shutil.which("firebase") or (str(cached) if cached.exists() else None)


@dataclass
class AuthEmulator:
    """A running Auth emulator."""

    project: str
    port: int
    process: subprocess.Popen[bytes]
    folder: Path
    users: list[dict[str, Any]] = field(default_factory=list)

    @property
    def host(self) -> str:
        """host:port, as FIREBASE_AUTH_EMULATOR_HOST wants it."""
        return f"127.0.0.1:{self.port}"

    def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            f"http://{self.host}/identitytoolkit.googleapis.com/v1/projects/{self.project}/{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": "Bearer owner"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            answer: dict[str, Any] = json.loads(response.read())
        return answer

    def create_user(self, uid: str, email: str, password: str, claims: dict[str, Any]) -> None:
        """A user who can sign in with `email` and `password` and whose ID tokens carry `claims`."""
        self._call(
            "accounts",
            {"localId": uid, "email": email, "password": password, "emailVerified": True},
        )
        self._call("accounts:update", {"localId": uid, "customAttributes": json.dumps(claims)})
        self.users.append({"uid": uid, "email": email, "claims": claims})

    def stop(self) -> None:
        """Stop the emulator and remove its folder."""
        stop_process_group(self.process)
        shutil.rmtree(self.folder, ignore_errors=True)


def start(project: str, *, port: int | None = None, timeout: float = 90.0) -> AuthEmulator:
    """Start the Auth emulator of firebase-tools for `project` (a ``demo-`` id); raises
    `EmulatorUnavailable`."""
    firebase = find_firebase()
    if firebase is None:
        raise EmulatorUnavailable(
            f"the Firebase Auth emulator needs firebase-tools: {INSTALL_HELP}"
        )
    port = port or free_port()
    folder = Path(tempfile.mkdtemp(prefix="jobs-auth-emulator-"))
    (folder / "firebase.json").write_text(
        json.dumps(
            {
                "emulators": {
                    "auth": {"host": "127.0.0.1", "port": port},
                    "ui": {"enabled": False},
                    "singleProjectMode": True,
                }
            }
        )
    )
    log = open(folder / "emulator.log", "wb")  # noqa: SIM115 - the process writes it until stopped
    process = subprocess.Popen(
        [firebase, "emulators:start", "--only", "auth", "--project", project],
        cwd=folder,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    emulator = AuthEmulator(project, port, process, folder)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        with contextlib.suppress(urllib.error.URLError, OSError, ValueError):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                json.loads(response.read())
            return emulator
        time.sleep(0.3)
    tail = (folder / "emulator.log").read_text(errors="replace")[-2000:]
    emulator.stop()
    raise EmulatorUnavailable(f"the Firebase Auth emulator did not start:\n{tail}\n{INSTALL_HELP}")


__all__ = ["CACHE", "FIREBASE_TOOLS_VERSION", "AuthEmulator", "find_firebase", "start"]

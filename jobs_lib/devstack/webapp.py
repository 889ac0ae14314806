"""The example web app (clients/web/example), served beside the local stack's console.

A few static files (the page, its style, and ``app.js``: the app bundled with the Firebase JS SDK
and jobs-lib-web by ``npm run build:example`` in clients/web, which `scripts/bootstrap` runs) and
``config.json``, which tells the page where the stack's emulators are. The page signs in on the
Auth emulator, enqueues a job through the project's rules, follows it live and can cancel it.
"""

from __future__ import annotations

import json
import mimetypes
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

#: The example app's files in this repository.
EXAMPLE = Path(__file__).resolve().parents[2] / "clients" / "web" / "example"
FILES = ("index.html", "style.css", "app.js")


def available(folder: Path = EXAMPLE) -> bool:
    """True when the app is built (``app.js`` exists): `scripts/bootstrap` builds it with npm."""
    return all((folder / name).exists() for name in FILES)


class ExampleServer:
    """Serves the example app and its ``config.json`` on 127.0.0.1."""

    def __init__(self, config: dict[str, Any], *, port: int = 0, folder: Path = EXAMPLE) -> None:
        body = json.dumps(config).encode()
        files = {name: folder / name for name in FILES}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                name = self.path.split("?", 1)[0].lstrip("/") or "index.html"
                if name == "config.json":
                    payload, kind = body, "application/json"
                elif name in files:
                    payload, kind = (
                        files[name].read_bytes(),
                        mimetypes.guess_type(name)[0] or "application/octet-stream",
                    )
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="example-app", daemon=True
        )

    @property
    def url(self) -> str:
        """Where the page is."""
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> ExampleServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def config_for(
    project: str, firestore_address: str, auth_host: str, *, email: str = "", password: str = ""
) -> dict[str, Any]:
    """The page's ``config.json`` for emulators at these addresses (host:port)."""
    host, _, port = firestore_address.rpartition(":")
    return {
        "projectId": project,
        "apiKey": "demo-api-key",
        "authEmulator": f"http://{auth_host}",
        "firestoreEmulator": {"host": host, "port": int(port)},
        "email": email,
        "password": password,
    }


__all__ = ["EXAMPLE", "ExampleServer", "available", "config_for"]

"""Health checks for a long-lived worker: ``/healthz`` and ``/readyz`` on `jobs worker
--health-port`.

``/healthz`` answers 200 while the worker's main loop turns (Kubernetes and
Cloud Run restart a process whose liveness probe fails); ``/readyz`` answers
200 while Firestore has answered one of the worker's calls recently, 503
otherwise (a readiness probe takes the worker out of rotation while its
database is unreachable, and puts it back when it answers again). Both answer
a small JSON body saying why.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Callable
from typing import Any

#: The main loop is alive if it turned within this many seconds.
LIVE_WITHIN = 30.0
#: The worker is ready if Firestore answered within this many seconds (an idle worker polls every
#: second or so).
READY_WITHIN = 10.0


class HealthServer:
    """Serves the two probes on a daemon thread."""

    def __init__(
        self,
        port: int,
        *,
        loop_turned: Callable[[], float | None],
        firestore_answered: Callable[[], float | None],
        host: str = "0.0.0.0",
    ) -> None:
        self.loop_turned = loop_turned
        self.firestore_answered = firestore_answered
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/healthz":
                    ok, body = server.live()
                elif self.path.rstrip("/") == "/readyz":
                    ok, body = server.ready()
                else:
                    ok, body = (
                        False,
                        {"error": f"no such probe {self.path}; use /healthz or /readyz"},
                    )
                    self.send_response(404)
                    self._body(body)
                    return
                self.send_response(200 if ok else 503)
                self._body(body)

            def _body(self, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="jobs-health", daemon=True
        )

    @staticmethod
    def _age(moment: float | None) -> float | None:
        return None if moment is None else round(time.monotonic() - moment, 3)

    def live(self) -> tuple[bool, dict[str, Any]]:
        """Whether the main loop turned recently."""
        age = self._age(self.loop_turned())
        ok = age is not None and age <= LIVE_WITHIN
        return ok, {"ok": ok, "loopAgeSeconds": age, "limitSeconds": LIVE_WITHIN}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """Whether Firestore answered recently."""
        age = self._age(self.firestore_answered())
        ok = age is not None and age <= READY_WITHIN
        return ok, {"ok": ok, "firestoreAnsweredSecondsAgo": age, "limitSeconds": READY_WITHIN}

    def start(self) -> HealthServer:
        """Start answering."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop answering."""
        self.server.shutdown()
        self.server.server_close()


__all__ = ["LIVE_WITHIN", "READY_WITHIN", "HealthServer"]

"""Serving the console (and the REST API beside it) from a local process: `jobs console`, `jobs
dev`, tests."""

from __future__ import annotations

import threading
from typing import Any

from werkzeug.serving import WSGIRequestHandler, make_server


class _Quiet(WSGIRequestHandler):
    """No access log on stderr: the API writes its own structured lines (audit, errors)."""

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


class ConsoleServer:
    """A threaded WSGI server for an app's `JobsApi` (``/v1/...`` and ``/console/``) on a daemon
    thread."""

    def __init__(self, wsgi_app: Any, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.server = make_server(host, port, wsgi_app, threaded=True, request_handler=_Quiet)
        self.host = host
        self.port = int(self.server.server_port)
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="jobs-console", daemon=True
        )

    @property
    def url(self) -> str:
        """The console's address."""
        return f"http://{self.host}:{self.port}/console/"

    def start(self) -> ConsoleServer:
        """Start answering."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop answering and close the port."""
        self.server.shutdown()
        self.server.server_close()


__all__ = ["ConsoleServer"]

"""`jobs scheduler sync` against a local stand-in that speaks the Cloud Scheduler REST API.

No official emulator exists, so the stand-in keeps jobs in memory, answers the
v1 REST calls the client library's REST transport makes, and records every
request so the tests can assert what the command sent.
"""

from __future__ import annotations

import http.server
import json
import threading
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from jobs_lib.cli import app
from jobs_lib.deploy.cloud_scheduler import MARKER, TickTarget, client_for, sync


class StandIn:
    """An in-memory Cloud Scheduler v1 REST API."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, dict[str, Any]]] = []
        stand_in = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                url = urllib.parse.urlparse(self.path)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = json.loads(raw) if raw else {}
                path = url.path.removeprefix("/v1/")
                query = urllib.parse.parse_qs(url.query)
                stand_in.requests.append(
                    (
                        self.command,
                        path,
                        body
                        | ({"updateMask": query["updateMask"][0]} if "updateMask" in query else {}),
                    )
                )
                if self.command == "GET" and path.endswith("/jobs"):
                    self._answer(
                        200,
                        {"jobs": [j for n, j in stand_in.jobs.items() if n.startswith(path + "/")]},
                    )
                elif self.command == "POST" and path.endswith("/jobs"):
                    if body["name"] in stand_in.jobs:
                        self._answer(
                            409,
                            {
                                "error": {
                                    "code": 409,
                                    "message": "exists",
                                    "status": "ALREADY_EXISTS",
                                }
                            },
                        )
                        return
                    stand_in.jobs[body["name"]] = body | {"state": 1}
                    self._answer(200, stand_in.jobs[body["name"]])
                elif self.command == "PATCH":
                    if path not in stand_in.jobs:
                        self._answer(
                            404,
                            {"error": {"code": 404, "message": "not found", "status": "NOT_FOUND"}},
                        )
                        return
                    for field in query.get("updateMask", [""])[0].split(","):
                        camel = "".join(
                            p if i == 0 else p.capitalize() for i, p in enumerate(field.split("_"))
                        )
                        if camel in body:
                            stand_in.jobs[path][camel] = body[camel]
                    self._answer(200, stand_in.jobs[path])
                elif self.command == "DELETE":
                    stand_in.jobs.pop(path, None)
                    self._answer(200, {})
                else:
                    self._answer(
                        404, {"error": {"code": 404, "message": "no route", "status": "NOT_FOUND"}}
                    )

            do_GET = do_POST = do_PATCH = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def writes(self) -> list[tuple[str, str, dict[str, Any]]]:
        return [r for r in self.requests if r[0] != "GET"]


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    server = StandIn()
    yield server
    server.server.shutdown()
    server.server.server_close()


TARGET = TickTarget(
    project="my-proj",
    location="europe-west1",
    uri="https://jobs-tick-abc-ew.a.run.app",
    service_account="jobs-runner@my-proj.iam.gserviceaccount.com",
)


def test_first_sync_creates_the_tick_job_with_oidc_and_retries(stand_in: StandIn) -> None:
    result = sync(client_for(stand_in.endpoint), [TARGET])
    assert result.created == [TARGET.job_name] and not result.updated and not result.deleted
    [(method, path, body)] = stand_in.writes()
    assert (method, path) == ("POST", "projects/my-proj/locations/europe-west1/jobs")
    assert body["name"] == "projects/my-proj/locations/europe-west1/jobs/jobs-tick"
    assert body["schedule"] == "* * * * *" and body["timeZone"] == "Etc/UTC"
    assert body["description"].startswith(MARKER)
    target = body["httpTarget"]
    assert target["uri"] == TARGET.uri and target["httpMethod"] in (1, "POST")
    assert target["oidcToken"] == {
        "serviceAccountEmail": TARGET.service_account,
        "audience": TARGET.uri,
    }
    assert (
        body["retryConfig"]["retryCount"] == 1 and body["retryConfig"]["maxRetryDuration"] == "50s"
    )
    assert body["attemptDeadline"] == "180s"


def test_a_second_sync_changes_nothing_and_a_changed_target_is_patched(stand_in: StandIn) -> None:
    client = client_for(stand_in.endpoint)
    sync(client, [TARGET])
    again = sync(client, [TARGET])
    assert again.unchanged == [TARGET.job_name] and len(stand_in.writes()) == 1
    moved = TickTarget(
        **{**TARGET.__dict__, "uri": "https://jobs-tick-new.a.run.app", "schedule": "*/2 * * * *"}
    )
    result = sync(client, [moved])
    assert result.updated == [TARGET.job_name]
    method, path, body = stand_in.writes()[-1]
    assert (method, path) == ("PATCH", "projects/my-proj/locations/europe-west1/jobs/jobs-tick")
    assert set(body["updateMask"].split(",")) == {
        "schedule",
        "httpTarget",
        "description",
    }  # what changed, as the wire spells it
    assert stand_in.jobs[moved.job_name]["httpTarget"]["uri"] == "https://jobs-tick-new.a.run.app"
    assert stand_in.jobs[moved.job_name]["schedule"] == "*/2 * * * *"


def test_jobs_it_no_longer_wants_are_removed_and_others_left_alone(stand_in: StandIn) -> None:
    client = client_for(stand_in.endpoint)
    sync(client, [TARGET])
    theirs = "projects/my-proj/locations/europe-west1/jobs/nightly-report"
    stand_in.jobs[theirs] = {
        "name": theirs,
        "description": "someone else's",
        "schedule": "0 3 * * *",
    }
    old = "projects/my-proj/locations/europe-west1/jobs/jobs-tick-old"
    stand_in.jobs[old] = {
        "name": old,
        "description": f"{MARKER} an earlier tick",
        "schedule": "* * * * *",
    }
    result = sync(client, [TARGET])
    assert result.deleted == [old] and result.unchanged == [TARGET.job_name]
    assert ("DELETE", old, {}) in stand_in.requests
    assert theirs in stand_in.jobs and old not in stand_in.jobs


def test_the_command_line_syncs_and_removes(stand_in: StandIn) -> None:
    runner = CliRunner()
    args = [
        "scheduler",
        "sync",
        "--project",
        "my-proj",
        "--location",
        "europe-west1",
        "--uri",
        TARGET.uri,
        "--service-account",
        TARGET.service_account,
        "--endpoint",
        stand_in.endpoint,
    ]
    created = runner.invoke(app, args)
    assert created.exit_code == 0, created.output
    assert json.loads(created.output)["created"] == [TARGET.job_name]
    removed = runner.invoke(app, [*args, "--remove"])
    assert removed.exit_code == 0 and json.loads(removed.output)["deleted"] == [TARGET.job_name]
    assert stand_in.jobs == {}

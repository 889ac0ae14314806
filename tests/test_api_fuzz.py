"""Schemathesis against the API's own OpenAPI document: no 500s, and every answer as documented.

Each operation gets generated requests, valid and invalid (positive and
negative data), sent with a valid token for a user who holds every permission
and owns a few jobs. Schemathesis's default checks run on every answer: no
server error, status codes, content types, headers and bodies that conform to
the document, invalid input refused, valid input accepted, and the endpoint
refusing a request without its token.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from jobs_lib import JobsClient
from jobs_lib.api import JobsApi, openapi_document
from jobs_lib.app import load_handler_modules
from jobs_lib.registry import HandlerRegistry, default_registry
from jobs_lib.store import JobStore

from .test_api import ALL, token


class CurrentApp:
    """The WSGI app schemathesis calls: the API built for the running test (on its emptied
    database)."""

    api: JobsApi | None = None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        assert self.api is not None, "the fuzz_api fixture did not run"
        return self.api(environ, start_response)


current = CurrentApp()
# The document is built without Firestore (for the built-in job types); requests go to `current`.
load_handler_modules("")
schema = schemathesis.openapi.from_dict(
    openapi_document(default_registry.user_types(), max_priority=0)
)
schema.app = current


@pytest.fixture
def fuzz_api(store: JobStore, registry: HandlerRegistry) -> Iterator[JobsApi]:
    """The API on an empty database where the fuzzing user owns a few jobs; firebase-admin in
    emulator mode."""
    previous = os.environ.get("FIREBASE_AUTH_EMULATOR_HOST")
    os.environ["FIREBASE_AUTH_EMULATOR_HOST"] = "127.0.0.1:9099"
    client = JobsClient(store=store, registry=registry)
    for i in range(3):
        client.enqueue(
            "process_notifications", {"targetUsers": [f"u{i}"]}, created_by="fuzzer", org_id="acme"
        )
    current.api = JobsApi(client, create_limit=100_000, create_window=60)
    yield current.api
    current.api = None
    if previous is None:
        os.environ.pop("FIREBASE_AUTH_EMULATOR_HOST", None)
    else:
        os.environ["FIREBASE_AUTH_EMULATOR_HOST"] = previous


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_conforms_to_its_openapi_document(case: Any, fuzz_api: JobsApi) -> None:
    # A real token wherever the case has the header; a negative case that dropped it is sent
    # without.
    has_header = "authorization" in {name.lower() for name in (case.headers or {})}
    assert has_header or not case.meta.generation.mode.is_positive, (
        "positive case without its token"
    )
    response = case.call_and_validate(
        headers={"Authorization": f"Bearer {token('fuzzer', admin=True, permissions=ALL)}"}
        if has_header
        else None,
        # Replaced below: a schema-valid job may still break its handler's own rules.
        excluded_checks=[positive_data_acceptance],
    )
    if case.meta.generation.mode.is_positive and response.status_code == 400:
        fields = [d["field"] for d in response.json()["error"]["details"]]
        # Only the documented rules beyond the schema may refuse it: the handler's and Firestore's
        # on metadata, the cron parser's on cron and timezone, and a page token this API did not
        # issue. (In a batch the job's own fields sit under jobs.N.) A flow's graph (names unique,
        # dependsOn naming jobs of the flow, no cycle) is refused under `jobs`.
        local = [re.sub(r"^jobs\.\d+\.", "", f) for f in fields]
        graph = case.path == "/v1/flows"
        allowed = [
            f
            for f in local
            if f in ("metadata", "pageToken", "cron", "timezone")
            or f.startswith("metadata.")
            or (graph and f == "jobs")
        ]
        assert fields and allowed == local, f"schema-valid request refused: {response.text}"

"""The operators' console: static pages served under ``/console/`` by the same app as the REST API.

The console is a client of the API: every figure it shows comes from
``/v1/...`` and every action it takes is an API call, authorised and audited
there; the page only hides what the caller may not do. Its files ship inside
the package (``jobs_lib/console/static``) and need nothing from the network:
no CDN, no build step at install time. The Firebase JS SDK's sign-in is
bundled into ``static/firebase-auth.js`` by ``scripts/build-console`` (the
built file is committed).

Every answer carries a Content-Security-Policy that allows scripts and styles
from the console itself only, so nothing a job document holds can run as
code even if it reached the page as markup (the page renders data as text).
"""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Callable
from importlib import resources
from typing import Any

from werkzeug.utils import redirect
from werkzeug.wrappers import Request, Response

from jobs_lib.config import Settings

STATIC = resources.files("jobs_lib.console") / "static"

#: The ready-made users `jobs dev` offers when it signs people in with emulator tokens.
DEV_USERS: tuple[dict[str, Any], ...] = (
    {
        "label": "dev operator",
        "uid": "dev-operator",
        "claims": {
            "operator": True,
            "permissions": [
                "jobs.view",
                "jobs.create",
                "jobs.cancel",
                "jobs.retry",
                "queues.manage",
                "schedules.view",
                "schedules.update",
                "schedules.create",
                "schedules.delete",
            ],
        },
    },
    {
        "label": "dev viewer",
        "uid": "dev-viewer",
        "claims": {"operator": True, "permissions": ["jobs.view", "schedules.view"]},
    },
    {
        "label": "acme org admin",
        "uid": "acme-admin",
        "claims": {
            "orgId": "acme",
            "orgAdmin": True,
            "permissions": [
                "jobs.view",
                "jobs.create",
                "jobs.cancel",
                "jobs.retry",
                "schedules.view",
            ],
        },
    },
)


#: The password of the dev users created in the Auth emulator (emulators only).
DEV_PASSWORD = "dev-password"


def dev_email(uid: str) -> str:
    """The sign-in email of a dev user in the Auth emulator."""
    return f"{uid}@example.com"


def create_dev_users(emulator: Any) -> None:
    """Create the ready-made users, with their claims, in a running
    `jobs_lib.devstack.auth_emulator.AuthEmulator`."""
    for user in DEV_USERS:
        emulator.create_user(user["uid"], dev_email(user["uid"]), DEV_PASSWORD, user["claims"])


def content_security_policy(settings: Settings) -> str:
    """Scripts, styles and images from the console only; API calls to itself and to Firebase
    Auth."""
    connect = [
        "'self'",
        "https://identitytoolkit.googleapis.com",
        "https://securetoken.googleapis.com",
    ]
    if settings.auth_emulator_host:
        connect.append(f"http://{settings.auth_emulator_host}")
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "font-src 'self'",
            f"connect-src {' '.join(connect)}",
            "frame-src https://*.firebaseapp.com",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


class ConsoleRoutes:
    """``/console/``: the page, its assets and its sign-in configuration."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.csp = content_security_policy(settings)

    def routes(self) -> list[tuple[str, str, Callable[..., Response]]]:
        """(path, method, handler) for each route."""
        return [
            ("/console", "GET", self.root),
            ("/console/", "GET", self.index),
            ("/console/config.json", "GET", self.config),
            ("/console/<asset>", "GET", self.asset),
        ]

    def secured(self, response: Response) -> Response:
        """Add the console's security headers to an answer."""
        response.headers["Content-Security-Policy"] = self.csp
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-cache"
        return response

    def root(self, request: Request) -> Response:
        """``/console`` redirects to ``/console/``."""
        return self.secured(redirect("/console/", 308))

    def index(self, request: Request) -> Response:
        """The page."""
        return self._file("index.html")

    def asset(self, request: Request, asset: str) -> Response:
        """A script, stylesheet or image of the console."""
        if "/" in asset or asset.startswith(".") or not (STATIC / asset).is_file():
            return self.secured(
                Response(
                    json.dumps(
                        {
                            "error": {
                                "code": 404,
                                "status": "NOT_FOUND",
                                "message": f"no console file {asset!r}",
                                "details": [],
                            }
                        }
                    ),
                    status=404,
                    mimetype="application/json",
                )
            )
        return self._file(asset)

    def _file(self, name: str) -> Response:
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if name.endswith(".js"):
            kind = "text/javascript"
        return self.secured(Response((STATIC / name).read_bytes(), mimetype=kind))

    def config(self, request: Request) -> Response:
        """How the page signs people in: the Firebase web config, or the dev users for emulator
        tokens."""
        settings = self.settings
        body: dict[str, Any] = {"project": settings.project, "auth": settings.console_auth}
        if settings.console_auth == "emulator-tokens":
            if not settings.auth_emulator_host:
                body = {
                    "project": settings.project,
                    "auth": "unavailable",
                    "message": "emulator tokens are accepted only in emulator mode "
                    "(FIREBASE_AUTH_EMULATOR_HOST); use jobs dev or jobs console --dev",
                }
            else:
                body["devUsers"] = list(DEV_USERS)
        else:
            body["firebase"] = {
                "apiKey": settings.firebase_api_key or "",
                "authDomain": settings.firebase_auth_domain
                or f"{settings.project}.firebaseapp.com",
                "projectId": settings.project,
            }
            if settings.auth_emulator_host:
                body["authEmulator"] = f"http://{settings.auth_emulator_host}"
                body["devUsers"] = [
                    {"label": u["label"], "email": dev_email(u["uid"]), "password": DEV_PASSWORD}
                    for u in DEV_USERS
                ]
        return self.secured(Response(json.dumps(body), mimetype="application/json"))


__all__ = [
    "DEV_PASSWORD",
    "DEV_USERS",
    "ConsoleRoutes",
    "content_security_policy",
    "create_dev_users",
    "dev_email",
]

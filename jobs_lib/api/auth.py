"""Who is calling: Firebase ID tokens, verified with firebase-admin, and the claims the API reads.

Custom claims (set with ``auth.set_custom_user_claims``):

* ``orgId`` (string): the caller's organisation; jobs they create carry it.
* ``orgAdmin`` (bool): may read every job of that organisation.
* ``permissions`` (list of strings): ``jobs.create``, ``jobs.view``,
  ``jobs.cancel``, ``jobs.retry``; each endpoint needs one.

Production verifies the token's signature against Google's keys. With
``FIREBASE_AUTH_EMULATOR_HOST`` set, firebase-admin accepts the unsigned tokens
the Auth emulator issues and still checks audience, issuer and subject, but
not the expiry; `verify` checks ``exp``, ``iat`` and ``auth_time`` itself so
that an expired token is refused the same way in both.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import firebase_admin
from firebase_admin import auth as firebase_auth

from jobs_lib.errors import AuthUnavailable, Unauthenticated

#: Seconds of clock difference tolerated on token times.
CLOCK_SKEW = 30
#: Name of the firebase-admin app the API uses, so it never clashes with the application's own.
APP_NAME = "jobs_lib_api"

PERMISSIONS = (
    "jobs.create",
    "jobs.view",
    "jobs.cancel",
    "jobs.retry",
    "queues.manage",
    "schedules.create",
    "schedules.view",
    "schedules.update",
    "schedules.delete",
)


@dataclass(frozen=True)
class Caller:
    """A verified user and the claims the API acts on.

    ``permissions`` (a list claim) says what the caller may do; ``orgId`` and
    ``orgAdmin`` say whose jobs they see: their own, and an org admin their
    organisation's too. ``operator: true`` marks the people who run the
    queue (the console's operators and viewers): they see every job and act on
    any, still only within their permissions.
    """

    uid: str
    org_id: str | None
    org_admin: bool
    permissions: frozenset[str]
    operator: bool = False

    def can(self, permission: str) -> bool:
        """True when the token grants `permission`."""
        return permission in self.permissions

    def sees(self, created_by: str | None, org_id: str | None) -> bool:
        """May read a job or schedule with these owner fields (the same test as firestore.rules)."""
        if self.operator:
            return True
        if created_by is not None and created_by == self.uid:
            return True
        return self.org_admin and self.org_id is not None and org_id == self.org_id

    def owns(self, created_by: str | None) -> bool:
        """May act on it (cancel, retry): its creator, as in firestore.rules, or an operator."""
        return self.operator or (created_by is not None and created_by == self.uid)

    @classmethod
    def from_claims(cls, claims: dict[str, Any]) -> Caller:
        """Read the caller from verified claims; malformed custom claims count as absent."""
        org = claims.get("orgId")
        permissions = claims.get("permissions")
        return cls(
            uid=str(claims["uid"]),
            org_id=org if isinstance(org, str) and org else None,
            org_admin=claims.get("orgAdmin") is True,
            permissions=frozenset(p for p in permissions if isinstance(p, str))
            if isinstance(permissions, list)
            else frozenset(),
            operator=claims.get("operator") is True,
        )


class TokenVerifier:
    """Verifies ``Authorization: Bearer <Firebase ID token>`` for one project."""

    def __init__(self, project: str) -> None:
        self.project = project
        self._app: firebase_admin.App | None = None
        self._lock = threading.Lock()

    @property
    def app(self) -> firebase_admin.App:
        """The firebase-admin app for this project, created on first use."""
        with self._lock:
            if self._app is None:
                try:
                    self._app = firebase_admin.get_app(APP_NAME)
                except ValueError:
                    self._app = firebase_admin.initialize_app(
                        options={"projectId": self.project}, name=APP_NAME
                    )
            return self._app

    def verify(self, authorization: str | None) -> Caller:
        """The caller named by an Authorization header; raises `Unauthenticated` or
        `AuthUnavailable`."""
        if not authorization:
            raise Unauthenticated(
                "missing Authorization header: send 'Authorization: Bearer <Firebase ID token>'"
            )
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("the Authorization header must be 'Bearer <Firebase ID token>'")
        try:
            claims: dict[str, Any] = firebase_auth.verify_id_token(
                token, app=self.app, clock_skew_seconds=CLOCK_SKEW
            )
        except firebase_auth.CertificateFetchError as exc:
            raise AuthUnavailable(f"cannot fetch the keys that verify ID tokens: {exc}") from exc
        except (ValueError, firebase_auth.InvalidIdTokenError) as exc:
            # InvalidIdTokenError covers expired, revoked and malformed tokens; ValueError, empty
            # ones.
            raise Unauthenticated(f"invalid ID token: {exc}") from exc
        _check_times(claims)
        return Caller.from_claims(claims)


def _check_times(claims: dict[str, Any]) -> None:
    """Token times, checked here too because firebase-admin skips them for emulator tokens."""
    now = time.time()
    exp, iat, auth_time = claims.get("exp"), claims.get("iat"), claims.get("auth_time")
    if (
        not isinstance(exp, (int, float))
        or isinstance(exp, bool)
        or not isinstance(iat, (int, float))
        or isinstance(iat, bool)
    ):
        raise Unauthenticated("invalid ID token: it must carry numeric 'exp' and 'iat' claims")
    if exp <= now - CLOCK_SKEW:
        raise Unauthenticated(
            "the ID token has expired: get a fresh one from the Firebase client SDK"
        )
    if iat > now + CLOCK_SKEW:
        raise Unauthenticated("invalid ID token: it was issued in the future")
    if auth_time is not None and (
        not isinstance(auth_time, (int, float))
        or isinstance(auth_time, bool)
        or auth_time > now + CLOCK_SKEW
    ):
        raise Unauthenticated("invalid ID token: 'auth_time' is in the future")


__all__ = [
    "CLOCK_SKEW",
    "PERMISSIONS",
    "AuthUnavailable",
    "Caller",
    "TokenVerifier",
    "Unauthenticated",
]

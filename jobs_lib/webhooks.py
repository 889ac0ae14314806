"""Completion webhooks: a signed POST when a job ends, delivered at least once by a follow-up job.

A job names a URL (``enqueue(..., webhook=url)``, the document's ``webhook``
field, or its handler's ``webhook=`` default). Its final write also writes
the follow-up obligation (``dependentsSettled: false``, as for a flow's
parents); `jobs_lib.flows.Releaser` then creates one ``jobs.webhook`` job per
final state (its id derives from the job, the state and the attempt, so a
repair after a crash creates nothing twice) and records its id on the job as
``webhookJobId``. That delivery job is a job like any other: retried with
backoff, its attempts, error and result visible in the console and the API.

The POST body is JSON (``id``, ``type``, ``status``, ``result`` or ``error``,
``attempts``, ``completedAt``, ``flowId``); the headers carry
``X-Jobs-Delivery`` (the delivery job's id: the same on every retry, for the
receiver to drop duplicates), ``X-Jobs-Timestamp`` (Unix seconds) and
``X-Jobs-Signature: sha256=<hex>``, the HMAC-SHA256 of ``"<timestamp>.<body>"``
under ``JOBS_WEBHOOK_SECRET`` (never stored in a document). `verify` is the
receiver's side.

URLs that resolve to private, loopback, link-local or otherwise reserved
addresses are refused (at enqueue and again at delivery, where redirects are
not followed) unless ``JOBS_WEBHOOK_ALLOW`` lists the host or a network
holding the address.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from jobs_lib.errors import ConfigurationError
from jobs_lib.job import Job

WEBHOOK_TYPE = "jobs.webhook"
SIGNATURE_HEADER = "X-Jobs-Signature"
TIMESTAMP_HEADER = "X-Jobs-Timestamp"
DELIVERY_HEADER = "X-Jobs-Delivery"
#: A receiver refuses signatures older (or newer) than this.
DEFAULT_TOLERANCE = 300.0
MAX_URL = 2000


class WebhookRefused(ConfigurationError):
    """A webhook URL that may not be called (bad scheme, private address)."""


def check_url(url: Any, allow: Sequence[str] = (), *, resolve: bool = True) -> str:
    """The URL if jobs_lib may POST to it; raises `WebhookRefused` saying why not.

    `allow` lists host names, addresses or networks (``127.0.0.1``, ``10.0.0.0/8``,
    ``hooks.internal``) that may be called although private.
    """
    if not isinstance(url, str) or not url or len(url) > MAX_URL:
        raise WebhookRefused(f"a webhook is an http or https URL of at most {MAX_URL} characters, got {url!r}"[:300])
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookRefused(f"a webhook must be an http or https URL with a host, got {url!r}"[:300])
    host = parts.hostname
    if not resolve or host.lower() in {a.lower() for a in allow}:
        return url  # not resolve: the form only (a handler's default, checked again per job)
    addresses = _addresses(host)
    networks = [ipaddress.ip_network(a, strict=False) for a in allow if _is_network(a)]
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])  # an IPv6 scope ("fe80::1%eth0") is not part of it
        if _private(ip) and not any(ip in net for net in networks):
            raise WebhookRefused(
                f"webhook {url!r} points to {ip}, a private, loopback, link-local or reserved address; "
                "list it in JOBS_WEBHOOK_ALLOW to allow it"
            )
    return url


def _addresses(host: str) -> list[str]:
    try:
        return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, None)})
    except (socket.gaierror, UnicodeError) as exc:
        raise WebhookRefused(f"webhook host {host!r} does not resolve: {exc}") from None


def _is_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


def _private(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_multicast or ip.is_unspecified


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Jobs-Signature`` value for a body sent at `timestamp`."""
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify(secret: str, headers: Mapping[str, str], body: bytes, *, tolerance: float = DEFAULT_TOLERANCE, now: float | None = None) -> bool:
    """The receiver's check: the signature matches the body and timestamp, and the timestamp is recent."""
    lowered = {k.lower(): v for k, v in headers.items()}
    stamp, given = lowered.get(TIMESTAMP_HEADER.lower(), ""), lowered.get(SIGNATURE_HEADER.lower(), "")
    try:
        sent = float(stamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - sent) > tolerance:
        return False
    return hmac.compare_digest(signature(secret, stamp, body), given)


def payload(job: Job) -> dict[str, Any]:
    """What the POST says about a job that ended (JSON-safe)."""
    body: dict[str, Any] = {
        "id": job.id,
        "type": job.type,
        "status": job.status.value if job.status else None,
        "attempts": job.attempts,
        "completedAt": job.completed_at.isoformat() if job.completed_at else None,
    }
    if job.flow_id:
        body["flowId"] = job.flow_id
    if job.error is not None:
        body["error"] = job.error
    else:
        body["result"] = job.result
    safe: dict[str, Any] = json.loads(json.dumps(body, default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v)))
    return safe


def delivery_key(job: Job) -> str:
    """Names the delivery of one final state of a job (a retried job that ends again gets another)."""
    ended = job.completed_at.isoformat() if job.completed_at else ""
    return f"{job.id}|{job.status.value if job.status else ''}|{job.attempts}|{ended}"


class DeliveryFailed(Exception):
    """The receiver did not take the POST (an error status, a timeout): retried with backoff."""


def post(url: str, body: bytes, headers: Mapping[str, str], timeout: float = 10.0) -> int:
    """POST once, without following redirects; returns the status (raises `DeliveryFailed` for an
    unreachable receiver). urllib is enough for one POST: no session, no retries of its own."""
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    opener = urllib.request.build_opener(_NoRedirect())
    try:
        with opener.open(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError) as exc:
        raise DeliveryFailed(f"could not reach {url}: {getattr(exc, 'reason', exc)}") from None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 3xx is an answer, not an invitation to call another (maybe private) address


__all__ = [
    "DELIVERY_HEADER", "SIGNATURE_HEADER", "TIMESTAMP_HEADER", "WEBHOOK_TYPE", "DeliveryFailed", "WebhookRefused",
    "check_url", "delivery_key", "payload", "post", "signature", "verify",
]

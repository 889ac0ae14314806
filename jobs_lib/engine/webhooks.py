"""Completion webhooks: a signed POST when a job ends, delivered at least once by a follow-up job.

A job names a URL (``enqueue(..., webhook=url)``, stored in the document's
``webhook`` field), or its handler declares one (``webhook=``), which never
leaves the server: no document holds it, and the delivery looks it up in the
handler registry when it runs. A job's final write also writes the follow-up
obligation (``dependentsSettled: false``, as for a flow's parents);
`jobs_lib.engine.followups.Releaser` then creates one ``jobs.webhook`` job per final
state (its id derives from the job, the state and the attempt, so a repair
after a crash creates nothing twice) and records its id on the job as
``webhookJobId``. That delivery job belongs to the system, not to the job's
owner (no ``createdBy`` or ``orgId``: the owner can neither read, cancel nor
retry it), and is a job like any other for operators: retried with backoff,
its attempts, error and result visible in the console.

The POST body is JSON (``id``, ``type``, ``status``, ``result`` or ``error``,
``attempts``, ``completedAt``, ``flowId``); the headers carry
``X-Jobs-Delivery`` (the delivery job's id: the same on every retry, for the
receiver to drop duplicates), ``X-Jobs-Timestamp`` (Unix seconds) and
``X-Jobs-Signature: sha256=<hex>``, the HMAC-SHA256 of ``"<timestamp>.<body>"``
under ``JOBS_WEBHOOK_SECRET`` (never stored in a document). `verify` is the
receiver's side.

A URL is refused unless every address its host resolves to is globally
routable (``ipaddress``'s ``is_global``, less a few ranges Python still calls
global, and with the IPv4 address inside 6to4, Teredo, NAT64, IPv4-mapped and
IPv4-compatible forms checked too), unless ``JOBS_WEBHOOK_ALLOW`` lists the
host or a network holding the address. It is checked at enqueue and again at
each delivery, and the delivery connects to an address it checked (the Host
header, SNI and the certificate name the URL's host), so a name that
resolves elsewhere a moment later cannot reach a private address. Redirects
are not followed.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import ipaddress
import json
import socket
import ssl
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from jobs_lib.errors import WebhookRefused
from jobs_lib.model.job import Job

WEBHOOK_TYPE = "jobs.webhook"
SIGNATURE_HEADER = "X-Jobs-Signature"
TIMESTAMP_HEADER = "X-Jobs-Timestamp"
DELIVERY_HEADER = "X-Jobs-Delivery"
#: A receiver refuses signatures older (or newer) than this.
DEFAULT_TOLERANCE = 300.0
MAX_URL = 2000


def check_url(url: Any, allow: Sequence[str] = (), *, resolve: bool = True) -> str:
    """The URL if jobs_lib may POST to it; raises `WebhookRefused` saying why not.

    `allow` lists host names, addresses or networks (``127.0.0.1``, ``10.0.0.0/8``,
    ``hooks.internal``) that may be called although not globally routable.
    """
    return checked_target(url, allow, resolve=resolve)[0]


def checked_target(
    url: Any, allow: Sequence[str] = (), *, resolve: bool = True
) -> tuple[str, list[str]]:
    """The URL and the addresses its host resolved to, every one of them checked; `post` connects
    to these and no others, so a name that resolves elsewhere a moment later (DNS rebinding)
    cannot steer the POST past the check. Raises `WebhookRefused`."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL:
        raise WebhookRefused(
            f"a webhook is an http or https URL of at most {MAX_URL} characters, got {url!r}"[:300]
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookRefused(
            f"a webhook must be an http or https URL with a host, got {url!r}"[:300]
        )
    try:
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise WebhookRefused(f"a webhook must name a valid port, got {url!r}"[:300]) from None
    host = parts.hostname
    if not resolve:
        return url, []  # the form only (a handler's default, checked again per delivery)
    addresses = _addresses(host)
    if host.lower() in {a.lower() for a in allow}:
        return url, addresses
    networks = [ipaddress.ip_network(a, strict=False) for a in allow if _is_network(a)]
    for address in addresses:
        ip = ipaddress.ip_address(
            address.split("%")[0]
        )  # an IPv6 scope ("fe80::1%eth0") is not part of it
        if not public(ip) and not any(ip in net for net in networks):
            inside = (
                [str(v4) for v4 in embedded_ipv4(ip)]
                if isinstance(ip, ipaddress.IPv6Address)
                else []
            )
            raise WebhookRefused(
                f"webhook {url!r} points to "
                f"{ip}{' (carrying ' + ', '.join(inside) + ')' if inside else ''}, a private, "
                f"loopback, "
                "link-local or reserved address; list it in JOBS_WEBHOOK_ALLOW to allow it (only "
                "globally routable addresses are called)"
            )
    return url, addresses


def _addresses(host: str) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise WebhookRefused(f"webhook host {host!r} does not resolve: {exc}") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _is_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


#: Not globally routable although Python's ``is_global`` (3.11) says otherwise: the 6to4 relay
#: anycast, IPv6 site-local (deprecated, still routed inside sites), the local-use NAT64 prefix.
_NOT_GLOBAL = tuple(
    ipaddress.ip_network(n) for n in ("192.88.99.0/24", "fec0::/10", "64:ff9b:1::/48")
)
#: The well-known NAT64 prefix: the last 32 bits are an IPv4 address (RFC 6052).
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
#: IPv4-compatible IPv6 (deprecated, ::a.b.c.d): the last 32 bits are an IPv4 address.
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries: IPv4-mapped, 6to4, Teredo (server and client),
    NAT64 and IPv4-compatible forms. A webhook to any of them reaches that IPv4 address."""
    found: list[ipaddress.IPv4Address] = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if ip in _NAT64 or ip in _IPV4_COMPATIBLE:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True when a POST to `ip` goes out to the Internet: the address, and every IPv4 address an
    IPv6 form embeds, is globally routable (``is_global``, less the ranges of `_NOT_GLOBAL`) and
    not multicast."""
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        candidates += embedded_ipv4(ip)
    return all(
        c.is_global
        and not c.is_multicast
        and not any(c in net for net in _NOT_GLOBAL if net.version == c.version)
        for c in candidates
    )


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Jobs-Signature`` value for a body sent at `timestamp`."""
    return (
        "sha256="
        + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    )


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> bool:
    """The receiver's check: the signature matches the body and timestamp, and the timestamp is
    recent."""
    lowered = {k.lower(): v for k, v in headers.items()}
    stamp, given = (
        lowered.get(TIMESTAMP_HEADER.lower(), ""),
        lowered.get(SIGNATURE_HEADER.lower(), ""),
    )
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
    safe: dict[str, Any] = json.loads(
        json.dumps(body, default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v))
    )
    return safe


def delivery_key(job: Job) -> str:
    """Names the delivery of one final state of a job (a retried job that ends again gets
    another)."""
    ended = job.completed_at.isoformat() if job.completed_at else ""
    return f"{job.id}|{job.status.value if job.status else ''}|{job.attempts}|{ended}"


class DeliveryFailed(Exception):
    """The receiver did not take the POST (an error status, a timeout): retried with backoff."""


def post(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    addresses: Sequence[str],
    timeout: float = 10.0,
) -> int:
    """POST once to one of `addresses` (those `checked_target` checked), never following redirects;
    returns the status (raises `DeliveryFailed` for an unreachable receiver).

    The connection goes to a checked address, with the URL's host in the Host header and, for
    https, in SNI and the certificate check: http.client does that once the socket is ours.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    last: Exception | None = None
    for address in addresses:
        connection = _PinnedConnection(parts.scheme, host, port, address.split("%")[0], timeout)
        try:
            connection.request(
                "POST",
                path,
                body=body,
                headers={"Host": parts.netloc.rpartition("@")[2], **headers},
            )
            with contextlib.closing(connection.getresponse()) as response:
                return int(response.status)
        except (OSError, http.client.HTTPException) as exc:
            last = exc
        finally:
            connection.close()
    raise DeliveryFailed(f"could not reach {url}: {last or 'no address'}")


class _PinnedConnection:
    """An http.client connection to a given address, speaking to the URL's host (Host, SNI,
    certificate)."""

    def __init__(self, scheme: str, host: str, port: int, address: str, timeout: float) -> None:
        self.scheme, self.host, self.port, self.address, self.timeout = (
            scheme,
            host,
            port,
            address,
            timeout,
        )
        self._conn: http.client.HTTPConnection = http.client.HTTPConnection(
            address, port, timeout=timeout
        )
        self._conn.connect = self._connect  # type: ignore[method-assign]

    def _connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.timeout)
        if self.scheme == "https":
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
        self._conn.sock = sock

    def request(self, method: str, path: str, *, body: bytes, headers: Mapping[str, str]) -> None:
        self._conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            self._conn.putheader(name, value)
        self._conn.putheader("Content-Length", str(len(body)))
        self._conn.endheaders(body)

    def getresponse(self) -> http.client.HTTPResponse:
        return self._conn.getresponse()

    def close(self) -> None:
        self._conn.close()


__all__ = [
    "DELIVERY_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WEBHOOK_TYPE",
    "DeliveryFailed",
    "WebhookRefused",
    "check_url",
    "checked_target",
    "delivery_key",
    "embedded_ipv4",
    "payload",
    "post",
    "public",
    "signature",
    "verify",
]

"""Which `callback_url`s hitl may POST to, and how each delivery is signed.

The operator lists allowed hosts in `HITL_WEBHOOK_HOSTS` (comma-separated: `hooks.example.com`,
`*.example.com`, `*` for any public host). Loopback, private, link-local and other non-public
addresses are refused unless listed exactly (a wildcard never opens them), both when the
request is submitted and again when the name is resolved for each attempt (DNS may change).
The bot's own port on its own addresses is never allowed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import socket
from urllib.parse import urlsplit

from aiohttp import ThreadedResolver
from aiohttp.abc import AbstractResolver, ResolveResult

SIGNATURE_HEADER = "X-Hitl-Signature"
TIMESTAMP_HEADER = "X-Hitl-Request-Timestamp"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """`v0=<hex>`: HMAC-SHA256 of `v0:<timestamp>:<body>` with the webhook secret."""
    mac = hmac.new(secret.encode(), f"v0:{timestamp}:".encode() + body, hashlib.sha256)
    return "v0=" + mac.hexdigest()


def _public(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    return addr.is_global and not addr.is_multicast


class CallbackPolicy:
    def __init__(self, hosts: str, *, own_port: int, secret: str | None) -> None:
        self.hosts = [h.strip().lower() for h in hosts.split(",") if h.strip()]
        self.own_port = own_port
        self.secret = secret

    @property
    def enabled(self) -> bool:
        return bool(self.hosts and self.secret)

    def _listed(self, host: str) -> tuple[bool, bool]:
        """(allowed by the list, listed exactly)."""
        exact = host in self.hosts
        wild = "*" in self.hosts or any(h.startswith("*.") and host.endswith(h[1:]) for h in self.hosts)
        return exact or wild, exact

    def check(self, url: str) -> tuple[str, int]:
        """The (host, port) of an allowed URL, or ValueError saying why it is refused."""
        if not self.enabled:
            raise ValueError("webhooks are not enabled on this hitl (HITL_WEBHOOK_HOSTS and "
                             "HITL_WEBHOOK_SECRET are not both set)")
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as e:
            raise ValueError(f"callback_url has an invalid port: {e}") from e
        if parts.scheme not in ("http", "https") or not host:
            raise ValueError("callback_url must be an http(s) URL with a host")
        if parts.username or parts.password:
            raise ValueError("callback_url may not carry credentials")
        allowed, exact = self._listed(host)
        if not allowed:
            raise ValueError(f"callback_url host {host!r} is not allowed (HITL_WEBHOOK_HOSTS)")
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            self._address_ok(str(literal), port, exact)
        elif host in ("localhost", "localhost.localdomain") and not exact:
            raise ValueError("callback_url may not point at this machine")
        return host, port

    def _address_ok(self, ip: str, port: int, exact: bool) -> None:
        addr = ipaddress.ip_address(ip)
        if (addr.is_loopback or addr.is_unspecified) and port == self.own_port:
            raise ValueError("callback_url may not point at hitl itself")
        if not _public(ip) and not exact:
            raise ValueError(f"callback_url resolves to a non-public address ({ip}); list the host "
                             "exactly in HITL_WEBHOOK_HOSTS to allow it")

    async def resolve(self, url: str) -> None:
        """Check `url` again, and every address its host resolves to now (ValueError if not)."""
        host, port = self.check(url)
        _, exact = self._listed(host)
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
        except OSError as e:
            raise ValueError(f"cannot resolve {host}: {e}") from e
        for info in infos:
            self._address_ok(str(info[4][0]), port, exact)


class CheckedResolver(AbstractResolver):
    """The webhook session's resolver: the addresses a connection uses are checked when it is
    made (the same rules as `resolve`), so a name that resolves to a public address for the
    check and to an internal one for the connection (DNS rebinding) reaches nothing."""

    def __init__(self, policy: CallbackPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self.inner = inner or ThreadedResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self.inner.resolve(host, port, family)
        _, exact = self.policy._listed(host.lower())
        for r in results:
            try:
                self.policy._address_ok(str(r["host"]), port, exact)
            except ValueError as e:  # a connection error: the delivery is retried, then dead-lettered
                raise OSError(f"refused at connect: {e}") from None
        return results

    async def close(self) -> None:
        await self.inner.close()

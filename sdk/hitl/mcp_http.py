"""Who may call `hitl mcp` over HTTP: a bearer token, and the Host and Origin headers it accepts.

Anyone who can call the server submits approval requests as its agent and reads its decisions.
On a loopback address only this machine can; on any other address the server refuses to start
without a token (`HITL_MCP_TOKEN`), compared in constant time on every request (401 without
it), and checks Host and Origin against an allow-list (the `mcp` library's DNS rebinding
protection: 421, 403). A token set on loopback is enforced too.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import ASGIApp, Receive, Scope, Send

TOKEN_ENV = "HITL_MCP_TOKEN"
HOSTS_ENV = "HITL_MCP_ALLOWED_HOSTS"
ORIGINS_ENV = "HITL_MCP_ALLOWED_ORIGINS"
MIN_TOKEN = 16
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
WILDCARDS = ("0.0.0.0", "::", "")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _named(host: str) -> str:
    """`host` as it appears in a Host header (IPv6 literals in brackets)."""
    try:
        return f"[{host.strip('[]')}]" if ipaddress.ip_address(host.strip("[]")).version == 6 else host
    except ValueError:
        return host


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _hosts(names: Sequence[str]) -> list[str]:
    """Host header patterns: a name given without a port is allowed on any port."""
    out: list[str] = []
    for name in names:
        out += [name] if ":" in name.rsplit("]", 1)[-1] else [name, f"{name}:*"]
    return out


@dataclass(frozen=True)
class Guard:
    token: bytes | None
    security: TransportSecuritySettings


def guard(host: str, env: Mapping[str, str], hosts: Sequence[str] = (), origins: Sequence[str] = ()) -> Guard:
    """What the HTTP server on `host` checks; ValueError naming the setting when serving there
    would be open to the network (no token, a token under MIN_TOKEN characters, a wildcard
    address with no allowed host names)."""
    token = env.get(TOKEN_ENV) or ""
    hosts = list(hosts) or _split(env.get(HOSTS_ENV))
    origins = list(origins) or _split(env.get(ORIGINS_ENV))
    local = is_loopback(host)
    if not token and not local:
        raise ValueError(f"--host {host} serves the network: set {TOKEN_ENV} to a secret of at least {MIN_TOKEN} "
                         "characters (clients send it as 'Authorization: Bearer <token>')")
    if token and len(token) < MIN_TOKEN:
        raise ValueError(f"{TOKEN_ENV} is {len(token)} characters; use a random secret of at least {MIN_TOKEN}")
    if host in WILDCARDS and not hosts:
        raise ValueError(f"--host {host or '(all)'} listens on every address: set {HOSTS_ENV} (or --allowed-host) "
                         "to the host names clients connect with, e.g. mcp.example.internal or 10.0.0.5:8000")
    if not local and host not in WILDCARDS:
        hosts.append(_named(host))
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=_hosts([*LOOPBACK_HOSTS, *hosts]),  # the machine's own names: never a rebinding
        allowed_origins=[*(f"http://{h}:*" for h in LOOPBACK_HOSTS), *origins])
    return Guard(token.encode() if token else None, security)


class BearerToken:
    """ASGI middleware: every HTTP request carries `Authorization: Bearer <token>`, else 401."""

    def __init__(self, app: ASGIApp, token: bytes) -> None:
        self.app = app
        self.expected = b"bearer " + token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        body = json.dumps({"error": "unauthorized",
                           "message": "send the server's token as 'Authorization: Bearer <token>'"}).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    def _allowed(self, scope: Scope) -> bool:
        sent = [v for k, v in scope.get("headers", []) if k.lower() == b"authorization"]
        if len(sent) != 1:
            return False
        value = sent[0].strip()
        # the scheme is case-insensitive; the token is compared as bytes, in constant time
        return hmac.compare_digest(value[:7].lower() + value[7:], self.expected)

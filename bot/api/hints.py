"""Where a HumanLayer call asked its card to go, honoured at intake (bot.api.humanlayer sets
`metadata.humanlayer`). Policy still routes the request; the hints may only add scrutiny:
a person always decides (at least mode `approve`, never sampled away, never approved by a
tier's `on_timeout: approve`: it expires), approvers are narrowed
to `allowed_responder_ids` (kept within the policy's own approvers when it names any), and
the card goes to the channel or person the call named.

The channel and the approvers move a card, so they are taken only from hints the HumanLayer
API wrote: it seals them with this deployment's key (`sig`, an HMAC of the request id and the
hints), and intake checks the seal. An agent writing `metadata.humanlayer` into a queue entry
or a REST request itself gets the scrutiny and none of the routing."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

from store.models import MODE_RANK, Mode, Request, Route
from store.redis_store import Store

REASON = "The agent's HumanLayer call asks a person to decide"
SECRET = "hints"


class HintKey:
    """The deployment's key for sealing hints, read from Redis (`load`): by the API at each
    call it seals, by intake at each start (after Redis came back, its key may be a new one;
    a seal that no longer checks only loses the hints' routing, never adds any)."""

    def __init__(self) -> None:
        self.value: bytes | None = None

    async def load(self, store: Store, value: bytes | None = None) -> bytes:
        """The key as Redis holds it now (`value`: read by the caller already)."""
        self.value = value if value is not None else await store.secret(SECRET)
        return self.value


def _mac(key: bytes, request_id: str, hl: dict[str, Any]) -> str:
    body = json.dumps({k: v for k, v in hl.items() if k != "sig"}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False)
    return hmac.new(key, f"{request_id}\n{body}".encode(), hashlib.sha256).hexdigest()


def seal(key: bytes, request_id: str, hl: dict[str, Any]) -> dict[str, Any]:
    """`hl` with the seal that lets intake honour its channel and approvers for `request_id`."""
    return {**hl, "sig": _mac(key, request_id, hl)}


def hints(request: Request) -> dict[str, Any] | None:
    extra = request.metadata.model_extra or {}
    hl = extra.get("humanlayer")
    return hl if isinstance(hl, dict) else None


def sealed(key: bytes | None, request: Request, hl: dict[str, Any]) -> bool:
    """Whether `hl` carries the HumanLayer API's seal for this very request."""
    sig = hl.get("sig")
    return (key is not None and isinstance(sig, str) and request.id is not None
            and hmac.compare_digest(sig, _mac(key, request.id, hl)))


class HonourHints:
    """A router that applies a request's HumanLayer hints on top of the policy's route."""

    def __init__(self, inner: Any, key: Callable[[], bytes | None] = lambda: None) -> None:
        self.inner = inner
        self.key = key

    def __getattr__(self, name: str) -> Any:  # tiers and the rest of the policy engine
        return getattr(self.inner, name)

    def route(self, request: Request, *, first_use: bool = False, paused: bool = False,
              trust: Any = None) -> Route:
        route: Route = self.inner.route(request, first_use=first_use, paused=paused, trust=trust)
        hl = hints(request)
        if hl is None:
            return route
        update: dict[str, Any] = {}
        if MODE_RANK[route.mode] < MODE_RANK[Mode.approve]:
            update.update(mode=Mode.approve, sampled=False, reasons=[*route.reasons, REASON])
        if route.on_timeout is not None:  # nor does the clock decide for a person: it expires
            update["on_timeout"] = None
        if sealed(self.key(), request, hl):  # where the card goes: only as the HumanLayer API asked
            channel = hl.get("channel")
            if isinstance(channel, str) and channel:
                update["channel"] = channel
            wanted = [a for a in hl.get("approvers") or [] if isinstance(a, str)]
            if wanted:
                narrowed = [a for a in wanted if a in route.approvers] if route.approvers else wanted
                update["approvers"] = narrowed or list(route.approvers)
        return route.model_copy(update=update) if update else route

"""Where a HumanLayer call asked its card to go, honoured at intake (bot.api.humanlayer sets
`metadata.humanlayer`). Policy still routes the request; the hints may only add scrutiny:
a person always decides (at least mode `approve`, never sampled away, never approved by a
tier's `on_timeout: approve`: it expires), approvers are narrowed
to `allowed_responder_ids` (kept within the policy's own approvers when it names any), and
the card goes to the channel or person the call named."""

from __future__ import annotations

from typing import Any

from store.models import MODE_RANK, Mode, Request, Route

REASON = "The agent's HumanLayer call asks a person to decide"


def hints(request: Request) -> dict[str, Any] | None:
    extra = request.metadata.model_extra or {}
    hl = extra.get("humanlayer")
    return hl if isinstance(hl, dict) else None


class HonourHints:
    """A router that applies a request's HumanLayer hints on top of the policy's route."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

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
        channel = hl.get("channel")
        if isinstance(channel, str) and channel:
            update["channel"] = channel
        wanted = [a for a in hl.get("approvers") or [] if isinstance(a, str)]
        if wanted:
            narrowed = [a for a in wanted if a in route.approvers] if route.approvers else wanted
            update["approvers"] = narrowed or list(route.approvers)
        return route.model_copy(update=update) if update else route

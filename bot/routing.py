"""The routing seam: intake asks a Router where each valid request goes.

`PolicyEngine` (bot.policy) is the real router; `SingleChannelRouter` sends everything to
human approval in one channel and is what the bot falls back to without a policy engine.
"""

from __future__ import annotations

from typing import Any, Protocol

from store.models import Decision, Kind, Mode, Request, Route, Status, utcnow


class Router(Protocol):
    def route(self, request: Request, *, first_use: bool = False, paused: bool = False,
              trust: Any = None) -> Route:
        """Where `request` goes and why; pure and deterministic for a given request (and the
        action's trust state, when given)."""
        ...


class SingleChannelRouter:
    """Every request to human approval in one channel."""

    def __init__(self, channel: str = "#approvals") -> None:
        self.channel = channel

    def route(self, request: Request, *, first_use: bool = False, paused: bool = False,
              trust: Any = None) -> Route:
        mode = Mode.escalate if request.kind is Kind.escalation else Mode.approve
        return Route(mode=mode, tier="medium", channel=self.channel, paused=paused,
                     reasons=["Every request needs a person's approval"])


def immediate_decision(request: Request, route: Route) -> Decision | None:
    """The decision intake publishes at once (auto, audit, deny), or None when people decide."""
    assert request.id is not None
    if route.mode in (Mode.auto, Mode.audit):
        status, reason = Status.auto_approved, None
    elif route.mode is Mode.deny:
        status, reason = Status.denied, "; ".join(route.reasons) or "denied by policy"
    else:
        return None
    return Decision(request_id=request.id, status=status, params=request.params, reason=reason,
                    decided_at=utcnow(), route=route)


def needs_card(route: Route) -> bool:
    """Whether a card is posted: always for people's decisions, for sampled auto/audit ones."""
    if route.mode is Mode.deny:
        return False
    if route.mode in (Mode.auto, Mode.audit):
        return route.sampled
    return True

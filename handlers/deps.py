"""What listeners need, handed to them through Bolt's context (set by `bot.app`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from store.redis_store import Store
from store.stats import Report
from store.trust import Away, GrantTerms

CONTEXT_KEY = "hitl"


class Directory(Protocol):
    """Slack's user groups: who is in a group (cached; refreshed in the background); who is in
    a channel and whether a person or a user group exists (SlackFailure when Slack could not say)."""

    async def members(self, group_id: str) -> frozenset[str]: ...

    async def channel_members(self, channel: str) -> frozenset[str]: ...

    async def exists(self, target: str) -> bool: ...


class NoDirectory:
    async def members(self, group_id: str) -> frozenset[str]:
        return frozenset()

    async def channel_members(self, channel: str) -> frozenset[str]:
        return frozenset()  # nobody to ask: nobody is known to be in it

    async def exists(self, target: str) -> bool:
        return True  # nobody to ask


@dataclass
class Deps:
    store: Store
    directory: Directory = field(default_factory=NoDirectory)
    admins: Callable[[], frozenset[str]] = lambda: frozenset()
    kick: Callable[[], None] = lambda: None
    paused: Callable[[], tuple[bool, str | None]] = lambda: (False, None)
    on_pause: Callable[[bool, str | None], None] = lambda paused, reason: None
    """Told at once when this replica pauses or resumes (cards render from a local copy)."""
    policy_lines: Callable[[], list[str]] = lambda: []
    """The active policy in plain words (mrkdwn, escaped)."""
    chart: Callable[[Report], bytes] | None = None
    """The stats chart as PNG (CPU work: call it in a thread); None: no chart."""
    external_teams: Callable[[], frozenset[str]] = lambda: frozenset()
    """Teams (T...) or organisations (E...) besides our own whose people may act (policy)."""
    trust_after: Callable[[], int] = lambda: 5
    """Clean approvals before an action is trusted (the policy's `trust.after`)."""
    grant_terms: Callable[[str], GrantTerms | None] = lambda tier: None
    """What a tier's cards may grant ("approve and allow similar"); None: no grants."""
    on_away: Callable[[Away], None] = lambda away: None
    """Told at once when someone here starts or ends an absence (cards render from a local copy)."""
    dm: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None
    """Send a direct message (`{"text", "blocks"}`) to a user; notices of demotions, canaries."""


def deps(context: Any) -> Deps:
    """The Deps object the bot put in this request's context."""
    d = context[CONTEXT_KEY]
    assert isinstance(d, Deps)
    return d


def user_name(user: dict[str, Any]) -> str:
    return str(user.get("name") or user.get("username") or user.get("id") or "")

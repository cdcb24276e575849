"""What listeners need, handed to them through Bolt's context (set by `bot.app`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from store.redis_store import Store

CONTEXT_KEY = "hitl"


class Directory(Protocol):
    """Slack's user groups: who is in a group (cached; refreshed in the background)."""

    async def members(self, group_id: str) -> frozenset[str]: ...


class NoDirectory:
    async def members(self, group_id: str) -> frozenset[str]:
        return frozenset()


@dataclass
class Deps:
    store: Store
    directory: Directory = field(default_factory=NoDirectory)
    admins: Callable[[], frozenset[str]] = lambda: frozenset()
    kick: Callable[[], None] = lambda: None
    paused: Callable[[], tuple[bool, str | None]] = lambda: (False, None)


def deps(context: Any) -> Deps:
    """The Deps object the bot put in this request's context."""
    d = context[CONTEXT_KEY]
    assert isinstance(d, Deps)
    return d


def user_name(user: dict[str, Any]) -> str:
    return str(user.get("name") or user.get("username") or user.get("id") or "")

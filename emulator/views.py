"""Modals (a stack of up to three per user), App Home tabs and one-shot trigger ids."""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from emulator.common import APP_ID, BOT_ID, JSON, TEAM_ID, SlackError

MAX_STACK = 3


@dataclass
class View:
    id: str
    type: str
    user_id: str
    spec: JSON
    hash: str
    root_view_id: str
    previous_view_id: str | None = None
    values: JSON = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    open: bool = True

    @property
    def callback_id(self) -> str:
        return str(self.spec.get("callback_id") or "")

    @property
    def blocks(self) -> list[JSON]:
        return list(self.spec.get("blocks") or [])

    def to_slack(self) -> JSON:
        """The view object as views.open returns it and interaction payloads carry it."""
        return {
            "id": self.id,
            "team_id": TEAM_ID,
            "type": self.type,
            "blocks": self.blocks,
            "private_metadata": self.spec.get("private_metadata") or "",
            "callback_id": self.callback_id,
            "state": {"values": self.values},
            "hash": self.hash,
            "title": self.spec.get("title"),
            "clear_on_close": bool(self.spec.get("clear_on_close", False)),
            "notify_on_close": bool(self.spec.get("notify_on_close", False)),
            "close": self.spec.get("close"),
            "submit": self.spec.get("submit"),
            "previous_view_id": self.previous_view_id,
            "root_view_id": self.root_view_id,
            "app_id": APP_ID,
            "external_id": self.spec.get("external_id") or "",
            "app_installed_team_id": TEAM_ID,
            "bot_id": BOT_ID,
        }


def _new_hash() -> str:
    return f"{int(time.time())}.{secrets.token_hex(4)}"


class ViewStore:
    """Open modals per user (a stack) and each user's published Home tab."""

    def __init__(self, new_id: Callable[[str], str]) -> None:
        self._new_id = new_id
        self.all: dict[str, View] = {}
        self.stacks: dict[str, list[str]] = {}
        self.homes: dict[str, str] = {}

    def open_modals(self) -> dict[str, View]:
        return {vid: v for vid, v in self.all.items() if v.open and v.type == "modal"}

    def top(self, user_id: str) -> View | None:
        stack = self.stacks.get(user_id) or []
        return self.all[stack[-1]] if stack else None

    def get(self, view_id: str | None = None, external_id: str | None = None) -> View:
        for v in self.all.values():
            by_id = view_id and v.id == view_id
            by_external = external_id and v.spec.get("external_id") == external_id
            if (by_id or by_external) and v.open:
                return v
        raise SlackError("not_found")

    def _make(self, user_id: str, spec: JSON, root: str | None, previous: str | None) -> View:
        vid = self._new_id("V")
        view = View(
            vid, str(spec.get("type", "modal")), user_id, spec, _new_hash(), root or vid, previous
        )
        self.all[vid] = view
        return view

    def open(self, user_id: str, spec: JSON) -> View:
        """Open a new root modal, replacing whatever stack the user had."""
        self.clear(user_id)
        view = self._make(user_id, spec, None, None)
        self.stacks[user_id] = [view.id]
        return view

    def push(self, user_id: str, spec: JSON) -> View:
        stack = self.stacks.get(user_id) or []
        if not stack:
            raise SlackError("not_found")
        if len(stack) >= MAX_STACK:
            raise SlackError("push_limit_reached")
        top = self.all[stack[-1]]
        view = self._make(user_id, spec, top.root_view_id, top.id)
        stack.append(view.id)
        return view

    def update(self, view: View, spec: JSON, expected_hash: str | None) -> View:
        if expected_hash and expected_hash != view.hash:
            raise SlackError("hash_conflict")
        view.spec = spec
        view.hash = _new_hash()
        view.errors = {}
        view.values = {}
        return view

    def publish(self, user_id: str, spec: JSON, expected_hash: str | None) -> View:
        current = self.homes.get(user_id)
        if current is not None:
            return self.update(self.all[current], spec, expected_hash)
        view = self._make(user_id, spec, None, None)
        self.homes[user_id] = view.id
        return view

    def home(self, user_id: str) -> View | None:
        vid = self.homes.get(user_id)
        return self.all[vid] if vid else None

    def close(self, view: View) -> None:
        """Close a modal and everything pushed above it."""
        stack = self.stacks.get(view.user_id) or []
        if view.id in stack:
            for vid in stack[stack.index(view.id) :]:
                self.all[vid].open = False
            del stack[stack.index(view.id) :]
        view.open = False

    def clear(self, user_id: str) -> None:
        for vid in self.stacks.pop(user_id, []):
            self.all[vid].open = False


@dataclass
class _Trigger:
    user_id: str
    expires: float
    used: bool = False


class Triggers:
    """trigger_ids as Slack issues them: valid for `ttl` seconds, and once."""

    def __init__(self, clock: Callable[[], float], ttl: float = 3.0) -> None:
        self.clock = clock
        self.ttl = ttl
        self._issued: dict[str, _Trigger] = {}
        self._n = itertools.count(1)

    def issue(self, user_id: str) -> str:
        tid = f"{int(self.clock())}.{next(self._n)}.{secrets.token_hex(16)}"
        self._issued[tid] = _Trigger(user_id, self.clock() + self.ttl)
        return tid

    def use(self, trigger_id: str) -> str:
        """Spend a trigger and return its user, or raise Slack's error."""
        trig = self._issued.get(trigger_id)
        if trig is None:
            raise SlackError("invalid_trigger_id")
        if trig.used or self.clock() > trig.expires:
            raise SlackError("expired_trigger_id")
        trig.used = True
        return trig.user_id

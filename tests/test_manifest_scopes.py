"""The manifest asks for exactly the bot scopes the code uses.

The scopes are derived from the Web API methods the code calls (the scan of
tests/test_manifest.py) and Slack's method reference (each method's bot scopes), then
compared with manifest.yml both ways: every call is covered (tests/test_manifest.py) and
every scope asked for is needed by a call, or is listed in EXTRA with the reason.

The method reference is the project's own derived copy of Slack's (`emulator/data/methods.json`,
read through `emulator.reference`).
"""

from __future__ import annotations

from functools import cache

import yaml

from emulator.reference import shipped
from tests.test_manifest import MANIFEST, scan_calls

EXTRA: dict[str, str] = {
    "commands": "the /hitl slash command (no Web API method)",
    "chat:write.public": "post cards to a public review channel the bot was never invited to",
}
"""Scopes no Web API method lists but the app needs, and why."""


@cache
def bot_scopes(method: str) -> tuple[str, ...]:
    """The bot scopes Slack's reference lists for `method` (any one of them suffices)."""
    spec = shipped().get(method)
    assert spec is not None, f"{method} is not in Slack's method reference"
    return spec.bot_scopes


def derived_scopes(calls: dict[str, list[str]]) -> dict[str, list[str]]:
    """Scope -> the called methods that accept it."""
    out: dict[str, list[str]] = {}
    for method in sorted(calls):
        for scope in bot_scopes(method):
            out.setdefault(scope, []).append(method)
    return out


def unused(manifest_scopes: list[str], calls: dict[str, list[str]]) -> list[str]:
    """Scopes the manifest asks for that no called method needs and EXTRA does not explain."""
    usable = derived_scopes(calls)
    return [s for s in manifest_scopes if s not in usable and s not in EXTRA]


def _manifest_scopes() -> list[str]:
    data = yaml.safe_load(MANIFEST.read_text())
    return list(data["oauth_config"]["scopes"]["bot"])


def test_every_scope_asked_for_is_used() -> None:
    calls, _ = scan_calls()
    extra = unused(_manifest_scopes(), calls)
    assert not extra, (f"manifest.yml asks for bot scopes no called Web API method needs: {', '.join(extra)}; "
                       "remove them, or add them to EXTRA with the reason")


def test_the_check_can_fail() -> None:
    calls, _ = scan_calls()
    assert unused([*_manifest_scopes(), "reactions:write"], calls) == ["reactions:write"]
    # a scope is justified only by a method the code really calls
    assert "files:write" in unused(["files:write"], {k: v for k, v in calls.items() if not k.startswith("files.")})


def test_the_derivation_sees_the_calls() -> None:
    calls, _ = scan_calls()
    derived = derived_scopes(calls)
    assert "chat.postMessage" in derived["chat:write"] and "conversations.open" in derived["im:write"]
    assert "reactions:write" not in derived

"""manifest.yml is a valid Slack app manifest and requests every bot scope the code needs.

Reference data (Slack's manifest JSON Schema and the Web API methods with their scopes) comes
from the project's own copy in `emulator/data/`, derived by `scripts/derive_slack_reference.py`.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator

from bot.doctor.needs import API_CALL, SDK_CALL, sdk_methods
from emulator.reference import MethodSpec, Reference, manifest_schema

REPO = Path(__file__).resolve().parent.parent
MANIFEST = REPO / "manifest.yml"
SCANNED_PACKAGES = ("bot", "handlers")
EVENTS_URL = "https://hitl.example.com/slack/events"

# The scan's patterns are `hitl doctor`'s own (bot/doctor/needs.py): one definition of what
# counts as a Web API call, so the doctor and this test cannot disagree.


# --- reference data -----------------------------------------------------------------------

@cache
def slack_methods() -> dict[str, MethodSpec]:
    """Web API method name -> its facts (emulator/data/methods.json)."""
    methods = Reference.load().methods
    assert methods, "no methods in emulator/data/methods.json"
    return methods


def bot_scopes_of(method: str) -> list[str]:
    return list(slack_methods()[method].bot_scopes)


def user_only(method: str) -> bool:
    """True when only a user token can call the method (user scopes listed, no bot scope)."""
    return slack_methods()[method].user_only


# --- the scan -------------------------------------------------------------------------------

def sdk_name_to_methods(name: str) -> tuple[str, ...]:
    """`chat_postMessage` -> ("chat.postMessage",); names that are no Web API method -> ()."""
    return sdk_methods(name, Reference.load())


def source_files() -> list[Path]:
    files = [p for pkg in SCANNED_PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))]
    assert files, f"no Python files under {', '.join(SCANNED_PACKAGES)} in {REPO}"
    return files


def scan_calls(files: Iterable[Path] | None = None) -> tuple[dict[str, list[str]], list[str]]:
    """Web API methods called in the source -> where ("path:line"), and unknown api_call names."""
    calls: dict[str, list[str]] = {}
    unknown: list[str] = []
    for path in source_files() if files is None else files:
        rel = path.relative_to(REPO) if path.is_relative_to(REPO) else path
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            where = f"{rel}:{lineno}"
            for m in SDK_CALL.finditer(line):
                for method in sdk_name_to_methods(m.group(1)):
                    calls.setdefault(method, []).append(where)
            for m in API_CALL.finditer(line):
                if m.group(1) in slack_methods():
                    calls.setdefault(m.group(1), []).append(where)
                else:
                    unknown.append(f"{where}: api_call({m.group(1)!r})")
    return calls, unknown


def uncovered(methods: Iterable[str], bot_scopes: Iterable[str]) -> dict[str, str]:
    """Methods a bot token with `bot_scopes` cannot call -> why. Methods needing no scope pass."""
    have = set(bot_scopes)
    out: dict[str, str] = {}
    for method in sorted(set(methods)):
        if user_only(method):
            out[method] = "needs a user token (the reference lists user scopes only)"
            continue
        needed = bot_scopes_of(method)
        if needed and not have & set(needed):
            out[method] = f"needs one of the bot scopes {', '.join(needed)}"
    return out


# --- fixtures --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    assert MANIFEST.is_file(), f"{MANIFEST} is missing"
    data = yaml.safe_load(MANIFEST.read_text())
    assert isinstance(data, dict), "manifest.yml must be a YAML mapping"
    return data


@pytest.fixture(scope="module")
def validator() -> Draft7Validator:
    schema = manifest_schema()
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema)


def schema_errors(validator: Draft7Validator, data: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.path)))]


def manifest_bot_scopes(manifest: dict[str, Any]) -> list[str]:
    return list(manifest.get("oauth_config", {}).get("scopes", {}).get("bot") or [])


# --- tests -----------------------------------------------------------------------------------

def test_manifest_matches_slack_schema(manifest: dict[str, Any], validator: Draft7Validator) -> None:
    errors = schema_errors(validator, manifest)
    assert not errors, "manifest.yml does not match Slack's manifest schema:\n  " + "\n  ".join(errors)


def test_schema_check_can_fail(manifest: dict[str, Any], validator: Draft7Validator) -> None:
    bad = copy.deepcopy(manifest)
    bad["not_a_manifest_key"] = True
    errors = schema_errors(validator, bad)
    assert any("not_a_manifest_key" in e for e in errors), errors


def test_manifest_settings(manifest: dict[str, Any]) -> None:
    assert manifest["display_information"]["name"] == "hitl"
    features, settings = manifest["features"], manifest["settings"]
    assert features["bot_user"] == {"display_name": "hitl", "always_online": True}
    assert features["app_home"]["home_tab_enabled"] is True
    assert features["app_home"]["messages_tab_enabled"] is True  # the bot sends DMs
    [command] = features["slash_commands"]
    assert command["command"] == "/hitl"
    # what Slack shows as you type /hitl: every subcommand of /hitl help, or nobody finds them
    from blocks.commands import COMMANDS

    hinted = {part.split()[0] for part in command["usage_hint"].split("|")}
    assert hinted == {usage.split()[0] for usage, _ in COMMANDS}, command["usage_hint"]
    # one endpoint serves interactivity, the slash command and events (bot/app.py)
    assert command["url"] == EVENTS_URL
    assert settings["interactivity"] == {"is_enabled": True, "request_url": EVENTS_URL}
    assert settings["event_subscriptions"]["request_url"] == EVENTS_URL
    # exactly the events a listener is registered for (handlers/*.py: app.event("..."))
    listened = {m for f in (REPO / "handlers").glob("*.py")
                for m in re.findall(r'app\.event\("([a-z_]+)"\)', f.read_text())}
    assert set(settings["event_subscriptions"]["bot_events"]) == listened == {"app_home_opened"}
    assert settings["org_deploy_enabled"] is False
    assert settings["socket_mode_enabled"] is False
    assert settings["token_rotation_enabled"] is False
    scopes = manifest_bot_scopes(manifest)
    assert len(scopes) == len(set(scopes)), f"duplicate bot scopes: {scopes}"
    assert "commands" in scopes, "the /hitl slash command needs the `commands` scope"


def test_sdk_names_map_to_methods() -> None:
    assert sdk_name_to_methods("chat_postMessage") == ("chat.postMessage",)
    assert sdk_name_to_methods("usergroups_users_list") == ("usergroups.users.list",)
    assert sdk_name_to_methods("views_open") == ("views.open",)
    assert sdk_name_to_methods("files_upload_v2") == (
        "files.getUploadURLExternal", "files.completeUploadExternal")
    assert sdk_name_to_methods("add_signal_handler") == ()
    assert sdk_name_to_methods("model_dump_json") == ()


def test_scan_finds_calls(tmp_path: Path) -> None:
    src = tmp_path / "x.py"
    src.write_text(
        "await self.slack.chat_postMessage(channel=c)\n"
        "await client.files_upload_v2(channel=c, content=b)\n"
        "await self.store.claim_outbox(1, 2)\n"
        'await client.api_call("reactions.add", json={})\n'
        'await client.api_call(api_method="no.such.method")\n'
        'await self.gateway.call("chat.delete", channel=c, ts=t)\n')
    calls, unknown = scan_calls([src])
    assert set(calls) == {"chat.postMessage", "files.getUploadURLExternal",
                          "files.completeUploadExternal", "reactions.add", "chat.delete"}
    assert calls["chat.postMessage"] == [f"{src}:1"]
    assert unknown == [f"{src}:5: api_call('no.such.method')"]


def test_bot_scopes_cover_every_called_method(manifest: dict[str, Any]) -> None:
    calls, unknown = scan_calls()
    assert not unknown, "api_call() with a method Slack does not have:\n  " + "\n  ".join(unknown)
    # the scan must not silently find nothing
    expected = {"chat.postMessage", "chat.update", "views.open"}
    missing = expected - set(calls)
    assert not missing, (
        f"the scan of {', '.join(SCANNED_PACKAGES)} found no call to {', '.join(sorted(missing))}; "
        f"found: {', '.join(sorted(calls)) or 'nothing'}")
    gaps = uncovered(calls, manifest_bot_scopes(manifest))
    assert not gaps, "manifest.yml oauth_config.scopes.bot does not cover these calls:\n  " + "\n  ".join(
        f"{m} ({why}), called at {', '.join(calls[m])}" for m, why in gaps.items())


def test_coverage_check_can_fail(manifest: dict[str, Any]) -> None:
    calls, _ = scan_calls()
    scopes = [s for s in manifest_bot_scopes(manifest) if s != "chat:write"]
    gaps = uncovered({*calls, "chat.postMessage"}, scopes)
    assert "chat.postMessage" in gaps, gaps
    assert "chat:write" in gaps["chat.postMessage"]
    assert "search.messages" in uncovered(["search.messages"], ["search:read"])  # user token only
    assert uncovered(["auth.test", "views.open"], []) == {}  # methods needing no scope pass

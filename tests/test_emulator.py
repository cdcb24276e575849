"""The emulator's Web API, driven by slack_sdk's real AsyncWebClient."""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from emulator import Emulator
from emulator.reference import Reference

SECRET = "test-signing-secret"


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    e = Emulator(SECRET, None)
    await e.start()
    yield e
    await e.stop()


@pytest.fixture
def client(emu: Emulator) -> AsyncWebClient:
    return AsyncWebClient(token=emu.bot_token, base_url=emu.api_url)


def section(text: str) -> dict[str, object]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


async def test_post_update_history_with_metadata(emu: Emulator, client: AsyncWebClient) -> None:
    meta = {"event_type": "hitl_request", "event_payload": {"id": "r1"}}
    first = await client.chat_postMessage(
        channel="#approvals", text="card", blocks=[section("hi")], metadata=meta
    )
    assert first["channel"] == "C0APPROVALS"
    assert first["message"]["blocks"][0]["block_id"]  # Slack fills in block ids
    second = await client.chat_postMessage(channel="approvals", text="two")
    assert float(second["ts"]) > float(first["ts"])

    upd = await client.chat_update(channel="C0APPROVALS", ts=first["ts"], text="decided")
    assert upd["message"]["text"] == "decided"
    assert upd["message"]["blocks"][0]["text"]["text"] == "hi"  # kept when not re-sent

    hist = await client.conversations_history(channel="C0APPROVALS", include_all_metadata=True)
    assert [m["ts"] for m in hist["messages"]] == [second["ts"], first["ts"]]
    assert hist["messages"][1]["metadata"] == meta
    assert hist["messages"][1]["edited"]["user"] == "U0HITLBOT"
    plain = await client.conversations_history(channel="C0APPROVALS")
    assert "metadata" not in plain["messages"][1]

    assert emu.messages("#approvals")[0]["text"] == "decided"
    call = emu.calls_to("chat.postMessage")[0]
    assert call.args["blocks"] == [section("hi")]  # recorded decoded, not as a JSON string
    assert call.args["metadata"] == meta and "token" not in call.args


async def test_threads_and_replies(emu: Emulator, client: AsyncWebClient) -> None:
    parent = await client.chat_postMessage(channel="C0GENERAL", text="parent")
    reply = await client.chat_postMessage(channel="C0GENERAL", text="r", thread_ts=parent["ts"])
    got = await client.conversations_replies(channel="C0GENERAL", ts=parent["ts"])
    assert [m["ts"] for m in got["messages"]] == [parent["ts"], reply["ts"]]
    hist = await client.conversations_history(channel="C0GENERAL")
    assert len(hist["messages"]) == 1 and hist["messages"][0]["reply_count"] == 1
    assert [m["text"] for m in emu.thread("C0GENERAL", parent["ts"])] == ["parent", "r"]


async def test_blocks_as_json_string_in_form(emu: Emulator, client: AsyncWebClient) -> None:
    data = {"channel": "C0GENERAL", "text": "t", "blocks": json.dumps([section("form")])}
    resp = await client.api_call("chat.postMessage", data=data)
    assert resp["ok"]
    assert emu.messages("C0GENERAL")[-1]["blocks"][0]["text"]["text"] == "form"


async def test_missing_argument_and_no_text(client: AsyncWebClient) -> None:
    with pytest.raises(SlackApiError) as err:
        await client.api_call("chat.postMessage", json={"text": "no channel"})
    assert err.value.response["error"] == "invalid_arguments"
    assert "channel" in err.value.response["response_metadata"]["messages"][0]
    with pytest.raises(SlackApiError) as err:
        await client.api_call("chat.postMessage", json={"channel": "C0GENERAL"})
    assert err.value.response["error"] == "no_text"


async def test_auth_errors(emu: Emulator) -> None:
    bad = AsyncWebClient(token="xoxb-wrong", base_url=emu.api_url)
    with pytest.raises(SlackApiError) as err:
        await bad.auth_test()
    assert err.value.response["error"] == "invalid_auth"
    async with aiohttp.ClientSession() as s, s.post(emu.api_url + "auth.test") as r:
        assert r.status == 200
        assert await r.json() == {"ok": False, "error": "not_authed"}
    ok = await AsyncWebClient(token=emu.bot_token, base_url=emu.api_url).auth_test()
    assert ok["user_id"] == "U0HITLBOT" and ok["team_id"] == "T0HITL"


async def test_unknown_channel_and_method(client: AsyncWebClient) -> None:
    with pytest.raises(SlackApiError) as err:
        await client.chat_postMessage(channel="#nope", text="x")
    assert err.value.response["error"] == "channel_not_found"
    with pytest.raises(SlackApiError) as err:
        await client.api_call("chat.postMessageX", json={"channel": "C0GENERAL"})
    assert err.value.response["error"] == "unknown_method"


async def test_invalid_blocks(emu: Emulator, client: AsyncWebClient) -> None:
    await client.chat_postMessage(channel="C0GENERAL", text="ok", blocks=[section("x")] * 50)
    with pytest.raises(SlackApiError) as err:
        await client.chat_postMessage(channel="C0GENERAL", text="t", blocks=[section("x")] * 51)
    assert err.value.response["error"] == "invalid_blocks"
    assert any("50" in e for e in err.value.response["errors"])
    header = {"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}
    with pytest.raises(SlackApiError) as err:
        await client.chat_postMessage(channel="C0GENERAL", text="t", blocks=[header])
    assert "150" in err.value.response["errors"][0]
    field = {"type": "section", "fields": [{"type": "mrkdwn", "text": "f" * 2001}]}
    with pytest.raises(SlackApiError):
        await client.chat_postMessage(channel="C0GENERAL", text="t", blocks=[field])
    assert [e.method for e in emu.block_errors] == ["chat.postMessage"] * 3
    assert len(emu.messages("C0GENERAL")) == 1


async def test_invalid_modal(client: AsyncWebClient, emu: Emulator) -> None:
    trigger = emu.ws.triggers.issue("U0ALICE")
    view = {
        "type": "modal",
        "title": {"type": "plain_text", "text": "t" * 25},
        "blocks": [section("x")],
    }
    with pytest.raises(SlackApiError) as err:
        await client.views_open(trigger_id=trigger, view=view)
    assert err.value.response["error"] == "invalid_blocks"
    view["title"] = {"type": "plain_text", "text": "ok"}
    opened = await client.views_open(trigger_id=trigger, view=view)  # not spent by the failure
    assert opened["view"]["id"].startswith("V") and opened["view"]["hash"]


async def test_trigger_expiry_and_reuse(emu: Emulator, client: AsyncWebClient) -> None:
    clock = FakeClock()
    emu.clock = clock
    view = {"type": "modal", "title": {"type": "plain_text", "text": "T"}, "blocks": [section("x")]}
    trigger = emu.ws.triggers.issue("U0ALICE")
    assert (await client.views_open(trigger_id=trigger, view=view))["ok"]
    with pytest.raises(SlackApiError) as err:
        await client.views_open(trigger_id=trigger, view=view)
    assert err.value.response["error"] == "expired_trigger_id"
    late = emu.ws.triggers.issue("U0ALICE")
    clock.now += 3.01
    with pytest.raises(SlackApiError) as err:
        await client.views_open(trigger_id=late, view=view)
    assert err.value.response["error"] == "expired_trigger_id"
    with pytest.raises(SlackApiError) as err:
        await client.views_open(trigger_id="123.456.abc", view=view)
    assert err.value.response["error"] == "invalid_trigger_id"


async def test_injected_429_and_retry_handler(emu: Emulator, client: AsyncWebClient) -> None:
    emu.inject("chat.postMessage", status=429, retry_after=7)
    with pytest.raises(SlackApiError) as err:
        await client.chat_postMessage(channel="C0GENERAL", text="x")
    assert err.value.response.status_code == 429
    assert err.value.response.headers["Retry-After"] in ("7", ["7"])

    emu.inject("chat.postMessage", status=429, retry_after=0)
    retrying = AsyncWebClient(
        token=emu.bot_token,
        base_url=emu.api_url,
        retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)],
    )
    resp = await retrying.chat_postMessage(channel="C0GENERAL", text="x")
    assert resp["ok"]
    assert [c.status for c in emu.calls_to("chat.postMessage")] == [429, 429, 200]
    assert len(emu.messages("C0GENERAL")) == 1


async def test_injected_500_error_and_delay(emu: Emulator, client: AsyncWebClient) -> None:
    emu.inject("users.info", status=500, times=2)
    for _ in range(2):
        with pytest.raises(SlackApiError) as err:
            await client.users_info(user="U0ADMIN")
        assert err.value.response.status_code == 500
    user = (await client.users_info(user="U0ADMIN"))["user"]
    assert user["is_admin"] and user["real_name"] == "Ada Admin"
    emu.inject("chat.update", error="channel_not_found")
    with pytest.raises(SlackApiError) as err:
        await client.chat_update(channel="C0GENERAL", ts="1.0", text="x")
    assert err.value.response["error"] == "channel_not_found"
    emu.inject("auth.test", delay=0.2)
    before = emu.clock()
    await client.auth_test()
    assert emu.clock() - before >= 0.2


async def test_rate_limits(client: AsyncWebClient) -> None:
    clock = FakeClock()
    emu = Emulator(SECRET, None, rate_limits=True, clock=clock)
    await emu.start()
    try:
        c = AsyncWebClient(token=emu.bot_token, base_url=emu.api_url)
        for _ in range(3):  # the burst allowance
            await c.chat_postMessage(channel="C0GENERAL", text="x")
        with pytest.raises(SlackApiError) as err:
            await c.chat_postMessage(channel="C0GENERAL", text="x")
        assert err.value.response.status_code == 429
        assert int(err.value.response.headers["Retry-After"][0]) >= 1
        await c.chat_postMessage(channel="C0APPROVALS", text="other channel")
        clock.now += 1.0
        await c.chat_postMessage(channel="C0GENERAL", text="a second later")
        assert emu.rate_limited == 1
    finally:
        await emu.stop()


async def test_strict_limits_allow_one_post_per_channel_per_rolling_second() -> None:
    clock = FakeClock()
    emu = Emulator(SECRET, None, strict_limits=True, clock=clock)
    await emu.start()
    try:
        c = AsyncWebClient(token=emu.bot_token, base_url=emu.api_url)
        await c.chat_postMessage(channel="C0GENERAL", text="first")
        clock.now += 0.999  # no burst allowance: the second post within the second is refused
        with pytest.raises(SlackApiError) as err:
            await c.chat_postMessage(channel="C0GENERAL", text="too soon")
        assert err.value.response.status_code == 429
        assert err.value.response.headers["Retry-After"] in ("1", ["1"])
        await c.chat_postMessage(channel="C0APPROVALS", text="another channel has its own second")
        clock.now += 0.001  # a second after the last post that was carried out (not the refused one)
        await c.chat_postMessage(channel="C0GENERAL", text="a second later")
        with pytest.raises(SlackApiError):
            await c.chat_postMessage(channel="C0GENERAL", text="too soon again")
        clock.now += 1.0
        with pytest.raises(SlackApiError) as refused:  # a post Slack refuses posts nothing: not counted
            await c.chat_postMessage(channel="C0GENERAL", text="x", blocks=[{"type": "nonsense"}])
        assert refused.value.response["error"] == "invalid_blocks"
        await c.chat_postMessage(channel="C0GENERAL", text="fixed, and posted in the same second")
        assert emu.rate_limited == 2
        limited = [x for x in emu.calls_to("chat.postMessage") if x.status == 429]
        assert [x.received for x in limited] == [x.at for x in limited]  # measured on arrival
    finally:
        await emu.stop()


def test_strict_limits_from_the_environment_and_the_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from emulator.__main__ import parse

    monkeypatch.setenv("HITL_EMULATOR_STRICT", "1")
    assert Emulator(SECRET, None).limiter.strict
    assert not Emulator(SECRET, None, strict_limits=False).limiter.strict
    monkeypatch.delenv("HITL_EMULATOR_STRICT")
    assert not Emulator(SECRET, None).limiter.strict and not Emulator(SECRET, None).limiter.enabled
    assert parse(["--strict"]).strict is True and parse([]).strict is None
    strict = Emulator(SECRET, None, strict_limits=parse(["--strict"]).strict)
    assert strict.limiter.strict and strict.limiter.enabled  # strict implies Slack's other limits


async def test_directory_methods(client: AsyncWebClient) -> None:
    groups = await client.usergroups_list(include_users=True)
    managers = next(g for g in groups["usergroups"] if g["id"] == "S0MANAGERS")
    assert managers["users"] == ["U0ALICE", "U0BOB"]
    assert (await client.usergroups_users_list(usergroup="S0MANAGERS"))["users"] == [
        "U0ALICE",
        "U0BOB",
    ]
    names = {c["name"] for c in (await client.conversations_list())["channels"]}
    assert {"approvals", "approvals-high", "approvals-leads", "general"} <= names
    info = await client.conversations_info(channel="C0APPRHIGH")
    assert info["channel"]["name"] == "approvals-high" and info["channel"]["is_member"]
    page = await client.users_list(limit=2)
    assert len(page["members"]) == 2 and page["response_metadata"]["next_cursor"]


def tiny_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00\x00"))
        + chunk(b"IEND", b"")
    )


async def test_files_upload_v2(emu: Emulator, client: AsyncWebClient) -> None:
    png = tiny_png()
    resp = await client.files_upload_v2(
        channel="C0APPROVALS",
        content=png,
        filename="chart.png",
        title="Chart",
        initial_comment="metrics",
    )
    fid = resp["file"]["id"]
    assert emu.files[fid].content == png
    assert emu.files[fid].title == "Chart"
    msg = emu.messages("C0APPROVALS")[-1]
    assert msg["text"] == "metrics" and msg["files"][0]["id"] == fid
    async with aiohttp.ClientSession() as s, s.get(resp["file"]["url_private"]) as r:
        assert await r.read() == png and r.content_type == "image/png"


async def test_reactions_permalink_delete_ephemeral(emu: Emulator, client: AsyncWebClient) -> None:
    msg = await client.chat_postMessage(channel="C0GENERAL", text="x")
    await client.reactions_add(channel="C0GENERAL", timestamp=msg["ts"], name="white_check_mark")
    with pytest.raises(SlackApiError) as err:
        await client.reactions_add(
            channel="C0GENERAL", timestamp=msg["ts"], name="white_check_mark"
        )
    assert err.value.response["error"] == "already_reacted"
    link = await client.chat_getPermalink(channel="C0GENERAL", message_ts=msg["ts"])
    assert link["permalink"].endswith("p" + msg["ts"].replace(".", ""))
    eph = await client.chat_postEphemeral(channel="C0GENERAL", user="U0BOB", text="psst")
    assert emu.ephemerals("U0BOB")[0]["ts"] == eph["message_ts"]
    assert emu.ephemerals("U0ALICE") == []
    await client.chat_delete(channel="C0GENERAL", ts=msg["ts"])
    assert emu.messages("C0GENERAL") == []
    with pytest.raises(SlackApiError) as err:
        await client.chat_delete(channel="C0GENERAL", ts=msg["ts"])
    assert err.value.response["error"] == "message_not_found"


def test_reference_loading(tmp_path: Path) -> None:
    ref = Reference.load()
    assert ref.source == "emulator/data/methods.json" and len(ref.methods) > 300
    assert ref.methods["chat.update"].required == ("ts", "channel")
    members = ref.methods["conversations.members"]  # the fallback list once lacked it
    assert members.required == ("channel",) and "channels:read" in members.bot_scopes
    assert ref.methods["search.messages"].user_only and not ref.methods["chat.update"].user_only
    assert ref.methods["auth.test"].granted_by(set())  # no scope needed
    assert not ref.methods["chat.postMessage"].granted_by({"channels:read"})
    other = tmp_path / "methods.json"
    other.write_text(json.dumps({"x.y": {"required": ["a"], "tier": "t2", "bot": ["b:c"]}}))
    assert Reference.load(other).methods["x.y"].bot_scopes == ("b:c",)
    other.write_text("[]")
    with pytest.raises(ValueError, match="not a non-empty JSON object"):
        Reference.load(other)


async def test_scopes_header_and_missing_scope(emu: Emulator, client: AsyncWebClient) -> None:
    auth = await client.auth_test()
    granted = set(auth.headers["x-oauth-scopes"].split(","))
    assert {"chat:write", "channels:read", "usergroups:read", "commands"} <= granted
    assert "Date" in auth.headers
    emu.scopes = granted - {"chat:write"}
    with pytest.raises(SlackApiError) as err:
        await client.chat_postMessage(channel="C0GENERAL", text="x")
    assert err.value.response["error"] == "missing_scope"
    assert "chat:write" in err.value.response["needed"].split(",")
    assert "chat:write" not in err.value.response.headers["x-oauth-scopes"]
    assert emu.messages("C0GENERAL") == []
    assert (await client.auth_test())["ok"]  # needs no scope

"""The emulator acting as Slack towards an app: signed clicks, modals, slash commands, Home."""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from emulator import Emulator, InteractionError, sign
from tests.util import eventually

SECRET = "test-signing-secret"

Responder = Callable[[str, Any], web.Response]


class FakeApp:
    """A tiny app at /slack/events that keeps every request and answers with `responder`."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.responder: Responder = lambda kind, payload: web.Response()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append((dict(request.headers), body))
        kind, payload = self.decode(request.content_type, body)
        return self.responder(kind, payload)

    @staticmethod
    def decode(content_type: str, body: bytes) -> tuple[str, Any]:
        if content_type == "application/json":
            return "event", json.loads(body)
        form = dict(urllib.parse.parse_qsl(body.decode()))
        if "payload" in form:
            payload = json.loads(form["payload"])
            return str(payload["type"]), payload
        return "command", form

    def last(self) -> tuple[str, Any]:
        headers, body = self.requests[-1]
        return self.decode(headers["Content-Type"], body)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/slack/events", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/slack/events"

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()


@pytest.fixture
async def app() -> AsyncIterator[FakeApp]:
    a = FakeApp()
    await a.start()
    yield a
    await a.stop()


@pytest.fixture
async def emu(app: FakeApp) -> AsyncIterator[Emulator]:
    e = Emulator(SECRET, app.url)
    await e.start()
    yield e
    await e.stop()


@pytest.fixture
def client(emu: Emulator) -> AsyncWebClient:
    return AsyncWebClient(token=emu.bot_token, base_url=emu.api_url)


def text(t: str) -> dict[str, str]:
    return {"type": "plain_text", "text": t}


def option(v: str) -> dict[str, Any]:
    return {"text": text(v.title()), "value": v}


CARD = [
    {
        "type": "section",
        "block_id": "summary",
        "text": {"type": "mrkdwn", "text": "Refund $40?"},
        "accessory": {
            "type": "overflow",
            "action_id": "more",
            "options": [option("snooze"), option("why")],
        },
    },
    {
        "type": "actions",
        "block_id": "decide",
        "elements": [
            {
                "type": "button",
                "action_id": "approve",
                "text": text("Approve"),
                "value": "req-1",
                "style": "primary",
            },
            {
                "type": "static_select",
                "action_id": "tier",
                "placeholder": text("Tier"),
                "options": [option("low"), option("high")],
            },
        ],
    },
]


def modal(blocks: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": "edit",
        "title": text("Edit"),
        "submit": text("Save"),
        "private_metadata": "pm-1",
        "blocks": blocks,
        **extra,
    }


FORM = [
    {
        "type": "input",
        "block_id": "reason",
        "label": text("Reason"),
        "element": {"type": "plain_text_input", "action_id": "v", "max_length": 100},
    },
    {
        "type": "input",
        "block_id": "amount",
        "label": text("Amount"),
        "element": {"type": "number_input", "action_id": "v", "is_decimal_allowed": True},
    },
    {
        "type": "input",
        "block_id": "tier",
        "label": text("Tier"),
        "element": {
            "type": "static_select",
            "action_id": "v",
            "options": [option("low"), option("high")],
        },
    },
    {
        "type": "input",
        "block_id": "notify",
        "label": text("Notify"),
        "optional": True,
        "element": {"type": "checkboxes", "action_id": "v", "options": [option("a"), option("b")]},
    },
    {
        "type": "input",
        "block_id": "when",
        "label": text("When"),
        "optional": True,
        "element": {"type": "datepicker", "action_id": "v", "initial_date": "2025-01-02"},
    },
    {
        "type": "input",
        "block_id": "mode",
        "label": text("Mode"),
        "optional": True,
        "element": {
            "type": "radio_buttons",
            "action_id": "v",
            "options": [option("now"), option("later")],
        },
    },
]


async def post_card(client: AsyncWebClient) -> str:
    resp = await client.chat_postMessage(channel="#approvals", text="card", blocks=CARD)
    return str(resp["ts"])


async def open_modal(emu: Emulator, client: AsyncWebClient, view: dict[str, Any]) -> str:
    resp = await client.views_open(trigger_id=emu.ws.triggers.issue("U0ALICE"), view=view)
    return str(resp["view"]["id"])


async def test_click_is_signed_and_shaped_like_slack(
    emu: Emulator, app: FakeApp, client: AsyncWebClient
) -> None:
    ts = await post_card(client)
    reply = await emu.click("U0ALICE", "#approvals", ts, "approve")
    assert reply.status == 200
    headers, body = app.requests[-1]
    assert SignatureVerifier(SECRET).is_valid_request(body, headers)
    assert not SignatureVerifier("another-secret").is_valid_request(body, headers)
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    kind, p = app.last()
    assert kind == "block_actions"
    assert p["user"] == {"id": "U0ALICE", "username": "alice", "name": "alice", "team_id": "T0HITL"}
    assert p["container"] == {
        "type": "message",
        "message_ts": ts,
        "channel_id": "C0APPROVALS",
        "is_ephemeral": False,
    }
    assert p["channel"] == {"id": "C0APPROVALS", "name": "approvals"}
    assert p["message"]["ts"] == ts and p["message"]["blocks"][1]["block_id"] == "decide"
    act = p["actions"][0]
    assert (act["action_id"], act["block_id"], act["value"], act["type"]) == (
        "approve",
        "decide",
        "req-1",
        "button",
    )
    assert p["trigger_id"] and p["response_url"].startswith(emu.url)


def test_sign_helper_matches_slack_verifier() -> None:
    body = b"payload=%7B%7D"
    now = int(time.time())
    assert SignatureVerifier(SECRET).is_valid_request(body, sign(SECRET, body, now))
    stale = sign(SECRET, body, now - 600)
    assert not SignatureVerifier(SECRET).is_valid_request(body, stale)
    assert not SignatureVerifier(SECRET).is_valid_request(body + b"x", sign(SECRET, body, now))


async def test_selects_and_unknown_actions(
    emu: Emulator, app: FakeApp, client: AsyncWebClient
) -> None:
    ts = await post_card(client)
    await emu.click("U0BOB", "C0APPROVALS", ts, "tier", value="high")
    assert app.last()[1]["actions"][0]["selected_option"] == option("high")
    await emu.click("U0BOB", "C0APPROVALS", ts, "more", value="why")
    assert app.last()[1]["actions"][0]["type"] == "overflow"
    with pytest.raises(InteractionError, match="no option"):
        await emu.click("U0BOB", "C0APPROVALS", ts, "tier", value="medium")
    with pytest.raises(InteractionError, match="reject"):
        await emu.click("U0BOB", "C0APPROVALS", ts, "reject")
    with pytest.raises(InteractionError):
        await emu.click("U0BOB", "C0APPROVALS", ts, "approve", block_id="summary")
    assert len(app.requests) == 2


async def test_response_url(emu: Emulator, app: FakeApp, client: AsyncWebClient) -> None:
    ts = await post_card(client)
    await emu.click("U0ALICE", "C0APPROVALS", ts, "approve")
    url = app.last()[1]["response_url"]
    async with aiohttp.ClientSession() as s:
        async with s.post(url, json={"text": "only you", "response_type": "ephemeral"}) as r:
            assert r.status == 200
        assert [e["text"] for e in emu.ephemerals("U0ALICE")] == ["only you"]
        async with s.post(url, json={"text": "Approved by Alice", "replace_original": True}) as r:
            assert r.status == 200
        msg = emu.messages("C0APPROVALS")[0]
        assert msg["ts"] == ts and msg["text"] == "Approved by Alice" and msg["blocks"] == []
        async with s.post(url, json={"delete_original": "true"}) as r:
            assert r.status == 200
    assert emu.messages("C0APPROVALS") == []
    assert [c.method for c in emu.calls][-3:] == ["response_url"] * 3


async def test_view_submission_state_shapes_and_errors(
    emu: Emulator, app: FakeApp, client: AsyncWebClient
) -> None:
    vid = await open_modal(emu, client, modal(FORM))
    app.responder = lambda kind, p: web.json_response(
        {"response_action": "errors", "errors": {"amount": "Too much"}}
    )
    result = await emu.submit_view(
        "U0ALICE",
        vid,
        {
            "reason": {"v": "dup"},
            "amount": {"v": 12.5},
            "tier": {"v": "high"},
            "notify": {"v": ["a", "b"]},
            "mode": {"v": "later"},
        },
    )
    kind, p = app.last()
    assert kind == "view_submission"
    assert p["view"]["id"] == vid and p["view"]["callback_id"] == "edit"
    assert p["view"]["private_metadata"] == "pm-1" and p["view"]["hash"]
    assert p["view"]["state"]["values"] == {
        "reason": {"v": {"type": "plain_text_input", "value": "dup"}},
        "amount": {"v": {"type": "number_input", "value": "12.5"}},
        "tier": {"v": {"type": "static_select", "selected_option": option("high")}},
        "notify": {"v": {"type": "checkboxes", "selected_options": [option("a"), option("b")]}},
        "when": {"v": {"type": "datepicker", "selected_date": "2025-01-02"}},
        "mode": {"v": {"type": "radio_buttons", "selected_option": option("later")}},
    }
    assert not result.closed and result.errors == {"amount": "Too much"}
    assert emu.views[vid].errors == {"amount": "Too much"}

    app.responder = lambda kind, p: web.Response()
    result = await emu.submit_view(
        "U0ALICE", vid, {"reason": {"v": "dup"}, "amount": {"v": "3"}, "tier": {"v": "low"}}
    )
    assert result.closed and result.errors == {}
    assert vid not in emu.views


async def test_client_side_checks_do_not_reach_the_app(
    emu: Emulator, app: FakeApp, client: AsyncWebClient
) -> None:
    vid = await open_modal(emu, client, modal(FORM))
    result = await emu.submit_view("U0ALICE", vid, {"reason": {"v": "x"}, "amount": {"v": "abc"}})
    assert result.reply is None and not result.closed
    assert set(result.errors) == {"amount", "tier"}
    assert app.requests == []
    with pytest.raises(InteractionError):
        await emu.submit_view("U0ALICE", vid, {"nope": {"v": "x"}})


async def test_response_actions_update_push_clear(
    emu: Emulator, app: FakeApp, client: AsyncWebClient
) -> None:
    simple = [FORM[0]]
    vid = await open_modal(emu, client, modal(simple))
    step2 = modal(simple, callback_id="step2")
    app.responder = lambda kind, p: web.json_response({"response_action": "update", "view": step2})
    result = await emu.submit_view("U0ALICE", vid, {"reason": {"v": "a"}})
    assert not result.closed and result.view and result.view["callback_id"] == "step2"
    assert result.view["id"] == vid
    app.responder = lambda kind, p: web.json_response({"response_action": "push", "view": step2})
    result = await emu.submit_view("U0ALICE", vid, {"reason": {"v": "a"}})
    assert result.view and result.view["previous_view_id"] == vid and len(emu.views) == 2
    bad = modal(simple, title=text("x" * 30))
    app.responder = lambda kind, p: web.json_response({"response_action": "update", "view": bad})
    result = await emu.submit_view("U0ALICE", result.view["id"], {"reason": {"v": "a"}})
    assert result.problem and "invalid_blocks" in result.problem
    app.responder = lambda kind, p: web.json_response({"response_action": "clear"})
    top = emu.top_view("U0ALICE")
    assert top is not None
    result = await emu.submit_view("U0ALICE", top.id, {"reason": {"v": "a"}})
    assert result.closed and emu.views == {}


async def test_close_view(emu: Emulator, app: FakeApp, client: AsyncWebClient) -> None:
    quiet = await open_modal(emu, client, modal([FORM[0]]))
    assert await emu.close_view("U0ALICE", quiet) is None
    assert app.requests == [] and emu.views == {}
    loud = await open_modal(emu, client, modal([FORM[0]], notify_on_close=True))
    reply = await emu.close_view("U0ALICE", loud)
    assert reply is not None and app.last()[0] == "view_closed"
    assert app.last()[1]["view"]["id"] == loud and app.last()[1]["is_cleared"] is False


async def test_slash_command(emu: Emulator, app: FakeApp) -> None:
    app.responder = lambda kind, p: web.json_response({"text": "usage: /hitl ..."})
    reply = await emu.slash_command("U0CAROL", "#general", "/hitl", "help")
    assert reply.status == 200
    headers, body = app.requests[-1]
    assert SignatureVerifier(SECRET).is_valid_request(body, headers)
    kind, form = app.last()
    assert kind == "command"
    assert {
        k: form[k]
        for k in (
            "command",
            "text",
            "user_id",
            "user_name",
            "channel_id",
            "channel_name",
            "team_id",
        )
    } == {
        "command": "/hitl",
        "text": "help",
        "user_id": "U0CAROL",
        "user_name": "carol",
        "channel_id": "C0GENERAL",
        "channel_name": "general",
        "team_id": "T0HITL",
    }
    assert form["trigger_id"] and form["response_url"] and form["api_app_id"]
    assert [e["text"] for e in emu.ephemerals("U0CAROL")] == ["usage: /hitl ..."]
    assert emu.messages("C0GENERAL") == []


async def test_home_tab(emu: Emulator, app: FakeApp, client: AsyncWebClient) -> None:
    await emu.open_home("U0DAVE")
    headers, body = app.requests[-1]
    assert headers["Content-Type"] == "application/json"
    assert SignatureVerifier(SECRET).is_valid_request(body, headers)
    event = json.loads(body)
    assert event["type"] == "event_callback"
    assert event["event"]["type"] == "app_home_opened" and event["event"]["tab"] == "home"
    assert event["event"]["user"] == "U0DAVE"
    home = {
        "type": "home",
        "blocks": [
            {
                "type": "actions",
                "elements": [{"type": "button", "action_id": "refresh", "text": text("Refresh")}],
            }
        ],
    }
    await client.views_publish(user_id="U0DAVE", view=home)
    view = emu.home("U0DAVE")
    assert view is not None and view.blocks[0]["elements"][0]["action_id"] == "refresh"
    await emu.click_home("U0DAVE", "refresh")
    kind, p = app.last()
    assert kind == "block_actions" and p["container"] == {"type": "view", "view_id": view.id}
    assert p["view"]["type"] == "home"


async def test_a_real_bolt_app_cannot_tell(emu: Emulator) -> None:
    """Bolt verifies the signatures, calls auth.test, opens a modal with the click's trigger."""
    bolt_client = AsyncWebClient(token=emu.bot_token, base_url=emu.api_url)
    bolt = AsyncApp(token=emu.bot_token, signing_secret=SECRET, client=bolt_client)

    @bolt.action("approve")
    async def on_approve(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        await client.views_open(trigger_id=body["trigger_id"], view=modal([FORM[0]]))

    @bolt.view("edit")
    async def on_edit(ack: AsyncAck, view: dict[str, Any]) -> None:
        reason = view["state"]["values"]["reason"]["v"]["value"]
        if reason == "bad":
            await ack(response_action="errors", errors={"reason": "Say more"})
        else:
            await ack()

    @bolt.command("/hitl")
    async def on_hitl(ack: AsyncAck) -> None:
        await ack("help text")

    runner = web.AppRunner(bolt.web_app(path="/slack/events"))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    emu.request_url = f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
    try:
        ts = (await bolt_client.chat_postMessage(channel="#approvals", text="c", blocks=CARD))["ts"]
        assert (await emu.click("U0ALICE", "#approvals", ts, "approve")).status == 200

        # Bolt answers the click before its listener opens the modal
        async def opened() -> list[str]:
            return list(emu.views)

        [vid] = await eventually(opened, what="the modal Bolt opens after its ack")
        result = await emu.submit_view("U0ALICE", vid, {"reason": {"v": "bad"}})
        assert result.errors == {"reason": "Say more"} and not result.closed
        result = await emu.submit_view("U0ALICE", vid, {"reason": {"v": "fine"}})
        assert result.closed
        await emu.slash_command("U0ALICE", "#approvals", "/hitl", "help")
        assert emu.ephemerals("U0ALICE")[-1]["text"] == "help text"
        emu.signing_secret = "wrong"
        emu.transport.signing_secret = "wrong"
        assert (await emu.slash_command("U0ALICE", "#approvals", "/hitl", "help")).status == 401
        assert emu.calls_to("auth.test")
    finally:
        await runner.cleanup()

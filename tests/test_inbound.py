"""Issue 10, point 8: malformed Slack requests get 401/400, never a 500 with a traceback.
Real HTTP to the real app, signed exactly as Slack signs (the signature is valid: only the
content is wrong)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import web

from emulator.signing import sign
from tests.harness import SECRET, Harness, start, stop
from tests.redis_server import free_port

FORM = "application/x-www-form-urlencoded"


@pytest.fixture
async def h(redis_url: str) -> AsyncIterator[Harness]:
    harness = await start(redis_url)
    yield harness
    await stop(harness)


async def send(h: Harness, body: bytes, headers: dict[str, str], content_type: str = FORM) -> tuple[int, str]:
    url = f"http://127.0.0.1:{h.bot.port}/slack/events"
    async with aiohttp.ClientSession() as s, s.post(
            url, data=body, headers={**headers, "Content-Type": content_type}) as r:
        return r.status, await r.text()


def signed(body: bytes, timestamp: str | None = None) -> dict[str, str]:
    ts = timestamp or str(int(time.time()))
    digest = hmac.new(SECRET.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


@pytest.mark.parametrize("timestamp", ["soon", "1e9", "", "  ", "١٢٣"])
async def test_a_timestamp_that_is_not_a_number_is_401(h: Harness, timestamp: str) -> None:
    body = urlencode({"payload": json.dumps({"type": "block_actions"})}).encode()
    status, text = await send(h, body, signed(body, timestamp) | {"X-Slack-Request-Timestamp": timestamp})
    assert status == 401, text
    assert "Traceback" not in text


@pytest.mark.parametrize("body", [
    urlencode({"payload": "[1, 2]"}).encode(),
    urlencode({"payload": "\"just a string\""}).encode(),
    urlencode({"payload": "{not json"}).encode(),
    urlencode([("payload", "{}"), ("payload", "{}")]).encode(),
    b"payload=%7B%22a%22%3A1&&=&%zz",
    b"\xff\xfe not utf-8",
    b"nothing=here",
])
async def test_a_signed_body_that_is_not_a_slack_payload_is_400(h: Harness, body: bytes) -> None:
    status, text = await send(h, body, sign(SECRET, body, int(time.time())))
    assert status == 400, text
    assert "Traceback" not in text


@pytest.mark.parametrize("body", [b"[]", b"42", b"{broken"])
async def test_a_signed_json_body_that_is_not_an_object_is_400(h: Harness, body: bytes) -> None:
    status, text = await send(h, body, sign(SECRET, body, int(time.time())), "application/json")
    assert status == 400, text


async def test_bad_signatures_and_stale_requests_are_401_and_good_ones_pass(h: Harness) -> None:
    body = urlencode({"command": "/hitl", "text": "help", "user_id": "U0ALICE", "team_id": "T0HITL",
                      "channel_id": "C1", "response_url": "https://hooks.slack.com/commands/T0HITL/1/x",
                      "trigger_id": "t"}).encode()
    assert (await send(h, body, {}))[0] == 401
    assert (await send(h, body, sign("wrong-secret", body, int(time.time()))))[0] == 401
    assert (await send(h, body, sign(SECRET, body, int(time.time()) - 600)))[0] == 401
    status, text = await send(h, body, sign(SECRET, body, int(time.time())))
    assert status == 200 and "/hitl" in text


@pytest.mark.parametrize("payload", [{"a": 1}, {"type": "block_actions"}, {"type": "view_submission", "view": 3},
                                     {"type": "block_actions", "user": "U1", "actions": "x"}])
async def test_an_odd_but_well_formed_payload_is_never_a_server_error(h: Harness, payload: dict[str, object]) -> None:
    body = urlencode({"payload": json.dumps(payload)}).encode()
    status, text = await send(h, body, sign(SECRET, body, int(time.time())))
    assert status < 500, text


USER = {"id": "U0ALICE", "username": "alice", "name": "alice", "team_id": "T0HITL"}


def _view(callback_id: str, **extra: object) -> dict[str, object]:
    view: dict[str, object] = {"id": "V1", "type": "modal", "callback_id": callback_id, "hash": "h",
                               "private_metadata": json.dumps({"r": "r1"})}
    return {"type": "view_submission", "user": USER, "team": {"id": "T0HITL"}, "trigger_id": "t",
            "view": {**view, **extra}}


@pytest.mark.parametrize("payload", [
    _view("hitl.edit_modal"),  # a submission without its state
    _view("hitl.reject_modal"),
    _view("hitl.edit_modal", state={"values": []}),
    _view("hitl.edit_modal", state={"values": {"b": {"a": {"type": "plain_text_input", "value": 7}}}}),
    _view("hitl.edit_modal", state={"values": {"b": {"a": {"type": "number_input", "value": [1]}}}}),
    _view("hitl.reject_modal", state={"values": {"hitl.reason_code": "x"}}),
    _view("hitl.reject_modal", state={"values": {}}, blocks="x"),
    _view("hitl.edit_modal", state={"values": {"b": {"a": {"selected_option": "x"}}}}),
    {**_view("hitl.edit_modal", state={"values": {}}), "user": "U0ALICE"},
    {"type": "view_submission", "user": USER, "view": {"callback_id": None, "type": "modal"}},
    {"type": "view_submission", "user": USER},
    {"type": "block_actions", "user": USER, "actions": []},
    {"type": "block_actions", "user": USER, "actions": [{"value": "x"}]},
    {"type": "block_actions", "user": USER, "actions": [{"action_id": "hitl.approve", "value": {"r": "x"}}]},
    {"type": "block_actions", "user": {"id": ["U"]}, "actions": [{"action_id": "hitl.approve", "value": "{}"}]},
])
async def test_a_signed_interaction_not_shaped_as_slack_sends_it_is_400(h: Harness, payload: dict[str, object]) -> None:
    """Each of these made a listener raise (a 500) before it was checked at the door."""
    body = urlencode({"payload": json.dumps(payload)}).encode()
    status, text = await send(h, body, sign(SECRET, body, int(time.time())))
    assert status == 400, text
    assert "payload is not what Slack sends" in text


@pytest.mark.parametrize(("body", "content_type"), [
    (urlencode({"command": "/hitl", "text": "help", "team_id": "T0HITL"}).encode(), FORM),
    (json.dumps({"type": "event_callback", "team_id": "T0HITL", "event": {}}).encode(), "application/json"),
    (json.dumps({"type": "url_verification"}).encode(), "application/json"),
])
async def test_a_signed_command_or_event_without_its_required_fields_is_400(h: Harness, body: bytes,
                                                                          content_type: str) -> None:
    status, text = await send(h, body, sign(SECRET, body, int(time.time())), content_type)
    assert status == 400, text


async def test_a_listener_failing_after_its_ack_still_answers_slack_with_the_ack(h: Harness) -> None:
    """Reject opens a modal after acknowledging; Slack refuses the expired trigger: the click is
    answered 200 (Bolt forgot the acknowledgement when the listener failed), and nothing changed."""
    from blocks.ids import ActionId

    rid = await h.push(params={"amount": 100}, editable=["amount"])
    rec = await h.card(rid)
    h.emu.trigger_ttl = 0.0  # every trigger has expired when views.open sees it
    for _ in range(3):
        reply = await h.click(rec, "U0ALICE", ActionId.reject)
        assert reply.status == 200
    assert (await h.store.get(rid)).state.value == "pending"
    opened = h.emu.calls_to("views.open")
    assert len(opened) == 3 and not any(c.response.get("ok") for c in opened)


TEAM = {"id": "T0HITL", "domain": "hitl"}


@pytest.mark.parametrize(("body", "content_type"), [
    (urlencode({"payload": json.dumps({"type": "shortcut", "callback_id": "x", "trigger_id": "t1", "user": USER,
                                       "team": TEAM, "api_app_id": "A0HITL"})}).encode(), FORM),
    (urlencode({"payload": json.dumps({"type": "message_action", "callback_id": "x", "trigger_id": "t2", "user": USER,
                                       "team": TEAM, "channel": {"id": "C1"}, "message": {"ts": "1.2"}})}).encode(),
     FORM),
    (urlencode({"payload": json.dumps({"type": "view_closed", "user": USER, "team": TEAM, "is_cleared": False,
                                       "view": {"id": "V1", "type": "modal",
                                                "callback_id": "hitl.reject_modal"}})}).encode(), FORM),
    (urlencode({"payload": json.dumps({"type": "block_suggestion", "user": USER, "team": TEAM, "action_id": "x",
                                       "block_id": "b", "value": "ab"})}).encode(), FORM),
    (json.dumps({"type": "event_callback", "team_id": "T0HITL", "api_app_id": "A0HITL", "event_id": "Ev0UNINST",
                 "event_time": 1, "event": {"type": "app_uninstalled"}}).encode(), "application/json"),
    (json.dumps({"type": "event_callback", "team_id": "T0HITL", "api_app_id": "A0HITL", "event_id": "Ev0REVOKE",
                 "event_time": 1, "event": {"type": "tokens_revoked",
                                            "tokens": {"bot": ["U0BOT"]}}}).encode(), "application/json"),
])
async def test_a_request_no_listener_takes_is_acknowledged(h: Harness, body: bytes, content_type: str) -> None:
    """Shapes Slack sends that hitl has no listener for: acknowledged (200), as Socket Mode acks
    its envelope, not Bolt's 404 (Slack would retry the event and count it failed, or show the
    person an error)."""
    status, text = await send(h, body, sign(SECRET, body, int(time.time())), content_type)
    assert (status, text) == (200, "")


async def test_hitl_never_posts_to_a_response_url_that_is_not_slacks(h: Harness) -> None:
    """A signed payload whose response_url is elsewhere (an internal address) is not one Slack
    sent: 400, and hitl posts nothing there (no refusal, no reply: no request of the sender's
    choosing leaves the bot)."""
    hits: list[str] = []

    async def grab(request: web.Request) -> web.Response:
        hits.append(await request.text())
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/{tail:.*}", grab)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    elsewhere = f"http://127.0.0.1:{port}/internal"
    try:
        click = {"type": "block_actions", "user": USER, "team": TEAM, "trigger_id": "t", "response_url": elsewhere,
                 "container": {"type": "message", "channel_id": "C1", "message_ts": "1.1", "is_ephemeral": True},
                 "actions": [{"action_id": "hitl.approve", "value": "not ours", "action_ts": "9.1"}]}
        outsider = {**click, "user": {"id": "U0EVE", "team_id": "T0OTHER"},
                    "actions": [{"action_id": "hitl.approve", "value": "x", "action_ts": "9.2"}]}
        form = {"type": "view_submission", "user": USER, "team": TEAM, "trigger_id": "t",
                "response_urls": [{"block_id": "b", "action_id": "a", "channel_id": "C1", "response_url": elsewhere}],
                "view": {"id": "V1", "type": "modal", "callback_id": "hitl.reject_modal", "hash": "h",
                         "private_metadata": "{}", "state": {"values": {}}}}
        bodies = [urlencode({"payload": json.dumps(p)}).encode() for p in (click, outsider, form)]
        bodies.append(urlencode({"command": "/hitl", "text": "stats", "user_id": "U0ALICE", "team_id": "T0HITL",
                                 "channel_id": "C1", "response_url": elsewhere, "trigger_id": "t2"}).encode())
        for body in bodies:
            status, text = await send(h, body, sign(SECRET, body, int(time.time())))
            assert status == 400 and "response_url" in text, (status, text)
        await asyncio.sleep(0.5)  # a reply would have been posted by now
        assert hits == []
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("signature", ["v0=é", "v0=" + "ü" * 64, "v0=\u2603"])
async def test_a_signature_that_is_not_ascii_is_401(h: Harness, signature: str) -> None:
    """A forged signature with letters outside ASCII (hmac.compare_digest refuses to compare
    such text: it raised, a 500) is refused like any other that does not match."""
    body = urlencode({"command": "/hitl", "text": "help", "user_id": "U0ALICE", "team_id": "T0HITL"}).encode()
    headers = signed(body) | {"X-Slack-Signature": signature}
    url = f"http://127.0.0.1:{h.bot.port}/slack/events"
    async with aiohttp.ClientSession() as s, s.post(
            url, data=body, headers={**headers, "Content-Type": FORM}) as r:
        status, text = r.status, await r.text()
    assert status == 401, text


@pytest.mark.parametrize(("body", "content_type"), [
    (urlencode({"payload": '{"a": ' + "[" * 50_000 + "]" * 50_000 + "}"}).encode(), FORM),
    (b'{"type": "event_callback", "event": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "application/json"),
])
async def test_a_signed_body_nested_too_deep_to_parse_is_400(h: Harness, body: bytes, content_type: str) -> None:
    """JSON nested deeper than the parser recurses (a RecursionError, not a ValueError: it
    escaped the door, a 500) is not what Slack sends."""
    status, text = await send(h, body, sign(SECRET, body, int(time.time())), content_type)
    assert status == 400, text


async def test_a_click_slack_cannot_authorize_yet_fails_visibly_and_the_next_one_counts(h: Harness) -> None:
    """Bolt checks the bot token (`auth.test`) at the first request; when Slack answers that
    with an error (`internal_error`, a rate limit after retries) Bolt answered 200 with a
    "reinstall this app" text: the click was acknowledged and dropped, nobody told. Now it is
    a 503 (Slack shows the person it failed), nothing changes, and a click again counts."""
    from blocks.ids import ActionId

    rid = await h.push()
    rec = await h.card(rid)
    h.emu.inject("auth.test", error="internal_error")
    first = await h.click(rec, "U0ALICE", ActionId.approve)
    assert first.status == 503, first.body
    assert (await h.store.get(rid)).decision is None
    again = await h.click(rec, "U0ALICE", ActionId.approve)
    assert again.status == 200
    await h.decided(rid)

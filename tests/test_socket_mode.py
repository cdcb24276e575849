"""Socket Mode: with SLACK_APP_TOKEN the bot takes Slack's traffic over a WebSocket.

The connection's failures run on short back-offs here (bot.socket_door's constants, patched per
test); `hitl run` itself is run as a process where only its signals and exit can tell."""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import handlers.reviews as reviews_mod
from blocks.ids import ActionId, BlockId
from bot.app import build_app
from bot.client import HitlClient
from bot.config import load_settings
from bot.env import ConfigError
from emulator import Emulator
from store.models import Status
from store.redis_store import Store
from tests.harness import SECRET, TOKEN, Harness, start_bot
from tests.redis_server import free_port
from tests.util import eventually

APP_TOKEN = "xapp-1-test"


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reconnects on a short back-off; down reported after a short grace."""
    monkeypatch.setattr("bot.socket_door.BACKOFF_MIN_S", 0.05)
    monkeypatch.setattr("bot.socket_door.BACKOFF_MAX_S", 0.2)
    monkeypatch.setattr("bot.socket_door.GRACE_S", 0.3)


@pytest.fixture
async def h(redis_url: str) -> AsyncIterator[Harness]:
    emu = Emulator(signing_secret=SECRET, request_url=None, bot_token=TOKEN, app_token=APP_TOKEN)
    await emu.start()
    bot = await start_bot(redis_url, emu, slack_app_token=APP_TOKEN, slack_signing_secret=None)
    harness = Harness(redis_url, emu, bot, HitlClient.from_url(redis_url, name="agent"), [bot])
    await eventually(lambda: asyncio.sleep(0, emu.socket_mode.connected), what="socket connected")
    yield harness
    await harness.client.close()
    await bot.stop()
    await emu.stop()


async def test_clicks_and_modals_arrive_over_the_socket(h: Harness) -> None:
    rid = await h.push(params={"amount": 250}, editable=["amount"])
    rec = await h.card(rid)
    await h.click(rec, "U0ALICE", ActionId.reject)
    view = await eventually(lambda: asyncio.sleep(0, h.emu.top_view("U0ALICE")), what="reject modal")
    # "other" needs details: the bot's own check, answered with response_action in the ack
    bad = await h.emu.submit_view("U0ALICE", view.id, {BlockId.reason_code.value: {"value": "other"}})
    assert not bad.closed and BlockId.reason_text.value in bad.errors
    ok = await h.emu.submit_view("U0ALICE", view.id, {BlockId.reason_code.value: {"value": "other"},
                                                      BlockId.reason_text.value: {"value": "Wrong customer"}})
    assert ok.closed
    decision = await h.client.wait(rid, timeout=10)
    assert decision.status is Status.rejected and decision.reason == "Wrong customer"
    kinds = [e["type"] for e in h.emu.socket_mode.envelopes]
    assert kinds == ["interactive"] * 3 and all(r.status == 200 for r in h.emu.sent)


async def test_no_http_endpoint_for_slack_in_socket_mode(h: Harness) -> None:
    async with aiohttp.ClientSession() as s, s.post(f"http://127.0.0.1:{h.bot.port}/slack/events", data=b"x") as r:
        assert r.status == 404
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{h.bot.port}/healthz") as r:
        assert r.status == 200


async def test_a_wrong_app_token_is_refused(redis_url: str) -> None:
    emu = Emulator(signing_secret=SECRET, request_url=None, bot_token=TOKEN, app_token=APP_TOKEN)
    await emu.start()
    try:
        async with aiohttp.ClientSession() as s, s.post(
                emu.api_url + "apps.connections.open", headers={"Authorization": "Bearer xapp-wrong"}) as r:
            assert (await r.json())["error"] == "invalid_auth"
    finally:
        await emu.stop()


# -- every envelope is acknowledged ----------------------------------------------------------


async def test_a_listener_failing_after_its_ack_still_acks_the_envelope(h: Harness) -> None:
    """Over HTTP this answers 200 (tests/test_inbound.py); over the socket the same click is
    acknowledged, not left for Slack to show the person an error after 3 s."""
    rid = await h.push(params={"amount": 100}, editable=["amount"])
    rec = await h.card(rid)
    h.emu.trigger_ttl = 0.0  # views.open refuses the trigger, after the listener acked
    replies = [await h.click(rec, "U0ALICE", ActionId.reject) for _ in range(3)]
    assert [r.timed_out for r in replies] == [False] * 3, [(r.status, r.elapsed) for r in replies]


async def test_an_envelope_no_listener_takes_is_acknowledged(h: Harness) -> None:
    """Bolt answers 404 (no listener): the envelope is acknowledged all the same (empty)."""
    payload = {"type": "event_callback", "event_id": "Ev0NOBODY", "team_id": "T0HITL",
               "event": {"type": "reaction_added", "user": "U0ALICE", "reaction": "tada"}}
    _, _, _, timed_out = await h.emu.socket_mode.deliver("event_callback", payload, 3.0)
    assert not timed_out


async def test_a_redelivered_envelope_reaches_middleware_as_a_retry(h: Harness,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """Slack re-sends an envelope (retry_attempt 1): Bolt's middleware sees what the HTTP door
    gets, `x-slack-retry-num`, so the click already handled is dropped (handlers/once.py)."""
    caplog.set_level(logging.INFO, logger="hitl.once")
    rid = await h.push()
    rec = await h.card(rid)
    await h.click(rec, "U0ALICE", ActionId.approve)
    await h.decided(rid)
    sm = h.emu.socket_mode
    envelope = copy.deepcopy(sm.envelopes[-1])
    envelope["retry_attempt"], envelope["retry_reason"] = 1, "timeout"
    acked = asyncio.get_running_loop().create_future()
    sm._waiting[envelope["envelope_id"]] = acked
    await next(ws for ws in reversed(sm._sockets) if not ws.closed).send_json(envelope)
    assert (await asyncio.wait_for(acked, 3))["envelope_id"] == envelope["envelope_id"]
    await eventually(lambda: asyncio.sleep(0, any("already handled" in r.getMessage() for r in caplog.records)),
                     what="the retry dropped")


@pytest.mark.parametrize(("kind", "payload", "why"), [
    ("interactive", {"type": "block_actions", "user": {"id": "U0ALICE"}, "actions": {"action_id": "approve"}},
     "a field that Slack sends as a list of objects is not one"),
    ("interactive", {"type": "block_actions", "user": {"id": ["U0ALICE"]}, "actions": []},
     "block_actions without a user id"),
    ("interactive", {"type": "view_submission", "user": {"id": "U0ALICE"},
                     "view": {"type": "modal", "callback_id": "reject", "state": {"values": {"b": {"a": {"value": 7}}}}}},
     "a state value does not have Slack's types"),
    ("slash_command", {"command": "/hitl", "text": "stats"}, "a slash command without its command and user_id"),
    ("event_callback", {"type": "event_callback", "event": {"user": "U0ALICE"}}, "event_callback without an event type"),
    ("interactive", ["not", "an", "object"], "not a JSON object"),
])
async def test_a_payload_not_shaped_as_slack_sends_is_acknowledged_and_never_handled(
        h: Harness, caplog: pytest.LogCaptureFixture, kind: str, payload: Any, why: str) -> None:
    """The HTTP door answers these 400 before Bolt sees them (bot/inbound.py); over the socket the
    same check refuses them: acknowledged (Slack would only send them again), logged with what is
    wrong, and no listener or Bolt middleware runs on them."""
    caplog.set_level(logging.INFO)
    handled = len(h.emu.socket_mode.envelopes)
    _, body, _, timed_out = await h.emu.socket_mode.deliver(kind, payload, 3.0)
    assert not timed_out and body == ""
    refusals = [r.getMessage() for r in caplog.records if r.name == "hitl.socket" and "not what Slack sends" in r.getMessage()]
    assert refusals and why in refusals[0], [r.getMessage() for r in caplog.records]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
    assert len(h.emu.socket_mode.envelopes) == handled + 1


def test_the_retry_headers_are_those_of_http_and_only_on_a_retry() -> None:
    from slack_sdk.socket_mode.request import SocketModeRequest

    from bot.socket_door import retry_headers

    first = SocketModeRequest("interactive", "e1", {}, True, retry_attempt=0, retry_reason="")
    again = SocketModeRequest("events_api", "e1", {}, False, retry_attempt=2, retry_reason="timeout")
    assert retry_headers(first) == {}
    assert retry_headers(again) == {"x-slack-retry-num": "2", "x-slack-retry-reason": "timeout"}


async def test_a_refresh_requested_by_slack_moves_to_a_new_connection(h: Harness) -> None:
    """Slack's `disconnect` message (refresh_requested): a new connection opens, then the old
    one closes, and clicks go on being acknowledged."""
    sm = h.emu.socket_mode
    old = next(ws for ws in sm._sockets if not ws.closed)
    await old.send_json({"type": "disconnect", "reason": "refresh_requested"})
    await eventually(lambda: asyncio.sleep(0, old.closed and sm.connected), what="moved to a new connection")
    rid = await h.push()
    rec = await h.card(rid)
    assert not (await h.click(rec, "U0ALICE", ActionId.approve)).timed_out
    assert (await h.client.wait(rid, timeout=10)).status is Status.approved
    assert h.bot.socket_handler.failures == 0


# -- a token Slack refuses, a Slack that cannot be reached --------------------------------------


def _settings(redis_url: str, api_url: str, app_token: str) -> Any:
    return load_settings(slack_bot_token=TOKEN, slack_signing_secret=None, slack_api_url=api_url,
                         slack_app_token=app_token, redis_url=redis_url, port=0, host="127.0.0.1",
                         consumer="test", housekeeping="inline")


async def test_a_revoked_app_token_fails_start_with_a_clear_error(redis_url: str) -> None:
    """apps.connections.open says invalid_auth: start() stops at once (it used to retry forever
    inside start(), so `hitl run` never reached its stop event) and names the variable."""
    emu = Emulator(signing_secret=SECRET, request_url=None, bot_token=TOKEN, app_token=APP_TOKEN)
    await emu.start()
    bot = build_app(_settings(redis_url, emu.api_url, "xapp-1-revoked"))
    try:
        with pytest.raises(ConfigError, match=r"SLACK_APP_TOKEN: Slack refused it \(invalid_auth\)"):
            await asyncio.wait_for(bot.start(), 10)
        assert bot.runner is None and not bot.tasks  # nothing was started
    finally:
        await bot.intake.close()
        await bot.store.close()
        await emu.stop()


async def _hitl_run(api_url: str, app_token: str, redis_url: str, port: int,
                    cwd: Path) -> asyncio.subprocess.Process:
    env = {**os.environ, "SLACK_BOT_TOKEN": TOKEN, "SLACK_APP_TOKEN": app_token, "SLACK_API_URL": api_url,
           "REDIS_URL": redis_url, "HITL_PORT": str(port), "HITL_HOST": "127.0.0.1",
           "HITL_HOUSEKEEPING": "off", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("SLACK_SIGNING_SECRET", None)
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "run", env=env, cwd=str(cwd),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)


async def test_hitl_run_with_a_revoked_app_token_exits_with_the_error(redis_url: str, tmp_path: Path) -> None:
    emu = Emulator(signing_secret=SECRET, request_url=None, bot_token=TOKEN, app_token=APP_TOKEN)
    await emu.start()
    proc = await _hitl_run(emu.api_url, "xapp-1-revoked", redis_url, free_port(), tmp_path)
    try:
        try:
            _, err = await asyncio.wait_for(proc.communicate(), 20)
        except TimeoutError:
            raise AssertionError("`hitl run` still running 20 s after Slack refused its app-level token") from None
        assert proc.returncode == 2
        assert "SLACK_APP_TOKEN: Slack refused it (invalid_auth)" in err.decode(), err.decode()
        assert "Traceback" not in err.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await emu.stop()


class UnreachableSlack:
    """A Slack whose apps.connections.open fails with 503 until `ws_url` is set (then gives it)."""

    def __init__(self) -> None:
        self.ws_url: str | None = None
        self.opened = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.api_url = ""

    async def open(self, _: web.Request) -> web.Response:
        self.opened.set()
        if self.ws_url is None:
            return web.Response(status=503, text="upstream unavailable")
        return web.json_response({"ok": True, "url": self.ws_url})

    async def __aenter__(self) -> UnreachableSlack:
        app = web.Application()
        app.router.add_post("/api/apps.connections.open", self.open)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.api_url = f"http://127.0.0.1:{port}/api/"
        return self

    async def __aexit__(self, *_: Any) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


async def _healthz(port: int) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/healthz") as r:
        return r.status, await r.json()


async def test_hitl_run_obeys_sigterm_while_slack_cannot_be_reached(redis_url: str, tmp_path: Path) -> None:
    """apps.connections.open fails (not on the token): `hitl run` serves, retries in the
    background, and stops on SIGTERM."""
    async with UnreachableSlack() as slack:
        port = free_port()
        proc = await _hitl_run(slack.api_url, APP_TOKEN, redis_url, port, tmp_path)
        try:
            async def serving() -> dict[str, Any] | None:
                try:
                    return (await _healthz(port))[1]
                except aiohttp.ClientError:
                    return None

            body = await eventually(serving, 20, "`hitl run` serving /healthz")
            await slack.opened.wait()
            proc.send_signal(signal.SIGTERM)
            try:
                _, err = await asyncio.wait_for(proc.communicate(), 20)
            except TimeoutError:
                raise AssertionError("`hitl run` ignored SIGTERM for 20 s while Slack was unreachable") from None
            assert proc.returncode == 0, err.decode()
            assert "Traceback" not in err.decode(), err.decode()
            assert body["slack_socket"] in ("reconnecting", "down")
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def test_an_unreachable_slack_is_retried_with_back_off_then_connects(
        redis_url: str, quick: None, caplog: pytest.LogCaptureFixture) -> None:
    """start() returns at once; each failed attempt is one log line (no traceback), the waits
    double up to the cap; /healthz says down after the grace; once Slack answers, it connects."""
    caplog.set_level(logging.INFO, logger="hitl.socket")
    emu = Emulator(signing_secret=SECRET, request_url=None, bot_token=TOKEN, app_token=APP_TOKEN)
    await emu.start()
    async with UnreachableSlack() as slack:
        bot = build_app(_settings(redis_url, slack.api_url, APP_TOKEN))
        await asyncio.wait_for(bot.start(), 10)
        try:
            await eventually(lambda: asyncio.sleep(0, bot.socket_handler.failures >= 5), what="5 attempts")
            failed = [r for r in caplog.records if r.name == "hitl.socket" and "could not connect" in r.getMessage()]
            assert all(r.exc_info is None and r.levelno == logging.WARNING for r in failed)
            assert "could not connect (Unanswered: apps.connections.open: HTTP 503)" in failed[0].getMessage()
            waits = [r.getMessage().rsplit("trying again in ", 1)[1] for r in failed[:5]]
            assert waits == ["0.05 s", "0.1 s", "0.2 s", "0.2 s", "0.2 s"]

            async def down() -> bool:
                status, body = await _healthz(bot.port)
                return status == 503 and body["slack_socket"] == "down"

            await eventually(down, what="/healthz 503, slack_socket down")
            slack.ws_url = emu.url.replace("http://", "ws://") + "/socket-mode/after-the-outage"
            await eventually(lambda: asyncio.sleep(0, emu.socket_mode.connected), what="socket connected")
            assert await _healthz(bot.port) == (200, {"redis": "ok", "intake": "running", "housekeeping": "inline",
                                                      "slack_socket": "connected"})
        finally:
            await bot.stop()
            await emu.stop()


# -- /healthz and /metrics ---------------------------------------------------------------------


async def _gauge(port: int, name: str) -> float | None:
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/metrics") as r:
        for line in (await r.text()).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


async def test_healthz_reports_a_socket_that_cannot_reconnect(h: Harness, quick: None) -> None:
    """The app-level token is revoked while running and the socket drops: no click can reach the
    bot; /healthz says 503 (`slack_socket: down`) and /metrics `hitl_slack_socket_up 0`, until
    the token is accepted again."""
    assert await _healthz(h.bot.port) == (200, {"redis": "ok", "intake": "running", "housekeeping": "inline",
                                                "slack_socket": "connected"})
    assert await _gauge(h.bot.port, "hitl_slack_socket_up") == 1
    h.emu.socket_mode.app_token = "xapp-1-rotated"  # the old token is revoked
    for ws in list(h.emu.socket_mode._sockets):
        await ws.close()

    async def down() -> bool:
        status, body = await _healthz(h.bot.port)
        return status == 503 and body["slack_socket"] == "down"

    await eventually(down, what="/healthz 503, slack_socket down")
    assert not h.emu.socket_mode.connected
    assert await _gauge(h.bot.port, "hitl_slack_socket_up") == 0
    assert (await _gauge(h.bot.port, "hitl_slack_socket_connect_failures_total") or 0) >= 1
    h.emu.socket_mode.app_token = APP_TOKEN  # a new token: the retries pick it up
    await eventually(lambda: asyncio.sleep(0, h.emu.socket_mode.connected), what="socket reconnected")
    assert (await _healthz(h.bot.port))[0] == 200


async def test_stop_acknowledges_the_click_it_applies(h: Harness, redis_url: str,
                                                      caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.WARNING, logger="hitl.socket")
    rid = await h.push()
    rec = await h.card(rid)
    original = reviews_mod.decide

    async def slow_decide(*a: Any, **kw: Any) -> Any:  # the decision's work after ack() takes 0.8 s (a slow Slack lookup)
        await asyncio.sleep(0.8)
        return await original(*a, **kw)

    monkeypatch.setattr(reviews_mod, "decide", slow_decide)
    click = asyncio.create_task(h.click(rec, "U0ALICE", ActionId.approve))
    await asyncio.sleep(0.3)  # the listener has acknowledged and is deciding
    await h.bot.stop()
    reply = await click
    store = Store.from_url(redis_url, "hitl")
    try:
        decided = (await store.get(rid)).decision is not None
    finally:
        await store.close()
    assert decided
    assert not reply.timed_out, "the click was applied, but its envelope was never acknowledged"


async def test_a_form_hitl_could_not_handle_stays_open_with_slacks_error(
        h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """The form failed before its ack (Redis away): an empty ack would close it as if it went
    through; unacknowledged, Slack keeps it open with its error (the HTTP door answers 503)."""
    import handlers.cards as cards_mod

    async def unreachable(ack: Any, view: Any) -> Any:
        raise ConnectionError("Redis is away")

    rid = await h.push()
    rec = await h.card(rid)
    await h.click(rec, "U0ALICE", ActionId.reject)
    view = await eventually(lambda: asyncio.sleep(0, h.emu.top_view("U0ALICE")), what="reject modal")
    monkeypatch.setattr(cards_mod, "ack_rejection", unreachable)
    h.emu.transport.ack_timeout = 1.0  # Slack's 3 s, shortened
    result = await h.emu.submit_view("U0ALICE", view.id, {BlockId.reason_code.value: {"value": "other"},
                                                          BlockId.reason_text.value: {"value": "Wrong customer"}})
    assert not result.closed and h.emu.top_view("U0ALICE") is not None  # the person still has the form
    assert (await h.store.get(rid)).decision is None


async def test_a_command_slack_cannot_authorize_yet_says_try_again(h: Harness) -> None:
    """Bolt's check of the bot token (`auth.test`) failed at Slack: the person is told to try
    again (as the HTTP door's 503 does), not to reinstall the app, and the next one runs."""
    h.emu.inject("auth.test", error="internal_error")
    first = await h.emu.slash_command("U0ALICE", "#general", "/hitl", "help")
    assert "try again in a moment" in first.body and "reinstall" not in first.body, first.body
    again = await h.emu.slash_command("U0ALICE", "#general", "/hitl", "help")
    assert "/hitl commands" in again.body

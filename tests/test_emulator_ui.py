"""The emulator's web page API (`/_emulator/...`): snapshots, actions as a person, users."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from slack_sdk.web.async_client import AsyncWebClient

from emulator import Emulator
from tests.test_emulator import tiny_png
from tests.test_emulator_interactions import CARD, FORM, FakeApp, modal, open_modal, post_card

SECRET = "test-signing-secret"


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


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def state(http: aiohttp.ClientSession, emu: Emulator, user: str | None = None) -> Any:
    query = f"?user={user}" if user else ""
    async with http.get(f"{emu.url}/_emulator/state{query}") as r:
        assert r.status == 200
        return await r.json()


async def call(http: aiohttp.ClientSession, emu: Emulator, action: str, status: int = 200,
               **body: Any) -> Any:
    async with http.post(f"{emu.url}/_emulator/{action}", json=body) as r:
        data = await r.json()
        assert r.status == status, data
        return data


def channel(snap: Any, name: str) -> Any:
    return next(c for c in snap["channels"] if c["name"] == name)


async def test_the_page_and_its_assets_are_served(emu: Emulator, http: aiohttp.ClientSession) -> None:
    async with http.get(emu.url + "/") as r:
        assert r.status == 200 and "text/html" in r.content_type
        page = await r.text()
    assert 'id="user-switcher"' in page and "/static/app.js" in page
    for asset in ("app.js", "blocks.js", "modal.js", "mrkdwn.js", "style.css"):
        async with http.get(f"{emu.url}/static/{asset}") as r:
            assert r.status == 200, asset
    for asset in ("app.js", "blocks.js", "modal.js", "mrkdwn.js"):
        async with http.get(f"{emu.url}/static/{asset}") as r:
            assert "innerHTML" not in await r.text(), f"{asset}: agent text must never become markup"


async def test_snapshot_people_channels_messages_and_threads(
    emu: Emulator, client: AsyncWebClient, http: aiohttp.ClientSession
) -> None:
    ts = await post_card(client)
    await client.chat_postMessage(channel="#approvals", text="a reply", thread_ts=ts)
    emu.add_channel("secret", "C0SECRET", is_private=True, members=["U0BOB"])
    snap = await state(http, emu)
    assert snap["me"]["id"] == "U0ALICE"
    assert [g["handle"] for g in snap["me"]["groups"]] == ["managers"]
    people = {u["id"]: u for u in snap["users"]}
    assert people["U0CAROL"]["groups"] == [] and people["U0ADMIN"]["is_admin"]
    assert {"id": "S0MANAGERS", "handle": "managers", "name": "Managers",
            "users": ["U0ALICE", "U0BOB"]} in snap["usergroups"]
    names = [c["name"] for c in snap["channels"]]
    assert "approvals" in names and "secret" not in names  # private, Alice is not in it
    assert "secret" in [c["name"] for c in (await state(http, emu, "U0BOB"))["channels"]]
    [card] = channel(snap, "approvals")["messages"]  # the reply is nested, not top level
    assert card["ts"] == ts and card["bot"] and card["blocks"][0]["block_id"] == "summary"
    assert card["reply_count"] == 1 and card["replies"][0]["text"] == "a reply"
    assert snap["modal"] is None and snap["home"] is None and snap["ephemerals"] == []


async def test_shared_files_are_served_from_the_emulator(
    emu: Emulator, client: AsyncWebClient, http: aiohttp.ClientSession
) -> None:
    await client.files_upload_v2(channel="C0APPROVALS", content=tiny_png(), filename="chart.png",
                                 title="Chart", initial_comment="metrics")
    [msg] = channel(await state(http, emu), "approvals")["messages"]
    [f] = msg["files"]
    assert f["title"] == "Chart" and f["mimetype"] == "image/png"
    assert f["path"].startswith("/files/") and f["path"].endswith("/chart.png")
    async with http.get(emu.url + f["path"]) as r:
        assert r.status == 200 and await r.read() == tiny_png()


async def test_unknown_user_in_a_snapshot(emu: Emulator, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{emu.url}/_emulator/state?user=U0NOBODY") as r:
        assert r.status == 404 and (await r.json())["error"] == "user_not_found"


async def test_click_through_the_api_reaches_the_app_signed(
    emu: Emulator, app: FakeApp, client: AsyncWebClient, http: aiohttp.ClientSession
) -> None:
    ts = await post_card(client)
    out = await call(http, emu, "click", channel="C0APPROVALS", ts=ts, action_id="approve",
                     block_id="decide")
    assert out["ok"] and out["status"] == 200 and out["kind"] == "block_actions"
    assert out["summary"].startswith("Sent block_actions → 200 in ")
    kind, payload = app.last()
    assert kind == "block_actions" and payload["user"]["id"] == "U0ALICE"
    assert payload["actions"][0]["value"] == "req-1"
    assert emu.sent[-1].status == 200  # through the emulator's own transport
    # a choice in a select, and the status line in the next snapshot
    await call(http, emu, "click", channel="C0APPROVALS", ts=ts, action_id="tier", value="high")
    assert app.last()[1]["actions"][0]["selected_option"]["value"] == "high"
    assert (await state(http, emu))["last"]["summary"].startswith("Sent block_actions")


async def test_bad_requests_are_refused_with_a_reason(
    emu: Emulator, client: AsyncWebClient, http: aiohttp.ClientSession
) -> None:
    ts = await post_card(client)
    assert "action_id" in (await call(http, emu, "click", 400, channel="C0APPROVALS", ts=ts))["error"]
    out = await call(http, emu, "click", 400, channel="C0APPROVALS", ts=ts, action_id="nope")
    assert "no element with action_id 'nope'" in out["error"]
    assert "U0NOBODY" in (await call(http, emu, "user", 400, user="U0NOBODY"))["error"]
    async with http.post(f"{emu.url}/_emulator/click", data=b"[1]") as r:
        assert r.status == 400


async def test_switch_user_changes_who_acts_and_what_they_see(
    emu: Emulator, app: FakeApp, client: AsyncWebClient, http: aiohttp.ClientSession
) -> None:
    ts = await post_card(client)
    out = await call(http, emu, "user", user="U0CAROL")
    assert out["user"] == "U0CAROL" and out["state"]["me"]["real_name"] == "Carol"
    assert out["state"]["me"]["groups"] == []
    assert (await state(http, emu))["me"]["id"] == "U0CAROL"
    await call(http, emu, "click", channel="C0APPROVALS", ts=ts, action_id="approve")
    assert app.last()[1]["user"]["id"] == "U0CAROL"
    # a request may still name its user explicitly
    await call(http, emu, "click", user="U0BOB", channel="C0APPROVALS", ts=ts, action_id="approve")
    assert app.last()[1]["user"]["id"] == "U0BOB"


async def test_ephemeral_messages_are_shown_only_to_their_user(
    emu: Emulator, app: FakeApp, client: AsyncWebClient, http: aiohttp.ClientSession
) -> None:
    await client.chat_postEphemeral(channel="#approvals", user="U0BOB", text="only for *Bob*",
                                    blocks=CARD)
    assert (await state(http, emu, "U0ALICE"))["ephemerals"] == []
    [eph] = (await state(http, emu, "U0BOB"))["ephemerals"]
    assert eph["text"] == "only for *Bob*" and eph["channel"] == "C0APPROVALS" and eph["ephemeral"]
    # its buttons work for Bob, through the same click endpoint
    await call(http, emu, "click", user="U0BOB", channel="C0APPROVALS", ts=eph["ts"],
               action_id="approve")
    assert app.last()[1]["container"]["is_ephemeral"] is True
    await call(http, emu, "click", 400, user="U0ALICE", channel="C0APPROVALS", ts=eph["ts"],
               action_id="approve")


async def test_modal_submit_errors_and_close(
    emu: Emulator, app: FakeApp, client: AsyncWebClient, http: aiohttp.ClientSession
) -> None:
    view_id = await open_modal(emu, client, modal(FORM, notify_on_close=True))
    snap = await state(http, emu)
    assert snap["modal"]["id"] == view_id and snap["modal"]["title"]["text"] == "Edit"
    assert (await state(http, emu, "U0BOB"))["modal"] is None  # the modal is Alice's
    values = {"reason": {"v": "too much"}, "amount": {"v": "lots"}, "tier": {"v": "low"}}
    out = await call(http, emu, "submit", view_id=view_id, values=values)
    assert out["status"] is None and out["errors"] == {"amount": "Enter a number"}
    assert out["summary"].startswith("Not sent")
    shown = (await state(http, emu))["modal"]
    assert shown["errors"] == {"amount": "Enter a number"}
    assert shown["values"]["amount"]["v"]["value"] == "lots"  # what was typed stays
    # the app answers with its own errors
    app.responder = lambda kind, payload: web.json_response(
        {"response_action": "errors", "errors": {"reason": "Say more"}})
    values["amount"] = {"v": "12.5"}
    out = await call(http, emu, "submit", view_id=view_id, values=values)
    assert out["status"] == 200 and not out["closed"] and out["errors"] == {"reason": "Say more"}
    assert app.last()[0] == "view_submission"
    assert (await state(http, emu))["modal"]["errors"] == {"reason": "Say more"}
    out = await call(http, emu, "close", view_id=view_id)
    assert out["kind"] == "view_closed" and app.last()[0] == "view_closed"
    assert (await state(http, emu))["modal"] is None


async def test_slash_command_answers_and_failures(
    emu: Emulator, app: FakeApp, http: aiohttp.ClientSession
) -> None:
    app.responder = lambda kind, payload: web.Response(status=404)
    out = await call(http, emu, "command", channel="C0APPROVALS", text="/hitl help")
    assert out["status"] == 404 and out["summary"] == f"Sent /hitl → 404 in {out['ms']:.0f} ms"
    assert app.last()[1]["command"] == "/hitl" and app.last()[1]["text"] == "help"
    [notice] = (await state(http, emu))["ephemerals"]
    assert notice["text"] == '/hitl failed with the error "dispatch_failed"'
    assert notice["user"] == "USLACKBOT"
    assert (await state(http, emu, "U0BOB"))["ephemerals"] == []
    app.responder = lambda kind, payload: web.json_response({"text": "Commands: help"})
    await call(http, emu, "command", channel="C0APPROVALS", text="/hitl")
    texts = [e["text"] for e in (await state(http, emu))["ephemerals"]]
    assert texts[-1] == "Commands: help"
    assert "slash commands" in (await call(http, emu, "command", 400, channel="C0APPROVALS",
                                           text="hello"))["error"]


async def test_home_tab_and_click_in_a_view(
    emu: Emulator, app: FakeApp, client: AsyncWebClient, http: aiohttp.ClientSession
) -> None:
    out = await call(http, emu, "home")
    assert out["kind"] == "app_home_opened" and app.last()[1]["event"]["user"] == "U0ALICE"
    await client.views_publish(user_id="U0ALICE", view={"type": "home", "blocks": CARD})
    home = (await state(http, emu))["home"]
    assert home["type"] == "home" and home["blocks"][0]["block_id"] == "summary"
    assert (await state(http, emu, "U0BOB"))["home"] is None
    await call(http, emu, "click_view", view_id=home["id"], action_id="approve")
    assert app.last()[1]["container"] == {"type": "view", "view_id": home["id"]}


async def test_events_stream_snapshots_as_they_change(
    emu: Emulator, client: AsyncWebClient, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{emu.url}/_emulator/events?user=U0BOB") as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        first = await _next_event(r)
        assert first["me"]["id"] == "U0BOB" and channel(first, "approvals")["messages"] == []
        await client.chat_postMessage(channel="#approvals", text="news")
        second = await _next_event(r)
        assert [m["text"] for m in channel(second, "approvals")["messages"]] == ["news"]
        # stopping the emulator ends open streams at once
        await asyncio.wait_for(emu.stop(), 5)


async def _next_event(resp: aiohttp.ClientResponse) -> Any:
    async with asyncio.timeout(5):
        while True:
            line = (await resp.content.readline()).decode()
            if line.startswith("data: "):
                return json.loads(line[len("data: "):])

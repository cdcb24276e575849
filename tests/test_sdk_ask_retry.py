"""SDK `ask` after its pipeline is sent again by the client's retry.

The plain client retries a command (here: the whole pipeline) on a lost connection. When the
first send was executed (the XADD queued the request) and the connection drops before the
reply, the retry reads the reply stream's newest id again: if intake has decided meanwhile,
that id is past the decision's own, so `ask` must answer with the stored decision (the
pipeline reads it before its XADD) instead of waiting forever. A real TCP proxy drops the connection after Redis
executed the pipeline; no mock of Redis."""

from __future__ import annotations

import asyncio

import pytest
from hitl.connect import connect
from hitl.errors import DecisionTimeout

from bot.client import HitlClient
from bot.intake import Intake
from store.models import Status
from store.redis_store import Store
from tests import test_client
from tests.util import eventually

intake = test_client.intake  # the fixture: intake auto-routing `lookup`, shared


async def test_a_retried_ask_pipeline_still_finds_the_decision(store: Store, intake: Intake, redis_url: str) -> None:
    host, port = redis_url.split("//")[1].split("/")[0].split(":")
    dropped = asyncio.Event()
    results = store.keys.results("agent-retry")

    async def serve(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        ur, uw = await asyncio.open_connection(host, int(port))
        hold = False

        async def down() -> None:
            while data := await ur.read(65536):
                if hold:
                    continue  # the pipeline's replies never reach the client
                cw.write(data)
                await cw.drain()

        pump = asyncio.create_task(down())
        try:
            while data := await cr.read(65536):
                if b"XADD" in data and not dropped.is_set():
                    hold = True
                    uw.write(data)
                    await uw.drain()
                    # executed by Redis: wait until intake decided it, then lose the connection
                    await eventually(lambda: store.redis.xlen(results), what="decision published")
                    dropped.set()
                    break
                uw.write(data)
                await uw.drain()
        finally:
            pump.cancel()
            cw.close()
            uw.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    proxy = f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/0"
    plain = connect(proxy, socket_timeout=5, retries=3)
    blocking = connect(redis_url, socket_timeout=12, retry=False)
    client = HitlClient(plain, blocking, prefix="hitl", name="agent-retry")
    try:
        try:
            decision = await client.ask(agent="a", action="lookup", summary="Look up order 9", timeout=5)
        except DecisionTimeout:
            pytest.fail("the request was decided (auto_approved) but ask never saw the decision")
        assert dropped.is_set() and decision.status is Status.auto_approved
    finally:
        await client.close()
        server.close()

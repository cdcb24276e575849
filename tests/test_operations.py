"""Issue 10, point 10: calm operations. Redis away: one line per failed attempt, with the back-off,
and a line when it is back, never a traceback per pass; no false Bolt warning at start; the
CLI loads only what a subcommand needs and leaves quietly when its reader goes away."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from slack_sdk.web.async_client import AsyncWebClient

from bot.gateway import Gateway
from bot.policy import PolicyEngine
from bot.scheduler import Scheduler
from store.redis_store import Store
from tests.harness import TOKEN, start, stop
from tests.redis_server import RedisServer
from tests.util import eventually

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
async def own_redis() -> AsyncIterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()


def _lines(caplog: pytest.LogCaptureFixture, needle: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if needle in r.getMessage()]


async def test_redis_down_logs_one_line_per_attempt_and_one_when_back(
        own_redis: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    store = Store.from_url(own_redis.url, retry=Retry(NoBackoff(), 0), socket_connect_timeout=0.5)
    worker = Scheduler(store, Gateway(AsyncWebClient(token=TOKEN, base_url="http://127.0.0.1:9/api/")),
                       lambda: PolicyEngine.from_yaml("{}"))
    own_redis.kill()
    task = asyncio.create_task(worker.run())
    try:
        async def failures(n: int) -> bool:
            return len(_lines(caplog, "Redis unavailable")) >= n

        await eventually(lambda: failures(3), 20, "three failed attempts")
        failed = _lines(caplog, "Redis unavailable")
        assert all(r.exc_info is None and "\n" not in r.getMessage() for r in failed)
        assert [r.getMessage().split("next in ")[1] for r in failed[:3]] == ["0.5s", "1.0s", "2.0s"]
        assert not [r for r in caplog.records if r.exc_info and r.name.startswith("hitl")]
        own_redis.start()
        await eventually(lambda: _back(caplog), 20, "the line saying Redis is back")
    finally:
        worker.stop()
        await asyncio.wait_for(task, 10)
        await store.close()


async def _back(caplog: pytest.LogCaptureFixture) -> bool:
    return bool(_lines(caplog, "Redis reachable again"))


async def test_the_bot_starts_without_a_false_bolt_warning(
        redis_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)  # as in production: Bolt reads it too
    caplog.set_level(logging.WARNING)
    h = await start(redis_url)
    try:
        assert not _lines(caplog, "will be unused")
    finally:
        await stop(h)


def _python(code: str, redis_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "REDIS_URL": redis_url})


def test_schema_and_request_do_not_load_the_bot(redis_url: str) -> None:
    heavy = ("cel", "bot.policy", "bot.app", "slack_bolt", "slack_sdk", "aiohttp", "pydantic_settings", "yaml")
    for argv in (["schema"], ["request", "--agent", "a", "--action", "b", "--summary", "c"]):
        code = ("import sys, contextlib, io\nfrom bot.cli import main\n"
                f"with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
                f"    main({argv!r})\n"
                f"print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r} or m in {heavy!r}))")
        out = _python(code, redis_url)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "[]", (argv, out.stdout)


def test_schema_into_a_closed_pipe_exits_quietly() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "schema"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader (`head`) has gone before anything was written
    with proc.stderr:
        err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert err == "" and proc.returncode == 141

"""Background duties are supervised: one that fails is logged and started again, never left dead."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bot.worker import supervised


async def test_a_failing_duty_is_logged_and_started_again(caplog: pytest.LogCaptureFixture) -> None:
    runs: list[int] = []

    async def duty() -> None:
        runs.append(len(runs))
        if len(runs) < 3:
            raise RuntimeError(f"bad moment {len(runs)}")

    with caplog.at_level(logging.ERROR, logger="hitl.worker"):
        await asyncio.wait_for(supervised("feed", duty, first_s=0.01, max_s=0.02), 5)
    assert runs == [0, 1, 2]  # returned normally on its third run: supervision ends with it
    failures = [r for r in caplog.records if "feed: failed" in r.getMessage()]
    assert len(failures) == 2 and failures[0].exc_info and "bad moment 1" in str(failures[0].exc_info[1])


async def test_a_cancelled_duty_stops_at_once() -> None:
    started = asyncio.Event()

    async def duty() -> None:
        started.set()
        await asyncio.sleep(60)

    task = asyncio.create_task(supervised("watch", duty))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)


async def test_the_bot_supervises_its_background_duties(redis_url: str) -> None:
    """Each of a running bot's background duties runs under `supervised` (before, a duty that
    failed ended its task and nothing ran it again: the API's decision feed, the webhook
    worker, the watchers)."""
    from tests.harness import start, stop

    h = await start(redis_url)
    try:
        duties = [t for t in h.bot.tasks if t.get_name() in h.bot.background]
        assert {t.get_name() for t in duties} == set(h.bot.background) and "api-decisions" in h.bot.background
        assert all(t.get_coro().__qualname__ == "supervised" for t in duties)  # type: ignore[union-attr]
    finally:
        await stop(h)

"""Small test helpers with no product imports."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll `check` until it returns something truthy (tests only; the product never polls)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class _Runs(Protocol):
    running: bool

    async def run(self) -> None: ...
    def stop(self) -> None: ...
    async def close(self) -> None: ...


R = TypeVar("R", bound=_Runs)


@contextlib.asynccontextmanager
async def started(worker: R) -> AsyncIterator[R]:
    """`worker.run()` (intake, say) as a task, yielded once it is running; stopped, awaited and
    closed on the way out."""
    task = asyncio.create_task(worker.run())
    try:
        await eventually(lambda: asyncio.sleep(0, worker.running or task.done()), what="worker running")
        if task.done():
            task.result()  # it failed to start: say why
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 10)
        await worker.close()


def shown_request_ids(message: dict[str, Any]) -> set[str]:
    """Request ids a card shows: batch item lines, button values, the card's metadata."""
    import json

    ids: set[str] = set()
    payload = (message.get("metadata") or {}).get("event_payload") or {}
    if "request_id" in payload and "batch_id" not in payload:
        ids.add(str(payload["request_id"]))
    for block in message.get("blocks") or []:
        block_id = str(block.get("block_id", ""))
        if block_id.startswith("hitl.batch:"):
            ids.add(block_id.split(":", 2)[2])
        for el in block.get("elements", []) if block.get("type") == "actions" else []:
            try:
                value = json.loads(el.get("value") or "{}")
            except ValueError:
                continue
            if isinstance(value, dict) and "r" in value:
                ids.add(str(value["r"]))
    return ids

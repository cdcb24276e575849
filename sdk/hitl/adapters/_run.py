"""Run one async adapter step with whichever client the caller has (one implementation)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from hitl.client import AsyncClient
from hitl.sync import Client

T = TypeVar("T")


async def with_client(client: Client | AsyncClient | None,
                      step: Callable[[AsyncClient], Coroutine[Any, Any, T]]) -> T:
    """Await `step(async_client)` from any event loop (a sync `Client` runs it on its own loop)."""
    if isinstance(client, AsyncClient):
        return await step(client)
    if client is None:
        async with AsyncClient.from_url() as own:
            return await step(own)
    return await client.arun(step(client.aio))


def blocking(client: Client | None, step: Callable[[AsyncClient], Coroutine[Any, Any, T]]) -> T:
    """Run `step(async_client)` from sync code."""
    if client is None:
        with Client() as own:
            return own.run(step(own.aio))
    return client.run(step(client.aio))

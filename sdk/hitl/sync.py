"""`Client`: the async client for code that is not async, with no second copy of its logic.

It runs one `AsyncClient` on a private event loop in a daemon thread and hands each call over
(as redis-py's sync API mirrors its asyncio one). That works from plain scripts, from threads,
and from sync tools that a framework calls while its own event loop is running.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from hitl.client import CANCEL_S, AsyncClient, OnMessage
from hitl.protocol import AgentMessage, Decision, Request

T = TypeVar("T")

_ORPHANS: list[Any] = []
"""Loops and clients a forked child inherited from its parent: never closed there."""


def _off_loop(callback: Callable[[AgentMessage], Any] | None) -> OnMessage | None:
    """`callback` run on a worker thread, awaited by the wait: the client's loop stays free, so
    the callback may call this same client (on the loop's thread it would wait on itself)."""
    if callback is None:
        return None

    async def call(message: AgentMessage) -> None:
        result = await asyncio.to_thread(callback, message)
        if inspect.isawaitable(result):
            await result

    return call


class Client:
    """Blocking client: `ask`, `submit`, `wait`, `decision`, `ask_human`, like `AsyncClient`."""

    def __init__(self, url: str | None = None, *, prefix: str | None = None, name: str | None = None,
                 agent: str | None = None, retries: int = 8) -> None:
        self._lock = threading.Lock()
        self._start()

        async def make() -> AsyncClient:
            return AsyncClient.from_url(url, prefix=prefix, name=name, agent=agent, retries=retries)

        self._aio = self.run(make())
        self.agent = self._aio.agent
        self.reply_to = self._aio.reply_to
        self._retries = retries

    def _start(self) -> None:
        self._pid = os.getpid()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="hitl-client", daemon=True)
        self._thread.start()

    @property
    def aio(self) -> AsyncClient:
        """The `AsyncClient` this client runs (this process's own, also after a fork)."""
        if self._pid != os.getpid():
            self._forked()
        return self._aio

    def _forked(self) -> None:
        """In a process forked after this client was made, its loop's thread does not exist (a
        call would wait for ever) and its connections are the parent's: make this process's own
        loop and client (the same reply stream), once. The parent's are left alone: kept, never
        closed or collected from here."""
        with self._lock:
            if self._pid == os.getpid():
                return
            old = self._aio
            _ORPHANS.append((self._loop, self._thread, old))
            self._start()

            async def make() -> AsyncClient:
                return AsyncClient.from_url(old.url, prefix=old.keys.prefix, agent=old.agent, retries=self._retries,
                                            name=old.reply_to.removeprefix(old.keys.results("")))

            self._aio = self.run(make())

    @classmethod
    def from_url(cls, url: str | None = None, **kwargs: Any) -> Client:
        return cls(url, **kwargs)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine of this client's `AsyncClient` to completion, blocking."""
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    async def arun(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await a coroutine of this client from any other event loop."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    def build(self, **fields: Any) -> Request:
        return self.aio.build(**fields)

    def submit(self, request: Request | dict[str, Any]) -> str:
        return self.run(self.aio.submit(request))

    def request(self, **fields: Any) -> str:
        return self.run(self.aio.request(**fields))

    def decision(self, request_id: str) -> Decision | None:
        return self.run(self.aio.decision(request_id))

    def wait(self, request_id: str, timeout: float | None = None, *, reply_to: str | None = None,
             on_message: Callable[[AgentMessage], None] | None = None) -> Decision:
        return self.run(self.aio.wait(request_id, timeout, reply_to=reply_to, on_message=_off_loop(on_message)))

    def messages(self, request_id: str) -> list[AgentMessage]:
        return self.run(self.aio.messages(request_id))

    def cancel(self, request_id: str, reason: str | None = None, *, timeout: float | None = CANCEL_S) -> Decision:
        return self.run(self.aio.cancel(request_id, reason, timeout=timeout))

    def ask(self, *, timeout: float | None = None, on_message: Callable[[AgentMessage], None] | None = None,
            **fields: Any) -> Decision:
        return self.run(self.aio.ask(timeout=timeout, on_message=_off_loop(on_message), **fields))

    def ask_human(self, question: str, options: list[str] | None = None, *, timeout: float | None = None,
                  **fields: Any) -> str:
        return self.run(self.aio.ask_human(question, options, timeout=timeout, **fields))

    def close(self) -> None:
        if self._pid != os.getpid():  # a forked child that never used it: the parent's to close
            return
        if self._loop.is_closed():
            return
        self.run(self.aio.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

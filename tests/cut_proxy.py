"""A TCP proxy in front of a real redis-server that loses the reply of one command.

The first time the client sends bytes containing `match`, the proxy forwards them, waits until
Redis has answered (so the command did run), drops that answer and closes the connection: the
client sees a lost connection after its write landed, as a network cut or a failover would
leave it, and its retry sends the command again. Everything else passes through unchanged.
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class CutProxy:
    def __init__(self, redis_url: str, match: bytes) -> None:
        self.host, port = redis_url.split("//")[1].split("/")[0].split(":")
        self.port = int(port)
        self.match = match
        self.cut = asyncio.Event()
        """Set once a reply was lost (the command ran in Redis)."""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"redis://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/0"

    async def __aenter__(self) -> CutProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        ur, uw = await asyncio.open_connection(self.host, self.port)
        holding = False
        answered = asyncio.Event()

        async def down() -> None:
            while data := await ur.read(65536):
                if holding:
                    answered.set()  # Redis ran it: this answer never reaches the client
                    continue
                cw.write(data)
                await cw.drain()

        pump = asyncio.create_task(down())
        try:
            while data := await cr.read(65536):
                if self.match in data and not self.cut.is_set():
                    holding = True
                    uw.write(data)
                    await uw.drain()
                    await answered.wait()
                    self.cut.set()
                    break
                uw.write(data)
                await uw.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            pump.cancel()
            cw.close()
            uw.close()
            self._tasks.discard(task)

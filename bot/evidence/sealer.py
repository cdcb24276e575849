"""The sealer: one leader (a fenced lease in Redis) chains every audit entry, in stream order.

Appending to the audit stream stays one XADD on the hot path; the leader reads the stream
right behind it (a blocking read, so within about a second), computes
`hash = SHA-256(prev_hash || JCS(entry))` and stores each entry's (seq, hash) in one fenced
script. A replica that lost the lease cannot write: the script checks the fencing token and
that the head is where the leader left it. Signed checkpoints follow every
`checkpoint_s` seconds or `checkpoint_every` entries, timed by Redis's clock (shared by every
replica: one replica's fast clock must not hold back the others' checkpoints).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable

from bot.evidence.canonical import chain_hashes
from bot.evidence.signing import NO_KEY, Signer, signature_ok
from store.chain import ChainStore
from store.chain_models import GENESIS, ChainStatus, Checkpoint, Link
from store.failures import Refused
from store.models import utcnow

log = logging.getLogger("hitl.sealer")

BATCH = 2000
LEASE_MS = 5000
LINGER_S = 0.2
"""After a round that sealed entries (and caught up), wait this long before the next one:
under load the leader then seals many requests' entries per round (lease, reads, seals,
report) instead of one round per request. Sealing stays right behind the stream (within a
second, as documented)."""
READ = 50
"""Entries one read takes while the sealer keeps up. A round seals its entries READ at a time
with a PAUSE_S between reads instead of in one burst: every request that reached Redis or a CPU
during a burst queued behind it (on 2 cores, a burst of 1,200 entries every LINGER_S raised
the p99 of an auto-approved request from about 1.5 ms to 2.5 ms; in small steps the same work
costs the requests around it almost nothing)."""
PAUSE_S = 0.001
KEEP_UP_READS = 60
"""Reads a round makes at that pace (3,000 entries, about 3,700 auto-routed requests a second
at LINGER_S); a round that is still reading full reads after them is behind, and drains the
backlog in pipelined BATCHes at full speed."""
HASH_CHUNK = 25
"""Entries hashed between two turns of the event loop (about a tenth of a millisecond of work)."""


class Sealer:
    """Seals the audit stream while this replica holds the lease; `run()` until cancelled."""

    def __init__(self, chain: ChainStore, signer: Signer | None, *, owner: str | None = None,
                 checkpoint_s: float = 60.0, checkpoint_every: int = 10000, signing_off: str = NO_KEY,
                 maintain: Callable[[], Awaitable[None]] | None = None, maintain_s: float = 60.0) -> None:
        self.chain = chain
        self.signer = signer
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.checkpoint_ms = int(checkpoint_s * 1000)
        self.checkpoint_every = checkpoint_every
        self.signing_off = signing_off
        self.maintain = maintain
        """Archive and retention, run by the leader every `maintain_s` (None: off)."""
        self.maintain_ms = int(maintain_s * 1000)
        self.token = 0
        self._head: Link | None = None
        self._checkpoint: Checkpoint | None = None
        self._loaded = False
        self._reported = 0
        self._maintained = 0
        self._backlog = 0
        self._maintaining: asyncio.Future[None] | None = None
        self.caught_up = True
        """Whether the last round read everything there was (no backlog left)."""
        self.alarm = ""
        """What this leader found that only tampering explains (reported with its status)."""
        self._alarmed: tuple[Link | None, Link | None] | None = None

    async def lead(self) -> bool:
        """Take or renew the lease; on taking it, start from the chain as stored."""
        token = await self.chain.lease(self.owner, LEASE_MS)
        if token != self.token or not self._loaded:
            mine = self._head if token == self.token and token else None  # still the leader: where it left the head
            self._head = await self._load_head(token, mine)
            cp = await self.chain.last_checkpoint()
            # one this key cannot verify (forged, or another key's before a rotation) does not
            # count: the next checkpoint is due now, signed by this key
            self._checkpoint = cp if cp and (self.signer is None or signature_ok(self.signer.public, cp)) else None
            self._loaded = token != 0
        self.token = token
        return token != 0

    async def _load_head(self, token: int, mine: Link | None) -> Link | None:
        """The head to chain from. The head key and the newest seal are written by one fenced
        script, so they always agree (or every seal was trimmed), and while this replica holds
        the fence nobody else moves them: a disagreement, or a head moved from where this leader
        left it, means a write to Redis outside hitl. Then say so everywhere (an ERROR line, a
        `chain_tampered` audit entry, the status report) and go on from the newest seal."""
        found, last = await self.chain.head(), await self.chain.last_seal()
        torn = last is not None and last != found
        if not token or not (torn or (mine is not None and found != mine)):
            return found
        resume = last if last is not None else found
        detail = {"expected": _link(mine), "found": _link(found), "last_seal": _link(last), "resumed_from": _link(resume)}
        self.alarm = (f"the chain head moved under the sealing leader (its fencing token still valid): it was at "
                      f"{_where(mine)}, found at {_where(found)}, newest seal {_where(last)}; only a write to Redis "
                      f"outside hitl explains it: run `hitl audit verify`. Sealing goes on from {_where(resume)}")
        log.error("sealer: %s", self.alarm)
        if (found, last) != self._alarmed:
            self._alarmed = (found, last)
            await self.chain.alarm("chain_tampered", detail, utcnow().isoformat())
        if resume is not None and resume != found and not await self.chain.repair_head(
                token, found.id if found else "", resume):
            self.token, self._loaded = 0, False
            return found
        return resume

    async def seal_batch(self, block_ms: int | None = None, count: int = BATCH) -> int:
        """Seal the next entries (up to `count`) after the head; the number sealed."""
        head = self._head
        rows = await self.chain.read_after(head.id if head else "0-0", count, block_ms)
        return await self._seal(rows)

    async def drain(self, max_batches: int) -> int:
        """Seal a backlog, reading the next batch while the current one is hashed and stored."""
        total = 0
        head = self._head
        rows = await self.chain.read_after(head.id if head else "0-0", BATCH)
        for _ in range(max_batches):
            if not rows:
                break
            ahead = asyncio.ensure_future(self.chain.read_after(rows[-1][0], BATCH))
            try:
                n = await self._seal(rows)
            except BaseException:
                ahead.cancel()
                raise
            rows = await ahead
            if n == 0:
                break
            total += n
        self.caught_up = not rows
        return total

    async def _seal(self, rows: list[tuple[str, dict[str, str]]]) -> int:
        if not rows:
            self._backlog = 0
            return 0
        head = self._head
        seq, prev = (head.seq, head.hash) if head else (0, GENESIS)
        hashes: list[str] = []
        for i in range(0, len(rows), HASH_CHUNK):
            if i:  # let the event loop serve intake between chunks: a batch never holds it long
                await asyncio.sleep(0)
            hashes += chain_hashes(hashes[-1] if hashes else prev, seq + 1 + i, rows[i:i + HASH_CHUNK])
        res = await self.chain.seal(self.token, head.id if head else "", seq + 1, [i for i, _ in rows], hashes)
        if res == "moved":  # the fence held, so no replica moved it: the next lead() says what did
            self._loaded = False
            return 0
        if res != "ok":
            log.warning("sealer: stopped sealing (%s); another replica leads", res)
            self.token, self._loaded = 0, False
            return 0
        self._head = Link(seq + len(rows), hashes[-1], rows[-1][0])
        self._backlog = len(rows) if len(rows) == BATCH else 0
        return len(rows)

    async def checkpoint(self, now_ms: int | None = None, *, force: bool = False) -> Checkpoint | None:
        """Sign (seq, hash, time) of the head when due (or `force`d); None when not due or off.
        `now_ms` is Redis's clock (read when not given); a checkpoint from the future (a replica
        whose clock ran ahead signed it) makes the next one due."""
        head, last = self._head, self._checkpoint
        if self.signer is None or head is None or (last is not None and last.seq >= head.seq):
            return None
        now_ms = now_ms if now_ms is not None else await self.chain.now_ms()
        due = last is None or last.time > now_ms or now_ms - last.time >= self.checkpoint_ms or (
            head.seq - last.seq >= self.checkpoint_every)
        if not (due or force):
            return None
        cp = self.signer.sign(head.seq, head.hash, now_ms)
        if not await self.chain.add_checkpoint(self.token, cp):
            self.token, self._loaded = 0, False
            return None
        self._checkpoint = cp
        return cp

    async def report(self, now_ms: int) -> None:
        cp = self._checkpoint
        await self.chain.set_status(ChainStatus(
            sealed_seq=self._head.seq if self._head else 0, signing=self.signer is not None,
            reason="" if self.signer else self.signing_off,
            checkpoint_seq=cp.seq if cp else None, checkpoint_at=cp.time if cp else None,
            updated_at=now_ms, unsealed=self._backlog, alarm=self.alarm))
        self._reported = now_ms

    async def step(self, block_ms: int | None = None) -> int:
        """One round as leader: seal, checkpoint, report, maintain. -1 when not the leader."""
        if not await self.lead():
            return -1
        last = n = await self.seal_batch(block_ms, READ)
        for _ in range(KEEP_UP_READS):  # keeping up: a small read at a time, a pause between
            if last < READ:
                break
            await asyncio.sleep(PAUSE_S)
            last = await self.seal_batch(None, READ)
            n += last
        self.caught_up = last < READ
        if not self.caught_up:  # a backlog: catch up in a pipelined run (checkpoints and reports follow)
            n += await self.drain(max_batches=25)
        now = await self.chain.now_ms()
        await self.checkpoint(now)
        if now - self._reported >= 1000 or n:
            await self.report(now)
        if self.maintain is not None and now - self._maintained >= self.maintain_ms and (
                self._maintaining is None or self._maintaining.done()):
            self._maintained = now
            self._maintaining = asyncio.ensure_future(self._maintain(self.maintain))
        return n

    async def _maintain(self, maintain: Callable[[], Awaitable[None]]) -> None:
        """Archive and retention beside sealing (a long first archive must not stall sealing)."""
        try:
            await maintain()
        except Exception as e:  # a database that is down is logged and retried next time
            log.error("audit archive: %s", e)

    async def seal_all(self) -> int:
        """Seal everything appended so far (tests, benchmarks, the CLI); the number sealed."""
        total = 0
        if not await self.lead():
            return 0
        while (n := await self.drain(max_batches=1000)) > 0:
            total += n
        return total

    async def run(self) -> None:
        while True:
            try:
                n = await self.step(block_ms=1000)
                if n < 0:
                    await asyncio.sleep(LEASE_MS / 3000)
                elif n > 0 and self.caught_up:
                    await asyncio.sleep(LINGER_S)
            except asyncio.CancelledError:
                if self._maintaining is not None:
                    self._maintaining.cancel()
                await asyncio.shield(self.chain.release(self.owner))
                raise
            except Refused as e:  # a state of the server (read-only after a failover, out of memory): one line
                log.warning("sealer: Redis refused a command (%s: %s); retrying in 1s", type(e).__name__,
                            (str(e).splitlines() or [""])[0][:200])
                self.token, self._loaded = 0, False
                await asyncio.sleep(1.0)
            except Exception:
                log.exception("sealer: round failed; retrying")
                self.token, self._loaded = 0, False
                await asyncio.sleep(1.0)


def _link(link: Link | None) -> dict[str, object] | None:
    return None if link is None else {"seq": link.seq, "hash": link.hash, "id": link.id}


def _where(link: Link | None) -> str:
    return "no link" if link is None else f"seq {link.seq} (entry {link.id})"

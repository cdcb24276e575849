"""`hitl audit verify --archive`: the PostgreSQL archive re-hashed, and linked up to the live chain.

The live walk starts at `{prefix}:chain:base`, which only says where a trim left the chain: a
plain hash anyone with write access to Redis can set. With the archive the part before it is
checked too: every archived row is hashed again in `seq` order exactly as the sealer hashed it
(`fields` holds the canonical JSON that was hashed), each row must name the hash of the one
before, the base must be an archived link with the same hash (no entry missing between the
archive's last row and the first entry kept in Redis), the archive's newest row must be the live
chain's at that position when Redis still holds it, and the checkpoints of the archived part (the
archive's and Redis's) must name the archived hash at their `seq` and verify with the key given.
Findings go into the live walk's report, as its own do.
"""

from __future__ import annotations

import json

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bot.evidence.archive import ArchiveError, connect, migrate
from bot.evidence.canonical import entry_hash
from bot.evidence.signing import key_id, signature_ok
from bot.evidence.verify import Problem, Report
from store.chain import ChainStore
from store.chain_models import GENESIS, Checkpoint, Link


class _Walk:
    """The archived rows, one after another from genesis."""

    def __init__(self, report: Report, base: Link, watch: set[int]) -> None:
        self.r, self.base, self.watch = report, base, watch
        self.expected, self.prev = 1, GENESIS
        self.rows = 0
        self.trimmed = 0
        """Rows of the part trimmed from Redis (the rest Redis holds too: counted once)."""
        self.first: int | None = None
        self.last: Link | None = None
        self.at: dict[int, str] = {}
        """The archived hash at each watched seq (checkpoints) and at the base."""

    def problem(self, kind: str, seq: int | None, entry_id: str | None, message: str) -> None:
        self.r.problems.append(Problem(kind, seq, entry_id, message))

    def row(self, seq: int, entry_id: str, prev_hash: str, stored: str, text: str) -> None:
        if seq > self.expected:
            self.problem("gap", self.expected, entry_id, f"the archive has no seq {self.expected}..{seq - 1} "
                         f"before entry {entry_id} (seq {seq}): archived rows were deleted")
        elif seq == self.expected and prev_hash != self.prev:
            self.problem("modified", seq, entry_id, f"archived seq {seq} ({entry_id}) does not follow the hash of "
                         f"archived seq {seq - 1}: one of the two rows was altered")
        try:
            fields = json.loads(text)
            ok = isinstance(fields, dict) and entry_hash(prev_hash, seq, entry_id, fields) == stored
        except (ValueError, TypeError):
            ok = False
        if not ok:
            self.problem("modified", seq, entry_id, f"archived seq {seq} ({entry_id}) does not hash to its "
                         "stored hash: the row was altered")
        self.rows += 1
        self.trimmed += seq <= self.base.seq
        self.first = seq if self.first is None else self.first
        self.last = Link(seq, stored, entry_id)
        if seq in self.watch or seq == self.base.seq:
            self.at[seq] = stored
        self.expected, self.prev = seq + 1, stored


async def verify_archive(url: str, chain: ChainStore, r: Report, keys: list[Ed25519PublicKey]) -> None:
    """Check the archive at `url` and its link to the live chain, adding to `r` (the live
    walk's report); ArchiveError (one line) when the archive cannot be read."""
    conn = await connect(url)
    try:
        await migrate(conn, apply=False)
        await conn.commit()
        base = await chain.base()  # before the snapshot: an archive run (and trim) after it only adds rows
        await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
        async with conn.transaction():
            cps = [Checkpoint(int(s), h, int(t), sig, k) for s, h, t, sig, k in await (await conn.execute(
                "SELECT seq, hash, time_ms, sig, key_id FROM hitl_audit_checkpoints ORDER BY seq")).fetchall()]
            # Redis keeps every checkpoint; the live walk skips those of the trimmed part
            cps += [c for c in await chain.checkpoints() if c.seq <= base.seq]
            cps = list(dict.fromkeys(cps))  # the same checkpoint in both is checked once
            w = _Walk(r, base, {c.seq for c in cps})
            async with conn.cursor(name="hitl_verify") as cur:
                cur.itersize = 5000  # rows per round trip (an archive grows by about 525,000 a year)
                await cur.execute("SELECT seq, entry_id, prev_hash, hash, fields FROM hitl_audit ORDER BY seq")
                async for seq, entry_id, prev_hash, stored, text in cur:
                    w.row(int(seq), entry_id, prev_hash, stored, text)
    except psycopg.Error as e:
        raise ArchiveError(f"archive database error: {(str(e).strip().splitlines() or [type(e).__name__])[0]}"
                           ) from None
    finally:
        await conn.close()
    await _junction(chain, w, base)
    _checkpoints(w, sorted(cps, key=lambda c: c.seq), keys)
    _summary(r, w, base)


async def _junction(chain: ChainStore, w: _Walk, base: Link) -> None:
    """The base is the archived link at its seq; the archive's newest row is the live chain's."""
    last = w.last
    if base.seq and (last is None or last.seq < base.seq):
        held = last.seq if last else 0
        w.problem("gap", held + 1, None, f"Redis was trimmed through seq {base.seq} but the archive ends at seq "
                  f"{held}: entries seq {held + 1}..{base.seq} are in neither (deleted, and the base moved past them)")
    elif base.seq and w.at.get(base.seq) != base.hash:
        w.problem("base", base.seq, base.id, f"the chain's base (seq {base.seq}, entry {base.id}) is not the "
                  "archived link at that seq: the base was set by hand, or the archive is another chain's")
    if last is not None and last.seq > base.seq:
        live = (await chain.links([last.id]))[0]
        if live is not None and (live.seq, live.hash) != (last.seq, last.hash):
            w.problem("archive", last.seq, last.id, f"the archive and the live chain disagree at entry {last.id} "
                      f"(archived as seq {last.seq}, sealed as seq {live.seq}): one of them was rewritten")


def _checkpoints(w: _Walk, cps: list[Checkpoint], keys: list[Ed25519PublicKey]) -> None:
    ids = {key_id(k): k for k in keys}
    held = w.last.seq if w.last else 0
    valid, unknown = 0, set()
    for cp in cps:
        if keys:
            key = ids.get(cp.key)
            if key is None:
                unknown.add(cp.key)
                continue
            if not signature_ok(key, cp):
                w.problem("bad_signature", cp.seq, None, f"archived checkpoint at seq {cp.seq} has an invalid "
                          "signature: forged or altered")
                continue
        if cp.seq > held:
            w.problem("truncated", cp.seq, None, f"a checkpoint signed seq {cp.seq} but the archive ends at seq "
                      f"{held}: archived rows at its tail were deleted")
        elif cp.seq in w.at and w.at[cp.seq] != cp.hash:
            w.problem("rewritten", cp.seq, None, f"the archive at seq {cp.seq} no longer has the hash signed by "
                      "its checkpoint: archived rows up to it were rewritten")
        elif cp.seq in w.at:
            valid += keys != []
    w.r.notes.append(f"archive: {w.rows} entries" + (f" (seq {w.first}..{w.last.seq if w.last else 0})"
                     if w.first is not None else "") + f" re-hashed; {valid} checkpoint(s) of them verified"
                     + ("" if keys else " (no key: signatures not checked)")
                     + (f"; checkpoints by key(s) {', '.join(sorted(unknown))} not checked (not a key given)"
                        if unknown else ""))


def _summary(r: Report, w: _Walk, base: Link) -> None:
    """The archived part counts as part of the verified chain (what Redis also holds, once)."""
    trimmed = [i for i, n in enumerate(r.notes) if n.startswith(f"entries through seq {base.seq} were trimmed")]
    for i in reversed(trimmed):
        r.notes[i] = f"entries through seq {base.seq} were trimmed from Redis: checked in the archive"
    if w.first is not None:
        r.entries += w.trimmed
        r.first_seq = w.first if r.first_seq is None else min(r.first_seq, w.first)
        if r.last_seq is None and w.last is not None:
            r.last_seq = w.last.seq


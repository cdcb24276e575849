"""`hitl audit verify`: walk the live chain (or an export) and report the first broken link.

Every entry is checked against its seal (`seq`, `hash`): a deleted entry leaves a sealed
position without an entry (or a gap in `seq`), a modified or swapped entry no longer hashes
to its seal, an inserted entry sits inside the sealed range without a seal, and a tail
rewritten with fresh hashes contradicts the signed checkpoints. Nothing here raises on a
damaged chain: every finding is a `Problem` in the report.

The base (`:chain:base`, moved by a trim) is a plain hash anyone with write access can set, so
it is checked too: a real trim drops every entry and seal at or before it in the same script,
and never goes past what the archive holds. A walk that finds entries missing while a trim
moved the base under it is walked again from the new base (a trim is not damage).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bot.evidence.canonical import entry_hash
from bot.evidence.signing import key_id, signature_ok
from store.chain import ChainStore, id_order, next_id, parse_seal
from store.chain_models import Checkpoint, Link

SHOWN = 20
WALKS = 3
"""Walks of the live chain when a trim moves the base during one (then the findings may be
the trim's, not damage): a healthy chain verifies on the next walk."""
_FOREIGN = re.compile("[\udc80-\udcff]")


@dataclass(frozen=True)
class Problem:
    kind: str
    """deleted, gap, order, modified, inserted, truncated, rewritten, bad_signature,
    malformed (a damaged seal or checkpoint row), base (the base was moved without a trim),
    archive (the archive and the live chain disagree: `verify --archive`), head (the chain head
    is behind the newest seal, or names another hash: moved by a write outside hitl)"""
    seq: int | None
    entry_id: str | None
    message: str


@dataclass
class Report:
    entries: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    unsealed: int = 0
    signed_through: int | None = None
    checkpoints_ok: int = 0
    unsigned: str = ""
    """Why signatures were not checked, or why nothing is signed yet ('' when signed)."""
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 intact and signed, 1 broken, 3 intact but not (yet) covered by a signature."""
        if self.problems:
            return 1
        return 3 if self.unsigned else 0

    def lines(self) -> list[str]:
        span = f"seq {self.first_seq}..{self.last_seq}" if self.first_seq is not None else "no entries"
        out = []
        if self.problems:
            p = sorted(self.problems, key=lambda x: (x.seq is None, x.seq or 0))[0]
            where = f"seq {p.seq}" + (f" (entry {p.entry_id})" if p.entry_id else "") if p.seq is not None else (
                f"entry {p.entry_id}" if p.entry_id else "")
            out.append(f"BROKEN: first broken link at {where}: {p.message}" if where else f"BROKEN: {p.message}")
            out.append(f"{len(self.problems)} problem(s) in {self.entries} entries ({span}):")
            out += [f"  - [{x.kind}] {x.message}" for x in self.problems[:SHOWN]]
            if len(self.problems) > SHOWN:
                out.append(f"  ... and {len(self.problems) - SHOWN} more")
        else:
            out.append(f"chain intact: {self.entries} entries ({span})")
        if self.signed_through is not None:
            out.append(f"signed checkpoints: {self.checkpoints_ok} valid; entries through seq "
                       f"{self.signed_through} are covered by a signature")
        if self.unsigned:
            out.append(f"NOT SIGNED: {self.unsigned}")
        out += self.notes
        return out


class Walker:
    """Checks sealed positions one after another from a known link."""

    def __init__(self, report: Report, start: Link, watch: set[int]) -> None:
        self.r = report
        self.prev: str | None = start.hash
        """The hash of the position before the next one (None: unknown, after a damaged seal)."""
        self.expected = start.seq + 1
        self.watch = watch
        self.at: dict[int, str] = {start.seq: start.hash} if start.seq in watch else {}
        """The chain's hash at each watched seq (checkpoints), the start link's included."""
        self.foreign: list[str] = []
        """Entries holding bytes that are not UTF-8 (hitl never writes such an entry)."""
        self.first_after: dict[int, str] = {}
        """The entry id of each seq just after a watched one (or after the start): where an
        unsigned tail begins, whichever checkpoint turns out to be the last valid one."""

    def problem(self, kind: str, seq: int | None, entry_id: str | None, message: str) -> None:
        self.r.problems.append(Problem(kind, seq, entry_id, message))

    def unsealed(self, entry_id: str) -> None:
        self.problem("inserted", None, entry_id,
                     f"entry {entry_id} lies inside the sealed range but has no seal: inserted")

    def sealed(self, link: Link, fields: dict[str, str] | None) -> None:
        r, seq = self.r, link.seq
        linked = True
        if seq > self.expected:
            self.problem("gap", self.expected, link.id, f"seq {self.expected}..{seq - 1} missing before "
                         f"entry {link.id} (seq {seq}): entries deleted with their seals, or reordered")
            linked = False
        elif seq < self.expected:
            self.problem("order", seq, link.id, f"seq {seq} (entry {link.id}) comes after seq "
                         f"{self.expected - 1}: seals reordered or duplicated")
            linked = False
        if fields is None:
            self.problem("deleted", seq, link.id, f"entry seq {seq} ({link.id}) was deleted from the "
                         "audit stream")
        elif linked and self.prev is not None and entry_hash(self.prev, seq, link.id, fields) != link.hash:
            self.problem("modified", seq, link.id, f"entry seq {seq} ({link.id}) does not match its "
                         "seal: modified, or swapped with another entry")
        if fields is not None and not "".join(fields.values()).isascii() and any(
                _FOREIGN.search(v) for v in (*fields, *fields.values())):
            self.foreign.append(f"seq {seq} ({link.id})")
        r.entries += fields is not None
        r.first_seq = seq if r.first_seq is None else r.first_seq
        r.last_seq = seq
        if seq - 1 in self.watch or r.first_seq == seq:
            self.first_after[seq] = link.id
        self.prev, self.expected = link.hash, seq + 1
        if seq in self.watch:
            self.at[seq] = link.hash

    def damaged(self, entry_id: str, fields: dict[str, str] | None) -> None:
        """A seal row without a usable seq or hash: reported; the walk goes on after it."""
        seq = self.expected
        self.problem("malformed", seq, entry_id, f"the seal of entry {entry_id} is damaged (no usable seq "
                     "or hash): the entry cannot be checked")
        self.r.entries += fields is not None
        self.r.first_seq = seq if self.r.first_seq is None else self.r.first_seq
        self.r.last_seq = seq
        self.prev, self.expected = None, seq + 1

    def checkpoints(self, cps: list[Checkpoint], keys: list[Ed25519PublicKey], floor: int) -> None:
        """Check signatures and that the chain still has each signed hash (seq >= `floor`: the
        start link is compared with a checkpoint signed at its seq)."""
        r = self.r
        ids = {key_id(k): k for k in keys}
        last = r.last_seq or floor
        unknown: dict[str, list[int]] = {}
        for cp in cps:
            if cp.seq < floor or (cp.seq == floor and floor not in self.at):
                continue
            if keys:
                key = ids.get(cp.key)
                if key is None:  # not checked and counts for nothing (an old key after a rotation?)
                    unknown.setdefault(cp.key, []).append(cp.seq)
                    continue
                if not signature_ok(key, cp):
                    self.problem("bad_signature", cp.seq, None,
                                 f"checkpoint at seq {cp.seq} has an invalid signature: forged")
                    continue
            if cp.seq > last:
                self.problem("truncated", cp.seq, None, f"a checkpoint signed seq {cp.seq} but the chain "
                             f"ends at seq {last}: entries at the tail were deleted")
            elif cp.seq in self.at and self.at[cp.seq] != cp.hash:
                self.problem("rewritten", cp.seq, None, f"the chain at seq {cp.seq} no longer has the "
                             "hash signed by its checkpoint: entries up to it were rewritten")
            elif cp.seq in self.at and keys:
                r.checkpoints_ok += 1
                r.signed_through = max(r.signed_through or 0, cp.seq)
        for k, seqs in unknown.items():
            r.notes.append(f"{len(seqs)} checkpoint(s) (seq {seqs[0]}..{seqs[-1]}) are signed by key {k}, which is "
                           "not a key given: not checked, and they cover nothing (give the old public key too "
                           "with --pubkey after a rotation)")


@dataclass(frozen=True)
class Cadence:
    """How often the sealer signs (HITL_AUDIT_CHECKPOINT_S / _EVERY): a live chain's newest
    entries wait at most about this long for their checkpoint."""

    interval_ms: int
    every: int
    slack_ms: int = 30_000
    """Allowed for the sealer's lag and a leader's change before a checkpoint is overdue."""

    def fresh(self, age_ms: int, entries: int) -> bool:
        """An unsigned tail this old and this long is one the next checkpoint is still due to
        cover, not one whose checkpoints stopped or were deleted."""
        return age_ms <= self.interval_ms + self.slack_ms and entries <= 2 * self.every + 2000


async def verify_live(chain: ChainStore, keys: list[Ed25519PublicKey], no_key: str,
                      cadence: Cadence | None = None) -> Report:
    """Walk the chain kept in Redis from its base (genesis, or where the last trim left it).
    With the sealer's `cadence`, a tail no older than one checkpoint interval (plus a margin)
    is the one the next checkpoint covers: noted, not `unsigned` (exit 0)."""
    base = await chain.base()
    for _ in range(WALKS):
        r = await _walk(chain, base, keys, no_key, cadence)
        moved = await chain.base()
        if not r.problems or moved == base:
            return r
        base = moved  # a trim ran during the walk: what it dropped is not damage; walk again
    r.notes.append(f"trims moved the chain's base during each of {WALKS} walks: run verify again")
    return r


async def _walk(chain: ChainStore, base: Link, keys: list[Ed25519PublicKey], no_key: str,
                cadence: Cadence | None) -> Report:
    r = Report()
    head, rows = await chain.head(), await chain.checkpoint_rows()
    cps = [c for _, c in rows if c is not None]
    w = Walker(r, base, {c.seq for c in cps})
    for row_id, c in rows:
        if c is None:
            w.problem("malformed", None, None, f"checkpoint row {row_id} is damaged (a field is missing or "
                      "not a number): the sealer never writes one")
    await _check_base(chain, w, base)
    lo = next_id(base.id) if base.seq else "-"
    async for page in chain.pages(chain.k.chain, lo):
        hi = page[-1][0]
        audit = [row async for rows_ in chain.pages(chain.audit_key, lo, hi) for row in rows_]
        i = 0
        for cid, cf in page:
            ck = id_order(cid)
            while i < len(audit) and id_order(audit[i][0]) < ck:
                w.unsealed(audit[i][0])
                i += 1
            fields = None
            if i < len(audit) and audit[i][0] == cid:
                fields = audit[i][1]
                i += 1
            link = parse_seal(cid, cf)
            if link is None:
                w.damaged(cid, fields)
            else:
                w.sealed(link, fields)
        for aid, _ in audit[i:]:
            w.unsealed(aid)
        lo = next_id(hi)
    if head is not None and head.seq > (r.last_seq or base.seq):
        w.problem("truncated", (r.last_seq or base.seq) + 1, None, f"the chain head is seq {head.seq} but the "
                  f"seals end at seq {r.last_seq or base.seq}: entries at the tail were deleted")
    now = await chain.head()  # read after the walk: a head the sealer moved is at or past every seal read
    if now is not None and r.last_seq and now.seq < r.last_seq:
        w.problem("head", now.seq, now.id, f"the chain head says seq {now.seq} ({now.id}) but seals run to seq "
                  f"{r.last_seq}: the head was moved back by a write outside hitl (the sealer audits "
                  "`chain_tampered` and goes on from the newest seal)")
    elif now is not None and now.seq == r.last_seq and w.prev is not None and now.hash != w.prev:
        w.problem("head", now.seq, now.id, f"the chain head names seq {now.seq} with a hash other than its seal's: "
                  "it was set by a write outside hitl")
    after = next_id(head.id) if head else lo
    r.unsealed = sum([len(rows_) async for rows_ in chain.pages(chain.audit_key, after)])
    w.checkpoints(cps, keys, base.seq)
    if base.seq:
        r.notes.append(f"entries through seq {base.seq} were trimmed from Redis and are not checked here: "
                       "`hitl audit verify --archive URL` checks them in the archive")
    if r.unsealed:
        r.notes.append(f"{r.unsealed} newest entries are not sealed yet (the sealer runs in `hitl run`)")
    if w.foreign:
        r.notes.append(f"{len(w.foreign)} entries hold bytes that are not UTF-8 (hitl never writes one; they are "
                       f"sealed with those bytes escaped): {', '.join(w.foreign[:5])}")
    _coverage(r, cps, keys, no_key, base.seq)
    start = (r.signed_through or base.seq) + 1
    if r.unsigned and keys and r.last_seq and start in w.first_after:
        age_ms = await chain.now_ms() - id_order(w.first_after[start])[0]
        if cadence is not None and (cps or base.seq) and cadence.fresh(age_ms, r.last_seq - start + 1):
            r.notes.append(f"entries seq {start}..{r.last_seq} (the oldest {age_ms // 1000} s old) wait for the "
                           "next signed checkpoint, due within the checkpoint interval")
            r.unsigned = ""
        else:
            r.unsigned += f" (the oldest of them was written {age_ms // 1000} s ago by Redis's clock)"
    return r


async def _check_base(chain: ChainStore, w: Walker, base: Link) -> None:
    """A trim moves the base and drops everything at or before it in one script, and only
    trims what the archive holds: anything else means the base was set by hand."""
    if not base.seq:
        return
    moved = (f"the chain's base says entries through seq {base.seq} ({base.id}) were trimmed, but ")
    for key, what in ((chain.audit_key, "audit entry"), (chain.k.chain, "seal of entry")):
        early = await chain.xrange(key, "-", base.id, count=1)
        if early:
            link = (await chain.links([early[0][0]]))[0]
            w.problem("base", link.seq if link else None, early[0][0], f"{moved}the {what} {early[0][0]} is still "
                      "in Redis: the base was moved without a trim, and entries before it were not checked")
    mark = await chain.archived()
    if mark is None or mark.seq < base.seq:
        w.problem("base", base.seq, base.id, f"{moved}the archive mark is at "
                  f"{'no seq' if mark is None else f'seq {mark.seq}'}: a trim never drops what is not archived")


def _coverage(r: Report, cps: list[Checkpoint], keys: list[Ed25519PublicKey], no_key: str, floor: int) -> None:
    """Exit 3 unless a signed checkpoint covers every sealed entry (signing configured or not)."""
    if not keys:
        r.unsigned = f"checkpoints were not checked: {no_key}"
    elif r.entries and not cps:
        r.unsigned = "no signed checkpoint exists yet: the chain alone cannot show a rewritten tail"
    elif r.last_seq and (r.signed_through or floor) < r.last_seq:
        r.unsigned = (f"entries seq {(r.signed_through or floor) + 1}..{r.last_seq} are chained but not covered by "
                      "a signed checkpoint: the newest entries wait for the next one (every HITL_AUDIT_CHECKPOINT_S); "
                      "a tail older than that means checkpoints stopped or were deleted")



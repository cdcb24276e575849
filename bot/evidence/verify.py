"""`hitl audit verify`: walk the live chain (or an export) and report the first broken link.

Every entry is checked against its seal (`seq`, `hash`): a deleted entry leaves a sealed
position without an entry (or a gap in `seq`), a modified or swapped entry no longer hashes
to its seal, an inserted entry sits inside the sealed range without a seal, and a tail
rewritten with fresh hashes contradicts the signed checkpoints. Nothing here raises on a
damaged chain: every finding is a `Problem` in the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bot.evidence.canonical import entry_hash
from bot.evidence.signing import key_id, signature_ok
from store.chain import ChainStore, next_id, seal_link
from store.chain_models import Checkpoint, Link

SHOWN = 20


@dataclass(frozen=True)
class Problem:
    kind: str
    """deleted, gap, order, modified, inserted, truncated, rewritten, bad_signature, unknown_key"""
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
                f"entry {p.entry_id}")
            out.append(f"BROKEN: first broken link at {where}: {p.message}")
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
        self.prev, self.expected = start.hash, start.seq + 1
        self.watch = watch
        self.at: dict[int, str] = {}
        """The chain's hash at each watched seq (checkpoints)."""

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
        elif linked and entry_hash(self.prev, seq, link.id, fields) != link.hash:
            self.problem("modified", seq, link.id, f"entry seq {seq} ({link.id}) does not match its "
                         "seal: modified, or swapped with another entry")
        r.entries += fields is not None
        r.first_seq = seq if r.first_seq is None else r.first_seq
        r.last_seq = seq
        self.prev, self.expected = link.hash, seq + 1
        if seq in self.watch:
            self.at[seq] = link.hash

    def checkpoints(self, cps: list[Checkpoint], keys: list[Ed25519PublicKey], floor: int) -> None:
        """Check signatures and that the chain still has each signed hash (seq > `floor`)."""
        r = self.r
        ids = {key_id(k): k for k in keys}
        last = r.last_seq or floor
        for cp in cps:
            if cp.seq <= floor:
                continue
            if keys:
                key = ids.get(cp.key)
                if key is None:
                    self.problem("unknown_key", cp.seq, None, f"checkpoint at seq {cp.seq} is signed by key "
                                 f"{cp.key}, which is not a key given to verify")
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


async def verify_live(chain: ChainStore, keys: list[Ed25519PublicKey], no_key: str) -> Report:
    """Walk the chain kept in Redis from its base (genesis, or where the last trim left it)."""
    r = Report()
    base, head, cps = await chain.base(), await chain.head(), await chain.checkpoints()
    w = Walker(r, base, {c.seq for c in cps})
    lo = next_id(base.id) if base.seq else "-"
    async for page in chain.pages(chain.k.chain, lo):
        hi = page[-1][0]
        audit = [row async for rows in chain.pages(chain.audit_key, lo, hi) for row in rows]
        i = 0
        for cid, cf in page:
            ck = _key(cid)
            while i < len(audit) and _key(audit[i][0]) < ck:
                w.unsealed(audit[i][0])
                i += 1
            fields = None
            if i < len(audit) and audit[i][0] == cid:
                fields = audit[i][1]
                i += 1
            w.sealed(seal_link(cid, cf), fields)
        for aid, _ in audit[i:]:
            w.unsealed(aid)
        lo = next_id(hi)
    if head is not None and head.seq > (r.last_seq or base.seq):
        w.problem("truncated", (r.last_seq or base.seq) + 1, None, f"the chain head is seq {head.seq} but the "
                  f"seals end at seq {r.last_seq or base.seq}: entries at the tail were deleted")
    after = next_id(head.id) if head else lo
    r.unsealed = sum([len(rows) async for rows in chain.pages(chain.audit_key, after)])
    w.checkpoints(cps, keys, base.seq)
    if base.seq:
        r.notes.append(f"entries through seq {base.seq} were trimmed from Redis (see the archive)")
    if r.unsealed:
        r.notes.append(f"{r.unsealed} newest entries are not sealed yet (the sealer runs in `hitl run`)")
    _coverage(r, cps, keys, no_key)
    return r


def _coverage(r: Report, cps: list[Checkpoint], keys: list[Ed25519PublicKey], no_key: str) -> None:
    if not keys:
        r.unsigned = f"checkpoints were not checked: {no_key}"
    elif r.entries and not cps:
        r.unsigned = "no signed checkpoint exists yet: the chain alone cannot show a rewritten tail"
    elif r.signed_through is not None and r.last_seq and r.signed_through < r.last_seq:
        r.notes.append(f"entries seq {r.signed_through + 1}..{r.last_seq} are chained but not yet covered by a "
                       "signed checkpoint")


def _key(entry_id: str) -> tuple[int, int]:
    ms, _, n = entry_id.partition("-")
    return int(ms), int(n or 0)

"""Plain values of the audit chain (no Redis here, so `blocks` may render them)."""

from __future__ import annotations

from dataclasses import dataclass

GENESIS = "0" * 64
"""The `prev_hash` of the first entry of a chain."""


@dataclass(frozen=True)
class Link:
    """One sealed position of the chain: entry `id` is number `seq` and hashes to `hash`."""

    seq: int
    hash: str
    id: str


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement: the chain had `hash` at `seq` at `time` (epoch ms)."""

    seq: int
    hash: str
    time: int
    sig: str
    """Ed25519 signature (base64) of the canonical JSON of {seq, hash, time}."""
    key: str
    """Key id: the first 16 hex digits of SHA-256 of the raw public key."""


@dataclass(frozen=True)
class ChainStatus:
    """What the sealing leader last reported: shown by `/hitl stats` and the App Home."""

    sealed_seq: int
    signing: bool
    reason: str
    """Why checkpoints are off (empty while signing)."""
    checkpoint_seq: int | None
    checkpoint_at: int | None
    """Epoch ms of the last signed checkpoint."""
    updated_at: int
    """Epoch ms of the report; a stale report means no sealer is running."""
    unsealed: int = 0
    alarm: str = ""
    """What the leader found that only tampering explains (its chain head moved under it); empty when nothing."""

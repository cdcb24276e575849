"""How `bot.app` starts the evidence features: redaction from the policy, the sealer."""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any

from bot.config import ConfigError, Settings
from bot.evidence.config import EvidenceSettings, load_evidence_settings
from bot.evidence.redaction import PolicyRedactor
from bot.evidence.sealer import Sealer
from bot.evidence.signing import NO_KEY, Signer, SigningKeyError
from store.redis_store import Store

log = logging.getLogger("hitl.sealer")


def redactor(policy: Any) -> PolicyRedactor:
    """Redaction by the policy in force (`policy()` is the holder's current engine)."""
    def current() -> tuple[tuple[str, ...], tuple[str, ...]]:
        r = policy().policy.redact
        return tuple(r.params), tuple(r.patterns)
    return PolicyRedactor(current)


def signer(ev: EvidenceSettings | None = None) -> Signer | None:
    """The checkpoint signer configured (None: no key); ConfigError on a bad key."""
    try:
        return (ev or load_evidence_settings()).signer()
    except SigningKeyError as e:
        raise ConfigError(f"configuration error:\n  {e}") from None


def sealer(settings: Settings, store: Store, ev: EvidenceSettings | None = None) -> Sealer:
    """The sealer of this replica (it seals only while it holds the lease); ConfigError on a bad key."""
    ev = ev or load_evidence_settings()
    key = signer(ev)
    if key is None:
        log.warning("audit checkpoints are OFF: %s; the audit chain is kept but not signed", NO_KEY)
    chain = store.chain
    maintain = None
    if ev.archive_url:
        from bot.evidence.archive import maintain_archive

        url, days = ev.archive_url, ev.retention_days
        keys = [key.public] if key is not None else []

        async def maintain_fn() -> None:
            await maintain_archive(chain, url, days, keys)

        maintain = maintain_fn
    owner = f"{settings.consumer}:{os.getpid()}:{uuid.uuid4().hex[:8]}"  # unique even if consumers clash
    return Sealer(chain, key, owner=owner, checkpoint_s=ev.checkpoint_s,
                  checkpoint_every=ev.checkpoint_every, maintain=maintain, maintain_s=ev.archive_s)

"""The running bot seals its own audit trail, and `/hitl stats` and the App Home say whether
checkpoints are signed (never a silent unsigned ok)."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from blocks.stats import audit_line
from bot.evidence.signing import NO_KEY, Signer
from bot.evidence.verify import verify_live
from store.chain import ChainStore
from store.chain_models import ChainStatus
from tests.harness import Harness, start, stop
from tests.test_commands import hitl, words
from tests.test_home import home_of
from tests.util import eventually

NOW = 1_800_000_000_000


@pytest.mark.parametrize(("status", "expected"), [
    (None, "no sealer has reported"),
    (ChainStatus(5, True, "", 5, NOW - 1000, NOW - 31_000), "no sealer has reported"),
    (ChainStatus(5, False, NO_KEY, None, None, NOW), "checkpoints are OFF: no signing key (set HITL_AUDIT_KEY_FILE"),
    (ChainStatus(5, True, "", None, None, NOW), "no signed checkpoint yet"),
    (ChainStatus(12345, True, "", 12000, NOW - 40_000, NOW), "sealed through #12,345; last signed checkpoint #12,000, 40s ago"),
])
def test_audit_line(status: ChainStatus | None, expected: str) -> None:
    assert expected in audit_line(status, NOW)


async def sealed_everything(h: Harness) -> int:
    chain = ChainStore(h.store.redis, h.store.keys.prefix)

    async def done() -> int | None:
        head = await chain.head()
        n = await h.store.redis.xlen(h.store.keys.audit)
        status = await chain.status()
        return n if head and head.seq == n and status and status.sealed_seq == n else None

    return int(await eventually(done, what="the sealer caught up"))


async def test_without_a_key_stats_and_home_say_checkpoints_are_off(redis_url: str) -> None:
    h = await start(redis_url)
    try:
        await h.card(await h.push(id="a1", summary="Refund $40 to Ana"))
        await sealed_everything(h)
        assert "checkpoints are OFF" in words(await hitl(h, "stats"))
        assert "checkpoints are OFF" in await home_of(h, "U0ALICE")
    finally:
        await stop(h)


@pytest.mark.cluster_too
async def test_with_a_key_the_bot_signs_and_verify_passes(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    signer = Signer(Ed25519PrivateKey.generate())
    monkeypatch.setenv("HITL_AUDIT_KEY", base64.b64encode(signer.private.private_bytes_raw()).decode())
    monkeypatch.setenv("HITL_AUDIT_CHECKPOINT_EVERY", "1")
    h = await start(redis_url)
    try:
        await h.card(await h.push(id="a1", summary="Refund $40 to Ana"))
        n = await sealed_everything(h)
        chain = ChainStore(h.store.redis, h.store.keys.prefix)

        async def signed() -> bool:
            cp = await chain.last_checkpoint()
            return cp is not None and cp.seq == n

        await eventually(signed, what="a checkpoint of the head")
        assert "last signed checkpoint" in words(await hitl(h, "stats"))
        report = await verify_live(chain, [signer.public], NO_KEY)
        assert report.problems == [] and report.signed_through is not None
    finally:
        await stop(h)

"""`hitl run` that stops dead at a chosen point, so a test can SIGKILL it exactly there.

HITL_TEST_PAUSE_AT=before_accept: the entry has been read but not acknowledged.
HITL_TEST_PAUSE_AT=after_post:    the card (single or batch) is in Slack but its ts is not stored yet.
HITL_TEST_PAUSE_AT=before_trust_count: a person's override, edit or rejection is stored, its trust
                                  outcome not counted yet.
HITL_TEST_MARK is a file written when the point is reached.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from store.redis_store import Store


async def _hang(*_: Any, **__: Any) -> Any:
    await asyncio.to_thread(Path(os.environ["HITL_TEST_MARK"]).write_text, "reached")
    await asyncio.sleep(3600)


def main() -> int:
    point = os.environ["HITL_TEST_PAUSE_AT"]
    if point == "before_accept":
        Store.accept_many = _hang  # type: ignore[method-assign]
    elif point == "after_post":
        Store.mark_posted = _hang  # type: ignore[method-assign]
        Store.batch_shown = _hang  # type: ignore[method-assign]
    elif point == "before_trust_count":
        from store.trust import TrustStore
        original = TrustStore.outcome

        async def outcome(self: Any, request: Any, kind: str, *a: Any, **kw: Any) -> Any:
            if kind in ("override", "rejected", "edited"):
                await _hang()
            return await original(self, request, kind, *a, **kw)

        TrustStore.outcome = outcome  # type: ignore[method-assign]
    else:
        raise SystemExit(f"unknown pause point {point}")
    from bot.cli import main as cli

    return cli(["run"])


if __name__ == "__main__":
    sys.exit(main())

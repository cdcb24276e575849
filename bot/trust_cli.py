"""`hitl calibration export` and `hitl trust export`: the trust state as JSON lines on stdout."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

DRIFT = 0.15
MIN_BAND = 10


def add_parsers(sub: Any) -> None:
    """The `calibration` and `trust` subcommands of `hitl`."""
    cal = sub.add_parser("calibration", help="agent confidence against what people decided")
    csub = cal.add_subparsers(dest="calibration_command", required=True, metavar="SUBCOMMAND")
    csub.add_parser("export", help="one JSON line per agent, action and confidence band")
    trust = sub.add_parser("trust", help="autonomy per agent and action")
    tsub = trust.add_subparsers(dest="trust_command", required=True, metavar="SUBCOMMAND")
    tsub.add_parser("export", help="one JSON line per agent and action: state, counts, last change")


def calibration_rows(counts: dict[tuple[str, str], tuple[int, int]]) -> list[dict[str, Any]]:
    """The reliability table as records; `drift` when people agree much more or less often
    than the band's confidence says (judged from MIN_BAND decisions)."""
    out = []
    from store.trust import split_member

    for (m, b), (n, agree) in sorted(counts.items()):
        agent, action = split_member(m)
        low = float(b)
        rate = agree / n if n else None
        drift = None if rate is None or n < MIN_BAND else (rate < low - DRIFT or rate > low + 0.1 + DRIFT)
        out.append({"agent": agent, "action": action, "band": [low, round(low + 0.1, 1)], "decisions": n,
                    "approved_as_proposed": agree, "rate": rate, "drift": drift})
    return out


async def export(args: argparse.Namespace) -> int:
    from bot.config import load_settings  # heavy: only when the command runs
    from store.redis_store import Store

    settings = load_settings()
    store = Store.from_url(settings.redis_url, settings.prefix)
    try:
        if args.command == "calibration":
            rows = calibration_rows(await store.trust.calibration())
        else:
            rows = [{"agent": s.agent, "action": s.action, "state": s.state, "pinned": s.pinned,
                     "clean": s.clean, "approvals": s.approvals, "disagreements": s.disagreements,
                     "overrides": s.overrides, "override_rate": s.override_rate,
                     "changed_at": s.changed_at, "changed_by": s.changed_by, "why": s.why}
                    for s in await store.trust.states()]
    finally:
        await store.close()
    for row in rows:
        sys.stdout.write(json.dumps(row) + "\n")
    return 0

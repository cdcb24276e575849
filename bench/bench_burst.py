"""A burst of 1,000 requests under Slack's one-message-per-second-per-channel limit.

`hitl run` runs in its own process against the emulator with Slack's rate limits on (a
burst of 3 per channel, then one per second; 429 with Retry-After beyond). Prints, for
batching on (the default policy) and off (one card per request): seconds until every request
is visible to reviewers on some card, 429s received, cards posted, requests lost, and the
`conversations.history` calls made (lost-post checks).

`--strict`: every request goes to ONE channel, batching on, first against the emulator in
strict mode (exactly one post per channel per rolling second, no burst, measured when the
request arrives), then against its usual limits in the same run. The floor printed beside
is the strict limit's own minimum: the cards posted in that channel, one a second.

    .venv/bin/python -m bench.bench_burst [--n 1000] [--cap 90] [--strict]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bot.client import HitlClient
from emulator import Emulator
from store.models import Request
from tests.redis_server import RedisServer, free_port
from tests.util import shown_request_ids

ROOT = Path(__file__).resolve().parent.parent
SECRET, TOKEN = "bench-secret", "xoxb-bench"
POLICY = """
tiers:
  low: {{mode: auto}}
  medium: {{mode: approve}}
  high: {{mode: approve, channel: "#approvals-high"}}
triggers:
  first_use: {{enabled: false}}
batching: {{enabled: {batching}, window: 60s}}
"""

# Eight streams an agent fleet might produce at once, half of them high-value (another channel).
STREAMS = [("crm-agent", "update_tag", 0), ("crm-agent", "merge_contact", 0), ("billing-agent", "refund", 0),
           ("mail-agent", "send_email", 0), ("billing-agent", "refund", 900), ("ops-agent", "delete_record", 900),
           ("finance-agent", "pay_invoice", 900), ("billing-agent", "credit", 900)]


def requests(n: int) -> list[Request]:
    out = []
    for i in range(n):
        agent, action, amount = STREAMS[i % len(STREAMS)]
        risk = {"amount": amount + i % 50, "currency": "USD"} if amount else {}
        out.append(Request.model_validate({
            "id": f"burst-{i}", "agent": agent, "action": action, "summary": f"{action} #{i} for {agent}",
            "params": {"n": i}, "risk": risk, "reply_to": "hitl:results:bench"}))
    return out


async def run(n: int, batching: bool, cap: float, *, strict: bool = False,
              one_channel: bool = False) -> dict[str, float | int]:
    redis = RedisServer()
    redis.start()
    port = free_port()
    emu = Emulator(signing_secret=SECRET, request_url=f"http://127.0.0.1:{port}/slack/events", bot_token=TOKEN,
                   rate_limits=True, strict_limits=strict)
    await emu.start()
    policy = Path(redis.dir) / "policy.yml"
    text = POLICY.format(batching="true" if batching else "false")
    if one_channel:  # high-value requests stay in #approvals too
        text = text.replace('\n  high: {mode: approve, channel: "#approvals-high"}\n', "\n  high: {mode: approve}\n")
        assert "#approvals-high" not in text
    policy.write_text(text)
    env = {**os.environ, "SLACK_BOT_TOKEN": TOKEN, "SLACK_SIGNING_SECRET": SECRET, "SLACK_API_URL": emu.api_url,
           "REDIS_URL": redis.url, "HITL_PORT": str(port), "HITL_HOST": "127.0.0.1", "HITL_POLICY": str(policy),
           "HITL_LOG_LEVEL": "ERROR", "PYTHONPATH": str(ROOT)}
    bot = subprocess.Popen([sys.executable, "-m", "bot.cli", "run"], env=env, cwd=ROOT)
    client = HitlClient.from_url(redis.url, name="bench")
    try:
        await asyncio.sleep(1.5)  # let the bot start
        batch = requests(n)
        ids = {r.id for r in batch if r.id}
        t0, t0_wall = time.monotonic(), time.time()
        async with client.redis.pipeline(transaction=False) as p:
            for r in batch:
                p.xadd(client.keys.requests, {"request": r.model_dump_json(exclude_none=True)})
            await p.execute()
        visible: set[str] = set()
        elapsed = cap
        while time.monotonic() - t0 < cap:
            msgs = emu.messages("#approvals") + emu.messages("#approvals-high")
            visible = set().union(*(shown_request_ids(m) for m in msgs)) if msgs else set()
            if ids <= visible:
                elapsed = time.monotonic() - t0
                break
            await asyncio.sleep(0.2)
        posts = [c for c in emu.calls_to("chat.postMessage") if c.ok]
        updates = emu.calls_to("chat.update")
        channels = {str(c.response.get("channel")) for c in posts}
        gaps = [b - a for ch in channels
                for a, b in itertools.pairwise(sorted(c.received or c.at for c in posts if c.response.get("channel") == ch))]
        stored = sum([await client.redis.exists(f"hitl:req:{rid}") for rid in ids])
        dead = await client.redis.xlen("hitl:requests:dead")
        digest_posts = [c for c in posts if "Approval backlog" in json.dumps(c.args.get("blocks"))]
        counted, waiting = _digest_counts(emu, n, digest_posts)
        return {"seconds": round(elapsed, 1), "visible": len(ids & visible), "stored": stored,
                "lost": n - stored - dead, "rate_limited_429": emu.rate_limited, "cards_posted": len(posts),
                "digest_cards": len(digest_posts), "timed_out": int(not ids <= visible),
                "digest_counted": counted, "waiting_at_digest": waiting,
                "first_post_s": round(min(c.received or c.at for c in posts) - t0_wall, 2) if posts else 0.0,
                "history_calls": len(emu.calls_to("conversations.history")),
                "updates": sum(1 for c in updates if c.ok), "updates_429": sum(1 for c in updates if c.status == 429),
                "min_gap_s": round(min(gaps), 3) if gaps else 0.0,
                "posts_span_s": round(max(c.at for c in posts) - t0_wall, 1) if posts else 0.0}
    finally:
        await client.close()
        bot.terminate()
        bot.wait(20)
        await emu.stop()
        redis.stop()


def _digest_counts(emu: Emulator, n: int, digest_posts: list[Any]) -> tuple[int, int]:
    """The count the first digest showed, and how many requests were then on no card (posted
    or updated before it): the digest should count every one of them (issue 13, point 6)."""
    if not digest_posts:
        return 0, 0
    first = digest_posts[0]
    found = re.search(r"(\d+) requests queued", str(first.args.get("text", "")))
    shown: set[str] = set()
    for c in emu.calls:
        if c.ok and c.method in ("chat.postMessage", "chat.update") and c.at <= first.at:
            shown |= shown_request_ids({"blocks": c.args.get("blocks"), "metadata": c.args.get("metadata")})
    return (int(found.group(1)) if found else -1), n - len(shown)


def report(label: str, r: dict[str, float | int], n: int, cap: float, *, floor: bool = False) -> None:
    if r["timed_out"]:
        rate = max(float(r["visible"]), 1.0) / cap
        extra = f"  (only {r['visible']} visible after {cap:.0f} s; at that pace all {n} need ~{n / rate:.0f} s)"
    else:
        extra = ""
    if floor:  # one post per second in one channel: the cards cannot all be up sooner
        span = max(0, int(r["cards_posted"]) - 1)
        extra += (f"\n{'':<34} floor: {r['cards_posted']} cards at 1/s = {span} s after the first post "
                  f"(at {r['first_post_s']} s): {float(r['first_post_s']) + span:.1f} s; closest posts "
                  f"{r['min_gap_s']} s apart; first digest counted {r['digest_counted']} waiting, "
                  f"{r['waiting_at_digest']} were on no card")
    print(f"{label:<34} all {r['visible']}/{n} visible in {r['seconds']:>5} s · 429s {r['rate_limited_429']} · "
          f"cards posted {r['cards_posted']} (digests {r['digest_cards']}) · updates {r['updates']} "
          f"(429s {r['updates_429']}) · history calls {r['history_calls']} · stored {r['stored']} · "
          f"lost {r['lost']}{extra}", flush=True)


async def main(n: int, cap: float, strict: bool) -> None:
    if strict:
        report("strict Slack, one channel, batched", await run(n, True, cap, strict=True, one_channel=True),
               n, cap, floor=True)
        report("usual emulator, one channel, batched", await run(n, True, cap, one_channel=True), n, cap,
               floor=True)
        return
    for batching in (True, False):
        r = await run(n, batching, cap)
        report("batched (default policy)" if batching else "one card per request", r, n, cap)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--cap", type=float, default=90.0)
    parser.add_argument("--strict", action="store_true",
                        help="one channel, batching on, under the strict emulator and beside it the usual one")
    args = parser.parse_args()
    asyncio.run(main(args.n, args.cap, args.strict))

"""A burst of 300 actions that ran on their own (mode `audit`, every one sampled for review)
under Slack's one-message-per-second-per-channel limit.

`hitl run` in its own process against the emulator with Slack's rate limits on. Prints, with
review batches (the default: actions of one agent and kind share a review card) and, as the
floor measured in the same run, one review card per action (batching off): seconds until
every action is visible to reviewers on some card, 429s, cards posted, requests lost.

    .venv/bin/python -m bench.bench_review_burst [--n 300] [--cap 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bot.client import HitlClient
from emulator import Emulator
from store.models import Request
from tests.redis_server import RedisServer, free_port
from tests.util import shown_request_ids

ROOT = Path(__file__).resolve().parent.parent
SECRET, TOKEN = "bench-secret", "xoxb-bench"
POLICY = """
tiers:
  low: {{mode: audit, sample: 1.0}}
  medium: {{mode: approve}}
  high: {{mode: approve}}
triggers:
  first_use: {{enabled: false}}
batching: {{enabled: {batching}, window: 60s}}
"""
# four agents acting in the 0.5-0.8 band: the guides' "act, then review" queue
STREAMS = [("crm-agent", "update_tag"), ("crm-agent", "merge_contact"), ("mail-agent", "send_email"),
           ("support-agent", "close_ticket")]


def requests(n: int) -> list[Request]:
    return [Request.model_validate({
        "id": f"audit-{i}", "agent": STREAMS[i % 4][0], "action": STREAMS[i % 4][1],
        "summary": f"{STREAMS[i % 4][1]} #{i}", "params": {"n": i}, "confidence": 0.5 + (i % 30) / 100})
        for i in range(n)]


async def run(n: int, batching: bool, cap: float) -> dict[str, float | int]:
    redis = RedisServer()
    redis.start()
    port = free_port()
    emu = Emulator(signing_secret=SECRET, request_url=f"http://127.0.0.1:{port}/slack/events", bot_token=TOKEN,
                   rate_limits=True)
    await emu.start()
    policy = Path(redis.dir) / "policy.yml"
    policy.write_text(POLICY.format(batching="true" if batching else "false"))
    env = {**os.environ, "SLACK_BOT_TOKEN": TOKEN, "SLACK_SIGNING_SECRET": SECRET, "SLACK_API_URL": emu.api_url,
           "REDIS_URL": redis.url, "HITL_PORT": str(port), "HITL_HOST": "127.0.0.1", "HITL_POLICY": str(policy),
           "HITL_LOG_LEVEL": "ERROR", "PYTHONPATH": str(ROOT)}
    bot = subprocess.Popen([sys.executable, "-m", "bot.cli", "run"], env=env, cwd=ROOT)
    client = HitlClient.from_url(redis.url, name="bench")
    try:
        await asyncio.sleep(1.5)  # let the bot start
        batch = requests(n)
        ids = {r.id for r in batch if r.id}
        t0 = time.monotonic()
        async with client.redis.pipeline(transaction=False) as p:
            for r in batch:
                p.xadd(client.keys.requests, {"request": r.model_dump_json(exclude_none=True)})
            await p.execute()
        visible: set[str] = set()
        elapsed = cap
        while time.monotonic() - t0 < cap:
            msgs = emu.messages("#approvals")
            visible = set().union(*(shown_request_ids(m) for m in msgs)) if msgs else set()
            if ids <= visible:
                elapsed = time.monotonic() - t0
                break
            await asyncio.sleep(0.2)
        posts = [c for c in emu.calls_to("chat.postMessage") if c.ok]
        stored = sum([await client.redis.exists(f"hitl:req:{rid}") for rid in ids])
        review_cards = sum(1 for m in emu.messages("#approvals") if "ran on their own" in json.dumps(m.get("blocks")))
        return {"seconds": round(elapsed, 1), "visible": len(ids & visible), "lost": n - stored,
                "rate_limited_429": emu.rate_limited, "cards_posted": len(posts), "review_cards": review_cards,
                "timed_out": int(not ids <= visible)}
    finally:
        await client.close()
        bot.terminate()
        bot.wait(20)
        await emu.stop()
        redis.stop()


async def main(n: int, cap: float) -> None:
    for batching in (True, False):
        r = await run(n, batching, cap)
        label = "review batches" if batching else "one review card each"
        extra = (f"  (only {r['visible']} visible after {cap:.0f} s; all {n} need ~{n / max(r['visible'], 1) * cap:.0f} s)"
                 if r["timed_out"] else "")
        print(f"{label:<22} all {r['visible']}/{n} visible in {r['seconds']:>5} s · 429s {r['rate_limited_429']} · "
              f"cards posted {r['cards_posted']} (review batch cards {r['review_cards']}) · lost {r['lost']}{extra}",
              flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--cap", type=float, default=60.0)
    args = parser.parse_args()
    asyncio.run(main(args.n, args.cap))

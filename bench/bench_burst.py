"""A burst of 1,000 requests under Slack's one-message-per-second-per-channel limit.

`hitl run` runs in its own process against the emulator with Slack's rate limits on (a
burst of 3 per channel, then one per second; 429 with Retry-After beyond). Prints, for
batching on (the default policy) and off (one card per request): seconds until every request
is visible to reviewers on some card, 429s received, cards posted, requests lost.

    .venv/bin/python -m bench.bench_burst [--n 1000] [--cap 90]
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
            msgs = emu.messages("#approvals") + emu.messages("#approvals-high")
            visible = set().union(*(shown_request_ids(m) for m in msgs)) if msgs else set()
            if ids <= visible:
                elapsed = time.monotonic() - t0
                break
            await asyncio.sleep(0.2)
        posts = [c for c in emu.calls_to("chat.postMessage") if c.ok]
        stored = sum([await client.redis.exists(f"hitl:req:{rid}") for rid in ids])
        dead = await client.redis.xlen("hitl:requests:dead")
        msgs = emu.messages("#approvals") + emu.messages("#approvals-high")
        digests = sum(1 for m in msgs if "Approval backlog" in json.dumps(m.get("blocks")))
        return {"seconds": round(elapsed, 1), "visible": len(ids & visible), "stored": stored,
                "lost": n - stored - dead, "rate_limited_429": emu.rate_limited, "cards_posted": len(posts),
                "digest_cards": digests, "timed_out": int(not ids <= visible)}
    finally:
        await client.close()
        bot.terminate()
        bot.wait(20)
        await emu.stop()
        redis.stop()


async def main(n: int, cap: float) -> None:
    for batching in (True, False):
        r = await run(n, batching, cap)
        label = "batched (default policy)" if batching else "one card per request"
        if r["timed_out"]:
            rate = max(r["visible"], 1) / cap
            extra = f"  (only {r['visible']} visible after {cap:.0f} s; at that pace all {n} need ~{n / rate:.0f} s)"
        else:
            extra = ""
        print(f"{label:<26} all {r['visible']}/{n} visible in {r['seconds']:>5} s · 429s {r['rate_limited_429']} · "
              f"cards posted {r['cards_posted']} (digests {r['digest_cards']}) · stored {r['stored']} · "
              f"lost {r['lost']}{extra}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--cap", type=float, default=90.0)
    args = parser.parse_args()
    asyncio.run(main(args.n, args.cap))

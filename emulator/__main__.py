"""`python -m emulator`: the emulator on its own, for a bot you run yourself.

    python -m emulator [--port 8000] [--request-url URL] [--rate-limits | --strict]

Point the bot at it with `SLACK_API_URL=http://HOST:PORT/api/` and the same signing secret and
bot token; the page at `http://HOST:PORT/` shows the workspace. `--strict` (or
`HITL_EMULATOR_STRICT=1`) allows one `chat.postMessage` per channel per rolling second, no
burst, and answers 429 with `Retry-After` beyond, as the strictest Slack would.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

from emulator.server import Emulator


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m emulator", description="a local Slack for hitl")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--request-url", default=None,
                   help="where interactions are sent (the bot's /slack/events); none: clicks go nowhere")
    p.add_argument("--signing-secret", default="emulator-secret")
    p.add_argument("--bot-token", default="xoxb-emulator")
    limits = p.add_mutually_exclusive_group()
    limits.add_argument("--rate-limits", action="store_true",
                        help="Slack's limits as Slack tolerates them (a burst of 3 posts per channel, then 1/s)")
    limits.add_argument("--strict", action="store_true", default=None,
                        help="one post per channel per rolling second, no burst (also HITL_EMULATOR_STRICT=1)")
    return p.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    emu = Emulator(args.signing_secret, args.request_url, args.bot_token, rate_limits=args.rate_limits,
                   strict_limits=args.strict)
    await emu.start(args.host, args.port)
    mode = "strict limits" if emu.limiter.strict else "Slack's limits" if emu.limiter.enabled else "no limits"
    print(f"emulator on {emu.url}/ (Web API {emu.api_url}, {mode}); Ctrl-C stops it", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await emu.stop()


def main(argv: list[str] | None = None) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(parse(argv)))


if __name__ == "__main__":
    main()

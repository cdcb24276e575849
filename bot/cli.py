"""The `hitl` command: run, demo, request, schema, policy check, calibration and trust export."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot import trust_cli
from bot.config import ConfigError, load_settings
from bot.policy import PolicyError
from store.models import Decision, Request

APPROVED = {"approved", "auto_approved", "answered", "resolved"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hitl", description="Human judgment for AI agents, inside Slack.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("run", help="run the bot: intake, Slack listeners, delivery, scheduler")
    demo = sub.add_parser("demo", help="the whole loop on the built-in Slack emulator, no workspace needed")
    demo.add_argument("--port", type=int, default=8080, help="emulator web page port (default 8080)")
    demo.add_argument("--no-agent", action="store_true", help="do not push the demo requests")
    req = sub.add_parser("request", help="push a request from a shell, optionally wait for its decision")
    req.add_argument("--json", dest="json_file", help="the whole request as JSON (a file, or - for stdin)")
    req.add_argument("--agent")
    req.add_argument("--action")
    req.add_argument("--summary")
    req.add_argument("--id")
    req.add_argument("--params", help="params as a JSON object")
    req.add_argument("--editable", help="comma-separated names of editable params")
    req.add_argument("--confidence", type=float)
    req.add_argument("--wait", action="store_true", help="wait for the decision and print it")
    req.add_argument("--timeout", type=float, help="seconds to wait (default: forever)")
    schema = sub.add_parser("schema", help="print the JSON Schema of the request and the decision")
    schema.add_argument("which", nargs="?", choices=["request", "decision", "all"], default="all")
    policy = sub.add_parser("policy", help="policy file tools")
    psub = policy.add_subparsers(dest="policy_command", required=True, metavar="SUBCOMMAND")
    check = psub.add_parser("check", help="validate a policy file and show how sample requests route")
    check.add_argument("file", nargs="?", help="policy file (default: HITL_POLICY or the built-in policy)")
    check.add_argument("requests", nargs="*", help="sample request JSON files")
    trust_cli.add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "schema":
            return _schema(args.which)
        if args.command == "request":
            return asyncio.run(_request(args, _read_json(args.json_file)))
        if args.command == "run":
            return asyncio.run(_run())
        if args.command == "demo":
            from bot.demo import demo

            return asyncio.run(demo(port=args.port, agent=not args.no_agent))
        if args.command in ("calibration", "trust"):
            return asyncio.run(trust_cli.export(args))
        if args.command == "policy":
            from bot.policy.check import check

            code, report = check(Path(args.file) if args.file else None, [Path(r) for r in args.requests])
            print(report)
            return code
    except (ConfigError, UsageError) as e:
        print(e if isinstance(e, ConfigError) else f"hitl: {e}", file=sys.stderr)
        return 2
    except (RedisConnectionError, RedisTimeoutError) as e:
        print(f"hitl: cannot reach Redis at {os.environ.get('REDIS_URL', 'redis://localhost:6379/0')}: {e}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2


def _schema(which: str) -> int:
    schemas: dict[str, Any] = {"request": Request.model_json_schema(), "decision": Decision.model_json_schema()}
    print(json.dumps(schemas if which == "all" else schemas[which], indent=2))
    return 0


class UsageError(Exception):
    """A command-line argument that cannot be used; the message says which and why."""


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{what} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise UsageError(f"{what} must be a JSON object, not {type(data).__name__}")
    return data


def _read_json(source: str | None) -> dict[str, Any]:
    if not source:
        return {}
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
    except OSError as e:
        raise UsageError(f"--json: cannot read {source}: {e.strerror or e}") from e
    return _json_object(text, f"--json {source}")


async def _request(args: argparse.Namespace, data: dict[str, Any]) -> int:
    from bot.client import HitlClient

    settings = load_settings()
    for key in ("agent", "action", "summary", "id", "confidence"):
        if getattr(args, key) is not None:
            data[key] = getattr(args, key)
    if args.params:
        data["params"] = _json_object(args.params, "--params")
    if args.editable:
        data["editable"] = [x.strip() for x in args.editable.split(",") if x.strip()]
    try:
        request = Request.model_validate(data)
    except ValidationError as e:
        for err in e.errors():
            print(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}", file=sys.stderr)
        return 2
    client = HitlClient.from_url(settings.redis_url, prefix=settings.prefix)
    try:
        rid = await client.submit(request)
        print(rid, file=sys.stderr if args.wait else sys.stdout)
        if not args.wait:
            return 0
        try:
            decision = await client.wait(rid, args.timeout)
        except TimeoutError:
            print(f"no decision within {args.timeout}s", file=sys.stderr)
            return 124
        print(decision.model_dump_json(indent=2))
        return 0 if decision.status in APPROVED else 1
    finally:
        await client.close()


async def _run() -> int:
    from bot.app import build_app

    settings = load_settings()
    settings.require_for_run()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        bot = build_app(settings)
    except PolicyError as e:
        print(e, file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(bot.reload_policy()))
    await bot.start()
    await stop.wait()
    logging.getLogger("hitl").info("hitl: stopping (finishing in-flight work)")
    await bot.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

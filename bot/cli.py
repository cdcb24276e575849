"""The `hitl` command: run, demo, request, schema, policy check, doctor, keys,
calibration and trust export.

Each subcommand imports what it needs when it runs (the bot, the policy engine and the
settings framework are heavy), so `hitl request` and `hitl schema` start fast. `mcp` and `hook` come from the agent SDK (`hitl.cli`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from bot.env import ConfigError

APPROVED = {"approved", "auto_approved"}
ANSWERED = {"answered", "resolved"}
"""A question's success; for an action, a person handed it back or resolved it: not approved."""
# `hitl request --wait`: the exit status per decision, so a script can tell them apart
# (rejected, denied, and an action handed back or resolved by a person: 1; 2 is unusable arguments or no Redis; 124 no decision in time)
WAIT_EXIT = {"expired": 3, "invalid": 4}


def _port(text: str) -> int:
    """A TCP port for argparse: 0 (a free one, said when printed) to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port: use 1-65535, or 0 for a free one")
    return port


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hitl", description="Human judgment for AI agents, inside Slack.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("run", help="run the bot: intake, Slack listeners, delivery, scheduler")
    sub.add_parser("housekeep", help="only seal the audit chain and count stats, at the lowest CPU priority "
                                     "(what `hitl run` starts beside itself: docs/deploy.md)")
    demo = sub.add_parser("demo", help="the whole loop on the built-in Slack emulator, no workspace needed")
    demo.add_argument("--port", type=_port, default=8080,
                      help="emulator web page port (default 8080; 0: a free one)")
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
    doctor = sub.add_parser("doctor", help="check the Slack app, the policy's channels and groups, and Redis")
    doctor.add_argument("--json", action="store_true", help="the report as JSON, for automation")
    keys = sub.add_parser("keys", help="REST API keys: create, list, revoke (docs/api.md)")
    ksub = keys.add_subparsers(dest="keys_command", required=True, metavar="SUBCOMMAND")
    kcreate = ksub.add_parser("create", help="create a key for one or more agents (shown once)")
    kcreate.add_argument("--agent", action="append", required=True, help="agent name the key may act for")
    kcreate.add_argument("--name", default="", help="a note to recognise the key by")
    ksub.add_parser("list", help="list keys (ids, agents, state; never the keys)")
    krevoke = ksub.add_parser("revoke", help="revoke a key at once")
    krevoke.add_argument("key_id", help="the key's id (from `hitl keys list`)")
    from bot.evidence.commands import add_parsers  # light: the work is imported when it runs

    add_parsers(sub)
    # the agent SDK's commands (python -m hitl ...): listed here, parsed there
    sub.add_parser("mcp", help="MCP server for agents: request_approval, ask_human, get_decision", add_help=False)
    sub.add_parser("hook", help="agent hooks: `hitl hook claude-code` (PreToolUse)", add_help=False)
    from bot import trust_cli  # light: the work is imported when it runs

    trust_cli.add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["mcp"], ["hook"]):
        from hitl.cli import main as agent_main

        return agent_main(argv)
    args = _parser().parse_args(argv)
    try:
        return _main(args)
    except BrokenPipeError:  # `hitl schema | head`: the reader left; nothing to say
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


def _unreachable_redis(e: BaseException) -> bool:
    exc = sys.modules.get("redis.exceptions")  # loaded if Redis was used at all
    # a Redis Cluster none of whose seed nodes answers raises RedisClusterException
    return exc is not None and isinstance(e, (exc.ConnectionError, exc.TimeoutError, exc.RedisClusterException))


def _main(args: argparse.Namespace) -> int:
    import asyncio  # not for `schema` or `policy check`

    try:
        if args.command == "schema":
            return _schema(args.which)
        if args.command == "request":
            return asyncio.run(_request(args, _read_json(args.json_file)))
        if args.command == "run":
            return asyncio.run(_run())
        if args.command == "housekeep":
            return asyncio.run(_housekeep())
        if args.command == "demo":
            from bot.demo import demo

            return asyncio.run(demo(port=args.port, agent=not args.no_agent))
        if args.command == "doctor":
            from bot.doctor import doctor

            return asyncio.run(doctor(as_json_output=args.json))
        if args.command == "keys":
            from bot.api.keys_cli import keys

            return asyncio.run(keys(args))
        if args.command in ("audit", "feedback"):
            from bot.evidence.commands import run as evidence

            return evidence(args)
        if args.command in ("calibration", "trust"):
            from bot import trust_cli

            return asyncio.run(trust_cli.export(args))
        if args.command == "policy":
            from bot.policy.check import check

            code, report = check(Path(args.file) if args.file else None, [Path(r) for r in args.requests])
            print(report)
            return code
    except (ConfigError, UsageError) as e:
        print(e if isinstance(e, ConfigError) else f"hitl: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        sdk_errors = sys.modules.get("hitl.errors")  # loaded if the agent SDK's client was used
        if sdk_errors is not None and isinstance(e, sdk_errors.Unreachable):
            print(e, file=sys.stderr)  # it already names the URL and REDIS_URL
            return 2
        if not _unreachable_redis(e):
            raise
        from hitl.config import shown_url

        url = shown_url(os.environ.get("REDIS_URL") or "redis://localhost:6379/0")
        print(f"hitl: cannot reach Redis at {url} (set REDIS_URL to hitl's Redis): {e}", file=sys.stderr)
        return 2
    return 2


def _schema(which: str) -> int:
    from store.models import Decision, Request

    schemas: dict[str, Any] = {"request": Request.model_json_schema(), "decision": Decision.model_json_schema()}
    print(json.dumps(schemas if which == "all" else schemas[which], indent=2))
    sys.stdout.flush()  # a closed pipe shows here, inside main's handler
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
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as e:
        raise UsageError(f"--json: cannot read {source}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise UsageError(f"--json {source} is not UTF-8 text (byte {e.start}): JSON must be UTF-8") from e
    return _json_object(text, f"--json {source}")


async def _request(args: argparse.Namespace, data: dict[str, Any]) -> int:
    from hitl.errors import InvalidRequest
    from pydantic import ValidationError

    from bot.client import HitlClient
    from bot.env import agent_settings
    from store.models import Request

    redis_url, prefix = agent_settings()
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
    if args.timeout is not None and not args.timeout >= 0:  # before sending: NaN failed after it
        print(f"--timeout must be a number of seconds (0 or more), not {args.timeout:g}", file=sys.stderr)
        return 2
    client = HitlClient.from_url(redis_url, prefix=prefix)
    try:
        try:
            rid = await client.submit(request)
        except InvalidRequest as e:  # what the bot would refuse (a reply_to naming its own keys)
            print(str(e), file=sys.stderr)
            return 2
        print(rid, file=sys.stderr if args.wait else sys.stdout)
        if not args.wait:
            return 0
        try:
            decision = await client.wait(rid, args.timeout)
        except TimeoutError:
            print(f"no decision within {args.timeout}s", file=sys.stderr)
            return 124
        print(decision.model_dump_json(indent=2))
        status = str(decision.status)
        if status in APPROVED or (status in ANSWERED and request.kind == "question"):
            return 0
        return WAIT_EXIT.get(status, 1)
    finally:
        await client.close()


async def _housekeep() -> int:
    import logging

    from bot import housekeeping

    housekeeping.lower_priority()
    from bot.config import load_settings

    settings = load_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return await housekeeping.run(settings)


async def _reload_policy(bot: Any) -> None:
    """SIGHUP: read the policy file again; a failure (Redis away to audit it) keeps the policy
    in force, logged (the file watcher tries again)."""
    import logging

    try:
        await bot.reload_policy()
    except Exception as e:
        logging.getLogger("hitl").error("policy reload on SIGHUP failed, the policy in force is kept: %s", e)


async def _run() -> int:
    import asyncio
    import logging
    import signal

    from bot.app import build_app
    from bot.config import load_settings
    from bot.policy import PolicyError

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
    loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(_reload_policy(bot)))
    await bot.start()
    await stop.wait()
    logging.getLogger("hitl").info("hitl: stopping (finishing in-flight work)")
    await bot.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

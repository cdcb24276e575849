"""`python -m hitl`: the agent-side commands (`mcp`, `hook claude-code`); the bot's `hitl`
command delegates its `mcp` and `hook` subcommands here."""

from __future__ import annotations

import argparse
import os
import sys


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hitl", description="hitl agent tools: MCP server, Claude Code hook.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    mcp = sub.add_parser("mcp", help="MCP server: request_approval, ask_human, get_decision")
    mcp.add_argument("--transport", choices=["stdio", "http"], default="stdio",
                     help="stdio (default) or streamable HTTP")
    mcp.add_argument("--host", default="127.0.0.1", help="HTTP host (default 127.0.0.1)")
    mcp.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000; path /mcp)")
    mcp.add_argument("--wait", type=float, help="longest wait of one tool call, seconds "
                                                "(default HITL_MCP_WAIT_S or 50)")
    mcp.add_argument("--agent", help="agent name on the cards (default HITL_AGENT or mcp-agent)")
    mcp.add_argument("--allowed-host", action="append", default=[], metavar="HOST[:PORT]",
                     help="HTTP: a Host header clients may send (repeat; default HITL_MCP_ALLOWED_HOSTS)")
    mcp.add_argument("--allowed-origin", action="append", default=[], metavar="URL",
                     help="HTTP: an Origin header browsers may send (repeat; default HITL_MCP_ALLOWED_ORIGINS)")
    hook = sub.add_parser("hook", help="agent hooks")
    hsub = hook.add_subparsers(dest="hook", required=True, metavar="AGENT")
    cc = hsub.add_parser("claude-code", help="Claude Code PreToolUse hook (JSON on stdin, decision on stdout)")
    cc.add_argument("--timeout", type=float, help="seconds to wait for a decision "
                                                  "(default HITL_HOOK_TIMEOUT or 55)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "mcp":
        from hitl.mcp import serve, wait_from
        from hitl.mcp_http import guard

        try:  # checked before the server starts: a bad wait is a message, not a server failing each call
            wait = wait_from(args.wait, os.environ.get("HITL_MCP_WAIT_S"))
            # and a server the network could use without a token never starts
            http = guard(args.host, os.environ, args.allowed_host, args.allowed_origin) \
                if args.transport == "http" else None
        except ValueError as e:
            print(f"hitl mcp: {e}", file=sys.stderr)
            return 2
        return serve(transport=args.transport, host=args.host, port=args.port, max_wait_s=wait,
                     agent=args.agent, guard=http)
    from hitl.hook import claude_code

    return claude_code(args.timeout)


if __name__ == "__main__":
    sys.exit(main())

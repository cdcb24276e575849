"""An MCP client playing a (scripted) model against `hitl mcp` over stdio: ask before acting,
follow up while pending, act only on approval with the returned params.
    REDIS_URL=... HITL_PREFIX=... python examples/mcp/agent.py
For a real MCP host (Claude Desktop, Claude Code, Cursor), see mcp.json beside this file.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from mcp import Client
from mcp.client.stdio import StdioServerParameters


async def main() -> None:
    server = StdioServerParameters(command=sys.executable, args=["-m", "hitl", "mcp", "--wait", "20"],
                                   env={**os.environ, "HITL_AGENT": "mcp-example"})
    async with Client(server) as client:
        result = await client.call_tool("request_approval", {
            "action": "refund", "summary": "Refund $250 to Ana for order A-17",
            "params": {"order": "A-17", "amount": 250}, "editable": ["amount"]})
        decision = json.loads(result.content[0].text)  # type: ignore[union-attr]
        while decision["status"] == "pending":
            result = await client.call_tool("get_decision", {"request_id": decision["request_id"]})
            decision = json.loads(result.content[0].text)  # type: ignore[union-attr]
    if decision.get("approved"):
        print(f"refunded {decision['params']['amount']} on {decision['params']['order']}")
    else:
        print(f"not run: {decision['message']}")


if __name__ == "__main__":
    asyncio.run(main())

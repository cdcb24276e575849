"""hitl agent SDK: ask people in Slack before an AI agent acts.

    from hitl import Client, require_approval, ask_human

`hitl.protocol` holds the wire models shared with the bot (request, decision, messages);
`AsyncClient` / `Client` push requests and wait for decisions; adapters for agent frameworks
live in `hitl.adapters.*`, the MCP server in `hitl.mcp`, the Claude Code hook in `hitl.hook`.
"""

from hitl.approval import ask_human, ask_human_async, require_approval
from hitl.client import AsyncClient
from hitl.errors import (
    DecisionTimeout,
    Denied,
    Expired,
    HitlError,
    InvalidRequest,
    NotApproved,
    Rejected,
    RequestLost,
    Unreachable,
)
from hitl.protocol import AgentMessage, Decision, Request, Status
from hitl.sync import Client

__all__ = [
    "AgentMessage",
    "AsyncClient",
    "Client",
    "Decision",
    "DecisionTimeout",
    "Denied",
    "Expired",
    "HitlError",
    "InvalidRequest",
    "NotApproved",
    "Rejected",
    "Request",
    "RequestLost",
    "Status",
    "Unreachable",
    "ask_human",
    "ask_human_async",
    "require_approval",
]

"""`hitl mcp`: an MCP server with the tools `request_approval`, `ask_human` and `get_decision`.

Runs over stdio (`python -m hitl mcp`) or streamable HTTP (`--transport http`, guarded by
hitl.mcp_http: a token and Host/Origin checks off loopback). A call waits
at most `--wait` seconds (default 50, below common client timeouts); then it answers
`{"status": "pending", "request_id": ...}` and the model calls `get_decision` later. The
request is in Redis before any wait begins, so nothing is lost when a client gives up. A hung
Redis adds at most SEND_S (5 s) to a call, which then answers an error.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import uuid
from typing import Any

from mcp.server.mcpserver import MCPServer

from hitl import outcome
from hitl.client import AsyncClient, entry
from hitl.errors import DecisionTimeout, HitlError
from hitl.mcp_http import BearerToken, Guard
from hitl.mcp_http import guard as http_guard
from hitl.protocol import Kind, Request

DEFAULT_WAIT_S = 50.0
SHOWN = 80
SEND_S = 5.0
"""How long a call's Redis round trips may take besides its wait (sending, lookups), at most
`--wait`: a call answers within its wait and this, Redis answering or not."""

INSTRUCTIONS = (
    "Before any consequential or irreversible action (payments, deletions, emails to customers, "
    "deploys), call request_approval and act only if its status is approved or auto_approved, "
    "using the returned params (a reviewer may have edited them). Use ask_human when you need a "
    "person's answer. A status of pending means nobody has decided yet: call get_decision with "
    "the request_id later; never act on a pending request."
)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _what(request: Request | dict[str, Any]) -> tuple[str, ...]:
    """What a call asks people about, to compare the one sent with the one stored under its id:
    its action, and the question and its options, or the action's arguments (a retry may word
    its summary anew)."""
    data = request.model_dump(mode="json", exclude_none=True) if isinstance(request, Request) else request
    action = str(data.get("action"))
    if data.get("kind") == Kind.question:
        return (action, "question", str(data.get("summary")), _canonical(data.get("options") or []))
    return (action, "params", _canonical(data.get("params") or {}))


def _reused(request_id: str, agent: str, sent: tuple[str, ...], stored: dict[str, Any]) -> str | None:
    """Why the request stored under `request_id` is not the call sent with it; None when it is,
    or when it is another agent's or action's (the client says that id is taken)."""
    was = _what(stored)
    if was == sent or str(stored.get("agent")) != agent or was[0] != sent[0]:
        return None
    if sent[1] == "question":
        shown = f"another question ({str(stored.get('summary'))[:SHOWN]!r})"
    elif was[1] == "params":
        shown = f"other arguments ({was[2][:SHOWN]}, not {sent[2][:SHOWN]})"
    else:
        shown = "a question"
    return (f"request_id {request_id!r} was already used for {shown}; nobody has decided this call. "
            "Choose another request_id: the same id is the same request, for a retry of the very same call")


def wait_from(value: float | None, env: str | None) -> float:
    """The longest wait of one call: `--wait`, else HITL_MCP_WAIT_S (seconds), else the default;
    ValueError naming the setting when it is not a positive, finite number of seconds (NaN
    failed every call after sending its request, infinity never answered `pending`)."""
    if value is None and not env:
        return DEFAULT_WAIT_S
    name = "--wait" if value is not None else "HITL_MCP_WAIT_S"
    try:
        wait = float(value if value is not None else env)  # type: ignore[arg-type]
    except ValueError:
        raise ValueError(f"HITL_MCP_WAIT_S={env!r} is not a number of seconds") from None
    if not 0 < wait < math.inf:
        raise ValueError(f"{name} must be a positive, finite number of seconds, not {wait:g}")
    return wait


def build_server(client: AsyncClient, *, max_wait_s: float = DEFAULT_WAIT_S) -> MCPServer:
    """The MCP server over one hitl client; every wait is bounded by `max_wait_s`."""
    max_wait_s = wait_from(max_wait_s, None)
    server = MCPServer("hitl", instructions=INSTRUCTIONS, log_level="WARNING")
    # ids this server sent (insertion-ordered, the newest 10,000), with what each asked people
    sent: dict[str, tuple[str, ...]] = {}

    async def mismatch(request_id: str) -> dict[str, Any] | None:
        """An error when the request stored under an id this server sent asks about something
        else (an earlier call's, under a reused id): its decision is not this call's."""
        if (what := sent.get(request_id)) is None or (stored := await client.stored(request_id)) is None:
            return None
        if (why := _reused(request_id, client.agent, what, stored)) is None:
            return None
        return {"status": "error", "request_id": request_id, "message": why}

    send_s = min(SEND_S, max_wait_s)

    def remember(request_id: str, what: tuple[str, ...]) -> None:
        if len(sent) >= 10_000 and request_id not in sent:
            sent.pop(next(iter(sent)))
        sent[request_id] = what

    def waited_of(wait_s: float | None) -> float:
        return max_wait_s if wait_s is None else max(0.0, min(wait_s, max_wait_s))

    def unanswered(request_id: str, waited: float) -> dict[str, Any]:
        return {"status": "error", "request_id": request_id,
                "message": f"hitl's Redis did not answer within {waited + send_s:g}s; nothing is decided. "
                           f"Call get_decision with request_id {request_id!r} later."}

    async def settle(request_id: str, waited: float) -> dict[str, Any]:
        try:
            decision = await client.wait(request_id, waited or 0.001)
            return await mismatch(request_id) or outcome.decided(decision)
        except DecisionTimeout:
            return outcome.pending(request_id, waited)
        except HitlError as e:  # the id is taken by another request, Redis away: said, never a decision
            return {"status": "error", "request_id": request_id, "message": str(e)}

    async def submit(fields: dict[str, Any], wait_s: float | None) -> dict[str, Any]:
        fields = {k: v for k, v in fields.items() if v is not None}
        fields.setdefault("id", f"mcp-{uuid.uuid4().hex}")
        waited = waited_of(wait_s)
        try:
            request = client.build(**fields)
            entry(request)  # what the bot would refuse, before anything is sent
        except HitlError as e:
            return {"status": "error", "message": str(e)}
        request_id = str(request.id)
        remember(request_id, _what(request))  # before sending: get_decision knows it, sent or not yet
        try:
            # the whole call within its wait and `send_s` for Redis round trips, Redis answering or not
            async with asyncio.timeout(waited + send_s):
                try:
                    await client.submit(request)
                    if error := await mismatch(request_id):  # an earlier call's, already stored
                        return error
                except HitlError as e:
                    return {"status": "error", "request_id": request_id, "message": str(e)}
                return await settle(request_id, waited)
        except TimeoutError:
            return unanswered(request_id, waited)

    @server.tool()
    async def request_approval(action: str, summary: str, params: dict[str, Any] | None = None,
                               editable: list[str] | None = None, risk: dict[str, Any] | None = None,
                               confidence: float | None = None, context: dict[str, Any] | None = None,
                               request_id: str | None = None, wait_s: float | None = None) -> dict[str, Any]:
        """Ask people in Slack to approve an action before you take it.

        `summary` says in plain language what you are about to do; `params` are the action's
        arguments and `editable` names those a reviewer may change. Returns the decision
        (act only when `approved` is true, with the returned `params`) or `pending` with a
        `request_id` for get_decision. Pass your own `request_id` to make a retry safe."""
        return await submit({"action": action, "summary": summary, "params": params or {},
                             "editable": editable or [], "risk": risk, "confidence": confidence,
                             "context": context, "id": request_id}, wait_s)

    @server.tool()
    async def ask_human(question: str, options: list[str] | None = None, request_id: str | None = None,
                        wait_s: float | None = None) -> dict[str, Any]:
        """Ask people in Slack a question; `options` offers choices (a free-text answer is
        always possible). Returns `answer` / `option`, or `pending` with a `request_id`."""
        return await submit({"kind": Kind.question, "action": "question", "summary": question,
                             "options": options or [], "id": request_id}, wait_s)

    @server.tool()
    async def get_decision(request_id: str, wait_s: float | None = None) -> dict[str, Any]:
        """The decision on an earlier request_approval or ask_human (waits up to `wait_s`)."""
        waited = waited_of(wait_s)
        try:
            async with asyncio.timeout(waited + send_s):  # within the wait and `send_s`, Redis answering or not
                agent = await client.agent_of(request_id)
                if agent is None and request_id not in sent and (queued := await client.queued(request_id)):
                    agent = str(queued.get("agent"))  # sent, not yet stored: the bot is down or behind
                if agent is not None and agent != client.agent:  # never another agent's answer
                    return {"status": "error", "request_id": request_id,
                            "message": f"{request_id} is not a request of this agent ({client.agent})"}
                if agent is None and request_id not in sent and await client.decision(request_id) is None:
                    # not one this server sent, and hitl has no record of it, none queued: a wrong
                    # id would otherwise read as pending for ever
                    return {"status": "unknown", "request_id": request_id,
                            "message": f"hitl has no request {request_id!r}: use the request_id that "
                                       "request_approval or ask_human returned (an id sent by another "
                                       "process moments ago may not be read yet: call again shortly)"}
                if agent is None and request_id not in sent \
                        and (owner := await client.refused_agent(request_id)) != client.agent:
                    # only an `invalid` marker answers: the bot refused an entry under this id,
                    # and it is not known to be this agent's (the marker does not say whose)
                    if owner is not None:
                        return {"status": "error", "request_id": request_id,
                                "message": f"{request_id} is not a request of this agent ({client.agent})"}
                    return {"status": "unknown", "request_id": request_id,
                            "message": f"hitl has no request {request_id!r} of this agent ({client.agent}): "
                                       "use the request_id that request_approval or ask_human returned"}
                result = await settle(request_id, waited)
                if result["status"] not in ("error", "unknown"):
                    result.update(await noted(request_id))
                return result
        except HitlError as e:
            return {"status": "error", "request_id": request_id, "message": str(e)}
        except TimeoutError:
            return unanswered(request_id, waited)

    async def noted(request_id: str) -> dict[str, Any]:
        """`messages` (take over, replies, an override) and `review`, when there are any: an
        agent without a reply stream hears of an override here."""
        messages, review = await client.notes(request_id)
        out: dict[str, Any] = {}
        if messages:
            out["messages"] = [m.model_dump(mode="json", exclude_none=True) for m in messages]
        if review is not None:
            out["review"] = review.model_dump(mode="json", exclude_none=True)
            if review.verdict == "wrong":
                out["message"] = (f"{out.get('message', '')} A reviewer has since flagged this action as wrong "
                                  f"({review.reason_code or 'no reason code'}): see `review`.").strip()
        return out

    return server


def serve(*, transport: str = "stdio", host: str = "127.0.0.1", port: int = 8000,
          max_wait_s: float | None = None, agent: str | None = None, guard: Guard | None = None) -> int:
    """Run the server until its client goes away (stdio) or it is stopped (HTTP). Over HTTP,
    `guard` (default: from the environment, for `host`) says who may call it."""
    wait = wait_from(max_wait_s, os.environ.get("HITL_MCP_WAIT_S"))
    if transport != "stdio" and guard is None:
        guard = http_guard(host, os.environ)
    client = AsyncClient.from_url(agent=agent or os.environ.get("HITL_AGENT") or "mcp-agent")
    server = build_server(client, max_wait_s=wait)
    if guard is None:
        server.run("stdio")
        return 0
    import uvicorn

    app: Any = server.streamable_http_app(transport_security=guard.security, host=host)
    if guard.token is not None:
        app = BearerToken(app, guard.token)
    asyncio.run(uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning")).serve())
    return 0

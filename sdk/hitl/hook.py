"""`hitl hook claude-code`: a Claude Code `PreToolUse` hook that asks people in Slack.

Reads the hook's JSON on stdin, submits the tool call (hitl's policy decides: auto, approval,
deny), waits within the hook's time and prints the hook output: `allow` only for an approved
call (with `updatedInput` when a reviewer edited it), `deny` with the reviewer's reason, and
`ask` (Claude Code asks the person at the terminal) when there is no decision in time (the
Slack request is withdrawn first, so no later click contradicts the terminal), hitl is
unreachable, or the input cannot be read. It never allows what was not approved.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from typing import Any

from hitl.client import AsyncClient
from hitl.config import stable_id
from hitl.connect import BadRedisUrl
from hitl.errors import DecisionTimeout, HitlError, describe
from hitl.protocol import MAX_TEXT, Decision, Status
from hitl.review import editable_name

DEFAULT_TIMEOUT_S = 55.0  # under Claude Code's default hook timeout of 60 s
WITHDRAW_S = 3.0
"""How long the withdrawal of an unanswered request may take after `--timeout` (55 + 3 < 60)."""
WITHDRAWN_REASON = "asked at the terminal instead (Claude Code hook timed out)"
EDITABLE_MAX = 2000
CUT = " … [cut here: the tool input goes on, see its params]"
WITHDRAWN = "withdrawn"  # the reason_code of a withdrawn request


def output(decision: str, reason: str, updated: dict[str, Any] | None = None) -> dict[str, Any]:
    specific: dict[str, Any] = {"hookEventName": "PreToolUse", "permissionDecision": decision,
                                "permissionDecisionReason": reason}
    if updated is not None:
        specific["updatedInput"] = updated
    return {"hookSpecificOutput": specific}


def summary(tool: str, tool_input: dict[str, Any]) -> str:
    """Plain language first: what Claude Code is about to do."""
    if tool == "Bash" and isinstance(tool_input.get("command"), str):
        text = f"Claude Code wants to run: {tool_input['command']}"
        if tool_input.get("description"):
            text += f"\n({tool_input['description']})"
    elif isinstance(tool_input.get("file_path"), str):
        text = f"Claude Code wants to use {tool} on {tool_input['file_path']}"
    elif isinstance(tool_input.get("url"), str):
        text = f"Claude Code wants to use {tool} on {tool_input['url']}"
    else:
        text = f"Claude Code wants to use {tool}: {_cut(json.dumps(tool_input), 500, '…')}"
    return _cut(text, MAX_TEXT, CUT)


def _cut(text: str, limit: int, mark: str) -> str:
    """`text`, or its head and `mark` when it is longer than `limit`: a reviewer must see that
    the rest (of a command, say) is missing, not read the head as the whole."""
    return text if len(text) <= limit else text[: limit - len(mark)] + mark


def request_fields(event: dict[str, Any]) -> dict[str, Any]:
    """The hitl request for one PreToolUse event; ValueError when the event is not usable."""
    if event.get("hook_event_name", "PreToolUse") != "PreToolUse":
        raise ValueError(f"this hook handles PreToolUse, not {event.get('hook_event_name')!r}")
    tool, tool_input = event.get("tool_name"), event.get("tool_input")
    if not isinstance(tool, str) or not tool or not isinstance(tool_input, dict):
        raise ValueError("the hook input has no tool_name or no tool_input object")
    session = str(event.get("session_id") or "")
    call = str(event.get("tool_use_id") or "")
    editable = [k for k, v in tool_input.items()
                if isinstance(v, str | int | float | bool) and len(str(v)) <= EDITABLE_MAX
                and editable_name(k)][:20]
    fields: dict[str, Any] = {
        "action": tool[:100], "summary": summary(tool, tool_input), "params": tool_input,
        "editable": editable,
        "metadata": {"session_id": session[:300] or None, "cwd": event.get("cwd"),
                     "tool_use_id": call or None, "permission_mode": event.get("permission_mode"),
                     "source": "claude-code"},
    }
    # The same tool call asked twice (a retried hook) is one request.
    fields["id"] = stable_id("claude-code", session, call, tool, tool_input) if call else None
    return fields


def verdict(decision: Decision, tool_input: dict[str, Any], waited_s: float | None = None) -> dict[str, Any]:
    if decision.status == Status.rejected and decision.reason_code == WITHDRAWN:  # nobody decided in Slack
        waited = f"within {waited_s:g}s " if waited_s is not None else ""
        return output("ask", f"No decision in Slack {waited}(hitl request {decision.request_id}); it is withdrawn "
                             "there. Asking here instead.")
    if not decision.approved:
        return output("deny", describe(decision))
    who = ", ".join(v.name or v.user_id for v in decision.decided_by) or "hitl policy"
    if decision.changes:
        updated = {**tool_input, **{k: decision.params[k] for k in decision.changes if k in decision.params}}
        return output("allow", f"Approved with edits in Slack by {who}", updated)
    return output("allow", f"Approved in Slack by {who}" if decision.decided_by else "Auto-approved by hitl policy")


async def decide(event: dict[str, Any], client: AsyncClient, timeout_s: float) -> dict[str, Any]:
    fields = request_fields(event)
    request = client.build(**{k: v for k, v in fields.items() if v is not None})
    request_id, sent = request.id or "not sent", False
    try:
        # the whole exchange (sending included) within the hook's time, Redis answering or not
        async with asyncio.timeout(timeout_s):
            request_id = await client.submit(request)
            sent = True
            decision = await client.wait(request_id, timeout_s)
    except (DecisionTimeout, TimeoutError):
        if not sent:  # Redis did not take it in time: there may be nothing in Slack to find
            return output("ask", f"hitl's Redis did not answer within {timeout_s:g}s (hitl request {request_id} "
                                 "may not have reached Slack). Asking here instead.")
        return await withdrawn(client, request_id, timeout_s, event["tool_input"])
    return verdict(decision, event["tool_input"])


async def withdrawn(client: AsyncClient, request_id: str, timeout_s: float, tool_input: dict[str, Any]) -> dict[str, Any]:
    """No decision in time: withdraw the Slack request (a later click there must not contradict
    what the person at the terminal decides), then ask. A decision that landed first wins: an
    approval allows, a rejection denies. A withdrawal that fails still asks, never allows."""
    try:
        async with asyncio.timeout(WITHDRAW_S):
            decision = await client.cancel(request_id, WITHDRAWN_REASON, timeout=WITHDRAW_S)
    except Exception as e:  # Redis away, the bot behind: ask all the same
        return output("ask", f"No decision in Slack within {timeout_s:g}s (hitl request {request_id}), and it "
                             f"could not be withdrawn ({type(e).__name__}): it may stay open there. "
                             "Asking here instead.")
    return verdict(decision, tool_input, waited_s=timeout_s)


async def run(raw: str, *, timeout_s: float, url: str | None = None) -> dict[str, Any]:
    """The hook output for one stdin payload; never raises, never allows on error."""
    try:
        event = json.loads(raw)
        if not isinstance(event, dict):
            raise ValueError("the hook input is not a JSON object")
    except ValueError as e:
        return output("ask", f"hitl could not read the hook input ({e}); asking here instead.")
    client: AsyncClient | None = None
    try:
        client = AsyncClient.from_url(url, agent=os.environ.get("HITL_AGENT") or "claude-code", retries=3)
        return await decide(event, client, timeout_s)
    except BadRedisUrl as e:
        return output("ask", f"hitl: REDIS_URL is not usable ({e}); asking here instead.")
    except (HitlError, ValueError) as e:
        return output("ask", f"{e} (asking here instead)")
    except Exception as e:  # the hook must answer whatever happens, and never with allow
        return output("ask", f"hitl failed ({type(e).__name__}: {e}); asking here instead.")
    finally:
        if client is not None:
            with contextlib.suppress(Exception):  # closing a client whose Redis is gone may fail
                async with asyncio.timeout(2):
                    await client.close()


def timeout_from(value: float | None, env: str | None) -> float:
    """The hook's wait: `--timeout`, else HITL_HOOK_TIMEOUT (seconds), else the default;
    ValueError naming the setting when it is not a positive number of seconds."""
    if value is None and not env:
        return DEFAULT_TIMEOUT_S
    try:
        wait = float(value if value is not None else env)  # type: ignore[arg-type]
    except ValueError:
        raise ValueError(f"HITL_HOOK_TIMEOUT={env!r} is not a number of seconds") from None
    if not wait > 0 or wait == float("inf"):
        raise ValueError(f"the hook timeout must be a positive number of seconds, not {wait:g}")
    return wait


def claude_code(timeout_s: float | None = None) -> int:
    """Entry point: stdin -> stdout, exit 0 (the decision is in the JSON), whatever happens."""
    try:
        raw = sys.stdin.buffer.read().decode("utf-8", errors="replace")
        wait = timeout_from(timeout_s, os.environ.get("HITL_HOOK_TIMEOUT"))
        result = asyncio.run(run(raw, timeout_s=wait))
    except ValueError as e:
        result = output("ask", f"hitl is misconfigured ({e}); asking here instead.")
    except Exception as e:  # never a crash without an answer, never allow
        result = output("ask", f"hitl failed ({type(e).__name__}: {e}); asking here instead.")
    print(json.dumps(result))
    return 0

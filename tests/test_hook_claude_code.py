"""`hitl hook claude-code` as Claude Code runs it (a process, JSON on stdin, JSON on stdout),
against the real bot: allow only what people approved, with their edits as `updatedInput`;
deny with the reviewer's reason; ask (never allow) on timeout, bad input or no Redis."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import pytest

from tests.harness import Harness
from tests.redis_server import free_port
from tests.reviewer import approve, card_for, edit, h, reject

__all__ = ["h"]

EVENT = {"session_id": "sess-1", "transcript_path": "/tmp/t.jsonl", "cwd": "/work/app",
         "permission_mode": "default", "hook_event_name": "PreToolUse", "tool_name": "Bash",
         "tool_input": {"command": "rm -rf build/", "description": "Clean the build"},
         "tool_use_id": "toolu_01"}


async def run_hook(stdin: str | bytes, redis_url: str, timeout: float = 30) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hitl", "hook", "claude-code", "--timeout", str(timeout),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "REDIS_URL": redis_url})
    out, err = await proc.communicate(stdin if isinstance(stdin, bytes) else stdin.encode())
    assert proc.returncode == 0, err
    result = json.loads(out)
    specific = result["hookSpecificOutput"]
    assert specific["hookEventName"] == "PreToolUse"
    assert specific["permissionDecision"] in ("allow", "deny", "ask")
    return dict(specific)


async def test_approved_is_allowed(h: Harness) -> None:
    task = asyncio.create_task(run_hook(json.dumps(EVENT), h.redis_url))
    rec = await card_for(h, "Bash")
    assert "rm -rf build/" in rec.request.summary and rec.request.agent == "claude-code"
    assert rec.request.metadata.session_id == "sess-1"
    await approve(h, rec)
    out = await task
    assert out["permissionDecision"] == "allow" and "updatedInput" not in out


async def test_edited_command_is_what_runs(h: Harness) -> None:
    task = asyncio.create_task(run_hook(json.dumps(EVENT), h.redis_url))
    await edit(h, await card_for(h, "Bash"), {"command": "rm -rf build/tmp"})
    out = await task
    assert out["permissionDecision"] == "allow"
    assert out["updatedInput"] == {"command": "rm -rf build/tmp", "description": "Clean the build"}


async def test_rejected_is_denied_with_the_reason(h: Harness) -> None:
    task = asyncio.create_task(run_hook(json.dumps(EVENT), h.redis_url))
    await reject(h, await card_for(h, "Bash"), "Not on the release branch")
    out = await task
    assert out["permissionDecision"] == "deny" and "Not on the release branch" in out["permissionDecisionReason"]


async def test_no_decision_in_time_asks_and_the_request_stays_open(h: Harness) -> None:
    out = await run_hook(json.dumps(EVENT), h.redis_url, timeout=0.5)
    assert out["permissionDecision"] == "ask" and "stays open" in out["permissionDecisionReason"]
    rec = await card_for(h, "Bash")
    assert rec.decision is None
    # the same tool call asked again (a retried hook) is the same request, decided now
    task = asyncio.create_task(run_hook(json.dumps(EVENT), h.redis_url))
    await approve(h, rec)
    assert (await task)["permissionDecision"] == "allow"
    assert await h.store.redis.zcard(h.store.keys.pending) == 0


async def test_unreachable_redis_asks(redis_url: str) -> None:
    out = await run_hook(json.dumps(EVENT), f"redis://127.0.0.1:{free_port()}/0", timeout=5)
    assert out["permissionDecision"] == "ask" and "REDIS_URL" in out["permissionDecisionReason"]


@pytest.mark.parametrize("stdin", [
    "", "not json", "[1, 2]", b"\xff\xfe",
    json.dumps({**EVENT, "tool_input": "rm -rf /"}),
    json.dumps({k: v for k, v in EVENT.items() if k != "tool_name"}),
    json.dumps({**EVENT, "hook_event_name": "PostToolUse"}),
    json.dumps({**EVENT, "tool_input": {"command": "x" * 20_000}}),  # past the params limit
])
async def test_bad_input_asks_and_sends_nothing(h: Harness, stdin: str | bytes) -> None:
    out = await run_hook(stdin, h.redis_url, timeout=2)
    assert out["permissionDecision"] == "ask", out
    assert await h.store.redis.xlen(h.store.keys.requests) == 0


def test_the_bot_cli_delegates_to_the_sdk() -> None:
    """`hitl hook claude-code` and `hitl mcp` are the SDK's commands behind the bot's `hitl`."""
    import subprocess

    out = subprocess.run([sys.executable, "-m", "bot.cli", "hook", "claude-code", "--timeout", "1"],
                         input="{}", capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert json.loads(out.stdout)["hookSpecificOutput"]["permissionDecision"] == "ask"
    helped = subprocess.run([sys.executable, "-m", "bot.cli", "mcp", "--help"], capture_output=True, text=True,
                            timeout=60)
    assert helped.returncode == 0 and "--transport" in helped.stdout and "--wait" in helped.stdout

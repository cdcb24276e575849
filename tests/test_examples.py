"""Every example under examples/ runs offline (scripted models) against the real bot and does
what a reviewer decided: approved -> the refund runs, edited -> with the new amount."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from tests.harness import Harness
from tests.reviewer import answer, approve, card_for, edit, h

__all__ = ["h"]

ROOT = Path(__file__).resolve().parent.parent


async def _run(h: Harness, *args: str) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    return await asyncio.create_subprocess_exec(*args, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE,
                                                env={**env, "REDIS_URL": h.redis_url, "HITL_PREFIX": "hitl",
                                                     "PYTHON": sys.executable})


@pytest.mark.parametrize("example", ["langchain", "openai_agents", "pydantic_ai", "mcp"])
async def test_framework_example(h: Harness, example: str) -> None:
    proc = await _run(h, sys.executable, f"examples/{example}/agent.py")
    rec = await card_for(h, "refund")
    if rec.request.editable:
        await edit(h, rec, {"amount": 200})
        expected = b"refunded 200 on A-17"
    else:  # the OpenAI Agents SDK cannot apply edits
        await approve(h, rec)
        expected = b"refunded 250 on A-17"
    out, err = await proc.communicate()
    assert proc.returncode == 0, err
    assert expected in out, out


async def test_decorator_example(h: Harness) -> None:
    proc = await _run(h, sys.executable, "examples/decorator/agent.py")
    await approve(h, await card_for(h, "refund"))
    await answer(h, await card_for(h, "question"), "Thanks for your patience")
    out, err = await proc.communicate()
    assert proc.returncode == 0, err
    assert out.decode().splitlines() == ["refunded 250 on A-17", "note: Thanks for your patience"]


async def test_claude_code_example(h: Harness) -> None:
    proc = await _run(h, "bash", "examples/claude_code/try_hook.sh")
    await approve(h, await card_for(h, "Bash"))
    out, err = await proc.communicate()
    assert proc.returncode == 0, err
    assert b'"permissionDecision": "allow"' in out

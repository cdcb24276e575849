"""The `hitl` command as an operator meets it: a wrong REDIS_URL, a file in another
encoding, a decision a script must tell apart by exit code. Real processes, real redis-server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from bot.intake import Intake
from bot.routing import SingleChannelRouter
from store.models import Choice, Status, utcnow
from store.redis_store import Store
from store.transitions import expire, vote
from tests.util import eventually

ROOT = Path(__file__).resolve().parent.parent
REQ = ["--agent", "a", "--action", "b", "--summary", "c"]


def _hitl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, timeout=90)


def test_unreachable_redis_never_shows_the_password() -> None:
    """Each command against each URL form, run side by side (each spends its ~9 s of reconnect
    back-off waiting, not computing)."""
    urls = ["redis://:s3cr3tpw@127.0.0.1:1/0", "rediss://user:s3cr3tpw@127.0.0.1:1/0"]
    commands = [["keys", "list"], ["trust", "export"], ["audit", "export"], ["request", *REQ]]
    runs = [(url, command) for url in urls for command in commands]
    with ThreadPoolExecutor(len(runs)) as pool:
        outs = list(pool.map(lambda run: _hitl(*run[1], env={"REDIS_URL": run[0]}), runs))
    for (url, command), out in zip(runs, outs, strict=True):
        assert out.returncode == 2, (url, command, out.stderr)
        assert "s3cr3tpw" not in out.stderr + out.stdout, (url, command)
        assert "Traceback" not in out.stderr and "cannot reach Redis" in out.stderr, (url, command, out.stderr)


@pytest.mark.parametrize("command", [["keys", "list"], ["request", *REQ]])
def test_unreachable_cluster_is_one_line(command: list[str]) -> None:
    out = _hitl(*command, env={"REDIS_URL": "redis+cluster://:s3cr3tpw@127.0.0.1:1", "HITL_PREFIX": "{hitl}"})
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and "cannot reach Redis" in out.stderr and "REDIS_URL" in out.stderr
    assert "s3cr3tpw" not in out.stderr


@pytest.mark.parametrize("url", ["redis://:s3cr3tpw@host:notaport/0", "redis://:s3cr3tpw@[::1/0",
                                 "redis+sentinel://:s3cr3tpw@h:99999/m"])
@pytest.mark.parametrize("command", [["keys", "list"], ["trust", "export"], ["doctor"], ["request", *REQ]])
def test_malformed_redis_url_is_a_config_error(url: str, command: list[str]) -> None:
    out = _hitl(*command, env={"REDIS_URL": url})
    assert out.returncode in (1, 2) if command == ["doctor"] else out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and "REDIS_URL" in out.stderr + out.stdout
    assert "s3cr3tpw" not in out.stderr + out.stdout


async def _decided_by_cli(store: Store, redis_url: str, rid: str, decide: Callable[[Any], Any],
                          kind: str = "approval") -> int:
    router = SingleChannelRouter()
    intake = Intake(store, lambda: router, redis_url=redis_url, consumer="c")
    task = asyncio.create_task(intake.run())
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli", "request", "--json", "-", *REQ, "--id", rid, "--wait", "--timeout", "30",
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "REDIS_URL": redis_url},
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        assert proc.stdin is not None
        proc.stdin.write(json.dumps({"kind": kind}).encode())
        proc.stdin.close()
        await eventually(lambda: store.exists(rid), 20, "request from the CLI")
        await store.apply(decide(await store.get(rid)), utcnow())
        stdout, _ = await proc.communicate()
        assert json.loads(stdout)["request_id"] == rid
        assert proc.returncode is not None
        return proc.returncode
    finally:
        intake.stop()
        await task
        await intake.close()


@pytest.mark.parametrize(("name", "decide", "code"), [
    ("rejected", lambda r: vote(r, user_id="U0ALICE", name="alice", choice=Choice.reject, now=utcnow()), 1),
    ("expired", lambda r: expire(r, now=utcnow(), reason="nobody"), 3),
    ("invalid", lambda r: expire(r, now=utcnow(), status=Status.invalid, reason="refused"), 4),
    # a person took the action over and handed it back, or resolved the case: not approved (both
    # exited 0, so `hitl request --wait && ./deploy.sh` deployed)
    ("handed-back", lambda r: vote(r, user_id="U0CAROL", name="carol", choice=Choice.hand_back, now=utcnow(),
                                   answer="Wait for the freeze"), 1),
    ("resolved", lambda r: vote(r, user_id="U0CAROL", name="carol", choice=Choice.resolve, now=utcnow()), 1),
])
async def test_wait_exit_code_tells_each_outcome_apart(store: Store, redis_url: str, name: str,
                                                       decide: Callable[[Any], Any], code: int) -> None:
    assert await _decided_by_cli(store, redis_url, f"cli-{name}", decide) == code


async def test_wait_exits_0_for_an_answered_question(store: Store, redis_url: str) -> None:
    """A question's answer is its success (only an action handed back is not)."""
    answered = await _decided_by_cli(store, redis_url, "cli-question", lambda r: vote(
        r, user_id="U0CAROL", name="carol", choice=Choice.answer, now=utcnow(), answer="Berlin"), kind="question")
    assert answered == 0


def test_request_json_in_another_encoding_is_a_usage_error(tmp_path: Path) -> None:
    latin1 = tmp_path / "req.json"
    latin1.write_bytes(b'{"agent": "a", "action": "b", "summary": "caf\xe9"}')
    out = _hitl("request", "--json", str(latin1), env={"REDIS_URL": "redis://127.0.0.1:1/0"})
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and f"--json {latin1}" in out.stderr and "UTF-8" in out.stderr


@pytest.mark.parametrize("command", [["request"], ["mcp"], ["hook", "claude-code"], ["keys", "create"], ["doctor"]])
def test_readme_commands_table_names_every_flag(command: list[str]) -> None:
    import re

    out = _hitl(*command, "--help")
    assert out.returncode == 0, out.stderr
    flags = set(re.findall(r"(--[a-z][a-z-]*)", out.stdout)) - {"--help"}
    row = next(line for line in (ROOT / "README.md").read_text().splitlines()
               if line.startswith(f"| `hitl {' '.join(command)}"))
    assert not [f for f in flags if f not in row], row

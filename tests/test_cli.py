"""The `hitl` command as a user runs it: a real process, a real redis-server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema

from bot.intake import Intake
from bot.routing import SingleChannelRouter
from store.models import Choice, utcnow
from store.redis_store import Store
from store.transitions import vote
from tests.util import eventually

ROOT = Path(__file__).resolve().parent.parent


def _hitl(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, input=input, timeout=60)


def test_schema_prints_valid_json_schemas() -> None:
    out = _hitl("schema")
    assert out.returncode == 0
    schemas = json.loads(out.stdout)
    for name in ("request", "decision"):
        jsonschema.Draft202012Validator.check_schema(schemas[name])
    request = {"agent": "a", "action": "b", "summary": "c", "confidence": 0.5}
    jsonschema.validate(request, schemas["request"])
    assert set(schemas["request"]["required"]) == {"agent", "action", "summary"}


def test_run_without_tokens_exits_with_a_clear_message() -> None:
    env = {k: "" for k in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET")}
    out = _hitl("run", env={**env, "SLACK_BOT_TOKEN": "bad-token"})
    assert out.returncode == 2
    assert "SLACK_BOT_TOKEN: must be a bot token starting with 'xoxb-'" in out.stderr


def test_run_with_an_invalid_policy_exits_with_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "p.yml"
    bad.write_text("tiers:\n  high: {quorum: 0}\n")
    out = _hitl("run", env={"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "HITL_POLICY": str(bad)})
    assert out.returncode == 2 and "tiers.high.quorum" in out.stderr


def test_policy_check_shows_routes(tmp_path: Path) -> None:
    sample = tmp_path / "big.json"
    sample.write_text(json.dumps({"agent": "a", "action": "pay", "summary": "Pay $750", "id": "s1",
                                  "confidence": 0.99, "risk": {"amount": 750, "currency": "USD"}}))
    out = _hitl("policy", "check", str(ROOT / "bot" / "policy" / "default.yml"), str(sample))
    assert out.returncode == 0, out.stderr
    assert "high" in out.stdout and "amount_over_limit" in out.stdout


async def test_request_waits_for_the_decision(store: Store, redis_url: str) -> None:
    router = SingleChannelRouter()
    intake = Intake(store, lambda: router, redis_url=redis_url, consumer="c")
    task = asyncio.create_task(intake.run())
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli", "request", "--agent", "ops", "--action", "restart",
            "--summary", "Restart the API", "--id", "cli-1", "--params", '{"service": "api"}', "--wait",
            "--timeout", "20", cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "REDIS_URL": redis_url},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        await eventually(lambda: store.exists("cli-1"), 20, "request from the CLI")
        rec = await store.get("cli-1")
        await store.apply(vote(rec, user_id="U0ALICE", name="alice", choice=Choice.approve, now=utcnow()), utcnow())
        stdout, stderr = await proc.communicate()
        assert proc.returncode == 0, stderr
        assert json.loads(stdout)["status"] == "approved"
        assert stderr.decode().strip().endswith("cli-1")
    finally:
        intake.stop()
        await task
        await intake.close()


def test_request_refuses_an_invalid_request_before_sending() -> None:
    out = _hitl("request", "--agent", "a", "--action", "b", "--summary", "c", "--confidence", "2",
                env={"REDIS_URL": "redis://127.0.0.1:1/0"})
    assert out.returncode == 2 and "confidence" in out.stderr
    own = json.dumps({"agent": "a", "action": "b", "summary": "c", "reply_to": "hitl:audit"})
    out = _hitl("request", "--json", "-", "--wait", input=own, env={"REDIS_URL": "redis://127.0.0.1:1/0"})
    assert out.returncode == 2 and "names one of the bot's own keys" in out.stderr and "Traceback" not in out.stderr


def test_request_explains_unusable_arguments(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[1")
    cases = [
        (["--agent", "a", "--action", "b", "--summary", "c", "--params", "{nope"], "--params is not valid JSON"),
        (["--agent", "a", "--action", "b", "--summary", "c", "--params", "[1]"], "--params must be a JSON object"),
        (["--json", str(bad)], f"--json {bad} is not valid JSON"),
        (["--json", str(tmp_path / "missing.json")], "cannot read"),
        # checked before sending (NaN was a traceback after the request had gone out)
        (["--agent", "a", "--action", "b", "--summary", "c", "--wait", "--timeout", "nan"], "--timeout"),
        (["--agent", "a", "--action", "b", "--summary", "c", "--wait", "--timeout", "-1"], "--timeout"),
    ]
    for args, message in cases:
        out = _hitl("request", *args, env={"REDIS_URL": "redis://127.0.0.1:1/0"})
        assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_request_without_redis_says_so() -> None:
    out = _hitl("request", "--agent", "a", "--action", "b", "--summary", "c",
                env={"REDIS_URL": "redis://127.0.0.1:1/0"})
    assert out.returncode == 2 and "cannot reach Redis at redis://127.0.0.1:1/0" in out.stderr
    assert "Traceback" not in out.stderr

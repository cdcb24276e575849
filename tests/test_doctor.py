"""`hitl doctor` against the emulator and a private redis-server set up to trip each check."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from bot.doctor import doctor
from bot.doctor.needs import called_methods, missing_scopes
from bot.doctor.report import Check, Status
from emulator import Emulator
from store.redis_store import GROUP, Store
from tests.redis_server import RedisServer, free_port

SECRET = "0123456789abcdef0123456789abcdef"
POLICY = """\
defaults: {channel: "#approvals"}
tiers:
  low: {mode: auto}
  medium: {mode: approve}
  high:
    mode: approve
    channel: "#approvals-high"
    approvers: [S0MANAGERS, U0BOB]
    escalation:
      - {after: 30m, notify: ["#approvals-leads", U0ALICE]}
admins: [U0ADMIN]
"""


@pytest.fixture(scope="module")
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this module's own: the checks change its configuration."""
    server = RedisServer()
    server.start(appendonly=True)
    yield server
    server.stop()


@pytest.fixture
async def rds(own_redis: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(own_redis.url, decode_responses=True)
    await client.flushall()
    await client.config_set("appendonly", "yes")
    await client.config_set("save", "")
    await client.config_set("maxmemory-policy", "noeviction")
    await client.config_set("maxmemory", "0")
    store = Store(client, "doc")
    await store.ensure_group()
    yield client
    await client.aclose()


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(signing_secret=SECRET, request_url=None, bot_token="xoxb-doctor") as e:
        yield e


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, emu: Emulator, own_redis: RedisServer,
        rds: aioredis.Redis) -> pytest.MonkeyPatch:
    policy = tmp_path / "policy.yml"
    policy.write_text(POLICY)
    for name in ("SLACK_APP_TOKEN", "HITL_CLAIM_IDLE_S"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-doctor")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SECRET)
    monkeypatch.setenv("SLACK_API_URL", emu.api_url)
    monkeypatch.setenv("REDIS_URL", own_redis.url)
    monkeypatch.setenv("HITL_PREFIX", "doc")
    monkeypatch.setenv("HITL_POLICY", str(policy))
    return monkeypatch


async def run() -> tuple[int, list[Check], str]:
    lines: list[str] = []
    code = await doctor(as_json_output=True, out=lines.append)
    report = json.loads(lines[0])
    assert report["ok"] is (code == 0)
    return code, [Check(c["name"], Status(c["status"]), c["detail"], c["fix"])
                  for c in report["checks"]], lines[0]


def only(checks: list[Check], name: str) -> Check:
    [found] = [c for c in checks if c.name == name]
    return found


def problems(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks if c.status is not Status.ok}


async def test_a_healthy_setup_passes_every_check(env: pytest.MonkeyPatch) -> None:
    code, checks, _ = await run()
    assert code == 0 and problems(checks) == {}
    names = [c.name for c in checks]
    assert names == [
        "policy", "config.signing_secret", "slack.auth", "slack.clock", "slack.scopes",
        "slack.channel #approvals", "slack.channel #approvals-high", "slack.channel #approvals-leads",
        "slack.usergroup S0MANAGERS", "slack.user U0BOB", "slack.user U0ALICE", "slack.user U0ADMIN",
        "redis.server", "redis.persistence", "redis.eviction", "redis.group"]
    assert "bot @hitl" in only(checks, "slack.auth").detail
    assert "Redis 7" in only(checks, "redis.server").detail or "Redis 6" in only(checks, "redis.server").detail
    assert only(checks, "slack.usergroup S0MANAGERS").detail == "readable, 2 members"


async def test_missing_scopes_say_which_and_for_what(env: pytest.MonkeyPatch, emu: Emulator) -> None:
    emu.scopes = emu.scopes - {"chat:write", "usergroups:read"}
    code, checks, _ = await run()
    assert code == 1
    scope_lines = [c for c in checks if c.name == "slack.scopes"]
    assert {c.status for c in scope_lines} == {Status.error}
    text = " | ".join(c.detail for c in scope_lines)
    assert "missing chat:write, needed by chat.delete, chat.postEphemeral, chat.postMessage" in text
    assert "missing usergroups:read, needed by usergroups.users.list" in text
    assert all("reinstall the app" in c.fix for c in scope_lines)
    group = only(checks, "slack.usergroup S0MANAGERS")  # and the group it cannot read
    assert group.status is Status.error and "missing_scope" in group.detail
    assert "usergroups:read" in group.fix


async def test_channels_the_bot_is_not_in(env: pytest.MonkeyPatch, emu: Emulator) -> None:
    emu.add_channel("approvals-leads-private", "G0LEADS", is_private=True)
    emu.leave("G0LEADS")
    emu.leave("C0APPROVALS")  # public: the bot joins it itself
    emu.ws.channels.pop("C0APPRHIGH")  # gone
    policy = Path(os.environ["HITL_POLICY"])
    policy.write_text(POLICY.replace('"#approvals-leads"', "G0LEADS"))
    code, checks, _ = await run()
    assert code == 1
    bad = problems(checks)
    assert set(bad) == {"slack.channel #approvals-high", "slack.channel G0LEADS"}, bad
    assert "no channel #approvals-high" in bad["slack.channel #approvals-high"].detail
    assert "private and the bot is not a member" in bad["slack.channel G0LEADS"].detail
    assert bad["slack.channel G0LEADS"].fix == (
        "invite the bot: type /invite @hitl in #approvals-leads-private")
    assert "joins it itself" in only(checks, "slack.channel #approvals").detail
    emu.scopes = emu.scopes - {"channels:join"}  # now it may not join
    _, checks, _ = await run()
    public = only(checks, "slack.channel #approvals")
    assert public.status is Status.error and "no channels:join" in public.detail


async def test_groups_and_people_that_do_not_work(env: pytest.MonkeyPatch, emu: Emulator) -> None:
    emu.add_usergroup("nobody", [], "S0EMPTY")
    emu.ws.users["U0BOB"].deleted = True
    Path(os.environ["HITL_POLICY"]).write_text(
        POLICY.replace("S0MANAGERS", "S0EMPTY, S0NOPE").replace("U0ADMIN", "U0GHOST"))
    code, checks, _ = await run()
    assert code == 1
    bad = problems(checks)
    assert "no members" in bad["slack.usergroup S0EMPTY"].detail
    assert "no_such_subteam" in bad["slack.usergroup S0NOPE"].detail
    assert "admin: users.info failed: user_not_found" in bad["slack.user U0GHOST"].detail
    assert "deactivated" in bad["slack.user U0BOB"].detail
    assert set(bad) == {"slack.usergroup S0EMPTY", "slack.usergroup S0NOPE", "slack.user U0GHOST",
                        "slack.user U0BOB"}


async def test_signing_secret_token_and_policy(env: pytest.MonkeyPatch) -> None:
    env.delenv("SLACK_SIGNING_SECRET")
    env.setenv("SLACK_BOT_TOKEN", "xoxb-revoked")
    code, checks, _ = await run()
    assert code == 1
    assert only(checks, "config.signing_secret").status is Status.error
    auth = only(checks, "slack.auth")
    assert auth.status is Status.error and "invalid_auth" in auth.detail and "reinstall" in auth.fix
    assert not [c for c in checks if c.name.startswith("slack.channel")]  # nothing past a bad token
    env.setenv("SLACK_APP_TOKEN", "xapp-1")  # Socket Mode needs no signing secret
    Path(os.environ["HITL_POLICY"]).write_text("tiers: {x: {mode: nope}}")
    _, checks, _ = await run()
    assert only(checks, "config.signing_secret").status is Status.ok
    assert only(checks, "policy").status is Status.error


async def test_clock_skew_against_slacks_date_header(env: pytest.MonkeyPatch, emu: Emulator) -> None:
    emu.clock = lambda: time.time() - 600  # Slack's clock 10 minutes behind this machine's
    code, checks, _ = await run()
    clock = only(checks, "slack.clock")
    assert code == 1 and clock.status is Status.error
    assert "ahead of Slack" in clock.detail and "timedatectl" in clock.fix
    emu.clock = lambda: time.time() + 60
    _, checks, _ = await run()
    assert only(checks, "slack.clock").status is Status.warn


async def test_redis_that_would_evict_or_forget(env: pytest.MonkeyPatch, rds: aioredis.Redis) -> None:
    await rds.config_set("maxmemory-policy", "allkeys-lru")
    await rds.config_set("appendonly", "no")
    code, checks, _ = await run()
    assert code == 1
    bad = problems(checks)
    assert set(bad) == {"redis.eviction", "redis.persistence"}, bad
    assert "allkeys-lru" in bad["redis.eviction"].detail
    assert "CONFIG SET maxmemory-policy noeviction" in bad["redis.eviction"].fix
    assert "nothing is kept on disk" in bad["redis.persistence"].detail
    assert "CONFIG SET appendonly yes" in bad["redis.persistence"].fix
    await rds.config_set("save", "900 1")  # snapshots only: works, loses the last minutes
    await rds.config_set("maxmemory-policy", "noeviction")
    code, checks, _ = await run()
    assert code == 0 and only(checks, "redis.persistence").status is Status.warn


async def test_redis_that_does_not_answer(env: pytest.MonkeyPatch) -> None:
    env.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    code, checks, _ = await run()
    server = only(checks, "redis.server")
    assert code == 1 and server.status is Status.error and "cannot reach Redis" in server.detail
    assert checks[-1] is not None and not [c for c in checks if c.name == "redis.eviction"]


async def test_the_consumer_groups_stuck_entries(env: pytest.MonkeyPatch, rds: aioredis.Redis) -> None:
    entry = await rds.xadd("doc:requests", {"request": "{}"})
    await rds.xreadgroup(GROUP, "replica-gone", {"doc:requests": ">"})
    code, checks, _ = await run()
    assert only(checks, "redis.group").detail == "doc:requests: 1 entries, 1 pending, 0 not yet read"
    await rds.xclaim("doc:requests", GROUP, "replica-gone", 0, [entry], idle=3_600_000)
    code, checks, _ = await run()
    group = only(checks, "redis.group")
    assert code == 0 and group.status is Status.warn
    assert "held by replica-gone (1)" in group.detail and "hitl run" in group.fix
    await rds.delete("doc:requests")
    _, checks, _ = await run()
    assert "no stream yet" in only(checks, "redis.group").detail


async def test_cli_text_and_json(env: pytest.MonkeyPatch, emu: Emulator) -> None:
    emu.scopes = emu.scopes - {"chat:write"}
    for args in ([], ["--json"]):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli", "doctor", *args, env=dict(os.environ),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 1, err.decode()
        if args:
            report = json.loads(out)
            assert report["ok"] is False
            assert {"name", "status", "detail", "fix"} == set(report["checks"][0])
        else:
            line = next(x for x in out.decode().splitlines() if x.startswith("ERROR slack.scopes"))
            assert "missing chat:write" in line and "-> fix: add it" in line


def test_the_scopes_the_code_needs_agree_with_the_manifest_test() -> None:
    from tests.test_manifest import scan_calls

    calls, _ = scan_calls()
    assert set(called_methods()) == set(calls)
    assert {"chat.postMessage", "users.info", "usergroups.users.list"} <= set(calls)
    assert missing_scopes({"chat:write"}) and not missing_scopes(
        {s for spec in called_methods().values() for s in spec.bot_scopes} | {"commands"})


async def test_a_malformed_environment_is_one_error_line(env: pytest.MonkeyPatch) -> None:
    env.setenv("SLACK_BOT_TOKEN", "xoxp-a-user-token")
    env.setenv("REDIS_URL", "localhost:6379")
    code, checks, _ = await run()
    [config] = checks
    assert code == 1 and config.name == "config" and config.status is Status.error
    assert "SLACK_BOT_TOKEN: must be a bot token" in config.detail and "REDIS_URL" in config.detail

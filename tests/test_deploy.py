"""deploy/: the container entry point and the systemd unit run the commands they say they run.

No container runtime is needed: the entry point script runs here, with the venv's `hitl` on
PATH, against the emulator and a private redis-server. The systemd unit is checked by
`systemd-analyze verify` (when installed) with its paths pointed at this checkout.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bot.cli import _parser
from emulator import Emulator
from tests.redis_server import free_port

REPO = Path(__file__).resolve().parent.parent
ENTRYPOINT = REPO / "deploy" / "entrypoint.sh"
UNIT = REPO / "deploy" / "hitl.service"
DOCKERFILE = REPO / "deploy" / "Dockerfile"
SECRET = "0123456789abcdef0123456789abcdef"
HITL = Path(sys.executable).with_name("hitl")


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(signing_secret=SECRET, request_url=None, bot_token="xoxb-deploy") as e:
        yield e


def environment(emu: Emulator, redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "HITL_"))}
    return {**env, "PATH": f"{HITL.parent}:{env.get('PATH', '')}", "SLACK_BOT_TOKEN": "xoxb-deploy",
            "SLACK_SIGNING_SECRET": SECRET, "SLACK_API_URL": emu.api_url, "REDIS_URL": redis_url,
            "HITL_HOST": "127.0.0.1", "HITL_CONSUMER": "deploy-test", **extra}


async def entrypoint(env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "sh", str(ENTRYPOINT), *args, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_entrypoint_runs_hitl_commands(emu: Emulator, redis_url: str) -> None:
    code, out = await entrypoint(environment(emu, redis_url), "doctor")
    assert code == 0, out
    assert "ok    slack.auth: the token works" in out and "redis.eviction" in out
    emu.scopes = emu.scopes - {"chat:write"}
    code, out = await entrypoint(environment(emu, redis_url), "doctor", "--json")
    assert code == 1 and '"ok": false' in out


async def test_entrypoint_strict_does_not_start_a_broken_setup(emu: Emulator, redis_url: str) -> None:
    env = environment(emu, redis_url, HITL_DOCTOR="strict", HITL_PORT=str(free_port()))
    env["SLACK_BOT_TOKEN"] = "xoxb-wrong"
    code, out = await entrypoint(env, "run")
    assert code == 1
    assert "invalid_auth" in out and "not starting (HITL_DOCTOR=strict)" in out
    code, out = await entrypoint({**env, "HITL_DOCTOR": "maybe"})
    assert code == 2 and "must be warn, strict or off" in out


async def test_entrypoint_run_checks_then_serves_and_stops_on_sigterm(
        emu: Emulator, redis_url: str) -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        "sh", str(ENTRYPOINT), env=environment(emu, redis_url, HITL_PORT=str(port)),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(600):  # until /healthz answers (the doctor runs first)
                assert proc.returncode is None, "hitl run exited early"
                try:
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            else:
                pytest.fail("hitl run never answered /healthz")
        proc.send_signal(signal.SIGTERM)  # `exec`: the signal reaches hitl run itself
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, out.decode()
    assert "checks: 0 errors" in out.decode()


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def test_systemd_unit_commands_are_hitl_commands() -> None:
    unit = unit_settings()
    for key in ("ExecStart", "ExecStartPre"):
        [command] = unit[key]
        argv = shlex.split(command.lstrip("-"))
        assert argv[0] == "/opt/hitl/.venv/bin/hitl", argv
        _parser().parse_args(argv[1:])  # SystemExit if hitl would not accept them
    assert shlex.split(unit["ExecStart"][0])[1:] == ["run"]
    assert unit["KillSignal"] == ["SIGTERM"] and unit["EnvironmentFile"] == ["/etc/hitl/hitl.env"]


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_systemd_unit_verifies(tmp_path: Path) -> None:
    """`systemd-analyze verify` on the unit with its paths pointed at this checkout's venv."""
    text = (UNIT.read_text().replace("/opt/hitl/.venv/bin/hitl", str(HITL))
            .replace("/opt/hitl", str(REPO)).replace("/etc/hitl/hitl.env", "/dev/null")
            .replace("User=hitl", "User=root").replace("Group=hitl", "Group=root"))
    local = tmp_path / "hitl.service"
    local.write_text(text)
    done = subprocess.run(["systemd-analyze", "verify", str(local)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    broken = tmp_path / "broken.service"  # and the check can fail
    broken.write_text(text.replace(f"ExecStart={HITL}", "ExecStart=relative/hitl"))
    assert subprocess.run(["systemd-analyze", "verify", str(broken)], capture_output=True,
                          timeout=60, check=False).returncode != 0


def test_dockerfile_uses_the_entrypoint_and_installs_the_sdk_when_present() -> None:
    text = DOCKERFILE.read_text()
    assert 'ENTRYPOINT ["hitl-entrypoint"]' in text and 'CMD ["run"]' in text
    assert "install -m 0755 deploy/entrypoint.sh /usr/local/bin/hitl-entrypoint" in text
    assert "if [ -d sdk ]; then pip install ./sdk; fi" in text
    assert os.access(ENTRYPOINT, os.X_OK)

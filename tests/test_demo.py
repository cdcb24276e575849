"""`hitl demo`: Redis found or started, everything it starts is stopped, clear failures."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
import redis

import bot.cli
import bot.demo
from bot.demo import DEMO_REQUESTS, Demo, report_line
from bot.evidence.signing import load_signer
from store.models import Change, Choice, Decision, Status, Vote
from tests.redis_server import RedisServer, free_port
from tests.util import eventually

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def test_demo_runs_the_loop_and_stops_everything(redis_url: str) -> None:
    lines: list[str] = []
    before = asyncio.all_tasks()
    async with Demo(redis_url=redis_url, port=0, out=lines.append) as d:
        assert d.private_redis is None and d.redis_url == redis_url
        page_port, bot_port = d.emu.url.rsplit(":", 1)[1], d.bot.port
        async with aiohttp.ClientSession() as http, http.get(d.url) as r:
            assert r.status == 200 and "user-switcher" in await r.text()
        assert set(d.agent.ids) == {r["id"] for r in DEMO_REQUESTS}
        lookup = await d.client.wait(d.agent.ids["demo-lookup"], timeout=5)
        assert lookup.status is Status.auto_approved and lookup.route is not None
        assert lookup.route.mode.value == "auto"

        async def cards() -> bool:  # Slack's pace: one message per second per channel
            return len(d.emu.messages("#approvals")) == 4 and len(d.emu.messages("#approvals-high")) == 2

        await eventually(cards, 10, "the demo's cards")  # the rest wait for people
        assert any("5 requests" in m["text"] for m in d.emu.messages("#approvals"))  # one batch
        deletion = await d.bot.store.get(d.agent.ids["demo-delete"])
        assert deletion.route.tier == "high" and deletion.route.approvers == ["S0MANAGERS"]
        assert deletion.route.quorum == 2
        legal = await d.bot.store.get(d.agent.ids["demo-legal"])
        assert legal.route.mode.value == "escalate"
        await eventually(lambda: asyncio.sleep(0, any("agent got: demo-lookup" in x for x in lines)),
                         5, "the agent's report")
    text = "\n".join(lines)
    assert f"open {d.url}" in text and "act as Carol" in text
    assert not _listening(int(page_port)) and not _listening(bot_port)
    assert asyncio.all_tasks() - before <= {asyncio.current_task()}


async def test_a_private_redis_server_unless_redis_url_is_set(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    lines: list[str] = []
    async with Demo(port=0, agent=False, out=lines.append) as d:
        server = d.private_redis
        assert server is not None and d.redis_url == server.url != redis_url
        assert server.proc.poll() is None and await d.bot.store.ping()
    assert server.proc.poll() is not None and not Path(server.dir).exists()
    assert any(f"Redis {server.url} (a private redis-server" in x for x in lines), lines
    monkeypatch.setenv("REDIS_URL", redis_url)  # explicit: used, and said so
    lines.clear()
    async with Demo(port=0, agent=False, out=lines.append) as d:
        assert d.private_redis is None and d.redis_url == redis_url
    assert any(f"Redis {redis_url} (yours, from REDIS_URL" in x for x in lines), lines


async def test_an_explicit_redis_url_that_does_not_answer_is_a_clear_error() -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(SystemExit, match=rf"(?s)REDIS_URL={nowhere}: nothing answers there.*unset REDIS_URL"):
        async with Demo(redis_url=nowhere, port=0, agent=False, out=lambda line: None):
            pass


async def test_no_redis_url_and_no_redis_server_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setattr(bot.demo.shutil, "which", lambda name: None)
    with pytest.raises(SystemExit, match=r"(?s)needs Redis.*apt-get install redis-server.*REDIS_URL"):
        async with Demo(port=0):
            pass


async def test_a_busy_port_is_a_clear_error(redis_url: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(SystemExit, match=r"try another port: \./run demo --port 8081"):
            async with Demo(redis_url=redis_url, port=port, out=lambda line: None):
                pass


def test_the_agent_s_line_names_each_person_once_and_the_fields_they_edited() -> None:
    def vote(name: str, choice: Choice) -> Vote:
        return Vote(user_id=f"U0{name.upper()}", name=name, choice=choice, at=NOW)

    resolved = Decision(request_id="r", status=Status.resolved, decided_at=NOW, reason="Called them.",
                        decided_by=[vote("bob", Choice.take_over), vote("bob", Choice.resolve)])
    assert report_line(resolved) == "resolved (bob): Called them."
    edited = Decision(request_id="r", status=Status.approved, decided_at=NOW,
                      decided_by=[vote("alice", Choice.approve)],
                      changes={"subject": Change(before="Your shipment", after="On its way")})
    assert report_line(edited) == "approved (alice) with edits: subject"
    quorum = Decision(request_id="r", status=Status.approved, decided_at=NOW,
                      decided_by=[vote("alice", Choice.approve), vote("bob", Choice.approve)])
    assert report_line(quorum) == "approved (alice, bob)"
    assert report_line(Decision(request_id="r", status=Status.auto_approved, decided_at=NOW)) == (
        "auto_approved (policy)")


async def test_the_demo_signs_audit_checkpoints_with_a_throwaway_key(
        redis_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    for name in bot.demo.KEY_VARS:
        monkeypatch.delenv(name, raising=False)
    lines: list[str] = []
    async with Demo(redis_url=redis_url, port=0, agent=False, out=lines.append) as d:
        assert d.key is not None and os.environ["HITL_AUDIT_KEY_FILE"] == str(d.key.path)
        signer = load_signer(d.key.path, None)
        assert signer is not None and signer.key_id == d.key.key_id
        assert d.key.path.stat().st_mode & 0o077 == 0  # only its owner reads it

        async def signing() -> bool:
            status = await d.bot.store.chain.status()
            return status is not None and status.signing

        await eventually(signing, 10, "the sealer reporting that it signs")
    assert "checkpoints are OFF" not in caplog.text
    assert any(f"audit checkpoints signed with a throwaway key, id {d.key.key_id}" in x for x in lines), lines
    assert not Path(d.key.dir).exists() and "HITL_AUDIT_KEY_FILE" not in os.environ

    monkeypatch.setenv("HITL_AUDIT_KEY", base64.b64encode(bytes(range(32))).decode())  # one's own key: used
    lines.clear()
    async with Demo(redis_url=redis_url, port=0, agent=False, out=lines.append) as d:
        assert d.key is None and "HITL_AUDIT_KEY_FILE" not in os.environ
    assert any("audit checkpoints signed with your key" in x for x in lines), lines


@pytest.mark.parametrize("stop", ["ctrl-c", "hangup"])
async def test_hitl_demo_stops_on_ctrl_c_and_leaves_nothing_running(stop: str) -> None:
    """Ctrl-C in a terminal signals the whole foreground process group (here: a session of the
    demo's own); closing the terminal sends SIGHUP. The bot stops before its Redis does, so it
    finishes its work without losing the server under it, and nothing is left running."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}  # a private redis-server
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "demo", "--port", "0", env=env, start_new_session=True,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(20):
            while not any("agent got: demo-lookup" in x for x in lines):
                line = (await proc.stdout.readline()).decode()
                assert line, f"hitl demo exited early: {''.join(lines)}"
                lines.append(line)
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")  # Linux: the redis-server
        for child in children.read_text().split() if children.exists() else ():
            assert os.getpgid(int(child)) != proc.pid, "Ctrl-C would stop the Redis under the bot"
        if stop == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGHUP)
        rest, _ = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    out = "".join(lines) + rest.decode()
    assert proc.returncode == 0, out
    assert "hitl demo is running: open http://127.0.0.1:" in out and "stopped" in out
    redis_line = next(x for x in lines if x.strip().startswith("Redis redis://"))
    assert "private" in redis_line
    redis_port = int(redis_line.split("redis://127.0.0.1:")[1].split("/")[0])
    page_port = int(out.split("open http://127.0.0.1:")[1].split("/")[0])
    assert not _listening(redis_port) and not _listening(page_port)
    assert "Redis unavailable" not in out  # the server was not stopped under the bot


@pytest.mark.parametrize("port", ["-1", "70000", "http"])
def test_a_port_that_is_not_one_is_a_usage_error_not_a_traceback(
        port: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        bot.cli.main(["demo", "--port", port])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "hitl demo: error: argument --port:" in err and "Traceback" not in err


async def test_the_bot_s_settings_in_the_user_s_shell_do_not_reach_the_demo(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Someone who runs hitl for real has its variables exported: none may change the demo."""
    for name, value in {"SLACK_APP_TOKEN": "xapp-1-A0-1-real", "HITL_REDIS_WAIT_REPLICAS": "1",
                        "HITL_POST_RATE": "0.01", "HITL_WEBHOOK_HOSTS": "hooks.example.com",
                        "HITL_CLAIM_IDLE_S": "0.001", "HITL_MAX_DELIVERIES": "1"}.items():
        monkeypatch.setenv(name, value)
    async with Demo(redis_url=redis_url, port=0, agent=False, out=lambda line: None) as d:
        s = d.bot.settings
        assert not s.socket_mode and s.slack_app_token is None  # not a Socket Mode bot
        assert (s.redis_wait_replicas, s.post_rate, s.webhook_hosts) == (0, 1.0, "")
        assert (s.claim_idle_s, s.max_deliveries) == (30.0, 5)


async def test_a_redis_url_whose_password_is_missing_or_wrong_says_so_and_never_shows_it() -> None:
    server = RedisServer()
    server.start()
    try:
        with redis.Redis(port=server.port) as r:
            r.config_set("requirepass", "s3cret-pw")
        base = f"127.0.0.1:{server.port}/0"
        for url, why in [(f"redis://{base}", "asks for a password"),
                         (f"redis://:wrong-pw@{base}", "refused the password")]:
            with pytest.raises(SystemExit) as exit_:
                async with Demo(redis_url=url, port=0, agent=False, out=lambda line: None):
                    pass
            assert why in str(exit_.value) and "nothing answers" not in str(exit_.value)
            assert "wrong-pw" not in str(exit_.value)
        lines: list[str] = []
        async with Demo(redis_url=f"redis://:s3cret-pw@{base}", port=0, agent=False, out=lines.append):
            pass
        assert any(f"Redis redis://:***@{base} (yours" in x for x in lines), lines
        assert "s3cret-pw" not in "\n".join(lines)
    finally:
        server.stop()



async def test_a_redis_cluster_or_a_malformed_redis_url_is_refused_in_words_not_a_traceback() -> None:
    url = "redis+cluster://:pw@127.0.0.1:7000,127.0.0.1:7001/"  # refused before it is asked anything
    with pytest.raises(SystemExit, match=r"(?s)is a Redis Cluster; the demo runs on one Redis server.*unset it") \
            as exit_:
        async with Demo(redis_url=url, port=0, agent=False, out=lambda line: None):
            pass
    assert ":pw@" not in str(exit_.value)
    with pytest.raises(SystemExit, match=r"(?s)REDIS_URL=http://127.0.0.1:6379: unknown scheme 'http'.*unset it"):
        async with Demo(redis_url="http://127.0.0.1:6379", port=0, agent=False, out=lambda line: None):
            pass

"""The `hitl` command as an operator meets it: a wrong REDIS_URL, a file in another
encoding, a decision a script must tell apart by exit code. Real processes, real redis-server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REQ = ["--agent", "a", "--action", "b", "--summary", "c"]


def _hitl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, timeout=90)


@pytest.mark.parametrize("url", ["redis://:s3cr3tpw@127.0.0.1:1/0", "rediss://user:s3cr3tpw@127.0.0.1:1/0"])
@pytest.mark.parametrize("command", [["keys", "list"], ["trust", "export"], ["audit", "export"], ["request", *REQ]])
def test_unreachable_redis_never_shows_the_password(url: str, command: list[str]) -> None:
    out = _hitl(*command, env={"REDIS_URL": url})
    assert out.returncode == 2, out.stderr
    assert "s3cr3tpw" not in out.stderr + out.stdout
    assert "Traceback" not in out.stderr and "cannot reach Redis" in out.stderr


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

"""The README's two commands: `./run demo` and `./run test`, and CI runs exactly the second."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = text.split("## Two commands", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.strip().splitlines()]


def test_the_readme_opens_with_the_two_commands_and_ci_runs_the_second() -> None:
    assert readme_commands() == ["./run demo", "./run test"]
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith("#")]
    assert ci[-1] == "exec ./run test"


def test_run_without_a_command_shows_its_usage() -> None:
    done = subprocess.run([str(REPO / "run"), "nonsense"], capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.returncode == 2
    assert re.search(r"\./run demo .*\n.*\./run test", done.stderr), done.stderr


def test_run_installs_the_sdk_when_the_folder_exists() -> None:
    text = (REPO / "run").read_text()
    assert "[ -d sdk ] && pkgs=(-e ./sdk" in text
    assert subprocess.run(["bash", "-n", str(REPO / "run")], timeout=30, check=False).returncode == 0


def _sandbox(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of `run` beside a pyproject.toml and ./sdk, with a .venv whose python only logs
    its arguments and whose hitl does nothing: `run` as it is, with no pip and no network."""
    (tmp_path / "run").write_text((REPO / "run").read_text())
    (tmp_path / "run").chmod(0o755)
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    (tmp_path / "sdk").mkdir()
    (tmp_path / "sdk" / "pyproject.toml").write_text('[project]\nname = "y"\n')
    bin_ = tmp_path / ".venv" / "bin"
    bin_.mkdir(parents=True)
    log = tmp_path / "python.log"
    for name, body in (("python", f'echo "$*" >> {log}'), ("pip", "exit 0"), ("hitl", "exit 0")):
        (bin_ / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_ / name).chmod(0o755)
    return tmp_path, log


def _run(where: Path, *args: str) -> None:
    env = {**os.environ, "REDIS_URL": "redis://127.0.0.1:1/0"}  # `demo` then needs no redis-server
    done = subprocess.run([str(where / "run"), *args], capture_output=True, text=True, env=env,
                          timeout=30, check=False)
    assert done.returncode == 0, done.stderr


def _pip_runs(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if line.startswith("-m pip")] if log.exists() else []


def test_a_venv_an_older_python_built_is_made_again(tmp_path: Path) -> None:
    """`run` kept any .venv with a python in it: one an older Python (3.10) built failed in pip
    instead of being made again with a Python run can use."""
    where, log = _sandbox(tmp_path)
    old = where / ".venv" / "bin" / "python"
    old.write_text(f'#!/bin/sh\necho "$*" >> {log}\ncase "$1" in -c) exit 1;; esac\n')  # "3.10"
    env = {**os.environ, "PIP_NO_INDEX": "1", "REDIS_URL": "redis://127.0.0.1:1/0"}
    done = subprocess.run([str(where / "run"), "install"], capture_output=True, text=True, env=env,
                          timeout=120, check=False)
    assert "replacing .venv: it does not run Python 3.11 or newer" in done.stderr, done.stderr
    assert "creating .venv with Python 3." in done.stderr
    assert not _pip_runs(log)  # the old venv's pip was never run


@pytest.mark.parametrize(("first", "then", "installs"), [
    ("demo", "demo", ["-m pip install -q -e ./sdk -e ."]),  # the plain install, once
    ("install", "install", ["-m pip install -q -e ./sdk -e .[dev]"]),  # the dev install, once
    ("install", "demo", ["-m pip install -q -e ./sdk -e .[dev]"]),  # dev covers the plain one
    ("demo", "install", ["-m pip install -q -e ./sdk -e .", "-m pip install -q -e ./sdk -e .[dev]"]),
])
def test_a_second_run_does_not_install_again(tmp_path: Path, first: str, then: str,
                                             installs: list[str]) -> None:
    where, log = _sandbox(tmp_path)
    _run(where, first)
    _run(where, then)
    assert _pip_runs(log) == installs
    (where / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "2"\n')
    _run(where, then)  # pyproject.toml changed: installed again
    assert len(_pip_runs(log)) == len(installs) + 1

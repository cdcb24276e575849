"""The README's two commands: `./run demo` and `./run test`, and CI runs exactly the second."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

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

"""scripts/derive_slack_reference.py: the project's Slack data, regenerated from a reference folder.

Runs the script on the tiny fixture in tests/fixtures/slack-reference (and on nothing else from
outside the repository), and checks that the shipped data is what the script writes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from emulator.reference import Reference, data_text, manifest_schema

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "derive_slack_reference.py"
FIXTURE = REPO / "tests" / "fixtures" / "slack-reference"
DATA = REPO / "emulator" / "data"


def derive(source: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), "--from", str(source), "--to", str(out)],
                          capture_output=True, text=True, check=False, timeout=30)


def test_derives_methods_schema_and_notices(tmp_path: Path) -> None:
    done = derive(FIXTURE, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "wrote 3 methods" in done.stdout
    methods = json.loads((tmp_path / "methods.json").read_text())
    assert methods == {  # the methods.json index is skipped; token is never required
        "auth.test": {"required": [], "tier": None, "bot": [], "user": [], "http": "POST"},
        "chat.postMessage": {"required": ["channel"], "tier": "t5", "bot": ["chat:write"],
                             "user": ["chat:write"], "http": "POST"},
        "search.messages": {"required": ["query"], "tier": "t2", "bot": [],
                            "user": ["search:read"], "http": "GET"},
    }
    schema = json.loads((tmp_path / "manifest.schema.json").read_text())
    assert schema == json.loads((FIXTURE / "manifest" / "manifest.schema.1.0.0.json").read_text())
    assert "(fixture)" in (tmp_path / "LICENSE-manifest-schema").read_text()
    assert "(fixture)" in (tmp_path / "LICENSE-slack-api-ref").read_text()
    notice = (tmp_path / "NOTICE.md").read_text()
    assert "MIT" in notice and "slackapi/manifest-schema" in notice and "3 methods" in notice
    ref = Reference.load(tmp_path / "methods.json")  # the emulator reads what it writes
    assert ref.methods["search.messages"].user_only
    assert ref.methods["auth.test"].tier == ""


def test_refuses_a_folder_that_is_not_a_reference(tmp_path: Path) -> None:
    done = derive(tmp_path / "nothing", tmp_path / "out")
    assert done.returncode == 1
    assert "manifest.schema.1.0.0.json is missing" in done.stderr
    assert not (tmp_path / "out").exists()


def test_shipped_data_is_in_the_scripts_format() -> None:
    """The shipped files carry their notices and have the shape the script writes."""
    methods = json.loads(data_text("methods.json"))
    assert len(methods) > 300
    assert all(set(e) == {"required", "tier", "bot", "user", "http"} for e in methods.values())
    for name in ("NOTICE.md", "LICENSE-manifest-schema", "LICENSE-slack-api-ref"):
        assert "MIT" in (DATA / name).read_text(), name
    assert manifest_schema()["$schema"].startswith("http://json-schema.org/draft-07/")


def test_nothing_reads_outside_the_repository() -> None:
    """No code or test looks for the reference data beside the checkout."""
    # the names looked for, assembled so this file does not contain them itself
    outside = ("slack" + "-reference", ".." + "/shared")
    offenders = []
    for pkg in ("bot", "handlers", "blocks", "store", "emulator", "tests", "bench"):
        for path in (REPO / pkg).rglob("*.py"):
            text = path.read_text()
            if path.name != Path(__file__).name and any(name in text for name in outside):
                offenders.append(str(path.relative_to(REPO)))
    assert not offenders, f"these files look outside the repository: {offenders}"

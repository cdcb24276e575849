"""Exports: verified offline by the stand-alone script and by `hitl audit verify --file`."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bot.evidence.sealer import Sealer
from bot.evidence.signing import Signer, public_pem
from store.chain import ChainStore
from store.models import Choice
from store.redis_store import Store
from tests.audit_util import decide, hitl

SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "verify_audit_export.py"



@pytest.fixture
def env(redis_url: str, signer: Signer) -> dict[str, str]:
    seed = signer.private.private_bytes_raw()
    return {"REDIS_URL": redis_url, "HITL_PREFIX": "hitl", "HITL_AUDIT_KEY": base64.b64encode(seed).decode()}


@pytest.fixture
def pubkey(tmp_path: Path, signer: Signer) -> Path:
    p = tmp_path / "pub.pem"
    p.write_text(public_pem(signer.public))
    return p


async def history(store: Store, signer: Signer, n: int = 4) -> Sealer:
    """n decided requests (about 7 audit entries each), sealed and checkpointed."""
    for i in range(n):
        await decide(store, f"r{i}", Choice.approve if i % 2 else Choice.reject, reason="no", reason_code="other")
    sealer = Sealer(ChainStore(store.redis, "hitl"), signer)
    await sealer.seal_all()
    await sealer.checkpoint(force=True)
    return sealer


def offline(export: Path, pubkey: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), str(export), str(pubkey)], capture_output=True, text=True)


async def test_a_full_export_verifies_offline_with_the_public_key_only(
        store: Store, signer: Signer, env: dict[str, str], pubkey: Path, tmp_path: Path) -> None:
    await history(store, signer)
    out = tmp_path / "audit.jsonl"
    assert hitl(["audit", "export", "--out", str(out)], env).returncode == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert lines[0]["format"] == "hitl-audit-export" and lines[0]["version"] == 1
    assert [x["type"] for x in lines[1:]].count("checkpoint") == 1
    res = offline(out, pubkey)
    assert res.returncode == 0 and "intact" in res.stdout, res.stdout
    res = hitl(["audit", "verify", "--file", str(out), "--pubkey", str(pubkey)], {})
    assert res.returncode == 0, res.stdout


async def test_a_changed_export_fails_both_verifiers(
        store: Store, signer: Signer, env: dict[str, str], pubkey: Path, tmp_path: Path) -> None:
    await history(store, signer)
    out = tmp_path / "audit.jsonl"
    hitl(["audit", "export", "--out", str(out)], env, check=True)
    lines = out.read_text().splitlines()
    entry = json.loads(lines[3])
    entry["fields"]["actor"] = "U0MALLORY"
    lines[3] = json.dumps(entry)
    out.write_text("\n".join(lines) + "\n")
    res = offline(out, pubkey)
    assert res.returncode == 1 and f"seq {entry['seq']}" in res.stdout
    res = hitl(["audit", "verify", "--file", str(out), "--pubkey", str(pubkey)], {})
    assert res.returncode == 1 and f"first broken link at seq {entry['seq']}" in res.stdout


async def test_a_dropped_line_fails_offline(
        store: Store, signer: Signer, env: dict[str, str], pubkey: Path, tmp_path: Path) -> None:
    await history(store, signer)
    out = tmp_path / "audit.jsonl"
    hitl(["audit", "export", "--out", str(out)], env, check=True)
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[:4] + lines[5:]) + "\n")
    assert offline(out, pubkey).returncode == 1
    assert hitl(["audit", "verify", "--file", str(out), "--pubkey", str(pubkey)], {}).returncode == 1


async def test_csv_export_verifies(store: Store, signer: Signer, env: dict[str, str], pubkey: Path,
                                   tmp_path: Path) -> None:
    await history(store, signer)
    out = tmp_path / "audit.csv"
    hitl(["audit", "export", "--format", "csv", "--out", str(out)], env, check=True)
    assert out.read_text().startswith("type,seq,id,prev_hash,hash")
    res = hitl(["audit", "verify", "--file", str(out), "--pubkey", str(pubkey)], {})
    assert res.returncode == 0, res.stdout


async def test_an_empty_range_is_a_header_only(store: Store, signer: Signer, env: dict[str, str],
                                               tmp_path: Path) -> None:
    await history(store, signer, 1)
    for fmt in ("jsonl", "csv"):
        out = tmp_path / f"empty.{fmt}"
        res = hitl(["audit", "export", "--since", "2001-01-01", "--until", "2001-01-02", "--format", fmt,
                    "--out", str(out)], env)
        assert res.returncode == 0, res.stderr
        lines = out.read_text().splitlines()
        if fmt == "jsonl":
            assert len(lines) == 1 and json.loads(lines[0])["version"] == 1
        else:
            assert len(lines) == 2 and lines[0].startswith("type,") and '""version"": 1' in lines[1]


async def test_a_sub_range_runs_on_to_the_next_checkpoint(
        store: Store, signer: Signer, env: dict[str, str], pubkey: Path, tmp_path: Path) -> None:
    await history(store, signer)
    rows = await store.redis.xrange(store.keys.audit)
    ms = int(rows[5][0].split("-")[0])
    out = tmp_path / "part.jsonl"
    hitl(["audit", "export", "--since", str(ms), "--until", str(ms), "--out", str(out)], env, check=True)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    entries = [x for x in lines if x["type"] == "entry"]
    assert entries[0]["seq"] > 1 and lines[0]["prev"]["seq"] == entries[0]["seq"] - 1
    assert entries[-1]["seq"] == len(rows) and entries[-1].get("context") is True
    assert offline(out, pubkey).returncode == 0
    assert hitl(["audit", "verify", "--file", str(out), "--pubkey", str(pubkey)], {}).returncode == 0


async def test_a_request_export_checks_each_entry_but_says_what_it_cannot_prove(
        store: Store, signer: Signer, env: dict[str, str], pubkey: Path, tmp_path: Path) -> None:
    await history(store, signer)
    out = tmp_path / "r1.jsonl"
    hitl(["audit", "export", "--request", "r1", "--out", str(out)], env, check=True)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    entries = [x for x in lines if x["type"] == "entry"]
    assert entries and {e["fields"]["request_id"] for e in entries} == {"r1"}
    res = hitl(["audit", "verify", "--file", str(out), "--pubkey", str(pubkey)], {})
    assert res.returncode == 3 and "cannot be proven" in res.stdout
    entries[0]["fields"]["event"] = "approved"
    out.write_text("\n".join(json.dumps(x) for x in [lines[0], *entries]) + "\n")
    assert hitl(["audit", "verify", "--file", str(out), "--pubkey", str(pubkey)], {}).returncode == 1


async def test_live_verify_and_pubkey_from_the_command_line(
        store: Store, signer: Signer, env: dict[str, str], pubkey: Path) -> None:
    await history(store, signer, 2)
    res = hitl(["audit", "verify"], env)
    assert res.returncode == 0 and "chain intact" in res.stdout, res.stdout
    assert hitl(["audit", "pubkey"], env).stdout == pubkey.read_text()
    no_key = {k: v for k, v in env.items() if k != "HITL_AUDIT_KEY"}
    res = hitl(["audit", "verify"], no_key)
    assert res.returncode == 3 and "NOT SIGNED" in res.stdout
    res = hitl(["audit", "pubkey"], no_key)
    assert res.returncode == 1 and "checkpoints are off" in res.stderr


def test_bad_input_gets_one_clear_line(tmp_path: Path) -> None:
    junk = tmp_path / "junk.jsonl"
    junk.write_text("hello\n")
    res = hitl(["audit", "verify", "--file", str(junk)], {})
    assert res.returncode == 2 and "not a hitl audit export" in res.stderr and "Traceback" not in res.stderr
    res = hitl(["audit", "export", "--since", "yesterday-ish"], {})
    assert res.returncode == 2 and "is not a date" in res.stderr
    res = hitl(["audit", "pubkey"], {"HITL_AUDIT_KEY": "not base64!"})
    assert res.returncode == 2 and "HITL_AUDIT_KEY" in res.stderr and "Traceback" not in res.stderr


def test_a_malformed_export_row_is_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type": "header", "format": "hitl-audit-export", "version": 1, "request": null}\n'
                   '{"type": "entry", "id": "1-0"}\n')
    res = hitl(["audit", "verify", "--file", str(bad)], {})
    assert res.returncode == 2 and "malformed row" in res.stderr and "Traceback" not in res.stderr

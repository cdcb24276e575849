"""`hitl audit verify|export|archive|pubkey` and `hitl feedback export` (parsers stay light:
the work is imported only when a subcommand runs)."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

OUTCOMES = ["approved", "rejected", "answered", "resolved", "review_ok", "overridden"]


def add_parsers(sub: Any) -> None:
    audit = sub.add_parser("audit", help="the sealed audit trail: verify, export, archive, pubkey")
    a = audit.add_subparsers(dest="audit_command", required=True, metavar="SUBCOMMAND")
    v = a.add_parser("verify", help="check the live chain (or an export) and report the first broken link")
    v.add_argument("--file", help="verify an export file offline instead of the live chain")
    v.add_argument("--pubkey", action="append", default=[],
                   help="public key file (PEM or base64) to check signatures with; repeat for old keys")
    v.add_argument("--archive", metavar="URL", help="postgresql://...: also re-hash the archive and check that it "
                   "links up to the live chain (default HITL_AUDIT_ARCHIVE_URL)")
    e = a.add_parser("export", help="write sealed entries with their chain fields and checkpoints")
    _range(e)
    e.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    e.add_argument("--request", help="only this request's entries")
    e.add_argument("--out", help="file to write (default: stdout)")
    ar = a.add_parser("archive", help="copy sealed entries to PostgreSQL (append-only, idempotent)")
    ar.add_argument("--to", help="postgresql://... (default HITL_AUDIT_ARCHIVE_URL)")
    ar.add_argument("--trim-redis", action="store_true", help="after a verified copy, drop archived entries from Redis")
    ar.add_argument("--keep-days", type=float, help="with --trim-redis: keep the last N days in Redis "
                    "(default HITL_AUDIT_RETENTION_DAYS, else none)")
    ar.add_argument("--migrate", action="store_true", help="install or update the archive schema (as the owner)")
    ar.add_argument("--batch", type=int, default=500, help=argparse.SUPPRESS)
    p = a.add_parser("pubkey", help="print the public key of the checkpoint signing key")
    p.add_argument("--raw", action="store_true", help="base64 of the raw 32 bytes instead of PEM")
    fb = sub.add_parser("feedback", help="human decisions as training and eval data")
    f = fb.add_subparsers(dest="feedback_command", required=True, metavar="SUBCOMMAND")
    fe = f.add_parser("export", help="one JSONL record per human decision (docs/feedback.md)")
    _range(fe)
    fe.add_argument("--format", choices=["jsonl"], default="jsonl")
    fe.add_argument("--agent")
    fe.add_argument("--action")
    fe.add_argument("--outcome", choices=OUTCOMES)
    fe.add_argument("--pseudonymize", action="store_true",
                    help="reviewer ids as keyed HMAC pseudonyms (key: HITL_PSEUDONYM_KEY)")
    fe.add_argument("--out", help="file to write (default: stdout)")


def _range(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", help="ISO date/time (UTC unless given), epoch ms, or an age like 24h, 7d")
    p.add_argument("--until", help="same forms as --since (inclusive)")


def parse_time(text: str | None, now: float | None = None) -> int | None:
    """Epoch ms from an ISO date/time, epoch ms, or an age (`90m`, `24h`, `7d`); ValueError otherwise."""
    if text is None:
        return None
    now = time.time() if now is None else now
    if m := re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip()):
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        return int((now - float(m.group(1)) * unit) * 1000)
    if text.strip().isdigit():
        return int(text)
    try:
        at = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not a date, a time, epoch ms, or an age like 24h") from None
    return int((at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp() * 1000)


def run(args: argparse.Namespace) -> int:
    """Run an `audit` or `feedback` subcommand; its exit code."""
    from bot.evidence.signing import SigningKeyError

    try:
        if args.command == "feedback":
            return asyncio.run(_feedback(args))
        if args.audit_command == "pubkey":
            return _pubkey(args.raw)
        if args.audit_command == "verify" and args.file:
            return _verify_file(args.file, args.pubkey)
        return asyncio.run(_live(args))
    except SigningKeyError as e:
        from bot.config import ConfigError  # the settings framework is heavy: only on this path

        raise ConfigError(f"configuration error:\n  {e}") from None
    except ValueError as e:
        print(f"hitl: {e}", file=sys.stderr)
        return 2


def _keys(files: list[str]) -> list[Any]:
    from bot.evidence.config import load_evidence_settings
    from bot.evidence.signing import SigningKeyError, load_public

    keys = []
    for f in files:
        try:
            keys.append(load_public(Path(f).read_text()))
        except OSError as e:
            raise ValueError(f"--pubkey: cannot read {f}: {e.strerror or e}") from None
        except SigningKeyError as e:
            raise ValueError(f"--pubkey {f}: {e}") from None
    if not keys and (signer := load_evidence_settings().signer()) is not None:
        keys.append(signer.public)
    return keys


def _pubkey(raw: bool) -> int:
    import base64

    from bot.evidence.config import load_evidence_settings
    from bot.evidence.signing import NO_KEY, public_pem, raw_public

    signer = load_evidence_settings().signer()
    if signer is None:
        print(f"hitl: checkpoints are off: {NO_KEY}", file=sys.stderr)
        return 1
    print(base64.b64encode(raw_public(signer.public)).decode() if raw else public_pem(signer.public), end="\n" if raw else "")
    return 0


def _verify_file(path: str, pubkeys: list[str]) -> int:
    from bot.evidence.export import read_export
    from bot.evidence.offline import verify_rows
    from bot.evidence.signing import NO_KEY

    try:
        with open(path, encoding="utf-8") as fh:
            rows = read_export(fh)
    except OSError as e:
        raise ValueError(f"--file: cannot read {path}: {e.strerror or e}") from None
    except (ValueError, KeyError) as e:
        raise ValueError(f"--file {path}: not a hitl audit export ({e})") from None
    keys = _keys(pubkeys)
    try:
        report = verify_rows(rows, keys, NO_KEY + " and no --pubkey given")
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"--file {path}: not a hitl audit export (malformed row: {e!r})") from None
    print("\n".join(report.lines()))
    return report.exit_code


def _open(path: str | None) -> IO[str]:
    if path is None:
        return sys.stdout
    try:
        return open(path, "w", encoding="utf-8", newline="")
    except OSError as e:
        raise ValueError(f"--out: cannot write {path}: {e.strerror or e}") from None


async def _live(args: argparse.Namespace) -> int:
    from bot.config import load_settings
    from store.redis_store import Store

    settings = load_settings()
    store = Store.from_url(settings.redis_url, settings.prefix)
    chain = store.chain
    try:
        if args.audit_command == "verify":
            from bot.evidence.config import load_evidence_settings
            from bot.evidence.signing import NO_KEY
            from bot.evidence.verify import Cadence, verify_live

            ev = load_evidence_settings()
            keys = _keys(args.pubkey)
            report = await verify_live(chain, keys, NO_KEY + " and no --pubkey given",
                                       Cadence(int(ev.checkpoint_s * 1000), ev.checkpoint_every))
            if url := args.archive or ev.archive_url:
                from bot.evidence.archive import ArchiveError
                from bot.evidence.verify_archive import verify_archive

                try:
                    await verify_archive(url, chain, report, keys)
                except ArchiveError as e:
                    print(f"hitl: cannot verify the archive: {e}", file=sys.stderr)
                    return 2
            print("\n".join(report.lines()))
            return report.exit_code
        if args.audit_command == "export":
            return await _export(args, store, chain)
        return await _archive(args, chain)
    finally:
        await store.close()


async def _export(args: argparse.Namespace, store: Any, chain: Any) -> int:
    from bot.evidence.export import Writer, prev_link, range_rows, request_rows

    since, until = parse_time(args.since), parse_time(args.until)
    warn: list[str] = []
    cps = await chain.checkpoints()
    out = _open(args.out)
    try:
        w = Writer(out, args.format)
        if args.request:
            ids = [e.entry_id for e in await store.trail(args.request) if e.entry_id]
            rows = await request_rows(chain, ids, warn)
            w.header({"request": args.request, "prev": None})
        else:
            prev = await prev_link(chain, since)
            w.header({"since": since, "until": until, "request": None, "prev": {"seq": prev.seq, "hash": prev.hash}})
            rows = [r async for r in range_rows(chain, since, until, cps, prev.hash, warn)]
        for r in rows:
            w.row(r)
        if rows:
            lo, hi = rows[0].link.seq, rows[-1].link.seq
            for c in cps:
                if lo <= c.seq <= hi:
                    w.checkpoint(c)
    finally:
        if out is not sys.stdout:
            out.close()
    for line in warn:
        print(f"hitl: warning: {line}", file=sys.stderr)
    print(f"hitl: exported {len(rows)} entries", file=sys.stderr)
    return 0


async def _archive(args: argparse.Namespace, chain: Any) -> int:
    from bot.evidence.archive import ArchiveError, archive, trim
    from bot.evidence.config import load_evidence_settings

    async def progress(link: Any) -> None:
        print(f"hitl: archived through seq {link.seq}", file=sys.stderr, flush=True)

    ev = load_evidence_settings()
    url = args.to or ev.archive_url
    if not url:
        raise ValueError("audit archive: which database? give --to postgresql://... or set HITL_AUDIT_ARCHIVE_URL")
    signer = ev.signer()  # real checkpoints first (a forged row never takes their place)
    try:
        res = await archive(chain, url, batch=args.batch, migrate_schema=args.migrate, after_batch=progress,
                            keys=[signer.public] if signer else [])
    except ArchiveError as e:
        print(f"hitl: archive failed: {e}", file=sys.stderr)
        return 1
    print(f"archived {res.copied} new entries (archive holds through seq {res.last.seq if res.last else 0}), "
          f"{res.checkpoints} new checkpoints")
    if args.trim_redis:
        keep = args.keep_days if args.keep_days is not None else load_evidence_settings().retention_days
        print(f"trimmed {await trim(chain, keep)} archived entries from Redis")
    return 0


async def _feedback(args: argparse.Namespace) -> int:
    from bot.config import load_settings
    from bot.evidence.config import load_evidence_settings
    from bot.evidence.feedback import Filters, Pseudonyms, export_feedback
    from bot.evidence.redaction import Redactor
    from bot.policy import PolicyHolder
    from store.redis_store import Store

    settings, ev = load_settings(), load_evidence_settings()
    key = None
    if args.pseudonymize:
        if not ev.pseudonym_key:
            raise ValueError("--pseudonymize needs HITL_PSEUDONYM_KEY (a secret kept for later exports)")
        key = ev.pseudonym_key.encode()
    r = PolicyHolder(settings.policy)().policy.redact
    f = Filters(parse_time(args.since), parse_time(args.until), args.agent, args.action, args.outcome)
    store = Store.from_url(settings.redis_url, settings.prefix)
    out = _open(args.out)
    try:
        n = await export_feedback(store, out, f, Redactor(r.params, r.patterns), Pseudonyms(key))
    finally:
        await store.close()
        if out is not sys.stdout:
            out.close()
    print(f"hitl: exported {n} decisions", file=sys.stderr)
    return 0

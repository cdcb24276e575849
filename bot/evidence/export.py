"""`hitl audit export`: sealed entries with their chain fields and the checkpoints covering them.

JSONL: a header line (`format`, `version`, the range, the link before the first entry),
then one `entry` line per sealed entry (`seq`, `id`, `prev_hash`, `hash`, `fields` exactly
as stored) and one `checkpoint` line per signed checkpoint. CSV: the same rows as columns
(`fields` as canonical JSON), after a header row and a `header` row.

A range export (`--since/--until`) is contiguous and runs on past its end up to the next
signed checkpoint (those entries are marked `"context": true`), so every entry it carries is
covered by a signature. A `--request` export carries that request's entries only: each one
is checked against its own (prev_hash, hash), but neither completeness nor a signature can
be proven for entries whose neighbours are not in the file.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import IO, Any

from bot.evidence.canonical import canonical
from store.chain import ChainStore, next_id, parse_seal
from store.chain_models import Checkpoint, Link

FORMAT = "hitl-audit-export"
VERSION = 1
CSV_COLUMNS = ["type", "seq", "id", "prev_hash", "hash", "context", "fields", "time", "sig", "key", "meta"]
_UNSAFE = re.compile("[\u0085\u2028\u2029\ud800-\udfff]")
"""Characters written as JSON escapes in a JSONL line: line breaks to tools that split on more
than "\\n" (U+0085, U+2028, U+2029), and lone surrogates (bytes that were not UTF-8)."""


def jsonl(value: Any, default: Callable[[Any], Any] | None = None) -> str:
    """One JSONL line's JSON: UTF-8 text kept as it is, the characters above escaped."""
    return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(value, ensure_ascii=False, default=default))


@dataclass(frozen=True)
class Row:
    link: Link
    prev_hash: str
    fields: dict[str, str]
    context: bool = False

    def json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "entry", "seq": self.link.seq, "id": self.link.id,
                               "prev_hash": self.prev_hash, "hash": self.link.hash, "fields": self.fields}
        if self.context:
            out["context"] = True
        return out


def stream_id(ms: int | None, end: bool) -> str:
    if ms is None:
        return "+" if end else "-"
    return f"{ms}-{'18446744073709551615' if end else '0'}"


async def range_rows(chain: ChainStore, since_ms: int | None, until_ms: int | None,
                     cps: list[Checkpoint], prev: str, warn: list[str]) -> AsyncIterator[Row]:
    """Sealed entries in [since, until], then on to the next checkpoint as context."""
    last: Link | None = None
    async for page in chain.pages(chain.k.chain, stream_id(since_ms, False), stream_id(until_ms, True)):
        rows, prev = await _rows(chain, page, prev, warn)
        for row in rows:
            yield row
        last = next((x for x in (parse_seal(*r) for r in reversed(page)) if x is not None), last)
    if last is None or until_ms is None:
        return
    target = next((c.seq for c in cps if c.seq >= last.seq), None)
    if target is None or target == last.seq:
        return
    async for page in chain.pages(chain.k.chain, next_id(last.id)):
        rows, prev = await _rows(chain, page, prev, warn)
        for row in rows:
            if row.link.seq > target:
                return
            yield Row(row.link, row.prev_hash, row.fields, context=True)


async def prev_link(chain: ChainStore, since_ms: int | None) -> Link:
    """The link before a range's first entry (the chain's base when nothing precedes it)."""
    before = await chain.link_before(stream_id(since_ms, False)) if since_ms is not None else None
    return before or await chain.base()


async def _rows(chain: ChainStore, page: list[tuple[str, dict[str, str]]], prev: str,
                warn: list[str]) -> tuple[list[Row], str]:
    ids = [i for i, _ in page]
    entries = await chain.entries(ids)
    out = []
    for (entry_id, f), fields in zip(page, entries, strict=True):
        link = parse_seal(entry_id, f)
        if link is None:
            warn.append(f"the seal of entry {entry_id} is damaged: left out (run `hitl audit verify`)")
            continue
        if fields is None:
            warn.append(f"entry seq {link.seq} ({entry_id}) is sealed but missing from the audit stream")
        else:
            out.append(Row(link, prev, fields))
        prev = link.hash
    return out, prev


async def request_rows(chain: ChainStore, ids: list[str], warn: list[str]) -> list[Row]:
    """The sealed entries among `ids` (one request's trail), each with its own prev_hash."""
    rows = []
    links = await chain.links(ids)
    entries = await chain.entries(ids)
    for entry_id, link, fields in zip(ids, links, entries, strict=True):
        if link is None or fields is None:
            warn.append(f"entry {entry_id} is {'not sealed yet' if link is None else 'missing'}: left out")
            continue
        before = await chain.link_before(entry_id)
        rows.append(Row(link, before.hash if before else (await chain.base()).hash, fields))
    return rows


class Writer:
    """Writes the header, rows and checkpoints in one of the two formats."""

    def __init__(self, out: IO[str], fmt: str) -> None:
        self.fmt = fmt
        self.out = out
        self.csv = csv.writer(out) if fmt == "csv" else None
        if self.csv:
            self.csv.writerow(CSV_COLUMNS)

    def header(self, meta: dict[str, Any]) -> None:
        meta = {"type": "header", "format": FORMAT, "version": VERSION, **meta}
        if self.csv:
            self.csv.writerow(["header", "", "", "", "", "", "", "", "", "", json.dumps(meta)])
        else:
            self.out.write(json.dumps(meta) + "\n")

    def row(self, r: Row) -> None:
        if self.csv:
            self.csv.writerow(["entry", r.link.seq, r.link.id, r.prev_hash, r.link.hash,
                               "1" if r.context else "", canonical(r.fields).decode(), "", "", "", ""])
        else:
            self.out.write(jsonl(r.json()) + "\n")

    def checkpoint(self, c: Checkpoint) -> None:
        if self.csv:
            self.csv.writerow(["checkpoint", c.seq, "", "", c.hash, "", "", c.time, c.sig, c.key, ""])
        else:
            self.out.write(json.dumps({"type": "checkpoint", "seq": c.seq, "hash": c.hash, "time": c.time,
                                       "sig": c.sig, "key": c.key}) + "\n")


def read_export(lines: IO[str]) -> list[dict[str, Any]]:
    """The rows of an export file in either format, as JSONL-shaped dicts (ValueError if neither)."""
    first = lines.readline()
    if first.startswith("type,"):
        rows: list[dict[str, Any]] = []
        for rec in csv.DictReader(lines, fieldnames=CSV_COLUMNS):
            if rec["type"] == "header":
                rows.append(json.loads(rec["meta"]))
            elif rec["type"] == "entry":
                rows.append({"type": "entry", "seq": int(rec["seq"]), "id": rec["id"], "prev_hash": rec["prev_hash"],
                             "hash": rec["hash"], "fields": json.loads(rec["fields"]), "context": rec["context"] == "1"})
            elif rec["type"] == "checkpoint":
                rows.append({"type": "checkpoint", "seq": int(rec["seq"]), "hash": rec["hash"],
                             "time": int(rec["time"]), "sig": rec["sig"], "key": rec["key"]})
        return rows
    out = [json.loads(first)] if first.strip() else []
    out += [json.loads(x) for x in lines if x.strip()]
    if not out or out[0].get("format") != FORMAT:
        raise ValueError("not a hitl audit export (no header line)")
    return out

"""Text helpers for Block Kit: escaping untrusted text, truncation, and display formats.

Everything an agent sends is untrusted. Any of it that lands in mrkdwn goes through
`escape` (or `clip`, which escapes and truncates), so it can never form a mention
(`<!channel>`, `<@U..>`) or a disguised link (`<http://evil|bank.com>`).
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from store.bounds import MAX_NUMBER

ELLIPSIS = "…"

_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,30}$")
_ENTITY_TAIL = re.compile(r"&[a-z]{0,4}$")
_MONEY_WORDS = (
    "amount",
    "price",
    "cost",
    "total",
    "fee",
    "refund",
    "balance",
    "credit",
    "charge",
    "payment",
    "salary",
    "budget",
    "limit",
    "usd",
    "eur",
    "gbp",
)
_NUMBER_CHARS = 64  # 1e15 with commas and decimals fits; anything longer is refused unread
_RANGE = "Enter a number between -1,000,000,000,000,000 and 1,000,000,000,000,000."
_LENGTH = f"Enter a number of at most {_NUMBER_CHARS} characters; this one is longer."
_NUMBER = re.compile(r"^[+-]?(\d+|\d{1,3}(,\d{3})+)(\.\d+)?$|^[+-]?\.\d+$")
_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£"}


def escape(s: str) -> str:
    """`s` with `&`, `<` and `>` escaped, so it cannot form a mention, link or command in mrkdwn."""
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def truncate(s: str, n: int) -> str:
    """`s` cut to at most `n` characters, ending in an ellipsis when anything was cut.

    The one truncation helper of every surface: a cut never splits an `&amp;`-style entity
    or a `<...>` mention, date or link, so escaped text stays escaped exactly once."""
    if len(s) <= n:
        return s
    if n <= 0:
        return ""
    head = _ENTITY_TAIL.sub("", s[: n - 1])  # a cut "&am" would show as junk
    opened = head.rfind("<")
    if opened > head.rfind(">"):  # inside <@U1>, <!date^...|...> or <url|text>: cut before it
        head = head[:opened]
    return head.rstrip() + ELLIPSIS


def clip(s: str, n: int) -> str:
    """Untrusted `s` escaped and then cut to at most `n` characters (never splitting an entity).

    Only for raw agent text: text that is mrkdwn already goes through `truncate`."""
    return truncate(escape(s), n)


def label(key: str) -> str:
    """A param name for people: `order_id` -> `Order id`, `refundAmount` -> `Refund amount`
    (plain text: escape it for mrkdwn)."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", key).replace("_", " ").replace("-", " ").split()
    if not words:
        return key
    text = " ".join(w if w.isupper() and len(w) > 1 else w.lower() for w in words)
    return text[0].upper() + text[1:]


def is_user_id(user_id: str) -> bool:
    """Whether `user_id` looks like a Slack user id (`U…` or `W…`)."""
    return bool(_USER_ID.match(user_id))


def user_mention(user_id: str) -> str:
    """`<@U123>` for a valid Slack user id; anything else as escaped plain text (never a ping)."""
    return f"<@{user_id}>" if is_user_id(user_id) else escape(user_id)


def is_money_key(key: str) -> bool:
    """Whether a param name suggests a sum of money (`amount`, `refund_total`, ...)."""
    k = key.lower()
    return any(word in k for word in _MONEY_WORDS)


def fmt_number(v: float, *, money: bool = False) -> str:
    """A number for people: money with thousands separators and two decimals, others as is."""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if money:
        return f"{v:,.2f}"
    return str(v)  # ids and counts read wrong with separators: 1,234,567 is not an order id


def fmt_plain(v: Any, *, key: str = "", limit: int = 200) -> str:
    """A param value as unescaped text of at most `limit` chars, for plain_text places."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int | float):
        return truncate(fmt_number(v, money=is_money_key(key)), limit)
    if isinstance(v, str):
        return truncate(v, limit) if v else "(empty)"
    try:
        raw = json.dumps(v, separators=(",", ":"), ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        raw = str(v)
    return truncate(raw, limit)


def fmt_value(v: Any, *, key: str = "", limit: int = 200) -> str:
    """A param value as escaped mrkdwn of at most `limit` chars (yes/no, 1,200.00, compact JSON)."""
    return clip(fmt_plain(v, key=key, limit=limit), limit)


def fmt_amount(amount: float, currency: str | None) -> str:
    """`$250.00`, `€1,200.00`, `250.00 JPY`, or `250.00` without a currency (escaped)."""
    num = f"{amount:,.2f}"
    if not currency:
        return num
    symbol = _SYMBOLS.get(currency.upper())
    return f"{symbol}{num}" if symbol else f"{num} {escape(currency)}"


def fmt_confidence(confidence: float) -> str:
    """A 0..1 confidence as a whole percentage, e.g. `72%`."""
    return f"{round(confidence * 100)}%"


def fmt_duration(seconds: float) -> str:
    """A compact duration: `45s`, `12m`, `4h`, `4h 30m`, `2d 3h`."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        h, m = divmod(s // 60, 60)
        return f"{h}h {m}m" if m else f"{h}h"
    d, h = divmod(s // 3600, 24)
    return f"{d}d {h}h" if h else f"{d}d"


def _epoch(when: datetime | float) -> int:
    if isinstance(when, datetime):
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return int(when.timestamp())
    return int(when)


def _fallback(epoch: int) -> str:
    try:
        return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")
    except (ValueError, OverflowError, OSError):  # past year 9999: a card must still render
        return f"{epoch} seconds after 1970 (UTC)"


def fmt_time(when: datetime | float) -> str:
    """Slack date formatting in the reader's time zone, with a UTC fallback text."""
    e = _epoch(when)
    return f"<!date^{e}^{{date_short_pretty}} at {{time}}|{_fallback(e)}>"


def ago(when: datetime | float) -> str:
    """Slack's relative time (`2 minutes ago`) for a datetime or epoch seconds, UTC fallback."""
    e = _epoch(when)
    return f"<!date^{e}^{{ago}}|{_fallback(e)}>"


def parse_number(raw: Any, *, whole: bool) -> int | float:
    """A typed number as int (`whole`) or float; ValueError with words for people otherwise.

    Commas count only as thousands separators: `1,000` is 1000, `1,5` is refused (not 15).
    """
    message = "Enter a whole number." if whole else "Enter a number."
    s = str(raw or "").strip().replace(" ", "")
    if len(s) > _NUMBER_CHARS:  # checked before any conversion
        raise ValueError(_LENGTH)
    if not _NUMBER.match(s):
        raise ValueError(message)
    try:
        d = Decimal(s.replace(",", ""))
    except InvalidOperation as e:
        raise ValueError(message) from e
    if not d.is_finite() or abs(d) > Decimal(int(MAX_NUMBER)):
        raise ValueError(_RANGE)  # the bound requests are held to (store.bounds)
    if whole:
        if d != d.to_integral_value():
            raise ValueError(message)
        return int(d)
    return float(d)


def number_str(v: int | float) -> str:
    """A number as Slack's number_input takes it: digits, never an exponent."""
    if isinstance(v, int):
        return str(v)
    s = repr(v)
    return s if "e" not in s else format(Decimal(s), "f")

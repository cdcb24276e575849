"""One line per batch item: the summary once, then only the facts it does not already say.

Labels are humanised (`order_id` -> "Order id"), confidence is labelled, edited values are
shown in place ("$200.00, edited from $250.00") and the request id closes the line (small,
copyable, what `/hitl audit` takes). Agent text is escaped here, exactly once.
"""

from __future__ import annotations

from blocks.facts import current_params, hides_agent_view, reject_label, shown_value
from blocks.text import (
    clip,
    escape,
    fmt_amount,
    fmt_confidence,
    fmt_time,
    label,
    truncate,
    user_mention,
)
from store.models import Record

ITEM_LINE_MAX = 600
SUMMARY_MAX = 160
PARAMS_SHOWN = 2


def facts(record: Record) -> list[str]:
    """The item's facts not already in its summary: that it cannot be undone, amount, up to two
    params, confidence."""
    req = record.request
    params = current_params(record)
    summary = req.summary.lower()
    out = ["⚠️ cannot be undone"] if req.risk.reversible is False else []
    amount_param = next((k for k in params if k.lower() == "amount" and isinstance(params[k], int | float)
                         and not isinstance(params[k], bool)), None)
    if amount_param is not None and (amount_param in record.changes or params[amount_param] != req.risk.amount):
        out.append(f"Amount {shown_value(record, amount_param, params[amount_param])}")
    elif req.risk.amount is not None:
        money = fmt_amount(req.risk.amount, req.risk.currency)
        if money.lower() not in summary and f"{req.risk.amount:g}" not in summary:
            out.append(f"Amount {money}")
    shown = 0
    for key, value in params.items():
        if key == amount_param or shown >= PARAMS_SHOWN:
            continue
        plain = str(value).lower()
        if key not in record.changes and plain and len(plain) >= 3 and plain in summary:
            continue  # the summary says it already
        out.append(f"{escape(label(key))}: {shown_value(record, key, value)}")
        shown += 1
    if req.confidence is not None and not hides_agent_view(record):
        out.append(f"confidence {fmt_confidence(req.confidence)}")
    return out


def item_line(record: Record, summary_max: int = SUMMARY_MAX, *, what: bool = False) -> str:
    """The item's one line of mrkdwn: summary (the agent's words, cut to `summary_max`), facts,
    request id. `what`: the line also names the action and the agent (a card or list mixing
    them, where the title does not say what approving this item runs)."""
    req = record.request
    edited = " _(agent's summary; edited below)_" if record.changes else ""
    head = f"*{clip(req.summary, summary_max)}*{edited}"
    names = min(80, summary_max)  # shorter with the summary when a card's items do not fit
    doing = [f"*{clip(req.action, names)}* from {clip(req.agent, names)}"] if what else []
    tail = " · ".join([*doing, *facts(record), f"`{record.id}`"])
    return truncate(f"{head}\n{tail}", ITEM_LINE_MAX)


def mixes_actions(records: list[Record]) -> bool:
    """Whether `records` run more than one action or come from more than one agent (a shared
    `batch_key`): each item's line must then say which it runs (`item_line`'s `what`)."""
    return len({(r.request.agent, r.request.action) for r in records}) > 1


def strike(text: str) -> str:
    """Struck through line by line (Slack's `~` does not span lines)."""
    return "\n".join(f"~{line}~" if line.strip() else line for line in text.split("\n"))


def review_line(record: Record, summary_max: int = SUMMARY_MAX, *, what: bool = False) -> str:
    """A review batch item: its line (`item_line`), then who checked it and the verdict, once checked."""
    line = item_line(record, summary_max, what=what)
    rv = record.review
    if rv is None:
        return line
    if rv.verdict == "ok":
        return f"✅ {line}\nLooks right: {user_mention(rv.by.user_id)} at {fmt_time(rv.by.at)}"
    why = ": ".join(x for x in (reject_label(rv.reason_code, record), clip(rv.reason, 300) if rv.reason else None) if x)
    return (f"⚠️ {strike(line)}\nWas wrong: {user_mention(rv.by.user_id)} at {fmt_time(rv.by.at)}"
            + (f" — {why}" if why else ""))

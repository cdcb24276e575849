"""The loop's health in words: the `/hitl stats` reply and the metrics part of the App Home."""

from __future__ import annotations

from typing import Any

from blocks.kit import Block, context, fields, header, section
from blocks.text import clip, fmt_duration, truncate, user_mention
from blocks.trust import calibration_lines
from store.chain_models import ChainStatus
from store.stats import HUMAN_STATUSES, QUEUE_TREND_HOURS, Histogram, Report

MODES_SHOWN = ("auto", "audit", "shadow", "approve", "escalate", "deny")
MAX_REVIEWERS = 10
MAX_WARNINGS = 8
SPARK = "▁▂▃▄▅▆▇█"


def window_label(hours: int) -> str:
    """`24 hours`, `7 days`, `30 days`."""
    return f"{hours // 24} days" if hours > 48 else f"{hours} hours"


def seconds(x: float | None) -> str:
    """A duration for people: `1.5s` under ten seconds, then `45s`, `12m`, `4h 30m`."""
    if x is None:
        return "—"
    return f"{x:.1f}s" if x < 10 else fmt_duration(x)


def pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.0%}"


def _quantiles(h: Histogram) -> str:
    if not h.count:
        return "no data"
    return f"p50 {seconds(h.quantile(0.5))} · p90 {seconds(h.quantile(0.9))} ({h.count})"


def sparkline(values: list[int]) -> str:
    """`▁▃█▂`: one character per value, scaled to the largest."""
    top = max(values, default=0)
    if not top:
        return SPARK[0] * len(values)
    return "".join(SPARK[min(len(SPARK) - 1, round(v / top * (len(SPARK) - 1)))] for v in values)


def _routes(r: Report) -> str:
    parts = [f"{m} {r.by_mode[m]}" for m in MODES_SHOWN if r.by_mode.get(m)]
    parts += [f"{clip(m, 30)} {n}" for m, n in r.by_mode.items() if m not in MODES_SHOWN and n]
    text = " · ".join(parts) or "none"
    return text + (f" ({r.paused_routed} while paused)" if r.paused_routed else "")


def _queue(r: Report) -> str:
    trend = f"{r.queue_change:+d} in {QUEUE_TREND_HOURS}h"
    oldest = f", oldest waiting {seconds(r.oldest_wait_s)}" if r.oldest_wait_s is not None else ""
    return f"{r.queue_depth} waiting ({trend}){oldest}"


def metric_fields(r: Report) -> list[str]:
    """The key figures as mrkdwn fields (at most 10, a Slack section's limit)."""
    d = r.decisions
    human = (f"{r.human_decisions}: approved {pct(r.rate('approved'))} · rejected "
             f"{pct(r.rate('rejected'))} · edited {pct(r.edit_rate)}")
    others = [f"{s} {n}" for s, n in sorted(d.items()) if s not in HUMAN_STATUSES
              and s != "expired" and n]
    return [
        f"*Requests*\n{r.requests}: {_routes(r)}",
        f"*Escalation rate* (target 10-30%)\n{pct(r.escalation_rate)} sent to people",
        f"*Decisions by people*\n{human}",
        f"*Override rate* (edited or rejected)\n{pct(r.override_rate)}" + _after_the_fact(r),
        f"*Time to decision*\n{_quantiles(r.ttd)}",
        f"*Time to escalate* (target &lt; 10s)\n{_quantiles(r.tte)}",
        f"*Expired*\n{d.get('expired', 0)}" + (f" · {', '.join(others)}" if others else ""),
        f"*Queue*\n{_queue(r)}",
    ]


def _after_the_fact(r: Report) -> str:
    """Checks of actions that ran alone, and shadow-mode agreement, when there were any."""
    out = ""
    if r.reviewed:
        out += f"\nchecked afterwards {r.reviewed}, found wrong {r.overridden}"
    if r.shadow:
        out += f"\nshadow: agreed with the agent {pct(r.shadow_agreed / r.shadow)} of {r.shadow}"
    return out


def warning_lines(r: Report) -> list[str]:
    """One line per warning sign that holds, or one line saying none does; then one line per
    sign that had too few events to judge (never "no warning signs" silently)."""
    few = [f":grey_question: {clip(s.text, 300)}" for s in r.too_few[:MAX_WARNINGS]]
    if not r.warnings:
        return [":white_check_mark: No warning signs in this window." if not few
                else "No warning sign holds among those with enough data.", *few]
    out = []
    for w in r.warnings[:MAX_WARNINGS]:
        who = f"{user_mention(w.user_id)}: " if w.user_id else ""
        out.append(f":warning: {who}{clip(w.text, 300)}")
    if len(r.warnings) > MAX_WARNINGS:
        out.append(f"and {len(r.warnings) - MAX_WARNINGS} more warning signs")
    return out + few


def _busiest(r: Report) -> str:
    actions = ", ".join(f"{clip(a, 60)} {n}" for a, n in r.top_actions) or "none"
    agents = ", ".join(f"{clip(a, 60)} {n}" for a, n in r.top_agents) or "none"
    return f"*Busiest actions:* {actions}\n*Busiest agents:* {agents}"


def _reviewers(r: Report) -> str:
    if not r.reviewers:
        return "*Reviewers:* nobody decided anything in this window."
    lines = ["*Reviewers* (decisions · median time to decide · approvals)"]
    for rv in r.reviewers[:MAX_REVIEWERS]:
        flag = " :warning:" if rv.rubber_stamp else ""
        lines.append(f"{user_mention(rv.user_id)} {rv.decisions} · {seconds(rv.median_s)} · "
                     f"{pct(rv.approval_rate)}{flag}")
    if len(r.reviewers) > MAX_REVIEWERS:
        lines.append(f"and {len(r.reviewers) - MAX_REVIEWERS} more")
    return "\n".join(lines)


def decisions_per_hour(r: Report) -> list[int]:
    return [sum(h.outcomes.values()) for h in r.series]


AUDIT_STALE_MS = 30_000


def audit_line(status: ChainStatus | None, now_ms: int) -> str:
    """The audit chain in one line: sealed how far, signed or not (never a silent unsigned ok)."""
    if status is None or now_ms - status.updated_at > AUDIT_STALE_MS:
        return (":warning: *Audit chain:* no sealer has reported in the last 30 s; new audit "
                "entries are not being sealed (`hitl run` seals them).")
    sealed = f"sealed through #{status.sealed_seq:,}"
    if status.alarm:
        return f":rotating_light: *Audit chain TAMPERED:* {clip(status.alarm, 600)} ({sealed})."
    if not status.signing:
        return f":warning: *Audit chain:* {sealed}, but checkpoints are OFF: {status.reason}."
    if status.checkpoint_seq is None or status.checkpoint_at is None:
        return f":lock: *Audit chain:* {sealed}; no signed checkpoint yet."
    ago = seconds(max(0, now_ms - status.checkpoint_at) / 1000)
    return (f":lock: *Audit chain:* {sealed}; last signed checkpoint #{status.checkpoint_seq:,}, "
            f"{ago} ago (`hitl audit verify`).")


def stats_message(r: Report, *, lag: int = 0, chart: bool = False, audit: str | None = None) -> dict[str, Any]:
    """`{"text", "blocks"}` of the `/hitl stats` reply for one window."""
    label = window_label(r.hours)
    blocks: list[Block] = [
        header(f"hitl stats: the last {label}"),
        fields(metric_fields(r)),
        section(_busiest(r)),
        section(_reviewers(r)),
        section("*Warning signs*\n" + "\n".join(warning_lines(r))),
        section(f"*Decisions per hour* `{sparkline(decisions_per_hour(r))}`"),
        *([section(audit)] if audit else []),
    ]
    if r.calibration:
        blocks.append(section(truncate("*Agent confidence vs. people* (all time)\n"  # mrkdwn already
                                       + "\n".join(calibration_lines(r.calibration)), 2900)))
    if r.canaries[0]:
        scored, caught = r.canaries
        per = ", ".join(f"{user_mention(u)} {ok}/{n}" for u, n, ok in r.canary_reviewers[:10])
        blocks.append(section(f"*Canaries:* caught {caught} of {scored} ({pct(caught / scored)})"
                              + (f" · {per}" if per else "")))
    notes = ["Counted as events happen, in hourly buckets (UTC)."]
    if lag:
        notes.append(f"{lag} recent events are still being counted.")
    if chart:
        notes.append("The chart follows in your direct messages with me.")
    blocks.append(context([" ".join(notes)]))
    text = (f"hitl stats, last {label}: {r.requests} requests, escalation rate "
            f"{pct(r.escalation_rate)}, {len(r.warnings)} warning signs")
    return {"text": text, "blocks": blocks}

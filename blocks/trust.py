"""Trust in words: `/hitl trust`, `/hitl grants`, `/hitl away`, notices to admins, canary
feedback, the calibration table, and the App Home's grants section. Pure builders."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from blocks.ids import HomeActionId
from blocks.kit import Block, button, context, fit_reply, header, section
from blocks.text import clip, escape, fmt_duration, fmt_time, user_mention
from store.models import Record
from store.stats import Report
from store.trust import Away, Grant, TrustState, split_member

SHOWN = 40
DRIFT = 0.15
"""A band is flagged when people agree this much more or less often than the agent's
confidence says (e.g. 0.8-0.9 approved 61% of the time)."""
MIN_BAND = 10
"""Decisions a band needs before it is judged."""


def _reply(text: str, blocks: list[Block]) -> dict[str, Any]:
    """Within Slack's limits for one message: 40 long trust or grant lines hold more text than
    it takes (`msg_blocks_too_long`), so those past it are left out and a line says so."""
    return fit_reply(text, blocks)


def who(target: str) -> str:
    """A user (`<@U…>`) or a user group (`<!subteam^S…>`) as Slack shows it."""
    return f"<!subteam^{target}>" if target.startswith("S") else user_mention(target)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def trust_line(s: TrustState, after: int) -> str:
    """One action: state, counts, override rate, last change."""
    state = "trusted" if s.trusted else f"new ({s.clean} of {after} approvals)"
    pin = " · :pushpin: pinned" if s.pinned else ""
    changed = ""
    if s.changed_at:
        by = "" if s.changed_by in (None, "", "system") else f" by {user_mention(s.changed_by or '')}"
        changed = f" · changed {fmt_time(datetime.fromisoformat(s.changed_at))}{by}"
        if s.why:
            changed += f": {clip(s.why, 120)}"
    return (f"*{clip(s.agent, 60)} / {clip(s.action, 60)}*: {state}{pin}\n"
            f"{s.approvals} approvals · {s.disagreements} edits or rejections · {s.overrides} overrides · "
            f"override rate {_pct(s.override_rate)}{changed}")


def trust_message(states: list[TrustState], after: int, command: str = "/hitl") -> dict[str, Any]:
    """Every action trust has counted, with its state, counts, override rate and last change."""
    if not states:
        return _reply("No action has been decided by people yet.", [section(
            f"No action has been decided by people yet. An action is *new* until people approve it "
            f"{after} times with no override; until then a person approves every request.")])
    blocks: list[Block] = [header(f"Trust per action ({len(states)})")]
    blocks += [section(trust_line(s, after)) for s in states[:SHOWN]]
    if len(states) > SHOWN:
        blocks.append(context([f"and {len(states) - SHOWN} more"]))
    blocks.append(context([f"Admins: `{escape(command)} trust reset AGENT/ACTION` (new again, counts from "
                           f"zero), `{escape(command)} trust pin AGENT/ACTION` (no automatic change), "
                           f"`unpin`."]))
    return _reply(f"Trust for {len(states)} actions", blocks)


def trust_changed_message(op: str, agent: str, action: str, state: str) -> dict[str, Any]:
    words = {"reset": "is new again: a person approves every request until it is trusted",
             "pin": f"is pinned ({state}): it changes only when an admin resets or unpins it",
             "unpin": f"is unpinned ({state})"}[op]
    text = f"{escape(agent)} / {escape(action)} {words}."
    return _reply(text, [section(f":white_check_mark: {text}")])


def demotion_notice(record: Record, user_id: str, kind: str, after: int) -> dict[str, Any]:
    """The one notice admins get when an override demotes a trusted action."""
    r = record.request
    why = "disagreed in shadow mode" if record.route.mode.value == "shadow" else "overrode"
    text = (f"{clip(r.agent, 60)} / {clip(r.action, 60)} is new again: "
            f"{user_mention(user_id)} {why} request `{clip(record.id, 80)}`. A person approves every "
            f"request of it until it is approved {after} times with no override.")
    return _reply(f"Trust: {clip(r.agent, 60)} / {clip(r.action, 60)} demoted", [section(f":arrow_down: {text}")])


def canary_feedback(record: Record, said: str, known: dict[str, Any]) -> dict[str, Any]:
    """Private word to a reviewer who got a canary wrong: what it was and what was wrong."""
    answer = known.get("answer")
    why = known.get("why")
    text = (f"The request `{clip(record.id, 80)}` (\u201c{clip(record.request.summary, 200)}\u201d) "
            f"was a canary: a test item with a known answer, which never reached any agent. "
            f"You chose to {said}; it should have been {'approved' if answer == 'approve' else 'rejected'}.")
    if why:
        text += f"\n*Why:* {clip(str(why), 1000)}"
    return _reply("That card was a canary", [section(f":bird: {text}")])


def grant_reply(status: str, grant: Grant | None, quorum: int, n: int) -> dict[str, str]:
    """What the person who asked for a grant is told: `created` (or `exists`), `waiting` (the
    request waits for more people, `n` of `quorum` asked so far), `unmet` (the request was
    decided with fewer asking: no grant follows), `refused` (the tier allows none)."""
    if status == "refused" or grant is None:
        return {"text": "Approved. This tier allows no standing grant for this request."}
    until = fmt_time(grant.expires_at)
    scope = f"{grant.agent} / {grant.action} ({grant.bounds.describe()})"
    if status == "unmet":  # the request was decided before its quorum asked for the grant
        return {"text": f"Approved: the request is decided. No standing grant for similar requests "
                        f"({escape(scope)}): it needs {quorum} people to choose \"Approve and allow "
                        f"similar\" on the same request, and {n} of {quorum} did before it was decided."}
    if status == "waiting":
        return {"text": f"Approved. A standing grant for similar requests ({escape(scope)}) needs "
                        f"{quorum} people; {n} of {quorum} so far."}
    return {"text": f"Approved. Similar requests ({escape(scope)}) are approved on their own until "
                    f"{until}. `/hitl grants` lists and revokes grants."}


def grant_line(g: Grant) -> str:
    by = ", ".join(user_mention(u) for u in g.by)
    return (f"`{clip(g.id, 80)}` · *{clip(g.agent, 60)} / {clip(g.action, 60)}* · "
            f"{escape(g.bounds.describe())} · by {by} · until {fmt_time(g.expires_at)}")


def grants_message(grants: list[Grant], command: str = "/hitl") -> dict[str, Any]:
    if not grants:
        return _reply("No standing grants.", [section("No standing grants are in force.")])
    blocks: list[Block] = [header(f"Standing grants ({len(grants)})")]
    blocks += [section(grant_line(g)) for g in grants[:SHOWN]]
    blocks.append(context([f"`{escape(command)} grants revoke GRANT_ID` ends one now (its granters "
                           "or an admin)."]))
    return _reply(f"{len(grants)} standing grants", blocks)


def grants_home(grants: list[Grant], revocable: Collection[str] = ()) -> list[Block]:
    """The App Home's grants section, a Revoke button on each the viewer may revoke (the ids in
    `revocable`: their granters and admins)."""
    blocks: list[Block] = [header(f"Standing grants: {len(grants)}")]
    if not grants:
        return [*blocks, section("No standing grants are in force.")]
    for g in grants[:10]:
        b = section(grant_line(g))
        if g.id in revocable:
            b["accessory"] = button("Revoke", HomeActionId.revoke_grant, g.id[:150], style="danger")
        blocks.append(b)
    return blocks


def away_message(away: Away | None, now: datetime) -> dict[str, Any]:
    if away is None:
        text = "You are not marked away. `/hitl away until 2026-12-24 to @bob` hands your approvals to Bob."
    else:
        text = (f"You are away until {fmt_time(away.until)}: {who(away.delegate)} decides cards that name "
                f"you ({fmt_duration((away.until - now).total_seconds())} left). `/hitl away off` when back.")
    return _reply(text, [section(text)])


def delegation_line(live: Mapping[str, Away], requester: str | None = None) -> str:
    """The card's note: who decides for whom while they are away, and until when (so a card
    not yet redrawn is still right once the date passes). A stand-in who asked for the
    request is named as unable to decide it (the requester rule holds), and so is one standing
    in for the approver who asked for it (nobody approves for the requester)."""
    parts = []
    for a, away in list(live.items())[:5]:
        head = f"{user_mention(a)} is away until {fmt_time(away.until)}: {who(away.delegate)}"
        if a == requester:
            parts.append(f"{head} stands in, but {user_mention(a)} asked for this, so nobody approves it for them")
        elif away.delegate == requester:
            parts.append(f"{head} stands in but asked for this, so cannot decide it")
        else:
            parts.append(f"{head} decides for them")
    return "; ".join(parts)


def calibration_lines(rows: list[tuple[str, str, int, int]]) -> list[str]:
    """(agent/action, band, decisions, agreements) as a reliability table, drift flagged."""
    out = []
    for m, b, n, agree in rows[:SHOWN]:
        low = float(b)
        rate = agree / n if n else 0.0
        if n < MIN_BAND:
            note = f" · too few to judge ({n} decisions)"
        elif rate < low - DRIFT or rate > low + 0.1 + DRIFT:
            note = " :warning: drift"
        else:
            note = ""
        agent, action = split_member(m)
        out.append(f"{clip(f'{agent}/{action}', 80)} at {low:.1f}-{low + 0.1:.1f} confidence: approved as proposed "
                   f"{rate:.0%} of {n}{note}")
    return out or ["No decisions on requests with a confidence yet."]


def with_calibration(report: Report, counts: dict[tuple[str, str], tuple[int, int]]) -> Report:
    """The report with its reliability table (all-time counts, by action and band)."""
    rows = sorted(((m, b, n, a) for (m, b), (n, a) in counts.items()), key=lambda r: (r[0], r[1]))
    return replace(report, calibration=rows)

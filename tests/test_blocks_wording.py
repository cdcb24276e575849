"""What the builders say where a newcomer reads it: a handover's windows titled as its card,
the help's word on the stats chart, the audit trail's channel, the details' message lines,
and every emoji shortcode the builders write drawn by the emulator's page."""

from __future__ import annotations

import io
import json
import re
import tokenize
from pathlib import Path

import pytest

from blocks.commands import audit_message, help_message
from blocks.details import context_modal
from blocks.escalation import escalation_card
from blocks.modals import reject_modal, resolve_modal
from store.models import AgentMessage, AuditEvent, Choice, Mode, Record, Route, Vote
from tests.test_blocks import META, NOW, check_blocks, check_modal, make

REPO = Path(__file__).resolve().parent.parent
SHORTCODE = re.compile(r":([a-z0-9_+-]+):")


def _header(view: dict[str, object]) -> str:
    blocks = view["blocks"]
    assert isinstance(blocks, list)
    return str(next(b["text"]["text"] for b in blocks if b["type"] == "header"))


@pytest.mark.parametrize(("record", "title"), [
    (make(route=Route(mode=Mode.escalate)), "Handover needed"),  # an approval routed escalate
    (make(kind="escalation"), "Handover needed"),
    (make(), "Approval needed"),
    (make(kind="question", options=["a", "b"], route=Route(mode=Mode.escalate)), "Question"),
])
def test_a_handover_s_windows_are_titled_as_its_card(record: Record, title: str) -> None:
    details = context_modal(record, META)
    check_modal(details)
    assert _header(details) == f"{title}: refund"
    for view in (resolve_modal(record, META), reject_modal(record, META)):
        check_modal(view)
        assert f"from *refund-bot* ({title.lower()}):" in json.dumps(view)
    if title == "Handover needed":
        assert escalation_card(record)["text"].startswith(f"{title}: refund")


def test_a_message_to_the_agent_without_text_has_no_dangling_colon() -> None:
    by = Vote(user_id="U0BOB", name="bob", choice=Choice.take_over, at=NOW)
    record = make(kind="escalation").model_copy(update={"messages": [
        AgentMessage(request_id="r1", event="taken_over", by=by, at=NOW),
        AgentMessage(request_id="r1", event="reply", by=by, text="On it", at=NOW),
    ]})
    text = json.dumps(context_modal(record, META))
    assert "*bob* (taken over)\\n*bob* (reply): On it" in text


def test_help_says_the_stats_chart_comes_to_your_direct_messages() -> None:
    words = json.dumps(help_message())
    assert "in your direct messages with the app" in words and "shared in the channel" not in words


def test_the_audit_trail_names_the_card_s_channel_as_slack_shows_it() -> None:
    def posted(channel: str) -> AuditEvent:
        return AuditEvent(event="posted", request_id="r1", actor="hitl", at=NOW,
                          detail={"channel": channel, "ts": "1.2"})

    reply = audit_message("r1", [posted("C0APPRHIGH"), posted("<!here> & co")])
    check_blocks(reply["blocks"])
    text = json.dumps(reply)
    assert "card in <#C0APPRHIGH>" in text  # Slack draws it as #approvals-high
    assert "card in &lt;!here&gt; &amp; co" in text


def _builder_shortcodes() -> dict[str, str]:
    """Every `:name:` inside a string literal of blocks/*.py, with where it is first written."""
    found: dict[str, str] = {}
    for path in sorted((REPO / "blocks").glob("*.py")):
        tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
        for tok in tokens:
            if tok.type == tokenize.STRING:
                for m in SHORTCODE.finditer(tok.string):
                    found.setdefault(m.group(1), f"{path.relative_to(REPO)}:{tok.start[0]}")
    return found


def _page_emoji() -> set[str]:
    """The names in mrkdwn.js's EMOJI table (keys bare or quoted)."""
    js = (REPO / "emulator" / "static" / "mrkdwn.js").read_text()
    table = js.split("const EMOJI = {", 1)[1].split("};", 1)[0]
    return {m.group(1) or m.group(2) for m in re.finditer(r'(?:"([^"]+)"|([a-z0-9_]+)):\s*"', table)}


def test_every_emoji_shortcode_the_builders_write_is_drawn_by_the_page() -> None:
    found = _builder_shortcodes()
    assert {"pencil2", "raising_hand", "warning"} <= set(found)  # the scan sees them
    missing = {name: where for name, where in found.items() if name not in _page_emoji()}
    assert not missing, f"add these to EMOJI in emulator/static/mrkdwn.js: {missing}"

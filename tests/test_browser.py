"""The demo page in headless Chromium: a person using the emulated Slack, end to end.

Each test starts `hitl demo` in-process (a real redis-server, the emulator, the bot on the
demo policy, the demo agent), acts on the page, asserts the decision that reached the agent,
and saves a screenshot to tests/artifacts/.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from playwright.async_api import Locator, Page, async_playwright, expect
from slack_sdk.web.async_client import AsyncWebClient

from blocks.ids import BlockId, param_block_id
from bot.demo import Demo
from emulator import Emulator
from store.models import Record, Status
from tests.test_emulator_interactions import CARD, FakeApp
from tests.util import eventually

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).parent / "artifacts"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                       "(apt-get install chromium; .ci/run installs it)"),
    pytest.mark.timeout(30),
]


@pytest.fixture
async def demo(redis_url: str) -> AsyncIterator[Demo]:
    async with Demo(redis_url=redis_url, port=0, out=lambda line: None) as d:
        yield d


@asynccontextmanager
async def browse(url: str) -> AsyncIterator[Page]:
    """A 1280x800 page at `url` in headless Chromium; fails if the page raised an error."""
    errors: list[Exception] = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            pg = await browser.new_page(viewport={"width": 1280, "height": 800})
            pg.set_default_timeout(8000)
            pg.on("pageerror", lambda e: errors.append(e))
            await pg.goto(url)
            yield pg
        finally:
            await browser.close()
    assert not errors, f"errors on the page: {errors}"


@pytest.fixture
async def page(demo: Demo) -> AsyncIterator[Page]:
    async with browse(demo.url) as pg:
        yield pg


async def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


async def posted(demo: Demo, name: str) -> Record:
    """The record of a demo request once its card is in the emulator (waits on the store)."""
    rid = demo.agent.ids[name]

    async def check() -> Record | None:
        if not await demo.bot.store.exists(rid):
            return None
        rec = await demo.bot.store.get(rid)
        return rec if rec.ts else None

    return await eventually(check, 15, f"card of {name}")


async def card(page: Page, demo: Demo, name: str) -> Locator:
    """The card of a demo request on the page, in its channel, scrolled into view."""
    rec = await posted(demo, name)
    await page.click(f'[data-channel="{rec.channel}"]')
    loc = page.locator(f'.message[data-ts="{rec.ts}"]')
    await loc.evaluate("card => card.scrollIntoView({block: 'center'})")
    return loc


async def batch_card(page: Page, approve_all: str) -> Locator:
    """The batch card with an `approve_all` button ("Approve all 5"), once it is posted."""
    button = page.get_by_role("button", name=approve_all)
    await expect(button).to_be_visible(timeout=15_000)  # cards are posted at Slack's pace
    batch = page.locator(".message", has=button)
    await batch.evaluate("card => card.scrollIntoView({block: 'center'})")
    return batch


async def act_as(page: Page, user_id: str, name: str) -> None:
    await page.select_option("#user-switcher", user_id)
    await expect(page.locator("#me .me-name")).to_contain_text(name)


async def test_the_page_shows_the_demo(page: Page, demo: Demo) -> None:
    approvals = await card(page, demo, "demo-refund")
    await expect(page.locator("#channel-title")).to_have_text("# approvals")
    await expect(approvals).to_contain_text("Refund $250 to Ana Lima")
    await expect(page.locator('[data-channel="C0APPRHIGH"] .badge')).to_have_text("2")
    await expect(page.locator("#me")).to_contain_text("@managers")
    lookup = await demo.client.wait(demo.agent.ids["demo-lookup"], timeout=5)
    assert lookup.status is Status.auto_approved  # the low-risk lookup went through alone
    assert await demo.client.decision(demo.agent.ids["demo-refund"]) is None
    await batch_card(page, "Approve all 5")
    await page.locator("#messages").evaluate("list => { list.scrollTop = 0; }")
    await shot(page, "overview")  # docs/img/demo.png is this screenshot


async def test_approve_the_refund(page: Page, demo: Demo) -> None:
    refund = await card(page, demo, "demo-refund")
    await refund.get_by_role("button", name="Approve", exact=True).click()
    decision = await demo.client.wait(demo.agent.ids["demo-refund"], timeout=5)
    assert decision.status is Status.approved
    assert [v.user_id for v in decision.decided_by] == ["U0ALICE"]
    assert decision.params["amount"] == 250
    await expect(refund).to_contain_text("Approved")  # the card is locked in place
    await expect(refund.get_by_role("button")).to_have_count(0)
    await expect(page.locator("#status")).to_contain_text("Sent block_actions → 200")
    await shot(page, "approve")


async def test_edit_an_invalid_then_a_valid_amount(page: Page, demo: Demo) -> None:
    refund = await card(page, demo, "demo-refund")
    await refund.get_by_role("button", name="Edit").click()
    modal = page.locator("#modal-root .modal")
    amount = modal.locator(f'[data-block-id="{param_block_id("amount")}"]')
    await amount.locator("input").fill("lots")
    await modal.locator(".modal-submit").click()
    await expect(amount.locator(".input-error")).to_be_visible()
    await shot(page, "edit-invalid")
    assert await demo.client.decision(demo.agent.ids["demo-refund"]) is None
    await amount.locator("input").fill("200")
    await modal.locator(".modal-submit").click()
    await expect(modal).to_have_count(0)
    decision = await demo.client.wait(demo.agent.ids["demo-refund"], timeout=5)
    assert decision.status is Status.approved and decision.params["amount"] == 200
    assert decision.changes["amount"].before == 250 and decision.changes["amount"].after == 200
    await expect(refund).to_contain_text("Approved")
    await shot(page, "edit-valid")


async def test_edit_the_email_draft(page: Page, demo: Demo) -> None:
    email = await card(page, demo, "demo-email")
    await email.get_by_role("button", name="Edit").click()
    modal = page.locator("#modal-root .modal")
    subject = modal.locator(f'[data-block-id="{param_block_id("subject")}"] input')
    await expect(subject).to_have_value("Your shipment")
    await subject.fill("Your shipment is on its way")
    draft = modal.locator(f'[data-block-id="{param_block_id("draft")}"] textarea')
    await draft.fill((await draft.input_value()).replace("Thursday", "Wednesday"))
    await shot(page, "edit-email")
    await modal.locator(".modal-submit").click()
    decision = await demo.client.wait(demo.agent.ids["demo-email"], timeout=5)
    assert decision.status is Status.approved
    assert decision.changes["subject"].after == "Your shipment is on its way"
    assert "Wednesday" in str(decision.changes["draft"].after)
    await expect(email).to_contain_text("Approved")


async def test_reject_with_a_reason(page: Page, demo: Demo) -> None:
    email = await card(page, demo, "demo-email")
    await email.get_by_role("button", name="Reject").click()
    modal = page.locator("#modal-root .modal")
    await expect(modal.locator(".modal-title")).to_have_text("Reject request")
    await modal.locator(".modal-submit").click()  # no reason chosen: an error under the field
    await expect(modal.locator(f'[data-block-id="{BlockId.reason_code}"] .input-error')).to_be_visible()
    await modal.get_by_label("Wrong details/amount").check()
    await modal.get_by_label("Details for the agent").fill("Ms. Chen asked for a call, not an email")
    await shot(page, "reject")
    await modal.locator(".modal-submit").click()
    decision = await demo.client.wait(demo.agent.ids["demo-email"], timeout=5)
    assert decision.status is Status.rejected
    assert decision.reason_code == "wrong_params"
    assert decision.reason == "Ms. Chen asked for a call, not an email"
    await expect(email).to_contain_text("Rejected")


async def test_approve_the_tag_batch_after_confirming(page: Page, demo: Demo) -> None:
    batch = await batch_card(page, "Approve all 5")
    await batch.get_by_role("button", name="Approve all 5").click()
    confirm = page.locator(".confirm-overlay .modal")
    await expect(confirm).to_contain_text("Approve all 5?")
    body = await confirm.locator(".modal-body").inner_text()  # as laid out: line breaks kept
    assert body.count("\n• Tag contact #") == 5, body
    await shot(page, "batch-confirm")
    await confirm.get_by_role("button", name="Approve all").click()
    for i in range(5):
        decision = await demo.client.wait(demo.agent.ids[f"demo-tag-{i}"], timeout=5)
        assert decision.status is Status.approved
        assert [v.user_id for v in decision.decided_by] == ["U0ALICE"]
    await expect(batch.get_by_role("button", name="Approve all 5")).to_have_count(0)
    await shot(page, "batch-approved")


async def test_hitl_help_in_the_message_box(page: Page, demo: Demo) -> None:
    await posted(demo, "demo-refund")
    await page.fill("#composer-input", "/hitl help")
    await page.press("#composer-input", "Enter")
    await expect(page.locator("#status")).to_contain_text("Sent /hitl")
    await shot(page, "hitl-help")
    answer = page.locator(".message.ephemeral", has=page.locator(".author", has_text="hitl"))
    await expect(answer).to_contain_text("stats", timeout=3000)


async def test_carol_is_refused_on_the_deletion_then_two_managers_approve(
    page: Page, demo: Demo
) -> None:
    rid = demo.agent.ids["demo-delete"]
    await act_as(page, "U0CAROL", "Carol")
    await expect(page.locator("#me")).to_contain_text("no user groups")
    deletion = await card(page, demo, "demo-delete")
    await expect(page.locator("#channel-title")).to_have_text("# approvals-high")
    await deletion.get_by_role("button", name="Approve", exact=True).click()
    refusal = page.locator(".message.ephemeral", has_text="not one of the approvers")
    await expect(refusal).to_contain_text("Only visible to you")
    await shot(page, "carol-refused")
    assert await demo.client.decision(rid) is None
    events = [(e.event, e.actor) for e in await demo.bot.store.trail(rid)]
    assert ("refused", "U0CAROL") in events

    await act_as(page, "U0ALICE", "Alice")
    await expect(refusal).to_have_count(0)  # Carol's ephemeral is not Alice's to see
    await deletion.get_by_role("button", name="Approve", exact=True).click()
    await expect(deletion).to_contain_text("1 of 2")
    assert await demo.client.decision(rid) is None  # quorum 2: one manager is not enough
    await act_as(page, "U0BOB", "Bob")
    await deletion.get_by_role("button", name="Approve", exact=True).click()
    decision = await demo.client.wait(rid, timeout=5)
    assert decision.status is Status.approved
    assert [v.user_id for v in decision.decided_by] == ["U0ALICE", "U0BOB"]
    await expect(deletion).to_contain_text("Approved")
    await shot(page, "quorum-approved")


# -- the page itself, on a bare emulator (no bot) -------------------------------------------

UNTRUSTED = (
    "*bold* _italic_ ~gone~ `a <b>` <https://example.com/x?a=1&amp;b=2|a link> "
    "<javascript:alert(1)|not a link> <@U0BOB> <#C0APPROVALS> <!subteam^S0MANAGERS> "
    "<!date^1392734382^{date_short}|Feb 18, 2014> &lt;img src=x onerror=alert(1)&gt; &amp; "
    ":warning:\n```<script>alert(2)</script>```"
)


@pytest.fixture
async def bare() -> AsyncIterator[tuple[Emulator, FakeApp]]:
    app = FakeApp()
    await app.start()
    emu = Emulator("test-signing-secret", app.url)
    await emu.start()
    yield emu, app
    await emu.stop()
    await app.stop()


async def test_mrkdwn_blocks_and_threads_render_safely(bare: tuple[Emulator, FakeApp]) -> None:
    emu, app = bare
    client = AsyncWebClient(token=emu.bot_token, base_url=emu.api_url)
    parent = await client.chat_postMessage(channel="#approvals", text=UNTRUSTED)
    await client.chat_postMessage(channel="#approvals", text="a *reply*", thread_ts=parent["ts"])
    blocks = [*CARD, {"type": "image", "image_url": "https://example.com/c.png", "alt_text": "a chart"}]
    await client.chat_postMessage(channel="#approvals", text="card", blocks=blocks)
    async with browse(emu.url + "/") as page:
        msg = page.locator(f'.message[data-ts="{parent["ts"]}"]')
        body = msg.locator(".mrkdwn").first
        await expect(body.locator("strong")).to_have_text("bold")
        await expect(body.locator("em")).to_have_text("italic")
        await expect(body.locator("del")).to_have_text("gone")
        await expect(body.locator("code")).to_have_text("a <b>")
        await expect(body.locator("a")).to_have_count(1)  # javascript: is never a link
        await expect(body.locator("a")).to_have_attribute("href", "https://example.com/x?a=1&b=2")
        await expect(body.locator("a")).to_have_text("a link")
        await expect(body.locator(".mention")).to_have_text(["@bob", "#approvals", "@managers"])
        await expect(body).to_contain_text("not a link @bob")
        await expect(body).to_contain_text("@managers Feb 18, 2014 <img src=x onerror=alert(1)> & ⚠")
        await expect(body.locator("pre")).to_have_text("<script>alert(2)</script>")
        assert await page.locator(".messages img, #messages img, #messages script").count() == 0
        # the thread opens under its parent
        await expect(msg.locator(".thread")).to_have_count(0)
        await msg.get_by_role("button", name="1 reply").click()
        await expect(msg.locator(".thread strong")).to_have_text("reply")
        # an overflow menu, a select and an image (as its alt text) on a card
        card = page.locator(".message", has_text="Refund $40?")
        await expect(card.locator(".img-alt")).to_have_text("Image: a chart")
        await card.get_by_role("button", name="More actions").click()
        await card.get_by_role("button", name="Why").click()
        await expect(page.locator("#status")).to_contain_text("Sent block_actions")
        kind, payload = app.last()
        assert kind == "block_actions" and payload["actions"][0]["selected_option"]["value"] == "why"
        await card.locator("select").select_option("high")
        await expect(page.locator("#status")).to_contain_text("Sent block_actions")
        await eventually(lambda: _chosen(app, "high"), 5, "the select's choice at the app")
        await expect(card.locator("select")).to_have_value("high")
        await shot(page, "rendering")


async def _chosen(app: FakeApp, value: str) -> bool:
    action = app.last()[1]["actions"][0]
    return bool(action.get("selected_option", {}).get("value") == value)


async def test_home_opens_at_its_top_and_a_channel_at_its_newest_message(
        bare: tuple[Emulator, FakeApp]) -> None:
    emu, _ = bare
    client = AsyncWebClient(token=emu.bot_token, base_url=emu.api_url)
    for i in range(30):
        await client.chat_postMessage(channel="#approvals", text=f"message {i}")
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": f"*Home line {i}*"}} for i in range(60)]
    await client.views_publish(user_id="U0ALICE", view={"type": "home", "blocks": blocks})
    async with browse(emu.url + "/") as page:
        messages = page.locator("#messages")
        await page.click('[data-channel="C0APPROVALS"]')
        await expect(messages).to_contain_text("message 29")
        assert await messages.evaluate("l => l.scrollHeight - l.scrollTop - l.clientHeight < 2")
        await page.click("[data-home]")
        await expect(messages).to_contain_text("Home line 59")
        assert await messages.evaluate("l => l.scrollHeight > l.clientHeight && l.scrollTop === 0")
        await messages.evaluate("l => { l.scrollTop = 200; }")  # a republished Home keeps its place
        blocks[0] = {"type": "section", "text": {"type": "mrkdwn", "text": "*Home line 0, again*"}}
        await client.views_publish(user_id="U0ALICE", view={"type": "home", "blocks": blocks})
        await expect(messages).to_contain_text("Home line 0, again")
        assert await messages.evaluate("l => l.scrollTop") == 200
        await shot(page, "home-top")

"""HumanLayer compatibility under `/humanlayer/v1` (docs/humanlayer.md): the endpoints the
`humanlayer` SDK (0.7.x) calls, mapped onto hitl requests that go through the same queue,
intake, policy and decisions as any other. The SDK's objects are kept beside each request,
so answers carry its own `call_id`, `run_id` and `spec` back.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from blocks.facts import reject_label
from bot.api.auth import Auth
from bot.api.errors import ApiError, read_json
from bot.api.hints import HintKey, seal
from bot.api.service import Requests
from bot.entries import describe
from store.api_keys import ApiKey
from store.errors import AlreadyDecided, Conflict
from store.models import Decision, Record, Status, utcnow
from store.transitions import escalate

BODY_LIMIT = 64 * 1024
SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
STATUS_WORDS = {Status.expired: "nobody decided in time", Status.denied: "denied by policy",
                Status.invalid: "the request was invalid"}


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class Spec(_Loose):
    fn: str | None = None
    call_kwargs: dict[str, Any] = Field(default_factory=dict, alias="kwargs")
    msg: str | None = None
    subject: str | None = None
    channel: dict[str, Any] | None = None
    reject_options: list[dict[str, Any]] | None = None
    response_options: list[dict[str, Any]] | None = None


class Call(_Loose):
    run_id: str
    call_id: str
    spec: Spec


def hitl_id(kind: str, call_id: str) -> str:
    """The hitl request id of a HumanLayer call: readable when the call id is in hitl's id
    alphabet, else a hash of it (the SDK's own call id is kept and answered back)."""
    tail = call_id if SAFE.match(call_id) else hashlib.sha256(call_id.encode()).hexdigest()[:40]
    return f"hl-{kind}-{tail}"


def _agent(key: ApiKey, run_id: str) -> str:
    if run_id in key.agents:
        return run_id
    if len(key.agents) == 1:
        return key.agents[0]
    raise ApiError(400, "invalid_request", "this API key serves several agents; set the HumanLayer run_id "
                   f"to one of them ({', '.join(key.agents)})", field="run_id")


def _slack(channel: dict[str, Any] | None) -> dict[str, Any]:
    """The channel's `slack` object; 400 when `allowed_responder_ids` is not a list of ids."""
    slack = (channel or {}).get("slack") if isinstance(channel, dict) else None
    if not isinstance(slack, dict):
        return {}
    ids = slack.get("allowed_responder_ids")
    if ids is not None and not (isinstance(ids, list) and all(isinstance(x, str) for x in ids)):
        raise ApiError(400, "invalid_request", "channel.slack.allowed_responder_ids: a list of Slack user ids",
                       field="channel.slack.allowed_responder_ids")
    where = slack.get("channel_or_user_id")
    if where is not None and not isinstance(where, str):  # (its text was taken: a card sent nowhere)
        raise ApiError(400, "invalid_request", "channel.slack.channel_or_user_id: a Slack channel or user id",
                       field="channel.slack.channel_or_user_id")
    return slack


def _summary(fn: str, kwargs: dict[str, Any]) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    text = f"{fn}({args})"
    return text if len(text) <= 2000 else text[:1997] + "..."


def _hints(call: Call, options: list[dict[str, Any]] | None) -> dict[str, Any]:
    slack = _slack(call.spec.channel)
    out: dict[str, Any] = {"call_id": call.call_id, "run_id": call.run_id}
    if slack.get("channel_or_user_id"):
        out["channel"] = str(slack["channel_or_user_id"])
    if slack.get("allowed_responder_ids"):
        out["approvers"] = [str(x) for x in slack["allowed_responder_ids"]]
    if options:
        out["reject_options"] = _reject_options(options)
    return out


def _reject_options(options: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A call's own reject reasons, each a distinct name a reviewer's pick answers back exactly
    (a Slack option's value holds 150 characters), at most 10 (a radio group's limit)."""
    names = [str(o.get("name") or "") for o in options]
    if len(names) > 10 or any(not n or len(n) > 150 for n in names) or len(set(names)) < len(names):
        raise ApiError(400, "invalid_request", "spec.reject_options: at most 10, each with a distinct name "
                       "of 1 to 150 characters", field="spec.reject_options")
    return [{"name": n, "title": o.get("title")} for n, o in zip(names, options, strict=True)]


def _response_options(options: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A contact request's response options as the question's buttons: each a distinct name a
    person's click answers back exactly (a button's value holds 75 characters), at most 10."""
    names = [str(o.get("name") or "") for o in options]
    if len(names) > 10 or any(not n or len(n) > 75 for n in names) or len(set(names)) < len(names):
        raise ApiError(400, "invalid_request", "spec.response_options: at most 10, each with a distinct name "
                       "of 1 to 75 characters", field="spec.response_options")
    return [{"value": n, "label": str(o.get("title") or n)[:75]} for n, o in zip(names, options, strict=True)]


def _function_request(call: Call, rid: str, agent: str) -> dict[str, Any]:
    fn = call.spec.fn or ""
    if not fn:
        raise ApiError(400, "invalid_request", "spec.fn: Field required", field="spec.fn")
    return {"id": rid, "agent": agent, "action": fn[:100], "summary": _summary(fn, call.spec.call_kwargs),
            "params": call.spec.call_kwargs,
            "metadata": {"session_id": call.run_id[:300], "humanlayer": _hints(call, call.spec.reject_options)}}


def _contact_request(call: Call, rid: str, agent: str) -> dict[str, Any]:
    msg = call.spec.msg or ""
    if not msg:
        raise ApiError(400, "invalid_request", "spec.msg: Field required", field="spec.msg")
    summary = f"{call.spec.subject}: {msg}" if call.spec.subject else msg
    options = _response_options(call.spec.response_options or [])
    return {"id": rid, "agent": agent, "action": "contact_human", "kind": "question",
            "summary": summary[:3000], "options": options,
            "metadata": {"session_id": call.run_id[:300], "humanlayer": _hints(call, None)}}


def _titles(call: dict[str, Any]) -> dict[str, str]:
    opts = (call.get("spec") or {}).get("reject_options") or []
    return {str(o.get("name")): str(o.get("title") or o.get("name")) for o in opts if isinstance(o, dict)}


def function_status(record: Record, call: dict[str, Any]) -> dict[str, Any]:
    """The SDK's FunctionCallStatus: `approved` stays null while pending; a rejection always
    carries a non-empty `comment` (the reviewer's words or a hand-back's instructions, else the
    reason's title)."""
    status: dict[str, Any] = {"requested_at": record.created_at.isoformat(), "responded_at": None,
                              "approved": None, "comment": None, "reject_option_name": None}
    d = record.decision
    if d is None:
        return status
    status["responded_at"] = d.decided_at.isoformat()
    status["approved"] = d.approved
    titles = _titles(call)
    if d.approved:
        status["comment"] = d.reason
        return status
    if d.reason_code in titles:
        status["reject_option_name"] = d.reason_code
    # a handover handed back (`answered`) carries the person's instructions in `answer`
    words = (d.reason or d.answer or titles.get(d.reason_code or "")
             or (reject_label(d.reason_code) if d.reason_code else None))
    status["comment"] = words or STATUS_WORDS.get(d.status, d.status.value)
    return status


def contact_status(record: Record) -> dict[str, Any]:
    """The SDK's HumanContactStatus: `response` is the answer (or why there is none)."""
    status: dict[str, Any] = {"requested_at": record.created_at.isoformat(), "responded_at": None,
                              "response": None, "response_option_name": None}
    d = record.decision
    if d is None:
        return status
    status["responded_at"] = d.decided_at.isoformat()
    if d.option is not None:
        labels = {o.value: o.label for o in record.request.options}
        status["response_option_name"] = d.option
        status["response"] = d.answer or labels.get(d.option, d.option)
    elif d.answer is not None:
        status["response"] = d.answer
    else:
        status["response"] = f"(no answer: {d.reason or STATUS_WORDS.get(d.status, d.status.value)})"
    return status


def refused_status(kind: str, d: Decision) -> dict[str, Any]:
    """The status of a call whose request intake refused (never stored): rejected with intake's
    reason (a contact: no answer, and why)."""
    at = d.decided_at.isoformat()
    if kind == "fn":
        return {"requested_at": at, "responded_at": at, "approved": False,
                "comment": d.reason or STATUS_WORDS.get(d.status, d.status.value), "reject_option_name": None}
    return {"requested_at": at, "responded_at": at, "response_option_name": None,
            "response": f"(no answer: {d.reason or STATUS_WORDS.get(d.status, d.status.value)})"}


class HumanLayerApi:
    def __init__(self, auth: Auth, service: Requests,
                 tier_approvers: Callable[[str], Sequence[str] | None] = lambda tier: None,
                 hint_key: HintKey | None = None) -> None:
        self.auth = auth
        self.service = service
        self.hint_key = hint_key or HintKey()
        """Seals the hints of each call (bot.api.hints): intake moves a card only as sealed."""
        self.tier_approvers = tier_approvers
        """The approvers the policy in force names for a tier (empty: anyone; None: no such tier)."""

    async def _parse(self, request: web.Request) -> Call:
        data = await read_json(request, BODY_LIMIT)
        try:
            return Call.model_validate(data)
        except ValidationError as e:
            loc = ".".join(str(x) for x in e.errors()[0]["loc"]) or "request"
            raise ApiError(400, "invalid_request", describe(e), field=loc) from e

    async def create(self, request: web.Request, kind: str) -> web.Response:
        key = await self.auth(request)
        call = await self._parse(request)
        agent = _agent(key, call.run_id)
        rid = hitl_id(kind, call.call_id)
        build = _function_request if kind == "fn" else _contact_request
        data = build(call, rid, agent)
        self.service.validate(data)  # before anything is kept: a bad call stores nothing
        meta = data["metadata"]
        meta["humanlayer"] = seal(await self.hint_key.load(self.service.store), rid, meta["humanlayer"])
        saved = await self.service.api.save_call(rid, call.model_dump(mode="json", by_alias=True, exclude_unset=True), agent)
        try:
            await self.service.submit(data, key)
        except ApiError:
            if saved and not await self.service.store.exists(rid):
                await self.service.api.forget_call(rid)
            raise
        return await self._answer(rid, key, kind)

    async def get(self, request: web.Request, kind: str) -> web.Response:
        key = await self.auth(request)
        return await self._answer(hitl_id(kind, request.match_info["call_id"]), key, kind)

    async def _answer(self, rid: str, key: ApiKey, kind: str) -> web.Response:
        kept = await self.service.api.get_call(rid)
        if kept is None:
            raise ApiError(404, "not_found", "no such call")
        call, agent = kept
        if agent not in key.agents:
            raise ApiError(403, "forbidden", f"this API key may not read calls of agent {agent!r}")
        try:
            record = await self.service.get(rid, key)
        except ApiError as e:
            if e.status not in (403, 404):
                raise
            try:
                state = await self.service.state(rid, key)  # queued, or refused by intake
            except ApiError as again:
                if again.status != 404:
                    raise
                state = None
            if state is None or state.decision is None:
                return web.json_response({**call, "status": None})  # still queued: intake has not taken it yet
            return web.json_response({**call, "status": refused_status(kind, state.decision)})
        status = function_status(record, call) if kind == "fn" else contact_status(record)
        return web.json_response({**call, "status": status})

    async def escalate(self, request: web.Request, kind: str) -> web.Response:
        """An escalation: the agent's message audited, the person or channel it names shown on
        the card, and the people it names approvers too, within the policy's approvers of the
        request's tier when it names any (the agent never picks who may approve). The policy's
        escalation levels are not moved: each still comes at its time and tells its people."""
        key = await self.auth(request)
        data = await read_json(request, BODY_LIMIT)
        if not isinstance(data, dict) or not isinstance(data.get("escalation_msg"), str):
            raise ApiError(400, "invalid_request", "escalation_msg: Field required", field="escalation_msg")
        rid = hitl_id(kind, request.match_info["call_id"])
        if await self.service.api.get_call(rid) is None:
            raise ApiError(404, "not_found", "no such call")
        slack = _slack(data.get("channel"))
        targets = [str(slack["channel_or_user_id"])] if slack.get("channel_or_user_id") else []
        approvers = [str(x) for x in slack.get("allowed_responder_ids") or []]
        asked = utcnow()  # the trigger: time to escalate runs from the agent's call, not the request's age
        for _ in range(10):
            record = await self.service.stored(rid, key)  # 409 `queued` before intake has taken it
            now = utcnow()
            allowed = self._allowed(record, approvers)
            # people brought in now; the policy's own levels keep their times (none is used up, so
            # none goes untold)
            t = escalate(record, now=now, level=record.escalation_level + 1, targets=targets,
                         approvers=allowed, seconds=(now - asked).total_seconds(), next_due_ms=None,
                         counts_level=False)
            t.audit.append(("escalation_requested", record.request.agent,
                            {"message": data["escalation_msg"][:3000], "via": "humanlayer"}))
            try:
                await self.service.store.apply(t, now)
                break
            except AlreadyDecided:
                break  # decided meanwhile: the answer below says so
            except Conflict:
                continue
        return await self._answer(rid, key, kind)

    def _allowed(self, record: Record, named: list[str]) -> list[str]:
        """The people an escalation names whom the policy lets approve `record`: all of them when
        its tier names no approvers, else those it names (the request's own approvers when its
        tier is gone from the policy)."""
        policy = self.tier_approvers(record.route.tier)
        bound = record.route.approvers if policy is None else list(policy)
        return [a for a in named if a in bound] if bound else named


def routes(api: HumanLayerApi) -> web.RouteTableDef:
    r = web.RouteTableDef()

    @r.post("/function_calls")
    async def fn_create(request: web.Request) -> web.Response:
        return await api.create(request, "fn")

    @r.get("/function_calls/{call_id:.+}")
    async def fn_get(request: web.Request) -> web.Response:
        return await api.get(request, "fn")

    @r.post("/contact_requests")
    async def hc_create(request: web.Request) -> web.Response:
        return await api.create(request, "hc")

    @r.get("/contact_requests/{call_id:.+}")
    async def hc_get(request: web.Request) -> web.Response:
        return await api.get(request, "hc")

    @r.post("/agent/function_calls/{call_id:.+}/escalate_email")
    async def fn_escalate(request: web.Request) -> web.Response:
        return await api.escalate(request, "fn")

    @r.post("/agent/human_contacts/{call_id:.+}/escalate_email")
    async def hc_escalate(request: web.Request) -> web.Response:
        return await api.escalate(request, "hc")

    return r

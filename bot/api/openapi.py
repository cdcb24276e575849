"""`GET /v1/openapi.json`: the OpenAPI 3.1 document of the REST API, built from the same
models the server validates and answers with, so the two cannot disagree."""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic.json_schema import models_json_schema

from bot.api.schemas import CancelBody, ErrorBody, RequestState
from store.models import Decision, Request

REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


def _errors(*codes: int) -> dict[str, Any]:
    words = {400: "Malformed JSON or an invalid field (`error.field` names it)",
             401: "Missing, unknown or revoked API key", 403: "The key is not scoped to this agent",
             404: "No such request", 409: "Conflict (already decided, the id belongs to another agent, or still queued: retry after Retry-After)",
             413: "Body too large", 429: "Rate limit of this key (see Retry-After)"}
    out = {str(c): _json("ErrorBody", words[c]) for c in codes}
    if 429 in codes:
        out["429"]["headers"] = {"Retry-After": {"schema": {"type": "integer"},
                                                 "description": "seconds to wait"}}
    return out


LINKS = {op: {"operationId": op, "parameters": {"id": "$response.body#/id"}}
         for op in ("getRequest", "getDecision", "cancelRequest")}


def _linked(response: dict[str, Any]) -> dict[str, Any]:
    return {**response, "links": LINKS}


ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1},
      "description": "the request id"}


@cache
def document() -> dict[str, Any]:
    """The whole OpenAPI 3.1 document (built once)."""
    _, defs = models_json_schema(
        [(Request, "validation"), (Decision, "serialization"), (RequestState, "serialization"),
         (ErrorBody, "serialization"), (CancelBody, "validation")], ref_template=REF)
    schemas = defs["$defs"]
    auth: list[dict[str, list[str]]] = [{"bearer": []}]
    paths: dict[str, Any] = {
        "/v1/openapi.json": {"get": {"summary": "This document", "operationId": "openapi", "security": [],
                                     "responses": {"200": {"description": "OpenAPI 3.1", "content": {
                                         "application/json": {"schema": {"type": "object"}}}}}}},
        "/v1/requests": {"post": {
            "summary": "Submit a request (the queue's request fields; idempotent by id)",
            "operationId": "submitRequest", "security": auth,
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("Request")}}},
            "responses": {"201": _linked(_json("RequestState", "Accepted by intake: routed (and decided, if policy decided at once)")),
                          "200": _linked(_json("RequestState", "This id was submitted before: the earlier request (`duplicate: true`)")),
                          "202": _json("RequestState", "Queued; intake has not taken it yet (`state: queued`)"),
                          **_errors(400, 401, 403, 409, 413, 429)}}},
        "/v1/requests/{id}": {"get": {
            "summary": "A request's state, route and decision; its interim messages (`taken_over`, `reply`, "
                       "`override`) and after-the-fact review when there are any", "operationId": "getRequest",
            "security": auth, "parameters": [ID],
            "responses": {"200": _json("RequestState", "The request"), **_errors(401, 403, 404, 429)}}},
        "/v1/requests/{id}/decision": {"get": {
            "summary": "The decision, waiting up to `wait` seconds for it (long poll)",
            "operationId": "getDecision", "security": auth,
            "parameters": [ID, {"name": "wait", "in": "query", "required": False,
                                "schema": {"type": "number", "minimum": 0, "maximum": 60, "default": 0}}],
            "responses": {"200": _json("Decision", "The decision"),
                          "204": {"description": "Still pending after `wait` seconds"},
                          **_errors(400, 401, 403, 404, 429)}}},
        "/v1/requests/{id}/cancel": {"post": {
            "summary": "Withdraw a pending request (decided `rejected`, reason_code `withdrawn`)",
            "operationId": "cancelRequest", "security": auth, "parameters": [ID],
            "requestBody": {"required": False, "content": {"application/json": {"schema": _ref("CancelBody")}}},
            "responses": {"200": _json("RequestState", "Withdrawn: the request with its decision"),
                          **_errors(400, 401, 403, 404, 409, 413, 429)}}},
        "/v1/events": {"get": {
            "summary": "Server-Sent Events: every decision and interim message of the key's agents, in order "
                       "(resume with Last-Event-ID)",
            "operationId": "events", "security": auth,
            "responses": {"200": {"description": "`event: decision`, `id:` stream id, `data:` the decision JSON; "
                                                 "`event: message`, `id: <decision id>.<message id>`, `data:` the "
                                                 "interim message JSON (AgentMessage)",
                                  "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                          **_errors(401, 429)}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "hitl REST API", "version": "1",
                 "description": "Human judgment for AI agents: the queue protocol over HTTP. See docs/api.md."},
        "paths": paths,
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                      "description": "an API key from `hitl keys create`"}}},
    }

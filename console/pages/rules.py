"""Sourcing rules, for the business teams: the live version and its history; a draft edited in
the browser, its mistakes shown at the lines they concern; simulated on past orders; published
or rolled back after a confirmation that says what will change."""

from __future__ import annotations

import re
import uuid
from typing import Any

import yaml
from starlette.requests import Request
from starlette.responses import Response
from tutti.orchestrator.v1 import orchestrator_pb2 as opb

from console.app import fragment, gateway_of, page, require
from console.errors import ApiError
from console.gateway import UserGateway

_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
SIMULATED_ORDERS = 500


def line_of(document: str, path: str) -> int | None:
    """The 1-based line of the YAML document where ``path`` ("eligibility[2].max_distance_km")
    is written, or of its nearest written parent; None when the document does not parse."""
    try:
        node = yaml.compose(document)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        return mark.line + 1 if mark is not None else None
    if node is None:
        return None
    line = node.start_mark.line + 1
    for name, index in _STEP.findall(path):
        if isinstance(node, yaml.MappingNode) and name:
            match = next(((k, v) for k, v in node.value if getattr(k, "value", None) == name), None)
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and index:
            position = int(index)
            if position >= len(node.value):
                break
            node = node.value[position]
            line = node.start_mark.line + 1
        else:
            break
    return line


def annotate(document: str, fields: dict[str, str]) -> list[dict[str, Any]]:
    """The document's lines, each with the problems found at it."""
    at: dict[int, list[tuple[str, str]]] = {}
    unplaced: list[tuple[str, str]] = []
    for path, description in fields.items():
        line = line_of(document, path) if path != "document" else None
        (at.setdefault(line, []) if line else unplaced).append((path, description))
    lines = [
        {"number": n, "text": text, "problems": at.get(n, [])}
        for n, text in enumerate(document.splitlines() or [""], start=1)
    ]
    if unplaced:
        lines.insert(0, {"number": 0, "text": "", "problems": unplaced})
    return lines


def _problems(document: str, violations: dict[str, str]) -> dict[str, Any]:
    return {"annotated": annotate(document, violations), "count": len(violations)}


async def _versions(gw: UserGateway) -> list[opb.RuleVersion]:
    reply = await gw.call("rules", "ListRuleVersions", opb.ListRuleVersionsRequest(page_size=30))
    return list(reply.versions)


async def rules(request: Request) -> Response:
    session = require(request, "admin")
    gw = gateway_of(request).as_user(session.key)
    live = (await gw.call("rules", "GetRules", opb.GetRulesRequest())).version
    source = request.query_params.get("from", "")
    draft = live
    if source.isdigit():
        draft = (await gw.call("rules", "GetRules", opb.GetRulesRequest(version=int(source)))).version
    return page(
        request,
        "rules.html",
        {
            "live": live,
            "versions": await _versions(gw),
            "draft": draft,
            "request_id": uuid.uuid4().hex,
            "RuleVersionStatus": opb.RuleVersionStatus,
        },
    )


async def _document(request: Request) -> tuple[str, Any]:
    form = await request.form()
    return str(form.get("document") or "").replace("\r\n", "\n"), form


async def validate(request: Request) -> Response:
    session = require(request, "admin")
    document, _ = await _document(request)
    gw = gateway_of(request).as_user(session.key)
    try:
        reply = await gw.call("rules", "ValidateRules", opb.ValidateRulesRequest(document=document))
    except ApiError as error:
        return fragment(
            request,
            "_rules_problems.html",
            {**_problems(document, error.fields or {"document": error.sentence})},
        )
    violations = {v.field: v.description for v in reply.violations}
    return fragment(
        request,
        "_rules_problems.html",
        {**_problems(document, violations), "warnings": list(reply.warnings), "valid": reply.valid},
    )


async def simulate(request: Request) -> Response:
    session = require(request, "admin")
    document, form = await _document(request)
    version = int(str(form.get("version") or "0") or 0)
    gw = gateway_of(request).as_user(session.key)
    try:
        reply = await gw.call(
            "rules",
            "SimulateRules",
            opb.SimulateRulesRequest(
                document="" if version else document, version=version, order_count=SIMULATED_ORDERS
            ),
        )
    except ApiError as error:
        if error.fields:
            return fragment(request, "_rules_problems.html", _problems(document, error.fields))
        return fragment(request, "_error.html", {"error": error})
    return fragment(request, "_simulation.html", {"sim": reply})


async def save_draft(request: Request) -> Response:
    session = require(request, "admin")
    document, form = await _document(request)
    comment = str(form.get("comment") or "").strip()
    request_id = str(form.get("request_id") or "") or uuid.uuid4().hex
    gw = gateway_of(request).as_user(session.key)
    try:
        reply = await gw.call(
            "rules",
            "CreateDraftRules",
            opb.CreateDraftRulesRequest(
                document=document, author=session.caller.principal_id, comment=comment, request_id=request_id
            ),
        )
    except ApiError as error:
        if error.fields:
            return fragment(request, "_rules_problems.html", _problems(document, error.fields))
        return fragment(request, "_error.html", {"error": error})
    return fragment(
        request, "_draft_saved.html", {"version": reply.version, "warnings": list(reply.warnings)}
    )


async def preview(request: Request) -> Response:
    """What publishing (or rolling back to) a version would change, before it is confirmed."""
    session = require(request, "admin")
    version = int(request.path_params["version"])
    action = request.path_params["action"]
    gw = gateway_of(request).as_user(session.key)
    target = (await gw.call("rules", "GetRules", opb.GetRulesRequest(version=version))).version
    live = (await gw.call("rules", "GetRules", opb.GetRulesRequest())).version
    sim = await gw.call(
        "rules", "SimulateRules", opb.SimulateRulesRequest(version=version, order_count=SIMULATED_ORDERS)
    )
    return fragment(request, "_confirm.html", {"action": action, "target": target, "live": live, "sim": sim})


async def act(request: Request) -> Response:
    session = require(request, "admin")
    version = int(request.path_params["version"])
    action = request.path_params["action"]
    gw = gateway_of(request).as_user(session.key)
    try:
        if action == "publish":
            reply = await gw.call("rules", "PublishRules", opb.PublishRulesRequest(version=version))
        else:
            reply = await gw.call("rules", "RollbackRules", opb.RollbackRulesRequest(version=version))
    except ApiError as error:
        return fragment(request, "_error.html", {"error": error})
    done = "published" if action == "publish" else "live again"
    session.notices.append(
        (f"Version {reply.version.version} is {done}: new orders are sourced by it.", "ok")
    )
    return Response(status_code=204, headers={"HX-Redirect": "/rules"})


ROUTES = [
    ("/rules", rules, ["GET"]),
    ("/rules/validate", validate, ["POST"]),
    ("/rules/simulate", simulate, ["POST"]),
    ("/rules/drafts", save_draft, ["POST"]),
    ("/rules/{version:int}/{action:str}/preview", preview, ["GET"]),
    ("/rules/{version:int}/{action:str}", act, ["POST"]),
]

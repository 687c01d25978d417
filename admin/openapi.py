"""The OpenAPI 3.1 document of the admin API, served at `/api/admin/openapi.json`."""

from __future__ import annotations

from typing import Any


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _op(
    summary: str,
    ok: dict[str, Any],
    body: dict[str, Any] | None = None,
    status: str = "200",
    path_id: bool = False,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {
            status: {"description": "done", **_json(ok)},
            "400": {"description": "refused; nothing changed", **_json(_ref("Error"))},
            "401": {"description": "missing or wrong token", **_json(_ref("Error"))},
        },
    }
    if path_id:
        op["parameters"] = [
            {"name": "edi_id", "in": "path", "required": True, "schema": {"type": "string"}}
        ]
        op["responses"]["404"] = {"description": "no such participant", **_json(_ref("Error"))}
    if body is not None:
        op["requestBody"] = {"required": True, **_json(body)}
    return op


def _obj(required: list[str], **props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props}


STR = {"type": "string"}
PARTICIPANT = _obj(
    ["id", "name", "role", "state", "pgp_fingerprint"],
    id=STR,
    name=STR,
    email=STR,
    role=STR,
    pgp_fingerprint=STR,
    state={"type": "string", "enum": ["active", "disabled"]},
    ssh_keys={"type": "integer"},
    created=STR,
    last_login={"type": ["string", "null"]},
)

NULLABLE = {"type": ["string", "null"]}
JOB = _obj(
    ["id", "participant", "file", "state", "attempts"],
    id={"type": "integer"},
    participant=STR,
    file=STR,
    size={"type": "integer"},
    received=STR,
    state={"type": "string", "enum": ["received", "planned", "done", "quarantined"]},
    outcome=NULLABLE,
    attempts={"type": "integer"},
    error=NULLABLE,
    quarantined=NULLABLE,
    retry_requested=NULLABLE,
    finished=NULLABLE,
)
JOB_ID = [{"name": "job_id", "in": "path", "required": True, "schema": {"type": "integer"}}]


def _job_op(summary: str) -> dict[str, Any]:
    op = _op(summary, _ref("Job"))
    op["parameters"] = JOB_ID
    op["responses"]["404"] = {"description": "no such job", **_json(_ref("Error"))}
    return op


def _jobs_op() -> dict[str, Any]:
    op = _op("Jobs, newest first", {"type": "array", "items": _ref("Job")})
    op["parameters"] = [{
        "name": "which", "in": "query", "required": False,
        "schema": {"type": "string", "enum": ["quarantined", "waiting", "all"],
                   "default": "quarantined"},
    }]  # fmt: skip
    return op


BAN = _obj(
    ["address", "banned", "until", "score", "reason"],
    address=STR,
    banned=STR,
    until=STR,
    score={"type": "integer"},
    reason=STR,
)


def _lift_op() -> dict[str, Any]:
    op = _op("Lift the ban of an address (its score starts again from zero)",
             _obj(["address", "lifted"], address=STR, lifted={"type": "boolean"}))  # fmt: skip
    op["parameters"] = [
        {"name": "address", "in": "path", "required": True, "schema": {"type": "string"}}
    ]
    op["responses"]["404"] = {"description": "no ban on that address", **_json(_ref("Error"))}
    return op


REDELIVERY = _obj(
    ["request", "movement", "recipient", "state"],
    request={"type": "integer"},
    movement={"type": "integer"},
    recipient=STR,
    state={"type": "string", "enum": ["done"]},
    file=STR,
    new_movement={"type": "integer"},
    error=NULLABLE,
    requested=STR,
    finished=NULLABLE,
)
COUNT = {"type": "integer"}
RETENTION = _obj(
    ["dry_run", "archived", "purged"],
    dry_run={"type": "boolean"},
    now=STR,
    inbox_before=STR,
    history_before=STR,
    archived={"type": "array", "items": _obj(
        ["participant", "file", "stored"], participant=STR, file=STR,
        stored={"type": "boolean"}, movement={"type": ["integer", "null"]}, archive=STR,
    )},
    purged=_obj(
        ["movements"], movements=COUNT, flow_occurrences=COUNT, stored_contents=COUNT,
        content_files=COUNT, flows=COUNT, jobs=COUNT,
    ),
)  # fmt: skip


def _redeliver_op() -> dict[str, Any]:
    op = _op("Send a movement's delivery again to its recipient (its current key), as a new "
             "movement; answers once the running hub has done it", _ref("Redelivery"))  # fmt: skip
    op["parameters"] = [
        {"name": "movement_id", "in": "path", "required": True, "schema": {"type": "integer"}}
    ]
    op["responses"]["404"] = {"description": "no such movement", **_json(_ref("Error"))}
    return op


INBOX = _obj(["participant", "files", "bytes", "oldest"], participant=STR, files=COUNT,
              bytes=COUNT, oldest=NULLABLE)  # fmt: skip
AUDIT_EVENT = _obj(["id", "at", "actor", "action", "target", "detail", "address"],
                   id=COUNT, at=STR, actor=STR, action=STR, target=STR, detail=STR,
                   address=NULLABLE)  # fmt: skip


def _query(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    found = {"name": name, "in": "query", "required": False, "schema": schema}
    return {**found, "description": description} if description else found


def _audit_op() -> dict[str, Any]:
    events = {"type": "array", "items": _ref("AuditEvent")}
    page = _obj(["total", "page", "pages", "size", "events"], total=COUNT, page=COUNT,
                pages=COUNT, size=COUNT, events=events)  # fmt: skip
    op = _op("The audit log (who, when, what, from where), newest first", page)
    day = {"type": "string", "format": "date"}
    op["parameters"] = [
        _query("q", STR, "words every event shown holds (any case)"),
        _query("from", day, "first day (Europe/Paris)"),
        _query("to", day, "last day (Europe/Paris)"),
        _query("page", {"type": "integer", "default": 1}),
        _query("size", {"type": "integer", "default": 50}),
    ]
    return op


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "BDI admin API", "version": "1.0.0"},
    "servers": [{"url": "/api/admin"}],
    "security": [{"bearer": []}],
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": _obj(["error"], error=STR),
            "Participant": PARTICIPANT,
            "Password": _obj(["id", "password"], id=STR, password=STR),
            "Job": JOB,
            "Ban": BAN,
            "Redelivery": REDELIVERY,
            "Retention": RETENTION,
            "Inbox": INBOX,
            "AuditEvent": AUDIT_EVENT,
        },
    },
    "paths": {
        "/participants": {
            "get": _op("List participants", {"type": "array", "items": _ref("Participant")}),
            "post": _op(
                "Register a participant (the issued password is returned once)",
                _ref("Password"),
                _obj(
                    ["id", "name", "email", "pgp_key"],
                    id=STR,
                    name=STR,
                    email=STR,
                    pgp_key=STR,
                    role=STR,
                    ssh_key=STR,
                ),
                status="201",
            ),
        },
        "/participants/{edi_id}": {
            "get": _op("Show a participant", _ref("Participant"), path_id=True),
        },
        "/participants/{edi_id}/disable": {
            "post": _op("Disable (closes its sessions)", _ref("Participant"), path_id=True),
        },
        "/participants/{edi_id}/enable": {
            "post": _op("Enable", _ref("Participant"), path_id=True),
        },
        "/participants/{edi_id}/reset-password": {
            "post": _op("Issue a new password", _ref("Password"), path_id=True),
        },
        "/participants/{edi_id}/pgp-key": {
            "put": _op(
                "Replace the OpenPGP key",
                _obj(["id", "pgp_fingerprint"], id=STR, pgp_fingerprint=STR),
                _obj(["pgp_key"], pgp_key=STR),
                path_id=True,
            ),
        },
        "/participants/{edi_id}/ssh-key": {
            "put": _op(
                "Replace the SSH key",
                _obj(["id"], id=STR, ssh_keys={"type": "integer"}),
                _obj(["ssh_key"], ssh_key=STR),
                path_id=True,
            ),
        },
        "/hub-key": {"get": _op("The hub's OpenPGP public key", _obj(["armoured"], armoured=STR))},
        "/token/rotate": {"post": _op("New admin token", _obj(["token"], token=STR))},
        "/jobs": {"get": _jobs_op()},
        "/jobs/{job_id}": {"get": _job_op("Show a job, with its last error")},
        "/jobs/{job_id}/retry": {"post": _job_op("Run a quarantined job again")},
        "/bans": {
            "get": _op(
                "Source addresses banned after failed logins, the latest ending first",
                {"type": "array", "items": _ref("Ban")},
            )
        },
        "/bans/{address}": {"delete": _lift_op()},
        "/movements/{movement_id}/redeliver": {"post": _redeliver_op()},
        "/alerts/test": {
            "post": _op(
                "Send a test alert to the operators (smtp_* settings)",
                _obj(["sent_to"], sent_to={"type": "array", "items": STR}),
            )
        },
        "/purge": {
            "post": _op(
                "Archive inbox files past inbox_retention_days, purge history past history_years",
                _ref("Retention"),
                _obj([], dry_run={"type": "boolean", "default": False}),
            )
        },
        "/inboxes": {
            "get": _op(
                "What waits in each participant's inbox (files, bytes, oldest), largest first",
                {"type": "array", "items": _ref("Inbox")},
            )
        },
        "/audit": {"get": _audit_op()},
        "/referential": {
            "put": _op(
                "Replace the participant referential",
                _obj(
                    ["participants", "labels"],
                    participants={"type": "integer"},
                    labels={"type": "integer"},
                ),
                _obj(["toml"], toml=STR),
            ),
        },
    },
}

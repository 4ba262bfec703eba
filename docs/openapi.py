#!/usr/bin/env python3
"""Writes docs/openapi.json, the OpenAPI 3.1 description of `gatehouse api`'s HTTP/JSON API.

The JSON is generated so that the 36 operations share their schemas and error responses
instead of repeating them; edit this file and run `python3 docs/openapi.py > docs/openapi.json`.
tests/server_api.rs checks that the committed JSON is this script's output and that the real
server answers every documented path with documented statuses and bodies.
"""

import json
import sys

EX_CLIENT = "3f0c9a1b2c3d4e5f0000000000000001"
EX_CLIENT2 = "3f0c9a1b2c3d4e5f0000000000000002"
EX_AT_MS = 1767225600000  # 2026-01-01T00:00:00Z; tests/server_api.rs replaces it with a time ahead

ERROR_CODES = ["bad_request", "unauthenticated", "not_found", "timeout", "too_many_requests",
               "unavailable", "internal"]


def ref(name):
    return {"$ref": f"#/components/schemas/{name}"}


SCHEMAS = {
    "ClientId": {
        "type": "string", "pattern": "^[0-9a-f]{32}$",
        "description": "A client (connection) id: 32 lowercase hex digits, the gateway's id and a "
                       "connection number.",
        "examples": [EX_CLIENT],
    },
    "Name": {
        "type": "string", "minLength": 1, "maxLength": 256,
        "description": "A uid or group name: 1-256 bytes of UTF-8 without control characters.",
    },
    "ClientIds": {"type": "array", "items": ref("ClientId"),
                  "description": "At most --max-list-len (10,000) entries."},
    "Names": {"type": "array", "items": ref("Name"),
              "description": "At most --max-list-len (10,000) entries."},
    "Data": {"type": "string", "description": "A text frame to send."},
    "DataBase64": {"type": "string", "contentEncoding": "base64",
                   "description": "A binary frame to send, in standard base64."},
    "IdempotencyKey": {
        "type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[!-~]+$",
        "description": "Sends only: a repeat with the same key within the window (5 minutes) "
                       "returns {\"replayed\": true} and sends nothing. Same as the "
                       "Idempotency-Key header.",
    },
    "Session": {"type": "object", "description": "A client's session: a JSON object "
                                                 "(at most the gateways' --max-session-bytes, 16 KiB)."},
    "CloseCode": {"type": "integer", "description": "1000, 1001, 1008, 1011-1013 or 3000-4999 "
                                                    "(0 means 1000)."},
    "CloseReason": {"type": "string", "maxLength": 123, "description": "At most 123 bytes."},
    "Deadline": {
        "type": "object", "additionalProperties": False, "required": ["at_ms"],
        "properties": {
            "at_ms": {"type": "integer", "minimum": 1,
                      "description": "When the gateway closes the connection (Unix milliseconds), at most "
                                     "366 days ahead."},
            "warn_before_ms": {"type": "integer", "minimum": 0, "maximum": 86400000,
                               "description": "Send the warning frame this long before at_ms."},
            "data": ref("Data"),
            "data_base64": ref("DataBase64"),
            "close_code": ref("CloseCode"),
            "close_reason": ref("CloseReason"),
        },
    },
    "Error": {
        "type": "object", "additionalProperties": False, "required": ["error"],
        "properties": {"error": {
            "type": "object", "additionalProperties": False, "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "enum": ERROR_CODES},
                "message": {"type": "string"},
            },
        }},
    },
}

# Answer shapes (the "result" object).
RESULTS = {
    "sent": ("SendResult", {
        "type": "object", "additionalProperties": False, "required": ["replayed"],
        "properties": {"replayed": {"type": "boolean", "description":
                                    "true when an idempotency key matched an earlier success: "
                                    "nothing was sent this time."}},
    }),
    "done": ("Done", {"type": "object", "additionalProperties": False, "properties": {}}),
    "online": ("Online", {"type": "object", "additionalProperties": False, "required": ["online"],
                          "properties": {"online": {"type": "boolean"}}}),
    "count": ("Count", {"type": "object", "additionalProperties": False, "required": ["count"],
                        "properties": {"count": {"type": "integer", "minimum": 0}}}),
    "client_ids": ("ClientIdList", {"type": "object", "additionalProperties": False,
                                    "required": ["client_ids"],
                                    "properties": {"client_ids": {"type": "array", "items": ref("ClientId")}}}),
    "uids": ("UidList", {"type": "object", "additionalProperties": False, "required": ["uids"],
                         "properties": {"uids": {"type": "array", "items": ref("Name")}}}),
    "groups": ("GroupList", {"type": "object", "additionalProperties": False, "required": ["groups"],
                             "properties": {"groups": {"type": "array", "items": ref("Name")}}}),
    "uid": ("UidOf", {"type": "object", "additionalProperties": False, "required": ["uid"],
                      "properties": {"uid": {"type": ["string", "null"]}}}),
    "session": ("SessionOf", {"type": "object", "additionalProperties": False, "required": ["session"],
                              "properties": {"session": {"oneOf": [ref("Session"), {"type": "null"}]}}}),
    "sessions": ("Sessions", {"type": "object", "additionalProperties": False, "required": ["sessions"],
                              "properties": {"sessions": {
                                  "type": "object", "propertyNames": ref("ClientId"),
                                  "additionalProperties": ref("Session"),
                                  "description": "Client id -> session."}}}),
    "by_uid": ("ClientIdsByUid", {"type": "object", "additionalProperties": False,
                                  "required": ["client_ids_by_uid"],
                                  "properties": {"client_ids_by_uid": {
                                      "type": "object",
                                      "additionalProperties": {"type": "array", "items": ref("ClientId")},
                                      "description": "Uid -> its client ids; uids without a "
                                                     "connection are absent."}}}),
    "counts": ("Counts", {"type": "object", "additionalProperties": False, "required": ["counts"],
                          "properties": {"counts": {
                              "type": "object", "additionalProperties": {"type": "integer", "minimum": 0},
                              "description": "Every requested group -> its member count (0 if none)."}}}),
}

FIELD_SCHEMAS = {
    "client": ref("ClientId"), "clients": ref("ClientIds"), "uid": ref("Name"), "uids": ref("Names"),
    "group": ref("Name"), "groups": ref("Names"), "exclude": ref("ClientIds"), "data": ref("Data"),
    "data_base64": ref("DataBase64"), "idempotency_key": ref("IdempotencyKey"),
    "session": ref("Session"), "code": ref("CloseCode"), "reason": ref("CloseReason"),
    "deadline": {"oneOf": [ref("Deadline"), {"type": "null"}],
                 "description": "The deadline; absent or null clears it."},
}

SEND = ["data", "data_base64", "idempotency_key"]

# name, scope, summary, fields, required, result, example, names a client (404 possible)
OPS = [
    ("send_to_client", "publish", "Send a frame to one client.", ["client"] + SEND, ["client"],
     "sent", {"client": EX_CLIENT, "data": "hello"}, True),
    ("send_to_clients", "publish", "Send a frame to each of several clients.", ["clients"] + SEND,
     ["clients"], "sent", {"clients": [EX_CLIENT, EX_CLIENT2], "data": "hello"}, True),
    ("send_to_uid", "publish", "Send a frame to every connection of a uid, except `exclude`.",
     ["uid", "exclude"] + SEND, ["uid"], "sent", {"uid": "alice", "data": "hello"}, False),
    ("send_to_uids", "publish", "Send a frame to every connection of each uid, except `exclude`.",
     ["uids", "exclude"] + SEND, ["uids"], "sent",
     {"uids": ["alice", "bob"], "data_base64": "AAEC", "idempotency_key": "order-17"}, False),
    ("send_to_group", "publish", "Send a frame to every member of a group, except `exclude`.",
     ["group", "exclude"] + SEND, ["group"], "sent",
     {"group": "room", "data": "hello", "exclude": [EX_CLIENT2]}, False),
    ("send_to_groups", "publish", "Send a frame once to every member of any of the groups, except `exclude`.",
     ["groups", "exclude"] + SEND, ["groups"], "sent", {"groups": ["room", "lobby"], "data": "hello"}, False),
    ("send_to_all", "publish", "Send a frame to every client of the cluster, except `exclude`.",
     ["exclude"] + SEND, [], "sent", {"data": "maintenance at 22:00"}, False),
    ("bind_uid", "admin", "Bind a client to a uid. Returns once every sender would route to it.",
     ["client", "uid"], ["client", "uid"], "done", {"client": EX_CLIENT, "uid": "alice"}, True),
    ("unbind_uid", "admin", "Unbind a client from a uid.", ["client", "uid"], ["client", "uid"], "done",
     {"client": EX_CLIENT2, "uid": "alice"}, True),
    ("join_group", "admin", "Add a client to a group. Returns once every sender would reach it.",
     ["client", "group"], ["client", "group"], "done", {"client": EX_CLIENT, "group": "room"}, True),
    ("leave_group", "admin", "Remove a client from a group.", ["client", "group"], ["client", "group"],
     "done", {"client": EX_CLIENT2, "group": "room"}, True),
    ("ungroup", "admin", "Dissolve a group on every gateway.", ["group"], ["group"], "done",
     {"group": "lobby"}, False),
    ("set_session", "admin", "Replace a client's session.", ["client", "session"], ["client", "session"],
     "done", {"client": EX_CLIENT, "session": {"plan": "pro"}}, True),
    ("update_session", "admin", "Merge keys into a client's session.", ["client", "session"],
     ["client", "session"], "done", {"client": EX_CLIENT, "session": {"seen": 3}}, True),
    ("get_session", "query", "A client's session (null when it is not connected).", ["client"], ["client"],
     "session", {"client": EX_CLIENT}, True),
    ("all_sessions", "query", "The session of every client.", [], [], "sessions", {}, False),
    ("group_sessions", "query", "The session of every member of a group.", ["group"], ["group"], "sessions",
     {"group": "room"}, False),
    ("is_online", "query", "Whether a client is connected.", ["client"], ["client"], "online",
     {"client": EX_CLIENT}, True),
    ("is_uid_online", "query", "Whether a uid has a connection.", ["uid"], ["uid"], "online",
     {"uid": "alice"}, False),
    ("online_uids", "query", "Which of the uids have a connection (sorted).", ["uids"], ["uids"], "uids",
     {"uids": ["alice", "bob"]}, False),
    ("client_ids_by_uid", "query", "The clients bound to a uid (sorted).", ["uid"], ["uid"], "client_ids",
     {"uid": "alice"}, False),
    ("client_ids_by_uids", "query", "The clients bound to each uid.", ["uids"], ["uids"], "by_uid",
     {"uids": ["alice", "bob"]}, False),
    ("uid_of", "query", "The uid a client is bound to (null if none).", ["client"], ["client"], "uid",
     {"client": EX_CLIENT}, True),
    ("all_client_ids", "query", "Every client id of the cluster (sorted).", [], [], "client_ids", {}, False),
    ("all_client_count", "query", "The number of connected clients.", [], [], "count", {}, False),
    ("all_uids", "query", "Every bound uid (sorted, each once).", [], [], "uids", {}, False),
    ("all_uid_count", "query", "The number of distinct bound uids.", [], [], "count", {}, False),
    ("all_groups", "query", "Every group with at least one member (sorted).", [], [], "groups", {}, False),
    ("group_client_ids", "query", "The members of a group (sorted).", ["group"], ["group"], "client_ids",
     {"group": "room"}, False),
    ("group_client_count", "query", "The number of members of a group.", ["group"], ["group"], "count",
     {"group": "room"}, False),
    ("group_client_counts", "query", "The number of members of each group.", ["groups"], ["groups"], "counts",
     {"groups": ["room", "lobby"]}, False),
    ("group_uids", "query", "The distinct uids among a group's members (sorted).", ["group"], ["group"],
     "uids", {"group": "room"}, False),
    ("group_uid_count", "query", "The number of distinct uids among a group's members.", ["group"],
     ["group"], "count", {"group": "room"}, False),
    ("close_client", "publish", "Close a client after what is queued for it, with an optional last frame.",
     ["client", "data", "data_base64", "code", "reason"], ["client"], "done",
     {"client": EX_CLIENT2, "data": "bye", "code": 4000, "reason": "signed out"}, True),
    ("destroy_client", "publish", "Close a client at once, dropping what is queued for it.", ["client"],
     ["client"], "done", {"client": EX_CLIENT2}, True),
    ("set_deadline", "publish", "Set (or with null, clear) a connection's deadline: the gateway sends the "
     "warning frame, then closes it.", ["client", "deadline"], ["client"], "done",
     {"client": EX_CLIENT, "deadline": {"at_ms": EX_AT_MS, "warn_before_ms": 60000,
                                         "data": "your session expires in a minute", "close_code": 4001,
                                         "close_reason": "session expired"}}, True),
]


def error(status, description):
    return {"description": description,
            "content": {"application/json": {"schema": ref("Error")}}}


RESPONSES = {
    "BadRequest": error(400, "`bad_request`: malformed JSON, an unknown or missing field, a wrong type, "
                             "a value over a limit, an answer over the response limit."),
    "Unauthenticated": {**error(401, "`unauthenticated`: no API key, or an unknown one."),
                        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}}},
    "Forbidden": error(403, "`unauthenticated` (message `forbidden: …`): the key lacks the operation's scope."),
    "NotFound": error(404, "`not_found`: the client is not connected, or its gateway left the cluster; "
                           "also a path that names no operation."),
    "TooLarge": error(413, "`bad_request`: the body exceeds --max-body-bytes (4 MiB)."),
    "TooManyRequests": {**error(429, "`too_many_requests`: the key is over its rate; retry after "
                                     "`Retry-After` seconds."),
                        "headers": {"Retry-After": {"schema": {"type": "integer"}}}},
    "Internal": error(500, "`internal`: a bug; the message says what failed."),
    "Unavailable": {**error(503, "`unavailable`: the process has not joined the cluster yet, runs "
                                 "--max-concurrent-requests already, or a gateway cannot be reached."),
                    "headers": {"Retry-After": {"schema": {"type": "integer"}}}},
    "Timeout": error(504, "`timeout`: the request's deadline (--request-timeout, 10 s) or a gateway's "
                          "answer (5 s) passed."),
}

COMMON_ERRORS = {"400": "BadRequest", "401": "Unauthenticated", "403": "Forbidden", "413": "TooLarge",
                 "429": "TooManyRequests", "500": "Internal", "503": "Unavailable", "504": "Timeout"}


def op_path(name, scope, summary, fields, required, result, example, names_client):
    schema_name = "".join(p.capitalize() for p in name.split("_")) + "Request"
    request = {"type": "object", "additionalProperties": False,
               "properties": {f: FIELD_SCHEMAS[f] for f in fields}}
    if required:
        request["required"] = required
    if "data" in fields and name != "close_client":
        request["oneOf"] = [{"required": ["data"]}, {"required": ["data_base64"]}]
        request["description"] = "Exactly one of data (a text frame) and data_base64 (a binary frame)."
    SCHEMAS[schema_name] = request
    result_name, _ = RESULTS[result]
    responses = {"200": {
        "description": "Done.",
        "content": {"application/json": {"schema": {
            "type": "object", "additionalProperties": False, "required": ["result"],
            "properties": {"result": ref(result_name)}}}},
    }}
    if result == "sent":
        responses["200"]["headers"] = {"Idempotent-Replayed": {
            "schema": {"type": "string", "enum": ["true"]},
            "description": "Present when the answer was replayed from the idempotency cache."}}
    errors = dict(COMMON_ERRORS)
    if names_client:
        errors["404"] = "NotFound"
    for status in sorted(errors):
        responses[status] = {"$ref": f"#/components/responses/{errors[status]}"}
    operation = {
        "operationId": name,
        "summary": summary,
        "description": f"Scope: `{scope}`.",
        "tags": [scope],
        "requestBody": {"required": False, "content": {"application/json": {
            "schema": ref(schema_name), "example": example}}},
        "responses": responses,
    }
    if result == "sent":
        operation["parameters"] = [{"name": "Idempotency-Key", "in": "header", "required": False,
                                    "schema": ref("IdempotencyKey")}]
    if not required and not fields:
        operation["description"] += " The body may be empty or `{}`."
    return operation


def document():
    paths = {}
    for op in OPS:
        paths[f"/api/v1/{op[0]}"] = {"post": op_path(*op)}
    for _, (name, schema) in RESULTS.items():
        SCHEMAS[name] = schema
    batch_item = {"type": "object", "required": ["op"],
                  "properties": {"op": {"type": "string", "enum": [op[0] for op in OPS]}},
                  "description": "An operation's name in `op` and its request fields beside it."}
    SCHEMAS["BatchRequest"] = {
        "type": "object", "additionalProperties": False, "required": ["ops"],
        "properties": {"ops": {"type": "array", "items": batch_item, "maxItems": 100,
                               "description": "At most --max-batch-ops (100) operations."}},
    }
    SCHEMAS["BatchResult"] = {"oneOf": [
        {"type": "object", "additionalProperties": False, "required": ["result"],
         "properties": {"result": {"type": "object"}}},
        ref("Error"),
    ]}
    paths["/api/v1/batch"] = {"post": {
        "operationId": "batch",
        "summary": "Run several operations in order, each with its own result.",
        "description": "The whole batch is checked first (shape, limits, every operation's scope): a "
                       "malformed batch runs nothing. Then the operations run one after another; an "
                       "operation's failure is its result and the next one still runs. The batch costs "
                       "one rate-limit token per operation. Sends take their own `idempotency_key`; the "
                       "Idempotency-Key header is refused here.",
        "tags": ["batch"],
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": ref("BatchRequest"),
            "example": {"ops": [
                {"op": "bind_uid", "client": EX_CLIENT, "uid": "alice"},
                {"op": "send_to_uid", "uid": "alice", "data": "welcome", "idempotency_key": "welcome-alice"},
                {"op": "is_uid_online", "uid": "alice"},
            ]}}}},
        "responses": {
            "200": {"description": "One result per operation, in order.",
                    "content": {"application/json": {"schema": {
                        "type": "object", "additionalProperties": False, "required": ["results"],
                        "properties": {"results": {"type": "array", "items": ref("BatchResult")}}}}}},
            **{s: {"$ref": f"#/components/responses/{r}"} for s, r in sorted(COMMON_ERRORS.items())},
        },
    }}
    paths["/healthz"] = {"get": {"operationId": "healthz", "summary": "Liveness: the process runs.",
                                 "security": [], "tags": ["health"],
                                 "responses": {"200": {"description": "ok",
                                                       "content": {"text/plain": {"schema": {"type": "string"}}}}}}}
    readiness = {"type": "object", "additionalProperties": False, "required": ["connected", "keys"],
                 "properties": {"connected": {"type": "boolean"}, "keys": {"type": "integer", "minimum": 0}}}
    paths["/readyz"] = {"get": {
        "operationId": "readyz", "summary": "Readiness: the process has joined the cluster.",
        "security": [], "tags": ["health"],
        "responses": {
            "200": {"description": "Joined; operations are served.",
                    "content": {"application/json": {"schema": readiness}}},
            "503": {"description": "Not joined yet.", "content": {"application/json": {"schema": readiness}}},
        }}}
    paths["/metrics"] = {"get": {"operationId": "metrics", "summary": "Prometheus counters and gauges.",
                                 "security": [], "tags": ["health"],
                                 "responses": {"200": {"description": "Prometheus text format.",
                                                       "content": {"text/plain": {"schema": {"type": "string"}}}}}}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "gatehouse server API",
            "version": "1",
            "description": "The whole cluster API of gatehouse (sends, bindings, groups, sessions, presence, "
                           "closes, deadlines) for backends in any language, served by `gatehouse api`. The "
                           "same operations exist over gRPC (`gatehouse.v1.ServerApi`). See "
                           "docs/server-api.md for keys, scopes, limits and idempotency.",
        },
        "servers": [{"url": "http://127.0.0.1:8090"}],
        "security": [{"bearer": []}],
        "tags": [{"name": "publish"}, {"name": "query"}, {"name": "admin"}, {"name": "batch"},
                 {"name": "health"}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "An API key from `gatehouse api-key create`."}},
            "schemas": SCHEMAS,
            "responses": RESPONSES,
        },
    }


if __name__ == "__main__":
    json.dump(document(), sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")

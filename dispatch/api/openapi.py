"""The OpenAPI 3.1 document the server serves at /api/v1/openapi.json."""

from __future__ import annotations

from typing import Any

import msgspec

from dispatch.api.admin import NewOfficer, NewShift, NewUnit, OfficerChange
from schemas.actions import ActionRequest, SignIn

_schemas, _components = msgspec.json.schema_components(
    [ActionRequest, SignIn, NewOfficer, OfficerChange, NewShift, NewUnit], ref_template="#/components/schemas/{name}"
)
_action_schema = _schemas[:1]
_sign_in, _new_officer, _officer_change, _new_shift, _new_unit = _schemas[1:]

_ERROR = {
    "type": "object",
    "required": ["code", "message"],
    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
}


def _err(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


_AUTH_ERRORS = {"401": _err("no valid bearer token"), "403": _err("outside the officer's jurisdiction")}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Ping'an Dispatch API",
        "version": "1.0.0",
        "description": "Incidents, officer actions and statistics. Send `Authorization: Bearer <token>`; "
        "tokens are issued by `dispatch officer token <officer_id>`.",
    },
    "servers": [{"url": "/"}],
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {**_components, "Error": _ERROR},
    },
    "security": [{"bearer": []}],
    "paths": {
        "/healthz": {"get": {"security": [], "summary": "liveness", "responses": {"200": {"description": "alive"}}}},
        "/readyz": {
            "get": {
                "security": [],
                "summary": "readiness (the database answers)",
                "responses": {"200": {"description": "ready"}, "503": _err("not ready")},
            }
        },
        "/api/v1/me": {
            "get": {
                "summary": "the signed-in officer",
                "responses": {"200": {"description": "officer"}, **_AUTH_ERRORS},
            }
        },
        "/api/v1/incidents/{incident_id}": {
            "get": {
                "summary": "an incident with its timeline and notifications",
                "parameters": [
                    {
                        "name": "incident_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "format": "uuid"},
                    }
                ],
                "responses": {"200": {"description": "the incident"}, **_AUTH_ERRORS, "404": _err("no such incident")},
            }
        },
        "/api/v1/incidents/{incident_id}/actions": {
            "post": {
                "summary": "act on an incident: acknowledge, on_scene, resolve, note, take_over, assign",
                "parameters": [
                    {
                        "name": "incident_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "format": "uuid"},
                    }
                ],
                "requestBody": {"required": True, "content": {"application/json": {"schema": _action_schema[0]}}},
                "responses": {
                    "200": {"description": "the incident after the action"},
                    **_AUTH_ERRORS,
                    "404": _err("no such incident"),
                    "409": _err("the incident's state does not allow this action (code says why)"),
                    "422": _err("the body is not a valid action"),
                },
            }
        },
        "/api/v1/auth/sign-in": {
            "post": {
                "security": [],
                "summary": "sign in with officer id and password; sets the session cookie and returns a token",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _sign_in}}},
                "responses": {
                    "200": {"description": "signed in"},
                    "401": _err("unknown officer or wrong password"),
                    "422": _err("bad body"),
                },
            }
        },
        "/api/v1/auth/sign-out": {
            "post": {"summary": "end the session", "responses": {"204": {"description": "done"}}}
        },
        "/api/v1/incidents": {
            "get": {
                "summary": "the queue: open incidents by priority then age (state=closed: most recently closed)",
                "parameters": [
                    {"name": "state", "in": "query", "schema": {"enum": ["open", "closed"]}},
                    {"name": "unit", "in": "query", "schema": {"type": "string"}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                ],
                "responses": {
                    "200": {"description": "items and a cursor for /api/v1/ws?since="},
                    **_AUTH_ERRORS,
                    "422": _err("bad query"),
                },
            }
        },
        "/api/v1/ws": {
            "get": {
                "summary": "WebSocket of incident updates in the jurisdiction; ?since=<updated_at> first sends what "
                "changed since then. Messages: hello, incident, caught_up, ping, resync.",
                "parameters": [{"name": "since", "in": "query", "schema": {"type": "string", "format": "date-time"}}],
                "responses": {"101": {"description": "switching protocols"}, "401": _err("no session")},
            }
        },
        "/api/v1/units": {
            "get": {"summary": "the officer's units", "responses": {"200": {"description": "units"}, **_AUTH_ERRORS}},
            "post": {
                "summary": "create a unit (administrators)",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _new_unit}}},
                "responses": {
                    "201": {"description": "created"},
                    **_AUTH_ERRORS,
                    "409": _err("exists"),
                    "422": _err("bad body"),
                },
            },
        },
        "/api/v1/devices": {
            "get": {
                "summary": "devices with their health",
                "parameters": [
                    {
                        "name": "state",
                        "in": "query",
                        "schema": {"enum": ["all", "online", "offline", "low_battery", "inactive"]},
                    },
                    {"name": "unit", "in": "query", "schema": {"type": "string"}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer"}},
                    {"name": "offset", "in": "query", "schema": {"type": "integer"}},
                ],
                "responses": {"200": {"description": "devices"}, **_AUTH_ERRORS, "422": _err("bad query")},
            }
        },
        "/api/v1/officers": {
            "get": {
                "summary": "officers of the jurisdiction, with whether they are on shift",
                "responses": {"200": {"description": "officers"}, **_AUTH_ERRORS},
            },
            "post": {
                "summary": "create an officer (administrators); the password is returned once",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _new_officer}}},
                "responses": {
                    "201": {"description": "created"},
                    **_AUTH_ERRORS,
                    "409": _err("exists"),
                    "422": _err("bad body"),
                },
            },
        },
        "/api/v1/officers/{officer_id}": {
            "patch": {
                "summary": "change or deactivate an officer (administrators)",
                "parameters": [{"name": "officer_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": _officer_change}}},
                "responses": {
                    "200": {"description": "changed"},
                    **_AUTH_ERRORS,
                    "404": _err("no such officer"),
                    "422": _err("bad body"),
                },
            },
        },
        "/api/v1/officers/{officer_id}/shifts": {
            "get": {
                "summary": "an officer's shifts",
                "parameters": [{"name": "officer_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "shifts"}, **_AUTH_ERRORS},
            },
            "post": {
                "summary": "add a shift (administrators)",
                "parameters": [{"name": "officer_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": _new_shift}}},
                "responses": {"201": {"description": "added"}, **_AUTH_ERRORS, "422": _err("bad shift")},
            },
        },
        "/metrics": {
            "get": {"security": [], "summary": "Prometheus metrics", "responses": {"200": {"description": "text"}}}
        },
        "/api/v1/stats/response-times": {
            "get": {
                "summary": "response-time percentiles and resolution rate of a unit and its child units",
                "parameters": [
                    {
                        "name": "unit",
                        "in": "query",
                        "schema": {"type": "string"},
                        "description": "unit code (default: the officer's)",
                    },
                    {"name": "from", "in": "query", "schema": {"type": "string", "format": "date-time"}},
                    {"name": "to", "in": "query", "schema": {"type": "string", "format": "date-time"}},
                    {"name": "format", "in": "query", "schema": {"enum": ["json", "csv"]}},
                ],
                "responses": {
                    "200": {"description": "statistics"},
                    **_AUTH_ERRORS,
                    "404": _err("no such unit"),
                    "422": _err("bad period"),
                },
            }
        },
    },
}

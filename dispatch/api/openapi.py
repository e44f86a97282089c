"""The OpenAPI 3.1 document the server serves at /api/v1/openapi.json."""

from __future__ import annotations

from typing import Any

import msgspec

from schemas.actions import ActionRequest

_action_schema, _components = msgspec.json.schema_components(
    [ActionRequest], ref_template="#/components/schemas/{name}"
)

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

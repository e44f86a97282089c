"""The served OpenAPI document describes every API route the app registers."""

from __future__ import annotations

from core.settings import Settings
from dispatch.api.app import build_app
from dispatch.api.openapi import OPENAPI


def test_every_api_route_is_documented() -> None:
    app = build_app(Settings(), None)  # type: ignore[arg-type]  # the pool is not touched
    routes = set()
    for r in app.router.routes():
        path = r.resource.canonical if r.resource is not None else ""
        if path.startswith("/api/") or path in ("/healthz", "/readyz", "/metrics"):
            if r.method != "HEAD":
                routes.add((path, r.method.lower()))
    documented = {(p, m) for p, ops in OPENAPI["paths"].items() for m in ops}
    missing = {(p, m) for p, m in routes if p != "/api/v1/openapi.json"} - documented
    assert not missing, f"routes missing from the OpenAPI document: {sorted(missing)}"
    assert OPENAPI["openapi"].startswith("3.1")

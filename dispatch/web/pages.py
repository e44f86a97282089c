"""Routes of the duty-desk pages. The pages are static files; their data comes from the API
(`/api/v1/...`) and the live WebSocket, called from the pages' own scripts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).resolve().parent / "static"

# Everything is served from this origin: no inline script or style, no third-party host.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # Pages and scripts change with each release; ETag / Last-Modified keep revalidation cheap.
    "Cache-Control": "no-cache",
}


def _page(name: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    path = STATIC / name

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(path, headers=_HEADERS)

    handler.__name__ = f"page_{path.stem}"
    return handler


async def _root(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/queue")


@web.middleware
async def _static_headers(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    resp = await handler(request)
    if request.path.startswith("/static/"):
        for k, v in _HEADERS.items():
            resp.headers.setdefault(k, v)
    return resp


def register(app: web.Application) -> None:
    """Adds the pages and their static files to the API's application."""
    app.middlewares.append(_static_headers)
    app.router.add_get("/", _root)
    app.router.add_get("/login", _page("login.html"))
    app.router.add_get("/queue", _page("queue.html"))
    app.router.add_get("/incidents/{incident_id}", _page("incident.html"))
    app.router.add_get("/stats", _page("stats.html"))
    app.router.add_get("/devices", _page("devices.html"))
    app.router.add_static("/static/", STATIC, append_version=False)

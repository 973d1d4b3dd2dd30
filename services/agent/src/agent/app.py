"""The agent's routes: `/health` for its own check, a small `/api`, and `/api/upstream/...`
forwarded over mTLS to the service named by `UPSTREAM_URL` when there is one (the agent has
none; a service made from this template by `cargo xtask new --calls` does)."""

import asyncio
import http.client
import os
import platform
from urllib.parse import urlsplit

from slipway_common import CertPaths, client_context
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

SERVICE = "agent"
GREETING = "hello from the agent"


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok", "service": SERVICE, "environment": os.environ.get("ENVIRONMENT", "unset")})


async def hello(request: Request) -> JSONResponse:
    return JSONResponse({"message": GREETING, "python": platform.python_version()})


async def echo(request: Request) -> JSONResponse:
    if request.method == "POST":
        try:
            payload = await request.json()
        except ValueError:
            return JSONResponse({"error": "the body is not JSON"}, status_code=400)
        return JSONResponse({"echo": payload})
    return JSONResponse({"echo": request.query_params.get("msg", "")})


def upstream_get(url: str, path: str) -> tuple[int, bytes]:
    """GET `path` from the upstream over mTLS: trusting only the Root CA, presenting this
    service's client certificate, checking the upstream's name against its certificate."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"UPSTREAM_URL `{url}` must be https://host[:port]")
    context = client_context(CertPaths.from_env(SERVICE))
    conn = http.client.HTTPSConnection(parts.hostname, parts.port or 443, context=context, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


async def upstream(request: Request) -> Response:
    url = os.environ.get("UPSTREAM_URL")
    if not url:
        return JSONResponse({"error": f"{SERVICE} has no upstream (UPSTREAM_URL is not set)"}, status_code=404)
    path = "/api/" + request.path_params["path"]
    try:
        status, body = await asyncio.to_thread(upstream_get, url, path)
    except (OSError, ValueError) as err:
        return JSONResponse({"error": f"upstream unreachable: {err}"}, status_code=502)
    return Response(body, status_code=status, media_type="application/json")


app = Starlette(
    routes=[
        Route("/health", health),
        Route("/api/hello", hello),
        Route("/api/echo", echo, methods=["GET", "POST"]),
        Route("/api/upstream/{path:path}", upstream),
    ]
)

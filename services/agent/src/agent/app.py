"""The agent's routes: `/health` for its own check, and a small `/api`."""

import os
import platform

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

GREETING = "hello from the agent"


async def health(request: Request) -> JSONResponse:
    return JSONResponse(
        {"status": "ok", "service": "agent", "environment": os.environ.get("ENVIRONMENT", "unset")}
    )


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


app = Starlette(
    routes=[
        Route("/health", health),
        Route("/api/hello", hello),
        Route("/api/echo", echo, methods=["GET", "POST"]),
    ]
)

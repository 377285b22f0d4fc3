"""The HTTP routes: ``POST /deblur/v1/deblur`` and ``GET /deblur/v1/models`` on the WebUI's FastAPI app."""
from __future__ import annotations

from fastapi import Body
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from . import adapter, backend

PREFIX = "/deblur/v1"


def register(app) -> None:
    def deblur_locked(payload):
        with backend.exclusive_job("deblur"):
            return adapter.handle_deblur(payload)

    async def deblur(payload=Body(...)):
        status, body = await run_in_threadpool(deblur_locked, payload)
        return JSONResponse(body, status_code=status)

    async def models():
        return JSONResponse(await run_in_threadpool(adapter.models_listing))

    app.add_api_route(f"{PREFIX}/deblur", deblur, methods=["POST"])
    app.add_api_route(f"{PREFIX}/models", models, methods=["GET"])

"""Liveness and readiness probes for load balancers and orchestrators."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from fleetplane.api.deps import Context

router = APIRouter(tags=["probes"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process answers; touches no database."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(context: Context) -> JSONResponse:
    """The database answers a query."""
    try:
        await run_in_threadpool(context.database.ping)
    except SQLAlchemyError as exc:
        return JSONResponse(
            {"status": "unavailable", "database": "down", "reason": type(exc).__name__},
            status_code=503,
        )
    return JSONResponse({"status": "ok", "database": context.database.dialect})

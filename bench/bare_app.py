"""The yardstick: a bare FastAPI app answering one GET, served the same way as fleetplane."""

from __future__ import annotations

from fastapi import FastAPI

app = FastAPI()


@app.get("/")
async def root() -> dict[str, bool]:
    """The cheapest JSON answer FastAPI gives."""
    return {"ok": True}

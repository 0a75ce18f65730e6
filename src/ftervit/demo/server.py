"""The demo's web app: one page, ``GET /api/info`` and ``POST /api/classify``, served by the C engine.

Concurrency: one engine and a lock. The engine runs one pass at a time on ``--threads``
threads that already use the cores; a second engine would compete for the same cores and
double the memory without serving more images a second. Requests are handled concurrently
up to the engine (upload, decoding and resizing in the thread pool, in parallel); the pass
itself is serialized, so each one gets every engine thread and ``ms`` is the engine's own
time, not the wait for the lock.
"""
from __future__ import annotations

import io
import threading
import time
from importlib import resources
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from ftervit.engine import Engine
from ftervit.engine.preprocess import load_image
from ftervit.errors import FtervitError

MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers allowed beyond --max-bytes


class TooLarge(Exception):
    """The request body went over the limit while it was being read."""


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is answered 413 without reading it
    all (by its Content-Length, or by counting a chunked body as it arrives)."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            return await too_large(self.limit - MULTIPART_OVERHEAD)(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise TooLarge
            return message

        await self.app(scope, counted, send)


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def too_large(max_bytes: int) -> JSONResponse:
    return error(413, f"the image is larger than this server's limit of {max_bytes:,} bytes (--max-bytes)")


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits.astype(np.float64) - logits.max())
    return z / z.sum()


def create_app(engine: Engine, top_k: int = 5, max_bytes: int = 10_000_000, file_name: str = "") -> FastAPI:
    """The demo app around a loaded engine (``ftervit demo`` runs it with uvicorn).

    Args:
        engine: the model; the app serializes its passes with a lock.
        top_k: classes per answer.
        max_bytes: largest accepted upload; larger ones get 413.
        file_name: the .ftv file's name, shown on the page.
    """
    app = FastAPI(title="ftervit demo", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, limit=max_bytes + MULTIPART_OVERHEAD)
    lock = threading.Lock()
    cfg = engine.config
    names = engine.class_names
    k = min(top_k, engine.num_classes)
    page = resources.files("ftervit.demo").joinpath("page.html").read_text(encoding="utf-8")
    info = {
        "file": Path(file_name).name,
        "model": {key: cfg[key] for key in ("img_h", "img_w", "patch_h", "patch_w", "in_chans", "embed_dim",
                                            "depth", "num_heads", "mlp_hidden", "num_classes", "num_tokens")},
        "mean": list(cfg["mean"]), "std": list(cfg["std"]), "grid": list(engine.grid),
        "class_names": names, "format": {1: "tq2", 2: "tq1"}.get(cfg["format"], str(cfg["format"])),
        "kernels": engine.kernels, "threads": engine.threads, "top_k": k, "max_bytes": max_bytes,
    }

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def internal_error(_request: Request, exc: Exception) -> JSONResponse:  # a bug: no traceback to the client
        return error(500, f"internal error: {type(exc).__name__}")

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/api/info")
    def api_info() -> dict:
        return info

    def classify(data: bytes) -> dict:
        x = load_image(data, engine.input_shape, cfg["mean"], cfg["std"], name="the uploaded image")
        with lock:
            start = time.perf_counter()
            logits, maps = engine.forward_rollout(x[None])
            ms = (time.perf_counter() - start) * 1000
        logits = logits[0]
        probs = softmax(logits)
        top = np.argsort(-logits, kind="stable")[:k]  # as `ftervit run`
        return {
            "top": [{"index": int(i), "name": names[i] if names else None, "prob": float(probs[i]),
                     "logit": float(logits[i])} for i in top],
            "ms": round(ms, 3), "kernels": engine.kernels,
            "rollout": {"grid": list(engine.grid), "values": [float(v) for v in maps[0].ravel()]},
        }

    @app.post("/api/classify")
    async def api_classify(request: Request) -> JSONResponse:
        try:
            async with request.form(max_files=1, max_fields=8) as form:
                upload = form.get("image")
                if not isinstance(upload, UploadFile):
                    return error(400, "send the image as a multipart/form-data file field named 'image'")
                data = await upload.read()
        except TooLarge:
            return too_large(max_bytes)
        if len(data) > max_bytes:
            return too_large(max_bytes)
        if not data:
            return error(400, "the uploaded image is empty")
        try:
            return JSONResponse(await run_in_threadpool(classify, data))
        except FtervitError as exc:
            return error(400, str(exc))
        except Exception as exc:  # noqa: BLE001 - a file Pillow fails on in a way load_image does not name
            return error(400, f"cannot read the uploaded image: {type(exc).__name__}: {exc}")

    return app

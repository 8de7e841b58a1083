"""`animatch serve`: the FastAPI routes of the web app and JSON API, and the uvicorn server around them.

Routes only translate HTTP to `Services` calls and back; every error is `{"detail": "one line"}` with a
fitting status (400 bad input, 404 unknown id, 413 body too large, 415 not an image, 429 judge queue
full, 503 no judge configured). Images are served by record id only. The page is `static/index.html`
(vanilla JS, no CDN); the OpenAPI page at /docs uses fastapi-offline's bundled Swagger UI, since the
machines this runs on may be offline. `open_server` binds the socket before loading any model, so a busy
port fails in a second, and with port 0 picks a free one (the tests use that).
"""

from __future__ import annotations

import socket
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from PIL import Image

from animatch import __version__
from animatch.config import ServeConfig
from animatch.errors import UserError
from animatch.judge.language import english_problem

try:
    import uvicorn
    from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles
    from fastapi_offline import FastAPIOffline
except ImportError as e:  # the web app is an optional extra
    raise UserError(f"animatch serve needs the `serve` extra (pip install 'animatch[serve]'): {e.name} is "
                    f"missing") from None

from animatch.serve.jobs import QueueFull
from animatch.serve.services import Services
from animatch.serve.uploads import MIB, BodySizeLimit, PixelBudget, decode_upload

STATIC = Path(__file__).with_name("static")
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; "
                                           "frame-ancestors 'none'", "X-Content-Type-Options": "nosniff"}
NO_JUDGE = ("no judge model is configured: restart with `animatch serve --index ... --judge-model LLAVA` "
            "(a hub id or a local checkpoint dir, optionally --adapter DIR)")
CHARACTER_LIST_LIMIT = 500


def _check_k(k: int, most: int, name: str = "k") -> None:
    if not 1 <= k <= most:
        raise HTTPException(400, detail=f"{name} must be between 1 and {most}")


def create_app(services: Services) -> FastAPI:
    cfg = services.cfg

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        services.close()

    app = FastAPIOffline(title="animatch", version=__version__, lifespan=lifespan,
                         description="Search, match and judge anime characters by appearance. Errors are "
                                     "`{\"detail\": \"message\"}`; see docs/SERVE.md.")
    app.state.services = services
    app.add_middleware(BodySizeLimit, max_bytes=int(cfg.max_upload_mb * MIB))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def decode(upload: UploadFile, budget: PixelBudget) -> Image.Image:
        return decode_upload(upload, cfg.max_image_pixels, cfg.max_decode_pixels, budget)

    @app.exception_handler(RequestValidationError)
    async def one_line_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path"))
        return JSONResponse({"detail": f"{where}: {first.get('msg')}" if where else first.get("msg")}, 422)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    @app.get("/api/info", summary="Index size, models, judge availability and queue, request limits")
    def info() -> dict:
        return services.info()

    @app.get("/api/search", summary="Characters whose images best match a text description")
    def search_text(q: Annotated[str, Query(min_length=1, max_length=4000)], k: int = 10) -> dict:
        _check_k(k, cfg.max_k)
        if not q.strip():
            raise HTTPException(400, detail="the query is empty")
        return {"query": q, "results": services.search_text(q, k)}

    @app.post("/api/search/image", summary="Character descriptions that best match an uploaded image")
    def search_image(image: Annotated[UploadFile, File()], k: Annotated[int, Form()] = 10) -> dict:
        _check_k(k, cfg.max_k)
        return {"results": services.search_image(decode(image, PixelBudget(cfg.max_request_pixels)), k)}

    @app.get("/api/characters", summary="Characters of the index whose name or title contains `q`")
    def characters(q: str = "", limit: int = 50) -> dict:
        _check_k(limit, CHARACTER_LIST_LIMIT, "limit")
        total, found = services.characters(q, limit)
        return {"total": total, "results": found}

    @app.get("/api/character/{record_id}", summary="One character: name, title, appearance text, image URL")
    def character(record_id: str) -> dict:
        found = services.character(record_id)
        if found is None:
            raise HTTPException(404, detail=f"no character with id {record_id!r} in the index")
        return found

    @app.get("/api/image/{record_id}", summary="The image of a character of the index, by id",
             response_class=FileResponse)
    def image(record_id: str) -> FileResponse:
        found = services.image_file(record_id)
        if found is None:
            raise HTTPException(404, detail="no image with this id in the index")
        path, media_type = found
        return FileResponse(path, media_type=media_type, headers={"X-Content-Type-Options": "nosniff",
                                                                  "Cache-Control": "max-age=3600"})

    @app.post("/api/match", summary="Rank candidate texts and/or index characters for each uploaded image")
    def match(images: Annotated[list[UploadFile], File()], texts: Annotated[str, Form()] = "",
              character_ids: Annotated[list[str] | None, Form()] = None, top_k: Annotated[int, Form()] = 5) -> dict:
        if len(images) > cfg.max_match_images:
            raise HTTPException(400, detail=f"at most {cfg.max_match_images} images per request")
        candidates = [{"label": t.strip(), "text": t.strip(), "id": None} for t in texts.splitlines() if t.strip()]
        for record_id in character_ids or []:
            found = services.character_candidate(record_id)
            if found is None:
                raise HTTPException(400, detail=f"no character with id {record_id!r} in the index")
            candidates.append(found)
        if not candidates or len(candidates) > cfg.max_candidates:
            raise HTTPException(400, detail=f"give 1 to {cfg.max_candidates} candidates (texts, one per line, "
                                            f"and/or characters of the index)")
        _check_k(top_k, cfg.max_candidates, "top_k")
        budget = PixelBudget(cfg.max_request_pixels)
        decoded = [(im.filename or f"image {n}", decode(im, budget))
                   for n, im in enumerate(images, 1)]
        return services.match(decoded, candidates, top_k)

    def _judge_available() -> None:
        if services.judge is None:
            raise HTTPException(503, detail=NO_JUDGE)

    def _queued(submit) -> JSONResponse:
        try:
            job, extra = submit()
        except QueueFull as e:
            raise HTTPException(429, detail=str(e), headers={"Retry-After": "5"}) from None
        body = {**services.queue.snapshot(job.id), "status_url": f"/api/judge/{job.id}", **extra}
        return JSONResponse(body, status_code=202)

    @app.post("/api/judge", status_code=202, summary="Queue a judge job: describe the image, score an English text")
    def judge(image: Annotated[UploadFile, File()], text: Annotated[str, Form()]) -> JSONResponse:
        _judge_available()
        if len(text) > cfg.max_judge_text_chars:
            raise HTTPException(400, detail=f"the text has {len(text)} characters; the limit is "
                                            f"{cfg.max_judge_text_chars} (server option --max-judge-text-chars)")
        problem = english_problem(text)
        if problem is not None:
            raise HTTPException(400, detail=problem)
        decoded = decode(image, PixelBudget(cfg.max_request_pixels))
        return _queued(lambda: (services.submit_judge(decoded, text), {}))

    @app.post("/api/judge/cascade", status_code=202,
              summary="CLIP's top-k descriptions for the image now, then a judge job re-scoring them")
    def cascade(image: Annotated[UploadFile, File()], k: Annotated[int, Form()] = cfg.cascade_k) -> JSONResponse:
        _judge_available()
        _check_k(k, cfg.cascade_k)
        decoded = decode(image, PixelBudget(cfg.max_request_pixels))

        def submit():
            job, candidates = services.submit_cascade(decoded, k)
            return job, {"clip_candidates": candidates}

        return _queued(submit)

    @app.get("/api/judge/{job_id}", summary="A judge job: queued (position), running (progress), done or error")
    def judge_job(job_id: str) -> dict:
        found = services.queue.snapshot(job_id)
        if found is None:
            raise HTTPException(404, detail="no such judge job (unknown, or finished long ago)")
        return found

    return app


def open_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def open_server(cfg: ServeConfig, log_level: str = "info") -> tuple[uvicorn.Server, socket.socket]:
    """A uvicorn server of the app and its bound socket; run it with `server.run(sockets=[sock])`."""
    sock = open_socket(cfg.host, cfg.port)
    try:
        app = create_app(Services(cfg))
    except BaseException:
        sock.close()
        raise
    return uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5)), sock


def run_serve(cfg: ServeConfig) -> int:
    server, sock = open_server(cfg)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"animatch serve: http://{shown}:{port}/  (JSON API and its docs: http://{shown}:{port}/docs)", flush=True)
    server.run(sockets=[sock])
    return 0

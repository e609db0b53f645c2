"""The FastAPI application: :func:`create_app` (an app over one index) and
:func:`run_server` (what ``semhash serve`` calls).

Errors are JSON ``{"detail": "<one line>"}`` with a 4xx status, never a 500: the library's
:class:`SemhashError` types and database errors each map to one status below.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import socket
import sqlite3
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Iterable, Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from semhash import __version__
from semhash.errors import DatasetError, ImageError, IndexBusyError, IndexError_, ModelError, SemhashError
from semhash.index.browse import BadQuery, Conflict, Forbidden, IndexReader, NotFound, ServerBusy, UploadLimits, UploadTooLarge
from semhash.index.db import IndexLocation
from semhash.lifetime import die_with_parent
from semhash.web.routes import router
from semhash.workspace import Workspace

STATIC_DIR = Path(__file__).resolve().parent / "static"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")

#: library error -> HTTP status (first match wins: subclasses before their bases)
ERROR_STATUS: tuple[tuple[type[SemhashError], int], ...] = (
    (NotFound, 404),
    (Forbidden, 403),
    (Conflict, 409),
    (UploadTooLarge, 413),
    (BadQuery, 422),
    (ImageError, 422),
    (DatasetError, 422),
    (IndexBusyError, 503),
    (ServerBusy, 503),
    (IndexError_, 409),
    (ModelError, 409),
    (SemhashError, 400),
)

# the page loads nothing from elsewhere; the API docs page needs its one inline script
PAGE_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
DOCS_CSP = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'"


def _json(status: int, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"detail": detail, **extra}, status_code=status)


class _BodyTooLarge(HTTPException):
    """Raised from ``receive``; an HTTPException so that FastAPI's body parsing passes it on
    instead of turning it into a 400."""

    def __init__(self, detail: str):
        super().__init__(status_code=413, detail=detail)

    def __str__(self) -> str:
        return str(self.detail)


class _Guard:
    """Pure ASGI middleware around the whole app:

    * refuses a Host header other than the allowed names (a web page elsewhere cannot reach
      this server through DNS rebinding) with a JSON 400;
    * refuses a request body over ``max_body_bytes`` with a JSON 413: at once from its
      Content-Length, or as soon as a streamed body passes the limit (nothing larger is
      ever buffered or parsed);
    * adds security headers (Content-Security-Policy, nosniff, no framing, no referrer).
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int, allowed_hosts: Sequence[str] | None,
                 on_cancel: Any = None):  # fmt: skip
        self.app = app
        self.on_cancel = on_cancel
        self.max_body_bytes = max_body_bytes
        self.allowed_hosts = None if allowed_hosts is None or "*" in allowed_hosts else {h.lower() for h in allowed_hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.allowed_hosts is not None and _host_name(headers.get("host", "")) not in self.allowed_hosts:
            await _json(400, "unexpected Host header: this server answers only at " + ", ".join(sorted(self.allowed_hosts)))(scope, receive, send)
            return
        limit = self.max_body_bytes
        too_large = f"request body over the limit of {limit:,} bytes"
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            await _json(413, too_large)(scope, receive, send)
            return
        received = 0
        started = False
        docs = scope.get("path", "").startswith("/docs")

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge(too_large)
            return message

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                extra = [
                    (b"content-security-policy", (DOCS_CSP if docs else PAGE_CSP).encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"),
                ]
                message = {**message, "headers": list(message.get("headers", [])) + extra}
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_headers)
        except _BodyTooLarge as exc:
            if started:
                raise
            await _json(413, str(exc))(scope, receive, send_with_headers)
        except asyncio.CancelledError:
            # the server stopped with this request still running (uvicorn cancels what outlasts
            # its graceful shutdown): let the work it waits on go, answer 503 if nothing was
            # sent yet, and end quietly instead of a traceback in the log
            if self.on_cancel is not None:
                self.on_cancel()
            if not started:
                try:
                    await _json(503, "the server is shutting down: try again shortly")(scope, receive, send_with_headers)
                except Exception:  # noqa: BLE001 -- the connection may be gone already
                    pass


def _host_name(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8000
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _validation_detail(errors: Iterable[dict[str, Any]]) -> str:
    parts = []
    for error in errors:
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path", "header"))
        parts.append(f"{where or 'request'}: {error.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SemhashError)
    async def library_error(request: Request, exc: SemhashError) -> JSONResponse:
        status = next(code for kind, code in ERROR_STATUS if isinstance(exc, kind))
        response = _json(status, " ".join(str(exc).split()))
        if status == 503:  # a moment's trouble: the client may simply ask again
            response.headers["Retry-After"] = "1"
        return response

    @app.exception_handler(SQLAlchemyError)
    @app.exception_handler(sqlite3.Error)
    async def database_error(request: Request, exc: Exception) -> JSONResponse:
        cause = getattr(exc, "orig", None) or exc
        return _json(409, f"the index cannot be read right now ({' '.join(str(cause).split())})")

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]
        if errors and all(e["loc"][:1] == ["path"] for e in errors):
            # a URL that names no resource (an id that is not a number, a path instead of an id)
            return _json(404, f"no such resource: {request.url.path}")
        return _json(422, _validation_detail(errors), errors=errors)


def create_app(
    index_path: str | Path,
    workspace: Workspace,
    *,
    limits: UploadLimits = UploadLimits(),
    allowed_hosts: Sequence[str] | None = LOCAL_HOSTS,
    review: bool = False,
) -> FastAPI:
    """The app serving one index (opened now, read-only; IndexError_ if it cannot be).

    ``allowed_hosts``: the names a request's Host header may carry (None or ``"*"``: any).
    ``review``: the decisions about groups of duplicates may be recorded (``serve --review``);
    nothing else is ever written.
    """
    reader = IndexReader(index_path, workspace, limits=limits)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        reader.close()

    app = FastAPI(
        title="semhash",
        version=__version__,
        summary="Semantic-hashing image search over one index: search by image, id or code; browse buckets.",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.reader = reader
    app.state.review = bool(review)
    if review:  # the review page's groups: computed now, in the background, not at its first request
        reader.warm_duplicates()
    app.include_router(router)
    _install_error_handlers(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    _install_docs(app)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})

    @app.get("/duplicates", include_in_schema=False)
    def review_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "duplicates.html", media_type="text/html", headers={"Cache-Control": "no-cache"})

    app.add_middleware(_Guard, max_body_bytes=limits.max_request_bytes, allowed_hosts=allowed_hosts,
                       on_cancel=reader.decode_budget.close)  # fmt: skip
    return app


def _install_docs(app: FastAPI) -> None:
    """Swagger UI at /docs from the swagger-ui-bundle package's files (no CDN)."""
    import swagger_ui_bundle

    app.mount("/docs/assets", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="semhash API",
            swagger_js_url="/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/docs/assets/swagger-ui.css",
            swagger_favicon_url="/docs/assets/favicon-32x32.png",
        )


# --------------------------------------------------------------------------- serving
_ENV = "SEMHASH_SERVE_CONFIG"


def app_from_env() -> FastAPI:
    """uvicorn's app factory (``semhash.web.app:app_from_env``): each worker process builds
    its own app from the settings :func:`run_server` put in the environment."""
    from threadpoolctl import threadpool_limits

    # one BLAS thread: the server parallelises across requests, and a BLAS team hashing one
    # image spent 3.5x the CPU on a busy 2-core machine (docs/BENCHMARKS.md, serve)
    threadpool_limits(1)
    config = json.loads(os.environ[_ENV])
    if os.getpid() != config["server_pid"]:  # one of --workers N: it ends with the server, however that ends
        die_with_parent(config["server_pid"])
    return create_app(IndexLocation.from_config(config), Workspace(config["home"]), allowed_hosts=config["hosts"],
                      review=bool(config.get("review")))  # fmt: skip


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_server(
    index_path: str | Path,
    workspace: Workspace,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    access_log: bool = True,
    on_ready: Any = print,
    review: bool = False,
) -> None:
    """Check the index opens and the port is free, then serve until interrupted."""
    import uvicorn

    with IndexReader(index_path, workspace) as reader:  # refuse now, with the reason, not per request
        info = reader.status()
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        raise SemhashError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    named = f"[{host}]" if ":" in host else host  # the Host header brackets an IPv6 address
    hosts = [*LOCAL_HOSTS, named] if _is_loopback(host) else ["*"]
    location = IndexLocation.parse(index_path).to_config()  # a database URL keeps its cache folder
    os.environ[_ENV] = json.dumps(
        {**location, "home": str(workspace.root.absolute()), "hosts": hosts, "server_pid": os.getpid(), "review": review}
    )
    shown = f"[{host}]" if ":" in host else host
    model = f"model {info['model']}, {info['bits']} bits" if info["model"] else "empty"
    on_ready(
        f"serving {info['index_path']} ({info['count']:,} images, {model}) at http://{shown}:{port}/ "
        f"(API schema at /docs; Ctrl+C stops)"
    )
    if review:
        on_ready("review mode: decisions about groups of duplicates are recorded in the index (nothing else is written)")
    if not _is_loopback(host):
        on_ready(f"warning: {host} is not a loopback address: anyone who can reach it can see the indexed images")
    uvicorn.run(
        "semhash.web.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=access_log,
        log_level="info" if access_log else "warning",
        server_header=False,
        timeout_graceful_shutdown=5,
    )

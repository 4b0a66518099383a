"""The HTTP service (``genrec serve``): FastAPI over a ``ServingModel``, with an async micro-batcher.

Endpoints (OpenAPI docs at ``/docs``, schema at ``/openapi.json``):
- ``POST /recommend`` ``{"history": ["i3", "i9"], "k": 10, "user_id": null, "skip_unknown": false}``
  -> ``{"items": [{"rank", "item_id", "title", "score", "index"}], "fallback", "skipped", "k", "model"}``;
- ``GET /health`` -> status, model kind, number of items, batching counters;
- ``POST /items`` ``{"items": [{"item_id": "new1", "text": "..."}, {"item_id": "new2", "title": "..."}],
  "save": false}`` (new items, cold start; generative models) -> ``{"added": [{"item_id", "index",
  "semantic_id", "raw_codes", "moved"}], "items": N}``; the items are recommendable at once. With
  ``"save": true`` (and a bundle served) the bundle on disk is rewritten with them (atomically).
  An item-ID model (sasrec, gru4rec) or a bundle that cannot add items answers 409; so does a save
  when the bundle on disk changed since the server loaded it (another writer saved: the items stay
  added in memory, nothing on disk is overwritten) or another writer holds its lock.

Who may call what (``serving.guard``): reads are open; ``POST /items`` is refused (403) unless the
server runs with writes allowed and a token, and then needs ``Authorization: Bearer <token>`` (401
otherwise). Every request's ``Host`` must be an allowed host name (400 otherwise; default the
loopback names), and every body must be JSON (415 otherwise).

Limits (``serving.limits``): body bytes (413), history length (422; histories longer than the
model's window are cut to it, as training does), ``k`` (422), items per POST /items (413), text
length (422), waiting requests (503) and time per request (503), each answer naming the option.
A client that disconnects while its request waits is dropped before ranking.

Batching: each checked request goes to a queue; one worker takes the first waiting request, waits
up to ``max_wait_ms`` for more (at most ``max_batch``), ranks them in one model call in a thread
(the event loop keeps accepting requests) and answers each. Empty histories (popularity fallback)
skip the queue.

Errors: every bad input is a 4xx with ``{"error": message, "field": name}``: a malformed JSON body
400 (field ``body``); a missing / mistyped field, an unknown item id, a bad ``k`` or user 422. A
failure inside the server answers 500 with a generic message and a request id (``X-Request-ID``
too); the exception goes to the server's log under that id, never to the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from starlette.middleware.trustedhost import TrustedHostMiddleware

from genrec_core.errors import GenrecError
from genrec_core.serving.api import Prepared, ServingModel
from genrec_core.serving.bundle import MANIFEST, write_added_items
from genrec_core.serving.errors import RequestError
from genrec_core.serving.guard import JsonBodyGuard, token_matches
from genrec_core.serving.limits import ServeLimits

#: Host names a request may name by default (the service listens on loopback by default).
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")

log = logging.getLogger(__name__)


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    history: list[StrictStr | StrictInt] = Field(
        default_factory=list, description="The user's items, oldest first, as the dataset's own item ids. Empty: the most popular items of training (fallback)."
    )
    k: StrictInt = Field(10, description="How many items to return (1 .. number of items).")
    user_id: StrictStr | StrictInt | None = Field(None, description="The dataset's user id; only models trained with user tokens need it.")
    skip_unknown: StrictBool = Field(False, description="Drop unknown item ids (listed in `skipped`) instead of answering 422.")


class AddItemsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[dict[str, Any]] = Field(..., description='New items: {"item_id": ..., "text": ...} or {"item_id": ..., <the dataset\'s text fields>}.')
    save: StrictBool = Field(False, description="Also rewrite the served bundle on disk with the new items.")


class Item(BaseModel):
    rank: int
    item_id: str
    title: str | None
    score: float
    index: int


class RecommendResponse(BaseModel):
    items: list[Item]
    fallback: str | None = Field(None, description='"most_popular" when the history was empty (or emptied by skip_unknown).')
    skipped: list[str] = Field(default_factory=list)
    k: int
    model: str


class ErrorBody(BaseModel):
    error: str
    field: str | None = None


class MicroBatcher:
    """Collects concurrent requests for up to ``max_wait_s`` and ranks them in one call.

    At most ``max_queue`` requests wait (``enqueue`` refuses more with a 503); a request whose
    future was cancelled meanwhile (its client went, or its time ran out) is dropped before ranking."""

    def __init__(self, rec: ServingModel, max_wait_s: float = 0.005, max_batch: int = 64, max_queue: int = 1000, limits: ServeLimits | None = None):
        self.rec = rec
        self.max_wait_s = float(max_wait_s)
        self.max_batch = max(1, int(max_batch))
        self.limits = limits or ServeLimits(max_queue=max_queue)
        self.max_queue = int(self.limits.max_queue)
        self.queue: asyncio.Queue | None = None
        self.task: asyncio.Task | None = None
        self.batches = 0
        self.requests = 0
        self.largest_batch = 0
        self.dropped = 0  # requests cancelled before they were ranked
        self.refused = 0  # requests refused because the queue was full

    async def start(self) -> None:
        self.queue = asyncio.Queue()
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    def enqueue(self, prepared: Prepared) -> asyncio.Future:
        """Queue a request; its future gets the ``Recommendation``. Raises the 503 when full."""
        assert self.queue is not None, "the batcher is not started"
        if self.queue.qsize() >= self.max_queue:
            self.refused += 1
            raise self.limits.queue_full(self.queue.qsize())
        future = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((prepared, future))
        return future

    async def submit(self, prepared: Prepared):
        return await self.enqueue(prepared)

    async def _collect(self) -> list[tuple[Prepared, asyncio.Future]]:
        assert self.queue is not None
        loop = asyncio.get_running_loop()
        batch = [await self.queue.get()]
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            live = [(p, f) for p, f in batch if not f.done()]  # cancelled: client gone or timed out
            self.dropped += len(batch) - len(live)
            batch = live
            if not batch:
                continue
            self.batches += 1
            self.requests += len(batch)
            self.largest_batch = max(self.largest_batch, len(batch))
            try:
                results = await asyncio.to_thread(self.rec.rank_prepared, [p for p, _ in batch])
            except Exception as exc:  # answer every waiting request; the worker keeps running
                log.exception("ranking a batch of %d failed", len(batch))
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results):
                if not future.done():  # the client may have gone
                    future.set_result(result)


def _error(status: int, message: str, field: str | None, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message, "field": field}, headers=headers)


async def _disconnected(receive) -> None:
    """Return when the client has gone (the body was read already, so the next message is the disconnect)."""
    while True:
        message = await receive()
        if message.get("type") == "http.disconnect":
            return
        await asyncio.sleep(0.05)  # not expected after the body; never spin


#: Union members pydantic appends to an error's location (``history.0.str``): not part of the field name.
_UNION_TAGS = {"str", "int", "bool", "float", "none", "list", "dict"}


def _field(loc: tuple | list) -> str:
    parts = [str(p) for p in loc if p != "body"]
    while len(parts) > 1 and parts[-1] in _UNION_TAGS:
        parts.pop()
    return ".".join(parts) if parts else "body"


def create_app(
    rec: ServingModel,
    max_wait_ms: float = 5.0,
    max_batch: int = 64,
    *,
    limits: ServeLimits | None = None,
    write_token: str | None = None,
    allowed_hosts: Sequence[str] = LOOPBACK_HOSTS,
) -> FastAPI:
    """The service over ``rec``. ``write_token`` None: POST /items is refused (writes off)."""
    limits = limits or ServeLimits()
    batcher = MicroBatcher(rec, max_wait_ms / 1000.0, max_batch, limits=limits)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()

    errors = {
        400: {"model": ErrorBody, "description": "Malformed JSON body"},
        422: {"model": ErrorBody, "description": "A field is missing, mistyped or invalid (unknown item id, bad k)"},
    }
    app = FastAPI(
        title="genrec recommender", version="1", description=f"Recommendations of a trained {rec.kind} model over {rec.num_items} items.", lifespan=lifespan
    )
    app.state.recommender = rec
    app.state.batcher = batcher
    app.state.limits = limits
    app.add_middleware(JsonBodyGuard, max_body_bytes=limits.max_body_bytes)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))  # outermost: checked first

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        bad_json = next((e for e in errs if e.get("type") == "json_invalid"), None)
        if bad_json is not None:
            reason = (bad_json.get("ctx") or {}).get("error", bad_json.get("msg", "invalid JSON"))
            return _error(400, f"malformed JSON body: {reason}", "body")
        by_field: dict[str, list[str]] = {}
        for e in errs or [{"loc": ("body",), "msg": "invalid request"}]:
            msgs = by_field.setdefault(_field(e.get("loc", ())), [])
            if e.get("msg", "invalid value") not in msgs:
                msgs.append(e.get("msg", "invalid value"))
        field, msgs = next(iter(by_field.items()))
        message = f"{field}: {' or '.join(msgs)}"  # a union's members each report one message
        if len(by_field) > 1:
            message += f" (and {len(by_field) - 1} more: {', '.join(list(by_field)[1:])})"
        return _error(422, message, field)

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
        return _error(exc.status, str(exc), exc.field, {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        """A bug, not bad input: a generic answer with an id; the details go to the log only."""
        request_id = uuid.uuid4().hex
        log.error("internal error, request %s (%s %s)", request_id, request.method, request.url.path, exc_info=exc)
        return _error(500, f"internal error; the server's log has the details under request id {request_id}", None, {"X-Request-ID": request_id})

    async def rank(prepared: Prepared, request: Request):
        """Queue for the batcher; drop the request when its client goes or its time runs out."""
        future = batcher.enqueue(prepared)
        gone = asyncio.ensure_future(_disconnected(request.receive))
        try:
            done, _ = await asyncio.wait({future, gone}, timeout=limits.request_timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if future in done:
            return future.result()
        future.cancel()  # the batcher skips it
        if gone in done:
            return None
        raise limits.timed_out()

    @app.post(
        "/recommend",
        response_model=RecommendResponse,
        responses={
            **errors,
            413: {"model": ErrorBody, "description": "Body over --max-body-bytes"},
            415: {"model": ErrorBody, "description": "Body is not JSON"},
            503: {"model": ErrorBody, "description": "Queue full (--max-queue) or not ranked in time (--request-timeout-s)"},
        },
    )
    async def recommend(body: RecommendRequest, request: Request) -> Any:
        """Rank the catalogue for one history (concurrent requests are batched on the server)."""
        limits.check_recommend(body.history, body.k)
        prepared = rec.prepare(body.history, body.k, body.user_id, "skip" if body.skip_unknown else "error")
        result = rec.rank_prepared([prepared])[0] if not prepared.history else await rank(prepared, request)
        if result is None:  # the client went; nobody reads this answer
            return JSONResponse(status_code=499, content={"error": "client closed the request", "field": None})
        return {**result.to_dict(), "k": prepared.k, "model": rec.kind}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": rec.kind,
            "items": rec.num_items,
            "format_version": rec.meta.format_version,
            "batches": batcher.batches,
            "requests": batcher.requests,
            "largest_batch": batcher.largest_batch,
            "dropped": batcher.dropped,
            "refused": batcher.refused,
            "writes": write_token is not None,
        }

    add_lock = asyncio.Lock()

    async def writer(request: Request) -> None:
        """Writes need the server's --allow-writes and the bearer token (checked in constant time)."""
        if write_token is None:
            raise RequestError(
                "authorization",
                "writes are off on this server; start it with `genrec serve BUNDLE --allow-writes` and a token (GENREC_TOKEN or --token-file)",
                403,
            )
        if not token_matches(request.headers.get("authorization"), write_token):
            raise RequestError("authorization", "POST /items needs the header `Authorization: Bearer <token>` with the server's token", 401)

    write_errors = {
        **errors,
        401: {"model": ErrorBody, "description": "No or wrong bearer token"},
        403: {"model": ErrorBody, "description": "Writes are off (server started without --allow-writes)"},
        409: {
            "model": ErrorBody,
            "description": (
                "This model cannot add items (item-ID model, or no text encoder / tokenizer); or the save found the bundle changed on disk "
                "or locked by another writer"
            ),
        },
        413: {"model": ErrorBody, "description": "Body over --max-body-bytes, or more items than --max-new-items"},
        415: {"model": ErrorBody, "description": "Body is not JSON"},
    }

    @app.post("/items", responses=write_errors, dependencies=[Depends(writer)])
    async def add_items(body: AddItemsRequest) -> Any:
        """Add new items (cold start): embed their text, give them IDs with the trained tokenizer, extend the trie."""
        limits.check_new_items(body.items)
        async with add_lock:  # one addition at a time; ranking goes on meanwhile
            try:
                added = await asyncio.to_thread(rec.add_items, body.items)
            except RequestError:
                raise
            except GenrecError as exc:
                return _error(409, str(exc), None)
            saved = None
            if body.save:
                if not (Path(rec.source) / MANIFEST).exists():
                    return _error(409, "save: the service does not serve a bundle (nothing to rewrite); the items were added in memory", "save")
                try:
                    saved = str(await asyncio.to_thread(write_added_items, rec, rec.source))
                except GenrecError as exc:  # changed on disk since load, or locked by another writer
                    return _error(409, f"save: {exc}; the items were added in memory only", "save")
        return {**added.to_dict(), "items": rec.num_items, "saved": saved}

    return app


def serve(
    rec: ServingModel,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_wait_ms: float = 5.0,
    max_batch: int = 64,
    log_level: str = "info",
    *,
    limits: ServeLimits | None = None,
    write_token: str | None = None,
    allowed_hosts: Sequence[str] = LOOPBACK_HOSTS,
    forwarded_allow_ips: str | None = None,
) -> None:
    import uvicorn

    app = create_app(rec, max_wait_ms, max_batch, limits=limits, write_token=write_token, allowed_hosts=allowed_hosts)
    options: dict[str, Any] = {"host": host, "port": port, "log_level": log_level}
    if forwarded_allow_ips is not None:
        options.update(proxy_headers=True, forwarded_allow_ips=forwarded_allow_ips)
    uvicorn.run(app, **options)

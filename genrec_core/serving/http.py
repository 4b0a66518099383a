"""The HTTP service (``genrec serve``): FastAPI over a ``Recommender``, with an async micro-batcher.

Endpoints (OpenAPI docs at ``/docs``, schema at ``/openapi.json``):
- ``POST /recommend`` ``{"history": ["i3", "i9"], "k": 10, "user_id": null, "skip_unknown": false}``
  -> ``{"items": [{"rank", "item_id", "title", "score", "index"}], "fallback", "skipped", "k", "model"}``;
- ``GET /health`` -> status, model kind, number of items, batching counters;
- ``POST /items`` ``{"items": [{"item_id": "new1", "text": "..."}, {"item_id": "new2", "title": "..."}],
  "save": false}`` (new items, cold start; generative models) -> ``{"added": [{"item_id", "index",
  "semantic_id", "raw_codes", "moved"}], "items": N}``; the items are recommendable at once. With
  ``"save": true`` (and a bundle served) the bundle on disk is rewritten with them (atomically).
  An item-ID model (sasrec, gru4rec) or a bundle that cannot add items answers 409.

Batching: each checked request goes to a queue; one worker takes the first waiting request, waits
up to ``max_wait_ms`` for more (at most ``max_batch``), ranks them in one model call in a thread
(the event loop keeps accepting requests) and answers each. Empty histories (popularity fallback)
skip the queue.

Errors: every bad input is a 4xx with ``{"error": message, "field": name}``: a malformed JSON body
400 (field ``body``); a missing / mistyped field, an unknown item id, a bad ``k`` or user 422. A
failure inside the model answers 500 with the same shape and the server keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from genrec_core.serving.api import Prepared, Recommender
from genrec_core.serving.errors import RequestError

log = logging.getLogger(__name__)


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    history: list[StrictStr | StrictInt] = Field(default_factory=list, description="The user's items, oldest first, as the dataset's own item ids. Empty: the most popular items of training (fallback).")
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
    """Collects concurrent requests for up to ``max_wait_s`` and ranks them in one call."""

    def __init__(self, rec: Recommender, max_wait_s: float = 0.005, max_batch: int = 64):
        self.rec = rec
        self.max_wait_s = float(max_wait_s)
        self.max_batch = max(1, int(max_batch))
        self.queue: asyncio.Queue | None = None
        self.task: asyncio.Task | None = None
        self.batches = 0
        self.requests = 0
        self.largest_batch = 0

    async def start(self) -> None:
        self.queue = asyncio.Queue()
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def submit(self, prepared: Prepared):
        assert self.queue is not None, "the batcher is not started"
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((prepared, future))
        return await future

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


def _error(status: int, message: str, field: str | None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message, "field": field})


#: Union members pydantic appends to an error's location (``history.0.str``): not part of the field name.
_UNION_TAGS = {"str", "int", "bool", "float", "none", "list", "dict"}


def _field(loc: tuple | list) -> str:
    parts = [str(p) for p in loc if p != "body"]
    while len(parts) > 1 and parts[-1] in _UNION_TAGS:
        parts.pop()
    return ".".join(parts) if parts else "body"


def create_app(rec: Recommender, max_wait_ms: float = 5.0, max_batch: int = 64) -> FastAPI:
    batcher = MicroBatcher(rec, max_wait_ms / 1000.0, max_batch)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()

    errors = {400: {"model": ErrorBody, "description": "Malformed JSON body"}, 422: {"model": ErrorBody, "description": "A field is missing, mistyped or invalid (unknown item id, bad k)"}}
    app = FastAPI(title="genrec recommender", version="1", description=f"Recommendations of a trained {rec.kind} model over {rec.num_items} items.", lifespan=lifespan)
    app.state.recommender = rec
    app.state.batcher = batcher

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
        return _error(exc.status, str(exc), exc.field)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:  # pragma: no cover - a bug, not bad input
        log.exception("internal error")
        return _error(500, f"internal error: {type(exc).__name__}: {exc}", None)

    @app.post("/recommend", response_model=RecommendResponse, responses=errors)
    async def recommend(body: RecommendRequest) -> dict[str, Any]:
        """Rank the catalogue for one history (concurrent requests are batched on the server)."""
        prepared = rec.prepare(body.history, body.k, body.user_id, "skip" if body.skip_unknown else "error")
        result = rec.rank_prepared([prepared])[0] if not prepared.history else await batcher.submit(prepared)
        return {**result.to_dict(), "k": prepared.k, "model": rec.kind}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        manifest = rec.meta.get("manifest", {})
        return {
            "status": "ok",
            "model": rec.kind,
            "items": rec.num_items,
            "format_version": manifest.get("format_version"),
            "batches": batcher.batches,
            "requests": batcher.requests,
            "largest_batch": batcher.largest_batch,
        }

    add_lock = asyncio.Lock()

    @app.post("/items", responses={**errors, 409: {"model": ErrorBody, "description": "This model cannot add items (item-ID model, or no text encoder / tokenizer)"}})
    async def add_items(body: AddItemsRequest) -> dict[str, Any]:
        """Add new items (cold start): embed their text, give them IDs with the trained tokenizer, extend the trie."""
        from genrec_core.errors import GenrecError

        async with add_lock:  # one addition at a time; ranking goes on meanwhile
            try:
                added = await asyncio.to_thread(rec.add_items, body.items)
            except RequestError:
                raise
            except GenrecError as exc:
                return _error(409, str(exc), None)
            saved = None
            if body.save:
                from genrec_core.serving.bundle import MANIFEST, write_added_items

                if not (Path(rec.source) / MANIFEST).exists():
                    return _error(409, "save: the service does not serve a bundle (nothing to rewrite); the items were added in memory", "save")
                saved = str(await asyncio.to_thread(write_added_items, rec, rec.source))
        return {**added.to_dict(), "items": rec.num_items, "saved": saved}

    return app


def serve(rec: Recommender, host: str = "127.0.0.1", port: int = 8000, max_wait_ms: float = 5.0, max_batch: int = 64, log_level: str = "info") -> None:
    import uvicorn

    uvicorn.run(create_app(rec, max_wait_ms, max_batch), host=host, port=port, log_level=log_level)

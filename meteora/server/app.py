"""The rerank service: a FastAPI app over one :class:`~meteora.reranker.Reranker`.

Routes:

* ``POST /v1/rerank`` (also ``/v2/rerank``): the Cohere/Jina rerank shape (see
  :mod:`meteora.server.schemas`); results are the full ranking, best first, cut at
  ``top_n``, each with ``relevance_score`` in [0, 1], the raw ``score``, and flagged
  ``selected`` when METEORA selects it; ``rank_fields`` and ``max_tokens_per_doc`` are
  honoured (:mod:`meteora.server.documents`);
* ``POST /rerank``: the same in text-embeddings-inference's shape (``texts`` in, a list
  of ``{index, score, text?}`` out; ``raw_scores`` honoured);
* ``POST /v1/select``: METEORA's answer — the selected set, the ranking, the
  rationales, a reason per passage, and with ``"explain": true`` the readable
  explanation and the selector's details;
* ``GET /health`` (never needs the key: for load balancers), ``GET /v1/models`` and
  ``GET /openapi.json`` (the API schema); ``GET /docs`` (Swagger UI, whose page loads
  its scripts from a CDN) only with ``ServeSettings(docs=True)``. With a key set, every
  route but ``/health`` needs it.

Concurrent requests are batched into one :meth:`Reranker.rerank_batch
<meteora.reranker.Reranker.rerank_batch>` call (:class:`~meteora.server.batching.MicroBatcher`:
one batched generation and encode, run off the event loop). Bad requests get a 4xx JSON
body ``{"error": {"type", "message"}}`` saying what was wrong — size and count limits
(413 / 422), a meteora error (422 for bad input, 400 otherwise), a wrong or missing key
(401); an unexpected failure is a 500 with a generic message and the traceback only in
the server's log.

Example:
    >>> from meteora import Reranker  # doctest: +SKIP
    >>> app = create_app(Reranker(generator=None), ServeSettings(api_key="secret"))  # doctest: +SKIP
    >>> import uvicorn; uvicorn.run(app, host="127.0.0.1", port=8080)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import uuid
from collections.abc import Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException

from meteora.errors import InvalidInputError, MeteoraError
from meteora.integrations.annotate import passage_notes
from meteora.relevance import relevance_score
from meteora.server.batching import MicroBatcher, QueueFullError
from meteora.server.documents import cut_to_tokens, encoder_tokenizer, ranked_text
from meteora.server.schemas import (
    RerankRequest,
    RerankResponse,
    SelectRequest,
    SelectResponse,
    TEIRank,
    TEIRerankRequest,
)
from meteora.server.settings import ServeSettings
from meteora.types import Passage, check_query, to_passages

__all__ = ["create_app"]

logger = logging.getLogger(__name__)


def _error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": message}}, status_code=status, headers=headers)


class _BodyLimit:
    """ASGI middleware: refuse bodies over ``max_bytes`` (by Content-Length, and by
    counting when the body is streamed without one)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_big = f"the request body is larger than the server's limit of {self.max_bytes} bytes; send fewer or shorter documents"
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await _error(413, "request_too_large", too_big)(scope, receive, send)
                return
        seen = 0

        async def counted() -> Any:
            nonlocal seen
            message = await receive()
            if message.get("type") == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(413, too_big)
            return message

        await self.app(scope, counted, send)


def _describe(reranker: Any) -> dict[str, Any]:
    generator = getattr(reranker, "generator", None)
    encoder = getattr(reranker, "encoder", None)
    return {
        "rationales": "query-only" if generator is None else type(generator).__name__,
        "generator": None if generator is None else str(getattr(generator, "model_name", None) or getattr(generator, "name", "")) or None,
        "encoder": getattr(encoder, "name", None),
        "evidence_scorer": getattr(reranker, "scorer", None) is not None,
    }


def create_app(reranker: Any, settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI app serving ``reranker`` (any :class:`~meteora.reranker.Reranker`).

    Args:
        reranker: the reranker every request runs on.
        settings: limits, key and batching (default :class:`ServeSettings`).
    """
    settings = settings or ServeSettings()
    if not hasattr(reranker, "rerank_batch"):
        raise InvalidInputError(f"reranker must be a meteora.Reranker, got {type(reranker).__name__}")

    def run_batch(items: list[tuple[str, list[Passage]]]) -> list[Any]:
        return reranker.rerank_batch([q for q, _ in items], [ps for _, ps in items])

    batcher: MicroBatcher[tuple[str, list[Passage]], Any] = MicroBatcher(
        run_batch, max_batch_size=settings.max_batch_size, max_wait_s=settings.max_wait_ms / 1000.0,
        max_queue=settings.max_queue,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await batcher.aclose()

    # the schema and docs routes are declared below, behind the key
    app = FastAPI(title="meteora rerank service", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.add_middleware(_BodyLimit, max_bytes=settings.max_body_bytes)
    app.state.batcher = batcher
    app.state.settings = settings

    async def check_key(request: Request) -> None:
        if settings.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.api_key.encode()):
            raise HTTPException(401, "missing or wrong API key: send the header 'Authorization: Bearer <key>'")

    def validate(
        body: RerankRequest | SelectRequest | TEIRerankRequest, *, keep_ids: bool,
        rank_fields: Sequence[str] | None = None, max_tokens: int | None = None,
    ) -> list[Passage]:
        if not body.query.strip():
            raise InvalidInputError("query is empty; send a non-empty question")
        check_query(body.query)
        if len(body.query) > settings.max_query_chars:
            raise InvalidInputError(f"query has {len(body.query)} characters; the limit is {settings.max_query_chars}")
        if not body.documents:
            raise InvalidInputError("documents is empty; send at least one document")
        if len(body.documents) > settings.max_documents:
            raise InvalidInputError(
                f"got {len(body.documents)} documents; the limit is {settings.max_documents} per request: split the request"
            )
        items: list[Any] = []
        for i, doc in enumerate(body.documents):
            if isinstance(doc, str):
                row: dict[str, Any] = {"text": doc}
            else:
                row = doc.model_dump(exclude_none=True)
                if rank_fields:
                    row["text"] = ranked_text(row, rank_fields, i)
                elif doc.text is None:
                    raise InvalidInputError(
                        f"documents[{i}] has no 'text'; send the text to rank (or name the fields to rank in rank_fields)"
                    )
            if len(row["text"]) > settings.max_document_chars:
                raise InvalidInputError(
                    f"documents[{i}] has {len(row['text'])} characters; the limit is {settings.max_document_chars}: chunk it"
                )
            if not keep_ids or "id" not in row:
                row["id"] = str(i)
            items.append(row)
        if max_tokens is not None:
            cut = cut_to_tokens([row["text"] for row in items], max_tokens, encoder_tokenizer(reranker))
            for row, text in zip(items, cut, strict=True):
                row["text"] = text
        try:
            return to_passages(items)
        except InvalidInputError as exc:
            raise InvalidInputError(re.sub(r"passage #(\d+)", r"documents[\1]", str(exc))) from exc

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors()[:5]:
            loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
            parts.append(f"{loc or 'body'}: {err.get('msg', 'invalid')}")
        return _error(422, "invalid_request", "; ".join(parts) or "invalid request body")

    @app.exception_handler(HTTPException)
    async def on_http(request: Request, exc: HTTPException) -> JSONResponse:
        kinds = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return _error(exc.status_code, kinds.get(exc.status_code, "http_error"), str(exc.detail), headers)

    @app.exception_handler(QueueFullError)
    async def on_busy(request: Request, exc: QueueFullError) -> JSONResponse:
        return _error(503, "overloaded", str(exc), {"Retry-After": "1"})

    @app.exception_handler(MeteoraError)
    async def on_meteora(request: Request, exc: MeteoraError) -> JSONResponse:
        status = 422 if isinstance(exc, InvalidInputError) else 400
        return _error(status, "invalid_request" if status == 422 else type(exc).__name__, str(exc))

    @app.exception_handler(Exception)
    async def on_crash(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("request %s %s failed", request.method, request.url.path)
        return _error(500, "internal_error", "the reranker failed on this request; the server log has the details")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": settings.model_name, "batching": batcher.stats.to_dict()}

    @app.get("/v1/models", dependencies=[Depends(check_key)])
    async def models() -> dict[str, Any]:
        card = {"id": settings.model_name, "object": "model", "owned_by": "meteora", **_describe(reranker)}
        return {"object": "list", "data": [card]}

    @app.get("/openapi.json", dependencies=[Depends(check_key)], include_in_schema=False)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    if settings.docs:
        @app.get("/docs", dependencies=[Depends(check_key)], include_in_schema=False)
        async def docs() -> HTMLResponse:
            return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} — API")

    async def rerank(body: RerankRequest) -> RerankResponse:
        if body.max_tokens_per_doc is None:  # tokenizing is CPU work: off the event loop
            passages = validate(body, keep_ids=False, rank_fields=body.rank_fields)
        else:
            passages = await asyncio.to_thread(validate, body, keep_ids=False, rank_fields=body.rank_fields,
                                               max_tokens=body.max_tokens_per_doc)
        result = await batcher.submit((body.query, passages))
        selected = set(result.selected_ids)
        hits = result.ranked if body.top_n is None else result.ranked[: body.top_n]

        def sent(i: int) -> dict[str, Any]:
            doc = body.documents[i]
            return {"text": doc} if isinstance(doc, str) else doc.model_dump(exclude_none=True)

        results = [
            {"index": int(h.id), "relevance_score": relevance_score(h.score, result.score_scale), "score": float(h.score),
             "selected": h.id in selected, **({"document": sent(int(h.id))} if body.return_documents else {})}
            for h in hits
        ]
        return RerankResponse(id=str(uuid.uuid4()), model=settings.model_name, results=results,
                              meta={"api_version": {"version": "1"}, "billed_units": {"search_units": 1}})

    for path in ("/v1/rerank", "/v2/rerank"):
        app.post(path, response_model=RerankResponse, response_model_exclude_none=True,
                 dependencies=[Depends(check_key)], include_in_schema=path == "/v1/rerank")(rerank)

    @app.post("/rerank", response_model=list[TEIRank], response_model_exclude_none=True,
              dependencies=[Depends(check_key)])
    async def rerank_tei(body: TEIRerankRequest) -> list[TEIRank]:
        passages = validate(body, keep_ids=False)
        result = await batcher.submit((body.query, passages))
        return [TEIRank(index=int(h.id), score=float(h.score) if body.raw_scores else relevance_score(h.score, result.score_scale),
                        text=h.text if body.return_text else None)
                for h in result.ranked]

    @app.post("/v1/select", response_model=SelectResponse, response_model_exclude_none=True,
              dependencies=[Depends(check_key)])
    async def select(body: SelectRequest) -> SelectResponse:
        passages = validate(body, keep_ids=True)
        result = await batcher.submit((body.query, passages))
        index = {p.id: i for i, p in enumerate(passages)}
        notes = passage_notes(result)
        chosen: Sequence[Passage] = result.selected if body.top_k is None else result.selected[: body.top_k]
        chosen_ids = {p.id for p in chosen}
        return SelectResponse(
            id=str(uuid.uuid4()), model=settings.model_name, query=body.query,
            selected=[
                {"index": index[p.id], "id": p.id, "doc_id": p.doc_id, "position": p.position, "text": p.text,
                 "relevance_score": notes[p.id].relevance, "score": notes[p.id].score, "rank": notes[p.id].rank,
                 "reason": notes[p.id].reason,
                 "chosen_by": list(notes[p.id].chosen_by)}
                for p in chosen
            ],
            ranking=[
                {"index": index[h.id], "id": h.id, "relevance_score": relevance_score(h.score, result.score_scale), "score": float(h.score),
                 "rank": h.rank,
                 "selected": h.id in chosen_ids, "reason": notes[h.id].reason}
                for h in result.ranked
            ],
            rationales=result.rationales, fallback=result.fallback,
            explanation=result.explain() if body.explain else None,
            selection=result.selection.to_dict() if body.explain else None,
            conflicts=[c.to_dict() for c in result.conflicts],
        )

    return app

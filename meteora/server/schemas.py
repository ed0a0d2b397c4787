"""Request and response bodies of the rerank service (pydantic models).

``POST /v1/rerank`` takes the request shape that Cohere's, Jina's and TEI-style rerank
clients send — ``query``, ``documents`` (strings, or objects with ``text``), ``top_n``,
``return_documents``, and a ``model`` that is accepted and echoed as the served name —
and answers ``{"id", "model", "results": [{"index", "relevance_score", "document"?}],
"meta"}``. Unknown request fields (``max_chunks_per_doc``, ``rank_fields``...) are
ignored, so existing clients work unchanged. ``POST /v1/select`` is METEORA's own
answer.

Example:
    >>> RerankRequest(query="q", documents=["a", {"text": "b"}], top_n=1).texts()
    ['a', 'b']
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "DocumentIn",
    "RerankRequest",
    "SelectRequest",
    "TEIRerankRequest",
    "TEIRank",
    "RerankResult",
    "RerankResponse",
    "SelectedPassage",
    "RankedPassage",
    "SelectResponse",
]


class DocumentIn(BaseModel):
    """A document as an object: ``text`` plus optional METEORA fields (other fields
    are kept as metadata by ``/v1/select`` and ignored by ``/v1/rerank``)."""

    model_config = ConfigDict(extra="allow")

    text: str
    id: str | None = None
    doc_id: str | None = Field(default=None, description="chunks of one document share it (evidence scorer, expansion)")
    position: int | None = Field(default=None, ge=0, description="0-based position of the chunk in its document")


class _Documents(BaseModel):
    model_config = ConfigDict(extra="ignore")

    query: str
    documents: list[str | DocumentIn]

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


class RerankRequest(_Documents):
    """Cohere/Jina-compatible rerank request."""

    model: str | None = Field(default=None, description="accepted and ignored: the server runs one model")
    top_n: int | None = Field(default=None, ge=1, description="return at most this many results (default: all)")
    return_documents: bool = Field(default=False, description="include each document's text in the results")


class TEIRerankRequest(BaseModel):
    """Hugging Face text-embeddings-inference's ``POST /rerank`` request (``texts``
    instead of ``documents``); ``raw_scores`` and ``truncate`` are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    query: str
    texts: list[str]
    return_text: bool = False

    @property
    def documents(self) -> list[str]:
        return self.texts


class TEIRank(BaseModel):
    index: int
    score: float
    text: str | None = None


class SelectRequest(_Documents):
    """METEORA's own request: which documents hold the evidence, and why."""

    model: str | None = None
    top_k: int | None = Field(default=None, ge=1, description="keep at most this many selected documents")
    explain: bool = Field(default=False, description="include the readable explanation and the selector's details")


class RerankDocument(BaseModel):
    text: str


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    selected: bool = Field(description="in METEORA's selected set (an extension; Cohere clients ignore it)")
    document: RerankDocument | None = None


class RerankResponse(BaseModel):
    id: str
    model: str
    results: list[RerankResult]
    meta: dict[str, Any]


class SelectedPassage(BaseModel):
    index: int
    id: str
    doc_id: str
    position: int
    text: str
    relevance_score: float
    rank: int
    reason: str
    chosen_by: list[str]


class RankedPassage(BaseModel):
    index: int
    id: str
    relevance_score: float
    rank: int
    selected: bool
    reason: str


class SelectResponse(BaseModel):
    id: str
    model: str
    query: str
    selected: list[SelectedPassage]
    ranking: list[RankedPassage]
    rationales: list[str]
    fallback: bool = Field(description="the generator gave nothing usable; the query stood in")
    explanation: str | None = None
    selection: dict[str, Any] | None = None
    conflicts: list[dict[str, Any]] = Field(
        default_factory=list,
        description="passages of different documents whose findings disagree: the ids on each side, what was kept "
                    "and dropped, and why (meteora.conflicts.Conflict.to_dict)",
    )

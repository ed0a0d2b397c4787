"""Request and response bodies of the rerank service (pydantic models).

``POST /v1/rerank`` takes the request shape that Cohere's, Jina's and TEI-style rerank
clients send — ``query``, ``documents`` (strings, or objects with ``text``), ``top_n``,
``return_documents``, ``rank_fields`` (the object fields to rank on, in order),
``max_tokens_per_doc`` (each document cut to its first N tokens before ranking), and a
``model`` that is accepted and echoed as the served name — and answers ``{"id", "model",
"results": [{"index", "relevance_score", "score", "selected", "document"?}], "meta"}``:
``relevance_score`` in [0, 1] (:func:`meteora.relevance.relevance_score`), ``score`` the
raw ranking score (cosine scale). Other request fields (``max_chunks_per_doc``...) are
ignored, so existing clients work unchanged. ``POST /v1/select`` is METEORA's own answer.

Example:
    >>> RerankRequest(query="q", documents=["a", {"text": "b"}], top_n=1).texts()
    ['a', 'b']
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

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


def _not_bool(value: Any) -> Any:
    """JSON ``true``/``false`` is not a count (pydantic would read ``true`` as 1)."""
    if isinstance(value, bool):
        raise ValueError(f"must be an integer, not {str(value).lower()}")
    return value


#: an integer field that refuses booleans
Integer = Annotated[int, BeforeValidator(_not_bool)]


class DocumentIn(BaseModel):
    """A document as an object: ``text`` plus optional METEORA fields (other fields
    are kept as metadata by ``/v1/select`` and ignored by ``/v1/rerank``)."""

    model_config = ConfigDict(extra="allow")

    text: str | None = Field(default=None, description="the text ranked (required unless rank_fields names others)")
    id: str | None = None
    doc_id: str | None = Field(default=None, description="chunks of one document share it (evidence scorer, expansion)")
    position: Integer | None = Field(default=None, ge=0, description="0-based position of the chunk in its document")


class _Documents(BaseModel):
    model_config = ConfigDict(extra="ignore")

    query: str
    documents: list[str | DocumentIn]

    def texts(self) -> list[str | None]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


class RerankRequest(_Documents):
    """Cohere/Jina-compatible rerank request."""

    model: str | None = Field(default=None, description="accepted and ignored: the server runs one model")
    top_n: Integer | None = Field(default=None, ge=1, description="return at most this many results (default: all)")
    return_documents: bool = Field(default=False, description="include each document (as sent) in the results")
    rank_fields: list[str] | None = Field(
        default=None, min_length=1, description="object documents: rank on these fields, in order, read as "
        "'field: value' lines (default: the 'text' field)")
    max_tokens_per_doc: Integer | None = Field(
        default=None, ge=1, description="cut each document to its first N tokens (the encoder's tokenizer) before "
        "ranking (default: no cut; the models read their own window)")


class TEIRerankRequest(BaseModel):
    """Hugging Face text-embeddings-inference's ``POST /rerank`` request (``texts``
    instead of ``documents``): ``score`` is the relevance in [0, 1], or with
    ``raw_scores`` the raw ranking score; ``truncate`` is accepted and ignored (the
    models always read their own window)."""

    model_config = ConfigDict(extra="ignore")

    query: str
    texts: list[str]
    return_text: bool = False
    raw_scores: bool = False

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
    top_k: Integer | None = Field(default=None, ge=1, description="keep at most this many selected documents")
    explain: bool = Field(default=False, description="include the readable explanation and the selector's details")


class RerankDocument(BaseModel):
    """A document as it was sent (a string comes back as ``{"text": ...}``)."""

    model_config = ConfigDict(extra="allow")

    text: str | None = None


class RerankResult(BaseModel):
    index: int
    relevance_score: float = Field(description="in [0, 1]: the score mapped by meteora.relevance.relevance_score")
    score: float = Field(description="METEORA's raw ranking score (cosine scale; an extension)")
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
    score: float
    rank: int
    reason: str
    chosen_by: list[str]


class RankedPassage(BaseModel):
    index: int
    id: str
    relevance_score: float
    score: float
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

"""LangChain integration: :class:`MeteoraCompressor`, a ``BaseDocumentCompressor``, and
:class:`MeteoraEmbeddings`, LangChain ``Embeddings`` over meteora's encoder.

Needs the ``langchain`` extra (``pip install "meteora-rerank[langchain]"``: langchain-core
1.x, Python >= 3.11). The compressor runs METEORA on the retrieved documents and returns
*copies* of the chosen ones (the caller's documents are never changed), each with
metadata ``relevance_score`` (in [0, 1], :func:`meteora.relevance.relevance_score`),
``meteora_score`` (the raw ranking score, cosine scale), ``meteora_rank``,
``meteora_selected``, ``meteora_reason``, ``meteora_chosen_by`` and
``meteora_rationales``.

* ``mode="select"`` (default): METEORA's selected set, an adaptive count;
  ``mode="rank"``: every document best first, a plain reranker's view.
* ``top_n``: at most this many documents back (default 3, as LangChain's own
  ``CrossEncoderReranker`` and ``CohereRerank``; ``None``: no cap).
* ``reranker``: a built :class:`~meteora.reranker.Reranker` (any generator backend,
  e.g. a vLLM server through ``backend="openai"``), or ``None`` to build
  ``Reranker(**reranker_kwargs)`` (the offline default) on first use; the keywords are
  checked when the compressor is built.
* ``doc_id_key`` / ``position_key``: metadata keys telling which chunks come from one
  document and in which order (e.g. ``"source"`` / ``"start_index"`` from LangChain's
  loaders and splitters); absent keys make each document its own.
* ``embedding_key``: metadata key of a stored embedding from the reranker's encoder;
  when every document has one, nothing is encoded again. The returned copies leave it
  out (no vector of floats in each document's metadata).

A vector store built with :class:`MeteoraEmbeddings` on the reranker's encoder needs no
``embedding_key``: the encoder remembers the vectors it computed (its embedding cache:
in memory, 10,000 entries by default; give the encoder ``cache=PATH`` for a persistent
one), so the compressor reads the stored passages' and the query's vectors instead of
encoding them again.

It plugs into ``ContextualCompressionRetriever`` (``langchain_classic.retrievers``) like
any compressor. ``acompress_documents`` runs the blocking work in a thread pool, so an
event loop is never blocked.

Example:
    >>> from langchain_core.documents import Document  # doctest: +SKIP
    >>> from langchain_core.vectorstores import InMemoryVectorStore  # doctest: +SKIP
    >>> from meteora import Reranker  # doctest: +SKIP
    >>> rr = Reranker(generator=None)  # doctest: +SKIP
    >>> store = InMemoryVectorStore(MeteoraEmbeddings(rr))  # doctest: +SKIP
    >>> comp = MeteoraCompressor(reranker=rr, top_n=3)  # doctest: +SKIP
    >>> docs = comp.compress_documents([Document("Aspirin cut strokes."), Document("Dogs bark.")],
    ...                                "Does aspirin prevent stroke?")  # doctest: +SKIP
    >>> docs[0].metadata["meteora_reason"]  # doctest: +SKIP
    'selected: within the evidence band of the best passage (pooling)'
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from meteora.errors import MissingDependencyError
from meteora.integrations.annotate import check_mode, check_top_n, metadata_for, pick
from meteora.integrations.runner import RerankerHandle, as_position, encode_texts, encoder_of
from meteora.types import Passage

__all__ = ["MeteoraCompressor", "MeteoraEmbeddings"]

logger = logging.getLogger(__name__)

try:
    from langchain_core.callbacks import Callbacks
    from langchain_core.documents import BaseDocumentCompressor, Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.runnables.config import run_in_executor
    from pydantic import ConfigDict, PrivateAttr, field_validator
except ImportError as _exc:  # the extra is not installed: importing the module still works
    _IMPORT_ERROR: ImportError | None = _exc
else:
    _IMPORT_ERROR = None


def _missing() -> MissingDependencyError:
    return MissingDependencyError(
        "meteora.integrations.langchain needs langchain-core 1.x (Python >= 3.11), which is not installed. "
        'Install it with: pip install "meteora-rerank[langchain]"'
    )


if _IMPORT_ERROR is None:

    class MeteoraCompressor(BaseDocumentCompressor):
        """METEORA evidence selection as a LangChain document compressor.

        See the module docstring for the options. Example::

            retriever = ContextualCompressionRetriever(
                base_compressor=MeteoraCompressor(reranker=Reranker(generator=None)),
                base_retriever=vectorstore.as_retriever(search_kwargs={"k": 20}))
        """

        model_config = ConfigDict(arbitrary_types_allowed=True)

        reranker: Any = None
        """A built ``meteora.Reranker``; ``None`` builds ``Reranker(**reranker_kwargs)`` on first use."""
        reranker_kwargs: dict[str, Any] | None = None
        """Keyword arguments of the lazily built reranker (only without ``reranker``)."""
        top_n: int | None = 3
        """Return at most this many documents (default 3, as LangChain's rerankers; ``None``: no cap)."""
        mode: str = "select"
        """``"select"``: METEORA's selected set; ``"rank"``: every document, best first."""
        doc_id_key: str | None = "doc_id"
        """Metadata key of the source document's id (chunks of one document share it)."""
        position_key: str | None = "position"
        """Metadata key of the chunk's 0-based position inside its document."""
        embedding_key: str | None = "embedding"
        """Metadata key of a stored embedding from the reranker's encoder."""

        _handle: RerankerHandle = PrivateAttr()

        @field_validator("mode", mode="before")
        @classmethod
        def _valid_mode(cls, value: str) -> str:
            return check_mode(value)

        @field_validator("top_n", mode="before")
        @classmethod
        def _valid_top_n(cls, value: int | None) -> int | None:
            return check_top_n(value)

        def model_post_init(self, context: Any, /) -> None:
            self._handle = RerankerHandle(self.reranker, self.reranker_kwargs)

        def _passages(self, documents: Sequence[Document]) -> tuple[list[Passage], list[Any]]:
            passages, vectors = [], []
            for i, doc in enumerate(documents):
                meta = doc.metadata or {}
                doc_id = meta.get(self.doc_id_key) if self.doc_id_key else None
                passages.append(Passage(
                    text=doc.page_content, id=str(i),
                    doc_id=str(doc_id) if doc_id is not None else "",
                    position=as_position(meta.get(self.position_key)) if self.position_key else 0,
                ))
                vectors.append(meta.get(self.embedding_key) if self.embedding_key else None)
            return passages, vectors

        def compress_documents(
            self,
            documents: Sequence[Document],
            query: str,
            callbacks: Callbacks | None = None,
        ) -> Sequence[Document]:
            """Select the evidence for ``query`` among ``documents``; returns copies."""
            if not documents:
                return []
            documents = list(documents)
            passages, vectors = self._passages(documents)
            result = self._handle.rerank(query, passages, vectors)
            out = []
            for note in pick(result, mode=self.mode, top_n=self.top_n):
                doc = documents[int(note.passage.id)]
                meta = {k: v for k, v in (doc.metadata or {}).items() if k != self.embedding_key}
                meta.update(metadata_for(note, result.rationales, result.conflicts))
                out.append(doc.model_copy(update={"metadata": meta}, deep=True))
            logger.debug("kept %d of %d documents for %r", len(out), len(documents), query)
            return out

        async def acompress_documents(
            self,
            documents: Sequence[Document],
            query: str,
            callbacks: Callbacks | None = None,
        ) -> Sequence[Document]:
            """:meth:`compress_documents` in a thread pool (the event loop keeps running)."""
            return await run_in_executor(None, self.compress_documents, documents, query, callbacks)

    class MeteoraEmbeddings(Embeddings):
        """LangChain ``Embeddings`` over meteora's encoder (float32, L2-normalised).

        Args:
            encoder: a :class:`~meteora.reranker.Reranker` (its encoder: the usual
                choice, so the compressor reuses the vectors), an
                :class:`~meteora.embeddings.encoder.Encoder`, a model name or folder,
                or ``None`` for the packaged all-MiniLM-L6-v2.

        Example::

            rr = Reranker(generator=None)
            store = InMemoryVectorStore(MeteoraEmbeddings(rr))
        """

        def __init__(self, encoder: Any = None) -> None:
            self.encoder = encoder_of(encoder)

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            """One vector per text (texts over 20,000 characters are embedded by their start,
            as the reranker does)."""
            return encode_texts(self.encoder, texts, "texts").tolist()

        def embed_query(self, text: str) -> list[float]:
            """The query's vector."""
            return encode_texts(self.encoder, [text], "text")[0].tolist()

        def __repr__(self) -> str:
            return f"MeteoraEmbeddings({self.encoder!r})"

else:

    def __getattr__(name: str) -> Any:
        if name in ("MeteoraCompressor", "MeteoraEmbeddings"):
            raise _missing() from _IMPORT_ERROR
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""LlamaIndex integration: :class:`MeteoraPostprocessor`, a ``BaseNodePostprocessor``, and
:class:`MeteoraEmbedding`, a ``BaseEmbedding`` over meteora's encoder.

Needs the ``llamaindex`` extra (``pip install "meteora-rerank[llamaindex]"``:
llama-index-core 0.14.x). The postprocessor runs METEORA on the retrieved nodes and
returns new ``NodeWithScore`` objects holding *copies* of the chosen nodes (the
caller's nodes and scores are never changed): the score is the ``relevance_score`` in
[0, 1] (:func:`meteora.relevance.relevance_score`, as Cohere's reranker gives), and the
copy's metadata gets ``relevance_score``, ``meteora_score`` (the raw ranking score,
cosine scale), ``meteora_rank``, ``meteora_selected``, ``meteora_reason``,
``meteora_chosen_by`` and ``meteora_rationales`` — kept out of the text the LLM and the
embedder see (``excluded_llm_metadata_keys`` / ``excluded_embed_metadata_keys``).

Options as in :mod:`meteora.integrations.langchain`: ``mode="select"|"rank"``,
``top_n`` (default 2, as LlamaIndex's ``SentenceTransformerRerank``; ``None``: no cap),
``reranker`` (a built :class:`~meteora.reranker.Reranker`, any backend) or
``reranker_kwargs`` (the default is built on first use; the keywords are checked at
once), ``position_key``. Chunks of one source document are grouped by
``node.ref_doc_id`` (or the metadata key ``doc_id_key`` when set). A node's stored
``embedding`` is reused when every node has one of the reranker's encoder dimension (it
must come from that encoder).

An index built with :class:`MeteoraEmbedding` on the reranker's encoder hands its
vectors on through the encoder's cache: the postprocessor encodes nothing the index
already embedded (the same text: with ``metadata_mode`` NONE, nodes whose metadata is
excluded from embedding, or none).

Like LlamaIndex's own rerankers it emits the ``CBEventType.RERANKING`` callback event
(payload: nodes, model name, query, top-k) and the instrumentation events
``ReRankStartEvent`` / ``ReRankEndEvent``. The async variant runs in a thread pool.

Example:
    >>> from meteora import Reranker  # doctest: +SKIP
    >>> rr = Reranker(generator=None)  # doctest: +SKIP
    >>> index = VectorStoreIndex(nodes, embed_model=MeteoraEmbedding(rr))  # doctest: +SKIP
    >>> post = MeteoraPostprocessor(reranker=rr, top_n=3)  # doctest: +SKIP
    >>> engine = index.as_query_engine(similarity_top_k=20, node_postprocessors=[post])  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from meteora.errors import MissingDependencyError
from meteora.integrations.annotate import METADATA_KEYS, check_mode, check_top_n, metadata_for, pick
from meteora.integrations.runner import RerankerHandle, as_position, encode_texts, encoder_of
from meteora.types import Passage

__all__ = ["MeteoraPostprocessor", "MeteoraEmbedding"]

logger = logging.getLogger(__name__)

try:
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.bridge.pydantic import Field, PrivateAttr, field_validator
    from llama_index.core.callbacks import CBEventType, EventPayload
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
except ImportError as _exc:  # the extra is not installed: importing the module still works
    _IMPORT_ERROR: ImportError | None = _exc
else:
    _IMPORT_ERROR = None

MODEL_NAME = "meteora"


def _missing() -> MissingDependencyError:
    return MissingDependencyError(
        "meteora.integrations.llamaindex needs llama-index-core 0.14.x, which is not installed. "
        'Install it with: pip install "meteora-rerank[llamaindex]"'
    )


if _IMPORT_ERROR is None:
    dispatcher = get_dispatcher(__name__)

    class MeteoraPostprocessor(BaseNodePostprocessor):
        """METEORA evidence selection as a LlamaIndex node postprocessor.

        See the module docstring for the options. Example::

            engine = index.as_query_engine(
                similarity_top_k=20,
                node_postprocessors=[MeteoraPostprocessor(reranker=Reranker(generator=None))])
        """

        reranker: Any = Field(default=None, exclude=True,
                              description="A built meteora.Reranker; None builds Reranker(**reranker_kwargs) on first use.")
        reranker_kwargs: dict[str, Any] | None = Field(default=None, exclude=True,
                                                       description="Keyword arguments of the lazily built reranker.")
        top_n: int | None = Field(default=2, description="Return at most this many nodes (default 2, as "
                                  "LlamaIndex's SentenceTransformerRerank; None: no cap).")
        mode: str = Field(default="select", description="'select': METEORA's selected set; 'rank': every node, best first.")
        doc_id_key: str | None = Field(default=None,
                                       description="Metadata key of the source document id (None: node.ref_doc_id).")
        position_key: str | None = Field(default="position",
                                         description="Metadata key of the chunk's 0-based position in its document.")
        metadata_mode: MetadataMode = Field(default=MetadataMode.NONE,
                                            description="Which metadata goes into the text METEORA reads (default: none).")

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

        @classmethod
        def class_name(cls) -> str:
            return "MeteoraPostprocessor"

        def _passages(self, nodes: list[NodeWithScore]) -> tuple[list[Passage], list[Any]]:
            passages, vectors = [], []
            for i, nws in enumerate(nodes):
                node = nws.node
                meta = node.metadata or {}
                doc_id = meta.get(self.doc_id_key) if self.doc_id_key else node.ref_doc_id
                passages.append(Passage(
                    text=node.get_content(metadata_mode=self.metadata_mode), id=str(i),
                    doc_id=str(doc_id) if doc_id is not None else "",
                    position=as_position(meta.get(self.position_key)) if self.position_key else 0,
                ))
                vectors.append(node.embedding)
            return passages, vectors

        @staticmethod
        def _copy(nws: NodeWithScore, extra: dict[str, Any], score: float) -> NodeWithScore:
            node = nws.node
            update = {
                "metadata": {**(node.metadata or {}), **extra},
                "excluded_llm_metadata_keys": [*node.excluded_llm_metadata_keys,
                                               *(k for k in METADATA_KEYS if k not in node.excluded_llm_metadata_keys)],
                "excluded_embed_metadata_keys": [*node.excluded_embed_metadata_keys,
                                                 *(k for k in METADATA_KEYS if k not in node.excluded_embed_metadata_keys)],
            }
            return NodeWithScore(node=node.model_copy(update=update, deep=True), score=score)

        def _postprocess_nodes(
            self,
            nodes: list[NodeWithScore],
            query_bundle: QueryBundle | None = None,
        ) -> list[NodeWithScore]:
            if query_bundle is None:
                raise ValueError("MeteoraPostprocessor needs the query: pass query_bundle or query_str")
            if not nodes:
                return []
            nodes = list(nodes)
            query = query_bundle.query_str
            top_k = self.top_n if self.top_n is not None else len(nodes)
            dispatcher.event(ReRankStartEvent(query=query_bundle, nodes=nodes, top_n=top_k, model_name=MODEL_NAME))
            with self.callback_manager.event(
                CBEventType.RERANKING,
                payload={
                    EventPayload.NODES: nodes,
                    EventPayload.MODEL_NAME: MODEL_NAME,
                    EventPayload.QUERY_STR: query,
                    EventPayload.TOP_K: top_k,
                },
            ) as event:
                passages, vectors = self._passages(nodes)
                result = self._handle.rerank(query, passages, vectors)
                out = [
                    self._copy(nodes[int(note.passage.id)], metadata_for(note, result.rationales, result.conflicts),
                               note.relevance)
                    for note in pick(result, mode=self.mode, top_n=self.top_n)
                ]
                event.on_end(payload={EventPayload.NODES: out})
            dispatcher.event(ReRankEndEvent(nodes=out))
            return out

        async def _apostprocess_nodes(
            self,
            nodes: list[NodeWithScore],
            query_bundle: QueryBundle | None = None,
        ) -> list[NodeWithScore]:
            """:meth:`_postprocess_nodes` in a thread pool (the event loop keeps running)."""
            return await asyncio.to_thread(self._postprocess_nodes, nodes, query_bundle)

    class MeteoraEmbedding(BaseEmbedding):
        """A LlamaIndex embedding model over meteora's encoder (float32, L2-normalised).

        Build it with a :class:`~meteora.reranker.Reranker` (its encoder: the usual
        choice, so the postprocessor reuses the vectors), an
        :class:`~meteora.embeddings.encoder.Encoder`, a model name or folder, or
        ``None`` for the packaged all-MiniLM-L6-v2. Example::

            index = VectorStoreIndex(nodes, embed_model=MeteoraEmbedding(Reranker(generator=None)))
        """

        embed_batch_size: int = Field(default=64, gt=0, description="Texts per encoder call.")
        _encoder: Any = PrivateAttr()

        def __init__(self, encoder: Any = None, **kwargs: Any) -> None:
            enc = encoder_of(encoder)
            kwargs.setdefault("model_name", str(getattr(enc, "name", "meteora-encoder")))
            super().__init__(**kwargs)
            self._encoder = enc

        @classmethod
        def class_name(cls) -> str:
            return "MeteoraEmbedding"

        @property
        def encoder(self) -> Any:
            """The meteora encoder behind it."""
            return self._encoder

        def _get_query_embedding(self, query: str) -> list[float]:
            return encode_texts(self._encoder, [query], "query")[0].tolist()

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return await asyncio.to_thread(self._get_query_embedding, query)

        def _get_text_embedding(self, text: str) -> list[float]:
            return encode_texts(self._encoder, [text], "text")[0].tolist()

        def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
            return encode_texts(self._encoder, texts, "texts").tolist()

        async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
            return await asyncio.to_thread(self._get_text_embeddings, texts)

else:

    def __getattr__(name: str) -> Any:
        if name in ("MeteoraPostprocessor", "MeteoraEmbedding"):
            raise _missing() from _IMPORT_ERROR
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""LlamaIndex integration against the real llama-index-core: copies not mutations, the
RERANKING callback event (seen by LlamaIndex's own LlamaDebugHandler), stored node
embeddings, async, and a whole query engine with LlamaIndex's MockLLM (which answers
with its prompt) and MockEmbedding."""

from __future__ import annotations

import asyncio
import copy
import threading

import pytest

pytest.importorskip("llama_index.core")

from helpers_integrations import BEST, CORPUS, QUERY, FlagDogs, keyword_reranker  # noqa: E402
from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload, LlamaDebugHandler  # noqa: E402
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode  # noqa: E402

from meteora.integrations.annotate import METADATA_KEYS  # noqa: E402
from meteora.integrations.llamaindex import MeteoraEmbedding, MeteoraPostprocessor  # noqa: E402
from meteora.relevance import relevance_score  # noqa: E402


def _nodes() -> list[NodeWithScore]:
    return [
        NodeWithScore(node=TextNode(text=c["text"], id_=f"n{i}", metadata={"source": f"s{i}"}), score=0.5)
        for i, c in enumerate(CORPUS)
    ]


def test_postprocess_returns_copies_emits_the_reranking_event_and_keeps_notes_out_of_the_prompt():
    rr = keyword_reranker()
    debug = LlamaDebugHandler()
    post = MeteoraPostprocessor(reranker=rr, top_n=None, callback_manager=CallbackManager([debug]))
    nodes = _nodes()
    before = copy.deepcopy(nodes)
    out = post.postprocess_nodes(nodes, query_str=QUERY)
    assert [n.node.metadata for n in nodes] == [n.node.metadata for n in before]
    assert [n.score for n in nodes] == [0.5] * len(nodes)
    assert out and out[0].node.get_content() == CORPUS[BEST]["text"]
    assert all(o.node is not n.node for o in out for n in nodes)
    direct = rr.rerank(QUERY, [c["text"] for c in CORPUS])
    assert [o.node.get_content() for o in out] == [p.text for p in direct.selected]
    first = out[0].node
    assert out[0].score == pytest.approx(relevance_score(direct.ranked[0].score, direct.score_scale))
    assert out[0].score == pytest.approx(first.metadata["relevance_score"]) and 0.0 <= out[0].score <= 1.0
    assert first.metadata["meteora_score"] == pytest.approx(direct.ranked[0].score)
    assert first.metadata["meteora_selected"] and first.metadata["meteora_reason"].startswith("selected")
    assert first.metadata["source"] == "s0"
    for key in METADATA_KEYS:  # the notes stay out of what the LLM and the embedder read
        assert key not in first.get_content(metadata_mode=MetadataMode.LLM)
        assert key not in first.get_content(metadata_mode=MetadataMode.EMBED)
    assert "source" in first.get_content(metadata_mode=MetadataMode.LLM)
    pairs = debug.get_event_pairs(CBEventType.RERANKING)
    assert len(pairs) == 1
    start, end = pairs[0]
    assert start.payload[EventPayload.QUERY_STR] == QUERY and len(start.payload[EventPayload.NODES]) == len(CORPUS)
    assert [n.node.node_id for n in end.payload[EventPayload.NODES]] == [o.node.node_id for o in out]


def test_conflicts_are_in_the_metadata_and_out_of_the_prompt():
    out = MeteoraPostprocessor(reranker=keyword_reranker(verifier=FlagDogs())).postprocess_nodes(_nodes(), query_str=QUERY)
    first = out[0].node
    [conflict] = first.metadata["meteora_conflicts"]
    assert conflict["sides"] == {"effect": [str(BEST)], "no effect": ["1", "4"]} and conflict["reason"] == "about dogs"
    assert "meteora_conflicts" in METADATA_KEYS and "about dogs" not in first.get_content(metadata_mode=MetadataMode.LLM)


def test_rank_mode_and_top_n():
    out = MeteoraPostprocessor(reranker=keyword_reranker(), mode="rank", top_n=2).postprocess_nodes(
        _nodes(), QueryBundle("Is insulin given to dogs?"))
    assert len(out) == 2 and out[0].node.get_content() == CORPUS[4]["text"]
    assert out[0].score >= out[1].score
    assert [o.node.metadata["meteora_rank"] for o in out] == [1, 2]


def test_node_embeddings_are_reused():
    rr = keyword_reranker()
    nodes = _nodes()
    vecs = rr.encoder.encode([c["text"] for c in CORPUS])
    vecs[[0, 1]] = vecs[[1, 0]]  # the dog passage now carries the aspirin vector
    for n, v in zip(nodes, vecs, strict=True):
        n.node.embedding = v.tolist()
    rr.encoder.model.texts.clear()
    out = MeteoraPostprocessor(reranker=rr, mode="rank").postprocess_nodes(nodes, query_str=QUERY)
    assert out[0].node.get_content() == CORPUS[1]["text"]
    assert rr.encoder.model.texts == [QUERY]


def test_async_runs_in_a_worker_thread():
    rr = keyword_reranker()
    post = MeteoraPostprocessor(reranker=rr)
    out = asyncio.run(post.apostprocess_nodes(_nodes(), query_str=QUERY))
    assert out[0].node.get_content() == CORPUS[BEST]["text"]
    assert rr.encoder.model.threads and threading.get_ident() not in rr.encoder.model.threads


def test_missing_query_and_bad_options():
    from pydantic import ValidationError

    post = MeteoraPostprocessor(reranker=keyword_reranker())
    with pytest.raises(ValueError, match="needs the query"):
        post.postprocess_nodes(_nodes())
    assert post.postprocess_nodes([], query_str=QUERY) == []
    with pytest.raises(ValidationError, match="mode must be one of"):
        MeteoraPostprocessor(reranker=keyword_reranker(), mode="top")


def test_query_engine_end_to_end():
    from llama_index.core import VectorStoreIndex
    from llama_index.core.embeddings import MockEmbedding
    from llama_index.core.llms import MockLLM
    from llama_index.core.query_engine import RetrieverQueryEngine

    nodes = [TextNode(text=c["text"], id_=f"n{i}") for i, c in enumerate(CORPUS)]
    index = VectorStoreIndex(nodes, embed_model=MockEmbedding(embed_dim=8))
    debug = LlamaDebugHandler()
    engine = RetrieverQueryEngine.from_args(
        index.as_retriever(similarity_top_k=len(CORPUS)), llm=MockLLM(),
        node_postprocessors=[MeteoraPostprocessor(reranker=keyword_reranker())],
        callback_manager=CallbackManager([debug]),
    )
    response = engine.query(QUERY)
    sources = [n.node.get_content() for n in response.source_nodes]
    assert sources[0] == CORPUS[BEST]["text"] and len(sources) < len(CORPUS)
    assert CORPUS[BEST]["text"] in str(response)  # MockLLM answers with the prompt: the context went in
    assert "Dogs with kidney disease" not in str(response)
    assert all(n.node_id in {f"n{i}" for i in range(len(CORPUS))} for n in response.source_nodes)
    assert all(n.metadata == {} for n in nodes)  # the index's nodes are untouched
    assert len(debug.get_event_pairs(CBEventType.RERANKING)) == 1  # the engine's handler saw the rerank
    aresponse = asyncio.run(engine.aquery(QUERY))
    assert [n.node.get_content() for n in aresponse.source_nodes] == sources


def test_framework_defaults_and_checks_at_construction():
    from pydantic import ValidationError

    assert MeteoraPostprocessor(reranker=keyword_reranker()).top_n == 2  # as SentenceTransformerRerank
    with pytest.raises(ValidationError, match="top_n must be a positive integer"):
        MeteoraPostprocessor(reranker=keyword_reranker(), top_n=True)
    with pytest.raises(ValidationError, match=r"unknown reranker_kwargs \['top_n'\]"):
        MeteoraPostprocessor(reranker_kwargs={"top_n": 3})


def test_an_index_built_with_meteora_embedding_hands_its_vectors_to_the_postprocessor(tiny_st_dir):
    from llama_index.core import VectorStoreIndex

    from meteora.embeddings.encoder import Encoder
    from meteora.reranker import Reranker

    enc = Encoder(str(tiny_st_dir), device="cpu")
    rr = Reranker(generator=None, scorer=None, encoder=enc)
    calls: list[list[str]] = []
    encode = enc.model.encode
    enc.model.encode = lambda texts, **kw: (calls.append(list(texts)), encode(texts, **kw))[1]
    embed_model = MeteoraEmbedding(rr)
    assert embed_model.encoder is enc and embed_model.model_name == enc.name
    nodes = [TextNode(text=c["text"], id_=f"n{i}") for i, c in enumerate(CORPUS)]
    index = VectorStoreIndex(nodes, embed_model=embed_model)
    retrieved = index.as_retriever(similarity_top_k=4).retrieve(QUERY)
    calls.clear()
    out = MeteoraPostprocessor(reranker=rr, mode="rank", top_n=None).postprocess_nodes(retrieved, query_str=QUERY)
    assert len(out) == 4 and calls == []  # nothing encoded again
    vec = asyncio.run(embed_model.aget_query_embedding(QUERY))
    assert len(vec) == enc.dim and calls == []

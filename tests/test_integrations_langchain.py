"""LangChain integration against the real langchain-core (and langchain-classic's
ContextualCompressionRetriever): copies not mutations, metadata, modes, stored
embeddings, a real thread-pool async path, and a whole retrieval chain whose LLM is
LangChain's own fake (ParrotFakeChatModel echoes the prompt it got)."""

from __future__ import annotations

import asyncio
import copy
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("langchain_core")

from helpers_integrations import BEST, CORPUS, QUERY, FlagDogs, keyword_reranker  # noqa: E402
from langchain_core.documents import Document  # noqa: E402

from meteora.errors import InvalidInputError  # noqa: E402
from meteora.integrations.langchain import MeteoraCompressor, MeteoraEmbeddings  # noqa: E402
from meteora.relevance import relevance_score  # noqa: E402


def _docs() -> list[Document]:
    return [Document(page_content=c["text"], metadata={"doc_id": c["doc_id"], "source": f"s{i}"}) for i, c in enumerate(CORPUS)]


def test_select_returns_annotated_copies_and_leaves_the_input_alone():
    rr = keyword_reranker()
    docs = _docs()
    before = copy.deepcopy(docs)
    out = MeteoraCompressor(reranker=rr, top_n=None).compress_documents(docs, QUERY)
    assert docs == before  # nothing of the caller's changed
    assert out and out[0].page_content == CORPUS[BEST]["text"]
    assert all(o is not d for o in out for d in docs)
    assert all(o.metadata is not d.metadata for o in out for d in docs)
    direct = rr.rerank(QUERY, [c["text"] for c in CORPUS])
    assert [o.page_content for o in out] == [p.text for p in direct.selected]
    scores = {h.text: h.score for h in direct.ranked}
    for o in out:
        meta = o.metadata
        assert meta["meteora_score"] == pytest.approx(scores[o.page_content])
        assert meta["relevance_score"] == pytest.approx(relevance_score(scores[o.page_content], direct.score_scale))
        assert 0.0 <= meta["relevance_score"] <= 1.0
        assert meta["meteora_selected"] is True
        assert meta["meteora_reason"].startswith("selected")
        assert meta["meteora_rationales"] == [QUERY]  # query-only: the query is the rationale
        assert meta["source"].startswith("s")  # the caller's metadata is kept
    assert "Dogs with kidney disease were treated with fluids." not in [o.page_content for o in out]


def test_conflicts_are_in_the_metadata_of_the_documents_they_name():
    out = MeteoraCompressor(reranker=keyword_reranker(verifier=FlagDogs())).compress_documents(_docs(), QUERY)
    best = next(o for o in out if o.page_content == CORPUS[BEST]["text"])
    [conflict] = best.metadata["meteora_conflicts"]
    assert conflict["sides"] == {"effect": [str(BEST)], "no effect": ["1", "4"]} and conflict["dropped"] == ["1", "4"]
    assert all(o.metadata["meteora_conflicts"] == [] for o in out if o is not best)


def test_rank_mode_returns_every_document_best_first_capped_by_top_n():
    rr = keyword_reranker()
    out = MeteoraCompressor(reranker=rr, mode="rank", top_n=3).compress_documents(_docs(), QUERY)
    assert len(out) == 3
    assert out[0].page_content == CORPUS[BEST]["text"]
    ranks = [o.metadata["meteora_rank"] for o in out]
    assert ranks == [1, 2, 3]
    scores = [o.metadata["relevance_score"] for o in out]
    assert scores == sorted(scores, reverse=True)
    assert [o.metadata["meteora_selected"] for o in out][0] is True
    assert any(not o.metadata["meteora_selected"] and o.metadata["meteora_reason"].startswith("not selected") for o in out)


def test_stored_embeddings_are_used_instead_of_the_text():
    rr = keyword_reranker()
    docs = _docs()
    # swap the stored vectors of the aspirin and the dog passages: if the compressor
    # uses stored vectors, the dog passage wins
    vecs = rr.encoder.encode([c["text"] for c in CORPUS])
    vecs[[0, 1]] = vecs[[1, 0]]
    for d, v in zip(docs, vecs, strict=True):
        d.metadata["embedding"] = v.tolist()
    rr.encoder.model.texts.clear()
    out = MeteoraCompressor(reranker=rr, mode="rank").compress_documents(docs, QUERY)
    assert out[0].page_content == CORPUS[1]["text"]
    assert rr.encoder.model.texts == [QUERY]  # only the query was encoded
    # a vector of another dimension is not usable: the texts are encoded instead
    for d in docs:
        d.metadata["embedding"] = [0.1, 0.2, 0.3]
    out = MeteoraCompressor(reranker=rr, mode="rank").compress_documents(docs, QUERY)
    assert out[0].page_content == CORPUS[BEST]["text"]


def test_async_runs_in_a_worker_thread_and_matches_sync():
    rr = keyword_reranker()
    comp = MeteoraCompressor(reranker=rr, mode="rank")
    sync = comp.compress_documents(_docs(), QUERY)
    rr.encoder.model.threads.clear()
    out = asyncio.run(comp.acompress_documents(_docs(), "Is insulin given to dogs?"))
    assert rr.encoder.model.threads and threading.get_ident() not in rr.encoder.model.threads
    assert out[0].page_content == CORPUS[4]["text"]
    assert [d.page_content for d in sync][0] == CORPUS[BEST]["text"]


def test_the_default_reranker_is_built_lazily_from_kwargs():
    from helpers_integrations import KeywordModel

    from meteora.embeddings.encoder import Encoder

    comp = MeteoraCompressor(reranker_kwargs={"generator": None, "scorer": None, "encoder": Encoder(KeywordModel())})
    assert not comp._handle.built
    out = comp.compress_documents(_docs(), QUERY)
    assert comp._handle.built and out[0].page_content == CORPUS[BEST]["text"]
    assert comp.compress_documents([], QUERY) == []


def test_bad_options_are_refused_with_the_reason():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="mode must be one of"):
        MeteoraCompressor(reranker=keyword_reranker(), mode="best")
    with pytest.raises(ValidationError, match="top_n must be a positive integer"):
        MeteoraCompressor(reranker=keyword_reranker(), top_n=0)


def test_contextual_compression_retriever_in_a_chain():
    pytest.importorskip("langchain_classic")
    from langchain_classic.retrievers import ContextualCompressionRetriever
    from langchain_core.embeddings import DeterministicFakeEmbedding
    from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnablePassthrough
    from langchain_core.vectorstores import InMemoryVectorStore

    store = InMemoryVectorStore.from_documents(_docs(), DeterministicFakeEmbedding(size=16))
    retriever = ContextualCompressionRetriever(
        base_compressor=MeteoraCompressor(reranker=keyword_reranker()),
        base_retriever=store.as_retriever(search_kwargs={"k": len(CORPUS)}),
    )
    hits = retriever.invoke(QUERY)
    assert hits[0].page_content == CORPUS[BEST]["text"] and hits[0].metadata["meteora_selected"]
    assert len(hits) < len(CORPUS)

    prompt = ChatPromptTemplate.from_messages([("human", "Context:\n{context}\n\nQuestion: {question}")])
    chain = (
        {"context": retriever | (lambda ds: "\n".join(d.page_content for d in ds)), "question": RunnablePassthrough()}
        | prompt
        | ParrotFakeChatModel()
        | StrOutputParser()
    )
    answer = chain.invoke(QUERY)  # the parrot answers with the prompt it was given
    assert CORPUS[BEST]["text"] in answer and QUERY in answer
    assert "Dogs with kidney disease" not in answer
    assert asyncio.run(chain.ainvoke(QUERY)) == answer
    np.testing.assert_equal(len(asyncio.run(retriever.ainvoke(QUERY))), len(hits))


@pytest.mark.parametrize(("module", "blocked", "name", "extra"), [
    ("langchain", "langchain_core", "MeteoraCompressor", "langchain"),
    ("llamaindex", "llama_index", "MeteoraPostprocessor", "llamaindex"),
])
def test_without_the_framework_the_module_imports_and_names_the_extra(monkeypatch, module, blocked, name, extra):
    import importlib.util
    import sys

    from meteora.errors import MissingDependencyError

    for mod in [m for m in sys.modules if m == blocked or m.startswith(blocked + ".")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, blocked, None)  # "not installed"
    path = Path(__file__).resolve().parent.parent / "meteora" / "integrations" / f"{module}.py"
    spec = importlib.util.spec_from_file_location(f"_isolated_{module}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # importing works (the doctest collector imports every module)
    with pytest.raises(MissingDependencyError, match=rf"meteora-rerank\[{extra}\]"):
        getattr(mod, name)


def test_framework_defaults_and_checks_at_construction():
    from pydantic import ValidationError

    assert MeteoraCompressor(reranker=keyword_reranker()).top_n == 3  # as CrossEncoderReranker / CohereRerank
    with pytest.raises(ValidationError, match="top_n must be a positive integer"):
        MeteoraCompressor(reranker=keyword_reranker(), top_n=True)  # not read as 1
    with pytest.raises(ValidationError, match=r"unknown reranker_kwargs \['generatr'\]"):
        MeteoraCompressor(reranker_kwargs={"generatr": None})  # at construction, before any model loads


def test_returned_copies_carry_no_embedding_vector():
    rr = keyword_reranker()
    docs = _docs()
    for d, v in zip(docs, rr.encoder.encode([d.page_content for d in docs]), strict=True):
        d.metadata["embedding"] = v.tolist()
    out = MeteoraCompressor(reranker=rr, mode="rank", top_n=None).compress_documents(docs, QUERY)
    assert len(out) == len(docs) and all("embedding" not in o.metadata for o in out)
    assert all("embedding" in d.metadata for d in docs)  # the caller's documents keep theirs


def test_a_vector_store_built_with_meteora_embeddings_hands_its_vectors_to_the_compressor(tiny_st_dir):
    from langchain_classic.retrievers import ContextualCompressionRetriever
    from langchain_core.vectorstores import InMemoryVectorStore

    from meteora.embeddings.encoder import Encoder
    from meteora.reranker import Reranker

    enc = Encoder(str(tiny_st_dir), device="cpu")  # its own (default) in-memory cache
    rr = Reranker(generator=None, scorer=None, encoder=enc)
    calls: list[list[str]] = []
    encode = enc.model.encode
    enc.model.encode = lambda texts, **kw: (calls.append(list(texts)), encode(texts, **kw))[1]
    embeddings = MeteoraEmbeddings(rr)
    assert embeddings.encoder is enc
    store = InMemoryVectorStore(embeddings)
    store.add_texts([c["text"] for c in CORPUS], metadatas=[{"doc_id": c["doc_id"]} for c in CORPUS])
    vector = embeddings.embed_query(QUERY)
    assert len(vector) == enc.dim and abs(float(np.linalg.norm(vector)) - 1.0) < 1e-4
    retriever = ContextualCompressionRetriever(
        base_compressor=MeteoraCompressor(reranker=rr, mode="rank", top_n=None),
        base_retriever=store.as_retriever(search_kwargs={"k": 4}))
    calls.clear()
    out = retriever.invoke(QUERY)
    assert len(out) == 4 and calls == []  # the store's query and passage vectors came from the encoder's cache
    direct = Reranker(generator=None, scorer=None, encoder=Encoder(str(tiny_st_dir), device="cpu", cache=None))
    expect = direct.rerank(QUERY, [o.page_content for o in out])
    assert [o.metadata["meteora_score"] for o in out] == pytest.approx(expect.ranked.scores, abs=1e-5)
    with pytest.raises(InvalidInputError, match="lone surrogate"):
        embeddings.embed_documents(["aspirin \ud800"])

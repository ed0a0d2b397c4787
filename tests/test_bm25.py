"""BM25Retriever: ranking, edge cases, backends, agreement with rank-bm25."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from meteora.errors import InvalidInputError
from meteora.retrievers.bm25 import BM25Retriever
from meteora.types import Passage, Ranking

CORPUS = [
    "Aspirin reduces fever and pain in adults.",
    "Ibuprofen is a nonsteroidal anti-inflammatory drug for pain.",
    "Paracetamol lowers fever in children.",
    "Statins lower LDL cholesterol and cardiovascular risk.",
    "Insulin therapy controls blood glucose in diabetes.",
    "Metformin is first-line therapy for type 2 diabetes.",
    "Antibiotics treat bacterial infections but not viral infections.",
    "Vaccination prevents measles outbreaks in children.",
]


@pytest.fixture()
def bm25() -> BM25Retriever:
    return BM25Retriever(backend="numpy").index(CORPUS)


def test_defaults_match_reference_configuration():
    r = BM25Retriever()
    assert (r.k1, r.b, r.method, r.stopwords) == (1.5, 0.75, "lucene", "en")
    assert r.engine in ("numba", "numpy")


def test_search_ranks_the_matching_passage_first(bm25):
    ranking = bm25.search("insulin for diabetes", k=3)
    assert isinstance(ranking, Ranking)
    assert ranking.query == "insulin for diabetes"
    assert ranking.ids[0] == "4"
    assert ranking.ids[1] == "5"
    assert [h.rank for h in ranking] == list(range(1, len(ranking) + 1))
    assert ranking.scores == sorted(ranking.scores, reverse=True)
    assert all(s > 0 for s in ranking.scores)


def test_only_passages_sharing_a_term_are_returned(bm25):
    ranking = bm25.search("measles", k=10)
    assert ranking.ids == ["7"]


def test_k_larger_than_corpus_returns_every_match(bm25):
    # "in" is a stopword; "fever", "children", "pain" together hit passages 0, 1, 2, 7
    ranking = bm25.search("fever children pain", k=1000)
    assert sorted(ranking.ids) == ["0", "1", "2", "7"]
    everything = BM25Retriever(backend="numpy").index(["fever one", "fever two", "fever three"])
    assert everything.search("fever", k=50).ids == ["0", "1", "2"]


def test_empty_corpus_is_rejected():
    with pytest.raises(InvalidInputError, match="empty corpus"):
        BM25Retriever(backend="numpy").index([])
    with pytest.raises(InvalidInputError):
        BM25Retriever(backend="numpy").index(None)  # type: ignore[arg-type]


def test_duplicate_ids_are_rejected():
    with pytest.raises(InvalidInputError, match="duplicate passage id"):
        BM25Retriever(backend="numpy").index(
            [{"id": "x", "text": "a b"}, {"id": "x", "text": "c d"}]
        )


@pytest.mark.parametrize("query", ["", "   ", "\n\t"])
def test_empty_query_is_rejected(bm25, query):
    with pytest.raises(InvalidInputError, match="empty"):
        bm25.search(query)
    with pytest.raises(InvalidInputError, match=r"queries\[1\]"):
        bm25.search(["fever", query])


@pytest.mark.parametrize("k", [0, -1, 1.5, True, "3"])
def test_bad_k_is_rejected(bm25, k):
    with pytest.raises(InvalidInputError, match="k must be a positive integer"):
        bm25.search("fever", k=k)


def test_non_string_query_is_rejected(bm25):
    with pytest.raises(InvalidInputError):
        bm25.search(42)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        bm25.search([1, 2])  # type: ignore[list-item]


def test_search_before_index_is_an_error():
    with pytest.raises(InvalidInputError, match=r"call \.index"):
        BM25Retriever(backend="numpy").search("fever")


def test_stopword_and_unknown_queries_give_empty_rankings(bm25):
    assert len(bm25.search("the of and is a", k=5)) == 0
    assert len(bm25.search("zzzyx qwerty", k=5)) == 0
    batch = bm25.search(["the of", "statins", "unknownword"], k=5)
    assert [len(r) for r in batch] == [0, 1, 0]
    assert batch[1].ids == ["3"]
    assert [r.query for r in batch] == ["the of", "statins", "unknownword"]


def test_batch_and_single_search_are_identical(bm25):
    queries = ["fever in children", "pain drug", "diabetes therapy", "the of", "infections"]
    batch = bm25.search(queries, k=4)
    for q, r in zip(queries, batch, strict=True):
        single = bm25.search(q, k=4)
        assert single.ids == r.ids
        assert single.scores == r.scores
    assert bm25.search([], k=3) == []


def test_unicode_text_is_indexed_and_found():
    texts = [
        "Fièvre élevée chez l'enfant",
        "发烧 头痛 咳嗽",
        "Ελληνικά ιατρικά κείμενα για πυρετό",
        "Über die Behandlung von Diabetes 🩺",
    ]
    r = BM25Retriever(backend="numpy", stopwords=None).index(texts)
    assert r.search("fièvre", k=2).ids[0] == "0"
    assert r.search("发烧", k=2).ids[0] == "1"
    assert r.search("πυρετό", k=2).ids[0] == "2"
    assert r.search("ÜBER diabetes", k=2).ids[0] == "3"


def test_ties_are_broken_by_corpus_order():
    texts = (
        ["fever"] * 4
        + ["fever fever unrelated words here"]
        + [f"other text {w}" for w in "abcdefgh"]
    )
    for backend in ("numpy", "rank_bm25"):
        r = BM25Retriever(backend=backend).index(
            [{"id": f"p{i}", "text": t} for i, t in enumerate(texts)]
        )
        top = r.search("fever", k=3)
        assert top.ids == ["p0", "p1", "p2"], backend
        assert len(set(top.scores)) == 1
        assert r.search("fever", k=20).ids[:4] == [f"p{i}" for i in range(4)]
        assert len(r.search("fever", k=20)) == 5


def test_scores_agree_with_rank_bm25_okapi():
    # bm25s "atire" term frequency + "robertson" idf = rank-bm25's BM25Okapi, with the same
    # tokenisation, as long as no term occurs in more than half of the passages
    # (then Okapi floors idf at 0.25 × mean idf while bm25s clamps it at 0).
    fast = BM25Retriever(method="atire", idf_method="robertson", backend="numpy").index(CORPUS)
    ref = BM25Retriever(method="atire", idf_method="robertson", backend="rank_bm25").index(CORPUS)
    assert ref.engine == "rank_bm25"
    for q in [
        "fever in children",
        "diabetes therapy insulin",
        "pain drug",
        "bacterial viral infections",
    ]:
        a, b = fast.get_scores(q), ref.get_scores(q)
        assert a.shape == b.shape == (len(CORPUS),)
        assert np.allclose(a, b, rtol=1e-5, atol=1e-6), q
        assert fast.search(q, k=4).ids == ref.search(q, k=4).ids


def test_scores_agree_with_rank_bm25_plus():
    fast = BM25Retriever(method="bm25+", delta=1.0, backend="numpy").index(CORPUS)
    ref = BM25Retriever(method="bm25+", delta=1.0, backend="rank_bm25").index(CORPUS)
    for q in ["fever in children", "pain drug fever fever"]:
        assert np.allclose(fast.get_scores(q), ref.get_scores(q), rtol=1e-5, atol=1e-6)
    # the non-occurrence floor lifts every passage; only real matches are returned
    assert fast.search("measles", k=8).ids == ref.search("measles", k=8).ids == ["7"]


@pytest.mark.slow
def test_numba_backend_matches_numpy_backend():
    pytest.importorskip("numba")
    a = BM25Retriever(backend="numpy").index(CORPUS)
    b = BM25Retriever(backend="numba").index(CORPUS)
    assert b.engine == "numba"
    queries = ["fever in children", "pain drug", "the of", "diabetes", "fever"]
    for ra, rb in zip(a.search(queries, k=3), b.search(queries, k=3), strict=True):
        assert ra.ids == rb.ids
        assert np.allclose(ra.scores, rb.scores)
    ties = BM25Retriever(backend="numba").index(["cough"] * 5)
    assert ties.search("cough", k=2).ids == ["0", "1"]


def test_stopwords_option():
    texts = ["the cat", "a dog"]
    assert len(BM25Retriever(backend="numpy").index(texts).search("the", k=2)) == 0
    assert BM25Retriever(backend="numpy", stopwords=None).index(texts).search("the", k=2).ids == [
        "0"
    ]
    custom = BM25Retriever(backend="numpy", stopwords=["cat"]).index(texts)
    assert len(custom.search("cat", k=2)) == 0
    assert custom.tokenize(["The CAT and the Dog"]) == [["the", "and", "the", "dog"]]


def test_invalid_parameters_are_rejected():
    with pytest.raises(InvalidInputError, match="method"):
        BM25Retriever(method="okapi")
    with pytest.raises(InvalidInputError, match="backend"):
        BM25Retriever(backend="java")
    with pytest.raises(InvalidInputError, match="b must be"):
        BM25Retriever(b=1.5)
    with pytest.raises(InvalidInputError, match="k1"):
        BM25Retriever(k1=-1)
    with pytest.raises(InvalidInputError, match="stopwords"):
        BM25Retriever(stopwords="klingon")


def test_corpus_without_indexable_words(caplog):
    with caplog.at_level(logging.WARNING, logger="meteora.retrievers.bm25"):
        r = BM25Retriever(backend="numpy").index(["the a of", "and or"])
    assert "no indexable word" in caplog.text or "none of the 2 passages" in caplog.text
    assert len(r) == 2
    assert len(r.search("anything at all", k=3)) == 0


def test_passage_objects_and_metadata_are_kept():
    ps = [
        Passage(
            "Aspirin reduces fever.", id="a1", doc_id="d1", position=0, metadata={"year": 2001}
        ),
        {"id": "b2", "text": "Statins lower LDL.", "doc_id": "d2", "position": 3},
    ]
    r = BM25Retriever(backend="numpy").index(ps)
    hit = r.search("aspirin", k=1)[0]
    assert (hit.passage.id, hit.passage.doc_id, hit.passage.metadata["year"]) == ("a1", "d1", 2001)
    assert r.get_passage("b2").position == 3
    with pytest.raises(InvalidInputError, match="no passage with id"):
        r.get_passage("zz")
    assert len(r) == 2
    assert [p.id for p in r.passages] == ["a1", "b2"]
    r.passages.append(ps[0])  # a copy: the index is not changed
    assert len(r) == 2


def test_reindex_replaces_the_corpus(bm25):
    bm25.index(["completely new text about measles"])
    assert len(bm25) == 1
    assert bm25.search("measles").ids == ["0"]
    assert len(bm25.search("insulin")) == 0


def test_repr_is_readable(bm25):
    text = repr(bm25)
    assert text.startswith("BM25Retriever(")
    assert "method='lucene'" in text and "passages=8" in text and "backend='numpy'" in text


def test_rank_bm25_zero_idf_corpus_still_returns_matches():
    # two passages, each term in one of them: Okapi idf = log(1.5 / 1.5) = 0 for every term
    r = BM25Retriever(backend="rank_bm25").index(["fever today", "cough tonight"])
    hits = r.search("fever", k=5)
    assert hits.ids == ["0"]
    assert hits.scores == [0.0]
    assert r.search(["cough", "unknown"], k=5)[0].ids == ["1"]

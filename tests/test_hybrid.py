"""HybridRetriever and the fusion functions rrf_fuse / weighted_fuse."""

from __future__ import annotations

import pytest
from helpers_bench import DISTINCT_LENGTH_CORPUS as CORPUS

from meteora.errors import InvalidInputError
from meteora.retrievers.base import Retriever
from meteora.retrievers.bm25 import BM25Retriever
from meteora.retrievers.dense import DenseRetriever
from meteora.retrievers.hybrid import HybridRetriever, rrf_fuse, weighted_fuse
from meteora.types import Hit, Ranking, to_passages

# CORPUS: distinct token counts per passage (see tests/helpers_bench.py)
QUERIES = ["fever in children", "diabetes therapy", "measles", "the of and"]

A, B, C, D = to_passages(["a", "b", "c", "d"])


def _ranking(*pairs) -> Ranking:
    return Ranking([Hit(p, s, i + 1) for i, (p, s) in enumerate(pairs)], query="q")


@pytest.fixture()
def members(tiny_encoder):
    return [BM25Retriever(backend="numpy"), DenseRetriever(tiny_encoder, backend="numpy")]


@pytest.fixture()
def hybrid(members) -> HybridRetriever:
    return HybridRetriever(members).index(CORPUS)


def test_rrf_fuse_hand_computed():
    r1 = _ranking((A, 9.0), (B, 5.0))
    r2 = _ranking((B, 0.9), (C, 0.8))
    fused = rrf_fuse([r1, r2], k=60)
    assert fused.ids == ["1", "0", "2"]  # b, a, c
    assert fused.scores == pytest.approx([1 / 61 + 1 / 62, 1 / 61, 1 / 62])
    assert [h.rank for h in fused] == [1, 2, 3]
    assert fused.query == "q"
    assert rrf_fuse([r1, r2], k=0).scores == pytest.approx([1 + 1 / 2, 1.0, 1 / 2])
    assert rrf_fuse([r1, r2], limit=2).ids == ["1", "0"]


def test_rrf_fuse_weights_and_ties():
    r1 = _ranking((A, 1.0), (B, 0.5))
    r2 = _ranking((C, 1.0), (D, 0.5))
    # equal fused scores: best rank first, then the earlier list
    assert rrf_fuse([r1, r2]).ids == ["0", "2", "1", "3"]
    weighted = rrf_fuse([r1, r2], weights=[1.0, 3.0])
    assert weighted.ids == ["2", "3", "0", "1"]
    assert weighted.scores[0] == pytest.approx(3 / 61)
    # a custom tie key (the hybrid uses corpus position)
    assert rrf_fuse([r2, r1], tie_key=lambda p: int(p.id)).ids == ["0", "2", "1", "3"]
    assert rrf_fuse([]).ids == []
    assert len(rrf_fuse([_ranking(), r1])) == 2


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"weights": [1.0]}, "one weight per ranking"),
        ({"weights": [1.0, -1.0]}, "non-negative"),
        ({"weights": [0, 0]}, "all weights are zero"),
        ({"k": -1}, "rrf k"),
        ({"limit": -2}, "limit"),
    ],
)
def test_rrf_fuse_rejects_bad_arguments(kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        rrf_fuse([_ranking((A, 1.0)), _ranking((B, 1.0))], **kwargs)


def test_rrf_fuse_rejects_non_rankings():
    with pytest.raises(InvalidInputError, match="list of Ranking"):
        rrf_fuse(_ranking((A, 1.0)))  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=r"rankings\[1\]"):
        rrf_fuse([_ranking((A, 1.0)), ["a"]])  # type: ignore[list-item]


def test_weighted_fuse_hand_computed():
    r1 = _ranking((A, 10.0), (B, 6.0), (C, 2.0))  # normalised: 1, 0.5, 0
    r2 = _ranking((C, 0.9), (A, 0.5))  # normalised: 1, 0
    fused = weighted_fuse([r1, r2], weights=[1.0, 2.0])
    assert fused.ids == ["2", "0", "1"]
    assert fused.scores == pytest.approx([2.0, 1.0, 0.5])
    same = weighted_fuse([_ranking((A, 3.0), (B, 3.0))])  # all equal -> 1 each, ties by rank
    assert same.ids == ["0", "1"] and same.scores == pytest.approx([1.0, 1.0])


def test_hybrid_equals_manual_rrf_of_its_members(hybrid, members):
    bm25, dense = members
    for q in QUERIES:
        got = hybrid.search(q, k=5)
        expected = rrf_fuse(
            [bm25.search(q, k=100), dense.search(q, k=100)],
            k=60,
            limit=5,
            tie_key=lambda p: int(p.id),
        )
        assert got.ids == expected.ids
        assert got.scores == pytest.approx(expected.scores)
        assert got.query == q


def test_hybrid_member_names_and_repr(hybrid, tiny_encoder):
    assert list(hybrid.members) == ["bm25", "dense"]
    assert isinstance(hybrid.retrievers[0], BM25Retriever)
    two = HybridRetriever(
        [BM25Retriever(backend="numpy"), BM25Retriever(backend="numpy", method="atire")]
    )
    assert list(two.members) == ["bm25", "bm25_2"]
    text = repr(hybrid)
    assert (
        text.startswith("HybridRetriever(fusion='rrf'")
        and "bm25=BM25Retriever" in text
        and "passages=8" in text
    )


def test_default_members_are_bm25_and_dense():
    h = HybridRetriever()  # the dense encoder loads lazily: nothing heavy happens here
    assert [type(r) for r in h.retrievers] == [BM25Retriever, DenseRetriever]
    assert (h.fusion, h.rrf_k, h.candidate_k, h.weights) == ("rrf", 60, 100, [1.0, 1.0])


def test_hybrid_weights_by_name(tiny_encoder):
    h = HybridRetriever(
        {
            "lex": BM25Retriever(backend="numpy"),
            "emb": DenseRetriever(tiny_encoder, backend="numpy"),
        },
        weights={"lex": 2.0},
    )
    assert h.weights == [2.0, 1.0]
    with pytest.raises(InvalidInputError, match="unknown members"):
        HybridRetriever({"lex": BM25Retriever(backend="numpy")}, weights={"dense": 1.0})


def test_weighted_fusion_mode(members):
    h = HybridRetriever(members, fusion="weighted", weights=[1.0, 0.5]).index(CORPUS)
    bm25, dense = members
    q = "fever in children"
    expected = weighted_fuse(
        [bm25.search(q, k=100), dense.search(q, k=100)],
        weights=[1.0, 0.5],
        limit=3,
        tie_key=lambda p: int(p.id),
    )
    got = h.search(q, k=3)
    assert got.ids == expected.ids and got.scores == pytest.approx(expected.scores)
    assert got.ids[0] == "2"


def test_candidate_k_is_at_least_k(members):
    h = HybridRetriever(members, candidate_k=2).index(CORPUS)
    r = h.search("fever", k=8)
    assert len(r) == 8  # dense members contributed every passage
    assert sorted(r.ids, key=int) == [str(i) for i in range(8)]
    assert len(h.search("fever", k=50)) == 8


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"retrievers": []}, "at least one retriever"),
        ({"fusion": "borda"}, "fusion"),
        ({"rrf_k": -5}, "rrf_k"),
        ({"candidate_k": 0}, "candidate_k"),
        ({"weights": [1.0]}, "one weight"),
    ],
)
def test_hybrid_rejects_bad_arguments(kwargs, match):
    args = {"retrievers": [BM25Retriever(backend="numpy"), BM25Retriever(backend="numpy")]}
    args.update(kwargs)
    with pytest.raises(InvalidInputError, match=match):
        HybridRetriever(**args)


def test_hybrid_rejects_non_retrievers():
    with pytest.raises(InvalidInputError, match="wrap a single one"):
        HybridRetriever(BM25Retriever(backend="numpy"))  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="not a meteora Retriever"):
        HybridRetriever([object()])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError, match="member name"):
        HybridRetriever({"../evil": BM25Retriever(backend="numpy")})


def test_hybrid_indexes_every_member_with_the_same_passages(hybrid):
    for r in hybrid.retrievers:
        assert [p.id for p in r.passages] == [str(i) for i in range(len(CORPUS))]
    assert isinstance(hybrid, Retriever) and len(hybrid) == len(CORPUS)
    assert hybrid.get_passage("3").text == CORPUS[3]


def test_hybrid_edge_cases(members, hybrid):
    with pytest.raises(InvalidInputError, match="empty corpus"):
        HybridRetriever(members).index([])
    with pytest.raises(InvalidInputError, match="duplicate passage id"):
        HybridRetriever(members).index([{"id": "x", "text": "a b"}, {"id": "x", "text": "c"}])
    with pytest.raises(InvalidInputError, match="empty"):
        hybrid.search("")
    # stopwords only: BM25 gives nothing, the dense member still ranks passages
    stop = hybrid.search("the of and", k=3)
    assert len(stop) == 3
    lexical = HybridRetriever(
        [BM25Retriever(backend="numpy"), BM25Retriever(backend="numpy", method="atire")]
    )
    lexical.index(CORPUS)
    assert len(lexical.search("the of and", k=3)) == 0


def test_hybrid_batch_equals_single(hybrid):
    batch = hybrid.search(QUERIES, k=4)
    for q, r in zip(QUERIES, batch, strict=True):
        single = hybrid.search(q, k=4)
        assert single.ids == r.ids and single.scores == pytest.approx(r.scores)


def test_hybrid_unicode(tiny_encoder):
    texts = ["Fièvre élevée chez l'enfant", "发烧 头痛", "Über Diabetes 🩺"]
    h = HybridRetriever(
        [
            BM25Retriever(backend="numpy", stopwords=None),
            DenseRetriever(tiny_encoder, backend="numpy"),
        ]
    ).index(texts)
    assert h.search("fièvre chez l'enfant", k=1).ids == ["0"]
    assert h.search("发烧", k=1).ids == ["1"]

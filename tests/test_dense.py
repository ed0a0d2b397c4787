"""DenseRetriever: FAISS and numpy search, stored embeddings, add(), edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from helpers_bench import DISTINCT_LENGTH_CORPUS as CORPUS

from meteora.errors import InvalidInputError, ModelNotFoundError
from meteora.retrievers.dense import DenseRetriever
from meteora.types import Ranking

# CORPUS: passages of distinct token counts, so that even an encoder that sees only the
# sequence length gives every passage its own embedding.
QUERIES = ["fever in children", "pain drug", "blood glucose", "measles vaccine", "the of and"]


class CountingEncoder:
    """Wraps an Encoder and records how many texts it embedded."""

    def __init__(self, inner):
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.seen: list[str] = []

    def encode(self, texts, **kwargs):
        self.seen.extend(texts)
        return self.inner.encode(texts, **kwargs)


@pytest.fixture()
def dense_np(tiny_encoder) -> DenseRetriever:
    return DenseRetriever(tiny_encoder, backend="numpy").index(CORPUS)


@pytest.fixture()
def dense_faiss(tiny_encoder) -> DenseRetriever:
    pytest.importorskip("faiss")
    return DenseRetriever(tiny_encoder, backend="faiss").index(CORPUS)


def test_exact_text_query_finds_its_passage(dense_np):
    for i, text in enumerate(CORPUS):
        r = dense_np.search(text, k=2)
        assert isinstance(r, Ranking) and r.query == text
        assert r.ids[0] == str(i)
        assert r.scores[0] == pytest.approx(1.0, abs=1e-5)
        assert r.scores == sorted(r.scores, reverse=True)


def test_embeddings_are_stored_normalised(dense_np, tiny_encoder):
    emb = dense_np.embeddings
    assert emb.shape == (len(CORPUS), tiny_encoder.dim) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    expected = tiny_encoder.encode(CORPUS)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert np.allclose(emb, expected, atol=1e-5)
    assert dense_np.dim == tiny_encoder.dim


def test_embeddings_for_and_encode_queries(dense_np):
    got = dense_np.embeddings_for(["3", "0", "3"])
    assert got.shape == (3, dense_np.dim)
    assert np.array_equal(got[0], dense_np.embeddings[3]) and np.array_equal(
        got[1], dense_np.embeddings[0]
    )
    got[0] = 0  # a copy: the index is untouched
    assert np.linalg.norm(dense_np.embeddings[3]) > 0.99
    with pytest.raises(InvalidInputError, match="no passage with id"):
        dense_np.embeddings_for(["nope"])
    with pytest.raises(InvalidInputError, match="list of ids"):
        dense_np.embeddings_for("3")
    q = dense_np.encode_queries(["fever", "pain"])
    assert q.shape == (2, dense_np.dim) and q.dtype == np.float32
    assert np.allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    # a passage text encoded as a query equals its stored embedding
    assert np.allclose(dense_np.encode_queries([CORPUS[2]])[0], dense_np.embeddings[2], atol=1e-5)
    with pytest.raises(InvalidInputError):
        dense_np.encode_queries(["ok", ""])


def test_numpy_backend_matches_faiss_flat(dense_np, dense_faiss):
    assert dense_np.engine == "numpy" and dense_faiss.engine == "faiss"
    for k in (1, 3, len(CORPUS), 50):
        a = dense_np.search(QUERIES, k=k)
        b = dense_faiss.search(QUERIES, k=k)
        for ra, rb in zip(a, b, strict=True):
            assert ra.ids == rb.ids
            assert np.allclose(ra.scores, rb.scores, atol=1e-5)
            assert len(ra) == min(k, len(CORPUS))


@pytest.mark.parametrize("index_type,extra", [("hnsw", {"ef_search": 64}), ("ivf", {"nlist": 1})])
def test_approximate_indexes_find_the_same_neighbours_on_a_small_corpus(
    tiny_encoder, dense_np, index_type, extra
):
    pytest.importorskip("faiss")
    r = DenseRetriever(tiny_encoder, index_type=index_type, **extra).index(CORPUS)
    assert r.engine == "faiss"
    for ra, rb in zip(r.search(QUERIES, k=4), dense_np.search(QUERIES, k=4), strict=True):
        assert ra.ids == rb.ids
        assert np.allclose(ra.scores, rb.scores, atol=1e-5)


def test_ivf_nlist_larger_than_corpus_is_clipped(tiny_encoder):
    pytest.importorskip("faiss")
    r = DenseRetriever(tiny_encoder, index_type="ivf", nlist=1000, nprobe=1000).index(CORPUS)
    assert r.search(CORPUS[5], k=1).ids == ["5"]


def test_numpy_backend_refuses_approximate_index_types(tiny_encoder):
    with pytest.raises(InvalidInputError, match="needs FAISS"):
        DenseRetriever(tiny_encoder, index_type="hnsw", backend="numpy")
    with pytest.raises(InvalidInputError, match="index_type"):
        DenseRetriever(tiny_encoder, index_type="lsh")
    with pytest.raises(InvalidInputError, match="backend"):
        DenseRetriever(tiny_encoder, backend="annoy")
    with pytest.raises(InvalidInputError, match="batch_size"):
        DenseRetriever(tiny_encoder, batch_size=0)


@pytest.mark.parametrize("backend", ["numpy", "faiss"])
def test_add_encodes_only_new_passages(tiny_encoder, backend):
    if backend == "faiss":
        pytest.importorskip("faiss")
    enc = CountingEncoder(tiny_encoder)
    r = DenseRetriever(enc, backend=backend).index(CORPUS[:5])
    assert enc.seen == CORPUS[:5]
    before = r.embeddings.copy()
    r.add(CORPUS[5:])
    assert enc.seen == CORPUS  # the first five were not encoded again
    assert len(r) == len(CORPUS) and r.embeddings.shape[0] == len(CORPUS)
    assert np.array_equal(r.embeddings[:5], before)
    assert r.search(CORPUS[6], k=1).ids == ["6"]
    full = DenseRetriever(tiny_encoder, backend=backend).index(CORPUS)
    assert np.allclose(full.embeddings, r.embeddings, atol=1e-6)
    assert [p.id for p in r.passages] == [str(i) for i in range(len(CORPUS))]
    with pytest.raises(InvalidInputError, match="already in the index"):
        r.add([{"id": "0", "text": "new text with an old id"}])
    with pytest.raises(InvalidInputError, match="no passages"):
        r.add([])
    assert len(r) == len(CORPUS)


def test_add_on_empty_retriever_and_automatic_ids(tiny_encoder):
    r = DenseRetriever(tiny_encoder, backend="numpy")
    r.add([{"id": "a", "text": "fever"}])  # add() on an empty retriever indexes
    r.add([{"id": "b", "text": "dry cough at night"}, "a third passage here, longer"])
    assert [p.id for p in r.passages] == ["a", "b", "2"]
    assert r.search("dry cough at night", k=1).ids == ["b"]


def test_empty_corpus_empty_query_and_duplicates(tiny_encoder, dense_np):
    with pytest.raises(InvalidInputError, match="empty corpus"):
        DenseRetriever(tiny_encoder, backend="numpy").index([])
    with pytest.raises(InvalidInputError, match="duplicate passage id"):
        DenseRetriever(tiny_encoder, backend="numpy").index(
            [{"id": "1", "text": "a"}, {"id": "1", "text": "b"}]
        )
    with pytest.raises(InvalidInputError, match="empty"):
        dense_np.search("  ")
    with pytest.raises(InvalidInputError, match="k must be"):
        dense_np.search("fever", k=0)
    with pytest.raises(InvalidInputError, match=r"call \.index"):
        DenseRetriever(tiny_encoder, backend="numpy").search("fever")


def test_k_larger_than_corpus_and_stopword_query(dense_np):
    r = dense_np.search("fever", k=100)
    assert sorted(r.ids, key=int) == [str(i) for i in range(len(CORPUS))]
    stop = dense_np.search("the of and", k=3)  # no crash; dense models embed anything
    assert len(stop) == 3


def test_batch_and_single_search_are_identical(dense_np):
    batch = dense_np.search(QUERIES, k=3)
    for q, r in zip(QUERIES, batch, strict=True):
        single = dense_np.search(q, k=3)
        assert single.ids == r.ids
        assert np.allclose(single.scores, r.scores, atol=1e-6)
    assert dense_np.search([], k=3) == []


def test_unicode_text(tiny_encoder):
    texts = ["Fièvre élevée chez l'enfant", "发烧 头痛", "Über Diabetes 🩺"]  # 6, 4, 3 tokens
    r = DenseRetriever(tiny_encoder, backend="numpy").index(texts)
    for i, t in enumerate(texts):
        assert r.search(t, k=1).ids == [str(i)]


@pytest.mark.parametrize("backend", ["numpy", "faiss"])
def test_ties_are_broken_by_corpus_order(tiny_encoder, backend):
    if backend == "faiss":
        pytest.importorskip("faiss")
    texts = ["Statins lower LDL cholesterol."] * 5 + ["Insulin controls glucose."] * 3
    r = DenseRetriever(tiny_encoder, backend=backend).index(texts)
    assert r.search(texts[0], k=3).ids == ["0", "1", "2"]
    assert r.search(texts[0], k=5).ids == ["0", "1", "2", "3", "4"]
    assert r.search(texts[-1], k=2).ids == ["5", "6"]


def test_search_embeddings_matches_search(dense_np):
    vecs = dense_np.encode_queries(QUERIES)
    by_vec = dense_np.search_embeddings(vecs * 3.0, k=3, queries=QUERIES)  # renormalised
    for a, b in zip(by_vec, dense_np.search(QUERIES, k=3), strict=True):
        assert a.ids == b.ids and a.query == b.query
    with pytest.raises(InvalidInputError, match="shape"):
        dense_np.search_embeddings(vecs[:, :5], k=3)


def test_encoder_is_loaded_lazily_and_missing_models_are_reported():
    r = DenseRetriever("./no/such/model/folder", backend="numpy")
    assert r.encoder_name == "./no/such/model/folder"
    with pytest.raises(ModelNotFoundError):
        r.index(["fever"])
    assert len(r) == 0


def test_repr(dense_np):
    text = repr(dense_np)
    assert text.startswith("DenseRetriever(") and "index_type='flat'" in text
    assert "backend='numpy'" in text and "passages=8" in text and "dim=32" in text


@pytest.mark.slow
def test_packaged_minilm_finds_paraphrased_medical_passage():
    from meteora.embeddings.encoder import Encoder

    corpus = [
        "Paracetamol is effective for reducing fever in young children.",
        "Statin therapy lowers LDL cholesterol and the risk of myocardial infarction.",
        "Metformin is the first-line oral drug for type 2 diabetes mellitus.",
        "Hand washing reduces the transmission of respiratory infections.",
        "Beta blockers slow the heart rate in atrial fibrillation.",
        "Vitamin D supplementation and bone mineral density in older women.",
    ]
    r = DenseRetriever(Encoder(), backend="auto").index(corpus)
    assert r.dim == 384
    queries = [
        "which medicine brings down a high temperature in kids?",
        "drug that cuts bad cholesterol and heart attacks",
        "initial tablet treatment for adult-onset diabetes",
    ]
    results = r.search(queries, k=3)
    assert [res.ids[0] for res in results] == ["0", "1", "2"]
    assert results[0].scores[0] > 0.4


def test_precomputed_embeddings(tiny_encoder, dense_np):
    emb = dense_np.embeddings * 2.0  # normalised again on the way in
    enc = CountingEncoder(tiny_encoder)
    r = DenseRetriever(enc, backend="numpy").index(CORPUS[:6], embeddings=emb[:6])
    r.add(CORPUS[6:], embeddings=emb[6:])
    assert enc.seen == []  # no passage was encoded
    assert np.allclose(r.embeddings, dense_np.embeddings, atol=1e-6)
    assert r.search(QUERIES, k=3)[0].ids == dense_np.search(QUERIES, k=3)[0].ids
    with pytest.raises(InvalidInputError, match="shape"):
        DenseRetriever(enc, backend="numpy").index(CORPUS, embeddings=emb[:3])
    with pytest.raises(InvalidInputError, match="shape"):
        r.add(["one more passage"], embeddings=np.ones((1, 5), dtype=np.float32))
    with pytest.raises(InvalidInputError, match="row 0 holds NaN or infinite values"):
        DenseRetriever(enc, backend="numpy").index(CORPUS[:1], embeddings=np.full((1, 32), np.nan))


def test_zero_and_nan_vectors_are_refused_where_they_enter(tiny_encoder, dense_np, tmp_path):
    """A zero vector has no direction (every cosine with it is 0: silently last, or as a
    query every passage alike), NaN poisons every score: refused at index, add, search
    and load."""
    emb = dense_np.embeddings.copy()
    emb[3] = 0.0
    with pytest.raises(InvalidInputError, match=r"embeddings: row 3 is all zeros \(1 of"):
        DenseRetriever(tiny_encoder, backend="numpy").index(CORPUS, embeddings=emb)
    with pytest.raises(InvalidInputError, match="row 0 is all zeros"):
        DenseRetriever(tiny_encoder, backend="numpy").index(CORPUS[:2]).add(CORPUS[2:3], embeddings=np.zeros((1, 32)))
    for bad, words in ((np.full((1, 32), np.nan), "query vectors: row 0 holds NaN"), (np.zeros((2, 32)), "all zeros")):
        with pytest.raises(InvalidInputError, match=words):
            dense_np.search_embeddings(bad, k=2)
    from meteora.errors import IndexFormatError
    from meteora.retrievers.dense_files import load_embeddings

    path = tmp_path / "embeddings.npy"
    np.save(path, np.full((2, 32), np.nan, dtype=np.float32))
    with pytest.raises(IndexFormatError, match="embeddings.npy: row 0 holds NaN .* rebuild it"):
        load_embeddings(path)


def test_embedding_row_check_reports_the_first_bad_row_across_blocks(monkeypatch):
    """The check walks a large matrix a block of rows at a time (bounded temporaries);
    a bad row in a later block is found, counted and named by its global row number."""
    from meteora import _checks

    monkeypatch.setattr(_checks, "_CHECK_BLOCK_CELLS", 3 * 8)  # 3 rows of 8 per block
    emb = np.ones((10, 8), dtype=np.float32)
    assert _checks.check_embedding_rows(emb, "emb") is emb
    emb[7] = 0.0
    emb[9] = 0.0
    with pytest.raises(InvalidInputError, match=r"emb: row 7 is all zeros \(2 of 10 rows\)"):
        _checks.check_embedding_rows(emb, "emb")
    emb[4, 2] = np.inf  # NaN/inf is reported before zero rows
    with pytest.raises(InvalidInputError, match=r"emb: row 4 holds NaN or infinite values \(1 of 10 rows\)"):
        _checks.check_embedding_rows(emb, "emb")

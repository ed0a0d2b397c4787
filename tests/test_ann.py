"""Compressed dense indexes: IVF-PQ (and OPQ) with exact re-ranking, ``index_type="auto"``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from meteora.errors import InvalidInputError
from meteora.retrievers import DenseRetriever, load_retriever
from meteora.retrievers.ann import FLAT_MAX, AnnSpec, choose_index_type, default_nprobe, train_rows
from meteora.retrievers.storage import resolve_index

faiss = pytest.importorskip("faiss")

N, D = 3000, 32


@pytest.fixture(autouse=True)
def one_faiss_thread():
    """FAISS's OpenMP threads spin on a shared CPU: one thread trains far faster here."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


class VectorEncoder:
    """Encodes nothing real: the tests pass corpus embeddings, and queries are looked up."""

    name = "vectors"
    dim = D

    def __init__(self, table: dict[str, np.ndarray]):
        self.table = table

    def encode(self, texts, **_):
        return np.stack([self.table[t] for t in texts])


def _clustered(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, D))
    x = centres[rng.integers(0, 40, n)] + 0.35 * rng.normal(size=(n, D))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    emb = _clustered(N)
    queries = _clustered(50, seed=1)
    table = {f"q{i}": q for i, q in enumerate(queries)}
    corpus = [{"id": f"p{i}", "text": f"passage {i}", "doc_id": f"d{i // 3}", "position": i % 3} for i in range(N)]
    return corpus, emb, queries, VectorEncoder(table)


def _exact(emb, queries, k):
    sims = queries @ emb.T
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def test_ivfpq_reranks_exactly_and_recalls_the_exact_top_10(data):
    corpus, emb, queries, enc = data
    r = DenseRetriever(enc, index_type="ivfpq", pq_m=8, nlist=32, nprobe=8, rerank=100).index(corpus, embeddings=emb)
    assert r.index_type_used == "ivfpq" and r.ann_spec().factory(D, N) == "IVF32,PQ8x6"  # 6 bits: 3,000 / 39 < 2**7
    got = r.search_embeddings(queries, k=10)
    exact = _exact(emb, queries, 10)
    recall = np.mean([len({int(i[1:]) for i in g.ids} & set(e.tolist())) / 10 for g, e in zip(got, exact, strict=True)])
    assert recall >= 0.9
    for g, q in zip(got, queries, strict=True):  # scores are exact cosines, in exact order
        rows = [int(i[1:]) for i in g.ids]
        assert np.allclose(g.scores, emb[rows] @ q, atol=1e-5)
        assert g.scores == sorted(g.scores, reverse=True)
    # more candidates re-ranked and every cell probed: the exact top 10
    r.nprobe, r.rerank = 32, 1000
    full = r.search_embeddings(queries, k=10)
    assert [[int(i[1:]) for i in g.ids] for g in full] == exact.tolist()
    assert r.search("q3", k=10).ids == full[3].ids  # the text path (query encoded) agrees


def test_ivfpq_and_opq_round_trip_with_memory_mapped_vectors(data, tmp_path):
    corpus, emb, queries, enc = data
    corpus, emb = corpus[:1200], emb[:1200]
    for opq in (False, True):
        r = DenseRetriever(enc, index_type="ivfpq", pq_m=8, nlist=16, opq=opq).index(corpus, embeddings=emb)
        path = r.save(tmp_path / f"opq{opq}")
        version = resolve_index(path)
        manifest = json.loads((version / "manifest.json").read_text())
        assert {"index.faiss", "embeddings.npy", "passages.sqlite"} <= set(manifest["files"])
        assert manifest["parameters"]["opq"] is opq and manifest["parameters"]["index_type_used"] == "ivfpq"
        loaded = load_retriever(path, encoder=enc)
        assert isinstance(loaded.embeddings, np.memmap)
        a, b = r.search_embeddings(queries, k=10), loaded.search_embeddings(queries, k=10)
        assert [x.ids for x in a] == [x.ids for x in b]
        assert np.allclose([x.scores for x in a], [x.scores for x in b])
        # a PQ index is a small fraction of the vectors it stands for
        assert (version / "index.faiss").stat().st_size < (version / "embeddings.npy").stat().st_size / 2
        loaded.nprobe = 1  # search parameters apply to a loaded index too
        assert faiss.extract_index_ivf(loaded._faiss_index).nprobe == 16  # default: 1/16 of 16 cells, at least 16
        loaded.search_embeddings(queries[:1], k=3)
        assert faiss.extract_index_ivf(loaded._faiss_index).nprobe == 1


def test_auto_picks_by_corpus_size_and_is_recorded(data, tmp_path):
    corpus, emb, _, enc = data
    assert choose_index_type(FLAT_MAX) == "flat" and choose_index_type(FLAT_MAX + 1) == "ivfpq"
    r = DenseRetriever(enc, index_type="auto").index(corpus[:100], embeddings=emb[:100])
    assert r.index_type == "auto" and r.index_type_used == "flat"
    loaded = load_retriever(r.save(tmp_path / "auto"), encoder=enc)
    assert loaded.index_type == "auto" and loaded.index_type_used == "flat"
    assert DenseRetriever(enc, index_type="auto", backend="numpy").index(corpus[:10], embeddings=emb[:10]).engine == "numpy"


def test_bad_ivfpq_settings_are_refused(data):
    corpus, emb, _, enc = data
    with pytest.raises(InvalidInputError, match="pq_m=5 must divide the embedding dimension 32"):
        DenseRetriever(enc, index_type="ivfpq", pq_m=5).index(corpus[:500], embeddings=emb[:500])
    for kwargs, match in [({"rerank": 0}, "rerank"), ({"opq": "yes"}, "opq"), ({"index_type": "pq"}, "index_type")]:
        with pytest.raises(InvalidInputError, match=match):
            DenseRetriever(enc, **kwargs)
    with pytest.raises(InvalidInputError, match="needs FAISS"):
        DenseRetriever(enc, index_type="ivfpq", backend="numpy")


def test_training_sample_is_seeded_and_sized():
    assert train_rows(10, 3).tolist() == train_rows(10, 3).tolist()
    assert train_rows(5, 10).tolist() == [0, 1, 2, 3, 4]
    spec = AnnSpec("ivfpq")
    assert default_nprobe(4000) == 250 and default_nprobe(1264) == 79 and default_nprobe(8) == 8
    assert spec.factory(384, 1_000_000) == "IVF4000,PQ48x8" and spec.pq_bits_for(600) == 3
    assert spec.train_size_for(1_000_000, 384) == 200_000  # 50 per cell of 4,000
    assert spec.train_size_for(5_000, 384) == 5_000
    assert AnnSpec("hnsw").train_size_for(10**6, 384) == 0

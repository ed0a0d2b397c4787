"""Streaming index builds: equal to the in-memory build, bounded memory, clear errors."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest

from meteora.errors import InvalidInputError, UnsafeOverwriteError
from meteora.retrievers import BM25Retriever, DenseRetriever, HybridRetriever, load_retriever
from meteora.retrievers.passage_store import SqlitePassages
from meteora.retrievers.storage import resolve_index
from meteora.retrievers.streaming import build_index

WORDS = "fever cough aspirin statin insulin glucose child adult trial dose risk stroke".split()


def _corpus(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        words = rng.choice(WORDS, size=int(rng.integers(3, 12)))
        item = {"id": f"d{i // 5}-{i % 5}", "doc_id": f"d{i // 5}", "position": i % 5, "text": f"p{i} " + " ".join(words)}
        if i % 3 == 0:
            item["metadata"] = {"year": 2000 + i % 20}
        out.append(item)
    return out


def _write_jsonl(path, corpus):
    with open(path, "w", encoding="utf-8") as fh:
        for item in corpus:
            fh.write(json.dumps(item) + "\n")
    return path


QUERIES = ["fever in a child", "statin dose risk", "insulin glucose trial", "p17 aspirin"]


def _assert_same(built, reference, version):
    for a, b in zip(built.search(QUERIES, k=10), reference.search(QUERIES, k=10), strict=True):
        assert a.ids == b.ids
        assert np.allclose(a.scores, b.scores, atol=1e-5)
    assert [p.to_dict() for p in built.passages] == [p.to_dict() for p in reference.passages]
    ref_version = resolve_index(reference.save(version.parent / "reference"))
    built_files = json.loads((version / "manifest.json").read_text())["files"]
    ref_files = json.loads((ref_version / "manifest.json").read_text())["files"]
    assert sorted(built_files) == sorted(ref_files)


@pytest.mark.parametrize("kind", ["bm25-numpy", "bm25-auto", "dense-flat", "dense-ivfpq", "hybrid"])
def test_streaming_build_equals_the_in_memory_build(tmp_path, tiny_encoder, kind):
    corpus = _corpus(700)
    src = _write_jsonl(tmp_path / "c.jsonl", corpus)

    def make():
        if kind.startswith("bm25"):
            return BM25Retriever(backend=kind.split("-")[1])
        if kind == "dense-flat":
            return DenseRetriever(tiny_encoder)
        if kind == "dense-ivfpq":
            return DenseRetriever(tiny_encoder, index_type="ivfpq", pq_m=8, nlist=8, rerank=50)
        return HybridRetriever([BM25Retriever(), DenseRetriever(tiny_encoder)])

    built = build_index(src, tmp_path / "idx", make(), chunk_size=64)
    assert isinstance(built.passage_store, SqlitePassages)
    reference = make().index(corpus)
    _assert_same(built, reference, resolve_index(tmp_path / "idx"))
    if kind.startswith("dense"):
        assert np.allclose(built.embeddings, reference.embeddings, atol=1e-6)
    # no temporary files are left in the published version
    assert not [p for p in resolve_index(tmp_path / "idx").rglob(".*")]


def test_parquet_and_precomputed_embeddings(tmp_path, tiny_encoder):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    corpus = _corpus(300)
    rows = [{**c, "metadata": c.get("metadata")} for c in corpus]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "c.parquet", row_group_size=50)
    reference = DenseRetriever(tiny_encoder).index(corpus)
    np.save(tmp_path / "emb.npy", reference.embeddings)
    emb = np.load(tmp_path / "emb.npy", mmap_mode="r")
    built = build_index(tmp_path / "c.parquet", tmp_path / "idx", DenseRetriever(tiny_encoder), embeddings=emb, chunk_size=40)
    assert np.allclose(built.embeddings, reference.embeddings, atol=1e-6)  # normalised again: last bits
    _assert_same(built, reference, resolve_index(tmp_path / "idx"))
    with pytest.raises(InvalidInputError, match="embeddings has 299 rows"):
        build_index(tmp_path / "c.parquet", tmp_path / "idx2", DenseRetriever(tiny_encoder), embeddings=emb[:299])
    with pytest.raises(InvalidInputError, match="embeddings has 300 rows for 200 passages"):
        build_index(corpus[:200], tmp_path / "idx2", DenseRetriever(tiny_encoder), embeddings=emb)
    with pytest.raises(InvalidInputError, match="exactly one dense retriever"):
        build_index(corpus, tmp_path / "idx2", BM25Retriever(), embeddings=emb)
    assert not (tmp_path / "idx2").exists()  # failed first builds leave nothing behind


def test_bad_corpus_is_refused_with_its_line_and_the_old_index_kept(tmp_path):
    corpus = _corpus(50)
    old = build_index(corpus, tmp_path / "idx", BM25Retriever(backend="numpy"))
    bad = _corpus(200)
    bad[150]["id"] = bad[3]["id"]
    src = _write_jsonl(tmp_path / "bad.jsonl", bad)
    with pytest.raises(InvalidInputError, match=rf"bad\.jsonl:151: duplicate passage id '{bad[3]['id']}' \(first at passage #3\)"):
        build_index(src, tmp_path / "idx", BM25Retriever(backend="numpy"), chunk_size=32)
    bad[150] = {"text": "   "}
    _write_jsonl(src, bad)
    with pytest.raises(InvalidInputError, match=r"bad\.jsonl:151: passage '150' has empty text"):
        build_index(src, tmp_path / "idx", BM25Retriever(backend="numpy"), chunk_size=32)
    assert [p.id for p in load_retriever(tmp_path / "idx").passages] == [p.id for p in old.passages]
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(InvalidInputError, match="holds no passages"):
        build_index(tmp_path / "empty.jsonl", tmp_path / "idx3", BM25Retriever(backend="numpy"))
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep")
    with pytest.raises(UnsafeOverwriteError):
        build_index(corpus, tmp_path / "notes", BM25Retriever(backend="numpy"))
    assert (tmp_path / "notes" / "mine.txt").read_text() == "keep"
    with pytest.raises(InvalidInputError, match="chunk_size"):
        build_index(corpus, tmp_path / "idx4", chunk_size=0)


def test_streaming_build_memory_does_not_grow_with_the_corpus(tmp_path, tiny_encoder):
    """With precomputed embeddings and an exact index, a build holds one chunk: peak
    traced memory for 4× the corpus stays about the same."""
    dim = tiny_encoder.dim
    peaks = []
    for n in (3_000, 12_000):
        src = _write_jsonl(tmp_path / f"c{n}.jsonl", _corpus(n))
        emb = np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32)
        np.save(tmp_path / f"e{n}.npy", emb)
        del emb
        mm = np.load(tmp_path / f"e{n}.npy", mmap_mode="r")
        tracemalloc.start()
        build_index(src, tmp_path / f"idx{n}", DenseRetriever(tiny_encoder, backend="numpy"), embeddings=mm, chunk_size=500)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 1.5 * peaks[0], peaks

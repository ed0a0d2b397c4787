"""Saving and loading retrievers: round trips, manifest, corrupt files, atomic saves."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from meteora.errors import IndexFormatError, InvalidInputError
from meteora.retrievers.base import load_retriever
from meteora.retrievers.bm25 import BM25Retriever
from meteora.retrievers.dense import DenseRetriever
from meteora.retrievers.hybrid import HybridRetriever
from meteora.retrievers.storage import resolve_index
from meteora.types import Passage

CORPUS = [
    Passage("Aspirin reduces fever.", id="p0", doc_id="d0", position=0, metadata={"year": 2001}),
    Passage("Ibuprofen relieves joint pain.", id="p1", doc_id="d0", position=1),
    Passage("Paracetamol lowers fever in children.", id="p2", doc_id="d1", position=0),
    Passage("Statins lower LDL cholesterol and cardiovascular risk.", id="p3", doc_id="d2"),
    Passage("Insulin therapy controls blood glucose in type 1 diabetes.", id="p4", doc_id="d3"),
    Passage(
        "Metformin is the first-line therapy for type 2 diabetes.", id="p5", doc_id="d3", position=1
    ),
    Passage("Antibiotics treat bacterial, not viral, infections.", id="p6", doc_id="d4"),
    Passage("Fièvre chez l'enfant 发烧", id="p7", doc_id="d5"),
]
QUERIES = ["fever in children", "diabetes therapy", "fièvre", "the of and", "LDL"]


def _same_results(a, b, k: int = 5) -> None:
    for ra, rb in zip(a.search(QUERIES, k=k), b.search(QUERIES, k=k), strict=True):
        assert ra.ids == rb.ids
        assert np.allclose(ra.scores, rb.scores, atol=1e-6)
    assert [p.to_dict() for p in a.passages] == [p.to_dict() for p in b.passages]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _rewrite_manifest(directory: Path, **changes) -> None:
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


def _refresh_checksum(directory: Path, name: str) -> None:
    """Make the manifest agree with an altered file (simulates a forged manifest)."""
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    f = directory / name
    manifest["files"][name] = {"sha256": _sha(f), "bytes": f.stat().st_size}
    path.write_text(json.dumps(manifest))


@pytest.fixture()
def bm25_dir(tmp_path) -> Path:
    """The current version folder of a saved BM25 index (where its files are)."""
    return resolve_index(BM25Retriever(backend="numpy").index(CORPUS).save(tmp_path / "bm25"))


@pytest.fixture()
def dense_dir(tmp_path, tiny_encoder) -> Path:
    """The current version folder of a saved dense index."""
    saved = DenseRetriever(tiny_encoder, backend="numpy").index(CORPUS).save(tmp_path / "dense")
    return resolve_index(saved)


# -- round trips ---------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["numpy", "rank_bm25"])
def test_bm25_round_trip(tmp_path, backend):
    r = BM25Retriever(backend=backend, k1=1.2, b=0.6).index(CORPUS)
    path = r.save(tmp_path / "idx")
    loaded = BM25Retriever.load(path)
    assert (loaded.k1, loaded.b, loaded.engine) == (1.2, 0.6, backend)
    _same_results(r, loaded)
    assert loaded.get_passage("p0").metadata == {"year": 2001}
    assert type(load_retriever(path)) is BM25Retriever


def test_bm25s_files_are_not_pickled(bm25_dir):
    npys = sorted((bm25_dir / "bm25s").glob("*.npy"))
    assert npys, "bm25s arrays were not saved"
    for f in npys:
        np.load(f, allow_pickle=False)  # raises if the file needs pickle


def test_bm25_backend_can_change_on_load(tmp_path):
    r = BM25Retriever(backend="numpy", method="atire", idf_method="robertson").index(CORPUS)
    path = r.save(tmp_path / "idx")
    ref = BM25Retriever.load(path, backend="rank_bm25")
    assert ref.engine == "rank_bm25"
    for q in ["fever in children", "diabetes"]:
        assert np.allclose(ref.get_scores(q), r.get_scores(q), atol=1e-5)


@pytest.mark.parametrize("backend", ["numpy", "faiss"])
def test_dense_round_trip(tmp_path, tiny_encoder, backend):
    if backend == "faiss":
        pytest.importorskip("faiss")
    r = DenseRetriever(tiny_encoder, backend=backend).index(CORPUS)
    path = r.save(tmp_path / "dense")
    loaded = DenseRetriever.load(path, encoder=tiny_encoder)
    assert loaded.engine == backend
    assert np.array_equal(loaded.embeddings, r.embeddings)
    _same_results(r, loaded)
    # without an encoder the manifest's name (the tiny model folder) is used, lazily
    lazy = load_retriever(path)
    assert isinstance(lazy, DenseRetriever) and lazy._encoder is None
    assert np.array_equal(lazy.embeddings_for(["p3"]), r.embeddings[3:4])
    _same_results(r, lazy)


@pytest.mark.parametrize("index_type", ["hnsw", "ivf"])
def test_dense_approximate_round_trip(tmp_path, tiny_encoder, index_type):
    pytest.importorskip("faiss")
    r = DenseRetriever(tiny_encoder, index_type=index_type, nlist=2, nprobe=2, ef_search=32).index(
        CORPUS
    )
    path = r.save(tmp_path / index_type)
    assert (resolve_index(path) / "index.faiss").is_file()
    loaded = DenseRetriever.load(path, encoder=tiny_encoder)
    assert (loaded.index_type, loaded.nprobe, loaded.ef_search) == (index_type, 2, 32)
    _same_results(r, loaded)


def test_dense_add_after_load(tmp_path, tiny_encoder):
    r = DenseRetriever(tiny_encoder, backend="numpy").index(CORPUS[:4])
    loaded = DenseRetriever.load(r.save(tmp_path / "d"), encoder=tiny_encoder)
    loaded.add(CORPUS[4:])
    full = DenseRetriever(tiny_encoder, backend="numpy").index(CORPUS)
    _same_results(full, loaded)


def test_hybrid_round_trip(tmp_path, tiny_encoder):
    h = HybridRetriever(
        [BM25Retriever(backend="numpy"), DenseRetriever(tiny_encoder, backend="numpy")],
        fusion="weighted",
        weights=[2.0, 1.0],
        candidate_k=4,
    ).index(CORPUS)
    path = h.save(tmp_path / "hybrid")
    version = resolve_index(path)
    assert (version / "bm25" / "manifest.json").is_file() and (
        version / "dense" / "manifest.json"
    ).is_file()
    loaded = HybridRetriever.load(path, encoder=tiny_encoder)
    assert (loaded.fusion, loaded.weights, loaded.candidate_k) == ("weighted", [2.0, 1.0], 4)
    assert list(loaded.members) == ["bm25", "dense"]
    _same_results(h, loaded)
    _same_results(h, load_retriever(path))


def test_manifest_contents(bm25_dir, dense_dir, tiny_encoder):
    m = json.loads((bm25_dir / "manifest.json").read_text())
    assert (m["format"], m["format_version"], m["kind"]) == ("meteora-index", 1, "bm25")
    assert m["counts"]["passages"] == len(CORPUS) and m["counts"]["vocabulary"] > 10
    assert m["parameters"]["method"] == "lucene" and m["parameters"]["stopwords"] == "en"
    assert "passages.sqlite" in m["files"]
    for name, info in m["files"].items():
        assert _sha(bm25_dir / name) == info["sha256"]
    d = json.loads((dense_dir / "manifest.json").read_text())
    assert d["kind"] == "dense" and d["counts"] == {
        "passages": len(CORPUS),
        "dim": tiny_encoder.dim,
    }
    assert d["encoder"]["name"] == tiny_encoder.name and d["encoder"]["dim"] == tiny_encoder.dim
    assert set(d["files"]) == {"passages.sqlite", "embeddings.npy"}
    assert np.load(dense_dir / "embeddings.npy", allow_pickle=False).dtype == np.float32


def test_save_overwrites_an_existing_index(tmp_path):
    path = tmp_path / "idx"
    BM25Retriever(backend="numpy").index(["old text one", "old text two"]).save(path)
    BM25Retriever(backend="numpy").index(CORPUS).save(path)
    assert len(BM25Retriever.load(path)) == len(CORPUS)


# -- corrupt or mismatched indexes ------------------------------------------------------------
def test_truncated_npy_is_rejected(dense_dir):
    f = dense_dir / "embeddings.npy"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(IndexFormatError, match="embeddings.npy"):
        DenseRetriever.load(dense_dir)
    _refresh_checksum(dense_dir, "embeddings.npy")  # even with a matching checksum
    with pytest.raises(IndexFormatError, match="not a readable .npy"):
        DenseRetriever.load(dense_dir)


def test_truncated_bm25s_array_is_rejected(bm25_dir):
    f = bm25_dir / "bm25s" / "data.csc.index.npy"
    f.write_bytes(f.read_bytes()[:-8])
    with pytest.raises(IndexFormatError, match="data.csc.index.npy"):
        BM25Retriever.load(bm25_dir)
    _refresh_checksum(bm25_dir, "bm25s/data.csc.index.npy")
    with pytest.raises(IndexFormatError, match="bm25s"):
        BM25Retriever.load(bm25_dir)


def test_pickled_npy_is_never_loaded(dense_dir):
    f = dense_dir / "embeddings.npy"
    np.save(f, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    _refresh_checksum(dense_dir, "embeddings.npy")
    with pytest.raises(IndexFormatError, match="embeddings.npy"):
        DenseRetriever.load(dense_dir)


def test_edited_manifest_is_rejected(bm25_dir):
    (bm25_dir / "manifest.json").write_text('{"format": "meteora-index", "format_vers')
    with pytest.raises(IndexFormatError, match="not valid JSON"):
        BM25Retriever.load(bm25_dir)


def test_wrong_format_and_version_are_rejected(bm25_dir):
    _rewrite_manifest(bm25_dir, format_version=99)
    with pytest.raises(IndexFormatError, match="format_version 99"):
        load_retriever(bm25_dir)
    _rewrite_manifest(bm25_dir, format_version=1, format="something-else")
    with pytest.raises(IndexFormatError, match="meteora-index"):
        BM25Retriever.load(bm25_dir)


def test_wrong_kind_is_rejected(bm25_dir, dense_dir):
    with pytest.raises(IndexFormatError, match="holds a 'bm25' index, not a 'dense'"):
        DenseRetriever.load(bm25_dir)
    with pytest.raises(IndexFormatError, match="holds a 'dense' index"):
        BM25Retriever.load(dense_dir)
    _rewrite_manifest(bm25_dir, kind="colbert")
    with pytest.raises(IndexFormatError, match="unknown index kind"):
        load_retriever(bm25_dir)


def test_missing_file_is_rejected(bm25_dir, tmp_path):
    (bm25_dir / "passages.sqlite").unlink()
    with pytest.raises(IndexFormatError, match="passages.sqlite is missing"):
        BM25Retriever.load(bm25_dir)
    with pytest.raises(IndexFormatError, match="not a folder"):
        load_retriever(tmp_path / "does-not-exist")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IndexFormatError, match="not a meteora index"):
        load_retriever(tmp_path / "empty")


def test_checksum_mismatch_is_rejected(bm25_dir):
    f = bm25_dir / "passages.sqlite"
    data = bytearray(f.read_bytes())
    i = data.index(b"Aspirin")
    data[i : i + 7] = b"Asperin"  # same length, different content
    f.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match="SHA-256"):
        BM25Retriever.load(bm25_dir)


def _as_old_layout(version: Path) -> None:
    """Turn a saved version into the layout of meteora before the passage store
    (``passages.jsonl`` instead of ``passages.sqlite``)."""
    from meteora.retrievers.index_files import write_passages
    from meteora.retrievers.passage_store import SqlitePassages

    store = version / "passages.sqlite"
    write_passages(version / "passages.jsonl", list(SqlitePassages(store)))
    store.unlink()
    path = version / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["files"]["passages.sqlite"]
    path.write_text(json.dumps(manifest))
    _refresh_checksum(version, "passages.jsonl")


def test_corrupt_passages_file_with_forged_checksum(bm25_dir):
    f = bm25_dir / "passages.sqlite"
    f.write_bytes(b"SQLite format 3\x00" + b"\x01" * 4000)
    _refresh_checksum(bm25_dir, "passages.sqlite")
    with pytest.raises(IndexFormatError, match=r"passages\.sqlite is not a readable passage store"):
        BM25Retriever.load(bm25_dir)


def test_foreign_sqlite_file_as_passage_store_is_refused(bm25_dir, tmp_path):
    import sqlite3

    f = bm25_dir / "passages.sqlite"
    f.unlink()
    conn = sqlite3.connect(f)
    conn.execute("CREATE TABLE passages (row INTEGER PRIMARY KEY, id TEXT)")
    conn.commit()
    conn.close()
    _refresh_checksum(bm25_dir, "passages.sqlite")
    with pytest.raises(IndexFormatError, match="not a meteora passage store"):
        BM25Retriever.load(bm25_dir)


@pytest.mark.parametrize("kind", ["bm25", "dense"])
def test_index_saved_with_passages_jsonl_still_loads(tmp_path, tiny_encoder, kind):
    r = (BM25Retriever(backend="numpy") if kind == "bm25" else DenseRetriever(tiny_encoder, backend="numpy")).index(CORPUS)
    version = resolve_index(r.save(tmp_path / "old"))
    _as_old_layout(version)
    loaded = load_retriever(version, **({"encoder": tiny_encoder} if kind == "dense" else {}))
    _same_results(r, loaded)
    assert [p.id for p in loaded.neighbours([CORPUS[0]], window=1)] == ["p0", "p1"]
    loaded.save(tmp_path / "old")  # saving again writes the store
    assert (resolve_index(tmp_path / "old") / "passages.sqlite").is_file()


def test_corrupt_old_passages_file_with_forged_checksum(bm25_dir):
    _as_old_layout(bm25_dir)
    f = bm25_dir / "passages.jsonl"
    f.write_text('{"id": "p0", "text": "ok"}\n{not json}\n', encoding="utf-8")
    _refresh_checksum(bm25_dir, "passages.jsonl")
    with pytest.raises(IndexFormatError, match=r"passages\.jsonl:2: not a valid passage"):
        BM25Retriever.load(bm25_dir)


def test_corrupt_faiss_file_is_rejected(tmp_path, tiny_encoder):
    pytest.importorskip("faiss")
    path = resolve_index(
        DenseRetriever(tiny_encoder, index_type="hnsw").index(CORPUS).save(tmp_path / "h")
    )
    f = path / "index.faiss"
    f.write_bytes(b"\x00" * 64)
    _refresh_checksum(path, "index.faiss")
    with pytest.raises(IndexFormatError, match="index.faiss"):
        DenseRetriever.load(path, encoder=tiny_encoder)


def test_encoder_with_another_dimension_is_rejected(dense_dir, tmp_path, tiny_encoder):
    from tiny_models import make_sentence_transformer

    from meteora.embeddings.encoder import Encoder

    other_dir = make_sentence_transformer(tmp_path / "st16", dim=16)
    other = Encoder(str(other_dir), device="cpu")
    with pytest.raises(IndexFormatError, match="32-d embeddings but encoder .* 16-d"):
        DenseRetriever.load(dense_dir, encoder=other)
    # a manifest naming another model is caught when that model is first loaded
    path = dense_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["encoder"]["name"] = str(other_dir)
    path.write_text(json.dumps(manifest))
    lazy = DenseRetriever.load(dense_dir)
    with pytest.raises(IndexFormatError, match="16-d"):
        lazy.search("fever")


def test_inconsistent_hybrid_members_are_rejected(tmp_path, tiny_encoder):
    h = HybridRetriever(
        [BM25Retriever(backend="numpy"), DenseRetriever(tiny_encoder, backend="numpy")]
    ).index(CORPUS)
    path = resolve_index(h.save(tmp_path / "h"))
    other = resolve_index(BM25Retriever(backend="numpy").index(CORPUS[:3]).save(tmp_path / "o"))
    shutil.rmtree(path / "bm25")
    shutil.copytree(other, path / "bm25")  # swap in a member with another corpus
    with pytest.raises(IndexFormatError, match="SHA-256"):  # the hybrid manifest notices
        HybridRetriever.load(path, encoder=tiny_encoder)
    _refresh_checksum(path, "bm25/manifest.json")
    with pytest.raises(IndexFormatError, match="different passages"):
        HybridRetriever.load(path, encoder=tiny_encoder)


# -- atomic saves ----------------------------------------------------------------------------
def test_failed_save_leaves_no_partial_directory(tmp_path):
    bad = CORPUS[:2] + [Passage("x y z", id="bad", metadata={"obj": object()})]
    r = BM25Retriever(backend="numpy").index(bad)
    with pytest.raises(InvalidInputError, match="not JSON-serialisable"):
        r.save(tmp_path / "idx")
    assert list(tmp_path.iterdir()) == []


def test_failed_save_keeps_the_previous_index(tmp_path, tiny_encoder):
    path = DenseRetriever(tiny_encoder, backend="numpy").index(CORPUS).save(tmp_path / "idx")
    bad = DenseRetriever(tiny_encoder, backend="numpy").index(
        [Passage("x y z", id="bad", metadata={"f": float("nan")})]
    )
    with pytest.raises(InvalidInputError):
        bad.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]
    assert len(DenseRetriever.load(path, encoder=tiny_encoder)) == len(CORPUS)


def test_failed_hybrid_save_leaves_nothing(tmp_path, tiny_encoder):
    bad = CORPUS[:2] + [Passage("x y z", id="bad", metadata={"s": {1, 2}})]
    h = HybridRetriever(
        [BM25Retriever(backend="numpy"), DenseRetriever(tiny_encoder, backend="numpy")]
    ).index(bad)
    with pytest.raises(InvalidInputError):
        h.save(tmp_path / "h")
    assert list(tmp_path.iterdir()) == []


def test_saving_an_empty_retriever_is_an_error(tmp_path):
    with pytest.raises(InvalidInputError, match="no index yet"):
        BM25Retriever(backend="numpy").save(tmp_path / "x")
    assert not (tmp_path / "x").exists()

"""Passage stores: the in-memory list and the on-disk SQLite store answer alike; the
writer refuses bad input; a loaded index reads its store on demand."""

from __future__ import annotations

import pickle
import random
import threading

import numpy as np
import pytest

from meteora.errors import InvalidInputError
from meteora.retrievers import BM25Retriever, DenseRetriever, load_retriever
from meteora.retrievers.passage_store import (
    PASSAGE_STORE_NAME,
    MemoryPassages,
    PassageStoreWriter,
    SqlitePassages,
    same_ids,
    write_passage_store,
)
from meteora.retrievers.storage import resolve_index
from meteora.types import Passage


def _corpus(n_docs: int = 40, seed: int = 0) -> list[Passage]:
    rng = random.Random(seed)
    out = []
    for d in range(n_docs):
        positions = list(range(rng.randint(1, 7)))
        if d % 7 == 0:
            positions.append(positions[-1])  # a repeated position: order then follows rows
        rng.shuffle(positions)
        for j, pos in enumerate(positions):
            meta = {"n": j, "tags": ["a", "é"]} if j % 2 else {}
            out.append(Passage(f"doc {d} chunk {j} — text", id=f"d{d}-{j}", doc_id=f"d{d}", position=pos, metadata=meta))
    rng.shuffle(out)
    return out


@pytest.fixture()
def stores(tmp_path):
    corpus = _corpus()
    path = tmp_path / PASSAGE_STORE_NAME
    write_passage_store(path, corpus, batch=17)
    return corpus, MemoryPassages(corpus), SqlitePassages(path, expected=len(corpus))


def test_memory_and_sqlite_stores_answer_alike(stores):
    corpus, mem, disk = stores
    assert len(mem) == len(disk) == len(corpus)
    assert [p.to_dict() for p in disk] == [p.to_dict() for p in corpus]
    rows = [5, 0, len(corpus) - 1, 5]
    assert [p.to_dict() for p in disk.take(rows)] == [corpus[r].to_dict() for r in rows]
    ids = [corpus[3].id, "missing", corpus[0].id]
    assert disk.rows_of(ids) == mem.rows_of(ids) == [3, None, 0]
    rng = random.Random(1)
    for window in (0, 1, 2, 10):
        for _ in range(20):
            sample = rng.sample(corpus, 3)
            got = [p.id for p in disk.neighbours(sample, window)]
            assert got == [p.id for p in mem.neighbours(sample, window)]
            # neighbours: same documents, within the window, documents in first-appearance order
            for p in sample:
                want = {q.id for q in corpus if q.doc_id == p.doc_id and abs(q.position - p.position) <= window}
                assert want <= set(got)
            docs = list(dict.fromkeys(p.doc_id for p in sample))
            by_id = {p.id: p for p in corpus}
            seen_docs = list(dict.fromkeys(by_id[i].doc_id for i in got))
            assert seen_docs == docs
    assert same_ids(mem, disk) and not same_ids(mem, MemoryPassages(corpus[::-1]))
    with pytest.raises(IndexError):
        disk.take([len(corpus)])


def test_sqlite_store_is_picklable_and_thread_safe(stores):
    corpus, _, disk = stores
    again = pickle.loads(pickle.dumps(disk))
    assert [p.id for p in again.take([1, 2])] == [corpus[1].id, corpus[2].id]
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(200):
                r = rng.randrange(len(corpus))
                assert disk.take([r])[0].id == corpus[r].id
                assert disk.rows_of([corpus[r].id]) == [r]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_writer_refuses_duplicate_ids_and_non_json_metadata(tmp_path):
    a, b = Passage("x", id="a"), Passage("y", id="b")
    w = PassageStoreWriter(tmp_path / "1.sqlite")
    w.add([a, b])
    with pytest.raises(InvalidInputError, match=r"c\.jsonl:7: duplicate passage id 'a' \(first at passage #0\)"):
        w.add([Passage("z", id="c"), Passage("a again", id="a")], where=["c.jsonl:6", "c.jsonl:7"])
    with pytest.raises(InvalidInputError, match=r"duplicate passage id 'n' \(first at passage #3\)"):
        w.add([Passage("1", id="m"), Passage("2", id="n"), Passage("3", id="n")])
    w.add([Passage("later", id="c")])  # the failed batches left nothing behind
    w.close()
    assert [p.id for p in SqlitePassages(tmp_path / "1.sqlite")] == ["a", "b", "c"]
    w = PassageStoreWriter(tmp_path / "2.sqlite")
    with pytest.raises(InvalidInputError, match="passage 'm' cannot be saved: its metadata is not JSON"):
        w.add([Passage("x", id="m", metadata={"f": object()})])
    w.abort()
    with pytest.raises(InvalidInputError, match="exists"):
        PassageStoreWriter(tmp_path / "1.sqlite")


def test_loaded_index_reads_on_demand_and_survives_later_saves(tmp_path, tiny_encoder):
    corpus = _corpus(30)
    path = tmp_path / "idx"
    bm25 = BM25Retriever(backend="numpy").index(corpus)
    bm25.save(path)
    loaded = load_retriever(path)
    assert isinstance(loaded.passage_store, SqlitePassages)
    assert isinstance(loaded._bm25.scores["data"], np.memmap)  # bm25s arrays are memory-mapped
    version = resolve_index(path)
    before = [r.ids for r in loaded.search(["doc 3 chunk", "chunk 1"], k=5)]
    for _ in range(2):  # two later saves remove the version the loaded index opened
        BM25Retriever(backend="numpy").index(corpus[:5]).save(path)
    assert not version.exists()
    assert [r.ids for r in loaded.search(["doc 3 chunk", "chunk 1"], k=5)] == before
    assert loaded.get_passage(corpus[7].id).to_dict() == corpus[7].to_dict()

    dense_path = DenseRetriever(tiny_encoder, backend="numpy").index(corpus).save(tmp_path / "dense")
    dense = load_retriever(dense_path, encoder=tiny_encoder)
    assert isinstance(dense.embeddings, np.memmap) and not dense.embeddings.flags.writeable
    ids = [corpus[9].id, corpus[2].id]
    mem = DenseRetriever(tiny_encoder, backend="numpy").index(corpus)
    assert np.array_equal(dense.embeddings_for(ids), mem.embeddings_for(ids))
    for _ in range(2):  # rows are read through a descriptor that outlives the removed version
        DenseRetriever(tiny_encoder, backend="numpy").index(corpus[:3]).save(dense_path)
    assert np.array_equal(dense.embeddings_for(ids), mem.embeddings_for(ids))
    dense.add([Passage("a brand new chunk", id="new-1", doc_id="d0", position=99)])  # read into memory, then extended
    assert len(dense) == len(corpus) + 1 and dense.search("a brand new chunk", k=1).ids == ["new-1"]


def test_document_sizes_are_counted_in_the_store_in_memory_and_on_disk(tmp_path):
    """The poison defence asks how many chunks a candidate's document has: the in-memory
    and the SQLite store count the same, a re-index counts the new corpus, nothing is cached
    beside the store."""
    corpus = [Passage(f"chunk {i} of {d}", id=f"{d}-{i}", doc_id=d, position=i)
              for d, n in (("a", 3), ("b", 1), ("c", 600)) for i in range(n)]
    r = BM25Retriever(backend="numpy").index(corpus)
    want = {"a": 3, "b": 1, "c": 600, "zz": 0}
    assert r.document_sizes(list(want)) == want
    r.save(tmp_path / "idx")
    assert load_retriever(tmp_path / "idx").document_sizes(list(want)) == want
    r.index([Passage("x", id="a-0", doc_id="a", position=0)])
    assert r.document_sizes(["a", "c"]) == {"a": 1, "c": 0}

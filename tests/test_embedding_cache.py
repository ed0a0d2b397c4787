"""Passage-embedding cache of :class:`meteora.embeddings.Encoder` (tiny random BERT, no network)."""

from __future__ import annotations

import logging
import shutil
import sqlite3
import threading

import numpy as np
import pytest

from meteora.embeddings.cache import (
    DEFAULT_CACHE_ENTRIES,
    EmbeddingCacheError,
    PassageEmbeddingCache,
    text_key,
)
from meteora.embeddings.encoder import Encoder
from meteora.errors import InvalidInputError, MeteoraError

TEXTS = [
    "Aspirin reduces the risk of myocardial infarction.",
    "Randomized controlled trials reporting mortality.",
    "Blood pressure, glucose and cholesterol in patients.",
    "The odds ratio was 0.72 (95% CI 0.60-0.85).",
    "A retrospective cohort of children with asthma.",
    "Treatment improved survival; dosage and safety.",
]


def _counting(enc: Encoder) -> list[list[str]]:
    """Record every list of texts the underlying model is asked to encode."""
    calls: list[list[str]] = []
    inner = enc.model.encode

    def encode(texts, *args, **kwargs):
        calls.append(list(texts))
        return inner(texts, *args, **kwargs)

    enc.model.encode = encode
    return calls


@pytest.fixture(scope="module")
def other_st_dir(tmp_path_factory):
    """A second tiny BERT with the same architecture and other random weights."""
    from tiny_models import make_sentence_transformer

    return make_sentence_transformer(tmp_path_factory.mktemp("tiny-st-seed1"), seed=1)


def test_default_is_an_in_memory_cache_and_options(tiny_st_dir):
    enc = Encoder(str(tiny_st_dir), device="cpu")
    assert isinstance(enc.cache, PassageEmbeddingCache) and enc.cache.path is None
    assert enc.cache.max_entries == DEFAULT_CACHE_ENTRIES
    assert Encoder(enc.model, cache=False).cache is None
    assert Encoder(enc.model, cache=None).cache is None
    assert Encoder(enc.model, cache=0).cache is None
    assert Encoder(enc.model, cache=7).cache.max_entries == 7
    shared = PassageEmbeddingCache(100)
    assert Encoder(enc.model, cache=shared).cache is shared
    with pytest.raises(InvalidInputError, match="non-negative"):
        Encoder(enc.model, cache=-1)
    with pytest.raises(InvalidInputError, match="PassageEmbeddingCache"):
        Encoder(enc.model, cache=1.5)
    with pytest.raises(InvalidInputError, match="max_entries"):
        PassageEmbeddingCache(max_entries=-3)


def test_cached_equals_uncached_exactly(tiny_st_dir):
    plain = Encoder(str(tiny_st_dir), device="cpu", cache=False)
    enc = Encoder(plain.model, cache=True)
    reference = plain.encode(TEXTS)
    calls = _counting(enc)  # the model is shared with `plain`: count from here on
    first = enc.encode(TEXTS)
    second = enc.encode(TEXTS)
    assert first.dtype == second.dtype == np.float32
    assert np.array_equal(first, reference)  # a miss is encoded as without a cache
    assert np.array_equal(second, reference)  # a hit returns the stored bits
    assert len(calls) == 1  # the second call never reached the model
    assert enc.cache.stats()["hits"] == len(TEXTS) and enc.cache.stats()["misses"] == len(TEXTS)
    second[0, 0] = 123.0  # the caller's array is a copy: the cache is not touched
    assert np.array_equal(enc.encode(TEXTS[:1]), reference[:1])


def test_mixed_batch_encodes_only_misses_once_in_order(tiny_st_dir):
    plain = Encoder(str(tiny_st_dir), device="cpu", cache=False)
    enc = Encoder(plain.model, cache=True)
    calls = _counting(enc)
    seen = enc.encode(TEXTS[:3])
    new = ["Dogs and cats with renal failure.", "Conclusions: evidence on safety."]
    batch = [new[0], TEXTS[1], new[1], TEXTS[0], new[0], TEXTS[2]]
    out = enc.encode(batch)
    assert calls == [TEXTS[:3], new]  # one call, only the new texts, each once, in order
    assert out.shape == (6, enc.dim)
    calls.clear()
    assert np.array_equal(out[1], seen[1]) and np.array_equal(out[3], seen[0]) and np.array_equal(out[5], seen[2])
    assert np.array_equal(out[0], out[4])
    assert np.allclose(out, plain.encode(batch), atol=1e-5)
    assert enc.encode([]).shape == (0, enc.dim)
    with pytest.raises(InvalidInputError):
        enc.encode("a single string")


def test_lru_bound_by_entries_and_bytes(tiny_st_dir):
    enc = Encoder(str(tiny_st_dir), device="cpu", cache=PassageEmbeddingCache(max_entries=3))
    calls = _counting(enc)
    enc.encode(TEXTS[:3])
    enc.encode(TEXTS[:1])  # touch 0: now 1 is the least recently used
    enc.encode(TEXTS[3:4])  # evicts 1
    stats = enc.cache.stats()
    assert len(enc.cache) == 3 and stats["evictions"] == 1
    calls.clear()
    enc.encode([TEXTS[0], TEXTS[2], TEXTS[3]])
    assert calls == []
    enc.encode([TEXTS[1]])
    assert calls == [[TEXTS[1]]]

    dim = enc.dim
    by_bytes = PassageEmbeddingCache(max_entries=None, max_bytes=2 * dim * 4)
    enc2 = Encoder(enc.model, cache=by_bytes)
    enc2.encode(TEXTS)
    assert len(by_bytes) == 2 and by_bytes.stats()["bytes"] == 2 * dim * 4
    assert by_bytes.stats()["evictions"] == len(TEXTS) - 2


def test_identity_follows_weights_normalize_and_length(tiny_st_dir, other_st_dir, tmp_path):
    shared = PassageEmbeddingCache(1000)
    a = Encoder(str(tiny_st_dir), device="cpu", cache=shared)
    a_again = Encoder(str(tiny_st_dir), device="cpu", cache=shared)
    moved = tmp_path / tiny_st_dir.name
    shutil.copytree(tiny_st_dir, moved)
    a_moved = Encoder(str(moved), device="cpu", cache=shared)
    b = Encoder(str(other_st_dir), device="cpu", cache=shared)
    assert a.identity == a_again.identity == a_moved.identity  # same model, wherever it lies
    assert a.identity != b.identity  # other weights

    out_a = a.encode(TEXTS)
    calls = _counting(a_again)
    assert np.array_equal(a_again.encode(TEXTS), out_a) and calls == []  # shared across instances
    out_b = b.encode(TEXTS)
    assert not np.allclose(out_a, out_b)  # b did not read a's vectors
    assert np.array_equal(out_b, Encoder(b.model, cache=False).encode(TEXTS))

    raw = Encoder(a.model, cache=shared, normalize=False)
    assert raw.identity != a.identity
    assert np.array_equal(raw.encode(TEXTS), Encoder(a.model, cache=False, normalize=False).encode(TEXTS))
    ident = a.identity
    a.normalize = False  # attributes are read at every call
    assert a.identity == raw.identity
    a.normalize = True
    a.model.max_seq_length = 16
    assert a.identity != ident
    a.model.max_seq_length = 128
    assert a.identity == ident

    # weights changed in place: a new identity once the fingerprint is recomputed
    import torch

    with torch.no_grad():
        next(a_again.model.parameters()).view(-1)[5] += 0.25
    before = a_again.identity
    a_again.reset_identity()
    assert a_again.identity != before


def test_stand_in_models_are_not_cached():
    class StandIn:
        name_or_path = "stand-in"

        def __init__(self):
            self.calls = 0

        def get_embedding_dimension(self):
            return 2

        def encode(self, texts, **kwargs):
            self.calls += 1
            return np.full((len(texts), 2), float(self.calls), dtype=np.float32)

    enc = Encoder(StandIn())
    assert enc.identity is None
    assert enc.encode(["x"])[0, 0] == 1.0
    assert enc.encode(["x"])[0, 0] == 2.0  # nothing identifies what it computes: no cache


def test_disk_round_trip_and_bound(tiny_st_dir, tmp_path):
    folder = tmp_path / "emb-cache"
    enc = Encoder(str(tiny_st_dir), device="cpu", cache=PassageEmbeddingCache(100, path=folder))
    first = enc.encode(TEXTS)
    db = folder / "passage_embeddings.sqlite"
    assert db.is_file() and db.read_bytes()[:16] == b"SQLite format 3\x00"
    assert enc.cache.stats()["disk_entries"] == len(TEXTS)
    enc.cache.close()

    # a new process would see the same: a fresh encoder and cache on the same file
    again = Encoder(str(tiny_st_dir), device="cpu", cache=PassageEmbeddingCache(100, path=folder))
    calls = _counting(again)
    assert np.array_equal(again.encode(TEXTS), first)
    assert calls == []
    stats = again.cache.stats()
    assert stats["disk_hits"] == len(TEXTS) and stats["memory_hits"] == 0
    assert np.array_equal(again.encode(TEXTS), first)
    assert again.cache.stats()["memory_hits"] == len(TEXTS)  # promoted to memory
    again.cache.close()

    # blobs are raw little-endian float32, one row per (encoder, text)
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT key, dim, vec FROM embeddings").fetchall()
    by_key = {bytes(k): np.frombuffer(v, dtype="<f4") for k, _, v in rows}
    assert np.array_equal(by_key[text_key(TEXTS[2])], first[2])

    # an explicit .sqlite file name, a disk bound, disk-only (no memory entries)
    small = PassageEmbeddingCache(0, path=tmp_path / "small.sqlite", max_disk_entries=2)
    enc3 = Encoder(enc.model, cache=small)
    for start in (0, 2, 4):
        enc3.encode(TEXTS[start : start + 2])
    assert len(small) == 0 and small.stats()["disk_entries"] == 2
    assert small.stats()["disk_evictions"] == 4
    calls = _counting(enc3)
    enc3.encode(TEXTS[4:])  # the most recently written are the ones kept
    assert calls == []
    enc3.encode(TEXTS[:1])
    assert calls == [TEXTS[:1]]
    small.clear()
    assert small.stats()["disk_entries"] == 0
    small.close()


def test_corrupt_file_is_moved_aside_and_rebuilt(tiny_st_dir, tmp_path, caplog):
    path = tmp_path / "c.sqlite"
    enc = Encoder(str(tiny_st_dir), device="cpu", cache=PassageEmbeddingCache(10, path=path))
    ref = enc.encode(TEXTS)
    enc.cache.close()
    for side in ("-wal", "-shm"):
        (tmp_path / f"c.sqlite{side}").unlink(missing_ok=True)
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    data[100:] = rng.integers(0, 256, len(data) - 100, dtype=np.uint8).tobytes()  # header kept, pages garbage
    path.write_bytes(bytes(data))

    with caplog.at_level(logging.WARNING, logger="meteora.embeddings"):
        cache = PassageEmbeddingCache(10, path=path)
    assert "unreadable" in caplog.text and str(path) in caplog.text
    assert list(tmp_path.glob("c.sqlite.corrupt-*"))
    enc2 = Encoder(enc.model, cache=cache)
    assert np.allclose(enc2.encode(TEXTS), ref, atol=1e-6)
    assert cache.stats()["misses"] == len(TEXTS) and cache.stats()["disk_entries"] == len(TEXTS)
    cache.close()

    truncated = tmp_path / "t.sqlite"
    truncated.write_bytes(b"SQLite format 3\x00" + b"\x00" * 40)  # a cut-off copy
    with caplog.at_level(logging.WARNING, logger="meteora.embeddings"):
        t = PassageEmbeddingCache(10, path=truncated)
    assert list(tmp_path.glob("t.sqlite.corrupt-*"))
    t.close()


def test_foreign_and_unusable_paths_are_refused(tmp_path):
    text_file = tmp_path / "notes.sqlite"
    text_file.write_text("my own notes, not a cache\n")
    with pytest.raises(EmbeddingCacheError, match="not a meteora passage-embedding cache") as err:
        PassageEmbeddingCache(path=text_file)
    assert str(text_file) in str(err.value) and "another path" in str(err.value)
    assert text_file.read_text() == "my own notes, not a cache\n"  # untouched
    assert isinstance(err.value, MeteoraError)

    other_db = tmp_path / "app.db"
    with sqlite3.connect(other_db) as conn:
        conn.execute("CREATE TABLE users (name TEXT)")
        conn.execute("INSERT INTO users VALUES ('ada')")
    with pytest.raises(EmbeddingCacheError, match="users"):
        PassageEmbeddingCache(path=other_db)
    with sqlite3.connect(other_db) as conn:
        assert conn.execute("SELECT name FROM users").fetchall() == [("ada",)]

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(EmbeddingCacheError, match="cannot create the folder") as err:
        PassageEmbeddingCache(path=blocker / "cache")
    assert str(blocker / "cache") in str(err.value)

    (tmp_path / "dir.sqlite").mkdir()
    (tmp_path / "dir.sqlite" / "passage_embeddings.sqlite").mkdir()
    with pytest.raises(EmbeddingCacheError, match="is a folder"):
        PassageEmbeddingCache(path=tmp_path / "dir.sqlite")


def test_concurrent_threads_share_one_cache(tiny_st_dir, tmp_path):
    plain = Encoder(str(tiny_st_dir), device="cpu", cache=False)
    reference = {t: plain.encode([t])[0] for t in TEXTS}
    cache = PassageEmbeddingCache(4, path=tmp_path / "threads")  # smaller than the text set: evictions race
    enc = Encoder(plain.model, cache=cache)
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            barrier.wait()
            for _ in range(15):
                batch = [TEXTS[i] for i in rng.integers(0, len(TEXTS), size=4)]
                out = enc.encode(batch)
                for text, row in zip(batch, out, strict=True):
                    assert np.allclose(row, reference[text], atol=1e-5)
        except BaseException as exc:  # noqa: BLE001 - reported in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[0]
    stats = cache.stats()
    assert stats["hits"] + stats["misses"] == 6 * 15 * 4
    assert len(cache) <= 4 and stats["disk_entries"] == len(TEXTS)
    cache.close()

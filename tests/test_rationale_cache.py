"""Tests for meteora.rationales.cache and the generator's use of it."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from meteora.errors import InvalidInputError
from meteora.rationales.cache import RationaleCache, cache_key, default_cache_path
from meteora.rationales.generator import RationaleGenerator

FIELDS = {"model": "m", "template": "chat", "n": 3}


def test_put_get_many_len_clear(tmp_path):
    cache = RationaleCache(tmp_path / "c.sqlite")
    assert len(cache) == 0
    assert cache.get(FIELDS, "q1") is None
    cache.put(FIELDS, "q1", {"rationales": ["a"]})
    cache.put_many(FIELDS, [("q2", {"rationales": ["b"]}), ("q3", {"rationales": ["c"]})])
    assert len(cache) == 3
    assert cache.get(FIELDS, "q1") == {"rationales": ["a"]}
    assert cache.get_many(FIELDS, ["q3", "missing", "q1", "q3"]) == [
        {"rationales": ["c"]},
        None,
        {"rationales": ["a"]},
        {"rationales": ["c"]},
    ]
    assert (FIELDS, "q2") in cache
    cache.put(FIELDS, "q1", {"rationales": ["replaced"]})
    assert cache.get(FIELDS, "q1") == {"rationales": ["replaced"]} and len(cache) == 3
    cache.clear()
    assert len(cache) == 0 and cache.get(FIELDS, "q1") is None


def test_keys_depend_on_every_field_and_the_query(tmp_path):
    cache = RationaleCache(tmp_path / "c.sqlite")
    cache.put(FIELDS, "q", {"v": 1})
    assert cache.get({**FIELDS, "n": 4}, "q") is None
    assert cache.get(FIELDS, "q ") is None
    assert cache.get(dict(reversed(list(FIELDS.items()))), "q") == {"v": 1}  # order does not matter
    assert cache_key(FIELDS, "q") != cache_key(FIELDS, "Q")


def test_values_are_json_not_pickle(tmp_path):
    path = tmp_path / "c.sqlite"
    cache = RationaleCache(path)
    cache.put(FIELDS, "q", {"rationales": ["ä", "b"], "flags": [None, "x"]})
    cache.close()
    conn = sqlite3.connect(str(path))
    (value,) = conn.execute("SELECT value FROM rationales").fetchone()
    conn.close()
    assert json.loads(value) == {"rationales": ["ä", "b"], "flags": [None, "x"]}


def test_non_json_fields_are_rejected(tmp_path):
    cache = RationaleCache(tmp_path / "c.sqlite")
    with pytest.raises(InvalidInputError, match="JSON"):
        cache.put({"model": object()}, "q", {})


def test_persistence_and_wal_mode(tmp_path):
    path = tmp_path / "c.sqlite"
    RationaleCache(path).put(FIELDS, "q", [1, 2])
    again = RationaleCache(path)
    assert again.get(FIELDS, "q") == [1, 2]
    conn = sqlite3.connect(str(path))
    assert conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
    conn.close()


def test_default_path_is_under_meteora_home(tmp_path, monkeypatch):
    monkeypatch.setenv("METEORA_HOME", str(tmp_path / "home"))
    assert default_cache_path() == tmp_path / "home" / "rationales.sqlite"
    cache = RationaleCache()
    cache.put(FIELDS, "q", 1)
    assert (tmp_path / "home" / "rationales.sqlite").exists()


def test_folder_path_is_rejected(tmp_path):
    with pytest.raises(InvalidInputError, match="folder"):
        RationaleCache(tmp_path)


def test_corrupt_default_cache_is_moved_aside_and_rebuilt(tmp_path, caplog, monkeypatch):
    # only meteora's own default cache: a non-SQLite file at a chosen path is refused
    # untouched (tests/test_faults.py), as it may be a user's file
    monkeypatch.setenv("METEORA_HOME", str(tmp_path))
    path = tmp_path / "rationales.sqlite"
    path.write_bytes(os.urandom(8192))
    with caplog.at_level(logging.WARNING, logger="meteora.rationales.cache"):
        cache = RationaleCache()
    assert any("unreadable" in r.message for r in caplog.records)
    assert len(cache) == 0
    cache.put(FIELDS, "q", {"ok": True})
    assert cache.get(FIELDS, "q") == {"ok": True}
    moved = [p for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    assert moved, "the corrupt file is kept for inspection"


def test_corrupt_sqlite_header_with_garbage_pages(tmp_path, caplog):
    path = tmp_path / "c.sqlite"
    cache = RationaleCache(path)
    cache.put_many(FIELDS, [(f"q{i}", {"i": i}) for i in range(200)])
    cache.close()
    del cache
    for side in ("-wal", "-shm"):
        Path(str(path) + side).unlink(missing_ok=True)
    data = bytearray(path.read_bytes())
    data[100:] = os.urandom(len(data) - 100)  # keep the header, destroy the pages
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="meteora.rationales.cache"):
        fresh = RationaleCache(path)
        fresh.put(FIELDS, "new", {"ok": 1})
        assert fresh.get(FIELDS, "new") == {"ok": 1}
    assert any("unreadable" in r.message for r in caplog.records)


def test_unreadable_entry_is_a_miss(tmp_path):
    path = tmp_path / "c.sqlite"
    cache = RationaleCache(path)
    cache.put(FIELDS, "q", {"ok": 1})
    conn = sqlite3.connect(str(path))
    conn.execute("UPDATE rationales SET value = 'not json {'")
    conn.commit()
    conn.close()
    assert cache.get(FIELDS, "q") is None


def test_concurrent_threads(tmp_path):
    cache = RationaleCache(tmp_path / "c.sqlite")
    cache.put_many(FIELDS, [(f"q{i}", {"i": i}) for i in range(50)])
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for rep in range(20):
                got = cache.get_many(FIELDS, [f"q{i}" for i in range(50)])
                assert got == [{"i": i} for i in range(50)]
                cache.put(FIELDS, f"t{k}-{rep}", {"k": k})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(cache) == 50 + 4 * 20


_READER = r"""
import json, sys, time
from meteora.rationales.cache import RationaleCache
cache = RationaleCache(sys.argv[1])
fields = json.loads(sys.argv[2])
bad = 0
reads = 0
deadline = time.time() + float(sys.argv[3])
while time.time() < deadline:
    for i, value in enumerate(cache.get_many(fields, [f"q{i}" for i in range(100)])):
        reads += 1
        if value is not None and value != {"i": i}:
            bad += 1
print(json.dumps({"bad": bad, "reads": reads, "final": len(cache)}))
"""


def test_concurrent_reader_processes_while_writing(tmp_path):
    path = tmp_path / "c.sqlite"
    cache = RationaleCache(path)
    cache.put_many(FIELDS, [(f"q{i}", {"i": i}) for i in range(50)])
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    readers = [
        subprocess.Popen(
            [sys.executable, "-c", _READER, str(path), json.dumps(FIELDS), "3"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    time.sleep(1.0)
    for i in range(50, 100):  # write while they read
        cache.put(FIELDS, f"q{i}", {"i": i})
    results = []
    for p in readers:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert all(r["bad"] == 0 and r["reads"] > 0 for r in results)
    assert len(cache) == 100


# ------------------------------------------------------------------------------------
# the generator with a cache
# ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_generator(tiny_llama_dir):
    return RationaleGenerator.from_pretrained(
        str(tiny_llama_dir), template="med-rationale", num_threads=1
    )


class _CountingModel:
    def __init__(self, gen):
        self.gen = gen
        self.rows = 0
        self.calls = 0
        self.real = gen.model.generate

    def __call__(self, **kwargs):
        self.calls += 1
        self.rows += kwargs["input_ids"].shape[0]
        return self.real(**kwargs)


def test_cache_hit_skips_the_model(tiny_generator, tmp_path, monkeypatch):
    gen = tiny_generator
    gen.cache = RationaleCache(tmp_path / "gen.sqlite")
    counter = _CountingModel(gen)
    monkeypatch.setattr(gen.model, "generate", counter)
    queries = ["Aspirin and myocardial infarction?", "Dogs with renal failure?"]
    first = gen.generate(queries, n=2, max_new_tokens=8)
    assert counter.calls == 1 and counter.rows == 2
    assert not any(rs.from_cache for rs in first)
    second = gen.generate(queries, n=2, max_new_tokens=8)
    assert counter.calls == 1, "a cache hit must not run the model"
    assert all(rs.from_cache for rs in second)
    assert [r.rationales for r in second] == [r.rationales for r in first]
    assert [r.raw for r in second] == [r.raw for r in first]

    # partial hit: only the new query is generated
    gen.generate([queries[0], "Cholesterol in children?"], n=2, max_new_tokens=8)
    assert counter.calls == 2 and counter.rows == 3
    # other settings are other keys
    gen.generate(queries, n=3, max_new_tokens=8)
    assert counter.calls == 3
    gen.cache = None


def test_unseeded_sampling_is_not_cached(tiny_generator, tmp_path, monkeypatch):
    gen = tiny_generator
    gen.cache = RationaleCache(tmp_path / "gen.sqlite")
    counter = _CountingModel(gen)
    monkeypatch.setattr(gen.model, "generate", counter)
    gen.generate("Dogs with renal failure?", do_sample=True, max_new_tokens=4)
    gen.generate("Dogs with renal failure?", do_sample=True, max_new_tokens=4)
    assert counter.calls == 2 and len(gen.cache) == 0
    gen.generate("Dogs with renal failure?", do_sample=True, seed=3, max_new_tokens=4)
    gen.generate("Dogs with renal failure?", do_sample=True, seed=3, max_new_tokens=4)
    assert counter.calls == 3 and len(gen.cache) == 1
    gen.cache = None


def test_generator_cache_argument_forms(tiny_llama_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("METEORA_HOME", str(tmp_path / "home"))
    g = RationaleGenerator.from_pretrained(str(tiny_llama_dir), cache=True)
    assert g.cache is not None and g.cache.path == tmp_path / "home" / "rationales.sqlite"
    g2 = RationaleGenerator.from_pretrained(str(tiny_llama_dir), cache=tmp_path / "x.sqlite")
    assert g2.cache is not None and g2.cache.path == tmp_path / "x.sqlite"
    assert RationaleGenerator.from_pretrained(str(tiny_llama_dir)).cache is None
    with pytest.raises(InvalidInputError, match="cache"):
        RationaleGenerator.from_pretrained(str(tiny_llama_dir), cache=3)

"""Fault tests: kill -9 during saves, concurrent readers and writers, corrupted files.

Bounded (about half a minute on a busy 2-core machine), local files only. Processes are
forked so each trial costs milliseconds, not an interpreter start; the children only
write numpy arrays and JSON (no torch work after the fork).
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from meteora.errors import IndexFormatError
from meteora.rationales.cache import RationaleCache
from meteora.retrievers.base import load_retriever
from meteora.retrievers.bm25 import BM25Retriever
from meteora.retrievers.dense import DenseRetriever
from meteora.retrievers.storage import resolve_index
from meteora.types import Passage

pytestmark = pytest.mark.skipif(
    sys.platform == "win32" or not hasattr(os, "fork"), reason="needs fork and SIGKILL"
)

OLD = [Passage(f"old passage {i} about aspirin and fever " * 3, id=f"old{i}") for i in range(300)]
NEW = [Passage(f"new passage {i} about statins and LDL " * 3, id=f"new{i}") for i in range(400)]
OLD_IDS = [p.id for p in OLD]
NEW_IDS = [p.id for p in NEW]


def _fork(work) -> int:
    pid = os.fork()
    if pid == 0:  # child: do the work, never return into pytest
        code = 0
        try:
            work()
        except BaseException:
            code = 1
            import traceback

            os.write(2, traceback.format_exc().encode())  # shown by pytest when the test fails
        finally:
            os._exit(code)
    return pid


def _retrievers(kind: str, tiny_encoder):
    if kind == "bm25":
        return BM25Retriever(backend="numpy").index(OLD), BM25Retriever(backend="numpy").index(NEW)
    return (
        DenseRetriever(tiny_encoder, backend="numpy").index(OLD),
        DenseRetriever(tiny_encoder, backend="numpy").index(NEW),
    )


def _ids_at(path: Path, tiny_encoder) -> list[str]:
    extra = {"encoder": tiny_encoder} if _kind(path) == "dense" else {}
    return [p.id for p in load_retriever(path, **extra).passages]


def _kind(path: Path) -> str:
    import json

    return json.loads((resolve_index(path) / "manifest.json").read_text())["kind"]


@pytest.mark.parametrize("kind", ["bm25", "dense"])
def test_kill_during_save_always_leaves_the_old_or_the_new_index(tmp_path, tiny_encoder, kind):
    old, new = _retrievers(kind, tiny_encoder)
    path = old.save(tmp_path / "idx")
    rng = random.Random(1234)
    outcomes = {"old": 0, "new": 0}
    trials = 12
    for _trial in range(trials):

        def save_forever():
            while True:  # alternate, so a kill can land anywhere in a save
                new.save(path)
                old.save(path)

        pid = _fork(save_forever)
        time.sleep(rng.uniform(0.0, 0.25))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        ids = _ids_at(path, tiny_encoder)  # must load, with checksums verified
        assert ids in (OLD_IDS, NEW_IDS)
        outcomes["old" if ids == OLD_IDS else "new"] += 1
    assert sum(outcomes.values()) == trials
    # the next save cleans up what the killed writers left behind
    old.save(path)
    entries = [p.name for p in path.iterdir()]
    assert not [e for e in entries if e.endswith(".partial")]
    assert len([e for e in entries if e.startswith("v-")]) <= 2
    assert not [p for p in tmp_path.iterdir() if p.name != "idx"]  # nothing beside it


def test_kill_during_a_streaming_build_leaves_the_old_or_the_new_index(tmp_path):
    """build_index writes the passage store, arrays and token files as it goes; a kill at
    any point still leaves the previous index (or the finished new one)."""
    import json

    from meteora.retrievers.streaming import build_index

    src = tmp_path / "new.jsonl"
    src.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in NEW))
    path = BM25Retriever(backend="numpy").index(OLD).save(tmp_path / "idx")
    rng = random.Random(99)
    for _trial in range(8):

        def build_forever():
            while True:
                build_index(src, path, BM25Retriever(backend="numpy"), chunk_size=50)
                BM25Retriever(backend="numpy").index(OLD).save(path)

        pid = _fork(build_forever)
        time.sleep(rng.uniform(0.0, 0.4))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        ids = [p.id for p in load_retriever(path).passages]
        assert ids in (OLD_IDS, NEW_IDS)
    build_index(src, path, BM25Retriever(backend="numpy"))
    assert not [e for e in os.listdir(path) if e.endswith(".partial")]


def test_concurrent_readers_and_writers_on_one_index(tmp_path, tiny_encoder):
    old, new = _retrievers("bm25", tiny_encoder)
    path = old.save(tmp_path / "idx")
    deadline = time.monotonic() + 4.0

    def writer(first, second):
        def run():
            while time.monotonic() < deadline:
                first.save(path)
                second.save(path)

        return run

    def reader(out: Path):
        def run():
            loads = 0
            while time.monotonic() < deadline:
                ids = [p.id for p in BM25Retriever.load(path).passages]
                if ids not in (OLD_IDS, NEW_IDS):
                    raise AssertionError("a reader saw a mixed index")
                loads += 1
            out.write_text(str(loads))

        return run

    counts = [tmp_path / f"reads{i}" for i in range(3)]
    pids = [_fork(writer(old, new)), _fork(writer(new, old))]
    readers = [_fork(reader(c)) for c in counts]
    codes = [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in pids + readers]
    assert codes == [0] * 5, "a writer or a reader failed"
    assert all(int(c.read_text()) > 0 for c in counts)
    assert [p.id for p in BM25Retriever.load(path).passages] in (OLD_IDS, NEW_IDS)


def test_concurrent_processes_share_the_rationale_cache(tmp_path):
    db = tmp_path / "r.sqlite"
    RationaleCache(db).put({"m": "x"}, "warm-up", {"rationales": ["r"]})

    def worker(w: int):
        def run():
            cache = RationaleCache(db)
            for i in range(40):
                cache.put({"m": "x"}, f"q{w}-{i}", {"rationales": [f"r{w}-{i}"]})
                got = cache.get({"m": "x"}, f"q{w}-{max(0, i - 1)}")
                if got is None:
                    raise AssertionError("a committed entry was not readable")

        return run

    pids = [_fork(worker(w)) for w in range(4)]
    codes = [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in pids]
    assert codes == [0] * 4
    cache = RationaleCache(db)
    assert len(cache) == 1 + 4 * 40
    assert cache.get({"m": "x"}, "q3-39") == {"rationales": ["r3-39"]}


def test_kill_during_cache_writes_keeps_a_readable_cache(tmp_path):
    db = tmp_path / "r.sqlite"
    rng = random.Random(7)
    for _trial in range(5):

        def write_forever():
            cache = RationaleCache(db)
            i = 0
            while True:
                cache.put_many({"m": "x"}, [(f"q{i}-{j}", {"v": j}) for j in range(20)])
                i += 1

        pid = _fork(write_forever)
        time.sleep(rng.uniform(0.05, 0.3))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        cache = RationaleCache(db)
        n = len(cache)
        assert n % 20 == 0  # whole transactions only
        assert not list(tmp_path.glob("*.corrupt-*"))  # a kill is not corruption


def _damage(db: Path, damage: str) -> None:
    data = bytearray(db.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 3]
    elif damage == "random-bytes":
        data = bytearray(np.random.default_rng(0).integers(0, 256, len(data), dtype=np.uint8))
    elif damage == "zero-page":
        data[:4096] = bytes(4096)
    else:  # damaged pages after an intact header
        data[4096:8192] = b"\xff" * 4096
    for side in db.parent.glob(db.name + "-*"):
        side.unlink()
    db.write_bytes(bytes(data))


def _filled_cache(db: Path) -> None:
    cache = RationaleCache(db)
    cache.put_many({"m": "x"}, [(f"q{i}", {"v": i}) for i in range(200)])
    cache.close()


@pytest.mark.parametrize("damage", ["truncate", "bad-pages", "random-bytes", "zero-page"])
def test_damaged_default_cache_is_set_aside_and_rebuilt(tmp_path, monkeypatch, damage):
    monkeypatch.setenv("METEORA_HOME", str(tmp_path))
    from meteora.rationales.cache import default_cache_path

    db = default_cache_path()
    _filled_cache(db)
    _damage(db, damage)
    fresh = RationaleCache()  # never a crash: the damaged file is moved aside, not deleted
    fresh.put({"m": "x"}, "q", {"v": 1})
    assert fresh.get({"m": "x"}, "q") == {"v": 1}
    if damage in ("random-bytes", "zero-page"):
        assert list(tmp_path.glob("rationales.sqlite.corrupt-*"))


@pytest.mark.parametrize("damage", ["random-bytes", "zero-page"])
def test_file_that_is_not_sqlite_at_a_chosen_path_is_refused_untouched(tmp_path, damage):
    from meteora.errors import UnsafeOverwriteError

    db = tmp_path / "r.sqlite"
    _filled_cache(db)
    _damage(db, damage)
    before = db.read_bytes()
    with pytest.raises(UnsafeOverwriteError, match="not an SQLite database"):
        RationaleCache(db)
    assert db.read_bytes() == before and not list(tmp_path.glob("*.corrupt-*"))


def test_foreign_sqlite_database_is_refused_and_untouched(tmp_path):
    from meteora.errors import UnsafeOverwriteError

    db = tmp_path / "app.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE patients (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO patients (name) VALUES ('x')")
    conn.commit()
    conn.close()
    before = db.read_bytes()
    with pytest.raises(UnsafeOverwriteError, match="another program"):
        RationaleCache(db)
    assert db.read_bytes() == before
    tables = sqlite3.connect(db).execute("SELECT name FROM sqlite_master").fetchall()
    assert tables == [("patients",)]


@pytest.mark.parametrize("target", ["passages.sqlite", "manifest.json", "bm25s"])
def test_corrupted_index_files_give_an_index_error(tmp_path, target):
    path = BM25Retriever(backend="numpy").index(OLD).save(tmp_path / "idx")
    version = resolve_index(path)
    victim = version / target
    if victim.is_dir():
        files = sorted(p for p in victim.rglob("*") if p.is_file())
        if not files:
            pytest.skip("no bm25s arrays with this engine")
        victim = files[0]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 8] = b"\xff" * 8
    victim.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError):
        load_retriever(path)

"""Which on-disk passage store: SQLite vs Parquet vs LanceDB, measured on the lookups a
retriever makes.

A search hit needs its passage by row, ``get_passage``/``embeddings_for`` need rows by id,
and document expansion needs the chunks of a document within a window of positions. Per
store, on the same corpus (the scale benchmark's chunks, ``benchmarks/scale_data.py``):
write seconds, bytes on disk, open seconds, p50/p95 ms of 100 random rows, of 100 random
ids and of the ±1 neighbours of 50 random chunks, and the memory the open store adds.

* **SQLite**: meteora's own :class:`~meteora.retrievers.passage_store.PassageStoreWriter` /
  :class:`~meteora.retrievers.passage_store.SqlitePassages` (row primary key, unique id
  index, ``(doc_id, position)`` index).
* **Parquet** (pyarrow, zstd, row groups of 1,024 rows): a row is found by arithmetic on
  its row group; ids and ``(doc_id, position)`` through sorted key arrays saved beside
  it (``.npy``, memory-mapped).
* **LanceDB** (when importable): ``take_offsets`` by row, scalar indexes on ``id`` and
  ``doc_id`` for filtered reads.

Each store is written in one process and opened and queried in a fresh one (the memory
it adds is its own). Run::

    python benchmarks/passage_stores.py --n 100000

LanceDB is not a meteora dependency; install ``lancedb`` in the environment to include it.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "passage_stores.json"
STORES = ("sqlite", "parquet", "lancedb")


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _timed(fn, args_fn, reps: int = 200) -> dict[str, float]:
    ts = []
    for _ in range(reps):
        a = args_fn()
        t = time.perf_counter()
        fn(a)
        ts.append((time.perf_counter() - t) * 1000)
    return {"p50_ms": float(np.median(ts)), "p95_ms": float(np.percentile(ts, 95))}


def _sqlite_build(rows: list[dict], folder: Path) -> tuple[float, int]:
    from meteora.retrievers.passage_store import PassageStoreWriter
    from meteora.types import Passage

    path = folder / "passages.sqlite"
    t = time.perf_counter()
    with PassageStoreWriter(path) as w:
        for s in range(0, len(rows), 10_000):
            w.add([Passage(r["text"], id=r["id"], doc_id=r["doc_id"], position=r["position"]) for r in rows[s : s + 10_000]])
    return time.perf_counter() - t, path.stat().st_size


def _sqlite_open(folder: Path) -> tuple[float, Any, Any, Any]:
    from meteora.retrievers.passage_store import SqlitePassages
    from meteora.types import Passage

    t = time.perf_counter()
    store = SqlitePassages(folder / "passages.sqlite")
    open_s = time.perf_counter() - t

    def neighbours(sample):
        return store.neighbours([Passage(r["text"], id=r["id"], doc_id=r["doc_id"], position=r["position"]) for r in sample], 1)

    return open_s, store.take, store.rows_of, neighbours


def _parquet_build(rows: list[dict], folder: Path) -> tuple[float, int]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = time.perf_counter()
    pq.write_table(pa.Table.from_pylist(rows), folder / "p.parquet", row_group_size=PARQUET_ROW_GROUP, compression="zstd")
    ids = np.array([r["id"] for r in rows])
    order = np.argsort(ids, kind="stable")
    np.save(folder / "ids.npy", ids[order])
    np.save(folder / "id_rows.npy", order)
    keys = np.array([f"{r['doc_id']}\x00{r['position']:010d}" for r in rows])
    korder = np.argsort(keys, kind="stable")
    np.save(folder / "keys.npy", keys[korder])
    np.save(folder / "key_rows.npy", korder)
    return time.perf_counter() - t, sum(f.stat().st_size for f in folder.iterdir())


PARQUET_ROW_GROUP = 1024


def _parquet_open(folder: Path) -> tuple[float, Any, Any, Any]:
    import pyarrow.parquet as pq

    rg = PARQUET_ROW_GROUP
    t = time.perf_counter()
    pf = pq.ParquetFile(folder / "p.parquet")
    sid, srow = np.load(folder / "ids.npy", mmap_mode="r"), np.load(folder / "id_rows.npy", mmap_mode="r")
    skey, skrow = np.load(folder / "keys.npy", mmap_mode="r"), np.load(folder / "key_rows.npy", mmap_mode="r")
    open_s = time.perf_counter() - t

    def take(rs):
        out = {}
        for g in sorted({r // rg for r in rs}):
            part = pf.read_row_group(g).to_pylist()
            for r in rs:
                if r // rg == g:
                    out[r] = part[r - g * rg]
        return [out[r] for r in rs]

    def by_id(q):
        pos = np.searchsorted(sid, np.array(q))
        return [int(srow[p]) for p in pos]

    def neighbours(sample):
        wanted = []
        for r in sample:
            lo = np.searchsorted(skey, f"{r['doc_id']}\x00{max(0, r['position'] - 1):010d}")
            hi = np.searchsorted(skey, f"{r['doc_id']}\x00{r['position'] + 1:010d}", side="right")
            wanted.extend(int(skrow[i]) for i in range(lo, hi))
        return take(wanted)

    return open_s, take, by_id, neighbours


def _lancedb_build(rows: list[dict], folder: Path) -> tuple[float, int]:
    import lancedb
    import pyarrow as pa

    t = time.perf_counter()
    tbl = lancedb.connect(str(folder)).create_table("p", data=pa.Table.from_pylist(rows))
    tbl.create_scalar_index("id")
    tbl.create_scalar_index("doc_id")
    return time.perf_counter() - t, sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _lancedb_open(folder: Path) -> tuple[float, Any, Any, Any]:
    import lancedb

    t = time.perf_counter()
    tbl = lancedb.connect(str(folder)).open_table("p")
    open_s = time.perf_counter() - t

    def quoted(values):
        return ",".join("'" + str(v).replace("'", "''") + "'" for v in values)

    def take(rs):
        return tbl.take_offsets(rs).to_arrow().to_pylist()

    def by_id(q):
        return tbl.search().where(f"id IN ({quoted(q)})").select(["id"]).with_row_id(True).limit(len(q)).to_arrow()

    def neighbours(sample):
        cond = " OR ".join(
            f"(doc_id = {quoted([r['doc_id']])} AND position BETWEEN {r['position'] - 1} AND {r['position'] + 1})"
            for r in sample
        )
        return tbl.search().where(cond).limit(10_000).to_arrow()

    return open_s, take, by_id, neighbours


def measure(store: str, corpus: Path, folder: Path, phase: str) -> dict[str, Any]:
    """``phase="build"``: write the store; ``"serve"``: open it in a fresh process, time
    lookups of random rows, ids and neighbours, and report the memory that added."""
    if phase == "build":
        rows = [json.loads(line) for line in open(corpus, encoding="utf-8")]
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        write_s, size = {"sqlite": _sqlite_build, "parquet": _parquet_build, "lancedb": _lancedb_build}[store](rows, folder)
        return {"write_s": round(write_s, 3), "bytes_on_disk": size}
    rng = random.Random(1)
    n = sum(1 for _ in open(corpus, encoding="utf-8"))
    keep = set(rng.sample(range(n), 3000))
    sample = []
    with open(corpus, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i in keep:
                r = json.loads(line)
                sample.append({k: r[k] for k in ("id", "doc_id", "position")} | {"text": ""})
    rss0 = _rss_mb()
    open_s, take, by_id, neighbours = {"sqlite": _sqlite_open, "parquet": _parquet_open, "lancedb": _lancedb_open}[store](folder)
    out = {
        "open_s": round(open_s, 4),
        "rows_100": _timed(take, lambda: rng.sample(range(n), 100)),
        "ids_100": _timed(by_id, lambda: [r["id"] for r in rng.sample(sample, 100)]),
        "neighbours_50": _timed(neighbours, lambda: rng.sample(sample, 50)),
    }
    out["rss_added_mb"] = round(_rss_mb() - rss0, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100_000, help="chunks in the corpus")
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default $METEORA_HOME/scale-bench)")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--child", choices=STORES, default=None, help=argparse.SUPPRESS)
    p.add_argument("--phase", choices=("build", "serve"), default="build", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    from meteora.settings import meteora_home

    work = args.work or meteora_home() / "scale-bench"
    work.mkdir(parents=True, exist_ok=True)
    if args.child:
        print(json.dumps(measure(args.child, work / f"corpus_{args.n}.jsonl", work / f"store-{args.child}", args.phase)))
        return 0
    from scale_data import real_chunks, write_corpus

    real, _, _, _, sentences = real_chunks()
    write_corpus(work / f"corpus_{args.n}.jsonl", args.n, real, sentences)
    results = []
    for store in STORES:
        if store == "lancedb":
            import importlib.util

            if importlib.util.find_spec("lancedb") is None:
                results.append({"store": store, "skipped": "lancedb is not installed"})
                continue
        row: dict[str, Any] = {"store": store, "passages": args.n}
        for phase in ("build", "serve"):
            cmd = [sys.executable, __file__, "--n", str(args.n), "--child", store, "--phase", phase]
            if args.work:
                cmd += ["--work", str(args.work)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            row.update(json.loads(done.stdout.strip().splitlines()[-1]))
        results.append(row)
        print(json.dumps(row))
    import importlib.metadata as md

    versions = {}
    for pkg in ("numpy", "pyarrow", "lancedb"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    import sqlite3

    versions["sqlite"] = sqlite3.sqlite_version
    from meteora.bench.report import load_average, write_results_json

    write_results_json(args.out, {
        "benchmark": "passage stores",
        "command": f"python benchmarks/passage_stores.py --n {args.n}",
        "corpus": f"the first {args.n} chunks of the scale benchmark corpus (benchmarks/scale_data.py)",
        "versions": versions,
        "load_average_after": load_average(),
        "results": results,
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

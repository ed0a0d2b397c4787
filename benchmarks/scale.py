"""Scale benchmark: how far one machine goes — 10 k, 100 k and 1 M chunks.

Per corpus size and index type (dense ``flat``, ``hnsw``, ``ivfpq``; ``bm25``), through
meteora's own code (:func:`meteora.retrievers.streaming.build_index`, ``load_retriever``,
``search_embeddings`` / ``search`` — what ``Reranker.search_batch`` calls):

* build seconds (streaming build from the JSONL corpus; dense vectors given precomputed,
  so encoding is reported apart, as passages/s per worker) and bytes on disk;
* peak RSS of the build process and of the serving process (load + every search), and
  their peak anonymous memory (RSS without the pages of memory-mapped index files, which
  the kernel shares between processes and can drop);
* queries/s batched (the 500 PubMedQA test questions in one call) and p50/p95 ms per
  single query, with 1 and 2 threads (FAISS/numba/BLAS);
* recall@10 of each index against exact search, NDCG@10 on PubMedQA's "abstract" view.

Dense latencies start from the query embedding (MiniLM encoding of one question is
measured once, apart: it is the same for every index). Each build and each serving run is
its own process. Data, and what is real and what is drawn: ``benchmarks/scale_data.py``.
Also: MiniLM encoding throughput with 1 and 2 threads, and with 1 and 2 Ray encoder
workers on a local cluster; the IVF-PQ ``nprobe`` x ``rerank`` sweep on the *train-side*
questions that chose the defaults.

Run (once, niced; the 1 M corpus takes about an hour of a 2-core machine)::

    nice python benchmarks/scale.py --sizes 10000,100000,1000000

Results: ``benchmarks/results/scale.json`` (written after every size).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale_data import (  # noqa: E402
    NpyRows,
    corpus_embeddings,
    encode_cached,
    exact_top,
    real_chunks,
    write_corpus,
)

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "scale.json"
TYPES = ("flat", "hnsw", "ivfpq", "bm25")
K = 10
logger = logging.getLogger("scale")


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as fh:
        return next(int(x.split()[1]) / 1024 for x in fh if x.startswith(field + ":"))


def _rss_mb() -> float:
    return _status_mb("VmRSS")


def _peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited from
    the parent that started it), memory-mapped index files included."""
    return _status_mb("VmHWM")


class PeakAnon:
    """Samples this process's anonymous resident memory (``RssAnon``: its own heap, not
    the pages of memory-mapped files, which the kernel shares and can drop) every 20 ms."""

    def __init__(self) -> None:
        import threading

        self.peak = _status_mb("RssAnon")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _status_mb("RssAnon"))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return round(max(self.peak, _status_mb("RssAnon")), 1)


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it is inside it (no machine paths in results)."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return path.name


def _dir_bytes(path: Path) -> int:
    from meteora.retrievers.storage import resolve_index

    return sum(f.stat().st_size for f in resolve_index(path).rglob("*") if f.is_file())


def _retriever(kind: str, **dense: Any) -> Any:
    from meteora.retrievers.bm25 import BM25Retriever
    from meteora.retrievers.dense import DenseRetriever

    return BM25Retriever() if kind == "bm25" else DenseRetriever(index_type=kind, **dense)


# -- children ------------------------------------------------------------------------------
def child_build(work: Path, n: int, kind: str) -> dict[str, Any]:
    from meteora.retrievers.streaming import build_index

    out = work / f"idx-{n}-{kind}"
    emb = None if kind == "bm25" else NpyRows(work / f"embeddings_{n}.npy")
    anon = PeakAnon()
    t = time.perf_counter()
    build_index(work / f"corpus_{n}.jsonl", out, _retriever(kind), embeddings=emb, chunk_size=10_000)
    return {"build_s": round(time.perf_counter() - t, 2), "bytes_on_disk": _dir_bytes(out),
            "build_peak_rss_mb": round(_peak_rss_mb(), 1), "build_peak_anon_mb": anon.stop()}


def _timings(search: Any, queries: Any, single: int) -> dict[str, Any]:
    t = time.perf_counter()
    batched = search(queries)
    batch_s = time.perf_counter() - t
    times = []
    for i in range(min(single, len(queries))):
        t = time.perf_counter()
        search(queries[i : i + 1])
        times.append((time.perf_counter() - t) * 1000)
    return {"qps_batched": round(len(queries) / batch_s, 1), "p50_ms": round(float(np.median(times)), 3),
            "p95_ms": round(float(np.percentile(times, 95)), 3)}, batched


def child_serve(work: Path, n: int, kind: str, threads: int, single: int, sweep: bool) -> dict[str, Any]:
    import faiss

    from meteora.metrics import evaluate_ranking
    from meteora.retrievers.base import load_retriever

    faiss.omp_set_num_threads(threads)
    anon = PeakAnon()
    rss0 = _rss_mb()
    t = time.perf_counter()
    r = load_retriever(work / f"idx-{n}-{kind}")
    load_s = time.perf_counter() - t
    rss_loaded = _rss_mb()
    meta = json.loads((work / "queries.json").read_text())
    if kind == "bm25":
        import numba

        numba.set_num_threads(threads)
        queries = meta["test_texts"]
        r.search(queries[:5], k=K)  # numba compiles its kernels on the first search

        def search(q: Any) -> Any:
            return r.search(list(q), k=K)
    else:
        queries = np.load(work / "queries-test.npy")

        def search(q: Any) -> Any:
            return r.search_embeddings(q, k=K)

    out, rankings = _timings(search, queries, single)
    truth = np.load(work / f"exact_{n}.npy")
    rows = r.passage_store.rows_of([h.id for rk in rankings for h in rk])
    got = np.full((len(rankings), K), -1, dtype=np.int64)
    it = iter(rows)
    for i, rk in enumerate(rankings):
        for j in range(len(rk)):
            got[i, j] = next(it)
    if kind != "bm25":  # recall against exact dense search: what an approximate index loses
        out["recall_at_10"] = round(float(np.mean([len(set(g) & set(t)) / K for g, t in zip(got, truth, strict=True)])), 4)
    run = {qid: {h.id: h.score for h in rk} for qid, rk in zip(meta["test_ids"], rankings, strict=True)}
    out["ndcg_at_10"] = round(evaluate_ranking(meta["qrels"], run, ["NDCG@10"], backend="python")["NDCG@10"], 4)
    out.update(load_s=round(load_s, 2), rss_before_load_mb=round(rss0, 1), rss_after_load_mb=round(rss_loaded, 1))
    if sweep and kind == "ivfpq":
        out["sweep_train_queries"] = _sweep(r, work, n)
    out["serve_peak_rss_mb"] = round(_peak_rss_mb(), 1)
    out["serve_peak_anon_mb"] = anon.stop()
    out["rss_file_backed_mb_at_end"] = round(_status_mb("RssFile"), 1)
    return out


def _sweep(r: Any, work: Path, n: int) -> list[dict[str, Any]]:
    """nprobe x rerank on the train-side questions (what chose the defaults)."""
    q = np.load(work / "queries-train.npy")
    truth = np.load(work / f"exact_train_{n}.npy")
    rows_out = []
    for nprobe in (16, 32, 64, 128, 256):
        for rerank in (100, 200):
            r.nprobe, r.rerank = nprobe, rerank
            times = []
            hits = []
            for i in range(len(q)):
                t = time.perf_counter()
                hits.append(r.search_embeddings(q[i : i + 1], k=K)[0])
                times.append((time.perf_counter() - t) * 1000)
            ids = r.passage_store.rows_of([h.id for rk in hits for h in rk])
            got = [set(ids[i * K : (i + 1) * K]) for i in range(len(hits))]
            recall = float(np.mean([len(g & set(t)) / K for g, t in zip(got, truth, strict=True)]))
            rows_out.append({"nprobe": nprobe, "rerank": rerank, "recall_at_10": round(recall, 4),
                             "p50_ms": round(float(np.median(times)), 3)})
    return rows_out


def child_encoding(work: Path, sample: int, n: int) -> dict[str, Any]:
    from meteora.embeddings.encoder import Encoder
    from meteora.retrievers.dense import DenseRetriever
    from meteora.settings import set_num_threads

    texts = [json.loads(line)["text"] for _, line in zip(range(sample), open(work / f"corpus_{n}.jsonl"), strict=False)]
    dense = DenseRetriever(Encoder(cache=False))
    dense._encode(texts[:32])  # load and warm up
    out: dict[str, Any] = {"sample": len(texts), "mean_chars": round(float(np.mean([len(t) for t in texts])), 1)}
    for threads in (1, 2):
        set_num_threads(threads)
        t = time.perf_counter()
        dense._encode(texts)
        out[f"passages_per_s_{threads}_threads"] = round(len(texts) / (time.perf_counter() - t), 2)
    set_num_threads(1)
    meta = json.loads((work / "queries.json").read_text())
    times = []
    for q in meta["test_texts"][:100]:
        t = time.perf_counter()
        dense.encode_queries([q])
        times.append((time.perf_counter() - t) * 1000)
    out["query_encode_ms_p50_1_thread"] = round(float(np.median(times)), 2)
    return out


def child_ray(work: Path, sample: int, n: int) -> dict[str, Any]:
    """MiniLM encoding on a local Ray cluster with 1 and 2 encoder actors of 1 CPU each.

    Each actor call is timed inside the actor (:class:`TimedEncoder` runs
    ``PassageEncoder.__call__``), so model loading and start-up are left out: per worker,
    passages/s over the time it spent encoding; together, passages over the span from
    the first call's start to the last call's end.
    """
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    import ray

    from meteora.distributed.build import corpus_dataset

    src = work / f"ray-sample-{sample}.jsonl"
    with open(work / f"corpus_{n}.jsonl") as fh, open(src, "w") as out_fh:
        for _, line in zip(range(sample), fh, strict=False):
            out_fh.write(line)
    # 2 encoder actors of 1 CPU each, plus one logical CPU for the (light) reading tasks
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    out: dict[str, Any] = {"sample": sample, "cluster": "ray.init(num_cpus=3) on this 2-core machine: 1 or 2 "
                           "encoder actors of 1 CPU (1 torch thread) each, the third logical CPU for reading"}
    try:
        for workers in (1, 2):
            ds, _ = corpus_dataset(src)
            ds = ds.map_batches(TimedEncoder, fn_constructor_kwargs={"encoder": None, "batch_size": 64, "threads": 1},
                                batch_size=32, batch_format="numpy", concurrency=workers, num_cpus=1.0)
            t0 = time.perf_counter()
            calls: dict[tuple[int, float], tuple[float, int]] = {}
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                for pid, start, end in zip(batch["actor"], batch["call_start"], batch["call_end"], strict=True):
                    key = (int(pid), float(start))
                    calls[key] = (float(end), calls.get(key, (0.0, 0))[1] + 1)
            per_actor: dict[int, list[float]] = {}
            for (pid, start), (end, rows) in calls.items():
                busy_rows = per_actor.setdefault(pid, [0.0, 0.0])
                busy_rows[0] += end - start
                busy_rows[1] += rows
            span = max(e for e, _ in calls.values()) - min(s for _, s in calls)
            out[f"workers_{workers}"] = {
                "wall_s_with_start_up": round(time.perf_counter() - t0, 2),
                "passages_per_s_per_worker": [round(r / b, 2) for b, r in per_actor.values()],
                "passages_per_s_together": round(sample / span, 2),
            }
    finally:
        ray.shutdown()
    out["ratio_2_vs_1"] = round(out["workers_2"]["passages_per_s_together"] / out["workers_1"]["passages_per_s_together"], 2)
    return out


class TimedEncoder:
    """``PassageEncoder`` with each call's start and end (and the actor's pid) added as columns."""

    def __init__(self, **kwargs: Any) -> None:
        from meteora.distributed.build import PassageEncoder

        self.inner = PassageEncoder(**kwargs)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.time()
        out = self.inner(batch)
        m = len(out["record"])
        return {**out, "actor": np.full(m, os.getpid()), "call_start": np.full(m, start), "call_end": np.full(m, time.time())}


# -- orchestration ---------------------------------------------------------------------------
def _child(args: list[str], common: list[str], threads: int = 1) -> dict[str, Any]:
    env = {**os.environ, **{v: str(threads) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}}
    cmd = [sys.executable, __file__, *common, *args]
    logger.info("running %s", " ".join(args))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _nn_cosine(x: np.ndarray) -> float:
    """Mean cosine of each of the first 2,000 vectors to its nearest other vector in ``x``."""
    sims = x[:2000] @ x.T
    np.fill_diagonal(sims[:, :2000], -1.0)
    return round(float(sims.max(axis=1).mean()), 4)


def prepare(work: Path, sizes: list[int]) -> dict[str, Any]:
    real, qrels, test, train, sentences = real_chunks()
    q_test = encode_cached(work, "queries-test", list(test.values()))
    q_train = encode_cached(work, "queries-train", list(train.values()))
    np.save(work / "queries-test.npy", q_test)
    np.save(work / "queries-train.npy", q_train)
    (work / "queries.json").write_text(json.dumps({"test_ids": list(test), "test_texts": list(test.values()), "qrels": qrels}))
    real_emb = encode_cached(work, "real", [c["text"] for c in real])
    info: dict[str, Any] = {"real_chunks": len(real), "sentence_pool": len(sentences)}
    for n in sizes:
        write_corpus(work / f"corpus_{n}.jsonl", n, real, sentences)
        emb_path = corpus_embeddings(work, n, real_emb)
        emb = np.load(emb_path, mmap_mode="r")
        for name, q in (("exact", q_test), ("exact_train", q_train)):
            if not (work / f"{name}_{n}.npy").exists():
                np.save(work / f"{name}_{n}.npy", exact_top(emb, q, K, block=50_000))
        info[str(n)] = {"real": min(n, len(real)), "synthetic_text_drawn_vectors": max(0, n - len(real))}
    drawn = np.load(corpus_embeddings(work, max(sizes), real_emb), mmap_mode="r")
    if len(drawn) > len(real):  # how the drawn vectors compare with the real ones
        part = np.asarray(drawn[len(real) : 2 * len(real)])
        info["drawn_check"] = {
            "mean_best_cosine_test_questions_real_chunks": round(float((q_test @ real_emb.T).max(axis=1).mean()), 4),
            "mean_best_cosine_test_questions_drawn_chunks": round(float((q_test @ part.T).max(axis=1).mean()), 4),
            "mean_cosine_random_pairs_real": round(float(np.mean(np.sum(real_emb[:5000] * real_emb[5000:10000], 1))), 4),
            "mean_cosine_random_pairs_drawn": round(float(np.mean(np.sum(part[:5000] * part[5000:10000], 1))), 4),
            "mean_nearest_neighbour_cosine_real": _nn_cosine(real_emb[:10_000]),
            "mean_nearest_neighbour_cosine_drawn": _nn_cosine(part[:10_000]),
        }
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="10000,100000,1000000")
    p.add_argument("--types", default=",".join(TYPES))
    p.add_argument("--single", type=int, default=200, help="queries timed one at a time")
    p.add_argument("--encode-sample", type=int, default=256, help="chunks encoded to measure throughput")
    p.add_argument("--ray-sample", type=int, default=512, help="chunks encoded on Ray (0: skip)")
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default $METEORA_HOME/scale-bench)")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--ray-only", action="store_true",
                   help="measure only the Ray encoding and store it in the existing --out file")
    p.add_argument("--child", nargs="+", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    from meteora.settings import meteora_home

    work = args.work or meteora_home() / "scale-bench"
    work.mkdir(parents=True, exist_ok=True)
    if args.child:
        what, *rest = args.child
        if what == "build":
            res = child_build(work, int(rest[0]), rest[1])
        elif what == "serve":
            res = child_serve(work, int(rest[0]), rest[1], int(rest[2]), args.single, rest[3] == "sweep")
        elif what == "encoding":
            res = child_encoding(work, args.encode_sample, int(rest[0]))
        else:
            res = child_ray(work, args.ray_sample, int(rest[0]))
        print(json.dumps(res))
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    types = args.types.split(",")
    if args.ray_only:
        from meteora.bench.report import write_results_json

        results = json.loads(args.out.read_text())
        ray_res = _child(["--child", "ray", str(min(sizes))], ["--ray-sample", str(args.ray_sample)])
        ray_res["command"] = f"nice python benchmarks/scale.py --ray-only --sizes {args.sizes} --ray-sample {args.ray_sample}"
        results["ray_encoding"] = ray_res
        write_results_json(args.out, results)
        return 0
    from meteora.bench.report import environment_versions, load_average, write_results_json

    results: dict[str, Any] = {
        "benchmark": "scale",
        "command": f"nice python benchmarks/scale.py --sizes {args.sizes} --types {args.types} --single {args.single} "
                   f"--encode-sample {args.encode_sample} --ray-sample {args.ray_sample}"
                   + ("" if args.out == OUT else f" --out {_shown(args.out)}"),
        "machine": {"cpus": os.cpu_count(), "load_average_before": load_average(), "note":
                    "2 cores shared with other jobs: compare rows of one run, not absolute speed"},
        "versions": environment_versions(["numpy", "faiss-cpu", "bm25s", "numba", "torch", "sentence-transformers", "ray"]),
        "k": K, "queries": "the 500 PubMedQA test questions (MiniLM embeddings / texts for BM25)",
        "data": prepare(work, sizes),
    }
    common = ["--single", str(args.single), "--encode-sample", str(args.encode_sample), "--ray-sample",
              str(args.ray_sample), *(["--work", str(args.work)] if args.work else [])]
    if args.encode_sample:
        results["encoding"] = _child(["--child", "encoding", str(min(sizes))], common, threads=2)
    if args.ray_sample:
        results["ray_encoding"] = _child(["--child", "ray", str(min(sizes))], common, threads=1)
    results["sizes"] = {}
    for n in sizes:
        row: dict[str, Any] = {}
        for kind in types:
            entry = _child(["--child", "build", str(n), kind], common)
            for threads in (1, 2):
                sweep = "sweep" if threads == 1 and kind == "ivfpq" else "no"
                served = _child(["--child", "serve", str(n), kind, str(threads), sweep], common, threads=threads)
                entry.setdefault("serve", {})[f"{threads}_thread"] = served
            row[kind] = entry
            results["sizes"][str(n)] = row
            results["machine"]["load_average_after"] = load_average()
            write_results_json(args.out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

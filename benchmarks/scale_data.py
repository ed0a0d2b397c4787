"""Corpora, embeddings and queries of the scale benchmark (``benchmarks/scale.py``).

* **Real chunks** (10,381): the shipped PubMedQA contexts (3,358, ids ``pq:<pmid>-<i>``)
  then the BioASQ-dev gold snippets (7,023, ids ``ba:<pmid>-<i>``), in that order.
* **Synthetic chunks** (beyond the real ones): documents of 3-8 chunks, each chunk 2-5
  sentences drawn (seed 0) from the sentences of the BioASQ snippets and of the
  PubMedQA *train-side* abstracts — never from the test-side abstracts the NDCG is
  measured on, so no synthetic chunk copies a judged one. Ids ``syn:<doc>-<pos>``.
* **Embeddings**: real all-MiniLM-L6-v2 vectors of the real chunks (encoded once through
  ``DenseRetriever``'s own encoding path and cached); synthetic chunks get vectors
  *drawn* to match the real ones' distribution: a 64-cluster k-means of the real
  vectors, a cluster drawn with its frequency, then a Gaussian vector with that
  cluster's mean and sample covariance (the mean plus a random Gaussian combination of
  its centred members), L2-normalised (seed 0).
* **Queries**: the 500 PubMedQA test questions (reported: latency, recall, NDCG@10 on
  the "abstract" view) and the 500 train-side questions (used only to choose IVF-PQ's
  ``nprobe``/``rerank`` defaults), encoded with MiniLM.

Files live in a work folder (default ``$METEORA_HOME/scale-bench``), never in the repo.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("scale")

SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(])")
DIM = 384


def real_chunks() -> tuple[list[dict[str, Any]], dict[str, dict[str, int]], dict[str, str], dict[str, str], list[str]]:
    """Real chunks, PubMedQA test qrels (abstract view, prefixed ids), test and train
    questions, and the sentence pool for synthetic chunks."""
    from meteora.datasets.bioasq import build_bioasq_benchmark
    from meteora.datasets.pubmedqa import build_pubmedqa_benchmark

    pq = build_pubmedqa_benchmark()
    ba = build_bioasq_benchmark()
    chunks = [
        {"id": f"pq:{p.id}", "doc_id": f"pq:{p.doc_id}", "position": p.position, "text": p.text} for p in pq.corpus
    ] + [{"id": f"ba:{p.id}", "doc_id": f"ba:{p.doc_id}", "position": p.position, "text": p.text} for p in ba.corpus]
    test, train = pq.query_ids("test"), pq.query_ids("train")
    qrels = {q: {f"pq:{pid}": r for pid, r in rels.items()} for q, rels in pq.qrels_for("abstract", test).items()}
    train_docs = set(train)
    pool = [p.text for p in ba.corpus] + [p.text for p in pq.corpus if p.doc_id in train_docs]
    sentences = [s for text in pool for s in SENTENCE.split(text) if len(s) >= 30]
    return (chunks, qrels, {q: pq.queries[q] for q in test}, {q: pq.queries[q] for q in train}, sentences)


def write_corpus(path: Path, n: int, real: list[dict[str, Any]], sentences: list[str], seed: int = 0) -> Path:
    """``n`` chunks as JSONL: the real ones first, then synthetic documents."""
    if path.exists():
        return path
    tmp = path.with_suffix(".partial")
    rng = np.random.default_rng(seed)
    with open(tmp, "w", encoding="utf-8") as fh:
        for c in real[:n]:
            fh.write(json.dumps(c, ensure_ascii=False) + "\n")
        written, doc = min(n, len(real)), 0
        while written < n:
            for pos in range(int(rng.integers(3, 9))):
                if written >= n:
                    break
                picks = rng.integers(0, len(sentences), size=int(rng.integers(2, 6)))
                text = " ".join(sentences[i] for i in picks)
                fh.write(json.dumps({"id": f"syn:{doc}-{pos}", "doc_id": f"syn:{doc}", "position": pos, "text": text},
                                    ensure_ascii=False) + "\n")
                written += 1
            doc += 1
    tmp.rename(path)
    return path


def _digest(texts: list[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def encode_cached(work: Path, name: str, texts: list[str], *, threads: int = 1) -> np.ndarray:
    """MiniLM embeddings of ``texts`` through ``DenseRetriever``'s encoding path, cached
    in ``work`` under the texts' digest."""
    path = work / f"{name}-{_digest(texts)}.npy"
    if path.exists():
        return np.load(path)
    from meteora.embeddings.encoder import Encoder
    from meteora.retrievers.dense import DenseRetriever
    from meteora.settings import set_num_threads

    set_num_threads(threads)
    dense = DenseRetriever(Encoder(cache=False))
    out = np.empty((len(texts), DIM), dtype=np.float32)
    t0 = time.perf_counter()
    for start in range(0, len(texts), 512):
        out[start : start + 512] = dense._encode(texts[start : start + 512])
        done = start + len(texts[start : start + 512])
        logger.info("encoded %d/%d %s (%.1f/s)", done, len(texts), name, done / (time.perf_counter() - t0))
    np.save(path.with_suffix(".partial.npy"), out)
    path.with_suffix(".partial.npy").rename(path)
    return out


def drawn_vectors(real: np.ndarray, n: int, seed: int = 0, clusters: int = 64) -> np.ndarray:
    """``n`` vectors drawn to match ``real``'s distribution (see the module docstring):
    per k-means cluster, Gaussian with the cluster's mean and sample covariance, drawn as
    the mean plus a random Gaussian combination of the cluster's centred members."""
    import faiss

    km = faiss.Kmeans(real.shape[1], clusters, niter=20, seed=seed, verbose=False)
    km.train(np.ascontiguousarray(real))
    _, assign = km.index.search(real, 1)
    assign = assign[:, 0]
    members = [real[assign == c] for c in range(clusters)]
    means = np.stack([m.mean(axis=0) for m in members]).astype(np.float32)
    centred = [(m - m.mean(axis=0)).astype(np.float32) for m in members]
    freq = np.array([len(m) for m in members], dtype=np.float64) / len(real)
    rng = np.random.default_rng(seed)
    out = np.empty((n, real.shape[1]), dtype=np.float32)
    picks = rng.choice(clusters, size=n, p=freq)
    for c in range(clusters):
        rows = np.flatnonzero(picks == c)
        m = len(centred[c])
        for start in range(0, len(rows), 50_000):
            part = rows[start : start + 50_000]
            z = rng.standard_normal((len(part), m), dtype=np.float32) / np.sqrt(max(m - 1, 1))
            x = means[c] + z @ centred[c]
            out[part] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def corpus_embeddings(work: Path, n: int, real_emb: np.ndarray) -> Path:
    """``(n, 384)`` float32 ``.npy`` for the first ``n`` chunks: real rows, then drawn."""
    path = work / f"embeddings_{n}.npy"
    if path.exists():
        return path
    k = min(n, len(real_emb))
    out = np.lib.format.open_memmap(path.with_suffix(".partial.npy"), mode="w+", dtype=np.float32, shape=(n, DIM))
    out[:k] = real_emb[:k]
    if n > k:
        out[k:] = drawn_vectors(real_emb, n - k)
    out.flush()
    del out
    path.with_suffix(".partial.npy").rename(path)
    return path


def exact_top(emb: np.ndarray, queries: np.ndarray, k: int = 10, block: int = 200_000) -> np.ndarray:
    """Exact top-``k`` rows by inner product (ties by row), read block by block."""
    best_s = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), 0), dtype=np.int64)
    for start in range(0, len(emb), block):
        s = queries @ np.asarray(emb[start : start + block]).T
        idx = np.argsort(-s, axis=1, kind="stable")[:, :k]
        cand_s = np.concatenate([best_s, np.take_along_axis(s, idx, axis=1)], axis=1)
        cand_i = np.concatenate([best_i, idx + start], axis=1)
        order = np.lexsort((cand_i, -cand_s), axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(cand_s, order, axis=1), np.take_along_axis(cand_i, order, axis=1)
    return best_i


class NpyRows:
    """Rows of a 2-D float32 ``.npy`` file read with ordinary file reads (no memory map),
    so a build fed precomputed vectors is not charged for the source file's mapped pages."""

    def __init__(self, path: Path) -> None:
        arr = np.load(path, mmap_mode="r")
        self.path, self.shape, self.offset = path, arr.shape, arr.offset
        self.ndim = 2
        del arr

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, _ = rows.indices(self.shape[0])
        width = self.shape[1] * 4
        with open(self.path, "rb") as fh:
            fh.seek(self.offset + start * width)
            data = fh.read(max(0, stop - start) * width)
        return np.frombuffer(data, dtype=np.float32).reshape(-1, self.shape[1])

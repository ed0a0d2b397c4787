"""Ray: distributed index build and batch reranking on a real two-node cluster on
127.0.0.1 (head + worker, 1 CPU each), checked against the single-machine results on a
~2k-passage corpus. About two minutes here, most of it cluster start-up and model loads."""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import pytest
from ray_cluster import local_ray_cluster

from meteora.errors import InvalidInputError
from meteora.reranker import Reranker
from meteora.retrievers import BM25Retriever, DenseRetriever, HybridRetriever
from meteora.retrievers.streaming import build_index
from meteora.selection.selector_settings import SelectorSettings

pytest.importorskip("ray")
pytest.importorskip("ray.data")
faiss = pytest.importorskip("faiss")

pytestmark = pytest.mark.timeout(900)

WORDS = ("fever cough aspirin statin insulin glucose child adult trial dose risk stroke measles "
         "vaccine asthma steroid kidney liver sepsis antibiotic").split()
N = 2000


def _corpus() -> list[dict]:
    rng = np.random.default_rng(7)
    out = []
    for i in range(N):
        text = f"passage {i} " + " ".join(rng.choice(WORDS, size=int(rng.integers(4, 14))))
        item = {"doc_id": f"doc{i // 4}", "position": i % 4, "text": text}
        if i % 5:
            item["id"] = f"p{i}"  # every fifth passage is numbered by its place, as on one machine
        if i % 3 == 0:
            item["metadata"] = {"year": 1990 + i % 30, "tags": ["a", "b"]}
        out.append(item)
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("ray-corpus")
    corpus = _corpus()
    whole = d / "all.jsonl"
    parts = [d / "part-0.jsonl", d / "part-1.jsonl"]
    whole.write_text("".join(json.dumps(c) + "\n" for c in corpus))
    half = N // 2
    parts[0].write_text("".join(json.dumps(c) + "\n" for c in corpus[:half]) + "\n")  # a blank line too
    parts[1].write_text("".join(json.dumps(c) + "\n" for c in corpus[half:]))
    return d, whole, parts


@pytest.fixture(scope="module")
def cluster():
    with local_ray_cluster() as ray:
        yield ray


def _hybrid(model: str) -> HybridRetriever:
    return HybridRetriever([BM25Retriever(), DenseRetriever(model, index_type="ivfpq", pq_m=8, nlist=16, rerank=50)])


QUERIES = [f"{a} {b} {c}" for a, b, c in zip(WORDS, WORDS[3:] + WORDS[:3], WORDS[7:] + WORDS[:7], strict=True)]


def test_distributed_build_equals_the_single_machine_build(cluster, files, tiny_st_dir):
    from meteora.distributed.build import build_index_on_ray

    d, whole, parts = files
    one = build_index(whole, d / "one", _hybrid(str(tiny_st_dir)), chunk_size=300)
    on_ray = build_index_on_ray(parts, d / "ray", _hybrid(str(tiny_st_dir)), workers=2, cpus_per_worker=0.5,
                                batch_size=256, shard_size=500, range_bytes=8192)  # ~20 read tasks
    # same ids, passages and documents
    assert [p.to_dict() for p in on_ray.passages] == [p.to_dict() for p in one.passages]
    # read as line-aligned byte ranges: many blocks for the encoder actors to share, not one per file
    from meteora.distributed.build import corpus_dataset

    ds, _ = corpus_dataset(parts, range_bytes=8192)
    assert ds.materialize().num_blocks() >= 10
    ray_dense, one_dense = on_ray.members["dense"], one.members["dense"]
    assert np.allclose(ray_dense.embeddings, one_dense.embeddings, atol=1e-5)
    # exact search over the stored embeddings: the same results
    q = one_dense.encode_queries(QUERIES)
    for a, b in zip(q @ np.asarray(ray_dense.embeddings).T, q @ np.asarray(one_dense.embeddings).T, strict=True):
        assert np.argsort(-a, kind="stable")[:10].tolist() == np.argsort(-b, kind="stable")[:10].tolist()
    # one IVF-PQ trained on the same sample, shards added in Ray tasks and merged in order: it
    # answers exactly as an index built in one piece from the same vectors. (Not compared with
    # the single-machine IVF-PQ: workers encode with other batch shapes and thread counts, and
    # k-means and the PQ codes move with that 1e-5 noise, so near-ties there may swap.)
    assert faiss.extract_index_ivf(ray_dense._faiss_index).ntotal == N
    whole = DenseRetriever(str(tiny_st_dir), index_type="ivfpq", pq_m=8, nlist=16, rerank=50)
    whole.index(on_ray.passages, embeddings=np.asarray(ray_dense.embeddings))
    for a, b in zip(ray_dense.search(QUERIES, k=10), whole.search(QUERIES, k=10), strict=True):
        assert a.ids == b.ids
        assert np.allclose(a.scores, b.scores, atol=1e-6)
    # and the hybrid over it serves: BM25 is the same index, so the lexical side agrees exactly
    for a, b in zip(on_ray.members["bm25"].search(QUERIES, k=10), one.members["bm25"].search(QUERIES, k=10),
                    strict=True):
        assert a.ids == b.ids


def test_distributed_build_reads_parquet_and_reports_bad_lines_like_one_machine(cluster, files, tmp_path):
    from meteora.distributed.build import build_index_on_ray

    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    corpus = _corpus()[:300]
    pq.write_table(pa.Table.from_pylist(corpus), tmp_path / "c.parquet", row_group_size=64)
    bm25 = build_index_on_ray(tmp_path / "c.parquet", tmp_path / "pq", BM25Retriever(), batch_size=100)
    ref = build_index(tmp_path / "c.parquet", tmp_path / "pq-one", BM25Retriever())
    assert [p.to_dict() for p in bm25.passages] == [p.to_dict() for p in ref.passages]
    assert [r.ids for r in bm25.search(QUERIES, k=5)] == [r.ids for r in ref.search(QUERIES, k=5)]
    bad = tmp_path / "bad.jsonl"
    lines = [json.dumps(c) for c in corpus[:50]]
    lines[20] = '{"text": "unterminated'
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(InvalidInputError) as one_machine:
        build_index(bad, tmp_path / "bad-one", BM25Retriever())
    with pytest.raises(InvalidInputError) as on_ray:  # line 21 in the fifth 512-byte range or so
        build_index_on_ray(bad, tmp_path / "bad-ray", BM25Retriever(), range_bytes=512)
    assert str(on_ray.value) == str(one_machine.value) and "bad.jsonl:21: not valid JSON" in str(on_ray.value)
    assert not (tmp_path / "bad-ray").exists()


def test_distributed_reranking_equals_search_batch(cluster, files, tiny_st_dir):
    from meteora.distributed.rerank import load_for_reranker, rerank_on_ray

    d, _, _ = files
    index = d / "one"  # written by the build test; build it here when run alone
    if not index.exists():
        build_index(files[1], index, _hybrid(str(tiny_st_dir)))
    make = partial(Reranker, generator=None, scorer=None, encoder=str(tiny_st_dir), settings=SelectorSettings(window=1))
    queries = QUERIES * 2
    got = rerank_on_ray(queries, index, make, k=20, workers=2, batch_size=7, cpus_per_worker=0.5)
    rr = make()
    want = [r.to_dict() for r in rr.search_batch(queries, load_for_reranker(index, rr), k=20)]
    assert len(got) == len(want) == len(queries)
    for a, b in zip(got, want, strict=True):
        assert a["query"] == b["query"]
        assert [p["id"] for p in a["selected"]] == [p["id"] for p in b["selected"]]
        assert [h["id"] for h in a["ranked"]] == [h["id"] for h in b["ranked"]]
        assert np.allclose([h["score"] for h in a["ranked"]], [h["score"] for h in b["ranked"]], atol=1e-5)


def test_index_command_runs_on_the_cluster(cluster, files, tmp_path, capsys):
    from meteora.cli import main

    _, whole, _ = files
    assert main(["-q", "index", str(whole), "--out", str(tmp_path / "cli"), "--kind", "bm25", "--ray", "auto"]) == 0
    assert f"indexed {N} passages (bm25)" in capsys.readouterr().out
    assert cluster.is_initialized()  # the command used the cluster this process is connected to, and left it so

"""The one selection pipeline: SelectorSettings, Reranker.search_batch, and every caller
(benchmark methods, QA selections) selecting exactly what ``Reranker.search`` selects."""

from __future__ import annotations

import ast
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers_bench import BagOfWordsModel, toy_benchmark

import meteora
from meteora.bench.config import BenchmarkConfig
from meteora.bench.context import BenchmarkContext
from meteora.bench.datasets import build_benchmark
from meteora.bench.method_names import METEORA_VARIANTS, meteora_settings
from meteora.bench.methods import get_runner
from meteora.bench.pubmedqa import run_benchmark
from meteora.embeddings.encoder import Encoder
from meteora.errors import InvalidInputError
from meteora.pipeline import CandidatePool
from meteora.rationales.rationale_set import RationaleSet
from meteora.reranker import Reranker
from meteora.selection.selector import EvidenceSelector
from meteora.selection.selector_settings import (
    DEFAULT_EVIDENCE_BAND,
    DEFAULT_EVIDENCE_WEIGHT,
    SelectorSettings,
)

# ------------------------------------------------------------------ SelectorSettings


def test_settings_defaults_match_the_reranker_and_selector():
    s = SelectorSettings()
    assert s.to_dict() == {
        "pairing": "distinct", "tau": 1.0, "window": 0, "use_pairing": True, "use_pooling": True,
        "order": "score", "expand_from_documents": True, "min_similarity": 0.2, "evidence_weight": "calibrated",
        "evidence_band": "calibrated", "cut": "learned",
    }
    assert meteora.SelectorSettings is SelectorSettings
    assert Reranker(scorer=None, generator=None, encoder=Encoder(BagOfWordsModel(dim=16))).settings == s
    sel = EvidenceSelector(s.replace(window=2, pairing="convergent", order="document")).settings
    assert (sel.window, sel.pairing, sel.order) == (2, "convergent", "document")
    # "calibrated" stands for the scorer's calibration (the settings' defaults without one)
    assert (sel.min_similarity, sel.evidence_weight, sel.evidence_band) == (0.2, 0.03, 0.06)
    assert (DEFAULT_EVIDENCE_WEIGHT, DEFAULT_EVIDENCE_BAND) == (0.03, 0.06)
    cal = EvidenceSelector(s, calibrated={"evidence_weight": 0.02, "evidence_band": 0.04}).settings
    assert (cal.evidence_weight, cal.evidence_band) == (0.02, 0.04)
    fixed = EvidenceSelector(s.replace(evidence_band=0.1), calibrated={"evidence_band": 0.04}).settings
    assert (fixed.evidence_weight, fixed.evidence_band) == (0.03, 0.1)
    off = Reranker(None, Encoder(BagOfWordsModel(dim=16)), None, SelectorSettings(min_similarity=None))
    assert off.selector.settings.min_similarity is None
    with pytest.raises(InvalidInputError, match="evidence_band must be 'calibrated'"):
        SelectorSettings(evidence_band="auto")
    with pytest.raises(InvalidInputError, match=r"evidence_band must be in \[0.0, 2.0\]"):
        SelectorSettings(evidence_band=-1.0)
    with pytest.raises(InvalidInputError, match="must be numbers, not None"):
        SelectorSettings(evidence_weight=None)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"pairing": "greedy"}, r"unknown pairing 'greedy'; choose one of \['distinct', 'convergent'\]"),
        ({"order": "random"}, r"unknown order 'random'; choose one of \['score', 'document'\]"),
        ({"window": -1}, r"window must be a non-negative integer \(0 disables expansion\), got -1"),
        ({"window": 1.5}, "window must be a non-negative integer"),
        ({"window": True}, "window must be a non-negative integer"),
        ({"tau": float("nan")}, "tau must be a finite number"),
        ({"tau": "1"}, "tau must be a finite number"),
        ({"use_pairing": "yes"}, "use_pairing must be True or False"),
        ({"use_pairing": False, "use_pooling": False}, "nothing can be selected; enable at least one"),
        ({"expand_from_documents": 1}, "expand_from_documents must be True or False"),
    ],
)
def test_settings_validation(kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        SelectorSettings(**kwargs)
    with pytest.raises(InvalidInputError, match=match):
        SelectorSettings().replace(**kwargs)  # replace() validates again


def test_settings_are_frozen_typed_and_round_trip():
    s = SelectorSettings(tau=2, window=np.int64(3))
    assert isinstance(s.tau, float) and s.tau == 2.0 and type(s.window) is int and s.window == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.window = 1  # type: ignore[misc]
    assert SelectorSettings.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    assert s.replace(window=0) == SelectorSettings(tau=2.0) and s.window == 3  # a copy
    with pytest.raises(InvalidInputError, match=r"unknown selector setting\(s\) \['windw'\]"):
        s.replace(windw=1)
    with pytest.raises(InvalidInputError, match="unknown selector setting"):
        SelectorSettings.from_dict({"window": 1, "colour": "red"})
    assert s.uses_context and not s.replace(expand_from_documents=False).uses_context
    assert not SelectorSettings().uses_context  # window 0: no context needed


def test_reranker_takes_settings_and_no_shorthand_keywords():
    enc = Encoder(BagOfWordsModel(dim=16))
    base = SelectorSettings(window=1, tau=0.5)
    rr = Reranker(None, enc, None, base)
    assert rr.settings == base and rr.selector.settings.window == 1 and rr.selector.settings.tau == 0.5
    with pytest.raises(TypeError, match="window"):
        Reranker(scorer=None, generator=None, encoder=enc, window=1)  # type: ignore[call-arg]
    with pytest.raises(InvalidInputError, match="settings must be a meteora.SelectorSettings"):
        Reranker(scorer=None, generator=None, encoder=enc, settings={"window": 1})  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="window must be a non-negative integer"):
        Reranker(scorer=None, generator=None, encoder=enc, settings=SelectorSettings(window=-2))


# ------------------------------------------------------------------ a tiny benchmark

TOPICS = ["aspirin", "statin", "insulin", "asthma", "renal", "fever"]


def chunk_texts(i: int, t: str) -> list[str]:
    return [
        f"Background: {t} background{i} history of the {t} problem.",
        f"Results: {t} outcome{i} odds ratio measured{i} significant.",
        f"Methods: cohort{i} of {t} patients enrolled{i}.",
        f"Discussion: {t} limitations{i} of the study.",
        f"Funding: grant{i} support.",
    ]


def make_benchmark(name: str = "toy"):
    bench = toy_benchmark(
        TOPICS,
        chunk_texts,
        lambda i, t, qid: f"Does {t} change outcome{i} in patients?",
        splits={"test": ["q0", "q1", "q2", "q3"], "all": [f"q{i}" for i in range(6)]},
    )
    return dataclasses.replace(bench, name=name) if name != "toy" else bench


class FakeGenerator:
    """Deterministic rationales: the query (as anchor) and the results chunk's words."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def generate(self, queries, n=None, *, batch_size=8, include_query=False, **kwargs):
        self.calls.append(
            {"queries": list(queries), "n": n, "include_query": include_query, "batch_size": batch_size, **kwargs}
        )
        out = []
        for q in queries:
            i = int(q.split("outcome")[1].split()[0])
            rats = [f"{TOPICS[i]} outcome{i} odds ratio measured{i}", f"cohort{i} patients"]
            out.append(RationaleSet(q, [q, *rats] if include_query else rats, from_cache=i % 2 == 0))
        return out


class WordOverlapScorer:
    """A deterministic stand-in evidence scorer: logit = share of the query's words in the passage."""

    calibration = {"evidence_weight": 0.5, "evidence_band": 0.1}

    def __init__(self) -> None:
        self.calls = 0

    def evidence_logits(self, queries, passage_lists):
        self.calls += 1
        out = []
        for q, ps in zip(queries, passage_lists, strict=True):
            words = set(q.lower().split())
            out.append(np.array([len(words & set(p.lower().split())) / max(len(words), 1) for p in ps]))
        return out


EXPECTED_SETTINGS = {
    "meteora": SelectorSettings(),
    "meteora-no-scorer": SelectorSettings(),
    "meteora-query-only-no-scorer": SelectorSettings(),
    "meteora-query-only-no-scorer-w2": SelectorSettings(window=2),
    "meteora-no-expansion": SelectorSettings(window=0),
    "meteora-pairing": SelectorSettings(use_pooling=False),
    "meteora-pooling": SelectorSettings(use_pairing=False),
    "meteora-query-only": SelectorSettings(),
    "meteora-w2": SelectorSettings(window=2),
    "meteora-pairing-w2": SelectorSettings(window=2, use_pooling=False),
    "meteora-query-only-w2": SelectorSettings(window=2),
    "meteora-query-only-w0": SelectorSettings(window=0),
    "meteora-no-defence": SelectorSettings(),
    "meteora-query-only-no-defence": SelectorSettings(),
}


def test_variant_settings():
    for name, expected in EXPECTED_SETTINGS.items():
        assert meteora_settings(name) == expected, name
    # the run's settings are the base; -wN and the ablations change only their fields
    base = SelectorSettings(tau=0.5, window=1, pairing="convergent")
    assert meteora_settings("meteora", base) == base
    assert meteora_settings("meteora-pooling-w3", base) == base.replace(use_pairing=False, window=3)
    with pytest.raises(KeyError):
        meteora_settings("meteora-everything")


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("METEORA_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_bench_methods_select_exactly_what_reranker_search_selects(home, tiny_st_dir):
    bench = make_benchmark()
    gen = FakeGenerator()
    cfg = BenchmarkConfig(
        methods=list(EXPECTED_SETTINGS), split="test", candidates=4, embedding_model=str(tiny_st_dir),
        options={"n": 2, "batch_size": 3}, dataset="toy",
    )
    cfg.validate(bench)
    scorer = WordOverlapScorer()
    ctx = BenchmarkContext(cfg, benchmark=bench, generator=gen, scorer=scorer)
    hybrid = ctx.retriever("hybrid")
    outputs = {name: get_runner(name)(ctx) for name in EXPECTED_SETTINGS}
    assert len(gen.calls) == 1  # rationales generated once and shared by the METEORA methods
    assert gen.calls[0]["n"] == 2 and gen.calls[0]["include_query"] is True and gen.calls[0]["batch_size"] == 3

    context_added = 0
    for name, expected in EXPECTED_SETTINGS.items():
        variant = METEORA_VARIANTS[name.split("-w")[0]]
        uses_lm = variant.uses_lm
        reference = Reranker(
            scorer=scorer if variant.uses_scorer else None,
            generator=FakeGenerator() if uses_lm else None,
            encoder=ctx.encoder(),
            n_rationales=2,
            settings=expected,
            verifier="default" if variant.defence else None,
        )
        out = outputs[name]
        assert out.extra["selector"] == expected.to_dict() and out.extra["window"] == expected.window, name
        for qid, query in zip(ctx.qids, ctx.queries, strict=True):
            res = reference.search(query, hybrid, k=4)
            assert out.selections[qid] == res.selected_ids, (name, qid)
            assert out.run[qid] == res.ranked.to_run(), (name, qid)
            assert len(out.run[qid]) == 4
            context_added += len(set(res.selected_ids) - set(res.ranked.ids))
        if uses_lm:
            for key in ("generation_seconds", "fallback_rate", "cached_rate", "mean_rationales"):
                assert key in out.extra, (name, key)
            assert out.extra["cached_rate"] == 0.5 and out.extra["mean_rationales"] == 3.0
        assert out.extra["selection_seconds"] >= 0 and out.fixed_k is False
    # window 2 reached chunks of the abstracts that were not candidates (document context)
    assert context_added > 0
    # window 0 and window 2 really differ on this benchmark, and so do scorer and no scorer
    assert outputs["meteora-w2"].selections != outputs["meteora"].selections
    assert outputs["meteora-no-scorer"].run != outputs["meteora"].run


def test_run_benchmark_on_any_retrieval_benchmark(home, tiny_st_dir, tmp_path):
    bench = make_benchmark()
    cfg = BenchmarkConfig(
        methods=["bm25", "meteora-query-only"], split="test", ks=[1], out_dir=str(tmp_path / "out"),
        embedding_model=str(tiny_st_dir), plot=False, candidates=4, dataset="pubmedqa",
    )
    results = run_benchmark(cfg, benchmark=bench, command="test", scorer=WordOverlapScorer())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["toy_test.json"]
    assert results["config"]["dataset"] == "toy" and results["dataset"]["id"] == "toy"
    assert results["dataset"]["queries"] == 4 and results["dataset"]["corpus_chunks"] == 30
    assert results["config"]["selector"] == SelectorSettings().to_dict()
    methods = results["views"]["abstract"]["methods"]
    assert set(methods) == {"bm25", "bm25@1", "meteora-query-only"}
    assert 0.0 <= methods["meteora-query-only"]["precision"] <= 1.0
    with pytest.raises(InvalidInputError, match=r"split must be 'test' or 'all' for toy, got 'train'"):
        run_benchmark(dataclasses.replace(cfg, split="train"), benchmark=bench)
    # paired bootstrap of F1 differences, per view
    cmp = run_benchmark(dataclasses.replace(cfg, compare=["meteora-query-only:bm25@1"]), benchmark=bench,
                        scorer=WordOverlapScorer(), write=False)
    boot = cmp["views"]["abstract"]["paired_bootstrap_F1"]["meteora-query-only:bm25@1"]
    methods = cmp["views"]["abstract"]["methods"]
    assert boot["difference"] == pytest.approx(methods["meteora-query-only"]["F1"] - methods["bm25@1"]["F1"], abs=1e-4)
    assert boot["ci95"][0] <= boot["difference"] <= boot["ci95"][1] and boot["n_queries"] == 4
    for bad in (["meteora-query-only"], ["dense:bm25@1"], ["meteora-query-only:bm25@x"]):
        with pytest.raises(InvalidInputError, match="compare|k of"):
            dataclasses.replace(cfg, compare=bad, dataset="toy").validate(bench)


def test_dataset_registry_and_embedding_cache_key(home, tiny_st_dir):
    with pytest.raises(InvalidInputError, match=r"unknown dataset 'nope'"):
        BenchmarkConfig(dataset="nope").validate()
    with pytest.raises(InvalidInputError, match=r"unknown dataset 'nope'"):
        build_benchmark("nope")
    with pytest.raises(InvalidInputError, match=r"split must be 'dev', 'train' or 'all' for bioasq, got 'test'"):
        BenchmarkConfig(dataset="bioasq", split="test").validate()
    BenchmarkConfig(dataset="bioasq", split="dev", methods=["meteora"]).validate()
    assert BenchmarkConfig(dataset="bioasq", split="dev", limit=5, tag="x").results_stem() == "bioasq_dev_n5_x"
    # the same corpus under two dataset names: two cache files
    for name in ("toy", "toy2"):
        ctx = BenchmarkContext(BenchmarkConfig(embedding_model=str(tiny_st_dir)), benchmark=make_benchmark(name))
        assert ctx.corpus_embeddings().shape == (30, ctx.encoder().dim)
    names = sorted(p.name.rsplit("-", 1)[0] for p in (home / "embeddings").iterdir())
    assert names == ["toy", "toy2"]
    again = BenchmarkContext(BenchmarkConfig(embedding_model=str(tiny_st_dir)), benchmark=make_benchmark("toy2"))
    again.corpus_embeddings()
    assert again.embeddings_cached


# ------------------------------------------------------------------ search_batch


def test_search_batch_is_one_retrieval_and_equals_search(home, tiny_st_dir):
    bench = make_benchmark()
    ctx = BenchmarkContext(BenchmarkConfig(embedding_model=str(tiny_st_dir)), benchmark=bench)
    hybrid = ctx.retriever("hybrid")
    rr = Reranker(FakeGenerator(), ctx.encoder(), None, SelectorSettings(window=1), include_query=True)
    calls = []
    real = hybrid.search

    def spy(query, k=10):
        calls.append(query)
        return real(query, k=k)

    hybrid.search = spy
    batch = rr.search_batch(ctx.queries, hybrid, k=4)
    assert calls == [list(ctx.queries)]  # one batched retriever call
    assert rr.generator.calls[0]["queries"] == list(ctx.queries)  # one batched generation
    for q, res in zip(ctx.queries, batch, strict=True):
        single = rr.search(q, hybrid, k=4)
        assert single.selected_ids == res.selected_ids and single.ranked.to_run() == res.ranked.to_run()
        assert res.rationales[0] == q
    # supplied rationales skip the generator
    rr = Reranker(FakeGenerator(), ctx.encoder(), None, SelectorSettings(window=1, cut="elbow"), include_query=True)
    last = list(rr.search(ctx.queries[0], hybrid, k=4).ranked)[-1]  # the weakest: a rationale quoting it picks it first
    n_calls = len(rr.generator.calls)
    given = rr.search_batch(ctx.queries[:2], hybrid, k=4, rationales=[[last.text], []])
    assert len(rr.generator.calls) == n_calls
    assert given[0].selected_ids[0] == last.id and given[1].rationales == [ctx.queries[1]]


def test_plain_dense_retriever_query_is_encoded_once():
    from meteora.retrievers.dense import DenseRetriever

    bench = make_benchmark()
    enc = Encoder(BagOfWordsModel(dim=64))
    dense = DenseRetriever(enc, backend="numpy").index(bench.corpus)
    seen: list[str] = []
    real = enc.encode

    def counting(texts, **kw):
        seen.extend(texts)
        return real(texts, **kw)

    enc.encode = counting  # type: ignore[method-assign]
    q = bench.queries["q1"]
    res = Reranker(scorer=None, generator=None, encoder=enc).search(q, dense, k=5)
    assert seen == [q]  # retrieval's embedding is the rationale's
    other = Reranker(scorer=None, generator=None, encoder=Encoder(BagOfWordsModel(dim=64))).search(q, dense, k=5)
    assert res.selected_ids == other.selected_ids and res.ranked.ids == other.ranked.ids


def _chunks(doc: str, texts: list[str]) -> list[dict]:
    return [{"id": f"{doc}-{i}", "doc_id": doc, "position": i, "text": t} for i, t in enumerate(texts)]


def test_document_context_follows_a_reindexed_retriever():
    """Re-indexing a retriever with a corpus of the same size used to expand from the old
    corpus (a cache keyed by corpus length); context now comes from the passage store."""
    from meteora.pipeline import retrieve_pools
    from meteora.retrievers import BM25Retriever

    old = _chunks("a", ["aspirin stroke trial", "old neighbour one", "old neighbour two"])
    new = _chunks("a", ["aspirin stroke trial", "new neighbour one", "new neighbour two"])
    bm25 = BM25Retriever(backend="numpy")
    enc = Encoder(BagOfWordsModel(dim=16))
    settings = SelectorSettings(window=1)
    for corpus in (old, new, old):
        bm25.index(corpus)
        (pool,) = retrieve_pools(["aspirin stroke"], bm25, k=1, encoder=enc, settings=settings)
        texts = [p.text for p in pool.context]
        assert corpus[1]["text"] in texts and set(texts) <= {c["text"] for c in corpus}
        assert texts == [c["text"] for c in corpus[:2]]  # ±1 of position 0, by position


def test_a_resaved_index_of_the_same_size_is_not_served_stale_neighbours(tmp_path):
    """An index folder re-written with a same-sized corpus (same ids, doc_ids and
    positions, new texts) while a retriever loaded from it is still in use: a fresh load
    expands from the new corpus, the open one keeps its own (old, complete) version, and
    the pipeline of each selects from its own corpus only."""
    from meteora.pipeline import retrieve_pools
    from meteora.retrievers.base import load_retriever
    from meteora.retrievers.bm25 import BM25Retriever

    old = _chunks("a", ["aspirin stroke trial", "old neighbour one", "old neighbour two", "old tail"])
    new = _chunks("a", ["aspirin stroke trial", "new neighbour one", "new neighbour two", "new tail"])
    enc = Encoder(BagOfWordsModel(dim=16))
    settings = SelectorSettings(window=2)
    BM25Retriever(backend="numpy").index(old).save(tmp_path / "idx")
    before = load_retriever(tmp_path / "idx")
    (pool,) = retrieve_pools(["aspirin stroke"], before, k=1, encoder=enc, settings=settings)
    assert [p.text for p in pool.context] == [c["text"] for c in old[:3]]

    BM25Retriever(backend="numpy").index(new).save(tmp_path / "idx")
    after = load_retriever(tmp_path / "idx")
    assert len(after) == len(before)
    for retriever, corpus in ((after, new), (before, old), (after, new)):
        (pool,) = retrieve_pools(["aspirin stroke"], retriever, k=1, encoder=enc, settings=settings)
        assert [p.text for p in pool.context] == [c["text"] for c in corpus[:3]]
    rr = Reranker(scorer=None, generator=None, encoder=enc, settings=settings)
    texts = {p.text for p in rr.search("aspirin stroke", after, k=1).selected}
    assert "new neighbour one" in texts and not any(t.startswith("old") for t in texts)


def test_document_context_comes_from_the_saved_store_by_doc_and_position(tmp_path):
    from meteora.pipeline import retrieve_pools
    from meteora.retrievers import BM25Retriever, load_retriever
    from meteora.retrievers.passage_store import SqlitePassages

    corpus = _chunks("a", [f"chunk {i} filler" for i in range(6)]) + _chunks("b", ["insulin dose", "glucose"])
    corpus[3]["text"] = "aspirin stroke trial"
    saved = BM25Retriever(backend="numpy").index(corpus).save(tmp_path / "idx")
    loaded = load_retriever(saved)
    assert isinstance(loaded.passage_store, SqlitePassages)
    enc = Encoder(BagOfWordsModel(dim=16))
    (pool,) = retrieve_pools(["aspirin stroke"], loaded, k=1, encoder=enc, settings=SelectorSettings(window=2))
    assert [p.id for p in pool.context] == ["a-1", "a-2", "a-3", "a-4", "a-5"]
    (none,) = retrieve_pools(["aspirin stroke"], loaded, k=1, encoder=enc, settings=SelectorSettings())
    assert none.context is None  # window 0: nothing looked up
    # the whole pipeline selects the same from the loaded index as from the in-memory one
    rr = Reranker(scorer=None, generator=None, encoder=enc, settings=SelectorSettings(window=2))
    mem = BM25Retriever(backend="numpy").index(corpus)
    assert rr.search("aspirin stroke", loaded, k=3).to_dict() == rr.search("aspirin stroke", mem, k=3).to_dict()


def test_empty_pools_give_empty_results_and_search_raises():
    from meteora.retrievers.bm25 import BM25Retriever

    bench = make_benchmark()
    bm25 = BM25Retriever(backend="numpy").index(bench.corpus)
    rr = Reranker(scorer=None, generator=FakeGenerator(), encoder=Encoder(BagOfWordsModel(dim=64)), include_query=True)
    out = rr.search_batch(["zzzz qqqq", bench.queries["q2"]], bm25, k=3)
    assert out[0].selected == [] and len(out[0].ranked) == 0 and out[0].rationales == ["zzzz qqqq"]
    assert out[1].selected and rr.generator.calls[-1]["queries"] == [bench.queries["q2"]]  # none for the empty one
    with pytest.raises(InvalidInputError, match="found no candidates"):
        rr.search("zzzz qqqq", bm25, k=3)
    with pytest.raises(InvalidInputError, match="not a meteora.pipeline.CandidatePool"):
        rr.rerank_pools([["a"]])  # type: ignore[list-item]
    pool = CandidatePool("q", list(bench.corpus[:2]))
    with pytest.raises(InvalidInputError, match="got 2 rationale lists for 1 queries"):
        rr.rerank_pools([pool], rationales=[["a"], ["b"]])


# ------------------------------------------------------------------ other callers


def test_qa_selections_equal_reranker_search(tiny_st_dir):
    from meteora.evaluation.selections import build_retriever, meteora_selections

    bench = make_benchmark()
    enc = Encoder(str(tiny_st_dir), device="cpu")
    retriever = build_retriever(bench, enc, bm25_backend="numpy")
    qids = ["q0", "q1", "q2"]
    gen = FakeGenerator()
    for settings in (SelectorSettings(), SelectorSettings(window=2), SelectorSettings(window=1, order="document")):
        sel = meteora_selections(bench, qids, generator=gen, retriever=retriever, candidates=4, settings=settings,
                                 scorer=None)
        rr = Reranker(scorer=None, generator=FakeGenerator(), encoder=enc, settings=settings, include_query=True)
        for q in qids:
            assert sel[q] == rr.search(bench.queries[q], retriever, k=4).selected_ids, (settings, q)


# ------------------------------------------------------------------ no import cycle


def test_bench_registry_imports_one_way_in_a_fresh_interpreter():
    code = (
        "import sys\n"
        "import meteora.bench.pubmedqa\n"
        "import meteora.bench.methods as p\n"
        "assert 'meteora.bench.meteora_methods' not in sys.modules\n"
        "assert p.get_runner('meteora-query-only-w2') is not None and p.get_runner('colbert') is None\n"
        "print(','.join(sorted(p.METHOD_RUNNERS)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().split(",") == sorted(
        ["bm25", "dense", "hybrid", "meteora", "meteora-no-expansion", "meteora-no-scorer", "meteora-pairing",
         "meteora-pooling", "meteora-query-only", "meteora-query-only-no-scorer", "meteora-no-defence",
         "meteora-query-only-no-defence", "meteora-band", "meteora-elbow", "meteora-query-only-band"]
    )
    code = "import sys\nimport meteora.bench.methods\nprint('meteora.bench.pubmedqa' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


def _bench_imports(path: Path) -> set[str]:
    """meteora.bench modules a file imports at run time (TYPE_CHECKING blocks excluded)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("meteora.bench"):
            found.add(node.module)
            if node.module == "meteora.bench":
                found.update(f"meteora.bench.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("meteora.bench."))
    return found


def test_bench_modules_form_no_import_cycle():
    folder = Path(meteora.__file__).parent / "bench"
    graph = {f"meteora.bench.{p.stem}": _bench_imports(p) for p in folder.glob("*.py") if p.stem != "__init__"}
    assert "meteora.bench.methods" in graph["meteora.bench.pubmedqa"]
    assert "meteora.bench.pubmedqa" not in graph["meteora.bench.methods"]

    def visit(node: str, stack: tuple[str, ...]) -> None:
        assert node not in stack, f"import cycle: {' -> '.join((*stack, node))}"
        for nxt in graph.get(node, ()):
            visit(nxt, (*stack, node))

    for module in graph:
        visit(module, ())


def test_document_context_follows_a_reindexed_corpus_of_the_same_size():
    """Issue 20 §2: the per-retriever document index was keyed on the corpus size, so
    ``retriever.index(new_corpus)`` with as many passages expanded from the old corpus."""
    from meteora.pipeline import document_context
    from meteora.retrievers.bm25 import BM25Retriever
    from meteora.types import Passage

    def corpus(word: str) -> list[Passage]:
        return [Passage(id=f"{word}{i}", text=f"{word} chunk {i}", doc_id="d", position=i) for i in range(3)]

    retriever = BM25Retriever().index(corpus("aspirin"))
    assert [p.text for p in document_context(retriever, [retriever.get_passage("aspirin0")], 2)] == [
        "aspirin chunk 0", "aspirin chunk 1", "aspirin chunk 2"
    ]
    retriever.index(corpus("statin"))  # same size, same doc id and positions
    assert [p.text for p in document_context(retriever, [retriever.get_passage("statin0")], 2)] == [
        "statin chunk 0", "statin chunk 1", "statin chunk 2"
    ]

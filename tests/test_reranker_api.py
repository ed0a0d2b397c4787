"""The calls users of other rerankers expect from a :class:`Reranker`: the cross-encoder
``rank`` view, real async (``arank`` / ``arerank``: the event loop keeps running),
``device=``, and the construction-time checks of what is passed as the generator (its
``generate`` signature, a cross-encoder or embedding model given as the LM, pickle
weights)."""

from __future__ import annotations

import asyncio
import json
import pickle
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from helpers_integrations import BEST, CORPUS, QUERY, KeywordModel, keyword_reranker

from meteora.embeddings.encoder import Encoder
from meteora.errors import InvalidInputError
from meteora.rationales.rationale_set import RationaleSet
from meteora.relevance import relevance_score
from meteora.rerank_result import RankedDocument
from meteora.reranker import Reranker

TEXTS = [c["text"] for c in CORPUS]


# ------------------------------------------------------------------ rank
def test_rank_is_the_full_ranking_with_indices_into_the_input():
    rr = keyword_reranker()
    out = rr.rank(QUERY, TEXTS)
    direct = rr.rerank(QUERY, TEXTS)
    assert all(isinstance(d, RankedDocument) for d in out)
    import meteora

    assert meteora.RankedDocument is RankedDocument and "RankedDocument" in meteora.__all__
    assert [d.index for d in out] == [int(h.id) for h in direct.ranked] and out[0].index == BEST
    assert [d.rank for d in out] == list(range(1, len(TEXTS) + 1))
    assert [d.score for d in out] == pytest.approx(direct.ranked.scores)
    # the learned cut (the default) ranks by P(relevant): the relevance is that probability
    assert direct.score_scale == "probability"
    assert [d.relevance_score for d in out] == pytest.approx(direct.ranked.scores)
    assert [d.relevance_score for d in out] == pytest.approx(
        [relevance_score(s, direct.score_scale) for s in direct.ranked.scores]
    )
    assert all(0.0 <= d.relevance_score <= 1.0 for d in out)
    assert [d.document for d in out] == [TEXTS[d.index] for d in out]
    assert [d.id for d in out if d.selected] == direct.selected_ids
    top = rr.rank(QUERY, TEXTS, top_k=2, return_documents=False)
    assert [d.index for d in top] == [d.index for d in out[:2]] and all(d.document is None for d in top)
    assert top[0].to_dict() == {"index": BEST, "score": out[0].score, "relevance_score": out[0].relevance_score,
                                "rank": 1, "selected": True, "id": str(BEST)}


def test_rank_keeps_the_callers_order_with_their_own_ids():
    rr = keyword_reranker()
    docs = [{"id": f"doc-{i}", "text": t} for i, t in reversed(list(enumerate(TEXTS)))]
    out = rr.rank(QUERY, docs)
    assert out[0].id == f"doc-{BEST}" and out[0].index == len(TEXTS) - 1 - BEST


@pytest.mark.parametrize(("kwargs", "match"), [({"top_k": 0}, "top_k"), ({"top_k": True}, "top_k"),
                                               ({"return_documents": "yes"}, "return_documents")])
def test_rank_bad_arguments(kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        keyword_reranker().rank(QUERY, TEXTS, **kwargs)


# ------------------------------------------------------------------ async
class SlowModel(KeywordModel):
    """The keyword model, 0.4 s per encode call (CPU work that would block a loop)."""

    def encode(self, texts, **kwargs):
        time.sleep(0.4)
        return super().encode(texts, **kwargs)


class AsyncGenerator:
    """A generator with an async path that takes 0.4 s; its sync path must not be used."""

    def __init__(self) -> None:
        self.async_calls = 0

    def generate(self, queries, n=None, *, batch_size=8, include_query=False, **options):
        raise AssertionError("the sync generate() was called from an async method")

    async def agenerate(self, queries, n=None, *, batch_size=8, include_query=False, **options):
        self.async_calls += 1
        await asyncio.sleep(0.4)
        return [RationaleSet(query=q, rationales=[q, "aspirin and stroke trials"]) for q in queries]


async def _with_ticker(coro):
    """Run ``coro`` while a ticker wakes every 10 ms; returns its result and the longest
    gap between two ticks (how long the loop was kept from running)."""
    ticks: list[float] = []
    done = asyncio.Event()

    async def ticker():
        while not done.is_set():
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.02)
    try:
        result = await coro
    finally:
        done.set()
        await task
    return result, max(b - a for a, b in zip(ticks, ticks[1:], strict=False))


def test_arank_awaits_the_async_generator_and_runs_the_encoder_off_the_loop():
    model = SlowModel()
    gen = AsyncGenerator()
    rr = Reranker(generator=gen, scorer=None, encoder=Encoder(model, cache=None))

    async def main():
        loop_thread = threading.get_ident()
        out, gap = await _with_ticker(rr.arank(QUERY, TEXTS, top_k=3))
        return out, gap, loop_thread

    out, gap, loop_thread = asyncio.run(main())
    assert gen.async_calls == 1
    assert model.threads and loop_thread not in model.threads  # the encoder ran in a worker thread
    assert gap < 0.2, f"the event loop was blocked for {gap:.2f} s"  # each encode call sleeps 0.4 s
    assert out[0].index == BEST and len(out) == 3
    sync = Reranker(generator=None, scorer=None, encoder=Encoder(KeywordModel(), cache=None))
    expect = sync.rerank_batch([QUERY], [TEXTS], rationales=[[QUERY, "aspirin and stroke trials"]])[0]
    assert [d.index for d in out] == [int(h.id) for h in expect.ranked[:3]]


def test_arerank_with_a_sync_only_generator_runs_it_in_a_thread():
    class SyncGenerator:
        def __init__(self):
            self.threads = []

        def generate(self, queries, n=None, *, batch_size=8, include_query=False, **options):
            self.threads.append(threading.get_ident())
            time.sleep(0.4)
            return [RationaleSet(query=q, rationales=[q]) for q in queries]

    gen = SyncGenerator()
    rr = Reranker(generator=gen, scorer=None, encoder=Encoder(KeywordModel(), cache=None))

    async def main():
        res, gap = await _with_ticker(rr.arerank(QUERY, TEXTS))
        return res, gap, threading.get_ident()

    res, gap, loop_thread = asyncio.run(main())
    assert gen.threads and loop_thread not in gen.threads and gap < 0.2
    assert res.selected_ids == keyword_reranker().rerank(QUERY, TEXTS).selected_ids


def test_concurrent_arerank_calls_match_the_sync_results():
    rr = keyword_reranker()
    queries = [QUERY, "Is insulin given to dogs?", "Fever in children?"]

    async def main():
        return await asyncio.gather(*(rr.arerank(q, TEXTS) for q in queries))

    results = asyncio.run(main())
    assert [r.selected_ids for r in results] == [rr.rerank(q, TEXTS).selected_ids for q in queries]
    batch = asyncio.run(rr.arerank_batch(queries, [TEXTS] * 3))
    assert [r.ranked.ids for r in batch] == [r.ranked.ids for r in results]


# ------------------------------------------------------------------ device
def test_device_goes_to_the_named_encoder_and_scorer(tiny_st_dir):
    rr = Reranker(generator=None, encoder=str(tiny_st_dir), scorer=None, device="cpu")
    assert rr.device == "cpu" and str(rr.encoder.model.device) == "cpu"
    with pytest.raises(InvalidInputError, match="device must be a string"):
        Reranker(generator=None, encoder=str(tiny_st_dir), scorer=None, device=0)


def test_device_goes_to_a_named_generator_on_transformers(tiny_llama_dir, monkeypatch):
    seen = {}

    def fake(name, adapter=None, **options):
        seen.update(options, name=name)
        return AsyncGenerator()

    from meteora.rationales.generator import RationaleGenerator

    monkeypatch.setattr(RationaleGenerator, "from_pretrained", staticmethod(fake))
    enc = Encoder(KeywordModel(), cache=None)
    Reranker(generator=str(tiny_llama_dir), encoder=enc, scorer=None, device="cpu")
    assert seen["device"] == "cpu" and seen["name"] == str(tiny_llama_dir)
    seen.clear()  # an OpenAI-compatible server chooses its own device
    Reranker(generator="served", encoder=enc, scorer=None, device="cuda")
    assert "device" in seen  # no base_url: a hub id on transformers
    seen.clear()
    Reranker.from_pretrained("served", encoder=enc, scorer=None, device="cuda", backend="openai",
                             base_url="http://127.0.0.1:9/v1")
    assert "device" not in seen and seen["backend"] == "openai"


# ------------------------------------------------------------------ what is passed as the generator
def test_a_generator_whose_generate_lacks_the_parameters_is_refused_at_construction():
    class OnlyQueries:
        def generate(self, queries):
            return []

    class NoSeed:
        def generate(self, queries, n=None, *, batch_size=8, include_query=False):
            return []

    enc = Encoder(KeywordModel(), cache=None)
    with pytest.raises(InvalidInputError, match=r"OnlyQueries.generate\(queries\) does not take n, batch_size, include_query"):
        Reranker(generator=OnlyQueries(), encoder=enc, scorer=None)
    with pytest.raises(InvalidInputError, match="does not take seed"):
        Reranker(generator=NoSeed(), encoder=enc, scorer=None, generation={"seed": 3})
    Reranker(generator=NoSeed(), encoder=enc, scorer=None)  # what the reranker passes, it takes


def _folder(tmp_path: Path, name: str, config: dict, files: dict[str, str] | None = None) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    for file, text in (files or {}).items():
        (folder / file).write_text(text)
    return folder


@pytest.mark.parametrize(
    ("config", "files", "words"),
    [
        ({"architectures": ["XLMRobertaForSequenceClassification"]}, {}, "is a cross-encoder (reranker)"),
        ({"architectures": ["BertModel"]}, {"modules.json": "[]"}, "is an embedding model"),
        ({"architectures": ["BertModel"]}, {}, "an encoder without a language-model head"),
    ],
)
def test_a_cross_encoder_or_embedding_model_as_the_generator_is_named_at_once(tmp_path, config, files, words):
    folder = _folder(tmp_path, "m", config, files)
    t0 = time.perf_counter()
    with pytest.raises(InvalidInputError, match="rationale generator") as info:
        Reranker(generator=str(folder), encoder=Encoder(KeywordModel(), cache=None), scorer=None)
    assert words in str(info.value) and "encoder=" in str(info.value)
    assert time.perf_counter() - t0 < 5


def test_hub_ids_of_cross_encoder_and_embedding_organisations(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = Encoder(KeywordModel(), cache=None)
    for name, words in (("cross-encoder/ms-marco-MiniLM-L-6-v2", "a cross-encoder"),
                        ("sentence-transformers/all-mpnet-base-v2", "an embedding model")):
        with pytest.raises(InvalidInputError, match=words):
            Reranker(generator=name, encoder=enc, scorer=None)


class _Touch:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_weights_are_refused_and_never_unpickled(tmp_path, tiny_llama_dir, tiny_st_dir):
    import shutil

    marker = tmp_path / "unpickled"
    payload = pickle.dumps({"w": _Touch(marker)})
    llama = tmp_path / "llama"
    shutil.copytree(tiny_llama_dir, llama, ignore=shutil.ignore_patterns("*.safetensors"))
    (llama / "pytorch_model.bin").write_bytes(payload)
    with pytest.raises(InvalidInputError, match="loads weights only from .safetensors") as info:
        Reranker(generator=str(llama), encoder=Encoder(KeywordModel(), cache=None), scorer=None)
    assert f"'{llama / 'model.safetensors'}'" in str(info.value) and "weights_only=True" in str(info.value)
    st = tmp_path / "st"
    shutil.copytree(tiny_st_dir, st, ignore=shutil.ignore_patterns("*.safetensors"))
    (st / "pytorch_model.bin").write_bytes(payload)
    with pytest.raises(InvalidInputError, match="embedding model"):
        Encoder(str(st))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    (adapter / "adapter_model.bin").write_bytes(payload)
    from meteora.scorer import EvidenceScorer

    with pytest.raises(InvalidInputError, match="adapter_model.safetensors"):
        EvidenceScorer(str(adapter), base=str(tiny_st_dir))
    assert not marker.exists()
    assert np.isfinite(Encoder(str(tiny_st_dir)).encode(["a"])).all()  # safetensors folders load as before


def test_relevance_score_follows_the_cut_scale():
    """The learned cut ranks by P(relevant), kept as the relevance; the band's cosine-scale
    scores are rescaled: either way relevance is monotone in the score and in [0, 1]."""
    from meteora.selection.selector_settings import SelectorSettings

    learned = keyword_reranker().rerank(QUERY, TEXTS)
    assert learned.score_scale == "probability"
    assert learned.selection.explanation.to_dict()["score_scale"] == "probability"
    band = keyword_reranker(settings=SelectorSettings(cut="band")).rerank(QUERY, TEXTS)
    assert band.score_scale == "cosine"
    assert relevance_score(0.4, "probability") == pytest.approx(0.4)
    assert relevance_score(0.4, "cosine") == pytest.approx(0.7)
    with pytest.raises(InvalidInputError, match="scale must be one of"):
        relevance_score(0.4, "logit")


def test_given_rationales_the_learned_cut_cannot_read_are_warned_about(caplog):
    """The learned cut's query-only and stage-1 models read no rationale features: given
    rationales are recorded but select nothing, and the reranker says so; the elbow reads them."""
    import logging

    from meteora.selection.selector_settings import SelectorSettings

    rr = keyword_reranker()
    with caplog.at_level(logging.WARNING, logger="meteora.reranker"):
        (res,) = rr.rerank_batch(["unrelated words"], [TEXTS], rationales=[[QUERY]])
    assert res.rationales == [QUERY]
    assert any("does not read rationales" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="meteora.reranker"):  # once per reranker, not per call
        rr.rerank_batch(["unrelated words"], [TEXTS], rationales=[[QUERY]])
    assert not any("does not read rationales" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="meteora.reranker"):
        (elbow,) = keyword_reranker(settings=SelectorSettings(cut="elbow")).rerank_batch(
            ["unrelated words"], [TEXTS], rationales=[[QUERY]]
        )
    assert not any("does not read rationales" in r.getMessage() for r in caplog.records)
    assert elbow.ranked[0].id == str(BEST)

"""The Reranker front end: query-only and LM modes, batching, bad input, reuse of
stored embeddings, verification.

Two encoders are used: the tiny random BERT from conftest (the real sentence-transformers
path) and a keyword-count "model" whose embeddings have a known meaning, so that
which passage should be selected is known in advance.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from meteora.embeddings.encoder import Encoder
from meteora.errors import InvalidInputError
from meteora.rerank_result import RerankResult
from meteora.reranker import Reranker
from meteora.selection.selector_settings import SelectorSettings
from meteora.selection_inputs import MAX_EMBED_CHARS
from meteora.types import Passage, Ranking
from meteora.verdicts import Verdict

QUERY = "Does aspirin reduce stroke risk?"

# keyword axes of the KeywordModel; a constant bias axis keeps every row non-zero
VOCAB = ["aspirin", "stroke", "dog", "kidney", "insulin", "glucose", "fever", "child", "buy"]


class KeywordModel:
    """A SentenceTransformer stand-in: an embedding counts keyword occurrences."""

    def __init__(self) -> None:
        self.name_or_path = "keyword-model"
        self.max_seq_length = 512

    def get_embedding_dimension(self) -> int:
        return len(VOCAB) + 1

    def encode(self, texts, batch_size=32, show_progress_bar=False, convert_to_numpy=True, normalize_embeddings=True):
        rows = []
        for t in texts:
            low = t.lower()
            rows.append([float(low.count(w)) for w in VOCAB] + [0.05])
        arr = np.asarray(rows, dtype=np.float32).reshape(len(texts), len(VOCAB) + 1)
        if normalize_embeddings:
            arr /= np.linalg.norm(arr, axis=1, keepdims=True)
        return arr


@pytest.fixture
def kw_encoder() -> Encoder:
    return Encoder(KeywordModel())


def _doc_passages() -> list[dict]:
    return [
        {"id": "A0", "doc_id": "A", "position": 0, "text": "Background on cardiovascular disease in adults."},
        {"id": "A1", "doc_id": "A", "position": 1, "text": "Aspirin lowered stroke incidence; aspirin and stroke."},
        {"id": "A2", "doc_id": "A", "position": 2, "text": "Adverse events were rare."},
        {"id": "B0", "doc_id": "B", "position": 0, "text": "Dogs with kidney disease."},
        {"id": "B1", "doc_id": "B", "position": 1, "text": "Insulin and glucose in dogs."},
        {"id": "C0", "doc_id": "C", "position": 0, "text": "Fever in a child."},
    ]


class CountingEncode:
    """Replaces ``encoder.encode`` on an instance; records every text it embeds."""

    def __init__(self, encoder: Encoder, monkeypatch) -> None:
        self.real = encoder.encode
        self.seen: list[str] = []
        monkeypatch.setattr(encoder, "encode", self)

    def __call__(self, texts, **kwargs):
        self.seen.extend(texts)
        return self.real(texts, **kwargs)


@pytest.fixture(scope="module")
def tiny_generator(tiny_llama_dir):
    from meteora.rationales.generator import RationaleGenerator

    return RationaleGenerator.from_pretrained(str(tiny_llama_dir), cache=None)


class GarbageLM(torch.nn.Module):
    """A causal-LM stand-in that answers every prompt with the same junk (then EOS)."""

    def __init__(self, tokenizer, junk: str) -> None:
        super().__init__()
        self.tok = tokenizer
        self.junk = junk
        self.calls = 0
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.config = type("Cfg", (), {"name_or_path": "garbage-lm", "max_position_embeddings": 4096})()
        self.generation_config = type("GC", (), {"eos_token_id": tokenizer.eos_token_id})()

    def generate(self, input_ids, attention_mask=None, generation_config=None, **_):
        self.calls += 1
        new = self.tok(self.junk, add_special_tokens=False)["input_ids"][: generation_config.max_new_tokens]
        new = new + [self.tok.eos_token_id]
        extra = torch.tensor([new] * input_ids.shape[0], dtype=input_ids.dtype)
        return torch.cat([input_ids, extra], dim=1)


def _garbage_generator(tiny_llama_dir, junk: str):
    from transformers import AutoTokenizer

    from meteora.rationales.generator import RationaleGenerator

    tok = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    return RationaleGenerator(GarbageLM(tok, junk), tok, template="chat", cache=None, prefix_cache=False)


def _check_result_invariants(res: RerankResult, candidate_ids: list[str]) -> None:
    assert isinstance(res.ranked, Ranking)
    assert sorted(res.ranked.ids) == sorted(candidate_ids)  # every candidate ranked once
    scores = res.ranked.scores
    assert all(a >= b for a, b in zip(scores, scores[1:], strict=False)), scores
    assert all(-1.0 - 1e-5 <= s <= 1.0 + 1e-5 for s in scores)
    assert [h.rank for h in res.ranked] == list(range(1, len(candidate_ids) + 1))
    assert set(res.selected_ids) <= set(candidate_ids)
    assert len(set(res.selected_ids)) == len(res.selected_ids)
    assert res.selected, "the pairing stage always selects at least one passage"


# ------------------------------------------------------------------ query-only mode
def test_query_only_mode_tiny_encoder(tiny_encoder):
    texts = [
        "Aspirin reduces the risk of myocardial infarction in adults.",
        "Dogs and cats with renal failure.",
        "Results: the odds ratio was 0.72.",
        "Methods: a retrospective cohort of children with asthma.",
    ]
    rr = Reranker(scorer=None, generator=None, encoder=tiny_encoder)
    res = rr.rerank(QUERY, texts)
    assert res.rationales == [QUERY]
    assert res.rationale_set is None and res.fallback is False
    _check_result_invariants(res, ["0", "1", "2", "3"])
    # the learned cut (default): a score is P(relevant), the selection the top of the ranking
    assert all(0.0 <= h.score <= 1.0 for h in res.ranked)
    assert res.selected_ids == res.ranked.ids[: len(res.selected)]
    assert res.selection.explanation.cut == "learned"
    # the elbow: a score is the cosine between the query and the passage (documented meaning)
    elbow = Reranker(scorer=None, generator=None, encoder=tiny_encoder, settings=SelectorSettings(cut="elbow"))
    res = elbow.rerank(QUERY, texts)
    # one rationale: pairing takes its best match, which is the top of the ranking
    assert res.selected[0].id == res.ranked[0].id
    q = tiny_encoder.encode([QUERY])[0]
    p = tiny_encoder.encode(texts)
    expected = {str(i): float(q @ p[i]) for i in range(len(texts))}
    for hit in res.ranked:
        assert math.isclose(hit.score, expected[hit.id], abs_tol=1e-5)
    assert "query-only" in repr(rr)


def test_query_only_selects_the_matching_passage(kw_encoder):
    # the learned cut without a scorer ranks documents: it keeps the matching document's
    # chunks and nothing of the others
    rr = Reranker(scorer=None, generator=None, encoder=kw_encoder)
    res = rr.rerank("aspirin stroke", _doc_passages())
    assert "A1" in res.selected_ids and {p.doc_id for p in res.selected} == {"A"}
    assert {h.passage.doc_id for h in res.ranked[:3]} == {"A"}
    # the elbow keeps the matching chunk itself
    elbow = Reranker(scorer=None, generator=None, encoder=kw_encoder, settings=SelectorSettings(cut="elbow"))
    res = elbow.rerank("aspirin stroke", _doc_passages())
    assert res.selected_ids[0] == "A1" and res.ranked[0].id == "A1"
    assert "B0" not in res.selected_ids


def test_inputs_str_dict_passage_and_ids(kw_encoder):
    rr = Reranker(scorer=None, generator=None, encoder=kw_encoder)
    mixed = [
        "Aspirin and stroke prevention.",
        {"text": "Dogs with kidney disease.", "id": "dict-id"},
        Passage("Fever in a child.", id="passage-id", doc_id="D", position=4),
    ]
    res = rr.rerank("aspirin stroke", mixed)
    assert sorted(res.ranked.ids) == ["0", "dict-id", "passage-id"]
    assert res.selected_ids[0] == "0"
    by_id = {h.id: h.passage for h in res.ranked}
    assert by_id["passage-id"].doc_id == "D" and by_id["passage-id"].position == 4

    res2 = rr.rerank("aspirin stroke", mixed, ids=["x", "y", "z"])
    assert sorted(res2.ranked.ids) == ["x", "y", "z"]
    assert res2.selected_ids[0] == "x"


def test_top_k_and_fixed_k_view(kw_encoder):
    settings = SelectorSettings(window=2, cut="elbow")
    rr = Reranker(scorer=None, generator=None, encoder=kw_encoder, top_k=2, settings=settings)
    res = rr.rerank("aspirin stroke", _doc_passages())
    assert len(res.selected) == 2
    assert res.selected_ids[0] == "A1"
    assert res.top_k(3).ids == res.ranked.ids[:3]
    full = Reranker(scorer=None, generator=None, encoder=kw_encoder, settings=settings).rerank("aspirin stroke", _doc_passages())
    assert len(full.selected) > 2  # window 2 adds A0 and A2: top_k really cut
    learned = Reranker(scorer=None, generator=None, encoder=kw_encoder, top_k=2).rerank("aspirin stroke", _doc_passages())
    assert learned.selected_ids == learned.ranked.ids[:2]


def test_order_document(kw_encoder):
    # both aspirin and dog chunks match; window 1 pulls in their neighbours
    query = "aspirin stroke dog kidney insulin"
    by_score = Reranker(scorer=None, generator=None, encoder=kw_encoder, settings=SelectorSettings(window=1)).rerank(query, _doc_passages())
    by_doc = Reranker(scorer=None, generator=None, encoder=kw_encoder, settings=SelectorSettings(window=1, order='document')).rerank(query, _doc_passages())
    assert sorted(by_doc.selected_ids) == sorted(by_score.selected_ids)
    docs = [p.doc_id for p in by_doc.selected]
    # documents are contiguous, and positions increase inside a document
    assert docs == sorted(docs, key=docs.index)
    for d in set(docs):
        positions = [p.position for p in by_doc.selected if p.doc_id == d]
        assert positions == sorted(positions)
    # the document of the best chunk comes first
    assert by_doc.selected[0].doc_id == by_score.selected[0].doc_id


def test_explain_and_to_dict_with_given_rationales(kw_encoder):
    rr = Reranker(scorer=None, generator=None, encoder=kw_encoder, settings=SelectorSettings(window=1, cut="elbow"))
    rats = ["Look for aspirin and stroke outcomes.", "Kidney disease in dogs."]
    (res,) = rr.rerank_batch([QUERY], [_doc_passages()], rationales=[rats])
    assert res.rationales == rats
    text = res.explain()
    for r in rats:
        assert r in text
    assert "selected (" in text and "Expansion (window 1)" in text
    assert {"A1", "B0"} <= set(res.selected_ids)  # one chunk per rationale
    d = res.to_dict()
    back = json.loads(json.dumps(d))
    assert back["query"] == QUERY
    assert back["rationales"] == rats
    assert [s["id"] for s in back["selected"]] == res.selected_ids
    assert [r["id"] for r in back["ranked"]] == res.ranked.ids
    assert back["fallback"] is False
    assert "selection" in back
    assert "RerankResult(" in repr(res)


# ------------------------------------------------------------------ with an LM
def test_tiny_random_generator_does_not_crash(tiny_generator, tiny_encoder):
    rr = Reranker(scorer=None, generator=tiny_generator, encoder=tiny_encoder, settings=SelectorSettings(window=1))
    passages = [p["text"] for p in _doc_passages()]
    res = rr.rerank(QUERY, passages)
    _check_result_invariants(res, [str(i) for i in range(len(passages))])
    assert res.rationale_set is not None
    # documented: garbage -> the query stands in (fallback); otherwise the query is
    # kept as the anchor rationale in front of what survived the filters
    assert res.fallback or res.rationales[0] == QUERY
    assert all(isinstance(r, str) and r.strip() for r in res.rationales)
    json.dumps(res.to_dict())


@pytest.mark.parametrize("junk", ["", "@@ ## !! ?? ~~", "\n\n\n"])
def test_garbage_lm_falls_back_to_the_query(tiny_llama_dir, kw_encoder, junk):
    gen = _garbage_generator(tiny_llama_dir, junk)
    rr = Reranker(scorer=None, generator=gen, encoder=kw_encoder)
    res = rr.rerank("aspirin stroke?", _doc_passages())
    assert res.fallback is True
    assert res.rationales == ["aspirin stroke?"]
    query_only = Reranker(scorer=None, generator=None, encoder=kw_encoder).rerank("aspirin stroke?", _doc_passages())
    assert res.selected_ids == query_only.selected_ids
    assert "none usable from the generator" in res.explain()
    assert res.to_dict()["fallback"] is True
    assert gen.model.calls == 1


def test_rerank_batch_one_generation_call(tiny_generator, tiny_encoder, monkeypatch):
    calls: list[list[str]] = []
    real = tiny_generator.generate

    def counting(queries, *args, **kwargs):
        calls.append(list(queries))
        return real(queries, *args, **kwargs)

    monkeypatch.setattr(tiny_generator, "generate", counting)
    model_calls = {"n": 0}
    real_model_generate = tiny_generator.model.generate

    def counting_model(*args, **kwargs):
        model_calls["n"] += 1
        return real_model_generate(*args, **kwargs)

    monkeypatch.setattr(tiny_generator.model, "generate", counting_model)
    rr = Reranker(scorer=None, generator=tiny_generator, encoder=tiny_encoder, batch_size=8)
    queries = ["Does aspirin reduce stroke?", "Is insulin safe in dogs?", "Fever in children?"]
    pools = [[p["text"] for p in _doc_passages()], ["Dogs.", "Insulin and glucose."], ["Fever.", "Child."]]
    results = rr.rerank_batch(queries, pools)
    assert len(calls) == 1 and calls[0] == queries
    assert model_calls["n"] == 1  # all three queries in one forward batch
    assert [r.query for r in results] == queries
    for r, pool in zip(results, pools, strict=True):
        _check_result_invariants(r, [str(i) for i in range(len(pool))])


def test_rerank_batch_with_given_rationales_skips_the_generator(tiny_generator, tiny_encoder, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("generate() must not be called when rationales are given")

    monkeypatch.setattr(tiny_generator, "generate", forbidden)
    rr = Reranker(scorer=None, generator=tiny_generator, encoder=tiny_encoder)
    (res,) = rr.rerank_batch(["aspirin?"], [["a b c", "d e f"]], rationales=[["look for aspirin"]])
    assert res.rationales == ["look for aspirin"]


# ------------------------------------------------------------------ bad input
@pytest.fixture
def qo(kw_encoder) -> Reranker:
    return Reranker(scorer=None, generator=None, encoder=kw_encoder)


@pytest.mark.parametrize(
    "query,passages,match",
    [
        ("", ["a"], "query is empty"),
        ("   ", ["a"], "query is empty"),
        (None, ["a"], "query must be a str"),
        (42, ["a"], "query must be a str"),
        ("q", [], "empty candidate list"),
        ("q", None, "passages must be a list"),
        ("q", 7, "passages must be a list"),
        ("q", "just one string", "wrap it in a list"),
        ("q", {"text": "a dict"}, "wrap it in a list"),
        ("q", ["a", 3], r"passage #1 has type int"),
        ("q", ["a", ""], r"passage #1 .* has empty text"),
        ("q", [{"id": "x"}], "without a 'text' key"),
        ("q", [{"text": "a", "id": "d"}, {"text": "b", "id": "d"}], r"duplicate passage id 'd' \(passages #0 and #1\)"),
    ],
)
def test_bad_rerank_input(qo, query, passages, match):
    with pytest.raises(InvalidInputError, match=match):
        qo.rerank(query, passages)


def test_bad_ids(qo):
    with pytest.raises(InvalidInputError, match="got 1 ids for 2 passages"):
        qo.rerank("q", ["a", "b"], ids=["x"])
    with pytest.raises(InvalidInputError, match="duplicate passage id 'x'"):
        qo.rerank("q", ["a", "b"], ids=["x", "x"])
    with pytest.raises(InvalidInputError, match="ids must be a list"):
        qo.rerank("q", ["a", "b"], ids="xy")


def test_bad_rerank_batch_input(qo):
    with pytest.raises(InvalidInputError, match="queries must be a list"):
        qo.rerank_batch("q", [["a"]])
    with pytest.raises(InvalidInputError, match="got 1 for 2 queries"):
        qo.rerank_batch(["q1", "q2"], [["a"]])
    with pytest.raises(InvalidInputError, match="got NoneType"):
        qo.rerank_batch(["q1"], None)
    with pytest.raises(InvalidInputError, match="got str"):
        qo.rerank_batch(["q1"], "abc")
    with pytest.raises(InvalidInputError, match="query #1 has an empty candidate list"):
        qo.rerank_batch(["q1", "q2"], [["a"], []])
    with pytest.raises(InvalidInputError, match=r"query #0: duplicate"):
        qo.rerank_batch(["q1"], [[{"text": "a", "id": "1"}, {"text": "b", "id": "1"}]])
    with pytest.raises(InvalidInputError, match="ids must hold one entry"):
        qo.rerank_batch(["q1", "q2"], [["a"], ["b"]], ids=[None])
    with pytest.raises(InvalidInputError, match="passage_embeddings must hold one entry"):
        qo.rerank_batch(["q1", "q2"], [["a"], ["b"]], passage_embeddings=[None])
    with pytest.raises(InvalidInputError, match="rationale lists"):
        qo.rerank_batch(["q1", "q2"], [["a"], ["b"]], rationales=[["r"]])
    with pytest.raises(InvalidInputError, match=r"rationales\[0\] must be a list of non-empty strings"):
        qo.rerank_batch(["q1"], [["a"]], rationales=["not a list"])
    with pytest.raises(InvalidInputError, match=r"rationales\[0\]"):
        qo.rerank_batch(["q1"], [["a"]], rationales=[["ok", ""]])
    # generators of candidate lists are accepted
    out = qo.rerank_batch(["aspirin"], (c for c in [["aspirin", "dog"]]))
    assert out[0].ranked.ids == ["0", "1"]


def test_bad_passage_embeddings(qo):
    with pytest.raises(InvalidInputError, match="got 1 passage embeddings for 2 passages"):
        qo.rerank("q", ["a", "b"], passage_embeddings=np.ones((1, len(VOCAB) + 1)))
    with pytest.raises(InvalidInputError):
        qo.rerank("q", ["a", "b"], passage_embeddings=np.ones((2, 3)))  # wrong dimension
    with pytest.raises(InvalidInputError):
        qo.rerank("q", ["a", "b"], passage_embeddings=np.full((2, len(VOCAB) + 1), np.nan))


def test_given_passage_embeddings_skip_encoding(kw_encoder, monkeypatch):
    texts = [p["text"] for p in _doc_passages()]
    emb = kw_encoder.encode(texts)
    counter = CountingEncode(kw_encoder, monkeypatch)
    rr = Reranker(scorer=None, generator=None, encoder=kw_encoder)
    res = rr.rerank("aspirin stroke", texts, passage_embeddings=emb)
    assert counter.seen == ["aspirin stroke"]
    assert res.selected_ids[0] == "1"


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"top_k": 0}, "top_k must be a positive integer"),
        ({"top_k": 2.5}, "top_k"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"n_rationales": 0}, "n_rationales must be a positive integer"),
        ({"settings": {"window": 1}}, "settings must be a meteora.SelectorSettings"),
        ({"verifier": "yes please"}, "verifier must be .default. .the poison defence., None, True"),
        ({"verifier": True}, "verifier=True needs an LM"),
    ],
)
def test_bad_constructor_arguments(kw_encoder, kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        Reranker(scorer=None, generator=None, encoder=kw_encoder, **kwargs)


def test_one_megabyte_passage(kw_encoder, monkeypatch):
    huge = ("aspirin stroke " * 70_000)[: 1 << 20]
    assert len(huge) == 1 << 20
    passages = [{"id": "huge", "text": huge}, {"id": "dog", "text": "Dogs with kidney disease."}]
    counter = CountingEncode(kw_encoder, monkeypatch)
    res = Reranker(scorer=None, generator=None, encoder=kw_encoder).rerank("aspirin", passages)
    assert max(len(t) for t in counter.seen) <= MAX_EMBED_CHARS  # truncated for embedding only
    assert res.selected_ids[0] == "huge"
    assert res.selected[0].text == huge  # returned intact
    assert len(res.to_dict()["selected"][0]["text"]) == 1 << 20


def test_one_megabyte_passage_real_tokenizer(tiny_encoder):
    huge = "Aspirin reduces stroke risk in adults. " * 27_000
    assert len(huge) > 1_000_000
    res = Reranker(scorer=None, generator=None, encoder=tiny_encoder).rerank(QUERY, [huge, "Dogs with kidney disease."])
    assert {h.id for h in res.ranked} == {"0", "1"}
    assert next(h for h in res.ranked if h.id == "0").text == huge


# ------------------------------------------------------------------ search + stored embeddings
def _corpus() -> list[dict]:
    return _doc_passages() + [
        {"id": "D0", "doc_id": "D", "position": 0, "text": "Aspirin for fever in adults."},
        {"id": "D1", "doc_id": "D", "position": 1, "text": "Stroke outcomes after surgery."},
    ]


def test_search_reuses_dense_embeddings(kw_encoder, monkeypatch):
    from meteora.retrievers.dense import DenseRetriever

    dense = DenseRetriever(kw_encoder, backend="numpy").index(_corpus())
    counter = CountingEncode(kw_encoder, monkeypatch)
    rr = Reranker(scorer=None, generator=None, encoder=kw_encoder, settings=SelectorSettings(window=1))
    res = rr.search("aspirin stroke", dense, k=5)
    corpus_texts = {p["text"] for p in _corpus()}
    assert not corpus_texts & set(counter.seen), "passages were re-encoded"
    assert counter.seen == ["aspirin stroke"]  # the query, once: retrieval's embedding is the rationale's
    assert len(res.ranked) == 5
    assert res.selected_ids[0] == "A1"
    _check_result_invariants(res, dense.search("aspirin stroke", k=5).ids)


def test_search_with_other_encoder_re_encodes(kw_encoder, monkeypatch):
    # a different encoder object: stored embeddings must not be trusted
    from meteora.retrievers.dense import DenseRetriever

    dense = DenseRetriever(kw_encoder, backend="numpy").index(_corpus())
    other = Encoder(KeywordModel())
    counter = CountingEncode(other, monkeypatch)
    res = Reranker(scorer=None, generator=None, encoder=other).search("aspirin stroke", dense, k=4)
    hits = dense.search("aspirin stroke", k=4)
    assert set(hits.ids) == set(res.ranked.ids)
    assert {h.text for h in hits} <= set(counter.seen)


def test_search_through_hybrid_reuses_dense_member(tiny_encoder, monkeypatch):
    from meteora.retrievers.bm25 import BM25Retriever
    from meteora.retrievers.dense import DenseRetriever
    from meteora.retrievers.hybrid import HybridRetriever

    hybrid = HybridRetriever([BM25Retriever(backend="numpy"), DenseRetriever(tiny_encoder, backend="numpy")])
    hybrid.index(_corpus())
    counter = CountingEncode(tiny_encoder, monkeypatch)
    res = Reranker(scorer=None, generator=None, encoder=tiny_encoder).search("aspirin stroke", hybrid, k=6)
    assert not {p["text"] for p in _corpus()} & set(counter.seen)
    assert len(res.ranked) == 6


def test_search_bad_input(qo, kw_encoder):
    from meteora.retrievers.dense import DenseRetriever

    dense = DenseRetriever(kw_encoder, backend="numpy").index(_corpus())
    with pytest.raises(InvalidInputError, match="query is empty"):
        qo.search("  ", dense, k=5)
    with pytest.raises(InvalidInputError, match="k must be"):
        qo.search("aspirin", dense, k=0)


# ------------------------------------------------------------------ verification
def test_callable_verifier_drops_flagged(kw_encoder):
    seen_accepted: list[list[str]] = []

    def no_ads(query, passage, accepted):
        seen_accepted.append([p.id for p in accepted])
        bad = "buy" in passage.text.lower()
        return Verdict(relevant=not bad, flagged=bad, flag_types=["INSTRUCTION"] if bad else [], reason="advert")

    passages = _doc_passages() + [
        {"id": "AD", "doc_id": "A", "position": 3, "text": "Aspirin stroke aspirin stroke: BUY now!"}
    ]
    plain = Reranker(scorer=None, generator=None, encoder=kw_encoder, settings=SelectorSettings(window=1)).rerank("aspirin stroke", passages)
    assert "AD" in plain.selected_ids  # it would be selected without the verifier
    rr = Reranker(scorer=None, generator=None, encoder=kw_encoder, verifier=no_ads, settings=SelectorSettings(window=1))
    res = rr.rerank("aspirin stroke", passages)
    assert "AD" not in res.selected_ids
    assert set(res.selected_ids) == set(plain.selected_ids) - {"AD"}
    assert res.verification is not None and res.verification.rejected_ids == ["AD"]
    assert "verifier dropped AD: INSTRUCTION" in res.explain()
    assert json.loads(json.dumps(res.to_dict()))["rejected"][0]["id"] == "AD"
    assert seen_accepted  # the callable saw the accepted-so-far list
    assert "verifier=True" in repr(rr)


def test_verifier_must_return_verdicts(kw_encoder):
    rr = Reranker(scorer=None, generator=None, encoder=kw_encoder, verifier=lambda q, p, a: True)
    with pytest.raises(InvalidInputError, match="must return a meteora.verifier.Verdict"):
        rr.rerank("aspirin", ["aspirin", "dog"])


def test_llm_verifier_on_garbage_lm_fails_closed(tiny_llama_dir, kw_encoder):
    gen = _garbage_generator(tiny_llama_dir, "no json here at all")
    rr = Reranker(scorer=None, generator=gen, encoder=kw_encoder, verifier=True)
    res = rr.rerank("aspirin stroke?", _doc_passages())
    assert res.verification is not None
    assert res.selected == []  # unusable verdicts drop the passage (fail closed)
    assert res.verification.rejected
    assert all(v.parse_error for _, v in res.verification.rejected)


# ------------------------------------------------------------------ presets
def test_from_preset_unknown_name(kw_encoder):
    with pytest.raises(InvalidInputError, match="unknown rationale preset 'no-such-preset'.*med-rationale-mistral-7b"):
        Reranker.from_preset("no-such-preset", encoder=kw_encoder)


def test_from_preset_routes_arguments(kw_encoder, tiny_generator, monkeypatch):
    from meteora.rationales.generator import RationaleGenerator

    got = {}

    def fake_from_preset(name, **kwargs):
        got["name"], got["kwargs"] = name, kwargs
        return tiny_generator

    monkeypatch.setattr(RationaleGenerator, "from_preset", staticmethod(fake_from_preset))
    rr = Reranker.from_preset('med-rationale-mistral-7b', encoder=kw_encoder, load_in_4bit=True, max_new_tokens=64, top_k=3, settings=SelectorSettings(window=2))
    assert got["name"] == "med-rationale-mistral-7b"
    assert got["kwargs"] == {"load_in_4bit": True, "max_new_tokens": 64, "cache": True}
    assert rr.generator is tiny_generator
    assert rr.selector.settings.window == 2 and rr.top_k == 3


# ------------------------------------------------------------------ the real defaults
@pytest.mark.slow
def test_real_default_reranker(tmp_path):
    from meteora.models import default_embedding_path, default_generator_path

    if default_generator_path() is None or default_embedding_path() is None:
        pytest.skip("offline default models not pulled (run `meteora models pull`)")
    rr = Reranker.from_pretrained(cache=tmp_path / "r.sqlite", generation={"max_new_tokens": 48}, num_threads=1)
    passages = [
        "Daily low-dose aspirin reduced the incidence of ischaemic stroke in adults over 60.",
        "Dogs with chronic kidney disease were fed a renal diet.",
        "Insulin pumps improved glucose control in adolescents with type 1 diabetes.",
        "Paracetamol lowered fever in children within two hours.",
    ]
    res = rr.rerank("Does aspirin reduce the risk of stroke in older adults?", passages)
    assert res.rationales[0] == "Does aspirin reduce the risk of stroke in older adults?"
    assert "0" in res.selected_ids
    assert res.ranked[0].id == "0"
    json.dumps(res.to_dict())


# ------------------------------------------------------------------ expansion context
def test_rerank_context_lets_expansion_reach_non_candidates(kw_encoder):
    by_id = {p["id"]: p for p in _doc_passages()}
    candidates = [by_id["A1"], by_id["B0"], by_id["C0"]]
    context = [Passage(p["text"], id=p["id"], doc_id=p["doc_id"], position=p["position"]) for p in _doc_passages()]
    rr = Reranker(scorer=None, generator=None, encoder=kw_encoder, settings=SelectorSettings(window=1))
    without = rr.rerank("aspirin stroke", candidates)
    assert "A0" not in without.selected_ids and "A2" not in without.selected_ids
    res = rr.rerank("aspirin stroke", candidates, context=context)
    assert res.selected_ids[0] == "A1"
    assert {"A0", "A2"} <= set(res.selected_ids)  # neighbours from the context
    assert sorted(res.ranked.ids) == ["A1", "B0", "C0"]  # context passages are never ranked
    assert set(res.selected_ids) <= {"A1", "B0", "C0"} | {p.id for p in context}
    with pytest.raises(InvalidInputError, match="contexts must hold one entry"):
        rr.rerank_batch(["q1", "q2"], [["a"], ["b"]], contexts=[None])


def test_search_expands_into_the_retrievers_corpus(kw_encoder):
    from meteora.retrievers.dense import DenseRetriever

    dense = DenseRetriever(kw_encoder, backend="numpy").index(_corpus())
    hits = dense.search("aspirin stroke", k=2)
    assert "A0" not in hits.ids and "A2" not in hits.ids
    res = Reranker(scorer=None, generator=None, encoder=kw_encoder, settings=SelectorSettings(window=1)).search("aspirin stroke", dense, k=2)
    assert res.selected_ids[0] == "A1"
    assert {"A0", "A2"} <= set(res.selected_ids)
    assert sorted(res.ranked.ids) == sorted(hits.ids)
    # window 0: nothing beyond the candidates
    res0 = Reranker(scorer=None, generator=None, encoder=kw_encoder, settings=SelectorSettings(window=0)).search("aspirin stroke", dense, k=2)
    assert set(res0.selected_ids) <= set(hits.ids)


QUICK_START = (
    "Does aspirin prevent recurrent stroke?",
    ["Aspirin reduced recurrent stroke by 20% (HR 0.80).",
     {"id": "b", "text": "Dogs with renal failure were given fluids."}],
)


@pytest.mark.integration
def test_readme_quick_start_selects_only_the_aspirin_passage():
    """The README's quick start: nothing irrelevant is selected just because a stage must
    pick something (distinct pairing and the N <= 2 elbow used to add the dog passage)."""
    from meteora import Reranker

    for rr in (Reranker(generator=None), Reranker(generator=None, scorer=None)):
        res = rr.rerank(*QUICK_START)
        assert [p.text for p in res.selected] == ["Aspirin reduced recurrent stroke by 20% (HR 0.80)."], rr
        assert res.ranked.ids[0] == "0"
    scored = Reranker(generator=None).rerank(*QUICK_START)
    # the score is P(relevant)
    assert scored.selection.scores["b"].score < 0.5 < scored.selection.scores["0"].score
    assert "Cut (learned)" in scored.explain()
    band = Reranker(generator=None, settings=SelectorSettings(cut="band")).rerank(*QUICK_START)
    assert band.selected_ids == ["0"]
    assert band.selection.scores["b"].score < 0.2 < band.selection.scores["0"].score
    assert "Relevance floor: cosine >= 0.2" in band.explain()


@pytest.mark.integration
@pytest.mark.slow
def test_default_reranker_quick_start_with_rationales():
    from meteora import Reranker

    res = Reranker().rerank(*QUICK_START)
    assert res.selected_ids == ["0"]
    assert res.rationales  # the LM (or its query fallback) gave rationales

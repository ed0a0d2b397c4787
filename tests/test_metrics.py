"""Tests for meteora.metrics: hand-computed values, backend agreement, edge cases."""

from __future__ import annotations

import math
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meteora.errors import InvalidInputError, MissingDependencyError
from meteora.metrics import (
    DEFAULT_METRICS,
    evaluate_ranking,
    pytrec_eval_available,
    rank_run,
)
from meteora.set_metrics import fixed_k_selections, set_metrics
from meteora.types import Ranking, to_passages

BACKENDS = [
    "python",
    pytest.param(
        "pytrec_eval",
        marks=pytest.mark.skipif(
            not pytrec_eval_available(), reason="pytrec-eval-terrier not installed"
        ),
    ),
]

# --- example 1: binary relevance -------------------------------------------------------
# relevant: a, b, c. Ranked: a(1) x(2) b(3) y(4) z(5); c is never retrieved.
BIN_QRELS = {"q1": {"a": 1, "b": 1, "c": 1}}
BIN_RUN = {"q1": {"a": 0.9, "x": 0.8, "b": 0.7, "y": 0.6, "z": 0.5}}
# DCG@5  = 1/log2(2) + 1/log2(4)              = 1 + 0.5            = 1.5
# IDCG@5 = 1/log2(2) + 1/log2(3) + 1/log2(4)  = 1 + 0.63093 + 0.5  = 2.13093
# nDCG@5 = 1.5 / 2.13093 = 0.703918
# nDCG@1 = 1 / 1 = 1 (a is relevant)
# Recall@1 = 1/3, Recall@5 = 2/3, Recall@50 = 2/3 (k > run length changes nothing)
# P@2 = 1/2 (a), P@10 = 2/10 (trec: divide by k even past the end of the run)
# MRR@10 = 1/1
# MAP = (P@1 + P@3) / 3 relevant = (1 + 2/3) / 3 = 5/9 = 0.5556
# MAP@2 = P@1 / 3 = 1/3
BIN_EXPECTED = {
    "NDCG@5": 1.5 / (1 + 1 / math.log2(3) + 0.5),
    "NDCG@1": 1.0,
    "Recall@1": 1 / 3,
    "Recall@5": 2 / 3,
    "Recall@50": 2 / 3,
    "P@2": 0.5,
    "P@10": 0.2,
    "MRR@10": 1.0,
    "MAP": 5 / 9,
    "MAP@2": 1 / 3,
}

# --- example 2: graded relevance, worst order -----------------------------------------
# qrels a=3, b=2, c=1; run ranks c(1) b(2) a(3)
# DCG@3  = 1/1 + 2/log2(3) + 3/2 = 1 + 1.26186 + 1.5 = 3.76186
# IDCG@3 = 3/1 + 2/log2(3) + 1/2 = 3 + 1.26186 + 0.5 = 4.76186
# nDCG@3 = 3.76186 / 4.76186 = 0.789998;  nDCG@1 = 1/3 (gain 1 where 3 was possible)
GRADED_QRELS = {"q2": {"a": 3, "b": 2, "c": 1}}
GRADED_RUN = {"q2": {"c": 3.0, "b": 2.0, "a": 1.0}}
GRADED_EXPECTED = {
    "NDCG@3": (1 + 2 / math.log2(3) + 1.5) / (3 + 2 / math.log2(3) + 0.5),
    "NDCG@1": 1 / 3,
    "Recall@1": 1 / 3,
    "MRR@10": 1.0,
    "MAP": 1.0,  # all three relevant at ranks 1..3: (1 + 1 + 1) / 3
}


@pytest.mark.parametrize("backend", BACKENDS)
def test_binary_example_matches_hand_computed(backend: str) -> None:
    got = evaluate_ranking(BIN_QRELS, BIN_RUN, list(BIN_EXPECTED), backend=backend)
    assert list(got) == list(BIN_EXPECTED)
    for name, value in BIN_EXPECTED.items():
        assert got[name] == pytest.approx(value, abs=1e-12), name
    assert got["NDCG@5"] == pytest.approx(0.703918, abs=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_graded_example_matches_hand_computed(backend: str) -> None:
    got = evaluate_ranking(GRADED_QRELS, GRADED_RUN, list(GRADED_EXPECTED), backend=backend)
    for name, value in GRADED_EXPECTED.items():
        assert got[name] == pytest.approx(value, abs=1e-12), name
    assert got["NDCG@3"] == pytest.approx(0.789998, abs=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_mrr_cutoff(backend: str) -> None:
    # the first relevant passage is at rank 3: MRR@2 = 0, MRR@3 = MRR@10 = MRR = 1/3
    qrels = {"q": {"c": 1}}
    run = {"q": {"a": 3.0, "b": 2.0, "c": 1.0}}
    got = evaluate_ranking(qrels, run, ["MRR@2", "MRR@3", "MRR@10", "MRR"], backend=backend)
    assert got == pytest.approx({"MRR@2": 0.0, "MRR@3": 1 / 3, "MRR@10": 1 / 3, "MRR": 1 / 3})


@pytest.mark.parametrize("backend", BACKENDS)
def test_missing_query_counts_as_zero_and_unjudged_queries_are_ignored(backend: str) -> None:
    qrels = {
        "q1": {"a": 1},  # perfect: Recall@1 = 1
        "q2": {"b": 1},  # absent from the run: 0 (pytrec_eval alone would skip it)
        "q3": {"c": 0, "d": 0},  # no relevant passage: not averaged at all
    }
    run = {"q1": {"a": 1.0}, "q3": {"c": 1.0}, "q9": {"z": 1.0}}
    got = evaluate_ranking(qrels, run, ["Recall@1", "NDCG@10"], backend=backend)
    assert got == pytest.approx({"Recall@1": 0.5, "NDCG@10": 0.5})
    per_q = evaluate_ranking(qrels, run, ["Recall@1"], backend=backend, per_query=True)
    assert per_q == {"q1": {"Recall@1": 1.0}, "q2": {"Recall@1": 0.0}}


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_run_scores_zero(backend: str) -> None:
    got = evaluate_ranking(BIN_QRELS, {}, backend=backend)
    assert list(got) == list(DEFAULT_METRICS)
    assert all(v == 0.0 for v in got.values())
    got = evaluate_ranking(BIN_QRELS, {"q1": {}}, ["NDCG@10", "MAP"], backend=backend)
    assert got == {"NDCG@10": 0.0, "MAP": 0.0}


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_judged_query_gives_zero(backend: str) -> None:
    assert evaluate_ranking({"q": {"a": 0}}, {"q": {"a": 1.0}}, ["NDCG@10"], backend=backend) == {
        "NDCG@10": 0.0
    }
    assert evaluate_ranking({}, {"q": {"a": 1.0}}, ["MAP"], backend=backend) == {"MAP": 0.0}


@pytest.mark.parametrize("backend", BACKENDS)
def test_ties_broken_by_passage_id_descending(backend: str) -> None:
    # a and b tie: trec_eval puts "b" first, so the relevant "a" is at rank 2
    got = evaluate_ranking(
        {"q": {"a": 1}}, {"q": {"a": 1.0, "b": 1.0}}, ["MRR@10", "Recall@1"], backend=backend
    )
    assert got == {"MRR@10": 0.5, "Recall@1": 0.0}
    got = evaluate_ranking(
        {"q": {"b": 1}}, {"q": {"a": 1.0, "b": 1.0}}, ["MRR@10"], backend=backend
    )
    assert got == {"MRR@10": 1.0}


@pytest.mark.parametrize("backend", BACKENDS)
def test_negative_relevance_is_not_relevant(backend: str) -> None:
    got = evaluate_ranking(
        {"q": {"a": -1, "b": 1}}, {"q": {"a": 2.0, "b": 1.0}}, ["NDCG@2", "MRR@10"], backend=backend
    )
    # b at rank 2: DCG = 1/log2(3), IDCG = 1 -> 0.63093
    assert got == pytest.approx({"NDCG@2": 1 / math.log2(3), "MRR@10": 0.5})


def test_ranking_objects_are_accepted_as_run_values() -> None:
    ps = to_passages(["x", "y"], ids=["a", "b"])
    ranking = Ranking.from_scores(ps, [0.2, 0.9])
    got = evaluate_ranking({"q": {"a": 1}}, {"q": ranking}, ["MRR@10"], backend="python")
    assert got == {"MRR@10": 0.5}


def test_metric_names_are_canonicalised_and_validated() -> None:
    got = evaluate_ranking(
        BIN_QRELS, BIN_RUN, ["ndcg@5", "recall@1", "map", "Precision@2"], backend="python"
    )
    assert list(got) == ["NDCG@5", "Recall@1", "MAP", "P@2"]
    for bad in (["Recall"], ["NDCG@0"], ["BLEU"], []):
        with pytest.raises(InvalidInputError):
            evaluate_ranking(BIN_QRELS, BIN_RUN, bad, backend="python")


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(InvalidInputError, match="NaN"):
        evaluate_ranking(BIN_QRELS, {"q1": {"a": float("nan")}}, backend="python")
    with pytest.raises(InvalidInputError, match="relevance must be an integer"):
        evaluate_ranking({"q": {"a": "yes"}}, {}, backend="python")
    with pytest.raises(InvalidInputError, match="backend"):
        evaluate_ranking(BIN_QRELS, BIN_RUN, backend="trec")
    with pytest.raises(InvalidInputError):
        evaluate_ranking(BIN_QRELS, [("q1", "a")], backend="python")  # type: ignore[arg-type]


def test_missing_pytrec_eval_raises_with_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pytrec_eval", None)  # makes `import pytrec_eval` fail
    assert not pytrec_eval_available()
    with pytest.raises(MissingDependencyError, match=r"meteora-rerank\[eval\]"):
        evaluate_ranking(BIN_QRELS, BIN_RUN, backend="pytrec_eval")
    # auto falls back to the python backend with the same numbers
    assert evaluate_ranking(BIN_QRELS, BIN_RUN, ["MAP"], backend="auto") == pytest.approx(
        {"MAP": 5 / 9}
    )


# --- backend agreement on random runs with many ties ---------------------------------

_ids = st.sampled_from(
    ["a", "b", "c", "d", "e", "A", "B", "aa", "ab", "d1", "d10", "d2", "é", "ß", "中", "z-9"]
)
# exact ties, ties only at float32 precision (1 + 1e-9, 1e-300 vs 0, 1e39 vs 3e39 -> inf),
# and arbitrary floats
_scores = st.one_of(
    st.sampled_from(
        [0.0, 0.5, 1.0, 1.0 + 1e-9, 1.0 + 1e-6, 2.0, -1.0, 1e-300, 1e-40, 1e39, 3e39, -1e39]
    ),
    st.floats(-5, 5, allow_nan=False),
    st.floats(allow_nan=False),
)
_qids = st.sampled_from(["q1", "q2", "q3", "q4"])
_qrels = st.dictionaries(_qids, st.dictionaries(_ids, st.integers(-1, 3), max_size=8), max_size=4)
_runs = st.dictionaries(_qids, st.dictionaries(_ids, _scores, max_size=16), max_size=4)
_ALL_METRICS = [
    *DEFAULT_METRICS,
    "NDCG@1",
    "NDCG@3",
    "NDCG",
    "P@1",
    "P@3",
    "MRR@1",
    "MRR@3",
    "MRR",
    "MAP@5",
]


@pytest.mark.skipif(not pytrec_eval_available(), reason="pytrec-eval-terrier not installed")
@settings(max_examples=300, deadline=None)
@given(qrels=_qrels, run=_runs)
def test_python_backend_agrees_with_pytrec_eval(qrels: dict, run: dict) -> None:
    py = evaluate_ranking(qrels, run, _ALL_METRICS, backend="python", per_query=True)
    te = evaluate_ranking(qrels, run, _ALL_METRICS, backend="pytrec_eval", per_query=True)
    # same definitions, same tie rule, same arithmetic order (and the same libm log2):
    # the numbers agree bit for bit, not just approximately
    assert py == te
    assert evaluate_ranking(qrels, run, _ALL_METRICS, backend="python") == evaluate_ranking(
        qrels, run, _ALL_METRICS, backend="pytrec_eval"
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_scores_tie_at_float32_precision_like_trec_eval(backend: str) -> None:
    # 1.0 and 1.0 + 1e-9 are the same float32: a tie, so "b" (larger id) ranks first
    got = evaluate_ranking(
        {"q": {"a": 1}}, {"q": {"a": 1.0 + 1e-9, "b": 1.0}}, ["MRR@10"], backend=backend
    )
    assert got == {"MRR@10": 0.5}
    # 1e-6 apart is resolvable in float32: "a" ranks first
    got = evaluate_ranking(
        {"q": {"a": 1}}, {"q": {"a": 1.0 + 1e-6, "b": 1.0}}, ["MRR@10"], backend=backend
    )
    assert got == {"MRR@10": 1.0}


# --- rank_run / fixed_k_selections ----------------------------------------------------


def test_rank_run_and_fixed_k_use_trec_tie_order() -> None:
    run = {"q": {"a": 1.0, "b": 1.0, "c": 2.0, "d": 0.0}}
    assert rank_run(run["q"]) == ["c", "b", "a", "d"]
    assert fixed_k_selections(run, 2) == {"q": ["c", "b"]}
    assert fixed_k_selections(run, 10) == {"q": ["c", "b", "a", "d"]}  # k > run length
    assert fixed_k_selections(run, 0) == {"q": []}
    with pytest.raises(InvalidInputError):
        fixed_k_selections(run, -1)


# --- set metrics ----------------------------------------------------------------------


def test_set_metrics_hand_computed() -> None:
    qrels = {"q1": {"a": 1, "b": 1, "c": 1}, "q2": {"d": 1}, "q3": {"e": 0}}
    sel = {"q1": ["a", "b", "x", "y"], "q2": ["d", "z"], "q3": ["e"], "other": ["a"]}
    # q1: P = 2/4 = 0.5, R = 2/3, F1 = 2*0.5*(2/3) / (0.5 + 2/3) = 4/7
    # q2: P = 1/2 = 0.5, R = 1/1 = 1, F1 = 2*0.5*1 / 1.5 = 2/3
    # q3 has no relevant passage and "other" is not in qrels: both ignored
    # mean P = 0.5, mean R = (2/3 + 1)/2 = 5/6
    # F1 (of the means) = 2*0.5*(5/6) / (0.5 + 5/6) = (5/6) / (4/3) = 5/8
    # F1_macro = (4/7 + 2/3) / 2 = 13/21 ; chunks: 4 and 2 -> mean 3, median 3
    m = set_metrics(qrels, sel)
    assert m["precision"] == pytest.approx(0.5)
    assert m["recall"] == pytest.approx(5 / 6)
    assert m["F1"] == pytest.approx(5 / 8)
    assert m["F1_macro"] == pytest.approx(13 / 21)
    assert m["mean_chunks"] == 3.0 and m["median_chunks"] == 3.0
    assert m["n_queries"] == 2


def test_set_metrics_empty_and_missing_selections() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 1}}
    # q1 perfect (P=R=1), q2 empty selection (P=0, R=0), q3 missing -> empty too
    # duplicates count once: q1 selects one chunk
    m = set_metrics(qrels, {"q1": ["a", "a"], "q2": []})
    assert m["precision"] == pytest.approx(1 / 3)
    assert m["recall"] == pytest.approx(1 / 3)
    assert m["F1"] == pytest.approx(1 / 3)
    assert m["F1_macro"] == pytest.approx(1 / 3)
    assert m["mean_chunks"] == pytest.approx(1 / 3) and m["median_chunks"] == 0.0
    assert set_metrics({}, {"q": ["a"]})["n_queries"] == 0


def test_set_metrics_of_fixed_k_matches_recall_at_k() -> None:
    sel = fixed_k_selections(BIN_RUN, 5)
    m = set_metrics(BIN_QRELS, sel)
    # top-5 = a x b y z: P = 2/5, R = 2/3 = Recall@5
    assert m["precision"] == pytest.approx(2 / 5)
    assert m["recall"] == pytest.approx(
        evaluate_ranking(BIN_QRELS, BIN_RUN, ["Recall@5"], backend="python")["Recall@5"]
    )
    with pytest.raises(InvalidInputError):
        set_metrics(BIN_QRELS, {"q1": "a"})  # a bare string is not a selection


def test_per_query_set_metrics_are_what_set_metrics_averages():
    from meteora.set_metrics import per_query_set_metrics, set_metrics

    qrels = {"q1": {"a": 1, "b": 1}, "q2": {"c": 1}, "q3": {"d": 0}}
    sel = {"q1": ["a", "x", "a"], "q2": [], "q3": ["d"]}
    rows = per_query_set_metrics(qrels, sel)
    assert set(rows) == {"q1", "q2"}  # q3 has no relevant passage
    assert rows["q1"] == {"precision": 0.5, "recall": 0.5, "F1": 0.5, "chunks": 2}
    assert rows["q2"] == {"precision": 0.0, "recall": 0.0, "F1": 0.0, "chunks": 0}
    agg = set_metrics(qrels, sel)
    assert agg["precision"] == 0.25 and agg["F1_macro"] == 0.25 and agg["mean_chunks"] == 1.0


def test_paired_bootstrap_f1_sign_and_interval():
    from meteora.set_metrics import paired_bootstrap_f1

    qrels = {f"q{i}": {f"g{i}": 1} for i in range(40)}
    good = {f"q{i}": [f"g{i}"] for i in range(40)}
    half = {f"q{i}": [f"g{i}"] if i % 2 else ["x"] for i in range(40)}
    r = paired_bootstrap_f1(qrels, good, half, resamples=2000, seed=1)
    assert r["difference"] == 0.5 and r["ci95"][0] > 0 and r["share_not_better"] == 0.0
    same = paired_bootstrap_f1(qrels, good, good, resamples=100)
    assert same["difference"] == 0.0 and same["ci95"] == [0.0, 0.0] and same["share_not_better"] == 1.0
    with pytest.raises(InvalidInputError, match="resamples"):
        paired_bootstrap_f1(qrels, good, half, resamples=0)

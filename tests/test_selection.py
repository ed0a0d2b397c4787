"""Tests for meteora.selection (ECSE): every stage on hand-built embeddings."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from meteora.errors import InvalidInputError
from meteora.selection.elbow import elbow_cutoff
from meteora.selection.results import SelectionResult
from meteora.selection.selector import EvidenceSelector
from meteora.selection.selector_settings import SelectorSettings
from meteora.types import Passage


def unit(*v: float) -> np.ndarray:
    a = np.asarray(v, dtype=float)
    return a / np.linalg.norm(a)


def angle_embeddings(scores: list[float]) -> np.ndarray:
    """2-D unit vectors whose cosine with e0 = (1, 0) is exactly the given score."""
    s = np.asarray(scores, dtype=float)
    return np.stack([s, np.sqrt(1.0 - s**2)], axis=1)


E0 = np.array([[1.0, 0.0]])


def flat_passages(n: int) -> list[Passage]:
    return [Passage(f"text {i}", f"c{i}") for i in range(n)]


# --------------------------------------------------------------------------- elbow


def test_elbow_zscore_known_values():
    # s = [0.9, 0.85, 0.8, 0.5, 0.45, 0.4]
    # gaps d = [0.05, 0.05, 0.3, 0.05, 0.05]; mean(d) = 0.1
    # deviations = [-0.05, -0.05, 0.2, -0.05, -0.05]; var = (4 * 0.0025 + 0.04) / 5 = 0.01; std = 0.1
    # z = [-0.5, -0.5, 2.0, -0.5, -0.5] -> first z > 1 at t = 2 -> keep top 3
    info = elbow_cutoff(np.array([0.9, 0.85, 0.8, 0.5, 0.45, 0.4]))
    assert info.rule == "zscore"
    assert info.index == 2 and info.keep == 3
    np.testing.assert_allclose(info.gaps, [0.05, 0.05, 0.3, 0.05, 0.05], atol=1e-12)
    np.testing.assert_allclose(info.z_scores, [-0.5, -0.5, 2.0, -0.5, -0.5], atol=1e-9)


def test_elbow_first_passing_gap_wins():
    # s = [1.0, 0.6, 0.55, 0.5, 0.1, 0.05]; d = [0.4, 0.05, 0.05, 0.4, 0.05]; mean = 0.19
    # var = (2 * 0.21^2 + 3 * 0.14^2) / 5 = 0.0294; std = 0.17146; z_0 = z_3 = 0.21 / 0.17146 = 1.2247
    info = elbow_cutoff(np.array([1.0, 0.6, 0.55, 0.5, 0.1, 0.05]), tau=1.0)
    assert (info.rule, info.index, info.keep) == ("zscore", 0, 1)
    assert info.z_scores[0] == pytest.approx(1.2247, abs=1e-4)
    assert info.z_scores[3] == pytest.approx(1.2247, abs=1e-4)


def test_elbow_second_difference_fallback_with_tie_takes_first():
    # same list, tau = 1.5: no z passes (max 1.2247).
    # second differences d_t - d_{t+1} = [0.35, 0.0, -0.35, 0.35]: tie at t = 0 and t = 3 -> first -> keep 1
    info = elbow_cutoff(np.array([1.0, 0.6, 0.55, 0.5, 0.1, 0.05]), tau=1.5)
    assert info.rule == "second-difference"
    np.testing.assert_allclose(info.second_differences, [0.35, 0.0, -0.35, 0.35], atol=1e-12)
    assert (info.index, info.keep) == (0, 1)


def test_elbow_second_difference_unique_max():
    # s = [1.0, 0.9, 0.5, 0.45, 0.4, 0.35]; d = [0.1, 0.4, 0.05, 0.05, 0.05]
    # z_1 = (0.4 - 0.13) / 0.13638 = 1.98 < tau = 2.5 -> fallback
    # second differences = [-0.3, 0.35, 0.0, 0.0] -> t = 1 -> keep 2
    info = elbow_cutoff(np.array([1.0, 0.9, 0.5, 0.45, 0.4, 0.35]), tau=2.5)
    assert info.rule == "second-difference"
    assert info.z_scores[1] == pytest.approx(1.9797, abs=1e-3)
    assert (info.index, info.keep) == (1, 2)
    # with the default tau the z-score rule finds the same gap
    info1 = elbow_cutoff(np.array([1.0, 0.9, 0.5, 0.45, 0.4, 0.35]))
    assert (info1.rule, info1.keep) == ("zscore", 2)


def test_elbow_n3_always_falls_back_with_default_tau():
    # two gaps [0.1, 0.5] have z = [-1, 1]; 1 > 1 is false -> second difference [-0.4] -> keep 1
    info = elbow_cutoff(np.array([0.9, 0.8, 0.3]))
    assert info.rule == "second-difference"
    np.testing.assert_allclose(info.z_scores, [-1.0, 1.0])
    assert info.keep == 1


@pytest.mark.parametrize("scores", [[0.9, 0.8, 0.7, 0.6, 0.5], [0.5] * 5])
def test_elbow_std_zero_uses_second_difference(scores):
    # equal gaps (0.1 each, up to float noise) or all-equal scores: std = 0, z = 0,
    # second differences all ~0 -> tie -> first -> keep 1
    info = elbow_cutoff(np.array(scores))
    assert info.rule == "second-difference"
    assert np.all(info.z_scores == 0)
    assert info.keep == 1


@pytest.mark.parametrize("scores", [[], [0.3], [0.9, 0.1], [0.2, 0.2]])
def test_elbow_small_lists_keep_all(scores):
    info = elbow_cutoff(np.array(scores, dtype=float))
    assert info.rule == "all"
    assert info.keep == len(scores)
    assert info.index == len(scores) - 1


@pytest.mark.parametrize(
    "scores, tau",
    [([0.1, 0.5, 0.3], 1.0), ([0.9, np.nan, 0.1], 1.0), ([[0.9, 0.1]], 1.0), ([0.9, 0.5, 0.1], float("nan")), ([0.9], True)],
)
def test_elbow_rejects_bad_input(scores, tau):
    with pytest.raises(InvalidInputError):
        elbow_cutoff(np.array(scores, dtype=float), tau)


def test_elbow_to_dict_is_json():
    info = elbow_cutoff(np.array([0.9, 0.85, 0.8, 0.5, 0.45, 0.4]))
    d = json.loads(json.dumps(info.to_dict()))
    assert d["keep"] == 3 and d["rule"] == "zscore" and len(d["z_scores"]) == 5


# --------------------------------------------------------------------------- pairing

# r0 = e0; r1 = (0.9, 0.43589, 0). Chunks: c0 = e0, c1 = (0.6, 0.8, 0), c2 = e2, c3 = e1.
# S[r0] = [1.0, 0.6, 0, 0]; S[r1] = [0.9, 0.54 + 0.3487 = 0.8887, 0, 0.4359]
# both rationales prefer c0; distinct sends r1 to its second choice c1.
R_PAIR = np.array([[1.0, 0.0, 0.0], [0.9, np.sqrt(1 - 0.81), 0.0]])
C_PAIR = np.array([[1.0, 0, 0], [0.6, 0.8, 0], [0, 0, 1.0], [0, 1.0, 0]])


def test_distinct_and_convergent_differ():
    ps = flat_passages(4)
    conv = EvidenceSelector(SelectorSettings(pairing="convergent", use_pooling=False)).select(R_PAIR, C_PAIR, ps)
    dist = EvidenceSelector(SelectorSettings(pairing="distinct", use_pooling=False)).select(R_PAIR, C_PAIR, ps)
    assert [p.passage_id for p in conv.explanation.pairs] == ["c0", "c0"]
    assert conv.selected_ids == ["c0"]
    assert [p.passage_id for p in dist.explanation.pairs] == ["c0", "c1"]
    assert dist.selected_ids == ["c0", "c1"]
    assert dist.explanation.pairs[1].similarity == pytest.approx(0.9 * 0.6 + np.sqrt(0.19) * 0.8)


@pytest.mark.parametrize("order", [[0, 1], [1, 0]])
def test_pairing_score_is_max_over_choosing_rationales(order):
    ps = flat_passages(4)
    res = EvidenceSelector(SelectorSettings(pairing="convergent", use_pooling=False)).select(
        R_PAIR[order], C_PAIR, ps, rationales=[["r0", "r1"][i] for i in order]
    )
    assert res.scores["c0"].pairing == pytest.approx(1.0)  # max(1.0, 0.9), whichever comes first
    assert res.scores["c1"].pairing is None
    assert {p.rationale for p in res.explanation.pairs} == {"r0", "r1"}


def test_distinct_more_rationales_than_chunks():
    ps = flat_passages(2)
    r = np.array([[1.0, 0.0], [0.9, 0.1], [0.8, 0.2]])
    c = np.array([[1.0, 0.0], [0.0, 1.0]])
    res = EvidenceSelector(SelectorSettings(pairing="distinct", use_pooling=False, min_similarity=None)).select(r, c, ps)
    assert [p.passage_id for p in res.explanation.pairs] == ["c0", "c1"]
    assert res.explanation.unpaired_rationales == [2]
    assert "chose nothing" in res.explain()


def test_argmax_ties_go_to_earlier_candidate():
    ps = flat_passages(3)
    c = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    res = EvidenceSelector(SelectorSettings(pairing="convergent", use_pooling=False)).select(E0, c, ps)
    assert res.selected_ids == ["c1"]


# --------------------------------------------------------------------------- pooling


def test_pooled_scores_are_cosine_to_mean_rationale():
    rng = np.random.default_rng(0)
    r = rng.normal(size=(3, 5))
    c = rng.normal(size=(6, 5))
    res = EvidenceSelector().select(r, c, flat_passages(6))
    rn = r / np.linalg.norm(r, axis=1, keepdims=True)
    p = rn.mean(axis=0)
    p /= np.linalg.norm(p)
    expected = (c / np.linalg.norm(c, axis=1, keepdims=True)) @ p
    got = np.array([res.scores[f"c{i}"].pooled for i in range(6)])
    np.testing.assert_allclose(got, expected, atol=1e-12)
    assert res.explanation.pooled_scores == sorted(expected.tolist(), reverse=True)


def test_pooled_elbow_on_known_scores():
    # candidate order shuffled; pooled scores are exactly the listed cosines
    scores = [0.45, 0.9, 0.4, 0.8, 0.5, 0.85]
    res = EvidenceSelector(SelectorSettings(use_pairing=False)).select(E0, angle_embeddings(scores), flat_passages(6))
    # sorted: [0.9, 0.85, 0.8, 0.5, 0.45, 0.4] -> z = [-0.5, -0.5, 2, -0.5, -0.5] -> keep 3
    assert res.explanation.elbow.keep == 3
    np.testing.assert_allclose(res.explanation.elbow.z_scores, [-0.5, -0.5, 2.0, -0.5, -0.5], atol=1e-9)
    assert res.selected_ids == ["c1", "c5", "c3"]
    assert res.explanation.pooled_order == ["c1", "c5", "c3", "c4", "c0", "c2"]
    assert all(res.explanation.sources[i] == {"pooling"} for i in res.selected_ids)
    assert res.explanation.pairs == []


def test_pooled_second_difference_fallback_in_selector():
    res = EvidenceSelector(SelectorSettings(use_pairing=False)).select(E0, angle_embeddings([0.3, 0.9, 0.8]), flat_passages(3))
    assert res.explanation.elbow.rule == "second-difference"
    assert res.selected_ids == ["c1"]


@pytest.mark.parametrize("scores", [[0.9], [0.9, -0.5]])
def test_one_or_two_candidates_keep_all(scores):
    res = EvidenceSelector(SelectorSettings(use_pairing=False, min_similarity=None)).select(E0, angle_embeddings(scores), flat_passages(len(scores)))
    assert res.explanation.elbow.rule == "all"
    assert res.selected_ids == [f"c{i}" for i in range(len(scores))]


def test_pooled_tie_break_is_candidate_order():
    res = EvidenceSelector(SelectorSettings(use_pairing=False)).select(E0, angle_embeddings([0.5, 0.9, 0.5, 0.5]), flat_passages(4))
    assert res.explanation.pooled_order == ["c1", "c0", "c2", "c3"]
    assert res.ranking.ids == ["c1", "c0", "c2", "c3"]


# --------------------------------------------------------------------------- union

# rationales e0, e1 (pooled p = (e0 + e1) / sqrt2), 4-d chunks:
#   c0 = (e0+e1)/|.|          pooled 1.000  S = [0.707, 0.707]
#   c1 = (e0+e1+0.1e2)/|.|    pooled 0.998
#   c2 = (e0+0.8e3)/|.|       pooled 0.552  S[r0] = 0.781 (r0's best)
#   c3..c7 noise              pooled ~0 .. 0.07
# sorted pooled gaps [0.002, 0.445, 0.482, 0.07, 0, 0, 0]: z_1 = 1.48 > 1 -> keep {c0, c1}
# distinct pairing: r0 -> c2, r1 -> c0. Union = {c0, c1, c2}.
R_UNION = np.eye(4)[:2]
C_UNION = np.array(
    [
        unit(1, 1, 0, 0),
        unit(1, 1, 0.1, 0),
        unit(1, 0, 0, 0.8),
        unit(0, 0, 1, 0),
        unit(0, 0, 0, 1),
        unit(0, 0, 1, 1),
        unit(0, 0, 1, -1),
        unit(0.1, 0, 1, 0),
    ]
)


def test_union_of_pairing_and_pooling():
    ps = flat_passages(8)
    both = EvidenceSelector().select(R_UNION, C_UNION, ps)
    pair_only = EvidenceSelector(SelectorSettings(use_pooling=False)).select(R_UNION, C_UNION, ps)
    pool_only = EvidenceSelector(SelectorSettings(use_pairing=False)).select(R_UNION, C_UNION, ps)
    assert set(pair_only.selected_ids) == {"c2", "c0"}
    assert set(pool_only.selected_ids) == {"c0", "c1"}
    assert set(both.selected_ids) == {"c0", "c1", "c2"}
    src = both.explanation.sources
    assert src["c0"] == {"pairing", "pooling"}
    assert src["c1"] == {"pooling"}
    assert src["c2"] == {"pairing"}
    # order "score": final score = max(pooled, pairing): c0 1.0, c1 0.998, c2 0.781
    assert both.selected_ids == ["c0", "c1", "c2"]
    assert both.scores["c2"].score == pytest.approx(1 / np.sqrt(1.64))  # its pairing score, cos(e0, c2)
    assert both.scores["c2"].pooled == pytest.approx(1 / np.sqrt(1.64) / np.sqrt(2))


def test_pairing_off_still_ranks_by_pooled():
    res = EvidenceSelector(SelectorSettings(use_pairing=False)).select(R_UNION, C_UNION, flat_passages(8))
    assert all(s.pairing is None for s in res.scores.values())
    assert [h.score for h in res.ranking] == pytest.approx(res.explanation.pooled_scores)


# --------------------------------------------------------------------------- expansion


def doc_passages(skip: set[str] = frozenset()) -> list[Passage]:
    ps = [Passage(f"d1 chunk {i}", f"d1-{i}", doc_id="d1", position=i) for i in range(6)]
    ps += [Passage(f"d2 chunk {i}", f"d2-{i}", doc_id="d2", position=i) for i in range(4)]
    return [p for p in ps if p.id not in skip]


def expansion_case(window: int, skip: set[str] = frozenset()) -> SelectionResult:
    ps = doc_passages(skip)
    # d1-2 is the only clear hit (cos 1.0); everything else ~0.1 -> the elbow keeps 1
    scores = [1.0 if p.id == "d1-2" else 0.1 + 0.001 * k for k, p in enumerate(ps)]
    return EvidenceSelector(SelectorSettings(window=window)).select(E0, angle_embeddings(scores), ps)


def test_no_expansion_with_window_0():
    res = expansion_case(0)
    assert res.selected_ids == ["d1-2"]
    assert res.explanation.expansion_added == []


def test_expansion_window_1_and_2_same_doc_only():
    r1 = expansion_case(1)
    assert set(r1.selected_ids) == {"d1-1", "d1-2", "d1-3"}
    assert set(r1.explanation.expansion_added) == {"d1-1", "d1-3"}
    assert r1.explanation.sources["d1-1"] == {"expansion"}
    r2 = expansion_case(2)
    assert set(r2.selected_ids) == {"d1-0", "d1-1", "d1-2", "d1-3", "d1-4"}
    assert not any(i.startswith("d2") for i in r2.selected_ids)  # d2-1, d2-3 have the same positions


def test_expansion_only_adds_candidates_present():
    r1 = expansion_case(1, skip={"d1-3"})
    assert set(r1.selected_ids) == {"d1-1", "d1-2"}
    # window 2 still reaches d1-4 (position + 2) although d1-3 is missing
    r2 = expansion_case(2, skip={"d1-3"})
    assert set(r2.selected_ids) == {"d1-0", "d1-1", "d1-2", "d1-4"}


def test_order_document():
    ps = doc_passages()
    # r0 points at d2-1, r1 at d1-2; everything else is far away
    vec = {p.id: unit(0, 0, 1, 0.1 * k) for k, p in enumerate(ps)}
    vec["d2-1"] = unit(1, 0, 0, 0)
    vec["d1-2"] = unit(0.05, 1, 0, 0)
    c = np.stack([vec[p.id] for p in ps])
    r = np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])
    by_doc = EvidenceSelector(SelectorSettings(window=1, order="document")).select(r, c, ps)
    assert by_doc.selected_ids == ["d2-0", "d2-1", "d2-2", "d1-1", "d1-2", "d1-3"]
    by_score = EvidenceSelector(SelectorSettings(window=1, order="score")).select(r, c, ps)
    assert by_score.selected_ids[:2] == ["d2-1", "d1-2"]
    assert set(by_score.selected_ids) == set(by_doc.selected_ids)
    finals = [by_score.scores[i].score for i in by_score.selected_ids]
    assert finals == sorted(finals, reverse=True)


# --------------------------------------------------------------------------- ranking and result


def test_ranking_contains_all_candidates_descending():
    ps = flat_passages(8)
    res = EvidenceSelector().select(R_UNION, C_UNION, ps)
    assert sorted(res.ranking.ids) == sorted(p.id for p in ps)
    scores = res.ranking.scores
    assert scores == sorted(scores, reverse=True)
    for h in res.ranking:
        s = res.scores[h.id]
        assert h.score == pytest.approx(max(s.pooled, s.pairing if s.pairing is not None else -2))
        assert -1.0 <= h.score <= 1.0
    assert [h.rank for h in res.ranking] == list(range(1, 9))
    assert res.top_k(2).ids == res.ranking.ids[:2]


def test_unnormalised_inputs_give_same_result():
    ps = flat_passages(8)
    ref = EvidenceSelector(SelectorSettings(window=0)).select(R_UNION, C_UNION, ps)
    rng = np.random.default_rng(1)
    r = R_UNION * rng.uniform(0.1, 50, size=(2, 1))
    c = C_UNION * rng.uniform(0.01, 100, size=(8, 1))
    res = EvidenceSelector(SelectorSettings(window=0)).select(r.astype(np.float32), c, ps)
    assert res.selected_ids == ref.selected_ids
    np.testing.assert_allclose(res.ranking.scores, ref.ranking.scores, atol=1e-6)


def test_empty_candidates():
    res = EvidenceSelector(SelectorSettings(window=2)).select(E0, np.zeros((0, 2)), [])
    assert res.selected == [] and len(res.ranking) == 0
    assert res.explanation.elbow.keep == 0
    assert "Selected 0 of 0" in res.explain()


def test_explain_repr_and_to_dict():
    ps = flat_passages(8)
    res = EvidenceSelector(SelectorSettings(window=1)).select(R_UNION, C_UNION, ps, rationales=["look for A", "look for B"], query="q")
    text = res.explain()
    assert "look for A" in text and "Pairing (distinct)" in text and "zscore" in text
    assert "c2" in text
    assert repr(res).startswith("SelectionResult(3 of 8 selected")
    d = json.loads(json.dumps(res.to_dict()))
    assert d["selected_ids"] == res.selected_ids
    assert d["explanation"]["sources"]["c0"] == ["pairing", "pooling"]
    assert len(d["ranking"]) == 8
    assert res.ranking.query == "q"


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "kwargs",
    [
        {"pairing": "greedy"},
        {"order": "random"},
        {"window": -1},
        {"window": 1.5},
        {"window": True},
        {"tau": float("inf")},
        {"tau": "1"},
        {"use_pairing": False, "use_pooling": False},
        {"use_pairing": "yes"},
    ],
)
def test_settings_validation(kwargs):
    with pytest.raises(InvalidInputError):
        SelectorSettings(**kwargs)


def test_selector_takes_settings_only():
    with pytest.raises(InvalidInputError, match="settings must be a meteora.SelectorSettings"):
        EvidenceSelector({"window": 1})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        EvidenceSelector(window=1)  # type: ignore[call-arg]


def test_bad_embeddings_raise_clear_errors():
    sel = EvidenceSelector()
    ps = flat_passages(3)
    c = np.eye(3)
    with pytest.raises(InvalidInputError, match="NaN"):
        sel.select(np.eye(3)[:1], np.where(np.eye(3) == 1, np.nan, 0), ps)
    with pytest.raises(InvalidInputError, match="NaN"):
        sel.select(np.array([[np.nan, 1.0, 0]]), c, ps)
    with pytest.raises(InvalidInputError, match="2-D"):
        sel.select(np.array([1.0, 0, 0]), c, ps)
    with pytest.raises(InvalidInputError, match="dimensions differ"):
        sel.select(np.ones((1, 4)), c, ps)
    with pytest.raises(InvalidInputError, match="rows for 2 passages"):
        sel.select(np.ones((1, 3)), c, ps[:2])
    with pytest.raises(InvalidInputError, match="no rows"):
        sel.select(np.zeros((0, 3)), c, ps)
    with pytest.raises(InvalidInputError, match="zero norm"):
        sel.select(np.ones((1, 3)), np.array([[1.0, 0, 0], [0, 0, 0], [0, 1.0, 0]]), ps)
    with pytest.raises(InvalidInputError, match="dtype"):
        sel.select(np.array([["a", "b", "c"]]), c, ps)
    with pytest.raises(InvalidInputError, match="rationale texts"):
        sel.select(np.ones((1, 3)), c, ps, rationales=["a", "b"])
    with pytest.raises(InvalidInputError, match="duplicate"):
        sel.select(np.ones((1, 3)), c, [ps[0], ps[1], ps[0]])
    with pytest.raises(InvalidInputError, match="to_passages"):
        sel.select(np.ones((1, 3)), c, ["a", "b", "c"])


# --------------------------------------------------------------------------- invariants


@st.composite
def selection_inputs(draw):
    d = draw(st.integers(2, 4))
    r = draw(st.integers(1, 4))
    n = draw(st.integers(0, 10))
    elems = st.floats(-1, 1, allow_nan=False, width=32)
    rat = draw(hnp.arrays(np.float64, (r, d), elements=elems))
    emb = draw(hnp.arrays(np.float64, (n, d), elements=elems))
    assume(np.all(np.linalg.norm(rat, axis=1) > 1e-3))
    assume(n == 0 or np.all(np.linalg.norm(emb, axis=1) > 1e-3))
    docs = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    positions = draw(st.permutations(list(range(n))))
    ps = [Passage(f"t{i}", f"p{i}", doc_id=f"doc{docs[i]}", position=positions[i]) for i in range(n)]
    return rat, emb, ps


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(
    selection_inputs(),
    st.sampled_from(["distinct", "convergent"]),
    st.sampled_from(["score", "document"]),
    st.floats(-1, 3),
)
def test_invariants(inputs, pairing, order, tau):
    rat, emb, ps = inputs
    ids = [p.id for p in ps]
    previous: set[str] | None = None
    for window in range(4):
        res = EvidenceSelector(SelectorSettings(pairing=pairing, tau=tau, window=window, order=order, min_similarity=None)).select(rat, emb, ps)
        sel = res.selected_ids
        assert set(sel) <= set(ids)
        assert len(sel) == len(set(sel))
        assert sorted(res.ranking.ids) == sorted(ids)  # the ranking is a permutation of the candidates
        assert res.ranking.scores == sorted(res.ranking.scores, reverse=True)
        if ps:
            assert len(sel) >= 1
        if previous is not None:
            assert previous <= set(sel)  # expansion is monotone in the window
        previous = set(sel)
        if window == 0:
            pair = EvidenceSelector(SelectorSettings(pairing=pairing, tau=tau, use_pooling=False, min_similarity=None)).select(rat, emb, ps)
            pool = EvidenceSelector(SelectorSettings(pairing=pairing, tau=tau, use_pairing=False, min_similarity=None)).select(rat, emb, ps)
            assert set(sel) == set(pair.selected_ids) | set(pool.selected_ids)


def test_expansion_reaches_context_passages_without_ranking_them():
    """A neighbour that is not a candidate is added from ``context`` but never ranked."""
    from meteora.selection.selector import EvidenceSelector
    from meteora.types import Passage

    cands = [Passage("a", id="d-0", doc_id="d", position=0), Passage("x", id="e-0", doc_id="e", position=0)]
    context = [
        Passage("b", id="d-1", doc_id="d", position=1),
        Passage("c", id="d-2", doc_id="d", position=2),
        Passage("y", id="e-1", doc_id="e", position=1),
    ]
    r = np.array([[1.0, 0.0]])
    c = np.array([[1.0, 0.0], [0.0, 1.0]])
    w1 = EvidenceSelector(SelectorSettings(window=1, use_pooling=False)).select(r, c, cands, context=context)
    assert w1.selected_ids == ["d-0", "d-1"]
    assert w1.explanation.expansion_added == ["d-1"]
    assert w1.ranking.ids == ["d-0", "e-0"]  # context passages are not candidates
    w2 = EvidenceSelector(SelectorSettings(window=2, use_pooling=False)).select(r, c, cands, context=context)
    assert w2.selected_ids == ["d-0", "d-1", "d-2"]
    w0 = EvidenceSelector(SelectorSettings(window=0, use_pooling=False)).select(r, c, cands, context=context)
    assert w0.selected_ids == ["d-0"]
    doc = EvidenceSelector(SelectorSettings(window=1, use_pooling=False, order="document")).select(np.array([[0.0, 1.0]]), c, cands, context=context)
    assert doc.selected_ids == ["e-0", "e-1"]


# --------------------------------------------------------------------------- relevance floors


def test_min_similarity_keeps_unrelated_passages_out_even_when_n_is_2():
    # the quick-start failure: 2 candidates, the second unrelated (cos ~0.02); the elbow
    # keeps all when N <= 2 and distinct pairing gives the second rationale the leftover
    ps = flat_passages(2)
    rat = np.array([[1.0, 0.0], [0.95, 0.05]])
    emb = angle_embeddings([0.9, 0.02])
    loose = EvidenceSelector(SelectorSettings(min_similarity=None)).select(rat, emb, ps)
    assert loose.selected_ids == ["c0", "c1"]
    res = EvidenceSelector().select(rat, emb, ps)
    assert res.selected_ids == ["c0"]
    assert res.explanation.below_floor == ["c1"]
    assert res.explanation.unpaired_rationales == [1]
    assert "Relevance floor: cosine >= 0.2" in res.explain()
    # nothing relevant at all: nothing selected, the ranking still has every candidate
    none = EvidenceSelector().select(rat, angle_embeddings([0.1, 0.05]), ps)
    assert none.selected_ids == [] and none.ranking.ids == ["c0", "c1"]


def test_evidence_scorer_ranks_by_document_relevance_and_evidence_inside_it():
    # two documents: d0 (cos 0.9 / 0.8) and d1 (cos 0.7); the scorer says d0's second
    # chunk holds the finding
    ps = [Passage("a", id="d0-0", doc_id="d0", position=0), Passage("b", id="d0-1", doc_id="d0", position=1),
          Passage("c", id="d1-0", doc_id="d1", position=0), Passage("d", id="d2-0", doc_id="d2", position=0)]
    rat = np.array([[1.0, 0.0]])
    emb = angle_embeddings([0.9, 0.8, 0.7, 0.1])
    logits = np.array([-2.0, 3.0, 0.0, 9.0])
    res = EvidenceSelector(SelectorSettings(evidence_weight=0.05, evidence_band=0.1)).select(rat, emb, ps, evidence=logits)
    # d0-1 inherits its document's 0.9; d0-0 loses 0.05 * 5; d2 is below the floor whatever its logit
    assert res.ranking.ids == ["d0-1", "d1-0", "d0-0", "d2-0"]
    assert res.ranking.scores[0] == pytest.approx(0.9) and res.ranking.scores[2] == pytest.approx(0.65)
    assert res.selected_ids == ["d0-1"]  # d1-0 (0.7) is not within 0.1 of the best (0.9)
    wide = EvidenceSelector(SelectorSettings(evidence_weight=0.05, evidence_band=0.25)).select(rat, emb, ps, evidence=logits)
    assert wide.selected_ids == ["d0-1", "d1-0", "d0-0"]
    assert res.scores["d0-1"].evidence == pytest.approx(3.0)
    assert "kept the chunks within 0.1 of the best score" in res.explain()
    # a passage alone in its document scores its plain cosine: the scorer cannot move it
    alone = EvidenceSelector().select(rat, emb[2:], ps[2:], evidence=[5.0, -5.0])
    assert alone.ranking.scores == pytest.approx([0.7, 0.1])
    with pytest.raises(InvalidInputError, match="one logit per candidate"):
        EvidenceSelector().select(rat, emb, ps, evidence=[0.5])
    with pytest.raises(InvalidInputError, match="finite"):
        EvidenceSelector().select(rat, emb, ps, evidence=[0.5, float("nan"), 0.1, 0.1])
    with pytest.raises(InvalidInputError, match="evidence_band"):
        SelectorSettings(evidence_band=-1.0)
    with pytest.raises(InvalidInputError, match="min_similarity"):
        SelectorSettings(min_similarity=float("nan"))

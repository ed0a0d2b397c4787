"""Each stage of meteora.selection alone: signals, cuts, floor, pairing, expansion, ordering.

The selector's end-to-end behaviour is in tests/test_selection.py; here every stage is
called directly with hand-built inputs, and a custom cut is plugged into the selector.
"""

from __future__ import annotations

import numpy as np
import pytest

from meteora.errors import InvalidInputError
from meteora.selection.cuts import (
    Cut,
    CutResult,
    ElbowCut,
    EvidenceBand,
    document_evidence_score,
    ranked,
    relevance_floor,
)
from meteora.selection.expansion import expand, union_of, with_context
from meteora.selection.ordering import final_scores, order_selection
from meteora.selection.pairing import pair_rationales, pairing_allowed
from meteora.selection.selector import EvidenceSelector
from meteora.selection.selector_settings import SelectorSettings
from meteora.selection.signals import CandidateSignals, similarities
from meteora.types import Hit, Passage, Ranking


def angle(cosines: list[float]) -> np.ndarray:
    """Unit 2-D rows whose cosine with (1, 0) is each given value."""
    c = np.asarray(cosines, dtype=float)
    return np.stack([c, np.sqrt(1.0 - c**2)], axis=1)


def docs(*layout: tuple[str, int]) -> list[Passage]:
    """Passages ``<doc>-<position>`` for (doc, position) pairs."""
    return [Passage(f"{d} {p}", id=f"{d}-{p}", doc_id=d, position=p) for d, p in layout]


E0 = np.array([[1.0, 0.0]])


# --------------------------------------------------------------------------- similarities / signals


def test_similarities_pool_the_rationales_and_fall_back_when_they_cancel():
    r = np.array([[1.0, 0.0], [0.0, 1.0]])
    c = angle([1.0, 0.0])
    sim, pooled = similarities(r, c)
    assert sim.shape == (2, 2) and sim[0].tolist() == pytest.approx([1.0, 0.0])
    assert pooled.tolist() == pytest.approx([np.sqrt(0.5), np.sqrt(0.5)])
    opposed = np.array([[1.0, 0.0], [-1.0, 0.0]])
    _, fallback = similarities(opposed, c)
    assert fallback.tolist() == pytest.approx([0.0, 0.0])  # mean of +1 and -1


def test_signals_table_holds_every_signal():
    ps = docs(("a", 0), ("a", 1), ("b", 0))
    ranking = Ranking([Hit(ps[2], 9.0, 1), Hit(ps[0], 7.0, 2), Hit(ps[1], 5.0, 3)])
    ranking.sources = {"bm25": Ranking([Hit(ps[0], 3.0, 1)]), "dense": ranking}
    r = np.array([[1.0, 0.0], [0.6, 0.8]])
    s = CandidateSignals.build(r, angle([0.9, 0.5, 0.1]), ps, evidence=np.array([1.0, 3.0, 0.0]),
                               query_row=0, retrieval=ranking)
    assert s.n == 3 and s.doc_ids == ["a", "a", "b"] and s.doc_sizes.tolist() == [2, 2, 1]
    assert s.query_cosine.tolist() == pytest.approx([0.9, 0.5, 0.1])
    assert s.retrieval_scores.tolist() == [7.0, 5.0, 9.0] and s.retrieval_ranks.tolist() == [2.0, 3.0, 1.0]
    assert s.member_scores["bm25"][0] == 3.0 and np.isnan(s.member_scores["bm25"][1])
    f = s.features()
    assert f["evidence_gap"].tolist() == [-2.0, 0.0, 0.0]
    assert f["doc_best_pooled"][1] == pytest.approx(f["pooled"][0])
    assert {"query_cosine", "retrieval_rank", "bm25_score", "dense_rank", "rationale_max"} <= set(f)
    assert all(col.shape == (3,) for col in f.values())


def test_signals_without_ranking_or_scorer_leave_those_columns_out():
    s = CandidateSignals.build(E0, angle([0.5]), docs(("a", 0)))
    assert s.evidence is None and s.retrieval_scores is None and s.query_cosine is None
    assert not {"evidence", "retrieval_score", "query_cosine"} & set(s.features())


# --------------------------------------------------------------------------- floor, scores, cuts


def test_relevance_floor_and_ranked():
    assert relevance_floor(np.array([0.1, 0.2, 0.3]), 0.2).tolist() == [False, True, True]
    assert relevance_floor(np.array([-1.0]), None).tolist() == [True]
    order, scores = ranked(np.array([0.2, 0.5, 0.5, 0.1]))
    assert order.tolist() == [1, 2, 0, 3] and scores.tolist() == [0.5, 0.5, 0.2, 0.1]  # ties: candidate order
    empty, _ = ranked(np.zeros(0))
    assert empty.dtype.kind == "i" and empty.size == 0


def test_document_evidence_score_is_document_relevance_plus_evidence_gap():
    pooled = np.array([0.5, 0.3, 0.4])
    logits = np.array([1.0, 3.0, -2.0])
    score = document_evidence_score(pooled, logits, ["d", "d", "e"], 0.1)
    # d: best cosine 0.5; chunk 0 is 2 logits behind the best of d, chunk 1 is the best
    assert score.tolist() == pytest.approx([0.5 - 0.2, 0.5, 0.4])


def test_elbow_cut_keeps_the_head_and_applies_the_floor():
    s = CandidateSignals.build(E0, angle([0.9, 0.85, 0.3, 0.25]), docs(*[("a", i) for i in range(4)]))
    cut = ElbowCut(tau=1.0, min_similarity=0.2)(s)
    assert cut.kept == [0, 1] and cut.elbow.rule == "zscore" and cut.below_floor == []
    assert cut.scores is None and cut.eligible is None  # the selector ranks by max(pooled, pairing)
    strict = ElbowCut(tau=1.0, min_similarity=0.87)(s)
    assert strict.kept == [0] and strict.below_floor == [1]


def test_evidence_band_keeps_chunks_near_the_best_and_restricts_pairing():
    ps = docs(("a", 0), ("a", 1), ("b", 0), ("c", 0))
    s = CandidateSignals.build(E0, angle([0.8, 0.7, 0.78, 0.1]), ps, evidence=np.array([0.0, 2.0, 0.0, 0.0]))
    cut = EvidenceBand(weight=0.05, band=0.05, min_similarity=0.2)(s)
    # a-1 holds a's evidence (score 0.8), a-0 is 0.1 behind it, b-0 scores its cosine 0.78
    assert cut.scores.tolist() == pytest.approx([0.7, 0.8, 0.78, 0.1])
    assert cut.kept == [1, 2] and cut.eligible.tolist() == [False, True, True, False]
    assert (cut.evidence_weight, cut.evidence_band) == (0.05, 0.05)
    with pytest.raises(InvalidInputError, match="evidence"):
        EvidenceBand(0.05, 0.05)(CandidateSignals.build(E0, angle([0.5]), ps[:1]))


# --------------------------------------------------------------------------- pairing


def test_pairing_distinct_and_convergent():
    sim = np.array([[0.9, 0.8], [0.95, 0.1]])
    allowed = np.ones_like(sim, dtype=bool)
    distinct = pair_rationales(sim, allowed, "distinct", ["x", "y"], ["r0", "r1"])
    assert [(p.rationale_index, p.passage_id) for p in distinct.pairs] == [(0, "x"), (1, "y")]
    assert distinct.best == {0: 0.9, 1: 0.1} and distinct.pairs[1].rationale == "r1"
    convergent = pair_rationales(sim, allowed, "convergent", ["x", "y"])
    assert convergent.chosen == [0, 0] and convergent.best == {0: 0.95}


def test_pairing_respects_the_floor_or_the_cut_and_reports_unpaired():
    sim = np.array([[0.1, 0.15], [0.5, 0.1]])
    floor = pairing_allowed(sim, 0.2, None)
    assert floor.tolist() == [[False, False], [True, False]]
    res = pair_rationales(sim, floor, "distinct", ["x", "y"])
    assert res.unpaired == [0] and res.chosen == [0]
    band = pairing_allowed(sim, 0.2, np.array([False, True]))
    assert band.tolist() == [[False, True], [False, True]]  # the cut's eligible set, not the floor


# --------------------------------------------------------------------------- union, expansion


def test_union_keeps_stage_order_and_sources():
    union, sources = union_of({"pairing": [2, 2], "pooling": [0, 2]}, ["a", "b", "c"])
    assert union == [2, 0] and sources == {"c": {"pairing", "pooling"}, "a": {"pooling"}}


def test_expansion_reaches_neighbours_in_the_document_and_context():
    cands = docs(("d", 1), ("e", 0))
    context = docs(("d", 0), ("d", 1), ("d", 2), ("d", 3))
    assert with_context(cands, context, window=0) is cands
    allp = with_context(cands, context, window=1)
    assert [p.id for p in allp] == ["d-1", "e-0", "d-0", "d-2", "d-3"]  # the candidate d-1 only once
    assert expand([0], allp, window=1) == [2, 3]
    assert expand([0], allp, window=2) == [2, 3, 4]
    assert expand([0], allp, window=0) == [] and expand([], allp, window=3) == []
    with pytest.raises(InvalidInputError, match="context items must be meteora.Passage"):
        with_context(cands, ["text"], window=1)  # type: ignore[list-item]


# --------------------------------------------------------------------------- ordering


def test_final_scores_and_order():
    pooled = np.array([0.2, 0.5, 0.4])
    assert final_scores(pooled, {0: 0.9}, None).tolist() == [0.9, 0.5, 0.4]
    assert pooled.tolist() == [0.2, 0.5, 0.4]  # not changed in place
    given = np.array([0.1, 0.2, 0.3])
    assert final_scores(pooled, {0: 0.9}, given) is given
    ps = docs(("a", 1), ("b", 0), ("a", 0)) + docs(("a", 2))  # the last one is context: no score
    final = np.array([0.3, 0.9, 0.1])
    assert order_selection([0, 1, 2, 3], final, ps, "score") == [1, 0, 2, 3]
    assert order_selection([0, 1, 2, 3], final, ps, "document") == [1, 2, 0, 3]


# --------------------------------------------------------------------------- a cut of one's own


class TopOne:
    """A stand-in for a learned cut: keep the best retrieval rank, rank by a given score."""

    def __call__(self, signals: CandidateSignals) -> CutResult:
        best = int(np.nanargmin(signals.retrieval_ranks))
        scores = -signals.retrieval_ranks
        order, order_scores = ranked(scores)
        return CutResult(kept=[best], order=order, order_scores=order_scores, scores=scores,
                         eligible=np.arange(signals.n) == best)


def test_a_custom_cut_plugs_into_the_selector():
    ps = docs(("a", 0), ("b", 0), ("c", 0))
    ranking = Ranking([Hit(ps[2], 1.0, 1), Hit(ps[0], 0.5, 2), Hit(ps[1], 0.2, 3)])
    assert isinstance(TopOne(), Cut)
    sel = EvidenceSelector(SelectorSettings(), cut=TopOne())
    res = sel.select(E0, angle([0.9, 0.8, 0.3]), ps, retrieval=ranking)
    assert res.selected_ids == ["c-0"]  # pairing may only take the eligible candidate
    assert res.ranking.ids == ["c-0", "a-0", "b-0"] and res.ranking.scores == [-1.0, -2.0, -3.0]
    assert res.explanation.elbow is None and res.explanation.evidence_band is None
    with pytest.raises(InvalidInputError, match="cut must be a callable"):
        EvidenceSelector(cut=3)  # type: ignore[arg-type]


def test_the_explanation_is_assembled_from_the_stage_reports():
    ps = docs(("a", 0), ("a", 1), ("b", 0))
    context = docs(("a", 2))
    res = EvidenceSelector(SelectorSettings(window=1, cut="elbow")).select(
        np.array([[1.0, 0.0]]), angle([0.9, 0.3, 0.25]), ps, rationales=["q"], query="q", context=ps + context
    )
    ex = res.explanation
    assert ex.pooled_order == ["a-0", "a-1", "b-0"] and ex.elbow is not None
    assert ex.pairs[0].passage_id == "a-0" and ex.sources["a-0"] == {"pairing", "pooling"}
    assert ex.expansion_added == ["a-1"] and ex.window == 1
    assert "Expansion (window 1): added a-1" in res.explain()


def test_explain_shows_context_chunks_expansion_added_without_a_score():
    ps = docs(("a", 0), ("b", 0))
    res = EvidenceSelector(SelectorSettings(window=1)).select(
        np.array([[1.0, 0.0]]), angle([0.9, 0.1]), ps, context=docs(("a", 1))
    )
    assert res.selected_ids == ["a-0", "a-1"] and "a-1" not in res.scores
    assert "a-1 (doc a, pos 1) context, unscored [expansion]" in res.explain()

"""The evidence chunk selection engine (ECSE) itself: :class:`EvidenceSelector`.

It composes the stages of :mod:`meteora.selection`, each a small function or class of
its own module:

1. :func:`~meteora.selection.validation.check_inputs` — validate, unit-normalise;
2. :class:`~meteora.selection.signals.CandidateSignals` — the per-candidate signal
   table (cosines, evidence logits, documents, retriever scores, the query);
3. the cut (:mod:`meteora.selection.cuts`) — ``settings.cut``:
   :class:`~meteora.selection.learned_cut.LearnedCut` (default; the packaged query-only
   model unless one is given), :class:`~meteora.selection.cuts.EvidenceBand` with
   evidence logits, :class:`~meteora.selection.cuts.ElbowCut` without; or one given to
   the selector;
4. :mod:`~meteora.selection.pairing` — each rationale takes a chunk;
5. :mod:`~meteora.selection.expansion` — the union of the stages, then neighbours;
6. :mod:`~meteora.selection.ordering` — ranking scores and the order of the selection;

and assembles the :class:`~meteora.selection.results.SelectionResult` from what each
stage reports. :meth:`EvidenceSelector.select` runs them all on arrays; a caller that
scores evidence itself (:class:`~meteora.Reranker`) builds the signals
(:meth:`~EvidenceSelector.signals`), asks which candidates the cut wants scored
(:meth:`~EvidenceSelector.evidence_wanted`), adds the logits and selects
(:meth:`~EvidenceSelector.select_signals`).

Example:
    >>> import numpy as np
    >>> from meteora.types import to_passages
    >>> sel = EvidenceSelector(SelectorSettings(cut="elbow"))
    >>> res = sel.select(np.array([[1.0, 0.0]]), np.eye(2), to_passages(["fever", "cats"]))
    >>> res.selected_ids, sorted(res.explanation.sources["0"])
    (['0'], ['pairing', 'pooling'])
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from meteora.errors import InvalidInputError
from meteora.selection.cuts import Cut, CutResult, ElbowCut, EvidenceBand, evidence_wanted
from meteora.selection.expansion import expand, union_of, with_context
from meteora.selection.learned_cut import learned_cut_for
from meteora.selection.ordering import final_scores, order_selection
from meteora.selection.pairing import Pairing, pair_rationales, pairing_allowed
from meteora.selection.results import ChunkScore, SelectionExplanation, SelectionResult
from meteora.selection.selector_settings import SelectorSettings
from meteora.selection.signals import CandidateSignals
from meteora.selection.validation import as_matrix, check_evidence, check_inputs, normalise_rows
from meteora.types import Passage, Ranking

__all__ = ["EvidenceSelector"]

logger = logging.getLogger(__name__)


class EvidenceSelector:
    """METEORA's evidence chunk selection engine (ECSE).

    Args:
        settings: the :class:`~meteora.selection.selector_settings.SelectorSettings`
            (default ``SelectorSettings()``).
        calibrated: the evidence scorer's calibration (``evidence_weight``,
            ``evidence_band``) that ``"calibrated"`` settings stand for; the defaults
            when absent (see :meth:`SelectorSettings.resolve`).
        cut: the cut stage, any :class:`~meteora.selection.cuts.Cut`; ``None`` (default)
            follows ``settings.cut``: the packaged
            :class:`~meteora.selection.learned_cut.LearnedCut` (query-only model; it needs
            the query, else the band runs), or
            :class:`~meteora.selection.cuts.EvidenceBand` when ``select`` gets evidence
            logits and :class:`~meteora.selection.cuts.ElbowCut` otherwise.

    Raises:
        InvalidInputError: ``settings`` is not a ``SelectorSettings`` or ``cut`` is not
            callable.

    Example:
        >>> EvidenceSelector(SelectorSettings(pairing="convergent", window=1, order="document"))
        EvidenceSelector(SelectorSettings(pairing='convergent', tau=1.0, window=1, use_pairing=True, use_pooling=True, order='document', expand_from_documents=True, min_similarity=0.2, evidence_weight=0.03, evidence_band=0.06, cut='learned'))
    """

    def __init__(
        self,
        settings: SelectorSettings | None = None,
        *,
        calibrated: Mapping[str, float] | None = None,
        cut: Cut | None = None,
    ) -> None:
        if settings is None:
            settings = SelectorSettings()
        if not isinstance(settings, SelectorSettings):
            raise InvalidInputError(
                f"settings must be a meteora.SelectorSettings, got {type(settings).__name__}; "
                "build one with SelectorSettings(window=..., tau=...)"
            )
        if cut is not None and not callable(cut):
            raise InvalidInputError(f"cut must be a callable (signals) -> CutResult, got {type(cut).__name__}")
        #: the settings with the evidence knobs resolved to numbers
        self.settings = settings.resolve(calibrated)
        self.cut = cut

    def __repr__(self) -> str:
        cut = "" if self.cut is None else f", cut={self.cut!r}"
        return f"EvidenceSelector({self.settings!r}{cut})"

    def cut_for(self, signals: CandidateSignals, *, scored: bool | None = None) -> Cut:
        """The cut stage for this query: the given one; else, by ``settings.cut``, the
        packaged learned cut when the signals carry the query, the evidence band when
        the candidates are ``scored`` (default: the signals hold evidence logits), the
        elbow otherwise."""
        if self.cut is not None:
            return self.cut
        s = self.settings
        if s.cut == "learned" and signals.query is not None and signals.query_cosine is not None:
            return learned_cut_for(None)
        scored = signals.evidence is not None if scored is None else scored
        if s.cut != "elbow" and scored:
            return EvidenceBand(float(s.evidence_weight), float(s.evidence_band), s.min_similarity)
        return ElbowCut(s.tau, s.min_similarity)

    def evidence_wanted(self, signals: CandidateSignals) -> list[int]:
        """The candidates whose evidence logits the cut would read (sorted indices):
        stage 1's top ``n_score`` for the learned cut, the chunks that share a document
        for the band, none for the elbow."""
        return evidence_wanted(self.cut_for(signals, scored=True), signals)

    def signals(
        self,
        rationale_embeddings: np.ndarray,
        passage_embeddings: np.ndarray,
        passages: Sequence[Passage],
        *,
        rationales: Sequence[str] | None = None,
        query: str | None = None,
        query_embedding: Any = None,
        evidence: Any = None,
        retrieval: Ranking | None = None,
    ) -> CandidateSignals:
        """The checked inputs as the signal table the stages read (see :meth:`select`).

        Raises:
            InvalidInputError: as :meth:`select`, or a query embedding of the wrong shape.
        """
        r, c, plist, texts = check_inputs(rationale_embeddings, passage_embeddings, passages, rationales)
        query_row = texts.index(query) if texts is not None and query is not None and query in texts else None
        qemb = None
        if query_embedding is not None:
            q = as_matrix(query_embedding, "query_embedding").reshape(1, -1)
            if q.shape[1] != r.shape[1] or not np.all(np.isfinite(q)):
                raise InvalidInputError(f"query_embedding must be one finite ({r.shape[1]},) vector, got shape {q.shape}")
            qemb = normalise_rows(q, "query_embedding")[0]
        return CandidateSignals.build(
            r, c, plist, evidence=check_evidence(evidence, len(plist)), query_row=query_row, retrieval=retrieval,
            query=query, query_embedding=qemb,
        )

    def select(
        self,
        rationale_embeddings: np.ndarray,
        passage_embeddings: np.ndarray,
        passages: Sequence[Passage],
        *,
        rationales: Sequence[str] | None = None,
        query: str | None = None,
        context: Sequence[Passage] | None = None,
        evidence: Any = None,
        retrieval: Ranking | None = None,
        query_embedding: Any = None,
    ) -> SelectionResult:
        """Select evidence chunks and rank all candidates.

        Args:
            rationale_embeddings: ``(R, d)`` embeddings of the rationales (R ≥ 1; with
                no generator, the query's embedding is the single rationale).
            passage_embeddings: ``(N, d)`` embeddings of the candidates, row ``i`` for
                ``passages[i]``. Neither input needs to be normalised.
            passages: the ``N`` candidates (:class:`meteora.types.Passage`, unique ids).
            rationales: optional rationale texts, one per row, shown in the explanation
                (a text equal to ``query`` marks the query's row in the signals).
            query: optional query, stored on the returned ranking.
            context: optional extra passages that expansion may add besides the
                candidates — typically the other chunks of the candidates' documents
                (e.g. ``retriever.passages``). They are never scored or ranked: an
                expansion-added context passage comes after the scored selection (order
                ``"score"``) or at its place in its document (order ``"document"``).
            evidence: optional ``(N,)`` evidence logits from an evidence scorer, one per
                candidate (only their differences inside a document matter): the
                score becomes document relevance + weighted evidence gap, and the
                pooled cut a band below the best score (see :mod:`meteora.selection`).
            retrieval: optional ranking the candidates came from (its scores and ranks
                join the signals a cut may read).
            query_embedding: optional ``(d,)`` embedding of ``query`` (for the learned
                cut when no rationale is the query itself).

        Returns:
            A :class:`SelectionResult`; ``N = 0`` gives an empty one.

        Raises:
            InvalidInputError: shape or dimension mismatch, NaN/inf, non-numeric
                dtype, zero-norm rows, duplicate ids, ``len(rationales) != R``.

        Example:
            >>> from meteora.types import to_passages
            >>> ps = to_passages([{"text": t, "id": f"d1-{i}", "doc_id": "d1", "position": i} for i, t in enumerate("abc")])
            >>> res = EvidenceSelector(SelectorSettings(window=1)).select(np.eye(3)[:1], np.eye(3), ps)
            >>> res.selected_ids, res.explanation.expansion_added
            (['d1-0', 'd1-1'], ['d1-1'])
        """
        signals = self.signals(
            rationale_embeddings, passage_embeddings, passages, rationales=rationales, query=query,
            evidence=evidence, retrieval=retrieval, query_embedding=query_embedding,
        )
        return self.select_signals(signals, context=context, rationales=rationales)

    def select_signals(
        self,
        signals: CandidateSignals,
        *,
        context: Sequence[Passage] | None = None,
        rationales: Sequence[str] | None = None,
    ) -> SelectionResult:
        """Select in a prepared signal table (:meth:`signals`, then
        :meth:`CandidateSignals.with_evidence <meteora.selection.signals.CandidateSignals.with_evidence>`
        for the logits :meth:`evidence_wanted` names; NaN for the others)."""
        s = self.settings
        plist = signals.passages
        texts = list(rationales) if rationales is not None else None
        cut = self.cut_for(signals)(signals)
        pairing = Pairing.empty()
        if s.use_pairing and signals.n:
            allowed = pairing_allowed(signals.rationale_cosines, s.min_similarity, cut.eligible)
            pairing = pair_rationales(signals.rationale_cosines, allowed, s.pairing, signals.ids, texts)
        union, sources = union_of({"pairing": pairing.chosen, "pooling": cut.kept if s.use_pooling else []}, signals.ids)
        candidates_and_context = with_context(plist, context, s.window)
        expanded = expand(union, candidates_and_context, s.window)
        for i in expanded:
            sources.setdefault(candidates_and_context[i].id, set()).add("expansion")
        final = final_scores(signals.pooled, pairing.best, cut.scores)
        chosen = order_selection(union + expanded, final, candidates_and_context, s.order)
        logger.debug("selection: %d of %d candidates (%d from expansion)", len(chosen), signals.n, len(expanded))
        return SelectionResult(
            [candidates_and_context[i] for i in chosen],
            Ranking.from_scores(plist, [float(x) for x in final], query=signals.query),
            _chunk_scores(signals, pairing, final),
            self._explanation(signals, cut, pairing, sources, [candidates_and_context[i].id for i in expanded]),
        )

    def _explanation(
        self, signals: CandidateSignals, cut: CutResult, pairing: Pairing, sources: dict[str, set[str]], added: list[str]
    ) -> SelectionExplanation:
        """The explanation, assembled from the stages' reports."""
        s = self.settings
        ids = signals.ids
        return SelectionExplanation(
            pairs=pairing.pairs,
            unpaired_rationales=pairing.unpaired,
            pooled_order=[ids[int(i)] for i in cut.order],
            pooled_scores=[float(x) for x in cut.order_scores],
            elbow=cut.elbow if s.use_pooling else None,
            sources=sources,
            expansion_added=added,
            pairing_mode=s.pairing if s.use_pairing else None,
            window=s.window,
            tau=s.tau,
            order=s.order,
            min_similarity=s.min_similarity,
            evidence_band=cut.evidence_band,
            evidence_weight=cut.evidence_weight,
            below_floor=[ids[i] for i in cut.below_floor] if s.use_pooling else [],
            cut=cut.name,
        )


def _chunk_scores(signals: CandidateSignals, pairing: Pairing, final: np.ndarray) -> dict[str, ChunkScore]:
    ev = signals.evidence
    return {
        p.id: ChunkScore(
            pooled=float(signals.pooled[i]),
            pairing=float(pairing.best[i]) if i in pairing.best else None,
            score=float(final[i]),
            evidence=float(ev[i]) if ev is not None and not np.isnan(ev[i]) else None,
        )
        for i, p in enumerate(signals.passages)
    }

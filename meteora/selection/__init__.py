"""Stage 2 of METEORA: the evidence chunk selection engine (ECSE).

Given rationale embeddings ``r_j`` and candidate chunk embeddings ``c_i`` (both are
L2-normalised here, so the caller need not), the similarity matrix is
``S[j, i] = cos(r_j, c_i)`` and the selection runs in four steps:

1. **Pairing** (local). Each rationale, in order, picks one chunk.
   ``pairing="distinct"`` masks chunks already taken, so each rationale adds a new
   chunk (the paper's experiments); ``pairing="convergent"`` is a plain argmax with
   duplicates allowed. The *pairing score* of a chunk is the largest similarity among
   the rationales that chose it.
2. **The cut** (global, adaptive k), ``SelectorSettings.cut``:

   * ``"learned"`` (default, :class:`LearnedCut`): a LightGBM model reads each
     candidate's list-relative signals (its cosine to the query and to the pooled
     rationales, a BM25 of the query over the candidate list, its document's standing
     in the list, and the evidence scorer's logit for stage 1's top 10) and gives
     P(relevant); the candidates are ranked by P and the top
     ``k* = argmax_k 2·Σ_{i≤k} p_(i) / (k + Σ p)`` kept (the count with the best
     expected F1, at least 1). Pairing picks only inside it, so the selection is
     exactly that top ``k*``, and a score is a probability (thresholdable, comparable
     across queries). It reads the query's text and embedding; without them the band
     (or the elbow) runs.
   * ``"band"`` (:class:`EvidenceBand`, with an evidence scorer): a chunk scores its
     document's best pooled cosine plus ``evidence_weight`` × its logit's gap to the
     best logit of its document, and every chunk within ``evidence_band`` of the best
     score (and at or above ``min_similarity``) is kept; without a scorer the elbow.
   * ``"elbow"`` (:class:`ElbowCut`): ``p = mean_j r_j`` (re-normalised),
     ``s_i = cos(p, c_i)``, sorted descending, cut by :func:`elbow_cutoff`, then the
     relevance floor ``min_similarity`` (default 0.2).

   Any :class:`Cut` plugs in (``EvidenceSelector(settings, cut=...)``).
3. **Union** of the two selections.
4. **Expansion**. Every selected chunk pulls in its neighbours ``position ± 1..window``
   of the same ``doc_id`` that are among the candidates or in the optional ``context``
   passages (typically the rest of the candidates' documents, so expansion can reach a
   neighbour the retriever did not return).

The result also ranks *all* candidates, so the selector doubles as a re-ranker with
:meth:`SelectionResult.top_k`: by P with the learned cut, by the band's score, or by
``max(pooled, pairing)`` (a cosine in ``[-1, 1]``) with the elbow. No score is
min-max normalised across the candidate set, so a threshold means the same thing for
every query.

The package, one concept a module; :class:`EvidenceSelector` composes the stages:

* :mod:`meteora.selection.selector_settings`: :class:`SelectorSettings`, the knobs, their
  defaults and their checks;
* :mod:`meteora.selection.validation`: input checks (:func:`check_inputs`);
* :mod:`meteora.selection.signals`: :func:`similarities` and :class:`CandidateSignals`,
  the per-candidate signal table every stage reads;
* :mod:`meteora.selection.cuts`: the cut stage (:class:`ElbowCut`, :class:`EvidenceBand`,
  the :class:`Cut` protocol) and the relevance floor;
* :mod:`meteora.selection.learned_cut`: :class:`LearnedCut`, its models and
  :func:`expected_f1_cut`; :mod:`meteora.selection.cut_features`: its features;
* :mod:`meteora.selection.elbow`: :func:`elbow_cutoff` and its :class:`ElbowInfo`;
* :mod:`meteora.selection.pairing`: rationale-chunk pairing;
* :mod:`meteora.selection.expansion`: the union of the stages and neighbour expansion;
* :mod:`meteora.selection.ordering`: ranking scores and the order of the selection;
* :mod:`meteora.selection.results`: :class:`SelectionResult` and its parts
  (:class:`ChunkScore`, :class:`SelectionExplanation`, :class:`RationalePair`);
* :mod:`meteora.selection.selector`: :class:`EvidenceSelector`.

Example:
    >>> import numpy as np
    >>> from meteora.types import to_passages
    >>> passages = to_passages(["fever", "aspirin", "cats"])
    >>> sel = EvidenceSelector(SelectorSettings(window=0, cut="elbow"))
    >>> res = sel.select(np.array([[1.0, 0.0]]), np.array([[0.9, 0.1], [0.8, 0.6], [0.0, 1.0]]), passages)
    >>> res.selected_ids
    ['0']
    >>> res.ranking.ids
    ['0', '1', '2']
"""

from meteora.selection.cuts import Cut, CutResult, ElbowCut, EvidenceBand
from meteora.selection.elbow import ElbowInfo, elbow_cutoff
from meteora.selection.learned_cut import (
    LearnedCut,
    expected_f1_cut,
    learned_cut_for,
    load_cut_models,
)
from meteora.selection.results import (
    ChunkScore,
    RationalePair,
    SelectionExplanation,
    SelectionResult,
)
from meteora.selection.selector import EvidenceSelector
from meteora.selection.selector_settings import CUTS, ORDERS, PAIRING_MODES, SelectorSettings
from meteora.selection.signals import CandidateSignals

__all__ = [
    "EvidenceSelector",
    "SelectorSettings",
    "CUTS",
    "PAIRING_MODES",
    "ORDERS",
    "CandidateSignals",
    "Cut",
    "CutResult",
    "ElbowCut",
    "EvidenceBand",
    "LearnedCut",
    "expected_f1_cut",
    "learned_cut_for",
    "load_cut_models",
    "ElbowInfo",
    "elbow_cutoff",
    "RationalePair",
    "ChunkScore",
    "SelectionExplanation",
    "SelectionResult",
]

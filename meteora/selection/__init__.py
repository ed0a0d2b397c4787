"""Stage 2 of METEORA: the evidence chunk selection engine (ECSE), embeddings only.

Given rationale embeddings ``r_j`` and candidate chunk embeddings ``c_i`` (both are
L2-normalised here, so the caller need not), the similarity matrix is
``S[j, i] = cos(r_j, c_i)`` and the selection runs in four steps:

1. **Pairing** (local). Each rationale, in order, picks one chunk.
   ``pairing="distinct"`` masks chunks already taken, so each rationale adds a new
   chunk (the paper's experiments); ``pairing="convergent"`` is a plain argmax with
   duplicates allowed. The *pairing score* of a chunk is the largest similarity among
   the rationales that chose it.
2. **Pooling + cut** (global, adaptive k). ``p = mean_j r_j`` (re-normalised),
   ``s_i = cos(p, c_i)``, sorted descending, and cut by :func:`elbow_cutoff`
   (:class:`ElbowCut`; with a scorer :class:`EvidenceBand`, below; any :class:`Cut`,
   e.g. a learned one reading :class:`CandidateSignals`, plugs in).
3. **Union** of the two selections.
4. **Expansion**. Every selected chunk pulls in its neighbours ``position ± 1..window``
   of the same ``doc_id`` that are among the candidates or in the optional ``context``
   passages (typically the rest of the candidates' documents, so expansion can reach a
   neighbour the retriever did not return).

The result also ranks *all* candidates by ``score = max(pooled, pairing)``, so the
selector doubles as a re-ranker with :meth:`SelectionResult.top_k`. Scores are raw
cosine similarities in ``[-1, 1]`` to the rationales (never min-max normalised across
the candidate set), so a threshold means the same thing for every query.

**Evidence of relevance.** A stage never selects a chunk just because it must pick
something: pairing and pooling skip chunks whose cosine is below ``min_similarity``
(default 0.2: on PubMedQA *train* questions 99 % of the answer-bearing chunks have a
cosine of at least 0.30 to the question, while unrelated text sits near 0).

**With an evidence scorer** (:class:`meteora.scorer.EvidenceScorer`, a cross-encoder
giving each candidate an *evidence logit*), ``select(..., evidence=logits)`` scores a
chunk by two heads: how relevant its **document** is (the best pooled cosine among the
candidates of its ``doc_id``) and whether it is the chunk of that document that holds
the finding (``evidence_weight`` times its logit minus the best logit of its document,
0 for the best one)::

    score_i = max_{j in doc(i)} cos(p, c_j) + evidence_weight * (logit_i - max_{j in doc(i)} logit_j)

The pooled cut is then a relevance **band**: every chunk whose score is within
``evidence_band`` of the best score (and at or above ``min_similarity``) is kept — as
many as are about as good as the best one. Pairing picks only inside the band. Scores
stay on the cosine scale; a passage that is its document's only candidate scores its
plain cosine.

The package, one concept a module; :class:`EvidenceSelector` composes the stages:

* :mod:`meteora.selection.selector_settings`: :class:`SelectorSettings`, the knobs, their
  defaults and their checks;
* :mod:`meteora.selection.validation`: input checks (:func:`check_inputs`);
* :mod:`meteora.selection.signals`: :func:`similarities` and :class:`CandidateSignals`,
  the per-candidate signal table every stage reads;
* :mod:`meteora.selection.cuts`: the cut stage (:class:`ElbowCut`, :class:`EvidenceBand`,
  the :class:`Cut` protocol a learned cut implements) and the relevance floor;
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
    >>> sel = EvidenceSelector(SelectorSettings(window=0))
    >>> res = sel.select(np.array([[1.0, 0.0]]), np.array([[0.9, 0.1], [0.8, 0.6], [0.0, 1.0]]), passages)
    >>> res.selected_ids
    ['0']
    >>> res.ranking.ids
    ['0', '1', '2']
"""

from meteora.selection.cuts import Cut, CutResult, ElbowCut, EvidenceBand
from meteora.selection.elbow import ElbowInfo, elbow_cutoff
from meteora.selection.results import (
    ChunkScore,
    RationalePair,
    SelectionExplanation,
    SelectionResult,
)
from meteora.selection.selector import EvidenceSelector
from meteora.selection.selector_settings import ORDERS, PAIRING_MODES, SelectorSettings
from meteora.selection.signals import CandidateSignals

__all__ = [
    "EvidenceSelector",
    "SelectorSettings",
    "PAIRING_MODES",
    "ORDERS",
    "CandidateSignals",
    "Cut",
    "CutResult",
    "ElbowCut",
    "EvidenceBand",
    "ElbowInfo",
    "elbow_cutoff",
    "RationalePair",
    "ChunkScore",
    "SelectionExplanation",
    "SelectionResult",
]

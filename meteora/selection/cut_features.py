"""The learned cut's features: one row of list-relative numbers per candidate.

:func:`candidate_features` turns one query's
:class:`~meteora.selection.signals.CandidateSignals` into an ``(N, F)`` float matrix whose
columns are :data:`FEATURES`. Every feature is relative to the candidate list (gaps to
the best, z-scores, log ranks, document structure, list shape), so none depends on one
corpus' score scale, chunk length or the order the retriever returned the candidates in.
Missing signals are NaN (LightGBM routes them as missing):

* the query cosine: value, gap to the best, z-score, log rank;
* BM25 of the query over the candidate list itself
  (:func:`~meteora.selection.signals.candidate_bm25`): value over the best, gap in
  standard deviations, log rank;
* the generated rationales (NaN without any): the pooled cosine (value, gap, z-score,
  log rank, minus the query cosine), the best cosine to one rationale and its gap;
* the evidence scorer's logit (NaN where it did not read the candidate): value, gap to
  the best, z-score, gap to and rank within its own document, log rank;
* documents: candidates in the same document, rank and cosine gap inside it, the
  document's best cosine minus the list's best, the document's rank;
* the list (the same value for every candidate of a query): top cosine, its gap to the
  5th and 10th, spread, candidates within 0.05 of the top, share of distinct documents,
  size of the top document, the rationale and BM25 gaps, the query's word count.

Example:
    >>> import numpy as np
    >>> from meteora.selection.signals import CandidateSignals
    >>> from meteora.types import to_passages
    >>> s = CandidateSignals.build(np.eye(2)[:1], np.eye(2), to_passages(["fever in children", "cats"]),
    ...                            query_row=0, query="fever?")
    >>> X = candidate_features(s)
    >>> X.shape == (2, len(FEATURES)), float(X[0, FEATURES.index("cos_q_gap")])
    (True, 0.0)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from meteora.selection.signals import CandidateSignals

__all__ = [
    "FEATURES",
    "RATIONALE_FEATURES",
    "EVIDENCE_FEATURES",
    "BM25_FEATURES",
    "candidate_features",
    "feature_columns",
]

#: Every feature :func:`candidate_features` computes, in column order.
FEATURES: tuple[str, ...] = (
    # query cosine
    "cos_q", "cos_q_gap", "cos_q_z", "cos_q_lrank",
    # the candidate's position in the input list (computed, not used by the shipped models)
    "rr_lrank",
    # BM25 over the candidate list
    "bm25_rel", "bm25_gap_z", "bm25_lrank",
    # generated rationales (NaN without them)
    "rat_pool", "rat_pool_gap", "rat_pool_z", "rat_max", "rat_max_gap", "rat_pool_lrank", "rat_minus_q",
    # evidence scorer (NaN where not scored)
    "ev", "ev_gap", "ev_z", "ev_doc_gap", "ev_doc_rank", "ev_lrank",
    # document structure
    "n_in_doc", "doc_rank_cos", "cos_doc_gap", "doc_best_gap", "doc_lrank",
    # list level
    "L_cos_top", "L_cos_gap5", "L_cos_gap10", "L_cos_std", "L_n_close", "L_docs_frac", "L_top_doc_n",
    "L_rat_top", "L_rat_gap5", "L_bm25_gap5", "L_qwords",
)
#: Features that read the generated rationales.
RATIONALE_FEATURES = (
    "rat_pool", "rat_pool_gap", "rat_pool_z", "rat_max", "rat_max_gap", "rat_pool_lrank", "rat_minus_q",
    "L_rat_top", "L_rat_gap5",
)
#: Features that read the evidence scorer's logits.
EVIDENCE_FEATURES = ("ev", "ev_gap", "ev_z", "ev_doc_gap", "ev_doc_rank", "ev_lrank")
#: Features that read the candidate-list BM25.
BM25_FEATURES = ("bm25_rel", "bm25_gap_z", "bm25_lrank", "L_bm25_gap5")

_SD_EPS = 1e-9


def feature_columns(names: Sequence[str]) -> list[int]:
    """The columns of :data:`FEATURES` that ``names`` are, in the given order.

    Example:
        >>> feature_columns(["cos_q", "ev"])
        [0, 15]
    """
    unknown = [n for n in names if n not in FEATURES]
    if unknown:
        raise ValueError(f"unknown cut features {unknown}")
    return [FEATURES.index(n) for n in names]


def _z(x: np.ndarray) -> np.ndarray:
    sd = float(np.nanstd(x))
    return (x - np.nanmean(x)) / sd if sd > _SD_EPS else np.zeros_like(x)


def _lrank(x: np.ndarray) -> np.ndarray:
    """log2 of the 1-based rank by descending value (ties by position; NaN stays NaN)."""
    out = np.full(x.shape, np.nan)
    ok = ~np.isnan(x)
    idx = np.flatnonzero(ok)
    order = idx[np.argsort(-x[ok], kind="stable")]
    out[order] = np.log2(np.arange(1, len(order) + 1))
    return out


def _kth_gap(x: np.ndarray, k: int) -> float:
    s = np.sort(x[~np.isnan(x)])[::-1]
    if len(s) == 0:
        return np.nan
    return float(s[0] - s[min(k, len(s)) - 1])


def _rationale_columns(f: dict[str, np.ndarray], s: CandidateSignals, cq: np.ndarray, full) -> None:
    rows = s.generated_rows
    if not rows:
        for k in RATIONALE_FEATURES:
            f[k] = full(np.nan)
        return
    pool = s.pooled.astype(np.float64)
    rmax = s.rationale_cosines[rows].max(axis=0).astype(np.float64)
    f["rat_pool"] = pool
    f["rat_pool_gap"] = pool - pool.max()
    f["rat_pool_z"] = _z(pool)
    f["rat_max"] = rmax
    f["rat_max_gap"] = rmax - rmax.max()
    f["rat_pool_lrank"] = _lrank(pool)
    f["rat_minus_q"] = pool - cq
    f["L_rat_top"] = full(pool.max())
    f["L_rat_gap5"] = full(_kth_gap(pool, 5))


def _evidence_columns(f: dict[str, np.ndarray], ev: np.ndarray, by_doc: dict[str, list[int]], full) -> None:
    if np.all(np.isnan(ev)):
        for k in EVIDENCE_FEATURES:
            f[k] = full(np.nan)
        return
    f["ev"] = ev
    f["ev_gap"] = ev - np.nanmax(ev)
    f["ev_z"] = _z(ev)
    f["ev_lrank"] = _lrank(ev)
    gap = full(np.nan)
    rank = full(np.nan)
    for idx in by_doc.values():
        v = ev[idx]
        if np.all(np.isnan(v)):
            continue
        gap[idx] = v - np.nanmax(v)
        rank[idx] = _lrank(v)
    f["ev_doc_gap"] = gap
    f["ev_doc_rank"] = rank


def candidate_features(signals: CandidateSignals) -> np.ndarray:
    """``(N, len(FEATURES))`` features of one query's candidates (see the module doc).

    Raises:
        ValueError: the signals have no query cosine (give the selector the query).
    """
    s = signals
    if s.query_cosine is None:
        raise ValueError("the cut features need each candidate's cosine to the query")
    cq = np.asarray(s.query_cosine, dtype=np.float64)
    n = len(cq)

    def full(v: float) -> np.ndarray:
        return np.full(n, v, dtype=np.float64)

    f: dict[str, np.ndarray] = {}
    if n == 0:
        return np.zeros((0, len(FEATURES)))
    f["cos_q"] = cq
    f["cos_q_gap"] = cq - cq.max()
    f["cos_q_z"] = _z(cq)
    f["cos_q_lrank"] = _lrank(cq)
    f["rr_lrank"] = np.log2(np.arange(1, n + 1, dtype=np.float64))
    bm = s.lexical if s.lexical is not None else full(np.nan)
    bm = np.asarray(bm, dtype=np.float64)
    if np.all(np.isnan(bm)):
        for k in BM25_FEATURES:
            f[k] = full(np.nan)
    else:
        top = np.nanmax(bm)
        f["bm25_rel"] = bm / top if top > 0 else np.zeros(n)
        sd = float(np.nanstd(bm))
        f["bm25_gap_z"] = (bm - top) / sd if sd > _SD_EPS else np.zeros(n)
        f["bm25_lrank"] = _lrank(bm)
        f["L_bm25_gap5"] = full(_kth_gap(bm, 5) / sd if sd > _SD_EPS else 0.0)
    _rationale_columns(f, s, cq, full)
    by_doc: dict[str, list[int]] = {}
    for i, d in enumerate(s.doc_ids):
        by_doc.setdefault(d, []).append(i)
    ev = full(np.nan) if s.evidence is None else np.asarray(s.evidence, dtype=np.float64)
    _evidence_columns(f, ev, by_doc, full)
    n_in, rank_in, gap_in, best_gap = full(0.0), full(0.0), full(0.0), full(0.0)
    best_of_doc: dict[str, float] = {}
    for d, idx in by_doc.items():
        v = cq[idx]
        n_in[idx] = len(idx)
        rank_in[idx] = _lrank(v)
        gap_in[idx] = v - v.max()
        best_of_doc[d] = float(v.max())
        best_gap[idx] = v.max() - cq.max()
    f["n_in_doc"] = n_in
    f["doc_rank_cos"] = rank_in
    f["cos_doc_gap"] = gap_in
    f["doc_best_gap"] = best_gap
    doc_rank = {d: r for r, d in enumerate(sorted(best_of_doc, key=lambda d: -best_of_doc[d]))}
    f["doc_lrank"] = np.array([np.log2(1 + doc_rank[d]) for d in s.doc_ids])
    f["L_cos_top"] = full(cq.max())
    f["L_cos_gap5"] = full(_kth_gap(cq, 5))
    f["L_cos_gap10"] = full(_kth_gap(cq, 10))
    f["L_cos_std"] = full(float(np.std(cq)))
    f["L_n_close"] = full(float(np.sum(cq >= cq.max() - 0.05)))
    f["L_docs_frac"] = full(len(by_doc) / n)
    f["L_top_doc_n"] = full(float(n_in[int(np.argmax(cq))]))
    f["L_qwords"] = full(float(len((s.query or "").split())))
    return np.column_stack([f[k] for k in FEATURES])

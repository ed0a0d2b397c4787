"""Retrieval metrics on BEIR-shaped dicts (set metrics for selections: :mod:`meteora.set_metrics`).

Shapes (as in BEIR and pytrec_eval):

* ``qrels``: ``{query_id: {passage_id: relevance}}`` with integer relevance; a passage
  is relevant when its relevance is >= 1. Negative judgements are treated as 0.
* ``run``: ``{query_id: {passage_id: score}}``; higher scores rank first.
* ``selections``: ``{query_id: [passage_id, ...]}``, an unranked set of chosen passages
  (what an adaptive selector returns instead of a fixed top-k).

Which queries count. Every metric is averaged over **all** queries of ``qrels`` that have
at least one relevant passage. A query that is missing from the run (or the selections)
scores 0 on every metric; pytrec_eval on its own would silently skip it and inflate the
mean. Queries of the run that are not in ``qrels`` are ignored.

Tie handling. Passages with equal scores are ordered by passage id, **descending**
(``"b"`` before ``"a"``), exactly as trec_eval does (it sorts by score descending, then
by document id descending). trec_eval also stores scores as single-precision floats
(C ``float``), so scores that are equal after rounding to float32 (relative difference
below ~6e-8, or both beyond ±3.4e38) tie as well. The pure-python backend,
:func:`rank_run` and :func:`meteora.set_metrics.fixed_k_selections` follow the same rule, so both backends
give the same numbers on any run, ties included. A retriever that wants its own tie
order should make its scores differ by more than float32 precision.

Metric names (case-insensitive in input, canonical in output):

==============  ======================================================================
``NDCG@k``      nDCG cut at k, gain = relevance, discount ``log2(rank + 1)``
                (trec_eval ``ndcg_cut``); ``NDCG`` without ``@k`` uses the whole run
``Recall@k``    relevant passages in the top k / all relevant passages
``P@k``         relevant passages in the top k / k
``MRR@k``       1 / rank of the first relevant passage within the top k, else 0
                (trec_eval ``recip_rank`` on the run truncated to k); ``MRR`` = no cutoff
``MAP``         average precision over the whole run (``MAP@k``: trec_eval ``map_cut``)
==============  ======================================================================

Example:
    >>> qrels = {"q1": {"a": 1, "b": 1}}
    >>> run = {"q1": {"a": 0.9, "x": 0.5, "b": 0.1}}
    >>> evaluate_ranking(qrels, run, ["Recall@1", "Recall@5", "MRR@10"], backend="python")
    {'Recall@1': 0.5, 'Recall@5': 1.0, 'MRR@10': 1.0}
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, overload

import numpy as np

from meteora.errors import InvalidInputError, MissingDependencyError

__all__ = [
    "DEFAULT_METRICS",
    "Qrels",
    "Run",
    "evaluate_ranking",
    "check_qrels",
    "check_run",
    "rank_run",
    "pytrec_eval_available",
]

logger = logging.getLogger(__name__)

DEFAULT_METRICS: tuple[str, ...] = (
    "NDCG@10",
    "Recall@1",
    "Recall@5",
    "Recall@10",
    "Recall@20",
    "Recall@50",
    "MRR@10",
    "MAP",
)

Qrels = Mapping[str, Mapping[str, int]]
Run = Mapping[str, Mapping[str, float]]

_METRIC_RE = re.compile(
    r"^\s*(ndcg|recall|p|precision|mrr|map)\s*(?:@\s*(\d+))?\s*$", re.IGNORECASE
)
_CANONICAL = {
    "ndcg": "NDCG",
    "recall": "Recall",
    "p": "P",
    "precision": "P",
    "mrr": "MRR",
    "map": "MAP",
}
_NEEDS_CUTOFF = {"Recall", "P"}


@dataclass(frozen=True)
class _Metric:
    name: str  # canonical, e.g. "NDCG@10"
    kind: str  # NDCG | Recall | P | MRR | MAP
    k: int | None

    @property
    def trec_measure(self) -> str:
        """The pytrec_eval measure (MRR is computed as recip_rank on a truncated run)."""
        base = {"NDCG": "ndcg", "Recall": "recall", "P": "P", "MRR": "recip_rank", "MAP": "map"}[
            self.kind
        ]
        if self.k is None or self.kind == "MRR":
            return base
        return {"NDCG": "ndcg_cut", "MAP": "map_cut"}.get(self.kind, base) + f".{self.k}"

    @property
    def trec_key(self) -> str:
        """The key pytrec_eval uses for this measure in its result dicts."""
        return self.trec_measure.replace(".", "_")


def _parse_metrics(metrics: Sequence[str] | str) -> list[_Metric]:
    if isinstance(metrics, str):
        metrics = [metrics]
    out: list[_Metric] = []
    seen: set[str] = set()
    for m in metrics:
        match = _METRIC_RE.match(m) if isinstance(m, str) else None
        if match is None:
            raise InvalidInputError(
                f"unknown metric {m!r}; use names like 'NDCG@10', 'Recall@5', 'P@5', 'MRR@10', 'MRR', 'MAP'"
            )
        kind = _CANONICAL[match.group(1).lower()]
        k = int(match.group(2)) if match.group(2) is not None else None
        if k is not None and k < 1:
            raise InvalidInputError(f"metric {m!r}: the cutoff must be a positive integer, got {k}")
        if k is None and kind in _NEEDS_CUTOFF:
            raise InvalidInputError(f"metric {m!r} needs a cutoff, e.g. '{kind}@10'")
        name = kind if k is None else f"{kind}@{k}"
        if name not in seen:
            seen.add(name)
            out.append(_Metric(name, kind, k))
    if not out:
        raise InvalidInputError("metrics is empty; ask for at least one metric, e.g. ['NDCG@10']")
    return out


def check_qrels(qrels: Any) -> dict[str, dict[str, int]]:
    """Validate qrels and return the queries with >= 1 relevant passage (relevance clamped at 0)."""
    if not isinstance(qrels, Mapping):
        raise InvalidInputError(
            f"qrels must be a dict {{query_id: {{passage_id: relevance}}}}, got {type(qrels).__name__}"
        )
    out: dict[str, dict[str, int]] = {}
    for qid, judged in qrels.items():
        if not isinstance(judged, Mapping):
            raise InvalidInputError(
                f"qrels[{qid!r}] must be a dict {{passage_id: relevance}}, got {type(judged).__name__}"
            )
        rels: dict[str, int] = {}
        for pid, rel in judged.items():
            if isinstance(rel, bool) or not isinstance(rel, (int, float)) or float(rel) != int(rel):
                raise InvalidInputError(
                    f"qrels[{qid!r}][{pid!r}] = {rel!r}; relevance must be an integer (0 = not relevant)"
                )
            rels[str(pid)] = max(int(rel), 0)
        if any(r >= 1 for r in rels.values()):
            out[str(qid)] = rels
    return out


def check_run(run: Any) -> dict[str, dict[str, float]]:
    if not isinstance(run, Mapping):
        raise InvalidInputError(
            f"run must be a dict {{query_id: {{passage_id: score}}}}, got {type(run).__name__}"
        )
    out: dict[str, dict[str, float]] = {}
    for qid, scores in run.items():
        if hasattr(scores, "to_run") and not isinstance(scores, Mapping):
            scores = scores.to_run()  # a meteora.Ranking
        if not isinstance(scores, Mapping):
            raise InvalidInputError(
                f"run[{qid!r}] must be a dict {{passage_id: score}} (or a meteora.Ranking), got {type(scores).__name__}"
            )
        clean: dict[str, float] = {}
        for pid, score in scores.items():
            try:
                value = float(score)
            except (TypeError, ValueError) as exc:
                raise InvalidInputError(
                    f"run[{qid!r}][{pid!r}] = {score!r} is not a number"
                ) from exc
            if math.isnan(value):
                raise InvalidInputError(f"run[{qid!r}][{pid!r}] is NaN; scores must be numbers")
            clean[str(pid)] = value
        out[str(qid)] = clean
    return out


def rank_run(scores: Mapping[str, float], k: int | None = None) -> list[str]:
    """Passage ids of one query's run in rank order, trec_eval style.

    Sorted by score descending, ties by passage id descending; cut at ``k`` when given.
    Scores are compared at single precision, as trec_eval does.

    Example:
        >>> rank_run({"a": 1.0, "b": 1.0, "c": 2.0})
        ['c', 'b', 'a']
    """
    if not scores:
        return []
    ids = list(scores)
    keys = _as_float32(scores.values())
    order = sorted(range(len(ids)), key=lambda i: (keys[i], ids[i]), reverse=True)
    ranked = [ids[i] for i in order]
    return ranked if k is None else ranked[:k]


def _as_float32(values: Iterable[float]) -> list[float]:
    """Round scores to single precision, as trec_eval stores them (``float sim``)."""
    with np.errstate(over="ignore"):  # |x| > 3.4e38 becomes ±inf, as the C cast does
        return np.fromiter(values, dtype=np.float64).astype(np.float32).astype(np.float64).tolist()


def pytrec_eval_available() -> bool:
    """True when ``pytrec_eval`` (package pytrec-eval-terrier) can be imported."""
    try:
        import pytrec_eval  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------------------------------
# pure-python backend: the same definitions and the same arithmetic order as trec_eval


def _python_query(
    rels: Mapping[str, int], scores: Mapping[str, float], metrics: list[_Metric]
) -> dict[str, float]:
    ranked = rank_run(scores)
    gains = [rels.get(pid, 0) for pid in ranked]
    num_rel = sum(1 for r in rels.values() if r >= 1)
    ideal = sorted((r for r in rels.values() if r > 0), reverse=True)
    out: dict[str, float] = {}
    for m in metrics:
        k = m.k if m.k is not None else len(ranked)
        if m.kind == "NDCG":
            dcg = 0.0
            for i, g in enumerate(gains[:k]):
                if g > 0:
                    dcg += g / math.log2(i + 2)
            idcg = 0.0
            for i, g in enumerate(ideal[: m.k] if m.k is not None else ideal):
                idcg += g / math.log2(i + 2)
            out[m.name] = dcg / idcg if idcg > 0.0 else 0.0
        elif m.kind == "Recall":
            out[m.name] = sum(1 for g in gains[:k] if g >= 1) / num_rel
        elif m.kind == "P":
            out[m.name] = sum(1 for g in gains[:k] if g >= 1) / k
        elif m.kind == "MRR":
            out[m.name] = next((1.0 / (i + 1) for i, g in enumerate(gains[:k]) if g >= 1), 0.0)
        else:  # MAP
            total, found = 0.0, 0
            for i, g in enumerate(gains[:k]):
                if g >= 1:
                    found += 1
                    total += found / (i + 1)
            out[m.name] = total / num_rel if found else 0.0
    return out


def _python_backend(
    qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]], metrics: list[_Metric]
) -> dict[str, dict[str, float]]:
    return {qid: _python_query(rels, run.get(qid, {}), metrics) for qid, rels in qrels.items()}


# ---------------------------------------------------------------------------------------
# pytrec_eval backend


def _pytrec_backend(
    qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]], metrics: list[_Metric]
) -> dict[str, dict[str, float]]:
    try:
        import pytrec_eval
    except ImportError as exc:
        raise MissingDependencyError(
            "backend='pytrec_eval' needs the optional dependency 'pytrec_eval' (package "
            'pytrec-eval-terrier). Install it with: pip install "meteora-rerank[eval]", '
            "or use backend='python'"
        ) from exc
    # pytrec_eval skips queries absent from the run: evaluate the present ones, fill 0s
    present = {qid: run[qid] for qid in qrels if qid in run}
    zero = {m.name: 0.0 for m in metrics}
    out: dict[str, dict[str, float]] = {qid: dict(zero) for qid in qrels}
    if not present:
        return out
    plain = [m for m in metrics if m.kind != "MRR"]
    if plain:
        evaluator = pytrec_eval.RelevanceEvaluator(qrels, {m.trec_measure for m in plain})
        for qid, values in evaluator.evaluate(present).items():
            for m in plain:
                out[qid][m.name] = float(values[m.trec_key])
    mrr = [m for m in metrics if m.kind == "MRR"]
    if mrr:
        evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"})
        for m in mrr:
            # trec_eval's recip_rank has no cutoff: truncate the run (trec tie order) first
            truncated = (
                present
                if m.k is None
                else {
                    qid: {pid: scores[pid] for pid in rank_run(scores, m.k)}
                    for qid, scores in present.items()
                }
            )
            for qid, values in evaluator.evaluate(truncated).items():
                out[qid][m.name] = float(values["recip_rank"])
    return out


@overload
def evaluate_ranking(
    qrels: Qrels,
    run: Run,
    metrics: Sequence[str] | str = ...,
    *,
    backend: str = ...,
    per_query: Literal[False] = ...,
) -> dict[str, float]: ...


@overload
def evaluate_ranking(
    qrels: Qrels,
    run: Run,
    metrics: Sequence[str] | str = ...,
    *,
    backend: str = ...,
    per_query: Literal[True],
) -> dict[str, dict[str, float]]: ...


def evaluate_ranking(
    qrels: Qrels,
    run: Run,
    metrics: Sequence[str] | str = DEFAULT_METRICS,
    *,
    backend: str = "auto",
    per_query: bool = False,
) -> dict[str, float] | dict[str, dict[str, float]]:
    """Score a ranked run against qrels (nDCG, Recall, P, MRR, MAP).

    Args:
        qrels: ``{query_id: {passage_id: relevance}}``.
        run: ``{query_id: {passage_id: score}}`` (a :class:`meteora.Ranking` per query
            is accepted too).
        metrics: metric names, see the module docstring.
        backend: ``"pytrec_eval"`` (pytrec-eval-terrier), ``"python"`` (pure python,
            same definitions and tie rule) or ``"auto"`` (pytrec_eval when importable).
        per_query: return ``{query_id: {metric: value}}`` instead of the means.

    Returns:
        ``{metric: mean over the queries of qrels with >= 1 relevant passage}``, in the
        order of ``metrics``. With no such query every mean is 0.0 (and a warning is
        logged).

    Raises:
        InvalidInputError: malformed qrels/run or an unknown metric.
        MissingDependencyError: ``backend="pytrec_eval"`` without pytrec-eval-terrier.

    Example:
        >>> qrels = {"q1": {"a": 2, "b": 1}, "q2": {"c": 1}}
        >>> run = {"q1": {"b": 0.9, "a": 0.5}}          # q2 missing: counts as 0
        >>> evaluate_ranking(qrels, run, ["Recall@1", "MRR@10"], backend="python")
        {'Recall@1': 0.25, 'MRR@10': 0.5}
    """
    parsed = _parse_metrics(metrics)
    judged = check_qrels(qrels)
    clean_run = check_run(run)
    if backend not in ("auto", "python", "pytrec_eval"):
        raise InvalidInputError(
            f"backend must be 'auto', 'python' or 'pytrec_eval', got {backend!r}"
        )
    if backend == "auto":
        backend = "pytrec_eval" if pytrec_eval_available() else "python"
    if not judged:
        logger.warning(
            "evaluate_ranking: no query in qrels has a relevant passage; every metric is 0"
        )
    if clean_run and judged and not (judged.keys() & clean_run.keys()):
        logger.warning("evaluate_ranking: no query id of the run is in qrels; check the ids")
    per_q = (
        _pytrec_backend(judged, clean_run, parsed)
        if backend == "pytrec_eval"
        else _python_backend(judged, clean_run, parsed)
    )
    if per_query:
        return per_q
    n = len(per_q)
    return {
        m.name: (math.fsum(v[m.name] for v in per_q.values()) / n if n else 0.0) for m in parsed
    }

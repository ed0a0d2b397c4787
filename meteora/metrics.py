"""Retrieval metrics on BEIR-shaped dicts, and set metrics for selections.

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
:func:`rank_run` and :func:`fixed_k_selections` follow the same rule, so both backends
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
    >>> set_metrics(qrels, {"q1": ["a", "x"]})["precision"]
    0.5
"""

from __future__ import annotations

import logging
import math
import re
import statistics
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, overload

import numpy as np

from meteora.errors import InvalidInputError, MissingDependencyError

__all__ = [
    "DEFAULT_METRICS",
    "evaluate_ranking",
    "set_metrics",
    "per_query_set_metrics",
    "paired_bootstrap_f1",
    "fixed_k_selections",
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


def _check_qrels(qrels: Any) -> dict[str, dict[str, int]]:
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


def _check_run(run: Any) -> dict[str, dict[str, float]]:
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
    judged = _check_qrels(qrels)
    clean_run = _check_run(run)
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


def fixed_k_selections(run: Run, k: int) -> dict[str, list[str]]:
    """The top ``k`` passages of each query of a run, as selections for :func:`set_metrics`.

    Uses the trec_eval tie rule (score descending, then passage id descending).

    Example:
        >>> fixed_k_selections({"q": {"a": 0.1, "b": 0.9, "c": 0.5}}, 2)
        {'q': ['b', 'c']}
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise InvalidInputError(f"k must be a non-negative integer, got {k!r}")
    return {qid: rank_run(scores, k) for qid, scores in _check_run(run).items()}


def per_query_set_metrics(
    qrels: Qrels, selections: Mapping[str, Sequence[str] | Collection[str]]
) -> dict[str, dict[str, float]]:
    """Per-query ``precision``, ``recall``, ``F1`` and ``chunks`` of unranked selections,
    for every query of ``qrels`` with at least one relevant passage (the values
    :func:`set_metrics` averages; useful for paired significance tests).

    Example:
        >>> per_query_set_metrics({"q1": {"a": 1, "b": 1}}, {"q1": ["a", "x"]})["q1"]
        {'precision': 0.5, 'recall': 0.5, 'F1': 0.5, 'chunks': 2}
    """
    judged = _check_qrels(qrels)
    if not isinstance(selections, Mapping):
        raise InvalidInputError(
            f"selections must be a dict {{query_id: [passage_id, ...]}}, got {type(selections).__name__}"
        )
    out: dict[str, dict[str, float]] = {}
    for qid, rels in judged.items():
        chosen = selections.get(qid, ())
        if isinstance(chosen, (str, bytes)) or not isinstance(chosen, Collection):
            raise InvalidInputError(
                f"selections[{qid!r}] must be a list of passage ids, got {type(chosen).__name__}"
            )
        chosen_set = {str(pid) for pid in chosen}
        relevant = {pid for pid, r in rels.items() if r >= 1}
        hits = len(chosen_set & relevant)
        p = hits / len(chosen_set) if chosen_set else 0.0
        r = hits / len(relevant)
        out[qid] = {"precision": p, "recall": r, "F1": 2 * p * r / (p + r) if p + r > 0 else 0.0,
                    "chunks": len(chosen_set)}
    return out


def set_metrics(
    qrels: Qrels, selections: Mapping[str, Sequence[str] | Collection[str]]
) -> dict[str, float]:
    """Precision, recall and F1 of unranked selections, plus how many passages were chosen.

    For each query of ``qrels`` with at least one relevant passage (relevance >= 1):
    precision = |selected ∩ relevant| / |selected| (0 for an empty selection) and
    recall = |selected ∩ relevant| / |relevant|. A query missing from ``selections``
    counts as an empty selection; duplicate ids in a selection count once; selections
    for queries not in ``qrels`` are ignored.

    Returns:
        ``precision`` and ``recall``: means over queries; ``F1``: the harmonic mean of
        those two **averaged** values, ``2PR / (P + R)`` (0 when both are 0);
        ``F1_macro``: the mean of the per-query F1 values; ``mean_chunks`` and
        ``median_chunks``: number of passages selected per query; ``n_queries``.

    Example:
        >>> m = set_metrics({"q1": {"a": 1, "b": 1}, "q2": {"c": 1}},
        ...                 {"q1": ["a", "x"], "q2": ["c"]})
        >>> m["precision"], m["recall"], m["mean_chunks"], m["n_queries"]
        (0.75, 0.75, 1.5, 2)
    """
    rows = list(per_query_set_metrics(qrels, selections).values())
    precisions = [row["precision"] for row in rows]
    recalls = [row["recall"] for row in rows]
    f1s = [row["F1"] for row in rows]
    sizes = [row["chunks"] for row in rows]
    n = len(sizes)
    if n == 0:
        logger.warning("set_metrics: no query in qrels has a relevant passage; every metric is 0")
        return {
            "precision": 0.0,
            "recall": 0.0,
            "F1": 0.0,
            "F1_macro": 0.0,
            "mean_chunks": 0.0,
            "median_chunks": 0.0,
            "n_queries": 0,
        }
    precision = math.fsum(precisions) / n
    recall = math.fsum(recalls) / n
    return {
        "precision": precision,
        "recall": recall,
        "F1": 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0,
        "F1_macro": math.fsum(f1s) / n,
        "mean_chunks": sum(sizes) / n,
        "median_chunks": float(statistics.median(sizes)),
        "n_queries": n,
    }


def paired_bootstrap_f1(
    qrels: Qrels,
    a: Mapping[str, Sequence[str] | Collection[str]],
    b: Mapping[str, Sequence[str] | Collection[str]],
    *,
    resamples: int = 10_000,
    seed: int = 0,
) -> dict[str, Any]:
    """Paired bootstrap of ``F1(a) - F1(b)`` over the queries of ``qrels``.

    F1 is :func:`set_metrics`' (``2PR/(P+R)`` of the mean precision and recall); every
    resample draws the same queries for both selections. Returns the observed
    difference, its 95 % percentile interval and the share of resamples where ``a`` is
    not better.

    Example:
        >>> q = {"q1": {"a": 1}, "q2": {"b": 1}}
        >>> r = paired_bootstrap_f1(q, {"q1": ["a"], "q2": ["b"]}, {"q1": ["x"], "q2": ["b"]}, resamples=200)
        >>> r["difference"], r["ci95"][1] <= 1.0
        (0.5, True)
    """
    import numpy as np

    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise InvalidInputError(f"resamples must be a positive integer, got {resamples!r}")
    rows_a = per_query_set_metrics(qrels, a)
    rows_b = per_query_set_metrics(qrels, b)
    qids = list(rows_a)
    if not qids:
        raise InvalidInputError("no query has a relevant passage; nothing to compare")
    pa = np.array([rows_a[q]["precision"] for q in qids])
    ra = np.array([rows_a[q]["recall"] for q in qids])
    pb = np.array([rows_b[q]["precision"] for q in qids])
    rb = np.array([rows_b[q]["recall"] for q in qids])

    def f1(p: Any, r: Any) -> Any:
        mp, mr = p.mean(axis=-1), r.mean(axis=-1)
        return np.where(mp + mr > 0, 2 * mp * mr / np.maximum(mp + mr, 1e-12), 0.0)

    idx = np.random.default_rng(seed).integers(0, len(qids), size=(resamples, len(qids)))
    diff = f1(pa[idx], ra[idx]) - f1(pb[idx], rb[idx])
    return {
        "difference": round(float(f1(pa, ra) - f1(pb, rb)), 4),
        "ci95": [round(float(np.percentile(diff, 2.5)), 4), round(float(np.percentile(diff, 97.5)), 4)],
        "share_not_better": round(float(np.mean(diff <= 0)), 4),
        "n_queries": len(qids),
        "resamples": resamples,
        "seed": seed,
    }

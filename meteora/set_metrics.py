"""Set metrics of selections (an unranked set of chosen passages per query), on BEIR-shaped
qrels: precision, recall, F1 (micro and per query), the fixed-k view of a run and a paired
bootstrap of the F1 difference of two selectors. Which queries count and how ties are
broken is as in :mod:`meteora.metrics`.

Example:
    >>> set_metrics({"q1": {"a": 1, "b": 1}}, {"q1": ["a", "x"]})["precision"]
    0.5
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from meteora.errors import InvalidInputError
from meteora.metrics import Qrels, Run, check_qrels, check_run, rank_run

__all__ = ["fixed_k_selections", "per_query_set_metrics", "set_metrics", "paired_bootstrap_f1", "paired_bootstrap_mean"]

logger = logging.getLogger(__name__)


def fixed_k_selections(run: Run, k: int) -> dict[str, list[str]]:
    """The top ``k`` passages of each query of a run, as selections for :func:`set_metrics`.

    Uses the trec_eval tie rule (score descending, then passage id descending).

    Example:
        >>> fixed_k_selections({"q": {"a": 0.1, "b": 0.9, "c": 0.5}}, 2)
        {'q': ['b', 'c']}
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise InvalidInputError(f"k must be a non-negative integer, got {k!r}")
    return {qid: rank_run(scores, k) for qid, scores in check_run(run).items()}


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
    judged = check_qrels(qrels)
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


def paired_bootstrap_mean(
    a: Mapping[str, float], b: Mapping[str, float], *, resamples: int = 10_000, seed: int = 0
) -> dict[str, Any]:
    """Paired bootstrap of ``mean(a) - mean(b)`` over the queries of ``a`` (a per-query
    metric such as NDCG@10; a query missing from ``b`` counts 0), drawn as
    :func:`paired_bootstrap_f1` draws them.

    Example:
        >>> r = paired_bootstrap_mean({"q1": 1.0, "q2": 0.5}, {"q1": 0.5, "q2": 0.5}, resamples=200)
        >>> r["difference"], r["n_queries"]
        (0.25, 2)
    """
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise InvalidInputError(f"resamples must be a positive integer, got {resamples!r}")
    qids = list(a)
    if not qids:
        raise InvalidInputError("no query to compare")
    x = np.array([float(a[q]) - float(b.get(q, 0.0)) for q in qids])
    idx = np.random.default_rng(seed).integers(0, len(qids), size=(resamples, len(qids)))
    diff = x[idx].mean(axis=1)
    return {
        "difference": round(float(x.mean()), 4),
        "ci95": [round(float(np.percentile(diff, 2.5)), 4), round(float(np.percentile(diff, 97.5)), 4)],
        "share_not_better": round(float(np.mean(diff <= 0)), 4),
        "n_queries": len(qids),
        "resamples": resamples,
        "seed": seed,
    }

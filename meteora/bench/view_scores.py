"""Scoring one relevance view of a benchmark run: metrics, paired bootstraps, buckets.

:func:`score_view` turns every method's output into metrics for one view: ranking
metrics (NDCG@10, Recall@k, MRR@10, MAP) for a method that ranks, set metrics for a
method that selects, and the fixed-k view ``NAME@k`` of every ranking. Then:

* **paired bootstraps** of the configured ``"A:B"`` comparisons: F1 always, NDCG@10 as
  well when both rank (``B`` may be ``NAME@k``, or ``best``: the view's best fixed-k
  baseline by F1, decided on that view's questions — the strongest fixed count);
* **relevant-count buckets**: the questions grouped by how many relevant passages they
  have (1, 2–3, 4–7, 8+): per bucket the number of questions, mean relevant, and for
  every selection method its F1 and mean selected count, next to the view's best fixed
  k and the bucket's own best fixed k.

Example:
    >>> bucket_of(1), bucket_of(3), bucket_of(12)
    ('1', '2-3', '8+')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["score_view", "bucket_of", "BUCKETS", "BEST_FIXED", "RANKING_METRICS", "SET_METRICS"]

RANKING_METRICS = ("NDCG@10", "Recall@1", "Recall@5", "Recall@10", "Recall@20", "Recall@50", "MRR@10", "MAP")
SET_METRICS = ("precision", "recall", "F1", "mean_chunks")
#: The relevant-count buckets: (lowest, highest or None, label).
BUCKETS = ((1, 1, "1"), (2, 3, "2-3"), (4, 7, "4-7"), (8, None, "8+"))
#: In a comparison ``"A:best"``, the view's best fixed-k baseline by F1.
BEST_FIXED = "best"


def bucket_of(n_relevant: int) -> str:
    """The bucket label of a question with ``n_relevant`` relevant passages."""
    for lo, hi, label in BUCKETS:
        if n_relevant >= lo and (hi is None or n_relevant <= hi):
            return label
    return "0"


def _best_fixed(methods: Mapping[str, Mapping[str, Any]]) -> str | None:
    fixed = {n: m["F1"] for n, m in methods.items() if "@" in n and "F1" in m}
    return max(fixed, key=fixed.__getitem__) if fixed else None


def _buckets(qrels: Mapping[str, Mapping[str, int]], selections: Mapping[str, Mapping[str, list[str]]],
             selectors: list[str], best: str | None) -> dict[str, Any]:
    from meteora.set_metrics import set_metrics

    relevant = {q: sum(v > 0 for v in r.values()) for q, r in qrels.items()}
    rows: dict[str, Any] = {}
    for label in [b[2] for b in BUCKETS] + ["all"]:
        qs = {q: qrels[q] for q, n in relevant.items() if n > 0 and (label == "all" or bucket_of(n) == label)}
        if not qs:
            continue
        row: dict[str, Any] = {"questions": len(qs), "mean_relevant": round(sum(relevant[q] for q in qs) / len(qs), 2)}
        for name in selectors + ([best] if best else []):
            m = set_metrics(qs, {q: selections[name].get(q, []) for q in qs})
            row[name] = {"F1": round(m["F1"], 4), "mean_selected": round(m["mean_chunks"], 2)}
        fixed = {n: set_metrics(qs, {q: sel.get(q, []) for q in qs})["F1"] for n, sel in selections.items() if "@" in n}
        if fixed:
            own = max(fixed, key=fixed.__getitem__)
            row["best_fixed_k_in_bucket"] = {"method": own, "F1": round(fixed[own], 4)}
        rows[label] = row
    return {"by": "relevant passages per question", "best_fixed_k": best, "rows": rows}


def score_view(view: str, ctx: Any, outputs: Mapping[str, Any]) -> dict[str, Any]:
    """Metrics, bootstraps and buckets of every method on one qrels ``view`` (see the module doc)."""
    from meteora.metrics import evaluate_ranking
    from meteora.set_metrics import (
        fixed_k_selections,
        paired_bootstrap_f1,
        paired_bootstrap_mean,
        set_metrics,
    )

    qrels = ctx.data.qrels_for(view, ctx.qids)
    methods: dict[str, dict[str, Any]] = {}
    selections: dict[str, dict[str, list[str]]] = {}
    per_query_ndcg: dict[str, dict[str, float]] = {}
    for name, out in outputs.items():
        entry: dict[str, Any] = {}
        if out.run is not None:
            run = {q: out.run.get(q, {}) for q in qrels}
            entry.update(evaluate_ranking(qrels, run, RANKING_METRICS))
            per_query_ndcg[name] = {q: v["NDCG@10"] for q, v in evaluate_ranking(qrels, run, ["NDCG@10"], per_query=True).items()}
        if out.selections is not None:
            selections[name] = {q: out.selections.get(q, []) for q in qrels}
            entry.update({k: v for k, v in set_metrics(qrels, selections[name]).items() if k != "n_queries"})
        entry["seconds"] = out.seconds
        entry.update(out.extra)
        methods[name] = entry
        if out.run is not None and out.fixed_k:
            run = {q: out.run.get(q, {}) for q in qrels}
            for k in ctx.config.ks:
                selections[f"{name}@{k}"] = fixed_k_selections(run, k)
                m = set_metrics(qrels, selections[f"{name}@{k}"])
                methods[f"{name}@{k}"] = {key: m[key] for key in (*SET_METRICS, "F1_macro", "median_chunks") if key in m}
    best = _best_fixed(methods)
    result: dict[str, Any] = {"n_queries": len(qrels), "methods": methods, "best_fixed_k": best}
    f1_boot, ndcg_boot = {}, {}
    for pair in ctx.config.compare:
        a, b = pair.split(":")
        b_name = best if b == BEST_FIXED else b
        if b_name is None:
            continue
        sel_a, sel_b = (_selection(n, selections, outputs, qrels) for n in (a, b_name))
        if sel_a is not None and sel_b is not None:
            f1_boot[pair] = {**paired_bootstrap_f1(qrels, sel_a, sel_b), "B": b_name}
        if a in per_query_ndcg and b_name in per_query_ndcg:
            ndcg_boot[pair] = {**paired_bootstrap_mean(per_query_ndcg[a], per_query_ndcg[b_name]), "B": b_name}
        if pair not in f1_boot and pair not in ndcg_boot:
            from meteora.errors import InvalidInputError

            raise InvalidInputError(f"--compare {pair!r}: neither both select nor both rank; compare like with like")
    if f1_boot:
        result["paired_bootstrap_F1"] = f1_boot
    if ndcg_boot:
        result["paired_bootstrap_NDCG@10"] = ndcg_boot
    selectors = [n for n in outputs if outputs[n].selections is not None]
    if selectors:
        result["buckets"] = _buckets(qrels, selections, selectors, best)
    return result


def _selection(name: str, selections: Mapping[str, Any], outputs: Mapping[str, Any], qrels: Any) -> dict[str, list[str]] | None:
    """What ``name`` selects per query (a selection method's own selection, or ``NAME@k``'s
    top k), or ``None`` for a ranking method."""
    from meteora.errors import InvalidInputError
    from meteora.set_metrics import fixed_k_selections

    if name in selections:
        return selections[name]
    base, _, k = name.partition("@")
    out = outputs.get(base)
    if out is None:
        raise InvalidInputError(f"--compare names {name!r}, but {base!r} is not among the methods run")
    if k:
        if out.run is None:
            raise InvalidInputError(f"{base!r} ranks nothing, so {name!r} has no top-k selection")
        return fixed_k_selections({q: out.run.get(q, {}) for q in qrels}, int(k))
    return None

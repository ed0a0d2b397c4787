"""The learned cut's training table, built through the library's own path.

For each train-side question of a benchmark: the hybrid top-50 candidates
(:meth:`~meteora.Reranker.retrieve`), the default generator's rationales (from the
persistent rationale cache; generated only when missing), the signal tables
(:meth:`~meteora.Reranker.prepare_pools`, without a scorer), their features
(:func:`~meteora.selection.cut_features.candidate_features`) and the evidence labels.
The scorer's logits are added later (:meth:`CutTable.add_evidence`) for the candidates
stage 1 names, with the same batched call the reranker makes
(:func:`~meteora.selection_inputs.evidence_logits`).

Only train-side questions are read: PubMedQA's ``train`` split (the 500 questions that
are not official test questions) and BioASQ's ``train`` split (the 7B files); a
question of PubMedQA test or BioASQ dev is refused (:class:`TrainingDataError`).

Example:
    >>> table = collect_cut_table("bioasq", generator=None, scorer=None)   # doctest: +SKIP
    >>> table.X.shape[1] == len(FEATURES)                                   # doctest: +SKIP
    True
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from meteora.errors import TrainingDataError
from meteora.selection.cut_features import candidate_features
from meteora.selection.signals import CandidateSignals

__all__ = ["CutTable", "collect_cut_table", "HELD_OUT_SPLITS", "refuse_held_out"]

logger = logging.getLogger(__name__)

#: The evaluation splits of each benchmark: never read for training.
HELD_OUT_SPLITS = {"pubmedqa": "test", "bioasq": "dev"}


def refuse_held_out(benchmark: Any, qids: Sequence[str]) -> None:
    """Raise when a question is in the benchmark's evaluation split (or the benchmark
    has no train split).

    Raises:
        TrainingDataError: a PubMedQA test or BioASQ dev question, or an unknown benchmark.
    """
    held = HELD_OUT_SPLITS.get(benchmark.name)
    if held is None or "train" not in benchmark.splits:
        raise TrainingDataError(
            f"the learned cut trains on PubMedQA train and BioASQ 7B questions only; {benchmark.name!r} "
            "has no train split"
        )
    leaked = sorted(set(qids) & set(benchmark.splits.get(held, [])))
    if leaked:
        raise TrainingDataError(
            f"{len(leaked)} training questions are {benchmark.name} {held} questions (e.g. {leaked[:3]}); "
            "they are for evaluation only — train on split='train'"
        )


@dataclass
class CutTable:
    """One benchmark's training rows: one per (question, candidate).

    Attributes:
        dataset: the benchmark's name.
        qids / queries: the questions (with at least one relevant candidate), in order.
        signals: each question's signal table (evidence added by :meth:`add_evidence`).
        X: ``(rows, len(FEATURES))`` features (rebuilt by :meth:`add_evidence`).
        y: ``(rows,)`` 1 for a relevant candidate.
        offsets: question ``i`` owns rows ``offsets[i]:offsets[i + 1]``.
        n_relevant: each question's relevant passages (retrieved or not).
        rationale_stats: how many questions had generated rationales and how many came
            from the cache.
    """

    dataset: str
    qids: list[str]
    queries: list[str]
    signals: list[CandidateSignals]
    X: np.ndarray
    y: np.ndarray
    offsets: np.ndarray
    n_relevant: np.ndarray
    rationale_stats: dict[str, int] = field(default_factory=dict)

    def rows(self, i: int) -> slice:
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    def add_evidence(self, scorer: Any, wanted: Sequence[Sequence[int]]) -> None:
        """Score the ``wanted`` candidates of every question (one batched scorer call, NaN
        for the others) and rebuild the features with them."""
        from meteora.selection_inputs import evidence_logits

        logits = evidence_logits(scorer, self.queries, [s.passages for s in self.signals], wanted)
        self.signals = [s.with_evidence(ev) for s, ev in zip(self.signals, logits, strict=True)]
        self.X = np.vstack([candidate_features(s) for s in self.signals])


def collect_cut_table(
    dataset: str,
    *,
    generator: Any,
    encoder: Any = None,
    benchmark: Any = None,
    data_path: str | None = None,
    candidates: int = 50,
    retrieve_k: int = 100,
    rrf_k: int = 60,
    limit: int | None = None,
) -> CutTable:
    """The training rows of ``dataset``'s train split (see the module doc): hybrid
    top-``candidates`` (BM25 + dense RRF ``rrf_k`` over ``retrieve_k`` fused), the
    ``generator``'s rationales (``None``: query only), features without evidence.
    ``benchmark`` is a built :class:`~meteora.datasets.pubmedqa.RetrievalBenchmark`
    named ``dataset`` (default: built from ``data_path``); ``encoder`` the encoder
    (default: the packaged MiniLM).

    Raises:
        TrainingDataError: no train split, a held-out question, or no question with a
            relevant candidate.
    """
    from meteora.bench.config import BenchmarkConfig
    from meteora.bench.context import BenchmarkContext
    from meteora.reranker import Reranker
    from meteora.selection.selector_settings import SelectorSettings

    config = BenchmarkConfig(
        dataset=dataset, split="all", data_path=data_path, candidates=candidates, retrieve_k=retrieve_k,
        rrf_k=rrf_k, methods=["hybrid"],
    )
    ctx = BenchmarkContext(config, benchmark=benchmark, generator=generator)
    bench = ctx.data
    if "train" not in bench.splits:
        refuse_held_out(bench, [])
    qids = bench.query_ids("train", limit=limit)
    refuse_held_out(bench, qids)
    qrels = bench.qrels_for("evidence", qids)
    qids = [q for q in qids if any(v > 0 for v in qrels.get(q, {}).values())]
    if not qids:
        raise TrainingDataError(f"{dataset}: no train question has a relevant passage")
    queries = [bench.queries[q] for q in qids]
    encoder = encoder if encoder is not None else ctx.encoder()
    # no scorer and no learned models: the signals only (the cut itself is not run)
    rr = Reranker(generator=generator, encoder=encoder, scorer=None, settings=SelectorSettings(cut="elbow"))
    logger.info("%s: %d train questions, hybrid top-%d", dataset, len(qids), candidates)
    pools = rr.retrieve(queries, ctx.retriever("hybrid"), candidates)
    prepared = rr.prepare_pools(pools)
    signals = [p.signals for p in prepared]
    X = np.vstack([candidate_features(s) for s in signals])
    y = np.concatenate([[float(qrels[q].get(pid, 0) > 0) for pid in s.ids] for q, s in zip(qids, signals, strict=True)])
    offsets = np.concatenate([[0], np.cumsum([s.n for s in signals])])
    sets = [p.rationale_set for p in prepared]
    stats = {
        "questions": len(qids),
        "with_generated_rationales": sum(bool(s.generated_rows) for s in signals),
        "rationales_from_cache": sum(bool(getattr(r, "from_cache", False)) for r in sets),
    }
    return CutTable(
        dataset, qids, queries, signals, X, y, offsets,
        np.array([sum(v > 0 for v in qrels[q].values()) for q in qids]), stats,
    )

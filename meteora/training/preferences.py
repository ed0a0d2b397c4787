"""DPO preference pairs built automatically from the evidence selector (METEORA's DPO data).

The spec: *a rationale whose chosen chunk hits a gold chunk is preferred, otherwise
rejected*. For every PubMedQA **train** question (never a test question):

1. sample ``n_samples`` rationale sets with the current generator (temperature
   sampling, seeds ``seed, seed + 1, ...``, so a rerun with a cached generator
   regenerates nothing);
2. select among the hybrid top-``candidates`` chunks with each set's rationales through
   :class:`~meteora.Reranker` (the one selection pipeline: exactly what
   ``Reranker.search`` and the benchmark's ``meteora`` method select with those
   rationales, reusing the dense retriever's stored corpus embeddings);
3. score each set by how well its selection hits the gold chunks of ``view``
   (:func:`hit_score`; default the per-query F1 ``2·|S∩G| / (|S| + |G|)`` on the
   ``"evidence"`` view, i.e. the RESULTS chunk). A set whose output could not be
   parsed (the generator fell back to the query) scores :data:`FALLBACK_SCORE` (−1),
   below every parsed set, so DPO never prefers unparseable text. Among equal scores
   the set with fewer selected chunks ranks higher;
4. emit one pair ``{prompt, chosen, rejected, ...}`` with the best set as *chosen* and
   the worst as *rejected* when ``best − worst ≥ min_margin`` (and > 0).

``prompt`` is the exact generation prompt (``template.render(query, n, tokenizer)``,
ending with the template's response prefix) and ``chosen`` / ``rejected`` are the raw
completions the model wrote after it, so DPO trains the generator on its own outputs.
Queries with no gold chunk in the view, or no margin between their samples, are
skipped and counted by reason.

Example:
    >>> from meteora.datasets.pubmedqa import build_pubmedqa_benchmark  # doctest: +SKIP
    >>> from meteora.rationales import RationaleGenerator              # doctest: +SKIP
    >>> bench = build_pubmedqa_benchmark()                              # doctest: +SKIP
    >>> gen = RationaleGenerator.from_pretrained(cache=True)            # doctest: +SKIP
    >>> res = build_preference_pairs(gen, bench, out="pairs.jsonl")     # doctest: +SKIP
    >>> res.stats["pairs"], res.stats["skipped"]                        # doctest: +SKIP
    (212, {'no_gold': 31, 'no_margin': 257, ...})
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from meteora._checks import positive_int
from meteora._io import atomic_write_json
from meteora.console import progress_enabled
from meteora.errors import InvalidInputError
from meteora.rationales.parsing import cut_at_section_break
from meteora.training.dpo_pairs import write_preference_pairs

if TYPE_CHECKING:
    from meteora.selection.selector_settings import SelectorSettings

__all__ = [
    "FALLBACK_SCORE",
    "METRICS",
    "SKIP_REASONS",
    "PreferenceBuildResult",
    "hit_score",
    "build_preference_pairs",
]

logger = logging.getLogger(__name__)

#: Score of a rationale set whose output could not be parsed (the query stood in).
FALLBACK_SCORE = -1.0
#: Hit scores :func:`hit_score` knows.
METRICS: tuple[str, ...] = ("f1", "hits", "recall", "precision")
#: Why a query yields no pair.
SKIP_REASONS: tuple[str, ...] = (
    "no_gold",
    "no_margin",
    "identical_completions",
    "empty_completion",
)


def hit_score(selected: Iterable[str], gold: Collection[str], metric: str = "f1") -> float:
    """How well a selection hits the gold passages.

    * ``"f1"``: ``2·|S∩G| / (|S| + |G|)``, the per-query F1 of precision and recall
      (with one gold chunk: ``2 / (|S| + 1)`` on a hit, 0 on a miss, so a hit with
      fewer chunks scores higher);
    * ``"hits"``: ``|S∩G|``; ``"recall"``: ``|S∩G| / |G|``; ``"precision"``:
      ``|S∩G| / |S|`` (0 for an empty selection).

    Example:
        >>> hit_score(["a", "b"], {"a"}), hit_score(["a"], {"a"}), hit_score(["b"], {"a"})
        (0.6666666666666666, 1.0, 0.0)
        >>> hit_score(["a", "b", "c"], {"a", "c"}, "hits")
        2.0
    """
    if metric not in METRICS:
        raise InvalidInputError(f"metric must be one of {METRICS}, got {metric!r}")
    sel = {str(s) for s in selected}
    g = {str(x) for x in gold}
    hits = len(sel & g)
    if metric == "hits":
        return float(hits)
    if metric == "recall":
        return hits / len(g) if g else 0.0
    if metric == "precision":
        return hits / len(sel) if sel else 0.0
    return 2 * hits / (len(sel) + len(g)) if sel or g else 0.0


@dataclass
class PreferenceBuildResult:
    """What :func:`build_preference_pairs` produced.

    Attributes:
        pairs: ``{prompt, chosen, rejected, query_id, query, chosen_score,
            rejected_score, chosen_rationales, rejected_rationales, chosen_selected,
            rejected_selected, chosen_sample, rejected_sample}`` per emitted pair.
        stats: counts (``queries``, ``queries_with_gold``, ``pairs``, ``skipped`` by
            reason, ``samples``), ``fallback_rate`` (share of unparseable samples),
            ``mean_sample_score`` (a fallback counts 0), ``mean_chosen_score``,
            ``mean_rejected_score``, ``mean_margin``, ``seconds`` (retrieval, generation,
            selection, total) and the ``settings`` used.
        per_query: for every query, each sample's score, number of selected chunks and
            fallback flag, plus which samples were chosen/rejected or why it was skipped.
    """

    pairs: list[dict[str, Any]]
    stats: dict[str, Any]
    per_query: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.pairs)

    def write_jsonl(self, path: str | os.PathLike[str], *, with_stats: bool = True) -> Path:
        """Write the pairs (atomically) and, with ``with_stats``, ``<stem>.stats.json`` beside them."""
        path = write_preference_pairs(path, self.pairs)
        if with_stats:
            atomic_write_json(_stats_path(path), {"stats": self.stats, "per_query": self.per_query})
        return path

    def __repr__(self) -> str:
        skipped = self.stats.get("skipped", {})
        return (
            f"PreferenceBuildResult(pairs={len(self.pairs)}, queries={self.stats.get('queries', 0)}, "
            f"skipped={dict(skipped)})"
        )


def _stats_path(path: Path) -> Path:
    return path.with_name(path.stem + ".stats.json")


def _completion(raw: str, prefix: str) -> str:
    r"""The generated text after the prompt (the generator puts the response prefix back),
    cut before a hallucinated new prompt section (a line starting with ``###``), which the
    rationale parser ignores too. Trailing whitespace goes; the DPO trainer appends EOS, so
    the model learns to stop where the parsed rationales end.

    Example:
        >>> _completion("- a\n- b\n\n### Query:\nx", "")
        '- a\n- b'
    """
    text = raw[len(prefix) :] if prefix and raw.startswith(prefix) else raw
    return cut_at_section_break(text).rstrip()


def _train_qids(benchmark: Any, split: str, limit: int | None) -> list[str]:
    if split == "test":
        raise InvalidInputError(
            "preference pairs are training data: split='test' is not allowed; use split='train'"
        )
    whole = benchmark.query_ids(split)
    test_ids = set(benchmark.splits.get("test", ()))
    if not test_ids:
        logger.warning(
            "benchmark %r has no 'test' split; cannot check that no test question is used",
            benchmark.name,
        )
    leaked = [q for q in whole if q in test_ids]
    if leaked:
        raise InvalidInputError(
            f"split {split!r} holds {len(leaked)} test questions (e.g. {leaked[:3]}); preference pairs must come "
            "from train questions only: use split='train'"
        )
    return whole if limit is None else benchmark.query_ids(split, limit)


def build_preference_pairs(
    generator: Any,
    benchmark: Any,
    *,
    split: str = "train",
    view: str = "evidence",
    n_samples: int = 4,
    n_rationales: int | None = None,
    candidates: int = 50,
    encoder: Any = None,
    retriever: Any = None,
    temperature: float = 0.7,
    top_p: float = 0.95,
    seed: int = 0,
    limit: int | None = None,
    min_margin: float = 0.1,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    metric: str = "f1",
    include_query: bool = False,
    settings: SelectorSettings | None = None,
    scorer: Any = None,
    chunk_size: int = 64,
    out: str | os.PathLike[str] | None = None,
    show_progress: bool | None = None,
) -> PreferenceBuildResult:
    """Sample rationale sets per train question and pair the best against the worst.

    Args:
        generator: a :class:`~meteora.rationales.RationaleGenerator` (anything with
            ``.generate(...)``, ``.template`` and ``.tokenizer``). Give it a cache
            (``cache=True``) so an interrupted run resumes without regenerating.
        benchmark: a :class:`~meteora.datasets.pubmedqa.RetrievalBenchmark`.
        split: the questions to use; a split holding any test question is refused.
        view: the qrels view whose passages are gold (``"evidence"``: RESULTS chunks).
        n_samples: rationale sets sampled per question (≥ 2).
        n_rationales: rationales asked for in the prompt (``None``: the template's).
        candidates: hybrid top-k candidates the selector chooses from.
        encoder: rationale/passage encoder (``None``: the dense retriever's).
        retriever: a hybrid retriever over ``benchmark.corpus`` with a dense member
            (``None``: built here with :func:`meteora.evaluation.qa.build_retriever`).
        temperature, top_p: sampling parameters.
        seed: sample ``s`` uses seed ``seed + s``.
        limit: use the first ``limit`` questions of the split.
        min_margin: emit a pair only when ``best − worst ≥ min_margin`` (and > 0).
        batch_size: queries per generation batch.
        max_new_tokens: generation cap (``None``: the generator's/template's).
        metric: the hit score (:func:`hit_score`): ``"f1"`` (default), ``"hits"``,
            ``"recall"`` or ``"precision"``.
        include_query: select with the query as an anchor rationale next to the
            generated ones, as the ``meteora`` benchmark method does by default. Off by
            default here: the query's own pick is the same in every sample, and with
            distinct pairing the rationales can only add other chunks, so when the query
            already hits the evidence every sample ties and the preference says nothing
            about the rationales. The completions are the same either way.
        settings: the selector's :class:`~meteora.selection.selector_settings.SelectorSettings` (default
            ``SelectorSettings(cut="band")``: window 0, the chunks the rationales point at — a cut
            that reads the rationales; the learned cut's query-only model, which a reranker
            without its trained generator runs, would give every sample the same selection).
            Selection runs through
            :meth:`meteora.Reranker.rerank_pools` with the sampled rationale sets, so a
            sample selects exactly what ``Reranker.search`` would with those rationales.
        scorer: the reranker's evidence scorer (default ``None``: the rationales alone
            decide the selection, so the preference is about them; pass ``"default"``
            to prefer rationales that help the full default pipeline).
        chunk_size: questions generated per round; with ``out`` the file is rewritten
            (atomically) after each round, so an interrupted run keeps its pairs.
        out: write the pairs to this JSONL file and the stats to ``<stem>.stats.json``.
        show_progress: tqdm bar (``None``: when logging is at INFO or lower).

    Returns:
        A :class:`PreferenceBuildResult`.

    Raises:
        InvalidInputError: a split with test questions, an unknown view or metric, or a
            bad argument.

    Example:
        >>> res = build_preference_pairs(gen, bench, limit=50, out="pairs.jsonl")  # doctest: +SKIP
    """
    from meteora.evaluation.selections import build_retriever
    from meteora.pipeline import dense_member
    from meteora.reranker import Reranker

    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 2:
        raise InvalidInputError(
            f"n_samples must be an integer >= 2 (a pair needs two samples), got {n_samples!r}"
        )
    positive_int("candidates", candidates)
    positive_int("batch_size", batch_size)
    positive_int("chunk_size", chunk_size)
    if n_rationales is not None:
        positive_int("n_rationales", n_rationales)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidInputError(
            f"seed must be an integer (sampling must be reproducible), got {seed!r}"
        )
    if metric not in METRICS:
        raise InvalidInputError(f"metric must be one of {METRICS}, got {metric!r}")
    if (
        isinstance(min_margin, bool)
        or not isinstance(min_margin, (int, float))
        or not math.isfinite(min_margin)
        or min_margin < 0
    ):
        raise InvalidInputError(f"min_margin must be a finite number >= 0, got {min_margin!r}")
    for attr in ("generate", "template", "tokenizer"):
        if not hasattr(generator, attr):
            raise InvalidInputError(
                f"generator must be a RationaleGenerator (it needs .{attr}); got {type(generator).__name__}"
            )
    if view not in benchmark.qrels:
        raise InvalidInputError(f"unknown qrels view {view!r}; available: {list(benchmark.qrels)}")
    qids = _train_qids(benchmark, split, limit)
    template = generator.template
    n_prompt = template.default_n if n_rationales is None else n_rationales
    prefix = getattr(template, "response_prefix", "") or ""
    gold_table = benchmark.qrels[view]

    t_start = time.perf_counter()
    skipped = {reason: 0 for reason in SKIP_REASONS}
    per_query: list[dict[str, Any]] = []
    used: list[str] = []
    for q in qids:
        gold = {pid for pid, r in gold_table.get(q, {}).items() if r >= 1}
        if gold:
            used.append(q)
        else:
            skipped["no_gold"] += 1
            per_query.append({"query_id": q, "skipped": "no_gold"})

    t0 = time.perf_counter()
    if retriever is None:
        retriever = build_retriever(benchmark, encoder)
    if encoder is None:
        dense = dense_member(retriever)
        encoder = dense.encoder if dense is not None else None
    if settings is None:
        from meteora.selection.selector_settings import SelectorSettings

        settings = SelectorSettings(cut="band")
    reranker = Reranker(None, encoder, scorer, settings, verifier=None)  # the preference is about the rationales
    selector_settings = reranker.settings
    pools = reranker.retrieve([benchmark.queries[q] for q in used], retriever, k=candidates)
    pool_of = dict(zip(used, pools, strict=True))
    retrieval_seconds = time.perf_counter() - t0

    if show_progress is None:
        show_progress = progress_enabled()
    from tqdm.auto import tqdm

    gen_seconds = sel_seconds = 0.0
    pairs: list[dict[str, Any]] = []
    all_scores: list[float] = []
    n_fallback = 0
    gen_kwargs: dict[str, Any] = {
        "n": n_rationales,
        "batch_size": batch_size,
        "do_sample": True,
        "temperature": temperature,
        "top_p": top_p,
        "include_query": include_query,
        "filter": True,
    }
    if max_new_tokens is not None:
        gen_kwargs["max_new_tokens"] = positive_int("max_new_tokens", max_new_tokens)
    bar = tqdm(
        total=len(used) * n_samples,
        desc="preference samples",
        unit="set",
        disable=not show_progress,
    )
    try:
        for start in range(0, len(used), chunk_size):
            chunk = used[start : start + chunk_size]
            queries = [benchmark.queries[q] for q in chunk]
            t0 = time.perf_counter()
            samples = []  # samples[s][i]: RationaleSet of sample s for chunk[i]
            for s in range(n_samples):
                sets = generator.generate(queries, seed=seed + s, **gen_kwargs)
                if len(sets) != len(queries):
                    raise InvalidInputError(
                        f"generator returned {len(sets)} rationale sets for {len(queries)} queries"
                    )
                samples.append(sets)
                bar.update(len(queries))
            gen_seconds += time.perf_counter() - t0

            t0 = time.perf_counter()
            # every sample of every question of the round in one rerank_pools call
            # (one batched rationale encode); result i * n_samples + s is sample s of question i
            results = reranker.rerank_pools(
                [pool_of[q] for q in chunk for _ in range(n_samples)],
                rationales=[samples[s][i] for i in range(len(chunk)) for s in range(n_samples)],
            )
            for i, q in enumerate(chunk):
                gold = {pid for pid, r in gold_table[q].items() if r >= 1}
                scores, sizes, fallbacks, selected = [], [], [], []
                for s in range(n_samples):
                    ids = list(results[i * n_samples + s].selected_ids)
                    rs = samples[s][i]
                    fb = bool(getattr(rs, "fallback", False))
                    n_fallback += int(fb)
                    score = FALLBACK_SCORE if fb else hit_score(ids, gold, metric)
                    all_scores.append(score)
                    scores.append(score)
                    sizes.append(len(ids))
                    fallbacks.append(fb)
                    selected.append(ids)
                # best: highest score, then fewer chunks, then earlier sample
                best = max(range(n_samples), key=lambda s: (scores[s], -sizes[s], -s))
                # worst: lowest score, then more chunks, then later sample
                worst = min(range(n_samples), key=lambda s: (scores[s], -sizes[s], -s))
                entry: dict[str, Any] = {
                    "query_id": q,
                    "scores": scores,
                    "n_selected": sizes,
                    "fallback": fallbacks,
                }
                margin = scores[best] - scores[worst]
                chosen_text = _completion(samples[best][i].raw, prefix)
                rejected_text = _completion(samples[worst][i].raw, prefix)
                reason = None
                if margin <= 0 or margin < min_margin:
                    reason = "no_margin"
                elif not chosen_text.strip() or not rejected_text.strip():
                    reason = "empty_completion"
                elif chosen_text.strip() == rejected_text.strip():
                    reason = "identical_completions"
                if reason is not None:
                    skipped[reason] += 1
                    entry["skipped"] = reason
                else:
                    entry.update(chosen=best, rejected=worst)
                    pairs.append(
                        {
                            "prompt": template.render(queries[i], n_prompt, generator.tokenizer),
                            "chosen": chosen_text,
                            "rejected": rejected_text,
                            "query_id": q,
                            "query": queries[i],
                            "chosen_score": scores[best],
                            "rejected_score": scores[worst],
                            "chosen_rationales": [r for r in samples[best][i].rationales],
                            "rejected_rationales": [r for r in samples[worst][i].rationales],
                            "chosen_selected": selected[best],
                            "rejected_selected": selected[worst],
                            "chosen_sample": best,
                            "rejected_sample": worst,
                        }
                    )
                per_query.append(entry)
            sel_seconds += time.perf_counter() - t0
            if out is not None:
                write_preference_pairs(out, pairs)
            logger.info(
                "preference pairs: %d after %d of %d questions",
                len(pairs),
                start + len(chunk),
                len(used),
            )
    finally:
        bar.close()

    chosen = [p["chosen_score"] for p in pairs]
    rejected = [p["rejected_score"] for p in pairs]
    stats: dict[str, Any] = {
        "split": split,
        "view": view,
        "metric": metric,
        "queries": len(qids),
        "queries_with_gold": len(used),
        "pairs": len(pairs),
        "skipped": skipped,
        "samples": len(all_scores),
        "fallback_rate": n_fallback / len(all_scores) if all_scores else 0.0,
        "mean_sample_score": float(np.mean([max(s, 0.0) for s in all_scores]))
        if all_scores
        else 0.0,
        "mean_chosen_score": float(np.mean(chosen)) if chosen else 0.0,
        "mean_rejected_score": float(np.mean(rejected)) if rejected else 0.0,
        "mean_margin": float(np.mean([c - r for c, r in zip(chosen, rejected, strict=True)]))
        if chosen
        else 0.0,
        "seconds": {
            "retrieval": retrieval_seconds,
            "generation": gen_seconds,
            "selection": sel_seconds,
            "total": time.perf_counter() - t_start,
        },
        "settings": {
            "generator": getattr(generator, "model_id", type(generator).__name__),
            "adapter": getattr(generator, "adapter_id", None),
            "template": getattr(template, "name", None),
            "n_rationales": n_prompt,
            "n_samples": n_samples,
            "temperature": temperature,
            "top_p": top_p,
            "seed": seed,
            "max_new_tokens": max_new_tokens,
            "candidates": candidates,
            "window": selector_settings.window,
            "pairing": selector_settings.pairing,
            "tau": selector_settings.tau,
            "selector": selector_settings.to_dict(),
            "include_query": include_query,
            "min_margin": min_margin,
            "fallback_score": FALLBACK_SCORE,
            "limit": limit,
        },
    }
    result = PreferenceBuildResult(pairs=pairs, stats=stats, per_query=per_query)
    if out is not None:
        result.write_jsonl(out)
    logger.info(
        "preference pairs: %d from %d questions (skipped %s) in %.1fs",
        len(pairs),
        len(qids),
        {k: v for k, v in skipped.items() if v},
        stats["seconds"]["total"],
    )
    return result

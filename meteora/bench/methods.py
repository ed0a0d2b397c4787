"""The benchmark's methods, in one explicit registry (nothing registers itself on import).

Retrieval methods (``bm25``, ``dense``, ``hybrid``) rank the whole corpus. METEORA
methods select evidence among the hybrid top-``config.candidates`` of each query
through :class:`~meteora.Reranker` — the same code path as ``Reranker.search``
(:meth:`~meteora.Reranker.retrieve` then :meth:`~meteora.Reranker.rerank_pools`) — with
the dense retriever's stored corpus embeddings, so nothing is re-encoded:

``meteora``                full pipeline, as ``Reranker()``: LM rationales (+ the query
                           as anchor unless ``options["include_query"]`` is False), the
                           evidence scorer, the learned cut, the run's selector settings
                           (``config.selector``; default ``SelectorSettings()``, window 0)
``meteora-no-scorer``      the same without the evidence scorer (``Reranker(scorer=None)``:
                           the learned cut's stage-1 model)
``meteora-no-expansion``   ``meteora`` with window 0
``meteora-pairing``        pairing only (no elbow)
``meteora-pooling``        elbow only (no pairing)
``meteora-query-only``     no LM: the query is the single rationale (with the scorer,
                           ``Reranker(generator=None)``)
``meteora-query-only-no-scorer``  no LM and no scorer (embeddings only)
``meteora-band``           ``meteora`` with the evidence band (``cut="band"``: the previous
                           default); ``meteora-query-only-band`` the same without the LM
``meteora-elbow``          rationales, METEORA's pooled elbow (``cut="elbow"``), no scorer
``meteora-no-defence``, ``meteora-query-only-no-defence``  ``meteora`` / ``meteora-query-only``
                           without the default poison defence (``verifier=None``): its
                           clean cost is the difference

Every METEORA method runs ``Reranker``'s default verifier, the poison defence (off
without a scorer), unless its name says ``no-defence``.

Any of these with a ``-wN`` suffix (e.g. ``meteora-query-only-w2``) uses window N. The names
and variants are defined in :mod:`meteora.bench.method_names`.
Rationales come from the generator's persistent cache, so reruns do not regenerate;
within a run they are generated once and shared by the METEORA methods.

Generator options (``BenchmarkConfig.options``): ``generator`` (model id/folder,
default the offline SmolLM2), ``adapter``, ``template``, ``n`` (rationales),
``include_query``, ``batch_size``, ``max_new_tokens``; ``scorer`` (an adapter folder;
default the packaged one).

Example:
    >>> get_runner("meteora-query-only-w2") is not None, get_runner("colbert")
    (True, None)
    >>> from meteora.bench.method_names import meteora_settings
    >>> meteora_settings("meteora-pairing-w1").to_dict()["use_pooling"]
    False
"""

from __future__ import annotations

import logging
import time
import types
from collections.abc import Callable, Mapping
from typing import Any

from meteora.bench.context import BenchmarkContext, MethodOutput
from meteora.bench.method_names import (
    METEORA_VARIANTS,
    RETRIEVAL_METHODS,
    parse_meteora_method,
)
from meteora.console import progress_enabled

__all__ = ["METHOD_RUNNERS", "get_runner", "meteora_runner", "meteora_reranker"]

logger = logging.getLogger(__name__)

Runner = Callable[[BenchmarkContext], MethodOutput]


def meteora_reranker(ctx: BenchmarkContext, name: str) -> Any:
    """The :class:`~meteora.Reranker` that benchmark method ``name`` runs: the context's
    encoder, its generator (persistent rationale cache) unless query-only, the
    generator options and selector settings of the run."""
    from meteora.reranker import Reranker

    parsed = parse_meteora_method(name)
    if parsed is None:
        raise KeyError(name)
    variant, window = parsed
    opts = ctx.config.options
    settings = variant.settings(ctx.config.selector, window)
    generation: dict[str, Any] = {"show_progress": progress_enabled()}
    if opts.get("max_new_tokens"):
        generation["max_new_tokens"] = int(opts["max_new_tokens"])
    return Reranker(
        generator=ctx.generator() if variant.uses_lm else None,
        encoder=ctx.encoder(),
        scorer=ctx.scorer() if variant.uses_scorer else None,
        settings=settings,
        verifier="default" if variant.defence else None,
        n_rationales=opts.get("n"),
        include_query=bool(opts.get("include_query", True)),
        batch_size=int(opts.get("batch_size", 8)),
        generation=generation,
    )


def meteora_runner(name: str) -> Runner:
    """A benchmark runner for a METEORA method name (see the module docstring).

    Raises:
        KeyError: ``name`` is not a METEORA method.
    """
    parsed = parse_meteora_method(name)
    if parsed is None:
        raise KeyError(name)
    uses_lm = parsed[0].uses_lm

    def run(ctx: BenchmarkContext) -> MethodOutput:
        reranker = meteora_reranker(ctx, name)
        settings = reranker.settings
        k = ctx.config.candidates
        hybrid = ctx.retriever("hybrid")
        extra: dict[str, Any] = {"window": settings.window, "candidates": k, "selector": settings.to_dict()}
        # candidate pools are the same for every METEORA method of the run (they differ
        # only in whether document context is attached), so they are retrieved once
        pool_key = f"pools:{k}:{settings.uses_context}"
        pools = ctx.shared(pool_key, lambda: reranker.retrieve(ctx.queries, hybrid, k))
        extra["retrieval_seconds"] = ctx.timings[pool_key]
        gen_seconds = 0.0
        rationales = None
        if uses_lm:
            rats = ctx.shared("rationales", lambda: reranker.rationales_for(ctx.queries))
            gen_seconds = ctx.timings["rationales"]
            sets = [s for _, s in rats]
            n = max(len(rats), 1)
            extra["generation_seconds"] = gen_seconds
            extra["fallback_rate"] = sum(bool(getattr(s, "fallback", False)) for s in sets) / n
            extra["cached_rate"] = sum(bool(getattr(s, "from_cache", False)) for s in sets) / n
            extra["mean_rationales"] = sum(len(r) for r, _ in rats) / n
            rationales = [s if s is not None else r for r, s in rats]
        t0 = time.perf_counter()
        results = reranker.rerank_pools(pools, rationales=rationales)
        select_seconds = time.perf_counter() - t0
        extra["selection_seconds"] = select_seconds  # rationale encoding + selection
        run_dict = {qid: res.ranked.to_run() for qid, res in zip(ctx.qids, results, strict=True)}
        selections = {qid: list(res.selected_ids) for qid, res in zip(ctx.qids, results, strict=True)}
        return MethodOutput(
            run=run_dict, selections=selections, seconds=gen_seconds + select_seconds, extra=extra, fixed_k=False
        )

    return run


def _retrieval_runner(name: str) -> Runner:
    def run(ctx: BenchmarkContext) -> MethodOutput:
        ctx.retriever(name)
        index_s = sum(
            v for key, v in ctx.timings.items()
            if key.startswith("index:") and (name == "hybrid" or key == f"index:{name}")
        )
        if name in ("dense", "hybrid"):
            index_s += ctx.timings.get("encoder", 0.0)
        t0 = time.perf_counter()
        rankings = ctx.rankings(name)
        search_s = time.perf_counter() - t0
        run_dict = {qid: r.to_run() for qid, r in zip(ctx.qids, rankings, strict=True)}
        extra = {"index_seconds": index_s, "search_seconds": search_s, "queries/s": len(ctx.qids) / max(search_s, 1e-9)}
        if name in ("dense", "hybrid"):
            extra["corpus_embeddings_cached"] = ctx.embeddings_cached
        return MethodOutput(run=run_dict, seconds=index_s + search_s, extra=extra)

    return run


#: every named method (METEORA ones also take a ``-wN`` suffix), read-only
METHOD_RUNNERS: Mapping[str, Runner] = types.MappingProxyType(
    {
        **{m: _retrieval_runner(m) for m in RETRIEVAL_METHODS},
        **{m: meteora_runner(m) for m in METEORA_VARIANTS},
    }
)


def get_runner(name: str) -> Runner | None:
    """The runner of a method name, including METEORA methods with a ``-wN`` suffix."""
    runner = METHOD_RUNNERS.get(name)
    if runner is not None:
        return runner
    return meteora_runner(name) if parse_meteora_method(name) is not None else None

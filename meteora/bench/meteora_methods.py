"""METEORA methods for the PubMedQA benchmark.

Registered names (candidates = hybrid top-``config.candidates`` per query; passage
embeddings are the dense retriever's stored corpus embeddings, so nothing is re-encoded):

``meteora``                full pipeline: LM rationales (+ the query as anchor unless
                           ``options["include_query"]`` is False), pairing + pooled elbow,
                           expansion window ``options["window"]`` (default 1)
``meteora-no-expansion``   the same with window 0
``meteora-pairing``        pairing only (no pooled elbow), window as ``meteora``
``meteora-pooling``        pooled elbow only (no pairing), window as ``meteora``
``meteora-query-only``     no LM: the query is the single rationale, window as ``meteora``

Any of these with a ``-wN`` suffix (e.g. ``meteora-query-only-w0``) uses window N.
Rationales come from the generator's persistent cache, so reruns do not regenerate.

Options (``BenchmarkConfig.options``): ``generator`` (model id/folder, default the
offline SmolLM2), ``adapter`` (PEFT adapter id/folder), ``template``, ``n`` (rationales), ``include_query``, ``window``,
``tau``, ``pairing``, ``batch_size``, ``max_new_tokens``, ``expand_from_documents``
(default True: expansion may add neighbours from the candidates' whole abstracts, not
only from the candidate list).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

from meteora.bench.pubmedqa import BenchmarkContext, MethodOutput, register_method

__all__ = ["VARIANTS", "meteora_runner", "resolve_meteora_method"]

logger = logging.getLogger(__name__)

# name -> (uses the LM, use_pairing, use_pooling, window override or None)
VARIANTS: dict[str, tuple[bool, bool, bool, int | None]] = {
    "meteora": (True, True, True, None),
    "meteora-no-expansion": (True, True, True, 0),
    "meteora-pairing": (True, True, False, None),
    "meteora-pooling": (True, False, True, None),
    "meteora-query-only": (False, True, True, None),
}
_WINDOW_SUFFIX = re.compile(r"^(?P<base>meteora[a-z-]*?)-w(?P<w>\d+)$")


def _rationales(ctx: BenchmarkContext) -> tuple[list[list[str]], list[Any], float]:
    opts = ctx.config.options

    def build():
        from meteora.rationales import RationaleGenerator

        gen = RationaleGenerator.from_pretrained(
            opts.get("generator"),
            adapter=opts.get("adapter"),
            template=opts.get("template"),
            num_threads=ctx.config.num_threads,
            cache=True,
        )
        t0 = time.perf_counter()
        gen_kwargs = {"max_new_tokens": opts["max_new_tokens"]} if opts.get("max_new_tokens") else {}
        sets = gen.generate(
            list(ctx.queries),
            n=opts.get("n"),
            batch_size=int(opts.get("batch_size", 8)),
            include_query=bool(opts.get("include_query", True)),
            show_progress=True,
            **gen_kwargs,
        )
        seconds = time.perf_counter() - t0
        return [list(s.rationales) for s in sets], sets, seconds

    return ctx.shared("rationales", build)


def _encode_grouped(encoder: Any, groups: list[list[str]]) -> list[Any]:
    """Encode every rationale of every query in one batched call, then split per query."""
    flat = [t for g in groups for t in g]
    emb = encoder.encode(flat)
    out, start = [], 0
    for g in groups:
        out.append(emb[start : start + len(g)])
        start += len(g)
    return out


def meteora_runner(name: str) -> Callable[[BenchmarkContext], MethodOutput]:
    """A benchmark runner for a METEORA variant name (see the module docstring)."""
    m = _WINDOW_SUFFIX.match(name)
    base, window_override = (m.group("base"), int(m.group("w"))) if m else (name, None)
    if base not in VARIANTS:
        raise KeyError(name)
    uses_lm, use_pairing, use_pooling, variant_window = VARIANTS[base]

    def run(ctx: BenchmarkContext) -> MethodOutput:
        from meteora.selection import EvidenceSelector

        opts = ctx.config.options
        window = window_override if window_override is not None else (
            variant_window if variant_window is not None else int(opts.get("window", 1))
        )
        selector = EvidenceSelector(
            pairing=opts.get("pairing", "distinct"),
            tau=float(opts.get("tau", 1.0)),
            window=window,
            use_pairing=use_pairing,
            use_pooling=use_pooling,
        )
        encoder = ctx.encoder()
        dense = ctx.retriever("dense")
        candidates = ctx.rankings("hybrid", ctx.config.candidates)
        extra: dict[str, Any] = {"window": window, "candidates": ctx.config.candidates}
        gen_seconds = 0.0
        if uses_lm:
            rationale_lists, sets, gen_seconds = _rationales(ctx)
            extra["generation_seconds"] = gen_seconds
            extra["fallback_rate"] = sum(bool(s.fallback) for s in sets) / max(len(sets), 1)
            extra["cached_rate"] = sum(bool(getattr(s, "from_cache", False)) for s in sets) / max(len(sets), 1)
            extra["mean_rationales"] = sum(len(r) for r in rationale_lists) / max(len(rationale_lists), 1)
        else:
            rationale_lists = [[q] for q in ctx.queries]
        emb_key = f"rationale-embeddings:{uses_lm}"
        rat_emb = ctx.shared(emb_key, lambda: _encode_grouped(encoder, rationale_lists))
        extra["rationale_encoding_seconds"] = ctx.timings[emb_key]
        t0 = time.perf_counter()
        run_dict: dict[str, dict[str, float]] = {}
        selections: dict[str, list[str]] = {}
        for qid, ranking, remb in zip(ctx.qids, candidates, rat_emb, strict=True):
            passages = list(ranking.passages)
            if not passages:
                run_dict[qid], selections[qid] = {}, []
                continue
            pemb = dense.embeddings_for([p.id for p in passages])
            context = None
            if window > 0 and opts.get("expand_from_documents", True):
                docs = dict.fromkeys(p.doc_id for p in passages)
                context = [p for d in docs for p in ctx.data.doc_passages(d)]
            result = selector.select(remb, pemb, passages, context=context)
            run_dict[qid] = result.ranking.to_run()
            selections[qid] = list(result.selected_ids)
        select_seconds = time.perf_counter() - t0
        extra["selection_seconds"] = select_seconds
        seconds = gen_seconds + extra["rationale_encoding_seconds"] + select_seconds
        return MethodOutput(run=run_dict, selections=selections, seconds=seconds, extra=extra, fixed_k=False)

    return run


def resolve_meteora_method(name: str) -> Callable[[BenchmarkContext], MethodOutput] | None:
    """The runner for ``name`` if it is a METEORA variant, else ``None``."""
    try:
        return meteora_runner(name)
    except KeyError:
        return None


for _name in VARIANTS:
    register_method(_name, meteora_runner(_name))

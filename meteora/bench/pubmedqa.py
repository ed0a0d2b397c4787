"""The retrieval and evidence-selection benchmark (``meteora bench pubmedqa|bioasq|beir``).

The run itself (:func:`run_benchmark`, scoring, tables): one code path for every
dataset. Its parts live beside it: settings in :mod:`meteora.bench.config`, datasets
in :mod:`meteora.bench.datasets`, the shared context in :mod:`meteora.bench.context`,
method names in :mod:`meteora.bench.method_names` and the method registry in
:mod:`meteora.bench.methods` (imported one-way; nothing registers itself). A dataset is
only a builder of a :class:`~meteora.datasets.pubmedqa.RetrievalBenchmark`: PubMedQA
(the default), BioASQ golden files (:mod:`meteora.datasets.bioasq`), any BEIR-format
folder (:mod:`meteora.datasets.beir`: ``BenchmarkConfig(dataset="beir",
data_path=DIR)``), or one given directly (``run_benchmark(config, benchmark=...)``).
PubMedQA:

Corpus: every context chunk of the 1000 PQA-L abstracts (3,358 chunks). Queries: the
questions of a split (``test`` = the 500 official test questions, ``train``, ``all``).
Two relevance views: ``abstract`` (all chunks of the question's own abstract) and
``evidence`` (only its RESULTS chunks). Section labels are used for scoring only; no
method ever sees them.

Every method is run on the same queries over the same corpus. Ranking methods report
NDCG@10, Recall@k, MRR@10 and MAP; every method also gets set metrics — a fixed-k
baseline ``name@k`` keeps its top k, a selection method keeps what it selects.

Example:
    >>> cfg = BenchmarkConfig(methods=["bm25"], split="test", limit=20)
    >>> results = run_benchmark(cfg)  # doctest: +SKIP
    >>> results["views"]["abstract"]["methods"]["bm25"]["NDCG@10"]  # doctest: +SKIP
    0.78...
"""

from __future__ import annotations

import dataclasses
import logging
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from meteora._io import atomic_write_json
from meteora.bench.config import BenchmarkConfig
from meteora.bench.context import BenchmarkContext, MethodOutput
from meteora.bench.datasets import DATASET_TITLES
from meteora.bench.methods import get_runner
from meteora.bench.report import environment_versions, format_table, plot_recall_vs_chunks
from meteora.errors import InvalidInputError

__all__ = ["run_benchmark", "format_results", "RANKING_METRICS", "SET_METRICS"]

logger = logging.getLogger(__name__)

RANKING_METRICS = ("NDCG@10", "Recall@1", "Recall@5", "Recall@10", "Recall@20", "Recall@50", "MRR@10", "MAP")
SET_METRICS = ("precision", "recall", "F1", "mean_chunks")


def _score_view(view: str, ctx: BenchmarkContext, outputs: dict[str, MethodOutput]) -> dict[str, Any]:
    from meteora.metrics import evaluate_ranking
    from meteora.set_metrics import fixed_k_selections, paired_bootstrap_f1, set_metrics

    qrels = ctx.data.qrels_for(view, ctx.qids)
    methods: dict[str, dict[str, Any]] = {}
    for name, out in outputs.items():
        entry: dict[str, Any] = {}
        if out.run is not None:
            run = {q: out.run.get(q, {}) for q in qrels}
            entry.update(evaluate_ranking(qrels, run, RANKING_METRICS))
        if out.selections is not None:
            sel = {q: out.selections.get(q, []) for q in qrels}
            entry.update({k: v for k, v in set_metrics(qrels, sel).items() if k != "n_queries"})
        entry["seconds"] = out.seconds
        entry.update(out.extra)
        methods[name] = entry
        if out.run is not None and out.fixed_k:
            run = {q: out.run.get(q, {}) for q in qrels}
            for k in ctx.config.ks:
                m = set_metrics(qrels, fixed_k_selections(run, k))
                methods[f"{name}@{k}"] = {key: m[key] for key in (*SET_METRICS, "F1_macro", "median_chunks") if key in m}
    comparisons = {}
    for pair in ctx.config.compare:
        a, b = pair.split(":")
        comparisons[pair] = paired_bootstrap_f1(
            qrels, _selections_of(a, outputs, qrels), _selections_of(b, outputs, qrels)
        )
    out: dict[str, Any] = {"n_queries": len(qrels), "methods": methods}
    if comparisons:
        out["paired_bootstrap_F1"] = comparisons
    return out


def _selections_of(name: str, outputs: dict[str, MethodOutput], qrels: dict[str, Any]) -> dict[str, list[str]]:
    """What method ``name`` selects per query: a selection method's own selection, or
    the top k of a ranking method for ``NAME@k``."""
    from meteora.set_metrics import fixed_k_selections

    base, _, k = name.partition("@")
    out = outputs.get(base)
    if out is None:
        raise InvalidInputError(f"--compare names {name!r}, but {base!r} is not among the methods run")
    if k:
        if out.run is None:
            raise InvalidInputError(f"{base!r} ranks nothing, so {name!r} has no top-k selection")
        return fixed_k_selections({q: out.run.get(q, {}) for q in qrels}, int(k))
    if out.selections is None:
        raise InvalidInputError(f"{name!r} selects nothing; compare a selection method or NAME@k")
    return {q: out.selections.get(q, []) for q in qrels}


def run_benchmark(
    config: BenchmarkConfig,
    *,
    command: str | None = None,
    write: bool = True,
    benchmark: Any = None,
    generator: Any = None,
    scorer: Any = None,
) -> dict[str, Any]:
    """Run every configured method, score both views, print tables, write JSON + PNG.

    Args:
        config: the run's settings.
        command: the command line recorded in the results (default: ``sys.argv``).
        write: write ``<out_dir>/<results_stem>.json`` (and the PNG).
        benchmark: a :class:`~meteora.datasets.pubmedqa.RetrievalBenchmark` to run on
            instead of building ``config.dataset`` (``config.dataset`` becomes its name).
        generator: the rationale generator of the METEORA methods instead of the one
            built from ``config.options``.
        scorer: the evidence scorer of the METEORA methods that use one, instead of the
            one built from ``config.options``.

    Returns the results dict (the same content as the JSON file).
    """
    if benchmark is not None and config.dataset != benchmark.name:
        config = dataclasses.replace(config, dataset=benchmark.name)
    config.validate(benchmark)
    if write:  # before any work: a bad --out must not cost the run
        config.check_output()
    t_start = time.perf_counter()
    ctx = BenchmarkContext(config, benchmark=benchmark, generator=generator, scorer=scorer)
    if config.views is None:
        config = dataclasses.replace(config, views=list(ctx.data.views))
        ctx.config = config
    unknown = [v for v in config.views if v not in ctx.data.views]
    if unknown:
        raise InvalidInputError(f"unknown qrels views {unknown} for {ctx.data.name}; available: {ctx.data.views}")
    title = DATASET_TITLES.get(config.dataset, config.dataset)
    if ctx.data.name not in (config.dataset, title):
        title = f"{title} {ctx.data.name}"
    logger.info("%s: %d queries (%s split), %d chunks", title, len(ctx.qids), config.split, len(ctx.data.corpus))
    outputs: dict[str, MethodOutput] = {}
    for name in config.methods:
        logger.info("running %s", name)
        runner = get_runner(name)
        assert runner is not None
        outputs[name] = runner(ctx)
    views = {view: _score_view(view, ctx, outputs) for view in config.views}
    results: dict[str, Any] = {
        "command": command or "meteora " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "config": asdict(config),
        "versions": environment_versions(),
        "dataset": {
            "name": title,
            "id": config.dataset,
            "corpus_chunks": len(ctx.data.corpus),
            "queries": len(ctx.qids),
            "split": config.split,
        },
        "views": views,
        "total_seconds": time.perf_counter() - t_start,
    }
    if write:
        json_path, png_path = config.results_paths()
        atomic_write_json(json_path, results)
        results_path = str(json_path)
        if config.plot:
            png = plot_recall_vs_chunks(views, png_path, title=f"{title} {config.split}")
            if png is not None:
                logger.info("wrote %s", png)
        logger.info("wrote %s", results_path)
    return results


def format_results(results: dict[str, Any], *, ks_shown: Sequence[int] = (1, 3, 5, 8)) -> str:
    """Console tables: ranking metrics per view, then set metrics of selections and fixed-k."""
    lines = []
    verdicts: list[str] = []
    for view, data in results["views"].items():
        methods = data["methods"]
        ranked = {n: m for n, m in methods.items() if "NDCG@10" in m}
        lines.append(f"\n== {view} view ({data['n_queries']} queries) — ranking ==")
        lines.append(format_table(ranked, ["NDCG@10", "Recall@5", "Recall@10", "Recall@50", "MRR@10", "MAP", "seconds"]))
        sets = {
            n: m
            for n, m in methods.items()
            if "precision" in m and ("@" not in n or int(n.rpartition("@")[2]) in ks_shown)
        }
        if sets:
            lines.append(f"\n== {view} view — sets (precision/recall over chunk ids) ==")
            lines.append(format_table(sets, ["precision", "recall", "F1", "mean_chunks"]))
        verdicts.extend(wins_and_losses(view, data))
    if verdicts:
        lines.append("\n== where it wins / where it loses ==")
        lines.extend(verdicts)
    return "\n".join(lines)


def _verdict(ours: float, theirs: float) -> str:
    """``wins`` / ``loses`` / ``ties`` (equal at the 3 decimals shown)."""
    if round(ours, 3) == round(theirs, 3):
        return "ties"
    return "wins" if ours > theirs else "loses"


def wins_and_losses(view: str, data: dict[str, Any]) -> list[str]:
    """One line per selection method: where it wins or loses against the run's best
    fixed-k baseline (by F1) and the best ranking (by NDCG@10), with the paired
    bootstrap interval when the run has one.

    Example:
        >>> view = {"methods": {"dense": {"NDCG@10": 0.4}, "dense@3": {"F1": 0.28, "mean_chunks": 3.0},
        ...         "meteora": {"NDCG@10": 0.6, "F1": 0.5, "mean_chunks": 1.2, "precision": 0.5}}}
        >>> wins_and_losses("evidence", view)[0]
        'evidence: meteora wins on F1 (0.500 with 1.2 chunks vs 0.280 for dense@3 with 3.0) and wins on NDCG@10 (0.600 vs 0.400 for dense)'
    """
    methods = data["methods"]
    fixed = {n: m for n, m in methods.items() if "@" in n and "F1" in m}
    ranking = {n: m for n, m in methods.items() if "NDCG@10" in m and "precision" not in m}
    out = []
    best_k = max(fixed, key=lambda n: fixed[n]["F1"]) if fixed else None
    best_r = max(ranking, key=lambda n: ranking[n]["NDCG@10"]) if ranking else None
    boots = data.get("paired_bootstrap_F1", {})
    for name, m in methods.items():
        if "@" in name or "precision" not in m:
            continue
        parts = []
        if best_k is not None:
            b = fixed[best_k]
            verdict = _verdict(m["F1"], b["F1"])
            parts.append(
                f"{verdict} on F1 ({m['F1']:.3f} with {m['mean_chunks']:.1f} chunks vs {b['F1']:.3f} for {best_k} "
                f"with {b['mean_chunks']:.1f})"
            )
            boot = boots.get(f"{name}:{best_k}")
            if boot:
                parts[-1] += f", 95% CI of the difference [{boot['ci95'][0]:+.3f}, {boot['ci95'][1]:+.3f}]"
        if best_r is not None and "NDCG@10" in m:
            r = ranking[best_r]
            verdict = _verdict(m["NDCG@10"], r["NDCG@10"])
            parts.append(f"{verdict} on NDCG@10 ({m['NDCG@10']:.3f} vs {r['NDCG@10']:.3f} for {best_r})")
        if parts:
            out.append(f"{view}: {name} " + " and ".join(parts))
    return out

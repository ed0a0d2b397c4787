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
baseline ``name@k`` keeps its top k, a selection method keeps what it selects — and
each view gets the configured paired bootstraps and the relevant-count buckets
(:mod:`meteora.bench.view_scores`).

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
from meteora.bench.view_scores import score_view
from meteora.errors import InvalidInputError

__all__ = ["run_benchmark", "format_results"]

logger = logging.getLogger(__name__)


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
    views = {view: score_view(view, ctx, outputs) for view in config.views}
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
        lines.extend(_bucket_lines(view, data))
        for kind in ("F1", "NDCG@10"):
            for pair, b in data.get(f"paired_bootstrap_{kind}", {}).items():
                lines.append(f"paired bootstrap {kind} {pair.replace('best', b['B'])}: {b['difference']:+.4f} "
                             f"[{b['ci95'][0]:+.4f}, {b['ci95'][1]:+.4f}]")
    if verdicts:
        lines.append("\n== where it wins / where it loses ==")
        lines.extend(verdicts)
    return "\n".join(lines)


def _bucket_lines(view: str, data: dict[str, Any]) -> list[str]:
    """The relevant-count bucket table of a view: F1 (mean selected) per method."""
    buckets = data.get("buckets")
    if not buckets or not buckets.get("rows"):
        return []
    rows = buckets["rows"]
    first = next(iter(rows.values()))
    names = [n for n, v in first.items() if isinstance(v, dict) and "mean_selected" in v]
    table = {}
    for label, row in rows.items():
        entry: dict[str, Any] = {"questions": row["questions"], "relevant": row["mean_relevant"]}
        for n in names:
            if n in row:
                entry[n] = f"{row[n]['F1']:.3f} ({row[n]['mean_selected']:.1f})"
        own = row.get("best_fixed_k_in_bucket")
        if own:
            entry["best k here"] = f"{own['F1']:.3f} ({own['method']})"
        table[label] = entry
    return [f"\n== {view} view — by relevant passages per question: F1 (mean selected) ==",
            format_table(table, ["questions", "relevant", *names, "best k here"])]


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
            boot = boots.get(f"{name}:{best_k}") or boots.get(f"{name}:best")
            if boot:
                parts[-1] += f", 95% CI of the difference [{boot['ci95'][0]:+.3f}, {boot['ci95'][1]:+.3f}]"
        if best_r is not None and "NDCG@10" in m:
            r = ranking[best_r]
            verdict = _verdict(m["NDCG@10"], r["NDCG@10"])
            parts.append(f"{verdict} on NDCG@10 ({m['NDCG@10']:.3f} vs {r['NDCG@10']:.3f} for {best_r})")
        if parts:
            out.append(f"{view}: {name} " + " and ".join(parts))
    return out

"""What the default poison defence costs on clean data: PubMedQA test and BioASQ dev.

Run from the repository root::

    .venv/bin/python benchmarks/poisoning_clean_cost.py --threads 1            # the committed numbers
    .venv/bin/python benchmarks/poisoning_clean_cost.py --limit 20 --no-lm      # smoke run

For each dataset (PubMedQA: the 500 official test questions, evidence view; BioASQ: the
dev questions — the 8B files, 2020 — over the corpus of every file's snippets) and each
path (``query-only``: ``Reranker(generator=None)``; ``default``: ``Reranker()`` with the
offline SmolLM2's rationales from the persistent rationale cache) — each with its
default selector, the learned cut — the user path runs
twice on the same candidate pools — hybrid (BM25 + dense, RRF) top-``--candidates``, as
``meteora bench`` — with ``verifier=None`` and with the default verifier (the poison
defence): ``Reranker.retrieve`` then ``Reranker.rerank_pools``.

Reported per dataset and path: evidence precision / recall / F1 / chunks with and without
the defence; **gold dropped** — relevant passages the undefended pipeline selects that the
defended one does not (per passage, and per question: questions that lose every relevant
passage they had); passages the defence dropped, and added back (re-selection or the
guard); questions with a reported conflict; the defence's extra seconds per query (the
undefended pass runs first, so the scorer's pair memory holds the pipeline's own logits
and the difference is the defence's own work: its lazily computed logits and its
decision); and a few dropped relevant passages (question and passage ids, no data text)
with the defence's reason (BioASQ snippets are short sentences that can legitimately echo
the question: these show what is dropped).

Never used to tune anything: BioASQ dev is report-only; the defence was trained on
PubMedQA train questions (``meteora train poison-defence``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger("poisoning_clean_cost")

TRAIN_PREFIX = "7B"


def bioasq_dev_ids(bench: Any, data: str | None) -> list[str]:
    """The dev questions: the benchmark's ``dev`` split, else the questions first asked in
    a file that is not a 7B (2019) file."""
    if "dev" in bench.splits:
        return list(bench.splits["dev"])
    from meteora.settings import data_dir

    root = Path(data) if data else Path(data_dir()) / "bioasq-dev"
    seen: dict[str, str] = {}
    for f in sorted(root.glob("*_golden.json")):
        for q in json.loads(f.read_text(encoding="utf-8"))["questions"]:
            seen.setdefault(str(q["id"]), f.name)
    return [q for q in bench.query_ids("all") if not seen.get(q, TRAIN_PREFIX).startswith(TRAIN_PREFIX)]


def measure(name: str, bench: Any, qids: list[str], ctx: Any, *, lm: bool, candidates: int) -> dict[str, Any]:
    """One dataset and path: the undefended and the defended runs on the same pools."""
    from meteora.reranker import Reranker
    from meteora.set_metrics import set_metrics

    queries = [bench.queries[q] for q in qids]
    gen = ctx.generator() if lm else None
    base = Reranker(generator=gen, encoder=ctx.encoder(), scorer=ctx.scorer(), verifier=None)
    defended = Reranker(generator=gen, encoder=ctx.encoder(), scorer=ctx.scorer())
    pools = base.retrieve(queries, ctx.retriever("hybrid"), k=candidates)
    rats = base.rationales_for(queries)
    given = [s if s is not None else r for r, s in rats]
    cached = sum(bool(getattr(s, "from_cache", False)) for _, s in rats)
    t0 = time.perf_counter()
    plain = base.rerank_pools(pools, rationales=given)
    t1 = time.perf_counter()
    guarded = defended.rerank_pools(pools, rationales=given)
    t2 = time.perf_counter()
    qrels = bench.qrels_for("evidence", qids)
    out: dict[str, Any] = {"dataset": name, "path": "default Reranker()" if lm else "Reranker(generator=None)",
                           "questions": len(qids), "rationales_from_cache": cached if lm else None}
    for label, results in (("undefended", plain), ("defended", guarded)):
        m = set_metrics(qrels, {q: r.selected_ids for q, r in zip(qids, results, strict=True)})
        out[label] = {k: round(float(m[k]), 4) for k in ("precision", "recall", "F1", "mean_chunks")}
    out["F1_change"] = round(out["defended"]["F1"] - out["undefended"]["F1"], 4)
    kept_before = dropped = q_before = q_lost = n_dropped = n_added = conflicts = 0
    examples = []
    for q, a, b in zip(qids, plain, guarded, strict=True):
        rel = set(qrels.get(q, {}))
        before, after = rel & set(a.selected_ids), rel & set(b.selected_ids)
        kept_before += len(before)
        dropped += len(before - after)
        q_before += bool(before)
        q_lost += bool(before) and not after
        v = b.verification
        rejected = {p.id for p, _ in v.rejected} if v is not None else set()
        n_dropped += len(rejected & set(a.selected_ids))
        n_added += len(set(b.selected_ids) - set(a.selected_ids))
        conflicts += bool(b.conflicts)
        for p, verdict in (v.rejected if v is not None else []):
            if p.id in before and len(examples) < 8:
                examples.append({"question_id": q, "dropped_id": p.id, "reason": verdict.reason})
    out.update({
        "relevant_selected_undefended": kept_before, "relevant_dropped": dropped,
        "relevant_dropped_pct": round(100 * dropped / kept_before, 2) if kept_before else None,
        "questions_with_relevant_selected_undefended": q_before, "questions_losing_all_relevant": q_lost,
        "questions_losing_all_relevant_pct": round(100 * q_lost / q_before, 2) if q_before else None,
        "selected_passages_dropped": n_dropped, "passages_added": n_added, "questions_with_conflicts": conflicts,
        "seconds_per_query": {"undefended": round((t1 - t0) / max(len(qids), 1), 3),
                              "defended": round((t2 - t1) / max(len(qids), 1), 3)},
        "relevant_dropped_examples": examples,
    })
    logger.info("%s %s: F1 %.4f -> %.4f, relevant dropped %s/%s", name, out["path"], out["undefended"]["F1"],
                out["defended"]["F1"], dropped, kept_before)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default="pubmedqa,bioasq")
    ap.add_argument("--limit", type=int, default=None, help="only the first N questions of each dataset")
    ap.add_argument("--candidates", type=int, default=50)
    ap.add_argument("--no-lm", action="store_true", help="query-only path only")
    ap.add_argument("--bioasq-data", default=None, help="BioASQ golden files (default: $METEORA_DATA_DIR/bioasq-dev)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="benchmarks/results/poisoning_clean_cost.json")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from meteora._io import atomic_write_json
    from meteora.bench.config import BenchmarkConfig
    from meteora.bench.context import BenchmarkContext
    from meteora.bench.report import environment_versions
    from meteora.settings import apply_thread_setting

    apply_thread_setting(args.threads)
    t0 = time.perf_counter()
    runs = []
    for name in args.datasets.split(","):
        split = "test" if name == "pubmedqa" else "dev"
        cfg = BenchmarkConfig(methods=["hybrid"], split=split, dataset=name, candidates=args.candidates,
                              num_threads=args.threads, data_path=args.bioasq_data if name == "bioasq" else None)
        ctx = BenchmarkContext(cfg)
        bench = ctx.data
        qids = bench.query_ids("test") if name == "pubmedqa" else bioasq_dev_ids(bench, args.bioasq_data)
        qids = [q for q in qids if bench.qrels.get("evidence", {}).get(q)][: args.limit]
        for lm in ([False] if args.no_lm else [False, True]):
            runs.append(measure(name, bench, qids, ctx, lm=lm, candidates=args.candidates))
    result = {
        "command": "python benchmarks/poisoning_clean_cost.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "what": "clean cost of the default poison defence: the same pools with verifier=None and the default",
        "splits": {"pubmedqa": "the 500 official test questions (evidence view)",
                   "bioasq": "dev: questions of the 8B files (2020), report only; corpus of every file's snippets"},
        "versions": environment_versions(),
        "load_average": os.getloadavg(),
        "runs": runs,
        "total_seconds": round(time.perf_counter() - t0, 1),
    }
    atomic_write_json(args.out, result)
    for r in runs:
        print(f"{r['dataset']:9s} {r['path']:26s} F1 {r['undefended']['F1']:.4f} -> {r['defended']['F1']:.4f} "
              f"({r['F1_change']:+.4f}); relevant dropped {r['relevant_dropped']}/{r['relevant_selected_undefended']} "
              f"({r['relevant_dropped_pct']}%); questions losing all {r['questions_losing_all_relevant']}; "
              f"conflicts {r['questions_with_conflicts']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

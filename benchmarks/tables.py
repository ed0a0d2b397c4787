"""Print the README's benchmark tables (markdown) from the committed results JSON.

Every number in the README's benchmark section comes from this script:

    .venv/bin/python benchmarks/tables.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _load(name: str) -> dict | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def ranking_table(results: dict, view: str, methods: list[str]) -> str:
    cols = ["NDCG@10", "Recall@10", "Recall@50", "MRR@10", "MAP"]
    lines = [_row(["method", *cols]), _row(["---"] * (len(cols) + 1))]
    data = results["views"][view]["methods"]
    for m in methods:
        if m in data and "NDCG@10" in data[m]:
            lines.append(_row([m, *(f"{data[m][c]:.3f}" for c in cols)]))
    return "\n".join(lines)


def set_table(results: dict, view: str, methods: list[str]) -> str:
    cols = ["precision", "recall", "F1", "mean_chunks"]
    lines = [_row(["method", *cols]), _row(["---"] * (len(cols) + 1))]
    data = results["views"][view]["methods"]
    for m in methods:
        if m in data and "precision" in data[m]:
            lines.append(_row([m, *(f"{data[m][c]:.3f}" if c != "mean_chunks" else f"{data[m][c]:.2f}" for c in cols)]))
    return "\n".join(lines)


QA_LABELS = {
    "none": "none",
    "gold": "gold abstract",
    "meteora": "METEORA (SmolLM2 rationales, w=0)",
    "meteora-query-only": "METEORA query-only (w=0)",
    "fixed-k": "hybrid top-{k}",
}


def qa_table(results: dict) -> str:
    lines = [_row(["context", "accuracy", "macro-F1", "predicted yes / no / maybe"]), _row(["---"] * 4)]
    for cond, m in results["conditions"].items():
        dist = m["predicted_distribution"]
        label = QA_LABELS.get(cond, cond).format(k=results.get("k", ""))
        lines.append(_row([label, f"{m['accuracy']:.3f}", f"{m['macro_f1']:.3f}", f"{dist['yes']} / {dist['no']} / {dist['maybe']}"]))
    return "\n".join(lines)


def dpo_table(results: dict) -> str:
    lines = [_row(["rationales (window 0)", "evidence precision", "recall", "F1", "chunks", "fallback"]), _row(["---"] * 6)]
    for label, row in results["pubmedqa_test_w0"].items():
        ev = row["evidence"]
        fb = ev.get("fallback_rate")
        lines.append(_row([label, f"{ev['precision']:.3f}", f"{ev['recall']:.3f}", f"{ev['F1']:.3f}", f"{ev['mean_chunks']:.2f}", "—" if fb is None else f"{100 * fb:.0f} %"]))
    return "\n".join(lines)


def scale_table(results: dict) -> str:
    """The scale benchmark, one row per corpus size and index type."""
    cols = ["chunks", "index", "build s", "disk MB", "build peak RSS MB", "serve peak RSS MB",
            "QPS batched 1t / 2t", "p50 ms 1t / 2t", "p95 ms 1t / 2t", "recall@10", "NDCG@10"]
    lines = [_row(cols), _row(["---"] * len(cols))]
    for n, row in results["sizes"].items():
        for kind, v in row.items():
            one, two = v["serve"]["1_thread"], v["serve"]["2_thread"]
            recall = one.get("recall_at_10")
            lines.append(_row([
                f"{int(n):,}", kind, f"{v['build_s']:.1f}", f"{v['bytes_on_disk'] / 2**20:,.0f}",
                f"{v['build_peak_rss_mb']:,.0f}", f"{max(one['serve_peak_rss_mb'], two['serve_peak_rss_mb']):,.0f}",
                f"{one['qps_batched']:,.0f} / {two['qps_batched']:,.0f}", f"{one['p50_ms']:.2f} / {two['p50_ms']:.2f}",
                f"{one['p95_ms']:.2f} / {two['p95_ms']:.2f}", "—" if recall is None else f"{recall:.3f}",
                f"{one['ndcg_at_10']:.3f}",
            ]))
    return "\n".join(lines)


def store_table(results: dict) -> str:
    """Passage stores: lookups a retriever makes, p50 / p95 ms."""
    cols = ["store", "write s", "disk MB", "100 rows", "100 ids", "±1 neighbours of 50", "memory added MB"]
    lines = [_row(cols), _row(["---"] * len(cols))]
    for r in results["results"]:
        if "skipped" in r:
            continue
        def ms(key: str, r: dict = r) -> str:
            return f"{r[key]['p50_ms']:.2f} / {r[key]['p95_ms']:.2f}"
        lines.append(_row([r["store"], f"{r['write_s']:.1f}", f"{r['bytes_on_disk'] / 2**20:.0f}",
                           ms("rows_100"), ms("ids_100"), ms("neighbours_50"), f"{r['rss_added_mb']:.0f}"]))
    return "\n".join(lines)


def main() -> int:
    out = []
    scale = _load("scale.json")
    if scale:
        out.append(f"### Scale (`{scale['command']}`)\n")
        out.append(scale_table(scale) + "\n")
    stores = _load("passage_stores.json")
    if stores:
        out.append(f"### Passage stores (`{stores['command']}`)\n")
        out.append(store_table(stores) + "\n")
    allr = _load("pubmedqa_all.json")
    if allr:
        out.append(f"### All 1000 questions, ranking (`{allr['command']}`)\n")
        for view in ("abstract", "evidence"):
            n = allr["views"][view]["n_queries"]
            out.append(f"**{view} view** ({n} questions)\n")
            out.append(ranking_table(allr, view, ["bm25", "dense", "hybrid"]) + "\n")
        out.append("Query-only selection (hybrid top-50 candidates, the query as the only rationale, elbow τ=1.0, expansion window w):\n")
        for view in ("abstract", "evidence"):
            out.append(f"**{view} view**\n")
            out.append(set_table(allr, view, ["meteora-query-only-w0", "meteora-query-only-w1", "meteora-query-only-w2", "dense@1", "dense@3", "dense@5"]) + "\n")
    test = _load("pubmedqa_test.json")
    if test:
        out.append(f"### 500 test questions (`{test['command']}`)\n")
        methods = ["meteora", "meteora-no-expansion", "meteora-pairing", "meteora-pooling", "meteora-query-only", "meteora-query-only-w0", "meteora-query-only-w2"]
        baselines = ["bm25@3", "hybrid@3", *(f"dense@{k}" for k in (1, 2, 3, 5, 8))]
        for view in ("abstract", "evidence"):
            n = test["views"][view]["n_queries"]
            out.append(f"**{view} view** ({n} questions): ranking\n")
            out.append(ranking_table(test, view, ["bm25", "dense", "hybrid", "meteora", "meteora-query-only"]) + "\n")
            out.append(f"**{view} view**: selected sets\n")
            out.append(set_table(test, view, methods + baselines) + "\n")
    for name in ("pubmedqa_qa_smollm2.json", "pubmedqa_qa_smollm2_n100.json"):
        qa = _load(name)
        if qa:
            gold = qa.get("gold_distribution", {})
            out.append(f"### PubMedQA answer accuracy, {qa['n_questions']} test questions (`{qa['command']}`; gold labels {gold})\n")
            out.append(qa_table(qa) + "\n")
    dpo = _load("dpo_smollm2.json")
    if dpo:
        out.append(f"### DPO (`{dpo['command']}`)\n")
        out.append(dpo_table(dpo) + "\n")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

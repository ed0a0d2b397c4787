"""Print the README's benchmark tables (markdown) from the committed results JSON.

Every number in the README's Benchmarks section comes from this script:

    .venv/bin/python benchmarks/tables.py

It reads ``pubmedqa_test.json`` and ``bioasq_dev.json`` (the default pipeline and its
ablations, both datasets side by side, the paired bootstraps and the relevant-count
buckets) and ``pubmedqa_all.json`` (retrieval on all 1000 PubMedQA questions).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

#: (row label, method) of the side-by-side table; "best" is each view's best fixed k
SIDE_BY_SIDE = [
    ("best fixed k", "best"),
    ("hybrid (ranking only)", "hybrid"),
    ("**`Reranker()`** (default: SmolLM2 rationales + learned cut + poison defence)", "meteora"),
    ("`Reranker(verifier=None)` (the selection alone, no defence)", "meteora-no-defence"),
    ("`Reranker(generator=None)`", "meteora-query-only"),
    ("`Reranker(scorer=None)` (stage-1 model)", "meteora-no-scorer"),
    ("`Reranker(generator=None, scorer=None)`", "meteora-query-only-no-scorer"),
    ("`cut=\"band\"` (the previous default)", "meteora-band"),
    ("`cut=\"band\"`, `generator=None`", "meteora-query-only-band"),
    ("`cut=\"elbow\"`, no scorer", "meteora-elbow"),
]
BOOTSTRAPS = [
    ("default − best fixed k", "meteora:best"),
    ("default − query-only (`generator=None`)", "meteora:meteora-query-only"),
    ("default − hybrid (its input ranking)", "meteora:hybrid"),
    ("default − `cut=\"band\"` (previous default)", "meteora:meteora-band"),
    ("query-only − best fixed k", "meteora-query-only:best"),
    ("default − `verifier=None` (the poison defence's clean cost)", "meteora:meteora-no-defence"),
]


def _load(name: str) -> dict | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _f(value: float | None, fmt: str = ".3f") -> str:
    return "—" if value is None else format(value, fmt)


def _set_cells(view: dict, method: str) -> list[str]:
    name = view["best_fixed_k"] if method == "best" else method
    m = view["methods"].get(name, {})
    cells = [_f(m.get("precision")), _f(m.get("recall")), _f(m.get("F1")), _f(m.get("mean_chunks"), ".2f"),
             _f(m.get("NDCG@10"))]
    return [f"{c} ({name})" if method == "best" and i == 2 else c for i, c in enumerate(cells)]


def side_by_side(bioasq: dict, pubmedqa: dict) -> str:
    b, p = bioasq["views"]["evidence"], pubmedqa["views"]["evidence"]
    head = ["method", *(f"{d} {c}" for d in ("BioASQ", "PubMedQA") for c in ("P", "R", "F1", "chunks", "NDCG@10"))]
    lines = [_row(head), _row(["---"] * len(head))]
    for label, method in SIDE_BY_SIDE:
        lines.append(_row([label, *_set_cells(b, method), *_set_cells(p, method)]))
    return "\n".join(lines)


def _boot(view: dict, pair: str, kind: str) -> str:
    b = view.get(f"paired_bootstrap_{kind}", {}).get(pair)
    return "—" if b is None else f"{b['difference']:+.3f} [{b['ci95'][0]:+.3f}, {b['ci95'][1]:+.3f}]"


def bootstraps(bioasq: dict, pubmedqa: dict) -> str:
    b, p = bioasq["views"]["evidence"], pubmedqa["views"]["evidence"]
    head = ["paired bootstrap (95 % CI)", "BioASQ F1", "BioASQ NDCG@10", "PubMedQA F1", "PubMedQA NDCG@10"]
    lines = [_row(head), _row(["---"] * len(head))]
    for label, pair in BOOTSTRAPS:
        lines.append(_row([label, _boot(b, pair, "F1"), _boot(b, pair, "NDCG@10"), _boot(p, pair, "F1"),
                           _boot(p, pair, "NDCG@10")]))
    return "\n".join(lines)


def buckets(bioasq: dict, pubmedqa: dict) -> str:
    head = ["dataset", "relevant", "questions", "mean relevant", "default F1 (selected)", "query-only F1 (selected)",
            "best fixed k overall", "best fixed k in the bucket"]
    lines = [_row(head), _row(["---"] * len(head))]
    for label, results in (("BioASQ dev", bioasq), ("PubMedQA test", pubmedqa)):
        view = results["views"]["evidence"]
        rows, best = view["buckets"]["rows"], view["buckets"]["best_fixed_k"]
        for bucket, r in rows.items():
            d, q, g = r["meteora"], r["meteora-query-only"], r[best]
            own = r["best_fixed_k_in_bucket"]
            lines.append(_row([
                label, bucket, str(r["questions"]), f"{r['mean_relevant']:.2f}",
                f"{d['F1']:.3f} ({d['mean_selected']:.2f})", f"{q['F1']:.3f} ({q['mean_selected']:.2f})",
                f"{g['F1']:.3f} ({best})", f"{own['F1']:.3f} ({own['method']})",
            ]))
    return "\n".join(lines)


def abstract_window2(pubmedqa: dict) -> str:
    view = pubmedqa["views"]["abstract"]
    head = ["method (abstract view)", "precision", "recall", "F1", "chunks", "NDCG@10"]
    lines = [_row(head), _row(["---"] * len(head))]
    for method in ("meteora-w2", "meteora-query-only-w2", "meteora-band-w2", "meteora", "dense@3", "dense@5", "dense@10"):
        m = view["methods"].get(method)
        if m:
            lines.append(_row([method, _f(m["precision"]), _f(m["recall"]), _f(m["F1"]), _f(m["mean_chunks"], ".2f"),
                               _f(m.get("NDCG@10"))]))
    return "\n".join(lines)


def retrieval(allr: dict) -> str:
    cols = ["NDCG@10", "Recall@10", "Recall@50", "MRR@10", "MAP"]
    lines = [_row(["view", "method", *cols]), _row(["---"] * (len(cols) + 2))]
    for view in ("abstract", "evidence"):
        data = allr["views"][view]["methods"]
        for m in ("bm25", "dense", "hybrid"):
            lines.append(_row([view, m, *(f"{data[m][c]:.3f}" for c in cols)]))
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
    bioasq, pubmedqa = _load("bioasq_dev.json"), _load("pubmedqa_test.json")
    if bioasq and pubmedqa:
        out.append(f"`{bioasq['command']}`\n\n`{pubmedqa['command']}`\n")
        out.append(side_by_side(bioasq, pubmedqa) + "\n")
        out.append(bootstraps(bioasq, pubmedqa) + "\n")
        out.append(buckets(bioasq, pubmedqa) + "\n")
        out.append(abstract_window2(pubmedqa) + "\n")
    for name in ("scale.json", "scale_hnsw.json"):
        scale = _load(name)
        if scale:
            out.append(f"### Scale, {name} (`{scale['command']}`)\n")
            out.append(scale_table(scale) + "\n")
    stores = _load("passage_stores.json")
    if stores:
        out.append(f"### Passage stores (`{stores['command']}`)\n")
        out.append(store_table(stores) + "\n")
    allr = _load("pubmedqa_all.json")
    if allr:
        out.append(f"`{allr['command']}`\n")
        out.append(retrieval(allr) + "\n")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

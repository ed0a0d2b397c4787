"""Is adapter B's evidence selection really better than adapter A's? A paired bootstrap.

Reruns one METEORA benchmark method (default ``meteora-no-expansion``, i.e. window 0) on
the PubMedQA test questions for two rationale generators — normally from the rationale
cache, so nothing is regenerated — checks that each reproduces the committed results
file, then resamples the questions (same resample for both) and reports the difference
in the benchmark's F1 (``2PR/(P+R)`` of the mean precision and recall) with a 95 %
interval and the share of resamples where B is not better. Writes
``results/paired_bootstrap_<tag>.json``.

    .venv/bin/python benchmarks/paired_bootstrap.py \\
        --a ~/.cache/meteora/adapters/smollm2-medrationale --a-results pubmedqa_test_sft.json \\
        --b ~/.cache/meteora/adapters/smollm2-medrationale-dpo --b-results pubmedqa_test_dpo.json \\
        --template med-rationale --tag sft_vs_dpo
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from meteora._io import atomic_write_json  # noqa: E402
from meteora.bench import meteora_methods  # noqa: E402,F401  (registers the METEORA methods)
from meteora.bench.pubmedqa import BenchmarkConfig, BenchmarkContext, get_runner  # noqa: E402
from meteora.metrics import per_query_set_metrics  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def per_query(adapter: str | None, template: str | None, method: str, view: str, threads: int | None):
    """Per-question (precision, recall) of ``method`` with this adapter, as the benchmark computes them."""
    options = {"generator": None, "adapter": adapter, "template": template, "n": None, "window": 1, "tau": 1.0,
               "pairing": "distinct", "include_query": True, "max_new_tokens": None, "batch_size": 8}
    ctx = BenchmarkContext(BenchmarkConfig(methods=[method], split="test", num_threads=threads, options=options))
    out = get_runner(method)(ctx)
    rows = per_query_set_metrics(ctx.data.qrels_for(view, ctx.qids), out.selections)
    p = np.array([row["precision"] for row in rows.values()])
    r = np.array([row["recall"] for row in rows.values()])
    return list(rows), p, r, out.extra


def f1(p: np.ndarray, r: np.ndarray, axis: int = -1) -> np.ndarray:
    mp, mr = p.mean(axis=axis), r.mean(axis=axis)
    return np.where(mp + mr > 0, 2 * mp * mr / np.maximum(mp + mr, 1e-12), 0.0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", required=True, help="adapter folder of generator A ('none': base model)")
    ap.add_argument("--b", required=True, help="adapter folder of generator B ('none': base model)")
    ap.add_argument("--a-results", required=True, help="committed results file of A (checked for agreement)")
    ap.add_argument("--b-results", required=True, help="committed results file of B")
    ap.add_argument("--template", default=None)
    ap.add_argument("--method", default="meteora-no-expansion")
    ap.add_argument("--view", default="evidence")
    ap.add_argument("--resamples", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--tag", required=True)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    runs = {}
    for side, adapter, results in (("A", args.a, args.a_results), ("B", args.b, args.b_results)):
        adapter = None if adapter == "none" else str(Path(adapter).expanduser())
        qids, p, r, extra = per_query(adapter, args.template, args.method, args.view, args.threads)
        committed = json.loads((RESULTS / results).read_text())["views"][args.view]["methods"][args.method]
        ours = float(f1(p, r))
        if abs(ours - committed["F1"]) > 1e-9:
            raise SystemExit(f"{side}: rerun F1 {ours:.6f} != committed {committed['F1']:.6f} in {results}; "
                             "the rationale cache or the settings differ")
        runs[side] = {"qids": qids, "p": p, "r": r, "F1": ours, "cached_rate": extra.get("cached_rate")}
    if runs["A"]["qids"] != runs["B"]["qids"]:
        raise SystemExit("the two runs scored different questions")

    rng = np.random.default_rng(args.seed)
    n = len(runs["A"]["qids"])
    idx = rng.integers(0, n, size=(args.resamples, n))
    diff = f1(runs["B"]["p"][idx], runs["B"]["r"][idx]) - f1(runs["A"]["p"][idx], runs["A"]["r"][idx])
    observed = runs["B"]["F1"] - runs["A"]["F1"]
    result = {
        "command": "python benchmarks/paired_bootstrap.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "method": args.method,
        "view": args.view,
        "n_questions": n,
        "A": {"adapter": args.a, "results": args.a_results, "F1": round(runs["A"]["F1"], 4),
              "cached_rate": runs["A"]["cached_rate"]},
        "B": {"adapter": args.b, "results": args.b_results, "F1": round(runs["B"]["F1"], 4),
              "cached_rate": runs["B"]["cached_rate"]},
        "F1_difference_B_minus_A": round(observed, 4),
        "ci95": [round(float(np.percentile(diff, 2.5)), 4), round(float(np.percentile(diff, 97.5)), 4)],
        "share_of_resamples_B_not_better": round(float(np.mean(diff <= 0)), 4),
        "resamples": args.resamples,
        "seed": args.seed,
    }
    atomic_write_json(RESULTS / f"paired_bootstrap_{args.tag}.json", result)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Is adapter B's evidence selection really better than adapter A's? A paired bootstrap.

Reruns one METEORA benchmark method (default ``meteora-no-expansion``, i.e. window 0) on
the PubMedQA test questions for two rationale generators — normally from the rationale
cache, so nothing is regenerated — checks that each reproduces the committed results
file, then resamples the questions (same resample for both, with
:func:`meteora.metrics.paired_bootstrap_f1`) and reports the difference in the
benchmark's F1 (``2PR/(P+R)`` of the mean precision and recall) with a 95 % interval and
the share of resamples where B is not better. Writes ``results/paired_bootstrap_<tag>.json``.

It compares one method across two rationale generators (two runs). To compare two
methods of one run (e.g. a METEORA method against a fixed-k baseline), use the
benchmark's own ``--compare A:B`` instead (``meteora bench pubmedqa --methods ...
--compare A:B``), which writes the same test into the results file.

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

from meteora.bench.config import BenchmarkConfig
from meteora.bench.context import BenchmarkContext
from meteora.bench.methods import get_runner
from meteora.bench.report import write_results_json
from meteora.selection.selector_settings import SelectorSettings
from meteora.set_metrics import paired_bootstrap_f1, set_metrics
from meteora.settings import apply_thread_setting

RESULTS = Path(__file__).resolve().parent / "results"




def selections(adapter: str | None, template: str | None, method: str, view: str, threads: int | None):
    """The qrels of ``view`` and what ``method`` selects per question with this adapter,
    as the benchmark runs and scores them."""
    options = {"generator": None, "adapter": adapter, "template": template, "n": None,
               "include_query": True, "max_new_tokens": None, "batch_size": 8}
    selector = SelectorSettings(window=1, tau=1.0, pairing="distinct")
    ctx = BenchmarkContext(
        BenchmarkConfig(methods=[method], split="test", num_threads=threads, options=options, selector=selector)
    )
    out = get_runner(method)(ctx)
    qrels = ctx.data.qrels_for(view, ctx.qids)
    return qrels, {q: out.selections.get(q, []) for q in qrels}, out.extra


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
    apply_thread_setting(args.threads)  # torch threads: process-wide, set at the start

    runs = {}
    for side, adapter, results in (("A", args.a, args.a_results), ("B", args.b, args.b_results)):
        adapter = None if adapter == "none" else str(Path(adapter).expanduser())
        qrels, sel, extra = selections(adapter, args.template, args.method, args.view, args.threads)
        committed = json.loads((RESULTS / results).read_text())["views"][args.view]["methods"][args.method]
        ours = set_metrics(qrels, sel)["F1"]
        if abs(ours - committed["F1"]) > 1e-9:
            raise SystemExit(f"{side}: rerun F1 {ours:.6f} != committed {committed['F1']:.6f} in {results}; "
                             "the rationale cache or the settings differ")
        runs[side] = {"qrels": qrels, "selections": sel, "F1": ours, "cached_rate": extra.get("cached_rate")}
    if runs["A"]["qrels"] != runs["B"]["qrels"]:
        raise SystemExit("the two runs scored different questions")

    # F1(B) - F1(A): B is the first argument, so "not better" is about B
    test = paired_bootstrap_f1(
        runs["A"]["qrels"], runs["B"]["selections"], runs["A"]["selections"], resamples=args.resamples, seed=args.seed
    )
    result = {
        "command": "python benchmarks/paired_bootstrap.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "method": args.method,
        "view": args.view,
        "n_questions": test["n_queries"],
        "A": {"adapter": args.a, "results": args.a_results, "F1": round(runs["A"]["F1"], 4),
              "cached_rate": runs["A"]["cached_rate"]},
        "B": {"adapter": args.b, "results": args.b_results, "F1": round(runs["B"]["F1"], 4),
              "cached_rate": runs["B"]["cached_rate"]},
        "F1_difference_B_minus_A": test["difference"],
        "ci95": test["ci95"],
        "share_of_resamples_B_not_better": test["share_not_better"],
        "resamples": args.resamples,
        "seed": args.seed,
    }
    write_results_json(RESULTS / f"paired_bootstrap_{args.tag}.json", result)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

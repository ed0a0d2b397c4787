"""Evaluate retrieval and METEORA selection on the PubMedQA chunk-retrieval benchmark.

Runs BM25, dense, hybrid and query-only METEORA selection on the first ``--limit``
questions of the official test split and prints the ranking and set metrics (evidence
view: the chunks labelled RESULTS; abstract view: any chunk of the right abstract).
Results go to a temporary folder unless ``--out`` is given. The first run encodes the
3,358 corpus chunks (minutes on a CPU; cached under ``$METEORA_HOME/embeddings``).

    python examples/evaluate_pubmedqa.py --limit 20
    python examples/evaluate_pubmedqa.py --limit 500 --out runs/pubmedqa   # the full test split

The data folder comes from ``$METEORA_DATA_DIR`` or ``../shared/data``.
"""

from __future__ import annotations

import argparse
import tempfile

from meteora.bench.config import BenchmarkConfig
from meteora.bench.pubmedqa import format_results, run_benchmark
from meteora.settings import apply_thread_setting

DEFAULT_METHODS = "bm25,dense,hybrid,meteora-query-only"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=20, help="test questions (default 20)")
    parser.add_argument("--methods", default=DEFAULT_METHODS, help=f"comma-separated (default {DEFAULT_METHODS})")
    parser.add_argument("--out", default=None, help="results folder (default: a temporary one)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: $METEORA_NUM_THREADS)")
    args = parser.parse_args()
    apply_thread_setting(args.threads)  # torch threads: process-wide, set at the start

    with tempfile.TemporaryDirectory(prefix="meteora-pubmedqa-") as tmp:
        config = BenchmarkConfig(
            methods=[m.strip() for m in args.methods.split(",") if m.strip()],
            split="test",
            limit=args.limit,
            out_dir=args.out or tmp,
            num_threads=args.threads,
            plot=False,
        )
        results = run_benchmark(config, command=None, write=True)
        print(format_results(results))
        print(f"\n{results['dataset']['queries']} questions, {results['total_seconds']:.1f} s; results in {config.out_dir}")


if __name__ == "__main__":
    main()

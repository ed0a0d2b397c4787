"""Collect the SmolLM2 DPO experiment into one results file.

Reads what ``benchmarks/dpo_smollm2.sh`` produced — the preference-pair stats
(``<pairs>.stats.json``), the DPO adapter's ``meteora_training.json`` (settings, loss
and implicit-reward curve) and the PubMedQA results of the DPO adapter — next to the
committed results of the SFT adapter, base SmolLM2 and query-only, and writes
``results/dpo_smollm2.json`` with the evidence-view F1 at window 0 (the issue's
headline) for each. It computes nothing new.

    .venv/bin/python benchmarks/dpo_smollm2.py --pairs ~/.cache/meteora/dpo/pairs_train_evidence.jsonl \\
        --adapter ~/.cache/meteora/adapters/smollm2-medrationale-dpo
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from meteora.bench.report import write_results_json

RESULTS = Path(__file__).resolve().parent / "results"
KEYS = ("precision", "recall", "F1", "mean_chunks")




# (row label, results file, method name); window 0 = "meteora-no-expansion" / "-query-only-w0"
ROWS = [
    ("query-only (no LM)", "pubmedqa_test.json", "meteora-query-only-w0"),
    ("base SmolLM2, chat template (library default)", "pubmedqa_test.json", "meteora-no-expansion"),
    ("base SmolLM2, med-rationale template", "pubmedqa_test_base-medrationale.json", "meteora-no-expansion"),
    ("SFT adapter", "pubmedqa_test_sft.json", "meteora-no-expansion"),
    ("SFT + DPO adapter", "pubmedqa_test_dpo.json", "meteora-no-expansion"),
    ("dense top-3 (best fixed k)", "pubmedqa_test.json", "dense@3"),
]


def _row(path: Path, method: str, view: str) -> dict:
    data = json.loads(path.read_text())
    m = data["views"][view]["methods"][method]
    row = {k: round(m[k], 4) for k in KEYS if k in m}
    if "fallback_rate" in m:
        row["fallback_rate"] = round(m["fallback_rate"], 4)
    return row


def table(results: Path = RESULTS) -> dict:
    """Evidence F1 at w=0 (and abstract-view figures) for every row of :data:`ROWS`."""
    out: dict = {}
    for label, fname, method in ROWS:
        path = results / fname
        out[label] = {
            "file": fname,
            "method": method,
            "evidence": _row(path, method, "evidence"),
            "abstract": _row(path, method, "abstract"),
        }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", required=True, help="the pairs file written by `meteora train pairs`")
    ap.add_argument("--adapter", required=True, help="the adapter folder written by `meteora train dpo`")
    args = ap.parse_args()
    pairs = Path(args.pairs).expanduser()
    stats = json.loads(pairs.with_suffix(".stats.json").read_text())["stats"]
    training = json.loads((Path(args.adapter).expanduser() / "meteora_training.json").read_text())
    keep = ("kind", "template", "settings", "data", "reference", "global_step", "epochs", "final_loss",
            "train_loss", "losses", "log_history", "seconds", "versions")
    result = {
        "command": "bash benchmarks/dpo_smollm2.sh",
        "what": "SmolLM2-135M-Instruct: DPO on PubMedQA train questions on top of the med-rationale SFT adapter, "
        "preferences from the evidence view (RESULTS chunks hit by the selection at window 0); "
        "evaluated on the 500 official test questions",
        "notes": [
            "PubMedQA rows: hybrid top-50 candidates, the query kept as an anchor rationale, window 0 "
            "('meteora-no-expansion'); query-only is the same selector with the query as the only rationale.",
            "Pairs are built without the query anchor (so ties do not hide the rationales' effect); the test "
            "evaluation uses the benchmark's default (with the anchor), as the SFT figures do.",
            "fallback_rate = share of test questions where no generated rationale survived parsing and filtering.",
        ],
        "pairs": stats,
        "training": {k: training.get(k) for k in keep if k in training},
        "pubmedqa_test_w0": table(),
    }
    bootstrap = RESULTS / "paired_bootstrap_sft_vs_dpo.json"
    if bootstrap.exists():
        result["sft_vs_dpo_paired_bootstrap"] = json.loads(bootstrap.read_text())
    write_results_json(RESULTS / "dpo_smollm2.json", result)
    for label, row in result["pubmedqa_test_w0"].items():
        ev = row["evidence"]
        print(f"{label:50s} evidence F1 {ev['F1']:.3f}  chunks {ev['mean_chunks']:.2f}  fallback {ev.get('fallback_rate', '-')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

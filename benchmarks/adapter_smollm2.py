"""Collect the SmolLM2 med-rationale adapter experiment into one results file.

Reads what ``benchmarks/adapter_smollm2.sh`` produced — the adapter's
``meteora_training.json`` (settings, loss curve), ``results/adapter_eval_smollm2.json``
(perplexity base → adapter) and the PubMedQA results of the adapter, the base model on
the same template, the base model on its default chat template, and query-only — and
writes ``results/adapter_smollm2_medrationale.json``. It computes nothing new.

    .venv/bin/python benchmarks/adapter_smollm2.py --adapter ~/.cache/meteora/adapters/smollm2-medrationale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from meteora.bench.report import write_results_json

RESULTS = Path(__file__).resolve().parent / "results"
KEYS = ("precision", "recall", "F1", "mean_chunks", "NDCG@10", "Recall@10")




def _methods(path: Path, names: list[str], prefix: str) -> dict:
    data = json.loads(path.read_text())
    out = {"command": data["command"]}
    for view in ("abstract", "evidence"):
        for name in names:
            m = data["views"][view]["methods"].get(name)
            if m is not None:
                row = {k: round(m[k], 4) for k in KEYS if k in m}
                for extra in ("fallback_rate", "mean_rationales", "generation_seconds"):
                    if extra in m:
                        row[extra] = round(m[extra], 4)
                out.setdefault(view, {})[f"{prefix}{name}"] = row
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adapter", required=True, help="the adapter folder written by `meteora train sft`")
    args = ap.parse_args()
    training = json.loads((Path(args.adapter).expanduser() / "meteora_training.json").read_text())
    evaluation = json.loads((RESULTS / "adapter_eval_smollm2.json").read_text())
    result = {
        "command": "bash benchmarks/adapter_smollm2.sh",
        "what": "SmolLM2-135M-Instruct + QLoRA SFT on med-rationales val, evaluated on med-rationales test "
        "(rows whose query is in val excluded) and on the PubMedQA benchmark (500 test questions)",
        "notes": [
            "The committed run called meteora.training.train_sft(...) from Python with exactly the settings of step 1 "
            "of adapter_smollm2.sh (which the CLI passes through unchanged); the perplexity JSON was written to /tmp "
            "and copied to results/adapter_eval_smollm2.json.",
            "Perplexity: both models loaded in 4-bit NF4; 300 test rows after dropping duplicates and the 113 rows "
            "whose query also appears in the training file (val.jsonl).",
            "PubMedQA: 500 official test questions, hybrid top-50 candidates, the query kept as an anchor rationale; "
            "'meteora' = window 1, 'meteora-no-expansion' = window 0. fallback_rate = share of questions where no "
            "generated rationale survived parsing and filtering.",
        ],
        "training": {k: training.get(k) for k in ("kind", "template", "settings", "data", "global_step", "epochs", "final_loss", "train_loss", "losses", "seconds", "versions") if k in training},
        "perplexity": {
            "command": evaluation.get("command"),
            "base": evaluation["base"],
            "adapter": evaluation["adapter"],
            "perplexity_ratio": evaluation.get("perplexity_ratio"),
        },
        "pubmedqa_test": {
            "adapter (med-rationale template)": _methods(RESULTS / "pubmedqa_test_sft.json", ["meteora", "meteora-no-expansion"], ""),
            "base (med-rationale template)": _methods(
                RESULTS / "pubmedqa_test_base-medrationale.json", ["meteora", "meteora-no-expansion"], ""
            ),
            "base (chat template, the default) and query-only": _methods(
                RESULTS / "pubmedqa_test.json",
                ["meteora", "meteora-no-expansion", "meteora-query-only", "meteora-query-only-w0"],
                "",
            ),
        },
    }
    write_results_json(RESULTS / "adapter_smollm2_medrationale.json", result)
    print(json.dumps(result["perplexity"], indent=1)[:800])
    return 0


if __name__ == "__main__":
    sys.exit(main())

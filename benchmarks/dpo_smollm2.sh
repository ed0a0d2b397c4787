#!/usr/bin/env bash
# DPO for the SmolLM2-135M med-rationale adapter (issue 4), end to end on CPU.
# Needs the SFT adapter of benchmarks/adapter_smollm2.sh. Writes
# benchmarks/results/dpo_smollm2.json. About 1 h 45 min on 2 cores (measured: pairs 68 min on one thread, DPO 18 min, test generation 13 min).
set -euo pipefail
cd "$(dirname "$0")/.."
M=.venv/bin/meteora
H=${METEORA_HOME:-$HOME/.cache/meteora}
SFT=$H/adapters/smollm2-medrationale
DPO=$H/adapters/smollm2-medrationale-dpo
PAIRS=$H/dpo/pairs_train_evidence.jsonl
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# 1. preference pairs on the 500 PubMedQA train questions: 4 sampled rationale sets per
#    question from the SFT adapter, scored by the evidence-view F1 of their selection
#    (window 0), best vs worst when they differ by >= 0.1
$M train pairs --adapter "$SFT" --template med-rationale --samples 4 --view evidence \
    --out "$PAIRS" --threads 1
# 2. DPO on top of the SFT adapter (its frozen copy is the reference); beta 0.05,
#    cosine schedule, warmup 0.1 (the spec's). For the CPU budget: 1 epoch instead of 3,
#    4 pairs per step, and lr 5e-5 instead of 3e-5 (fewer steps)
$M train dpo --base smollm2 --sft-adapter "$SFT" --pairs "$PAIRS" --out "$DPO" \
    --epochs 1 --lr 5e-5 --batch-size 2 --grad-accum 2 --logging-steps 2 --save-steps 10 --threads 2
# 3. the DPO adapter's rationales on the 500 test questions (same settings as the SFT run)
$M bench pubmedqa --split test --methods meteora,meteora-no-expansion --adapter "$DPO" \
    --template med-rationale --threads 2 --tag dpo --no-plot
# 4. is DPO's change real? paired bootstrap over the test questions, SFT vs DPO (cached rationales)
.venv/bin/python benchmarks/paired_bootstrap.py --a "$SFT" --a-results pubmedqa_test_sft.json \
    --b "$DPO" --b-results pubmedqa_test_dpo.json --template med-rationale --tag sft_vs_dpo --threads 2
# 5. one file: pairs stats, DPO training curve, evidence F1 at w=0 for base / SFT / DPO / query-only
.venv/bin/python benchmarks/dpo_smollm2.py --pairs "$PAIRS" --adapter "$DPO"

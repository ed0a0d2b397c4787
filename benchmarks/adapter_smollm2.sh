#!/usr/bin/env bash
# The SmolLM2-135M med-rationale adapter experiment (issue 4), end to end on CPU.
# Writes benchmarks/results/adapter_smollm2_medrationale.json. About 1.5 h on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
M=.venv/bin/meteora
D=${METEORA_DATA_DIR:-../shared/data}/med-rationales
A=${METEORA_HOME:-$HOME/.cache/meteora}/adapters/smollm2-medrationale
export OMP_NUM_THREADS=1
# 1. QLoRA SFT: 4-bit NF4, LoRA r=16/alpha=32/dropout 0.05 on q,v; 40 steps x 16 rows
#    (CPU time cap; rerunning resumes from the last checkpoint)
$M train sft --base smollm2 --data "$D/val.jsonl" --out "$A" --max-steps 40 --batch-size 8 \
    --grad-accum 2 --max-length 256 --save-steps 10 --logging-steps 5 --threads 1
# 2. base vs adapter perplexity on 300 test rows whose query is not in the training file
$M eval adapter --base smollm2 --adapter "$A" --data "$D/test.jsonl" --load-in-4bit \
    --max-examples 300 --exclude-queries-from "$D/val.jsonl" --threads 1 \
    --out benchmarks/results/adapter_eval_smollm2.json
# 3. effect on the PubMedQA benchmark: adapter vs base, same template (med-rationale)
$M bench pubmedqa --split test --methods meteora,meteora-no-expansion --adapter "$A" \
    --template med-rationale --threads 1 --tag sft --no-plot
$M bench pubmedqa --split test --methods meteora,meteora-no-expansion \
    --template med-rationale --threads 1 --tag base-medrationale --no-plot
# 4. one file with all of it
.venv/bin/python benchmarks/adapter_smollm2.py --adapter "$A"

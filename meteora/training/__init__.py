"""Training rationale adapters: data builders, QLoRA SFT and DPO.

Needs the ``train`` extra (``pip install "meteora-rerank[train]"``: peft, trl,
bitsandbytes, accelerate, datasets). Importing this package is cheap; the heavy
libraries load when a training function runs.

Example:
    >>> from meteora.training import SFTSettings, train_sft, load_rationale_sft  # doctest: +SKIP
    >>> ds = load_rationale_sft("../shared/data/med-rationales/val.jsonl")  # doctest: +SKIP
    >>> train_sft("smollm2", ds, "adapters/smollm2-med", SFTSettings(max_steps=100))  # doctest: +SKIP
"""

from __future__ import annotations

from meteora.training.collate import build_sft_features
from meteora.training.data import (
    RationaleExample,
    RowProblem,
    SFTDataset,
    cot_examples,
    load_preference_pairs,
    load_rationale_sft,
    pubmedqa_alpaca_examples,
    read_jsonl,
    split_pairs,
    write_jsonl_atomic,
)
from meteora.training.dpo import DPOSettings, train_dpo
from meteora.training.preferences import (
    PreferenceBuildResult,
    build_preference_pairs,
    hit_score,
    write_preference_pairs,
)
from meteora.training.sft import SFTSettings, TrainingSettings, TrainResult, train_sft

__all__ = [
    "build_sft_features",
    "RationaleExample",
    "RowProblem",
    "SFTDataset",
    "cot_examples",
    "load_preference_pairs",
    "load_rationale_sft",
    "pubmedqa_alpaca_examples",
    "read_jsonl",
    "split_pairs",
    "write_jsonl_atomic",
    "DPOSettings",
    "PreferenceBuildResult",
    "build_preference_pairs",
    "hit_score",
    "write_preference_pairs",
    "train_dpo",
    "SFTSettings",
    "TrainingSettings",
    "TrainResult",
    "train_sft",
]

"""Training rationale adapters: data builders, QLoRA SFT and DPO, adapter perplexity.

Needs the ``train`` extra (``pip install "meteora-rerank[train]"``: peft, trl,
bitsandbytes, accelerate, datasets). Importing this package is cheap; the heavy
libraries load when a training function runs.

Example:
    >>> from meteora.training import SFTSettings, train_sft, load_rationale_sft  # doctest: +SKIP
    >>> ds = load_rationale_sft("../shared/data/med-rationales/val.jsonl")  # doctest: +SKIP
    >>> train_sft("smollm2", ds, "adapters/smollm2-med", SFTSettings(max_steps=100))  # doctest: +SKIP
"""

from __future__ import annotations

from meteora.training.adapter_eval import evaluate_adapter
from meteora.training.dpo import DPOSettings, train_dpo
from meteora.training.dpo_pairs import load_preference_pairs, split_pairs, write_preference_pairs
from meteora.training.preferences import PreferenceBuildResult, build_preference_pairs
from meteora.training.pubmedqa_examples import cot_examples, pubmedqa_alpaca_examples
from meteora.training.rationale_sft import RationaleExample, SFTDataset, load_rationale_sft
from meteora.training.run import TrainResult
from meteora.training.settings import TrainingSettings
from meteora.training.sft import SFTSettings, train_sft

__all__ = [
    "RationaleExample",
    "SFTDataset",
    "load_rationale_sft",
    "pubmedqa_alpaca_examples",
    "cot_examples",
    "load_preference_pairs",
    "split_pairs",
    "PreferenceBuildResult",
    "build_preference_pairs",
    "write_preference_pairs",
    "TrainingSettings",
    "SFTSettings",
    "TrainResult",
    "train_sft",
    "DPOSettings",
    "train_dpo",
    "evaluate_adapter",
]

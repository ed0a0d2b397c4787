"""DPO on rationale preference pairs, on top of an SFT adapter or a base model.

METEORA's DPO stage (METEORA.md, "Training the rationale model"): pairs of rationale
sets for the same query, the *chosen* one leading the evidence selector to gold chunks
and the *rejected* one not; β = 0.05, lr 3e-5 with a cosine schedule, warmup 0.1,
3 epochs, an 80/10/10 split (:func:`meteora.training.data.split_pairs`).

:func:`train_dpo` uses TRL's ``DPOTrainer`` with the same 4-bit + LoRA setup, output
layout, checkpointing and resume rules as :func:`meteora.training.sft.train_sft` (both
on :mod:`meteora.training.run`). Given
``sft_adapter`` it keeps training that adapter, with a frozen copy of it as the
reference policy; without one it trains a fresh LoRA on the base, and the base (adapter
disabled) is the reference. Tested with TRL 1.16 (``trl>=1.16,<1.17``).

Example:
    >>> from meteora.training import DPOSettings, train_dpo
    >>> r = train_dpo("smollm2", "pairs_train.jsonl", "adapters/smollm2-dpo",  # doctest: +SKIP
    ...               DPOSettings(max_steps=100), sft_adapter="adapters/smollm2-med")
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meteora.errors import InvalidInputError, TrainingDataError
from meteora.training.run import (
    TrainResult,
    begin_training,
    load_base,
    make_trainer,
    prepare_run,
    train_and_save,
    trainer_args,
)
from meteora.training.settings import TrainingSettings

__all__ = ["DPOSettings", "train_dpo"]

_LOSS_TYPES = (
    "sigmoid",
    "hinge",
    "ipo",
    "robust",
    "bco_pair",
    "sppo_hard",
    "apo_zero",
    "apo_down",
    "sigmoid_norm",
)


@dataclass
class DPOSettings(TrainingSettings):
    """DPO settings (the paper's defaults) plus the shared 4-bit/LoRA/checkpoint settings.

    Attributes:
        beta: strength of the pull towards the reference policy (0.05).
        loss_type: TRL DPO loss (``"sigmoid"`` is the original DPO loss).

    Example:
        >>> s = DPOSettings()
        >>> (s.beta, s.learning_rate, s.lr_scheduler, s.warmup_ratio, s.num_epochs)
        (0.05, 3e-05, 'cosine', 0.1, 3.0)
    """

    learning_rate: float = 3e-5
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.1
    batch_size: int = 2
    grad_accum: int = 4
    max_length: int = 384
    beta: float = 0.05
    loss_type: str = "sigmoid"

    def validate(self) -> None:
        """Check the shared settings and the DPO ones."""
        super().validate()
        if not isinstance(self.beta, (int, float)) or isinstance(self.beta, bool) or self.beta <= 0:
            raise InvalidInputError(f"beta must be a positive number, got {self.beta!r}")
        if self.loss_type not in _LOSS_TYPES:
            raise InvalidInputError(
                f"loss_type must be one of {_LOSS_TYPES}, got {self.loss_type!r}"
            )


def _pairs_from(
    pairs: Any, settings: DPOSettings, tokenizer: Any
) -> tuple[list[dict[str, str]], dict[str, Any]]:
    from meteora.training.dpo_pairs import load_preference_pairs
    from meteora.training.jsonl import file_sha256

    info: dict[str, Any] = {}
    if isinstance(pairs, (str, os.PathLike)):
        path = Path(pairs).expanduser()
        rows = load_preference_pairs(
            path, template=settings.template, n=settings.n_rationales, tokenizer=tokenizer
        )
        info.update(path=str(path.resolve()), sha256=file_sha256(path))
    elif isinstance(pairs, Sequence) and not isinstance(pairs, (str, bytes)):
        rows = []
        for i, row in enumerate(pairs, start=1):
            if not isinstance(row, Mapping) or not all(
                isinstance(row.get(k), str) for k in ("prompt", "chosen", "rejected")
            ):
                raise TrainingDataError(
                    f"preference pair {i} must have string 'prompt', 'chosen' and 'rejected'"
                )
            if row["chosen"].strip() == row["rejected"].strip():
                raise TrainingDataError(
                    f"preference pair {i}: 'chosen' and 'rejected' are identical"
                )
            rows.append(
                {"prompt": row["prompt"], "chosen": row["chosen"], "rejected": row["rejected"]}
            )
    else:
        raise InvalidInputError(
            f"pairs must be a JSONL path or a list of {{'prompt', 'chosen', 'rejected'}} dicts, got {type(pairs).__name__}"
        )
    if not rows:
        raise TrainingDataError("no preference pairs")
    blob = json.dumps(rows, ensure_ascii=False, sort_keys=True).encode("utf-8")
    info.update(pairs_sha256=hashlib.sha256(blob).hexdigest(), n_pairs=len(rows))
    return rows, info


def train_dpo(
    base_model: str | os.PathLike[str],
    pairs: Any,
    out_dir: str | os.PathLike[str],
    settings: DPOSettings | None = None,
    *,
    sft_adapter: str | os.PathLike[str] | None = None,
    resume: bool = True,
    callbacks: Sequence[Any] = (),
) -> TrainResult:
    """Train a rationale adapter with DPO on preference pairs; save it to ``out_dir``.

    Args:
        base_model: local folder, hub id, or ``"smollm2"``.
        pairs: a JSONL file for :func:`~meteora.training.data.load_preference_pairs`
            (``prompt`` or ``query``, ``chosen``, ``rejected``), or a list of
            ``{"prompt", "chosen", "rejected"}`` dicts with rendered prompts.
        out_dir: output folder (same layout as :func:`~meteora.training.sft.train_sft`).
        settings: :class:`DPOSettings`.
        sft_adapter: continue this SFT adapter (its frozen copy is the reference);
            ``None`` trains a fresh LoRA against the base model.
        resume: continue from the last matching checkpoint.
        callbacks: extra ``transformers.TrainerCallback`` objects.

    Raises:
        DataNotFoundError / TrainingDataError: missing or bad pairs file.
        InvalidInputError: bad settings, or an adapter that does not fit the base.

    Example:
        >>> train_dpo("smollm2", pairs, "out/dpo", DPOSettings(max_steps=2))  # doctest: +SKIP
    """
    settings = settings or DPOSettings()
    trl = begin_training(settings, "DPO training")

    run = load_base(base_model, pairs, "preference pairs file", out_dir, settings, sft_adapter)
    rows, data_info = _pairs_from(pairs, settings, run.tokenizer)
    model, peft_config, ckpt_dir, resume_from = prepare_run(
        "dpo", run, settings, sft_adapter, data_info, resume
    )
    args = trainer_args(settings, ckpt_dir, run.use_cuda, run.precision, trl.DPOConfig)
    config = trl.DPOConfig(**args, beta=float(settings.beta), loss_type=[settings.loss_type])
    trainer = make_trainer(trl.DPOTrainer, model, config, rows, run, peft_config, callbacks, ref_model=None)
    return train_and_save(
        kind="dpo",
        run=run,
        trainer=trainer,
        settings=settings,
        adapter=sft_adapter,
        template=settings.template,
        data_info=data_info,
        resume_from=resume_from,
        n_examples=len(rows),
        extra_metadata={
            "reference": "sft adapter (frozen copy)"
            if sft_adapter
            else "base model (adapter disabled)"
        },
        selected_adapters=["default"],
    )

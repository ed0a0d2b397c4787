"""QLoRA supervised fine-tuning of a rationale adapter (4-bit NF4 base + LoRA).

The recipe of the medical rationale adapter (see METEORA.md, "Training the rationale
model"): 4-bit NF4 quantisation, LoRA r=16, alpha=32, dropout 0.05, lr 2e-4, 3 epochs,
loss on the response only, EOS learned. :func:`train_sft` runs it with TRL's
``SFTTrainer`` on features built by :func:`meteora.training.collate.build_sft_features`
(prompt tokens labelled ``-100``, EOS appended and labelled), so the masking is exactly
what the tests check.

Output layout of ``out_dir``::

    adapter_config.json, adapter_model.safetensors   the PEFT adapter
    tokenizer files                                  the tokenizer (pad != eos)
    meteora_training.json                            base, template, settings, steps, loss, data sha256
    checkpoints/checkpoint-N/                        trainer checkpoints every save_steps
    checkpoints/meteora_run.json                     fingerprint checked before resuming

The final adapter is written to a temporary sibling folder and renamed into place, so
``out_dir`` never holds a half-written adapter. ``resume=True`` continues from the last
checkpoint after an interruption and ends at the same global step as an uninterrupted
run.

Tested against TRL 1.16 (``trl>=1.16,<1.17``), PEFT 0.21, transformers 5.23,
bitsandbytes 0.50 (its CPU backend runs 4-bit training without a GPU). TRL renames
arguments between releases; this module uses ``SFTConfig(max_length=...)`` and passes
pre-tokenised ``input_ids``/``labels``, which TRL trains on as given.

Example:
    >>> from meteora.training import SFTSettings, train_sft
    >>> result = train_sft(  # doctest: +SKIP
    ...     "smollm2", "../shared/data/med-rationales/val.jsonl", "adapters/smollm2-med",
    ...     SFTSettings(max_steps=200, batch_size=8, grad_accum=2),
    ... )
    >>> result.global_step  # doctest: +SKIP
    200
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meteora.errors import DataNotFoundError, InvalidInputError, TrainingDataError
from meteora.training.run import (
    TrainResult,
    begin_training,
    load_base,
    make_trainer,
    prepare_run,
    train_and_save,
    trainer_args,
)
from meteora.training.settings import (
    TrainingSettings,
)

__all__ = ["SFTSettings", "train_sft", "build_sft_dataset"]

logger = logging.getLogger(__name__)


@dataclass
class SFTSettings(TrainingSettings):
    """QLoRA SFT settings; the defaults are the medical rationale adapter's recipe.

    Example:
        >>> s = SFTSettings(max_steps=10, target_modules="all-attn")
        >>> s.validate()
        >>> (s.lora_r, s.lora_alpha, s.learning_rate, s.num_epochs)
        (16, 32, 0.0002, 3.0)
    """



# --------------------------------------------------------------------------- data


def _pairs_from(
    data: Any, settings: TrainingSettings, tokenizer: Any
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Normalise ``data`` into prompt/completion pairs; return them with a data record."""
    from meteora.training.rationale_sft import SFTDataset, load_rationale_sft

    info: dict[str, Any] = {}
    if isinstance(data, (str, os.PathLike)):
        path = Path(data).expanduser()
        if not path.is_file():
            raise DataNotFoundError(
                f"training data file {str(path)!r} does not exist; check the path"
            )
        first = next((ln for ln in path.open(encoding="utf-8", errors="replace") if ln.strip()), "")
        try:
            keys = set(json.loads(first)) if first else set()
        except json.JSONDecodeError:
            keys = set()
        if {"prompt", "completion"} <= keys:
            from meteora.training.jsonl import read_jsonl

            rows = read_jsonl(path)
            from meteora.training.jsonl import file_sha256

            info.update(
                path=str(path.resolve()), sha256=file_sha256(path), format="prompt-completion"
            )
            data = rows
        else:
            data = load_rationale_sft(path)
    if isinstance(data, SFTDataset):
        info.update(
            path=str(data.path.resolve()) if data.path else None,
            sha256=data.sha256,
            format="med-rationale",
            rejected_rows=len(data.rejected),
            duplicate_rows=len(data.duplicates),
        )
        pairs = data.pairs(settings.template, n=settings.n_rationales, tokenizer=tokenizer)
    elif isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        pairs = []
        for i, row in enumerate(data, start=1):
            if not isinstance(row, Mapping) or "prompt" not in row or "completion" not in row:
                raise TrainingDataError(
                    f"training example {i} must be a mapping with 'prompt' and 'completion'"
                )
            pairs.append({"prompt": row["prompt"], "completion": row["completion"]})
        info.setdefault("format", "prompt-completion")
    else:
        raise InvalidInputError(
            f"data must be a file path, an SFTDataset or a list of {{'prompt', 'completion'}} dicts, "
            f"got {type(data).__name__}"
        )
    if not pairs:
        raise TrainingDataError("no training examples")
    blob = json.dumps(pairs, ensure_ascii=False, sort_keys=True).encode("utf-8")
    info["pairs_sha256"] = hashlib.sha256(blob).hexdigest()
    return pairs, info


def build_sft_dataset(
    pairs: Sequence[Mapping[str, Any]], tokenizer: Any, max_length: int
) -> tuple[list[dict[str, list[int]]], dict[str, int]]:
    """Tokenise prompt/completion pairs into trainer features (response-only labels, EOS).

    Returns the features (``input_ids`` and ``labels``) and counts: ``n_truncated``
    (lost the end of the response, possibly the EOS) and ``n_dropped`` (prompt alone
    filled ``max_length``; dropped).
    """
    from meteora.training.collate import build_sft_features

    features: list[dict[str, list[int]]] = []
    truncated = dropped = 0
    for pair in pairs:
        f = build_sft_features(tokenizer, pair["prompt"], pair["completion"], max_length)
        if f["n_completion_tokens"] == 0:
            dropped += 1
            continue
        truncated += int(f["truncated"])
        features.append({"input_ids": f["input_ids"], "labels": f["labels"]})
    if truncated:
        logger.warning(
            "%d of %d examples are longer than max_length=%d and were truncated (their EOS is lost); "
            "raise max_length to keep them whole",
            truncated,
            len(pairs),
            max_length,
        )
    if dropped:
        logger.warning(
            "%d examples dropped: their prompt alone fills max_length=%d", dropped, max_length
        )
    if not features:
        raise TrainingDataError(
            f"no example fits in max_length={max_length} tokens; raise max_length"
        )
    return features, {"n_truncated": truncated, "n_dropped": dropped}


# --------------------------------------------------------------------------- SFT


def train_sft(
    base_model: str | os.PathLike[str],
    data: Any,
    out_dir: str | os.PathLike[str],
    settings: SFTSettings | None = None,
    *,
    adapter: str | os.PathLike[str] | None = None,
    resume: bool = True,
    callbacks: Sequence[Any] = (),
    extra_metadata: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Fine-tune a LoRA adapter on ``data`` with QLoRA; save it to ``out_dir``.

    Args:
        base_model: local folder, hub id, or ``"smollm2"`` for the offline default.
        data: a med-rationale JSONL file (validated by
            :func:`~meteora.training.data.load_rationale_sft`), a JSONL file of
            ``{"prompt", "completion"}``, an :class:`~meteora.training.data.SFTDataset`,
            or a list of ``{"prompt", "completion"}`` dicts (completions without EOS;
            prompts may be chat message lists).
        out_dir: where the adapter, tokenizer, ``meteora_training.json`` and
            ``checkpoints/`` go.
        settings: :class:`SFTSettings` (defaults: the medical adapter's recipe).
        adapter: continue training this existing adapter instead of a fresh LoRA.
        resume: continue from the last checkpoint in ``out_dir/checkpoints`` if its run
            fingerprint (base, data, settings) matches; ``False`` starts over.
        callbacks: extra ``transformers.TrainerCallback`` objects.
        extra_metadata: more fields for ``meteora_training.json`` (e.g. the task and
            the source data's sha256 when ``data`` is a list built from it).

    Returns:
        A :class:`TrainResult`.

    Raises:
        DataNotFoundError: the data file does not exist.
        TrainingDataError: no usable example.
        InvalidInputError: bad settings, unknown template, target modules the model
            lacks, a mismatching adapter, or checkpoints of a different run.

    Example:
        >>> r = train_sft("smollm2", "val.jsonl", "out/adapter", SFTSettings(max_steps=5))  # doctest: +SKIP
    """
    settings = settings or SFTSettings()
    trl = begin_training(settings, "SFT training")

    run = load_base(base_model, data, "training data file", out_dir, settings, adapter)
    pairs, data_info = _pairs_from(data, settings, run.tokenizer)
    features, counts = build_sft_dataset(pairs, run.tokenizer, settings.max_length)
    data_info.update(n_pairs=len(pairs), n_examples=len(features), **counts)
    logger.info("SFT on %d examples (%d truncated)", len(features), counts["n_truncated"])

    model, peft_config, ckpt_dir, resume_from = prepare_run(
        "sft", run, settings, adapter, data_info, resume
    )
    config = trl.SFTConfig(
        **trainer_args(settings, ckpt_dir, run.use_cuda, run.precision, trl.SFTConfig),
        completion_only_loss=None,
    )
    trainer = make_trainer(trl.SFTTrainer, model, config, features, run, peft_config, callbacks)
    return train_and_save(
        kind="sft",
        run=run,
        trainer=trainer,
        settings=settings,
        adapter=adapter,
        template=settings.template if data_info.get("format") == "med-rationale" else None,
        data_info=data_info,
        resume_from=resume_from,
        n_examples=len(features),
        extra_metadata=extra_metadata,
    )


"""Settings shared by SFT and DPO: 4-bit base, LoRA, optimiser, checkpoints, prompt template.

:class:`TrainingSettings` validates itself (naming the first bad value) and round-trips
through the plain dict recorded in ``meteora_training.json``;
:func:`resolve_target_modules` turns a LoRA target preset into PEFT's form.

Example:
    >>> s = TrainingSettings(lora_r=8, target_modules="all-attn")
    >>> s.validate()
    >>> resolve_target_modules(s.target_modules)
    ['q_proj', 'k_proj', 'v_proj', 'o_proj']
    >>> TrainingSettings.from_dict(s.to_dict()) == s
    True
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from meteora.errors import InvalidInputError
from meteora.lm.loading import DOUBLE_QUANT
from meteora.rationales.templates import get_template

__all__ = ["TARGET_MODULE_PRESETS", "TrainingSettings", "resolve_target_modules"]

logger = logging.getLogger(__name__)

#: Named LoRA target-module sets. ``all-linear`` is PEFT's own preset (every linear layer but the head).
TARGET_MODULE_PRESETS: dict[str, tuple[str, ...] | str] = {
    "q-v": ("q_proj", "v_proj"),
    "qv": ("q_proj", "v_proj"),
    "all-attn": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "qkvo": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "all-linear": "all-linear",
}

_PRECISIONS = ("auto", "bf16", "fp16", "fp32")
_SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
)


def resolve_target_modules(spec: str | Sequence[str]) -> str | list[str]:
    """Turn a preset name (``"q-v"``, ``"all-attn"``, ``"all-linear"``) or module names into PEFT's form.

    Example:
        >>> resolve_target_modules("all-attn")
        ['q_proj', 'k_proj', 'v_proj', 'o_proj']
        >>> resolve_target_modules(["q_proj", "v_proj"])
        ['q_proj', 'v_proj']
    """
    if isinstance(spec, str):
        if spec in TARGET_MODULE_PRESETS:
            preset = TARGET_MODULE_PRESETS[spec]
            return preset if isinstance(preset, str) else list(preset)
        if "," in spec:
            names = [s.strip() for s in spec.split(",") if s.strip()]
        else:
            raise InvalidInputError(
                f"unknown target_modules preset {spec!r}; use one of {sorted(TARGET_MODULE_PRESETS)} "
                "or a list of module names such as ('q_proj', 'v_proj')"
            )
    else:
        names = [str(s) for s in spec]
    if not names or any(not n for n in names):
        raise InvalidInputError(f"target_modules must name at least one module, got {spec!r}")
    return names


@dataclass
class TrainingSettings:
    """Settings shared by SFT and DPO (4-bit base + LoRA, optimisation, checkpoints).

    Attributes:
        load_in_4bit: quantise the base to 4 bits (QLoRA); works on CPU with bitsandbytes >= 0.45.
        quant_type: ``"nf4"`` or ``"fp4"``.
        (bitsandbytes double quantisation is always on: one setting for training and
        inference, see :data:`meteora.lm.loading.DOUBLE_QUANT`.)
        lora_r, lora_alpha, lora_dropout: LoRA rank, scale and dropout.
        target_modules: module names, or a preset: ``"q-v"``, ``"all-attn"`` (q/k/v/o), ``"all-linear"``.
        learning_rate, lr_scheduler, warmup_ratio, weight_decay, max_grad_norm: optimiser.
        num_epochs: passes over the data (ignored when ``max_steps`` is set).
        max_steps: stop after this many optimiser steps (smoke runs, time caps).
        batch_size: examples per forward pass; grad_accum: passes per optimiser step.
        max_length: cap in tokens on prompt + response (longer examples lose their end).
        save_steps: checkpoint every N optimiser steps; save_total_limit: keep the last N.
        logging_steps: log the loss every N steps.
        seed: seeds data order, LoRA initialisation and dropout.
        template: prompt template name (must match how the adapter will be used).
        n_rationales: rationales the prompt asks for: ``None`` (template default),
            ``"count"`` (each row's own count) or an integer.
        gradient_checkpointing: ``None`` = on for CUDA, off on CPU (where memory is not the limit).
        precision: ``"auto"`` (bf16 on CUDA GPUs that support it, else fp16; fp32 on CPU),
            ``"bf16"``, ``"fp16"`` or ``"fp32"``.
        progress: show the trainer's progress bar (``None``: only on a terminal, not with
            ``-q``; see :func:`meteora.console.progress_enabled`).
        trust_remote_code: allow model code from the hub (off unless you opt in).
    """

    load_in_4bit: bool = True
    quant_type: str = "nf4"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: str | tuple[str, ...] = ("q_proj", "v_proj")
    learning_rate: float = 2e-4
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    num_epochs: float = 3.0
    max_steps: int | None = None
    batch_size: int = 4
    grad_accum: int = 4
    max_length: int = 256
    save_steps: int = 50
    save_total_limit: int | None = 2
    logging_steps: int = 10
    seed: int = 0
    template: str = "med-rationale"
    n_rationales: int | str | None = None
    gradient_checkpointing: bool | None = None
    precision: str = "auto"
    progress: bool | None = None
    trust_remote_code: bool = False

    def validate(self) -> None:
        """Raise :class:`InvalidInputError` naming the first bad value."""

        def pos_int(name: str, allow_none: bool = False) -> None:
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InvalidInputError(
                    f"{name} must be a positive integer{' or None' if allow_none else ''}, got {v!r}"
                )

        for name in ("lora_r", "batch_size", "grad_accum", "save_steps", "logging_steps"):
            pos_int(name)
        pos_int("max_steps", allow_none=True)
        pos_int("save_total_limit", allow_none=True)
        if (
            isinstance(self.max_length, bool)
            or not isinstance(self.max_length, int)
            or self.max_length < 8
        ):
            raise InvalidInputError(f"max_length must be an integer >= 8, got {self.max_length!r}")
        if not isinstance(self.lora_alpha, (int, float)) or self.lora_alpha <= 0:
            raise InvalidInputError(f"lora_alpha must be positive, got {self.lora_alpha!r}")
        if not isinstance(self.lora_dropout, (int, float)) or not 0.0 <= self.lora_dropout < 1.0:
            raise InvalidInputError(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        if not isinstance(self.learning_rate, (int, float)) or not 0.0 < self.learning_rate < 1.0:
            raise InvalidInputError(f"learning_rate must be in (0, 1), got {self.learning_rate!r}")
        if not isinstance(self.warmup_ratio, (int, float)) or not 0.0 <= self.warmup_ratio < 1.0:
            raise InvalidInputError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}")
        if not isinstance(self.weight_decay, (int, float)) or self.weight_decay < 0:
            raise InvalidInputError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if not isinstance(self.max_grad_norm, (int, float)) or self.max_grad_norm <= 0:
            raise InvalidInputError(f"max_grad_norm must be positive, got {self.max_grad_norm!r}")
        if not isinstance(self.num_epochs, (int, float)) or self.num_epochs <= 0:
            raise InvalidInputError(f"num_epochs must be positive, got {self.num_epochs!r}")
        if self.quant_type not in ("nf4", "fp4"):
            raise InvalidInputError(f"quant_type must be 'nf4' or 'fp4', got {self.quant_type!r}")
        if self.precision not in _PRECISIONS:
            raise InvalidInputError(
                f"precision must be one of {_PRECISIONS}, got {self.precision!r}"
            )
        if self.lr_scheduler not in _SCHEDULERS:
            raise InvalidInputError(
                f"lr_scheduler must be one of {_SCHEDULERS}, got {self.lr_scheduler!r}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise InvalidInputError(f"seed must be a non-negative integer, got {self.seed!r}")
        n = self.n_rationales
        if not (
            n is None or n == "count" or (isinstance(n, int) and not isinstance(n, bool) and n >= 1)
        ):
            raise InvalidInputError(
                f"n_rationales must be None, 'count' or a positive integer, got {n!r}"
            )
        resolve_target_modules(self.target_modules)
        get_template(self.template)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (recorded in ``meteora_training.json``)."""
        d = asdict(self)
        if isinstance(d["target_modules"], tuple):
            d["target_modules"] = list(d["target_modules"])
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]):
        """Build settings from a dict, rejecting unknown keys."""
        names = {f.name for f in fields(cls)}
        data = dict(data)
        legacy = data.pop("double_quant", None)  # an older setting: now always DOUBLE_QUANT
        if legacy is not None and bool(legacy) != DOUBLE_QUANT:
            logger.warning(
                "double_quant=%s is no longer a setting; 4-bit loads use double_quant=%s", legacy, DOUBLE_QUANT
            )
        unknown = sorted(set(data) - names)
        if unknown:
            raise InvalidInputError(
                f"unknown {cls.__name__} fields {unknown}; valid: {sorted(names)}"
            )
        values = dict(data)
        if isinstance(values.get("target_modules"), list):
            values["target_modules"] = tuple(values["target_modules"])
        return cls(**values)

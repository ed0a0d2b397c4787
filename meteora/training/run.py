"""Shared plumbing of the SFT and DPO runs: settings, run folder, resume, trainer arguments, LoRA.

:func:`meteora.training.sft.train_sft` and :func:`meteora.training.dpo.train_dpo` are
thin on top of this module: :func:`begin_training` validates the settings and checks
TRL, :func:`load_base` loads the base model (through :mod:`meteora.lm.transformers`),
:func:`prepare_run` fingerprints the run and sets up ``checkpoints/`` and LoRA,
:func:`train_and_save` trains and writes the adapter atomically with its
``meteora_training.json``.

Example:
    >>> TrainingSettings(lora_r=8).validate()
    >>> resolve_target_modules("q-v")
    ['q_proj', 'v_proj']
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from meteora._io import atomic_write_json, read_json
from meteora.errors import DataNotFoundError, InvalidInputError, ModelNotFoundError, require
from meteora.lm.loading import (
    DOUBLE_QUANT,
    attach_adapter,
    library_versions,
    load_causal_lm,
    precision_setup,
)
from meteora.rationales.templates import get_template
from meteora.settings import apply_thread_setting

__all__ = [
    "TESTED_TRL",
    "TARGET_MODULE_PRESETS",
    "METADATA_FILE",
    "TrainingSettings",
    "TrainResult",
    "BaseRun",
    "resolve_target_modules",
    "read_training_metadata",
    "require_data_file",
    "begin_training",
    "load_base",
    "prepare_run",
    "train_and_save",
    "trainer_args",
    "make_log_callback",
]

logger = logging.getLogger(__name__)

#: The TRL range this module is tested against.
TESTED_TRL = ">=1.16,<1.17"

#: Named LoRA target-module sets. ``all-linear`` is PEFT's own preset (every linear layer but the head).
TARGET_MODULE_PRESETS: dict[str, tuple[str, ...] | str] = {
    "q-v": ("q_proj", "v_proj"),
    "qv": ("q_proj", "v_proj"),
    "all-attn": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "qkvo": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "all-linear": "all-linear",
}

METADATA_FILE = "meteora_training.json"
RUN_FILE = "meteora_run.json"
CHECKPOINT_DIR = "checkpoints"
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


def _check_trl_version() -> None:
    trl = require("trl", "train", "adapter training")
    from packaging.version import Version

    v = Version(trl.__version__)
    if not (Version("1.16") <= v < Version("1.17")):
        logger.warning(
            "meteora.training is tested with trl%s; found trl %s", TESTED_TRL, trl.__version__
        )


# --------------------------------------------------------------------------- settings


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
        num_threads: torch CPU threads (``None``: ``$METEORA_NUM_THREADS`` or torch's default).
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
    num_threads: int | None = None
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
        pos_int("num_threads", allow_none=True)
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


@dataclass
class TrainResult:
    """What a training run produced.

    Attributes:
        out_dir: folder holding the final adapter (and ``checkpoints/``).
        kind: ``"sft"`` or ``"dpo"``.
        global_step: optimiser steps done in total (across resumptions).
        final_loss: the last logged training loss.
        train_loss: the trainer's average loss over the steps run in this call.
        losses: ``(step, loss)`` for every logged step, including those before a resume.
        resumed_from: the checkpoint this call resumed from, if any.
        seconds: wall time of this call.
        n_examples: training examples (after validation, dedupe and dropping empty ones).
        metadata: the content of ``meteora_training.json``.
    """

    out_dir: Path
    kind: str
    global_step: int
    final_loss: float | None
    train_loss: float | None
    losses: list[tuple[int, float]]
    resumed_from: str | None
    seconds: float
    n_examples: int
    metadata: dict[str, Any] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        loss = "None" if self.final_loss is None else f"{self.final_loss:.4f}"
        return (
            f"TrainResult(kind={self.kind!r}, out_dir={str(self.out_dir)!r}, global_step={self.global_step}, "
            f"final_loss={loss}, resumed_from={self.resumed_from!r})"
        )


def read_training_metadata(adapter: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``meteora_training.json`` of an adapter folder (``None`` if absent)."""
    p = Path(adapter) / METADATA_FILE
    return read_json(p) if p.is_file() else None


def require_data_file(data: Any, what: str) -> None:
    """Fail fast (before loading a model) when ``data`` is a path that does not exist."""
    if isinstance(data, (str, os.PathLike)) and not Path(data).expanduser().is_file():
        raise DataNotFoundError(f"{what} {str(data)!r} does not exist; check the path")



# --------------------------------------------------------------------------- run bookkeeping


def _fingerprint(
    kind: str, base: str, adapter: str | None, settings: TrainingSettings, data_sha: str
) -> dict[str, Any]:
    s = settings.to_dict()
    for volatile in ("progress", "num_threads", "save_total_limit", "logging_steps"):
        s.pop(volatile, None)
    return {
        "kind": kind,
        "base_model": base,
        "init_adapter": adapter,
        "data_sha256": data_sha,
        "settings": s,
    }


def _prepare_out_dir(
    out_dir: Path, fingerprint: dict[str, Any], resume: bool
) -> tuple[Path, str | None]:
    """Create ``out_dir/checkpoints``; return it and the checkpoint to resume from (or None)."""
    from transformers.trainer_utils import get_last_checkpoint

    if out_dir.exists() and not out_dir.is_dir():
        raise InvalidInputError(f"out_dir {str(out_dir)!r} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        ours = (out_dir / METADATA_FILE).is_file() or (
            out_dir / CHECKPOINT_DIR / RUN_FILE
        ).is_file()
        if not ours:
            raise InvalidInputError(
                f"out_dir {str(out_dir)!r} is not empty and holds no meteora training run; "
                "choose a new or empty folder (it will be replaced by the adapter)"
            )
    ckpt_dir = out_dir / CHECKPOINT_DIR
    run_file = ckpt_dir / RUN_FILE
    last = None
    if resume and ckpt_dir.is_dir():
        last = get_last_checkpoint(str(ckpt_dir))
        if last is not None:
            previous = read_json(run_file) if run_file.is_file() else None
            if previous is not None:
                # runs fingerprinted before double_quant stopped being a setting
                previous.get("settings", {}).pop("double_quant", None)
            if previous is not None and previous != fingerprint:
                changed = sorted(k for k in fingerprint if previous.get(k) != fingerprint[k])
                if "settings" in changed:
                    ps, fs = previous.get("settings", {}), fingerprint["settings"]
                    changed += [f"settings.{k}" for k in sorted(fs) if ps.get(k) != fs[k]]
                raise InvalidInputError(
                    f"{str(ckpt_dir)!r} holds checkpoints of a different run (changed: {', '.join(changed)}); "
                    "pass resume=False to start over, or use another out_dir"
                )
    if not resume and ckpt_dir.is_dir():
        logger.info("resume=False: removing old checkpoints in %s", ckpt_dir)
        shutil.rmtree(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_file, fingerprint)
    return ckpt_dir, last


def _finalize_out_dir(out_dir: Path, write: Callable[[Path], None]) -> None:
    """Write the final adapter into a temporary sibling and rename it to ``out_dir``.

    The ``checkpoints`` folder of the old ``out_dir`` is carried over into the new one.
    """
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    moved = False
    old: Path | None = None
    try:
        write(tmp)
        ckpt = out_dir / CHECKPOINT_DIR
        if ckpt.is_dir():
            os.replace(ckpt, tmp / CHECKPOINT_DIR)
            moved = True
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
            if old.exists():
                shutil.rmtree(old)
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
    except BaseException:
        if old is not None and old.exists() and not out_dir.exists():
            os.replace(old, out_dir)
        if moved and (tmp / CHECKPOINT_DIR).is_dir():
            out_dir.mkdir(parents=True, exist_ok=True)
            os.replace(tmp / CHECKPOINT_DIR, out_dir / CHECKPOINT_DIR)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _loss_history(state: Any) -> list[tuple[int, float]]:
    return [
        (int(h["step"]), float(h["loss"])) for h in state.log_history if "loss" in h and "step" in h
    ]


_LOGGED_METRICS = ("loss", "grad_norm", "learning_rate", "rewards/chosen", "rewards/rejected",
                   "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected")


def _metric_history(state: Any) -> list[dict[str, float]]:
    """The trainer's logged scalars per step (loss, and for DPO the implicit rewards:
    ``rewards/accuracies`` is the share of pairs whose chosen completion the policy now
    prefers more than the reference does, ``rewards/margins`` the mean margin)."""
    rows = []
    for h in state.log_history:
        if "step" not in h or "loss" not in h:
            continue
        row = {"step": int(h["step"])}
        for key in _LOGGED_METRICS:
            try:
                value = float(h[key])
            except (KeyError, TypeError, ValueError):
                continue
            if math.isfinite(value):
                row[key] = value
        rows.append(row)
    return rows


def make_log_callback():
    from transformers import TrainerCallback

    class _LogToLogger(TrainerCallback):
        """Mirror the trainer's loss logs into meteora's logger."""

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: D401 - trainer hook
            if logs and "loss" in logs:
                logger.info(
                    "step %d/%d loss %.4f", state.global_step, state.max_steps, float(logs["loss"])
                )

    return _LogToLogger()


def trainer_args(
    settings: TrainingSettings, ckpt_dir: Path, use_cuda: bool, precision: str, config_cls: Any
) -> dict[str, Any]:
    """Keyword arguments for a TRL config class, using the argument names it knows."""
    gc = (
        settings.gradient_checkpointing if settings.gradient_checkpointing is not None else use_cuda
    )
    known = {f.name for f in fields(config_cls)}
    # transformers 5 renamed gradient_checkpointing -> activation_checkpointing and folded
    # warmup_ratio into warmup_steps (a float < 1 is a ratio)
    ckpt_key = (
        "activation_checkpointing"
        if "activation_checkpointing" in known
        else "gradient_checkpointing"
    )
    if "warmup_ratio" in known:
        warmup = {"warmup_ratio": float(settings.warmup_ratio)}
    else:
        warmup = {"warmup_steps": float(settings.warmup_ratio) if settings.warmup_ratio > 0 else 0}
    return dict(
        **warmup,
        **{ckpt_key: gc, f"{ckpt_key}_kwargs": {"use_reentrant": False} if gc else None},
        output_dir=str(ckpt_dir),
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum,
        learning_rate=settings.learning_rate,
        lr_scheduler_type=settings.lr_scheduler,
        weight_decay=settings.weight_decay,
        max_grad_norm=settings.max_grad_norm,
        num_train_epochs=float(settings.num_epochs),
        max_steps=settings.max_steps if settings.max_steps is not None else -1,
        logging_steps=settings.logging_steps,
        save_strategy="steps",
        save_steps=settings.save_steps,
        save_total_limit=settings.save_total_limit,
        seed=settings.seed,
        data_seed=settings.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not use_cuda,
        report_to="none",
        disable_tqdm=not _show_progress(settings),
        dataloader_num_workers=0,
        max_length=settings.max_length,
        trust_remote_code=settings.trust_remote_code,
    )


def _show_progress(settings: TrainingSettings) -> bool:
    from meteora.console import progress_enabled

    return progress_enabled() if settings.progress is None else bool(settings.progress)


def _quiet_printer(trainer: Any, settings: TrainingSettings) -> None:
    """Without a progress bar transformers prints every log dict; meteora logs them instead."""
    if not _show_progress(settings):
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)


def _lora_config(settings: TrainingSettings):
    peft = require("peft", "train", "LoRA adapters")
    return peft.LoraConfig(
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=resolve_target_modules(settings.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def _check_targets(model: Any, settings: TrainingSettings) -> None:
    targets = resolve_target_modules(settings.target_modules)
    if isinstance(targets, str):
        return
    leaf_names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in targets if t not in leaf_names]
    if missing:
        import torch

        linear = sorted(
            {
                n.rsplit(".", 1)[-1]
                for n, m in model.named_modules()
                if isinstance(m, torch.nn.Linear)
            }
        )
        raise InvalidInputError(
            f"target_modules {missing} are not modules of this model; its linear layers are {linear} "
            "(or use the preset 'all-linear')"
        )


def _prepare_for_training(model: Any, settings: TrainingSettings, use_cuda: bool) -> Any:
    if settings.load_in_4bit:
        peft = require("peft", "train", "QLoRA training")
        gc = (
            settings.gradient_checkpointing
            if settings.gradient_checkpointing is not None
            else use_cuda
        )
        model = peft.prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=gc,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    return model


def _upcast_trainable(model: Any, precision: str) -> None:
    """TRL casts QLoRA adapter weights to bf16; without bf16 mixed precision keep them in fp32."""
    import torch

    if precision == "bf16":
        return
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()


def _run_and_save(
    *,
    kind: str,
    trainer: Any,
    tokenizer: Any,
    out_dir: Path,
    resume_from: str | None,
    metadata: dict[str, Any],
    t0: float,
    n_examples: int,
    selected_adapters: list[str] | None = None,
) -> TrainResult:
    if resume_from:
        logger.info("resuming from %s", resume_from)
    output = trainer.train(resume_from_checkpoint=resume_from)
    state = trainer.state
    losses = _loss_history(state)
    final_loss = losses[-1][1] if losses else None
    seconds = time.perf_counter() - t0
    metadata.update(
        global_step=int(state.global_step),
        epochs=float(state.epoch or 0.0),
        final_loss=final_loss,
        train_loss=float(output.training_loss) if output.training_loss is not None else None,
        losses=[[step, loss] for step, loss in losses],
        log_history=_metric_history(state),
        resumed_from=Path(resume_from).name if resume_from else None,
        seconds=seconds,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )

    def write(tmp: Path) -> None:
        model = trainer.model
        if selected_adapters is not None:
            model.save_pretrained(str(tmp), selected_adapters=selected_adapters)
        else:
            model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        atomic_write_json(tmp / METADATA_FILE, metadata)

    _finalize_out_dir(out_dir, write)
    logger.info(
        "%s adapter saved to %s (step %d, loss %s)",
        kind.upper(),
        out_dir,
        state.global_step,
        final_loss,
    )
    return TrainResult(
        out_dir=out_dir,
        kind=kind,
        global_step=int(state.global_step),
        final_loss=final_loss,
        train_loss=metadata["train_loss"],
        losses=losses,
        resumed_from=resume_from,
        seconds=seconds,
        n_examples=n_examples,
        metadata=metadata,
    )


@dataclass
class BaseRun:
    """A loaded base model and what every training run records about it."""

    t0: float
    out_dir: Path
    use_cuda: bool
    precision: str
    model: Any
    tokenizer: Any
    base_name: str


def begin_training(settings: TrainingSettings, purpose: str) -> Any:
    """Validate ``settings``, check TRL, apply the thread setting; return the ``trl`` module."""
    settings.validate()
    _check_trl_version()
    apply_thread_setting(settings.num_threads)
    return require("trl", "train", purpose)


def load_base(
    base_model: str | os.PathLike[str],
    data: Any,
    data_what: str,
    out_dir: str | os.PathLike[str],
    settings: TrainingSettings,
    adapter: str | os.PathLike[str] | None,
) -> BaseRun:
    """Start the clock, check the data path and adapter folder, load the base model."""
    t0 = time.perf_counter()
    out = Path(out_dir).expanduser()
    use_cuda, precision = precision_setup(settings.precision)
    require_data_file(data, data_what)
    if adapter is not None and not (Path(adapter).expanduser() / "adapter_config.json").is_file():
        raise ModelNotFoundError(
            f"{str(adapter)!r} is not a PEFT adapter folder (no adapter_config.json)"
        )
    model, tokenizer = load_causal_lm(
        base_model,
        load_in_4bit=settings.load_in_4bit,
        precision=settings.precision,
        quant_type=settings.quant_type,
        tokenizer_from=adapter,
        trust_remote_code=settings.trust_remote_code,
    )
    base_name = str(model.config.name_or_path or base_model)
    return BaseRun(t0, out, use_cuda, precision, model, tokenizer, base_name)


def prepare_run(
    kind: str,
    run: BaseRun,
    settings: TrainingSettings,
    adapter: str | os.PathLike[str] | None,
    data_info: Mapping[str, Any],
    resume: bool,
) -> tuple[Any, Any, Path, str | None]:
    """Fingerprint the run, set up ``checkpoints/``, and ready the model for LoRA training.

    Returns ``(model, peft_config, ckpt_dir, resume_from)``; ``peft_config`` is ``None``
    when an existing ``adapter`` is continued.
    """
    fingerprint = _fingerprint(
        kind,
        run.base_name,
        str(adapter) if adapter else None,
        settings,
        data_info.get("sha256") or data_info["pairs_sha256"],
    )
    ckpt_dir, resume_from = _prepare_out_dir(run.out_dir, fingerprint, resume)
    model = _prepare_for_training(run.model, settings, run.use_cuda)
    peft_config = None
    if adapter is not None:
        model = attach_adapter(model, adapter, base_model=run.base_name, trainable=True)
    else:
        _check_targets(model, settings)
        peft_config = _lora_config(settings)
    return model, peft_config, ckpt_dir, resume_from


def train_and_save(
    *,
    kind: str,
    run: BaseRun,
    trainer: Any,
    settings: TrainingSettings,
    adapter: str | os.PathLike[str] | None,
    template: str | None,
    data_info: dict[str, Any],
    resume_from: str | None,
    n_examples: int,
    extra_metadata: Mapping[str, Any] | None = None,
    selected_adapters: list[str] | None = None,
) -> TrainResult:
    """Quiet and upcast the trainer, build ``meteora_training.json``, train and save."""
    _quiet_printer(trainer, settings)
    _upcast_trainable(trainer.model, run.precision)
    metadata: dict[str, Any] = {
        "format": "meteora-adapter/1",
        "kind": kind,
        "base_model": run.base_name,
        "init_adapter": str(adapter) if adapter else None,
        **(extra_metadata or {}),
        "template": template,
        "n_rationales": settings.n_rationales,
        "settings": settings.to_dict(),
        "data": data_info,
        "precision": run.precision,
        "device": "cuda" if run.use_cuda else "cpu",
        "pad_token": run.tokenizer.pad_token,
        "eos_token": run.tokenizer.eos_token,
        "versions": library_versions(),
    }
    return _run_and_save(
        kind=kind,
        trainer=trainer,
        tokenizer=run.tokenizer,
        out_dir=run.out_dir,
        resume_from=resume_from,
        metadata=metadata,
        t0=run.t0,
        n_examples=n_examples,
        selected_adapters=selected_adapters,
    )



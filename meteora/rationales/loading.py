"""Building a rationale generator from a model name, folder, GGUF file, server or preset.

:class:`FromPretrainedMixin` gives
:class:`~meteora.rationales.generator.RationaleGenerator` its ``from_pretrained`` and
``from_preset`` constructors: pick a :mod:`meteora.lm` backend (``backend="auto"``),
check that the loading arguments fit it (4-bit, device and dtype are transformers-only),
load the model (and adapter) and choose the prompt template
(:func:`default_template_for`) when none is given.

Example:
    >>> default_template_for("mistralai/Mistral-7B-Instruct-v0.3", "chidiokoene/okoene-med-rationale", True).name
    'med-rationale'
    >>> default_template_for("my-served-model", None, has_chat_template=True).name
    'chat'
    >>> from meteora.rationales import RationaleGenerator
    >>> gen = RationaleGenerator.from_preset("smollm2-135m")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from typing import Any, TypeVar

from meteora.errors import InvalidInputError
from meteora.lm import resolve_backend
from meteora.lm.transformers import TransformersLM
from meteora.rationales.cache import RationaleCache
from meteora.rationales.presets import PRESETS, resolve_preset
from meteora.rationales.templates import PromptTemplate, get_template

__all__ = ["FromPretrainedMixin", "default_template_for"]

logger = logging.getLogger(__name__)

_G = TypeVar("_G", bound="FromPretrainedMixin")


def default_template_for(
    model_id: str | None, adapter_id: str | None, has_chat_template: bool
) -> PromptTemplate:
    """The prompt template a model gets when none is named.

    Its preset's template; else ``"chat"`` when the model renders chat prompts (a GGUF,
    a server, a tokenizer with a chat template:
    :attr:`meteora.lm.base.CausalLM.has_chat_template`); else ``"med-rationale"``.
    """
    for preset in PRESETS.values():
        if (
            preset.get("model")
            and preset["model"] == model_id
            and preset.get("adapter") == adapter_id
        ):
            return get_template(preset["template"])
    return get_template("chat" if has_chat_template else "med-rationale")


class FromPretrainedMixin:
    """Adds ``from_pretrained`` and ``from_preset`` to a rationale generator.

    Mixed into :class:`~meteora.rationales.generator.RationaleGenerator` only: ``cls(...)``
    is that class's constructor.
    """

    @classmethod
    def from_pretrained(
        cls: type[_G],
        model: str | os.PathLike[str] | None = None,
        adapter: str | os.PathLike[str] | None = None,
        *,
        backend: str = "auto",
        base_url: str | None = None,
        api_key: str | None = None,
        template: str | PromptTemplate | None = None,
        load_in_4bit: bool = False,
        device: Any = None,
        dtype: Any = None,
        num_threads: int | None = None,
        trust_remote_code: bool = False,
        cache: RationaleCache | str | os.PathLike[str] | bool | None = None,
        max_input_tokens: int = 2048,
        max_new_tokens: int | None = None,
        filter_options: dict[str, Any] | None = None,
        prefix_cache: bool = True,
        lm_options: dict[str, Any] | None = None,
    ) -> _G:
        """Load a causal LM (and optional PEFT adapter) on a backend and wrap it.

        Args:
            model: hub id, local folder, GGUF file (llama.cpp), served model name
                (openai), or ``None``/``"default"`` for the offline SmolLM2-135M-Instruct
                (after ``meteora models pull``).
            adapter: PEFT adapter hub id or local folder (transformers; llama.cpp converts
                a local plain-LoRA folder once; servers apply their own adapters).
            backend: ``"auto"`` (default), ``"transformers"``, ``"llamacpp"`` or
                ``"openai"``. ``auto`` picks ``openai`` when ``base_url`` is given,
                ``llamacpp`` for the offline default without adapter, 4-bit, device or
                dtype (measured ~4x faster on a CPU,
                ``benchmarks/results/generation_speed.json``), else ``transformers``.
            base_url: the OpenAI-compatible server, e.g. ``http://127.0.0.1:8000/v1``.
            api_key: the server's key (``None``: no auth).
            template: see the class docstring.
            load_in_4bit: quantise the linear layers to 4-bit NF4 with bitsandbytes
                (transformers; compute in float32 on CPU, bfloat16 on CUDA).
            device: ``"cpu"``, ``"cuda"``…; ``None`` picks CUDA when available (transformers).
            dtype: ``"float32"``, ``"bfloat16"``, ``"float16"``, a torch dtype or
                ``None``/``"auto"`` (float32 on CPU, bf16/fp16 on CUDA; transformers).
            num_threads: llama.cpp's threads (``n_threads``). Torch's thread count is
                process-wide: it is set where the process starts (the CLI's ``--threads``,
                :func:`meteora.settings.set_num_threads`).
            trust_remote_code: let transformers run code shipped with the model.
            cache, max_input_tokens, max_new_tokens, filter_options, prefix_cache: see
                the class.
            lm_options: more backend options: ``n_ctx``, ``n_parallel`` (llamacpp);
                ``timeout``, ``max_retries``, ``concurrency``, ``extra_body`` (openai).

        Raises:
            ModelNotFoundError: the model or adapter cannot be found (the message says
                how to get it).
            InvalidInputError: the adapter does not fit the model, or a bad argument.
            UnsupportedOperationError: an adapter with ``backend="llamacpp"``.

        Example:
            >>> gen = RationaleGenerator.from_pretrained(None)  # llama.cpp, SmolLM2  # doctest: +SKIP
            >>> gen = RationaleGenerator.from_pretrained(  # doctest: +SKIP
            ...     "mistral-med", backend="openai", base_url="http://127.0.0.1:8000/v1",
            ...     template="med-rationale")
        """
        options = dict(lm_options or {})
        torch_only = load_in_4bit or device is not None or dtype is not None or trust_remote_code
        if backend in (None, "auto") and torch_only and not base_url:
            backend = "transformers"
        name = resolve_backend(backend, model, adapter, base_url=base_url)
        if name != "transformers" and torch_only:
            raise InvalidInputError(
                f"load_in_4bit, device, dtype and trust_remote_code apply to backend='transformers' only, not "
                f"{name!r} (a GGUF is already quantised; a server chooses its own device)"
            )
        if name == "transformers":
            lm: Any = TransformersLM.from_pretrained(
                model,
                adapter,
                load_in_4bit=load_in_4bit,
                device=device,
                dtype=dtype,
                trust_remote_code=trust_remote_code,
                max_input_tokens=max_input_tokens,
                prefix_cache=prefix_cache,
                **options,
            )
        elif name == "llamacpp":
            from meteora.lm.llamacpp import LlamaCppLM

            options.setdefault("n_threads", num_threads)
            lm = LlamaCppLM.from_pretrained(model, adapter, **options)
        else:
            from meteora.lm import load_lm

            lm = load_lm("openai", model, adapter, base_url=base_url, api_key=api_key, **options)
        if template is None:
            preset_model = str(model) if model is not None else None
            template = default_template_for(preset_model, lm.adapter_id, lm.has_chat_template)
        gen = cls(
            lm,
            template=template,
            cache=cache,
            max_input_tokens=max_input_tokens,
            max_new_tokens=max_new_tokens,
            filter_options=filter_options,
            prefix_cache=prefix_cache,
        )
        gen.load_in_4bit = load_in_4bit
        logger.info(
            "rationale generator: %s%s on %s, template %r",
            gen.model_id,
            f" + {gen.adapter_id}" if gen.adapter_id else "",
            name,
            gen.template.name,
        )
        return gen

    @classmethod
    def from_preset(cls: type[_G], name: str, **overrides: Any) -> _G:
        """Build a generator from a named preset (see :mod:`meteora.rationales.presets`).

        Keyword overrides replace the preset's values (``model``, ``adapter``,
        ``template``, ``load_in_4bit``, ``max_new_tokens``) or add other
        :meth:`from_pretrained` arguments (``device``, ``cache``, ``backend``,
        ``base_url``…). With ``backend="openai"`` the preset's ``load_in_4bit`` and
        ``adapter`` are dropped (the server holds the weights) and ``model`` must be the
        name the server serves them under.

        Example:
            >>> gen = RationaleGenerator.from_preset("med-rationale-mistral-7b", device="cuda")  # doctest: +SKIP
            >>> gen = RationaleGenerator.from_preset(  # doctest: +SKIP
            ...     "med-rationale-mistral-7b", backend="openai",
            ...     base_url="http://127.0.0.1:8000/v1", model="okoene-med-rationale")
        """
        settings = resolve_preset(name)
        settings.update(overrides)
        backend = settings.get("backend")
        if backend in ("openai", "llamacpp") and "load_in_4bit" not in overrides:
            settings.pop("load_in_4bit", None)
        if backend == "openai" and "adapter" not in overrides and settings.get("adapter"):
            if "model" not in overrides:
                raise InvalidInputError(
                    f"preset {name!r} uses adapter {settings['adapter']!r}; on backend='openai' the server applies "
                    "it: pass model=<the name it is served under> (vLLM: --enable-lora --lora-modules NAME=ADAPTER)"
                )
            settings["adapter"] = None
        model = settings.pop("model", None)
        adapter = settings.pop("adapter", None)
        return cls.from_pretrained(model, adapter, **settings)

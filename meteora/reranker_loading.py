"""Turning names into the reranker's collaborators: :class:`RerankerLoading`, the
``from_pretrained`` / ``from_preset`` constructors and the loaders that
:class:`~meteora.reranker.Reranker` runs on each argument given by name.

Mixed into :class:`~meteora.reranker.Reranker` only (``cls(...)`` is its constructor).

Example:
    >>> from meteora import Reranker  # doctest: +SKIP
    >>> rr = Reranker.from_pretrained("HuggingFaceTB/SmolLM2-360M-Instruct", device="cuda")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Any

from meteora.errors import InvalidInputError
from meteora.protocols import EvidenceScoring, RationaleSource
from meteora.selection.selector_settings import SelectorSettings
from meteora.verifier_stage import DEFAULT_VERIFIER

__all__ = ["RerankerLoading", "GENERATOR_OPTIONS"]

#: :meth:`Reranker.from_pretrained <RerankerLoading.from_pretrained>` options that load the
#: generator from a name.
GENERATOR_OPTIONS = (
    "adapter", "template", "load_in_4bit", "cache", "backend", "base_url", "api_key", "lm_options", "num_threads",
)


class RerankerLoading:
    """``from_pretrained``, ``from_preset`` and the name loaders of :class:`~meteora.reranker.Reranker`."""

    # ------------------------------------------------------------ names -> models
    @classmethod
    def from_pretrained(
        cls,
        generator: Any = "default",
        encoder: Any = None,
        scorer: Any = "default",
        settings: SelectorSettings | None = None,
        verifier: Any = DEFAULT_VERIFIER,
        top_k: int | None = None,
        *,
        device: str | None = None,
        adapter: str | os.PathLike[str] | None = None,
        template: Any = None,
        load_in_4bit: bool = False,
        cache: Any = True,
        **kwargs: Any,
    ) -> Any:
        """A reranker whose named collaborators load with these options.

        Args:
            generator, encoder, scorer: names (or built objects, used as they are).
            device: torch device for the encoder, the scorer and a transformers
                generator (``None``: each picks CUDA when available, else CPU).
            adapter, template, load_in_4bit: generator loading options.
            cache: rationale cache: ``True`` (``$METEORA_HOME/rationales.sqlite``), a
                path, or ``None``/``False``.
            kwargs: generator options (``backend``, ``base_url``, ``api_key``,
                ``lm_options``, ``num_threads``: llama.cpp's threads) and the other
                :class:`Reranker` arguments.

        Example:
            >>> rr = Reranker.from_pretrained("HuggingFaceTB/SmolLM2-360M-Instruct", device="cuda")  # doctest: +SKIP
        """
        gen_options = {k: kwargs.pop(k) for k in list(kwargs) if k in GENERATOR_OPTIONS}
        gen_options.update(adapter=adapter, template=template, load_in_4bit=load_in_4bit, cache=cache)
        return cls(
            cls._load_generator(generator, device=device, **gen_options),
            cls._load_encoder(encoder, device=device),
            cls._load_scorer(scorer, device=device),
            settings,
            verifier,
            top_k,
            device=device,
            **kwargs,
        )

    @classmethod
    def from_preset(cls, name: str, *, encoder: Any = None, **kwargs: Any) -> Any:
        """Build a reranker on a named generator preset, e.g. ``"med-rationale-mistral-7b"``.

        Generator options (``load_in_4bit``, ``device``, ``dtype``, ``adapter``, ``model``,
        ``template``, ``max_new_tokens``, ``cache``, ``trust_remote_code``, ``backend``,
        ``base_url``) go to the generator; the rest to :class:`Reranker`.

        Example:
            >>> rr = Reranker.from_preset("med-rationale-mistral-7b", load_in_4bit=True)  # doctest: +SKIP
        """
        from meteora.rationales.generator import RationaleGenerator

        gen_keys = {
            "load_in_4bit", "device", "dtype", "adapter", "cache", "trust_remote_code", "template", "model",
            "max_new_tokens", "backend", "base_url", "api_key", "lm_options",
        }
        gen_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in gen_keys}
        gen_kwargs.setdefault("cache", True)
        generator = RationaleGenerator.from_preset(name, **gen_kwargs)
        return cls(generator, encoder, **kwargs)

    @staticmethod
    def _load_generator(generator: Any, *, device: str | None = None, **options: Any) -> Any:
        """``None`` (query-only), a built generator, or a name loaded with ``options``
        (``device`` goes to a generator on transformers; see the class docstring)."""
        if generator is None or generator is False:
            return None
        if isinstance(generator, RationaleSource):
            return generator
        if not isinstance(generator, (str, os.PathLike)):
            raise InvalidInputError(
                "generator must be 'default', a hub id or model folder, an object with generate(queries, ...), "
                f"or None (query-only); got {type(generator).__name__}"
            )
        from meteora.rationales.generator import RationaleGenerator

        options.setdefault("cache", True)
        name = None if generator == "default" else generator
        adapter = options.pop("adapter", None)
        if device is not None:
            from meteora.lm import resolve_backend

            backend = resolve_backend(options.get("backend", "auto"), name, adapter, base_url=options.get("base_url"))
            # a server chooses its own device; llama.cpp runs on the CPU (a GPU device: transformers)
            if backend == "transformers" or (backend == "llamacpp" and not device.startswith("cpu")):
                options["device"] = device
        return RationaleGenerator.from_pretrained(name, adapter, **options)

    @staticmethod
    def _load_encoder(encoder: Any, *, device: str | None = None) -> Any:
        from meteora.embeddings.encoder import Encoder

        if isinstance(encoder, Encoder):
            return encoder
        return Encoder(encoder, device=device)

    @staticmethod
    def _load_scorer(scorer: Any, *, device: str | None = None) -> Any:
        if scorer is None or scorer is False:
            return None
        if isinstance(scorer, EvidenceScoring):
            return scorer
        if isinstance(scorer, (str, os.PathLike)):
            from meteora.scorer import EvidenceScorer

            return EvidenceScorer(scorer, device=device)
        raise InvalidInputError(
            "scorer must be 'default', a folder written by `meteora train scorer`, an object with "
            f"evidence_logits(queries, passage_lists), or None; got {type(scorer).__name__}"
        )

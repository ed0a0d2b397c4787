"""Rationale generation with a causal LM on any :mod:`meteora.lm` backend (stage 1 of METEORA).

:class:`RationaleGenerator` prompts a causal LM with each query through a
:class:`~meteora.rationales.templates.PromptTemplate`, parses the output forgivingly
(:func:`~meteora.rationales.parsing.parse_rationales`), drops lines that would mislead
the evidence selector (:func:`~meteora.rationales.filters.filter_rationales`) and
returns a :class:`RationaleSet` per query. When nothing usable survives, the query
itself becomes the single rationale and ``fallback`` is ``True``: generation never
fails because a model wrote garbage.

* Batched across queries with left padding; greedy by default (deterministic, what
  benchmarks want), sampling opt-in and reproducible with ``seed``.
* Generation stops for a row as soon as ``n`` usable rationales have been written
  (on a backend that stops on text, :attr:`meteora.lm.base.CausalLM.stops_on_text`;
  the others stop at EOS, a new ``###`` section or ``max_new_tokens``), so a model that
  never emits EOS (the okoene adapter) costs no more than it must. Everything that
  differs between backends (rendering, early stops, prompt-prefix caching, the input
  limit) sits behind the :class:`~meteora.lm.base.CausalLM` protocol.
* Optional persistent cache (:class:`~meteora.rationales.cache.RationaleCache`): hits
  skip the model entirely.
* Backends (:mod:`meteora.lm`): transformers (any hub id or local folder, PEFT
  adapter, optional 4-bit NF4 with bitsandbytes, or an already-built ``(model,
  tokenizer)``), llama.cpp (a GGUF in-process; the offline default, ~4x faster on a
  CPU, PEFT LoRA adapters converted once) and OpenAI-compatible servers (vLLM,
  llama.cpp server, Ollama...). ``from_pretrained(backend="auto")`` picks one.

Beside this module: :mod:`~meteora.rationales.rationale_set` (the result type),
:mod:`~meteora.rationales.loading` (``from_pretrained``, ``from_preset``),
:mod:`~meteora.rationales.stopping` (the early stop) and
:mod:`~meteora.rationales.checks` (argument checks); ``complete`` is the LM's own
(:meth:`meteora.lm.base.CompleteMixin.complete`).

Example:
    >>> gen = RationaleGenerator.from_pretrained()  # offline SmolLM2  # doctest: +SKIP
    >>> rs = gen.generate("Does aspirin reduce stroke risk in the elderly?", n=3)  # doctest: +SKIP
    >>> rs.rationales  # doctest: +SKIP
    ['Patients: elderly adults ...', 'Treatment: aspirin ...', 'Outcome: stroke ...']
    >>> gen.complete(["Say yes or no: is water wet?"], max_new_tokens=4)  # doctest: +SKIP
    ['Yes']
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
from collections.abc import Sequence
from typing import Any

from meteora._checks import positive_int
from meteora.console import progress_enabled
from meteora.errors import InvalidInputError
from meteora.lm.base import SamplingParams, is_causal_lm
from meteora.lm.transformers import TransformersLM
from meteora.rationales.cache import RationaleCache
from meteora.rationales.checks import check_sampling
from meteora.rationales.filters import filter_rationales
from meteora.rationales.generation_plan import GenerationPlan
from meteora.rationales.loading import FromPretrainedMixin, default_template_for
from meteora.rationales.parsing import parse_rationales
from meteora.rationales.rationale_set import RationaleSet
from meteora.rationales.stopping import SECTION_STOPS, EnoughRationales
from meteora.rationales.templates import PromptTemplate, get_template
from meteora.types import check_query

__all__ = ["RationaleGenerator", "PIPELINE_VERSION"]

logger = logging.getLogger(__name__)

#: Bumped whenever parsing or filtering changes what a cached entry would contain.
PIPELINE_VERSION = 1

#: two queries whose prompts share exactly the template's fixed part
_PREFIX_PROBES = ("Alpha beta gamma?", "Zeta eta theta?")

_DEFAULT_FILTER_OPTIONS: dict[str, Any] = {
    "min_words": 3,
    "max_query_overlap": 0.9,
    "near_duplicate": 0.85,
}

# ------------------------------------------------------------------------------------
# the generator
# ------------------------------------------------------------------------------------
class RationaleGenerator(FromPretrainedMixin):
    """Generate rationales for queries with a causal LM.

    Build one with :meth:`from_pretrained` (hub id, folder or GGUF file; a backend:
    transformers, llama.cpp or an OpenAI-compatible server; optional adapter and
    4-bit), :meth:`from_preset`, directly from an already-loaded transformers model and
    tokenizer, or from any :class:`meteora.lm.CausalLM`.

    Args:
        model: a transformers causal LM (or PEFT model) in eval mode, or a
            :mod:`meteora.lm` backend (then ``tokenizer`` is ``None``).
        tokenizer: the transformers model's tokenizer.
        template: a template name or :class:`PromptTemplate`; ``None`` picks the one
            named for the model's preset, else ``"chat"`` when the model has a chat
            template (GGUF files and servers: always), else ``"med-rationale"``.
        model_id: name recorded in cache keys (defaults to the model's
            ``name_or_path``).
        adapter_id: adapter name recorded in cache keys.
        cache: ``None``/``False`` for no cache, ``True`` for the default persistent cache
            (``$METEORA_HOME/rationales.sqlite``), a path, or a :class:`RationaleCache`.
        max_input_tokens: longest prompt; a longer query is shortened (with a warning;
            transformers backend; llama.cpp and servers enforce their own context size).
        max_new_tokens: default generation cap (``None``: the template's).
        filter_options: keyword arguments for
            :func:`~meteora.rationales.filters.filter_rationales`.
        model_fingerprint: extra cache-key text identifying the weights (set by
            :meth:`from_pretrained` from the files of local folders).
        prefix_cache: compute the key/value cache of the template's fixed part (its
            instruction and few-shot examples) once and reuse it for every batch; the
            output is the same, prefill work drops by the prefix length (transformers;
            llama.cpp reuses prompt prefixes by itself).

    Example:
        >>> from transformers import AutoModelForCausalLM, AutoTokenizer  # doctest: +SKIP
        >>> gen = RationaleGenerator(AutoModelForCausalLM.from_pretrained(path),  # doctest: +SKIP
        ...                          AutoTokenizer.from_pretrained(path), template="chat")
        >>> from meteora.lm import load_lm  # doctest: +SKIP
        >>> gen = RationaleGenerator(load_lm("llamacpp"), template="chat")  # doctest: +SKIP
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        template: str | PromptTemplate | None = None,
        model_id: str | None = None,
        adapter_id: str | None = None,
        cache: RationaleCache | str | os.PathLike[str] | bool | None = None,
        max_input_tokens: int = 2048,
        max_new_tokens: int | None = None,
        filter_options: dict[str, Any] | None = None,
        model_fingerprint: str | None = None,
        prefix_cache: bool = True,
    ) -> None:
        max_input_tokens = positive_int("max_input_tokens", max_input_tokens)
        if tokenizer is None and is_causal_lm(model):
            lm = model
            lm.configure_inputs(max_input_tokens=max_input_tokens, prefix_cache=bool(prefix_cache))
        else:
            if model is None or not hasattr(model, "generate"):
                raise InvalidInputError(
                    "model must be a transformers causal LM with a generate() method, or a meteora.lm backend"
                )
            if tokenizer is None or not callable(tokenizer):
                raise InvalidInputError("tokenizer must be a transformers tokenizer")
            lm = TransformersLM(
                model,
                tokenizer,
                model_id=model_id,
                adapter_id=adapter_id,
                fingerprint=model_fingerprint,
                max_input_tokens=max_input_tokens,
                prefix_cache=prefix_cache,
            )
        #: the language model behind this generator (a :mod:`meteora.lm` backend)
        self.lm = lm
        self.model_id = model_id or lm.model_id
        self.adapter_id = adapter_id if adapter_id is not None else lm.adapter_id
        self.template = (
            get_template(template)
            if template is not None
            else default_template_for(self.model_id, self.adapter_id, lm.has_chat_template)
        )
        #: set by :meth:`from_pretrained` when the weights were loaded in 4 bits (cache keys)
        self.load_in_4bit = False
        self.cache = self._make_cache(cache)
        self.max_input_tokens = max_input_tokens
        self.max_new_tokens = (
            None
            if max_new_tokens is None
            else positive_int("max_new_tokens", max_new_tokens)
        )
        options = dict(_DEFAULT_FILTER_OPTIONS)
        options.update(filter_options or {})
        filter_rationales("probe", [], **options)  # validate the options now
        self.filter_options = options
        self.model_fingerprint = model_fingerprint or lm.identity().get("fingerprint")

    # -- the backend -------------------------------------------------------------------

    @property
    def tokenizer(self) -> Any:
        """The LM's transformers tokenizer, or ``None`` (llama.cpp on the offline default
        has one too, to render prompts as training data; read when first asked for, so
        that building a generator does not import transformers)."""
        return self.lm.tokenizer

    @property
    def model(self) -> Any:
        """The transformers model for exact log-likelihoods (e.g. the QA reader's scorer):
        :meth:`meteora.lm.base.CausalLM.loglik_model` of the LM — on the transformers
        backend the model that generates, with llama.cpp on the offline default the
        transformers copy of the same weights (loaded on first access), else ``None``."""
        return self.lm.loglik_model()

    @property
    def backend(self) -> str:
        """``"transformers"``, ``"llamacpp"`` or ``"openai"``."""
        return str(self.lm.backend)

    # -- construction (from_pretrained, from_preset: meteora.rationales.loading) --------
    @staticmethod
    def _make_cache(cache: Any) -> RationaleCache | None:
        if cache is None or cache is False:
            return None
        if cache is True:
            return RationaleCache()
        if isinstance(cache, RationaleCache):
            return cache
        if isinstance(cache, (str, os.PathLike)):
            return RationaleCache(cache)
        raise InvalidInputError(
            f"cache must be None, True/False, a path or a RationaleCache, got {type(cache).__name__}"
        )

    # -- prompts -----------------------------------------------------------------------
    def _prompt(self, query: str, n: int) -> Any:
        """The backend-neutral prompt: chat messages (+ the response prefix to continue) or raw text."""
        if not self.template.use_chat_template:
            return self.template.render(query, n)
        msgs: list[dict[str, str]] = list(self.template.messages(query, n))
        if self.template.response_prefix:
            msgs.append({"role": "assistant", "content": self.template.response_prefix})
        return msgs

    def _progress(self, total: int, show_progress: bool | None, desc: str) -> Any:
        if show_progress is None:
            show_progress = progress_enabled()
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit="query", disable=not show_progress)

    # -- parsing + filtering -----------------------------------------------------------
    def _usable(self, query: str, generated: str, n: int, filt: bool) -> list[str]:
        parsed = parse_rationales(
            self.template.response_prefix + generated, strip_think=self.template.strips_think
        )
        if not filt:
            return parsed.rationales[:n]
        kept, _ = filter_rationales(
            query, parsed.rationales, template=self.template, **self.filter_options
        )
        return kept[:n]

    def _postprocess(
        self, query: str, generated: str, n: int, include_query: bool, filt: bool
    ) -> RationaleSet:
        raw = self.template.response_prefix + generated
        parsed = parse_rationales(raw, strip_think=self.template.strips_think)
        flag_of = dict(zip(parsed.rationales, parsed.flags, strict=True))
        dropped: list[tuple[str, str]] = []
        kept = parsed.rationales
        if filt:
            kept, dropped = filter_rationales(
                query, parsed.rationales, template=self.template, **self.filter_options
            )
        kept = kept[:n]
        flags = [flag_of.get(r) for r in kept]
        fallback = not kept
        if fallback:
            logger.debug(
                "no usable rationale for %r (parse=%s); using the query", query[:80], parsed.method
            )
            rationales, flags = [query], [None]
        elif include_query:
            rationales, flags = [query, *kept], [None, *flags]
        else:
            rationales = kept
        return RationaleSet(
            query=query,
            rationales=rationales,
            flags=flags,
            raw=raw,
            fallback=fallback,
            dropped=dropped,
            parse_method=parsed.method,
        )

    # -- public API --------------------------------------------------------------------
    def cache_key_fields(
        self,
        n: int | None = None,
        *,
        max_new_tokens: int | None = None,
        do_sample: bool = False,
        temperature: float = 0.7,
        top_p: float = 0.95,
        seed: int | None = None,
        include_query: bool = False,
        filter: bool = True,
    ) -> dict[str, Any]:
        """Everything that determines a :class:`RationaleSet` except the query.

        Example:
            >>> gen.cache_key_fields(3)["template"]  # doctest: +SKIP
            'chat'
        """
        n = self.template.default_n if n is None else n
        fields: dict[str, Any] = {
            "pipeline": PIPELINE_VERSION,
            "model": self.model_id,
            "model_fingerprint": self.model_fingerprint,
            "adapter": self.adapter_id,
            "load_in_4bit": bool(self.load_in_4bit),
            "template": self.template.name,
            "template_hash": self.template.fingerprint(),
            "n": n,
            "max_new_tokens": self._max_new_tokens(max_new_tokens),
            "max_input_tokens": self.max_input_tokens,
            "do_sample": bool(do_sample),
            "include_query": bool(include_query),
            "filter": dict(self.filter_options) if filter else None,
        }
        if do_sample:
            fields.update(temperature=float(temperature), top_p=float(top_p), seed=seed)
        backend = self.lm.cache_identity()
        if backend is not None:
            # different backends give different greedy text for the same weights (the
            # transformers backend records none, so its existing caches remain valid)
            fields["backend"] = backend
        return fields

    def _max_new_tokens(self, value: int | None) -> int:
        if value is not None:
            return positive_int("max_new_tokens", value)
        return self.max_new_tokens or self.template.max_new_tokens

    def generate(
        self,
        queries: str | Sequence[str],
        n: int | None = None,
        *,
        batch_size: int = 8,
        max_new_tokens: int | None = None,
        do_sample: bool = False,
        temperature: float = 0.7,
        top_p: float = 0.95,
        seed: int | None = None,
        include_query: bool = False,
        filter: bool = True,
        show_progress: bool | None = None,
    ) -> RationaleSet | list[RationaleSet]:
        """Generate rationales for one query (→ :class:`RationaleSet`) or a list (→ list).

        Args:
            queries: a query or a list of queries.
            n: rationales per query (``None``: the template's default).
            batch_size: queries per forward batch.
            max_new_tokens: generation cap (``None``: the generator's or template's).
            do_sample: sample instead of greedy decoding (the paper samples at 0.7).
            temperature, top_p: sampling parameters (ignored when greedy).
            seed: makes sampling reproducible (the same call gives the same output).
                Sampling without a seed is not cached.
            include_query: put the query itself first, as an anchor rationale.
            filter: drop echoes, restatements, answers and near-duplicates.
            show_progress: tqdm bar; ``None`` shows it when logging is at INFO or lower.

        Example:
            >>> gen.generate(["Is drug X safe?", "Does Y cause Z?"], n=3)  # doctest: +SKIP
        """
        plan = self._plan(
            queries, n, batch_size=batch_size, max_new_tokens=max_new_tokens, do_sample=do_sample,
            temperature=temperature, top_p=top_p, seed=seed, include_query=include_query, filter=filter,
        )
        with self._progress(len(plan.prompts), show_progress, "rationales") as bar:
            for batch in plan.batches():
                texts = self.lm.generate(
                    [plan.prompts[q] for q in batch],
                    plan.params,
                    until=EnoughRationales(self, batch, plan.n, plan.filter),
                    prefix_probes=plan.probes,
                )
                self._store(plan, batch, texts)
                bar.update(len(batch))
        return plan.output()

    async def agenerate(self, queries: str | Sequence[str], n: int | None = None, **options: Any) -> Any:
        """:meth:`generate` (the same arguments and result) without blocking an event loop.

        On a backend with an async path (OpenAI-compatible servers: ``agenerate``) the
        requests are awaited on the caller's loop, and the cache and parsing run in a
        worker thread; on the in-process backends (transformers, llama.cpp) the whole
        call runs in a worker thread (:func:`asyncio.to_thread`).

        Example:
            >>> sets = await gen.agenerate(["Is drug X safe?"], n=3)  # doctest: +SKIP
        """
        lm_agenerate = getattr(self.lm, "agenerate", None)
        if not inspect.iscoroutinefunction(lm_agenerate):
            return await asyncio.to_thread(functools.partial(self.generate, queries, n, **options))
        options.pop("show_progress", None)
        plan = await asyncio.to_thread(functools.partial(self._plan, queries, n, **options))
        for batch in plan.batches():
            texts = await lm_agenerate([plan.prompts[q] for q in batch], plan.params)
            await asyncio.to_thread(self._store, plan, batch, texts)
        return plan.output()

    def _plan(
        self,
        queries: str | Sequence[str],
        n: int | None = None,
        *,
        batch_size: int = 8,
        max_new_tokens: int | None = None,
        do_sample: bool = False,
        temperature: float = 0.7,
        top_p: float = 0.95,
        seed: int | None = None,
        include_query: bool = False,
        filter: bool = True,
    ) -> GenerationPlan:
        """Check the arguments, read the cache, and build the prompts of the misses."""
        single = isinstance(queries, str)
        if single:
            qlist = [check_query(queries)]
        else:
            if not isinstance(queries, Sequence):
                raise InvalidInputError(
                    f"queries must be a str or a list of str, got {type(queries).__name__}"
                )
            qlist = [check_query(q, name=f"queries[{i}]") for i, q in enumerate(queries)]
        n = self.template.default_n if n is None else positive_int("n", n)
        batch_size = positive_int("batch_size", batch_size)
        new_tokens = self._max_new_tokens(max_new_tokens)
        check_sampling(do_sample=do_sample, temperature=temperature, top_p=top_p, seed=seed)
        plan = GenerationPlan(single, qlist, n, batch_size, include_query, filter)
        if not qlist:
            return plan
        if self.cache is not None and not (do_sample and seed is None):
            plan.fields = self.cache_key_fields(
                n, max_new_tokens=new_tokens, do_sample=do_sample, temperature=temperature, top_p=top_p, seed=seed,
                include_query=include_query, filter=filter,
            )
        unique = list(dict.fromkeys(qlist))
        if plan.fields is not None:
            assert self.cache is not None
            for q, value in zip(unique, self.cache.get_many(plan.fields, unique), strict=True):
                if value is not None:
                    try:
                        plan.results[q] = RationaleSet.from_dict(value, from_cache=True)
                    except InvalidInputError:
                        logger.warning("ignoring an unreadable cache entry for %r", q[:80])
        misses = [q for q in unique if q not in plan.results]
        if misses:
            # a query too long for the backend's input limit is shortened (transformers)
            plan.prompts = {q: self.lm.fit_query(q, lambda text: self._prompt(text, n)) for q in misses}
            plan.params = SamplingParams(
                max_new_tokens=new_tokens,
                do_sample=do_sample,
                temperature=temperature,
                top_p=top_p,
                seed=seed,
                # a backend that cannot stop on "n usable rationales" stops at a new section
                stop=() if self.lm.stops_on_text else SECTION_STOPS,
            )
            # the template's fixed part (instruction, examples) is shared by every prompt
            plan.probes = [self._prompt(q, n) for q in _PREFIX_PROBES]
        return plan

    def _store(self, plan: GenerationPlan, batch: list[str], texts: Sequence[str]) -> None:
        """Parse and filter one batch's generations into the plan's results (and the cache)."""
        done = [self._postprocess(q, t, plan.n, plan.include_query, plan.filter) for q, t in zip(batch, texts, strict=True)]
        for rs in done:
            plan.results[rs.query] = rs
        if plan.fields is not None:
            assert self.cache is not None
            self.cache.put_many(plan.fields, [(rs.query, rs.to_dict()) for rs in done])

    def complete(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int = 128,
        chat: bool = True,
        do_sample: bool = False,
        temperature: float = 0.7,
        seed: int | None = None,
        stop: Sequence[str] = (),
        batch_size: int = 8,
        show_progress: bool | None = None,
    ) -> list[str]:
        """Raw text completion with this generator's LM (the verifier and the QA evaluation
        use it): :meth:`meteora.lm.base.CompleteMixin.complete`, the one completion path.

        Example:
            >>> gen.complete(["Answer yes or no: is the sky blue?"], max_new_tokens=3)  # doctest: +SKIP
            ['Yes']
        """
        return self.lm.complete(
            prompts, max_new_tokens=max_new_tokens, chat=chat, do_sample=do_sample, temperature=temperature,
            seed=seed, stop=stop, batch_size=batch_size, show_progress=show_progress,
        )

    def __repr__(self) -> str:
        adapter = f", adapter={self.adapter_id!r}" if self.adapter_id else ""
        cache = f", cache={str(self.cache.path)!r}" if self.cache is not None else ""
        return (
            f"RationaleGenerator(model={self.model_id!r}, backend={self.backend!r}{adapter}, "
            f"template={self.template.name!r}{cache})"
        )

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
  (transformers; other backends stop at EOS, a new ``###`` section or
  ``max_new_tokens``), so a model that never emits EOS (the okoene adapter) costs no
  more than it must.
* Optional persistent cache (:class:`~meteora.rationales.cache.RationaleCache`): hits
  skip the model entirely.
* Backends (:mod:`meteora.lm`): transformers (any hub id or local folder, PEFT
  adapter, optional 4-bit NF4 with bitsandbytes, or an already-built ``(model,
  tokenizer)``), llama.cpp (a GGUF in-process; the offline default, ~4x faster on a
  CPU, PEFT LoRA adapters converted once) and OpenAI-compatible servers (vLLM,
  llama.cpp server, Ollama...). ``from_pretrained(backend="auto")`` picks one.

Beside this module: :mod:`~meteora.rationales.rationale_set` (the result type),
:mod:`~meteora.rationales.loading` (``from_pretrained``, ``from_preset``),
:mod:`~meteora.rationales.completion` (``complete``), :mod:`~meteora.rationales.stopping`
(the early stop) and :mod:`~meteora.rationales.checks` (argument checks).

Example:
    >>> gen = RationaleGenerator.from_pretrained()  # offline SmolLM2  # doctest: +SKIP
    >>> rs = gen.generate("Does aspirin reduce stroke risk in the elderly?", n=3)  # doctest: +SKIP
    >>> rs.rationales  # doctest: +SKIP
    ['Patients: elderly adults ...', 'Treatment: aspirin ...', 'Outcome: stroke ...']
    >>> gen.complete(["Say yes or no: is water wet?"], max_new_tokens=4)  # doctest: +SKIP
    ['Yes']
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Sequence
from typing import Any

from meteora.console import progress_enabled
from meteora.errors import InvalidInputError
from meteora.lm.base import SamplingParams
from meteora.lm.transformers import TransformersLM
from meteora.rationales.cache import RationaleCache
from meteora.rationales.checks import check_positive_int, check_sampling
from meteora.rationales.completion import CompletionMixin
from meteora.rationales.filters import filter_rationales
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

_DEFAULT_FILTER_OPTIONS: dict[str, Any] = {
    "min_words": 3,
    "max_query_overlap": 0.9,
    "near_duplicate": 0.85,
}

# ------------------------------------------------------------------------------------
# the generator
# ------------------------------------------------------------------------------------
class RationaleGenerator(FromPretrainedMixin, CompletionMixin):
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
        max_input_tokens = check_positive_int("max_input_tokens", max_input_tokens)
        if tokenizer is None and isinstance(getattr(model, "backend", None), str) and hasattr(model, "identity"):
            lm = model
            if isinstance(lm, TransformersLM):
                lm.max_input_tokens = max_input_tokens
                lm.prefix_cache = bool(prefix_cache)
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
        self._model = getattr(lm, "model", None) if lm.backend == "transformers" else None
        self._scoring_lm: TransformersLM | None = None
        # llama.cpp on the offline default also has one (to render prompts as training data)
        self.tokenizer = getattr(lm, "tokenizer", None)
        self.model_id = model_id or lm.model_id
        self.adapter_id = adapter_id if adapter_id is not None else getattr(lm, "adapter_id", None)
        self.template = (
            get_template(template)
            if template is not None
            else default_template_for(self.model_id, self.adapter_id, self.tokenizer, lm.backend)
        )
        self.cache = self._make_cache(cache)
        self.max_input_tokens = max_input_tokens
        self.max_new_tokens = (
            None
            if max_new_tokens is None
            else check_positive_int("max_new_tokens", max_new_tokens)
        )
        options = dict(_DEFAULT_FILTER_OPTIONS)
        options.update(filter_options or {})
        filter_rationales("probe", [], **options)  # validate the options now
        self.filter_options = options
        self.model_fingerprint = model_fingerprint or lm.identity().get("fingerprint")
        self._prefix_ids: dict[tuple[str, int, bool], list[int] | None] = {}

    # -- the backend -------------------------------------------------------------------
    @property
    def model(self) -> Any:
        """The transformers model (exact log-likelihoods, e.g. the QA reader's scorer).

        On the transformers backend: the model that generates. With llama.cpp on the
        offline default: the transformers copy of the same weights (the folder ``meteora
        models pull`` converted from the GGUF, plus the same adapter), loaded on first
        access. ``None`` when there is none (OpenAI-compatible servers, other GGUFs).
        """
        if self._model is None and self._scoring_lm is None and getattr(self.lm, "tokenizer_path", None):
            logger.info("loading the transformers copy of %s for exact log-likelihoods", self.model_id)
            self._scoring_lm = TransformersLM.from_pretrained(
                None, getattr(self.lm, "adapter_id", None), device="cpu"
            )
        if self._model is None and self._scoring_lm is not None:
            return self._scoring_lm.model
        return self._model

    @property
    def backend(self) -> str:
        """``"transformers"``, ``"llamacpp"`` or ``"openai"``."""
        return str(self.lm.backend)

    @property
    def _gen_tokenizer(self) -> Any:
        return self.lm.gen_tokenizer

    @property
    def prefix_cache(self) -> bool:
        return bool(getattr(self.lm, "prefix_cache", False))

    @property
    def _prefix_kv_memo(self) -> Any:
        return getattr(self.lm, "_prefix_kv_memo", None)

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
    def _add_special_tokens(self, chat: bool) -> bool:
        return not chat

    def _prompt(self, query: str, n: int) -> Any:
        """The backend-neutral prompt: chat messages (+ the response prefix to continue) or raw text."""
        if not self.template.use_chat_template:
            return self.template.render(query, n)
        msgs: list[dict[str, str]] = list(self.template.messages(query, n))
        if self.template.response_prefix:
            msgs.append({"role": "assistant", "content": self.template.response_prefix})
        return msgs

    def _render(self, query: str, n: int) -> str:
        """The prompt text for one query (transformers), shortening an over-long query to fit."""
        prompt = self.template.render(query, n, self.tokenizer)
        limit = self._input_limit()
        n_tokens = len(self._gen_tokenizer(prompt, add_special_tokens=False)["input_ids"])
        if n_tokens <= limit:
            return prompt
        q_ids = self._gen_tokenizer(query, add_special_tokens=False)["input_ids"]
        keep = max(8, len(q_ids) - (n_tokens - limit) - 8)
        short = self._gen_tokenizer.decode(q_ids[:keep], skip_special_tokens=True)
        logger.warning(
            "query of %d tokens shortened to %d so the prompt fits max_input_tokens=%d",
            len(q_ids),
            keep,
            limit,
        )
        return self.template.render(short, n, self.tokenizer)

    def _input_limit(self) -> int:
        return int(self.lm.input_limit())

    def _template_prefix(self, n: int, add_special_tokens: bool) -> list[int] | None:
        """Token ids shared by every prompt of the current template (``None`` if short)."""
        key = (self.template.fingerprint(), n, add_special_tokens)
        if key not in self._prefix_ids:
            probes = [
                self.template.render(q, n, self.tokenizer)
                for q in ("Alpha beta gamma?", "Zeta eta theta?")
            ]
            self._prefix_ids[key] = self.lm.shared_prefix(probes, add_special_tokens)
        return self._prefix_ids[key]

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
            "load_in_4bit": bool(getattr(self, "load_in_4bit", False)),
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
        if self.backend != "transformers":
            # different backends give different greedy text for the same weights; the
            # transformers key stays as it was, so existing caches remain valid
            fields["backend"] = self.lm.identity()
        return fields

    def _max_new_tokens(self, value: int | None) -> int:
        if value is not None:
            return check_positive_int("max_new_tokens", value)
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
        single = isinstance(queries, str)
        if single:
            qlist = [check_query(queries)]
        else:
            if not isinstance(queries, Sequence):
                raise InvalidInputError(
                    f"queries must be a str or a list of str, got {type(queries).__name__}"
                )
            qlist = [check_query(q, name=f"queries[{i}]") for i, q in enumerate(queries)]
        n = self.template.default_n if n is None else check_positive_int("n", n)
        batch_size = check_positive_int("batch_size", batch_size)
        new_tokens = self._max_new_tokens(max_new_tokens)
        check_sampling(do_sample=do_sample, temperature=temperature, top_p=top_p, seed=seed)
        if not qlist:
            return []

        use_cache = self.cache is not None and not (do_sample and seed is None)
        fields = self.cache_key_fields(
            n,
            max_new_tokens=new_tokens,
            do_sample=do_sample,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            include_query=include_query,
            filter=filter,
        )
        results: dict[str, RationaleSet] = {}
        unique = list(dict.fromkeys(qlist))
        if use_cache:
            assert self.cache is not None
            for q, value in zip(unique, self.cache.get_many(fields, unique), strict=True):
                if value is not None:
                    try:
                        results[q] = RationaleSet.from_dict(value, from_cache=True)
                    except InvalidInputError:
                        logger.warning("ignoring an unreadable cache entry for %r", q[:80])
        misses = [q for q in unique if q not in results]
        if misses:
            transformers = self.backend == "transformers"
            prompts: dict[str, Any] = {
                q: self._render(q, n) if transformers else self._prompt(q, n) for q in misses
            }
            # similar lengths together: less padding, faster batches
            order = sorted(misses, key=lambda q: len(str(prompts[q])))
            chat = self.template.use_chat_template
            params = SamplingParams(
                max_new_tokens=new_tokens,
                do_sample=do_sample,
                temperature=temperature,
                top_p=top_p,
                seed=seed,
                # other backends cannot stop on "n usable rationales": stop at a new section
                stop=() if transformers else SECTION_STOPS,
            )
            with self._progress(len(misses), show_progress, "rationales") as bar:
                for start in range(0, len(order), batch_size):
                    batch = order[start : start + batch_size]

                    def factory(prompt_len: int, batch: list[str] = batch) -> EnoughRationales:
                        return EnoughRationales(self, batch, prompt_len, n, filter)

                    if transformers:
                        texts = self.lm.generate_batch(
                            [prompts[q] for q in batch],
                            add_special_tokens=self._add_special_tokens(chat),
                            params=params,
                            stopper_factory=factory,
                            shared_prefix=self._template_prefix(n, self._add_special_tokens(chat)),
                        )
                    else:
                        texts = self.lm.generate([prompts[q] for q in batch], params)
                    done = [
                        self._postprocess(q, t, n, include_query, filter)
                        for q, t in zip(batch, texts, strict=True)
                    ]
                    for rs in done:
                        results[rs.query] = rs
                    if use_cache:
                        assert self.cache is not None
                        self.cache.put_many(fields, [(rs.query, rs.to_dict()) for rs in done])
                    bar.update(len(batch))
        out = [copy.deepcopy(results[q]) if qlist.count(q) > 1 else results[q] for q in qlist]
        return out[0] if single else out


    # complete(): meteora.rationales.completion

    def __repr__(self) -> str:
        backend = f", backend={self.backend!r}" if self.backend != "transformers" else ""
        adapter = f", adapter={self.adapter_id!r}" if self.adapter_id else ""
        cache = f", cache={str(self.cache.path)!r}" if self.cache is not None else ""
        return (
            f"RationaleGenerator(model={self.model_id!r}{backend}{adapter}, "
            f"template={self.template.name!r}{cache})"
        )

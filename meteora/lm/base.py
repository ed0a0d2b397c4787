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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from meteora.errors import InvalidInputError, MeteoraError

__all__ = [
    "Prompt",
    "Message",
    "SamplingParams",
    "CausalLM",
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


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
    return value


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
        _positive_int("max_new_tokens", self.max_new_tokens)
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

    Attributes:
        backend: ``"transformers"``, ``"llamacpp"`` or ``"openai"``.
        model_id: the model's name (hub id, folder, GGUF file name or served name).
        supports_loglik: :meth:`score` gives exact log-likelihoods.

    Example:
        >>> from meteora.lm import load_lm  # doctest: +SKIP
        >>> lm = load_lm("llamacpp")  # the packaged SmolLM2 GGUF  # doctest: +SKIP
        >>> lm.complete(["Answer yes or no: is the sky blue?"], max_new_tokens=3)  # doctest: +SKIP
        ['Yes']
    """

    backend: str
    model_id: str
    supports_loglik: bool

    def identity(self) -> dict[str, Any]:
        """What identifies this model's output (backend, model, weights, adapter): for cache keys."""
        ...

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams | None = None) -> list[str]:
        """The new text for each prompt (a continued assistant prefix is not repeated)."""
        ...

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
        """Each prompt as one user message (``chat=True``) or raw text; stripped new text."""
        ...

    def score(
        self, prompts: Sequence[str], continuations: Sequence[str], *, add_special_tokens: bool = False
    ) -> Any:
        """``(len(prompts), len(continuations))`` array of summed log-probabilities."""
        ...

    def next_token_logprobs(
        self, prompts: Sequence[Prompt], *, top_k: int = 20
    ) -> list[dict[str, float]]:
        """The ``top_k`` most likely next tokens (their text) and log-probabilities, per prompt."""
        ...


class CompleteMixin:
    """``complete()`` on top of ``generate()`` (shared by the backends)."""

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams | None = None) -> list[str]:
        raise NotImplementedError

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
        """Raw text completion: each prompt as one user message (``chat=True``) or as it is.

        Returns only the newly generated text per prompt, stripped.
        """
        if isinstance(prompts, str) or not isinstance(prompts, Sequence):
            raise InvalidInputError(f"prompts must be a list of str, got {type(prompts).__name__}")
        for i, p in enumerate(prompts):
            if not isinstance(p, str) or not p.strip():
                raise InvalidInputError(f"prompts[{i}] must be a non-empty str")
        params = SamplingParams(
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            temperature=temperature,
            seed=seed,
            stop=tuple(stop),
        ).validate()
        _positive_int("batch_size", batch_size)
        if not prompts:
            return []
        wrapped: list[Prompt] = [as_messages(p) if chat else p for p in prompts]
        return [t.strip() for t in self.generate(wrapped, params)]

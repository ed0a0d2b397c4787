"""The OpenAI-compatible HTTP backend: vLLM, llama.cpp server, Ollama, LM Studio, TGI, OpenAI.

Chat prompts go to ``/chat/completions`` (the server applies the model's chat
template; a final assistant message is sent as is, which llama.cpp and Ollama continue
— vLLM needs ``extra_body={"continue_final_message": True, "add_generation_prompt": False}``),
raw prompts to ``/completions``. Requests run concurrently up to ``concurrency``;
connection errors, timeouts, 429 and 5xx answers are retried ``max_retries`` times with
exponential backoff. ``timeout`` bounds each attempt as a whole (connecting, sending,
and reading however slowly the server drips its answer). Every failure raises
:class:`OpenAIServerError` naming the URL and what to do.

The sync methods and the async ones share one request path: the sync calls run it on a
private event loop in a daemon thread that the object owns (so they also work inside a
program that already runs an event loop).

Needs the ``openai`` extra: ``pip install "meteora-rerank[openai]"``.

Example:
    >>> lm = OpenAICompatLM("http://127.0.0.1:8000/v1", model="mistral-med")  # doctest: +SKIP
    >>> lm.complete(["Answer yes or no: is the sky blue?"], max_new_tokens=3)  # doctest: +SKIP
    ['Yes']
    >>> import asyncio
    >>> asyncio.run(lm.agenerate(["The sky is"]))  # doctest: +SKIP
    [' blue']
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from meteora.errors import InvalidInputError, require
from meteora.lm.base import (
    CompleteMixin,
    LMServerError,
    Prompt,
    SamplingParams,
    TextCheck,
    UnsupportedOperationError,
    check_prompts,
    cut_at_stop,
    strip_prefix,
    top_logprobs_of,
)

__all__ = ["OpenAICompatLM", "OpenAIServerError"]

logger = logging.getLogger(__name__)

#: sent when no API key is given: local servers ignore it, the client needs a string
_NO_KEY = "no-key"


class OpenAIServerError(LMServerError):
    """An OpenAI-compatible server refused, failed, timed out or answered something unusable."""


def _check_positive(name: str, value: Any, *, integer: bool = True, allow_zero: bool = False) -> None:
    bad = isinstance(value, bool) or not isinstance(value, int if integer else (int, float))
    if bad or value < 0 or (value == 0 and not allow_zero):
        kind = "integer" if integer else "number"
        raise InvalidInputError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} {kind}, got {value!r}")


class OpenAICompatLM(CompleteMixin):
    """A model served over an OpenAI-compatible HTTP API, behind the :class:`~meteora.lm.CausalLM` protocol.

    Args:
        base_url: the API root, e.g. ``http://127.0.0.1:8000/v1``.
        model: the served model name (vLLM: the LoRA name to use an adapter it serves).
        api_key: bearer token; ``None`` for servers without auth (no dummy key needed).
        timeout: seconds per request attempt, all of it: connecting, sending and reading
            the whole answer (a server that keeps sending a byte at a time is cut off).
        max_retries: retries after a connection error, timeout, 429 or 5xx.
        backoff: first retry delay in seconds (doubled each retry, with jitter).
        concurrency: requests in flight at once.
        extra_body: extra JSON fields sent with every request (server-specific options).

    Example:
        >>> lm = OpenAICompatLM("http://127.0.0.1:8080/v1", model="smollm2", timeout=30)  # doctest: +SKIP
    """

    backend = "openai"
    supports_loglik = False

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
        backoff: float = 0.5,
        concurrency: int = 4,
        extra_body: Mapping[str, Any] | None = None,
    ) -> None:
        require("openai", "openai", "the OpenAI-compatible HTTP backend")
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise InvalidInputError(f"base_url must be an http(s) URL such as http://127.0.0.1:8000/v1, got {base_url!r}")
        _check_positive("timeout", timeout, integer=False)
        _check_positive("max_retries", max_retries, allow_zero=True)
        _check_positive("backoff", backoff, integer=False, allow_zero=True)
        _check_positive("concurrency", concurrency)
        self.base_url = base_url.rstrip("/")
        self.model_id = model or "default"
        self.api_key = api_key
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.backoff = float(backoff)
        self.concurrency = concurrency
        self.extra_body = dict(extra_body or {})
        self._aclient: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_client: Any = None
        self._loop_lock = threading.Lock()

    def identity(self) -> dict[str, Any]:
        """Backend, server URL and model name (cache keys)."""
        return {"backend": self.backend, "model": self.model_id, "url": self.base_url, "adapter": None}

    def __repr__(self) -> str:
        return f"OpenAICompatLM(base_url={self.base_url!r}, model={self.model_id!r})"

    # -- clients -------------------------------------------------------------------------
    def _kwargs(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "api_key": self.api_key or _NO_KEY,
            "timeout": self.timeout,
            "max_retries": 0,  # retried here, with errors that name the URL
        }

    @property
    def aclient(self) -> Any:
        """The ``AsyncOpenAI`` client of the caller's event loop (the async methods)."""
        if self._aclient is None:
            import openai

            self._aclient = openai.AsyncOpenAI(**self._kwargs())
        return self._aclient

    def _run(self, coro_factory: Any) -> Any:
        """Run ``coro_factory(client)`` on the private loop (the sync methods) and wait."""
        with self._loop_lock:
            if self._loop is None or self._loop.is_closed():
                import openai

                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="meteora-openai-loop", daemon=True).start()
                self._loop = loop
                self._loop_client = openai.AsyncOpenAI(**self._kwargs())
            loop, client = self._loop, self._loop_client
        return asyncio.run_coroutine_threadsafe(coro_factory(client), loop).result()

    def close(self) -> None:
        """Close the HTTP clients and stop the private loop (also done at garbage collection)."""
        with self._loop_lock:
            loop, client, self._loop, self._loop_client = self._loop, self._loop_client, None, None
        if loop is not None and not loop.is_closed():
            if client is not None:
                asyncio.run_coroutine_threadsafe(client.close(), loop).result(timeout=5)
            loop.call_soon_threadsafe(loop.stop)

    def __del__(self) -> None:  # pragma: no cover - best effort at interpreter exit
        loop = getattr(self, "_loop", None)
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_aclient=None, _loop=None, _loop_client=None, _loop_lock=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._loop_lock = threading.Lock()

    # -- requests ------------------------------------------------------------------------
    def _body(self, prompt: Prompt, params: SamplingParams, extra: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {"model": self.model_id, "max_tokens": params.max_new_tokens}
        if params.do_sample:
            body.update(temperature=float(params.temperature), top_p=float(params.top_p))
            if params.seed is not None:
                body["seed"] = int(params.seed)
        else:
            body["temperature"] = 0.0
        if params.stop:
            body["stop"] = list(params.stop)
        if extra:
            body.update(extra)
        if self.extra_body:
            body["extra_body"] = dict(self.extra_body)
        if isinstance(prompt, str):
            body["prompt"] = prompt
            return "completions", body
        body["messages"] = [dict(m) for m in prompt]
        return "chat", body

    def _error(self, exc: Exception) -> OpenAIServerError:
        import openai

        url = self.base_url
        if isinstance(exc, (openai.APITimeoutError, asyncio.TimeoutError, TimeoutError)):
            return OpenAIServerError(
                f"the LM server at {url} did not answer within {self.timeout:g} s; raise timeout=, lower "
                "max_new_tokens or concurrency, or check the server's load",
                url=url,
            )
        if isinstance(exc, openai.APIConnectionError):
            return OpenAIServerError(
                f"could not connect to the LM server at {url} ({exc.__cause__ or exc}); is it running and is "
                "base_url right (it usually ends in /v1)?",
                url=url,
            )
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            detail = str(getattr(exc, "message", "") or exc)[:300]
            if status in (401, 403):
                what = "pass the server's api_key="
            elif status == 404:
                what = f"check base_url (usually ending in /v1) and that the server serves model {self.model_id!r}"
            elif status == 429:
                what = "the server is rate limiting: lower concurrency= or retry later"
            elif status >= 500:
                what = "the server failed; check its log (out of memory, crashed worker) and retry"
            else:
                what = "the server rejected the request; check model=, max_new_tokens and the prompt length"
            return OpenAIServerError(f"the LM server at {url} answered HTTP {status}: {detail}; {what}", url=url, status=status)
        if isinstance(exc, openai.APIResponseValidationError):
            return OpenAIServerError(
                f"the LM server at {url} sent a response that is not an OpenAI-shaped answer ({exc}); is base_url "
                "an OpenAI-compatible API?",
                url=url,
            )
        return OpenAIServerError(f"request to the LM server at {url} failed: {exc.__class__.__name__}: {exc}", url=url)

    def _retryable(self, exc: Exception) -> bool:
        import openai

        if isinstance(exc, openai.APIStatusError):
            return exc.status_code == 429 or exc.status_code >= 500
        return isinstance(exc, (openai.APIConnectionError, asyncio.TimeoutError, TimeoutError))

    def _delay(self, attempt: int) -> float:
        return self.backoff * (2**attempt) * (0.5 + random.random() / 2)

    def _parse(self, kind: str, response: Any, prompt: Prompt, params: SamplingParams, logprobs: bool) -> Any:
        url = self.base_url
        data = response.model_dump() if hasattr(response, "model_dump") else response
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise OpenAIServerError(
                f"the LM server at {url} answered without choices ({str(data)[:200]!r}); is base_url an "
                "OpenAI-compatible API?",
                url=url,
            )
        if logprobs:
            try:
                return top_logprobs_of(data, f"the LM server at {url}")
            except LMServerError:
                raise
            except (KeyError, TypeError, IndexError, AttributeError) as exc:
                raise OpenAIServerError(f"the LM server at {url} sent malformed logprobs ({exc})", url=url) from exc
        choice = choices[0]
        if kind == "chat":
            text = (choice.get("message") or {}).get("content")
        else:
            text = choice.get("text")
        if not isinstance(text, str):
            raise OpenAIServerError(
                f"the LM server at {url} answered without text ({str(choice)[:200]!r}); check that model "
                f"{self.model_id!r} is a text-generation model",
                url=url,
            )
        if not isinstance(prompt, str) and prompt[-1]["role"] == "assistant":
            text = strip_prefix(text, prompt[-1]["content"])
        return cut_at_stop(text, params.stop)

    async def _request(
        self, client: Any, prompt: Prompt, params: SamplingParams, sem: asyncio.Semaphore, extra: dict[str, Any] | None = None
    ) -> Any:
        """One request with retries: the one request path of the sync and async methods.

        Each attempt is bounded as a whole by ``timeout`` (``asyncio.wait_for`` cancels it,
        which closes its connection), so a server that drips its answer cannot hold it."""
        import openai

        kind, body = self._body(prompt, params, extra)
        create = client.chat.completions.create if kind == "chat" else client.completions.create
        attempt = 0
        async with sem:
            while True:
                try:
                    response = await asyncio.wait_for(create(**body), timeout=self.timeout)
                    break
                except Exception as exc:
                    if not isinstance(exc, (openai.OpenAIError, asyncio.TimeoutError, TimeoutError)):
                        raise OpenAIServerError(
                            f"the LM server at {self.base_url} sent an unreadable answer ({exc.__class__.__name__}: "
                            f"{exc}); is base_url an OpenAI-compatible API?",
                            url=self.base_url,
                        ) from exc
                    if attempt < self.max_retries and self._retryable(exc):
                        delay = self._delay(attempt)
                        logger.warning(
                            "LM server %s: %s; retry %d in %.1f s", self.base_url, exc.__class__.__name__, attempt + 1, delay
                        )
                        await asyncio.sleep(delay)
                        attempt += 1
                        continue
                    raise self._error(exc) from exc
        return self._parse(kind, response, prompt, params, logprobs=bool(extra))

    async def _gather(
        self, client: Any, prompts: Sequence[Prompt], params: SamplingParams, extras: Sequence[dict[str, Any] | None] | None = None
    ) -> list[Any]:
        sem = asyncio.Semaphore(self.concurrency)
        extras = extras if extras is not None else [None] * len(prompts)
        return list(
            await asyncio.gather(*(self._request(client, p, params, sem, e) for p, e in zip(prompts, extras, strict=True)))
        )

    # -- protocol --------------------------------------------------------------------------
    def generate(
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams | None = None,
        *,
        until: TextCheck | None = None,
        prefix_probes: Sequence[Prompt] | None = None,
    ) -> list[str]:
        """New text per prompt; up to ``concurrency`` requests at once (the server stops at
        EOS, ``max_new_tokens`` or ``params.stop``; ``until`` and ``prefix_probes`` are not
        used over HTTP).

        Example:
            >>> lm.generate([[{"role": "user", "content": "Hi"}]])  # doctest: +SKIP
            ['Hello! How can I help you today?']
        """
        plist = check_prompts(prompts)
        params = (params or SamplingParams()).validate()
        if not plist:
            return []
        return self._run(lambda client: self._gather(client, plist, params))

    async def agenerate(self, prompts: Sequence[Prompt], params: SamplingParams | None = None) -> list[str]:
        """Async :meth:`generate` (``AsyncOpenAI``; ``concurrency`` requests in flight)."""
        plist = check_prompts(prompts)
        params = (params or SamplingParams()).validate()
        return await self._gather(self.aclient, plist, params)

    async def acomplete(self, prompts: Sequence[str], *, max_new_tokens: int = 128, chat: bool = True, **kwargs: Any) -> list[str]:
        """Async :meth:`complete` (the same prompts and parameters; all requests at once,
        ``concurrency`` in flight)."""
        wrapped, params = self.completion_inputs(prompts, max_new_tokens=max_new_tokens, chat=chat, **kwargs)
        return [t.strip() for t in await self.agenerate(wrapped, params)]

    def score(self, prompts: Sequence[str], continuations: Sequence[str], *, add_special_tokens: bool = False) -> Any:
        """Not available over the OpenAI API (no prompt log-probabilities in its standard form).

        Raises:
            UnsupportedOperationError: always; use :meth:`next_token_logprobs` or ``backend="transformers"``.
        """
        raise UnsupportedOperationError(
            f"the OpenAI-compatible backend ({self.base_url}) cannot score continuations exactly; use "
            'next_token_logprobs() for single-token answers, or backend="transformers"'
        )

    def next_token_logprobs(self, prompts: Sequence[Prompt], *, top_k: int = 20) -> list[dict[str, float]]:
        """The ``top_k`` most likely next tokens and log-probabilities, where the server gives logprobs.

        Raises:
            OpenAIServerError: the server returned no logprobs (say so in the message).
        """
        plist = check_prompts(prompts)
        _check_positive("top_k", top_k)
        params = SamplingParams(max_new_tokens=1)
        if not plist:
            return []
        extras = [{"logprobs": True, "top_logprobs": top_k} if not isinstance(p, str) else {"logprobs": top_k} for p in plist]
        return self._run(lambda client: self._gather(client, plist, params, extras))

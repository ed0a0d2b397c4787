"""Exact continuation log-likelihoods under a transformers causal LM.

:class:`LoglikScorer` is the one implementation of exact scoring in meteora: the QA
harness's loglik answer mode (:mod:`meteora.evaluation.reader`), the
reader training's evaluation and :meth:`meteora.lm.transformers.TransformersLM.score` /
``next_token_logprobs`` all use it. ``scorer(prompts, continuations)`` sums the token
log-probabilities of each continuation after each prompt; :meth:`LoglikScorer.tail_logprobs`
gives the log-softmax of the last positions of a batch of token sequences.

torch is imported only when a scorer runs.

Example:
    >>> scorer = LoglikScorer(model, tokenizer, batch_size=4)  # doctest: +SKIP
    >>> scorer(["Is the sky blue? Answer:"], [" yes", " no"])  # doctest: +SKIP
    array([[-0.9, -1.7]])
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from meteora.errors import InvalidInputError
from meteora.lm.loading import model_device

__all__ = ["LoglikScorer"]

logger = logging.getLogger(__name__)


class LoglikScorer:
    """Log-likelihood of continuations under a causal LM, batched.

    ``scorer(prompts, continuations)`` returns a ``(len(prompts), len(continuations))``
    float64 array: entry ``[i, j]`` is ``log P(continuation_j | prompt_i)``, the sum of
    the token log-probabilities of the continuation's tokens appended to the prompt's
    (tokens are concatenated, exactly as generation would produce them). Prompts are
    left-padded with explicit position ids, and only the logits that are needed are
    computed (``logits_to_keep``), so a 49k-token vocabulary costs little memory.

    Args:
        model: a transformers causal LM (PEFT and 4-bit models work).
        tokenizer: its tokenizer.
        batch_size: sequences per forward pass.
        max_length: longest input in tokens (``None``: the model's
            ``max_position_embeddings``); longer prompts lose their start (logged).

    Example:
        >>> scorer = LoglikScorer(gen.model, gen.tokenizer)  # doctest: +SKIP
        >>> scorer(["Is the sky blue? Answer:"], [" yes", " no"]).shape  # doctest: +SKIP
        (1, 2)
    """

    def __init__(
        self, model: Any, tokenizer: Any, *, batch_size: int = 8, max_length: int | None = None
    ) -> None:
        if model is None or tokenizer is None:
            raise InvalidInputError("LoglikScorer needs a causal LM and its tokenizer")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError(f"batch_size must be a positive integer, got {batch_size!r}")
        if max_length is None:
            max_pos = getattr(getattr(model, "config", None), "max_position_embeddings", None)
            max_length = int(max_pos) if isinstance(max_pos, int) and max_pos > 0 else 4096
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
            raise InvalidInputError(f"max_length must be an integer >= 2, got {max_length!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length
        #: prompts that lost their start to ``max_length`` so far
        self.truncated = 0
        pad = getattr(tokenizer, "pad_token_id", None)
        if pad is None:
            pad = getattr(tokenizer, "eos_token_id", None)
        self.pad_id = int(pad) if pad is not None else 0
        self._supports_keep = True

    @classmethod
    def from_reader(cls, reader: Any, **kwargs: Any) -> LoglikScorer:
        """A scorer on a reader's ``.model`` and ``.tokenizer`` (e.g. a RationaleGenerator)."""
        model, tok = getattr(reader, "model", None), getattr(reader, "tokenizer", None)
        if model is None or tok is None:
            raise InvalidInputError(
                f"answer_mode='loglik' needs a reader with .model and .tokenizer (a RationaleGenerator has both); "
                f"{type(reader).__name__} lacks them. Pass scorer=..., or use answer_mode='generate'"
            )
        return cls(model, tok, **kwargs)

    def _encode(self, text: str, add_special_tokens: bool) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])

    def __call__(
        self,
        prompts: Sequence[str],
        continuations: Sequence[str],
        *,
        add_special_tokens: bool = False,
    ) -> np.ndarray:
        """Score every continuation after every prompt (see the class docstring).

        ``add_special_tokens`` is used for the prompts (``True`` for raw text, so a BOS
        is added where the tokenizer adds one; ``False`` for chat-rendered text, which
        carries its own special tokens).
        """
        if isinstance(prompts, str) or isinstance(continuations, str):
            raise InvalidInputError("prompts and continuations must be lists of str")
        prompts, continuations = list(prompts), list(continuations)
        if not continuations:
            raise InvalidInputError(
                "continuations is empty; give at least one continuation to score"
            )
        cont_ids = [self._encode(c, False) for c in continuations]
        for c, ids in zip(continuations, cont_ids, strict=True):
            if not ids:
                raise InvalidInputError(f"continuation {c!r} encodes to no tokens")
        longest_cont = max(len(c) for c in cont_ids)
        out = np.zeros((len(prompts), len(continuations)), dtype=np.float64)
        if not prompts:
            return out
        # unique model inputs: prompt + continuation[:-1]; every single-token
        # continuation of a prompt shares the bare prompt as its input
        inputs: dict[tuple[int, tuple[int, ...]], list[int]] = {}
        wanted: dict[tuple[int, tuple[int, ...]], list[tuple[int, list[int]]]] = {}
        for i, p in enumerate(prompts):
            p_ids = self._encode(p, add_special_tokens)
            room = self.max_length - (longest_cont - 1)
            if len(p_ids) > room:
                self.truncated += 1
                logger.warning(
                    "prompt of %d tokens lost its first %d tokens (max_length=%d)",
                    len(p_ids),
                    len(p_ids) - room,
                    self.max_length,
                )
                p_ids = p_ids[len(p_ids) - room :]
            if not p_ids:
                raise InvalidInputError(f"prompts[{i}] encodes to no tokens")
            for j, c in enumerate(cont_ids):
                key = (i, tuple(c[:-1]))
                if key not in inputs:
                    inputs[key] = p_ids + c[:-1]
                    wanted[key] = []
                wanted[key].append((j, c))
        keys = sorted(inputs, key=lambda k: len(inputs[k]))
        for start in range(0, len(keys), self.batch_size):
            batch = keys[start : start + self.batch_size]
            keep = max(len(k[1]) + 1 for k in batch)  # positions whose next-token logits we need
            logprobs = self.tail_logprobs([inputs[k] for k in batch], keep)
            for r, key in enumerate(batch):
                n_prefix = len(key[1])
                for j, c in wanted[key]:
                    # logits row t (of the kept tail) predicts the token after position -keep+t
                    total = 0.0
                    for t, tok_id in enumerate(c):
                        row = keep - 1 - n_prefix + t
                        total += float(logprobs[r, row, tok_id])
                    out[key[0], j] = total
        return out

    def tail_logprobs(self, seqs: list[list[int]], keep: int) -> Any:
        """Log-softmax of the last ``keep`` positions of token sequences, in one forward pass.

        The sequences are left-padded with explicit position ids, so each is scored as
        if alone. Row ``t`` of a sequence's tail is the next-token distribution after
        its position ``-keep + t``.

        Args:
            seqs: token-id sequences (one batch; none empty).
            keep: positions to keep at the end of each sequence (``>= 1``).

        Returns:
            a float32 CPU tensor of shape ``(len(seqs), keep, vocab_size)``.

        Example:
            >>> scorer.tail_logprobs([[1, 5, 9], [1, 7]], 1)[:, -1].argmax(-1)  # doctest: +SKIP
            tensor([312, 44])
        """
        import torch

        if not seqs or any(len(s) == 0 for s in seqs):
            raise InvalidInputError("tail_logprobs needs one or more non-empty token sequences")
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise InvalidInputError(f"keep must be a positive integer, got {keep!r}")
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):
            ids[r, width - len(s) :] = torch.tensor(s, dtype=torch.long)
            mask[r, width - len(s) :] = 1
        pos = (mask.cumsum(dim=1) - 1).clamp(min=0)
        device = model_device(self.model)
        ids, mask, pos = ids.to(device), mask.to(device), pos.to(device)
        with torch.inference_mode():
            logits = None
            if self._supports_keep:
                try:
                    logits = self.model(
                        input_ids=ids,
                        attention_mask=mask,
                        position_ids=pos,
                        use_cache=False,
                        logits_to_keep=keep,
                    ).logits
                except TypeError:
                    logger.debug("model does not take logits_to_keep; computing every logit")
                    self._supports_keep = False
            if logits is None:
                logits = self.model(
                    input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False
                ).logits
            return torch.log_softmax(logits[:, -keep:, :].float(), dim=-1).cpu()

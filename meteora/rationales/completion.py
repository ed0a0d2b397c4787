"""Raw text completion with a rationale generator's language model.

:class:`CompletionMixin` gives
:class:`~meteora.rationales.generator.RationaleGenerator` its ``complete`` method: any
prompt, not a rationale prompt, through the same backend, batched and (optionally)
wrapped as one user message in the model's chat template. The verifier and the QA
evaluation use it.

Example:
    >>> from meteora.rationales import RationaleGenerator
    >>> gen = RationaleGenerator.from_pretrained()  # doctest: +SKIP
    >>> gen.complete(["Answer yes or no: is the sky blue?"], max_new_tokens=3)  # doctest: +SKIP
    ['Yes']
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from meteora.errors import InvalidInputError
from meteora.lm.base import SamplingParams, as_messages
from meteora.rationales.checks import check_positive_int
from meteora.types import check_query

__all__ = ["CompletionMixin"]

logger = logging.getLogger(__name__)


class CompletionMixin:
    """Adds ``complete`` to a rationale generator.

    Mixed into :class:`~meteora.rationales.generator.RationaleGenerator` only; it uses
    that class's ``lm``, ``backend`` and ``_progress``.
    """

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
            chat: wrap each prompt as one user message through the model's chat
                template (when it has one); ``False`` sends the text as it is.
            do_sample, temperature, seed: sampling as in :meth:`generate`.
            batch_size: prompts per batch.

        Returns:
            Only the newly generated text per prompt, special tokens removed. A prompt
            longer than ``max_input_tokens`` is cut in the middle (its start and end are
            kept) with a warning (transformers backend).

        Example:
            >>> gen.complete(["Answer yes or no: is the sky blue?"], max_new_tokens=3)  # doctest: +SKIP
            ['Yes']
        """
        if isinstance(prompts, str) or not isinstance(prompts, Sequence):
            raise InvalidInputError(f"prompts must be a list of str, got {type(prompts).__name__}")
        plist = [check_query(p, name=f"prompts[{i}]") for i, p in enumerate(prompts)]
        params = SamplingParams(
            max_new_tokens=check_positive_int("max_new_tokens", max_new_tokens),
            do_sample=do_sample,
            temperature=temperature,
            top_p=0.95,
            seed=seed,
        ).validate()
        batch_size = check_positive_int("batch_size", batch_size)
        if not plist:
            return []
        transformers = self.backend == "transformers"
        if transformers:
            use_chat = bool(chat and self.lm.has_chat_template)
            if chat and not use_chat:
                logger.debug("tokenizer has no chat template; sending prompts as raw text")
            rendered: list[Any] = [
                self.lm.fit(self.lm.render(as_messages(p))[0] if use_chat else p) for p in plist
            ]
        else:
            use_chat = bool(chat)
            rendered = [as_messages(p) if use_chat else p for p in plist]
        order = sorted(range(len(rendered)), key=lambda i: len(str(rendered[i])))
        outputs: list[str] = [""] * len(rendered)
        with self._progress(len(rendered), show_progress, "completions") as bar:
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                chunk = [rendered[i] for i in idx]
                if transformers:
                    texts = self.lm.generate_batch(chunk, add_special_tokens=not use_chat, params=params)
                else:
                    texts = self.lm.generate(chunk, params)
                for i, t in zip(idx, texts, strict=True):
                    outputs[i] = t.strip()
                bar.update(len(idx))
        return outputs

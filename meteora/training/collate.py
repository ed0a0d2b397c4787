"""Tokenisation with response-only labels, and the padding collator used for scoring.

Supervised fine-tuning computes the loss on the response only: every prompt token gets
the label ``-100`` (ignored by the cross-entropy), every response token keeps its id,
and the sequence ends with the tokenizer's EOS token *inside* the labels so the model
learns to stop. :func:`build_sft_features` does exactly that and is what
:func:`meteora.training.sft.train_sft` feeds to the trainer, so tests can check the mask
on the very features that are trained on.

Example:
    >>> from transformers import AutoTokenizer  # doctest: +SKIP
    >>> tok = AutoTokenizer.from_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct")  # doctest: +SKIP
    >>> f = build_sft_features(tok, "### Query:\\nq\\n\\n### Response:\\n", "Look for trials.", 64)  # doctest: +SKIP
    >>> f["labels"][-1] == tok.eos_token_id  # doctest: +SKIP
    True
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from meteora.errors import InvalidInputError

__all__ = ["IGNORE_INDEX", "build_sft_features", "prompt_length", "render_example", "pad_batch"]

logger = logging.getLogger(__name__)

#: Label value ignored by the loss.
IGNORE_INDEX = -100

Message = Mapping[str, str]


def _is_messages(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(
        isinstance(m, Mapping) and "content" in m for m in value
    )


def render_example(
    tokenizer: Any, prompt: str | Sequence[Message], completion: str | Sequence[Message]
) -> tuple[str, str]:
    """Turn a (possibly conversational) example into ``(prompt_text, completion_text)``.

    Strings pass through unchanged. A prompt given as chat messages is rendered with the
    tokenizer's chat template and the generation prompt; a completion given as messages
    contributes the concatenated assistant contents.

    Example:
        >>> render_example(None, "Q: x\\nA:", " y")
        ('Q: x\\nA:', ' y')
    """
    if _is_messages(prompt):
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise InvalidInputError(
                "a conversational prompt (a list of messages) needs a tokenizer with a chat template; "
                "render the prompt as text first or use a chat model"
            )
        prompt = tokenizer.apply_chat_template(
            list(prompt), tokenize=False, add_generation_prompt=True
        )
    if _is_messages(completion):
        completion = "".join(
            str(m["content"]) for m in completion if m.get("role", "assistant") == "assistant"
        )
    if not isinstance(prompt, str) or not isinstance(completion, str):
        raise InvalidInputError(
            f"prompt and completion must be strings or lists of chat messages, got "
            f"{type(prompt).__name__} and {type(completion).__name__}"
        )
    return prompt, completion


def _ids(tokenizer: Any, text: str, *, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def _add_special(tokenizer: Any, prompt_text: str) -> bool:
    """Add the tokenizer's special tokens (BOS) unless the text already starts with BOS.

    Raw templates are tokenised with special tokens at inference; chat templates write
    BOS into the text themselves, so adding it again would double it.
    """
    bos = getattr(tokenizer, "bos_token", None)
    return not (bos and prompt_text.startswith(bos))


def prompt_length(tokenizer: Any, prompt: str) -> int:
    """Number of tokens of ``prompt`` as the model sees it at inference (special tokens included)."""
    return len(_ids(tokenizer, prompt, special=_add_special(tokenizer, prompt)))


def build_sft_features(
    tokenizer: Any,
    prompt: str | Sequence[Message],
    completion: str | Sequence[Message],
    max_length: int | None = None,
    *,
    add_eos: bool = True,
) -> dict[str, Any]:
    """Tokenise one example with the loss on the response only.

    The prompt is tokenised exactly as at inference (with the tokenizer's special
    tokens, e.g. BOS, unless the text already starts with BOS as chat templates write it). The response is taken from the tokenisation of the whole text
    when the prompt's tokens are a prefix of it (the usual case); when tokens merge
    across the boundary the response is tokenised on its own instead, so the prompt part
    never differs from what the model sees when generating. EOS is appended to the
    response (and kept in the labels) unless it already ends with it.

    Truncation keeps the start (``max_length`` tokens): a long response loses its end,
    and an example whose prompt alone fills ``max_length`` has no response token left
    (``n_completion_tokens == 0``), which callers should drop.

    Args:
        tokenizer: a Hugging Face tokenizer with ``eos_token_id``.
        prompt: prompt text, or chat messages (rendered with the chat template).
        completion: response text (or assistant messages).
        max_length: cap on the total number of tokens (``None``: no cap).
        add_eos: append the EOS token to the response.

    Returns:
        ``{"input_ids", "attention_mask", "labels", "n_prompt_tokens",
        "n_completion_tokens", "truncated"}`` with ``labels[i] == -100`` exactly on the
        prompt tokens.

    Example:
        >>> from transformers import AutoTokenizer  # doctest: +SKIP
        >>> tok = AutoTokenizer.from_pretrained("gpt2")  # doctest: +SKIP
        >>> f = build_sft_features(tok, "Question: 2+2?\\nAnswer:", " 4", 32)  # doctest: +SKIP
        >>> f["labels"][: f["n_prompt_tokens"]] == [-100] * f["n_prompt_tokens"]  # doctest: +SKIP
        True
    """
    if max_length is not None and (
        isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2
    ):
        raise InvalidInputError(f"max_length must be an integer >= 2 or None, got {max_length!r}")
    prompt_text, completion_text = render_example(tokenizer, prompt, completion)
    eos_id = tokenizer.eos_token_id
    if add_eos and eos_id is None:
        raise InvalidInputError(
            "the tokenizer has no EOS token, so the model cannot learn to stop; set tokenizer.eos_token first"
        )
    special = _add_special(tokenizer, prompt_text)
    prompt_ids = _ids(tokenizer, prompt_text, special=special)
    full_ids = _ids(tokenizer, prompt_text + completion_text, special=special)
    if full_ids[: len(prompt_ids)] == prompt_ids:
        completion_ids = full_ids[len(prompt_ids) :]
    else:
        logger.debug("prompt tokens merge with the response; tokenising the response on its own")
        completion_ids = _ids(tokenizer, completion_text, special=False)
    if add_eos and (not completion_ids or completion_ids[-1] != eos_id):
        completion_ids = [*completion_ids, eos_id]

    input_ids = prompt_ids + completion_ids
    labels = [IGNORE_INDEX] * len(prompt_ids) + list(completion_ids)
    truncated = max_length is not None and len(input_ids) > max_length
    if truncated:
        input_ids = input_ids[:max_length]
        labels = labels[:max_length]
    n_prompt = min(len(prompt_ids), len(input_ids))
    return {
        "input_ids": input_ids,
        "attention_mask": [1] * len(input_ids),
        "labels": labels,
        "n_prompt_tokens": n_prompt,
        "n_completion_tokens": len(input_ids) - n_prompt,
        "truncated": truncated,
    }


def pad_batch(features: Sequence[Mapping[str, Sequence[int]]], pad_token_id: int) -> dict[str, Any]:
    """Right-pad ``input_ids`` / ``attention_mask`` / ``labels`` into tensors.

    Padding positions get ``pad_token_id`` in the inputs, ``0`` in the attention mask and
    ``-100`` in the labels.

    Example:
        >>> b = pad_batch([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}], 0)
        >>> b["input_ids"].tolist(), b["labels"].tolist(), b["attention_mask"].tolist()
        ([[5, 6, 7], [8, 0, 0]], [[-100, 6, 7], [8, -100, -100]], [[1, 1, 1], [1, 0, 0]])
    """
    import torch

    if not features:
        raise InvalidInputError("cannot pad an empty batch")
    width = max(len(f["input_ids"]) for f in features)
    ids = torch.full((len(features), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(features), width), dtype=torch.long)
    labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
    for i, f in enumerate(features):
        n = len(f["input_ids"])
        ids[i, :n] = torch.tensor(list(f["input_ids"]), dtype=torch.long)
        mask[i, :n] = 1
        labels[i, :n] = torch.tensor(list(f.get("labels", f["input_ids"])), dtype=torch.long)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}

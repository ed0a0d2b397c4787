"""The reader of the QA harness: prompts, answer parsing, metrics, label scoring.

A *reader* answers a PubMedQA question with ``yes``, ``no`` or ``maybe``. This module
holds what every reader backend shares:

* prompts: :func:`build_qa_message` (the harness's instruction, rendered with the
  reader's chat template by :func:`render_reader_prompt`) and :func:`build_reader_prompt`
  (the Alpaca layout of the PubMedQA QLoRA recipe, ``### Instruction: Answer the
  following medical question concisely.`` + a context block + ``Question: …`` +
  ``### Response:``, which :mod:`meteora.training.reader` trains on); both cap the
  context text with :func:`cap_contexts`;
* answers: :func:`parse_answer` (first ``yes``/``no``/``maybe`` word of generated text),
  :func:`qa_metrics` (accuracy, macro-F1, confusion matrix);
* label scores: :class:`LoglikScorer` (exact log-likelihoods under a transformers model,
  from :mod:`meteora.lm.scoring`)
  and :func:`next_token_label_scores` (first-token log-probabilities from llama.cpp or an
  OpenAI-compatible server), pooled per label by :func:`label_scores`.

Example:
    >>> prompt, cut = build_reader_prompt("Does aspirin help?", ["Aspirin cut strokes by 20%."])
    >>> print(prompt)
    ### Instruction:
    Answer the following medical question concisely.
    <BLANKLINE>
    Context:
    [1] Aspirin cut strokes by 20%.
    <BLANKLINE>
    Question: Does aspirin help?
    <BLANKLINE>
    ### Response:
    <BLANKLINE>
    >>> parse_answer("Yes, it does.")
    'yes'
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from meteora.errors import InvalidInputError

__all__ = [
    "LABELS",
    "UNPARSED",
    "PROMPT_FORMATS",
    "parse_answer",
    "qa_metrics",
    "confusion_matrix",
    "paired_bootstrap_accuracy",
    "cap_contexts",
    "build_qa_message",
    "build_reader_prompt",
    "render_reader_prompt",
    "label_scores",
    "next_token_label_scores",
]

logger = logging.getLogger(__name__)

LABELS: tuple[str, ...] = ("yes", "no", "maybe")
UNPARSED = "unparsed"

#: Surface forms scored for each label in loglik mode (pooled with log-sum-exp).
LABEL_SPELLINGS: dict[str, tuple[str, ...]] = {
    "yes": ("yes", "Yes"),
    "no": ("no", "No"),
    "maybe": ("maybe", "Maybe"),
}

#: Prompt layouts: ``"harness"`` (:func:`build_qa_message`, chat template + ``Answer:``)
#: and ``"alpaca"`` (:func:`build_reader_prompt`, the trained reader's raw-text layout).
PROMPT_FORMATS: tuple[str, ...] = ("harness", "alpaca")

#: The instruction of the PubMedQA QLoRA recipe (Alpaca layout).
READER_INSTRUCTION = "Answer the following medical question concisely."

#: Context characters the trained reader sees at most (~450 SmolLM2 tokens: with the
#: question and the answer ~95 % of PubMedQA abstracts fit the recipe's 512 tokens).
READER_MAX_CONTEXT_CHARS = 2000

#: The text that ends every reader prompt in loglik mode (and raw-text prompts).
ANSWER_CUE = "Answer:"

_INSTRUCTION_CONTEXT = (
    "Answer the biomedical research question with yes, no or maybe, using the context from a "
    "scientific abstract."
)
_INSTRUCTION_NONE = "Answer the biomedical research question with yes, no or maybe."
_FINAL_LINE = "Reply with one word: yes, no or maybe."
_ANSWER_WORD = re.compile(r"\b(yes|no|maybe)\b", re.IGNORECASE)
_THINK = re.compile(r"<think>.*?(</think>|$)", re.IGNORECASE | re.DOTALL)


# --------------------------------------------------------------------------- parsing + metrics


def parse_answer(text: str) -> str:
    """The first ``yes``/``no``/``maybe`` word of a reader's output, else ``"unparsed"``.

    Case-insensitive, whole words only (``"Nope"`` and ``"yesterday"`` do not count);
    a ``<think>…</think>`` block is skipped first.

    Example:
        >>> parse_answer("Yes, the study shows a benefit."), parse_answer("The answer is: no.")
        ('yes', 'no')
        >>> parse_answer("Maybe yes"), parse_answer("I cannot tell."), parse_answer("Nope")
        ('maybe', 'unparsed', 'unparsed')
    """
    if not isinstance(text, str):
        raise InvalidInputError(f"text must be a str, got {type(text).__name__}")
    m = _ANSWER_WORD.search(_THINK.sub(" ", text))
    return m.group(1).lower() if m else UNPARSED


def qa_metrics(gold: Sequence[str], predicted: Sequence[str]) -> dict[str, Any]:
    """Accuracy and macro-F1 of yes/no/maybe predictions.

    * ``accuracy`` = correct / n (an ``"unparsed"`` prediction is wrong).
    * per-label F1 = ``2·TP / (2·TP + FP + FN)``; ``macro_f1`` is their mean over the
      labels that occur in ``gold`` or in the predictions (as scikit-learn's
      ``f1_score(average="macro")`` over those labels). ``"unparsed"`` is never a label
      of the average, but each one is a false negative of its gold label.
    * ``predicted_distribution`` / ``gold_distribution``: counts per label (the former
      also counts ``"unparsed"``); ``unparsed``: how many could not be parsed.

    Example:
        >>> m = qa_metrics(["yes", "no", "maybe", "yes"], ["yes", "yes", "maybe", "unparsed"])
        >>> m["accuracy"], m["f1_per_label"], m["macro_f1"], m["unparsed"]
        (0.5, {'yes': 0.5, 'no': 0.0, 'maybe': 1.0}, 0.5, 1)
    """
    if isinstance(gold, str) or isinstance(predicted, str):
        raise InvalidInputError("gold and predicted must be lists of labels, not single strings")
    gold, predicted = list(gold), list(predicted)
    if len(gold) != len(predicted):
        raise InvalidInputError(f"got {len(predicted)} predictions for {len(gold)} gold labels")
    for g in gold:
        if g not in LABELS:
            raise InvalidInputError(f"gold label {g!r} is not one of {LABELS}")
    for p in predicted:
        if p not in LABELS and p != UNPARSED:
            raise InvalidInputError(f"prediction {p!r} is not one of {LABELS} or {UNPARSED!r}")
    n = len(gold)
    correct = sum(g == p for g, p in zip(gold, predicted, strict=True))
    per_label: dict[str, float] = {}
    present = [lab for lab in LABELS if lab in gold or lab in predicted]
    for lab in LABELS:
        tp = sum(g == lab and p == lab for g, p in zip(gold, predicted, strict=True))
        fp = sum(g != lab and p == lab for g, p in zip(gold, predicted, strict=True))
        fn = sum(g == lab and p != lab for g, p in zip(gold, predicted, strict=True))
        denom = 2 * tp + fp + fn
        per_label[lab] = 2 * tp / denom if denom else 0.0
    macro = math.fsum(per_label[lab] for lab in present) / len(present) if present else 0.0
    return {
        "n": n,
        "accuracy": correct / n if n else 0.0,
        "macro_f1": macro,
        "f1_per_label": per_label,
        "predicted_distribution": {lab: predicted.count(lab) for lab in (*LABELS, UNPARSED)},
        "gold_distribution": {lab: gold.count(lab) for lab in LABELS},
        "unparsed": predicted.count(UNPARSED),
        "confusion": confusion_matrix(gold, predicted),
    }


def confusion_matrix(gold: Sequence[str], predicted: Sequence[str]) -> dict[str, dict[str, int]]:
    """``{gold label: {predicted label: count}}`` over yes/no/maybe (+ ``"unparsed"`` predictions).

    Example:
        >>> confusion_matrix(["yes", "no", "no"], ["yes", "yes", "unparsed"])["no"]
        {'yes': 1, 'no': 0, 'maybe': 0, 'unparsed': 1}
    """
    gold, predicted = list(gold), list(predicted)
    if len(gold) != len(predicted):
        raise InvalidInputError(f"got {len(predicted)} predictions for {len(gold)} gold labels")
    out = {g: {p: 0 for p in (*LABELS, UNPARSED)} for g in LABELS}
    for g, p in zip(gold, predicted, strict=True):
        if g not in out or p not in out[g]:
            raise InvalidInputError(f"labels must be yes/no/maybe (predictions also 'unparsed'), got {g!r} -> {p!r}")
        out[g][p] += 1
    return out


def paired_bootstrap_accuracy(
    gold: Sequence[str],
    a: Sequence[str],
    b: Sequence[str],
    *,
    resamples: int = 10_000,
    seed: int = 0,
) -> dict[str, Any]:
    """Paired bootstrap of ``accuracy(a) - accuracy(b)`` over the same questions.

    Every resample draws the same questions for both prediction lists (as
    :func:`meteora.metrics.paired_bootstrap_f1` does for selections). Returns the observed
    difference, its 95 % percentile interval and the share of resamples where ``a`` is
    not better.

    Example:
        >>> r = paired_bootstrap_accuracy(["yes", "no", "no", "yes"], ["yes", "no", "no", "no"],
        ...                               ["yes", "yes", "yes", "yes"], resamples=500)
        >>> r["difference"], r["n_questions"]
        (0.25, 4)
    """
    gold, a, b = list(gold), list(a), list(b)
    if not (len(gold) == len(a) == len(b)) or not gold:
        raise InvalidInputError(
            f"need the same non-zero number of gold labels and predictions, got {len(gold)}, {len(a)}, {len(b)}"
        )
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise InvalidInputError(f"resamples must be a positive integer, got {resamples!r}")
    ca = np.array([g == p for g, p in zip(gold, a, strict=True)], dtype=np.float64)
    cb = np.array([g == p for g, p in zip(gold, b, strict=True)], dtype=np.float64)
    idx = np.random.default_rng(seed).integers(0, len(gold), size=(resamples, len(gold)))
    diff = ca[idx].mean(axis=1) - cb[idx].mean(axis=1)
    return {
        "difference": round(float(ca.mean() - cb.mean()), 4),
        "ci95": [round(float(np.percentile(diff, 2.5)), 4), round(float(np.percentile(diff, 97.5)), 4)],
        "share_not_better": round(float(np.mean(diff <= 0)), 4),
        "n_questions": len(gold),
        "resamples": resamples,
        "seed": seed,
    }


# --------------------------------------------------------------------------- prompts


def cap_contexts(contexts: Sequence[str], max_chars: int | None) -> tuple[list[str], bool]:
    """Whitespace-normalised non-empty contexts, cut to ``max_chars`` characters in total.

    The last context kept is cut (and ends in ``" …"``); later ones are dropped.
    ``None`` = no cap. Returns ``(kept, truncated)``.

    Example:
        >>> cap_contexts(["a  b", "", "cdefgh", "ij"], 6)
        (['a b', 'cde …'], True)
    """
    if max_chars is not None and (
        isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1
    ):
        raise InvalidInputError(
            f"max_context_chars must be a positive integer or None, got {max_chars!r}"
        )
    kept: list[str] = []
    truncated = False
    budget = max_chars
    for text in contexts:
        text = " ".join(str(text).split())
        if not text:
            continue
        if budget is not None:
            if budget <= 0:
                truncated = True
                break
            if len(text) > budget:
                kept.append(text[:budget].rstrip() + " …")
                truncated = True
                budget = 0
                continue
            budget -= len(text)
        kept.append(text)
    return kept, truncated


def _numbered(contexts: Sequence[str]) -> str:
    return "\n".join(f"[{i}] {t}" for i, t in enumerate(contexts, 1))


def build_reader_prompt(
    question: str,
    contexts: Sequence[str] = (),
    *,
    max_context_chars: int | None = READER_MAX_CONTEXT_CHARS,
) -> tuple[str, bool]:
    """The trained reader's prompt (Alpaca layout, raw text); returns ``(prompt, truncated)``.

    The PubMedQA QLoRA recipe's ``### Instruction: Answer the following medical question
    concisely.`` with a ``Context:`` block of numbered chunks (left out when there is no
    context) before ``Question: …``, ending in ``### Response:`` and a newline. The
    reader answers ``yes``, ``no`` or ``maybe``. The same function builds the training
    prompts (:mod:`meteora.training.reader`) and the evaluation prompts, so they cannot
    drift apart.

    Example:
        >>> print(build_reader_prompt("Is water wet?")[0])
        ### Instruction:
        Answer the following medical question concisely.
        <BLANKLINE>
        Question: Is water wet?
        <BLANKLINE>
        ### Response:
        <BLANKLINE>
    """
    if not isinstance(question, str) or not question.strip():
        raise InvalidInputError("question must be a non-empty str")
    kept, truncated = cap_contexts(contexts, max_context_chars)
    question = " ".join(question.split())
    ctx = f"Context:\n{_numbered(kept)}\n\n" if kept else ""
    return (
        f"### Instruction:\n{READER_INSTRUCTION}\n\n{ctx}Question: {question}\n\n### Response:\n",
        truncated,
    )


def build_qa_message(
    question: str, contexts: Sequence[str], *, max_context_chars: int | None = 6000
) -> tuple[str, bool]:
    """The reader's instruction for one question; returns ``(message, truncated)``.

    Contexts are numbered ``[1]``, ``[2]``…; with no contexts the message asks from the
    model's own knowledge. ``max_context_chars`` caps the total context length (the
    last context kept is cut; ``None`` = no cap); ``truncated`` says whether it bit.

    Example:
        >>> msg, cut = build_qa_message("Does aspirin help?", ["Aspirin cut strokes by 20%."])
        >>> print(msg)
        Answer the biomedical research question with yes, no or maybe, using the context from a scientific abstract.
        <BLANKLINE>
        Context:
        [1] Aspirin cut strokes by 20%.
        <BLANKLINE>
        Question: Does aspirin help?
        Reply with one word: yes, no or maybe.
        >>> cut
        False
    """
    if not isinstance(question, str) or not question.strip():
        raise InvalidInputError("question must be a non-empty str")
    kept, truncated = cap_contexts(contexts, max_context_chars)
    question = " ".join(question.split())
    if not kept:
        return f"{_INSTRUCTION_NONE}\n\nQuestion: {question}\n{_FINAL_LINE}", truncated
    return (
        f"{_INSTRUCTION_CONTEXT}\n\nContext:\n{_numbered(kept)}\n\nQuestion: {question}\n{_FINAL_LINE}",
        truncated,
    )


def _use_chat(tokenizer: Any, chat: bool | None) -> bool:
    has = bool(tokenizer is not None and getattr(tokenizer, "chat_template", None))
    if chat is None:
        return has
    if chat and not has:
        raise InvalidInputError(
            "chat=True needs a tokenizer with a chat template; the reader has none. Pass chat=False (raw text prompts)"
        )
    return bool(chat)


def render_reader_prompt(message: str, tokenizer: Any = None, *, chat: bool | None = None) -> str:
    """The full text scored in loglik mode: the message (through the chat template when
    the tokenizer has one and ``chat`` is not ``False``) followed by ``Answer:``.

    Example:
        >>> render_reader_prompt("Question: Is water wet?", chat=False)
        'Question: Is water wet?\\nAnswer:'
    """
    if _use_chat(tokenizer, chat):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": message}], tokenize=False, add_generation_prompt=True
        )
        return text + ANSWER_CUE
    return message + "\n" + ANSWER_CUE


# --------------------------------------------------------------------------- loglik scoring
# exact scoring itself is meteora.lm.scoring.LoglikScorer (shared with TransformersLM.score)


def label_scores(
    scorer: Callable[..., np.ndarray], prompts: Sequence[str], *, add_special_tokens: bool = True
) -> np.ndarray:
    """``(len(prompts), 3)`` yes/no/maybe log-probabilities after full prompts.

    Each label's spellings (:data:`LABEL_SPELLINGS`) are scored as continuations (with a
    leading space unless the prompt ends in whitespace) and pooled with log-sum-exp.
    ``scorer`` is a :class:`LoglikScorer` or anything with its call signature.

    Example:
        >>> def scorer(prompts, conts, add_special_tokens=True):
        ...     return np.log(np.full((len(prompts), len(conts)), 0.1))
        >>> label_scores(scorer, ["Q?\\n### Response:\\n"]).round(3).tolist()
        [[-1.609, -1.609, -1.609]]
    """
    prompts = list(prompts)
    sep = "" if prompts and prompts[0][-1:].isspace() else " "
    spellings = [(lab, sp) for lab in LABELS for sp in LABEL_SPELLINGS[lab]]
    conts = [sep + sp for _, sp in spellings]
    raw = np.asarray(scorer(prompts, conts, add_special_tokens=add_special_tokens), dtype=np.float64)
    if raw.shape != (len(prompts), len(conts)):
        raise InvalidInputError(
            f"scorer returned shape {raw.shape}, expected {(len(prompts), len(conts))}"
        )
    out = np.full((raw.shape[0], len(LABELS)), -np.inf)
    for col, (label, _) in enumerate(spellings):
        li = LABELS.index(label)
        out[:, li] = np.logaddexp(out[:, li], raw[:, col])
    return out


def _loglik_label_scores(
    scorer: Callable[..., np.ndarray], messages: list[str], tokenizer: Any, use_chat: bool
) -> np.ndarray:
    """Harness messages rendered (:func:`render_reader_prompt`), then :func:`label_scores`."""
    prompts = [render_reader_prompt(m, tokenizer, chat=use_chat) for m in messages]
    return label_scores(scorer, prompts, add_special_tokens=not use_chat)


#: next tokens asked for per prompt by :func:`next_token_label_scores`
NEXT_TOKEN_TOP_K = 20


def next_token_label_scores(
    lm: Any,
    messages: Sequence[str],
    *,
    chat: bool = True,
    top_k: int = NEXT_TOKEN_TOP_K,
    raw: bool = False,
) -> np.ndarray:
    """``(len(messages), 3)`` label log-probabilities from the answer's first token.

    For LMs without exact log-likelihoods (llama.cpp, OpenAI-compatible servers with
    logprobs): ``lm.next_token_logprobs(prompts, top_k=top_k)`` gives the most likely
    next tokens; those whose ``token.strip().lower()`` is a label are pooled with
    log-sum-exp (``" yes"``, ``"Yes"``...). A label not among them gets ``-inf``.

    Args:
        lm: a :class:`~meteora.lm.CausalLM` (anything with ``next_token_logprobs``).
        messages: reader messages (:func:`build_qa_message`).
        chat: send each message as one user turn (the backend applies its chat
            template); ``False``: raw text ending in ``Answer:``.
        top_k: next tokens asked for per prompt.
        raw: the messages are complete raw-text prompts (e.g. :func:`build_reader_prompt`):
            sent as they are, neither as a chat turn nor with ``Answer:`` appended.

    Example:
        >>> class LM:
        ...     def next_token_logprobs(self, prompts, *, top_k=20):
        ...         return [{" Yes": -0.5, "yes": -1.0, "No": -2.0, "The": -3.0} for _ in prompts]
        >>> next_token_label_scores(LM(), ["Question: Is water wet?"]).round(3).tolist()
        [[-0.026, -2.0, -inf]]
    """
    prompts: list[Any] = [
        m if raw else [{"role": "user", "content": m}] if chat else m + "\n" + ANSWER_CUE
        for m in messages
    ]
    rows = lm.next_token_logprobs(prompts, top_k=top_k)
    if len(rows) != len(prompts):
        raise InvalidInputError(
            f"next_token_logprobs returned {len(rows)} rows for {len(prompts)} prompts"
        )
    out = np.full((len(prompts), len(LABELS)), -np.inf)
    for i, row in enumerate(rows):
        for token, logprob in row.items():
            word = str(token).strip().lower()
            if word in LABELS:
                li = LABELS.index(word)
                out[i, li] = np.logaddexp(out[i, li], float(logprob))
    return out


def _reader_lm(reader: Any) -> Any:
    """The :mod:`meteora.lm` model behind a reader (a RationaleGenerator's ``.lm``, or
    the reader itself when it implements the protocol); ``None`` when there is none."""
    lm = getattr(reader, "lm", None)
    if lm is not None and hasattr(lm, "next_token_logprobs"):
        return lm
    if hasattr(reader, "next_token_logprobs") and hasattr(reader, "supports_loglik"):
        return reader
    return None


def _has_torch_copy(reader: Any) -> bool:
    """The reader has a transformers model + tokenizer for exact scores (on llama.cpp
    with the offline default, ``reader.model`` loads the transformers copy of the GGUF)."""
    return getattr(reader, "tokenizer", None) is not None and getattr(reader, "model", None) is not None


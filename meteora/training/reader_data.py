"""The QA reader's settings and training examples (see :mod:`meteora.training.reader`).

:class:`ReaderSettings` are the SFT settings plus the data recipe;
:func:`split_train_questions` holds out validation questions of the official *train*
side (test ids are refused); :func:`context_variant` draws the context an example shows
(full, subset, results, shuffled, none, conclusion); :func:`build_reader_examples` draws
class-balanced examples with those variants.

Example:
    >>> ReaderSettings().balance, "results" in VARIANTS
    ('sqrt', True)
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from meteora.errors import InvalidInputError, TrainingDataError
from meteora.evaluation.reader import LABELS, READER_MAX_CONTEXT_CHARS, build_reader_prompt
from meteora.training.settings import TrainingSettings

__all__ = [
    "VARIANTS",
    "BALANCE_MODES",
    "ReaderSettings",
    "split_train_questions",
    "context_variant",
    "build_reader_examples",
]

logger = logging.getLogger(__name__)

VARIANTS: tuple[str, ...] = ("full", "subset", "results", "shuffled", "none", "conclusion")
BALANCE_MODES: tuple[str, ...] = ("sqrt", "inverse", "none")
_EVIDENCE_LABEL = "RESULTS"


def _default_variant_weights() -> dict[str, float]:
    return {"full": 0.35, "subset": 0.25, "results": 0.2, "shuffled": 0.1, "none": 0.1}


@dataclass
class ReaderSettings(TrainingSettings):
    """Reader fine-tuning settings: the PubMedQA QLoRA recipe plus the data mix.

    LoRA r=16, alpha=32 on q/v, lr 2e-4, 512 tokens come from :class:`TrainingSettings`;
    the reader adds:

    Attributes:
        load_in_4bit: ``None`` (default) = QLoRA on a CUDA GPU, plain LoRA on a CPU.
        n_examples: training examples drawn per epoch (see the module docstring).
        val_questions: train questions held out for validation.
        balance: ``"sqrt"``, ``"inverse"`` or ``"none"`` (class weights).
        variant_weights: relative frequency of each context variant.
        max_context_chars: context characters per prompt (as in evaluation).
        fp16_adapter: store the final adapter weights in float16 (half the size).

    Example:
        >>> s = ReaderSettings()
        >>> s.validate()
        >>> (s.lora_r, s.lora_alpha, s.learning_rate, s.max_length, s.n_examples)
        (16, 32, 0.0002, 512, 500)
    """

    load_in_4bit: bool | None = None  # type: ignore[assignment]
    max_length: int = 512
    num_epochs: float = 1.0
    batch_size: int = 1
    grad_accum: int = 4
    save_steps: int = 25
    logging_steps: int = 5
    template: str = "alpaca"
    n_examples: int = 500
    val_questions: int = 50
    balance: str = "sqrt"
    variant_weights: dict[str, float] = field(default_factory=_default_variant_weights)
    max_context_chars: int = READER_MAX_CONTEXT_CHARS
    fp16_adapter: bool = True

    def validate(self) -> None:
        """Raise :class:`InvalidInputError` naming the first bad value."""
        super().validate()
        for name in ("n_examples", "max_context_chars"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InvalidInputError(f"{name} must be a positive integer, got {v!r}")
        v = self.val_questions
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise InvalidInputError(f"val_questions must be a non-negative integer, got {v!r}")
        if self.balance not in BALANCE_MODES:
            raise InvalidInputError(f"balance must be one of {BALANCE_MODES}, got {self.balance!r}")
        _check_variant_weights(self.variant_weights)


def _check_variant_weights(weights: Mapping[str, float]) -> None:
    if not isinstance(weights, Mapping) or not weights:
        raise InvalidInputError(f"variant_weights must be a non-empty mapping, got {weights!r}")
    unknown = sorted(set(weights) - set(VARIANTS))
    if unknown:
        raise InvalidInputError(f"unknown context variants {unknown}; known: {VARIANTS}")
    for k, w in weights.items():
        if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0:
            raise InvalidInputError(f"variant_weights[{k!r}] must be a number >= 0, got {w!r}")
    if sum(weights.values()) <= 0:
        raise InvalidInputError("variant_weights must give at least one variant a positive weight")


# --------------------------------------------------------------------------- data


def _answers(bench: Any, qids: Sequence[str]) -> dict[str, str]:
    out = {}
    for q in qids:
        d = str((bench.answers.get(q) or {}).get("final_decision", "")).lower()
        if d not in LABELS:
            raise TrainingDataError(f"question {q} has final_decision {d!r}, not yes/no/maybe")
        out[q] = d
    return out


def _train_ids(bench: Any) -> list[str]:
    splits = getattr(bench, "splits", {}) or {}
    if "train" not in splits or "test" not in splits:
        raise InvalidInputError(
            "the benchmark has no 'train'/'test' splits, so test questions cannot be kept out of training; "
            "build it with build_pubmedqa_benchmark() and test_ground_truth.json"
        )
    test = set(splits["test"])
    ids = [q for q in splits["train"] if q not in test]
    if len(ids) != len(splits["train"]):
        raise InvalidInputError("the benchmark's train split holds test questions; rebuild it")
    return ids


def split_train_questions(bench: Any, val_questions: int = 50, seed: int = 0) -> tuple[list[str], list[str]]:
    """``(train_ids, val_ids)``: the benchmark's train questions with ``val_questions``
    held out, stratified by label (seeded). Test questions are never returned.

    Example:
        >>> tr, va = split_train_questions(bench, 50)  # doctest: +SKIP
        >>> len(tr), len(va)  # doctest: +SKIP
        (450, 50)
    """
    ids = _train_ids(bench)
    if val_questions >= len(ids):
        raise InvalidInputError(
            f"val_questions={val_questions} leaves no training question (the train split has {len(ids)})"
        )
    answers = _answers(bench, ids)
    rng = random.Random(seed)
    by_label = {lab: [q for q in ids if answers[q] == lab] for lab in LABELS}
    for qs in by_label.values():
        rng.shuffle(qs)
    val: list[str] = []
    # largest-remainder allocation keeps the label mix of the split
    quotas = {lab: val_questions * len(qs) / len(ids) for lab, qs in by_label.items()}
    take = {lab: int(q) for lab, q in quotas.items()}
    for lab in sorted(quotas, key=lambda lab: quotas[lab] - take[lab], reverse=True)[
        : val_questions - sum(take.values())
    ]:
        take[lab] += 1
    for lab, qs in by_label.items():
        val.extend(qs[: take[lab]])
    held = set(val)
    return [q for q in ids if q not in held], sorted(val, key=ids.index)


def context_variant(
    chunks: Sequence[str],
    labels: Sequence[str],
    variant: str,
    rng: random.Random,
    conclusion: str | None = None,
) -> list[str]:
    """The context chunks of one training example (see the module docstring).

    ``conclusion`` is the text the ``conclusion`` variant uses (the long answer); without
    one that variant falls back to ``results``.

    Example:
        >>> rng = random.Random(0)
        >>> context_variant(["bg", "res", "concl"], ["BACKGROUND", "RESULTS", "CONCLUSIONS"], "results", rng)
        ['res']
        >>> context_variant(["bg", "res"], ["BACKGROUND", "RESULTS"], "none", rng)
        []
    """
    if variant not in VARIANTS:
        raise InvalidInputError(f"unknown context variant {variant!r}; known: {VARIANTS}")
    chunks = list(chunks)
    if len(labels) != len(chunks):
        raise InvalidInputError(f"got {len(labels)} section labels for {len(chunks)} chunks")
    if variant == "conclusion" and conclusion and conclusion.strip():
        return [conclusion.strip()]
    if variant == "none" or not chunks:
        return []
    if variant == "full":
        return chunks
    if variant == "shuffled":
        out = list(chunks)
        rng.shuffle(out)
        return out
    if variant in ("results", "conclusion"):
        res = [c for c, lab in zip(chunks, labels, strict=True) if str(lab).upper() == _EVIDENCE_LABEL]
        if res:
            return res
    # subset (also results without a RESULTS chunk): a random proper subset, in order
    if len(chunks) == 1:
        return chunks
    k = rng.randint(1, len(chunks) - 1)
    keep = sorted(rng.sample(range(len(chunks)), k))
    return [chunks[i] for i in keep]


def _label_shares(counts: Mapping[str, int], balance: str) -> dict[str, float]:
    power = {"sqrt": 0.5, "inverse": 0.0, "none": 1.0}[balance]
    raw = {lab: (c**power if c else 0.0) for lab, c in counts.items()}
    total = sum(raw.values())
    return {lab: v / total for lab, v in raw.items()}


def build_reader_examples(
    bench: Any,
    qids: Sequence[str],
    *,
    n_examples: int = 500,
    balance: str = "sqrt",
    variant_weights: Mapping[str, float] | None = None,
    max_context_chars: int | None = READER_MAX_CONTEXT_CHARS,
    seed: int = 0,
) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """Training examples ``{"id", "prompt", "completion", "label", "variant"}`` and their stats.

    Args:
        bench: a PubMedQA :class:`~meteora.datasets.pubmedqa.RetrievalBenchmark`.
        qids: train questions to draw from (test questions are refused).
        n_examples: examples to draw.
        balance: class weighting (``"sqrt"``, ``"inverse"``, ``"none"``).
        variant_weights: relative frequency of each context variant.
        max_context_chars: context characters per prompt.
        seed: seeds the draw, the variants and the subsets.

    Returns:
        ``(examples, stats)``; ``stats`` holds the counts per label and per variant and
        the label shares aimed at.

    Example:
        >>> ex, stats = build_reader_examples(bench, train_ids, n_examples=100)  # doctest: +SKIP
        >>> ex[0]["completion"] in ("yes", "no", "maybe")  # doctest: +SKIP
        True
    """
    if isinstance(n_examples, bool) or not isinstance(n_examples, int) or n_examples < 1:
        raise InvalidInputError(f"n_examples must be a positive integer, got {n_examples!r}")
    if balance not in BALANCE_MODES:
        raise InvalidInputError(f"balance must be one of {BALANCE_MODES}, got {balance!r}")
    weights = dict(variant_weights or _default_variant_weights())
    _check_variant_weights(weights)
    qids = [str(q) for q in qids]
    if not qids:
        raise TrainingDataError("no training questions")
    test = set((getattr(bench, "splits", {}) or {}).get("test", ()))
    leaked = sorted(q for q in qids if q in test)
    if leaked:
        raise InvalidInputError(
            f"{len(leaked)} requested questions are PubMedQA test questions (e.g. {leaked[:3]}); "
            "test questions are never used for training"
        )
    answers = _answers(bench, qids)
    counts = Counter(answers.values())
    shares = _label_shares({lab: counts.get(lab, 0) for lab in LABELS}, balance)
    # largest remainder: exactly n_examples in total
    quota = {lab: n_examples * shares[lab] for lab in LABELS}
    per_label = {lab: int(quota[lab]) for lab in LABELS}
    for lab in sorted(LABELS, key=lambda lab: quota[lab] - per_label[lab], reverse=True)[
        : n_examples - sum(per_label.values())
    ]:
        per_label[lab] += 1
    rng = random.Random(seed)
    names = [v for v in VARIANTS if weights.get(v, 0) > 0]
    probs = [float(weights[v]) for v in names]
    examples: list[dict[str, str]] = []
    for lab in LABELS:
        pool = [q for q in qids if answers[q] == lab]
        if not pool or not per_label[lab]:
            continue
        order: list[str] = []
        while len(order) < per_label[lab]:
            batch = list(pool)
            rng.shuffle(batch)
            order.extend(batch)
        for q in order[: per_label[lab]]:
            passages = bench.doc_passages(q)
            chunks = [p.text for p in passages]
            sections = [bench.section_labels.get(p.id, "") for p in passages]
            variant = rng.choices(names, probs)[0]
            ctx = context_variant(
                chunks, sections, variant, rng, conclusion=str(bench.answers[q].get("long_answer") or "")
            )
            prompt, _ = build_reader_prompt(bench.queries[q], ctx, max_context_chars=max_context_chars)
            examples.append(
                {"id": q, "prompt": prompt, "completion": lab, "label": lab, "variant": variant}
            )
    rng.shuffle(examples)
    stats = {
        "n_examples": len(examples),
        "questions": len(qids),
        "question_labels": {lab: counts.get(lab, 0) for lab in LABELS},
        "label_shares": {lab: round(shares[lab], 4) for lab in LABELS},
        "labels": dict(Counter(e["label"] for e in examples)),
        "variants": dict(Counter(e["variant"] for e in examples)),
        "distinct_questions": len({e["id"] for e in examples}),
    }
    return examples, stats

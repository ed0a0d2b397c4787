"""Fine-tune a QA reader on PubMedQA train questions *with their contexts* (LoRA / QLoRA).

The PubMedQA QLoRA recipe (Alpaca layout, ``### Instruction: Answer the following
medical question concisely. … ### Response:``; LoRA r=16, alpha=32 on q/v, lr 2e-4,
512 tokens, loss on the response only) with a context block, so the reader learns to
*read* rather than to guess the label prior. Prompts come from
:func:`meteora.evaluation.reader.build_reader_prompt`, the function the QA harness uses
with ``prompt_format="alpaca"``, so training and evaluation prompts are the same.

Data (only the 500 PQA-L questions of the official *train* side; test ids are refused):

* ``val_questions`` of them (stratified by label, seeded) are held out; the rest train.
* **Class balance** by weighted sampling: ``n_examples`` examples are drawn so that each
  label's share is proportional to ``count × weight``, weight ``count^-1/2``
  (``balance="sqrt"``, the default: yes/no/maybe 45/35/20 % instead of 55/34/11 %),
  ``count^-1`` (``"inverse"``: a third each) or 1 (``"none"``). Inside a label,
  questions are cycled in a seeded order, so each is used about equally often.
* **Context variants**, drawn per example with ``variant_weights``, so the reader also
  works on selected subsets: ``full`` (every chunk of the abstract, in order),
  ``subset`` (a random proper subset, in order), ``results`` (the chunks labelled
  RESULTS; a subset when there is none), ``shuffled`` (every chunk, random order) and
  ``none`` (the question alone) and ``conclusion`` (the abstract's conclusion, PubMedQA's
  long answer: the paper's "reasoning-free" setting, which teaches what a stated finding
  means for the decision; off by default, train side only like everything here).
* The response is the final decision (``yes``/``no``/``maybe``) and EOS; the loss is on
  those tokens only (:func:`meteora.training.collate.build_sft_features`).

Training is :func:`meteora.training.sft.train_sft` (TRL's ``SFTTrainer`` + PEFT LoRA).
``load_in_4bit=None`` means QLoRA (4-bit NF4 base) on a CUDA GPU and plain LoRA on a CPU,
where bitsandbytes' 4-bit kernels are slow. After training, accuracy on the held-out
questions is measured by log-likelihood (full abstract and no context) and written with
the data sha256, split, settings and timing to ``provenance.json``.

Example:
    >>> from meteora.training.reader import ReaderSettings, train_reader
    >>> prov = train_reader("smollm2", "runs/reader", ReaderSettings(n_examples=500))  # doctest: +SKIP
    >>> prov["metrics"]["val_accuracy_full"]  # doctest: +SKIP
    0.62
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import random
import shutil
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meteora._io import atomic_write_json
from meteora.errors import InvalidInputError, TrainingDataError
from meteora.evaluation.reader import (
    LABELS,
    READER_MAX_CONTEXT_CHARS,
    build_reader_prompt,
    label_scores,
)
from meteora.training.settings import TrainingSettings

__all__ = [
    "VARIANTS",
    "BALANCE_MODES",
    "ReaderSettings",
    "split_train_questions",
    "context_variant",
    "build_reader_examples",
    "train_reader",
    "package_adapter",
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


# --------------------------------------------------------------------------- training


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _load_bench(data: Any) -> tuple[Any, dict[str, str]]:
    from meteora.datasets.pubmedqa import build_pubmedqa_benchmark
    from meteora.settings import data_dir

    if data is not None and hasattr(data, "splits") and hasattr(data, "queries"):
        return data, {}
    bench = build_pubmedqa_benchmark(data)
    base = data_dir("pubmedqa") if data is None else Path(data).expanduser()
    folder = base if base.is_dir() else base.parent
    shas = {}
    for name in ("ori_pqal.json", "test_ground_truth.json"):
        f = folder / name
        if f.is_file():
            shas[f"pubmedqa/{name}"] = _file_sha256(f)
    return bench, shas


def _validation(
    base_model: str, adapter: Path, bench: Any, val_ids: Sequence[str], settings: ReaderSettings
) -> dict[str, Any]:
    """Held-out accuracy by log-likelihood with the full abstract and with no context."""
    from meteora.evaluation.reader import qa_metrics
    from meteora.lm.adapters import attach_adapter
    from meteora.lm.loading import load_causal_lm
    from meteora.lm.scoring import LoglikScorer

    if not val_ids:
        return {}
    model, tok = load_causal_lm(base_model, load_in_4bit=bool(settings.load_in_4bit), tokenizer_from=adapter)
    model = attach_adapter(model, adapter)
    model.eval()
    scorer = LoglikScorer(model, tok, batch_size=4)
    gold = [str(bench.answers[q]["final_decision"]).lower() for q in val_ids]
    out: dict[str, Any] = {"val_questions": len(val_ids)}
    for name, full in (("full", True), ("none", False)):
        prompts = [
            build_reader_prompt(
                bench.queries[q],
                [p.text for p in bench.doc_passages(q)] if full else [],
                max_context_chars=settings.max_context_chars,
            )[0]
            for q in val_ids
        ]
        scores = label_scores(scorer, prompts, add_special_tokens=True)
        preds = [LABELS[int(i)] for i in scores.argmax(axis=1)]
        m = qa_metrics(gold, preds)
        out[f"val_accuracy_{name}"] = round(m["accuracy"], 4)
        out[f"val_macro_f1_{name}"] = round(m["macro_f1"], 4)
        out[f"val_predicted_{name}"] = {lab: m["predicted_distribution"][lab] for lab in LABELS}
    return out


def _halve_adapter(folder: Path) -> None:
    """Rewrite ``adapter_model.safetensors`` in float16 (atomically)."""
    import torch
    from safetensors.torch import load_file, save_file

    path = folder / "adapter_model.safetensors"
    tensors = {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, path)


def train_reader(
    base_model: str | os.PathLike[str] = "smollm2",
    out_dir: str | os.PathLike[str] = "runs/reader",
    settings: ReaderSettings | None = None,
    *,
    data: Any = None,
    resume: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """Train the reader adapter into ``out_dir``; return its provenance (also written
    to ``out_dir/provenance.json``).

    Args:
        base_model: hub id, folder, or ``"smollm2"`` (the offline default).
        out_dir: adapter folder (``checkpoints/`` inside).
        settings: :class:`ReaderSettings` (defaults: the recipe, see the module docstring).
        data: a PubMedQA benchmark, the ``pubmedqa`` folder or ``ori_pqal.json``
            (``None``: ``$METEORA_DATA_DIR/pubmedqa``).
        resume: continue from the last checkpoint of the same run.
        command: the command line to record.

    Raises:
        InvalidInputError: bad settings, or a benchmark without train/test splits.
        TrainingDataError: no usable training example.

    Example:
        >>> prov = train_reader("smollm2", "runs/reader", ReaderSettings(n_examples=40))  # doctest: +SKIP
    """
    from meteora.lm.loading import precision_setup
    from meteora.training.sft import train_sft

    settings = settings or ReaderSettings()
    settings.validate()
    use_cuda, _ = precision_setup(settings.precision)
    if settings.load_in_4bit is None:
        settings = dataclasses.replace(settings, load_in_4bit=use_cuda)
    t0 = time.perf_counter()
    bench, shas = _load_bench(data)
    train_ids, val_ids = split_train_questions(bench, settings.val_questions, settings.seed)
    examples, stats = build_reader_examples(
        bench,
        train_ids,
        n_examples=settings.n_examples,
        balance=settings.balance,
        variant_weights=settings.variant_weights,
        max_context_chars=settings.max_context_chars,
        seed=settings.seed,
    )
    logger.info(
        "reader data: %d examples from %d train questions (labels %s, variants %s); %d held out",
        len(examples), len(train_ids), stats["labels"], stats["variants"], len(val_ids),
    )
    split = {
        "source": "PubMedQA PQA-L official train side (the 500 non-test questions)",
        "train_questions": len(train_ids),
        "val_questions": len(val_ids),
        "val_ids_sha256": hashlib.sha256(",".join(val_ids).encode()).hexdigest(),
        "test_questions_used": 0,
    }
    t_train = time.perf_counter()
    result = train_sft(
        base_model,
        [{"prompt": e["prompt"], "completion": e["completion"]} for e in examples],
        out_dir,
        settings,
        resume=resume,
        extra_metadata={"task": "pubmedqa-reader", "source_data": shas, "split": split, "examples": stats},
    )
    train_seconds = time.perf_counter() - t_train
    out = Path(out_dir).expanduser()
    if settings.fp16_adapter:
        _halve_adapter(out)
    metrics = {
        "train_loss": result.train_loss,
        "final_loss": result.final_loss,
        "global_step": result.global_step,
        "train_seconds": round(train_seconds, 1),
        "minutes_per_epoch": round(train_seconds / 60 / float(settings.num_epochs), 2),
    }
    t_val = time.perf_counter()
    metrics.update(_validation(str(base_model), out, bench, val_ids, settings))
    metrics["val_seconds"] = round(time.perf_counter() - t_val, 1)
    import torch

    from meteora.lm.loading import library_versions

    prov = {
        "what": "LoRA adapter of a PubMedQA yes/no/maybe reader (Alpaca prompt with a context block)",
        "command": command,
        "base_model": str(result.metadata.get("base_model", base_model)),
        "data": shas,
        "split": split,
        "examples": stats,
        "settings": settings.to_dict(),
        "seed": settings.seed,
        "device": "cuda" if use_cuda else "cpu",
        "num_threads": torch.get_num_threads(),
        "metrics": metrics,
        "seconds": round(time.perf_counter() - t0, 1),
        "versions": library_versions(),
    }
    atomic_write_json(out / "provenance.json", prov)
    return prov


def package_adapter(src: str | os.PathLike[str], dst: str | os.PathLike[str], *, base_model_id: str) -> Path:
    """Copy a trained reader (adapter config + weights + provenance) into ``dst``, with
    ``base_model_name_or_path`` set to ``base_model_id`` instead of a local path.

    Example:
        >>> package_adapter("runs/reader", "meteora/weights/pubmedqa-reader",
        ...                 base_model_id="HuggingFaceTB/SmolLM2-135M-Instruct")  # doctest: +SKIP
    """
    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    for name in ("adapter_config.json", "adapter_model.safetensors", "provenance.json"):
        if not (src / name).is_file():
            raise InvalidInputError(f"{str(src)!r} has no {name}; train the reader first")
    dst.mkdir(parents=True, exist_ok=True)
    cfg = json.loads((src / "adapter_config.json").read_text(encoding="utf-8"))
    cfg["base_model_name_or_path"] = base_model_id
    atomic_write_json(dst / "adapter_config.json", cfg)
    tmp = dst / "adapter_model.safetensors.tmp"
    shutil.copyfile(src / "adapter_model.safetensors", tmp)
    os.replace(tmp, dst / "adapter_model.safetensors")
    prov = json.loads((src / "provenance.json").read_text(encoding="utf-8"))
    prov["base_model"] = base_model_id
    atomic_write_json(dst / "provenance.json", prov)
    return dst


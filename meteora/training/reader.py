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

The settings and the examples are built in :mod:`meteora.training.reader_data`.
Training is :func:`meteora.training.sft.train_sft` (TRL's ``SFTTrainer`` + PEFT LoRA).
``load_in_4bit=None`` means QLoRA (4-bit NF4 base) on a CUDA GPU and plain LoRA on a CPU,
where bitsandbytes' 4-bit kernels are slow. After training, accuracy on the held-out
questions is measured by log-likelihood (full abstract and no context) and written with
the data sha256, split, settings and timing to ``provenance.json``.

Example:
    >>> from meteora.training.reader_data import ReaderSettings
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
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from meteora._io import atomic_write_json
from meteora.errors import InvalidInputError
from meteora.evaluation.reader import LABELS, build_reader_prompt, label_scores
from meteora.training.reader_data import (
    ReaderSettings,
    build_reader_examples,
    split_train_questions,
)

__all__ = ["train_reader", "package_adapter"]

logger = logging.getLogger(__name__)

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


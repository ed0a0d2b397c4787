"""Train the evidence scorer (``meteora train scorer``): a LoRA cross-encoder on PubMedQA.

Examples come from PubMedQA **train** questions only (the 500 official test questions
are refused): for each question, ``(question, passage, label)`` with

* label 1 for the chunks of its own abstract that hold the results (the ``evidence``
  view) and for its conclusion (the long answer, an extra positive that is not in the
  corpus);
* label ``in_document_label`` (default 0.25) for the other chunks of its own abstract —
  on topic, but not the finding; a soft label keeps them above other abstracts, so the
  abstract-level ranking does not collapse;
* label 0 for ``hard_negatives`` chunks of *other* abstracts that the base encoder ranks
  highest for the question (what a retriever would put in front of the scorer).

Section labels are used here only as training targets of the train split; the scorer
never sees them at run time. The model is the packaged all-MiniLM-L6-v2 with a LoRA
adapter (rank ``r``) and a new one-logit head, trained with sentence-transformers'
``CrossEncoderTrainer`` and ``BinaryCrossEntropyLoss``. A fraction of the train
questions (``dev_fraction``) is held out to calibrate the selector's
``evidence_weight`` and ``evidence_band`` (:func:`calibrate_selection`).

Example:
    >>> from meteora.training.scorer import ScorerSettings, train_scorer
    >>> train_scorer("runs/scorer", ScorerSettings(epochs=1))      # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import random
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from meteora._io import atomic_directory, atomic_write_json
from meteora.console import progress_enabled
from meteora.errors import InvalidInputError, TrainingDataError, require

__all__ = ["ScorerSettings", "scorer_examples", "calibrate_selection", "train_scorer"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScorerSettings:
    """Hyperparameters of :func:`train_scorer` (all recorded in the provenance file).

    Example:
        >>> ScorerSettings(epochs=2).lr
        0.0005
    """

    epochs: float = 2.0
    lr: float = 5e-4
    batch_size: int = 16
    r: int = 8
    alpha: int = 16
    dropout: float = 0.1
    max_length: int = 256
    in_document_label: float = 0.25
    hard_negatives: int = 2
    long_answers: bool = True
    dev_fraction: float = 0.2
    seed: int = 0
    warmup_ratio: float = 0.1

    def __post_init__(self) -> None:
        for name in ("batch_size", "r", "alpha", "max_length"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InvalidInputError(f"{name} must be a positive integer, got {v!r}")
        if isinstance(self.hard_negatives, bool) or not isinstance(self.hard_negatives, int) or self.hard_negatives < 0:
            raise InvalidInputError(f"hard_negatives must be a non-negative integer, got {self.hard_negatives!r}")
        if not (self.epochs > 0 and self.lr > 0):
            raise InvalidInputError(f"epochs and lr must be positive, got {self.epochs!r}, {self.lr!r}")
        if not 0.0 <= self.in_document_label <= 1.0:
            raise InvalidInputError(f"in_document_label must be in [0, 1], got {self.in_document_label!r}")
        if not 0.0 <= self.dev_fraction < 1.0:
            raise InvalidInputError(f"dev_fraction must be in [0, 1), got {self.dev_fraction!r}")
        if not 0.0 <= self.dropout < 1.0 or not 0.0 <= self.warmup_ratio < 1.0:
            raise InvalidInputError("dropout and warmup_ratio must be in [0, 1)")


def _refuse_test(benchmark: Any, qids: Sequence[str]) -> None:
    test = set(benchmark.splits.get("test", [])) if benchmark.name == "pubmedqa" else set()
    if benchmark.name != "pubmedqa":
        raise TrainingDataError(
            f"the scorer trains on PubMedQA train questions only; {benchmark.name!r} is an evaluation set"
        )
    leaked = [q for q in qids if q in test]
    if leaked:
        raise TrainingDataError(
            f"{len(leaked)} of the training questions are PubMedQA test questions (e.g. {leaked[:3]}); "
            "test questions are for evaluation only — train on split='train'"
        )


def _other_doc_negatives(
    benchmark: Any, qids: Sequence[str], k: int, encoder: Any, emb: np.ndarray
) -> dict[str, list[str]]:
    """The ``k`` chunks of other abstracts that the base encoder ranks highest per question
    (``emb``: the corpus embeddings of ``encoder``)."""
    if k == 0:
        return {q: [] for q in qids}
    corpus = benchmark.corpus
    qemb = encoder.encode([benchmark.queries[q] for q in qids])
    sims = qemb @ emb.T
    own_doc = {q: q for q in qids}  # PubMedQA: the question id is its abstract's PMID
    out: dict[str, list[str]] = {}
    for row, q in enumerate(qids):
        picked: list[str] = []
        for i in np.argsort(-sims[row], kind="stable"):
            if corpus[i].doc_id != own_doc[q]:
                picked.append(corpus[i].id)
                if len(picked) == k:
                    break
        out[q] = picked
    return out


def scorer_examples(
    benchmark: Any,
    qids: Sequence[str],
    settings: ScorerSettings,
    *,
    negatives: dict[str, list[str]] | None = None,
) -> list[dict[str, Any]]:
    """``{"query", "passage", "label"}`` training rows for ``qids`` (see the module doc).

    Questions without a chunk in the ``evidence`` view still give their in-document and
    hard-negative rows (and their conclusion as a positive).
    """
    _refuse_test(benchmark, qids)
    evidence = benchmark.qrels.get("evidence", {})
    rows: list[dict[str, Any]] = []
    for q in qids:
        question = benchmark.queries[q]
        gold = evidence.get(q, {})
        for p in benchmark.doc_passages(q):
            label = 1.0 if p.id in gold else settings.in_document_label
            rows.append({"query": question, "passage": p.text, "label": float(label)})
        if settings.long_answers:
            la = (benchmark.answers.get(q) or {}).get("long_answer")
            if isinstance(la, str) and la.strip():
                rows.append({"query": question, "passage": la.strip(), "label": 1.0})
        for pid in (negatives or {}).get(q, []):
            rows.append({"query": question, "passage": benchmark.passage(pid).text, "label": 0.0})
    if not rows:
        raise TrainingDataError("no training rows: the questions given have no passages")
    return rows


#: The grid searched by :func:`calibrate_selection`.
WEIGHT_GRID = (0.02, 0.03, 0.05, 0.08)
BAND_GRID = (0.02, 0.04, 0.06, 0.08, 0.1, 0.12, 0.15)


def calibrate_selection(
    benchmark: Any,
    qids: Sequence[str],
    scorer: Any,
    encoder: Any,
    corpus_emb: np.ndarray,
    *,
    candidates: int = 50,
) -> dict[str, Any]:
    """Choose the selector's ``evidence_weight`` and ``evidence_band`` on held-out
    *train* questions.

    Candidates are the ``candidates`` chunks most similar to each question (the base
    encoder); the selection is the real pipeline, :meth:`meteora.Reranker.rerank_pools`
    (query as the only rationale, pooled band, no pairing, window 0). The pair that
    maximises the mean of the ``evidence``-view F1 (one relevant chunk per question) and
    the ``abstract``-view F1 (all chunks of the question's abstract) wins, so the band is
    not tuned to a single relevant passage; ties go to the earlier grid point.
    ``scorer`` is an :class:`~meteora.scorer.EvidenceScorer` (anything with
    ``evidence_logits``); its pair memory makes the grid cost one scoring pass.

    Returns:
        ``{"evidence_weight", "evidence_band", "objective", "grid": [...]}``.
    """
    from meteora.pipeline import CandidatePool
    from meteora.reranker import Reranker
    from meteora.selection.selector_settings import SelectorSettings
    from meteora.set_metrics import set_metrics

    qids = list(qids)
    qemb = encoder.encode([benchmark.queries[q] for q in qids])
    top = np.argsort(-(qemb @ corpus_emb.T), axis=1, kind="stable")[:, :candidates]
    pools = [
        CandidatePool(
            query=benchmark.queries[q], passages=[benchmark.corpus[i] for i in row], embeddings=corpus_emb[row],
            query_embedding=qv,
        )
        for q, qv, row in zip(qids, qemb, top, strict=True)
    ]
    qrels = {v: benchmark.qrels_for(v, qids) for v in ("evidence", "abstract") if v in benchmark.qrels}
    grid = []
    best: tuple[float, float, float] | None = None
    for w in WEIGHT_GRID:
        for b in BAND_GRID:
            # the band is what these knobs set; no verifier stage: the grid measures the selection
            settings = SelectorSettings(cut="band", use_pairing=False, evidence_weight=w, evidence_band=b)
            reranker = Reranker(generator=None, encoder=encoder, scorer=scorer, settings=settings, verifier=None)
            results = reranker.rerank_pools(pools)
            chosen = {q: res.selected_ids for q, res in zip(qids, results, strict=True)}
            f1 = {v: set_metrics(rels, chosen)["F1"] for v, rels in qrels.items()}
            objective = float(np.mean(list(f1.values())))
            grid.append({"evidence_weight": w, "evidence_band": b, **{f"F1_{v}": round(x, 4) for v, x in f1.items()},
                         "objective": round(objective, 4)})
            if best is None or objective > best[2] + 1e-12:
                best = (w, b, objective)
    assert best is not None
    return {"evidence_weight": best[0], "evidence_band": best[1], "objective": round(best[2], 4), "grid": grid}


def _base_name(base: str | os.PathLike[str] | None) -> str:
    """How the base encoder is recorded: its hub id, or a local folder's name only (no
    path of this machine in a shipped file)."""
    if base is None:
        from meteora.models import DEFAULT_EMBEDDING_MODEL

        return DEFAULT_EMBEDDING_MODEL
    path = Path(base).expanduser()
    return path.name if path.exists() else str(base)


def _versions() -> dict[str, str]:
    from meteora.bench.report import environment_versions

    return environment_versions()


def train_scorer(
    out_dir: str | os.PathLike[str],
    settings: ScorerSettings | None = None,
    *,
    benchmark: Any = None,
    data_path: str | os.PathLike[str] | None = None,
    base: str | None = None,
    limit: int | None = None,
    overwrite: bool = False,
    command: str | None = None,
) -> dict[str, Any]:
    """Train the evidence scorer adapter and write it with its provenance to ``out_dir``.

    Args:
        out_dir: the adapter folder to write (``adapter_config.json``,
            ``adapter_model.safetensors``, ``provenance.json``). An existing folder is
            replaced only with ``overwrite=True`` and only if it holds a scorer written
            by this function.
        settings: hyperparameters (:class:`ScorerSettings`).
        benchmark: a built PubMedQA :class:`~meteora.datasets.pubmedqa.RetrievalBenchmark`
            (default: built from ``data_path``); only its ``"train"`` split is used.
        data_path: where ``pubmedqa/ori_pqal.json`` is (default: the data folder).
        base: the encoder to start from (default: the packaged all-MiniLM-L6-v2).
        limit: train on the first ``limit`` train questions only (smoke runs).
        overwrite: replace an existing scorer folder.
        command: the command line recorded in the provenance file.

    Returns:
        The provenance dict (also written to ``out_dir/provenance.json``).
    """
    from meteora.datasets.pubmedqa import build_pubmedqa_benchmark
    from meteora.embeddings.encoder import Encoder
    from meteora.models import resolve_embedding_model
    from meteora.scorer import EvidenceScorer
    from meteora.training.jsonl import file_sha256

    settings = settings or ScorerSettings()
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise InvalidInputError(f"{out} exists; pass overwrite=True (--overwrite) to replace a scorer folder")
    if out.exists() and not (out / "provenance.json").is_file():
        raise InvalidInputError(f"{out} exists and is not a scorer folder written by meteora; refusing to replace it")
    datasets = require("datasets", "train", "training the scorer")
    peft = require("peft", "core", "training the scorer adapter")
    require("sentence_transformers", "core", "training the scorer")
    from sentence_transformers.cross_encoder import (
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
    )
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    t0 = time.perf_counter()
    bench = benchmark if benchmark is not None else build_pubmedqa_benchmark(data_path)
    if "train" not in bench.splits:
        raise TrainingDataError("the PubMedQA data has no official test split file, so train questions are unknown")
    qids = bench.query_ids("train", limit=limit)
    _refuse_test(bench, qids)
    rng = random.Random(settings.seed)
    shuffled = list(qids)
    rng.shuffle(shuffled)
    n_dev = int(round(len(shuffled) * settings.dev_fraction))
    dev, train = sorted(shuffled[:n_dev], key=qids.index), sorted(shuffled[n_dev:], key=qids.index)
    encoder = Encoder(base)
    corpus_emb = encoder.encode([p.text for p in bench.corpus])
    negatives = _other_doc_negatives(bench, train + dev, settings.hard_negatives, encoder, corpus_emb)
    rows = scorer_examples(bench, train, settings, negatives=negatives)
    logger.info("scorer: %d training rows from %d train questions (%d held out)", len(rows), len(train), len(dev))

    scorer = EvidenceScorer(None, base=base, max_length=settings.max_length, batch_size=settings.batch_size)
    lora = peft.LoraConfig(
        task_type=peft.TaskType.SEQ_CLS,
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=["query", "key", "value", "dense"],
        modules_to_save=["classifier"],
    )
    import torch

    torch.manual_seed(settings.seed)
    scorer.model[0].model = peft.get_peft_model(scorer.model[0].model, lora)
    train_ds = datasets.Dataset.from_list(rows).shuffle(seed=settings.seed)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="meteora-scorer-") as tmp:
        args = CrossEncoderTrainingArguments(
            output_dir=tmp,
            num_train_epochs=settings.epochs,
            per_device_train_batch_size=settings.batch_size,
            learning_rate=settings.lr,
            warmup_ratio=settings.warmup_ratio,
            seed=settings.seed,
            save_strategy="no",
            logging_steps=20,
            report_to="none",
            use_cpu=not torch.cuda.is_available(),
            dataloader_num_workers=0,
            disable_tqdm=not progress_enabled(),
        )
        trainer = CrossEncoderTrainer(
            model=scorer.model, args=args, train_dataset=train_ds, loss=BinaryCrossEntropyLoss(scorer.model)
        )
        result = trainer.train()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    train_seconds = time.perf_counter() - t0

    # calibrate the selector on the held-out train questions
    scorer.model.eval()
    metrics: dict[str, Any] = {"train_loss": float(result.training_loss), "loss_first": losses[:1], "loss_last": losses[-1:]}
    calibration: dict[str, Any] = {}
    if dev:
        calibration = calibrate_selection(bench, dev, scorer, encoder, corpus_emb)
        best = next(g for g in calibration["grid"] if g["evidence_weight"] == calibration["evidence_weight"]
                    and g["evidence_band"] == calibration["evidence_band"])
        metrics.update({"dev_questions": len(dev), **{f"dev_{k}": v for k, v in best.items() if k.startswith("F1")}})
        logger.info("scorer: evidence_weight %s, evidence_band %s (held-out train F1 %s)",
                    calibration["evidence_weight"], calibration["evidence_band"], best)

    data_hashes: dict[str, str | None] = {}
    if benchmark is None:
        from meteora.datasets.pubmedqa_records import _locate

        pqa = _locate(data_path, "ori_pqal.json")
        test_file = pqa.parent / "test_ground_truth.json"
        data_hashes = {
            "pubmedqa/ori_pqal.json": file_sha256(pqa),
            "pubmedqa/test_ground_truth.json": file_sha256(test_file) if test_file.is_file() else None,
        }
    provenance = {
        "what": "LoRA adapter + head of a cross-encoder evidence scorer",
        "command": command or "meteora " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "base_model": _base_name(base),
        "data": data_hashes or {"benchmark": bench.name, "note": "built in memory by the caller"},
        "split": {"train_questions": len(train), "dev_questions": len(dev), "test_questions_used": 0,
                  "source": "PubMedQA PQA-L official train side (the 500 non-test questions)"},
        "rows": len(rows),
        "settings": asdict(settings),
        "seed": settings.seed,
        "versions": _versions(),
        "metrics": metrics,
        "calibration": {
            **{k: calibration[k] for k in ("evidence_weight", "evidence_band") if k in calibration},
            "rule": "maximise mean(evidence F1, abstract F1) of the band selection (query only, window 0)",
            "candidates": "base-encoder top 50 of the PubMedQA corpus, held-out train questions",
            "grid": calibration.get("grid", []),
        },
        "seconds": round(train_seconds, 1),
    }
    resolved_base = resolve_embedding_model(base)
    with atomic_directory(out, overwrite=True) as tmpdir:
        scorer.model[0].model.save_pretrained(str(tmpdir))
        cfg_path = Path(tmpdir) / "adapter_config.json"
        import json

        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        # never record a path of this machine: the base is named by its hub id
        cfg["base_model_name_or_path"] = provenance["base_model"]
        atomic_write_json(cfg_path, cfg)
        for f in Path(tmpdir).glob("README.md"):
            f.unlink()
        for f in Path(tmpdir).iterdir():
            os.chmod(f, 0o644)
        atomic_write_json(Path(tmpdir) / "provenance.json", provenance)
    logger.info("scorer written to %s (%s base)", out, resolved_base)
    return provenance

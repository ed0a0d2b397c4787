"""``meteora train cut``: rebuild the learned cut's models from the train side only.

The recipe (issue 18's design, frozen on train-side cross-validation):

1. the training table of PubMedQA train questions (with a RESULTS chunk) and BioASQ 7B
   questions (:func:`~meteora.training.cut_data.collect_cut_table`: the library's own
   retrieval, rationales and signals, hybrid top-50 candidates);
2. **stage 1** — LightGBM on the query-only features (no rationales, no scorer):
   5-fold out-of-fold probabilities, grouped by question, decide which candidates the
   evidence scorer reads on the train side (the top ``n_score``, as at inference); the
   model trained on every row is ``stage1.txt``;
3. the scorer's logits of those candidates (one batched call, cached on disk);
4. **final** (every feature but the list position) and **query_only** (no rationale
   features) LightGBM models on every row;
5. train-side metrics: out-of-fold probabilities of the three models, the expected-F1
   cut, set F1 and NDCG@10 per dataset, against the best fixed hybrid top-k.

Deterministic: seed 0, one thread, ``deterministic=True``; the models are LightGBM text
files (no pickle), written atomically with a ``provenance.json`` (command, sha256 of
every data file and model, the question ids, seed, parameters, metrics, versions).

Example:
    >>> prov = train_cut("runs/learned-cut")          # doctest: +SKIP
    >>> prov["metrics"]["final"]["bioasq"]["F1"]      # doctest: +SKIP
    0.79
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from meteora.errors import InvalidInputError, TrainingDataError, UnsafeOverwriteError, require
from meteora.selection.cut_features import (
    EVIDENCE_FEATURES,
    FEATURES,
    RATIONALE_FEATURES,
    feature_columns,
)
from meteora.training.cut_data import CutTable, collect_cut_table

__all__ = [
    "CutTrainingSettings", "train_cut", "fit_cut_models", "write_cut_folder", "export_cut_onnx", "model_features",
    "question_folds", "KIND",
]

logger = logging.getLogger(__name__)

#: ``provenance.json["kind"]`` of a learned-cut folder (a folder meteora may replace).
KIND = "meteora-learned-cut"
_MODEL_FILES = {"stage1": "stage1.txt", "final": "final.txt", "query_only": "query_only.txt"}


@dataclass(frozen=True)
class CutTrainingSettings:
    """The recipe's knobs (the defaults are the shipped models').

    Attributes:
        n_score: candidates (stage 1's top) the evidence scorer reads.
        rounds: boosting rounds of every model.
        learning_rate, num_leaves, min_data_in_leaf, feature_fraction, bagging_fraction,
        bagging_freq, lambda_l2: LightGBM parameters (binary objective).
        seed: LightGBM's seed and the fold shuffle's.
        folds: cross-validation folds (grouped by question).
        candidates, retrieve_k, rrf_k: the candidate lists (hybrid top ``candidates`` of
            ``retrieve_k`` fused by RRF with constant ``rrf_k``).
    """

    n_score: int = 10
    rounds: int = 300
    learning_rate: float = 0.05
    num_leaves: int = 15
    min_data_in_leaf: int = 50
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    bagging_freq: int = 1
    lambda_l2: float = 1.0
    seed: int = 0
    folds: int = 5
    candidates: int = 50
    retrieve_k: int = 100
    rrf_k: int = 60

    def __post_init__(self) -> None:
        for name in ("rounds", "num_leaves", "min_data_in_leaf", "folds", "candidates", "retrieve_k", "rrf_k"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.n_score, bool) or not isinstance(self.n_score, int) or self.n_score < 0:
            raise InvalidInputError(f"n_score must be a non-negative integer, got {self.n_score!r}")
        if self.folds < 2:
            raise InvalidInputError(f"folds must be at least 2, got {self.folds}")

    def lightgbm_params(self) -> dict[str, Any]:
        """The LightGBM parameters (binary, one thread, deterministic)."""
        return {
            "objective": "binary", "learning_rate": self.learning_rate, "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf, "feature_fraction": self.feature_fraction,
            "bagging_fraction": self.bagging_fraction, "bagging_freq": self.bagging_freq,
            "lambda_l2": self.lambda_l2, "num_threads": 1, "deterministic": True, "force_col_wise": True,
            "verbose": -1, "seed": self.seed,
        }


def model_features() -> dict[str, list[str]]:
    """The features each model reads (all of them in :data:`FEATURES` order)."""
    everything = [f for f in FEATURES if f != "rr_lrank"]  # the list position: no gain, order-dependent
    return {
        "stage1": [f for f in everything if f not in RATIONALE_FEATURES and f not in EVIDENCE_FEATURES],
        "final": everything,
        "query_only": [f for f in everything if f not in RATIONALE_FEATURES],
    }


def question_folds(qids: Sequence[str], folds: int, seed: int) -> dict[str, int]:
    """Each question's fold: the sorted distinct ids shuffled with ``seed``, dealt in turn.

    Example:
        >>> question_folds(["a", "b", "c"], 2, 0) == question_folds(["c", "b", "a"], 2, 0)
        True
    """
    u = np.array(sorted(set(qids)))
    np.random.default_rng(seed).shuffle(u)
    return {str(q): i % folds for i, q in enumerate(u)}


def _train(X: np.ndarray, y: np.ndarray, names: Sequence[str], settings: CutTrainingSettings) -> Any:
    lgb = require("lightgbm", "core", "training the learned cut")
    data = lgb.Dataset(X, y, feature_name=list(names), free_raw_data=True)
    return lgb.train(settings.lightgbm_params(), data, num_boost_round=settings.rounds)


def _predict(booster: Any, X: np.ndarray) -> np.ndarray:
    return np.asarray(booster.predict(X, num_threads=1), dtype=np.float64)


def fit_cut_models(
    tables: Sequence[CutTable], scorer: Any, settings: CutTrainingSettings
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Stage 1 (out-of-fold, then on every row), the scorer on its out-of-fold top
    ``n_score``, then the final and query-only models: ``({name: booster},
    {name: out-of-fold probabilities of every row})``. ``scorer=None`` skips the
    evidence (the finals then see none)."""
    feats = model_features()
    cols = {k: feature_columns(v) for k, v in feats.items()}
    qids = [q for t in tables for q in t.qids]
    fold_of = question_folds(qids, settings.folds, settings.seed)
    row_fold = np.concatenate([[fold_of[q]] * (t.offsets[i + 1] - t.offsets[i]) for t in tables for i, q in enumerate(t.qids)])
    y = np.concatenate([t.y for t in tables])

    def oof(name: str) -> np.ndarray:
        X = np.vstack([t.X for t in tables])[:, cols[name]]
        out = np.zeros(len(y))
        for f in range(settings.folds):
            test = row_fold == f
            out[test] = _predict(_train(X[~test], y[~test], feats[name], settings), X[test])
        return out

    oof_p = {"stage1": oof("stage1")}
    boosters = {"stage1": _train(np.vstack([t.X for t in tables])[:, cols["stage1"]], y, feats["stage1"], settings)}
    start = 0
    for t in tables:
        p1 = oof_p["stage1"][start : start + len(t.y)]
        wanted = [list(np.argsort(-p1[t.rows(i)], kind="stable")[: settings.n_score]) for i in range(len(t.qids))]
        if scorer is not None and settings.n_score > 0:
            logger.info("%s: scoring stage 1's top %d of %d questions", t.dataset, settings.n_score, len(t.qids))
            t.add_evidence(scorer, wanted)
        start += len(t.y)
    X = np.vstack([t.X for t in tables])
    for name in ("final", "query_only"):
        boosters[name] = _train(X[:, cols[name]], y, feats[name], settings)
        oof_p[name] = oof(name)
    return boosters, oof_p


def _metrics(tables: Sequence[CutTable], p: np.ndarray) -> dict[str, Any]:
    """Per dataset: set precision / recall / F1 of the expected-F1 cut on ``p`` (means
    over questions, recall over every relevant passage), mean count, NDCG@10; and the
    best fixed hybrid top-k on the same questions."""
    from meteora.selection.learned_cut import expected_f1_cut

    out: dict[str, Any] = {}
    start = 0
    for t in tables:
        P, R, K, nd = [], [], [], []
        fixed = {k: ([], []) for k in (1, 2, 3, 4, 5, 6, 7, 8, 10)}
        for i in range(len(t.qids)):
            rows = t.rows(i)
            y = t.y[rows]
            pq = p[start + rows.start : start + rows.stop]
            order = np.argsort(-pq, kind="stable")
            k = expected_f1_cut(pq[order])
            hits = y[order[:k]]
            P.append(hits.mean())
            R.append(hits.sum() / t.n_relevant[i])
            K.append(k)
            gains = y[order[:10]] / np.log2(np.arange(2, min(10, len(y)) + 2))
            ideal = (1.0 / np.log2(np.arange(2, min(int(t.n_relevant[i]), 10) + 2))).sum()
            nd.append(gains.sum() / ideal)
            for kk, (fp, fr) in fixed.items():  # the hybrid's own order is the candidates' order
                fp.append(y[:kk].mean())
                fr.append(y[:kk].sum() / t.n_relevant[i])
        mp, mr = float(np.mean(P)), float(np.mean(R))
        f1_fixed = {kk: 2 * np.mean(fp) * np.mean(fr) / max(np.mean(fp) + np.mean(fr), 1e-12) for kk, (fp, fr) in fixed.items()}
        best = max(f1_fixed, key=f1_fixed.get)
        out[t.dataset] = {
            "questions": len(t.qids), "precision": round(mp, 4), "recall": round(mr, 4),
            "F1": round(2 * mp * mr / max(mp + mr, 1e-12), 4), "mean_selected": round(float(np.mean(K)), 2),
            "NDCG@10": round(float(np.mean(nd)), 4),
            "best_fixed_hybrid_k": {"k": best, "F1": round(float(f1_fixed[best]), 4)},
        }
        start += len(t.y)
    return out


def _data_files(pubmedqa_path: str | None, bioasq_path: str | None) -> dict[str, str]:
    """sha256 of every data file the benchmarks read, by path relative to its data folder."""
    from meteora.settings import data_dir
    from meteora.training.jsonl import file_sha256

    out = {}
    pq = Path(pubmedqa_path).expanduser() if pubmedqa_path else data_dir("pubmedqa")
    pq = pq.parent if pq.is_file() else pq
    for name in ("ori_pqal.json", "test_ground_truth.json"):
        if (pq / name).is_file():
            out[f"pubmedqa/{name}"] = file_sha256(pq / name)
    bq = Path(bioasq_path).expanduser() if bioasq_path else data_dir("bioasq-dev")
    for f in sorted([bq] if bq.is_file() else bq.glob("*_golden.json")):
        out[f"bioasq-dev/{f.name}"] = file_sha256(f)
    return out


def _check_out(out: Path, overwrite: bool) -> None:
    from meteora._io import read_json

    if not out.exists():
        return
    if not overwrite:
        raise UnsafeOverwriteError(f"{out} exists; pass overwrite=True (--overwrite) to replace a learned-cut folder")
    prov = out / "provenance.json"
    theirs = read_json(prov) if prov.is_file() else None
    extra = sorted(p.name for p in out.iterdir() if p.name not in {*_MODEL_FILES.values(), "provenance.json"})
    if not isinstance(theirs, Mapping) or theirs.get("kind") != KIND or extra:
        raise UnsafeOverwriteError(
            f"{out} is not a learned-cut folder written by meteora (or holds other files: {extra[:3]}); "
            "refusing to replace it: choose another --out"
        )


def write_cut_folder(
    out_dir: str | os.PathLike[str], boosters: Mapping[str, Any], provenance: Mapping[str, Any], *, overwrite: bool = False
) -> dict[str, Any]:
    """Write the models (``stage1``, ``final``, ``query_only`` boosters) as LightGBM text
    files and ``provenance.json`` (``provenance`` plus each file's features and sha256)
    into ``out_dir`` atomically; returns the provenance written.

    Raises:
        UnsafeOverwriteError: ``out_dir`` exists and is not a learned-cut folder of
            meteora's, or ``overwrite`` is False.
    """
    from meteora._io import atomic_directory, atomic_write_json
    from meteora.training.jsonl import file_sha256

    out = Path(out_dir).expanduser()
    _check_out(out, overwrite)
    feats = model_features()
    prov = {**dict(provenance), "kind": KIND, "models": {}}
    with atomic_directory(out, overwrite=True) as tmp:
        for name in _MODEL_FILES:
            path = Path(tmp) / _MODEL_FILES[name]
            boosters[name].save_model(str(path))
            entry: dict[str, Any] = {"file": path.name, "features": feats[name], "sha256": file_sha256(path),
                                     "bytes": path.stat().st_size}
            if name == "final":
                entry["generator"] = provenance.get("generator")
            prov["models"][name] = entry
        _export_onnx(Path(tmp), prov, boosters)
        atomic_write_json(Path(tmp) / "provenance.json", prov, indent=1)
    return prov


def _export_onnx(folder: Path, prov: dict[str, Any], boosters: Mapping[str, Any]) -> None:
    """Add each model's ONNX export (``<name>.onnx``) to ``folder`` and its record to
    ``prov["models"][name]["onnx"]``; without onnxmltools, say so and leave them out
    (the cut then runs on LightGBM)."""
    import importlib.util

    from meteora.inference.onnx_trees import export_booster

    if importlib.util.find_spec("onnxmltools") is None:
        logger.warning("onnxmltools is not installed: no ONNX export of the learned cut, which will run on LightGBM "
                       '(pip install "meteora-rerank[train]")')
        return
    for name, entry in prov["models"].items():
        entry["onnx"] = export_booster(boosters[name], folder / (Path(entry["file"]).stem + ".onnx"))


def export_cut_onnx(folder: str | os.PathLike[str], *, command: str | None = None) -> dict[str, Any]:
    """Add ONNX exports of a learned-cut folder's LightGBM models to the folder (for a
    folder written before exports existed); the models are not retrained. Returns the
    provenance written.

    Raises:
        ModelNotFoundError / InvalidInputError: not a learned-cut folder, or a model file
            that does not match its sha256.
        MissingDependencyError: onnxmltools is not installed.
    """
    from meteora._io import atomic_write_json, read_json
    from meteora.selection.learned_cut import check_model_file

    require("onnxmltools", "train", "exporting the learned cut to ONNX")
    lgb = require("lightgbm", "core", "the learned cut")
    root = Path(folder).expanduser()
    prov_path = root / "provenance.json"
    try:
        prov = read_json(prov_path)
    except (OSError, ValueError):
        prov = None
    if not isinstance(prov, dict) or prov.get("kind") != KIND:
        raise InvalidInputError(f"{root} is not a learned-cut folder written by `meteora train cut`")
    boosters = {}
    for name, entry in prov["models"].items():
        check_model_file(root / entry["file"], entry.get("sha256"), prov_path)
        boosters[name] = lgb.Booster(model_file=str(root / entry["file"]))
    _export_onnx(root, prov, boosters)
    prov["onnx_export_command"] = command or "meteora train cut-onnx"
    atomic_write_json(prov_path, prov, indent=1)
    return prov


def train_cut(
    out_dir: str | os.PathLike[str],
    settings: CutTrainingSettings | None = None,
    *,
    generator: Any = "default",
    scorer: Any = "default",
    encoder: Any = None,
    pubmedqa_path: str | None = None,
    bioasq_path: str | None = None,
    benchmarks: Mapping[str, Any] | None = None,
    limit: int | None = None,
    overwrite: bool = False,
    command: str | None = None,
) -> dict[str, Any]:
    """Train the learned cut's three models and write them with their provenance.

    Args:
        out_dir: the folder to write (``stage1.txt``, ``final.txt``, ``query_only.txt``,
            ``provenance.json``); an existing one is replaced only with ``overwrite=True``
            and only when it is a learned-cut folder written by this function.
        settings: the recipe (:class:`CutTrainingSettings`).
        generator: the rationale generator whose rationales ``final`` reads:
            ``"default"`` (the offline SmolLM2, from the rationale cache), a built one,
            or ``None`` (query only).
        scorer: ``"default"`` (the packaged scorer, logits cached in
            ``$METEORA_HOME/scorer_logits.sqlite``), an adapter folder, or a built one.
        encoder: the encoder (default: the packaged all-MiniLM-L6-v2).
        pubmedqa_path / bioasq_path: the data (default: the data folder's).
        benchmarks: built benchmarks by name (``"pubmedqa"``, ``"bioasq"``) instead of
            the data (tests); only their ``train`` splits are read.
        limit: the first ``limit`` train questions of each benchmark (smoke runs).
        overwrite: replace an existing learned-cut folder.
        command: the command line recorded in the provenance.

    Returns:
        The provenance dict (also in ``out_dir/provenance.json``).

    Raises:
        TrainingDataError: a held-out question, or no training question.
        UnsafeOverwriteError: ``out_dir`` exists and may not be replaced.
    """
    from meteora.bench.report import environment_versions
    from meteora.scorer import EvidenceScorer
    from meteora.selection.learned_cut import generator_identity

    settings = settings or CutTrainingSettings()
    out = Path(out_dir).expanduser()
    _check_out(out, overwrite)
    t0 = time.perf_counter()
    gen = generator
    if isinstance(generator, (str, os.PathLike)):
        from meteora.rationales.generator import RationaleGenerator

        gen = RationaleGenerator.from_pretrained(None if generator == "default" else generator, cache=True)
    if isinstance(scorer, (str, os.PathLike)):
        scorer = EvidenceScorer(scorer, cache_path=True)
    given = dict(benchmarks or {})
    tables = [
        collect_cut_table(
            name, generator=gen, encoder=encoder, benchmark=given.get(name), data_path=path,
            candidates=settings.candidates, retrieve_k=settings.retrieve_k, rrf_k=settings.rrf_k, limit=limit,
        )
        for name, path in (("pubmedqa", pubmedqa_path), ("bioasq", bioasq_path))
        if not given or name in given
    ]
    if sum(len(t.qids) for t in tables) < settings.folds:
        raise TrainingDataError(f"only {sum(len(t.qids) for t in tables)} training questions for {settings.folds} folds")
    boosters, oof_p = fit_cut_models(tables, scorer, settings)
    ident = generator_identity(gen) if gen is not None else None
    provenance: dict[str, Any] = {
        "kind": KIND,
        "what": "learned cut: stage-1 LightGBM (query-only features, no scorer) ranks the candidates, the evidence "
        "scorer reads its top n_score, the final LightGBM gives P(relevant); rank by P, keep the top "
        "k* = argmax_k 2*sum_{i<=k} p_(i) / (k + sum p) (at least 1)",
        "command": command or "meteora train cut",
        "n_score": settings.n_score,
        "rule": "expected_f1",
        "settings": dataclasses.asdict(settings),
        "lightgbm_params": settings.lightgbm_params(),
        "train": {
            t.dataset: {
                "split": "train (PubMedQA: not an official test question)" if t.dataset == "pubmedqa"
                else "train (the 7B files, 2019)",
                "refused": "PubMedQA test" if t.dataset == "pubmedqa" else "BioASQ dev (8B)",
                "questions": len(t.qids), "rows": len(t.y), "relevant_rows": int(t.y.sum()),
                "rationales": t.rationale_stats, "question_ids": t.qids,
            }
            for t in tables
        },
        "candidates": f"hybrid top-{settings.candidates} (BM25 + dense, RRF k {settings.rrf_k} over "
        f"{settings.retrieve_k} fused), through Reranker.retrieve",
        "generator": ident,
        "scorer": {"name": getattr(scorer, "name", None), "identity": getattr(scorer, "identity", None)},
        "data_sha256": {} if given else _data_files(pubmedqa_path, bioasq_path),
        "metrics": {
            "what": f"train side, {settings.folds}-fold out-of-fold by question: the expected-F1 cut on each model's "
            "probabilities (stage1 = no scorer), window 0, evidence view",
            **{name: _metrics(tables, p) for name, p in oof_p.items()},
        },
        "versions": environment_versions(["meteora-rerank", "lightgbm", "numpy", "torch", "sentence-transformers", "bm25s"]),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    provenance = write_cut_folder(out, boosters, provenance, overwrite=overwrite)
    logger.info("learned cut written to %s in %.0f s", out, provenance["seconds"])
    return provenance

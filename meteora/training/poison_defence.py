"""Train the poison defence's suspicion model (``meteora train poison-defence``).

Data: PubMedQA *train* questions only (the 500 official test questions are refused),
attacked by the **trained-on** families of :mod:`meteora.bench.attacks` only
(``study_restated``, ``study_stats``, ``advisory``, ``authority``; the held-out families
are never seen). For each family, the first ``attacked`` train questions with gold
evidence each get one added document; the family's documents join the clean corpus and
the user path runs on it — dense top-``candidates`` then ``Reranker(generator=None)`` —
with a recording pool verifier that reads the signals of the ``top`` candidates by
score (:func:`meteora.suspicion.pool_signals`, the very code the defence runs); the
clean corpus gives the clean rows of the first ``questions`` train questions.

Model: standardised signals → logistic regression (balanced classes, L2), **monotone**
by default: each coefficient may only point in its signal's suspicious direction
(:data:`meteora.suspicion.SIGNAL_SIGNS`; a bounded L-BFGS fit with scipy), so the model
cannot learn that e.g. standing out of the pool makes a passage *less* suspect because
the trained-on families happen to stand out less than another signal says. The choice
was made on the train side alone: leave-one-family-out over the trained-on families
(fit on three, threshold on their rows, recall on the fourth) — recorded in the
provenance (``cross_family``). ``monotone=False`` fits scikit-learn's unconstrained
``LogisticRegression``. The threshold drops at most ``gold_fp`` of the gold evidence
passages among the PubMedQA rows.

BioASQ 7B (opt-in: ``bioasq_questions > 0``; the 2019 files, training/calibration data —
the 8B dev files' questions are never used): its short snippets restate the question and
read as findings, which a model fit on PubMedQA alone takes for added documents. The first
``bioasq_questions`` 7B questions with evidence give clean rows — over a corpus of the 7B
questions' snippets only — and the first ``bioasq_attacked`` of them are attacked by the
same trained-on families (the attacker knows the question's relevant snippets,
:func:`meteora.bench.poisoning_docs.evidence_attack_records`); those rows join the fit,
and the threshold also keeps the share of BioASQ 7B *clean* gold rows it flags at most
``bioasq_gold_fp`` (the larger of the two thresholds wins). It is not the packaged
model's recipe: tried with ``--bioasq-questions 250``, it lowered the BioASQ clean cost a
little but let the held-out attack families through slightly more often, so the packaged
weights stay PubMedQA-only (their provenance command has no BioASQ option).
Writes ``suspicion.json`` (the default model: :data:`meteora.suspicion.SEMANTIC_SIGNALS`)
and ``suspicion-shape.json`` (the opt-in shape prior: those plus ``lone`` and
``support``), each with its provenance (command, data sha256, split, families, seed,
metrics). Small JSON, no pickle.

Example:
    >>> PoisonDefenceSettings().families
    ('study_restated', 'study_stats', 'advisory', 'authority')
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from meteora._io import atomic_write_json, read_json
from meteora.bench.attacks import TRAIN_FAMILIES
from meteora.errors import InvalidInputError, TrainingDataError
from meteora.pool_stage import PoolVerification, PoolView
from meteora.suspicion import (
    SEMANTIC_SIGNALS,
    SHAPE_SIGNALS,
    SIGNAL_SIGNS,
    SuspicionModel,
    pool_signals,
)

__all__ = ["PoisonDefenceSettings", "SignalRecorder", "train_poison_defence", "MODEL_FILES"]

logger = logging.getLogger(__name__)

#: the files written, by model
MODEL_FILES = {"default": "suspicion.json", "shape": "suspicion-shape.json"}


@dataclass(frozen=True)
class PoisonDefenceSettings:
    """Hyperparameters of :func:`train_poison_defence` (recorded in the provenance).

    Example:
        >>> PoisonDefenceSettings(gold_fp=0.5)
        Traceback (most recent call last):
        ...
        meteora.errors.InvalidInputError: gold_fp must be in (0, 0.2], got 0.5
    """

    questions: int = 250
    attacked: int = 80
    families: tuple[str, ...] = TRAIN_FAMILIES
    candidates: int = 20
    top: int = 5
    gold_fp: float = 0.01
    C: float = 1.0
    seed: int = 0
    monotone: bool = True
    bioasq_questions: int = 0
    bioasq_attacked: int = 80
    bioasq_gold_fp: float = 0.03

    def __post_init__(self) -> None:
        for name in ("questions", "attacked", "candidates", "top"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InvalidInputError(f"{name} must be a positive integer, got {v!r}")
        bad = [f for f in self.families if f not in TRAIN_FAMILIES]
        if bad or not self.families:
            raise InvalidInputError(f"train only on the trained-on families {list(TRAIN_FAMILIES)}; got {bad}")
        for name in ("bioasq_questions", "bioasq_attacked"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise InvalidInputError(f"{name} must be a non-negative integer (0: PubMedQA only), got {v!r}")
        for name in ("gold_fp", "bioasq_gold_fp"):
            if not 0.0 < getattr(self, name) <= 0.2:
                raise InvalidInputError(f"{name} must be in (0, 0.2], got {getattr(self, name)!r}")
        if not self.C > 0:
            raise InvalidInputError(f"C must be positive, got {self.C!r}")


class SignalRecorder:
    """A pool verifier that records the signals of each pool's ``top`` candidates by
    score and changes nothing (the training rows come from the user path itself).

    Example:
        >>> SignalRecorder(5).rows
        []
    """

    def __init__(self, top: int) -> None:
        self.top = top
        self.rows: list[dict[str, Any]] = []

    def verify_pool(self, view: PoolView) -> PoolVerification:
        idx = [int(i) for i in np.argsort(-view.scores, kind="stable")[: self.top]]
        for i, row in zip(idx, pool_signals(view, idx), strict=True):
            self.rows.append({"query": view.query, "id": view.candidates[i].id, **row})
        return PoolVerification.from_selection(view, view.selection)


def _refuse_foreign(path: Path) -> None:
    if path.exists():
        try:
            old = read_json(path)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is not ours
            raise InvalidInputError(f"{path} exists and is not a suspicion model; refusing to overwrite it") from exc
        if not isinstance(old, dict) or "features" not in old or "provenance" not in old:
            raise InvalidInputError(f"{path} exists and is not a suspicion model; refusing to overwrite it")


def _coefficients(z: np.ndarray, y: np.ndarray, names: list[str], settings: PoisonDefenceSettings) -> tuple[np.ndarray, float]:
    """Balanced, L2-penalised logistic regression on standardised rows ``z``: sign-bounded
    (monotone) with scipy's L-BFGS-B, or scikit-learn's unconstrained fit."""
    if not settings.monotone:
        from sklearn.linear_model import LogisticRegression

        clf = LogisticRegression(C=settings.C, class_weight="balanced", max_iter=2000, random_state=settings.seed)
        clf.fit(z, y)
        return clf.coef_[0], float(clf.intercept_[0])
    from scipy.optimize import minimize

    weight = np.where(y == 1, len(y) / (2.0 * max(y.sum(), 1)), len(y) / (2.0 * max(len(y) - y.sum(), 1)))
    d = z.shape[1]

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = params[:d], params[d]
        logit = z @ w + b
        err = weight * (1.0 / (1.0 + np.exp(-logit)) - y)
        value = float(np.sum(weight * (np.logaddexp(0.0, logit) - y * logit)) + 0.5 / settings.C * w @ w)
        return value, np.append(z.T @ err + w / settings.C, err.sum())

    bounds = [(0.0, None) if SIGNAL_SIGNS[n] > 0 else (None, 0.0) for n in names] + [(None, None)]
    fit = minimize(loss, np.zeros(d + 1), jac=True, method="L-BFGS-B", bounds=bounds)
    return fit.x[:d], float(fit.x[d])


def _threshold(p: np.ndarray, calibration: list[tuple[np.ndarray, float]]) -> float:
    """The smallest threshold that flags at most ``fp`` of each ``(rows mask, fp)`` set's rows
    (0.5 when no set has rows)."""
    found = []
    for mask, fp in calibration:
        gp = np.sort(p[mask])
        if len(gp):
            found.append(float(gp[int(np.ceil((1 - fp) * len(gp))) - 1]) + 1e-6)
    return min(max(max(found, default=0.5), 0.05), 0.99)


def _calibration(gold: np.ndarray, y: np.ndarray, bio_clean_gold: np.ndarray, is_bio: np.ndarray,
                 settings: PoisonDefenceSettings) -> list[tuple[np.ndarray, float]]:
    """PubMedQA gold rows (every run) at ``gold_fp``; BioASQ 7B clean-run gold rows at ``bioasq_gold_fp``."""
    return [(gold & (y == 0) & ~is_bio, settings.gold_fp), (bio_clean_gold, settings.bioasq_gold_fp)]


def _fit(x: np.ndarray, y: np.ndarray, gold: np.ndarray, names: list[str], settings: PoisonDefenceSettings,
         calibration: list[tuple[np.ndarray, float]]) -> dict:
    mean, std = x.mean(0), x.std(0) + 1e-9
    coef, intercept = _coefficients((x - mean) / std, y, names, settings)
    w = {"features": names, "mean": mean.tolist(), "std": std.tolist(), "coef": [float(c) for c in coef],
         "intercept": intercept, "threshold": 0.5}
    p = np.array(SuspicionModel(w).probabilities([dict(zip(names, r, strict=True)) for r in x]))
    w["threshold"] = _threshold(p, calibration)
    gp = p[gold & (y == 0)]
    w["metrics"] = {
        "rows": int(len(y)), "poison_rows": int(y.sum()), "gold_rows": int(len(gp)),
        "train_poison_recall_at_threshold": round(float((p[y == 1] >= w["threshold"]).mean()), 4),
        "train_gold_dropped_at_threshold": round(float((gp >= w["threshold"]).mean()), 4) if len(gp) else None,
        "train_clean_flagged_at_threshold": round(float((p[y == 0] >= w["threshold"]).mean()), 4),
        "coef": {n: round(float(c), 3) for n, c in zip(names, coef, strict=True)},
    }
    bio = calibration[1][0]
    if bio.any():
        w["metrics"]["bioasq_clean_gold_flagged_at_threshold"] = _share(p[bio] >= w["threshold"])
    return w


def _cross_family(x: np.ndarray, y: np.ndarray, gold: np.ndarray, runs: np.ndarray, names: list[str],
                  settings: PoisonDefenceSettings, calibration: list[tuple[np.ndarray, float]]) -> dict[str, Any]:
    """Leave one trained-on family out (on both datasets): fit on the others (and the clean
    rows), threshold on their calibration rows, then the held family's poison recall and
    gold dropped."""
    out: dict[str, Any] = {}
    for held in settings.families:
        fit_rows = runs != held
        mean, std = x[fit_rows].mean(0), x[fit_rows].std(0) + 1e-9
        z = (x - mean) / std
        coef, intercept = _coefficients(z[fit_rows], y[fit_rows], names, settings)
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ coef + intercept, -60, 60)))
        thr = _threshold(p, [(mask & fit_rows, fp) for mask, fp in calibration])
        rows = runs == held
        out[held] = {"poison_recall": _share(p[rows & (y == 1)] >= thr),
                     "gold_dropped": _share(p[rows & gold & (y == 0)] >= thr)}
    recalls = [v["poison_recall"] for v in out.values() if v["poison_recall"] is not None]
    out["mean_poison_recall"] = round(float(np.mean(recalls)), 4) if recalls else None
    return out


def _share(hits: np.ndarray) -> float | None:
    """The share of ``True`` in ``hits``, rounded; ``None`` when there are no rows."""
    return round(float(hits.mean()), 4) if len(hits) else None


def _signal_rows(corpus: list[Any], emb: np.ndarray, queries: Mapping[str, str], qids: list[str],
                 attacked: list[str], records: list[Any], enc: Any, scorer: Any, settings: PoisonDefenceSettings,
                 dataset: str) -> list[dict[str, Any]]:
    """The recorded rows of the clean run (``qids``) and of each family's run (``attacked``)
    over ``corpus`` (whose stored embeddings are ``emb``), through the user path."""
    from meteora.bench.poisoning_docs import attack_documents, corpus_retriever
    from meteora.reranker import Reranker

    row = {p.id: i for i, p in enumerate(corpus)}
    runs = {"clean": (corpus, qids)}
    for fam in settings.families:
        runs[fam] = (corpus + attack_documents(fam, records, seed=settings.seed), attacked)
    rows: list[dict[str, Any]] = []
    for name, (docs, qs) in runs.items():
        if not qs:
            continue
        recorder = SignalRecorder(settings.top)
        rr = Reranker(generator=None, encoder=enc, scorer=scorer, verifier=recorder)
        retriever = corpus_retriever("dense", docs, enc, emb, row)
        rr.rerank_pools(rr.retrieve([queries[q] for q in qs], retriever, k=settings.candidates))
        rows += [dict(r, run=name, dataset=dataset) for r in recorder.rows]
        logger.info("%s %s: %d rows", dataset, name, len(recorder.rows))
    return rows


def _bioasq_rows(settings: PoisonDefenceSettings, data_path: str | None, num_threads: int | None, enc: Any,
                 scorer: Any) -> tuple[list[dict[str, Any]], set[str], dict[str, str]]:
    """BioASQ 7B rows (the ``train`` split only; corpus: the 7B questions' snippets), the
    gold ids of the clean questions, and the sha256 of the 7B files read."""
    from meteora.bench.config import BenchmarkConfig
    from meteora.bench.context import BenchmarkContext
    from meteora.bench.poisoning_docs import evidence_attack_records
    from meteora.datasets.bioasq import TRAIN_FILE_PREFIX
    from meteora.settings import data_dir
    from meteora.training.jsonl import file_sha256

    ctx = BenchmarkContext(BenchmarkConfig(methods=["dense"], dataset="bioasq", split="train", data_path=data_path,
                                           num_threads=num_threads))
    bench = ctx.data
    evidence = bench.qrels.get("evidence", {})
    train = [q for q in bench.splits.get("train", []) if evidence.get(q)]
    if not train:
        raise TrainingDataError("the BioASQ data has no 7B (train) questions with evidence; pass --bioasq-questions 0")
    keep = {pid for q in train for pid in evidence[q]}
    idx = [i for i, p in enumerate(bench.corpus) if p.id in keep]
    corpus = [bench.corpus[i] for i in idx]
    emb = np.asarray(ctx.corpus_embeddings())[idx]
    qids = train[: settings.bioasq_questions]
    attacked = qids[: settings.bioasq_attacked]
    rows = _signal_rows(corpus, emb, bench.queries, qids, attacked, evidence_attack_records(bench, attacked), enc,
                        scorer, settings, "bioasq-7B")
    root = Path(data_path) if data_path else data_dir("bioasq-dev")
    files = sorted(root.glob(f"{TRAIN_FILE_PREFIX}*_golden.json")) if root.is_dir() else [root]
    return rows, {pid for q in qids for pid in evidence[q]}, {f"bioasq-dev/{f.name}": file_sha256(f) for f in files}


def train_poison_defence(
    out_dir: str | Path, settings: PoisonDefenceSettings | None = None, *, data_path: str | None = None,
    num_threads: int | None = None, command: str | None = None, rows_out: str | Path | None = None,
    bioasq_path: str | None = None,
) -> dict[str, Any]:
    """Build the rows on the train side, fit both models and write them to ``out_dir``
    (and the rows, as JSON lines, to ``rows_out`` when given).

    ``bioasq_path``: the BioASQ golden files' folder (default: the data folder's ``bioasq-dev/``).

    Returns:
        ``{model name: its weights dict (with provenance)}``.

    Raises:
        TrainingDataError: no official test split (train questions unknown), or no BioASQ
            7B questions when ``bioasq_questions > 0``.
        InvalidInputError: an output file exists that is not a suspicion model.
    """
    from meteora.bench.config import BenchmarkConfig
    from meteora.bench.context import BenchmarkContext
    from meteora.bench.poisoning_docs import attack_records
    from meteora.bench.report import environment_versions
    from meteora.datasets.pubmedqa_records import _locate
    from meteora.training.jsonl import file_sha256

    settings = settings or PoisonDefenceSettings()
    out = Path(out_dir)
    for f in MODEL_FILES.values():
        _refuse_foreign(out / f)
    t0 = time.perf_counter()
    ctx = BenchmarkContext(BenchmarkConfig(methods=["dense"], split="train", data_path=data_path,
                                           num_threads=num_threads))
    bench = ctx.data
    test = set(bench.splits.get("test", []))
    if not test:
        raise TrainingDataError("the PubMedQA data has no official test split file, so train questions are unknown")
    evidence = bench.qrels.get("evidence", {})
    qids = [q for q in bench.query_ids("train") if q not in test and evidence.get(q)][: settings.questions]
    attacked = qids[: settings.attacked]
    enc, emb, scorer = ctx.encoder(), ctx.corpus_embeddings(), ctx.scorer()
    gold = {pid for q in qids for pid in evidence[q]}
    rows = _signal_rows(list(bench.corpus), emb, bench.queries, qids, attacked, attack_records(bench, attacked),
                        enc, scorer, settings, "pubmedqa")
    bio_gold: set[str] = set()
    bio_data: dict[str, str] = {}
    if settings.bioasq_questions:
        bio_rows, bio_gold, bio_data = _bioasq_rows(settings, bioasq_path, num_threads, enc, scorer)
        rows += bio_rows
    if rows_out is not None:
        from meteora._io import atomic_write_text

        atomic_write_text(rows_out, "".join(json.dumps(r) + "\n" for r in rows))
    y = np.array([r["id"].startswith("poison-") for r in rows], dtype=int)
    if not y.any() or y.all():
        raise TrainingDataError(
            f"{int(y.sum())} of {len(y)} rows are poisoned candidates: the fit needs both; raise --candidates or --top "
            "so the added documents reach the rows, or --questions for clean rows"
        )
    is_bio = np.array([r["dataset"] != "pubmedqa" for r in rows])
    is_gold = np.array([r["id"] in (bio_gold if b else gold) for r, b in zip(rows, is_bio, strict=True)])
    bio_clean_gold = is_bio & is_gold & (y == 0) & np.array([r["run"] == "clean" for r in rows])
    calibration = _calibration(is_gold, y, bio_clean_gold, is_bio, settings)
    pqa = _locate(data_path, "ori_pqal.json")
    n_bio = min(settings.bioasq_questions, len({r["query"] for r in rows if r["dataset"] != "pubmedqa"}))
    provenance = {
        "command": command or "meteora train poison-defence",
        "data": {"pubmedqa/ori_pqal.json": file_sha256(pqa),
                 "pubmedqa/test_ground_truth.json": file_sha256(pqa.parent / "test_ground_truth.json"), **bio_data},
        "split": "PubMedQA train side only (the 500 non-test questions); 0 test questions used"
                 + ("; BioASQ 7B (2019) questions only, corpus of their snippets; 0 dev (8B) questions used"
                    if settings.bioasq_questions else ""),
        "families": list(settings.families),
        "questions": {"clean": len(qids), "attacked_per_family": len(attacked),
                      **({"bioasq_7B_clean": n_bio, "bioasq_7B_attacked_per_family": min(n_bio, settings.bioasq_attacked)}
                         if settings.bioasq_questions else {})},
        "pipeline": f"dense top-{settings.candidates} -> Reranker(generator=None, scorer=default), signals of the "
                    f"top {settings.top} candidates by score (meteora.suspicion.pool_signals)",
        "settings": asdict(settings),
        "seed": settings.seed,
        "versions": environment_versions(),
        "threshold_rule": (f"drops at most {settings.gold_fp:.1%} of the PubMedQA gold evidence rows and at most "
                           f"{settings.bioasq_gold_fp:.1%} of the BioASQ 7B clean gold rows" if settings.bioasq_questions
                           else f"drops at most {settings.gold_fp:.0%} of the gold evidence rows"),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    out.mkdir(parents=True, exist_ok=True)
    models = {}
    for name, names in (("default", list(SEMANTIC_SIGNALS)), ("shape", list(SEMANTIC_SIGNALS + SHAPE_SIGNALS))):
        x = np.array([[float(r[n]) for n in names] for r in rows], dtype=np.float64)
        w = _fit(x, y, is_gold, names, settings, calibration)
        metrics = w.pop("metrics")
        metrics["cross_family"] = _cross_family(x, y, is_gold, np.array([r["run"] for r in rows]), names, settings,
                                                    calibration)
        w["provenance"] = {**provenance, "metrics": metrics,
                           "what": "the default suspicion model" if name == "default" else
                           "the opt-in shape-prior model (never the default: it drops honest one-passage documents)"}
        atomic_write_json(out / MODEL_FILES[name], w)
        models[name] = w
        logger.info("%s model: threshold %.3f, %s", name, w["threshold"], w["provenance"]["metrics"])
    return models

"""Train the learned poison check (:class:`meteora.defences.PoisonCheck`) on PubMedQA *train* questions.

Data: the train side of PubMedQA only (the 500 official test questions are refused).
Half of the train questions with gold evidence get a poisoned passage written by the
``"train"`` family of :mod:`meteora.bench.poison_gen` (other word lists, number edits
and templates than the ``"test"`` family the benchmark inserts), placed next to their
gold evidence exactly as the benchmark does (:func:`meteora.bench.poisoning.poison_benchmark`).
Every chunk of those questions' abstracts is an example (label 1 for the poison), with
the other chunks of its abstract as peers, plus one chunk of another abstract per
question (label 0).

Model: standardised :func:`meteora.defences.poison_features` → logistic regression
(scikit-learn, balanced classes, L2), in two heads: an ``instruction`` head over the
instruction features (trained without the counterfactual rows) and a ``contradiction``
head over the twin features, trained on the passages that have a contradicting
near-duplicate only. The per-head thresholds are chosen on held-out train questions
(``dev_fraction``): the highest F1 among those that drop at most ``max_gold_drop`` of
the held-out gold evidence chunks. Weights go to a small JSON file
(no pickle) with ``provenance.json`` beside it.

Example:
    >>> from meteora.training.poison_check import PoisonCheckSettings, train_poison_check
    >>> train_poison_check("runs/poison-check", PoisonCheckSettings())  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import random
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from meteora._io import atomic_write_json
from meteora.errors import InvalidInputError, TrainingDataError

__all__ = ["PoisonCheckSettings", "poison_examples", "choose_thresholds", "train_poison_check"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoisonCheckSettings:
    """Hyperparameters of :func:`train_poison_check` (recorded in the provenance file).

    Example:
        >>> PoisonCheckSettings().family
        'train'
    """

    fraction: float = 0.5
    family: str = "train"
    dev_fraction: float = 0.2
    C: float = 1.0
    max_gold_drop: float = 0.02
    seed: int = 0
    use_lm: bool = True
    gate: str = "twin_contradicts"

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction <= 1.0 or not 0.0 < self.dev_fraction < 1.0:
            raise InvalidInputError("fraction must be in (0, 1] and dev_fraction in (0, 1)")
        if not self.C > 0 or not 0.0 <= self.max_gold_drop < 1.0:
            raise InvalidInputError("C must be positive and max_gold_drop in [0, 1)")
        if self.gate not in ("twin_contradicts", "twin_less_fluent"):
            raise InvalidInputError(f"gate must be 'twin_contradicts' or 'twin_less_fluent', got {self.gate!r}")


def _refuse_test(bench: Any, qids: Sequence[str]) -> None:
    test = set(bench.splits.get("test", []))
    if not test:
        raise TrainingDataError("the PubMedQA data has no official test split file, so train questions are unknown")
    leaked = [q for q in qids if q in test]
    if leaked:
        raise TrainingDataError(
            f"{len(leaked)} training questions are PubMedQA test questions (e.g. {leaked[:3]}); train on split='train'"
        )


def poison_examples(
    bench: Any, qids: Sequence[str], settings: PoisonCheckSettings, *, logprob: Any = None
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Feature matrix, labels and row descriptions (qid, passage id, kind, gold) for ``qids``."""
    from meteora.bench.poisoning import poison_benchmark
    from meteora.defences import FEATURES, poison_features

    _refuse_test(bench, qids)
    poisoned, records = poison_benchmark(bench, qids, fraction=settings.fraction, seed=settings.seed,
                                         family=settings.family)
    kind = {r.passage_id: r.kind for r in records}
    evidence = bench.qrels.get("evidence", {})
    rng = random.Random(f"other-{settings.seed}")
    rows: list[list[float]] = []
    labels: list[int] = []
    meta: list[dict[str, Any]] = []
    for q in qids:
        doc = poisoned.doc_passages(q)
        other_doc = poisoned.doc_passages(rng.choice([d for d in qids if d != q]))
        for p in [*doc, other_doc[0]]:
            peers = [o.text for o in poisoned.doc_passages(p.doc_id) if o.id != p.id]
            f = poison_features(poisoned.queries[q], p.text, peers, logprob=logprob)
            rows.append([f[n] for n in FEATURES])
            labels.append(int(p.id in kind))
            meta.append({"qid": q, "id": p.id, "kind": kind.get(p.id), "gold": p.id in evidence.get(q, {})})
    return np.asarray(rows, dtype=np.float64), np.asarray(labels), meta


def _candidates(prob: np.ndarray, n: int = 60) -> list[float]:
    """Up to ``n`` thresholds spread over the distinct probabilities, plus 'off' (above 1)."""
    values = np.unique(np.round(prob[prob > 0], 4))
    if len(values) > n:
        values = np.unique(np.quantile(values, np.linspace(0, 1, n)).round(4))
    return [*values.tolist(), 1.01]


def choose_thresholds(
    probs: dict[str, np.ndarray], labels: np.ndarray, gold: np.ndarray, max_gold_drop: float
) -> dict[str, Any]:
    """Per-head thresholds with the best F1 (a row is flagged when any head reaches its
    threshold) among those dropping at most ``max_gold_drop`` of the gold rows.

    Example:
        >>> t = choose_thresholds({"a": np.array([0.9, 0.2, 0.6])}, np.array([1, 0, 0]),
        ...                       np.array([False, True, False]), 0.0)
        >>> t["thresholds"], t["F1"]
        ({'a': 0.9}, 1.0)
    """
    import itertools

    names = list(probs)
    n_gold = max(int(gold.sum()), 1)
    best: dict[str, Any] | None = None
    for combo in itertools.product(*(_candidates(probs[n]) for n in names)):
        flag = np.zeros(len(labels), dtype=bool)
        for n, t in zip(names, combo, strict=True):
            flag |= probs[n] >= t
        tp = int((flag & (labels == 1)).sum())
        fp = int((flag & (labels == 0)).sum())
        fn = int((~flag & (labels == 1)).sum())
        drop = float((flag & gold).sum()) / n_gold
        if drop > max_gold_drop or tp == 0:
            continue
        p, r = tp / (tp + fp), tp / (tp + fn)
        f1 = 2 * p * r / (p + r)
        if best is None or f1 > best["F1"] + 1e-12:
            best = {"thresholds": dict(zip(names, combo, strict=True)), "precision": round(p, 4),
                    "recall": round(r, 4), "F1": round(f1, 4), "gold_dropped_rate": round(drop, 4)}
    if best is None:
        raise TrainingDataError("no threshold keeps the gold drop rate within bounds; the check learned nothing")
    return best


def _fit_head(name: str, x: np.ndarray, y: np.ndarray, features: list[str], settings: PoisonCheckSettings,
              gate: str | None = None) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression

    if len(set(y.tolist())) < 2:
        raise TrainingDataError(f"the {name} head has examples of one class only; poison more questions")
    mean, std = x.mean(axis=0), x.std(axis=0)
    std[std < 1e-9] = 1.0
    model = LogisticRegression(C=settings.C, class_weight="balanced", max_iter=2000, random_state=settings.seed)
    model.fit((x - mean) / std, y)
    return {"name": name, "features": features, "gate": gate, "mean": mean.round(6).tolist(),
            "std": std.round(6).tolist(), "coef": model.coef_[0].round(6).tolist(),
            "intercept": round(float(model.intercept_[0]), 6), "rows": int(len(y)), "positives": int(y.sum())}


def _head_prob(head: dict[str, Any], x: np.ndarray, gate: np.ndarray | None) -> np.ndarray:
    z = ((x - np.asarray(head["mean"])) / np.asarray(head["std"])) @ np.asarray(head["coef"]) + head["intercept"]
    p = 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))
    return p if gate is None else np.where(gate, p, 0.0)


def train_poison_check(
    out_dir: str | Path,
    settings: PoisonCheckSettings | None = None,
    *,
    benchmark: Any = None,
    data_path: str | None = None,
    logprob: Any = "default",
    command: str | None = None,
) -> dict[str, Any]:
    """Train the check and write ``model.json`` + ``provenance.json`` to ``out_dir``.

    Args:
        out_dir: folder to write (created; files replaced atomically).
        settings: :class:`PoisonCheckSettings`.
        benchmark: a built PubMedQA benchmark (default: from ``data_path``).
        logprob: the fluency LM (:class:`~meteora.defences.LogProbScorer`); ``"default"``:
            SmolLM2 on transformers when ``settings.use_lm``.
        command: the command line recorded in the provenance.

    Returns:
        The provenance dict.
    """
    from meteora.bench.report import environment_versions
    from meteora.datasets.pubmedqa import build_pubmedqa_benchmark
    from meteora.defences import (
        CONTRADICTION_FEATURES,
        FEATURES,
        INSTRUCTION_FEATURES,
        LM_FEATURES,
        LogProbScorer,
    )
    from meteora.training.jsonl import file_sha256

    settings = settings or PoisonCheckSettings()
    t0 = time.perf_counter()
    bench = benchmark if benchmark is not None else build_pubmedqa_benchmark(data_path)
    if "train" not in bench.splits:
        raise TrainingDataError("the PubMedQA data has no official test split file, so train questions are unknown")
    qids = bench.query_ids("train")
    _refuse_test(bench, qids)
    if logprob == "default":
        logprob = LogProbScorer.default() if settings.use_lm else None
    shuffled = list(qids)
    random.Random(settings.seed).shuffle(shuffled)
    n_dev = int(round(len(shuffled) * settings.dev_fraction))
    dev, train = sorted(shuffled[:n_dev], key=qids.index), sorted(shuffled[n_dev:], key=qids.index)
    x_tr, y_tr, meta_tr = poison_examples(bench, train, settings, logprob=logprob)
    x_dev, y_dev, meta_dev = poison_examples(bench, dev, settings, logprob=logprob)
    kinds_tr = np.array([m["kind"] or "" for m in meta_tr])
    col = {n: i for i, n in enumerate(FEATURES)}
    inst = list(INSTRUCTION_FEATURES)
    con = [n for n in CONTRADICTION_FEATURES if n != "twin_contradicts" and (logprob is not None or n not in LM_FEATURES)]
    gate = settings.gate if logprob is not None else "twin_contradicts"
    gate_tr = x_tr[:, col[gate]] > 0
    gate_dev = x_dev[:, col[gate]] > 0
    not_cf = kinds_tr != "counterfactual"
    heads = [
        _fit_head("instruction", x_tr[not_cf][:, [col[n] for n in inst]], y_tr[not_cf], inst, settings),
        _fit_head("contradiction", x_tr[gate_tr][:, [col[n] for n in con]], y_tr[gate_tr], con, settings,
                  gate=gate),
    ]
    probs = {
        h["name"]: _head_prob(h, x_dev[:, [col[n] for n in h["features"]]], gate_dev if h["gate"] else None)
        for h in heads
    }
    gold = np.array([m["gold"] for m in meta_dev])
    chosen = choose_thresholds(probs, y_dev, gold, settings.max_gold_drop)
    flag = np.zeros(len(y_dev), dtype=bool)
    for h in heads:
        h["threshold"] = min(float(chosen["thresholds"][h["name"]]), 0.9999)
        flag |= probs[h["name"]] >= chosen["thresholds"][h["name"]]
    per_kind = {}
    for k in sorted({m["kind"] for m in meta_dev if m["kind"]}):
        rows = np.array([m["kind"] in (None, k) for m in meta_dev])
        tp = int((flag & rows & (y_dev == 1)).sum())
        fp = int((flag & rows & (y_dev == 0)).sum())
        fn = int((~flag & rows & (y_dev == 1)).sum())
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        per_kind[k] = {"precision": round(p, 4), "recall": round(r, 4), "F1": round(2 * p * r / (p + r), 4) if p + r else 0.0}
    weights = {
        "what": "logistic poison check over meteora.defences.poison_features: an instruction head and a "
                "contradiction head gated on a contradicting near-duplicate",
        "heads": heads,
        "lm": getattr(logprob, "name", None) and Path(str(logprob.name)).name,
    }
    hashes: dict[str, Any] = {"benchmark": bench.name, "note": "built in memory by the caller"}
    if benchmark is None:
        from meteora.datasets.pubmedqa_records import _locate

        pqa = _locate(data_path, "ori_pqal.json")
        hashes = {"pubmedqa/ori_pqal.json": file_sha256(pqa),
                  "pubmedqa/test_ground_truth.json": file_sha256(pqa.parent / "test_ground_truth.json")}
    provenance = {
        "what": weights["what"],
        "command": command or "python -m meteora.training.poison_check " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "data": hashes,
        "split": {"train_questions": len(train), "dev_questions": len(dev), "test_questions_used": 0,
                  "source": "PubMedQA PQA-L official train side (the 500 non-test questions)",
                  "poison": f"family {settings.family!r} of meteora.bench.poison_gen (the benchmark inserts 'test')"},
        "rows": {"train": int(len(y_tr)), "train_poison": int(y_tr.sum()), "dev": int(len(y_dev)),
                 "dev_poison": int(y_dev.sum())},
        "settings": asdict(settings),
        "seed": settings.seed,
        "versions": environment_versions(),
        "metrics": {"dev": chosen, "dev_per_kind": per_kind,
                    "threshold_rule": f"per-head thresholds with the best dev F1 with at most {settings.max_gold_drop:.0%} of dev gold evidence dropped"},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "model.json", weights)
    atomic_write_json(out / "provenance.json", provenance)
    logger.info("poison check written to %s: dev %s", out, chosen)
    return provenance


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m meteora.training.poison_check --out DIR [--no-lm] [--seed N] [--threads N]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m meteora.training.poison_check", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="meteora/weights/poison-check")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-lm", action="store_true", help="no fluency feature (no LM needed)")
    parser.add_argument("--gate", choices=["twin_contradicts", "twin_less_fluent"], default="twin_contradicts",
                        help="when the contradiction head speaks: any contradicting near-duplicate, or only for the "
                             "less fluent member of such a pair (never both members)")
    parser.add_argument("--data", default=None)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = PoisonCheckSettings(seed=args.seed, use_lm=not args.no_lm, gate=args.gate)
    from meteora.settings import apply_thread_setting

    apply_thread_setting(args.threads)
    train_poison_check(args.out, settings, data_path=args.data,
                       command="python -m meteora.training.poison_check " + shlex.join(list(argv or sys.argv[1:])))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

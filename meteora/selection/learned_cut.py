"""The learned cut: P(relevant) per candidate from two small LightGBM models, cut at
the count that maximises the expected F1.

:class:`LearnedCut` is a :class:`~meteora.selection.cuts.Cut` in two steps:

1. **stage 1** — a LightGBM model over the query-only features of
   :mod:`meteora.selection.cut_features` (no rationales, no scorer) ranks the candidates
   cheaply; :meth:`LearnedCut.wanted_evidence` names its top ``n_score`` (10), the only
   candidates the evidence scorer reads (the scorer is the costly part);
2. **final** — a second LightGBM model over all the features, the scorer's logits of
   those candidates included, gives each candidate a probability of relevance ``p``.
   Candidates are ranked by ``p`` and the top ``k*`` kept (:func:`expected_f1_cut`)::

       k* = argmax_k  2 * sum_{i<=k} p_(i) / (k + sum_all p)     (at least 1)

``p`` is the ranking score: a calibrated probability (trained with a logistic loss on
PubMedQA train + BioASQ 7B questions), so a threshold on it means the same thing for
every query. Which final model runs depends on the pipeline: ``final`` reads the
rationales of the generator it was trained with (:func:`learned_cut_for` matches the
generator's identity), ``query_only`` serves ``generator=None`` and any other
generator, and without a scorer the stage-1 model is the final one.

The models are LightGBM text files (``lightgbm.Booster(model_file=...)``, never
pickle), each with its ONNX export, in a folder with a ``provenance.json`` naming each
file, its features and sha256; the packaged ones are in ``meteora/weights/learned-cut``
and ``meteora train cut`` rebuilds them. The trees run on ONNX Runtime
(:class:`~meteora.inference.onnx_trees.OnnxTrees`: no LightGBM import, which costs about
a second and brings scikit-learn) unless ``$METEORA_RUNTIME=torch`` asks for the
reference implementations, or a folder has no export; then on LightGBM.

Example:
    >>> import numpy as np
    >>> expected_f1_cut(np.array([0.9, 0.8, 0.1, 0.05]))
    2
    >>> cut = learned_cut_for(None)                   # the packaged query-only model  # doctest: +SKIP
    >>> cut.wanted_evidence(signals)                  # stage-1 top 10  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from meteora.errors import InvalidInputError, ModelNotFoundError, require
from meteora.selection.cut_features import candidate_features, feature_columns
from meteora.selection.cuts import CutResult, ranked
from meteora.selection.selector_settings import SelectorSettings
from meteora.selection.signals import CandidateSignals

__all__ = [
    "LearnedCut",
    "CutModels",
    "expected_f1_cut",
    "load_cut_models",
    "learned_cut_for",
    "pipeline_cut",
    "generator_identity",
    "packaged_cut_path",
    "PROVENANCE_FILE",
    "check_model_file",
]

logger = logging.getLogger(__name__)

#: The file that describes a learned-cut folder (models, features, n_score, sha256).
PROVENANCE_FILE = "provenance.json"
_PACKAGED = Path(__file__).resolve().parents[1] / "weights" / "learned-cut"
#: The generator fields a ``final`` model is keyed by.
IDENTITY_FIELDS = ("model", "model_fingerprint", "adapter", "template")


def packaged_cut_path() -> Path:
    """The folder of the packaged learned-cut models."""
    return _PACKAGED


def expected_f1_cut(p_sorted: np.ndarray) -> int:
    """How many of the candidates (probabilities sorted descending) to keep: the ``k``
    that maximises ``2 * sum(p[:k]) / (k + sum(p))``, the expected F1 of the top ``k``
    when each candidate is relevant with its probability. At least 1 (0 for no candidates).

    Example:
        >>> expected_f1_cut(np.array([0.95, 0.2, 0.1])), expected_f1_cut(np.array([0.6, 0.55, 0.5, 0.45]))
        (1, 4)
    """
    p = np.asarray(p_sorted, dtype=np.float64)
    if p.size == 0:
        return 0
    c = np.cumsum(p)
    k = np.arange(1, p.size + 1)
    return int(np.argmax(2.0 * c / (k + c[-1]))) + 1


def generator_identity(generator: Any) -> dict[str, Any]:
    """What a ``final`` model is keyed by: the generator's model id, weights
    fingerprint, adapter and template name (``None`` for what it does not record).

    Example:
        >>> generator_identity(None)
        {'model': None, 'model_fingerprint': None, 'adapter': None, 'template': None}
    """
    return {
        "model": getattr(generator, "model_id", None),
        "model_fingerprint": getattr(generator, "model_fingerprint", None),
        "adapter": getattr(generator, "adapter_id", None),
        "template": getattr(getattr(generator, "template", None), "name", None),
    }


@dataclass(frozen=True)
class _Model:
    #: the trees: :class:`~meteora.inference.onnx_trees.OnnxTrees` or a ``lightgbm.Booster``
    trees: Any
    features: tuple[str, ...]
    columns: tuple[int, ...]
    generator: Mapping[str, Any] | None
    #: what runs the trees: ``"onnx"`` or ``"lightgbm"``
    runtime: str = "lightgbm"

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = X[:, list(self.columns)]
        if self.runtime == "lightgbm":
            return np.asarray(self.trees.predict(X, num_threads=1), dtype=np.float64)
        return self.trees.predict(X)


@dataclass(frozen=True)
class CutModels:
    """The models of one learned-cut folder: ``stage1`` and the finals by name, the
    scorer budget ``n_score`` and the folder's provenance."""

    folder: Path
    stage1: _Model
    finals: Mapping[str, _Model]
    n_score: int
    provenance: Mapping[str, Any]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _use_onnx() -> bool:
    """ONNX Runtime for the trees unless ``$METEORA_RUNTIME`` asks for the reference
    implementations (``torch``: the trees then run on LightGBM)."""
    import importlib.util

    from meteora.inference.runtime import resolve_runtime

    return resolve_runtime(None, None) != "torch" and importlib.util.find_spec("onnxruntime") is not None


def _trees(root: Path, entry: Mapping[str, Any], prov_path: Path, use_onnx: bool) -> tuple[Any, str]:
    """The entry's ONNX export when it has one and ``use_onnx``, else its LightGBM file,
    with the runtime's name."""
    onnx = entry.get("onnx")
    if isinstance(onnx, Mapping) and use_onnx:
        from meteora.inference.onnx_trees import OnnxTrees

        file = root / str(onnx["file"])
        check_model_file(file, onnx.get("sha256"), prov_path)
        return OnnxTrees(file), "onnx"
    lgb = require("lightgbm", "core", "the learned cut")
    file = root / str(entry["file"])
    check_model_file(file, entry.get("sha256"), prov_path)
    return lgb.Booster(model_file=str(file)), "lightgbm"


def check_model_file(file: Path, sha256: Any, prov_path: Path) -> None:
    """Refuse a model file that is missing or does not match its sha256 in ``prov_path``."""
    if not file.is_file():
        raise ModelNotFoundError(f"{file} is missing (listed in {prov_path}); rebuild with `meteora train cut`")
    if sha256 and _sha256(file) != sha256:
        raise InvalidInputError(
            f"{file} does not match the sha256 in {prov_path} (changed or damaged); rebuild with `meteora train cut`"
        )


@functools.lru_cache(maxsize=8)
def _load(folder: str, stamp: int, use_onnx: bool) -> CutModels:
    root = Path(folder)
    prov_path = root / PROVENANCE_FILE
    try:
        prov = json.loads(prov_path.read_text(encoding="utf-8"))
        entries = prov["models"]
        n_score = int(prov["n_score"])
        if not isinstance(entries, dict) or "stage1" not in entries or n_score < 0:
            raise KeyError("models.stage1")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidInputError(
            f"{prov_path} is not a learned-cut provenance file ({exc}); rebuild the folder with `meteora train cut`"
        ) from exc
    models: dict[str, _Model] = {}
    for name, entry in entries.items():
        features = tuple(entry["features"])
        try:
            columns = tuple(feature_columns(features))
        except ValueError as exc:
            raise InvalidInputError(f"{prov_path}: model {name!r}: {exc}") from exc
        trees, runtime = _trees(root, entry, prov_path, use_onnx)
        if trees.num_feature() != len(features):
            raise InvalidInputError(
                f"model {name!r} of {root} reads {trees.num_feature()} features but {prov_path} lists {len(features)}"
            )
        models[name] = _Model(trees, features, columns, entry.get("generator"), runtime)
    stage1 = models.pop("stage1")
    return CutModels(root, stage1, models, n_score, prov)


def load_cut_models(folder: str | os.PathLike[str] | None = None) -> CutModels:
    """The models of a learned-cut folder (default: the packaged one), loaded once per
    process (again when its ``provenance.json`` changes).

    Raises:
        ModelNotFoundError: no ``provenance.json`` or a model file missing.
        InvalidInputError: a malformed provenance file, or a model file whose sha256 or
            feature count does not match it.
    """
    root = Path(folder).expanduser() if folder is not None else packaged_cut_path()
    prov = root / PROVENANCE_FILE
    if not prov.is_file():
        raise ModelNotFoundError(
            f"{root} holds no {PROVENANCE_FILE}: pass a folder written by `meteora train cut` "
            "(the packaged models are in meteora/weights/learned-cut)"
        )
    return _load(str(root.resolve()), prov.stat().st_mtime_ns, _use_onnx())


@dataclass(frozen=True)
class LearnedCut:
    """The learned cut (see the module doc) with one folder's models.

    Args:
        models: the loaded folder (:func:`load_cut_models`).
        final: the final model used when the signals carry evidence logits:
            ``"final"`` (reads the rationales) or ``"query_only"``.

    Raises:
        InvalidInputError: ``final`` is not a model of the folder.
    """

    models: CutModels
    final: str = "query_only"

    def __post_init__(self) -> None:
        if self.final not in self.models.finals:
            raise InvalidInputError(
                f"final must be one of {sorted(self.models.finals)} (the models in {self.models.folder}), got {self.final!r}"
            )

    @property
    def reads_rationales(self) -> bool:
        """Whether the final model reads rationale features (only ``"final"``, trained on
        its generator's rationales; stage 1, which decides alone without a scorer, never)."""
        return self.final == "final"

    def __repr__(self) -> str:
        return f"LearnedCut(final={self.final!r}, n_score={self.models.n_score}, folder={self.models.folder.name!r})"

    def _features(self, signals: CandidateSignals) -> np.ndarray:
        if signals.query is None or signals.query_cosine is None:
            raise InvalidInputError(
                "the learned cut reads the query (its words, its cosine to each candidate): pass query= and a "
                "rationale that is the query or query_embedding=, or use SelectorSettings(cut='band') / cut='elbow'"
            )
        return candidate_features(signals)

    def stage1_probabilities(self, signals: CandidateSignals) -> np.ndarray:
        """``(N,)`` the stage-1 model's probabilities (no rationales, no scorer)."""
        if not signals.n:
            return np.zeros(0)
        return self.models.stage1.predict(self._features(signals.with_evidence(None)))

    def wanted_evidence(self, signals: CandidateSignals) -> list[int]:
        """The candidates the evidence scorer should read: stage 1's top ``n_score``."""
        if not signals.n or self.models.n_score == 0:
            return []
        order, _ = ranked(self.stage1_probabilities(signals))
        return [int(i) for i in order[: self.models.n_score]]

    def probabilities(self, signals: CandidateSignals) -> np.ndarray:
        """``(N,)`` P(relevant): the final model with evidence logits, stage 1 without."""
        if not signals.n:
            return np.zeros(0)
        if signals.evidence is None:
            return self.stage1_probabilities(signals)
        return self.models.finals[self.final].predict(self._features(signals))

    def __call__(self, signals: CandidateSignals) -> CutResult:
        p = self.probabilities(signals)
        order, order_scores = ranked(p)
        k = expected_f1_cut(order_scores)
        kept = [int(i) for i in order[:k]]
        eligible = np.zeros(signals.n, dtype=bool)
        eligible[kept] = True
        return CutResult(kept=kept, order=order, order_scores=order_scores, scores=p, eligible=eligible, name="learned",
                         score_scale="probability")


def learned_cut_for(
    generator: Any, *, include_query: bool = True, folder: str | os.PathLike[str] | None = None
) -> LearnedCut:
    """The learned cut for a pipeline: the folder's ``final`` model when ``generator``
    is the one it was trained with (same model, weights, adapter and template, and the
    query kept as an anchor rationale), else its ``query_only`` model.

    Example:
        >>> learned_cut_for(None).final
        'query_only'
    """
    models = load_cut_models(folder)
    final = "query_only"
    trained = models.finals["final"].generator if "final" in models.finals else None
    if generator is not None and include_query and trained:
        ident = generator_identity(generator)
        if ident["model"] is not None and all(ident[k] == trained.get(k) for k in IDENTITY_FIELDS):
            final = "final"
        else:
            logger.info("no learned-cut model for the generator %s; its rationales are not read", ident["model"])
    return LearnedCut(models, final)


def pipeline_cut(cut: Any, settings: SelectorSettings, generator: Any, *, include_query: bool = True) -> Any:
    """The cut a reranker runs: ``cut`` when it is a :class:`~meteora.selection.cuts.Cut`,
    the learned models of the folder ``cut`` names, or — with ``cut=None`` — the
    packaged learned cut for ``generator`` when ``settings.cut`` is ``"learned"``
    (``None`` for ``"band"`` / ``"elbow"``: the selector builds those).

    Raises:
        InvalidInputError: ``cut`` is neither a callable cut nor a folder.
        ModelNotFoundError: the folder holds no learned-cut models.

    Example:
        >>> pipeline_cut(None, SelectorSettings(cut="band"), None) is None
        True
        >>> pipeline_cut(None, SelectorSettings(), None).final
        'query_only'
    """
    if cut is None:
        return learned_cut_for(generator, include_query=include_query) if settings.cut == "learned" else None
    if isinstance(cut, (str, os.PathLike)):
        return learned_cut_for(generator, include_query=include_query, folder=cut)
    if callable(cut):
        return cut
    raise InvalidInputError(
        f"cut must be a folder written by `meteora train cut` or a Cut (signals -> CutResult), got {type(cut).__name__}; "
        "to pick a shipped cut use SelectorSettings(cut='learned'|'band'|'elbow')"
    )

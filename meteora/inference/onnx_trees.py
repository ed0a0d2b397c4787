"""Binary LightGBM models run on ONNX Runtime, so inference does not import LightGBM.

The learned cut's models are trained with LightGBM (``meteora train cut``) and saved as
LightGBM text files; :func:`export_booster` also writes each one as ONNX (onnxmltools'
LightGBM converter, a ``TreeEnsemble`` graph, at training time only), and
:class:`OnnxTrees` runs that file with ONNX Runtime, which the encoder and the evidence
scorer already use. Importing LightGBM costs about a second and brings scikit-learn
(and pandas where installed) into the process; ONNX Runtime is already loaded.

ONNX's tree ensembles compare float32 features with float32 thresholds where LightGBM
compares float64: a feature within float32 rounding of a split threshold can take the
other branch. :func:`export_booster` refuses an export that differs from LightGBM on
ordinary rows and records how far rows placed on the split thresholds move; the learned
cut's agreement on real candidate lists (the benchmarks' selections through both) is in
the README and the tests.

Example:
    >>> trees = OnnxTrees("meteora/weights/learned-cut/final.onnx")   # doctest: +SKIP
    >>> trees.predict(features).shape                                 # doctest: +SKIP
    (50,)
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from meteora.errors import InvalidInputError, ModelNotFoundError

__all__ = ["OnnxTrees", "export_booster", "ONNX_TREE_OPSET", "threshold_rows"]

logger = logging.getLogger(__name__)

#: the ONNX opset of the exports (the newest onnxmltools' LightGBM converter writes)
ONNX_TREE_OPSET = 15


class OnnxTrees:
    """A binary LightGBM model exported by :func:`export_booster`, run on ONNX Runtime
    (one thread: a candidate list is a few dozen rows).

    Args:
        path: the ``.onnx`` file.

    Raises:
        ModelNotFoundError: the file is missing or ONNX Runtime cannot load it.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelNotFoundError(f"{self.path} is missing; rebuild the learned-cut folder with `meteora train cut`")
        self._session: Any = None
        self._lock = threading.Lock()
        shape = self.session.get_inputs()[0].shape
        if len(shape) != 2 or not isinstance(shape[1], int):
            raise InvalidInputError(f"{self.path} is not a tree model over a fixed number of features (input {shape})")
        self._n_features = int(shape[1])

    @property
    def session(self) -> Any:
        """The ONNX Runtime session (started on first use)."""
        if self._session is None:
            with self._lock:
                if self._session is None:
                    import onnxruntime as ort

                    options = ort.SessionOptions()
                    options.intra_op_num_threads = 1
                    options.inter_op_num_threads = 1
                    options.log_severity_level = 3  # errors only (the unused label output's shape warning)
                    try:
                        self._session = ort.InferenceSession(str(self.path), options,
                                                             providers=["CPUExecutionProvider"])
                    except Exception as exc:  # onnxruntime's own exception types
                        raise ModelNotFoundError(f"ONNX Runtime cannot load {self.path}: {exc}") from exc
        return self._session

    def num_feature(self) -> int:
        """The number of features the model reads (as ``lightgbm.Booster.num_feature``)."""
        return self._n_features

    def predict(self, X: np.ndarray) -> np.ndarray:
        """``P(class 1)`` of each row of ``X`` (``(n, num_feature())``), as float64."""
        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self._n_features:
            raise InvalidInputError(f"{self.path.name} reads {self._n_features} features; got an array of shape {X.shape}")
        if len(X) == 0:
            return np.zeros(0)
        probabilities = self.session.run(["probabilities"], {self.session.get_inputs()[0].name: X})[0]
        return np.asarray(probabilities[:, 1], dtype=np.float64)

    def __repr__(self) -> str:
        return f"OnnxTrees({self.path.name!r}, features={self._n_features})"


def threshold_rows(booster: Any, n: int = 4096, seed: int = 0) -> np.ndarray:
    """``n`` feature rows whose values sit on, just below and just above the model's own
    split thresholds (where float32 and float64 comparisons can disagree).

    Example:
        >>> threshold_rows(booster, 8).shape  # doctest: +SKIP
        (8, 21)
    """
    nf = booster.num_feature()
    cuts: list[list[float]] = [[] for _ in range(nf)]

    def walk(node: dict[str, Any]) -> None:
        if "split_feature" in node:
            cuts[node["split_feature"]].append(float(node["threshold"]))
            walk(node["left_child"])
            walk(node["right_child"])

    for tree in booster.dump_model()["tree_info"]:
        walk(tree["tree_structure"])
    rng = np.random.default_rng(seed)
    X = np.zeros((n, nf))
    for j, values in enumerate(cuts):
        base = np.array(values or [0.0])
        picked = rng.choice(base, size=n)
        X[:, j] = picked + rng.choice([-1.0, 0.0, 1.0], size=n) * np.abs(picked) * rng.choice([0.0, 1e-7, 1e-3], size=n)
    return X


def export_booster(booster: Any, path: str | os.PathLike[str], *, tolerance: float = 1e-4) -> dict[str, Any]:
    """Write ``booster`` (a binary LightGBM model) as ONNX to ``path``; returns the
    export's record: opset, converter version, sha256 and the largest probability
    difference from LightGBM on standard-normal rows (must stay within ``tolerance``) and,
    for information, on :func:`threshold_rows` (rows placed on the split thresholds,
    where float32 rounding can send a row down the other branch).

    Raises:
        MissingDependencyError: onnxmltools is not installed (``pip install "meteora-rerank[train]"``).
        InvalidInputError: the export disagrees with LightGBM by more than ``tolerance``.
    """
    import hashlib

    from meteora._io import atomic_write_bytes
    from meteora.errors import require

    onnxmltools = require("onnxmltools", "train", "exporting the learned cut to ONNX")
    from onnxmltools.convert.common.data_types import FloatTensorType

    nf = booster.num_feature()
    out = Path(path)
    model = onnxmltools.convert_lightgbm(booster, name=out.stem,  # a fixed graph name: the same bytes every time
                                         initial_types=[("features", FloatTensorType([None, nf]))],
                                         zipmap=False, target_opset=ONNX_TREE_OPSET)
    data = model.SerializeToString()
    atomic_write_bytes(out, data)
    trees = OnnxTrees(out)

    def diff(X: np.ndarray) -> float:
        return float(np.max(np.abs(trees.predict(X) - booster.predict(X, num_threads=1))))

    normal = diff(np.random.default_rng(1).standard_normal((4096, nf)))
    if not normal <= tolerance:
        out.unlink(missing_ok=True)
        raise InvalidInputError(f"the ONNX export of {out.name} differs from LightGBM by {normal:.3g} (> {tolerance})")
    return {"file": out.name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "opset": ONNX_TREE_OPSET,
            "onnxmltools": onnxmltools.__version__,
            "max_abs_diff_vs_lightgbm": {"standard_normal": normal, "split_thresholds": diff(threshold_rows(booster))}}

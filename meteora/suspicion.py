"""How suspicious a candidate is, from signals relative to its query and its pool.

An added document written *for* a question tends to stand out of the pool it lands in:
it paraphrases or restates the question, it is closer to the query than anything else,
and it reads like a finding. None of these depends on an attack's wording, so they are
read relative to the query and the other candidates (:func:`pool_signals`):

* ``cos``: the candidate's cosine to the query; ``cos_gap``: how far that stands above
  the best candidate of any *other* document;
* ``echo``: the share of the question's content words it repeats; ``span``: its longest
  verbatim run of question words, as a share of the question (real evidence rarely
  restates the question: on PubMedQA train abstracts 99.5 % of passages repeat at most
  61.5 % of it in one run);
* ``logit``: the evidence scorer's logit, on its absolute scale (does it read like a
  result?);
* ``conflict``: a candidate of another document, among the best few, reports the
  opposite finding (:mod:`meteora.findings`);
* the *shape prior* (opt-in only): ``lone`` — its document has one chunk while the
  other candidates' documents have several — and ``support`` — other chunks of its
  document among the candidates. Honest one-passage sources trip it (see the README).

:class:`SuspicionModel` is a logistic model over some of these, stored as a small JSON
file (no pickle) with its threshold and provenance, trained by ``meteora train
poison-defence`` on PubMedQA *train* questions and the train attack families only.

Example:
    >>> echo_features("Does aspirin prevent stroke in adults?", "Aspirin did not prevent stroke in adults.")
    (1.0, 0.6666666666666666)
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from meteora.errors import InvalidInputError
from meteora.findings import Finding, finding

__all__ = [
    "SIGNALS",
    "SEMANTIC_SIGNALS",
    "SHAPE_SIGNALS",
    "SIGNAL_SIGNS",
    "SuspicionModel",
    "PoolSignals",
    "echo_features",
    "pool_signals",
    "DEFAULT_SUSPICION",
    "SHAPE_SUSPICION",
]

_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights" / "poison-defence"
#: the packaged model of the default defence (no shape prior)
DEFAULT_SUSPICION = _WEIGHTS_DIR / "suspicion.json"
#: the opt-in shape-prior model
SHAPE_SUSPICION = _WEIGHTS_DIR / "suspicion-shape.json"

#: signals the default model may read
SEMANTIC_SIGNALS = ("cos", "cos_gap", "echo", "span", "logit", "conflict")
#: the opt-in shape prior's extra signals
SHAPE_SIGNALS = ("lone", "support")
SIGNALS = SEMANTIC_SIGNALS + SHAPE_SIGNALS
#: the direction in which each signal makes a candidate *more* suspicious (the sign a
#: monotone model's coefficient may take: an added document stands out, restates the
#: question, reads like a finding, disagrees; a document with more support is less suspect)
SIGNAL_SIGNS = {"cos": 1, "cos_gap": 1, "echo": 1, "span": 1, "logit": 1, "conflict": 1, "lone": 1, "support": -1}
#: candidates (best by score) a conflict is looked for among
CONFLICT_TOP = 8

_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    """the and for with from that this these those does did was were are have has had can could should would
will may might into than then there their what which when where while whom whose about after before during between
among patients""".split()
)


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def echo_features(query: str, text: str) -> tuple[float, float]:
    """``(echo, span)``: the share of the query's content words (over 3 letters, not
    stop words) in ``text``, and its longest verbatim run of query words / query length."""
    qw = _words(query)
    content = [w for w in qw if len(w) > 3 and w not in _STOP]
    tw = _words(text)
    present = set(tw)
    echo = sum(w in present for w in content) / len(content) if content else 0.0
    where: dict[str, list[int]] = {}
    for i, w in enumerate(tw):
        where.setdefault(w, []).append(i)
    best = 0
    for i in range(len(qw)):
        for j in where.get(qw[i], ()):
            k = 0
            while i + k < len(qw) and j + k < len(tw) and qw[i + k] == tw[j + k]:
                k += 1
            best = max(best, k)
    return echo, best / max(len(qw), 1)


class PoolSignals:
    """Lazily computed :data:`SIGNALS` of a :class:`~meteora.pool_stage.PoolView`'s
    candidates (a logit is computed only when a row is asked for).

    Example:
        >>> import numpy as np
        >>> from meteora.pool_stage import PoolView
        >>> from meteora.selection.selector import EvidenceSelector
        >>> from meteora.types import to_passages
        >>> ps = to_passages(["fever", "cats"])
        >>> view = PoolView("fever", ps, EvidenceSelector().select(np.eye(2)[:1], np.eye(2), ps),
        ...                 np.array([1.0, 0.2]), None, score_logits=lambda t: [0.0] * len(t))
        >>> round(PoolSignals(view).row(0)["cos_gap"], 2)
        0.8
    """

    def __init__(self, view: Any) -> None:
        self.view = view
        cands = view.candidates
        self.findings: list[Finding] = [finding(p.text) for p in cands]
        cos = view.query_cosines
        best: dict[str, float] = {}
        for p, c in zip(cands, cos, strict=True):
            best[p.doc_id] = max(best.get(p.doc_id, -1.0), float(c))
        top2 = sorted(best.items(), key=lambda kv: -kv[1])[:2]
        self._best_other = {
            d: (top2[1][1] if len(top2) > 1 and top2[0][0] == d else (top2[0][1] if top2 and top2[0][0] != d else None))
            for d in best
        }
        self._top = [int(i) for i in np.argsort(-view.scores, kind="stable")[:CONFLICT_TOP]]
        per_doc: dict[str, int] = {}
        for p in cands:
            per_doc[p.doc_id] = per_doc.get(p.doc_id, 0) + 1
        self._per_doc = per_doc
        self._size = {d: view.doc_size(d) for d in per_doc}
        self._rows: dict[int, dict[str, float]] = {}

    def conflict(self, i: int) -> bool:
        """Whether a top candidate of another document reports the opposite finding."""
        s = self.findings[i].sign
        doc = self.view.candidates[i].doc_id
        return bool(s) and any(
            self.view.candidates[j].doc_id != doc and self.findings[j].sign == -s for j in self._top
        )

    def prefetch(self, indices: Sequence[int]) -> None:
        """Compute the logits of these rows in one batched scorer call."""
        todo = [i for i in indices if i not in self._rows]
        if todo and self.view.has_logits:
            self.view.evidence_logits(todo)

    def row(self, i: int) -> dict[str, float]:
        """The signals of candidate ``i`` (plus its finding ``polarity``)."""
        if i in self._rows:
            return self._rows[i]
        p = self.view.candidates[i]
        cos = float(self.view.query_cosines[i])
        other = self._best_other.get(p.doc_id)
        echo, span = echo_features(self.view.query, p.text)
        size = self._size[p.doc_id]
        others = [d for d in self._size if d != p.doc_id]
        out = {
            "cos": cos,
            "cos_gap": cos - (other if other is not None else 0.0),
            "echo": echo,
            "span": span,
            # NaN without an evidence scorer (a model that reads the logit then refuses to run)
            "logit": float(self.view.evidence_logits([i])[0]) if self.view.has_logits else math.nan,
            "conflict": float(self.conflict(i)),
            "lone": float(size <= 1) * (sum(self._size[d] > 1 for d in others) / max(len(others), 1)),
            "support": float(self._per_doc[p.doc_id] - 1),
            "polarity": self.findings[i].polarity,
        }
        self._rows[i] = out
        return out


def pool_signals(view: Any, indices: Sequence[int]) -> list[dict[str, float]]:
    """The signals of candidates ``indices`` of ``view`` (one batched logit call).

    Example:
        >>> pool_signals(view, [0, 1])  # doctest: +SKIP
    """
    sig = PoolSignals(view)
    sig.prefetch(indices)
    return [sig.row(i) for i in indices]


class SuspicionModel:
    """A logistic model over pool signals: ``P(added poison | signals)``.

    Args:
        weights: ``{"features", "mean", "std", "coef", "intercept", "threshold"}``
            (plus ``provenance``), as ``meteora train poison-defence`` writes them.
        where: names the source in error messages.

    Raises:
        InvalidInputError: malformed weights (unknown signals, shapes, non-finite numbers).

    Example:
        >>> m = SuspicionModel({"features": ["span"], "mean": [0.2], "std": [0.2], "coef": [3.0],
        ...                     "intercept": -2.0, "threshold": 0.5})
        >>> [round(p, 2) for p in m.probabilities([{"span": 0.1}, {"span": 0.9}])]
        [0.03, 1.0]
    """

    def __init__(self, weights: Mapping[str, Any], *, where: str = "weights") -> None:
        if not isinstance(weights, Mapping):
            raise InvalidInputError(f"{where}: suspicion weights must be a JSON object")
        try:
            self.features = [str(x) for x in weights["features"]]
            self.mean = np.asarray(weights["mean"], dtype=np.float64)
            self.std = np.asarray(weights["std"], dtype=np.float64)
            self.coef = np.asarray(weights["coef"], dtype=np.float64)
            self.intercept = float(weights["intercept"])
            self.threshold = float(weights["threshold"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"{where}: suspicion weights need features, mean, std, coef, intercept and threshold ({exc})"
            ) from exc
        unknown = [f for f in self.features if f not in SIGNALS]
        shapes = {a.shape for a in (self.mean, self.std, self.coef)}
        finite = all(np.all(np.isfinite(a)) for a in (self.mean, self.std, self.coef)) and math.isfinite(self.intercept)
        if unknown or shapes != {(len(self.features),)} or not finite or np.any(self.std <= 0):
            raise InvalidInputError(
                f"{where}: malformed suspicion weights (unknown signals {unknown}, or mismatched / non-finite "
                f"numbers); the signals are {list(SIGNALS)}; retrain with `meteora train poison-defence`"
            )
        if not 0.0 < self.threshold < 1.0:
            raise InvalidInputError(f"{where}: threshold must be a probability in (0, 1), got {self.threshold!r}")
        self.provenance = dict(weights.get("provenance") or {})

    @classmethod
    def from_file(cls, path: str | Path | None = None) -> SuspicionModel:
        """Load a model JSON (default: the packaged :data:`DEFAULT_SUSPICION`).

        Raises:
            InvalidInputError: the file cannot be read or is malformed.
        """
        file = Path(DEFAULT_SUSPICION if path is None else path)
        try:
            weights = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise InvalidInputError(f"cannot read suspicion weights {file}: {exc}") from exc
        return cls(weights, where=str(file.name))

    @property
    def uses_logit(self) -> bool:
        return "logit" in self.features

    def logits(self, rows: Sequence[Mapping[str, float]]) -> np.ndarray:
        """The model's log-odds for each row of signals."""
        if not rows:
            return np.zeros(0)
        x = np.array([[float(r[f]) for f in self.features] for r in rows], dtype=np.float64)
        return ((x - self.mean) / self.std) @ self.coef + self.intercept

    def probabilities(self, rows: Sequence[Mapping[str, float]]) -> list[float]:
        """``P(poison)`` for each row of signals."""
        z = np.clip(self.logits(rows), -60.0, 60.0)
        return (1.0 / (1.0 + np.exp(-z))).tolist()

    def to_dict(self) -> dict[str, Any]:
        """The weights as JSON-ready data."""
        return {
            "features": list(self.features), "mean": self.mean.tolist(), "std": self.std.tolist(),
            "coef": self.coef.tolist(), "intercept": self.intercept, "threshold": self.threshold,
            "provenance": dict(self.provenance),
        }

    def __repr__(self) -> str:
        return f"SuspicionModel(features={self.features}, threshold={self.threshold:.3f})"

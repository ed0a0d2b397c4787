"""The evidence selector's settings: :class:`SelectorSettings`, the one home of its knobs.

One frozen, validated, typed object holds the selector knobs (the cut, pairing, tau,
window, stage switches, order, relevance floor, evidence-scorer knobs, and whether
expansion may reach the candidates' whole documents), their defaults and their checks. It is what
:class:`~meteora.Reranker`, the benchmark, the QA evaluation and the CLI pass around;
:class:`~meteora.selection.selector.EvidenceSelector` takes it.

The evidence knobs default to ``"calibrated"``: the values a scorer recorded when it
was trained (:attr:`meteora.scorer.EvidenceScorer.calibration`), or
:data:`DEFAULT_EVIDENCE_WEIGHT` / :data:`DEFAULT_EVIDENCE_BAND` for a scorer that records
none (:meth:`SelectorSettings.resolve`).

Example:
    >>> s = SelectorSettings(window=1)
    >>> s.replace(pairing="convergent").to_dict()["pairing"]
    'convergent'
    >>> s.resolve({"evidence_band": 0.04}).evidence_band, s.resolve(None).evidence_band
    (0.04, 0.06)
    >>> SelectorSettings(window=-1)
    Traceback (most recent call last):
    ...
    meteora.errors.InvalidInputError: window must be a non-negative integer (0 disables expansion), got -1
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from meteora.errors import InvalidInputError
from meteora.selection.validation import check_floor, check_tau

__all__ = [
    "SelectorSettings",
    "CUTS",
    "PAIRING_MODES",
    "ORDERS",
    "CALIBRATED",
    "DEFAULT_EVIDENCE_WEIGHT",
    "DEFAULT_EVIDENCE_BAND",
]

#: The cuts (:mod:`meteora.selection.cuts`): the learned one (default), the evidence band
#: (the elbow without a scorer) and METEORA's elbow.
CUTS = ("learned", "band", "elbow")
PAIRING_MODES = ("distinct", "convergent")
ORDERS = ("score", "document")
#: An evidence knob's value meaning "the scorer's calibrated value".
CALIBRATED = "calibrated"
#: ``evidence_weight`` for a scorer that records no calibration.
DEFAULT_EVIDENCE_WEIGHT = 0.03
#: ``evidence_band`` for a scorer that records no calibration.
DEFAULT_EVIDENCE_BAND = 0.06
_EVIDENCE_DEFAULTS = {"evidence_weight": DEFAULT_EVIDENCE_WEIGHT, "evidence_band": DEFAULT_EVIDENCE_BAND}
_EVIDENCE_RANGES = {"evidence_weight": 10.0, "evidence_band": 2.0}


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidInputError(f"{name} must be True or False, got {value!r}")
    return bool(value)


@dataclass(frozen=True)
class SelectorSettings:
    """The evidence selector's knobs, validated once.

    Attributes:
        pairing: ``"distinct"`` (each rationale takes a chunk no earlier rationale
            took) or ``"convergent"`` (plain argmax; several rationales may choose one).
        tau: z-score threshold of the pooled elbow.
        window: expansion window: neighbours ``position ± 1..window`` of a selected
            chunk's document are added. ``0`` (the default) disables expansion, the
            drop-in reranker setting of the spec; the paper uses ``1``.
        use_pairing / use_pooling: run the pairing / pooled-cut stage (ablations;
            at least one must be on).
        order: ``"score"`` (final score, descending) or ``"document"`` (documents in
            the order their best chunk ranks, chunks by position inside a document).
        expand_from_documents: with ``window > 0``, expansion may add neighbours from
            the candidates' whole documents (the retriever's corpus), not only
            neighbours that are candidates themselves.
        min_similarity: without an evidence scorer, no chunk whose cosine to the
            rationale (pairing) or pooled rationale (pooling) is below this is selected
            (default 0.2: 99 % of PubMedQA *train* evidence chunks have a cosine of at
            least 0.30 to their question, unrelated text sits near 0); with a scorer,
            the floor of the document-relevance score; ``None``: off.
        evidence_weight / evidence_band: with an evidence scorer, how much a chunk's
            evidence-logit gap to the best chunk of its document lowers its score, and
            how far below the best score a chunk may be and still be selected (see
            :mod:`meteora.selection`). ``"calibrated"`` (default) takes the values
            calibrated on held-out train questions when the scorer was trained.
        cut: how many candidates the selection keeps. ``"learned"`` (default): the
            learned cut (:mod:`meteora.selection.learned_cut`): P(relevant) per candidate,
            the top ``k`` that maximises the expected F1, ranking by P; the selection is
            exactly that top ``k`` (pairing only inside it, ``min_similarity`` and the
            evidence knobs unused). It reads the query: the array-level selector given
            no ``query`` (or no query embedding) runs the band instead.
            ``"band"``: the evidence band with a scorer, the elbow without one (the
            previous default). ``"elbow"``: METEORA's pooled elbow, scorer unused.

    Raises:
        InvalidInputError: a value the selector cannot use; the message says which and
            what to use instead.

    Example:
        >>> SelectorSettings(tau=0.5, order="document").replace(window=2)
        SelectorSettings(pairing='distinct', tau=0.5, window=2, use_pairing=True, use_pooling=True, order='document', expand_from_documents=True, min_similarity=0.2, evidence_weight='calibrated', evidence_band='calibrated', cut='learned')
    """

    pairing: str = "distinct"
    tau: float = 1.0
    window: int = 0
    use_pairing: bool = True
    use_pooling: bool = True
    order: str = "score"
    expand_from_documents: bool = True
    min_similarity: float | None = 0.2
    evidence_weight: float | str = CALIBRATED
    evidence_band: float | str = CALIBRATED
    cut: str = "learned"

    def __post_init__(self) -> None:
        if self.cut not in CUTS:
            raise InvalidInputError(f"unknown cut {self.cut!r}; choose one of {list(CUTS)}")
        if self.pairing not in PAIRING_MODES:
            raise InvalidInputError(f"unknown pairing {self.pairing!r}; choose one of {list(PAIRING_MODES)}")
        if self.order not in ORDERS:
            raise InvalidInputError(f"unknown order {self.order!r}; choose one of {list(ORDERS)}")
        window = self.window
        if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 0:
            raise InvalidInputError(f"window must be a non-negative integer (0 disables expansion), got {window!r}")
        set_ = object.__setattr__
        set_(self, "use_pairing", _flag("use_pairing", self.use_pairing))
        set_(self, "use_pooling", _flag("use_pooling", self.use_pooling))
        if not self.use_pairing and not self.use_pooling:
            raise InvalidInputError("use_pairing and use_pooling are both False, so nothing can be selected; enable at least one")
        set_(self, "tau", check_tau(self.tau))
        set_(self, "window", int(window))
        set_(self, "min_similarity", check_floor(self.min_similarity, "min_similarity", -1.0, 1.0))
        for name, high in _EVIDENCE_RANGES.items():
            value = getattr(self, name)
            if isinstance(value, str):
                if value != CALIBRATED:
                    raise InvalidInputError(f"{name} must be 'calibrated' or a non-negative number, got {value!r}")
                continue
            if value is None:
                raise InvalidInputError("evidence_weight and evidence_band must be numbers, not None")
            set_(self, name, check_floor(value, name, 0.0, high))
        set_(self, "expand_from_documents", _flag("expand_from_documents", self.expand_from_documents))

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The settings' field names, in order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def replace(self, **changes: Any) -> SelectorSettings:
        """A copy with some fields changed (validated again).

        Raises:
            InvalidInputError: an unknown field name.
        """
        unknown = sorted(set(changes) - set(self.field_names()))
        if unknown:
            raise InvalidInputError(
                f"unknown selector setting(s) {unknown}; the settings are {list(self.field_names())}"
            )
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SelectorSettings:
        """Settings from a mapping such as :meth:`to_dict`'s output (unknown keys refused)."""
        if not isinstance(values, Mapping):
            raise InvalidInputError(f"selector settings must be a mapping, got {type(values).__name__}")
        return cls().replace(**dict(values))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the fields."""
        return dataclasses.asdict(self)

    def resolve(self, calibrated: Mapping[str, float] | None = None) -> SelectorSettings:
        """These settings with ``"calibrated"`` evidence knobs replaced by numbers: the
        scorer's ``calibrated`` values, else the defaults.

        Example:
            >>> SelectorSettings(evidence_band=0.1).resolve({"evidence_band": 0.04, "evidence_weight": 0.02})
            SelectorSettings(pairing='distinct', tau=1.0, window=0, use_pairing=True, use_pooling=True, order='score', expand_from_documents=True, min_similarity=0.2, evidence_weight=0.02, evidence_band=0.1, cut='learned')
        """
        values = {
            name: (calibrated or {}).get(name, default)
            for name, default in _EVIDENCE_DEFAULTS.items()
            if getattr(self, name) == CALIBRATED
        }
        return self.replace(**values) if values else self

    @property
    def uses_context(self) -> bool:
        """Whether expansion may add chunks from the candidates' documents."""
        return self.window > 0 and self.expand_from_documents

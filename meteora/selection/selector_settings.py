"""The evidence selector's settings: :class:`SelectorSettings`.

One frozen, validated, typed object holds the selector knobs (pairing, tau, window,
stage switches, order, relevance floor, evidence-scorer knobs, and whether expansion
may reach the candidates' whole documents) instead of loose parameters. It is what
:class:`~meteora.Reranker`, the benchmark, the QA evaluation and the CLI pass around;
:meth:`SelectorSettings.selector` builds the
:class:`~meteora.selection.selector.EvidenceSelector` it describes, whose own checks
validate the values.

Example:
    >>> s = SelectorSettings(window=1)
    >>> s.replace(pairing="convergent").to_dict()["pairing"]
    'convergent'
    >>> s.selector().window
    1
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
from meteora.selection.selector import EvidenceSelector

__all__ = ["SelectorSettings"]


@dataclass(frozen=True)
class SelectorSettings:
    """The evidence selector's knobs, validated once.

    Attributes:
        pairing: ``"distinct"`` (each rationale takes a chunk no earlier rationale
            took) or ``"convergent"`` (plain argmax).
        tau: z-score threshold of the pooled elbow.
        window: expansion window: neighbours ``position ± 1..window`` of a selected
            chunk's document are added. ``0`` (the default) disables expansion, the
            drop-in reranker setting of the spec.
        use_pairing / use_pooling: run the pairing / pooled-elbow stage (ablations;
            at least one must be on).
        order: ``"score"`` or ``"document"`` order of the selection.
        expand_from_documents: with ``window > 0``, expansion may add neighbours from
            the candidates' whole documents (the retriever's corpus), not only
            neighbours that are candidates themselves.
        min_similarity: without an evidence scorer, no chunk whose cosine to the
            rationale (pairing) or pooled rationale (pooling) is below this is selected
            (default 0.2: 99 % of PubMedQA *train* evidence chunks have a cosine of at
            least 0.30 to their question, unrelated text sits near 0); ``None``: off.
        evidence_weight / evidence_band: with an evidence scorer, how much a chunk's
            evidence-logit gap to the best chunk of its document lowers its score, and
            how far below the best score a chunk may be and still be selected (see
            :mod:`meteora.selection`). ``"calibrated"`` (default) takes the values
            calibrated on held-out train questions when the scorer was trained.

    Raises:
        InvalidInputError: a value the selector would refuse; the message says which
            and what to use instead.

    Example:
        >>> SelectorSettings(tau=0.5, order="document").replace(window=2)
        SelectorSettings(pairing='distinct', tau=0.5, window=2, use_pairing=True, use_pooling=True, order='document', expand_from_documents=True, min_similarity=0.2, evidence_weight='calibrated', evidence_band='calibrated')
    """

    pairing: str = "distinct"
    tau: float = 1.0
    window: int = 0
    use_pairing: bool = True
    use_pooling: bool = True
    order: str = "score"
    expand_from_documents: bool = True
    min_similarity: float | None = 0.2
    evidence_weight: float | str = "calibrated"
    evidence_band: float | str = "calibrated"

    def __post_init__(self) -> None:
        # the selector's own checks are the one place these values are validated
        for name in ("evidence_weight", "evidence_band"):
            value = getattr(self, name)
            if isinstance(value, str) and value != "calibrated":
                raise InvalidInputError(f"{name} must be 'calibrated' or a non-negative number, got {value!r}")
        knobs = {n: getattr(self, n) for n in ("evidence_weight", "evidence_band") if getattr(self, n) != "calibrated"}
        sel = EvidenceSelector(
            pairing=self.pairing,
            tau=self.tau,
            window=self.window,
            use_pairing=self.use_pairing,
            use_pooling=self.use_pooling,
            order=self.order,
            min_similarity=self.min_similarity,
            **knobs,
        )
        object.__setattr__(self, "min_similarity", sel.min_similarity)
        for name in knobs:
            object.__setattr__(self, name, getattr(sel, name))
        if not isinstance(self.expand_from_documents, (bool, np.bool_)):
            raise InvalidInputError(
                f"expand_from_documents must be True or False, got {self.expand_from_documents!r}"
            )
        object.__setattr__(self, "tau", sel.tau)
        object.__setattr__(self, "window", sel.window)
        object.__setattr__(self, "use_pairing", sel.use_pairing)
        object.__setattr__(self, "use_pooling", sel.use_pooling)
        object.__setattr__(self, "expand_from_documents", bool(self.expand_from_documents))

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

    def selector(self, calibrated: dict[str, float] | None = None) -> EvidenceSelector:
        """An :class:`~meteora.selection.EvidenceSelector` with these settings;
        ``calibrated`` holds the scorer's ``evidence_weight``/``evidence_band`` that
        ``"calibrated"`` stands for (the selector's defaults when absent)."""
        return EvidenceSelector.from_settings(self, calibrated=calibrated)

    @property
    def uses_context(self) -> bool:
        """Whether expansion may add chunks from the candidates' documents."""
        return self.window > 0 and self.expand_from_documents

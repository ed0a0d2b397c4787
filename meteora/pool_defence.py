"""The default poison defence: a verifier stage over the candidate pool (:class:`PoolDefence`).

An attacker does not edit PubMed abstracts, it *adds documents*: one fluent, on-topic
passage written for the question scores above the real abstract, the selection keeps
it alone, and the real evidence is displaced. :class:`PoolDefence` runs after selection
on the whole pool (:class:`~meteora.pool_stage.PoolView`):

1. **suspicion** — each candidate's probability of being an added poison from a small
   logistic model over pool-relative signals (:mod:`meteora.suspicion`: verbatim
   question run, question-word echo, cosine and cosine gap to the best other document,
   the evidence scorer's logit, a conflict with another relevant document); a document
   is as suspicious as its most suspicious candidate; an optional per-passage trust
   prior (``metadata={"source_trust": t}``, ``t`` in ``(0, 1)``, 0.5 neutral) multiplies
   the odds by ``(1 - t) / t``;
2. **drop whole documents** at or above the model's threshold, and — the **conflict
   gate** — a selected document above half the threshold whose finding (in a passage
   the cut chose, not a neighbour that expansion added) disagrees with a relevant
   document (ranking score within ``gate_window``) that is clearly less suspicious (by
   ``gate_margin``): only the more suspicious side of a disagreement goes, never both;
3. **re-select** with the selector itself on the pool without the dropped documents
   (:meth:`~meteora.pool_stage.PoolView.reselect`), so the displaced evidence comes
   back; repeat while the new selection holds a suspicious document (``max_rounds``);
4. **guard** — one lone document never holds the selection alone: when the selection
   is a single one-chunk document (in the corpus; among the candidates when the corpus
   is unknown) and other candidates' documents have several chunks, the best chunk of
   the next document within ``guard_margin`` of it is added. It only ever adds;
5. **conflicts** — passages of different documents in the selection (or dropped from
   it) whose findings disagree are reported (:class:`~meteora.conflicts.Conflict`),
   with what was kept and dropped and why.

``shape_prior=True`` (opt-in, never the default) also drops one-passage documents among
multi-passage abstracts: it stops every single-document attack of the benchmark, but it
deletes honest one-passage evidence (a real abstract indexed as one passage) in nearly
every case — see the README's poisoning section.

What it costs: on PubMedQA test, clean gold dropped and evidence F1 change are in
``benchmarks/results/poisoning_new_document.json``; only the candidates it judges need
an evidence logit the pipeline had not computed (one batched scorer call per round).

Example:
    >>> from meteora import Reranker
    >>> rr = Reranker(generator=None)                     # PoolDefence() is the default verifier  # doctest: +SKIP
    >>> res = rr.search("Does X prevent Y?", retriever, k=20)  # doctest: +SKIP
    >>> [c.to_dict() for c in res.conflicts]               # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from meteora.conflicts import find_conflicts
from meteora.errors import InvalidInputError
from meteora.pool_stage import PoolVerification, PoolView
from meteora.suspicion import DEFAULT_SUSPICION, SHAPE_SUSPICION, PoolSignals, SuspicionModel

__all__ = ["PoolDefence", "TRUST_KEY"]

logger = logging.getLogger(__name__)

#: the passage metadata key of the optional trust prior
TRUST_KEY = "source_trust"


def _number(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= float(value) <= high:
        raise InvalidInputError(f"{name} must be a number in [{low:g}, {high:g}], got {value!r}")
    return float(value)


def _model(value: Any, default: Path) -> SuspicionModel:
    if value is None:
        return SuspicionModel.from_file(default)
    if isinstance(value, SuspicionModel):
        return value
    if isinstance(value, Mapping):
        return SuspicionModel(value)
    if isinstance(value, (str, Path)):
        return SuspicionModel.from_file(value)
    raise InvalidInputError(f"model must be a SuspicionModel, a weights dict or a JSON path, got {type(value).__name__}")


class PoolDefence:
    """The verifier stage that drops suspicious documents and re-selects (module doc).

    Args:
        model: the suspicion model (:class:`~meteora.suspicion.SuspicionModel`, a weights
            dict or a JSON path; ``None``: the packaged one).
        shape_prior: also use the opt-in shape-prior model (drops lone one-passage
            documents; never the default).
        shape_model: that model (``None``: the packaged one).
        conflict_gate: drop the clearly more suspicious side of a disagreement.
        gate_fraction: the gate speaks for documents above this share of the threshold.
        gate_margin / gate_window: the other side must be less suspicious by
            ``gate_margin`` and score within ``gate_window`` of the passage.
        document_level: a document is as suspicious as its most suspicious candidate.
        guard: add the next document when one lone document holds the selection.
        guard_margin: how far below the lone document that next document may score.
        max_rounds: drop / re-select rounds at most.
        trust_key: passage metadata key of the trust prior (``None``: ignore metadata).

    Raises:
        InvalidInputError: a bad option or malformed weights.

    Example:
        >>> d = PoolDefence()
        >>> d.threshold > 0.5, d.conflict_gate, d.shape_prior
        (True, True, False)
    """

    def __init__(
        self,
        model: Any = None,
        *,
        shape_prior: bool = False,
        shape_model: Any = None,
        conflict_gate: bool = True,
        gate_fraction: float = 0.5,
        gate_margin: float = 0.25,
        gate_window: float = 0.15,
        document_level: bool = True,
        guard: bool = True,
        guard_margin: float = 0.1,
        max_rounds: int = 3,
        trust_key: str | None = TRUST_KEY,
    ) -> None:
        self.model = _model(model, DEFAULT_SUSPICION)
        self.shape_prior = bool(shape_prior)
        self.shape_model = _model(shape_model, SHAPE_SUSPICION) if shape_prior else None
        self.conflict_gate = bool(conflict_gate)
        self.gate_fraction = _number(gate_fraction, "gate_fraction", 0.0, 1.0)
        self.gate_margin = _number(gate_margin, "gate_margin", 0.0, 1.0)
        self.gate_window = _number(gate_window, "gate_window", 0.0, 10.0)
        self.document_level = bool(document_level)
        self.guard = bool(guard)
        self.guard_margin = _number(guard_margin, "guard_margin", 0.0, 10.0)
        if isinstance(max_rounds, bool) or not isinstance(max_rounds, int) or max_rounds < 1:
            raise InvalidInputError(f"max_rounds must be a positive integer, got {max_rounds!r}")
        self.max_rounds = max_rounds
        self.trust_key = trust_key

    @property
    def threshold(self) -> float:
        """Suspicion at or above which a document is dropped."""
        return self.model.threshold

    @property
    def needs_logits(self) -> bool:
        """Whether the models read the evidence scorer's logit."""
        return self.model.uses_logit or (self.shape_model is not None and self.shape_model.uses_logit)

    def __repr__(self) -> str:
        return (f"PoolDefence(threshold={self.threshold:.3f}, conflict_gate={self.conflict_gate}, "
                f"document_level={self.document_level}, guard={self.guard}, shape_prior={self.shape_prior})")

    # ----------------------------------------------------------------- suspicion
    def _trust_odds(self, view: PoolView, i: int) -> float:
        if self.trust_key is None:
            return 0.0
        t = view.candidates[i].metadata.get(self.trust_key)
        if t is None:
            return 0.0
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 < float(t) < 1.0:
            raise InvalidInputError(
                f"passage {view.candidates[i].id!r}: metadata[{self.trust_key!r}] must be a number in (0, 1) "
                f"(0.5 neutral), got {t!r}"
            )
        return math.log((1.0 - float(t)) / float(t))

    def _passage_suspicion(self, view: PoolView, signals: PoolSignals, indices: list[int]) -> dict[int, tuple[float, str]]:
        """``{i: (suspicion, top signals)}`` of candidates ``indices``."""
        signals.prefetch(indices)
        rows = [signals.row(i) for i in indices]
        z = self.model.logits(rows)
        contrib = (self.model.coef * (
            ([[r[f] for f in self.model.features] for r in rows] - self.model.mean) / self.model.std
        )) if rows else []
        out: dict[int, tuple[float, str]] = {}
        for k, i in enumerate(indices):
            zk = float(z[k]) + self._trust_odds(view, i)
            p = 1.0 / (1.0 + math.exp(-max(min(zk, 60.0), -60.0)))
            top = sorted(zip(self.model.features, contrib[k], strict=True), key=lambda kv: -kv[1])[:2]
            why = ", ".join(f"{n} {v:+.1f}" for n, v in top)
            if self.shape_model is not None:  # each model against its own threshold, on the default's scale
                zs = float(self.shape_model.logits([rows[k]])[0]) + self._trust_odds(view, i)
                ps = 1.0 / (1.0 + math.exp(-max(min(zs, 60.0), -60.0)))
                scaled = ps / self.shape_model.threshold * self.threshold
                if scaled > p:
                    p, why = min(scaled, 1.0), "shape prior (a lone one-passage document)"
            out[i] = (p, why)
        return out

    # ----------------------------------------------------------------- the stage
    def verify_pool(self, view: PoolView) -> PoolVerification:
        """Judge the selection in its pool; see the module doc for the steps.

        Raises:
            InvalidInputError: the suspicion model reads the evidence scorer's logit and
                the reranker has no scorer.
        """
        if self.needs_logits and not view.has_logits:
            raise InvalidInputError(
                "this PoolDefence's suspicion model reads the evidence scorer's logit, but the reranker has no "
                "evidence scorer: give Reranker a scorer, or a suspicion model without the 'logit' signal"
            )
        cands = view.candidates
        doc_of = [p.doc_id for p in cands]
        members: dict[str, list[int]] = {}
        for i, d in enumerate(doc_of):
            members.setdefault(d, []).append(i)
        signals = PoolSignals(view)
        cache: dict[int, tuple[float, str]] = {}

        def judge(indices: list[int]) -> None:
            want = sorted({j for i in indices for j in (members[doc_of[i]] if self.document_level else [i])} - set(cache))
            if want:
                cache.update(self._passage_suspicion(view, signals, want))

        def suspicion(i: int) -> tuple[float, str]:
            if not self.document_level:
                return cache[i]
            return max((cache[j] for j in members[doc_of[i]]), key=lambda t: t[0])

        dropped: dict[str, str] = {}
        flags: dict[str, list[str]] = {}
        selection = view.selection
        thr = self.threshold
        for _ in range(self.max_rounds):
            cur = [view.index[p.id] for p in selection.selected if p.id in view.index]
            # the gate reads the findings of what the cut chose, not of the neighbours that
            # expansion (window > 0) added around it
            expanded = set(getattr(selection.explanation, "expansion_added", None) or ())
            judge(cur)
            newly: list[tuple[int, str, list[str]]] = []
            for i in cur:
                p, why = suspicion(i)
                if p >= thr:
                    newly.append((i, f"suspicion {p:.2f} >= {thr:.2f} ({why})", ["POISON"]))
                elif (self.conflict_gate and cands[i].id not in expanded and p >= self.gate_fraction * thr
                      and signals.conflict(i)):
                    pol = signals.findings[i].polarity
                    rivals = [j for j, c in enumerate(cands) if doc_of[j] != doc_of[i] and c.id not in dropped
                              and signals.findings[j].polarity * pol < 0
                              and view.scores[j] >= view.scores[i] - self.gate_window]
                    judge(rivals)
                    best = max((suspicion(j)[0] for j in rivals), default=None)
                    if best is not None and p >= best + self.gate_margin:
                        newly.append((i, f"suspicion {p:.2f}; its finding conflicts with a less suspicious "
                                         f"document ({best:.2f})", ["CONTRADICTION"]))
            if not newly:
                break
            for i, why, types in newly:
                for j in members[doc_of[i]]:  # the whole document goes
                    if cands[j].id not in dropped:
                        dropped[cands[j].id] = why
                        flags[cands[j].id] = types
            selection = view.reselect(dropped)
        extra = self._guarded(view, selection, dropped)
        final = [p for p in selection.selected if p.id not in dropped] + extra
        first = set(view.selection.selected_ids)
        judged = [p for p in cands if p.id in dropped and p.id in first]
        conflicts = find_conflicts(final + judged, dropped,
                                   findings={p.id: signals.findings[view.index[p.id]] for p in final + judged
                                             if p.id in view.index})
        return PoolVerification.from_selection(
            view, selection, dropped, extra=extra, conflicts=conflicts,
            suspicion={cands[i].id: s for i, (s, _) in cache.items()}, flag_types=flags,
        )

    def _guarded(self, view: PoolView, selection: Any, dropped: Mapping[str, str]) -> list[Any]:
        """The passage the guard adds (at most one), or nothing."""
        if not self.guard:
            return []
        cur = [view.index[p.id] for p in selection.selected if p.id in view.index]
        if not cur or len({view.candidates[i].doc_id for i in cur}) != 1:
            return []
        i0 = cur[0]
        doc = view.candidates[i0].doc_id
        others = {p.doc_id for p in view.candidates if p.doc_id != doc}
        if view.doc_size(doc) > 1 or not any(view.doc_size(d) > 1 for d in others):
            return []
        best = None
        for j, c in enumerate(view.candidates):
            if c.doc_id != doc and c.id not in dropped and (best is None or view.scores[j] > view.scores[best]):
                best = j
        if best is None or view.scores[best] < view.scores[i0] - self.guard_margin:
            return []
        return [view.candidates[best]]

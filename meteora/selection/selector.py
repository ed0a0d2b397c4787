"""The evidence chunk selection engine (ECSE) itself: :class:`EvidenceSelector`.

It validates the rationale and candidate embeddings, pairs rationales with chunks, cuts
the pooled ranking with :func:`~meteora.selection.elbow.elbow_cutoff` (or, with an
evidence scorer, a relevance band), takes the union, expands it to document neighbours
and returns a :class:`~meteora.selection.results.SelectionResult`. The stages are
described in :mod:`meteora.selection`.

Example:
    >>> import numpy as np
    >>> from meteora.types import to_passages
    >>> res = EvidenceSelector(window=0).select(np.array([[1.0, 0.0]]), np.eye(2), to_passages(["fever", "cats"]))
    >>> res.selected_ids, sorted(res.explanation.sources["0"])
    (['0'], ['pairing', 'pooling'])
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from meteora.errors import InvalidInputError
from meteora.selection.elbow import ElbowInfo, elbow_cutoff
from meteora.selection.results import (
    ChunkScore,
    RationalePair,
    SelectionExplanation,
    SelectionResult,
)
from meteora.selection.validation import (
    NORM_EPS,
    as_matrix,
    check_evidence,
    check_floor,
    check_tau,
    normalise_rows,
)
from meteora.types import Passage, Ranking

__all__ = ["EvidenceSelector", "PAIRING_MODES", "ORDERS"]

logger = logging.getLogger(__name__)

PAIRING_MODES = ("distinct", "convergent")
ORDERS = ("score", "document")


def _document_evidence_score(pooled: np.ndarray, logits: np.ndarray, doc_ids: Sequence[str], weight: float) -> np.ndarray:
    """``max cos over the chunk's document + weight * (logit - max logit of the document)``."""
    best_cos: dict[str, float] = {}
    best_logit: dict[str, float] = {}
    for d, c, lg in zip(doc_ids, pooled, logits, strict=True):
        best_cos[d] = max(best_cos.get(d, -np.inf), float(c))
        best_logit[d] = max(best_logit.get(d, -np.inf), float(lg))
    return np.array(
        [best_cos[d] + weight * (float(lg) - best_logit[d]) for d, lg in zip(doc_ids, logits, strict=True)],
        dtype=np.float64,
    )


class EvidenceSelector:
    """METEORA's evidence chunk selection engine (ECSE).

    Args:
        pairing: ``"distinct"`` (each rationale takes a chunk no earlier rationale took)
            or ``"convergent"`` (plain argmax; several rationales may choose one chunk).
        tau: z-score threshold of the pooled elbow (see :func:`elbow_cutoff`).
        window: expansion window ``w``: neighbours ``position ± 1..w`` of the same
            document that are among the candidates are added. ``0`` disables expansion
            (drop-in reranker); the paper uses ``1``.
        use_pairing: run the pairing stage.
        use_pooling: run the pooled-elbow stage.
        order: order of ``selected``: ``"score"`` (final score, descending) or
            ``"document"`` (documents in the order their best chunk ranks, chunks by
            position inside a document).
        min_similarity: without a scorer, pairing and pooling select no chunk whose
            cosine (to the rationale / pooled rationale) is below this; ``None``
            disables the floor.
        evidence_weight: with a scorer (``select(..., evidence=logits)``), how much a
            chunk's evidence-logit gap to the best chunk of its document lowers its score.
        evidence_band: with a scorer, the pooled cut keeps every chunk whose score is
            within this of the best score.

    Raises:
        InvalidInputError: unknown ``pairing`` / ``order``, negative or non-integer
            ``window``, non-finite ``tau``, or both stages switched off.

    Example:
        >>> sel = EvidenceSelector(pairing="convergent", window=1, order="document")
        >>> sel
        EvidenceSelector(pairing='convergent', tau=1.0, window=1, use_pairing=True, use_pooling=True, order='document', min_similarity=0.2, evidence_weight=0.03, evidence_band=0.06)
    """

    def __init__(
        self,
        pairing: str = "distinct",
        tau: float = 1.0,
        window: int = 0,
        use_pairing: bool = True,
        use_pooling: bool = True,
        order: str = "score",
        min_similarity: float | None = 0.2,
        evidence_weight: float = 0.03,
        evidence_band: float = 0.06,
    ) -> None:
        if pairing not in PAIRING_MODES:
            raise InvalidInputError(f"unknown pairing {pairing!r}; choose one of {list(PAIRING_MODES)}")
        if order not in ORDERS:
            raise InvalidInputError(f"unknown order {order!r}; choose one of {list(ORDERS)}")
        if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 0:
            raise InvalidInputError(f"window must be a non-negative integer (0 disables expansion), got {window!r}")
        for name, flag in (("use_pairing", use_pairing), ("use_pooling", use_pooling)):
            if not isinstance(flag, (bool, np.bool_)):
                raise InvalidInputError(f"{name} must be True or False, got {flag!r}")
        if not use_pairing and not use_pooling:
            raise InvalidInputError("use_pairing and use_pooling are both False, so nothing can be selected; enable at least one")
        self.pairing = pairing
        self.tau = check_tau(tau)
        self.window = int(window)
        self.use_pairing = bool(use_pairing)
        self.use_pooling = bool(use_pooling)
        self.order = order
        self.min_similarity = check_floor(min_similarity, "min_similarity", -1.0, 1.0)
        self.evidence_weight = check_floor(evidence_weight, "evidence_weight", 0.0, 10.0)
        self.evidence_band = check_floor(evidence_band, "evidence_band", 0.0, 2.0)
        if self.evidence_weight is None or self.evidence_band is None:
            raise InvalidInputError("evidence_weight and evidence_band must be numbers, not None")

    @classmethod
    def from_settings(cls, settings: Any, *, calibrated: dict[str, float] | None = None) -> EvidenceSelector:
        """A selector with the knobs of a
        :class:`~meteora.selection.selector_settings.SelectorSettings` (or any object
        with its fields: the settings build selectors, so this module does not import them).

        (``settings.expand_from_documents`` concerns where the caller's ``context``
        comes from, so it is not a selector attribute.) ``"calibrated"`` evidence knobs
        take the values in ``calibrated`` (a scorer's calibration), else the defaults.

        Example:
            >>> from meteora.selection.selector_settings import SelectorSettings
            >>> EvidenceSelector.from_settings(SelectorSettings(window=2)).window
            2
        """
        for name in ("pairing", "tau", "window", "use_pairing", "use_pooling", "order"):
            if not hasattr(settings, name):
                raise InvalidInputError(
                    f"settings must be a meteora.SelectorSettings, got {type(settings).__name__}"
                )
        extra = {
            k: getattr(settings, k) for k in ("min_similarity", "evidence_weight", "evidence_band") if hasattr(settings, k)
        }
        for k in ("evidence_weight", "evidence_band"):
            if extra.get(k) == "calibrated":
                if calibrated and k in calibrated:
                    extra[k] = calibrated[k]
                else:
                    del extra[k]
        return cls(
            pairing=settings.pairing,
            tau=settings.tau,
            window=settings.window,
            use_pairing=settings.use_pairing,
            use_pooling=settings.use_pooling,
            order=settings.order,
            **extra,
        )

    def __repr__(self) -> str:
        return (
            f"EvidenceSelector(pairing={self.pairing!r}, tau={self.tau}, window={self.window}, "
            f"use_pairing={self.use_pairing}, use_pooling={self.use_pooling}, order={self.order!r}, "
            f"min_similarity={self.min_similarity}, evidence_weight={self.evidence_weight}, "
            f"evidence_band={self.evidence_band})"
        )

    # ----------------------------------------------------------------- validation
    def _validate(
        self,
        rationale_embeddings: Any,
        passage_embeddings: Any,
        passages: Sequence[Passage],
        rationales: Sequence[str] | None,
    ) -> tuple[np.ndarray, np.ndarray, list[Passage], list[str] | None]:
        if isinstance(passages, (str, bytes)) or not isinstance(passages, Sequence):
            raise InvalidInputError(
                f"passages must be a sequence of meteora.Passage, got {type(passages).__name__}; "
                "convert inputs with meteora.types.to_passages"
            )
        plist = list(passages)
        for i, p in enumerate(plist):
            if not isinstance(p, Passage):
                raise InvalidInputError(
                    f"passages[{i}] is a {type(p).__name__}, not a meteora.Passage; convert with meteora.types.to_passages"
                )
        seen: dict[str, int] = {}
        for i, p in enumerate(plist):
            if p.id in seen:
                raise InvalidInputError(f"duplicate passage id {p.id!r} (passages #{seen[p.id]} and #{i}); ids must be unique")
            seen[p.id] = i
        r = as_matrix(rationale_embeddings, "rationale_embeddings")
        if r.ndim != 2:
            raise InvalidInputError(
                f"rationale_embeddings must be 2-D (R, d), got shape {r.shape}; for one rationale use x[None, :]"
            )
        if r.shape[0] < 1:
            raise InvalidInputError("rationale_embeddings has no rows; give at least one rationale (e.g. the query)")
        if r.shape[1] < 1:
            raise InvalidInputError(f"rationale_embeddings has dimension 0 (shape {r.shape})")
        if not np.all(np.isfinite(r)):
            raise InvalidInputError("rationale_embeddings contains NaN or infinite values")
        n = len(plist)
        c = as_matrix(passage_embeddings, "passage_embeddings")
        if n == 0:
            if c.size != 0:
                raise InvalidInputError(f"passage_embeddings has shape {c.shape} but there are no passages")
            c = np.zeros((0, r.shape[1]))
        else:
            if c.ndim != 2:
                raise InvalidInputError(f"passage_embeddings must be 2-D (N, d), got shape {c.shape}")
            if c.shape[0] != n:
                raise InvalidInputError(
                    f"passage_embeddings has {c.shape[0]} rows for {n} passages; give one embedding per passage"
                )
            if c.shape[1] != r.shape[1]:
                raise InvalidInputError(
                    f"embedding dimensions differ: rationales {r.shape[1]}, passages {c.shape[1]}; "
                    "encode both with the same model"
                )
            if not np.all(np.isfinite(c)):
                bad = np.flatnonzero(~np.all(np.isfinite(c), axis=1))
                raise InvalidInputError(
                    f"passage_embeddings contains NaN or infinite values (rows {bad[:5].tolist()})"
                )
        texts: list[str] | None = None
        if rationales is not None:
            if isinstance(rationales, str) or not isinstance(rationales, Sequence):
                raise InvalidInputError(f"rationales must be a list of str, got {type(rationales).__name__}")
            texts = [str(t) for t in rationales]
            if len(texts) != r.shape[0]:
                raise InvalidInputError(
                    f"got {len(texts)} rationale texts for {r.shape[0]} rationale embeddings; give one text per row"
                )
        return normalise_rows(r, "rationale_embeddings"), (
            normalise_rows(c, "passage_embeddings") if n else c
        ), plist, texts

    # ----------------------------------------------------------------- stages
    def _pair(
        self, sim: np.ndarray, texts: list[str] | None, ids: list[str], allowed: np.ndarray
    ) -> tuple[list[RationalePair], list[int], dict[int, float], list[int]]:
        """Pairing decisions, unpaired rationales, pairing score and choice per chunk index.

        ``allowed[j, i]`` is False where rationale ``j`` may not take chunk ``i`` (below
        the relevance floor)."""
        chosen: list[int] = []
        pairs: list[RationalePair] = []
        unpaired: list[int] = []
        best: dict[int, float] = {}
        taken = np.zeros(sim.shape[1], dtype=bool)
        for j in range(sim.shape[0]):
            blocked = ~allowed[j]
            if self.pairing == "distinct":
                blocked = blocked | taken
            if blocked.all():
                unpaired.append(j)
                continue
            row = np.where(blocked, -np.inf, sim[j])
            i = int(np.argmax(row))  # first maximum: ties go to the earlier candidate
            taken[i] = True
            chosen.append(i)
            s = float(sim[j, i])
            pairs.append(RationalePair(j, ids[i], s, texts[j] if texts is not None else None))
            best[i] = max(best.get(i, -np.inf), s)
        return pairs, unpaired, best, chosen

    def _expand(self, selected: list[int], plist: list[Passage]) -> list[int]:
        if self.window == 0 or not selected:
            return []
        where: dict[tuple[str, int], list[int]] = {}
        for i, p in enumerate(plist):
            where.setdefault((p.doc_id, p.position), []).append(i)
        chosen = set(selected)
        added: list[int] = []
        for i in selected:
            p = plist[i]
            for off in range(1, self.window + 1):
                for pos in (p.position - off, p.position + off):
                    for k in where.get((p.doc_id, pos), ()):
                        if k not in chosen:
                            chosen.add(k)
                            added.append(k)
        return added

    # ----------------------------------------------------------------- select
    def select(
        self,
        rationale_embeddings: np.ndarray,
        passage_embeddings: np.ndarray,
        passages: Sequence[Passage],
        *,
        rationales: Sequence[str] | None = None,
        query: str | None = None,
        context: Sequence[Passage] | None = None,
        evidence: Any = None,
    ) -> SelectionResult:
        """Select evidence chunks and rank all candidates.

        Args:
            rationale_embeddings: ``(R, d)`` embeddings of the rationales (R ≥ 1; with
                no generator, the query's embedding is the single rationale).
            passage_embeddings: ``(N, d)`` embeddings of the candidates, row ``i`` for
                ``passages[i]``. Neither input needs to be normalised.
            passages: the ``N`` candidates (:class:`meteora.types.Passage`, unique ids).
            rationales: optional rationale texts, one per row, shown in the explanation.
            query: optional query, stored on the returned ranking.
            context: optional extra passages that expansion may add besides the
                candidates — typically the other chunks of the candidates' documents
                (e.g. ``retriever.passages``). They are never scored or ranked: an
                expansion-added context passage comes after the scored selection (order
                ``"score"``) or at its place in its document (order ``"document"``).
            evidence: optional ``(N,)`` evidence logits from an evidence scorer, one per
                candidate (only their differences inside a document matter): the
                score becomes document relevance + weighted evidence gap, and the
                pooled cut a band below the best score (see the module doc).

        Returns:
            A :class:`SelectionResult`; ``N = 0`` gives an empty one.

        Raises:
            InvalidInputError: shape or dimension mismatch, NaN/inf, non-numeric
                dtype, zero-norm rows, duplicate ids, ``len(rationales) != R``.

        Example:
            >>> from meteora.types import to_passages
            >>> ps = to_passages([{"text": t, "id": f"d1-{i}", "doc_id": "d1", "position": i} for i, t in enumerate("abc")])
            >>> res = EvidenceSelector(window=1).select(np.eye(3)[:1], np.eye(3), ps)
            >>> res.selected_ids, res.explanation.expansion_added
            (['d1-0', 'd1-1'], ['d1-1'])
        """
        r, c, plist, texts = self._validate(rationale_embeddings, passage_embeddings, passages, rationales)
        ids = [p.id for p in plist]
        n = len(plist)
        sim = r @ c.T  # (R, N) cosine similarities

        # pooled similarity: cos(mean r, c); when the mean vanishes (opposed rationales)
        # the mean of the similarities gives the same order.
        pooled_vec = r.mean(axis=0)
        norm = float(np.linalg.norm(pooled_vec))
        if norm > NORM_EPS:
            pooled = c @ (pooled_vec / norm)
        else:
            logger.warning("the rationale embeddings average to ~0; using the mean similarity as the pooled score")
            pooled = sim.mean(axis=0) if n else np.zeros(0)
        pooled = np.clip(pooled, -1.0, 1.0)
        logits = check_evidence(evidence, n)

        # relevance floors: which (rationale, chunk) pairs and which chunks may be selected
        band: np.ndarray | None = None
        if logits is not None:
            global_score = _document_evidence_score(pooled, logits, [p.doc_id for p in plist], self.evidence_weight)
            ok = global_score >= self.min_similarity if self.min_similarity is not None else np.ones(n, dtype=bool)
            if n:
                ok = ok & (global_score >= global_score.max() - self.evidence_band - 1e-12)
            band = ok
            allowed = np.broadcast_to(ok, sim.shape)
        else:
            floor = self.min_similarity
            allowed = sim >= floor if floor is not None else np.ones(sim.shape, dtype=bool)
            ok = pooled >= floor if floor is not None else np.ones(n, dtype=bool)
            global_score = pooled

        pairs: list[RationalePair] = []
        unpaired: list[int] = []
        pair_best: dict[int, float] = {}
        pair_sel: list[int] = []
        if self.use_pairing and n:
            pairs, unpaired, pair_best, pair_sel = self._pair(sim, texts, ids, allowed)

        pooled_order_idx = np.argsort(-global_score, kind="stable") if n else np.zeros(0, dtype=int)
        pooled_sorted = global_score[pooled_order_idx]
        elbow: ElbowInfo | None = None
        pool_sel: list[int] = []
        below_floor: list[str] = []
        if self.use_pooling and band is not None:
            pool_sel = [int(i) for i in pooled_order_idx if band[int(i)]]
        elif self.use_pooling:
            elbow = elbow_cutoff(pooled_sorted, self.tau)
            pool_sel = [int(i) for i in pooled_order_idx[: elbow.keep] if ok[int(i)]]
            below_floor = [ids[int(i)] for i in pooled_order_idx[: elbow.keep] if not ok[int(i)]]

        if logits is not None:
            final = global_score.astype(np.float64).copy()
        else:
            final = pooled.copy()
            for i, s in pair_best.items():
                final[i] = max(final[i], s)

        sources: dict[str, set[str]] = {}
        union: list[int] = []
        for i in pair_sel:
            sources.setdefault(ids[i], set()).add("pairing")
            if i not in union:
                union.append(i)
        for i in pool_sel:
            sources.setdefault(ids[i], set()).add("pooling")
            if i not in union:
                union.append(i)
        allp = plist
        if context and self.window > 0:
            known = set(ids)
            extra = []
            for p in context:
                if not isinstance(p, Passage):
                    raise InvalidInputError(f"context items must be meteora.Passage objects, got {type(p).__name__}")
                if p.id not in known:
                    known.add(p.id)
                    extra.append(p)
            allp = plist + extra
        expanded = self._expand(union, allp)
        for i in expanded:
            sources.setdefault(allp[i].id, set()).add("expansion")
        chosen = union + expanded

        def sort_key(i: int) -> tuple[float, int]:
            # context passages (i >= n) have no score: after every scored passage
            return (-final[i], i) if i < n else (np.inf, i)

        if self.order == "score":
            chosen.sort(key=sort_key)
        else:
            by_score = sorted(chosen, key=sort_key)
            doc_rank: dict[str, int] = {}
            for i in by_score:
                doc_rank.setdefault(allp[i].doc_id, len(doc_rank))
            chosen.sort(key=lambda i: (doc_rank[allp[i].doc_id], allp[i].position, i))

        ranking = Ranking.from_scores(plist, [float(x) for x in final], query=query)
        scores = {
            ids[i]: ChunkScore(
                pooled=float(pooled[i]),
                pairing=float(pair_best[i]) if i in pair_best else None,
                score=float(final[i]),
                evidence=float(logits[i]) if logits is not None else None,
            )
            for i in range(n)
        }
        explanation = SelectionExplanation(
            pairs=pairs,
            unpaired_rationales=unpaired,
            pooled_order=[ids[int(i)] for i in pooled_order_idx],
            pooled_scores=[float(x) for x in pooled_sorted],
            elbow=elbow,
            sources=sources,
            expansion_added=[allp[i].id for i in expanded],
            pairing_mode=self.pairing if self.use_pairing else None,
            window=self.window,
            tau=self.tau,
            order=self.order,
            min_similarity=self.min_similarity,
            evidence_band=self.evidence_band if logits is not None else None,
            evidence_weight=self.evidence_weight if logits is not None else None,
            below_floor=below_floor,
        )
        result = SelectionResult([allp[i] for i in chosen], ranking, scores, explanation)
        logger.debug("selection: %d of %d candidates (%d from expansion)", len(chosen), n, len(expanded))
        return result

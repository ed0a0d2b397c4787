"""The reranker's verifier stage: which verifiers run after selection, and how.

``Reranker(verifier=...)`` takes one verifier or a list of them (run in order); each is

* ``"default"`` — the packaged poison defence, :class:`~meteora.pool_defence.PoolDefence`
  (needs the evidence scorer's logits: with ``scorer=None`` it is off);
* a **pool verifier** (anything with ``verify_pool(view)``,
  :class:`~meteora.pool_stage.PoolVerifier`): it sees the whole candidate pool and can
  re-select without the passages it drops (:func:`pool_view` builds what it sees);
* ``True`` — the LLM :class:`~meteora.verifier.Verifier` on the generator's model;
* a :class:`~meteora.verifier.Verifier` or any per-passage callable
  ``(query, passage, accepted_so_far) -> Verdict``, run over the selection in order.

Pool verifiers run before per-passage ones. ``None`` / ``False`` / ``[]``: no verifier.

Example:
    >>> stages = build_verifiers([lambda q, p, a: None], generator=None, scorer=None)
    >>> len(stages)
    1
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from typing import Any

import numpy as np

from meteora._checks import check_callable_arity
from meteora.errors import InvalidInputError
from meteora.pipeline import CandidatePool
from meteora.pool_stage import PoolVerification, PoolVerifier, PoolView
from meteora.selection.results import SelectionResult
from meteora.selection.selector import EvidenceSelector
from meteora.types import Passage
from meteora.verdicts import VerificationResult

__all__ = ["DEFAULT_VERIFIER", "build_verifiers", "pool_view", "verify_selection"]

logger = logging.getLogger(__name__)

#: ``Reranker``'s default ``verifier``: the packaged poison defence.
DEFAULT_VERIFIER = "default"


def _one(spec: Any, generator: Any, scorer: Any) -> Any:
    from meteora.verifier import Verifier

    if spec is None or spec is False:
        return None
    if isinstance(spec, str) and spec == DEFAULT_VERIFIER:
        if scorer is None:
            logger.info("the default poison defence needs the evidence scorer's logits; it is off with scorer=None")
            return None
        from meteora.pool_defence import PoolDefence

        return PoolDefence()
    if spec is True:
        if generator is None:
            raise InvalidInputError("verifier=True needs an LM: pass a generator, or a Verifier / callable verifier")
        return Verifier(generator)
    if isinstance(spec, PoolVerifier):
        if scorer is None and getattr(spec, "needs_logits", False):
            raise InvalidInputError(
                f"{type(spec).__name__} reads the evidence scorer's logits, but the reranker has scorer=None; "
                "pass scorer='default' (or a scorer), or another verifier"
            )
        return spec
    if isinstance(spec, Verifier):
        return spec
    if callable(spec) and not isinstance(spec, type):
        check_callable_arity(spec, 3, "verifier", "(query, passage, accepted) -> Verdict")
        return spec
    raise InvalidInputError(
        "verifier must be 'default' (the poison defence), None, True (an LLM verifier), a meteora.Verifier, an "
        "object with verify_pool(view), a callable (query, passage, accepted) -> Verdict, or a list of these; "
        f"got {type(spec).__name__}"
    )


def build_verifiers(spec: Any, *, generator: Any, scorer: Any) -> list[Any]:
    """The verifier stages for ``Reranker(verifier=spec)``, pool verifiers first.

    Raises:
        InvalidInputError: an unusable verifier (what to pass instead).
    """
    specs = list(spec) if isinstance(spec, (list, tuple)) else [spec]
    stages = [s for s in (_one(x, generator, scorer) for x in specs) if s is not None]
    pools = [s for s in stages if isinstance(s, PoolVerifier)]
    return pools + [s for s in stages if not isinstance(s, PoolVerifier)]


def pool_view(
    pool: CandidatePool,
    selection: SelectionResult,
    *,
    selector: EvidenceSelector,
    scorer: Any,
    encoder: Any,
    passage_embeddings: np.ndarray,
    rationale_embeddings: np.ndarray,
    rationales: Sequence[str],
    evidence: np.ndarray | None,
) -> PoolView:
    """The :class:`~meteora.pool_stage.PoolView` of one selected pool: re-selection runs
    ``selector.select`` on the same inputs minus the excluded passages."""
    query, passages = pool.query, pool.passages
    if query in rationales:
        qv = np.asarray(rationale_embeddings[list(rationales).index(query)], dtype=np.float64)
    elif pool.query_embedding is not None:
        qv = np.asarray(pool.query_embedding, dtype=np.float64)
    else:
        qv = np.asarray(encoder.encode([query]), dtype=np.float64)[0]
    emb = np.asarray(passage_embeddings, dtype=np.float64)
    cos = (emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)) @ (qv / max(np.linalg.norm(qv), 1e-12))
    known = None
    if evidence is not None:  # the pipeline read a logit only where a document has several candidates
        counts: dict[str, int] = {}
        for p in passages:
            counts[p.doc_id] = counts.get(p.doc_id, 0) + 1
        known = np.where([counts[p.doc_id] > 1 for p in passages], evidence, np.nan)

    def reselect(excluded: Collection[str]) -> SelectionResult:
        keep = [i for i, p in enumerate(passages) if p.id not in excluded]
        context = [p for p in pool.context if p.id not in excluded] if pool.context is not None else None
        return selector.select(
            rationale_embeddings, passage_embeddings[keep], [passages[i] for i in keep], rationales=rationales,
            query=query, context=context, evidence=evidence[keep] if evidence is not None else None,
            retrieval=pool.ranking,
        )

    def score_logits(texts: list[str]) -> Any:
        return scorer.evidence_logits([query], [texts])[0]

    return PoolView(query, passages, selection, cos, reselect, known_logits=known,
                    score_logits=score_logits if scorer is not None else None, doc_sizes=pool.doc_sizes)


def verify_selection(
    stages: Sequence[Any], query: str, selection: SelectionResult, *, flags: Any = None,
    view: Callable[[], PoolView],
) -> tuple[list[Passage], VerificationResult | None]:
    """Run the stages on a selection: the accepted passages and the combined result
    (``None`` when there is no stage or nothing was selected). ``view`` builds the pool
    view, only if a pool verifier runs."""
    from meteora.verifier import Verifier, verify_with

    selected = list(selection.selected)
    if not stages or not selected:
        return selected, None
    result: VerificationResult | None = None
    for stage in stages:
        if isinstance(stage, PoolVerifier):
            out = stage.verify_pool(view())
            if not isinstance(out, PoolVerification):
                raise InvalidInputError(
                    f"{type(stage).__name__}.verify_pool returned {type(out).__name__}; it must return a "
                    "meteora.pool_stage.PoolVerification"
                )
        elif isinstance(stage, Verifier):
            out = stage.verify(query, selected, flag_instructions=flags)
        else:
            out = verify_with(stage, query, selected)
        if result is None:
            result = out
        else:  # a per-passage stage after the pool stage: one combined account
            result.accepted = list(out.accepted)
            result.rejected = list(result.rejected) + list(out.rejected)
            result.verdicts.update(out.verdicts)
        selected = list(result.accepted)
        if not selected:
            break
    return selected, result

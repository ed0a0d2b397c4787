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
from meteora.selection.signals import CandidateSignals
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
    signals: CandidateSignals,
    *,
    selector: EvidenceSelector,
    scorer: Any,
    rationales: Sequence[str],
) -> PoolView:
    """The :class:`~meteora.pool_stage.PoolView` of one selected pool, from the signal
    table the selection read. Re-selection runs the selector's own cut (whatever it is:
    the learned cut, the band, the elbow) on the same signals minus the excluded
    passages; the logits its cut then wants and the pipeline did not read (the learned
    cut's top 10 moves up) come from the scorer in one call."""
    query, passages = pool.query, pool.passages
    qcos = signals.query_cosine
    cos = np.asarray(qcos if qcos is not None else signals.pooled, dtype=np.float64)

    def reselect(excluded: Collection[str]) -> SelectionResult:
        sub = signals.subset([i for i, p in enumerate(passages) if p.id not in excluded])
        if scorer is not None and sub.evidence is not None:
            ev = np.array(sub.evidence, dtype=np.float64)
            missing = [i for i in selector.evidence_wanted(sub) if np.isnan(ev[i])]
            if missing:
                got = np.asarray(score_logits([sub.passages[i].text for i in missing]), dtype=np.float64).reshape(-1)
                if got.shape != (len(missing),) or not np.all(np.isfinite(got)):
                    raise InvalidInputError(f"the evidence scorer returned {got.shape[0]} logits for {len(missing)} "
                                            "passages; evidence_logits must return one finite logit per passage")
                ev[missing] = got
                sub = sub.with_evidence(ev)
        context = [p for p in pool.context if p.id not in excluded] if pool.context is not None else None
        return selector.select_signals(sub, context=context, rationales=rationales)

    def score_logits(texts: list[str]) -> Any:
        return scorer.evidence_logits([query], [texts])[0]

    return PoolView(query, passages, selection, cos, reselect, known_logits=signals.evidence,
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

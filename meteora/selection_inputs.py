"""What the selector needs for each candidate pool, gathered in batches across pools.

:meth:`meteora.Reranker.rerank_pools` selects evidence in many pools at once; before the
selector runs, every pool needs its rationale texts, their embeddings, its passages'
embeddings and (with a scorer) evidence logits. Each is one batched call for all pools:

* :func:`candidate_pools` — caller-given candidates (and their embeddings, context), checked;
  :func:`check_pools` — prepared pools and their per-query rationales, checked;
* :func:`given_rationales` — caller-given rationales (texts or rationale sets), checked;
* :func:`encode_rationales` — one encoder call for every rationale of every pool (a
  rationale that is the query reuses the query embedding the retriever computed);
* :func:`embed_passages` — caller-given passage embeddings checked, or the passages
  encoded (over-long texts truncated for embedding only); :func:`pool_embeddings` —
  every pool's passage embeddings, one batched encode for those without stored ones;
* :func:`query_vectors` — each query's own embedding (the rationale that is the
  query, the retriever's, or one batched encode of the rest), for the cut's query cosine;
* :func:`evidence_logits` — one scorer call for the candidates each pool's cut wants
  read (:meth:`~meteora.selection.selector.EvidenceSelector.evidence_wanted`), NaN for
  the others.

Example:
    >>> given_rationales(["q1", "q2"], [["look for trials"], []])
    [(['look for trials'], None), (['q2'], None)]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from meteora._checks import is_blank, real_matrix
from meteora.errors import InvalidInputError
from meteora.pipeline import CandidatePool
from meteora.protocols import RationaleOutput
from meteora.selection.signals import CandidateSignals
from meteora.types import Passage, check_queries, to_passages

__all__ = [
    "MAX_EMBED_CHARS",
    "PreparedPool",
    "candidate_pools",
    "check_pools",
    "pool_embeddings",
    "given_rationales", "encode_rationales", "embed_passages", "query_vectors", "evidence_logits", "split_rows"]

#: Largest passage embedded, in characters (longer ones are truncated for embedding
#: only; the passage itself is returned untouched).
MAX_EMBED_CHARS = 20_000

#: Per query: its rationale texts (the query alone when there are none) and the
#: generator's full output (a RationaleSet) or ``None``.
Rationales = list[tuple[list[str], Any]]


@dataclass(frozen=True)
class PreparedPool:
    """One query ready for selection: its pool, its rationale texts (the query alone
    when there are none), the generator's full output (or ``None``) and the signal
    table with the evidence logits the cut wanted."""

    pool: CandidatePool
    rationales: list[str]
    rationale_set: Any
    signals: CandidateSignals


def check_pools(pools: Sequence[Any], rationales: Any) -> list[CandidatePool]:
    """``pools`` as a list of :class:`~meteora.pipeline.CandidatePool`, and ``rationales``
    (``None`` or one entry per pool) checked.

    Raises:
        InvalidInputError: an item that is not a pool, or not one rationale entry per pool.
    """
    pools = list(pools)
    for i, pool in enumerate(pools):
        if not isinstance(pool, CandidatePool):
            raise InvalidInputError(f"pools[{i}] is a {type(pool).__name__}, not a meteora.pipeline.CandidatePool")
    if rationales is not None and (
        isinstance(rationales, (str, bytes)) or not hasattr(rationales, "__len__") or len(rationales) != len(pools)
    ):
        got = str(len(rationales)) if hasattr(rationales, "__len__") else type(rationales).__name__
        raise InvalidInputError(f"got {got} rationale lists for {len(pools)} queries")
    return pools


def pool_embeddings(encoder: Any, pools: Sequence[CandidatePool], dim: int) -> list[np.ndarray]:
    """Every pool's ``(N, d)`` passage embeddings: the stored ones checked, the others
    from one batched encode (a pool without candidates gets ``(0, dim)``)."""
    to_embed = [i for i, p in enumerate(pools) if p.passages and p.embeddings is None]
    fresh = split_rows(
        embed_passages(encoder, [p for i in to_embed for p in pools[i].passages]) if to_embed else np.zeros((0, 1)),
        [len(pools[i].passages) for i in to_embed],
    )
    done = dict(zip(to_embed, fresh, strict=True))
    out = []
    for i, pool in enumerate(pools):
        if i in done:
            out.append(done[i])
        elif pool.passages:
            out.append(embed_passages(encoder, pool.passages, pool.embeddings))
        else:
            out.append(np.zeros((0, dim), dtype=np.float32))
    return out


def given_rationales(queries: Sequence[str], rationales: Any) -> Rationales:
    """Caller-given rationales, one entry per query: a list of non-empty strings (empty:
    the query alone) or a RationaleSet (an object with ``rationales``).

    Raises:
        InvalidInputError: not one entry per query, or an entry that is not a list of
            non-empty strings or a rationale set.
    """
    if isinstance(rationales, (str, bytes)) or not hasattr(rationales, "__len__"):
        raise InvalidInputError(f"rationales must be a list with one entry per query, got {type(rationales).__name__}")
    if len(rationales) != len(queries):
        raise InvalidInputError(f"got {len(rationales)} rationale lists for {len(queries)} queries")
    out: Rationales = []
    for i, (q, r) in enumerate(zip(queries, rationales, strict=True)):
        rset = None
        if isinstance(r, RationaleOutput):  # a RationaleSet
            rset, r = r, r.rationales
        if isinstance(r, (str, bytes, Mapping)) or not isinstance(r, Iterable):
            raise InvalidInputError(f"rationales[{i}] must be a list of non-empty strings or a RationaleSet")
        texts = list(r)
        if not all(isinstance(t, str) and not is_blank(t) for t in texts):
            raise InvalidInputError(f"rationales[{i}] must be a list of non-empty strings")
        out.append((texts or [q], rset))
    return out


def encode_rationales(
    encoder: Any, queries: Sequence[str], rats: Rationales, query_embeddings: Sequence[np.ndarray | None]
) -> list[np.ndarray]:
    """``(R_i, d)`` rationale embeddings per query from one batched encoder call; a
    rationale identical to its query reuses the query's embedding when one is given."""
    flat: list[str] = []
    slots: list[list[int | None]] = []
    for q, (texts, _), qemb in zip(queries, rats, query_embeddings, strict=True):
        row: list[int | None] = []
        for t in texts:
            if qemb is not None and t == q:
                row.append(None)
            else:
                row.append(len(flat))
                flat.append(t)
        slots.append(row)
    enc = np.asarray(encoder.encode(flat), dtype=np.float32) if flat else None
    out = []
    for row, qemb in zip(slots, query_embeddings, strict=True):
        vecs = [np.asarray(qemb, dtype=np.float32) if j is None else enc[j] for j in row]  # type: ignore[index]
        out.append(np.stack(vecs))
    return out


def embed_passages(encoder: Any, passages: Sequence[Passage], embeddings: Any = None) -> np.ndarray:
    """``embeddings`` checked (one ``(d,)`` row per passage, as float32), or the passages
    encoded (texts over :data:`MAX_EMBED_CHARS` truncated for embedding only)."""
    if embeddings is not None:
        emb = real_matrix(embeddings, "passage_embeddings")
        if emb.shape[0] != len(passages):
            raise InvalidInputError(
                f"got {emb.shape[0]} passage embeddings for {len(passages)} passages; give one (d,) row per passage"
            )
        return emb.astype(np.float32)
    texts = [p.text if len(p.text) <= MAX_EMBED_CHARS else p.text[:MAX_EMBED_CHARS] for p in passages]
    return encoder.encode(texts)


def query_vectors(
    encoder: Any,
    queries: Sequence[str],
    rats: Rationales,
    rationale_embeddings: Sequence[np.ndarray],
    given: Sequence[np.ndarray | None],
) -> list[np.ndarray]:
    """Each query's own embedding: the row of its rationales that is the query itself,
    else the one the retriever computed (``given``), else one batched encode of the rest.

    Example:
        >>> query_vectors(None, ["q"], [(["q"], None)], [np.ones((1, 2))], [None])[0].tolist()
        [1.0, 1.0]
    """
    out: list[np.ndarray | None] = []
    for q, (texts, _), remb, qemb in zip(queries, rats, rationale_embeddings, given, strict=True):
        if q in texts:
            out.append(np.asarray(remb[texts.index(q)], dtype=np.float32))
        else:
            out.append(np.asarray(qemb, dtype=np.float32) if qemb is not None else None)
    todo = [i for i, e in enumerate(out) if e is None]
    if todo:
        fresh = np.asarray(encoder.encode([queries[i] for i in todo]), dtype=np.float32)
        for i, row in zip(todo, fresh, strict=True):
            out[i] = row
    return out  # type: ignore[return-value]


def evidence_logits(
    scorer: Any, queries: Sequence[str], pools: Sequence[Sequence[Passage]], wanted: Sequence[Sequence[int]]
) -> list[np.ndarray | None]:
    """The scorer's evidence logits of the ``wanted`` candidates of every pool (``None``
    each without a scorer), NaN for the candidates not read: one batched
    ``scorer.evidence_logits`` call for every pool.

    Raises:
        InvalidInputError: the scorer returned the wrong number of lists or logits, or
            a logit that is not a finite number.

    Example:
        >>> class Length:
        ...     def evidence_logits(self, queries, lists):
        ...         return [[float(len(t)) for t in ps] for ps in lists]
        >>> from meteora.types import to_passages
        >>> evidence_logits(Length(), ["q"], [to_passages(["ab", "abc"])], [[1]])[0].tolist()
        [nan, 3.0]
    """
    if scorer is None:
        return [None] * len(pools)
    wanted = [list(w) for w in wanted]
    live = [k for k, w in enumerate(wanted) if w]
    logits = (
        scorer.evidence_logits([queries[k] for k in live], [[pools[k][i].text for i in wanted[k]] for k in live])
        if live
        else []
    )
    if isinstance(logits, (str, bytes, Mapping)) or not hasattr(logits, "__len__") or len(logits) != len(live):
        got = len(logits) if hasattr(logits, "__len__") else type(logits).__name__
        raise InvalidInputError(
            f"the scorer ({type(scorer).__name__}) returned {got} logit lists for {len(live)} queries; "
            "evidence_logits must return one list of logits per query"
        )
    out: list[np.ndarray | None] = [np.full(len(pool), np.nan) for pool in pools]
    for k, lg in zip(live, logits, strict=True):
        arr = real_matrix(lg, f"the scorer's evidence logits for query #{k}", ndim=1)
        if arr.shape[0] != len(wanted[k]):
            raise InvalidInputError(f"the scorer returned {arr.shape[0]} logits for {len(wanted[k])} passages (query #{k})")
        out[k][wanted[k]] = arr  # type: ignore[index]
    return out


def candidate_pools(
    encoder: Any,
    queries: Sequence[str],
    candidate_lists: Any,
    *,
    ids: Sequence[Sequence[str] | None] | None = None,
    passage_embeddings: Sequence[np.ndarray | None] | None = None,
    contexts: Sequence[Sequence[Passage] | None] | None = None,
    query_embeddings: Sequence[np.ndarray | None] | None = None,
) -> list[CandidatePool]:
    """Caller-given candidates as :class:`~meteora.pipeline.CandidatePool` objects, one per
    query, each checked (passages, given embeddings, context, query embedding).

    Raises:
        InvalidInputError: not one non-empty candidate list per query, per-query options
            of the wrong length, or a bad passage or embedding (named by query number).
    """
    queries = check_queries(queries)
    if isinstance(candidate_lists, (str, bytes, Mapping)) or not isinstance(candidate_lists, Iterable):
        raise InvalidInputError(
            "candidate_lists must be a list with one list of passages per query; got "
            f"{type(candidate_lists).__name__}"
        )
    candidate_lists = list(candidate_lists)
    if len(candidate_lists) != len(queries):
        raise InvalidInputError(
            "candidate_lists must be a list with one list of passages per query; got "
            f"{len(candidate_lists)} for {len(queries)} queries"
        )
    for name, per_query in (
        ("ids", ids), ("passage_embeddings", passage_embeddings), ("contexts", contexts),
        ("query_embeddings", query_embeddings),
    ):
        if per_query is None:
            continue
        if isinstance(per_query, (str, bytes)) or not hasattr(per_query, "__len__") or len(per_query) != len(queries):
            got = str(len(per_query)) if hasattr(per_query, "__len__") else type(per_query).__name__
            raise InvalidInputError(f"{name} must hold one entry (or None) per query; got {got} for {len(queries)} queries")
    pools: list[CandidatePool] = []
    for i, (q, cands) in enumerate(zip(queries, candidate_lists, strict=True)):
        try:
            passages = to_passages(cands, ids=ids[i] if ids is not None else None)
        except InvalidInputError as exc:
            raise InvalidInputError(f"query #{i}: {exc}") from exc
        if not passages:
            raise InvalidInputError(f"query #{i} has an empty candidate list; pass at least one passage")
        given = passage_embeddings[i] if passage_embeddings is not None else None
        qemb = query_embeddings[i] if query_embeddings is not None else None
        try:
            emb = embed_passages(encoder, passages, given) if given is not None else None
            ctx = to_passages(contexts[i]) if contexts is not None and contexts[i] is not None else None
            qemb = real_matrix(qemb, "query_embeddings", ndim=1) if qemb is not None else None
        except InvalidInputError as exc:
            raise InvalidInputError(f"query #{i}: {exc}") from exc
        pools.append(CandidatePool(q, passages, emb, ctx, qemb))
    return pools


def split_rows(matrix: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    """The rows of ``matrix`` split into consecutive blocks of the given sizes.

    Example:
        >>> [b.shape[0] for b in split_rows(np.zeros((5, 2)), [2, 3])]
        [2, 3]
    """
    out, start = [], 0
    for n in sizes:
        out.append(matrix[start : start + n])
        start += n
    return out

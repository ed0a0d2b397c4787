"""Hybrid retrieval: fuse the rankings of several retrievers (BM25 + dense by default).

Each member retriever returns its top ``candidate_k`` passages (at least ``k``); the
lists are fused into one ranking:

* ``fusion="rrf"`` (default) — reciprocal-rank fusion: a passage scores
  ``Σ_m w_m / (rrf_k + rank_m)`` over the members that returned it (``rank_m`` is
  1-based; ``rrf_k=60`` as in Cormack et al. 2009). Only ranks matter, so BM25 and
  cosine scores need no calibration.
* ``fusion="weighted"`` — a weighted sum of each member's scores min-max normalised
  over *that member's candidate list for that query* (best → 1, worst → 0; a passage a
  member did not return counts 0). The normalised values exist only to combine the
  members; they are not comparable across queries and are not calibrated
  probabilities, so do not threshold them.

Ties are broken by corpus order. :func:`rrf_fuse` and :func:`weighted_fuse` are also
usable on their own for any rankings.

Example:
    >>> from meteora.retrievers import BM25Retriever, DenseRetriever
    >>> h = HybridRetriever([BM25Retriever(), DenseRetriever()])  # doctest: +SKIP
    >>> h.index(["Aspirin lowers fever.", "Statins lower LDL."]).search("fever").ids  # doctest: +SKIP
    ['0', '1']
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from meteora.errors import IndexFormatError, InvalidInputError
from meteora.retrievers.base import Retriever
from meteora.retrievers.index_files import (
    KINDS,
    MANIFEST_NAME,
    manifest_value,
    read_manifest,
    write_manifest,
)
from meteora.retrievers.passage_store import same_ids
from meteora.retrievers.storage import load_index
from meteora.types import Hit, Passage, PassageLike, Ranking

__all__ = ["HybridRetriever", "rrf_fuse", "weighted_fuse"]

logger = logging.getLogger(__name__)

_FUSIONS = ("rrf", "weighted")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _check_weights(weights: Sequence[float] | None, m: int) -> list[float]:
    if weights is None:
        return [1.0] * m
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence):
        raise InvalidInputError(f"weights must be a list of numbers, got {type(weights).__name__}")
    ws = list(weights)
    if len(ws) != m:
        raise InvalidInputError(
            f"got {len(ws)} weights for {m} rankings; give one weight per ranking"
        )
    out = []
    for w in ws:
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise InvalidInputError(f"weights must be finite non-negative numbers, got {w!r}")
        out.append(float(w))
    if m and not any(out):
        raise InvalidInputError("all weights are zero; give at least one ranking a positive weight")
    return out


def _check_rankings(rankings: Any) -> list[Ranking]:
    if isinstance(rankings, Ranking) or not isinstance(rankings, Sequence):
        raise InvalidInputError("rankings must be a list of Ranking (one per retriever)")
    for i, r in enumerate(rankings):
        if not isinstance(r, Ranking):
            raise InvalidInputError(
                f"rankings[{i}] has type {type(r).__name__}; expected meteora.Ranking"
            )
    return list(rankings)


def _combine(
    rankings: list[Ranking],
    contributions: Callable[[int, Ranking], list[float]],
    *,
    limit: int | None,
    query: str | None,
    tie_key: Callable[[Passage], Any] | None,
) -> Ranking:
    score: dict[str, float] = {}
    passage: dict[str, Passage] = {}
    first: dict[str, tuple[int, int]] = {}
    for m, ranking in enumerate(rankings):
        for pos, (hit, c) in enumerate(zip(ranking, contributions(m, ranking), strict=True), 1):
            pid = hit.passage.id
            if pid not in score:
                score[pid] = 0.0
                passage[pid] = hit.passage
                first[pid] = (pos, m)
            else:
                first[pid] = min(first[pid], (pos, m))
            score[pid] += c
    if tie_key is None:
        order = sorted(score, key=lambda pid: (-score[pid], first[pid]))
    else:
        order = sorted(score, key=lambda pid: (-score[pid], tie_key(passage[pid])))
    if limit is not None:
        order = order[:limit]
    if query is None:
        query = next((r.query for r in rankings if r.query is not None), None)
    return Ranking(
        [Hit(passage[pid], score[pid], i + 1) for i, pid in enumerate(order)], query=query
    )


def _check_limit(limit: Any) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise InvalidInputError(f"limit must be None or a non-negative integer, got {limit!r}")
    return limit


def rrf_fuse(
    rankings: Sequence[Ranking],
    k: float = 60,
    weights: Sequence[float] | None = None,
    *,
    limit: int | None = None,
    query: str | None = None,
    tie_key: Callable[[Passage], Any] | None = None,
) -> Ranking:
    """Reciprocal-rank fusion: ``score(p) = Σ_m w_m / (k + rank_m(p))``.

    Args:
        rankings: one ranking per method, each in ranked order (rank = 1-based position).
        k: the RRF constant (60 by default); larger values flatten the rank discount.
        weights: one non-negative weight per ranking (default all 1).
        limit: keep only the best ``limit`` passages (``None``: all).
        query: query stored on the result (default: the first ranking's).
        tie_key: sort key for passages with equal fused scores (default: best rank
            in any list, then the list's position in ``rankings``).

    Example:
        >>> from meteora.types import to_passages
        >>> a, b, c = to_passages(["a", "b", "c"])
        >>> r1 = Ranking([Hit(a, 9.0, 1), Hit(b, 5.0, 2)])
        >>> r2 = Ranking([Hit(b, 0.9, 1), Hit(c, 0.8, 2)])
        >>> rrf_fuse([r1, r2]).ids
        ['1', '0', '2']
    """
    rankings = _check_rankings(rankings)
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not math.isfinite(k) or k < 0:
        raise InvalidInputError(f"rrf k must be a finite number >= 0, got {k!r}")
    ws = _check_weights(weights, len(rankings))

    def contrib(m: int, ranking: Ranking) -> list[float]:
        return [ws[m] / (k + pos) for pos in range(1, len(ranking) + 1)]

    return _combine(rankings, contrib, limit=_check_limit(limit), query=query, tie_key=tie_key)


def weighted_fuse(
    rankings: Sequence[Ranking],
    weights: Sequence[float] | None = None,
    *,
    limit: int | None = None,
    query: str | None = None,
    tie_key: Callable[[Passage], Any] | None = None,
) -> Ranking:
    """Weighted sum of per-ranking min-max-normalised scores (for fusion only).

    Each ranking's scores are mapped to ``0..1`` over that ranking (a ranking whose
    scores are all equal maps them to 1); a passage missing from a ranking gets 0 from
    it. The fused values are only meaningful within one query.

    Example:
        >>> from meteora.types import to_passages
        >>> a, b = to_passages(["a", "b"])
        >>> weighted_fuse([Ranking([Hit(a, 3.0, 1), Hit(b, 1.0, 2)]),
        ...                Ranking([Hit(b, 0.9, 1), Hit(a, 0.1, 2)])], weights=[1, 3]).ids
        ['1', '0']
    """
    rankings = _check_rankings(rankings)
    ws = _check_weights(weights, len(rankings))

    def contrib(m: int, ranking: Ranking) -> list[float]:
        s = ranking.scores
        if not s:
            return []
        lo, hi = min(s), max(s)
        if hi > lo:
            return [ws[m] * (v - lo) / (hi - lo) for v in s]
        return [ws[m]] * len(s)

    return _combine(rankings, contrib, limit=_check_limit(limit), query=query, tie_key=tie_key)


class HybridRetriever(Retriever):
    """Fuse several retrievers' rankings (RRF by default) behind one interface.

    Args:
        retrievers: member retrievers, as a list or a ``{name: retriever}`` dict
            (``None``: ``BM25Retriever()`` + ``DenseRetriever()`` with the default MiniLM).
            List members are named by their kind (``bm25``, ``dense``, ``dense_2``, ...).
        fusion: ``"rrf"`` or ``"weighted"``.
        rrf_k: the RRF constant.
        weights: one weight per member (list, or dict by name); default all 1.
        candidate_k: how many candidates each member contributes (at least ``k``).

    Example:
        >>> from meteora.retrievers import BM25Retriever
        >>> h = HybridRetriever({"lex": BM25Retriever(backend="numpy"),
        ...                      "lex2": BM25Retriever(backend="numpy", method="atire")})
        >>> h.index(["fever and cough", "broken leg"]).search("cough", k=1).ids
        ['0']
    """

    kind = "hybrid"

    def __init__(
        self,
        retrievers: Sequence[Retriever] | Mapping[str, Retriever] | None = None,
        fusion: str = "rrf",
        rrf_k: float = 60,
        weights: Sequence[float] | Mapping[str, float] | None = None,
        candidate_k: int = 100,
    ) -> None:
        super().__init__()
        if retrievers is None:
            from meteora.retrievers.bm25 import BM25Retriever
            from meteora.retrievers.dense import DenseRetriever

            retrievers = [BM25Retriever(), DenseRetriever()]
        self.members: dict[str, Retriever] = self._name_members(retrievers)
        if fusion not in _FUSIONS:
            raise InvalidInputError(f"fusion must be one of {_FUSIONS}, got {fusion!r}")
        if (
            isinstance(rrf_k, bool)
            or not isinstance(rrf_k, (int, float))
            or not math.isfinite(rrf_k)
            or rrf_k < 0
        ):
            raise InvalidInputError(f"rrf_k must be a finite number >= 0, got {rrf_k!r}")
        if isinstance(candidate_k, bool) or not isinstance(candidate_k, int) or candidate_k < 1:
            raise InvalidInputError(f"candidate_k must be a positive integer, got {candidate_k!r}")
        self.fusion = fusion
        self.rrf_k = rrf_k
        self.candidate_k = candidate_k
        if isinstance(weights, Mapping):
            unknown = set(weights) - set(self.members)
            if unknown:
                raise InvalidInputError(
                    f"weights name unknown members {sorted(unknown)}; members are {list(self.members)}"
                )
            weights = [weights.get(name, 1.0) for name in self.members]
        self.weights = _check_weights(weights, len(self.members))
        self._adopt_member_passages()

    def _adopt_member_passages(self) -> None:
        """Members that are already indexed on the same passages make this hybrid
        searchable at once (no re-indexing); it shares the first member's passage store."""
        stores = [r.passage_store for r in self.members.values()]
        if any(not len(s) for s in stores):
            return
        if all(same_ids(stores[0], s) for s in stores[1:]):
            self._store = stores[0]
        else:
            logger.warning("hybrid members are indexed on different passages; call .index(passages) to align them")

    @staticmethod
    def _name_members(retrievers: Any) -> dict[str, Retriever]:
        if isinstance(retrievers, Retriever):
            raise InvalidInputError(
                "retrievers must be a list or dict of retrievers; wrap a single one in a list"
            )
        if isinstance(retrievers, Mapping):
            items = list(retrievers.items())
        elif isinstance(retrievers, Iterable) and not isinstance(retrievers, (str, bytes)):
            items = []
            counts: dict[str, int] = {}
            for r in retrievers:
                base = getattr(r, "kind", "") or type(r).__name__.lower()
                counts[base] = counts.get(base, 0) + 1
                items.append((base if counts[base] == 1 else f"{base}_{counts[base]}", r))
        else:
            raise InvalidInputError(
                f"retrievers must be a list or dict of retrievers, got {type(retrievers).__name__}"
            )
        if not items:
            raise InvalidInputError("HybridRetriever needs at least one retriever")
        out: dict[str, Retriever] = {}
        for name, r in items:
            if not isinstance(r, Retriever):
                raise InvalidInputError(
                    f"member {name!r} is a {type(r).__name__}, not a meteora Retriever"
                )
            if not isinstance(name, str) or not _NAME_RE.match(name):
                raise InvalidInputError(
                    f"member name {name!r} must be letters, digits, '_', '-' or '.' (it names a sub-folder on save)"
                )
            if name in out:
                raise InvalidInputError(f"duplicate member name {name!r}")
            out[name] = r
        return out

    @property
    def retrievers(self) -> list[Retriever]:
        """The member retrievers, in order."""
        return list(self.members.values())

    def index(self, passages: Iterable[PassageLike]) -> HybridRetriever:
        """Index the same passages in every member; returns ``self``.

        Raises:
            InvalidInputError: empty corpus, duplicate ids, empty texts.
        """
        ps = self._set_passages(passages)
        for name, r in self.members.items():
            logger.debug("hybrid: indexing member %s", name)
            r.index(ps)
        return self

    def _search_batch(self, queries: list[str], k: int) -> list[Ranking]:
        ck = max(self.candidate_k, k)
        per_member = [r.search(queries, k=ck) for r in self.members.values()]
        out = []
        n = len(self)
        for qi, q in enumerate(queries):
            lists = [member[qi] for member in per_member]
            ids = list(dict.fromkeys(h.passage.id for ranking in lists for h in ranking))
            rows = dict(zip(ids, self._store.rows_of(ids), strict=True))

            def corpus_order(p: Passage, rows: dict[str, int | None] = rows) -> int:
                row = rows.get(p.id)
                return n if row is None else row

            if self.fusion == "rrf":
                fused = rrf_fuse(
                    lists, k=self.rrf_k, weights=self.weights, limit=k, query=q, tie_key=corpus_order
                )
            else:
                fused = weighted_fuse(lists, weights=self.weights, limit=k, query=q, tie_key=corpus_order)
            # the members' own scores stay readable (the selector's signals use them)
            fused.sources = dict(zip(self.members, lists, strict=True))
            out.append(fused)
        return out

    def _parameters(self) -> dict[str, Any]:
        return {
            "fusion": self.fusion,
            "rrf_k": self.rrf_k,
            "weights": self.weights,
            "candidate_k": self.candidate_k,
            "members": [{"name": name, "kind": r.kind} for name, r in self.members.items()],
        }

    def _write_index(self, directory: Path) -> None:
        """Every member in its own sub-folder (with its own manifest) plus the hybrid manifest."""
        for name, r in self.members.items():
            (directory / name).mkdir()
            r._write_index(directory / name)
        self._write_manifest(directory, len(self))

    def _write_manifest(self, directory: Path, count: int) -> None:
        """The hybrid manifest over its members' folders (also written by
        :mod:`meteora.retrievers.streaming`)."""
        write_manifest(
            directory, self.kind, counts={"passages": count, "members": len(self.members)}, parameters=self._parameters()
        )

    @classmethod
    def load(cls, directory: str | os.PathLike[str], encoder: Any = None) -> HybridRetriever:
        """Load a hybrid index written by :meth:`save`.

        Args:
            directory: the saved folder.
            encoder: encoder for the dense members (``None``: each member's saved one).

        Raises:
            IndexFormatError: corrupt or inconsistent members.
        """
        return load_index(directory, lambda version: cls._read_index(version, encoder))

    @classmethod
    def _read_index(cls, directory: Path, encoder: Any = None) -> HybridRetriever:
        manifest = read_manifest(directory, cls.kind)
        params = manifest["parameters"]
        members_info = manifest_value(manifest, "parameters", "members", directory)
        if not isinstance(members_info, list) or not members_info:
            raise IndexFormatError(
                f"{directory / MANIFEST_NAME} lists no members; rebuild the index and save it again"
            )
        members: dict[str, Retriever] = {}
        for info in members_info:
            try:
                name, kind = info["name"], info["kind"]
            except (KeyError, TypeError) as exc:
                raise IndexFormatError(
                    f"{directory / MANIFEST_NAME} has a malformed member entry {info!r}"
                ) from exc
            sub = directory / str(name)
            if not _NAME_RE.match(str(name)):
                raise IndexFormatError(
                    f"{directory / MANIFEST_NAME} names an invalid member folder {name!r}"
                )
            if f"{name}/{MANIFEST_NAME}" not in manifest["files"]:
                raise IndexFormatError(
                    f"{directory / MANIFEST_NAME} does not vouch for member {name!r} (no checksum "
                    f"of {name}/{MANIFEST_NAME}); rebuild the index and save it again"
                )
            sub_manifest = read_manifest(sub, kind, verify_files=False)
            extra = (
                {"encoder": encoder}
                if encoder is not None and sub_manifest["kind"] in ("dense", "hybrid")
                else {}
            )
            module_name, cls_name = KINDS[sub_manifest["kind"]].split(":")
            member_cls = getattr(importlib.import_module(module_name), cls_name)
            members[name] = member_cls._read_index(sub, **extra)
        first_store = members[members_info[0]["name"]].passage_store
        for name, r in members.items():
            if not same_ids(first_store, r.passage_store):
                raise IndexFormatError(
                    f"member {name!r} in {directory} indexes different passages from the others; "
                    "rebuild the hybrid index and save it again"
                )
        try:
            self = cls(
                members,
                fusion=params["fusion"],
                rrf_k=params["rrf_k"],
                weights=params["weights"],
                candidate_k=params["candidate_k"],
            )
        except (KeyError, InvalidInputError) as exc:
            raise IndexFormatError(
                f"{directory / MANIFEST_NAME} has invalid hybrid parameters ({exc}); rebuild the index and save it again"
            ) from exc
        self._store = first_store
        return self

    def _repr_fields(self) -> str:
        members = ", ".join(f"{n}={type(r).__name__}" for n, r in self.members.items())
        return f"fusion={self.fusion!r}, rrf_k={self.rrf_k}, candidate_k={self.candidate_k}, members=[{members}]"

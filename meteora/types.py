"""Core value types: :class:`Passage`, :class:`Hit` and :class:`Ranking`.

Inputs are normalised with :func:`to_passages`, which accepts plain strings, dicts
(``{"text": ..., "id": ..., "doc_id": ..., "position": ..., "metadata": {...}}``) or
:class:`Passage` objects, in any mix. Rankings are always in ranked order: ``ranking[0]``
is the best hit.

Example:
    >>> ps = to_passages(["Aspirin reduces fever.", {"text": "Ibuprofen too.", "id": "p2"}])
    >>> [(p.id, p.doc_id, p.position) for p in ps]
    [('0', '0', 0), ('p2', 'p2', 0)]
    >>> r = Ranking([Hit(ps[1], 2.0, 1), Hit(ps[0], 1.0, 2)])
    >>> r.ids
    ['p2', '0']
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from meteora._checks import check_id, check_position, is_blank
from meteora.errors import InvalidInputError

__all__ = ["Passage", "PassageLike", "Hit", "Ranking", "to_passages", "passage_from", "check_query", "check_queries"]

_MAX_REPR_TEXT = 60


@dataclass(frozen=True)
class Passage:
    """One candidate chunk of evidence.

    Attributes:
        text: the passage text (what every method sees).
        id: unique id of the passage within a corpus or candidate list.
        doc_id: id of the document the passage comes from (defaults to ``id``).
        position: 0-based order of the passage inside its document; neighbours
            ``position ± 1`` of the same ``doc_id`` are used by expansion.
        metadata: free-form JSON-serialisable data carried along untouched.
    """

    text: str
    id: str
    doc_id: str = ""
    position: int = 0
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise InvalidInputError(f"Passage.text must be a str, got {type(self.text).__name__}")
        if not isinstance(self.id, str) or is_blank(self.id):
            raise InvalidInputError(f"Passage.id must be a non-empty str, got {self.id!r}")
        if self.doc_id is None or self.doc_id == "":
            object.__setattr__(self, "doc_id", self.id)
        else:
            object.__setattr__(self, "doc_id", check_id(self.doc_id, f"passage {self.id!r}", "doc_id"))
        object.__setattr__(self, "position", check_position(self.position, f"passage {self.id!r}"))
        if not isinstance(self.metadata, Mapping):
            raise InvalidInputError(
                f"passage {self.id!r}: metadata must be a dict, got {type(self.metadata).__name__}"
            )

    def __repr__(self) -> str:
        text = self.text if len(self.text) <= _MAX_REPR_TEXT else self.text[: _MAX_REPR_TEXT - 1] + "…"
        return f"Passage(id={self.id!r}, doc_id={self.doc_id!r}, position={self.position}, text={text!r})"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict that :func:`to_passages` turns back into this passage."""
        return {
            "id": self.id,
            "doc_id": self.doc_id,
            "position": self.position,
            "text": self.text,
            "metadata": dict(self.metadata),
        }


PassageLike = str | Mapping[str, Any] | Passage


_KNOWN_KEYS = frozenset({"text", "contents", "content", "id", "_id", "doc_id", "position", "metadata"})


def _from_dict(d: Mapping[str, Any], index: int, where: str) -> Passage:
    text = d.get("text", d.get("contents", d.get("content")))
    if text is None:
        raise InvalidInputError(
            f"{where} is a dict without a 'text' key (keys: {sorted(map(str, d))}); "
            "give each passage a 'text' field"
        )
    if not isinstance(text, str):
        raise InvalidInputError(f"{where}: text must be a string, got {type(text).__name__} {text!r:.60}")
    id_key = "id" if "id" in d else "_id" if "_id" in d else None
    if id_key is not None and d[id_key] is None:
        raise InvalidInputError(f"{where}: {id_key} is null; give a string id or leave the key out")
    pid = check_id(d[id_key], where) if id_key is not None else str(index)
    raw_meta = d.get("metadata")
    if raw_meta is not None and not isinstance(raw_meta, Mapping):
        raise InvalidInputError(
            f"{where}: metadata must be a JSON object (dict), got {type(raw_meta).__name__} {raw_meta!r:.60}"
        )
    metadata = dict(raw_meta or {})
    metadata.update({k: v for k, v in d.items() if k not in _KNOWN_KEYS})
    doc_id = d.get("doc_id")
    return Passage(
        text=text,
        id=pid,
        doc_id=check_id(doc_id, where, "doc_id") if doc_id is not None else "",
        position=check_position(d.get("position", 0), where),
        metadata=metadata,
    )


def passage_from(item: Any, index: int, *, where: str | None = None) -> Passage:
    """One passage from a ``str``, ``dict`` or :class:`Passage`; ``index`` is the default
    id, ``where`` names the item in error messages (default ``"passage #index"``).

    Example:
        >>> passage_from({"text": "Aspirin.", "position": 2.0}, 0).position
        2
    """
    where = where or f"passage #{index}"
    if isinstance(item, Passage):
        return item
    if isinstance(item, str):
        return Passage(text=item, id=str(index))
    if isinstance(item, Mapping):
        try:
            return _from_dict(item, index, where)
        except InvalidInputError as exc:
            if str(exc).startswith(where):
                raise
            raise InvalidInputError(f"{where}: {exc}") from exc
    raise InvalidInputError(f"{where} has type {type(item).__name__}; expected str, dict or meteora.Passage")


def to_passages(
    items: Iterable[PassageLike],
    *,
    ids: Sequence[str] | None = None,
    allow_empty_text: bool = False,
) -> list[Passage]:
    """Normalise strings, dicts and passages into a list of :class:`Passage`.

    Passages without an id get their index in ``items`` as id (``"0"``, ``"1"``, ...).

    Args:
        items: the passages.
        ids: optional ids, one per item; they override ids inside the items.
        allow_empty_text: accept passages whose text is empty or whitespace.

    Raises:
        InvalidInputError: wrong types, duplicate ids, empty texts, or ``ids`` of the
            wrong length.

    Example:
        >>> to_passages(["a", "b"], ids=["x", "y"])[1].id
        'y'
    """
    if isinstance(items, (str, bytes, Mapping, Passage)):
        raise InvalidInputError(
            "passages must be a list of str, dict or Passage; got a single "
            f"{type(items).__name__} — wrap it in a list"
        )
    if not isinstance(items, Iterable):
        raise InvalidInputError(f"passages must be a list of str, dict or Passage; got {type(items).__name__}")
    if ids is not None and (isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable)):
        raise InvalidInputError(f"ids must be a list of str, one per passage; got {type(ids).__name__}")
    out = [passage_from(item, i) for i, item in enumerate(items)]
    if ids is not None:
        ids = list(ids)
        if len(ids) != len(out):
            raise InvalidInputError(f"got {len(ids)} ids for {len(out)} passages; give one id per passage")
        out = [
            Passage(
                text=p.text, id=check_id(pid, f"ids[{i}]"), doc_id=p.doc_id if p.doc_id != p.id else "",
                position=p.position, metadata=p.metadata,
            )
            for i, (p, pid) in enumerate(zip(out, ids, strict=True))
        ]
    seen: dict[str, int] = {}
    for i, p in enumerate(out):
        if p.id in seen:
            raise InvalidInputError(
                f"duplicate passage id {p.id!r} (passages #{seen[p.id]} and #{i}); ids must be unique"
            )
        seen[p.id] = i
        if not allow_empty_text and is_blank(p.text):
            raise InvalidInputError(
                f"passage #{i} (id {p.id!r}) has empty text (nothing visible); remove it or give it text"
            )
    return out


def check_query(query: Any, *, name: str = "query") -> str:
    """Validate one query string and return it.

    Example:
        >>> check_query("  fever  ")
        '  fever  '
    """
    if not isinstance(query, str):
        raise InvalidInputError(f"{name} must be a str, got {type(query).__name__}")
    if is_blank(query):
        what = "empty" if not query.strip() else "made only of invisible characters (whitespace, control or zero-width)"
        raise InvalidInputError(f"{name} is {what}; pass a non-empty question")
    return query


def check_queries(queries: Any) -> list[str]:
    """Validate a list of queries; a single string is rejected (wrap it in a list)."""
    if isinstance(queries, str) or not isinstance(queries, Sequence):
        raise InvalidInputError(f"queries must be a list of str, got {type(queries).__name__}")
    return [check_query(q, name=f"queries[{i}]") for i, q in enumerate(queries)]


@dataclass(frozen=True)
class Hit:
    """A passage with its score and 1-based rank in a :class:`Ranking`."""

    passage: Passage
    score: float
    rank: int

    @property
    def id(self) -> str:
        return self.passage.id

    @property
    def text(self) -> str:
        return self.passage.text

    def __repr__(self) -> str:
        return f"Hit(rank={self.rank}, score={self.score:.4f}, passage={self.passage!r})"


class Ranking(Sequence[Hit]):
    """Hits for one query, always in ranked order (best first).

    Attributes:
        query: the query, when known.
        sources: for a fused ranking (a hybrid retriever's), each member's own ranking
            of the query by member name; empty otherwise.

    Example:
        >>> p = to_passages(["a", "b"])
        >>> r = Ranking.from_scores(p, [0.1, 0.9])
        >>> r[0].id, r.top_k(1).ids
        ('1', ['1'])
    """

    def __init__(
        self, hits: Iterable[Hit], *, query: str | None = None, sources: Mapping[str, Ranking] | None = None
    ) -> None:
        self._hits = list(hits)
        self.query = query
        self.sources: Mapping[str, Ranking] = dict(sources or {})

    @classmethod
    def from_scores(
        cls, passages: Sequence[Passage], scores: Sequence[float], *, query: str | None = None, k: int | None = None
    ) -> Ranking:
        """Rank passages by score, descending; ties broken by input order (stable)."""
        order = sorted(range(len(passages)), key=lambda i: (-float(scores[i]), i))
        if k is not None:
            order = order[:k]
        return cls([Hit(passages[i], float(scores[i]), r + 1) for r, i in enumerate(order)], query=query)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return Ranking(self._hits[i], query=self.query)
        return self._hits[i]

    def __len__(self) -> int:
        return len(self._hits)

    def __iter__(self) -> Iterator[Hit]:
        return iter(self._hits)

    @property
    def ids(self) -> list[str]:
        return [h.passage.id for h in self._hits]

    @property
    def scores(self) -> list[float]:
        return [h.score for h in self._hits]

    @property
    def passages(self) -> list[Passage]:
        return [h.passage for h in self._hits]

    def top_k(self, k: int) -> Ranking:
        """The first ``k`` hits (all of them when ``k`` exceeds the length)."""
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise InvalidInputError(f"k must be a non-negative integer, got {k!r}")
        return Ranking(self._hits[:k], query=self.query)

    def to_run(self) -> dict[str, float]:
        """BEIR/pytrec_eval run shape for this query: ``{passage_id: score}``."""
        return {h.passage.id: h.score for h in self._hits}

    def __repr__(self) -> str:
        head = ", ".join(f"{h.id}:{h.score:.3f}" for h in self._hits[:5])
        more = f", … +{len(self._hits) - 5}" if len(self._hits) > 5 else ""
        return f"Ranking({len(self._hits)} hits: [{head}{more}])"

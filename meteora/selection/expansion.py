"""Union and expansion: what the stages selected, plus the selected chunks' neighbours.

:func:`union_of` merges the stages' picks (pairing first, then the cut) and records which
stage picked each chunk; :func:`with_context` appends the caller's document context
(other chunks of the candidates' documents, never scored) to the candidates;
:func:`expand` adds the neighbours ``position ± 1..window`` of the same document of every
selected chunk, in the order they are reached.

Example:
    >>> from meteora.types import to_passages
    >>> ps = to_passages([{"text": t, "id": f"d-{i}", "doc_id": "d", "position": i} for i, t in enumerate("abc")])
    >>> expand([0], ps, window=1)
    [1]
    >>> union, sources = union_of({"pairing": [2], "pooling": [0, 2]}, [p.id for p in ps])
    >>> union, sorted(sources["d-2"])
    ([2, 0], ['pairing', 'pooling'])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from meteora.errors import InvalidInputError
from meteora.types import Passage

__all__ = ["union_of", "with_context", "expand"]


def union_of(picks: Mapping[str, Sequence[int]], ids: Sequence[str]) -> tuple[list[int], dict[str, set[str]]]:
    """The stages' picks merged in stage order without repeats, and the stages that
    picked each id."""
    sources: dict[str, set[str]] = {}
    union: list[int] = []
    seen: set[int] = set()
    for stage, indices in picks.items():
        for i in indices:
            sources.setdefault(ids[i], set()).add(stage)
            if i not in seen:
                seen.add(i)
                union.append(i)
    return union, sources


def with_context(passages: list[Passage], context: Sequence[Passage] | None, window: int) -> list[Passage]:
    """The candidates followed by the context passages that are not candidates (only
    when expansion is on: ``window > 0``).

    Raises:
        InvalidInputError: a context item that is not a :class:`~meteora.types.Passage`.
    """
    if not context or window <= 0:
        return passages
    known = {p.id for p in passages}
    extra = []
    for p in context:
        if not isinstance(p, Passage):
            raise InvalidInputError(f"context items must be meteora.Passage objects, got {type(p).__name__}")
        if p.id not in known:
            known.add(p.id)
            extra.append(p)
    return passages + extra


def expand(selected: Sequence[int], passages: Sequence[Passage], window: int) -> list[int]:
    """Indices of the neighbours (``position ± 1..window``, same ``doc_id``) of the
    ``selected`` passages that are not selected themselves, in the order reached."""
    if window == 0 or not selected:
        return []
    where: dict[tuple[str, int], list[int]] = {}
    for i, p in enumerate(passages):
        where.setdefault((p.doc_id, p.position), []).append(i)
    chosen = set(selected)
    added: list[int] = []
    for i in selected:
        p = passages[i]
        for off in range(1, window + 1):
            for pos in (p.position - off, p.position + off):
                for k in where.get((p.doc_id, pos), ()):
                    if k not in chosen:
                        chosen.add(k)
                        added.append(k)
    return added

"""The result of rationale generation for one query: :class:`RationaleSet`.

:meth:`RationaleGenerator.generate <meteora.rationales.generator.RationaleGenerator.generate>`
returns one per query; the rationale cache stores it as a JSON dict
(:meth:`RationaleSet.to_dict` / :meth:`RationaleSet.from_dict`). Callers that bring
their own rationales can build one directly.

Example:
    >>> rs = RationaleSet("Does aspirin help?", ["Stroke rates with aspirin versus placebo."])
    >>> rs.flags, len(rs)
    ([None], 1)
    >>> RationaleSet.from_dict(rs.to_dict(), from_cache=True).from_cache
    True
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from meteora.errors import InvalidInputError

__all__ = ["RationaleSet"]


@dataclass
class RationaleSet:
    """The rationales generated for one query.

    Attributes:
        query: the query.
        rationales: what the evidence selector uses (with ``include_query=True`` the
            query comes first, as an anchor).
        flags: per rationale its ``Flag Instructions`` text (verifier hints) or ``None``.
        raw: the model's output (with the template's response prefix), for inspection.
        fallback: ``True`` when nothing survived parsing and filtering and the query
            itself became the single rationale.
        dropped: ``(text, reason)`` for each parsed line the filters removed.
        parse_method: ``"xml"``, ``"numbered"``, ``"lines"`` or ``"none"``.
        from_cache: read from the rationale cache instead of generated.
    """

    query: str
    rationales: list[str]
    flags: list[str | None] = field(default_factory=list)
    raw: str = ""
    fallback: bool = False
    dropped: list[tuple[str, str]] = field(default_factory=list)
    parse_method: str = "none"
    from_cache: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.query, str):
            raise InvalidInputError(f"RationaleSet.query must be a str, got {type(self.query).__name__}")
        if isinstance(self.rationales, (str, bytes)) or not isinstance(self.rationales, Sequence):
            raise InvalidInputError(
                f"RationaleSet.rationales must be a list of str, got {type(self.rationales).__name__} "
                f"{self.rationales!r:.60} (query {self.query[:60]!r})"
            )
        bad = [r for r in self.rationales if not isinstance(r, str)]
        if bad:
            raise InvalidInputError(
                f"RationaleSet.rationales must hold only str, got {type(bad[0]).__name__} {bad[0]!r:.60} "
                f"(query {self.query[:60]!r})"
            )
        self.rationales = list(self.rationales)
        if not self.flags:
            self.flags = [None] * len(self.rationales)
        if len(self.flags) != len(self.rationales):
            raise InvalidInputError(
                f"RationaleSet: {len(self.flags)} flags for {len(self.rationales)} rationales; they must match"
            )

    def __len__(self) -> int:
        return len(self.rationales)

    def __iter__(self) -> Iterator[str]:
        return iter(self.rationales)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``from_cache`` is not stored)."""
        return {
            "query": self.query,
            "rationales": list(self.rationales),
            "flags": list(self.flags),
            "raw": self.raw,
            "fallback": self.fallback,
            "dropped": [[t, r] for t, r in self.dropped],
            "parse_method": self.parse_method,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, from_cache: bool = False) -> RationaleSet:
        """Inverse of :meth:`to_dict`."""
        try:
            return cls(
                query=str(data["query"]),
                rationales=[str(r) for r in data["rationales"]],
                flags=[None if f is None else str(f) for f in data.get("flags") or []],
                raw=str(data.get("raw", "")),
                fallback=bool(data.get("fallback", False)),
                dropped=[(str(t), str(r)) for t, r in data.get("dropped") or []],
                parse_method=str(data.get("parse_method", "none")),
                from_cache=from_cache,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"not a serialised RationaleSet: {exc}") from exc

    def __repr__(self) -> str:
        q = self.query if len(self.query) <= 60 else self.query[:57] + "..."
        shown = ", ".join(repr(r if len(r) <= 70 else r[:67] + "...") for r in self.rationales)
        extras = [f"parse={self.parse_method!r}"]
        if self.fallback:
            extras.append("fallback=True")
        if self.dropped:
            extras.append(f"dropped={len(self.dropped)}")
        if self.from_cache:
            extras.append("from_cache=True")
        return f"RationaleSet(query={q!r}, rationales=[{shown}], {', '.join(extras)})"

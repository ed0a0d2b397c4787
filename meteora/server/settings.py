"""The rerank service's settings: limits, key and batching, validated once.

Kept apart from :mod:`meteora.server.app` so that the command line can declare its
defaults without importing FastAPI.

Example:
    >>> ServeSettings(max_batch_size=4).replace(max_wait_ms=0).max_wait_ms
    0
    >>> ServeSettings(max_documents=0)
    Traceback (most recent call last):
    ...
    meteora.errors.InvalidInputError: max_documents must be a positive integer, got 0
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from meteora.errors import InvalidInputError

__all__ = ["ServeSettings", "DEFAULTS"]


@dataclass(frozen=True)
class ServeSettings:
    """What the service accepts and how it batches.

    Attributes:
        model_name: the name ``/v1/models`` and every response give.
        api_key: when set, ``/v1/*`` needs ``Authorization: Bearer <api_key>``.
        max_documents: most documents in one request (Cohere's limit is 1000).
        max_document_chars / max_query_chars: longest document / query, in characters.
        max_body_bytes: largest request body (413 beyond it).
        max_batch_size / max_wait_ms: micro-batching: most requests per model call, and
            how long the first request waits for others.
        max_queue: most requests waiting for the model (503 beyond it).
        docs: serve the Swagger UI page at ``/docs`` (off by default: the page loads its
            scripts from a CDN, which an offline machine cannot reach; ``/openapi.json``
            is always served). Both need the key when one is set.
    """

    model_name: str = "meteora"
    api_key: str | None = None
    max_documents: int = 1000
    max_document_chars: int = 20_000
    max_query_chars: int = 4_000
    max_body_bytes: int = 8 * 1024 * 1024
    max_batch_size: int = 8
    max_wait_ms: float = 10.0
    max_queue: int = 256
    docs: bool = False

    def __post_init__(self) -> None:
        for name in ("max_documents", "max_document_chars", "max_query_chars", "max_body_bytes", "max_batch_size", "max_queue"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.max_wait_ms, bool) or not isinstance(self.max_wait_ms, (int, float)) or self.max_wait_ms < 0:
            raise InvalidInputError(f"max_wait_ms must be a number >= 0, got {self.max_wait_ms!r}")
        if not isinstance(self.model_name, str) or not self.model_name.strip():
            raise InvalidInputError("model_name must be a non-empty string")
        if not isinstance(self.docs, bool):
            raise InvalidInputError(f"docs must be True or False, got {self.docs!r}")
        if self.api_key is not None and (not isinstance(self.api_key, str) or not self.api_key):
            raise InvalidInputError("api_key must be a non-empty string or None")

    def replace(self, **changes: Any) -> ServeSettings:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)


#: The default settings (what ``meteora serve`` uses without flags).
DEFAULTS = ServeSettings()

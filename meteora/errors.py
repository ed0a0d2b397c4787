"""Exceptions raised by meteora.

Every error says what was wrong and what to do about it. All of them derive from
:class:`MeteoraError`, so a pipeline can catch one type.

Example:
    >>> from meteora.errors import MeteoraError, InvalidInputError
    >>> issubclass(InvalidInputError, MeteoraError) and issubclass(InvalidInputError, ValueError)
    True
"""

from __future__ import annotations

__all__ = [
    "MeteoraError",
    "InvalidInputError",
    "ModelNotFoundError",
    "IndexFormatError",
    "MissingDependencyError",
    "ExportError",
    "DataNotFoundError",
    "TrainingDataError",
    "UnsafeOverwriteError",
]


class MeteoraError(Exception):
    """Base class of every error meteora raises on purpose."""


class InvalidInputError(MeteoraError, ValueError):
    """An argument has the wrong value or type (empty query, duplicate ids, ...)."""


class ModelNotFoundError(MeteoraError, FileNotFoundError):
    """A model could not be found locally (and the hub was not reachable or not asked)."""


class IndexFormatError(MeteoraError, ValueError):
    """A saved index is corrupt, incomplete, or was written by an incompatible version."""


class UnsafeOverwriteError(MeteoraError, FileExistsError):
    """A write would replace or mix with something meteora did not write (a user's file or
    folder); nothing was changed."""


class DataNotFoundError(MeteoraError, FileNotFoundError):
    """A dataset file could not be found at any of the configured locations."""


class TrainingDataError(MeteoraError, ValueError):
    """Rows of a training file are malformed; the message lists file and line numbers."""


class MissingDependencyError(MeteoraError, ImportError):
    """An optional dependency is not installed; the message names the pip extra."""


class ExportError(MeteoraError, RuntimeError):
    """A model could not be exported to ONNX (a structure the ONNX runtime does not
    reproduce, or an export that disagreed with torch); ``runtime="auto"`` then runs it on
    torch."""


def require(module: str, extra: str, purpose: str):
    """Import an optional dependency or raise :class:`MissingDependencyError`.

    Args:
        module: importable module name, e.g. ``"faiss"``.
        extra: the meteora extra that installs it, e.g. ``"faiss"``.
        purpose: what it is needed for, used in the message.

    Example:
        >>> np = require("numpy", "core", "array maths")
        >>> np.__name__
        'numpy'
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # re-raise with the install hint, keeping the cause
        raise MissingDependencyError(
            f"{purpose} needs the optional dependency {module!r}, which is not installed. "
            f'Install it with: pip install "meteora-rerank[{extra}]"'
        ) from exc

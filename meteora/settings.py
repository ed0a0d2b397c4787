"""Process-wide settings: cache home, data directory, torch thread count.

Each setting reads an environment variable, so a pipeline can be configured without
code changes:

==========================  ==============================================================
``METEORA_HOME``            cache root (converted models, rationale cache); default
                            ``~/.cache/meteora``
``METEORA_DATA_DIR``        folder holding ``pubmedqa/`` and ``med-rationales/``; default:
                            the first existing ``../shared/data`` next to the working
                            directory or the source checkout
``METEORA_NUM_THREADS``     torch intra-op threads (1 is often fastest on a loaded
                            2-core machine); default: torch's own choice. Applied
                            where a process starts (the ``meteora`` command, the
                            benchmark scripts: :func:`apply_thread_setting`), never
                            by a constructor
==========================  ==============================================================

Example:
    >>> import os
    >>> os.environ["METEORA_HOME"] = "/tmp/meteora-doc-home"
    >>> str(meteora_home())
    '/tmp/meteora-doc-home'
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from meteora.errors import DataNotFoundError, InvalidInputError

__all__ = ["meteora_home", "data_dir", "set_num_threads", "apply_thread_setting"]

logger = logging.getLogger(__name__)

_PACKAGE_ROOT = Path(__file__).resolve().parent


def meteora_home() -> Path:
    """Root folder of meteora's caches (``$METEORA_HOME`` or ``~/.cache/meteora``)."""
    env = os.environ.get("METEORA_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "meteora"


def _data_candidates() -> list[Path]:
    cands = [Path.cwd().parent / "shared" / "data", Path.cwd() / "shared" / "data"]
    # a source checkout: <repo>/meteora/settings.py -> <repo>/../shared/data
    cands.append(_PACKAGE_ROOT.parent.parent / "shared" / "data")
    return cands


def data_dir(subdir: str | None = None, *, explicit: str | os.PathLike[str] | None = None) -> Path:
    """Locate the data folder (optionally one of its sub-folders).

    Order: ``explicit`` argument, ``$METEORA_DATA_DIR``, then ``../shared/data``
    relative to the working directory or the source checkout.

    Raises:
        DataNotFoundError: nothing found; the message lists every place looked at.
    """
    tried: list[Path] = []
    roots: list[Path] = []
    if explicit is not None:
        roots.append(Path(explicit).expanduser())
    elif os.environ.get("METEORA_DATA_DIR"):
        roots.append(Path(os.environ["METEORA_DATA_DIR"]).expanduser())
    else:
        roots.extend(_data_candidates())
    for root in roots:
        path = root / subdir if subdir else root
        tried.append(path)
        if path.is_dir():
            return path
    where = ", ".join(str(t) for t in tried)
    raise DataNotFoundError(
        f"data folder {subdir or ''!s} not found (looked in: {where}). "
        "Set METEORA_DATA_DIR to the folder that holds pubmedqa/ and med-rationales/, "
        "or pass the path explicitly."
    )


def set_num_threads(n: int | None) -> None:
    """Set torch's intra-op thread count (``None`` leaves torch's default).

    Example:
        >>> set_num_threads(1)
    """
    if n is None:
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidInputError(f"num_threads must be a positive integer, got {n!r}")
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
        logger.debug("torch threads set to %d", n)


def apply_thread_setting(n: int | None = None) -> None:
    """Apply ``n`` or, when ``None``, ``$METEORA_NUM_THREADS`` if it is set."""
    if n is None:
        env = os.environ.get("METEORA_NUM_THREADS")
        if env:
            try:
                n = int(env)
            except ValueError as exc:
                raise InvalidInputError(f"METEORA_NUM_THREADS must be an integer, got {env!r}") from exc
    set_num_threads(n)

"""What the command line shows on the terminal: log levels and progress bars.

One rule for every long command (indexing, encoding, generation, benchmarks,
training): a progress bar is shown only when stderr is a terminal and meteora logs at
INFO (not with ``-q``); ``METEORA_PROGRESS=0``/``1`` forces bars off/on. The Hugging
Face libraries' own bars (model loading, downloads) follow the same rule on the command
line. Third-party libraries (faiss's loader, bm25s, transformers, …) log at WARNING and
above unless ``-v`` is given, so a quiet run shows only meteora's own messages;
bitsandbytes, whose CPU build warns about optional GPU kernels on import, at ERROR.

Example:
    >>> setup_logging(verbose=0, quiet=False)     # doctest: +SKIP
    >>> progress_enabled()                        # doctest: +SKIP
    True
    >>> logging.getLevelName(third_party_level(verbose=0, quiet=False))
    'WARNING'
"""

from __future__ import annotations

import logging
import os
import sys

__all__ = [
    "setup_logging", "progress_enabled", "set_progress", "third_party_level", "quiet_model_loading", "hf_progress_bars",
    "LOG_FORMAT", "LOG_DATE_FORMAT",
]

#: the command line's log line format and its time format
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_DATE_FORMAT = "%H:%M:%S"
#: loggers held above WARNING without -v: what they warn about is not the user's problem
#: (bitsandbytes' CPU build: "Failed to load CPU gemm_4bit_forward ... No module named 'kernels'")
_STRICTER = {"bitsandbytes": logging.ERROR}
_forced: bool | None = None


def set_progress(enabled: bool | None) -> None:
    """Force progress bars on (``True``) or off (``False``) in this process, or go back
    to the rule of :func:`progress_enabled` (``None``).

    Example:
        >>> set_progress(False); progress_enabled()
        False
        >>> set_progress(None)
    """
    global _forced
    _forced = enabled


def progress_enabled(logger_name: str = "meteora") -> bool:
    """Whether a long loop should draw a progress bar now.

    ``False`` when forced off (:func:`set_progress`, ``METEORA_PROGRESS=0``), when the
    ``logger_name`` logger does not show INFO (``-q``), or when stderr is not a terminal
    (a log file, a pipe, CI); ``True`` when forced on.

    Example:
        >>> isinstance(progress_enabled(), bool)
        True
    """
    if _forced is not None:
        return _forced
    env = os.environ.get("METEORA_PROGRESS", "").strip().lower()
    if env in ("0", "false", "no", "off"):
        return False
    if env in ("1", "true", "yes", "on"):
        return True
    if not logging.getLogger(logger_name).isEnabledFor(logging.INFO):
        return False
    isatty = getattr(sys.stderr, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def third_party_level(verbose: int, quiet: bool) -> int:
    """The least level shown from loggers outside meteora: WARNING, INFO with ``-v``,
    DEBUG with ``-vv``; WARNING with ``-q``.

    Example:
        >>> [logging.getLevelName(third_party_level(v, False)) for v in (0, 1, 2)]
        ['WARNING', 'INFO', 'DEBUG']
    """
    if quiet or verbose <= 0:
        return logging.WARNING
    return logging.INFO if verbose == 1 else logging.DEBUG


class _ThirdPartyFilter(logging.Filter):
    """Drops records of loggers outside ``meteora`` below a level (a filter on the
    handler, so it also holds for libraries that set their own logger to DEBUG, as
    bm25s does, and for loggers created after setup)."""

    def __init__(self, level: int, stricter: dict[str, int] | None = None) -> None:
        super().__init__()
        self.level = level
        self.stricter = stricter or {}

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        if name == "meteora" or name.startswith("meteora."):
            return True
        root = name.partition(".")[0]
        return record.levelno >= max(self.level, self.stricter.get(root, self.level))


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    """Configure logging for the command line: one stderr handler at meteora's level
    (INFO; DEBUG with ``-vv``; WARNING with ``-q``) when the process has none yet, and on
    every root handler a filter holding other libraries to :func:`third_party_level`
    (a second call replaces the first's filter).

    Example:
        >>> setup_logging(verbose=1)   # doctest: +SKIP
    """
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level, format=LOG_FORMAT, datefmt=LOG_DATE_FORMAT)
    tp = third_party_level(verbose, quiet)
    for handler in root.handlers:
        for old in [f for f in handler.filters if isinstance(f, _ThirdPartyFilter)]:
            handler.removeFilter(old)
        handler.addFilter(_ThirdPartyFilter(tp, None if verbose > 0 else _STRICTER))
    if not progress_enabled():  # the Hugging Face bars (read when transformers is imported)
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        if "transformers" in sys.modules:  # already imported: it read the variable before
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()


class quiet_model_loading:
    """Silence the expected notices of loading the packaged models: transformers' load
    reports ("newly initialised classifier") and weight-loading bars, sentence-transformers'
    "Converting SentenceTransformer model … to CrossEncoder", bitsandbytes' CPU-kernel
    notice when peft imports it, and deprecation warnings. Errors still raise.

    Example:
        >>> with quiet_model_loading():
        ...     pass
    """

    _LOGGERS = ("sentence_transformers", "bitsandbytes")

    def __enter__(self) -> quiet_model_loading:
        import warnings

        import transformers

        self._level = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()
        self._bars = transformers.utils.logging.is_progress_bar_enabled()
        transformers.utils.logging.disable_progress_bar()
        self._levels = {name: logging.getLogger(name).level for name in self._LOGGERS}
        for name in self._LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.simplefilter("ignore", FutureWarning)
        return self

    def __exit__(self, *exc: object) -> None:
        import transformers

        self._warnings.__exit__(*exc)
        for name, level in self._levels.items():
            logging.getLogger(name).setLevel(level)
        if self._bars:
            transformers.utils.logging.enable_progress_bar()
        transformers.logging.set_verbosity(self._level)


class hf_progress_bars:
    """Show the Hugging Face libraries' own progress bars (transformers' "Loading
    weights", downloads) inside this block only when :func:`progress_enabled` says so:
    a library call (meteora's logger below INFO, or stderr not a terminal) draws none,
    the command line does on a terminal. The previous setting is restored on exit.

    Example:
        >>> with hf_progress_bars():
        ...     pass
    """

    def __enter__(self) -> hf_progress_bars:
        from transformers.utils import logging as hf_logging

        self._was = hf_logging.is_progress_bar_enabled()
        if progress_enabled():
            hf_logging.enable_progress_bar()
        else:
            hf_logging.disable_progress_bar()
        return self

    def __exit__(self, *exc: object) -> None:
        from transformers.utils import logging as hf_logging

        if self._was:
            hf_logging.enable_progress_bar()
        else:
            hf_logging.disable_progress_bar()

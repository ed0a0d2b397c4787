"""Shared input validators: visible and valid text, real-valued matrices, embedding rows, ids,
positions, UTF-8 lines.

Each checker returns the cleaned value or raises
:class:`~meteora.errors.InvalidInputError` naming the argument and what to pass instead,
so every public entry point refuses the same bad values with the same words.

Example:
    >>> is_blank("\\u200b \\x00")
    True
    >>> real_matrix([[1, 2], [3, 4]], "x").dtype
    dtype('float64')
    >>> check_position(2.0, "p")
    2
"""

from __future__ import annotations

import inspect
import math
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np

from meteora.errors import InvalidInputError

__all__ = [
    "is_blank",
    "real_matrix",
    "check_position",
    "check_id",
    "decode_line",
    "check_generation_options",
    "check_generated",
    "check_generate_signature",
    "check_callable_arity",
    "check_embedding_rows",
    "check_text",
]

#: Unicode categories that show nothing: controls, format characters (zero-width space,
#: joiners, BOM, bidi marks), separators, and unassigned or private code points.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})
_SURROGATE = re.compile("[\ud800-\udfff]")
#: matrix cells :func:`check_embedding_rows` looks at per step
_CHECK_BLOCK_CELLS = 1 << 22


def is_blank(text: str) -> bool:
    """Whether ``text`` holds no visible character (only whitespace, controls, zero-width
    or other invisible code points).

    Example:
        >>> is_blank("a\\u200b"), is_blank("\\ufeff\\t")
        (False, True)
    """
    return all(ch.isspace() or unicodedata.category(ch) in _INVISIBLE_CATEGORIES for ch in text)


def real_matrix(x: Any, name: str, *, ndim: int = 2) -> np.ndarray:
    """``x`` as a float64 array of ``ndim`` dimensions holding finite real numbers.

    Refuses ragged nesting, strings, booleans, complex numbers, objects, the wrong
    number of dimensions and NaN/inf, each with a message naming ``name``.

    Example:
        >>> real_matrix(np.ones((2, 3), dtype=np.float32), "emb").shape
        (2, 3)
    """
    try:
        arr = np.asarray(x)
    except Exception as exc:  # noqa: BLE001 - ragged lists, odd objects: numpy raises many types
        raise InvalidInputError(f"{name} must be a numeric array of shape (n, d) with equal-length rows: {exc}") from exc
    if arr.dtype == object:
        raise InvalidInputError(
            f"{name} must be a numeric array with equal-length rows of numbers; got a ragged or mixed array"
        )
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InvalidInputError(f"{name} must hold real numbers (float), got dtype {arr.dtype}")
    if arr.ndim != ndim:
        raise InvalidInputError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    arr = arr.astype(np.float64, copy=False)
    if arr.size and not np.all(np.isfinite(arr)):
        raise InvalidInputError(f"{name} contains NaN or infinite values")
    return arr


def check_embedding_rows(
    x: Any, name: str, *, error: type[Exception] = InvalidInputError,
    hint: str = "pass real embeddings from the encoder",
    read: Callable[[int, int], np.ndarray] | None = None,
) -> Any:
    """Refuse an embedding matrix with a NaN/infinite entry or an all-zero row (a zero
    vector has no direction: every cosine with it is 0, so it would rank silently last
    or, as a query, score everything alike). Returns ``x`` unchanged; ``error`` is the
    exception class raised (e.g. :class:`~meteora.errors.IndexFormatError` for a file)
    and ``hint`` what the message tells to do. ``read(start, stop)``, when given, supplies
    the rows of an ``x`` that is only a shape (``(n, d)``), a block at a time (e.g. read
    from a file without mapping it).

    Example:
        >>> check_embedding_rows(np.eye(2), "emb").shape
        (2, 2)
        >>> check_embedding_rows(np.zeros((2, 3)), "emb")
        Traceback (most recent call last):
        ...
        meteora.errors.InvalidInputError: emb: row 0 is all zeros (2 of 2 rows); a zero vector has no direction, so every cosine with it is 0: pass real embeddings from the encoder
    """
    if read is None:
        arr = np.asarray(x)
        if arr.ndim != 2 or not arr.size:
            return x
        n, d = arr.shape

        def read(start: int, stop: int) -> np.ndarray:
            return arr[start:stop]
    else:
        n, d = x
    step = max(1, _CHECK_BLOCK_CELLS // d)  # a block of rows at a time: bounded temporaries on a large index
    not_finite: list[np.ndarray] = []
    zero: list[np.ndarray] = []
    for start in range(0, n, step):
        part = read(start, min(n, start + step))
        not_finite.append(start + np.flatnonzero(~np.isfinite(part).all(axis=1)))
        zero.append(start + np.flatnonzero(~(part != 0).any(axis=1)))
    bad = np.concatenate(not_finite)
    if bad.size:
        raise error(f"{name}: row {int(bad[0])} holds NaN or infinite values ({bad.size} of {n} rows); {hint}")
    bad = np.concatenate(zero)
    if bad.size:
        raise error(
            f"{name}: row {int(bad[0])} is all zeros ({bad.size} of {n} rows); a zero vector has no "
            f"direction, so every cosine with it is 0: {hint}"
        )
    return x


def positive_int(name: str, value: Any, *, allow_none: bool = False) -> int | None:
    """``value`` as an ``int`` when it is a positive integer (not a bool), ``None`` when
    it is ``None`` and ``allow_none``; else a clear error naming ``name``.

    Example:
        >>> positive_int("k", 3), positive_int("nlist", None, allow_none=True)
        (3, None)
        >>> positive_int("k", True)
        Traceback (most recent call last):
        ...
        meteora.errors.InvalidInputError: k must be a positive integer, got True
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_text(text: str, name: str) -> str:
    """Refuse a string holding a lone surrogate code point (``"\\ud800"``): not valid
    Unicode text, so no tokenizer can read it and it cannot be written as UTF-8 (such
    strings come from decoding bytes with ``errors="surrogateescape"`` or from JSON
    ``\\ud800`` escapes). Returns ``text``.

    Example:
        >>> check_text("aspirin", "query")
        'aspirin'
        >>> check_text("aspirin \\ud800", "query")
        Traceback (most recent call last):
        ...
        meteora.errors.InvalidInputError: query holds a lone surrogate (U+D800 at character 9), which is not valid Unicode text; decode the source as UTF-8 (errors='replace' turns bad bytes into U+FFFD) or remove it
    """
    match = _SURROGATE.search(text)
    if match is not None:
        raise InvalidInputError(
            f"{name} holds a lone surrogate (U+{ord(match.group()):04X} at character {match.start() + 1}), which is "
            "not valid Unicode text; decode the source as UTF-8 (errors='replace' turns bad bytes into U+FFFD) "
            "or remove it"
        )
    return text


def check_position(value: Any, where: str) -> int:
    """A passage position: a non-negative integer (an integral float such as ``2.0``
    from JSON is accepted; ``2.7``, NaN, inf, bools and strings are not).

    Example:
        >>> check_position(np.int64(3), "p")
        3
    """
    if isinstance(value, (bool, np.bool_)):
        raise InvalidInputError(f"{where}: position must be a non-negative integer, got {value!r}")
    if isinstance(value, Integral):
        out = int(value)
    elif isinstance(value, Real) and math.isfinite(float(value)) and float(value).is_integer():
        out = int(value)
    else:
        raise InvalidInputError(
            f"{where}: position must be a non-negative integer (0-based order in its document), got {value!r}"
        )
    if out < 0:
        raise InvalidInputError(f"{where}: position must be a non-negative integer, got {value!r}")
    return out


def check_id(value: Any, where: str, field: str = "id") -> str:
    """A passage or document id: a non-empty string, or an integer (turned into its
    decimal string). ``None``, bools, floats, lists and dicts are refused rather than
    silently becoming ``"None"`` or ``"[1, 2]"``.

    Example:
        >>> check_id(7, "passage #0")
        '7'
    """
    if isinstance(value, str):
        if not value or is_blank(value):
            raise InvalidInputError(f"{where}: {field} must be a non-empty string, got {value!r}")
        return check_text(value, f"{where}: {field}")
    if isinstance(value, Integral) and not isinstance(value, (bool, np.bool_)):
        return str(int(value))
    raise InvalidInputError(
        f"{where}: {field} must be a string (or an integer), got {type(value).__name__} {value!r}"
    )


def decode_line(raw: bytes, path: Any, lineno: int, *, error: type[Exception] = InvalidInputError) -> str:
    """Decode one line of a UTF-8 text file, or raise naming ``path:lineno`` and the
    byte offset (a leading BOM is dropped); ``error`` is the exception class raised.

    Example:
        >>> decode_line(b"\\xef\\xbb\\xbfhi\\n", "f.txt", 1)
        'hi\\n'
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(
            f"{path}:{lineno}: not valid UTF-8 (byte {raw[exc.start]:#04x} at column {exc.start + 1}); "
            "save the file as UTF-8"
        ) from exc
    return text[1:] if lineno == 1 and text.startswith("\ufeff") else text


def check_callable_arity(fn: Any, n: int, name: str, shape: str) -> None:
    """Refuse a callable that cannot be called with ``n`` positional arguments (checked
    once, up front, instead of a ``TypeError`` deep inside a later call).

    Example:
        >>> check_callable_arity(lambda q, p, a: None, 3, "verifier", "(query, passage, accepted)")
    """
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins without a signature: nothing to check
        return
    try:
        sig.bind(*([None] * n))
    except TypeError as exc:
        raise InvalidInputError(f"{name} must be a callable {shape}; {getattr(fn, '__name__', fn)!r}{sig}: {exc}") from exc


# --------------------------------------------------------------------------- generators
#: ``generate`` keywords the :class:`~meteora.Reranker` sets itself, and where to set them.
_RESERVED_GENERATION = {"n": "n_rationales", "batch_size": "batch_size", "include_query": "include_query"}


def _check_generation_value(key: str, value: Any) -> None:
    def bad(what: str) -> InvalidInputError:
        return InvalidInputError(f"generation[{key!r}] must be {what}, got {value!r}")

    is_number = isinstance(value, Real) and not isinstance(value, (bool, np.bool_))
    if key == "max_new_tokens" and value is not None and (not isinstance(value, Integral) or isinstance(value, bool) or value < 1):
        raise bad("a positive integer or None")
    if key == "seed" and value is not None and (not isinstance(value, Integral) or isinstance(value, bool)):
        raise bad("an integer or None")
    if key == "temperature" and (not is_number or not math.isfinite(value) or value <= 0):
        raise bad("a positive number")
    if key == "top_p" and (not is_number or not 0 < value <= 1):
        raise bad("a number in (0, 1]")
    if key in ("do_sample", "filter") and not isinstance(value, (bool, np.bool_)):
        raise bad("True or False")


def check_generation_options(generation: Any) -> dict[str, Any]:
    """Validate a :class:`~meteora.Reranker`'s ``generation=`` options, at construction
    rather than at the first call.

    The keys must be among the generator protocol's options
    (:data:`meteora.protocols.GENERATION_OPTIONS`): unknown keys (a typo such as
    ``tempreature``), keys the reranker sets itself (``n``, ``batch_size``,
    ``include_query``) and bad values of the sampling keys are refused.

    Example:
        >>> check_generation_options({"seed": 3})
        {'seed': 3}
    """
    from meteora.protocols import GENERATION_OPTIONS

    if generation is None:
        return {}
    if not isinstance(generation, Mapping):
        raise InvalidInputError(
            f"generation must be a dict of generate() keywords (e.g. {{'max_new_tokens': 64}}), got {type(generation).__name__}"
        )
    options = dict(generation)
    for key in options:
        if not isinstance(key, str):
            raise InvalidInputError(f"generation keys must be strings, got {key!r}")
        if key in _RESERVED_GENERATION:
            raise InvalidInputError(
                f"generation[{key!r}] is set by the Reranker; pass Reranker({_RESERVED_GENERATION[key]}=...) instead"
            )
    unknown = sorted(set(options) - set(GENERATION_OPTIONS))
    if unknown:
        raise InvalidInputError(
            f"unknown generation setting(s) {unknown}; a rationale generator accepts {sorted(GENERATION_OPTIONS)}"
        )
    for key, value in options.items():
        _check_generation_value(key, value)
    return options


def check_generate_signature(generator: Any, options: Mapping[str, Any]) -> None:
    """Refuse a generator whose ``generate`` cannot take what the
    :class:`~meteora.Reranker` passes it — ``generate(queries, n=, batch_size=,
    include_query=, **options)`` — at construction, naming the missing parameters,
    instead of a ``TypeError`` at the first query.

    Example:
        >>> class Gen:
        ...     def generate(self, queries):
        ...         return []
        >>> check_generate_signature(Gen(), {})
        Traceback (most recent call last):
        ...
        meteora.errors.InvalidInputError: the generator's Gen.generate(queries) does not take n, batch_size, include_query; a rationale generator must accept generate(queries, n=None, *, batch_size=8, include_query=False) (and **options, or the generation= keywords it is given)
    """
    fn = getattr(generator, "generate", None)
    try:
        sig = inspect.signature(fn)  # type: ignore[arg-type]
    except (TypeError, ValueError):  # builtins without a signature: nothing to check
        return
    params = sig.parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        missing = []
    else:
        names = {p.name for p in params if p.kind is not inspect.Parameter.POSITIONAL_ONLY}
        missing = [k for k in ("n", "batch_size", "include_query", *options) if k not in names]
    if not missing:
        try:
            sig.bind(["q"], n=None, batch_size=8, include_query=False, **options)
        except TypeError as exc:
            missing = [f"a call generate(queries, ...) ({exc})"]
    if missing:
        raise InvalidInputError(
            f"the generator's {type(generator).__name__}.generate{sig} does not take {', '.join(missing)}; a rationale "
            "generator must accept generate(queries, n=None, *, batch_size=8, include_query=False) (and **options, "
            "or the generation= keywords it is given)"
        )


def _same_query(a: Any, b: str) -> bool:
    return isinstance(a, str) and " ".join(a.split()) == " ".join(b.split())


def check_generated(queries: Sequence[str], sets: Any, generator_name: str = "generator") -> list[tuple[list[str], Any]]:
    """Check what ``generator.generate(queries)`` returned and pair it with the queries.

    The output must be a list with one rationale set per query, in the same order:
    each an object with ``query`` (the query it answers) and ``rationales`` (a list of
    non-empty strings). A set for another query (extra, missing or reordered sets) is
    refused rather than attaching rationales to the wrong question. Returns
    ``(rationales or [query], set)`` per query.

    Raises:
        InvalidInputError: naming the query and what was wrong.

    Example:
        >>> from types import SimpleNamespace as NS
        >>> check_generated(["q"], [NS(query="q", rationales=["look for trials"])])[0][0]
        ['look for trials']
    """
    from meteora.protocols import RationaleOutput

    n = len(queries)
    where = f"the generator ({generator_name}) "
    if isinstance(sets, (str, bytes, Mapping)) or not isinstance(sets, Sequence):
        raise InvalidInputError(
            f"{where}returned a {type(sets).__name__} for {n} queries; generate(list_of_queries) must return "
            "a list of RationaleSet, one per query in the same order"
        )
    if len(sets) != n:
        raise InvalidInputError(
            f"{where}returned {len(sets)} rationale sets for {n} queries; it must return exactly one per query, in order"
        )
    out: list[tuple[list[str], Any]] = []
    for i, (q, rset) in enumerate(zip(queries, sets, strict=True)):
        about = f"{where}output #{i} (for query {q[:80]!r})"
        if not isinstance(rset, RationaleOutput):
            raise InvalidInputError(
                f"{about} is a {type(rset).__name__}, not a RationaleSet (an object with .query and .rationales)"
            )
        if not _same_query(rset.query, q):
            raise InvalidInputError(
                f"{about} answers another query ({str(rset.query)[:80]!r}); return one set per query, in the order given"
            )
        rats = rset.rationales
        if isinstance(rats, (str, bytes)):
            raise InvalidInputError(f"{about}: rationales is a single string; it must be a list of strings")
        if not isinstance(rats, Sequence):
            raise InvalidInputError(f"{about}: rationales must be a list of strings, got {type(rats).__name__}")
        for j, r in enumerate(rats):
            if not isinstance(r, str) or is_blank(r):
                raise InvalidInputError(f"{about}: rationales[{j}] must be a non-empty string, got {r!r:.60}")
        out.append((list(rats) or [q], rset))
    return out

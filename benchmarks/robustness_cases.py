"""The bad-input matrix: every public entry point × every kind of bad value.

Each :class:`Case` performs one action a hostile (or careless) user might take against
the public API or the ``meteora`` command line and states the expected outcome: a
specific :class:`~meteora.errors.MeteoraError` subclass whose message contains a given
substring (for file input, the ``file:line``), or ``ok`` with a correctness check.
:func:`run_case` classifies what actually happened into ``clear_error``,
``correct_result``, ``raw_traceback`` (any other exception), ``silent_wrong`` (bad input
accepted, or a result that fails its check), ``data_loss`` (a user's file changed) or
``hang`` (still running after :data:`HANG_SECONDS`).

``tests/test_bad_inputs.py`` runs one test per case; ``benchmarks/robustness.py``
writes the table ``benchmarks/results/robustness.json``. Everything runs on a tiny
random encoder (``Reranker(generator=None)``) and loopback only.

Example:
    >>> cases = build_cases()
    >>> len(cases) >= 300 and len({c.id for c in cases}) == len(cases)
    True
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from meteora.errors import (
    IndexFormatError,
    InvalidInputError,
    MeteoraError,
    ModelNotFoundError,
    TrainingDataError,
)

__all__ = ["Case", "CliError", "CliResult", "Env", "HttpError", "HttpResult", "Outcome", "build_cases", "run_case",
           "OUTCOMES"]

OUTCOMES = ("clear_error", "correct_result", "raw_traceback", "silent_wrong", "data_loss", "hang")
#: a case still running after this many seconds is stopped and counted as a hang
HANG_SECONDS = 180.0
REPO = Path(__file__).resolve().parents[1]

Q = "Does aspirin reduce fever in children?"
PASSAGES = [Q, "Dogs and cats with renal failure were given fluids.", "Methods: a retrospective cohort of adults."]
CORPUS = [
    {"id": f"d{d}-{i}", "doc_id": f"d{d}", "position": i, "text": t}
    for d, texts in enumerate(
        [
            [Q, "Aspirin lowered temperature within two hours.", "No serious adverse events were seen."],
            ["Dogs and cats with renal failure were given fluids.", "Veterinary outcomes improved."],
            ["Methods: a retrospective cohort of adults.", "Statins reduced cholesterol."],
        ]
    )
    for i, t in enumerate(texts)
]


# --------------------------------------------------------------------------- plumbing
class CliError(Exception):
    """A command that exited with status 2 and a readable message (no traceback)."""


class HttpError(Exception):
    """A 4xx answer of the HTTP service with a JSON ``{"error": {"message"}}`` body."""


@dataclass
class HttpResult:
    """Status and JSON body of one request to the HTTP service."""

    status: int
    body: Any


class HangDetected(BaseException):
    """A case ran past :data:`HANG_SECONDS` (a BaseException, so that no ``except
    Exception`` in the code under test swallows it)."""


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise :class:`HangDetected` in the block after ``seconds`` (a SIGALRM timer, in the
    main thread of a Unix process; elsewhere no limit)."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(signum: int, frame: Any) -> None:
        raise HangDetected(f"still running after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class DataLossDetected(Exception):
    """A user's file or folder was changed or removed by a call that should not touch it."""


@dataclass
class CliResult:
    """Exit status and output of one ``meteora`` command."""

    rc: int
    out: str
    err: str


@dataclass(frozen=True)
class Case:
    """One row of the matrix.

    Attributes:
        id: unique, stable name (``group/what/value``).
        group: the area (``passage``, ``query``, ``cli``, ``index/cache`` ...).
        action: performs the bad action on an :class:`Env`; returns a value or raises.
        expect: the MeteoraError subclass (or :class:`CliError`) expected, or ``None`` for ok.
        contains: a substring the error message must contain (case-insensitive).
        check: for ok cases, ``check(value, env)`` must be true.
    """

    id: str
    group: str
    action: Callable[[Env], Any]
    expect: type[BaseException] | None = InvalidInputError
    contains: str = ""
    check: Callable[[Any, Env], bool] | None = None

    @property
    def expected(self) -> str:
        if self.expect is None:
            return "ok"
        return self.expect.__name__ + (f" ~ {self.contains!r}" if self.contains else "")


@dataclass
class Outcome:
    """What happened when a case ran."""

    actual: str
    passed: bool
    message: str
    error_type: str | None = None
    seconds: float = 0.0


def _head(text: str, n: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def run_case(case: Case, env: Env) -> Outcome:
    """Run one case and classify its outcome (never raises)."""
    t0 = time.perf_counter()
    try:
        with deadline(HANG_SECONDS):
            value = case.action(env)
    except HangDetected as exc:
        return Outcome("hang", False, _head(str(exc)), type(exc).__name__, time.perf_counter() - t0)
    except DataLossDetected as exc:
        return Outcome("data_loss", False, _head(str(exc)), type(exc).__name__, time.perf_counter() - t0)
    except MeteoraError as exc:
        return _error_outcome(case, exc, time.perf_counter() - t0)
    except Exception as exc:  # noqa: BLE001 - what the matrix is looking for
        inner = wrapped_meteora_error(exc)
        if inner is not None:  # a framework's validation error carrying meteora's own message
            return _error_outcome(case, inner, time.perf_counter() - t0)
        return Outcome("raw_traceback", False, _head(f"{type(exc).__name__}: {exc}"), type(exc).__name__,
                       time.perf_counter() - t0)
    seconds = time.perf_counter() - t0
    if isinstance(value, HttpResult) and value.status >= 400:
        error = value.body.get("error") if isinstance(value.body, dict) else None
        if 400 <= value.status < 500 and isinstance(error, dict) and error.get("message"):
            return _error_outcome(case, HttpError(f"{value.status}: {error['message']}"), seconds)
        return Outcome("raw_traceback", False, _head(f"HTTP {value.status}: {value.body!r}"), "HttpStatus", seconds)
    if isinstance(value, CliResult) and value.rc != 0:
        text = value.err + value.out
        if value.rc == 2 and "Traceback (most recent call last)" not in text:
            return _error_outcome(case, CliError(text.strip()), seconds)
        return Outcome("raw_traceback", False, _head(f"exit {value.rc}: {text[-400:]}"), "CliExit", seconds)
    if case.expect is not None:
        return Outcome("silent_wrong", False, _head(f"accepted: {value!r}"), None, seconds)
    try:
        ok = True if case.check is None else bool(case.check(value, env))
    except Exception as exc:  # noqa: BLE001 - a check that cannot run means the result is wrong
        return Outcome("silent_wrong", False, _head(f"check failed: {type(exc).__name__}: {exc}"), None, seconds)
    return Outcome("correct_result" if ok else "silent_wrong", ok, _head(repr(value)), None, seconds)


def wrapped_meteora_error(exc: BaseException) -> MeteoraError | None:
    """The :class:`MeteoraError` inside a pydantic ``ValidationError`` (how LangChain's and
    LlamaIndex's models report a bad field: meteora's check ran and its message is kept),
    else ``None``."""
    errors = getattr(exc, "errors", None)
    if type(exc).__name__ != "ValidationError" or not callable(errors):
        return None
    for err in errors():
        inner = (err.get("ctx") or {}).get("error")
        if isinstance(inner, MeteoraError):
            return inner
    return None


def _error_outcome(case: Case, exc: BaseException, seconds: float) -> Outcome:
    msg = str(exc)
    passed = (
        case.expect is not None
        and isinstance(exc, case.expect)
        and case.contains.lower() in msg.lower()
    )
    return Outcome("clear_error", passed, _head(msg), type(exc).__name__, seconds)


@contextlib.contextmanager
def env_vars(**values: str | None) -> Iterator[None]:
    """Set (or, with ``None``, unset) environment variables for a block."""
    old = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def fast(seconds: float, fn: Callable[[], Any]) -> Any:
    """Run ``fn``; a MeteoraError raised after more than ``seconds`` becomes a failure."""
    t0 = time.perf_counter()
    try:
        return fn()
    except MeteoraError:
        if time.perf_counter() - t0 > seconds:
            raise RuntimeError(f"failed, but only after {time.perf_counter() - t0:.1f} s (limit {seconds} s)") from None
        raise


def snapshot(path: Path) -> dict[str, str]:
    """``relative path -> sha256`` of every file under ``path`` (or of the file itself)."""
    if path.is_file():
        return {"": hashlib.sha256(path.read_bytes()).hexdigest()}
    if not path.exists():
        return {}
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*")) if p.is_file()
    }


def guarded(setup: Callable[[Env], Path], op: Callable[[Env, Path], Any]) -> Callable[[Env], Any]:
    """An action that must leave the user's files under ``setup(env)`` exactly as they were
    (whether ``op`` succeeds or fails); otherwise :class:`DataLossDetected`."""

    def action(env: Env) -> Any:
        target = setup(env)
        before = snapshot(target)
        try:
            return op(env, target)
        finally:
            after = snapshot(target)
            lost = {k for k in before if before[k] != after.get(k)}
            if lost:
                raise DataLossDetected(f"{len(lost)} user file(s) changed or lost: {sorted(lost)[:5]}")

    return action


class Env:
    """Shared, lazily built fixtures: a tiny encoder, a query-only reranker, retrievers,
    and a scratch folder for files."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._n = 0

    def fresh(self, name: str = "d") -> Path:
        """A new empty folder."""
        self._n += 1
        path = self.root / f"{self._n:04d}-{name}"
        path.mkdir(parents=True)
        return path

    def file(self, name: str, data: bytes | str) -> Path:
        """A new file holding ``data`` (str is written as UTF-8)."""
        path = self.fresh("f") / name
        path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        return path

    @cached_property
    def encoder_dir(self) -> Path:
        from tiny_models import make_sentence_transformer

        return make_sentence_transformer(self.root / "tiny-st")

    @cached_property
    def llama_dir(self) -> Path:
        from tiny_models import make_causal_lm

        return make_causal_lm(self.root / "tiny-llama", "llama")

    @cached_property
    def encoder(self) -> Any:
        from meteora.embeddings.encoder import Encoder

        return Encoder(str(self.encoder_dir), device="cpu")

    @cached_property
    def rr(self) -> Any:
        from meteora import Reranker

        return Reranker(generator=None, encoder=self.encoder, scorer=None)

    def reranker(self, **kwargs: Any) -> Any:
        from meteora import Reranker

        kwargs.setdefault("generator", None)
        kwargs.setdefault("scorer", None)
        return Reranker(encoder=self.encoder, **kwargs)

    @cached_property
    def bm25(self) -> Any:
        from meteora.retrievers.bm25 import BM25Retriever

        return BM25Retriever().index(CORPUS)

    @cached_property
    def dense(self) -> Any:
        from meteora.retrievers.dense import DenseRetriever

        return DenseRetriever(self.encoder).index(CORPUS)

    def qemb(self, text: str = Q) -> np.ndarray:
        return np.asarray(self.encoder.encode([text]), dtype=np.float32)[0]

    @cached_property
    def saved_bm25(self) -> Path:
        out = self.root / "saved-bm25"
        self.bm25.save(out)
        return out


def cli(*argv: str) -> CliResult:
    """Run ``meteora ARGV`` in this process; output and the error log are captured."""
    from meteora.cli import main

    out, err = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(err)
    handler.setLevel(logging.ERROR)
    log = logging.getLogger("meteora")
    log.addHandler(handler)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(list(argv))
            except SystemExit as exc:  # argparse usage errors
                rc = exc.code if isinstance(exc.code, int) else 1
    finally:
        log.removeHandler(handler)
    return CliResult(int(rc), out.getvalue(), err.getvalue())


def fast_cli(seconds: float, *argv: str) -> CliResult:
    """:func:`cli`, but a failure that comes after more than ``seconds`` (work done before
    the bad argument was noticed) raises instead of counting as a clear error."""
    t0 = time.perf_counter()
    result = cli(*argv)
    if result.rc != 0 and time.perf_counter() - t0 > seconds:
        raise RuntimeError(f"failed only after {time.perf_counter() - t0:.1f} s: {result.err[-200:]}")
    return result


def cli_subprocess(*argv: str, timeout: float = 240) -> CliResult:
    """Run ``python -m meteora.cli ARGV`` in a real subprocess (offline, one thread)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "METEORA_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "meteora.cli", "-q", *argv], capture_output=True, text=True, timeout=timeout, env=env,
        cwd=str(REPO),
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


# --------------------------------------------------------------------------- checks
def top_is(pid: str) -> Callable[[Any, Env], bool]:
    return lambda res, env: res.ranked[0].id == pid and pid in res.selected_ids


def ranked_passage(res: Any, pid: str) -> Any:
    return next(h.passage for h in res.ranked if h.id == pid)


def _jsonl(*rows: Any) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


GOOD_ROW = {"id": "a", "text": Q}

# --------------------------------------------------------------------------- bad values
BAD_TEXT: dict[str, Any] = {
    "none": None, "int": 5, "float": 2.5, "bool": True, "bytes": b"bytes", "list": ["a"], "dict": {"a": 1},
    "empty": "", "spaces": "   ", "zwsp": "\u200b", "nul": "\x00", "bom-zwj": "\ufeff\u200d", "tabs-newlines": "\n\t",
}
BAD_ID: dict[str, Any] = {
    "none": None, "bool": True, "float": 2.5, "nan": float("nan"), "list": ["a"], "dict": {"a": 1}, "empty": "",
    "zwsp": "\u200b", "bytes": b"x",
}
BAD_DOC_ID: dict[str, Any] = {"bool": True, "list": [1], "dict": {"a": 1}, "float": 2.5, "bytes": b"x", "zwsp": "\u200b"}
BAD_POSITION: dict[str, Any] = {
    "nan": float("nan"), "inf": float("inf"), "-inf": float("-inf"), "2.7": 2.7, "-1": -1, "str": "2", "bool": True,
    "list": [1], "dict": {"a": 1}, "none": None, "-0.5": -0.5, "complex": 1j,
}
BAD_METADATA: dict[str, Any] = {"list": [1], "str": "x", "int": 5, "bool": True, "tuple": ("a",)}
BAD_QUERY: dict[str, Any] = {
    "none": None, "int": 5, "bytes": b"q", "list": [Q], "empty": "", "spaces": "   ", "zwsp": "\u200b",
    "nul": "\x00", "zw-mix": "\u200b\u200c\u200d\ufeff", "tab-newline": "\t\n", "line-sep": "\u2028",
}
BAD_K: dict[str, Any] = {"0": 0, "-1": -1, "float": 1.5, "bool": True, "str": "3", "none": None}


def _passage_dict_cases() -> list[Case]:
    out: list[Case] = []
    fields = {"text": BAD_TEXT, "id": BAD_ID, "doc_id": BAD_DOC_ID, "position": BAD_POSITION, "metadata": BAD_METADATA}
    for name, values in fields.items():
        for label, value in values.items():
            row = {"text": "Aspirin lowers fever.", "id": "b", name: value}
            # via rerank (dict input), via Passage(...), via a retriever's index()
            out.append(Case(f"passage/dict/{name}={label}", "passage",
                            lambda env, row=row: env.rr.rerank(Q, [dict(GOOD_ROW), row]), InvalidInputError,
                            "passage #1"))
            if name != "text" or label not in ("empty", "spaces", "zwsp", "nul", "bom-zwj", "tabs-newlines"):
                kwargs = {"text": "Aspirin lowers fever.", "id": "b", name: value}
                if name == "text" and value is None:
                    kwargs["text"] = None
                out.append(Case(f"passage/Passage/{name}={label}", "passage",
                                lambda env, kw=kwargs: _passage(**kw), InvalidInputError, name.split("_")[0]))
            if name in ("text", "position", "id"):
                out.append(Case(f"passage/bm25.index/{name}={label}", "retriever",
                                lambda env, row=row: _bm25().index([dict(GOOD_ROW), row]), InvalidInputError,
                                "passage #1"))
    return out


def _passage(**kwargs: Any) -> Any:
    from meteora import Passage

    return Passage(**kwargs)


def _bm25() -> Any:
    from meteora.retrievers.bm25 import BM25Retriever

    return BM25Retriever()


def _passage_ok_cases() -> list[Case]:
    def rerank_row(row: dict[str, Any]) -> Callable[[Env], Any]:
        return lambda env: env.rr.rerank(Q, [dict(GOOD_ROW), {"text": "Aspirin lowers fever.", **row}])

    ok = [
        ("position=2.0", {"id": "b", "position": 2.0}, lambda r, e: ranked_passage(r, "b").position == 2),
        ("position=np.int64", {"id": "b", "position": np.int64(3)}, lambda r, e: ranked_passage(r, "b").position == 3),
        ("id=int", {"id": 7}, lambda r, e: ranked_passage(r, "7").doc_id == "7"),
        ("doc_id=int", {"id": "b", "doc_id": 5}, lambda r, e: ranked_passage(r, "b").doc_id == "5"),
        ("doc_id=none", {"id": "b", "doc_id": None}, lambda r, e: ranked_passage(r, "b").doc_id == "b"),
        ("metadata=none", {"id": "b", "metadata": None}, lambda r, e: dict(ranked_passage(r, "b").metadata) == {}),
        ("extra-keys", {"id": "b", "source": "pm"}, lambda r, e: ranked_passage(r, "b").metadata["source"] == "pm"),
        ("no-id", {}, lambda r, e: {h.id for h in r.ranked} == {"a", "1"}),
        ("text-with-nul-inside", {"id": "b", "text": "fever\x00aspirin"}, lambda r, e: len(r.ranked) == 2),
        ("emoji", {"id": "b", "text": "💊 fever ↓"}, lambda r, e: len(r.ranked) == 2),
        ("long-text", {"id": "b", "text": "fever " * 20000}, lambda r, e: len(ranked_passage(r, "b").text) == 120000),
    ]
    out = [Case(f"passage/ok/{label}", "passage", rerank_row(row), None, check=chk) for label, row, chk in ok]
    containers: dict[str, Any] = {
        "str": "just a string", "bytes": b"bytes", "dict": {"text": "x"}, "none": None, "int": 5, "empty-list": [],
        "list-of-none": [None], "list-of-int": [5], "list-of-list": [["a"]], "list-of-bytes": [b"a"],
    }
    for label, value in containers.items():
        out.append(Case(f"passage/container/{label}", "passage", lambda env, v=value: env.rr.rerank(Q, v),
                        InvalidInputError, "passage" if label != "empty-list" else "empty"))
    out.append(Case("passage/container/single-Passage", "passage",
                    lambda env: env.rr.rerank(Q, _passage(text="x", id="a")), InvalidInputError, "wrap it in a list"))
    out.append(Case("passage/container/generator-ok", "passage", lambda env: env.rr.rerank(Q, (p for p in PASSAGES)),
                    None, check=top_is("0")))
    out.append(Case("passage/container/tuple-ok", "passage", lambda env: env.rr.rerank(Q, tuple(PASSAGES)), None,
                    check=top_is("0")))
    dup = [{"id": "a", "text": Q}, {"id": "a", "text": "other"}]
    out.append(Case("passage/duplicate-ids", "passage", lambda env: env.rr.rerank(Q, dup), InvalidInputError, "duplicate"))
    out.append(Case("passage/duplicate-int-and-str-id", "passage",
                    lambda env: env.rr.rerank(Q, [{"id": 1, "text": Q}, {"id": "1", "text": "x"}]), InvalidInputError,
                    "duplicate"))
    ids_bad = {"none": [None, "b", "c"], "dup": ["a", "a", "b"], "short": ["a"], "str": "abc", "bool": [True, "b", "c"],
               "float": [1.5, "b", "c"], "empty": ["", "b", "c"], "int": 5}
    for label, ids in ids_bad.items():
        out.append(Case(f"passage/ids={label}", "passage", lambda env, ids=ids: env.rr.rerank(Q, PASSAGES, ids=ids),
                        InvalidInputError, "id"))
    out.append(Case("passage/ids=ints-ok", "passage", lambda env: env.rr.rerank(Q, PASSAGES, ids=[10, 11, 12]), None,
                    check=top_is("10")))
    return out


def _query_cases() -> list[Case]:
    out: list[Case] = []
    for label, q in BAD_QUERY.items():
        sub = "quer"
        out += [
            Case(f"query/rerank/{label}", "query", lambda env, q=q: env.rr.rerank(q, PASSAGES), InvalidInputError, sub),
            Case(f"query/rerank_batch/{label}", "query", lambda env, q=q: env.rr.rerank_batch([q], [PASSAGES]),
                 InvalidInputError, sub),
            Case(f"query/search/{label}", "query", lambda env, q=q: env.rr.search(q, env.bm25, k=3), InvalidInputError,
                 sub),
        ]
        if label != "list":  # a list of queries is a batch search
            out += [
                Case(f"query/bm25.search/{label}", "retriever", lambda env, q=q: env.bm25.search(q, k=3),
                     InvalidInputError, sub),
                Case(f"query/dense.search/{label}", "retriever", lambda env, q=q: env.dense.search(q, k=3),
                     InvalidInputError, sub),
                Case(f"query/bm25.search-batch/{label}", "retriever", lambda env, q=q: env.bm25.search([Q, q], k=3),
                     InvalidInputError, "queries[1]"),
            ]
    ok = {"nul-inside": "fever\x00in children?", "emoji": "💊 aspirin for fever?", "long": "fever " * 5000,
          "leading-zwsp": "\u200bDoes aspirin reduce fever?"}
    for label, q in ok.items():
        out.append(Case(f"query/ok/{label}", "query", lambda env, q=q: env.rr.rerank(q, PASSAGES), None,
                        check=lambda r, e: len(r.ranked) == 3))
    out.append(Case("query/ok/exact-match", "query", lambda env: env.rr.rerank(Q, PASSAGES), None, check=top_is("0")))
    return out


def _batch_cases() -> list[Case]:
    from meteora import SelectorSettings

    rb = lambda **kw: (lambda env: env.rr.rerank_batch(**kw))  # noqa: E731
    out = [
        Case("batch/queries=str", "batch", rb(queries=Q, candidate_lists=[PASSAGES]), InvalidInputError, "list"),
        Case("batch/queries=none", "batch", rb(queries=None, candidate_lists=[PASSAGES]), InvalidInputError, "queries"),
        Case("batch/queries=dict", "batch", rb(queries={"q": Q}, candidate_lists=[PASSAGES]), InvalidInputError,
             "queries"),
        Case("batch/lists=fewer", "batch", rb(queries=[Q, Q], candidate_lists=[PASSAGES]), InvalidInputError,
             "one list of passages per query"),
        Case("batch/lists=more", "batch", rb(queries=[Q], candidate_lists=[PASSAGES, PASSAGES]), InvalidInputError,
             "one list"),
        Case("batch/lists=str", "batch", rb(queries=[Q], candidate_lists="abc"), InvalidInputError, "candidate_lists"),
        Case("batch/lists=dict", "batch", rb(queries=[Q], candidate_lists={"a": PASSAGES}), InvalidInputError,
             "candidate_lists"),
        Case("batch/lists=none", "batch", rb(queries=[Q], candidate_lists=None), InvalidInputError, "candidate_lists"),
        Case("batch/list-empty", "batch", rb(queries=[Q], candidate_lists=[[]]), InvalidInputError, "empty"),
        Case("batch/list-is-str", "batch", rb(queries=[Q], candidate_lists=["abc"]), InvalidInputError, "query #0"),
        Case("batch/ids-wrong-count", "batch", rb(queries=[Q], candidate_lists=[PASSAGES], ids=[None, None]),
             InvalidInputError, "ids"),
        Case("batch/embeddings-wrong-count", "batch",
             rb(queries=[Q], candidate_lists=[PASSAGES], passage_embeddings=[None, None]), InvalidInputError,
             "passage_embeddings"),
        Case("batch/contexts=str", "batch", rb(queries=[Q], candidate_lists=[PASSAGES], contexts="x"),
             InvalidInputError, "contexts"),
        Case("batch/contexts-item=int", "batch", rb(queries=[Q], candidate_lists=[PASSAGES], contexts=[5]),
             InvalidInputError, "query #0"),
        Case("batch/query_embeddings-wrong-count", "batch",
             rb(queries=[Q], candidate_lists=[PASSAGES], query_embeddings=[None, None]), InvalidInputError,
             "query_embeddings"),
        Case("batch/empty-ok", "batch", rb(queries=[], candidate_lists=[]), None, check=lambda r, e: r == []),
        Case("batch/two-queries-ok", "batch",
             rb(queries=[Q, "Dogs and cats with renal failure were given fluids."], candidate_lists=[PASSAGES, PASSAGES]),
             None, check=lambda r, e: r[0].ranked[0].id == "0" and r[1].ranked[0].id == "1"),
    ]
    rats_bad: dict[str, Any] = {"str": "text", "list-of-str": ["text"], "empty-string": [[""]], "int": [[5]],
                                "none": [None], "dict": [{"a": "b"}], "wrong-count": [["a"], ["b"]],
                                "zwsp": [["\u200b"]], "number": 5}
    for label, rats in rats_bad.items():
        out.append(Case(f"batch/rationales={label}", "batch",
                        rb(queries=[Q], candidate_lists=[PASSAGES], rationales=rats), InvalidInputError, "rationale"))
    out.append(Case("batch/rationales=empty-list-ok", "batch",
                    rb(queries=[Q], candidate_lists=[PASSAGES], rationales=[[]]), None,
                    check=lambda r, e: r[0].rationales == [Q] and r[0].ranked[0].id == "0"))
    # given rationales drive a rationale-reading cut (the elbow; the learned cut's query-only
    # and stage-1 models read none and say so in a warning)
    out.append(Case("batch/rationales=given-ok", "batch",
                    lambda env: env.reranker(settings=SelectorSettings(cut="elbow")).rerank_batch(
                        ["unrelated words"], [PASSAGES], rationales=[[Q]]), None,
                    check=lambda r, e: r[0].rationales == [Q] and r[0].ranked[0].id == "0"))
    return out


def _embedding_cases() -> list[Case]:
    def with_emb(make: Callable[[Env], Any]) -> Callable[[Env], Any]:
        return lambda env: env.rr.rerank(Q, PASSAGES, passage_embeddings=make(env))

    def dims(env: Env) -> int:
        return int(env.qemb().shape[0])

    bad: dict[str, Callable[[Env], Any]] = {
        "0-d": lambda env: np.float32(1.0),
        "0-d-array": lambda env: np.array(3.0),
        "1-d": lambda env: np.ones(dims(env)),
        "3-d": lambda env: np.ones((3, dims(env), 1)),
        "ragged": lambda env: [[1.0] * dims(env), [1.0] * (dims(env) - 1), [1.0] * dims(env)],
        "strings": lambda env: [["1.0"] * dims(env)] * 3,
        "str-array": lambda env: np.full((3, dims(env)), "1"),
        "bool": lambda env: np.ones((3, dims(env)), dtype=bool),
        "complex": lambda env: np.ones((3, dims(env)), dtype=complex),
        "object": lambda env: np.array([[object()] * dims(env)] * 3, dtype=object),
        "none-rows": lambda env: [None, None, None],
        "nan": lambda env: np.full((3, dims(env)), np.nan),
        "inf": lambda env: np.full((3, dims(env)), np.inf),
        "wrong-rows": lambda env: np.ones((2, dims(env))),
        "wrong-dim": lambda env: np.ones((3, dims(env) + 1)),
        "zero-rows": lambda env: np.zeros((3, dims(env))),
        "empty": lambda env: np.zeros((0, dims(env))),
        "string": lambda env: "embeddings",
        "dict": lambda env: {"a": [1.0]},
    }
    out = [Case(f"embeddings/passage/{label}", "embeddings", with_emb(make), InvalidInputError, "embedding")
           for label, make in bad.items()]

    def good(env: Env) -> np.ndarray:
        rng = np.random.default_rng(0)
        emb = rng.normal(size=(3, dims(env))).astype(np.float32)
        emb[1] = env.qemb()
        return emb

    out.append(Case("embeddings/passage/given-ok", "embeddings", with_emb(good), None, check=top_is("1")))
    out.append(Case("embeddings/passage/list-of-lists-ok", "embeddings", with_emb(lambda env: good(env).tolist()), None,
                    check=top_is("1")))
    out.append(Case("embeddings/passage/int-ok", "embeddings",
                    with_emb(lambda env: np.eye(3, dims(env), dtype=np.int64)), None,
                    check=lambda r, e: len(r.ranked) == 3))
    qbad: dict[str, Callable[[Env], Any]] = {
        "2-d": lambda env: np.ones((1, dims(env))), "str": lambda env: "q", "nan": lambda env: np.full(dims(env), np.nan),
        "complex": lambda env: np.ones(dims(env), dtype=complex), "bool": lambda env: np.ones(dims(env), dtype=bool),
        "wrong-dim": lambda env: np.ones(dims(env) + 2),
    }
    for label, make in qbad.items():
        out.append(Case(f"embeddings/query/{label}", "embeddings",
                        lambda env, make=make: env.rr.rerank_batch([Q], [PASSAGES], query_embeddings=[make(env)]),
                        InvalidInputError, "embedding"))
    return out


def _settings_cases() -> list[Case]:
    from meteora import SelectorSettings

    bad: dict[str, dict[str, Any]] = {
        "pairing": {"unknown": "best", "none": None, "int": 5},
        "tau": {"nan": float("nan"), "inf": float("inf"), "str": "1", "bool": True, "none": None},
        "window": {"-1": -1, "float": 1.5, "bool": True, "str": "1", "none": None},
        "use_pairing": {"str": "yes", "none": None},
        "order": {"unknown": "random", "none": None},
        "expand_from_documents": {"str": "yes", "int": 2},
        "min_similarity": {"2": 2.0, "-2": -2.0, "nan": float("nan"), "str": "0.2", "bool": True},
        "evidence_weight": {"-1": -1.0, "str": "high", "nan": float("nan"), "inf": float("inf")},
        "evidence_band": {"-1": -1.0, "str": "wide", "nan": float("nan")},
    }
    out: list[Case] = []
    for name, values in bad.items():
        for label, value in values.items():
            out.append(Case(f"settings/SelectorSettings/{name}={label}", "settings",
                            lambda env, n=name, v=value: SelectorSettings(**{n: v}), InvalidInputError, name))
    out += [
        Case("settings/both-stages-off", "settings", lambda env: SelectorSettings(use_pairing=False, use_pooling=False),
             InvalidInputError, "use_p"),
        Case("settings/replace-unknown", "settings", lambda env: SelectorSettings().replace(windw=2), InvalidInputError,
             "windw"),
        Case("settings/from_dict-str", "settings", lambda env: SelectorSettings.from_dict("window=2"), InvalidInputError,
             "mapping"),
        Case("settings/from_dict-unknown", "settings", lambda env: SelectorSettings.from_dict({"taux": 1}),
             InvalidInputError, "taux"),
        Case("settings/ok-roundtrip", "settings", lambda env: SelectorSettings.from_dict(SelectorSettings(window=2).to_dict()),
             None, check=lambda s, e: s.window == 2),
    ]
    rr_bad: dict[str, dict[str, Any]] = {
        "top_k": BAD_K | {},
        "batch_size": {"0": 0, "bool": True, "str": "8", "float": 2.5},
        "n_rationales": {"0": 0, "-1": -1, "float": 2.5, "bool": True},
        "settings": {"str": "window=2", "dict": {"window": 2}},
        "scorer": {"int": 5, "list": ["a"]},
        "verifier": {"int": 5, "str-ish": 3.5},
        "generation": {"str": "temperature=0.5", "list": [("seed", 1)]},
        "generator": {"int": 5, "list": ["x"]},
    }
    rr_bad["top_k"] = {k: v for k, v in BAD_K.items() if k != "none"}
    for name, values in rr_bad.items():
        for label, value in values.items():
            out.append(Case(f"settings/Reranker/{name}={label}", "settings",
                            lambda env, n=name, v=value: env.reranker(**{n: v}), InvalidInputError, name))
    # selector knobs reach the Reranker inside its settings, built inline
    knob_bad: dict[str, dict[str, Any]] = {
        "window": {"-1": -1, "float": 0.5},
        "tau": {"nan": float("nan"), "str": "x"},
        "pairing": {"unknown": "x"},
        "order": {"unknown": "x"},
        "min_similarity": {"5": 5.0},
    }
    for name, values in knob_bad.items():
        for label, value in values.items():
            out.append(Case(f"settings/Reranker/{name}={label}", "settings",
                            lambda env, n=name, v=value: env.reranker(settings=SelectorSettings(**{n: v})),
                            InvalidInputError, name))
    out.append(Case("settings/Reranker/verifier=True-without-lm", "settings", lambda env: env.reranker(verifier=True),
                    InvalidInputError, "verifier"))
    out.append(Case("settings/Reranker/top_k-ok", "settings", lambda env: env.reranker(top_k=1).rerank(Q, PASSAGES),
                    None, check=lambda r, e: r.selected_ids == ["0"]))
    out.append(Case("settings/Ranking.top_k=-1", "settings", lambda env: env.rr.rerank(Q, PASSAGES).top_k(-1),
                    InvalidInputError, "k"))
    return out


def _elbow_cases() -> list[Case]:
    from meteora.selection.elbow import elbow_cutoff

    def n3_always_falls_back(tau: float) -> Callable[[Env], Any]:
        def action(env: Env) -> list[str]:
            rng = np.random.default_rng(int(tau * 10))
            rules = [elbow_cutoff(np.sort(rng.random(3))[::-1], tau).rule for _ in range(2000)]
            rules += [elbow_cutoff(np.array([1.0, 1.0 - d, 0.0]), tau).rule for d in np.linspace(0.01, 0.99, 99)]
            return rules

        return action

    out = [Case(f"elbow/N=3/tau={tau}", "elbow", n3_always_falls_back(tau), None,
                check=lambda rules, e: set(rules) == {"second-difference"}) for tau in (1.0, 1.5, 3.0)]
    bad = {"2-d": np.ones((2, 2)), "unsorted": np.array([0.1, 0.9, 0.5]), "nan": np.array([0.9, np.nan]),
           "str": ["a", "b"], "ragged": [[1.0], [1.0, 2.0]]}
    for label, value in bad.items():
        out.append(Case(f"elbow/scores={label}", "elbow", lambda env, v=value: elbow_cutoff(v), InvalidInputError, "score"))
    for label, tau in {"nan": float("nan"), "str": "1", "bool": True}.items():
        out.append(Case(f"elbow/tau={label}", "elbow", lambda env, t=tau: elbow_cutoff(np.array([0.9, 0.5, 0.1]), t),
                        InvalidInputError, "tau"))
    out.append(Case("elbow/ok-zscore", "elbow", lambda env: elbow_cutoff(np.array([0.9, 0.5, 0.45, 0.4])), None,
                    check=lambda info, e: (info.keep, info.rule) == (1, "zscore")))
    return out


class FakeGenerator:
    """A user-written generator: ``generate`` returns whatever ``fn(queries)`` returns."""

    def __init__(self, fn: Callable[[list[str]], Any]) -> None:
        self.fn = fn

    def generate(self, queries: Any, n: Any = None, *, batch_size: int = 8, include_query: bool = False,
                 max_new_tokens: int | None = None, seed: int | None = None, temperature: float = 0.7,
                 do_sample: bool = False) -> Any:
        return self.fn(list(queries))


def _rset(query: str, rationales: Any) -> Any:
    return SimpleNamespace(query=query, rationales=rationales, flags=[None] * 3)


def _generator_cases() -> list[Case]:
    Q2 = "Do statins lower cholesterol?"

    def run(fn: Callable[[list[str]], Any], queries: list[str] | None = None) -> Callable[[Env], Any]:
        qs = queries or [Q]
        return lambda env: env.reranker(generator=FakeGenerator(fn)).rerank_batch(qs, [PASSAGES] * len(qs))

    bad: dict[str, tuple[Callable[[list[str]], Any], list[str] | None, str]] = {
        "none": (lambda qs: None, None, "returned a NoneType"),
        "empty-list": (lambda qs: [], None, "0 rationale sets for 1"),
        "str": (lambda qs: "some rationale", None, "returned a str"),
        "dict": (lambda qs: {q: ["x y z"] for q in qs}, None, "returned a dict"),
        "int": (lambda qs: 5, None, "returned a int"),
        "list-of-none": (lambda qs: [None], None, "not a RationaleSet"),
        "list-of-str": (lambda qs: ["look for trials"], None, "not a RationaleSet"),
        "list-of-list": (lambda qs: [["look for trials"]], None, "not a RationaleSet"),
        "list-of-dict": (lambda qs: [{"query": Q, "rationales": ["x"]}], None, "not a RationaleSet"),
        "too-many": (lambda qs: [_rset(q, ["look for trials"]) for q in qs * 2], None, "2 rationale sets for 1"),
        "too-few": (lambda qs: [_rset(qs[0], ["look for trials"])], [Q, Q2], "1 rationale sets for 2"),
        "reordered": (lambda qs: [_rset(q, ["look for trials"]) for q in reversed(qs)], [Q, Q2], "another query"),
        "extra-first": (lambda qs: [_rset("other question?", ["x"]), *[_rset(q, ["y"]) for q in qs]][: len(qs)],
                        [Q, Q2], "another query"),
        "wrong-query": (lambda qs: [_rset("Is water wet?", ["look for trials"])], None, "another query"),
        "query-none": (lambda qs: [_rset(None, ["look for trials"])], None, "another query"),
        "rationales-str": (lambda qs: [_rset(Q, "text")], None, "single string"),
        "rationales-none": (lambda qs: [_rset(Q, None)], None, "rationales must be a list"),
        "rationales-int-items": (lambda qs: [_rset(Q, [5])], None, "rationales[0]"),
        "rationales-empty-str": (lambda qs: [_rset(Q, [""])], None, "rationales[0]"),
        "rationales-zwsp": (lambda qs: [_rset(Q, ["\u200b"])], None, "rationales[0]"),
        "rationales-dict": (lambda qs: [_rset(Q, {"a": "b"})], None, "rationales must be a list"),
    }
    out = [Case(f"generator/output/{label}", "generator", run(fn, qs), InvalidInputError, msg)
           for label, (fn, qs, msg) in bad.items()]

    def real_set(q: str, rats: Any) -> Any:
        from meteora.rationales.rationale_set import RationaleSet

        return RationaleSet(query=q, rationales=rats)

    out += [
        Case("generator/RationaleSet(rationales=str)", "generator", lambda env: real_set(Q, "text"), InvalidInputError,
             "list of str"),
        Case("generator/RationaleSet(rationales=[int])", "generator", lambda env: real_set(Q, [1, 2]), InvalidInputError,
             "only str"),
        Case("generator/RationaleSet(query=None)", "generator", lambda env: real_set(None, ["x"]), InvalidInputError,
             "query"),
        Case("generator/ok", "generator", run(lambda qs: [real_set(q, [Q]) for q in qs], [Q, Q2]), None,
             check=lambda r, e: r[0].rationales == [Q] and r[1].query == Q2 and r[0].ranked[0].id == "0"),
        Case("generator/ok-empty-rationales-fallback", "generator", run(lambda qs: [real_set(q, []) for q in qs]), None,
             check=lambda r, e: r[0].rationales == [Q]),
        Case("generator/ok-whitespace-variant-query", "generator", run(lambda qs: [real_set(" " + q + " ", [Q]) for q in qs]),
             None, check=lambda r, e: r[0].rationales == [Q]),
    ]
    gen_bad = {"typo": {"tempreature": 0.5}, "reserved-n": {"n": 3}, "reserved-batch": {"batch_size": 2},
               "temperature=-1": {"temperature": -1.0}, "max_new_tokens=0": {"max_new_tokens": 0},
               "seed=str": {"seed": "a"}, "do_sample=str": {"do_sample": "yes"}, "key-int": {5: 1}}
    for label, gen in gen_bad.items():
        out.append(Case(f"generator/generation/{label}", "generator",
                        lambda env, g=gen: env.reranker(generator=FakeGenerator(lambda qs: []), generation=g),
                        InvalidInputError, "generation"))
    verifiers: dict[str, Any] = {
        "returns-none": lambda q, p, a: None, "returns-str": lambda q, p, a: "yes",
        "returns-dict": lambda q, p, a: {"flagged": True}, "returns-bool": lambda q, p, a: False,
        "one-argument": lambda q: None, "four-arguments": lambda q, p, a, b: None,
    }
    for label, fn in verifiers.items():
        out.append(Case(f"generator/verifier/{label}", "generator",
                        lambda env, fn=fn: env.reranker(verifier=fn).rerank(Q, PASSAGES), InvalidInputError,
                        "verifier" if "argument" in label else "Verdict"))

    def keep_all(q: str, p: Any, accepted: Any) -> Any:
        from meteora.verdicts import Verdict

        flagged = p.id == "0"
        return Verdict(relevant=True, flagged=flagged, flag_types=["FACTUAL"] if flagged else [], reason="test",
                       confidence=1.0)

    out.append(Case("generator/verifier/ok-drops-flagged", "generator",
                    lambda env: env.reranker(verifier=keep_all).rerank(Q, PASSAGES), None,
                    check=lambda r, e: "0" not in r.selected_ids and [p.id for p, _ in r.verification.rejected] == ["0"]))
    out.append(Case("generator/generation/ok", "generator",
                    lambda env: env.reranker(generator=FakeGenerator(lambda qs: []), generation={"seed": 1}).generation,
                    None, check=lambda g, e: g == {"seed": 1}))
    return out


class FakeScorer:
    def __init__(self, fn: Callable[[list[str], list[list[str]]], Any]) -> None:
        self.fn = fn

    def evidence_logits(self, queries: list[str], passage_lists: list[list[str]]) -> Any:
        return self.fn(queries, passage_lists)


def _scorer_cases() -> list[Case]:
    same_doc = [{"id": "a", "doc_id": "d", "position": 0, "text": Q},
                {"id": "b", "doc_id": "d", "position": 1, "text": "Dogs and cats with renal failure were given fluids."}]

    def run(fn: Callable[..., Any]) -> Callable[[Env], Any]:
        # verifier=None: the scorer's own path (the default poison defence would take a
        # one-document pool whose chunk restates the question for an added document)
        return lambda env: env.reranker(scorer=FakeScorer(fn), verifier=None).rerank(Q, same_doc)

    bad = {"none": lambda q, p: None, "str": lambda q, p: "ab", "too-few": lambda q, p: [],
           "wrong-length": lambda q, p: [[1.0, 2.0, 3.0]], "nan": lambda q, p: [[float("nan"), 1.0]],
           "strings": lambda q, p: [["high", "low"]], "ragged": lambda q, p: [[[1.0], [1.0, 2.0]]],
           "complex": lambda q, p: [[1j, 2j]]}
    out = [Case(f"scorer/output/{label}", "scorer", run(fn), InvalidInputError, "logit")
           for label, fn in bad.items()]
    out.append(Case("scorer/ok", "scorer", run(lambda q, p: [[5.0, -5.0]]), None, check=top_is("a")))
    return out


def _retriever_cases() -> list[Case]:
    from meteora.retrievers.base import load_retriever
    from meteora.retrievers.bm25 import BM25Retriever
    from meteora.retrievers.hybrid import HybridRetriever

    out: list[Case] = []
    for label, k in BAD_K.items():
        out += [
            Case(f"retriever/bm25.search/k={label}", "retriever", lambda env, k=k: env.bm25.search(Q, k=k),
                 InvalidInputError, "k"),
            Case(f"retriever/dense.search/k={label}", "retriever", lambda env, k=k: env.dense.search(Q, k=k),
                 InvalidInputError, "k"),
            Case(f"retriever/Reranker.search/k={label}", "retriever", lambda env, k=k: env.rr.search(Q, env.bm25, k=k),
                 InvalidInputError, "k"),
        ]
    out += [
        Case("retriever/search-before-index", "retriever", lambda env: BM25Retriever().search(Q), InvalidInputError,
             "no index"),
        Case("retriever/index-none", "retriever", lambda env: BM25Retriever().index(None), InvalidInputError, "passages"),
        Case("retriever/index-str", "retriever", lambda env: BM25Retriever().index("a corpus"), InvalidInputError,
             "passages"),
        Case("retriever/index-empty", "retriever", lambda env: BM25Retriever().index([]), InvalidInputError, "passage"),
        Case("retriever/index-dup-ids", "retriever",
             lambda env: BM25Retriever().index([{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]), InvalidInputError,
             "duplicate"),
        Case("retriever/dense-index-invisible", "retriever",
             lambda env: _dense(env).index(["fever", "\u200b\u200b"]), InvalidInputError, "passage #1"),
        Case("retriever/Reranker.search-not-a-retriever", "retriever", lambda env: env.rr.search(Q, "bm25"),
             InvalidInputError, "retriever"),
        Case("retriever/Reranker.search-none", "retriever", lambda env: env.rr.search(Q, None), InvalidInputError,
             "retriever"),
        Case("retriever/search_batch-str", "retriever", lambda env: env.rr.search_batch(Q, env.bm25), InvalidInputError,
             "list"),
        Case("retriever/hybrid-empty", "retriever", lambda env: HybridRetriever([]), InvalidInputError, "retriever"),
        Case("retriever/hybrid-not-retrievers", "retriever", lambda env: HybridRetriever(["bm25"]), InvalidInputError,
             "retriever"),
        Case("retriever/load-missing", "retriever", lambda env: load_retriever(env.root / "no-such-index"), MeteoraError,
             "no-such-index"),
        Case("retriever/load-a-file", "retriever", lambda env: load_retriever(env.file("x.txt", "hello")), MeteoraError,
             "x.txt"),
        Case("retriever/load-empty-dir", "retriever", lambda env: load_retriever(env.fresh("empty")), MeteoraError, ""),
        Case("retriever/ok-bm25", "retriever", lambda env: env.bm25.search(Q, k=2), None,
             check=lambda r, e: r[0].id == "d0-0"),
        Case("retriever/ok-k-larger-than-corpus", "retriever", lambda env: env.bm25.search(Q, k=1000), None,
             check=lambda r, e: 0 < len(r) <= len(CORPUS)),
        Case("retriever/ok-dense", "retriever", lambda env: env.dense.search(Q, k=2), None,
             check=lambda r, e: r[0].id == "d0-0"),
        Case("retriever/ok-Reranker.search", "retriever", lambda env: env.reranker().search(Q, env.dense, k=5), None,
             check=lambda r, e: r.ranked[0].id.startswith("d0-")),  # the aspirin document first
        Case("retriever/ok-load-saved", "retriever", lambda env: load_retriever(env.saved_bm25).search(Q, k=1), None,
             check=lambda r, e: r[0].id == "d0-0"),
    ]
    return out


def _dense(env: Env) -> Any:
    from meteora.retrievers.dense import DenseRetriever

    return DenseRetriever(env.encoder)


def _corpus_cases() -> list[Case]:
    from meteora.corpus import read_passages

    def read(name: str, data: bytes | str) -> Callable[[Env], Any]:
        return lambda env: read_passages(env.file(name, data))

    good = json.dumps(GOOD_ROW).encode()
    bad_rows: dict[str, tuple[str, bytes | str, str]] = {
        "jsonl-non-utf8": ("c.jsonl", good + b"\n" + good.replace(b'"a"', b'"b"') + b"\n" + b'{"text": "caf\xe9"}\n',
                           "c.jsonl:3"),
        "jsonl-latin1-first-line": ("c.jsonl", b'{"text": "\xff\xfe"}\n', "c.jsonl:1"),
        "json-non-utf8": ("c.json", b'[\n  {"text": "ok"},\n  {"text": "caf\xe9"}\n]', "c.json:3"),
        "txt-non-utf8": ("c.txt", b"first line\nsecond \xe9 line\n", "c.txt:2"),
        "jsonl-invalid-json": ("c.jsonl", _jsonl(GOOD_ROW, "{not json"), "c.jsonl:2"),
        "jsonl-list-row": ("c.jsonl", _jsonl(GOOD_ROW, [1, 2]), "c.jsonl:2"),
        "jsonl-number-row": ("c.jsonl", _jsonl(GOOD_ROW, 5), "c.jsonl:2"),
        "jsonl-no-text": ("c.jsonl", _jsonl(GOOD_ROW, {"id": "b"}), "c.jsonl:2"),
        "jsonl-text-null": ("c.jsonl", _jsonl(GOOD_ROW, {"text": None}), "c.jsonl:2"),
        "jsonl-text-int": ("c.jsonl", _jsonl(GOOD_ROW, {"text": 5}), "c.jsonl:2"),
        "jsonl-text-list": ("c.jsonl", _jsonl(GOOD_ROW, {"text": ["a"]}), "c.jsonl:2"),
        "jsonl-text-empty": ("c.jsonl", _jsonl(GOOD_ROW, {"text": ""}), "c.jsonl:2"),
        "jsonl-text-zwsp": ("c.jsonl", _jsonl(GOOD_ROW, {"text": "\u200b"}), "c.jsonl:2"),
        "jsonl-bare-empty-string": ("c.jsonl", _jsonl(GOOD_ROW, '"   "'), "c.jsonl:2"),
        "jsonl-dup-ids": ("c.jsonl", _jsonl(GOOD_ROW, {"text": "x"}, {"id": "a", "text": "y"}), "c.jsonl:3"),
        "jsonl-id-null": ("c.jsonl", _jsonl(GOOD_ROW, {"id": None, "text": "x"}), "c.jsonl:2"),
        "jsonl-id-list": ("c.jsonl", _jsonl(GOOD_ROW, {"id": [1], "text": "x"}), "c.jsonl:2"),
        "jsonl-position-nan": ("c.jsonl", _jsonl(GOOD_ROW, '{"text": "x", "position": NaN}'), "c.jsonl:2"),
        "jsonl-position-float": ("c.jsonl", _jsonl(GOOD_ROW, {"text": "x", "position": 2.7}), "c.jsonl:2"),
        "jsonl-position-str": ("c.jsonl", _jsonl(GOOD_ROW, {"text": "x", "position": "2"}), "c.jsonl:2"),
        "jsonl-position-negative": ("c.jsonl", _jsonl(GOOD_ROW, {"text": "x", "position": -1}), "c.jsonl:2"),
        "jsonl-metadata-list": ("c.jsonl", _jsonl(GOOD_ROW, {"text": "x", "metadata": [1]}), "c.jsonl:2"),
        "json-not-a-list": ("c.json", json.dumps({"text": "x"}), "expected a JSON list"),
        "json-bad-item": ("c.json", json.dumps([GOOD_ROW, {"text": 5}]), "item #1"),
        "json-dup-ids": ("c.json", json.dumps([GOOD_ROW, GOOD_ROW]), "item #1"),
        "json-invalid": ("c.json", '[{"text": "x"},\n {oops}]', "c.json:2"),
        "empty-file": ("c.jsonl", "", "no passages"),
        "blank-lines-only": ("c.jsonl", "\n \n\t\n", "no passages"),
        "txt-invisible-only": ("c.txt", "\u200b\n\x00\n", "no passages"),
    }
    out = [Case(f"corpus/{label}", "corpus", read(name, data), InvalidInputError, contains)
           for label, (name, data, contains) in bad_rows.items()]
    out += [
        Case("corpus/missing", "corpus", lambda env: read_passages(env.root / "none.jsonl"), InvalidInputError,
             "does not exist"),
        Case("corpus/directory", "corpus", lambda env: read_passages(env.fresh("dir")), InvalidInputError,
             "does not exist"),
        Case("corpus/ok-bom", "corpus", read("c.jsonl", b"\xef\xbb\xbf" + good + b"\n"), None,
             check=lambda ps, e: [p.id for p in ps] == ["a"]),
        Case("corpus/ok-crlf", "corpus", read("c.jsonl", good + b"\r\n" + b'{"text": "b"}\r\n'), None,
             check=lambda ps, e: [p.id for p in ps] == ["a", "1"]),
        Case("corpus/ok-txt-crlf", "corpus", read("c.txt", b"one\r\n\r\ntwo\r\n"), None,
             check=lambda ps, e: [p.text for p in ps] == ["one", "two"]),
        Case("corpus/ok-line-separator-inside-text", "corpus", read("c.jsonl", _jsonl({"text": "a\u2028b"})), None,
             check=lambda ps, e: len(ps) == 1 and ps[0].text == "a\u2028b"),
        Case("corpus/ok-position-2.0", "corpus", read("c.jsonl", _jsonl({"text": "x", "position": 2.0})), None,
             check=lambda ps, e: ps[0].position == 2),
    ]
    return out


def _training_cases() -> list[Case]:
    from meteora.training.dpo_pairs import load_preference_pairs
    from meteora.training.jsonl import read_jsonl
    from meteora.training.rationale_sft import load_rationale_sft

    row = {"id": "1", "query": "Does aspirin reduce fever?",
           "rationales": ["Look for trials reporting fever outcomes in children.",
                          "Evidence should report the dose and the adverse events."]}
    good = json.dumps(row).encode()
    return [
        Case("training/sft-non-utf8-strict", "training",
             lambda env: load_rationale_sft(env.file("s.jsonl", good + b"\n" + b'{"query": "caf\xe9"}\n'), strict=True),
             TrainingDataError, "s.jsonl:2"),
        Case("training/sft-non-utf8-only", "training",
             lambda env: load_rationale_sft(env.file("s.jsonl", b'{"query": "\xff"}\n')), TrainingDataError,
             "s.jsonl:1"),
        Case("training/sft-non-utf8-skipped", "training",
             lambda env: load_rationale_sft(env.file("s.jsonl", good + b"\n\xff\xfe\n")), None,
             check=lambda ds, e: len(ds) == 1 and any(p.line == 2 for p in ds.rejected)),
        Case("training/read_jsonl-non-utf8", "training", lambda env: read_jsonl(env.file("r.jsonl", b'{"a": 1}\n\xe9\n')),
             TrainingDataError, "r.jsonl:2"),
        Case("training/pairs-non-utf8", "training",
             lambda env: load_preference_pairs(env.file("p.jsonl", b'{"prompt": "\xe9"}\n')), TrainingDataError,
             "p.jsonl:1"),
    ]


def _hub_cases() -> list[Case]:
    from meteora.embeddings.encoder import Encoder

    def gen(name: str, **kw: Any) -> Callable[[], Any]:
        def load() -> Any:
            from meteora.rationales.generator import RationaleGenerator

            return RationaleGenerator.from_pretrained(name, backend="transformers", cache=None, **kw)

        return load

    def offline(fn: Callable[[], Any]) -> Callable[[Env], Any]:
        def action(env: Env) -> Any:
            with env_vars(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE=None):
                return fast(10, fn)

        return action

    def unreachable(fn: Callable[[], Any]) -> Callable[[Env], Any]:
        def action(env: Env) -> Any:
            with env_vars(HF_HUB_OFFLINE=None, TRANSFORMERS_OFFLINE=None, HF_ENDPOINT="http://127.0.0.1:9",
                          METEORA_HUB_TIMEOUT="2"):
                return fast(10, fn)

        return action

    missing = "nosuch-org-meteora/nosuch-model"
    return [
        Case("hub/encoder-offline", "hub", offline(lambda: Encoder(missing)), ModelNotFoundError, "HF_HUB_OFFLINE"),
        Case("hub/encoder-transformers-offline-var", "hub",
             lambda env: _with(dict(HF_HUB_OFFLINE=None, TRANSFORMERS_OFFLINE="1"), lambda: fast(10, lambda: Encoder(missing))),
             ModelNotFoundError, "switched off"),
        Case("hub/encoder-unreachable", "hub", unreachable(lambda: Encoder(missing)), ModelNotFoundError,
             "could not reach"),
        Case("hub/generator-offline", "hub", offline(gen(missing)), ModelNotFoundError, "switched off"),
        Case("hub/generator-unreachable", "hub", unreachable(gen(missing)), ModelNotFoundError, "could not reach"),
        Case("hub/adapter-offline", "hub", lambda env: _with(dict(HF_HUB_OFFLINE="1"),
                                                              lambda: fast(10, gen(str(env.llama_dir), adapter=missing))),
             ModelNotFoundError, missing),
        Case("hub/reranker-generator-offline", "hub",
             lambda env: _with(dict(HF_HUB_OFFLINE="1"), lambda: fast(10, lambda: env.reranker(generator=missing))),
             ModelNotFoundError, "switched off"),
        Case("hub/invalid-id", "hub", offline(lambda: Encoder("not a valid/model id!")), ModelNotFoundError,
             "not a valid/model id"),
        Case("hub/missing-local-folder", "hub", offline(lambda: Encoder("./no/such/folder")), ModelNotFoundError,
             "does not exist"),
        Case("hub/ok-local-folder", "hub", lambda env: Encoder(str(env.encoder_dir), device="cpu").dim, None,
             check=lambda d, e: d == e.encoder.dim),
    ]


def _with(values: dict[str, str | None], fn: Callable[[], Any]) -> Any:
    with env_vars(**values):
        return fn()


def _cli_cases() -> list[Case]:
    def rerank(*extra: str, passages: Callable[[Env], Path] | None = None, query: str = Q) -> Callable[[Env], Any]:
        def action(env: Env) -> CliResult:
            pfile = passages(env) if passages else env.file("p.txt", "\n".join(PASSAGES) + "\n")
            return cli("rerank", "--query", query, "--passages", str(pfile), "--no-lm", "--scorer", "none",
                       "--embedding-model", str(env.encoder_dir), *extra)

        return action

    def pfile(name: str, data: bytes | str) -> Callable[[Env], Path]:
        return lambda env: env.file(name, data)

    good = json.dumps(GOOD_ROW).encode()
    out = [
        Case("cli/rerank/non-utf8-jsonl", "cli", rerank(passages=pfile("p.jsonl", good + b"\n\xe9\n")), CliError,
             "p.jsonl:2"),
        Case("cli/rerank/non-utf8-txt", "cli", rerank(passages=pfile("p.txt", b"ok\nnot \xff ok\n")), CliError, "p.txt:2"),
        Case("cli/rerank/non-utf8-json", "cli", rerank(passages=pfile("p.json", b'["ok",\n "\xe9"]')), CliError,
             "p.json:2"),
        Case("cli/rerank/dup-ids", "cli", rerank(passages=pfile("p.jsonl", _jsonl(GOOD_ROW, GOOD_ROW))), CliError,
             "p.jsonl:2"),
        Case("cli/rerank/empty-text-row", "cli", rerank(passages=pfile("p.jsonl", _jsonl(GOOD_ROW, {"text": " "}))),
             CliError, "p.jsonl:2"),
        Case("cli/rerank/position-2.7", "cli",
             rerank(passages=pfile("p.jsonl", _jsonl({"text": "x", "position": 2.7}))), CliError, "p.jsonl:1"),
        Case("cli/rerank/metadata-str", "cli",
             rerank(passages=pfile("p.jsonl", _jsonl({"text": "x", "metadata": "m"}))), CliError, "p.jsonl:1"),
        Case("cli/rerank/missing-file", "cli", rerank(passages=lambda env: env.root / "nope.jsonl"), CliError,
             "does not exist"),
        Case("cli/rerank/empty-query", "cli", rerank(query=""), CliError, "query is empty"),
        Case("cli/rerank/invisible-query", "cli", rerank(query="\u200b\u200b"), CliError, "invisible"),
        Case("cli/rerank/top-k=0", "cli", rerank("--top-k", "0"), CliError, "top-k"),
        Case("cli/rerank/window=-1", "cli", rerank("--window", "-1"), CliError, "window"),
        Case("cli/rerank/tau=nan", "cli", rerank("--tau", "nan"), CliError, "tau"),
        Case("cli/rerank/embedding-model-missing-hub-id", "cli",
             lambda env: _with(dict(HF_HUB_OFFLINE="1"),
                               lambda: cli("rerank", "--query", Q, "--passages", str(env.file("p.txt", "a\nb\n")),
                                           "--no-lm", "--scorer", "none", "--embedding-model", "nosuch-org/nosuch")),
             CliError, "switched off"),
        Case("cli/rerank/ok-json", "cli", rerank("--json"), None,
             check=lambda r, e: r.rc == 0 and json.loads(r.out)["ranked"][0]["id"] == "0"),
        Case("cli/index/non-utf8", "cli",
             lambda env: cli("index", str(env.file("c.jsonl", good + b"\n\xe9\n")), "--out", str(env.fresh() / "ix"),
                             "--kind", "bm25"), CliError, "c.jsonl:2"),
        Case("cli/index/dup-ids", "cli",
             lambda env: cli("index", str(env.file("c.jsonl", _jsonl(GOOD_ROW, GOOD_ROW))), "--out",
                             str(env.fresh() / "ix"), "--kind", "bm25"), CliError, "c.jsonl:2"),
        Case("cli/index/text-int", "cli",
             lambda env: cli("index", str(env.file("c.jsonl", _jsonl(GOOD_ROW, {"text": 3}))), "--out",
                             str(env.fresh() / "ix"), "--kind", "bm25"), CliError, "c.jsonl:2"),
        Case("cli/index/ok-then-search", "cli", _index_then_search, None,
             check=lambda r, e: r.rc == 0 and json.loads(r.out)[0]["id"] == "d0-0"),
        Case("cli/search/missing-index", "cli", lambda env: cli("search", str(env.root / "no-index"), Q), CliError,
             "no-index"),
        Case("cli/search/k=0", "cli", lambda env: cli("search", str(env.saved_bm25), Q, "-k", "0"), CliError, "-k"),
        Case("cli/train-sft/non-utf8", "cli",
             lambda env: cli("train", "sft", "--base", str(env.llama_dir), "--data",
                             str(env.file("s.jsonl", b'{"query": "\xe9"}\n')), "--out", str(env.fresh() / "run"),
                             "--no-4bit", "--max-steps", "1"), CliError, "s.jsonl:1"),
        Case("cli/subprocess/rerank-non-utf8", "cli-subprocess",
             lambda env: cli_subprocess("rerank", "--query", Q, "--passages",
                                        str(env.file("p.jsonl", good + b"\n\xe9\n")), "--no-lm", "--scorer", "none",
                                        "--embedding-model", str(env.encoder_dir)), CliError, "p.jsonl:2"),
        Case("cli/subprocess/index-dup-ids", "cli-subprocess",
             lambda env: cli_subprocess("index", str(env.file("c.jsonl", _jsonl(GOOD_ROW, GOOD_ROW))), "--out",
                                        str(env.fresh() / "ix"), "--kind", "bm25"), CliError, "c.jsonl:2"),
        Case("cli/subprocess/search-ok", "cli-subprocess",
             lambda env: cli_subprocess("search", str(env.saved_bm25), Q, "-k", "1", "--json"), None,
             check=lambda r, e: r.rc == 0 and json.loads(r.out)[0]["id"] == "d0-0"),
    ]
    return out


def _index_then_search(env: Env) -> CliResult:
    out = env.fresh() / "ix"
    first = cli("index", str(env.file("c.jsonl", _jsonl(*CORPUS))), "--out", str(out), "--kind", "bm25")
    if first.rc != 0:
        return first
    return cli("search", str(out), Q, "-k", "2", "--json")


# --------------------------------------------------------------------------- the lead's area
def _manifests(index: Path) -> list[Path]:
    return [p for p in index.rglob("*.json") if "files" in json.loads(p.read_text(encoding="utf-8") or "{}")]


def _tamper(change: Callable[[dict[str, Any]], None], kind: str = "bm25") -> Callable[[Env], Any]:
    """Save a BM25 (or dense) index, edit its manifest(s) with ``change``, then load it."""

    def action(env: Env) -> Any:
        from meteora.retrievers.base import load_retriever

        out = env.fresh("ix") / "index"
        getattr(env, kind).save(out)
        manifests = _manifests(out)
        if not manifests:
            raise RuntimeError("no manifest with a 'files' table found in the saved index")
        for m in manifests:
            data = json.loads(m.read_text(encoding="utf-8"))
            change(data)
            m.write_text(json.dumps(data), encoding="utf-8")
        return load_retriever(out).search(Q, k=1)

    return action


def _files_entry(name: str) -> Callable[[dict[str, Any]], None]:
    def change(m: dict[str, Any]) -> None:
        files = m["files"]
        first = next(iter(files))
        files[name] = files.pop(first)

    return change


def _set_count(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(m: dict[str, Any]) -> None:
        m.setdefault("counts", {})[key] = value

    return change


def _user_folder(env: Env) -> Path:
    folder = env.fresh("user")
    (folder / "thesis.docx").write_bytes(b"years of work")
    (folder / "notes").mkdir()
    (folder / "notes" / "a.txt").write_text("keep me", encoding="utf-8")
    return folder


def _user_file(env: Env) -> Path:
    return env.file("results.csv", "a,b\n1,2\n")


def _foreign_db(env: Env) -> Path:
    path = env.fresh("db") / "app.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE patients (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO patients (name) VALUES ('x')")
    conn.commit()
    conn.close()
    return path


def _rationale_cache_roundtrip(env: Env, path: Path) -> Any:
    from meteora.rationales.cache import RationaleCache

    cache = RationaleCache(path)
    try:
        cache.put({"model": "m"}, Q, {"rationales": ["x"]})
        return cache.get({"model": "m"}, Q)
    finally:
        cache.close()


def _index_cache_cases() -> list[Case]:
    g = "index/cache"
    return [
        Case("index/save-into-folder-with-user-files", g, guarded(_user_folder, lambda env, p: env.bm25.save(p)),
             MeteoraError, "not a meteora index"),
        Case("index/save-onto-regular-file", g, guarded(_user_file, lambda env, p: env.bm25.save(p)), MeteoraError,
             "file"),
        Case("index/cli-index-out-user-folder", g,
             guarded(_user_folder, lambda env, p: cli("index", str(env.file("c.jsonl", _jsonl(*CORPUS))), "--out", str(p),
                                                      "--kind", "bm25")), CliError, "not a meteora index"),
        Case("index/save-below-a-file", g, guarded(_user_file, lambda env, p: env.bm25.save(p / "sub")), MeteoraError,
             "results.csv"),
        Case("index/bench-out-below-a-file", g,
             guarded(_user_file, lambda env, p: fast_cli(10, "bench", "pubmedqa", "--out", str(p / "sub"), "--methods",
                                                          "bm25", "--limit", "1")), CliError, "results.csv"),
        Case("index/bench-out-onto-user-file", g,
             guarded(_user_file, lambda env, p: fast_cli(10, "bench", "pubmedqa", "--out", str(p), "--methods", "bm25",
                                                          "--limit", "1")), CliError, "results.csv"),
        Case("index/manifest-files-parent-path", g, _tamper(_files_entry("../../etc/hostname")), IndexFormatError,
             "hostname"),
        Case("index/manifest-files-absolute", g, _tamper(_files_entry("/etc/hostname")), IndexFormatError, "hostname"),
        Case("index/manifest-files-empty", g, _tamper(lambda m: m.__setitem__("files", {})), IndexFormatError, "files"),
        Case("index/manifest-files-list", g, _tamper(lambda m: m.__setitem__("files", ["a"])), IndexFormatError, "files"),
        Case("index/manifest-dim-str", g, _tamper(_set_count("dim", "abc"), "dense"), IndexFormatError, "dim"),
        Case("index/manifest-passages-negative", g, _tamper(_set_count("passages", -3)), IndexFormatError, "passages"),
        Case("index/manifest-dim-negative", g, _tamper(_set_count("dim", -4), "dense"), IndexFormatError, "dim"),
        Case("index/manifest-kind-unknown", g, _tamper(lambda m: m.__setitem__("kind", "pickle")), IndexFormatError,
             "kind"),
        Case("index/ok-resave-same-folder", g, lambda env: (env.bm25.save(env.saved_bm25), _load_search(env))[1], None,
             check=lambda r, e: r[0].id == "d0-0"),
        Case("cache/rationale-cache-foreign-sqlite", g, guarded(_foreign_db, _rationale_cache_roundtrip), MeteoraError,
             "app.sqlite"),
        Case("cache/rationale-cache-below-a-file", g,
             guarded(_user_file, lambda env, p: _rationale_cache_roundtrip(env, p / "r.sqlite")), MeteoraError,
             "results.csv"),
        Case("cache/rationale-cache-not-sqlite", g,
             guarded(_user_file, lambda env, p: _rationale_cache_roundtrip(env, p)), MeteoraError, "results.csv"),
        Case("cache/embedding-cache-foreign-sqlite", g,
             guarded(_foreign_db, lambda env, p: _encoder_with_cache(env, p)), MeteoraError, "app.sqlite"),
        Case("cache/embedding-cache-path-is-user-file", g,
             guarded(_user_file, lambda env, p: _encoder_with_cache(env, p)), MeteoraError, "results.csv"),
        Case("cache/embedding-cache-below-a-file", g,
             guarded(_user_file, lambda env, p: _encoder_with_cache(env, p / "emb")), MeteoraError, "results.csv"),
        Case("cache/embedding-cache-sqlite-name-user-file", g,
             guarded(lambda env: env.file("mine.sqlite", "not a database, my notes"),
                     lambda env, p: _encoder_with_cache(env, p)), MeteoraError, "mine.sqlite"),
        Case("cache/rationale-cache-sqlite-name-user-file", g,
             guarded(lambda env: env.file("mine.sqlite", "not a database, my notes"), _rationale_cache_roundtrip),
             MeteoraError, "mine.sqlite"),
        Case("cache/ok-rationale-cache-roundtrip", g,
             lambda env: _rationale_cache_roundtrip(env, env.fresh("c") / "r.sqlite"), None,
             check=lambda v, e: v == {"rationales": ["x"]}),
    ]


def _load_search(env: Env) -> Any:
    from meteora.retrievers.base import load_retriever

    return load_retriever(env.saved_bm25).search(Q, k=1)


def _encoder_with_cache(env: Env, path: Path) -> Any:
    from meteora.embeddings.encoder import Encoder

    enc = Encoder(str(env.encoder_dir), device="cpu", cache=path)
    return enc.encode(["fever"])


# --------------------------------------------------------------------------- the matrix
def build_cases() -> list[Case]:
    """Every case of the matrix, ids unique."""
    cases = [
        *_passage_dict_cases(), *_passage_ok_cases(), *_query_cases(), *_batch_cases(), *_embedding_cases(),
        *_settings_cases(), *_elbow_cases(), *_generator_cases(), *_scorer_cases(), *_retriever_cases(),
        *_corpus_cases(), *_training_cases(), *_hub_cases(), *_cli_cases(), *_index_cache_cases(),
    ]
    from robustness_cases_more import more_cases  # beside this module; it imports this one

    cases += more_cases()
    seen: set[str] = set()
    for c in cases:
        if c.id in seen:
            raise ValueError(f"duplicate case id {c.id}")
        seen.add(c.id)
    return cases


if __name__ == "__main__":  # pragma: no cover - quick look: python benchmarks/robustness_cases.py
    print(len(build_cases()), "cases;", math.fsum(1 for _ in build_cases()))

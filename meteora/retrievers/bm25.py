"""BM25 lexical retrieval on ``bm25s``, with ``rank-bm25`` as a reference backend.

Text is tokenised the ``bm25s`` way: lower-cased, split on the regular expression
``(?u)\\b\\w\\w+\\b`` (words of two or more letters/digits, any script), English stopwords
removed by default, no stemming. The same tokens feed every backend.

Backends:

* ``"auto"`` (default): ``bm25s`` with its ``numba`` engine when numba is importable,
  else its ``numpy`` engine. The first numba search in a process compiles the scorer
  (a few seconds); later searches are fast.
* ``"numba"`` / ``"numpy"``: force one ``bm25s`` engine.
* ``"rank_bm25"``: the ``rank-bm25`` package, kept as the reference implementation
  (slow: it scores every passage in Python). It implements Okapi BM25 (ATIRE term
  frequency ``tf·(k1+1)/(tf+k1·(1-b+b·dl/avgdl))`` with Robertson idf
  ``log((N-df+0.5)/(df+0.5))`` floored at ``0.25 × mean idf``), BM25L and BM25+: methods
  ``"bm25l"`` and ``"bm25+"`` map to those, every other method to Okapi.
  ``bm25s`` with ``method="atire", idf_method="robertson"`` gives the same scores as
  rank-bm25's Okapi whenever no query term occurs in more than half of the passages
  (where Okapi's idf floor and bm25s's idf clamp at 0 differ); ``method="bm25+"`` matches
  ``BM25Plus`` everywhere. BM25L follows each library's own formula and differs.

Scores are raw BM25 scores (higher is better, not bounded). A passage is returned only
when it scores above a passage that shares no term with the query (with the default
Lucene variant: a score above zero; with ``rank_bm25``: when it contains a query term),
so a ranking can hold fewer than ``k`` hits, and a query made only of stopwords or
unknown words gives an empty ranking.

Example:
    >>> r = BM25Retriever(backend="numpy").index(
    ...     ["Aspirin reduces fever in adults.", "Statins lower LDL cholesterol.", "Fever in children."])
    >>> r.search("fever in adults", k=2).ids
    ['0', '2']
    >>> len(r.search("the of and", k=2))
    0
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from meteora.console import progress_enabled
from meteora.errors import IndexFormatError, InvalidInputError, require
from meteora.retrievers.base import Retriever, importable, topk_indices
from meteora.retrievers.index_files import manifest_int, read_manifest, write_manifest
from meteora.retrievers.passage_store import PassageStore, open_passages, save_passages
from meteora.retrievers.storage import load_index
from meteora.types import Hit, PassageLike, Ranking

__all__ = ["BM25Retriever", "TOKEN_PATTERN"]

logger = logging.getLogger(__name__)

#: the tokeniser's word pattern (bm25s's default, the same as scikit-learn's)
TOKEN_PATTERN = r"(?u)\b\w\w+\b"

_METHODS = ("lucene", "robertson", "atire", "bm25l", "bm25+")
_BACKENDS = ("auto", "numba", "numpy", "rank_bm25")
_BM25S_DIR = "bm25s"


def _numba_available() -> bool:
    return importable("numba")


def _check_float(name: str, value: Any, lo: float, hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise InvalidInputError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not np.isfinite(v) or v < lo or (hi is not None and v > hi):
        rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise InvalidInputError(f"{name} must be in {rng}, got {value!r}")
    return v


class BM25Retriever(Retriever):
    """Okapi-family BM25 retrieval (bm25s by default; rank-bm25 as reference).

    Args:
        k1: term-frequency saturation (``>= 0``).
        b: length normalisation (``0..1``).
        method: ``"lucene"`` (default), ``"robertson"``, ``"atire"``, ``"bm25l"`` or
            ``"bm25+"`` — the bm25s scoring variant (see the module docstring for the
            rank-bm25 mapping).
        stopwords: ``"en"`` (default), another bm25s language code (``"de"``, ``"fr"``,
            ...), a list of words, or ``None`` for none.
        backend: ``"auto"``, ``"numba"``, ``"numpy"`` or ``"rank_bm25"``.
        idf_method: bm25s idf variant (``None``: same as ``method``).
        delta: the BM25L / BM25+ lower bound.

    Example:
        >>> r = BM25Retriever(backend="numpy").index([{"id": "a", "text": "insulin and glucose"}])
        >>> r.search(["glucose"], k=5)[0].ids
        ['a']
    """

    kind = "bm25"

    def __init__(
        self,
        k1: float = 1.5,
        b: float = 0.75,
        method: str = "lucene",
        stopwords: str | Sequence[str] | None = "en",
        backend: str = "auto",
        *,
        idf_method: str | None = None,
        delta: float = 0.5,
    ) -> None:
        super().__init__()
        self.k1 = _check_float("k1", k1, 0.0)
        self.b = _check_float("b", b, 0.0, 1.0)
        self.delta = _check_float("delta", delta, 0.0)
        if method not in _METHODS:
            raise InvalidInputError(f"method must be one of {_METHODS}, got {method!r}")
        if idf_method is not None and idf_method not in _METHODS:
            raise InvalidInputError(
                f"idf_method must be None or one of {_METHODS}, got {idf_method!r}"
            )
        if backend not in _BACKENDS:
            raise InvalidInputError(f"backend must be one of {_BACKENDS}, got {backend!r}")
        self.method = method
        self.idf_method = idf_method
        self.stopwords = self._check_stopwords(stopwords)
        self.backend = backend
        self.engine = self._resolve_backend(backend)
        self._bm25: Any = None  # bm25s.BM25
        self._ref: Any = None  # rank_bm25 object
        self._vocab: dict[str, int] = {}
        self._empty_vocab = False

    # -- configuration ---------------------------------------------------------------
    @staticmethod
    def _check_stopwords(stopwords: Any) -> str | list[str] | None:
        if stopwords is None or stopwords is False:
            return None
        if isinstance(stopwords, str):
            import bm25s

            try:
                bm25s.tokenize(["probe"], stopwords=stopwords, show_progress=False)
            except ValueError as exc:
                raise InvalidInputError(
                    f"unknown stopwords language {stopwords!r}; use 'en' (default), another bm25s "
                    "language code, a list of words, or None"
                ) from exc
            return stopwords
        if isinstance(stopwords, Iterable):
            words = list(stopwords)
            if not all(isinstance(w, str) for w in words):
                raise InvalidInputError("stopwords must be a language code, a list of str, or None")
            return [w.lower() for w in words]
        raise InvalidInputError(
            f"stopwords must be a language code, a list of str, or None; got {stopwords!r}"
        )

    @staticmethod
    def _resolve_backend(backend: str) -> str:
        """The engine actually used: ``"numba"``, ``"numpy"`` or ``"rank_bm25"``."""
        if backend == "auto":
            return "numba" if _numba_available() else "numpy"
        if backend == "numba":
            require("numba", "numba", "the numba BM25 backend")
        if backend == "rank_bm25":
            require("rank_bm25", "bm25-reference", "the rank-bm25 reference backend")
        return backend

    def _stopword_arg(self) -> Any:
        return self.stopwords if self.stopwords is not None else []

    def _show_progress(self, n: int) -> bool:
        return n > 10_000 and progress_enabled()

    def tokenize(self, texts: Sequence[str]) -> list[list[str]]:
        """Tokenise texts exactly as the index does (lower-case, word pattern, stopwords).

        Example:
            >>> BM25Retriever(backend="numpy").tokenize(["The fever of a child"])
            [['fever', 'child']]
        """
        import bm25s

        if isinstance(texts, str):
            raise InvalidInputError(
                "tokenize() takes a list of texts; wrap a single text in a list"
            )
        return bm25s.tokenize(
            list(texts),
            lower=True,
            token_pattern=TOKEN_PATTERN,
            stopwords=self._stopword_arg(),
            return_ids=False,
            show_progress=self._show_progress(len(texts)),
        )

    # -- indexing ----------------------------------------------------------------------
    def index(self, passages: Iterable[PassageLike]) -> BM25Retriever:
        """Index ``passages`` (replacing any previous index); returns ``self``.

        Raises:
            InvalidInputError: empty corpus, duplicate ids, empty texts.
        """
        ps = self._set_passages(passages)
        texts = [p.text for p in ps]
        self._bm25 = self._ref = None
        self._vocab = {}
        if self.engine == "rank_bm25":
            tokens = self.tokenize(texts)
            self._empty_vocab = not any(tokens)
            if not self._empty_vocab:
                self._ref = self._build_reference(tokens)
                self._vocab = {t: i for i, t in enumerate(self._ref.idf)}
        else:
            import bm25s

            show = self._show_progress(len(texts))
            tok = bm25s.tokenize(
                texts,
                lower=True,
                token_pattern=TOKEN_PATTERN,
                stopwords=self._stopword_arg(),
                show_progress=show,
            )
            self._empty_vocab = len(tok.vocab) == 0
            if not self._empty_vocab:
                model = self._bm25s_model()
                with np.errstate(all="ignore"):
                    model.index(tok, create_empty_token=False, show_progress=show)
                self._bm25 = model
                self._vocab = model.vocab_dict
        if self._empty_vocab:
            logger.warning(
                "none of the %d passages has an indexable word (all stopwords or single letters); "
                "every search will return an empty ranking",
                len(ps),
            )
        logger.debug(
            "indexed %d passages (%d terms) with %s", len(ps), len(self._vocab), self.engine
        )
        return self

    def _bm25s_model(self) -> Any:
        """An empty ``bm25s.BM25`` with this retriever's parameters."""
        import bm25s

        return bm25s.BM25(
            k1=self.k1, b=self.b, delta=self.delta, method=self.method, idf_method=self.idf_method, backend=self.engine
        )

    def _build_reference(self, tokens: list[list[str]]) -> Any:
        import rank_bm25

        if self.method == "bm25l":
            return rank_bm25.BM25L(tokens, k1=self.k1, b=self.b, delta=self.delta)
        if self.method == "bm25+":
            return rank_bm25.BM25Plus(tokens, k1=self.k1, b=self.b, delta=self.delta)
        return rank_bm25.BM25Okapi(tokens, k1=self.k1, b=self.b)

    @property
    def vocabulary_size(self) -> int:
        """Number of distinct indexed terms."""
        return len(self._vocab)

    # -- scoring -----------------------------------------------------------------------
    def get_scores(self, query: str) -> np.ndarray:
        """BM25 score of every passage for ``query``, in corpus order (``(N,)`` array).

        Unknown words and stopwords contribute nothing; a query with no known word
        scores 0 everywhere.

        Example:
            >>> r = BM25Retriever(backend="numpy").index(["fever", "cough"])
            >>> (r.get_scores("fever") > 0).tolist()
            [True, False]
        """
        from meteora.types import check_query

        check_query(query)
        self._check_indexed()
        tokens = [t for t in self.tokenize([query])[0] if t in self._vocab]
        return self._scores_for_tokens(tokens)

    def _scores_for_tokens(self, tokens: list[str]) -> np.ndarray:
        n = len(self)
        if not tokens or self._empty_vocab:
            return np.zeros(n, dtype=np.float32)
        if self._ref is not None:
            return np.asarray(self._ref.get_scores(tokens), dtype=np.float64)
        return np.asarray(self._bm25.get_scores(tokens), dtype=np.float32)

    def _search_batch(self, queries: list[str], k: int) -> list[Ranking]:
        tokenized = self.tokenize(queries)
        known = [[t for t in toks if t in self._vocab] for toks in tokenized]
        out: list[Ranking | None] = [None] * len(queries)
        for i, toks in enumerate(known):
            if not toks:
                out[i] = Ranking([], query=queries[i])
        active = [i for i in range(len(queries)) if out[i] is None]
        if active and self._ref is not None:
            for i in active:
                out[i] = self._search_reference(queries[i], known[i], k)
        elif active:
            n = len(self)
            kk = min(k + 1, n)  # one extra hit reveals a tie across the cut-off
            res = self._bm25.retrieve(
                [known[i] for i in active], k=kk, show_progress=False, n_threads=0, sorted=True
            )
            docs = np.asarray(res.documents)
            scores = np.asarray(res.scores)
            for j, i in enumerate(active):
                d, s = docs[j], scores[j]
                floor = self._no_match_score(known[i])
                if kk > k and s[k - 1] > floor and s[k - 1] == s[k]:
                    full = self._scores_for_tokens(known[i])
                    idx = topk_indices(full, k)
                    d, s = idx, full[idx]
                else:
                    d, s = d[:k], s[:k]
                    order = np.lexsort((d, -s))
                    d, s = d[order], s[order]
                out[i] = self._ranking(queries[i], d, s, s > floor)
        return [r for r in out if r is not None]

    def _no_match_score(self, tokens: list[str]) -> np.float32:
        """Threshold a passage must beat: the score of one holding none of ``tokens``.

        0 except for BM25L / BM25+, whose non-occurrence term lifts every passage.
        """
        extra = getattr(self._bm25, "nonoccurrence_array", None)
        if extra is None:
            return np.float32(0.0)
        ids = np.asarray(self._bm25.get_tokens_ids(tokens), dtype=np.int64)
        floor = float(np.asarray(extra, dtype=np.float64)[ids].sum())
        # float32 sums of the floor differ by a few ulps between engines: keep a margin
        return np.float32(floor + 1e-5 * max(1.0, abs(floor)))

    def _search_reference(self, query: str, tokens: list[str], k: int) -> Ranking:
        scores = self._scores_for_tokens(tokens)
        okapi = type(self._ref).__name__ == "BM25Okapi"
        if okapi and all(self._ref.idf.get(t, 0.0) != 0.0 for t in tokens):
            # Okapi gives 0 exactly to passages without a query term, and (every idf being
            # non-zero) a non-zero score to the others: no second pass over the corpus
            matched = scores != 0
        else:
            qset = set(tokens)
            matched = np.fromiter(
                (not qset.isdisjoint(d) for d in self._ref.doc_freqs), dtype=bool, count=len(scores)
            )
        masked = np.where(matched, scores, -np.inf)
        idx = topk_indices(masked, min(k, int(matched.sum())))
        return self._ranking(query, idx, scores[idx], np.ones(len(idx), dtype=bool))

    def _ranking(
        self, query: str, idx: np.ndarray, scores: np.ndarray, keep: np.ndarray
    ) -> Ranking:
        rows = [i for i, ok in zip(idx.tolist(), keep.tolist(), strict=True) if ok]
        kept = [float(s) for s, ok in zip(scores.tolist(), keep.tolist(), strict=True) if ok]
        passages = self._store.take(rows)
        return Ranking([Hit(p, s, r + 1) for r, (p, s) in enumerate(zip(passages, kept, strict=True))], query=query)

    # -- persistence -------------------------------------------------------------------
    def _parameters(self) -> dict[str, Any]:
        return {
            "k1": self.k1,
            "b": self.b,
            "method": self.method,
            "idf_method": self.idf_method,
            "delta": self.delta,
            "stopwords": self.stopwords,
            "backend": self.backend,
            "engine": self.engine,
            "tokenizer": {"lower": True, "token_pattern": TOKEN_PATTERN, "stemmer": None},
        }

    def _write_index(self, directory: Path) -> None:
        """Layout of a version folder: ``manifest.json``, ``passages.jsonl`` and, for the
        bm25s engines, ``bm25s/`` (bm25s's own files: ``.npy`` score arrays saved with
        ``allow_pickle=False`` plus JSON vocabulary and parameters). rank-bm25 has no safe
        serialisation, so its index is rebuilt from the passages on load.

        Example:
            >>> import tempfile
            >>> d = tempfile.mkdtemp() + "/bm25"
            >>> r = BM25Retriever(backend="numpy").index(["fever", "cough"])
            >>> BM25Retriever.load(r.save(d)).search("cough").ids
            ['1']
        """
        save_passages(directory, self._store)
        if self._bm25 is not None:
            self._bm25.save(str(directory / _BM25S_DIR), show_progress=False, allow_pickle=False)
        self._write_manifest(directory, len(self), len(self._vocab))

    def _write_manifest(self, directory: Path, count: int, vocabulary: int) -> None:
        """The manifest of a version folder holding a BM25 index's files (also written
        by :mod:`meteora.retrievers.streaming`)."""
        write_manifest(
            directory, self.kind, counts={"passages": count, "vocabulary": vocabulary}, parameters=self._parameters()
        )

    @classmethod
    def load(
        cls, directory: str | os.PathLike[str], *, backend: str | None = None
    ) -> BM25Retriever:
        """Load an index written by :meth:`save`.

        Args:
            directory: the saved folder.
            backend: override the saved backend (``None`` keeps it). Switching between
                rank-bm25 and bm25s rebuilds the index from the saved passages.

        Raises:
            IndexFormatError: the folder is not a BM25 index, or is corrupt/incomplete.
        """
        return load_index(directory, lambda version: cls._read_index(version, backend=backend))

    @classmethod
    def _read_index(cls, directory: Path, *, backend: str | None = None) -> BM25Retriever:
        manifest = read_manifest(directory, cls.kind)
        params = manifest["parameters"]
        try:
            self = cls(
                k1=params["k1"],
                b=params["b"],
                method=params["method"],
                stopwords=params["stopwords"],
                backend=backend if backend is not None else params["backend"],
                idf_method=params.get("idf_method"),
                delta=params.get("delta", 0.5),
            )
        except (KeyError, InvalidInputError) as exc:
            raise IndexFormatError(
                f"{directory / 'manifest.json'} has invalid BM25 parameters ({exc}); rebuild the index and save it again"
            ) from exc
        n = manifest_int(manifest, "counts", "passages", directory)
        passages = open_passages(directory, manifest, n)
        sub = directory / _BM25S_DIR
        listed = set(manifest["files"])
        unlisted = sorted(
            f.relative_to(directory).as_posix()
            for f in (sub.rglob("*") if sub.is_dir() else ())
            if f.is_file() and f.relative_to(directory).as_posix() not in listed
        )
        if unlisted:
            raise IndexFormatError(
                f"{directory} holds files the manifest does not vouch for ({', '.join(unlisted[:3])}); "
                "refusing to read them: rebuild the index and save it again"
            )
        if self.engine == "rank_bm25" or not sub.is_dir():
            # rank-bm25 has no safe on-disk form, and an index with no terms has no arrays:
            # rebuild from the passages (the manifest already vouched for every listed file)
            logger.info(
                "rebuilding the BM25 index from %d saved passages (%s)", len(passages), self.engine
            )
            return self.index(list(passages))
        self._load_bm25s(sub, passages)
        return self

    def _load_bm25s(self, sub: Path, passages: PassageStore) -> None:
        """Open bm25s's arrays memory-mapped (pages are read on demand, shared between
        processes serving the same index) and check they fit the passages."""
        import bm25s

        try:
            model = bm25s.BM25.load(
                str(sub),
                allow_pickle=False,
                mmap=True,
                load_corpus=False,
                show_progress=False,
                backend=self.engine,
            )
        except (OSError, ValueError, KeyError, TypeError, EOFError) as exc:
            raise IndexFormatError(
                f"cannot read the bm25s index in {sub} ({type(exc).__name__}: {exc}); rebuild the index and save it again"
            ) from exc
        scores = model.scores
        n_vocab = len(model.vocab_dict)
        ok = (
            scores.get("num_docs") == len(passages)
            and len(scores["indptr"]) == n_vocab + 1
            and len(scores["data"]) == len(scores["indices"]) == int(scores["indptr"][-1])
            and _max_below(scores["indices"], len(passages))
        )
        if not ok:
            raise IndexFormatError(
                f"the bm25s arrays in {sub} do not fit {len(passages)} passages and {n_vocab} terms; "
                "rebuild the index and save it again"
            )
        self._store = passages
        self._bm25 = model
        self._vocab = model.vocab_dict
        self._empty_vocab = n_vocab == 0

    def _repr_fields(self) -> str:
        sw = (
            self.stopwords
            if not isinstance(self.stopwords, list)
            else f"<{len(self.stopwords)} words>"
        )
        return f"method={self.method!r}, k1={self.k1}, b={self.b}, stopwords={sw!r}, backend={self.engine!r}"


def _max_below(values: np.ndarray, bound: int, block: int = 1 << 24) -> bool:
    """Every value of a (memory-mapped) array is below ``bound``, read block by block."""
    return all(int(values[i : i + block].max()) < bound for i in range(0, len(values), block))

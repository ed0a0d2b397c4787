"""Any dataset in the BEIR format as an evidence-selection benchmark.

A BEIR folder holds three things (https://github.com/beir-cellar/beir, "the BEIR format"):

* ``corpus.jsonl``: one passage per line, ``{"_id", "title", "text"}``; meteora also
  reads the optional ``doc_id`` (the document the passage is a chunk of) and
  ``position`` (its 0-based order in that document), which neighbour expansion uses.
  A passage without ``doc_id`` is its own document; a document whose passages carry no
  ``position`` keeps the file's order. The title, when there is one, is put before the
  text (``"title text"``, as BEIR's own retrievers do) and kept in ``metadata``.
* ``queries.jsonl``: one query per line, ``{"_id", "text"}``.
* ``qrels/<split>.tsv``: ``query-id<TAB>corpus-id<TAB>score`` rows (a header line is
  optional); rows with a score of 0 or less are not relevant.

The benchmark has one relevance view, ``"evidence"`` (the passages the qrels judge
relevant, with their grades), and one split per qrels file: its queries, in the order
of ``queries.jsonl``. Errors name the file and the 1-based line.

Example:
    >>> bench = build_beir_benchmark("examples/beir_tiny")   # doctest: +SKIP
    >>> bench.name, bench.views, sorted(bench.splits)          # doctest: +SKIP
    ('beir-beir_tiny', ['evidence'], ['test'])
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from meteora._checks import check_text
from meteora.datasets.pubmedqa import RetrievalBenchmark
from meteora.errors import DataNotFoundError, InvalidInputError
from meteora.types import Passage

__all__ = ["build_beir_benchmark", "beir_dataset_name", "BEIR_VIEW"]

logger = logging.getLogger(__name__)

#: the one qrels view of a BEIR benchmark
BEIR_VIEW = "evidence"


def beir_dataset_name(path: str | os.PathLike[str]) -> str:
    """The benchmark name of a BEIR folder: ``beir-<folder name>`` (characters other than
    letters, digits, ``_``, ``.`` and ``-`` become ``-``).

    Example:
        >>> beir_dataset_name("data/SciFact v1/")
        'beir-SciFact-v1'
    """
    folder = Path(path).expanduser().resolve().name
    return "beir-" + (re.sub(r"[^A-Za-z0-9_.-]+", "-", folder).strip("-") or "dataset")


def _jsonl(file: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` of every non-blank line."""
    try:
        with file.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InvalidInputError(f"{file}:{lineno}: not valid JSON ({exc.msg}); each line must be one JSON object") from exc
                if not isinstance(obj, dict):
                    raise InvalidInputError(f"{file}:{lineno}: expected a JSON object, got {type(obj).__name__}")
                yield lineno, obj
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{file}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def _id(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise InvalidInputError(f"{where}: needs a non-empty string {key!r} (keys: {sorted(obj)})")
    return str(value).strip()


def _text(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInputError(f"{where}: {key!r} must be a string, got {type(value).__name__}")
    return check_text(value, f"{where}: {key!r}").strip()


def _read_corpus(file: Path) -> list[Passage]:
    rows: list[tuple[str, str, str, int | None, dict[str, Any]]] = []
    seen: dict[str, int] = {}
    for lineno, obj in _jsonl(file):
        where = f"{file}:{lineno}"
        pid = _id(obj, "_id", where)
        if pid in seen:
            raise InvalidInputError(f"{where}: duplicate _id {pid!r} (first on line {seen[pid]})")
        seen[pid] = lineno
        title, text = _text(obj, "title", where), _text(obj, "text", where)
        if not text and not title:
            raise InvalidInputError(f"{where}: passage {pid!r} has neither 'text' nor 'title'")
        doc_id = _id(obj, "doc_id", where) if obj.get("doc_id") not in (None, "") else pid
        position = obj.get("position")
        if position is not None and (isinstance(position, bool) or not isinstance(position, int) or position < 0):
            raise InvalidInputError(f"{where}: 'position' must be a non-negative integer, got {position!r}")
        metadata = {"title": title} if title else {}
        rows.append((pid, " ".join(x for x in (title, text) if x), doc_id, position, metadata))
    if not rows:
        raise InvalidInputError(f"{file}: no passages; each line needs {{\"_id\", \"title\", \"text\"}}")

    by_doc: dict[str, list[tuple[str, str, str, int | None, dict[str, Any]]]] = {}
    for row in rows:  # documents in the order of their first passage
        by_doc.setdefault(row[2], []).append(row)
    corpus: list[Passage] = []
    for doc_id, members in by_doc.items():
        given = [r[3] is not None for r in members]
        if any(given) and not all(given):
            raise InvalidInputError(
                f"{file}: document {doc_id!r} has passages with and without 'position' (line {seen[members[given.index(False)][0]]}); "
                "give every passage of a document a position, or none (then the file's order is used)"
            )
        positions = [r[3] if r[3] is not None else i for i, r in enumerate(members)]
        if len(set(positions)) != len(positions):
            dup = next(p for p in positions if positions.count(p) > 1)
            raise InvalidInputError(f"{file}: document {doc_id!r} has two passages at position {dup}")
        for pos, (pid, text, _, _, meta) in sorted(zip(positions, members, strict=True), key=lambda x: x[0]):
            corpus.append(Passage(text=text, id=pid, doc_id=doc_id, position=pos, metadata=meta))
    return corpus


def _read_queries(file: Path) -> dict[str, str]:
    queries: dict[str, str] = {}
    for lineno, obj in _jsonl(file):
        where = f"{file}:{lineno}"
        qid = _id(obj, "_id", where)
        if qid in queries:
            raise InvalidInputError(f"{where}: duplicate query _id {qid!r}")
        text = _text(obj, "text", where)
        if not text:
            raise InvalidInputError(f"{where}: query {qid!r} has no 'text'")
        queries[qid] = text
    return queries


def _read_qrels(file: Path, queries: dict[str, str], passages: set[str]) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    try:
        with file.open(encoding="utf-8", newline="") as fh:
            for lineno, row in enumerate(csv.reader(fh, delimiter="\t"), 1):
                if not row or not "".join(row).strip():
                    continue
                where = f"{file}:{lineno}"
                if len(row) == 4:  # TREC qrels: query-id, iteration, corpus-id, score
                    row = [row[0], row[2], row[3]]
                if len(row) != 3:
                    raise InvalidInputError(
                        f"{where}: expected 3 tab-separated columns (query-id, corpus-id, score), got {len(row)}"
                    )
                qid, pid, score = (c.strip() for c in row)
                try:
                    value = float(score)
                except ValueError:
                    if lineno == 1:  # the header
                        continue
                    raise InvalidInputError(f"{where}: score must be an integer, got {score!r}") from None
                if not math.isfinite(value) or not value.is_integer():  # inf, 1e400, nan, 1.5
                    raise InvalidInputError(
                        f"{where}: score must be a whole number (a relevance grade such as 0, 1, 2), got {score!r}"
                    )
                grade = int(value)
                if qid not in queries:
                    raise InvalidInputError(f"{where}: query {qid!r} is not in queries.jsonl")
                if pid not in passages:
                    raise InvalidInputError(f"{where}: passage {pid!r} is not in corpus.jsonl")
                if grade > 0:
                    qrels.setdefault(qid, {})[pid] = grade
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{file}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    return qrels


def build_beir_benchmark(path: str | os.PathLike[str] | None = None, *, name: str | None = None) -> RetrievalBenchmark:
    """Build a benchmark from a BEIR-format folder (see the module docstring).

    Args:
        path: the folder holding ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/``.
        name: the benchmark's name (default :func:`beir_dataset_name` of the folder).

    Returns:
        A :class:`~meteora.datasets.pubmedqa.RetrievalBenchmark` with the view
        ``"evidence"`` and one split per ``qrels/<split>.tsv``.

    Raises:
        DataNotFoundError: the folder or one of its files is missing.
        InvalidInputError: a malformed line (the message names file and line), a
            qrels row naming an unknown query or passage, or a query judged differently
            by two qrels files.

    Example:
        >>> bench = build_beir_benchmark("examples/beir_tiny")    # doctest: +SKIP
        >>> bench.qrels_for("evidence")                              # doctest: +SKIP
        {'q1': {'p1': 1}, 'q2': {'p3': 1}}
    """
    if path is None:
        raise DataNotFoundError("a BEIR benchmark needs its folder: pass the folder holding corpus.jsonl, "
                                "queries.jsonl and qrels/<split>.tsv")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataNotFoundError(f"BEIR folder not found: {root} (it must hold corpus.jsonl, queries.jsonl, qrels/)")
    for part in ("corpus.jsonl", "queries.jsonl"):
        if not (root / part).is_file():
            raise DataNotFoundError(f"{root} has no {part}; a BEIR folder holds corpus.jsonl, queries.jsonl and qrels/<split>.tsv")
    qrel_files = sorted((root / "qrels").glob("*.tsv"))
    if not qrel_files:
        raise DataNotFoundError(f"{root / 'qrels'} holds no <split>.tsv file (e.g. qrels/test.tsv)")
    corpus = _read_corpus(root / "corpus.jsonl")
    queries = _read_queries(root / "queries.jsonl")
    known = {p.id for p in corpus}
    merged: dict[str, dict[str, int]] = {}
    origin: dict[str, Path] = {}
    splits: dict[str, list[str]] = {}
    for file in qrel_files:
        qrels = _read_qrels(file, queries, known)
        for qid, rels in qrels.items():
            if qid in merged and merged[qid] != rels:
                raise InvalidInputError(
                    f"query {qid!r} is judged differently in {origin[qid]} and {file}; a query belongs to one split"
                )
            merged[qid], origin[qid] = rels, file
        splits[file.stem] = [q for q in queries if q in qrels]
        if not splits[file.stem]:
            logger.warning("%s judges no passage relevant; split %r is empty", file, file.stem)
    bench = RetrievalBenchmark(
        name=name or beir_dataset_name(root),
        corpus=corpus,
        queries={q: t for q, t in queries.items() if q in merged},
        qrels={BEIR_VIEW: merged},
        splits=splits,
    )
    logger.info("built %r", bench)
    return bench

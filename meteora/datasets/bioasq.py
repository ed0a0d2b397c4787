"""BioASQ Task B gold snippets as an evidence-selection benchmark.

A second, differently built evidence benchmark beside PubMedQA. Input: the BioASQ
"golden" JSON files (``{"questions": [{"id", "body", "type", "snippets": [...]}]}``),
e.g. the 2019–2020 development batches ``7B1_golden.json`` … ``8B5_golden.json``.

Corpus: every distinct gold snippet of every question (distinct = same PubMed id and
the same text up to white space), grouped by PubMed id (the last
part of the snippet's ``document`` URL) and ordered by section (title before abstract)
and offset, so ``doc_id`` = PMID and ``position`` = that order. Relevant (view
``"evidence"``): the question's own snippets. Splits, by the file a question first
occurs in: ``"train"`` — the 7B files (2019), training and calibration data; ``"dev"``
— every other file (the 8B files, 2020): report on it, never train or choose
settings on it; ``"all"``. The corpus always holds the snippets of every file (only
the questions are split).

Example:
    >>> bench = build_bioasq_benchmark()                 # doctest: +SKIP
    >>> len(bench.queries), len(bench.corpus)            # doctest: +SKIP
    (1000, 7023)
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from meteora.datasets.pubmedqa import RetrievalBenchmark
from meteora.errors import DataNotFoundError, InvalidInputError
from meteora.settings import data_dir
from meteora.types import Passage

__all__ = ["build_bioasq_benchmark", "BIOASQ_SUBDIR", "TRAIN_FILE_PREFIX", "BIOASQ_SPLITS"]

logger = logging.getLogger(__name__)

#: Sub-folder of the data folder that holds the development files.
BIOASQ_SUBDIR = "bioasq-dev"
#: Golden files whose name starts with this hold the training questions (BioASQ 7B, 2019).
TRAIN_FILE_PREFIX = "7B"
#: The question splits: dev (the default evaluation split), train, all.
BIOASQ_SPLITS = ("dev", "train", "all")
_SECTION_ORDER = {"title": 0, "abstract": 1}


def _golden_files(path: str | os.PathLike[str] | None) -> list[Path]:
    root = Path(path).expanduser() if path is not None else data_dir(BIOASQ_SUBDIR)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise DataNotFoundError(
            f"BioASQ data not found at {root}: pass the folder holding *_golden.json files "
            "or one such file, or set METEORA_DATA_DIR to the folder that holds bioasq-dev/"
        )
    files = sorted(root.glob("*_golden.json"))
    if not files:
        raise DataNotFoundError(f"no *_golden.json files in {root}; pass the folder of the BioASQ golden files")
    return files


def _load(file: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{file}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{file}:{exc.lineno}: not valid JSON ({exc.msg})") from exc
    questions = data.get("questions") if isinstance(data, dict) else None
    if not isinstance(questions, list):
        raise InvalidInputError(f"{file}: expected an object with a 'questions' list (BioASQ golden format)")
    return questions


def _pmid(url: Any, where: str) -> str:
    if not isinstance(url, str) or not url.strip():
        raise InvalidInputError(f"{where}: snippet has no 'document' URL")
    pmid = url.rstrip("/").rsplit("/", 1)[-1]
    if not pmid:
        raise InvalidInputError(f"{where}: cannot read a PubMed id from document {url!r}")
    return pmid


def build_bioasq_benchmark(path: str | os.PathLike[str] | None = None) -> RetrievalBenchmark:
    """Build the BioASQ gold-snippet benchmark (see the module docstring).

    Args:
        path: a folder of ``*_golden.json`` files or one file; default the data folder's
            ``bioasq-dev/`` (``$METEORA_DATA_DIR`` or ``../shared/data``).

    Returns:
        A :class:`~meteora.datasets.pubmedqa.RetrievalBenchmark` named ``"bioasq"`` with the
        view ``"evidence"`` and splits ``"dev"``, ``"train"`` and ``"all"`` (see the
        module doc). A question asked in several files is kept once (its first
        occurrence, which also decides its split).

    Raises:
        DataNotFoundError: no files found. InvalidInputError: a file is not in the
            golden format (the message names the file and question).
    """
    # distinct snippet = (PMID, whitespace-normalised text); ordered by its first
    # (section, offset) seen
    snippets: dict[tuple[str, str], tuple[int, int]] = {}
    queries: dict[str, str] = {}
    own: dict[str, list[tuple[str, str]]] = {}
    answers: dict[str, dict[str, Any]] = {}
    train: set[str] = set()
    for file in _golden_files(path):
        for qi, q in enumerate(_load(file)):
            where = f"{file.name}: question #{qi}"
            if not isinstance(q, dict) or not isinstance(q.get("body"), str) or not q.get("body", "").strip():
                raise InvalidInputError(f"{where}: needs a non-empty 'body' string")
            qid = str(q.get("id") or f"{file.stem}-{qi}")
            if qid in queries:
                continue
            keys = []
            for si, s in enumerate(q.get("snippets") or []):
                text = s.get("text") if isinstance(s, dict) else None
                if not isinstance(text, str) or not text.strip():
                    continue
                pmid = _pmid(s.get("document"), f"{where}, snippet #{si}")
                section = _SECTION_ORDER.get(str(s.get("beginSection", "abstract")), 2)
                offset = s.get("offsetInBeginSection", 0)
                offset = int(offset) if isinstance(offset, (int, float)) and not isinstance(offset, bool) else 0
                key = (pmid, " ".join(text.split()))
                if key not in keys:
                    keys.append(key)
                snippets[key] = min(snippets.get(key, (section, offset)), (section, offset))
            if not keys:
                logger.debug("%s has no usable snippets; skipped", where)
                continue
            queries[qid] = q["body"].strip()
            own[qid] = keys
            if file.name.startswith(TRAIN_FILE_PREFIX):
                train.add(qid)
            answers[qid] = {"type": q.get("type"), "ideal_answer": q.get("ideal_answer")}

    corpus: list[Passage] = []
    ids: dict[tuple[str, str], str] = {}
    by_doc: dict[str, list[tuple[str, str]]] = {}
    for key in snippets:
        by_doc.setdefault(key[0], []).append(key)
    for pmid in sorted(by_doc):
        for pos, key in enumerate(sorted(by_doc[pmid], key=lambda k: (snippets[k], k[1]))):
            pid = f"{pmid}-{pos}"
            ids[key] = pid
            corpus.append(Passage(text=key[1], id=pid, doc_id=pmid, position=pos))
    qrels = {qid: {ids[k]: 1 for k in keys} for qid, keys in own.items()}
    qids = list(queries)
    bench = RetrievalBenchmark(
        name="bioasq",
        corpus=corpus,
        queries=queries,
        qrels={"evidence": qrels},
        splits={
            "dev": [q for q in qids if q not in train],
            "train": [q for q in qids if q in train],
            "all": list(qids),
        },
        answers=answers,
    )
    logger.info("built %r", bench)
    return bench

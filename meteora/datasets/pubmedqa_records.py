"""Reading and validating the raw PubMedQA (PQA-L) records and the official test ids.

:func:`load_pubmedqa` reads ``ori_pqal.json`` (or the hub copy, ``qiaojin/PubMedQA``,
config ``pqa_labeled``) into :class:`PubMedQARecord` objects, checking every record and
reporting the first malformed ones; :func:`load_test_ids` reads the official 500-id test
split from ``test_ground_truth.json``. Turning the records into a retrieval benchmark is
done in :mod:`meteora.datasets.pubmedqa`.

Example:
    >>> from meteora.datasets.pubmedqa_records import load_pubmedqa, load_test_ids
    >>> records = load_pubmedqa()                       # doctest: +SKIP
    >>> records[0].pmid in set(load_test_ids())          # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meteora.errors import DataNotFoundError, InvalidInputError, MeteoraError, require
from meteora.settings import data_dir

__all__ = [
    "PubMedQARecord",
    "load_pubmedqa",
    "load_test_ids",
    "HUB_DATASET",
    "HUB_CONFIG",
    "DATA_FILE",
    "TEST_FILE",
    "EVIDENCE_LABELS",
]

# Same logger as meteora.datasets.pubmedqa, so log filtering set up for it keeps working.
logger = logging.getLogger("meteora.datasets.pubmedqa")

HUB_DATASET = "qiaojin/PubMedQA"
HUB_CONFIG = "pqa_labeled"
DATA_FILE = "ori_pqal.json"
TEST_FILE = "test_ground_truth.json"
EVIDENCE_LABELS: tuple[str, ...] = ("RESULTS",)
"""Section labels that make a chunk "evidence" (exact, upper-case match)."""

_SOURCES = ("auto", "local", "hub")
_MAX_REPORTED_PROBLEMS = 5
_WHERE_HINT = (
    "Set METEORA_DATA_DIR to the folder that holds pubmedqa/ori_pqal.json "
    "(and pubmedqa/test_ground_truth.json), pass the path explicitly, "
    f"or use source='hub' to download {HUB_DATASET} ({HUB_CONFIG})."
)


@dataclass(frozen=True)
class PubMedQARecord:
    """One PQA-L question with its abstract.

    Attributes:
        pmid: PubMed id of the abstract (also the question id).
        question: the research question.
        contexts: the abstract chunks, in order (the conclusion is not among them).
        labels: the section label of each chunk (same length as ``contexts``).
        meshes: MeSH terms of the article.
        year: publication year (``None`` when unknown, and always from the hub copy).
        long_answer: the abstract's conclusion.
        final_decision: ``"yes"``, ``"no"`` or ``"maybe"``.
    """

    pmid: str
    question: str
    contexts: list[str]
    labels: list[str]
    meshes: list[str]
    year: int | None
    long_answer: str
    final_decision: str

    def __repr__(self) -> str:
        q = self.question if len(self.question) <= 60 else self.question[:59] + "…"
        return (
            f"PubMedQARecord(pmid={self.pmid!r}, chunks={len(self.contexts)}, "
            f"final_decision={self.final_decision!r}, question={q!r})"
        )


# ---------------------------------------------------------------------------------------
# loading


def _locate(path: str | os.PathLike[str] | None, filename: str) -> Path:
    """Resolve ``path`` (file, folder, data root or None) to an existing ``filename``."""
    if path is None:
        folder = data_dir("pubmedqa")  # raises DataNotFoundError naming METEORA_DATA_DIR
        candidates = [folder / filename]
    else:
        p = Path(path).expanduser()
        if p.is_file():
            return p
        candidates = [p / filename, p / "pubmedqa" / filename] if p.is_dir() else [p]
    for c in candidates:
        if c.is_file():
            return c
    raise DataNotFoundError(
        f"PubMedQA file {filename} not found (looked at: {', '.join(str(c) for c in candidates)}). {_WHERE_HINT}"
    )


def _read_json_file(file: Path) -> Any:
    try:
        with open(file, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            f"{file} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
            "the file is corrupt or truncated: download it again"
        ) from exc
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{file} is not UTF-8 text ({exc}); download it again") from exc


def _as_str_list(value: Any) -> list[str] | None:
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def _parse_year(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        logger.debug("unparseable PubMedQA year %r; stored as None", value)
        return None


def _make_record(pmid: str, raw: Mapping[str, Any], problems: list[str]) -> PubMedQARecord | None:
    """Build a record from upper-case (file) or normalised fields; append problems."""
    where = f"record {pmid!r}"
    question = raw.get("question")
    contexts = _as_str_list(raw.get("contexts"))
    labels = _as_str_list(raw.get("labels"))
    meshes = _as_str_list(raw.get("meshes") if raw.get("meshes") is not None else [])
    long_answer = raw.get("long_answer")
    decision = raw.get("final_decision")
    bad: list[str] = []
    if not isinstance(question, str) or not question.strip():
        bad.append("QUESTION must be a non-empty string")
    if contexts is None or not contexts:
        bad.append("CONTEXTS must be a non-empty list of strings")
    elif any(not c.strip() for c in contexts):
        bad.append("CONTEXTS holds an empty chunk")
    if labels is None:
        bad.append("LABELS must be a list of strings")
    elif contexts is not None and len(labels) != len(contexts):
        bad.append(f"LABELS has {len(labels)} entries for {len(contexts)} CONTEXTS")
    if meshes is None:
        bad.append("MESHES must be a list of strings")
    if not isinstance(long_answer, str):
        bad.append("LONG_ANSWER must be a string")
    if not isinstance(decision, str) or decision.lower() not in ("yes", "no", "maybe"):
        bad.append(f"final_decision must be 'yes', 'no' or 'maybe', got {decision!r}")
    if bad:
        problems.append(f"{where}: " + "; ".join(bad))
        return None
    assert contexts is not None and labels is not None and meshes is not None  # for type checkers
    return PubMedQARecord(
        pmid=pmid,
        question=str(question),
        contexts=contexts,
        labels=labels,
        meshes=meshes,
        year=_parse_year(raw.get("year")),
        long_answer=str(long_answer),
        final_decision=str(decision).lower(),
    )


def _raise_problems(source: str, problems: list[str], total: int, expected: str) -> None:
    shown = "\n  ".join(problems[:_MAX_REPORTED_PROBLEMS])
    more = (
        f"\n  … and {len(problems) - _MAX_REPORTED_PROBLEMS} more"
        if len(problems) > _MAX_REPORTED_PROBLEMS
        else ""
    )
    raise InvalidInputError(
        f"{source} is not valid PubMedQA PQA-L data: {len(problems)} of {total} records are malformed:\n  "
        f"{shown}{more}\nExpected {expected}."
    )


_FILE_SHAPE = (
    "{pmid: {QUESTION, CONTEXTS, LABELS, MESHES, YEAR, LONG_ANSWER, final_decision}} as in the "
    "official ori_pqal.json; download it again"
)
_HUB_SHAPE = (
    "rows {pubid, question, context: {contexts, labels, meshes}, long_answer, final_decision} as in "
    f"{HUB_DATASET} ({HUB_CONFIG}); clear the datasets cache and load it again"
)


def _records_from_file(file: Path) -> list[PubMedQARecord]:
    data = _read_json_file(file)
    if not isinstance(data, dict) or not data:
        raise InvalidInputError(
            f"{file} should hold a non-empty JSON object {{pmid: record}} (the official ori_pqal.json), "
            f"got {type(data).__name__}{' (empty)' if isinstance(data, (dict, list)) and not data else ''}; "
            "download it again"
        )
    problems: list[str] = []
    records: list[PubMedQARecord] = []
    for pmid, raw in data.items():
        if not isinstance(raw, dict):
            problems.append(f"record {pmid!r}: expected an object, got {type(raw).__name__}")
            continue
        norm = {
            "question": raw.get("QUESTION"),
            "contexts": raw.get("CONTEXTS"),
            "labels": raw.get("LABELS"),
            "meshes": raw.get("MESHES"),
            "year": raw.get("YEAR"),
            "long_answer": raw.get("LONG_ANSWER"),
            "final_decision": raw.get("final_decision"),
        }
        rec = _make_record(str(pmid), norm, problems)
        if rec is not None:
            records.append(rec)
    if problems:
        _raise_problems(str(file), problems, len(data), _FILE_SHAPE)
    logger.info("loaded %d PubMedQA records from %s", len(records), file)
    return records


def _hub_context(context: Any) -> dict[str, Any]:
    """The hub's ``context`` column: a dict of lists (older/newer datasets: a list of dicts)."""
    if isinstance(context, Mapping):
        return dict(context)
    if isinstance(context, list) and all(isinstance(c, Mapping) for c in context):
        # columns of unequal length (meshes) come back padded with None: drop the padding
        return {
            key: [c[key] for c in context if c.get(key) is not None]
            for key in ("contexts", "labels", "meshes")
        }
    return {}


def _records_from_rows(rows: Iterable[Mapping[str, Any]], source: str) -> list[PubMedQARecord]:
    problems: list[str] = []
    records: list[PubMedQARecord] = []
    seen: set[str] = set()
    total = 0
    for i, row in enumerate(rows):
        total += 1
        pmid = row.get("pubid")
        if pmid is None or str(pmid).strip() == "":
            problems.append(f"row {i}: no pubid")
            continue
        pmid = str(pmid)
        if pmid in seen:
            problems.append(f"row {i}: duplicate pubid {pmid!r}")
            continue
        seen.add(pmid)
        ctx = _hub_context(row.get("context"))
        norm = {
            "question": row.get("question"),
            "contexts": ctx.get("contexts"),
            "labels": ctx.get("labels"),
            "meshes": ctx.get("meshes"),
            "year": row.get("year"),
            "long_answer": row.get("long_answer"),
            "final_decision": row.get("final_decision"),
        }
        rec = _make_record(pmid, norm, problems)
        if rec is not None:
            records.append(rec)
    if total == 0:
        raise InvalidInputError(f"{source} returned no rows; expected the 1000 PQA-L questions")
    if problems:
        _raise_problems(source, problems, total, _HUB_SHAPE)
    return records


def _records_from_hub() -> list[PubMedQARecord]:
    datasets = require("datasets", "train", f"loading PubMedQA from the hub ({HUB_DATASET})")
    source = f"hub dataset {HUB_DATASET} ({HUB_CONFIG})"
    try:
        rows = datasets.load_dataset(HUB_DATASET, HUB_CONFIG, split="train")
    except MeteoraError:
        raise
    except Exception as exc:  # network, auth, missing cache in offline mode, ...
        raise DataNotFoundError(
            f"could not load {source}: {type(exc).__name__}: {exc}. No local copy was used; "
            "set METEORA_DATA_DIR to the folder that holds pubmedqa/ori_pqal.json, or pass its path."
        ) from exc
    records = _records_from_rows(rows, source)
    logger.info("loaded %d PubMedQA records from %s", len(records), source)
    return records


def load_pubmedqa(
    path: str | os.PathLike[str] | None = None, *, source: str = "auto"
) -> list[PubMedQARecord]:
    """Load the 1000 PQA-L records, in file (or hub row) order.

    Args:
        path: ``ori_pqal.json`` itself, the folder holding it, or the data root holding
            ``pubmedqa/``. Default: ``meteora.settings.data_dir("pubmedqa")``.
        source: ``"local"`` (file only), ``"hub"`` (``datasets.load_dataset(
            "qiaojin/PubMedQA", "pqa_labeled")``) or ``"auto"``: the local file when found,
            else the hub. An explicit ``path`` that does not exist is an error, never a
            silent switch to the hub.

    Raises:
        DataNotFoundError: no local file (the message names METEORA_DATA_DIR) and, for
            ``"auto"``/``"hub"``, the hub could not be reached either.
        InvalidInputError: the file or the hub rows are malformed (the message lists the
            first bad records), or a bad ``source``.
        MissingDependencyError: hub loading without the ``datasets`` package.

    Example:
        >>> records = load_pubmedqa()                       # doctest: +SKIP
        >>> len(records), records[0].labels[:2]              # doctest: +SKIP
        (1000, ['BACKGROUND', 'RESULTS'])
    """
    if source not in _SOURCES:
        raise InvalidInputError(f"source must be one of {_SOURCES}, got {source!r}")
    if source == "hub":
        if path is not None:
            raise InvalidInputError(
                "path is only used with source='local' or 'auto'; drop it for source='hub'"
            )
        return _records_from_hub()
    if source == "local" or path is not None:
        return _records_from_file(_locate(path, DATA_FILE))
    try:
        file = _locate(None, DATA_FILE)
    except DataNotFoundError as local_err:
        logger.info("no local PubMedQA copy (%s); trying the hub", local_err)
        try:
            return _records_from_hub()
        except DataNotFoundError as hub_err:
            raise DataNotFoundError(
                f"{local_err}\nThe hub fallback failed too: {hub_err}"
            ) from hub_err
    return _records_from_file(file)


def load_test_ids(path: str | os.PathLike[str] | None = None) -> list[str]:
    """The official PQA-L test PMIDs (500), in file order, from ``test_ground_truth.json``.

    Args:
        path: the file, its folder, or the data root. Default:
            ``meteora.settings.data_dir("pubmedqa")``.

    Raises:
        DataNotFoundError: the file is missing (the message names METEORA_DATA_DIR).
        InvalidInputError: the file is not a JSON object/list of PMIDs.

    Example:
        >>> ids = load_test_ids()                           # doctest: +SKIP
        >>> len(ids)                                        # doctest: +SKIP
        500
    """
    file = _locate(path, TEST_FILE)
    data = _read_json_file(file)
    if isinstance(data, dict):
        ids = [str(k) for k in data]
    elif isinstance(data, list) and all(
        isinstance(v, (str, int)) and not isinstance(v, bool) for v in data
    ):
        ids = [str(v) for v in data]
    else:
        raise InvalidInputError(
            f"{file} should hold a JSON object {{pmid: answer}} (or a list of PMIDs), got {type(data).__name__}; "
            "download it again"
        )
    if not ids:
        raise InvalidInputError(f"{file} lists no test ids; download it again")
    if len(set(ids)) != len(ids):
        raise InvalidInputError(f"{file} lists some test ids twice; download it again")
    return ids

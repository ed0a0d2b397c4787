"""PubMedQA (PQA-L) as a passage-retrieval benchmark.

PQA-L holds 1000 expert-labelled questions, each with the abstract it was written from,
split into labelled chunks (BACKGROUND, METHODS, RESULTS, ...). The benchmark built here
puts every chunk of the 1000 abstracts (3,358 chunks) into one corpus and asks each
question to find the chunks of its own abstract:

* view ``"abstract"``: relevant = every chunk of the question's abstract (1000 queries);
* view ``"evidence"``: relevant = the chunk labelled exactly ``RESULTS``, the part that
  holds the answer (938 queries, one such chunk each). The other 62 abstracts are left
  out of this view: 44 use a variant heading (``RESULT``, ``MAIN RESULTS``,
  ``FINDINGS``, ``METHODS AND RESULTS``, ...) and 18 have no results heading at all.
  Pass ``evidence_labels=`` to :func:`build_pubmedqa_benchmark` to widen the match.

Section labels and MeSH terms are ground truth for the benchmark only: they are never
put in a passage's text or metadata, so no retriever or reranker can see them. The
labels are kept apart in :attr:`RetrievalBenchmark.section_labels`.

Data location: ``load_pubmedqa()`` reads ``ori_pqal.json`` from
``meteora.settings.data_dir("pubmedqa")`` (``$METEORA_DATA_DIR/pubmedqa``, falling back
to ``../shared/data/pubmedqa``) or, when no local copy exists, from the Hugging Face hub
(``qiaojin/PubMedQA``, config ``pqa_labeled``). The official 500-question test split
comes from ``test_ground_truth.json`` next to it.

Example:
    >>> bench = build_pubmedqa_benchmark()                      # doctest: +SKIP
    >>> bench                                                    # doctest: +SKIP
    RetrievalBenchmark(name='pubmedqa', passages=3358, queries=1000, views={'abstract': 1000, 'evidence': 938}, splits={'test': 500, 'train': 500, 'all': 1000})
    >>> qids = bench.query_ids("test", limit=10)                # doctest: +SKIP
    >>> qrels = bench.qrels_for("abstract", qids)               # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meteora.errors import DataNotFoundError, InvalidInputError, MeteoraError, require
from meteora.settings import data_dir
from meteora.types import Passage

__all__ = [
    "PubMedQARecord",
    "RetrievalBenchmark",
    "load_pubmedqa",
    "load_test_ids",
    "build_pubmedqa_benchmark",
    "HUB_DATASET",
    "HUB_CONFIG",
    "EVIDENCE_LABELS",
]

logger = logging.getLogger(__name__)

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


# ---------------------------------------------------------------------------------------
# benchmark


@dataclass(repr=False)
class RetrievalBenchmark:
    """A retrieval benchmark: corpus, queries, several qrels views, splits and answers.

    Attributes:
        name: short name (``"pubmedqa"``).
        corpus: every passage, grouped by document and in position order. Texts and
            metadata carry nothing that is ground truth.
        queries: ``{query_id: question}``.
        qrels: ``{view: {query_id: {passage_id: relevance}}}``; a query with nothing
            relevant in a view is absent from it.
        splits: ``{split: [query_id, ...]}`` in a stable order (the data's order).
        answers: ``{query_id: {"final_decision": ..., "long_answer": ...}}``.
        section_labels: ``{passage_id: label}`` — ground truth, never shown to methods.

    Example:
        >>> b = RetrievalBenchmark(
        ...     name="toy", corpus=[Passage("a", id="d-0", doc_id="d")], queries={"q": "?"},
        ...     qrels={"abstract": {"q": {"d-0": 1}}}, splits={"all": ["q"]})
        >>> b.query_ids(), b.doc_passages("d")[0].id
        (['q'], 'd-0')
    """

    name: str
    corpus: list[Passage]
    queries: dict[str, str]
    qrels: dict[str, dict[str, dict[str, int]]]
    splits: dict[str, list[str]]
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    section_labels: dict[str, str] = field(default_factory=dict)
    _by_id: dict[str, Passage] = field(init=False, compare=False, default_factory=dict)
    _by_doc: dict[str, list[Passage]] = field(init=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        by_id: dict[str, Passage] = {}
        by_doc: dict[str, list[Passage]] = {}
        for p in self.corpus:
            if p.id in by_id:
                raise InvalidInputError(
                    f"duplicate passage id {p.id!r} in the corpus of benchmark {self.name!r}"
                )
            by_id[p.id] = p
            by_doc.setdefault(p.doc_id, []).append(p)
        for passages in by_doc.values():
            passages.sort(key=lambda p: p.position)
        self._by_id = by_id
        self._by_doc = by_doc
        for view, qrels in self.qrels.items():
            unknown = [qid for qid in qrels if qid not in self.queries]
            if unknown:
                raise InvalidInputError(
                    f"qrels view {view!r} names unknown queries, e.g. {unknown[:3]}"
                )
        for split, qids in self.splits.items():
            unknown = [qid for qid in qids if qid not in self.queries]
            if unknown:
                raise InvalidInputError(
                    f"split {split!r} names unknown queries, e.g. {unknown[:3]}"
                )

    def __repr__(self) -> str:
        views = {v: len(q) for v, q in self.qrels.items()}
        splits = {s: len(q) for s, q in self.splits.items()}
        return (
            f"RetrievalBenchmark(name={self.name!r}, passages={len(self.corpus)}, queries={len(self.queries)}, "
            f"views={views}, splits={splits})"
        )

    @property
    def views(self) -> list[str]:
        """Names of the qrels views."""
        return list(self.qrels)

    def query_ids(self, split: str = "all", limit: int | None = None) -> list[str]:
        """Query ids of a split, in the split's stable order, optionally the first ``limit``.

        Example:
            >>> bench.query_ids("test", limit=3)            # doctest: +SKIP
            ['12377809', '26163474', '19100463']
        """
        if split not in self.splits:
            hint = ""
            if split in ("test", "train") and self.name == "pubmedqa":
                hint = (
                    f" The official split needs {TEST_FILE}: put it in $METEORA_DATA_DIR/pubmedqa "
                    "or pass test_ids= to build_pubmedqa_benchmark."
                )
            raise InvalidInputError(
                f"unknown split {split!r}; available: {sorted(self.splits)}.{hint}"
            )
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
        ):
            raise InvalidInputError(f"limit must be a positive integer or None, got {limit!r}")
        qids = list(self.splits[split])
        return qids if limit is None else qids[:limit]

    def qrels_for(self, view: str, qids: Iterable[str] | None = None) -> dict[str, dict[str, int]]:
        """The qrels of one view restricted to ``qids`` (all of the view when ``None``).

        Queries without relevant passages in that view are absent from the result.
        A copy is returned, so callers may modify it.

        Example:
            >>> bench.qrels_for("evidence", ["21645374"])    # doctest: +SKIP
            {'21645374': {'21645374-1': 1}}
        """
        if view not in self.qrels:
            raise InvalidInputError(f"unknown qrels view {view!r}; available: {self.views}")
        table = self.qrels[view]
        if qids is None:
            return {qid: dict(rels) for qid, rels in table.items()}
        if isinstance(qids, str):
            raise InvalidInputError(
                "qids must be a list of query ids, got a single str; wrap it in a list"
            )
        out: dict[str, dict[str, int]] = {}
        for qid in qids:
            if qid not in self.queries:
                raise InvalidInputError(f"unknown query id {qid!r} for benchmark {self.name!r}")
            if qid in table:
                out[qid] = dict(table[qid])
        return out

    def passage(self, pid: str) -> Passage:
        """The passage with id ``pid``."""
        try:
            return self._by_id[pid]
        except KeyError:
            raise InvalidInputError(
                f"unknown passage id {pid!r} for benchmark {self.name!r}"
            ) from None

    def doc_passages(self, doc_id: str) -> list[Passage]:
        """All passages of a document, in position order."""
        try:
            return list(self._by_doc[doc_id])
        except KeyError:
            raise InvalidInputError(
                f"unknown document id {doc_id!r} for benchmark {self.name!r}"
            ) from None


def _resolve_test_ids(
    test_ids: Sequence[str] | str | os.PathLike[str] | None,
    path: str | os.PathLike[str] | None,
    source: str,
) -> list[str] | None:
    if test_ids is not None and not isinstance(test_ids, (str, os.PathLike)):
        return [str(t) for t in test_ids]
    where = test_ids if test_ids is not None else path
    if where is not None:
        p = Path(where).expanduser()
        if p.is_file() and p.name != TEST_FILE and test_ids is None:
            where = p.parent  # path was ori_pqal.json: look beside it
    try:
        return load_test_ids(where)
    except DataNotFoundError:
        if test_ids is not None or source == "local":
            raise
        logger.warning(
            "%s not found; the benchmark has only the 'all' split. %s", TEST_FILE, _WHERE_HINT
        )
        return None


def build_pubmedqa_benchmark(
    path: str | os.PathLike[str] | None = None,
    *,
    source: str = "auto",
    test_ids: Sequence[str] | str | os.PathLike[str] | None = None,
    evidence_labels: Collection[str] = EVIDENCE_LABELS,
) -> RetrievalBenchmark:
    """Build the PubMedQA chunk-retrieval benchmark (see the module docstring).

    Args:
        path: where ``ori_pqal.json`` is (see :func:`load_pubmedqa`).
        source: ``"auto"``, ``"local"`` or ``"hub"`` (see :func:`load_pubmedqa`).
        test_ids: the official test PMIDs, or the path of ``test_ground_truth.json``.
            Default: the file beside the data. With ``source="local"`` a missing file is
            an error; otherwise the benchmark is built with only the ``"all"`` split and
            a warning.
        evidence_labels: section labels that make a chunk relevant in the ``"evidence"``
            view (exact match). Default ``("RESULTS",)``: 938 of the 1000 questions.

    Returns:
        A :class:`RetrievalBenchmark` with views ``"abstract"`` and ``"evidence"`` and
        splits ``"test"`` (500 official ids), ``"train"`` (the other 500) and ``"all"``,
        each in the data's order.

    Raises:
        DataNotFoundError, InvalidInputError: see :func:`load_pubmedqa`; also test ids
            that are not in the data.

    Example:
        >>> bench = build_pubmedqa_benchmark()              # doctest: +SKIP
        >>> bench.passage("21645374-0").position             # doctest: +SKIP
        0
    """
    if isinstance(evidence_labels, str) or not all(isinstance(x, str) for x in evidence_labels):
        raise InvalidInputError(
            f"evidence_labels must be a collection of label strings such as ('RESULTS',), got {evidence_labels!r}"
        )
    records = load_pubmedqa(path, source=source)
    official = _resolve_test_ids(test_ids, path, source)
    wanted = set(evidence_labels)

    corpus: list[Passage] = []
    queries: dict[str, str] = {}
    abstract: dict[str, dict[str, int]] = {}
    evidence: dict[str, dict[str, int]] = {}
    answers: dict[str, dict[str, Any]] = {}
    section_labels: dict[str, str] = {}
    for rec in records:
        pids: list[str] = []
        for i, (text, label) in enumerate(zip(rec.contexts, rec.labels, strict=True)):
            pid = f"{rec.pmid}-{i}"
            corpus.append(Passage(text=text, id=pid, doc_id=rec.pmid, position=i))
            section_labels[pid] = label
            pids.append(pid)
        queries[rec.pmid] = rec.question
        abstract[rec.pmid] = {pid: 1 for pid in pids}
        ev = {pid: 1 for pid in pids if section_labels[pid] in wanted}
        if ev:
            evidence[rec.pmid] = ev
        answers[rec.pmid] = {"final_decision": rec.final_decision, "long_answer": rec.long_answer}

    all_ids = list(queries)
    splits: dict[str, list[str]] = {}
    if official is not None:
        missing = [t for t in official if t not in queries]
        if missing:
            raise InvalidInputError(
                f"{len(missing)} test ids are not PQA-L questions (e.g. {missing[:3]}); "
                f"the {TEST_FILE} does not match the data — use the file from the same release"
            )
        test_set = set(official)
        splits["test"] = [q for q in all_ids if q in test_set]
        splits["train"] = [q for q in all_ids if q not in test_set]
    splits["all"] = all_ids
    bench = RetrievalBenchmark(
        name="pubmedqa",
        corpus=corpus,
        queries=queries,
        qrels={"abstract": abstract, "evidence": evidence},
        splits=splits,
        answers=answers,
        section_labels=section_labels,
    )
    logger.info("built %r", bench)
    return bench

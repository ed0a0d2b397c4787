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
comes from ``test_ground_truth.json`` next to it. Reading and validating those raw
records lives in :mod:`meteora.datasets.pubmedqa_records`.

Example:
    >>> bench = build_pubmedqa_benchmark()                      # doctest: +SKIP
    >>> bench                                                    # doctest: +SKIP
    RetrievalBenchmark(name='pubmedqa', passages=3358, queries=1000, views={'abstract': 1000, 'evidence': 938}, splits={'test': 500, 'train': 500, 'all': 1000})
    >>> qids = bench.query_ids("test", limit=10)                # doctest: +SKIP
    >>> qrels = bench.qrels_for("abstract", qids)               # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meteora.datasets.pubmedqa_records import (
    _WHERE_HINT,
    EVIDENCE_LABELS,
    TEST_FILE,
    load_pubmedqa,
    load_test_ids,
)
from meteora.errors import DataNotFoundError, InvalidInputError
from meteora.types import Passage

__all__ = ["RetrievalBenchmark", "build_pubmedqa_benchmark"]

logger = logging.getLogger(__name__)


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

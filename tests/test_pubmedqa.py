"""Tests for meteora.datasets.pubmedqa: real-data counts, leakage, hub path, errors.

The real-data tests read ori_pqal.json and test_ground_truth.json from
``meteora.settings.data_dir("pubmedqa")`` ($METEORA_DATA_DIR or ../shared/data); the
hub path is exercised with a fake ``datasets.load_dataset`` (no network).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from meteora.datasets.pubmedqa import RetrievalBenchmark, build_pubmedqa_benchmark
from meteora.datasets.pubmedqa_records import PubMedQARecord, load_pubmedqa, load_test_ids
from meteora.errors import DataNotFoundError, InvalidInputError
from meteora.settings import data_dir
from meteora.types import Passage

# --------------------------------------------------------------------------------------
# real data


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    with open(data_dir("pubmedqa") / "ori_pqal.json", encoding="utf-8") as fh:
        return json.load(fh)


@pytest.fixture(scope="module")
def bench() -> RetrievalBenchmark:
    return build_pubmedqa_benchmark(source="local")


def test_counts(bench: RetrievalBenchmark) -> None:
    assert len(bench.queries) == 1000
    assert len(bench.corpus) == 3358
    assert len(bench.splits["test"]) == 500
    assert len(bench.splits["train"]) == 500
    assert len(bench.splits["all"]) == 1000
    assert len(bench.qrels["abstract"]) == 1000
    assert sum(len(r) for r in bench.qrels["abstract"].values()) == 3358
    # "evidence" = chunks labelled exactly "RESULTS": 938 questions have one (and exactly
    # one each: the file has 938 RESULTS chunks in all). The other 62 abstracts use
    # variant headings (RESULT, MAIN RESULTS, FINDINGS, METHODS AND RESULTS, ... : 44) or
    # have no results section (18); 32 of those 62 are in the official test split.
    assert len(bench.qrels["evidence"]) == 938
    assert all(len(r) == 1 for r in bench.qrels["evidence"].values())
    assert len(bench.qrels_for("evidence", bench.query_ids("test"))) == 468
    assert repr(bench) == (
        "RetrievalBenchmark(name='pubmedqa', passages=3358, queries=1000, "
        "views={'abstract': 1000, 'evidence': 938}, splits={'test': 500, 'train': 500, 'all': 1000})"
    )


def test_load_pubmedqa_records(raw: dict[str, Any]) -> None:
    records = load_pubmedqa(source="local")
    assert len(records) == 1000
    assert [r.pmid for r in records] == list(raw)  # file order
    first = records[0]
    assert isinstance(first, PubMedQARecord)
    src = raw[first.pmid]
    assert first.question == src["QUESTION"]
    assert first.contexts == src["CONTEXTS"] and first.labels == src["LABELS"]
    assert first.meshes == src["MESHES"] and first.long_answer == src["LONG_ANSWER"]
    assert first.year == int(src["YEAR"])
    assert sum(r.year is None for r in records) == 58  # YEAR is null for 58 records
    decisions = [r.final_decision for r in records]
    assert (decisions.count("yes"), decisions.count("no"), decisions.count("maybe")) == (
        552,
        338,
        110,
    )
    assert first.pmid in repr(first)


def test_splits(bench: RetrievalBenchmark, raw: dict[str, Any]) -> None:
    test_ids = load_test_ids()
    assert len(test_ids) == 500 and len(set(test_ids)) == 500
    test, train, all_ids = bench.splits["test"], bench.splits["train"], bench.splits["all"]
    assert set(test) == set(test_ids)
    assert not set(test) & set(train)
    assert set(test) | set(train) == set(all_ids) == set(bench.queries)
    assert all_ids == list(raw)  # stable order: the file's
    assert test == [q for q in raw if q in set(test_ids)]
    assert bench.query_ids("test", limit=5) == test[:5]
    assert bench.query_ids() == all_ids
    # building twice gives the same order
    assert build_pubmedqa_benchmark(source="local").splits == bench.splits


def test_passages_ids_positions_and_lookup(bench: RetrievalBenchmark, raw: dict[str, Any]) -> None:
    by_doc: dict[str, list[Passage]] = {}
    for p in bench.corpus:
        by_doc.setdefault(p.doc_id, []).append(p)
    assert set(by_doc) == set(raw)
    for pmid, passages in by_doc.items():
        assert [p.position for p in passages] == list(range(len(raw[pmid]["CONTEXTS"])))
        assert [p.id for p in passages] == [f"{pmid}-{i}" for i in range(len(passages))]
        assert bench.doc_passages(pmid) == passages
        assert set(bench.qrels["abstract"][pmid]) == {p.id for p in passages}
    pmid = next(iter(raw))
    assert bench.passage(f"{pmid}-0").text == raw[pmid]["CONTEXTS"][0]


def test_no_label_or_mesh_leakage(bench: RetrievalBenchmark, raw: dict[str, Any]) -> None:
    for p in bench.corpus:
        src = raw[p.doc_id]
        # the text is the chunk exactly as in the file: nothing (such as "RESULTS:") added
        assert p.text == src["CONTEXTS"][p.position]
        # metadata carries nothing, so neither labels nor MeSH terms can reach a method
        assert dict(p.metadata) == {}
        assert set(p.to_dict()) == {"id", "doc_id", "position", "text", "metadata"}
        # the label is kept apart, as ground truth
        assert bench.section_labels[p.id] == src["LABELS"][p.position]
    # the evidence view is exactly the RESULTS chunks
    for rels in bench.qrels["evidence"].values():
        assert all(bench.section_labels[pid] == "RESULTS" for pid in rels)
    assert bench.answers[pmid := next(iter(raw))] == {
        "final_decision": raw[pmid]["final_decision"],
        "long_answer": raw[pmid]["LONG_ANSWER"],
    }


def test_benchmark_methods_validate(bench: RetrievalBenchmark) -> None:
    with pytest.raises(InvalidInputError, match="unknown split"):
        bench.query_ids("dev")
    with pytest.raises(InvalidInputError, match="limit"):
        bench.query_ids("test", limit=0)
    with pytest.raises(InvalidInputError, match="unknown qrels view"):
        bench.qrels_for("results", ["21645374"])
    with pytest.raises(InvalidInputError, match="unknown query id"):
        bench.qrels_for("abstract", ["nope"])
    with pytest.raises(InvalidInputError, match="wrap it in a list"):
        bench.qrels_for("abstract", "21645374")
    with pytest.raises(InvalidInputError, match="unknown passage id"):
        bench.passage("nope-0")
    with pytest.raises(InvalidInputError, match="unknown document id"):
        bench.doc_passages("nope")
    # qrels_for returns a copy
    q = bench.qrels_for("abstract", ["21645374"])
    q["21645374"]["x"] = 1
    assert "x" not in bench.qrels["abstract"]["21645374"]
    # queries with no RESULTS chunk are simply absent from the evidence view
    no_results = next(q for q in bench.queries if q not in bench.qrels["evidence"])
    assert bench.qrels_for("evidence", [no_results]) == {}


def test_widening_evidence_labels(bench: RetrievalBenchmark) -> None:
    wide = build_pubmedqa_benchmark(
        source="local", evidence_labels=("RESULTS", "RESULT", "MAIN RESULTS", "FINDINGS")
    )
    assert len(wide.qrels["evidence"]) > len(bench.qrels["evidence"])
    with pytest.raises(InvalidInputError, match="evidence_labels"):
        build_pubmedqa_benchmark(source="local", evidence_labels="RESULTS")


# --------------------------------------------------------------------------------------
# synthetic files: errors and the hub path

TINY = {
    "101": {
        "QUESTION": "Does aspirin reduce fever?",
        "CONTEXTS": [
            "Fever is common.",
            "We gave aspirin to 40 adults.",
            "Fever fell in 30 of 40.",
        ],
        "LABELS": ["BACKGROUND", "METHODS", "RESULTS"],
        "MESHES": ["Aspirin", "Fever"],
        "YEAR": "2001",
        "LONG_ANSWER": "Aspirin reduces fever.",
        "final_decision": "yes",
    },
    "202": {
        "QUESTION": "Is coffee harmful?",
        "CONTEXTS": ["Coffee is widely drunk.", "No harm was found."],
        "LABELS": ["OBJECTIVE", "FINDINGS"],
        "MESHES": ["Coffee"],
        "YEAR": None,
        "LONG_ANSWER": "Probably not.",
        "final_decision": "no",
    },
    "303": {
        "QUESTION": "Do statins help?",
        "CONTEXTS": ["Statins lower cholesterol."],
        "LABELS": ["RESULTS"],
        "MESHES": [],
        "YEAR": "2010",
        "LONG_ANSWER": "Maybe.",
        "final_decision": "maybe",
    },
}


def _write_tiny(folder: Path, data: Any = None, test: Any = None) -> Path:
    sub = folder / "pubmedqa"
    sub.mkdir(parents=True, exist_ok=True)
    (sub / "ori_pqal.json").write_text(json.dumps(TINY if data is None else data), encoding="utf-8")
    if test is not False:
        (sub / "test_ground_truth.json").write_text(
            json.dumps(test or {"202": "no"}), encoding="utf-8"
        )
    return sub


def _hub_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The same records in the hub's pqa_labeled shape (int pubid, lower-case fields)."""
    return [
        {
            "pubid": int(pmid),
            "question": r["QUESTION"],
            "context": {"contexts": r["CONTEXTS"], "labels": r["LABELS"], "meshes": r["MESHES"]},
            "long_answer": r["LONG_ANSWER"],
            "final_decision": r["final_decision"],
        }
        for pmid, r in data.items()
    ]


class FakeLoadDataset:
    """Stands in for datasets.load_dataset; records its calls."""

    def __init__(
        self, rows: list[dict[str, Any]] | None = None, error: Exception | None = None
    ) -> None:
        self.rows, self.error, self.calls = rows, error, []

    def __call__(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        self.calls.append((args, kwargs))
        if self.error is not None:
            raise self.error
        return list(self.rows or [])


@pytest.fixture()
def fake_hub(monkeypatch: pytest.MonkeyPatch) -> FakeLoadDataset:
    datasets = pytest.importorskip("datasets")
    fake = FakeLoadDataset(_hub_rows(TINY))
    monkeypatch.setattr(datasets, "load_dataset", fake)
    return fake


def test_tiny_local_benchmark(tmp_path: Path) -> None:
    sub = _write_tiny(tmp_path)
    for where in (tmp_path, sub, sub / "ori_pqal.json"):  # data root, folder or file
        b = build_pubmedqa_benchmark(where)
        assert [p.id for p in b.corpus] == ["101-0", "101-1", "101-2", "202-0", "202-1", "303-0"]
        assert b.splits == {"test": ["202"], "train": ["101", "303"], "all": ["101", "202", "303"]}
        assert b.qrels["evidence"] == {
            "101": {"101-2": 1},
            "303": {"303-0": 1},
        }  # 202 has FINDINGS only
        assert b.qrels["abstract"]["202"] == {"202-0": 1, "202-1": 1}
        assert b.section_labels["202-1"] == "FINDINGS"


def test_env_var_locates_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_tiny(tmp_path)
    monkeypatch.setenv("METEORA_DATA_DIR", str(tmp_path))
    assert [r.pmid for r in load_pubmedqa()] == ["101", "202", "303"]
    assert load_test_ids() == ["202"]


def test_hub_path_with_fake_load_dataset(fake_hub: FakeLoadDataset, tmp_path: Path) -> None:
    records = load_pubmedqa(source="hub")
    assert fake_hub.calls == [(("qiaojin/PubMedQA", "pqa_labeled"), {"split": "train"})]
    local = load_pubmedqa(_write_tiny(tmp_path))
    # same content; the hub copy has no YEAR
    assert [r.pmid for r in records] == [r.pmid for r in local]
    for h, loc in zip(records, local, strict=True):
        assert (h.question, h.contexts, h.labels, h.meshes, h.long_answer, h.final_decision) == (
            loc.question,
            loc.contexts,
            loc.labels,
            loc.meshes,
            loc.long_answer,
            loc.final_decision,
        )
        assert h.year is None
    b = build_pubmedqa_benchmark(source="hub", test_ids=["202"])
    assert b.splits["test"] == ["202"] and len(b.corpus) == 6
    assert b.corpus == build_pubmedqa_benchmark(tmp_path).corpus


def test_hub_rows_with_list_of_dicts_context(monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")
    rows = _hub_rows(TINY)
    for row in rows:  # some datasets versions give a list of per-chunk dicts
        ctx = row["context"]
        row["context"] = [
            {"contexts": c, "labels": lab, "meshes": None}
            for c, lab in zip(ctx["contexts"], ctx["labels"], strict=True)
        ]
    monkeypatch.setattr(datasets, "load_dataset", FakeLoadDataset(rows))
    records = load_pubmedqa(source="hub")
    assert (
        records[0].contexts == TINY["101"]["CONTEXTS"]
        and records[0].labels == TINY["101"]["LABELS"]
    )


def test_auto_falls_back_to_hub_when_no_local_copy(
    fake_hub: FakeLoadDataset,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("METEORA_DATA_DIR", str(tmp_path))  # exists, but holds no pubmedqa/
    with caplog.at_level(logging.WARNING, logger="meteora.datasets.pubmedqa"):
        b = build_pubmedqa_benchmark()
    assert len(fake_hub.calls) == 1
    # no test_ground_truth.json anywhere: only the "all" split, with a warning and a hint
    assert list(b.splits) == ["all"]
    assert "test_ground_truth.json" in caplog.text
    with pytest.raises(InvalidInputError, match="test_ids="):
        b.query_ids("test")


def test_auto_prefers_local_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")
    fake = FakeLoadDataset(error=AssertionError("the hub must not be called"))
    monkeypatch.setattr(datasets, "load_dataset", fake)
    _write_tiny(tmp_path)
    monkeypatch.setenv("METEORA_DATA_DIR", str(tmp_path))
    assert len(build_pubmedqa_benchmark().corpus) == 6
    assert fake.calls == []


def test_missing_file_names_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METEORA_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DataNotFoundError, match="METEORA_DATA_DIR"):
        load_pubmedqa(source="local")
    with pytest.raises(DataNotFoundError, match="METEORA_DATA_DIR"):
        load_pubmedqa(tmp_path / "missing.json")  # explicit path: no silent hub fallback
    with pytest.raises(DataNotFoundError, match="METEORA_DATA_DIR"):
        load_test_ids()
    _write_tiny(tmp_path, test=False)
    with pytest.raises(DataNotFoundError, match="test_ground_truth.json"):
        build_pubmedqa_benchmark(tmp_path, source="local")


def test_hub_failure_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(
        datasets, "load_dataset", FakeLoadDataset(error=ConnectionError("no route to host"))
    )
    with pytest.raises(DataNotFoundError, match="no route to host") as err:
        load_pubmedqa(source="hub")
    assert "METEORA_DATA_DIR" in str(err.value)
    monkeypatch.setenv("METEORA_DATA_DIR", str(tmp_path))
    with pytest.raises(DataNotFoundError, match="hub fallback failed"):
        load_pubmedqa()
    with pytest.raises(InvalidInputError, match="source"):
        load_pubmedqa(source="web")
    with pytest.raises(InvalidInputError, match="path is only used"):
        load_pubmedqa(tmp_path, source="hub")


def test_malformed_files_raise_clear_errors(tmp_path: Path) -> None:
    sub = _write_tiny(tmp_path)
    (sub / "ori_pqal.json").write_text('{"101": {"QUESTION": "x", ', encoding="utf-8")  # truncated
    with pytest.raises(InvalidInputError, match="not valid JSON") as err:
        load_pubmedqa(sub)
    assert "ori_pqal.json" in str(err.value) and "download it again" in str(err.value)

    (sub / "ori_pqal.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(InvalidInputError, match="JSON object"):
        load_pubmedqa(sub)

    bad = json.loads(json.dumps(TINY))
    bad["101"]["LABELS"] = ["BACKGROUND"]  # 1 label for 3 chunks
    del bad["202"]["QUESTION"]
    bad["303"]["final_decision"] = "perhaps"
    _write_tiny(tmp_path, data=bad)
    with pytest.raises(InvalidInputError) as err:
        load_pubmedqa(sub)
    msg = str(err.value)
    assert "3 of 3 records" in msg
    assert "'101'" in msg and "LABELS has 1 entries for 3 CONTEXTS" in msg
    assert "'202'" in msg and "QUESTION" in msg
    assert "'303'" in msg and "perhaps" in msg

    _write_tiny(tmp_path, test={"999": "yes"})
    with pytest.raises(InvalidInputError, match="not PQA-L questions"):
        build_pubmedqa_benchmark(sub)
    (sub / "test_ground_truth.json").write_text('"202"', encoding="utf-8")
    with pytest.raises(InvalidInputError, match="test_ground_truth.json"):
        load_test_ids(sub)


def test_malformed_hub_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")
    rows = _hub_rows(TINY)
    rows.append(dict(rows[0]))  # duplicate pubid
    monkeypatch.setattr(datasets, "load_dataset", FakeLoadDataset(rows))
    with pytest.raises(InvalidInputError, match="duplicate pubid"):
        load_pubmedqa(source="hub")
    monkeypatch.setattr(datasets, "load_dataset", FakeLoadDataset([]))
    with pytest.raises(InvalidInputError, match="no rows"):
        load_pubmedqa(source="hub")


def test_retrieval_benchmark_checks_consistency() -> None:
    p = Passage("a", id="d-0", doc_id="d")
    with pytest.raises(InvalidInputError, match="duplicate passage id"):
        RetrievalBenchmark(
            name="t", corpus=[p, p], queries={"q": "?"}, qrels={}, splits={"all": ["q"]}
        )
    with pytest.raises(InvalidInputError, match="unknown queries"):
        RetrievalBenchmark(
            name="t", corpus=[p], queries={"q": "?"}, qrels={"v": {"x": {"d-0": 1}}}, splits={}
        )
    with pytest.raises(InvalidInputError, match="unknown queries"):
        RetrievalBenchmark(
            name="t", corpus=[p], queries={"q": "?"}, qrels={}, splits={"all": ["x"]}
        )

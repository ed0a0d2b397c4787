"""Benchmarks on any BEIR-format folder (``meteora bench beir DIR``), the BioASQ
positional folder, the results-path check done before any work, and the views a run
scores by default."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from meteora.bench.config import BenchmarkConfig
from meteora.bench.pubmedqa import run_benchmark
from meteora.cli import main
from meteora.datasets.beir import beir_dataset_name, build_beir_benchmark
from meteora.errors import DataNotFoundError, InvalidInputError

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "beir_tiny"


def _copy_example(tmp_path: Path) -> Path:
    return Path(shutil.copytree(EXAMPLE, tmp_path / "ds"))


# ------------------------------------------------------------------ loading
def test_the_example_folder_loads():
    bench = build_beir_benchmark(EXAMPLE)
    assert bench.name == "beir-beir_tiny" == beir_dataset_name(EXAMPLE)
    assert [p.id for p in bench.corpus] == ["p1", "p2", "p3"]
    p1, p2, p3 = bench.corpus
    # doc_id/position group p1, p2; p3 has neither and is its own document
    assert (p1.doc_id, p1.position, p2.doc_id, p2.position) == ("trial-1", 0, "trial-1", 1)
    assert (p3.doc_id, p3.position) == ("p3", 0)
    assert p1.text == "Aspirin after stroke Aspirin reduced recurrent stroke by 20% (HR 0.80)."
    assert p1.metadata == {"title": "Aspirin after stroke"}
    assert bench.views == ["evidence"]
    assert bench.query_ids("test") == ["q1", "q2"]
    assert bench.qrels_for("evidence") == {"q1": {"p1": 1}, "q2": {"p3": 1}}
    assert [p.id for p in bench.doc_passages("trial-1")] == ["p1", "p2"]


def test_grades_headerless_qrels_positions_and_order(tmp_path):
    ds = tmp_path / "ds"
    (ds / "qrels").mkdir(parents=True)
    rows = [
        {"_id": "b", "text": "second chunk", "doc_id": "D", "position": 1},
        {"_id": "a", "text": "first chunk", "doc_id": "D", "position": 0},
        {"_id": "c", "title": "only a title"},
        {"_id": "e", "text": "no position one", "doc_id": "E"},
        {"_id": "f", "text": "no position two", "doc_id": "E"},
    ]
    (ds / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    (ds / "queries.jsonl").write_text('{"_id": 7, "text": "q seven"}\n{"_id": "8", "text": "q eight"}\n'
                                      '{"_id": "9", "text": "unjudged"}\n', encoding="utf-8")
    (ds / "qrels" / "dev.tsv").write_text("7\tb\t2\n7\ta\t0\n7\tc\t1\n", encoding="utf-8")
    (ds / "qrels" / "test.tsv").write_text("8\tQ0\tf\t1\n", encoding="utf-8")  # TREC's 4 columns
    bench = build_beir_benchmark(ds, name="mine")
    assert bench.name == "mine"
    assert [p.id for p in bench.corpus] == ["a", "b", "c", "e", "f"]  # grouped, in position order
    assert [(p.doc_id, p.position) for p in bench.corpus] == [("D", 0), ("D", 1), ("c", 0), ("E", 0), ("E", 1)]
    assert bench.passage("c").text == "only a title"
    assert bench.qrels_for("evidence") == {"7": {"b": 2, "c": 1}, "8": {"f": 1}}  # grade 0: not relevant
    assert bench.splits == {"dev": ["7"], "test": ["8"]}
    assert "9" not in bench.queries


@pytest.mark.parametrize(
    "part,content,match",
    [
        ("corpus.jsonl", '{"_id": "p1", "text": "x"}\n{"_id": "p2", "text": \n', r"corpus\.jsonl:2: not valid JSON"),
        ("corpus.jsonl", '{"_id": "p1", "text": "x"}\n{"_id": "p1", "text": "y"}\n',
         r"corpus\.jsonl:2: duplicate _id 'p1' \(first on line 1\)"),
        ("corpus.jsonl", '{"text": "x"}\n', r"corpus\.jsonl:1: needs a non-empty string '_id'"),
        ("corpus.jsonl", '["p1", "x"]\n', r"corpus\.jsonl:1: expected a JSON object, got list"),
        ("corpus.jsonl", '{"_id": "p1", "title": "", "text": ""}\n', r"corpus\.jsonl:1: passage 'p1' has neither"),
        ("corpus.jsonl", '{"_id": "p1", "text": 3}\n', r"corpus\.jsonl:1: 'text' must be a string"),
        ("corpus.jsonl", '{"_id": "p1", "text": "x", "doc_id": "d", "position": -1}\n',
         r"corpus\.jsonl:1: 'position' must be a non-negative integer"),
        ("corpus.jsonl", '{"_id": "p1", "text": "x", "doc_id": "d", "position": 0}\n{"_id": "p2", "text": "y", "doc_id": "d"}\n',
         r"document 'd' has passages with and without 'position' \(line 2\)"),
        ("corpus.jsonl", '{"_id": "p1", "text": "x", "doc_id": "d", "position": 0}\n'
                         '{"_id": "p2", "text": "y", "doc_id": "d", "position": 0}\n', "two passages at position 0"),
        ("queries.jsonl", '{"_id": "q1", "text": ""}\n', r"queries\.jsonl:1: query 'q1' has no 'text'"),
        ("qrels/test.tsv", "query-id\tcorpus-id\tscore\nq1\tp1\t1\nq2\tp9\t1\n",
         r"test\.tsv:3: passage 'p9' is not in corpus\.jsonl"),
        ("qrels/test.tsv", "q1\tp1\t1\nq7\tp1\t1\n", r"test\.tsv:2: query 'q7' is not in queries\.jsonl"),
        ("qrels/test.tsv", "q1\tp1\t1\nq2\tp3\thigh\n", r"test\.tsv:2: score must be an integer"),
        ("qrels/test.tsv", "q1 p1 1\n", r"test\.tsv:1: expected 3 tab-separated columns"),
        ("corpus.jsonl", b"\xff\xfe\n", "not UTF-8"),
    ],
)
def test_bad_files_name_file_and_line(tmp_path, part, content, match):
    ds = _copy_example(tmp_path)
    target = ds / part
    if isinstance(content, bytes):
        target.write_bytes(content)
    else:
        target.write_text(content, encoding="utf-8")
    with pytest.raises(InvalidInputError, match=match):
        build_beir_benchmark(ds)


def test_missing_parts_and_conflicting_splits(tmp_path):
    with pytest.raises(DataNotFoundError, match="BEIR folder not found"):
        build_beir_benchmark(tmp_path / "nowhere")
    with pytest.raises(DataNotFoundError, match="needs its folder"):
        build_beir_benchmark(None)
    ds = _copy_example(tmp_path)
    (ds / "qrels" / "dev.tsv").write_text("q1\tp2\t1\n", encoding="utf-8")
    with pytest.raises(InvalidInputError, match="query 'q1' is judged differently in"):
        build_beir_benchmark(ds)
    shutil.rmtree(ds / "qrels")
    with pytest.raises(DataNotFoundError, match=r"holds no <split>\.tsv"):
        build_beir_benchmark(ds)
    (ds / "queries.jsonl").unlink()
    with pytest.raises(DataNotFoundError, match="has no queries.jsonl"):
        build_beir_benchmark(ds)


# ------------------------------------------------------------------ output paths, before any work
def test_a_bad_out_fails_before_any_work(tmp_path, monkeypatch):
    from meteora.bench import pubmedqa

    def no_work(*a, **k):
        raise AssertionError("the run started before the output path was checked")

    monkeypatch.setattr(pubmedqa, "BenchmarkContext", no_work)
    blocker = tmp_path / "a-file"
    blocker.write_text("x", encoding="utf-8")
    cfg = BenchmarkConfig(methods=["bm25"], dataset="beir", data_path=str(EXAMPLE), out_dir=str(blocker / "sub"))
    with pytest.raises(InvalidInputError, match="cannot write the results into .*a-file.* is a file, not a folder"):
        run_benchmark(cfg)
    cfg = BenchmarkConfig(methods=["bm25"], dataset="beir", data_path=str(EXAMPLE), out_dir=str(blocker))
    with pytest.raises(InvalidInputError, match="a-file is a file, not a folder"):
        run_benchmark(cfg)
    (tmp_path / "r" / "beir-beir_tiny_test.json").mkdir(parents=True)
    cfg = BenchmarkConfig(methods=["bm25"], dataset="beir", data_path=str(EXAMPLE), out_dir=str(tmp_path / "r"))
    with pytest.raises(InvalidInputError, match="it is a folder"):
        run_benchmark(cfg)
    # the CLI says the same and exits 2
    assert main(["-q", "bench", "beir", str(EXAMPLE), "--methods", "bm25", "--out", str(blocker / "x")]) == 2


def test_results_paths():
    cfg = BenchmarkConfig(dataset="beir", data_path="some/where/SciFact", out_dir="res", limit=5)
    assert cfg.results_stem() == "beir-SciFact_test_n5"
    assert [p.as_posix() for p in cfg.results_paths()] == ["res/beir-SciFact_test_n5.json", "res/beir-SciFact_test_n5.png"]
    cfg = BenchmarkConfig(out_dir="res/mine.json")
    assert [p.as_posix() for p in cfg.results_paths()] == ["res/mine.json", "res/mine.png"]


# ------------------------------------------------------------------ runs
def test_unknown_view_is_reported_before_the_methods_run(tmp_path):
    cfg = BenchmarkConfig(methods=["bm25"], dataset="beir", data_path=str(EXAMPLE), views=["abstract"])
    with pytest.raises(InvalidInputError, match=r"unknown qrels views \['abstract'\] for beir-beir_tiny; available: \['evidence'\]"):
        run_benchmark(cfg, write=False)


@pytest.mark.slow
def test_bench_beir_cli_on_the_example(tmp_path, monkeypatch, tiny_st_dir, capsys):
    """All the method kinds on the 3-passage example (a tiny random encoder, so only
    BM25's figures mean something: its word overlap finds both relevant passages)."""
    monkeypatch.setenv("METEORA_HOME", str(tmp_path / "home"))
    out = tmp_path / "results"
    argv = ["-q", "bench", "beir", str(EXAMPLE), "--methods", "bm25,dense,hybrid,meteora-query-only-no-scorer",
            "--embedding-model", str(tiny_st_dir), "--ks", "1,2", "--candidates", "3", "--out", str(out)]
    assert main(argv) == 0
    assert "evidence view (2 queries)" in capsys.readouterr().out
    path = out / "beir-beir_tiny_test.json"
    png = out / "beir-beir_tiny_test.png"
    pytest.importorskip("matplotlib")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = json.loads(path.read_text(encoding="utf-8"))
    assert res["command"].startswith("meteora -q bench beir ")
    assert res["config"]["dataset"] == "beir" and res["config"]["views"] == ["evidence"]
    assert res["dataset"] == {"name": "BEIR beir-beir_tiny", "id": "beir", "corpus_chunks": 3, "queries": 2,
                              "split": "test"}
    methods = res["views"]["evidence"]["methods"]
    assert set(methods) == {"bm25", "bm25@1", "bm25@2", "dense", "dense@1", "dense@2", "hybrid", "hybrid@1",
                            "hybrid@2", "meteora-query-only-no-scorer"}
    assert methods["bm25"]["NDCG@10"] == 1.0 and methods["bm25"]["Recall@1"] == 1.0
    assert methods["bm25@1"]["precision"] == 1.0
    # q1 matches both chunks of trial-1 (the title is in each), q2 only p3: BM25 ranks nothing else
    assert methods["bm25@2"]["mean_chunks"] == 1.5 and methods["bm25@2"]["precision"] == 0.75
    sel = methods["meteora-query-only-no-scorer"]
    assert 1.0 <= sel["mean_chunks"] <= 3.0 and 0.0 <= sel["F1"] <= 1.0

    # the Python equivalent (the README's) runs the same code path to the same figures
    from meteora.bench.config import BenchmarkConfig as Config
    from meteora.bench.pubmedqa import format_results
    from meteora.bench.pubmedqa import run_benchmark as run

    again = run(Config(dataset="beir", data_path=str(EXAMPLE), methods=["bm25"], ks=[1, 2]), write=False)
    assert again["views"]["evidence"]["methods"]["bm25@2"] == methods["bm25@2"]
    assert "bm25@1" in format_results(again)


def _golden(folder: Path) -> Path:
    folder.mkdir()
    q = lambda qid, body, pmid, texts: {  # noqa: E731
        "id": qid, "body": body, "type": "yesno",
        "snippets": [{"text": t, "document": f"http://www.ncbi.nlm.nih.gov/pubmed/{pmid}",
                      "beginSection": "abstract", "offsetInBeginSection": 10 * i} for i, t in enumerate(texts)],
    }
    data = {"questions": [
        q("a", "Does aspirin prevent stroke?", "111", ["Aspirin prevented recurrent stroke.", "Bleeding was rare."]),
        q("b", "Are fluids used in canine renal failure?", "222", ["Dogs with renal failure received fluids."]),
    ]}
    (folder / "1B1_golden.json").write_text(json.dumps(data), encoding="utf-8")
    return folder


def test_bench_bioasq_takes_the_folder_and_scores_its_own_views(tmp_path, monkeypatch):
    monkeypatch.setenv("METEORA_HOME", str(tmp_path / "home"))
    folder = _golden(tmp_path / "golden")
    out = tmp_path / "out.json"
    assert main(["-q", "bench", "bioasq", str(folder), "--methods", "bm25", "--ks", "1", "--no-plot",
                 "--out", str(out)]) == 0
    res = json.loads(out.read_text(encoding="utf-8"))
    assert res["config"]["views"] == ["evidence"]  # no --views evidence needed any more
    assert res["dataset"]["corpus_chunks"] == 3 and res["dataset"]["queries"] == 2
    # BM25 cannot find "Bleeding was rare." (no word in common with its question): recall 1/2 and 1/1
    assert res["views"]["evidence"]["methods"]["bm25"]["Recall@5"] == 0.75
    assert [p.name for p in tmp_path.iterdir() if p.suffix in (".json", ".png")] == ["out.json"]

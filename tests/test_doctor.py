"""``meteora doctor``, ``meteora --version`` and the console rules (quiet third-party
loggers, progress bars only on a terminal)."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys

import pytest

import meteora
from meteora.cli import main
from meteora.console import progress_enabled, set_progress, third_party_level
from meteora.doctor import DOCTOR_PACKAGES, collect, format_report


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"meteora {meteora.__version__}"


@pytest.fixture
def pulled_home(tmp_path, monkeypatch):
    """A fresh METEORA_HOME holding only the GGUF (a stand-in file: doctor loads no model)."""
    from meteora.models import default_embedding_path, pulled_gguf_path

    if default_embedding_path() is None:
        pytest.skip("the packaged MiniLM is not installed (run `meteora models pull`)")
    monkeypatch.setenv("METEORA_HOME", str(tmp_path / "home"))
    pulled_gguf_path().parent.mkdir(parents=True)
    pulled_gguf_path().write_bytes(b"GGUF")
    return tmp_path / "home"


def test_doctor_reports_this_installation(pulled_home):
    report = collect(with_torch=False)
    assert report["meteora"]["version"] == meteora.__version__
    assert set(report["packages"]) == set(DOCTOR_PACKAGES)
    assert report["packages"]["numpy"] == __import__("numpy").__version__
    assert report["backends"]["transformers"] is True
    assert report["paths"]["METEORA_HOME"] == {"path": str(pulled_home), "exists": True}
    assert report["paths"]["rationale cache"] == {"path": str(pulled_home / "rationales.sqlite"), "exists": False}
    scorer = report["models"]["evidence scorer (packaged adapter)"]
    assert scorer["exists"] and scorer["path"].endswith("evidence-scorer")
    assert report["default_backend"] == "llamacpp"
    assert report["problems"] == []
    # no transformers copy of SmolLM2 in this home: a hint (training, adapters), not a problem
    assert report["models"]["rationale LM: SmolLM2-135M transformers copy"] == {"path": None, "exists": False}
    assert any("transformers copy of SmolLM2" in h and "meteora models pull" in h for h in report["hints"])
    text = format_report(report)
    assert f"meteora {meteora.__version__}" in text and str(pulled_home) in text
    assert "no problems found" in text and "(not created yet)" in text


def test_doctor_fails_when_the_default_reranker_cannot_be_built(tmp_path, monkeypatch, capsys):
    from meteora import models

    # a fresh install before `meteora models pull`: no MiniLM package, no GGUF anywhere
    monkeypatch.setenv("METEORA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(models, "_package_dir", lambda module: None)
    [problem] = collect(with_torch=False)["problems"]
    assert problem.startswith("the default Reranker() cannot be built:") and "meteora models pull" in problem
    assert main(["-q", "doctor", "--no-torch"]) == 1
    out = capsys.readouterr().out
    assert "\nproblems\n  - the default Reranker() cannot be built" in out and "no problems found" not in out


def test_doctor_without_llamacpp_needs_the_transformers_copy(pulled_home, monkeypatch):
    import meteora.lm.llamacpp

    monkeypatch.setattr(meteora.lm.llamacpp, "llamacpp_available", lambda: False)
    [problem] = collect(with_torch=False)["problems"]
    assert "cannot be built" in problem and "xllamacpp, is not installed" in problem
    assert 'pip install "meteora-rerank[gguf]"' in problem
    # with the converted copy, the default runs on transformers: no problem
    folder = pulled_home / "models" / "SmolLM2-135M-Instruct"
    folder.mkdir()
    (folder / ".complete").write_text("{}")
    report = collect(with_torch=False)
    assert report["problems"] == [] and report["default_backend"] == "transformers"


def test_doctor_cli_json_and_a_broken_install(pulled_home, monkeypatch, capsys):
    assert main(["-q", "doctor", "--json", "--no-torch"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["problems"] == [] and "torch" not in report
    import meteora.scorer

    monkeypatch.setattr(meteora.scorer, "default_scorer_path", lambda: None)
    assert main(["-q", "doctor", "--no-torch"]) == 1
    out = capsys.readouterr().out
    assert "problems" in out and "evidence scorer" in out and "reinstall meteora-rerank" in out


def test_doctor_torch_line():
    pytest.importorskip("torch")
    t = collect()["torch"]
    assert t["cuda"] in (True, False) and t["threads"] >= 1


# ------------------------------------------------------------------ console rules
class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def test_progress_bars_only_on_a_terminal_at_info(monkeypatch):
    monkeypatch.delenv("METEORA_PROGRESS", raising=False)
    log = logging.getLogger("meteora")
    old = log.level
    log.setLevel(logging.INFO)
    try:
        _check_progress_rule(monkeypatch, log)
    finally:
        log.setLevel(old)


def _check_progress_rule(monkeypatch, log):
    monkeypatch.setattr(sys, "stderr", _Stream(tty=True))
    assert progress_enabled() is True
    monkeypatch.setattr(sys, "stderr", _Stream(tty=False))  # a log file, a pipe, CI
    assert progress_enabled() is False
    monkeypatch.setenv("METEORA_PROGRESS", "1")
    assert progress_enabled() is True
    monkeypatch.setenv("METEORA_PROGRESS", "0")
    monkeypatch.setattr(sys, "stderr", _Stream(tty=True))
    assert progress_enabled() is False
    monkeypatch.delenv("METEORA_PROGRESS")
    log.setLevel(logging.WARNING)  # -q
    assert progress_enabled() is False
    set_progress(True)
    try:
        assert progress_enabled() is True
    finally:
        set_progress(None)


def test_third_party_levels():
    assert [third_party_level(v, False) for v in (0, 1, 2)] == [logging.WARNING, logging.INFO, logging.DEBUG]
    assert third_party_level(2, True) == logging.WARNING


_QUIET_SCRIPT = """
import logging, sys
from meteora.console import setup_logging
setup_logging(int(sys.argv[1]))
import bm25s                      # sets its own logger to DEBUG
logging.getLogger("bm25s").debug("bm25s debug line")
logging.getLogger("faiss.loader").info("faiss loader chatter")
logging.getLogger("meteora.bench").info("meteora says hello")
logging.getLogger("some.lib").warning("a real warning")
try:
    import faiss  # noqa: F401  (its loader logs AVX512 attempts at INFO)
except ImportError:
    pass
"""


def test_third_party_loggers_stay_at_warning_unless_verbose():
    run = lambda v: subprocess.run(  # noqa: E731
        [sys.executable, "-c", _QUIET_SCRIPT, str(v)], capture_output=True, text=True, timeout=120
    )
    quiet = run(0)
    assert quiet.returncode == 0, quiet.stderr
    assert "meteora says hello" in quiet.stderr and "a real warning" in quiet.stderr
    for chatter in ("bm25s debug line", "faiss loader chatter", "AVX512", "Loading faiss"):
        assert chatter not in quiet.stderr, chatter
    verbose = run(1)
    assert "faiss loader chatter" in verbose.stderr and "bm25s debug line" not in verbose.stderr
    assert "bm25s debug line" in run(2).stderr


def test_bitsandbytes_cpu_warning_is_held_back_unless_verbose():
    script = (
        "import logging, sys\nfrom meteora.console import setup_logging\nsetup_logging(int(sys.argv[1]))\n"
        "logging.getLogger('bitsandbytes.backends.cpu.ops').warning('Failed to load CPU gemm_4bit_forward')\n"
        "logging.getLogger('bitsandbytes.x').error('a real bitsandbytes error')\n"
    )
    run = lambda v: subprocess.run(  # noqa: E731
        [sys.executable, "-c", script, str(v)], capture_output=True, text=True, timeout=60
    ).stderr
    quiet, verbose = run(0), run(1)
    assert "gemm_4bit_forward" not in quiet and "a real bitsandbytes error" in quiet
    assert "gemm_4bit_forward" in verbose

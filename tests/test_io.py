"""Atomic file writing (meteora._io) and process settings (meteora.settings)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from meteora import _io
from meteora._io import (
    atomic_directory,
    atomic_save_npy,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    read_json,
)
from meteora.errors import DataNotFoundError, InvalidInputError
from meteora.settings import apply_thread_setting, data_dir, meteora_home, set_num_threads


def _leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


# ------------------------------------------------------------------ atomic files
def test_write_json_round_trip_and_no_temp_files(tmp_path):
    target = tmp_path / "sub" / "x.json"
    atomic_write_json(target, {"a": [1, 2], "é": "ü"})
    assert read_json(target) == {"a": [1, 2], "é": "ü"}
    assert target.read_text(encoding="utf-8").endswith("\n")
    assert _leftovers(target.parent, {"x.json"}) == []


def test_write_text_and_bytes(tmp_path):
    atomic_write_text(tmp_path / "t.txt", "héllo")
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert _leftovers(tmp_path, {"t.txt", "b.bin"}) == []


def test_overwrite_replaces_content(tmp_path):
    target = tmp_path / "x.json"
    atomic_write_json(target, {"v": 1})
    atomic_write_json(target, {"v": 2})
    assert read_json(target) == {"v": 2}
    assert _leftovers(tmp_path, {"x.json"}) == []


def test_failed_serialisation_keeps_old_file(tmp_path):
    target = tmp_path / "x.json"
    atomic_write_json(target, {"v": "old"})
    with pytest.raises(TypeError):
        atomic_write_json(target, {"v": object()})  # not JSON-serialisable
    assert read_json(target) == {"v": "old"}
    assert _leftovers(tmp_path, {"x.json"}) == []


def test_failed_replace_keeps_old_file_and_removes_temp(tmp_path, monkeypatch):
    target = tmp_path / "x.json"
    atomic_write_json(target, {"v": "old"})

    def boom(src, dst):
        raise OSError("disk on fire")

    monkeypatch.setattr(_io.os, "replace", boom)
    with pytest.raises(OSError, match="disk on fire"):
        atomic_write_json(target, {"v": "new"})
    monkeypatch.undo()
    assert read_json(target) == {"v": "old"}
    assert _leftovers(tmp_path, {"x.json"}) == []


def test_failed_write_midway_removes_temp(tmp_path, monkeypatch):
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")

    def boom(fd):
        raise OSError("fsync failed")

    monkeypatch.setattr(_io.os, "fsync", boom)
    with pytest.raises(OSError, match="fsync failed"):
        atomic_write_bytes(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path, {"x.bin"}) == []


def test_atomic_save_npy_round_trip_never_pickles(tmp_path):
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    atomic_save_npy(tmp_path / "a.npy", arr)
    back = np.load(tmp_path / "a.npy", allow_pickle=False)
    assert back.dtype == np.float32 and np.array_equal(back, arr)
    with pytest.raises(ValueError):
        atomic_save_npy(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object))
    assert not (tmp_path / "o.npy").exists()


# ------------------------------------------------------------------ atomic directories
def test_atomic_directory_creates(tmp_path):
    with atomic_directory(tmp_path / "idx") as tmp:
        assert tmp.parent == tmp_path and tmp.name != "idx"
        (tmp / "a.txt").write_text("hi")
        assert not (tmp_path / "idx").exists()  # nothing visible before the block ends
    assert (tmp_path / "idx" / "a.txt").read_text() == "hi"
    assert _leftovers(tmp_path, {"idx"}) == []


def test_atomic_directory_replaces_existing(tmp_path):
    target = tmp_path / "idx"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_directory(target) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert _leftovers(tmp_path, {"idx"}) == []


def test_atomic_directory_failure_leaves_old_and_no_partial(tmp_path):
    target = tmp_path / "idx"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="midway"):
        with atomic_directory(target) as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("midway")
    assert sorted(p.name for p in target.iterdir()) == ["old.txt"]
    assert _leftovers(tmp_path, {"idx"}) == []


def test_atomic_directory_failure_without_existing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_directory(tmp_path / "idx") as tmp:
            (tmp / "half.txt").write_text("half")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_atomic_directory_no_overwrite(tmp_path):
    (tmp_path / "idx").mkdir()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        with atomic_directory(tmp_path / "idx", overwrite=False):
            pass  # pragma: no cover
    assert list(tmp_path.iterdir()) == [tmp_path / "idx"]


# ------------------------------------------------------------------ settings
def test_meteora_home_env(monkeypatch, tmp_path):
    monkeypatch.setenv("METEORA_HOME", str(tmp_path / "h"))
    assert meteora_home() == tmp_path / "h"
    monkeypatch.delenv("METEORA_HOME")
    assert meteora_home() == Path.home() / ".cache" / "meteora"


def test_data_dir_env(monkeypatch, tmp_path):
    (tmp_path / "pubmedqa").mkdir()
    monkeypatch.setenv("METEORA_DATA_DIR", str(tmp_path))
    assert data_dir() == tmp_path
    assert data_dir("pubmedqa") == tmp_path / "pubmedqa"


def test_data_dir_explicit_beats_env(monkeypatch, tmp_path):
    explicit = tmp_path / "mine"
    (explicit / "pubmedqa").mkdir(parents=True)
    monkeypatch.setenv("METEORA_DATA_DIR", str(tmp_path / "elsewhere"))
    assert data_dir("pubmedqa", explicit=explicit) == explicit / "pubmedqa"


def test_data_dir_missing_names_env_var(monkeypatch, tmp_path):
    monkeypatch.setenv("METEORA_DATA_DIR", str(tmp_path / "nope"))
    with pytest.raises(DataNotFoundError) as info:
        data_dir("pubmedqa")
    msg = str(info.value)
    assert "METEORA_DATA_DIR" in msg
    assert str(tmp_path / "nope" / "pubmedqa") in msg


def test_data_dir_fallback_finds_shared_data(monkeypatch):
    # the checkout's ../shared/data (what CI uses)
    monkeypatch.delenv("METEORA_DATA_DIR", raising=False)
    try:
        found = data_dir("pubmedqa")
    except DataNotFoundError:
        pytest.skip("no ../shared/data next to this checkout")
    assert (found / "ori_pqal.json").exists()


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_set_num_threads_validation(bad):
    with pytest.raises(InvalidInputError, match="num_threads must be a positive integer"):
        set_num_threads(bad)  # type: ignore[arg-type]


def test_set_num_threads_applies():
    import torch

    before = torch.get_num_threads()
    try:
        set_num_threads(1)
        assert torch.get_num_threads() == 1
        set_num_threads(None)  # leaves it alone
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_apply_thread_setting_env(monkeypatch):
    import torch

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("METEORA_NUM_THREADS", "1")
        apply_thread_setting()
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("METEORA_NUM_THREADS", "lots")
        with pytest.raises(InvalidInputError, match="METEORA_NUM_THREADS must be an integer"):
            apply_thread_setting()
        monkeypatch.setenv("METEORA_NUM_THREADS", "0")
        with pytest.raises(InvalidInputError):
            apply_thread_setting()
    finally:
        torch.set_num_threads(before)



def test_atomic_files_and_directories_get_the_usual_permissions(tmp_path):
    import os
    import stat

    from meteora._io import atomic_directory, atomic_write_text

    mask = os.umask(0o022)
    os.umask(mask)
    f = tmp_path / "a.json"
    atomic_write_text(f, "{}")
    assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~mask  # not tempfile's owner-only 0600
    with atomic_directory(tmp_path / "idx") as tmp:
        (tmp / "x").write_text("1")
    assert stat.S_IMODE((tmp_path / "idx").stat().st_mode) == 0o777 & ~mask


def test_constructors_leave_torch_threads_alone_and_the_cli_sets_them(monkeypatch, tiny_st_dir):
    import torch

    from meteora.cli import main
    from meteora.embeddings.encoder import Encoder

    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    monkeypatch.setenv("METEORA_NUM_THREADS", str(other))
    try:
        Encoder(str(tiny_st_dir), device="cpu")
        assert torch.get_num_threads() == before  # a library object never changes it
        assert main(["-q", "doctor", "--json"]) in (0, 1)  # any command: set where the process starts
        assert torch.get_num_threads() == other
    finally:
        torch.set_num_threads(before)

"""The index folder: versions behind a pointer, refusing what is not ours, checked manifests."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from meteora.errors import IndexFormatError, InvalidInputError, UnsafeOverwriteError
from meteora.retrievers.base import load_retriever
from meteora.retrievers.bm25 import BM25Retriever
from meteora.retrievers.hybrid import HybridRetriever
from meteora.retrievers.index_files import write_manifest, write_passages
from meteora.retrievers.storage import LOCK_NAME, POINTER_NAME, check_index_target, resolve_index
from meteora.types import Passage

OLD = [Passage(f"aspirin fever note {i}", id=f"a{i}") for i in range(5)]
NEW = [Passage(f"statin cholesterol note {i}", id=f"b{i}") for i in range(7)]


def _bm25(passages) -> BM25Retriever:
    return BM25Retriever(backend="numpy").index(passages)


def _versions(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("v-"))


# -- publishing -------------------------------------------------------------------------------
def test_save_publishes_a_version_behind_a_pointer(tmp_path):
    path = _bm25(OLD).save(tmp_path / "idx")
    pointer = json.loads((path / POINTER_NAME).read_text())
    assert pointer["current"] == _versions(path)[0]
    assert (resolve_index(path) / "manifest.json").is_file()
    assert [p.id for p in load_retriever(path).passages] == [p.id for p in OLD]


def test_resave_swaps_and_keeps_only_the_previous_version(tmp_path):
    path = tmp_path / "idx"
    for corpus in (OLD, NEW, OLD, NEW):
        _bm25(corpus).save(path)
    assert len(_versions(path)) == 2  # current + previous (for readers that opened it)
    assert resolve_index(path).name == max(_versions(path), key=lambda v: (path / v).stat().st_mtime_ns)
    assert [p.id for p in BM25Retriever.load(path).passages] == [p.id for p in NEW]


def test_save_refuses_a_folder_with_other_files_and_changes_nothing(tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("my thesis")
    (target / "data").mkdir()
    with pytest.raises(UnsafeOverwriteError, match="not a meteora index .*notes.txt"):
        _bm25(OLD).save(target)
    assert sorted(p.name for p in target.iterdir()) == ["data", "notes.txt"]
    assert (target / "notes.txt").read_text() == "my thesis"


def test_save_refuses_an_index_folder_the_user_added_files_to(tmp_path):
    path = _bm25(OLD).save(tmp_path / "idx")
    (path / "README.txt").write_text("do not lose me")
    with pytest.raises(UnsafeOverwriteError, match="README.txt"):
        _bm25(NEW).save(path)
    assert (path / "README.txt").read_text() == "do not lose me"
    assert [p.id for p in load_retriever(path).passages] == [p.id for p in OLD]


def test_save_refuses_a_file_target_and_leaves_it_alone(tmp_path):
    target = tmp_path / "results.csv"
    target.write_text("a,b\n1,2\n")
    with pytest.raises(UnsafeOverwriteError, match="not a folder"):
        _bm25(OLD).save(target)
    assert target.read_text() == "a,b\n1,2\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]


def test_save_below_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InvalidInputError, match="is a file, not a folder"):
        _bm25(OLD).save(tmp_path / "f" / "idx")


def test_empty_existing_folder_is_accepted(tmp_path):
    (tmp_path / "empty").mkdir()
    assert check_index_target(tmp_path / "empty") == tmp_path / "empty"
    _bm25(OLD).save(tmp_path / "empty")
    assert len(load_retriever(tmp_path / "empty")) == len(OLD)


def test_flat_index_of_meteora_0_1_is_read_then_upgraded_in_place(tmp_path):
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    _bm25(OLD)._write_index(legacy)  # the flat layout meteora 0.1 wrote
    assert [p.id for p in load_retriever(legacy).passages] == [p.id for p in OLD]
    _bm25(NEW).save(legacy)  # recognised as ours: becomes versioned, flat files removed
    names = sorted(p.name for p in legacy.iterdir() if p.name != LOCK_NAME)
    assert names == [POINTER_NAME, *_versions(legacy)] and len(_versions(legacy)) == 1
    assert [p.id for p in load_retriever(legacy).passages] == [p.id for p in NEW]


def _old_manifest(folder: Path, files: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"format": "meteora-index", "format_version": 1, "kind": "bm25", "files": files}
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("entry", ["./..", ".", "..", "../notes.txt", "/etc/passwd", "a/../../notes.txt", "a\\b", ""])
def test_old_layout_manifest_listing_outside_names_is_refused_and_nothing_is_deleted(tmp_path, entry):
    # issue: a flat manifest listing "./.." made save() rmtree the parent folder
    parent = tmp_path / "parent"
    idx = parent / "idx"
    _old_manifest(idx, {entry: {}})
    (parent / "notes.txt").write_text("keep")
    (idx / "thesis.txt").write_text("mine")
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    with pytest.raises(UnsafeOverwriteError, match="not a plain relative file name inside the folder"):
        BM25Retriever().index(["a b"]).save(idx)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before
    assert (parent / "notes.txt").read_text() == "keep"


def test_old_layout_manifest_listing_a_user_file_keeps_it_and_refuses(tmp_path):
    idx = tmp_path / "idx"
    _old_manifest(idx, {"thesis": {}, "passages.jsonl": {}})
    (idx / "thesis").mkdir()
    (idx / "thesis" / "chapter1.txt").write_text("mine")
    with pytest.raises(UnsafeOverwriteError, match="'thesis', which is not a regular file"):
        _bm25(NEW).save(idx)
    assert (idx / "thesis" / "chapter1.txt").read_text() == "mine"


def test_old_layout_symlink_entry_is_refused_and_its_target_kept(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    idx = tmp_path / "idx"
    _old_manifest(idx, {"passages.jsonl": {}})
    (idx / "passages.jsonl").symlink_to(outside)
    with pytest.raises(UnsafeOverwriteError, match="not a regular file"):
        _bm25(NEW).save(idx)
    assert outside.read_text() == "keep" and (idx / "passages.jsonl").is_symlink()


def test_old_layout_folder_with_unlisted_user_files_is_not_ours(tmp_path):
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    _bm25(OLD)._write_index(legacy)
    sub = next(p for p in legacy.iterdir() if p.is_dir())
    (sub / "my-notes.txt").write_text("mine")
    with pytest.raises(UnsafeOverwriteError, match=f"not a meteora index .*{sub.name}"):
        _bm25(NEW).save(legacy)
    assert (sub / "my-notes.txt").read_text() == "mine"


def test_old_layout_upgrade_removes_exactly_the_listed_files(tmp_path):
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    _bm25(OLD)._write_index(legacy)
    listed = json.loads((legacy / "manifest.json").read_text())["files"]
    _bm25(NEW).save(legacy)
    assert not any((legacy / name).exists() for name in listed)
    assert [p.id for p in load_retriever(legacy).passages] == [p.id for p in NEW]


def test_leftovers_of_a_killed_writer_are_removed_by_the_next_save_and_load(tmp_path):
    path = _bm25(OLD).save(tmp_path / "idx")
    stale = path / ".v-20260101T000000Z-1-deadbeef.partial"
    shutil.copytree(resolve_index(path), stale)
    load_retriever(path)  # no writer at work: the load cleans up
    assert not stale.exists()
    shutil.copytree(resolve_index(path), stale)
    _bm25(NEW).save(path)
    assert not stale.exists()


def test_failed_first_save_leaves_no_folder(tmp_path):
    bad = [Passage("x", id="x", metadata={"o": object()})]
    with pytest.raises(InvalidInputError, match="not JSON-serialisable"):
        _bm25(bad).save(tmp_path / "idx")
    assert not (tmp_path / "idx").exists()


def test_unreadable_pointer_is_an_index_error(tmp_path):
    path = _bm25(OLD).save(tmp_path / "idx")
    (path / POINTER_NAME).write_text('{"format": "meteora-index-pointer", "current": "../../etc"}')
    with pytest.raises(IndexFormatError, match="not a valid meteora index pointer"):
        load_retriever(path)
    (path / POINTER_NAME).write_text("{broken")
    with pytest.raises(IndexFormatError, match="not readable JSON"):
        load_retriever(path)


# -- manifests: confinement and completeness ------------------------------------------------
@pytest.fixture()
def version(tmp_path) -> Path:
    return resolve_index(_bm25(OLD).save(tmp_path / "idx"))


def _edit_manifest(version: Path, edit) -> None:
    path = version / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "name",
    ["../../etc/hostname", "/etc/hostname", "bm25s/../../x", "./passages.jsonl", "a\\b", "", "a//b"],
)
def test_manifest_entries_outside_the_folder_are_refused_without_reading_them(version, name):
    _edit_manifest(version, lambda m: m["files"].update({name: {"sha256": "0" * 64, "bytes": 1}}))
    with pytest.raises(IndexFormatError, match="not a plain relative path") as info:
        BM25Retriever.load(version)
    assert "bytes" not in str(info.value)  # says nothing about the file it refused to open


def test_manifest_symlink_leading_out_is_refused(version, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("s")
    os.symlink(secret, version / "link.txt")
    _edit_manifest(version, lambda m: m["files"].update({"link.txt": {"sha256": "0" * 64}}))
    with pytest.raises(IndexFormatError, match="leads outside the index folder"):
        BM25Retriever.load(version)


def test_empty_files_table_does_not_disable_checksums(version):
    _edit_manifest(version, lambda m: m.update(files={}))
    with pytest.raises(IndexFormatError, match="no 'files' table"):
        BM25Retriever.load(version)


def test_required_file_must_be_listed(version):
    _edit_manifest(version, lambda m: m["files"].pop("passages.sqlite"))
    with pytest.raises(IndexFormatError, match="lists no passages"):
        BM25Retriever.load(version)


def test_unlisted_bm25s_files_are_refused(tmp_path):
    version = resolve_index(BM25Retriever(backend="numpy").index(OLD).save(tmp_path / "i"))
    if not (version / "bm25s").is_dir():
        pytest.skip("this engine writes no bm25s arrays")
    _edit_manifest(version, lambda m: [m["files"].pop(k) for k in list(m["files"]) if k.startswith("bm25s/")])
    with pytest.raises(IndexFormatError, match="does not vouch for"):
        BM25Retriever.load(version)


@pytest.mark.parametrize("value", ["abc", -1, 2.5, True, None, [3]])
def test_manifest_counts_must_be_integers(tmp_path, tiny_encoder, value):
    from meteora.retrievers.dense import DenseRetriever

    version = resolve_index(
        DenseRetriever(tiny_encoder, backend="numpy").index(OLD).save(tmp_path / "d")
    )
    _edit_manifest(version, lambda m: m["counts"].update(dim=value))
    with pytest.raises(IndexFormatError, match="counts.dim must be an integer"):
        DenseRetriever.load(version, encoder=tiny_encoder)


def test_hybrid_member_must_be_vouched_for(tmp_path, tiny_encoder):
    from meteora.retrievers.dense import DenseRetriever

    h = HybridRetriever(
        [BM25Retriever(backend="numpy"), DenseRetriever(tiny_encoder, backend="numpy")]
    ).index(OLD)
    version = resolve_index(h.save(tmp_path / "h"))
    _edit_manifest(version, lambda m: m["files"].pop("bm25/manifest.json"))
    with pytest.raises(IndexFormatError, match="does not vouch for member 'bm25'"):
        HybridRetriever.load(version, encoder=tiny_encoder)


def test_write_manifest_skips_hidden_files(tmp_path):
    d = tmp_path / "v"
    d.mkdir()
    write_passages(d / "passages.jsonl", OLD)
    (d / ".hidden").write_text("x")
    manifest = write_manifest(d, "bm25", counts={"passages": 5}, parameters={})
    assert list(manifest["files"]) == ["passages.jsonl"]


def test_disk_error_during_save_is_clear_and_keeps_the_previous_index(tmp_path, monkeypatch):
    import errno

    from meteora.errors import MeteoraError

    path = _bm25(OLD).save(tmp_path / "idx")
    real_rename = os.rename

    def full_disk(src, dst, *args, **kwargs):
        if str(src).endswith(".partial"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rename", full_disk)
    with pytest.raises(MeteoraError, match="cannot write the index .*No space left"):
        _bm25(NEW).save(path)
    monkeypatch.setattr(os, "rename", real_rename)
    assert [p.id for p in load_retriever(path).passages] == [p.id for p in OLD]
    assert not [p for p in path.iterdir() if p.name.endswith(".partial")]

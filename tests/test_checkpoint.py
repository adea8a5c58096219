"""The file checkpoint store: atomic replace, missing file, nothing left behind on failure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sonicsse.checkpoint import CheckpointStore, FileCheckpoint


def test_load_before_any_save_is_none(tmp_path: Path) -> None:
    assert FileCheckpoint(tmp_path / "id").load() is None


@pytest.mark.parametrize("fsync", [True, False])
def test_save_then_load_round_trips(tmp_path: Path, fsync: bool) -> None:
    store = FileCheckpoint(tmp_path / "id", fsync=fsync)
    for value in ["1", "ключ-é", "", "a" * 10_000, "line\nbreak"]:
        store.save(value)
        assert store.load() == value
    assert FileCheckpoint(tmp_path / "id").load() == "line\nbreak"  # a new process sees it


def test_save_replaces_atomically_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    store = FileCheckpoint(tmp_path / "id")
    store.save("1")
    inode_before = os.stat(tmp_path / "id").st_ino
    store.save("2")
    assert os.stat(tmp_path / "id").st_ino != inode_before  # replaced by rename, not rewritten in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["id"]


def test_failed_save_keeps_the_old_id(tmp_path: Path) -> None:
    store = FileCheckpoint(tmp_path / "id")
    store.save("good")
    with pytest.raises(UnicodeEncodeError):
        store.save("\udcff")  # a lone surrogate cannot be written as UTF-8
    assert store.load() == "good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["id"]


def test_missing_directory_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        FileCheckpoint(tmp_path / "missing" / "id").save("1")


def test_is_a_checkpoint_store(tmp_path: Path) -> None:
    assert isinstance(FileCheckpoint(tmp_path / "id"), CheckpointStore)

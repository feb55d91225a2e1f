"""Atomic writes and writability checks."""

import os

import pytest

from inpaint_jax import files


def test_atomic_write_replaces_the_file_only_on_success(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with files.atomic_write(path) as f:
            f.write("half of the new")
            raise RuntimeError("crash mid-write")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]
    with files.atomic_write(path) as f:
        f.write("new")
    assert path.read_text() == "new"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_atomic_write_binary(tmp_path):
    with files.atomic_write(tmp_path / "out.bin", binary=True) as f:
        f.write(b"\x00\xff")
    assert (tmp_path / "out.bin").read_bytes() == b"\x00\xff"


def test_check_writable_dir_creates_and_probes(tmp_path):
    assert files.check_writable_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert os.listdir(tmp_path / "a" / "b") == []
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError):
        files.check_writable_dir(blocker / "sub")

import os
import stat

import pytest

from keras_tdrop.atomic_write import atomic_path
from keras_tdrop.atomic_write import atomic_write


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_writes_whole_file_with_open_permissions(tmp_path):
    old = os.umask(0o027)
    try:
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x")
        with atomic_write(tmp_path / "atomic.txt") as f:
            f.write("hello")
    finally:
        os.umask(old)
    assert (tmp_path / "atomic.txt").read_text() == "hello"
    assert _mode(tmp_path / "atomic.txt") == _mode(tmp_path / "plain.txt")
    assert _mode(tmp_path / "atomic.txt") == 0o640
    assert sorted(os.listdir(tmp_path)) == ["atomic.txt", "plain.txt"]


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "results.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(target) as f:
            f.write("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["results.csv"]


def test_atomic_path_keeps_the_extension_and_cleans_up(tmp_path):
    target = tmp_path / "model.keras"
    with atomic_path(target) as tmp:
        assert tmp.endswith(".keras") and tmp != str(target)
        with open(tmp, "wb") as f:
            f.write(b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    with pytest.raises(OSError):
        with atomic_path(target) as tmp:
            raise OSError("disk full")
    assert os.listdir(tmp_path) == ["model.keras"]


def test_binary_mode_and_bad_mode(tmp_path):
    with atomic_write(tmp_path / "b.bin", "wb") as f:
        f.write(b"abc")
    assert (tmp_path / "b.bin").read_bytes() == b"abc"
    with pytest.raises(ValueError, match="mode='a'"):
        with atomic_write(tmp_path / "c.txt", "a"):
            pass
    assert not (tmp_path / "c.txt").exists()

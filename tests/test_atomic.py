"""Writing a file all or nothing (``updates.atomic``), apart from the checkpoint format."""

import os

import pytest

from updates.atomic import write_atomically


def test_writes_the_file_and_keeps_an_existing_files_mode(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    os.chmod(path, 0o640)
    write_atomically(str(path), lambda file: file.write(b"new contents"), who="test")
    assert path.read_bytes() == b"new contents"
    assert os.stat(path).st_mode & 0o777 == 0o640
    assert os.listdir(tmp_path) == ["out.bin"]


def test_a_failing_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")

    def fails_halfway(file):
        file.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomically(str(path), fails_halfway, who="test")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_a_directory_is_refused_by_name(tmp_path):
    with pytest.raises(IsADirectoryError, match=r"^my_save: .* is a directory"):
        write_atomically(str(tmp_path), lambda file: None, who="my_save")

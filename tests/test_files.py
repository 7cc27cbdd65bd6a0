"""The one atomic writer: whole files or none, the umask's mode, no temp file left behind."""

import os

import pytest

from pasta_cli.errors import WriteError
from pasta_cli.files import write_atomic


def test_files_get_the_umasks_mode_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "a.json", "{}")
        write_atomic(tmp_path / "b.bin", lambda path: open(path, "wb").write(b"x"))
    finally:
        os.umask(old)
    assert oct((tmp_path / "a.json").stat().st_mode & 0o777) == oct(0o644)
    assert oct((tmp_path / "b.bin").stat().st_mode & 0o777) == oct(0o644)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "results.json"
    write_atomic(target, "old")

    def crash(path):
        open(path, "w").write("half")
        raise OSError("No space left on device")

    with pytest.raises(WriteError, match="cannot write .*results.json.*No space"):
        write_atomic(target, crash)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["results.json"]

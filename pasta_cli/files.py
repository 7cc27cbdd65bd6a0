"""Files a run leaves behind, written so that nobody ever reads half of one.

Every file is written to a temporary name beside its target and renamed over it (an atomic
operation on POSIX file systems): a crash, a kill or a full disk leaves the old file or none,
never a truncated one, and the temporary file is removed when the write fails.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from pasta_cli.errors import WriteError

# errors that mean "this folder is not yours to write", not "the disk failed": the user chose the folder
NOT_ALLOWED = {errno.EACCES, errno.EPERM, errno.EROFS}


def file_mode() -> int:
    """The mode a plain open() would give a new file under the process's umask (mkstemp gives 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_atomic(path, content: str | bytes | Callable[[str], None]) -> Path:
    """Write `content` (text, bytes, or a function that writes a file at the path it is given,
    such as safetensors' save_file or torch.save) to `path` atomically."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise write_error(path, e) from e
    try:
        if callable(content):
            os.close(fd)
            content(tmp)
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(content.encode("utf-8") if isinstance(content, str) else content)
        # after the write: a writer may replace the file at `tmp` with a new one (safetensors does), mode 0600
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, (OSError, RuntimeError)):  # torch.save reports a full disk as a RuntimeError
            raise write_error(path, e) from e
        raise
    return path


def write_error(path: Path, err: BaseException) -> WriteError:
    """One line for a failed write: the file, why, and that the previous version is intact."""
    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    try:
        free = f"; {shutil.disk_usage(next(p for p in (path, *path.parents) if p.exists())).free / 2**20:,.0f} MiB free"
    except (OSError, StopIteration):
        free = ""
    error = WriteError(f"cannot write '{path}' ({type(err).__name__}: {reason}{free}); its previous version, "
                       "if any, is intact: fix the cause and continue with resume=true")
    if getattr(err, "errno", None) in NOT_ALLOWED:
        error.exit_code = 2
    return error


def write_json(path, obj) -> Path:
    """Strict JSON: a NaN or an infinity is a ValueError here, never a bare `NaN` in a file (callers write null)."""
    return write_atomic(path, json.dumps(obj, indent=2, default=float, allow_nan=False) + "\n")


def jsonl(records: Iterable) -> str:
    """JSON lines, strict as write_json."""
    return "".join(json.dumps(r, default=float, allow_nan=False) + "\n" for r in records)


def write_tsv(path, header: tuple, rows: Iterable[tuple]) -> Path:
    lines = ["\t".join(header)] + ["\t".join(str(v) for v in row) for row in rows]
    return write_atomic(path, "\n".join(lines) + "\n")


def read_tsv(path) -> list[list[str]]:
    """A TSV file's rows (the header first), each field as written: what write_tsv wrote, or a GLUE file."""
    with open(path, newline="") as f:
        return list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def write_csv(path, rows: list[dict]) -> Path:
    """Rows of one shape as a CSV file with a header (the first row's keys)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else [], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return write_atomic(path, out.getvalue())

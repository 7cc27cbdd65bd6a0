"""Files a run leaves behind, written so that nobody ever reads half of one.

Every file is written to a temporary name beside its target and renamed over it (an atomic
operation on POSIX file systems): a crash, a kill or a full disk leaves the old file or none,
never a truncated one, and the temporary file is removed when the write fails.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path


def _file_mode() -> int:
    """The mode a plain open() would give a new file under the process's umask (mkstemp gives 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_atomic(path, content: str | bytes | Callable[[str], None]) -> Path:
    """Write `content` (text, bytes, or a function that writes a file at the path it is given,
    such as safetensors' save_file or torch.save) to `path` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, _file_mode())
        if callable(content):
            os.close(fd)
            content(tmp)
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(content.encode("utf-8") if isinstance(content, str) else content)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path, obj) -> Path:
    return write_atomic(path, json.dumps(obj, indent=2, default=float) + "\n")


def jsonl(records: Iterable) -> str:
    return "".join(json.dumps(r, default=float) + "\n" for r in records)


def append_jsonl(path, obj) -> None:
    """One line per record; a line is written in one call, so a reader sees whole lines."""
    with open(path, "a") as f:
        f.write(jsonl([obj]))


def write_tsv(path, header: tuple, rows: Iterable[tuple]) -> Path:
    lines = ["\t".join(header)] + ["\t".join(str(v) for v in row) for row in rows]
    return write_atomic(path, "\n".join(lines) + "\n")

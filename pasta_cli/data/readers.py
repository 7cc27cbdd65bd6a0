"""File readers, one per format, each yielding `(where, record)` pairs.

`where` is a human location for error messages: `'/x/train.tsv' line 7` (lines count from 1, as
in an editor) or, for parquet, `'/x/train.parquet' row 7` (rows count from 0, as the row numbers
that become `idx`). `record` maps a column to its value. Readers know formats, not tasks: which
columns matter and what a label is are decided by `pasta_cli.data.columns`. Every problem with a
file is one PastaError line naming the file, the line or row, what was found and what was expected.

Text files are decoded line by line, so a byte that is not UTF-8 is reported with its line; a
UTF-8 byte order mark (MRPC's header has one) is dropped and a missing last newline is fine.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pasta_cli.errors import PastaError

Record = tuple[str, dict]

# format -> extension of its default file names (train.<ext>, dev.<ext>, test.<ext>)
EXTENSIONS = {"tsv": "tsv", "csv": "csv", "jsonl": "jsonl", "parquet": "parquet", "conll": "txt"}


def read(path: Path, fmt: str, header: bool = True) -> Iterator[Record]:
    """The records of one file. header=False: a tsv or csv file without a header row, its columns
    then named by position ("0", "1", ...)."""
    if fmt == "tsv":
        return _table(path, _tsv_rows(path), header, "tab-separated")
    if fmt == "csv":
        return _table(path, _csv_rows(path), header, "comma-separated")
    if not header:
        raise PastaError(f"'{path}': columns given by position need a header-less tsv or csv file, "
                         f"but {fmt} records name their columns: give task.text/task.label as names")
    return {"jsonl": _jsonl, "parquet": _parquet, "conll": _conll}[fmt](path)


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text with its line ending) for each line of a UTF-8 file."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise PastaError(f"'{path}' line {n}: byte 0x{raw[e.start]:02x} at column {e.start + 1} is not "
                                 f"UTF-8 ({e.reason}); expected a UTF-8 text file") from None
            yield n, (line.removeprefix("\ufeff") if n == 1 else line)


def _tsv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """Split on tabs, no quoting: GLUE's texts hold bare `"` that a csv reader would swallow.
    Blank lines are skipped, as the GLUE loaders always did."""
    for n, line in _lines(path):
        line = line.removesuffix("\n").removesuffix("\r")
        if line.strip():
            yield n, line.split("\t")


def _csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """Standard quoting; a quoted field may span lines, so a row is reported at its first line."""
    reader = csv.reader(line for _, line in _lines(path))
    # held locally: a reader left suspended by an error elsewhere is closed at interpreter exit, when the
    # module global `csv` may already be gone and `except csv.Error` itself would fail (a traceback at exit)
    csv_error = csv.Error
    start = 1
    try:
        for fields in reader:
            if fields:
                yield start, fields
            start = reader.line_num + 1
    except csv_error as e:
        raise PastaError(f"'{path}' line {start}: {e}; expected comma-separated fields with standard "
                         f"quoting") from None


def _table(path: Path, rows: Iterable[tuple[int, list[str]]], header: bool, sep: str) -> Iterator[Record]:
    """Records keyed by the header's names, or by position ("0", "1", ...) without a header. Every
    row must have as many fields as the header (or, without one, as the first row)."""
    names: list[str] | None = None
    width = first = None
    count = 0
    for n, fields in rows:
        if width is None:
            width, first = len(fields), n
            if header:
                names = fields
                continue
        if len(fields) != width:
            what = "the header" if header else "the first row"
            raise PastaError(f"'{path}' line {n}: expected {width} {sep} fields as in {what} (line {first}), "
                             f"found {len(fields)}")
        count += 1
        yield f"'{path}' line {n}", dict(zip(names or map(str, range(width)), fields))
    if width is None:
        raise PastaError(f"'{path}' is empty: expected {'a header and ' if header else ''}rows of {sep} fields")
    if not count:
        raise PastaError(f"'{path}' has a header but no rows: expected at least one row under line {first}")


def _jsonl(path: Path) -> Iterator[Record]:
    """One JSON object per line; blank lines are skipped."""
    count = 0
    for n, line in _lines(path):
        if not line.strip():
            continue
        where = f"'{path}' line {n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise PastaError(f"{where}: not valid JSON ({e.msg} at column {e.colno}); expected one JSON "
                             f"object per line") from None
        if not isinstance(obj, dict):
            raise PastaError(f"{where}: found a JSON {type(obj).__name__}, expected an object "
                             f"{{\"column\": value, ...}}")
        try:  # a \ud83d escape decodes to a lone surrogate: text no tokenizer (nor Arrow) can take
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as e:
            raise PastaError(f"{where}: the escape \\u{ord(e.object[e.start]):04x} is half of a UTF-16 surrogate "
                             "pair, without its partner, so not a character; expected text") from None
        count += 1
        yield where, obj
    if not count:
        raise PastaError(f"'{path}' is empty: expected one JSON object per line")


def _parquet(path: Path) -> Iterator[Record]:
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        detail = " ".join(str(e).split())
        raise PastaError(f"'{path}' is not a readable parquet file ({detail})") from None
    if table.num_rows == 0:
        raise PastaError(f"'{path}' has no rows: expected at least one (columns {', '.join(table.column_names)})")
    row = 0
    for batch in table.to_batches():
        for record in batch.to_pylist():
            yield f"'{path}' row {row}", record
            row += 1


def _conll(path: Path) -> Iterator[Record]:
    """One sentence per record, {tokens, tags}: the token is a line's first column and its tag the
    last; blank lines end a sentence and `-DOCSTART-` lines are skipped. A file of one column
    (tokens alone) has no tags: an unlabelled test file."""
    tokens: list[str] = []
    tags: list[str] = []
    width = first = start = None
    count = 0
    for n, line in _lines(path):
        parts = line.split()
        if parts and parts[0] != "-DOCSTART-":
            if width is None:
                width, first = len(parts), n
            elif len(parts) != width:
                raise PastaError(f"'{path}' line {n}: expected {width} space-separated columns as on line "
                                 f"{first} (token first, tag last), found {len(parts)}")
            start = start or n
            tokens.append(parts[0])
            tags.append(parts[-1])
        elif tokens:
            count += 1
            yield f"'{path}' line {start}", _sentence(tokens, tags, width)
            tokens, tags, start = [], [], None
    if tokens:
        count += 1
        yield f"'{path}' line {start}", _sentence(tokens, tags, width)
    if not count:
        raise PastaError(f"'{path}' holds no sentences: expected one token per line (token first, tag "
                         f"last), a blank line between sentences")


def _sentence(tokens: list[str], tags: list[str], width: int) -> dict:
    return {"tokens": tokens, "tags": tags} if width > 1 else {"tokens": tokens}

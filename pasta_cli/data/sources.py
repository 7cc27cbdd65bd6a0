"""Where a task's rows come from: the built-in generator, local files, or the Hugging Face hub.

Each source turns a TaskSpec into `Split`s, the records of each split and the columns to take
from them, plus the spec fields it settled (format, files, test splits). Sources know nothing
of labels or tokenizers: `pasta_cli.data.columns` reads every source's records by the same
rules, so a local file, a hub copy and the generator give the same rows and the same errors.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from pasta_cli.data import builtin, readers
from pasta_cli.data.spec import Format, Kind, TaskSpec
from pasta_cli.errors import PastaError

# the conll reader's record keys: its files have no column names to give
CONLL_TEXT, CONLL_LABEL = "tokens", "tags"


@dataclass
class Split:
    """One split's records and the columns to read from them."""

    records: Iterable[tuple[str, dict]]
    text: list[str]
    label: str | None
    index: str | None
    test: bool  # rows may lack labels (an unlabelled test split); elsewhere that is an error


def from_builtin(spec: TaskSpec) -> tuple[dict[str, Split], dict[str, Any]]:
    """The generator's train/validation/test; its int labels become the names in builtin.LABELS
    here, so labels read from train, sorted, are [entailment, not_entailment] as in RTE."""
    b = spec.builtin
    raw = builtin.build_splits(seed=b.seed, train_size=b.train_size, dev_size=b.dev_size, test_size=b.test_size)
    evals, tests = _pick(spec, raw, "the builtin generator")
    text = _text(spec)

    def records(split: str) -> Iterator[tuple[str, dict]]:
        for i, row in enumerate(raw[split]):
            yield f"builtin {split} row {i}", {**row, "label": builtin.LABELS[row["label"]]}

    splits = {s: Split(records(s), text, spec.label, spec.index, s in tests) for s in ["train", *evals, *tests]}
    return splits, {"test_splits": tests}


def from_files(spec: TaskSpec) -> tuple[dict[str, Split], dict[str, Any]]:
    """Files in task.data_dir; a test file that is not there is skipped (it only serves
    submissions), any other missing file is an error naming the path, format and files key."""
    folder = Path(spec.data_dir).expanduser()
    if not folder.is_dir():
        raise PastaError(f"task.data_dir '{folder}' is not a folder: it must hold the task's files "
                         f"({_files_words(named_files(spec)) or 'train/dev/test.<format>'})")
    fmt, files = _format_and_files(spec, folder)
    evals, tests = _pick(spec, files, "task.files")
    conll = fmt == Format.conll.value
    text = [CONLL_TEXT] if conll else _text(spec)
    label = CONLL_LABEL if conll else spec.label
    splits, used = {}, {}
    for split in ["train", *evals, *tests]:
        path = folder / files[split]
        if not path.is_file():
            if split in tests:
                continue
            raise PastaError(f"'{path}' not found: task.files.{split} names the {fmt} file of split {split!r} in "
                             f"task.data_dir; the task's files are {_files_words(files)} (test optional)")
        columns, index = text, spec.index
        if split in tests and spec.test_columns is not None:
            columns = list(spec.test_columns.text or text)
            index = spec.test_columns.index or index
        splits[split] = Split(readers.read(path, fmt, header=conll or not positional(columns)), columns, label,
                              index, split in tests)
        used[split] = files[split]
    found = {"format": Format(fmt), "files": used, "test_splits": [s for s in tests if s in splits]}
    if conll:
        found.update(text=text, label=label)
    return splits, found


def from_hub(spec: TaskSpec) -> tuple[dict[str, Split], dict[str, Any]]:
    """`datasets.load_dataset(path, name, revision)`; ClassLabel ints become their names here
    (and -1, the hub's "no label", becomes none), to be mapped to task.labels by name."""
    hub = spec.hub
    source = hub.path + (f" ({hub.name})" if hub.name else "")
    try:
        options = {k: v for k, v in (("name", hub.name), ("revision", hub.revision)) if v is not None}
        raw = datasets.load_dataset(hub.path, **options)
    except Exception as e:  # noqa: BLE001 - network, missing repo, script-based repo...: all end the same way
        detail = " ".join(f"{type(e).__name__}: {e}".split())[:300]
        raise PastaError(f"could not load {source} from the Hugging Face hub ({detail}); offline, set "
                         f"task.data_dir=<folder with the task's files> or use task=builtin") from None
    evals, tests = _pick(spec, raw, f"hub data set {source}")
    text = list(hub.text or _text(spec))
    label = hub.label or spec.label
    splits = {}
    for s in ["train", *evals, *tests]:
        ds = raw[s].select_columns([c for c in dict.fromkeys([*text, label, spec.index]) if c in raw[s].column_names])
        splits[s] = Split(_hub_records(ds, f"hub {source} {s}", label, s in tests), text, label, spec.index, s in tests)
    return splits, {"test_splits": tests}


def _hub_records(ds, where: str, label: str, test: bool) -> Iterator[tuple[str, dict]]:
    """Rows that read like a file's: label names rather than ClassLabel ids, None for no label."""
    feature = ds.features.get(label)
    names = getattr(getattr(feature, "feature", feature), "names", None)  # ClassLabel, or List(ClassLabel)

    def value(v):
        if isinstance(v, list):
            return [value(x) for x in v]
        if names is not None:
            return names[v] if v is not None and v >= 0 else None
        return None if test and v == -1 else v  # GLUE's unlabelled test rows (STS-B: -1.0)

    for i, row in enumerate(ds):
        if label in row:
            row[label] = value(row[label])
        yield f"{where} row {i}", row


def _pick(spec: TaskSpec, available: Mapping, source: str) -> tuple[list[str], list[str]]:
    """(eval splits, test splits) of a source whose splits are the keys of `available`."""
    names = list(available)
    if "train" not in available:
        raise PastaError(f"{source} has no 'train' split (it has {', '.join(names)})")
    for s in spec.eval_splits:
        if s == "train" or s not in available:
            raise PastaError(f"task.eval_splits names {s!r}, which {source} does not have: choose from "
                             f"{', '.join(n for n in names if n != 'train')}")
    tests = [s for s in names if s.startswith("test")] if spec.test_splits is None else list(spec.test_splits)
    for s in tests:
        if s not in available or s == "train" or s in spec.eval_splits:
            raise PastaError(f"task.test_splits names {s!r}, which {source} does not have apart from train and "
                             f"task.eval_splits: choose from "
                             f"{', '.join(n for n in names if n != 'train' and n not in spec.eval_splits)}")
    return list(spec.eval_splits), tests


def _format_and_files(spec: TaskSpec, folder: Path) -> tuple[str, dict[str, str]]:
    """task.format, else the files' extension (train's, or the one train.<ext> in the folder); the
    files of task.files, and train/dev/test.<ext> for the splits it does not name (task.files.validation=...
    alone keeps train.<ext>)."""
    by_ext = {ext: fmt for fmt, ext in readers.EXTENSIONS.items()}
    if spec.format is not None:
        fmt = spec.format.value
    elif named_files(spec).get("train"):
        ext = Path(spec.files["train"]).suffix.lstrip(".")
        if ext not in by_ext:
            raise PastaError(f"cannot tell the format of task.files.train={spec.files.get('train')!r} from its "
                             f"extension: set task.format ({', '.join(f.value for f in Format)})")
        fmt = by_ext[ext]
    else:
        found = [fmt for ext, fmt in by_ext.items() if (folder / f"train.{ext}").is_file()]
        if len(found) != 1:
            names = " and ".join(f"train.{readers.EXTENSIONS[f]}" for f in found)
            what = f"holds {names}" if found else "has no train file"
            raise PastaError(f"task.format is not set and '{folder}' {what}: set task.format "
                             f"({', '.join(f.value for f in Format)}) or task.files")
        fmt = found[0]
    ext = readers.EXTENSIONS[fmt]
    default = {"train": f"train.{ext}", "validation": f"dev.{ext}", "test": f"test.{ext}"}
    files = {**default, **named_files(spec)}
    return fmt, files


def named_files(spec: TaskSpec) -> dict[str, str]:
    """The splits whose file task.files names (the others get the default names)."""
    return {split: name for split, name in (spec.files or {}).items() if name}


def _text(spec: TaskSpec) -> list[str]:
    if spec.text is not None:
        return list(spec.text)
    if spec.kind == Kind.token_classification:
        return [CONLL_TEXT]
    raise PastaError(f"task {spec.name} has no task.text: name its text column(s), one for single sentences or two "
                     f"for pairs (e.g. task.text=[sentence1,sentence2])")


def positional(columns: list[str]) -> bool:
    """Columns given as 0-based positions ("3") mean a file without a header."""
    digits = [c.isascii() and c.isdigit() for c in columns]
    if any(digits) and not all(digits):
        raise PastaError(f"task.text {columns} mixes column names and positions: give names (files with a header) "
                         f"or positions (files without one)")
    return all(digits)


def _files_words(files: Mapping[str, str]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in files.items())

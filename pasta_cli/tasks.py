"""Task data: loading (local GLUE/CoNLL layouts, the HF hub, or the built-in synthetic task),
tokenization, batching, predictions, metrics and GLUE submission rows.

Every task becomes a :class:`TaskData` whose splits are ``datasets.Dataset`` objects with the
text columns (``sentence1``/``sentence2``, ``sentence``, or ``tokens``), ``label`` (class id,
float score for STS-B, list of tag ids for CoNLL-2003; ``-1`` / ``[]`` where a test split has
no labels) and ``idx`` (the file's index column where it has one, else the row number).

Local files are read exactly as the GLUE download script and the CoNLL-2003 BIO export ship
them: tab-separated, no quoting (texts hold bare ``"``), UTF-8 (MRPC's header keeps a BOM),
optional trailing newline.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pasta_cli import metrics as _metrics
from pasta_cli.errors import PastaError

CLASSIFICATION = "classification"
REGRESSION = "regression"
TOKEN_CLASSIFICATION = "token_classification"
KINDS = (CLASSIFICATION, REGRESSION, TOKEN_CLASSIFICATION)

# Keys of an encoded row that go to the model; everything else (idx, ...) stays out of a batch.
MODEL_KEYS = ("input_ids", "attention_mask", "token_type_ids", "special_tokens_mask", "labels")

_DEFAULTS: dict[str, Any] = {
    "kind": CLASSIFICATION,
    "pair": False,
    "hub": None,
    "glue_folder": None,
    "data_dir": None,
    "files": None,
    "labels": None,
    "metrics": ["accuracy"],
    "main_metric": "accuracy",
    "eval_splits": ["validation"],
    "test_splits": None,  # None: every test split the source has
    "max_train_samples": None,
    "max_eval_samples": None,
    "max_test_samples": None,
    "sample_seed": 0,
    "submission_labels": "names",
}


@dataclass
class TaskData:
    name: str
    kind: str
    pair: bool
    labels: list[str] | None
    metrics: list[str]
    main_metric: str
    splits: dict[str, Any]  # split name -> datasets.Dataset
    eval_splits: list[str]
    text_columns: tuple[str, ...]
    glue_folder: str | None = None
    submission_labels: str = "names"  # "names" (RTE, MNLI, QNLI) or "ids" (CoLA, SST-2, MRPC, QQP)
    test_splits: list[str] = field(default_factory=list)
    # token classification: per encoded split, (idx list, first-sub-word positions per row), set by
    # encode(); lets test_prediction_rows turn per-token predictions back into one tag per word.
    word_starts: dict[str, tuple[list[int], list[list[int]]]] = field(default_factory=dict, repr=False)

    @property
    def num_labels(self) -> int:
        """Output width of the task head: 1 for regression, else the number of classes/tags."""
        return 1 if self.kind == REGRESSION else len(self.labels or [])

    @property
    def id2label(self) -> dict[int, str]:
        return {i: name for i, name in enumerate(self.labels or [])}

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.labels or [])}


# --------------------------------------------------------------------------------------------
# Local layouts
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tsv:
    """How one GLUE .tsv file is laid out.

    header: the file starts with a header row and columns are found by name; otherwise the file
    must have exactly ``ncols`` columns and text/label/index are column positions.
    """

    text: tuple[Any, ...]
    label: Any = None  # column holding the label; None: unlabelled (test files)
    index: Any = None  # column holding the GLUE index; None: the row number
    header: bool = True
    ncols: int | None = None


_GLUE_FILES = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
_MNLI_FILES = {
    "train": "train.tsv",
    "validation_matched": "dev_matched.tsv",
    "validation_mismatched": "dev_mismatched.tsv",
    "test_matched": "test_matched.tsv",
    "test_mismatched": "test_mismatched.tsv",
}


def _glue(train: _Tsv, test: _Tsv, files=_GLUE_FILES, hub_text=("sentence1", "sentence2")) -> dict:
    return {"labelled": train, "test": test, "files": files, "hub_text": hub_text}


# Per GLUE task: the layout of labelled files (train/dev), of test files, the file names, and
# the text columns of the nyu-mll/glue hub copy.
_GLUE_LAYOUTS: dict[str, dict] = {
    "cola": _glue(
        _Tsv(text=(3,), label=1, header=False, ncols=4),
        _Tsv(text=("sentence",), index="index"),
        hub_text=("sentence",),
    ),
    "sst2": _glue(
        _Tsv(text=("sentence",), label="label"),
        _Tsv(text=("sentence",), index="index"),
        hub_text=("sentence",),
    ),
    "mrpc": _glue(
        _Tsv(text=("#1 String", "#2 String"), label="Quality"),
        _Tsv(text=("#1 String", "#2 String"), index="index"),
    ),
    "stsb": _glue(
        _Tsv(text=("sentence1", "sentence2"), label="score", index="index"),
        _Tsv(text=("sentence1", "sentence2"), index="index"),
    ),
    "qqp": _glue(
        _Tsv(text=("question1", "question2"), label="is_duplicate", index="id"),
        _Tsv(text=("question1", "question2"), index="id"),
        hub_text=("question1", "question2"),
    ),
    "mnli": _glue(
        _Tsv(text=("sentence1", "sentence2"), label="gold_label", index="index"),
        _Tsv(text=("sentence1", "sentence2"), index="index"),
        files=_MNLI_FILES,
        hub_text=("premise", "hypothesis"),
    ),
    "qnli": _glue(
        _Tsv(text=("question", "sentence"), label="label", index="index"),
        _Tsv(text=("question", "sentence"), index="index"),
        hub_text=("question", "sentence"),
    ),
    "rte": _glue(
        _Tsv(text=("sentence1", "sentence2"), label="label", index="index"),
        _Tsv(text=("sentence1", "sentence2"), index="index"),
    ),
    "wnli": _glue(
        _Tsv(text=("sentence1", "sentence2"), label="label", index="index"),
        _Tsv(text=("sentence1", "sentence2"), index="index"),
    ),
}

# CoNLL-2003 file names per split; the first is the expected one, the others common exports.
_CONLL_FILES = {
    "train": ["train.txt"],
    "validation": ["validation.txt", "valid.txt", "dev.txt"],
    "test": ["test.txt"],
}

KNOWN_TASKS = tuple(sorted(_GLUE_LAYOUTS)) + ("conll2003", "builtin")


# --------------------------------------------------------------------------------------------
# Config handling
# --------------------------------------------------------------------------------------------


def _plain(cfg) -> dict[str, Any]:
    if cfg is None:
        raise PastaError("no task config given: choose task=<name> with one of " + ", ".join(KNOWN_TASKS))
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    if not isinstance(cfg, Mapping):
        raise PastaError(f"task config must be a mapping, got {type(cfg).__name__}")
    out = dict(_DEFAULTS)
    out.update({k: v for k, v in dict(cfg).items()})
    if not out.get("name"):
        raise PastaError("task config has no 'name': choose one of " + ", ".join(KNOWN_TASKS))
    out["name"] = str(out["name"]).lower()
    if out["kind"] not in KINDS:
        raise PastaError(f"task.kind={out['kind']!r} is not one of {', '.join(KINDS)}")
    for key in ("max_train_samples", "max_eval_samples"):
        v = out.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise PastaError(f"task.{key} must be a positive integer or null, got {v!r}")
    return out


def _text_columns(cfg: dict) -> tuple[str, ...]:
    if cfg["kind"] == TOKEN_CLASSIFICATION:
        return ("tokens",)
    return ("sentence1", "sentence2") if cfg["pair"] else ("sentence",)


# --------------------------------------------------------------------------------------------
# Dataset construction
# --------------------------------------------------------------------------------------------


def _features(kind: str, text_columns: Sequence[str]):
    from datasets import Features, List, Value

    feats: dict[str, Any] = {}
    if kind == TOKEN_CLASSIFICATION:
        feats["tokens"] = List(Value("string"))
        feats["label"] = List(Value("int64"))
    else:
        for c in text_columns:
            feats[c] = Value("string")
        feats["label"] = Value("float32") if kind == REGRESSION else Value("int64")
    feats["idx"] = Value("int64")
    return Features(feats)


def _dataset(columns: dict[str, list], kind: str, text_columns: Sequence[str]):
    from datasets import Dataset

    return Dataset.from_dict(columns, features=_features(kind, text_columns))


def _subset(ds, n: int | None, seed: int):
    """The first n rows after a seeded shuffle, kept in file order; everything when n is None."""
    if n is None or n >= len(ds):
        return ds
    order = np.random.default_rng(seed).permutation(len(ds))[:n]
    return ds.select(sorted(int(i) for i in order))


# --------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) for each line, split on '\\n' only (a stray '\\r' stays in its field)."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise PastaError(f"'{path}' line {n}: not valid UTF-8 ({e.reason})") from None
            if n == 1:
                line = line.lstrip("\ufeff")
            if line.endswith("\n"):
                line = line[:-1]
            if line.endswith("\r"):
                line = line[:-1]
            yield n, line


def _parse_label(value: str, kind: str, labels: list[str] | None, where: str) -> int | float:
    if kind == REGRESSION:
        try:
            return float(value)
        except ValueError:
            raise PastaError(f"{where}: score {value!r} is not a number") from None
    assert labels is not None
    if value in labels:
        return labels.index(value)
    if value.strip().isdigit() and int(value) < len(labels):
        return int(value)
    raise PastaError(f"{where}: unknown label {value!r}, expected one of {', '.join(labels)} (or 0..{len(labels) - 1})")


def _read_tsv(path: Path, layout: _Tsv, kind: str, labels, text_columns, labelled: bool) -> dict[str, list]:
    cols: dict[str, list] = {c: [] for c in text_columns}
    cols["label"] = []
    cols["idx"] = []
    lines = _lines(path)
    if layout.header:
        first = next(lines, None)
        if first is None:
            raise PastaError(f"'{path}' is empty: expected a header with {', '.join(map(str, layout.text))}")
        header = first[1].split("\t")
        wanted = list(layout.text) + ([layout.label] if labelled else []) + ([layout.index] if layout.index else [])
        missing = [c for c in wanted if c not in header]
        if missing:
            raise PastaError(
                f"'{path}' line 1: header lacks column(s) {', '.join(map(repr, missing))}; "
                f"expected the GLUE layout with {', '.join(map(repr, wanted))}, found {', '.join(map(repr, header))}"
            )
        ncols = len(header)
        text_pos = [header.index(c) for c in layout.text]
        label_pos = header.index(layout.label) if labelled else None
        index_pos = header.index(layout.index) if layout.index else None
        expect = f"{ncols} tab-separated columns as in the header"
    else:
        ncols = layout.ncols
        text_pos = list(layout.text)
        label_pos = layout.label if labelled else None
        index_pos = layout.index
        expect = f"{ncols} tab-separated columns (no header)"
    row = 0
    for n, line in lines:
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != ncols:
            raise PastaError(f"'{path}' line {n}: expected {expect}, found {len(fields)}")
        for c, p in zip(text_columns, text_pos):
            cols[c].append(fields[p])
        where = f"'{path}' line {n}"
        cols["label"].append(_parse_label(fields[label_pos], kind, labels, where) if labelled else -1)
        if index_pos is not None:
            try:
                cols["idx"].append(int(fields[index_pos]))
            except ValueError:
                raise PastaError(f"{where}: index {fields[index_pos]!r} is not an integer") from None
        else:
            cols["idx"].append(row)
        row += 1
    return cols


def _read_conll(path: Path, labels: list[str]) -> dict[str, list]:
    tag_ids = {t: i for i, t in enumerate(labels)}
    tokens: list[list[str]] = []
    tags: list[list[int]] = []
    cur_tok: list[str] = []
    cur_tag: list[int] = []
    width = None

    def flush():
        if cur_tok:
            tokens.append(list(cur_tok))
            tags.append(list(cur_tag))
            cur_tok.clear()
            cur_tag.clear()

    for n, line in _lines(path):
        parts = line.split()
        if not parts:
            flush()
            continue
        if parts[0] == "-DOCSTART-":
            flush()
            continue
        if width is None:
            width = len(parts)
            if width < 2:
                raise PastaError(
                    f"'{path}' line {n}: expected space-separated columns 'token POS chunk NER' "
                    f"(CoNLL-2003, IOB2 tags), found {len(parts)} column"
                )
        if len(parts) != width:
            raise PastaError(
                f"'{path}' line {n}: expected {width} space-separated columns like the lines above "
                f"(token POS chunk NER), found {len(parts)}"
            )
        tag = parts[-1]
        if tag not in tag_ids:
            raise PastaError(f"'{path}' line {n}: unknown NER tag {tag!r}, expected one of {', '.join(labels)}")
        cur_tok.append(parts[0])
        cur_tag.append(tag_ids[tag])
    flush()
    return {"tokens": tokens, "label": tags, "idx": list(range(len(tokens)))}


# --------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------


def _split_files(cfg: dict, defaults: Mapping[str, Any]) -> dict[str, list[str]]:
    files = {k: ([v] if isinstance(v, str) else list(v)) for k, v in defaults.items()}
    if cfg.get("files"):
        for k, v in dict(cfg["files"]).items():
            files[k] = [v] if isinstance(v, str) else list(v)
    return files


def _needed_splits(cfg: dict, files: Mapping[str, list[str]]) -> tuple[list[str], list[str]]:
    eval_splits = list(cfg["eval_splits"] or [])
    for s in eval_splits:
        if s not in files or s == "train":
            choices = ", ".join(k for k in files if k != "train" and not k.startswith("test"))
            raise PastaError(f"task.eval_splits names {s!r}, which {cfg['name']} does not have: choose from {choices}")
    available_tests = [s for s in files if s.startswith("test")]
    tests = available_tests if cfg.get("test_splits") is None else list(cfg["test_splits"])
    for s in tests:
        if s not in available_tests:
            raise PastaError(f"task.test_splits names {s!r}, which {cfg['name']} does not have: choose from {', '.join(available_tests)}")
    return eval_splits, tests


def _local_dir(cfg: dict) -> Path:
    d = Path(str(cfg["data_dir"])).expanduser()
    if not d.is_dir():
        raise PastaError(f"task.data_dir '{d}' is not a folder: it must hold the {_layout_words(cfg)}")
    folder = cfg.get("glue_folder")
    # Accept the parent of the task folder too (e.g. glue_data/ holding RTE/).
    if folder and (d / folder).is_dir() and not any((d / f).is_file() for f in ("train.tsv", "train.txt")):
        d = d / folder
    return d


def _layout_words(cfg: dict, files: Mapping[str, list[str]] | None = None) -> str:
    if cfg["name"] == "conll2003":
        return "CoNLL-2003 layout train.txt/validation.txt/test.txt (token POS chunk NER per line, IOB2)"
    names = files or _split_files(cfg, _GLUE_LAYOUTS.get(cfg["name"], {}).get("files", _GLUE_FILES))
    return "GLUE download layout " + "/".join(v[0] for v in names.values())


def _find(d: Path, candidates: list[str]) -> Path | None:
    for c in candidates:
        if (d / c).is_file():
            return d / c
    return None


def _missing(path: Path, cfg: dict, files) -> PastaError:
    return PastaError(f"'{path}' not found: task.data_dir must hold the {_layout_words(cfg, files)}")


def _load_local(cfg: dict, text_columns: tuple[str, ...]) -> tuple[dict, list[str], list[str]]:
    name = cfg["name"]
    d = _local_dir(cfg)
    labels = cfg["labels"]
    if name == "conll2003":
        files = _split_files(cfg, _CONLL_FILES)
    else:
        files = _split_files(cfg, _GLUE_LAYOUTS[name]["files"])
    eval_splits, test_splits = _needed_splits(cfg, files)
    splits: dict[str, Any] = {}
    found_tests: list[str] = []
    for split in ["train", *eval_splits, *test_splits]:
        path = _find(d, files[split])
        if path is None:
            if split in test_splits:
                continue  # test files are optional (only needed for submissions)
            raise _missing(d / files[split][0], cfg, files)
        if name == "conll2003":
            cols = _read_conll(path, labels)
        else:
            layouts = _GLUE_LAYOUTS[name]
            is_test = split in test_splits
            layout = layouts["test"] if is_test else layouts["labelled"]
            labelled = not is_test
            if is_test and layouts["labelled"].header and _has_label_column(path, layouts["labelled"]):
                # a labelled test file (e.g. a held-out split made by the user): read its labels
                layout, labelled = layouts["labelled"], True
            cols = _read_tsv(path, layout, cfg["kind"], labels, text_columns, labelled)
        if split in test_splits:
            found_tests.append(split)
        splits[split] = _dataset(cols, cfg["kind"], text_columns)
    return splits, eval_splits, found_tests


def _has_label_column(path: Path, layout: _Tsv) -> bool:
    lines = _lines(path)
    try:
        first = next(lines, None)
    finally:
        lines.close()
    header = first[1].split("\t") if first else []
    return layout.label in header and all(c in header for c in layout.text)


def _offline_hint(cfg: dict) -> str:
    folder = cfg.get("glue_folder") or cfg["name"]
    return f"offline, set task.data_dir=/path/to/{folder} ({_layout_words(cfg)}) or use task=builtin"


def _load_hub(cfg: dict, text_columns: tuple[str, ...]) -> tuple[dict, list[str], list[str]]:
    name = cfg["name"]
    hub = cfg.get("hub")
    if not hub or not hub.get("path"):
        raise PastaError(f"task {name} has neither task.data_dir nor task.hub.path; {_offline_hint(cfg)}")
    hub = {k: v for k, v in dict(hub).items() if v is not None}
    try:
        import datasets

        raw = datasets.load_dataset(**hub)
    except Exception as e:  # network, missing repo, script-based repo, ...
        detail = " ".join(f"{type(e).__name__}: {e}".split())[:300]
        where = ", ".join(f"{k}={v}" for k, v in hub.items())
        raise PastaError(f"could not load {name} from the Hugging Face hub ({where}): {detail}; {_offline_hint(cfg)}") from None

    if name == "conll2003":
        files = dict.fromkeys(_CONLL_FILES)
        hub_text = ("tokens",)
    else:
        files = _GLUE_LAYOUTS[name]["files"]
        hub_text = _GLUE_LAYOUTS[name]["hub_text"]
    eval_splits, test_splits = _needed_splits(cfg, files)
    splits: dict[str, Any] = {}
    found_tests: list[str] = []
    for split in ["train", *eval_splits, *test_splits]:
        if split not in raw:
            if split in test_splits:
                continue
            raise PastaError(f"hub dataset {hub['path']} has no split {split!r} (it has {', '.join(raw)}); {_offline_hint(cfg)}")
        ds = raw[split]
        label_col = "ner_tags" if name == "conll2003" else "label"
        missing = [c for c in (*hub_text, label_col) if c not in ds.column_names]
        if missing:
            raise PastaError(f"hub dataset {hub['path']} split {split} lacks column(s) {', '.join(missing)}; {_offline_hint(cfg)}")
        cols = {ours: list(ds[theirs]) for ours, theirs in zip(text_columns, hub_text)}
        cols["label"] = _hub_labels(ds, label_col, cfg, split)
        cols["idx"] = [int(i) for i in ds["idx"]] if "idx" in ds.column_names else list(range(len(ds)))
        if split in test_splits:
            found_tests.append(split)
        splits[split] = _dataset(cols, cfg["kind"], text_columns)
    return splits, eval_splits, found_tests


def _hub_labels(ds, column: str, cfg: dict, split: str) -> list:
    values = list(ds[column])
    if cfg["kind"] == REGRESSION:
        return [float(v) for v in values]
    labels = cfg["labels"]
    feature = ds.features[column]
    feature = getattr(feature, "feature", feature)  # List(ClassLabel) for NER
    names = getattr(feature, "names", None)
    if names is None or list(names) == list(labels):
        remap = None
    elif sorted(names) == sorted(labels):
        remap = [labels.index(n) for n in names]
    else:
        raise PastaError(f"hub labels {names} of {cfg['name']} ({split}) do not match task.labels {labels}")

    def one(v: int) -> int:
        v = int(v)
        if v < 0:
            return -1
        if remap is not None:
            return remap[v]
        return v

    if cfg["kind"] == TOKEN_CLASSIFICATION:
        return [[one(v) for v in row] for row in values]
    return [one(v) for v in values]


def _load_builtin(cfg: dict, text_columns: tuple[str, ...]) -> tuple[dict, list[str], list[str], list[str]]:
    synthetic = importlib.import_module("pasta_cli.synthetic")
    labels = list(cfg["labels"] or synthetic.LABELS)
    raw = synthetic.build_splits(
        seed=int(cfg.get("seed", 0)),
        train_size=int(cfg.get("train_size", 2000)),
        dev_size=int(cfg.get("dev_size", 500)),
        test_size=int(cfg.get("test_size", 500)),
    )
    eval_splits, test_splits = _needed_splits(cfg, {"train": 0, "validation": 0, "test": 0})
    splits = {}
    for split in ["train", *eval_splits, *test_splits]:
        rows = raw.get(split)
        if rows is None:
            raise PastaError(f"the builtin task generator returned no {split!r} split")
        cols: dict[str, list] = {c: [] for c in text_columns}
        cols["label"], cols["idx"] = [], []
        for i, r in enumerate(rows):
            for c in text_columns:
                cols[c].append(r[c])
            label = int(r.get("label", -1))
            if label >= len(labels):
                raise PastaError(f"builtin task row {i} of {split} has label {label}, but only {len(labels)} labels exist")
            cols["label"].append(label)
            cols["idx"].append(int(r.get("idx", i)))
        splits[split] = _dataset(cols, cfg["kind"], text_columns)
    return splits, eval_splits, test_splits, labels


def load_task(cfg) -> TaskData:
    """Load a task from its config (DictConfig or dict): local files when task.data_dir is set,
    the built-in synthetic generator for task=builtin, else the Hugging Face hub."""
    cfg = _plain(cfg)
    name = cfg["name"]
    if name not in KNOWN_TASKS:
        raise PastaError(f"unknown task {name!r}: choose one of {', '.join(KNOWN_TASKS)}")
    text_columns = _text_columns(cfg)
    labels = cfg["labels"]
    if cfg["kind"] == REGRESSION:
        labels = None
    elif name != "builtin" and not labels:
        raise PastaError(f"task {name} needs task.labels (class names, index = label id)")
    cfg["labels"] = list(labels) if labels else None
    main = cfg["main_metric"]
    metric_names = list(cfg["metrics"] or [])
    unknown = [m for m in metric_names if m not in _metrics.ALL_METRICS]
    if unknown:
        raise PastaError(f"unknown metric {unknown[0]!r} in task.metrics: choose from {', '.join(_metrics.ALL_METRICS)}")
    if main not in metric_names:
        raise PastaError(f"task.main_metric={main!r} is not in task.metrics {metric_names}")
    if cfg["submission_labels"] not in ("names", "ids"):
        raise PastaError(f"task.submission_labels must be 'names' or 'ids', got {cfg['submission_labels']!r}")

    if name == "builtin":
        splits, eval_splits, test_splits, labels = _load_builtin(cfg, text_columns)
    elif cfg.get("data_dir"):
        splits, eval_splits, test_splits = _load_local(cfg, text_columns)
        labels = cfg["labels"]
    else:
        splits, eval_splits, test_splits = _load_hub(cfg, text_columns)
        labels = cfg["labels"]

    seed = int(cfg.get("sample_seed") or 0)
    splits["train"] = _subset(splits["train"], cfg["max_train_samples"], seed)
    for s in eval_splits:
        splits[s] = _subset(splits[s], cfg["max_eval_samples"], seed)
    for s in test_splits:  # smoke runs only: a subset is not a valid GLUE submission
        splits[s] = _subset(splits[s], cfg.get("max_test_samples"), seed)


    return TaskData(
        name=name,
        kind=cfg["kind"],
        pair=bool(cfg["pair"]),
        labels=labels,
        metrics=metric_names,
        main_metric=main,
        splits=splits,
        eval_splits=eval_splits,
        text_columns=text_columns,
        glue_folder=cfg.get("glue_folder"),
        submission_labels=cfg["submission_labels"],
        test_splits=test_splits,
    )


# --------------------------------------------------------------------------------------------
# Tokenization and batching
# --------------------------------------------------------------------------------------------


def _fingerprint(ds, tokenizer, max_length: int) -> str:
    key = "|".join(
        [
            str(getattr(ds, "_fingerprint", "")),
            type(tokenizer).__name__,
            str(getattr(tokenizer, "name_or_path", "")),
            str(len(tokenizer)),
            str(max_length),
            "pasta-encode-v1",
        ]
    )
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def encode(task: TaskData, tokenizer, max_length: int = 128) -> dict[str, Any]:
    """Tokenize every split: input_ids, attention_mask, token_type_ids (when the tokenizer makes
    them), special_tokens_mask, labels, idx. Truncated to max_length, not padded."""
    if max_length < 3:
        raise PastaError(f"max_length={max_length} leaves no room for text between the special tokens")
    token_level = task.kind == TOKEN_CLASSIFICATION

    def fn(batch: dict[str, list]) -> dict[str, list]:
        if token_level:
            enc = tokenizer(
                batch["tokens"],
                is_split_into_words=True,
                truncation=True,
                max_length=max_length,
                return_special_tokens_mask=True,
            )
            labels, starts = [], []
            for i, word_tags in enumerate(batch["label"]):
                try:
                    word_ids = enc.word_ids(i)
                except (ValueError, AttributeError):
                    raise PastaError(
                        f"token classification needs a fast (tokenizers-backed) tokenizer; {type(tokenizer).__name__} has no word_ids"
                    ) from None
                row, first, previous = [], [], None
                for pos, w in enumerate(word_ids):
                    if w is not None and w != previous:
                        first.append(pos)
                    if w is None or w == previous or w >= len(word_tags):
                        row.append(-100)  # special token, later sub-word, or an unlabelled (test) word
                    else:
                        row.append(int(word_tags[w]))
                    previous = w
                labels.append(row)
                starts.append(first)
        else:
            texts = [batch[c] for c in task.text_columns]
            enc = tokenizer(*texts, truncation=True, max_length=max_length, return_special_tokens_mask=True)
            labels = batch["label"]
        out = {k: v for k, v in enc.items() if k in MODEL_KEYS}
        out["labels"] = labels
        out["idx"] = batch["idx"]
        if token_level:
            out["_word_starts"] = starts
        return out

    encoded = {}
    for split, ds in task.splits.items():
        encoded[split] = ds.map(
            fn,
            batched=True,
            remove_columns=ds.column_names,
            new_fingerprint=_fingerprint(ds, tokenizer, max_length),
            desc=f"tokenizing {task.name} {split}",
        )
        if token_level:
            enc = encoded[split]
            task.word_starts[split] = ([int(i) for i in enc["idx"]], [list(r) for r in enc["_word_starts"]])
            encoded[split] = enc.remove_columns("_word_starts")
    return encoded


class Collator:
    """Pads a list of encoded rows to the longest one: dict of tensors with input_ids,
    attention_mask, token_type_ids, special_tokens_mask (padded with 1) and labels (padded with
    -100 for token classification; float for regression). idx and other columns stay out."""

    def __init__(self, task: TaskData, tokenizer):
        from transformers import DataCollatorForTokenClassification, DataCollatorWithPadding

        self.kind = task.kind
        if tokenizer.pad_token_id is None:
            raise PastaError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no pad token; set one before batching")
        if task.kind == TOKEN_CLASSIFICATION:
            self.inner = DataCollatorForTokenClassification(tokenizer, label_pad_token_id=-100, return_tensors="pt")
        else:
            self.inner = DataCollatorWithPadding(tokenizer, return_tensors="pt")

    def __call__(self, features: list[Mapping[str, Any]]) -> dict[str, Any]:
        import torch

        rows = [{k: v for k, v in f.items() if k in MODEL_KEYS} for f in features]
        batch = dict(self.inner(rows))
        if "labels" in batch:
            labels = batch["labels"]
            if not isinstance(labels, torch.Tensor):
                labels = torch.as_tensor(labels)
            batch["labels"] = labels.float() if self.kind == REGRESSION else labels.long()
        return batch


def make_collator(task: TaskData, tokenizer) -> Collator:
    return Collator(task, tokenizer)


# --------------------------------------------------------------------------------------------
# Predictions, metrics, submissions
# --------------------------------------------------------------------------------------------


def predictions(task: TaskData, logits) -> np.ndarray:
    """Class ids (argmax), scores (regression, (N,1) -> (N,)), or per-token tag ids (N, T)."""
    logits = np.asarray(logits)
    if task.kind == REGRESSION:
        return logits.reshape(logits.shape[0], -1)[:, 0] if logits.ndim > 1 else logits
    return logits.argmax(axis=-1)


def word_tags(preds, labels) -> tuple[list[list[int]], list[list[int]]]:
    """Keep the labelled (first sub-word) positions of each row: (pred ids, gold ids) per sentence."""
    pred_rows, gold_rows = [], []
    for p, y in zip(preds, labels):
        p = np.asarray(p).reshape(-1)
        y = np.asarray(y).reshape(-1)
        n = min(len(p), len(y))
        if np.any(y[n:] != -100):
            raise PastaError(f"token predictions have {len(p)} positions, fewer than the labelled {len(y)}")
        p, y = p[:n], y[:n]
        keep = y != -100
        pred_rows.append([int(v) for v in p[keep]])
        gold_rows.append([int(v) for v in y[keep]])
    return pred_rows, gold_rows


def compute_metrics(task: TaskData, preds, labels) -> dict[str, float]:
    """The task's metrics. For token classification preds and labels are (N, T) id arrays with
    -100 at unlabelled positions; they are scored by seqeval on the tag strings."""
    if task.kind == TOKEN_CLASSIFICATION:
        if len(preds) != len(labels):
            raise PastaError(f"metrics: {len(preds)} predicted sentences for {len(labels)} labelled ones")
        pred_rows, gold_rows = word_tags(preds, labels)
        names = task.labels or []

        def tag(i: int) -> str:
            if not 0 <= i < len(names):
                raise PastaError(f"metrics: tag id {i} is outside the {len(names)} tags of {task.name}")
            return names[i]

        return _metrics.compute(task.metrics, [[tag(i) for i in r] for r in pred_rows], [[tag(i) for i in r] for r in gold_rows])
    preds = np.asarray(preds).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if task.kind == CLASSIFICATION and (labels < 0).any():
        raise PastaError(f"{task.name}: cannot score rows without labels (label -1, an unlabelled test split)")
    return _metrics.compute(task.metrics, preds, labels)


def test_prediction_rows(task: TaskData, idx, preds, labels=None, split: str | None = None) -> list[tuple]:
    """GLUE submission rows (index, prediction): label names (RTE, MNLI, QNLI) or ids (CoLA,
    SST-2, MRPC, QQP; as the GLUE server expects), floats for STS-B.

    Token classification gives (idx, 'TAG TAG ...') with one tag per word. preds are then either
    per-sentence word-level tag ids, or (N, T) per-token ids whose first-sub-word positions come
    from ``labels`` (-100 elsewhere) or from what encode() recorded for ``split`` (found from idx
    when split is not given)."""
    idx = [int(i) for i in idx]
    if len(idx) != len(preds):
        raise PastaError(f"{len(preds)} predictions for {len(idx)} indices")
    if task.kind == REGRESSION:
        return [(i, float(p)) for i, p in zip(idx, np.asarray(preds, dtype=np.float64).reshape(-1))]
    names = task.labels or []

    def name(p) -> str:
        p = int(p)
        if not 0 <= p < len(names):
            raise PastaError(f"prediction {p} is outside the {len(names)} labels of {task.name}")
        return names[p]

    if task.kind == TOKEN_CLASSIFICATION:
        words = _word_level(task, idx, preds, labels, split)
        return [(i, " ".join(name(t) for t in w)) for i, w in zip(idx, words)]
    return [(i, int(p) if task.submission_labels == "ids" else name(p)) for i, p in zip(idx, np.asarray(preds).reshape(-1))]


def _word_level(task: TaskData, idx: list[int], preds, labels, split: str | None) -> list[list[int]]:
    if labels is not None:
        return word_tags(preds, labels)[0]
    token_level = isinstance(preds, np.ndarray) and preds.ndim == 2
    if not token_level:
        return [[int(t) for t in p] for p in preds]  # already one tag id per word
    if split is None:
        matches = [s for s, (ids, _) in task.word_starts.items() if ids == idx]
        if len(matches) != 1:
            raise PastaError(
                "token predictions need their split: pass split=<name> (or labels) to test_prediction_rows"
            )
        split = matches[0]
    if split not in task.word_starts:
        raise PastaError(f"no word positions for split {split!r}: encode() the task before writing its predictions")
    ids, starts = task.word_starts[split]
    if ids != idx:
        raise PastaError(f"the indices given do not match the encoded {split} split")
    return [[int(preds[r, p]) for p in pos if p < preds.shape[1]] for r, pos in enumerate(starts)]


test_prediction_rows.__test__ = False  # its name starts with "test_": keep pytest from collecting it where imported

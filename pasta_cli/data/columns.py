"""Records to typed columns, by the rules every source shares.

A split becomes {text_a[, text_b] | tokens, label, idx}: the text as read; the label a class id,
a float score or a list of tag ids (-1, -1.0 or [] for an unlabelled test row); idx the index
column's integer where the split has that column, else the row number (0-based).

A class (or tag) is written as its name or its id: a value that is a name in task.labels gives
that name's id, a non-negative integer below len(labels) is the id itself (GLUE's files store 0/1
for named classes), anything else is an error naming the file and line. Without task.labels the
names are those found in train, sorted (numerically when all are integers).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from itertools import chain
from typing import Any

from pasta_cli.data.sources import Split
from pasta_cli.data.spec import Kind
from pasta_cli.errors import PastaError, short

NO_LABEL = -1
FLOAT32_MAX = 3.4028234663852886e38  # regression scores are stored as float32 (task._dataset): past this, inf
_INTEGER = re.compile(r"-?\d+")


def read_split(split: Split, kind: Kind, labels: Sequence[str] | None) -> tuple[dict[str, list], bool]:
    """(columns, whether every row has a label). labels=None keeps classes and tags as names,
    for `name_labels` to number once train has been read."""
    token, regression = kind == Kind.token_classification, kind == Kind.regression
    keys = ["tokens"] if token else ["text_a", "text_b"][: len(split.text)]
    out: dict[str, list] = {k: [] for k in (*keys, "label", "idx")}
    lookup = None if labels is None else {name: i for i, name in enumerate(labels)}
    need: list[str] | None = None
    labelled = True
    for row, (where, record) in enumerate(split.records):
        if need is None:  # the first record tells whether the split has labels and ids
            has_label = split.label in record
            has_index = split.index in record
            if not has_label and not split.test:
                raise _missing(where, split.label, record, split)
            need = [*split.text, *([split.label] if has_label else []), *([split.index] if has_index else [])]
        for col in need:
            if col not in record:
                raise _missing(where, col, record, split)
        for key, col in zip(keys, split.text):
            out[key].append(_text(record[col], token, where, col))
        value = record[split.label] if has_label else None
        if value is None:
            if not split.test:
                raise PastaError(f"{where}: column {split.label!r} holds no label; every train and eval row needs one")
            labelled = False
            out["label"].append([] if token else NO_LABEL)
        elif regression:
            out["label"].append(_score(value, where, split.label))
        elif token:
            if not isinstance(value, list) or len(value) != len(out["tokens"][-1]):
                raise PastaError(f"{where}: column {split.label!r} holds {short(value)}, expected a list of "
                                 f"{len(out['tokens'][-1])} tags, one per token")
            out["label"].append([_class(t, lookup, labels, where, split.label) for t in value])
        else:
            out["label"].append(_class(value, lookup, labels, where, split.label))
        out["idx"].append(_index(record[split.index], where, split.index) if has_index else row)
    return out, labelled


def name_labels(values: list, token: bool) -> tuple[list[str], list]:
    """The class (or tag) names found in train, sorted, and train's labels as their ids."""
    names = sorted(set(chain.from_iterable(values) if token else values))
    if all(_INTEGER.fullmatch(n) for n in names):
        names.sort(key=int)
    ids = {n: i for i, n in enumerate(names)}
    return names, [[ids[t] for t in row] for row in values] if token else [ids[v] for v in values]


def _class(value: Any, lookup: dict[str, int] | None, labels: Sequence[str] | None, where: str, col: str) -> int | str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise PastaError(f"{where}: column {col!r} holds {short(value)}, expected a class name or id")
    name = str(value)
    if lookup is None:
        return name
    if name in lookup:
        return lookup[name]
    if name.isascii() and name.isdigit() and int(name) < len(labels):
        return int(name)
    raise PastaError(f"{where}: unknown label {value!r} in column {col!r}, expected one of {_names(labels)} "
                     f"(or an id 0..{len(lookup) - 1})")


def _score(value: Any, where: str, col: str) -> float:
    if not isinstance(value, bool):
        try:
            score = float(value)
        except (TypeError, ValueError, OverflowError):  # OverflowError: a JSON integer past a float's range
            pass
        else:
            if math.isfinite(score) and abs(score) <= FLOAT32_MAX:
                return score
            raise PastaError(f"{where}: score {short(value)} in column {col!r} is not a finite number (scores "
                             "are kept as 32-bit floats); expected a real score: a NaN or an infinity would make "
                             "every loss and prediction NaN")
    raise PastaError(f"{where}: score {short(value)} in column {col!r} is not a number")


def _text(value: Any, token: bool, where: str, col: str) -> str | list[str]:
    ok = isinstance(value, list) and all(isinstance(t, str) for t in value) if token else isinstance(value, str)
    if not ok:
        raise PastaError(f"{where}: column {col!r} holds {short(value)}, expected "
                         f"{'a list of tokens' if token else 'text'}")
    return value


def _index(value: Any, where: str, col: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) or isinstance(value, str) and _INTEGER.fullmatch(value):
        return int(value)
    raise PastaError(f"{where}: index {short(value)} in column {col!r} is not an integer")


def _missing(where: str, col: str | None, record: dict, split: Split) -> PastaError:
    found = ", ".join(map(repr, record))
    if col is None:
        return PastaError(f"{where}: task.label is not set: name the label column (the columns are {found})")
    return PastaError(f"{where}: no column {col!r} among {found}; expected text in "
                      f"{', '.join(map(repr, split.text))} and the label in {split.label!r} (task.text, task.label)")


def _names(labels: Sequence[str]) -> str:
    """Class names for a message, quoted where they hold what would break its one line (a newline, a comma)."""
    return ", ".join(n if n.isprintable() and "," not in n and n.strip() == n and n else repr(n) for n in labels)

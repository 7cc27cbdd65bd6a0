"""A task's rows, loaded from its TaskSpec: `load_task(spec) -> TaskData`.

Every task is described by its spec alone (no code knows a task by name): the rows come from
the built-in generator, local files or the hub (`pasta_cli.data.sources`), are read into typed
columns by one set of rules (`pasta_cli.data.columns`), cut to seeded subsets on request, and
returned with the spec completed by what was found, so that a run can record what it really used.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from datasets import Dataset, Features, List, Value
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pasta_cli.data import columns, sources
from pasta_cli.data.spec import Kind, SubmissionLabels, TaskSpec, resolve_metrics
from pasta_cli.errors import PastaError


@dataclass
class TaskData:
    """A loaded task. `spec` is the resolved TaskSpec (labels, metrics, main_metric, format, files and
    test_splits as actually used); `splits` maps a split name to a `datasets.Dataset` with columns
    text_a [, text_b] (or tokens), label and idx (see pasta_cli.data.columns)."""

    spec: TaskSpec
    splits: dict[str, Any]
    unlabelled: frozenset[str] = frozenset()  # test splits with rows that have no label
    # token tasks, per encoded split: (idx, positions of each word's first sub-word), set by encode(),
    # so that per-token predictions can be turned back into one tag per word for prediction files
    word_starts: dict[str, tuple[list[int], list[list[int]]]] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def kind(self) -> str:
        """The Kind's value: a plain string, the head's name in pasta_cli's model code. (A TaskSpec
        built directly, not through as_spec, may hold the string itself.)"""
        return Kind(self.spec.kind).value

    @property
    def pair(self) -> bool:
        return self.spec.pair

    @property
    def labels(self) -> list[str] | None:
        return self.spec.labels

    @property
    def num_labels(self) -> int:
        """Output width of the task head: 1 for regression, else the number of classes or tags."""
        return 1 if self.kind == Kind.regression else len(self.labels)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels or []))

    @property
    def metrics(self) -> list[str]:
        return self.spec.metrics

    @property
    def main_metric(self) -> str:
        return self.spec.main_metric

    @property
    def eval_splits(self) -> list[str]:
        return self.spec.eval_splits

    @property
    def test_splits(self) -> list[str]:
        return self.spec.test_splits

    @property
    def submission_labels(self) -> str:
        return SubmissionLabels(self.spec.submission_labels).value

    def labelled(self, split: str) -> bool:
        """Whether every row of the split has a label: it can be scored (else it is for submissions)."""
        return split in self.splits and split not in self.unlabelled


def as_spec(cfg: TaskSpec | Any) -> TaskSpec:
    """A typed TaskSpec from a TaskSpec, a DictConfig or a dict, checked against the schema, so a
    misspelt key or a value of the wrong type is one line naming the key."""
    try:
        if isinstance(cfg, DictConfig):  # resolve in place first: its interpolations may reach outside task
            cfg = OmegaConf.to_container(cfg, resolve=True)  # (scale=cpu's ${scale.budget.${task.name}...})
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TaskSpec), cfg))
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None)
        raise PastaError(f"task{'.' + key if key else ' config'}: {str(e).splitlines()[0]}") from None
    except ValueError as e:  # not a mapping at all
        raise PastaError(f"task config: {str(e).splitlines()[0]}") from None


def load_task(spec: TaskSpec | Any) -> TaskData:
    """The task's splits: train, the eval splits and the test splits found, from the first of
    task.builtin, task.data_dir, task.hub that is set."""
    spec = as_spec(spec)
    kind = spec.kind
    metrics, main = resolve_metrics(kind.value, spec.metrics, spec.main_metric)
    _check(spec)
    if spec.builtin is not None:
        splits, found = sources.from_builtin(spec)
    elif spec.data_dir:
        splits, found = sources.from_files(spec)
    elif spec.hub is not None:
        splits, found = sources.from_hub(spec)
    else:
        raise PastaError(f"task {spec.name} has no rows: set task.data_dir=<folder with its files> (and task.format, "
                         f"task.text, task.label), task.hub.path=<hub data set>, or use task=builtin")

    limits = {"train": spec.max_train_samples, **dict.fromkeys(spec.eval_splits, spec.max_eval_samples)}
    labels = None if spec.labels is None else list(spec.labels)
    data, unlabelled = {}, set()
    for name, split in splits.items():  # train comes first: without task.labels, it names them
        cols, labelled = columns.read_split(split, kind, labels)
        if labels is None and kind != Kind.regression:
            labels, cols["label"] = columns.name_labels(cols["label"], token=kind == Kind.token_classification)
        if not labelled:
            unlabelled.add(name)
        cols = _subset(cols, limits.get(name, spec.max_test_samples), spec.sample_seed)
        data[name] = _dataset(cols, kind)
    resolved = dataclasses.replace(spec, labels=labels, metrics=metrics, main_metric=main, **found)
    return TaskData(resolved, data, frozenset(unlabelled))


HELDOUT = "heldout"  # the split trainer.selection=heldout chooses the best evaluation on


def hold_out(task: TaskData, fraction: float, seed: int) -> TaskData:
    """The task with a seeded share of its train rows moved to a labelled `heldout` split, so a run can pick
    its best epoch without reading dev (datasets' own train_test_split: the same rows for the same seed)."""
    train = task.splits["train"]
    if round(fraction * len(train)) < 1 or round(fraction * len(train)) >= len(train):
        raise PastaError(f"trainer.heldout_fraction={fraction} of {len(train)} train rows holds out no row or "
                         f"every row: choose a fraction that leaves both parts at least one row")
    parts = train.train_test_split(test_size=fraction, seed=seed, shuffle=True)
    return dataclasses.replace(task, splits={**task.splits, "train": parts["train"], HELDOUT: parts["test"]})


def _check(spec: TaskSpec) -> None:
    """Settings that are wrong whatever the data holds."""
    kind = spec.kind
    if spec.text is not None and not 1 <= len(spec.text) <= (1 if kind == Kind.token_classification else 2):
        raise PastaError(f"task.text names {len(spec.text)} columns: one (single sentences"
                         f"{'' if kind == Kind.token_classification else ') or two (pairs'})")
    if kind == Kind.regression and spec.labels is not None:
        raise PastaError("task.labels is set, but a regression task has scores, not classes: set task.labels=null")
    if spec.labels is not None and len(set(spec.labels)) != len(spec.labels):
        raise PastaError(f"task.labels {spec.labels} names a class twice")
    if not spec.eval_splits:
        raise PastaError("task.eval_splits is empty: name at least one split to evaluate on (e.g. [validation])")
    if spec.sample_seed < 0:
        raise PastaError(f"task.sample_seed must be 0 or more (it seeds the subsets' draw), got {spec.sample_seed}")
    for key in ("max_train_samples", "max_eval_samples", "max_test_samples"):
        n = getattr(spec, key)
        if n is not None and n < 1:
            raise PastaError(f"task.{key} must be a positive integer or null, got {n}")


def _subset(cols: dict[str, list], n: int | None, seed: int) -> dict[str, list]:
    """The first n rows of a seeded shuffle, kept in file order; all rows when n is None. The same
    draw as the loader before this one, so a seeded run keeps its rows."""
    size = len(cols["idx"])
    if n is None or n >= size:
        return cols
    keep = sorted(int(i) for i in np.random.default_rng(seed).permutation(size)[:n])
    return {k: [v[i] for i in keep] for k, v in cols.items()}


def _dataset(cols: dict[str, list], kind: Kind):
    label = {Kind.classification: Value("int64"), Kind.regression: Value("float32"),
             Kind.token_classification: List(Value("int64"))}[kind]
    text = List(Value("string")) if kind == Kind.token_classification else Value("string")
    features = Features({**{k: text for k in cols if k not in ("label", "idx")}, "label": label, "idx": Value("int64")})
    return Dataset.from_dict(cols, features=features)

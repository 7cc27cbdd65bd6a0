"""The task spec: one typed description of any text classification, regression or token
classification data set, whether its rows come from local files (five formats), the Hugging Face
hub, or the built-in generator.

The dataclasses are Hydra's schema for the `task` group (registered in `pasta_cli.config`), so a
misspelt key or a value of the wrong type in a task YAML fails when the config is composed, not
after the model has loaded. A task YAML for one's own files needs no more than:

    name: my_task
    kind: classification            # classification | regression | token_classification
    format: jsonl                   # tsv | csv | jsonl | parquet | conll
    data_dir: /data/my_task
    files: {train: train.jsonl, validation: dev.jsonl, test: test.jsonl}   # test optional
    text: [question, sentence]      # one column: single sentences; two: pairs
    label: label                    # column name (or a 0-based position for header-less files)

Values left unset are derived when the data is read (`pasta_cli.data.load_task`) and written back
into the run's config.yaml, so a run folder records the labels, metrics and files it really used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

from omegaconf import MISSING

from pasta_cli.errors import PastaError

DEFAULT_SPLITS = ("train", "validation", "test")  # task.files' keys before any task sets them


class Kind(str, Enum):
    """What the head predicts: a class per input, a score per input, or a tag per word."""

    classification = "classification"
    regression = "regression"
    token_classification = "token_classification"


class Format(str, Enum):
    """How local files are laid out. tsv: tab-separated, no quoting (GLUE's files hold bare `"`);
    csv: comma-separated with standard quoting; jsonl: one JSON object per line; parquet;
    conll: one token per line, the token in the first column and its tag in the last, a blank line
    between sentences (CoNLL-2003's layout)."""

    tsv = "tsv"
    csv = "csv"
    jsonl = "jsonl"
    parquet = "parquet"
    conll = "conll"


class SubmissionLabels(str, Enum):
    """How test_predictions.tsv writes a class: its name (RTE, MNLI, QNLI) or its id (CoLA, SST-2,
    MRPC, QQP), as the GLUE server expects."""

    names = "names"
    ids = "ids"


@dataclass
class HubSpec:
    """A Hugging Face hub data set (`datasets.load_dataset(path, name, revision=...)`)."""

    path: str = MISSING
    name: str | None = None
    revision: str | None = None
    text: list[str] | None = None   # the hub copy's text columns, where they differ from task.text
    label: str | None = None        # the hub copy's label column, where it differs from task.label


@dataclass
class BuiltinSpec:
    """The built-in offline task's generator (`pasta_cli.data.builtin.build_splits`)."""

    seed: int = 0
    train_size: int = 2000
    dev_size: int = 500
    test_size: int = 500


@dataclass
class TestColumns:
    """Columns of the (unlabelled) test files where they differ from train and dev: GLUE CoLA's
    test.tsv has a header (`index sentence`) while its train.tsv and dev.tsv have none."""

    text: list[str] | None = None
    index: str | None = None


@dataclass
class TaskSpec:
    """One task. Rows come from the first of `builtin`, `data_dir` (local files), `hub` that is set."""

    name: str = MISSING
    kind: Kind = Kind.classification

    # where the rows come from
    format: Format | None = None          # local files; null: taken from the files' extension
    data_dir: str | None = None
    # split -> file name; null (or a split not named): train/dev/test.<format's extension>, validation being dev.<ext>.
    # The three keys are there, so task.files.validation=dev.csv works on the command line
    files: dict[str, str | None] | None = field(default_factory=lambda: dict.fromkeys(DEFAULT_SPLITS))
    hub: HubSpec | None = None
    builtin: BuiltinSpec | None = None

    # columns: names, or 0-based positions for files without a header row (then every column is a position)
    text: list[str] | None = None         # one column: single sentences; two: sentence pairs
    label: str | None = "label"
    index: str | None = None              # ids for prediction files, where a file has that column; else the row number
    test_columns: TestColumns | None = None
    labels: list[str] | None = None       # class (or tag) names, index = id; null: read from train, sorted

    # evaluation
    metrics: list[str] | None = None      # null: the kind's default (DEFAULTS below)
    main_metric: str | None = None        # model selection; null: the first of metrics
    eval_splits: list[str] = field(default_factory=lambda: ["validation"])
    test_splits: list[str] | None = None  # null: every test* split whose file is there
    submission_labels: SubmissionLabels = SubmissionLabels.names

    # seeded subsets (kept in file order), for quick runs
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    max_test_samples: int | None = None   # smoke runs only: a test subset is no valid submission
    sample_seed: int = 0

    # the task's training budget, which trainer.* and optim.lr override
    lr: float = 5e-3
    batch_size: int = 32
    epochs: int = 20
    group_by_length: bool = True             # similar-length batches (less padding); a task may opt out

    @property
    def pair(self) -> bool:
        """Sentence pairs (two text columns) rather than single sentences: 3 BERT slots instead of 2."""
        return len(self.text or ()) == 2


# Which metrics can score a task (the names task.metrics takes; pasta_cli.eval.metrics computes them)
CLASSIFICATION_METRICS = ("accuracy", "f1", "matthews")
REGRESSION_METRICS = ("pearson", "spearman")
ENTITY_METRICS = ("entity_f1", "entity_precision", "entity_recall")
ALL_METRICS = CLASSIFICATION_METRICS + REGRESSION_METRICS + ENTITY_METRICS

# task kind (Kind's values) -> the metrics that can score it, and its default
KIND_METRICS = {
    "classification": CLASSIFICATION_METRICS,
    "regression": REGRESSION_METRICS,
    "token_classification": ENTITY_METRICS,
}
DEFAULTS = {
    "classification": ("accuracy",),
    "regression": ("pearson", "spearman"),
    "token_classification": ENTITY_METRICS,
}


def resolve_metrics(kind: str, names: Sequence[str] | None, main: str | None) -> tuple[list[str], str]:
    """A task's (metrics, main metric): the kind's defaults where unset, the first metric as the
    main one; an unknown name, one that cannot score this kind, or a main metric outside the list
    is a one-line error, raised before any data is read."""
    allowed = KIND_METRICS[kind]
    names = list(DEFAULTS[kind] if names is None else names)
    if not names:
        raise PastaError(f"task.metrics is empty: choose from {', '.join(allowed)}")
    for n in names:
        if n not in ALL_METRICS:
            raise PastaError(f"unknown metric {n!r} in task.metrics: choose from {', '.join(allowed)}")
        if n not in allowed:
            raise PastaError(f"metric {n!r} cannot score a {kind} task: choose from {', '.join(allowed)}")
    main = names[0] if main is None else main
    if main not in names:
        raise PastaError(f"task.main_metric={main!r} is not in task.metrics {names}")
    return names, main

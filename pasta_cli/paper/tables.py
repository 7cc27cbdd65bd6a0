"""The paper's Tables 2-5 as small read-only objects, built from paper.yaml (the one place they are written).

The scheduler asks a table for its tasks and the override that picks a row; the renderer asks it for
its columns (a task, a metric and a dev split each), its row labels and the paper's numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from pasta_cli.paper_data import value


@dataclass(frozen=True)
class Column:
    """One column of a rendered table: a task's score on one dev split (MNLI has two in Tables 2 and 5)."""

    key: str      # unique within the table: the task, or the task and its header for MNLI-m / MNLI-mm
    label: str    # the header, as the paper writes it
    task: str
    metric: str   # key in results.json's best_scores[split]
    split: str


@dataclass(frozen=True)
class Reported:
    """One row as the paper reports it: % params (as printed) and a number per column key (None: "-")."""

    params: str | None
    scores: dict[str, float | None]
    avg: float | None


@dataclass(frozen=True)
class Table:
    """One of the paper's tables: what it ran (model, rows), what it shows (columns) and what it reported."""

    name: str
    title: str
    model: str
    evaluated_on: str
    rows_kind: str                   # "method" (Tables 2, 3, 5) or "variant" (Table 4)
    has_avg: bool
    params_note: str
    columns: tuple[Column, ...]
    reported: dict[str, Reported]    # row key -> the paper's numbers

    @property
    def tasks(self) -> list[str]:
        return list(dict.fromkeys(c.task for c in self.columns))

    @property
    def row_key(self) -> str:
        """The override that picks a row: `method=<row>` or `method.variant=<row>`."""
        return "method.variant" if self.rows_kind == "variant" else "method"


def task_label(task: str) -> str:
    return value(f"tasks.{task}.label")


def data_folder(task: str) -> str:
    """Where the task's files lie under a data root laid out as ../shared/data (`glue/RTE`, `conll2003`)."""
    return value(f"tasks.{task}.data")


def row_label(row: str) -> str:
    return value(f"rows.{row}")


def _columns(task: str, spec: dict) -> list[Column]:
    splits = spec.get("splits") or {task_label(task): "validation"}
    keys = [task] if len(splits) == 1 else [label.lower() for label in splits]  # mnli-m, mnli-mm
    return [Column(key, label, task, spec["metric"], split) for key, (label, split) in zip(keys, splits.items())]


def _reported(row: dict, columns: list[Column]) -> Reported:
    scores = {}
    for task in dict.fromkeys(c.task for c in columns):
        cols = [c for c in columns if c.task == task]
        numbers = row[task] if isinstance(row[task], list) else [row[task]]
        if len(numbers) != len(cols):
            raise ValueError(f"paper.yaml: {task} has {len(cols)} column(s) but {len(numbers)} number(s)")
        scores.update({c.key: n for c, n in zip(cols, numbers)})
    return Reported(row.get("params"), scores, row.get("avg"))


@cache
def table(name: str) -> Table:
    spec = value(f"tables.{name}")
    columns = [col for task, c in spec["columns"].items() for col in _columns(task, c)]
    return Table(name, spec["title"], spec["model"], spec["evaluated_on"], spec["rows"], spec["avg"],
                 spec.get("params_note") or "", tuple(columns),
                 {row: _reported(r, columns) for row, r in spec["reported"].items()})


def table_names() -> list[str]:
    return list(value("tables"))

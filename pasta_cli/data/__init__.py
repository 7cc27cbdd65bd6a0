"""The data layer: a task's spec (`spec`), its rows from files, the hub or the built-in generator
(`load_task`), and their tokenization and batching (`encode`, `Collator`)."""

from pasta_cli.data.encode import Collator, encode
from pasta_cli.data.spec import (
    BuiltinSpec,
    Format,
    HubSpec,
    Kind,
    SubmissionLabels,
    TaskSpec,
    TestColumns,
)
from pasta_cli.data.task import HELDOUT, TaskData, as_spec, hold_out, load_task

__all__ = [
    "BuiltinSpec", "Collator", "Format", "HubSpec", "Kind", "SubmissionLabels", "TaskData", "TaskSpec",
    "TestColumns", "HELDOUT", "as_spec", "encode", "hold_out", "load_task",
]

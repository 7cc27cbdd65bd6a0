"""From the command line's `NAME=PATH` options to loaded tasks, with what their adapters know.

An adapter written by `pasta-train` carries the run's resolved task spec (columns, format, labels,
submission format) and `trainer.max_length` in its own adapter_config.json (an older one: in its run's
config.yaml beside it), read by `pasta_cli.adapter.inference_settings`: inputs are read and truncated as
the task was trained, wherever the folder was copied. An adapter saved by hand (`save_adapter` without
`task_spec`) needs its inputs' text columns named.
"""

from __future__ import annotations

from pathlib import Path

from pasta_cli.adapter import inference_settings, read_adapter_config
from pasta_cli.data import TaskSpec, as_spec
from pasta_cli.errors import PastaError
from pasta_cli.items import TASK_NAME
from pasta_cli.multitask import MultiTaskPasta


def named(values: list[str] | None, option: str, example: str) -> dict[str, str]:
    """`--option NAME=VALUE`, repeated: {NAME: VALUE}, each name once."""
    out: dict[str, str] = {}
    for value in values or []:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            raise PastaError(f"{option} {value!r}: expected NAME=VALUE, e.g. {option} {example}")
        if not TASK_NAME.fullmatch(name):
            raise PastaError(f"{option} {value!r}: task name {name!r} is not allowed: use letters, digits, "
                             "'_', '.' or '-'")
        if name in out:
            raise PastaError(f"{option} names task '{name}' twice: give each task once")
        out[name] = rest
    return out


def run_task(adapter: str | Path) -> TaskSpec | None:
    """The task spec the adapter was trained on: from the adapter's own config, or (an older adapter)
    its run's config.yaml; None for an adapter saved by hand without one."""
    spec = inference_settings(adapter)["task_spec"]
    return None if spec is None else as_spec(spec)


def load_tasks(adapters: dict[str, str], backbone: str | None = None, **options) -> MultiTaskPasta:
    """One backbone (the first adapter's unless given), every adapter on it, each truncating its
    inputs where its run did (MultiTaskPasta.add_adapter reads the adapter's max_length)."""
    if not adapters:
        raise PastaError("no adapter given: name at least one, --adapter NAME=PATH (a run's adapter/ folder)")
    model = MultiTaskPasta(backbone or read_adapter_config(next(iter(adapters.values())))["backbone"], **options)
    for name, path in adapters.items():
        model.add_adapter(name, path)
    return model

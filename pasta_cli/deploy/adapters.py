"""From the command line's `NAME=PATH` options to loaded tasks, with what their run folders know.

An adapter written by `pasta-train` sits in its run folder (`<run>/adapter/`) beside `config.yaml`,
which holds the run's resolved task spec (columns, format, labels, submission format) and
`trainer.max_length`: inputs are read and truncated as the task was trained. An adapter saved by
hand (`save_adapter`) has no run folder: its inputs need their text columns named.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pasta_cli.adapter import read_adapter_config
from pasta_cli.data import TaskSpec, as_spec
from pasta_cli.errors import PastaError
from pasta_cli.multitask import TASK_NAME, MultiTaskPasta


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


def run_config(adapter: str | Path):
    """The run's config.yaml beside the adapter folder, or None for an adapter saved by hand."""
    path = Path(adapter).parent / "config.yaml"
    if not path.is_file() or not (Path(adapter) / "adapter_config.json").is_file():
        return None
    try:
        return OmegaConf.load(path)
    except (OmegaConfBaseException, ValueError, OSError) as e:
        raise PastaError(f"cannot read the run's '{path}' ({type(e).__name__}): the run folder is damaged") from None


def run_task(adapter: str | Path) -> TaskSpec | None:
    """The task spec the adapter was trained on (None without a run folder)."""
    cfg = run_config(adapter)
    return None if cfg is None or "task" not in cfg else as_spec(cfg.task)


def run_max_length(adapter: str | Path) -> int | None:
    cfg = run_config(adapter)
    return None if cfg is None else OmegaConf.select(cfg, "trainer.max_length", default=None)


def load_tasks(adapters: dict[str, str], backbone: str | None = None, **options) -> MultiTaskPasta:
    """One backbone (the first adapter's unless given), every adapter on it, each truncating its
    inputs where its run did."""
    if not adapters:
        raise PastaError("no adapter given: name at least one, --adapter NAME=PATH (a run's adapter/ folder)")
    model = MultiTaskPasta(backbone or read_adapter_config(next(iter(adapters.values())))["backbone"], **options)
    for name, path in adapters.items():
        model.add_adapter(name, path, max_length=run_max_length(path))
    return model

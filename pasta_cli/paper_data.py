"""paper.yaml (beside this module): the paper's numbers and every method's training recipe, read once.

The lookups every layer may use (config resolvers, the methods' settings defaults, the paper's tables); they
import nothing of pasta_cli. `pasta_cli.paper` re-exports them.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


@cache
def paper() -> DictConfig:
    """paper.yaml, read once and read-only."""
    cfg = OmegaConf.create(Path(__file__).with_name("paper.yaml").read_text())
    OmegaConf.set_readonly(cfg, True)
    return cfg


def value(key: str):
    """One entry by dotted key (`table6.rte.lr`); a key that is not there is an error, never None."""
    found = OmegaConf.select(paper(), key, default=KeyError)
    if found is KeyError:
        raise KeyError(f"paper.yaml has no entry '{key}'")
    return OmegaConf.to_container(found) if isinstance(found, DictConfig) else found


@cache
def _recipe_entries() -> dict:
    """paper.yaml `recipes` as plain containers, converted once: every config resolution looks recipes up."""
    return value("recipes")


def recipe(method: str, task: str | None = None, model: str | None = None) -> dict:
    """A method's recipe (paper.yaml `recipes`) for one task and backbone, as one flat dict: the common
    values, then the task's, the model's, the model's for the task (the most specific wins). A method
    without an entry (a research variant, the benchmark's floor) trains on PASTA's."""
    entries = _recipe_entries()
    entry = entries.get(method) or entries["pasta"]
    for_model = (entry.get("models") or {}).get(model) or {}
    # the sources are GLUE recipes: their common epochs and batch size are sized for GLUE's data; another
    # task (the built-in one, your own, CoNLL-2003) keeps its config's, with the recipe's lr and optimiser
    common_only = () if is_glue(task) else ("epochs", "batch_size")
    out: dict = {}
    for layer, specific in ((entry, False), ((entry.get("tasks") or {}).get(task), True), (for_model, False),
                            ((for_model.get("tasks") or {}).get(task), True)):
        out.update({k: v for k, v in (layer or {}).items()
                    if k not in ("tasks", "models") and (specific or k not in common_only)})
    return copy.deepcopy(out)  # the caller's own: the cached entries stay as paper.yaml says


def is_glue(task: str | None) -> bool:
    """A GLUE task: its data lies under glue/ in paper.yaml's `tasks`."""
    return str((value("tasks").get(task) or {}).get("data", "")).startswith("glue/")

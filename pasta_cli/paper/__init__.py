"""The paper's tables: its numbers in one data file, paper.yaml, and `pasta-reproduce`, which reruns them.

paper.yaml holds Table 6 (the budgets), the reported Tables 2-5, the row labels and each task's data
folder. Task configs read Table 6 through the `${paper:table6.<task>.<key>}` resolver and the recipes
conf/experiment/table<N>.yaml read their metric through `${paper:tables.<table>.columns.<task>.metric}`;
the modules below read the same file, so nothing of it is written twice:

- `tables`: the tables as small dataclasses (columns, rows, the paper's numbers);
- `schedule`: the cells of a run as one Hydra multirun per task column, in fixed folders;
- `results`: results.json files back into cells, or aggregated over any sweep;
- `render`: cells into table.md / table.csv, aggregated groups into markdown / CSV;
- `reproduce`: the `pasta-reproduce` command line.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from omegaconf import DictConfig, OmegaConf


@cache
def paper() -> DictConfig:
    """paper.yaml, read once and read-only."""
    cfg = OmegaConf.create((files(__package__) / "paper.yaml").read_text())
    OmegaConf.set_readonly(cfg, True)
    return cfg


def value(key: str):
    """One entry by dotted key (`table6.rte.lr`); a key that is not there is an error, never None."""
    found = OmegaConf.select(paper(), key, default=KeyError)
    if found is KeyError:
        raise KeyError(f"paper.yaml has no entry '{key}'")
    return OmegaConf.to_container(found) if isinstance(found, DictConfig) else found

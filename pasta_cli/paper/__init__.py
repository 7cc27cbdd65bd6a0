"""The paper's tables: its numbers in one data file, paper.yaml, and `pasta-reproduce`, which reruns them.

paper.yaml (pasta_cli/paper.yaml, read by pasta_cli.paper_data) holds Table 6 (the budgets), the reported
Tables 2-5, the row labels, each task's data folder and every method's own training recipe (`recipe()`,
which conf/optim and conf/trainer read through `${recipe:<key>}`, pasta_cli/config.py, and each method's
settings dataclass reads for its defaults). Task configs read Table 6 through the
`${paper:table6.<task>.<key>}` resolver and the table configs
conf/experiment/table<N>.yaml read their metric through `${paper:tables.<table>.columns.<task>.metric}`;
the modules below read the same file, so nothing of it is written twice:

- `tables`: the tables as small dataclasses (columns, rows, the paper's numbers);
- `schedule`: the cells of a run as one Hydra multirun per task column, in fixed folders;
- `results`: results.json files back into cells, or aggregated over any sweep;
- `render`: cells into table.md / table.csv, aggregated groups into markdown / CSV;
- `frontier`: the frontier table's cells into frontier.md / .csv / .png (score vs trainable parameters, the front);
- `reproduce`: the `pasta-reproduce` command line.
"""

from __future__ import annotations

from pasta_cli.paper_data import is_glue, paper, recipe, value

__all__ = ["is_glue", "paper", "recipe", "value"]

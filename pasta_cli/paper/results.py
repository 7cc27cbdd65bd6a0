"""What finished: results.json files read back, as a table's cells or as aggregated groups of any sweep.

Scores are kept as pasta-train writes them (0..1) until here; cells and aggregated rows are x100, as the
paper prints them. Spread is the sample standard deviation (`statistics.stdev`) over seeds.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from pasta_cli.errors import PastaError
from pasta_cli.paper.schedule import Plan, shell
from pasta_cli.paper.tables import Column
from pasta_cli.run_folder import RESULTS, TRAIN_LOG, is_finished, is_running, read_results


def load_results(root: Path) -> list[dict]:
    """Every results.json under root (its run folder kept as `_dir`); unreadable ones are skipped."""
    out = []
    for path in sorted(Path(root).rglob(RESULTS)):
        try:
            r = read_results(path)
        except PastaError:
            continue
        r["_dir"] = str(path.parent)
        out.append(r)
    return out


def metric_value(result: dict, metric: str | None = None, split: str | None = None) -> float | None:
    """A run's score (0..1): its main metric (best_score) or best_scores[split][metric].

    `metric` may be "split/metric"; without a split the first split that has the metric is used.
    """
    if metric is None:
        return result.get("best_score")
    if "/" in metric and split is None:
        split, metric = metric.split("/", 1)
    scores = result.get("best_scores") or {}
    if split is not None:
        return (scores.get(split) or {}).get(metric)
    return next((s[metric] for s in scores.values() if metric in s), None)


def mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (None for fewer than 2 values); None and NaN are left out."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def row_key(result: dict) -> str:
    """The table row a run belongs to: its variant for PASTA runs, the method otherwise."""
    return result.get("variant") if result.get("method") == "pasta" else result.get("method")


def _scaled(v: float | None) -> float | None:
    return None if v is None else 100 * v


def aggregate(results: list[dict], by: list[str], metric: str | None = None) -> list[dict]:
    """One row per group of `by` keys (results.json keys, or `row`): the best hyper-parameter setting
    (lr, epochs, effective batch) by mean dev score over seeds, with that setting's mean ± std (x100)."""
    groups: dict[tuple, dict[tuple, list[dict]]] = {}
    for r in results:
        key = tuple(row_key(r) if k == "row" else r.get(k) for k in by)
        setting = (r.get("lr"), r.get("epochs"), r.get("effective_batch_size"))
        groups.setdefault(key, {}).setdefault(setting, []).append(r)
    rows = []
    for key, settings in sorted(groups.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        scored = []
        for setting, runs in settings.items():
            vals = [v for v in (metric_value(r, metric) for r in runs) if v is not None]
            m, s = mean_std(vals)
            scored.append((-math.inf if m is None else m, setting, runs, m, s, len(vals)))
        _, (lr, epochs, batch), runs, m, s, n = max(scored, key=lambda x: x[0])
        rows.append({
            **dict(zip(by, key)),
            "metric": metric or runs[0].get("main_metric"),
            "mean": _scaled(m), "std": _scaled(s), "n": n,
            "seeds": ",".join(str(r.get("seed")) for r in runs),
            "lr": lr, "epochs": epochs, "batch": batch, "settings_tried": len(settings),
            "best_epoch": ",".join(str(r.get("best_epoch")) for r in runs),
            "trainable_method_pct": runs[0].get("trainable_method_pct"),
            "wall_time_s": round(sum(r.get("wall_time_s") or 0 for r in runs), 1),
            "run_dirs": ";".join(r["_dir"] for r in runs),
        })
    return rows


@dataclass
class Cell:
    """One (row, column) of a paper table: its runs (one per seed), status and numbers (x100).

    Status: ok (every seed finished), missing (the task's data is absent), running (a live pasta-train holds
    a run's folder: a --report during the run), failed (a run was attempted and left no results.json),
    pending (not run yet), or not run (its column was not selected)."""

    row: str
    column: Column
    status: str = "pending"
    runs: list[dict] = field(default_factory=list)
    log: str | None = None
    command: str = ""
    mean: float | None = None
    std: float | None = None
    paper: float | None = None

    @property
    def diff(self) -> float | None:
        return None if self.mean is None or self.paper is None else self.mean - self.paper


def collect_cells(plan: Plan, ran: set[str]) -> dict[tuple[str, str], Cell]:
    """Every cell of the plan's table, read back from its run folders. `ran`: the task columns this
    invocation launched or found finished; there a run without results.json failed, even one that died
    before making its folder. Each cell carries its own command: its column's multirun restricted to it."""
    table = plan.table
    cells = {}
    for row in plan.rows:
        reported = table.reported.get(row)
        for col in table.columns:
            cell = Cell(row, col, paper=reported.scores.get(col.key) if reported else None,
                        command=shell(plan.command(col.task, [row])))
            cells[(row, col.key)] = cell
            if not plan.has_data(col.task):
                cell.status = "missing"
                continue
            failed_dir, running = None, False
            for seed in plan.seeds:
                d = plan.run_dir(col.task, row, seed)
                if is_finished(d):
                    cell.runs.append({**read_results(d), "_dir": str(d)})
                elif is_running(d):
                    running = True
                elif col.task in ran or d.exists():
                    failed_dir = failed_dir or d
            if running:
                cell.status = "running"
            elif failed_dir is not None:
                cell.status = "failed"
                train_log = failed_dir / TRAIN_LOG
                cell.log = str(train_log if train_log.is_file() else plan.log_path(col.task))
            elif len(cell.runs) == len(plan.seeds):
                cell.status = "ok"
            else:
                cell.status = "pending" if col.task in plan.selected else "not run"
            if cell.runs:  # a failed cell keeps the numbers of the seeds that finished
                cell.mean, cell.std = map(_scaled, mean_std([metric_value(r, col.metric, col.split)
                                                             for r in cell.runs]))
    return cells

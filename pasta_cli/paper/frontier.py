"""The parameter-efficiency frontier: every method's score against what it trains, and which methods no other beats.

`pasta-reproduce frontier` runs the table `frontier` (paper.yaml) like any other; this module turns its cells
into frontier.md, frontier.csv and frontier.png beside table.md. Per (task, method): the mean ± std over seeds,
the 95% interval of that mean (`uncertainty.score_interval`: a bootstrap over the dev examples and the seeds),
the trainable parameters with and without the head, and whether the method is on the task's Pareto front.

The front's x is everything that trained, the task head included (results.json `trainable`): what a deployment
stores per task. Without the head, classifier-only would train nothing and sit at x = 0, off a log axis, and the
head (the same for every method on a task) would not count, though a 2-label head outweighs a PASTA vector.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from pasta_cli.errors import PastaError
from pasta_cli.files import write_atomic
from pasta_cli.paper.render import csv_text, fmt, fmt_mean_std, markdown_table
from pasta_cli.paper.results import Cell, collect_cells
from pasta_cli.paper.schedule import Plan
from pasta_cli.paper.tables import Column, row_label, task_label
from pasta_cli.paper.uncertainty import score_interval
from pasta_cli.paper_data import value
from pasta_cli.plots import frontier_figure

X_KEY = "trainable"  # the front's x (results.json): the parameters trained, the head included
X_TEXT = "trainable parameters, the task head included"
CSV_HEADER = ["task", "row", "row_label", "metric", "selection", "mean", "std", "ci_low", "ci_high", "n_seeds",
              "seeds", "trainable", "trainable_method", "on_front", "wall_time_s", "machine", "run_dirs"]


def defaults() -> dict:
    """The frontier's protocol as paper.yaml writes it: rows, tasks per scale, seeds, selection."""
    return value("frontier")


@dataclass(frozen=True)
class Point:
    """One method on one task: its score (x100) over seeds, the interval of that mean, what it trained."""

    row: str
    mean: float
    std: float | None
    seeds: tuple[int, ...]
    low: float | None           # the 95% interval of the mean; None: no dev predictions to draw from
    high: float | None
    trainable: int | None       # with the head (X_KEY)
    trainable_method: int | None
    wall_time_s: float
    run_dirs: tuple[str, ...]
    why: str = ""               # why there is no interval


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """The names whose (x, y) no other point dominates (x <= and y >=, one of them strictly), by x then name.
    Equal points dominate neither other: both stay on the front."""
    def dominated(x, y):
        return any(ox <= x and oy >= y and (ox < x or oy > y) for ox, oy in points.values())
    return sorted((n for n, (x, y) in points.items() if not dominated(x, y)), key=lambda n: (points[n][0], n))


def first_column(plan: Plan, task: str) -> Column:
    """The column a task is scored by on the frontier: its first (MNLI-m for MNLI)."""
    return next(c for c in plan.table.columns if c.task == task)


def _count(cell: Cell, key: str) -> int | None:
    counts = [r[key] for r in cell.runs if r.get(key) is not None]
    return max(counts) if counts else None  # the same for every seed; max, were one to differ


def points(plan: Plan, cells: dict[tuple, Cell], n_resamples: int = 2000) -> dict[str, list[Point]]:
    """Per selected task, a Point for every row whose cell finished (each task by its first column: MNLI-m)."""
    out: dict[str, list[Point]] = {}
    for task in plan.selected:
        col = first_column(plan, task)
        found = []
        for row in plan.rows:
            cell = cells[(row, col.key)]
            if cell.status != "ok" or cell.mean is None:
                continue
            low = high = None
            why = ""
            try:
                gap = score_interval({r["seed"]: r["_dir"] for r in cell.runs}, col.metric, n_resamples)
                low, high = gap.low, gap.high
            except (PastaError, OSError) as e:
                why = str(e).splitlines()[0]
            found.append(Point(row, cell.mean, cell.std, tuple(r["seed"] for r in cell.runs), low, high,
                               _count(cell, X_KEY), _count(cell, "trainable_method"),
                               round(sum(r.get("wall_time_s") or 0 for r in cell.runs), 1),
                               tuple(r["_dir"] for r in cell.runs), why))
        out[task] = found
    return out


def fronts(by_task: dict[str, list[Point]]) -> dict[str, list[str]]:
    return {task: pareto_front({p.row: (p.trainable, p.mean) for p in pts if p.trainable is not None})
            for task, pts in by_task.items()}


def front_text(plan: Plan, task: str, pts: list[Point], front: list[str]) -> str:
    """The front in words: `On SST-2 at scale cpu, the front is classifier only (770, 80.1), PASTA (...)`."""
    if not front:
        return f"On {task_label(task)} at scale {plan.scale}, no method finished: no front yet."
    by_row = {p.row: p for p in pts}
    named = ", ".join(f"{row_label(r)} ({by_row[r].trainable:,} parameters, {fmt(by_row[r].mean)})" for r in front)
    off = [row_label(p.row) for p in pts if p.row not in front]
    return (f"On {task_label(task)} at scale {plan.scale}, the front is {named}"
            + (f"; dominated: {', '.join(off)}" if off else "") + ".")


def _interval(p: Point) -> str:
    return f"[{fmt(p.low)}, {fmt(p.high)}]" if p.low is not None else f"– ({p.why})" if p.why else "–"


def protocol_table(plan: Plan, cells: dict[tuple, Cell]) -> str:
    """Each method's score under dev selection and under held-out selection, and the difference: how much the
    protocol itself moves it. Only when the other protocol's folder of the same scale exists."""
    other = replace(plan, selection="dev" if plan.selection == "heldout" else "heldout")
    if not other.folder.is_dir():
        return ""
    by = {plan.selection: cells, other.selection: collect_cells(other, set())}
    header = ["row"] + [f"{task_label(t)} {h}" for t in plan.selected for h in ("dev", "held-out", "held-out - dev")]
    body, any_pair = [], False
    for row in plan.rows:
        line = [row_label(row)]
        for task in plan.selected:
            key = first_column(plan, task).key
            dev, held = (by[s][(row, key)] for s in ("dev", "heldout"))
            dev_m, held_m = (c.mean if c.status == "ok" else None for c in (dev, held))
            both = dev_m is not None and held_m is not None
            any_pair |= both
            line += [fmt_mean_std(dev_m, dev.std, len(dev.runs)), fmt_mean_std(held_m, held.std, len(held.runs)),
                     fmt(held_m - dev_m, sign=True) if both else "–"]
        body.append(line)
    if not any_pair:
        return ""
    return ("\n## The protocol itself: dev selection vs held-out selection\n\n"
            f"The same rows and seeds from {plan.folder if plan.selection == 'dev' else other.folder} (dev: the "
            "best dev score of each run, the paper's protocol) and "
            f"{plan.folder if plan.selection == 'heldout' else other.folder} (held-out: the epoch chosen on a "
            "slice of train, dev read once). `held-out - dev`: how much picking the epoch on dev itself flatters "
            "each method, x100. The held-out runs also train on a share less of train (trainer.heldout_fraction): "
            "where a run has one evaluation (one epoch), that is the whole difference.\n\n"
            + markdown_table(header, body))


def frontier_markdown(plan: Plan, by_task: dict[str, list[Point]], front: dict[str, list[str]],
                      meta: dict[str, str], cells: dict[tuple, Cell]) -> str:
    # the backbone the runs trained (scale cpu: the packaged MiniLM, not the title's BERT-large)
    trained = sorted({str(r.get("model")) for c in cells.values() for r in c.runs})
    md = [f"# {plan.table.title}: scale {plan.scale}, {plan.selection} selection\n\n",
          f"Backbone actually trained: {', '.join(trained) or 'none yet'} (conf/scale/{plan.scale}.yaml). "
          f"Each method on each task column under one protocol: {meta.get('model selection', plan.selection)}; "
          f"seeds {','.join(map(str, plan.seeds))}; each row its method's own recipe. Score: x100, the mean ± std "
          "over seeds, and the 95% interval of that mean (a percentile bootstrap over the dev examples and the "
          "seeds, scipy.stats.bootstrap, pasta_cli/paper/uncertainty.py). The front (★) and the figure's x are "
          f"the {X_TEXT} (results.json `trainable`): what a deployment stores per task; the method's own count "
          "without the head (`trainable_method`) is listed beside it. A method is on the front when no other "
          "has a score at least as high with at most as many parameters, one of the two strictly.\n\n"
          "![frontier](frontier.png)\n"]
    for task, pts in by_task.items():
        metric = first_column(plan, task).metric
        rows = [[("★ " if p.row in front[task] else "") + row_label(p.row),
                 "–" if p.trainable is None else f"{p.trainable:,}",
                 "–" if p.trainable_method is None else f"{p.trainable_method:,}",
                 fmt_mean_std(p.mean, p.std, len(p.seeds)), _interval(p), ",".join(map(str, p.seeds)),
                 f"{p.wall_time_s / 60:.1f} min"] for p in sorted(pts, key=lambda p: (p.trainable or 0, p.row))]
        md += [f"\n## {task_label(task)} ({metric})\n\n",
               markdown_table(["method", "trainable (with head)", "trainable (method)", f"{metric} (x100)",
                               "95% interval", "seeds", "wall time"], rows),
               "\n" + front_text(plan, task, pts, front[task]) + "\n"]
    unfinished = [r for r in plan.rows if not any(p.row == r for pts in by_task.values() for p in pts)]
    if unfinished:
        md.append(f"\nNo finished run (yet) for: {', '.join(row_label(r) for r in unfinished)}.\n")
    md.append(protocol_table(plan, cells))
    md.append("\n## Run\n\n")
    md += [f"- {k}: {v}\n" for k, v in meta.items()]
    return "".join(md)


def frontier_csv(plan: Plan, by_task: dict[str, list[Point]], front: dict[str, list[str]], machine: str) -> str:
    rows = []
    for task, pts in by_task.items():
        metric = first_column(plan, task).metric
        for p in pts:
            rows.append([task, p.row, row_label(p.row), metric, plan.selection, round(p.mean, 2),
                         None if p.std is None else round(p.std, 2),
                         None if p.low is None else round(p.low, 2), None if p.high is None else round(p.high, 2),
                         len(p.seeds), ",".join(map(str, p.seeds)), p.trainable, p.trainable_method,
                         int(p.row in front[task]), p.wall_time_s, machine, ";".join(p.run_dirs)])
    return csv_text(CSV_HEADER, rows)


def write_frontier(plan: Plan, cells: dict[tuple, Cell], meta: dict[str, str], n_resamples: int = 2000) -> list[Path]:
    """frontier.md, frontier.csv and frontier.png in the table's scale folder and one level up, as write_table."""
    by_task = points(plan, cells, n_resamples)
    front = fronts(by_task)
    md = frontier_markdown(plan, by_task, front, meta, cells)
    csv_out = frontier_csv(plan, by_task, front, meta.get("machine", ""))
    panels = [{"title": f"{task_label(task)}, scale {plan.scale}",
               "ylabel": first_column(plan, task).metric + " (x100)",
               "points": [{"label": row_label(p.row), "x": p.trainable, "y": p.mean, "low": p.low, "high": p.high,
                           "front": p.row in front[task]} for p in pts]}
              for task, pts in by_task.items()]
    written = []
    for folder in (plan.folder, plan.folder.parent):
        for name, text in (("frontier.md", md), ("frontier.csv", csv_out)):
            write_atomic(folder / name, text)
            written.append(folder / name)
        written.append(frontier_figure(panels, folder / "frontier.png", X_TEXT + " (log scale)"))
    return written

"""Text out of numbers: a table's cells as table.md and table.csv beside the paper's numbers, and the
aggregated groups of any sweep (scripts/aggregate.py) as markdown and CSV. Nothing here runs or reads runs."""

from __future__ import annotations

import csv
import io
import statistics
from pathlib import Path

from pasta_cli.files import write_atomic
from pasta_cli.paper.results import Cell
from pasta_cli.paper.schedule import Plan, shell
from pasta_cli.paper.tables import row_label, task_label
from pasta_cli.paper.versions import versions_line
from pasta_cli.paper_data import recipe, value

# how a run picked its best evaluation (trainer.selection), as the table's text says it
SELECTION_TEXT = {
    "dev": "ours are the best dev-set score of each run (model selection on the dev set, the paper's protocol)",
    "heldout": "ours are each run's dev-set score at the epoch chosen on a seeded held-out slice of train "
               "(trainer.selection=heldout: dev is read once, at the end)",
}
CSV_HEADER = ["table", "scale", "row", "row_label", "recipe", "column", "task", "split", "metric", "status", "mean",
              "std", "n_seeds", "seeds", "paper", "diff", "trainable_method_pct", "trainable_pct", "best_epoch",
              "wall_time_s", "log", "run_dirs", "command"]


def fmt(value: float | None, sign: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.1f}" if sign else f"{value:.1f}"


def fmt_mean_std(mean: float | None, std: float | None, n: int) -> str:
    if mean is None:
        return "–"
    return f"{mean:.1f} ± {std:.1f}" if n > 1 and std is not None else f"{mean:.1f}"


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def csv_text(header: list[str], rows: list[list]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows([["" if v is None else v for v in row] for row in rows])
    return buf.getvalue()


# --------------------------------------------------------------------------------------- any sweep
def aggregate_markdown(rows: list[dict], by: list[str]) -> str:
    fixed = [(k, h) for k, h in (("lr", "best lr"), ("epochs", "best epochs"), ("batch", "batch")) if k not in by]
    header = [*by, "metric", "score (x100)", "n seeds", *(h for _, h in fixed), "settings", "method %"]
    body = [[*(str(r[k]) for k in by), r["metric"], fmt_mean_std(r["mean"], r["std"], r["n"]), r["n"],
             *(r[k] for k, _ in fixed), r["settings_tried"],
             "–" if r["trainable_method_pct"] is None else f"{r['trainable_method_pct']:.4f}%"] for r in rows]
    return markdown_table(header, body)


def aggregate_csv(rows: list[dict], by: list[str]) -> str:
    keys = [*by, *(k for k in ("metric", "mean", "std", "n", "seeds", "lr", "epochs", "batch", "settings_tried",
                                "best_epoch", "trainable_method_pct", "wall_time_s", "run_dirs") if k not in by)]
    return csv_text(keys, [[r[k] for k in keys] for r in rows])


# --------------------------------------------------------------------------------------- a paper table
def cell_text(cell: Cell) -> str:
    """`ours (paper, ours - paper)`, ours being mean ± std over seeds; or what keeps the cell empty."""
    if cell.status == "missing":
        return "missing (no data)"
    if cell.status == "failed":
        return f"failed (log: {cell.log})"
    if cell.status != "ok":
        return cell.status
    ours = fmt_mean_std(cell.mean, cell.std, len(cell.runs))
    return ours if cell.paper is None else f"{ours} ({fmt(cell.paper)}, {fmt(cell.diff, sign=True)})"


def params_text(cells: list[Cell], key: str = "trainable_method_pct") -> str:
    """A trainable % over the cells' runs, one value or min-max: the method's without the head (the paper's
    convention, `trainable_method_pct`) or everything trained (`trainable_pct`)."""
    pcts = [r[key] for c in cells for r in c.runs if r.get(key) is not None]
    if not pcts:
        return "–"
    lo, hi = min(pcts), max(pcts)
    return f"{lo:.4f}%" if abs(hi - lo) < 5e-5 else f"{lo:.4f}%-{hi:.4f}%"


def planned_recipe(plan: Plan, row: str) -> str:
    """The paper.yaml recipe a row trains on: its method's own (Table 4's variants: PASTA's), or PASTA's for all."""
    method = "pasta" if plan.table.rows_kind == "variant" else row
    return "pasta" if plan.recipe == "pasta" or method not in value("recipes") else method


def recipe_text(plan: Plan, row: str, cells: list[Cell]) -> str:
    """Whose recipe the row's runs trained on (results.json `recipe`, for their backbone), with its citation."""
    used = sorted({(r["recipe"], r.get("model")) for c in cells for r in c.runs if r.get("recipe")})
    used = used or [(planned_recipe(plan, row), None)]
    return "; ".join(f"{name} ({recipe(name, None, model)['cite']})" for name, model in used)


def row_avg(plan: Plan, cells: dict[tuple, Cell], row: str) -> float | None:
    """The paper's avg: the mean over the tasks (each by its first column: MNLI by the matched score),
    only when every task of the row finished."""
    values = []
    for task in plan.table.tasks:
        c = cells[(row, next(col.key for col in plan.table.columns if col.task == task))]
        if c.status != "ok" or c.mean is None:
            return None
        values.append(c.mean)
    return statistics.fmean(values)


def _avg_text(plan: Plan, cells: dict[tuple, Cell], row: str) -> str:
    avg = row_avg(plan, cells, row)
    reported = plan.table.reported.get(row)
    paper = reported.avg if reported else None
    if avg is None:
        return "–"
    return fmt(avg) if paper is None else f"{fmt(avg)} ({fmt(paper)}, {fmt(avg - paper, sign=True)})"


def gap_text(gap) -> str:
    """`+12.3 [+8.1, +16.0]` (x100), marked when the interval excludes 0; or why there is no interval."""
    if gap is None:
        return "–"
    if isinstance(gap, str):
        return f"– ({gap})"
    mark = " ✓" if gap.excludes_zero else ""
    return f"{fmt(gap.point, sign=True)} [{fmt(gap.low, sign=True)}, {fmt(gap.high, sign=True)}]{mark}"


def gaps_markdown(plan: Plan, gaps: dict) -> str:
    """Each row's gap to each reference row, per task, with its interval; then what held, counted."""
    refs = list(dict.fromkeys(ref for _, ref, _ in gaps))
    if not refs:
        return ""
    header = ["row", "minus", *(task_label(t) for t in plan.table.tasks)]
    pairs = []  # each pair of rows once: "classifier-only minus PASTA" would only repeat "PASTA minus classifier-only"
    for ref in refs:
        pairs += [(row, ref) for row in plan.rows if row != ref and (ref, row) not in pairs]
    body = [[row_label(row), row_label(ref), *(gap_text(gaps.get((row, ref, t))) for t in plan.table.tasks)]
            for row, ref in pairs]
    seeds = sorted({g.seeds for g in gaps.values() if not isinstance(g, str)})
    md = ["\n## Gaps, with 95% bootstrap intervals\n\n",
          "Each cell: the row's score minus the reference row's, x100, the mean over seeds, and the 95% interval "
          f"of a paired bootstrap over {'/'.join(map(str, seeds)) or 'the'} seed(s) and each column's dev examples "
          "(the same examples drawn for both rows, the seeds drawn too; scipy.stats.bootstrap, percentile, "
          "pasta_cli/paper/uncertainty.py). ✓: the interval excludes 0.\n\n",
          markdown_table(header, body)]
    for ref in refs:
        for row in plan.rows:
            found = [g for (r, f, _), g in gaps.items() if (r, f) == (row, ref) and not isinstance(g, str)]
            if found and ref != "full" and row in ("full", "pasta"):
                below = sum(g.excludes_zero and g.point > 0 for g in found)
                md.append(f"\n{row_label(ref)} trails {row_label(row)} with an interval that excludes 0 on "
                          f"**{below} of {len(found)}** task columns.\n")
    return "".join(md)


def table_markdown(plan: Plan, cells: dict[tuple, Cell], meta: dict[str, str], gaps: dict | None = None) -> str:
    """The table as the paper prints it, ours beside the paper's numbers, then how it was made."""
    table = plan.table
    papers = bool(table.reported)  # the frontier's are ours alone: no paper column, no paper numbers to cite
    header = ["row", "recipe", "% params (ours)", "% trained (ours)", *(["% params (paper)"] if papers else []),
              *(c.label for c in table.columns)]
    header += ["avg"] if table.has_avg else []
    body = []
    for row in plan.rows:
        row_cells = [cells[(row, c.key)] for c in table.columns]
        reported = table.reported.get(row)
        line = [row_label(row), recipe_text(plan, row, row_cells), params_text(row_cells),
                params_text(row_cells, "trainable_pct"),
                *([(reported.params if reported else None) or "–"] if papers else []), *map(cell_text, row_cells)]
        body.append(line + ([_avg_text(plan, cells, row)] if table.has_avg else []))
    md = [f"# {table.title}: {'our reproduction' if papers else 'ours'} at scale {plan.scale}\n\n",
          f"Each cell: ours x100, mean ± std over seeds {','.join(map(str, plan.seeds))} when there are several "
          + (f"(the paper's number, ours minus the paper's). The paper's numbers are on {table.evaluated_on}; "
             if papers else f"on {table.evaluated_on} (the paper has no such table); ")
          + SELECTION_TEXT[plan.selection] + ". "
          "`% params (ours)` is the method's trainable parameters without the task head, as the paper counts them"
          + (f" ({table.params_note})" if table.params_note else "") + "; `% trained (ours)` is everything that "
          "trained, the head included (RoBERTa-large's head, 1,051,650, outweighs LoRA's 786,432). `recipe`: whose "
          "training recipe the row used (pasta_cli/paper.yaml `recipes`, docs/BASELINES.md)"
          + (": every row on PASTA's budget (--recipe pasta)" if plan.recipe == "pasta" else "") + ".\n\n",
          markdown_table(header, body), versions_line([r for c in cells.values() for r in c.runs]),
          gaps_markdown(plan, gaps or {}), "\n## Run\n"]
    md += [f"- {k}: {v}\n" for k, v in meta.items()]
    md.append("\n## Commands (one multirun per task column; the CSV has each cell's own command)\n")
    for task in table.tasks:
        state = ("missing (no data): not run" if not plan.has_data(task)
                 else "" if task in plan.selected else "not selected")
        heading = f"{task_label(task)}{' - ' + state if state else ''}"
        md.append(f"\n{heading}:\n\n```bash\n{shell(plan.command(task))}\n```\n")
    return "".join(md)


def table_csv(plan: Plan, cells: dict[tuple, Cell]) -> str:
    """One line per cell: status, numbers, the paper's, its runs and the command that reproduces it alone."""
    lines = []
    for row in plan.rows:
        for col in plan.table.columns:
            c = cells[(row, col.key)]
            lines.append([plan.table.name, plan.scale, row, row_label(row), recipe_text(plan, row, [c]),
                          col.label, col.task, col.split,
                          col.metric, c.status, None if c.mean is None else round(c.mean, 2),
                          None if c.std is None else round(c.std, 2), len(c.runs),
                          ",".join(str(r.get("seed")) for r in c.runs), c.paper,
                          None if c.diff is None else round(c.diff, 2),
                          params_text([c]).rstrip("%").replace("–", ""),
                          params_text([c], "trainable_pct").rstrip("%").replace("–", ""),
                          ",".join(str(r.get("best_epoch")) for r in c.runs),
                          round(sum(r.get("wall_time_s") or 0 for r in c.runs), 1), c.log or "",
                          ";".join(r["_dir"] for r in c.runs), c.command])
    return csv_text(CSV_HEADER, lines)


def write_table(plan: Plan, md: str, csv_out: str) -> list[Path]:
    """table.md and table.csv in the scale's folder, and the same one level up (the table's latest); each
    written atomically, so a reader or a killed run never leaves half a table."""
    written = []
    for folder in (plan.folder, plan.folder.parent):
        for name, text in (("table.md", md), ("table.csv", csv_out)):
            write_atomic(folder / name, text)
            written.append(folder / name)
    return written

"""pasta-reproduce: run every cell of one of the paper's tables that has not finished, then write the table.

    pasta-reproduce table4 --scale cpu --data-dir ../shared/data          # what `make reproduce-table4` runs
    pasta-reproduce table2 --scale paper --methods full_ft,bitfit --seeds 42,43,44 trainer.precision=bf16
    pasta-reproduce table4 --scale cpu --report                           # re-render what finished, run nothing
    pasta-reproduce submission table2                                     # the GLUE leaderboard zip of its best runs
    pasta-reproduce frontier --scale cpu          # every method, one protocol: score vs trainable parameters

The table's rows, columns and numbers come from paper.yaml (`tables.py`), the commands and folders from
`schedule.py`, the cells from `results.py`, the text from `render.py`; this module checks the arguments
and puts them in order. A bad argument stops it before anything runs, with one line saying what would do.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from pasta_cli.config import RECIPES, SELECTIONS, compose
from pasta_cli.errors import Parser, run_cli
from pasta_cli.paper import frontier, submission
from pasta_cli.paper.render import table_csv, table_markdown, write_table
from pasta_cli.paper.results import Cell, collect_cells
from pasta_cli.paper.schedule import Plan, config_names, cpu_count, data_path, gpu_count, machine, run_column, shell
from pasta_cli.paper.tables import table, table_names
from pasta_cli.paper.uncertainty import table_gaps
from pasta_cli.pasta import VARIANTS

PROG = "pasta-reproduce"


class BadArgument(ValueError):
    """An argument that cannot work; its message names it and what would."""


@dataclass(frozen=True)
class Outcome:
    cells: dict[tuple[str, str], Cell]
    table_md: Path
    table_csv: Path

    @property
    def failed(self) -> list[Cell]:
        return [c for c in self.cells.values() if c.status == "failed"]


def reproduce(plan: Plan, run: bool = True, invocation: str = "", echo=print) -> Outcome:
    """Run (unless run=False) every selected column that has data and unfinished cells, then write the table."""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    if plan.scale != "paper":
        env.setdefault("HF_HUB_OFFLINE", "1")  # the small scales use the packaged MiniLM and local files
    per_column = len(plan.rows) * len(plan.seeds)
    ran: set[str] = set()
    started = time.time()
    columns = []
    for task in plan.selected:
        if not plan.has_data(task):
            echo(f"{task}: missing (no data under {data_path(plan.data_dir, task)}): not run")
            continue
        if not run:
            continue  # report what is there: a run counts as failed only where its folder exists
        ran.add(task)
        todo = plan.todo(task)
        if not todo:
            echo(f"{task}: all {per_column} runs finished already (skipped)")
            continue
        columns.append(task)
        echo(f"{task}: {len(todo)} of {per_column} runs to do; log {plan.log_path(task)}\n"
             f"  $ {shell(plan.command(task))}")
    jobs = max(1, min(plan.jobs, len(columns)))
    if jobs > 1 and "OMP_NUM_THREADS" not in os.environ:  # columns side by side: the cores shared out
        env["OMP_NUM_THREADS"] = str(max(1, cpu_count() // jobs))
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for task, (rc, seconds) in zip(columns, pool.map(lambda t: run_column(plan, t, env), columns)):
            echo(f"{task}: exit {rc} after {seconds / 60:.1f} min")
    elapsed = time.time() - started
    cells = collect_cells(plan, ran)
    ok = [c for c in cells.values() if c.status == "ok"]
    meta = {
        "command": invocation or f"{PROG} {plan.table.name} --scale {plan.scale}",
        "written": datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "processes per run": str(plan.nproc),
        "task columns at a time": f"{plan.jobs}" + (f" (OMP_NUM_THREADS={env['OMP_NUM_THREADS']} each)"
                                                    if "OMP_NUM_THREADS" in env else ""),
        "recipe": "each row its method's own (--recipe own)" if plan.recipe == "own"
                  else "PASTA's budget for every row (--recipe pasta)",
        "model selection": {"dev": "best evaluation on dev (trainer.selection=dev, the paper's protocol)",
                            "heldout": "best evaluation on a seeded held-out slice of train, then dev once "
                                       "(trainer.selection=heldout)"}[plan.selection],
        "search budget": f"1 setting per row (its recipe's learning rate and epochs) x {len(plan.seeds)} seed(s), "
                         "the same for every row",
        "this invocation's wall time": f"{elapsed / 60:.1f} min",
        "training wall time of the cells shown (sum of results.json wall_time_s)":
            f"{sum(r.get('wall_time_s') or 0 for c in ok for r in c.runs) / 60:.1f} min",
        "cells": ", ".join(f"{n} {s}" for s, n in sorted(Counter(c.status for c in cells.values()).items())),
    }
    gaps = table_gaps(plan, cells)
    md = table_markdown(plan, cells, meta, gaps)
    written = write_table(plan, md, table_csv(plan, cells))
    echo(md)
    echo(f"wrote {written[0]} and {written[1]} (copies in {plan.folder.parent})")
    if plan.table.name == "frontier":
        shown = frontier.write_frontier(plan, cells, meta)
        echo(f"wrote {', '.join(str(p) for p in shown[:3])} (copies in {plan.folder.parent})")
    return Outcome(cells, written[0], written[1])


# --------------------------------------------------------------------------------------- the command line
def parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n")[1])
    p.add_argument("table", nargs="?", help="the paper's table: " + ", ".join(table_names()))
    p.add_argument("overrides", nargs="*", help="Hydra overrides for every cell (e.g. trainer.precision=bf16)")
    p.add_argument("--scale", default="cpu", choices=config_names("scale"),
                   help="the budget, conf/scale/<scale>.yaml (default cpu)")
    p.add_argument("--data-dir", default="../shared/data",
                   help="root laid out as glue/<Task>/ and conll2003/; empty or 'hub': the Hugging Face hub")
    p.add_argument("--seeds", default="", help="comma list (default 42; the frontier's: paper.yaml `frontier.seeds`); "
                   "a cell is the mean ± std over them")
    p.add_argument("--methods", default="", help="baseline rows beside PASTA (Tables 2, 3, 5), or the frontier's "
                   "whole list of rows (default paper.yaml `frontier.rows`): " + ",".join(baselines()))
    p.add_argument("--variants", default="", help="Table 4's rows (default all): " + ",".join(VARIANTS))
    p.add_argument("--tasks", default="", help="only these task columns (default all; the frontier's: its scale's, "
                   "paper.yaml `frontier.tasks`); the others are reported")
    p.add_argument("--logger", default="", choices=["", *config_names("logger")],
                   help="wandb: every cell logs to W&B, grouped as <table>-<scale>")
    p.add_argument("--recipe", default="own", choices=RECIPES,
                   help="own (default): each row its method's own paper's recipe; pasta: every row on PASTA's "
                        "budget (Table 6), into <scale>-recipe-pasta/")
    p.add_argument("--selection", default=None, choices=SELECTIONS,
                   help="how each run picks its best epoch: dev (default, the paper's protocol; the frontier's default "
                        "is paper.yaml `frontier.selection`, heldout) or heldout (a seeded slice of train; dev read "
                        "once at the end), into <scale>-heldout/")
    p.add_argument("--nproc", type=int, default=None,
                   help="processes per run (torchrun when > 1); default: the visible GPUs at scale paper, else 1")
    p.add_argument("--jobs", type=int, default=None,
                   help="task columns run side by side (default: the CPU cores, up to the columns, at scales cpu "
                        "and smoke, where one thread per run beats two threads sharing cores; 1 at scale paper)")
    p.add_argument("--output-root", default="outputs", type=Path)
    p.add_argument("--report", action="store_true", help="only write the table from what finished; run nothing")
    return p


def _items(text: str) -> list[str]:
    return text.replace(",", " ").split()


def baselines() -> list[str]:
    """The rows Tables 2, 3 and 5 can add: a row is the override `method=<row>`, so every option of the
    config group `method` but PASTA itself (classifier_only is one: PASTA's variant under its own name)."""
    return [m for m in config_names("method") if m != "pasta"]


def _rows(name: str, variants: list[str], methods: list[str]) -> list[str]:
    """Table 4's rows are PASTA variants (all by default); the frontier's are the methods asked for (paper.yaml's
    list by default), each of them registered; the others' are PASTA and the baselines asked for."""
    if name == "frontier":
        rows = list(dict.fromkeys(methods or frontier.defaults()["rows"]))
        bad = [m for m in rows if m not in ("pasta", *baselines())]
        if bad:  # a row is `method=<row>`: one not registered (yet) in pasta_cli.methods cannot run
            raise BadArgument(f"frontier rows {', '.join(bad)}: no such method is registered (pasta_cli.methods); "
                              f"leave them out with --methods, choosing from pasta, {', '.join(baselines())}")
        return rows
    if table(name).rows_kind == "variant":
        bad = [v for v in variants if v not in VARIANTS]
        if bad:
            raise BadArgument(f"--variants: {', '.join(bad)} is no PASTA variant; choose from {', '.join(VARIANTS)}")
        return variants or list(VARIANTS)
    bad = [m for m in methods if m not in ("pasta", *baselines())]
    if bad:
        raise BadArgument(f"--methods: {', '.join(bad)} is no method here; choose from {', '.join(baselines())}")
    return list(dict.fromkeys(["pasta", *methods]))


def plan_from_args(a: argparse.Namespace) -> Plan:
    """The plan the arguments ask for, or BadArgument naming the first one that cannot work."""
    if not a.table:
        raise BadArgument(f"which table? give one of {', '.join(table_names())} (e.g. {PROG} table4 --scale cpu)")
    if a.table not in table_names():
        raise BadArgument(f"unknown table '{a.table}': choose one of {', '.join(table_names())}")
    is_frontier = a.table == "frontier"  # its defaults are paper.yaml's `frontier`, one protocol for every method
    try:
        seeds = [int(s) for s in _items(a.seeds)] or (frontier.defaults()["seeds"] if is_frontier else [42])
    except ValueError:
        raise BadArgument(f"--seeds '{a.seeds}': give whole numbers, comma-separated (e.g. 42,43,44)") from None
    tasks = table(a.table).tasks
    selected = _items(a.tasks) or (frontier.defaults()["tasks"].get(a.scale, tasks) if is_frontier else tasks)
    selection = a.selection or (frontier.defaults()["selection"] if is_frontier else "dev")
    bad = [t for t in _items(a.tasks) if t not in tasks]
    if bad:
        raise BadArgument(f"--tasks: {', '.join(bad)} is no column of {a.table}; choose from {', '.join(tasks)}")
    if a.nproc is not None and a.nproc < 1:
        raise BadArgument(f"--nproc {a.nproc}: give 1 or more processes per run")
    nproc = a.nproc or (max(1, gpu_count()) if a.scale == "paper" else 1)
    if a.jobs is not None and a.jobs < 1:
        raise BadArgument(f"--jobs {a.jobs}: give 1 or more task columns at a time")
    jobs = a.jobs or (1 if a.scale == "paper" else cpu_count())
    for key, option in (("recipe", "--recipe own|pasta"), ("trainer.selection", "--selection dev|heldout")):
        if any(o.startswith(f"{key}=") for o in a.overrides):
            raise BadArgument(f"give {key} as {option}, not as an override: it also picks the run folders")
    return Plan(table(a.table), tuple(_rows(a.table, _items(a.variants), _items(a.methods))), tuple(seeds),
                a.scale, a.data_dir or None, a.output_root, tuple(selected), nproc,
                None if a.logger in ("", "none") else a.logger, tuple(a.overrides), a.recipe, selection, jobs)


def check_composes(plan: Plan) -> None:
    """Compose one cell's config from exactly its command's overrides, so a misspelt override stops
    here, in a second, and not in every cell of a run that takes hours."""
    command = plan.command(plan.selected[0], plan.rows[:1], plan.seeds[:1])
    overrides = [w for w in command[command.index("pasta_cli.train") + 2:] if not w.startswith("hydra.")]
    try:
        cfg = compose(overrides)
        cfg.trainer.main_metric  # noqa: B018 - resolves the recipe's lookup in paper.yaml
    except (HydraException, OmegaConfBaseException, KeyError) as e:
        raise BadArgument(f"the cells' overrides do not compose ({' '.join(str(e).split())}); "
                          f"check the overrides given after the table: {' '.join(plan.extra) or 'none'}") from None


def main(argv: list[str] | None = None) -> int:
    """pasta-reproduce (exit codes: errors.run_cli; 1 also when a cell failed)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["submission"]:
        return submission.main(argv[1:])
    return run_cli(PROG, lambda: _reproduce(argv))


def _reproduce(argv: list[str]) -> int:
    p = parser()
    a = p.parse_intermixed_args(argv)
    try:
        plan = plan_from_args(a)
        if not a.report:
            check_composes(plan)
    except BadArgument as e:
        p.error(str(e))
    ignored = "methods" if plan.table.rows_kind == "variant" else "variants"
    if _items(getattr(a, ignored)):
        print(f"note: {plan.table.name}'s rows are {plan.table.rows_kind}s: --{ignored} is ignored", file=sys.stderr)
    out = reproduce(plan, run=not a.report, invocation=shlex.join([PROG, *argv]))
    if out.failed:
        print("failed cells: " + ", ".join(f"{c.row}/{c.column.label} (log: {c.log})" for c in out.failed),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""What a training example costs at scale=cpu, per Table 4 task: the measurement conf/scale/cpu.yaml's budgets
come from (docs/results/cpu_budget.json, .md).

For each task, the cell's own run is built as `pasta-train experiment=table4 task=<task> scale=cpu` builds it
(pasta_cli.training.build: MiniLM, the task's real data, dynamic padding, length-grouped batches), and the
runner's `train_step` is timed on the first batches of an epoch: PASTA (full) and classifier-only, which costs
a forward pass only. An evaluation pass over the cell's dev rows is timed too. Seconds per training example
x examples per epoch gives the epochs a time budget buys.

    python benchmarks/cpu_budget.py [--data-dir ../shared/data] [--steps 12] [--output outputs/bench/cpu_budget.json]
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from report import machine

from pasta_cli.config import compose
from pasta_cli.errors import Parser, run_cli
from pasta_cli.paper.tables import data_folder, table
from pasta_cli.training.build import build
from pasta_cli.training.loop import epoch_batches, evaluate
from pasta_cli.training.step import to_device, train_step


def time_steps(run, steps: int) -> tuple[float, int]:
    """Seconds per training example over `steps` optimiser steps (after one warm-up step), and examples seen."""
    batches = epoch_batches(run.lengths, run.global_batch, run.cfg.seed, 0, run.cfg.trainer.group_by_length)
    batches = batches[:steps + 1]
    micro = [[to_device(run, run.train_collate([run.train_rows[i] for i in b]))] for b in batches]
    train_step(run, micro[0])
    started, seen = time.perf_counter(), 0
    for m, b in zip(micro[1:], batches[1:]):
        train_step(run, m)
        seen += len(b)
    return (time.perf_counter() - started) / seen, seen


def measure(task: str, data_dir: str, steps: int) -> dict:
    out = {"task": task}
    for name, method in (("pasta", ["method=pasta"]), ("classifier_only", ["method=classifier_only"])):
        cfg = compose(["experiment=table4", f"task={task}", "scale=cpu", *method,
                       f"task.data_dir={os.path.join(data_dir, data_folder(task))}", "task.max_train_samples=null"])
        run = build(cfg)
        per_example, seen = time_steps(run, steps)
        out[f"{name}_s_per_example"] = round(per_example, 5)
        out[f"{name}_examples_timed"] = seen
        if name == "pasta":
            out["train_rows"] = len(run.lengths)
            out["mean_tokens"] = round(sum(run.lengths) / len(run.lengths), 1)
            out["eval_rows"] = len(run.data[run.task.eval_splits[0]])
            started = time.perf_counter()
            evaluate(run)
            out["eval_s"] = round(time.perf_counter() - started, 2)
            out["pasta_s_per_epoch"] = round(per_example * out["train_rows"], 1)
    out["classifier_only_vs_pasta"] = round(out["classifier_only_s_per_example"] / out["pasta_s_per_example"], 3)
    return out


def main() -> None:
    p = Parser(prog="cpu_budget.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--tasks", default=",".join(table("table4").tasks))
    p.add_argument("--output", type=Path, default=Path("outputs/bench/cpu_budget.json"))
    a = p.parse_args()
    load = os.getloadavg()[0]
    rows = []
    for task in a.tasks.split(","):
        rows.append(measure(task, a.data_dir, a.steps))
        print(json.dumps(rows[-1]), flush=True)
    record = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine("cpu"),
              "torch_threads": torch.get_num_threads(), "load_average_at_start": round(load, 2),
              "load_average_at_end": round(os.getloadavg()[0], 2), "steps": a.steps, "tasks": rows}
    a.output.parent.mkdir(parents=True, exist_ok=True)
    a.output.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {a.output}")


if __name__ == "__main__":
    sys.exit(run_cli("cpu_budget.py", main))

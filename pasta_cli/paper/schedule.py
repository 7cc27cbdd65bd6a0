"""Plan and run a table's cells: one Hydra multirun per task column, into fixed folders.

Each column's multirun has a fixed `hydra.sweep.dir` (`<output-root>/<table>/<scale>/<task>`) and one
sub-folder per (row, seed), so the same command run again skips every finished cell (pasta-train skips
a run folder that holds a results.json) and a column whose runs all finished is not even launched.
The plan knows every folder and command; it never reads a result (that is `results.py`'s job).
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from importlib.resources import files
from pathlib import Path

import torch
from omegaconf import OmegaConf

import pasta_cli.config  # noqa: F401 - registers ${row_tag:}, which SUBDIR resolves with
from pasta_cli.methods import method_configs
from pasta_cli.paper.tables import Table, data_folder
from pasta_cli.run_folder import is_finished

# One run's folder inside its column's sweep; `run_subdir` resolves the same string for a (row, seed).
# The PASTA variant, or LoReFT's positions (loreft and loreft_special are one method), tells rows of one method apart
# (config.row_tag).
SUBDIR = "${method.name}-${row_tag:}-s${seed}"
TRAIN_FILES = ("train.tsv", "train.txt")  # a task's data counts as present when one of these is there


def config_names(group: str) -> list[str]:
    """The options of a config group: the YAML files in conf/<group>/ (pasta_cli.conf in the wheel); the
    method group's are the registered methods' typed settings (pasta_cli.methods, stored in Hydra's ConfigStore)."""
    if group == "method":
        return sorted(method_configs())
    return sorted(p.name.removesuffix(".yaml") for p in (files("pasta_cli.conf") / group).iterdir()
                  if p.name.endswith(".yaml"))


def run_subdir(table: Table, row: str, seed: int) -> str:
    """The folder pasta-train will write the (row, seed) run to: SUBDIR resolved on the row's method config,
    so the folder names follow the method configs and are never written down twice."""
    variant_row = table.rows_kind == "variant"
    method = OmegaConf.structured(method_configs()["pasta" if variant_row else row])
    if variant_row:
        method.variant = row
    return OmegaConf.create({"method": method, "seed": seed, "subdir": SUBDIR}).subdir


def data_path(data_dir: str | None, task: str) -> str | None:
    """The task's folder under the data root, or None for the Hugging Face hub (no data root, or `hub`)."""
    if not data_dir or data_dir == "hub":
        return None
    return os.path.join(data_dir.rstrip("/"), data_folder(task))


def has_data(data_dir: str | None, task: str) -> bool:
    path = data_path(data_dir, task)
    return path is None or any((Path(path) / f).is_file() for f in TRAIN_FILES)


def cpu_count() -> int:
    """The cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def gpu_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def launcher(nproc: int) -> list[str]:
    """One process, or torchrun with one process per GPU (every job of the multirun runs on all of them)."""
    if nproc > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
                "-m", "pasta_cli.train"]
    return [sys.executable, "-m", "pasta_cli.train"]


def shell(cmd: list[str]) -> str:
    """The command as one would type it (python -m ..., not the venv's absolute interpreter path)."""
    words = list(cmd)
    if words and words[0] == sys.executable:
        words[0] = "python"
    return shlex.join(words)


@dataclass(frozen=True)
class Plan:
    """What one pasta-reproduce invocation asks for: which cells, at which scale, from which data, where."""

    table: Table
    rows: tuple[str, ...]
    seeds: tuple[int, ...]
    scale: str
    data_dir: str | None
    output_root: Path
    selected: tuple[str, ...]          # the task columns to run; the others are only reported
    nproc: int = 1
    logger: str | None = None
    extra: tuple[str, ...] = ()        # Hydra overrides for every cell
    recipe: str = "own"                # own: each row its method's recipe; pasta: every row on PASTA's budget
    selection: str = "dev"             # trainer.selection of every cell: dev (the paper's) | heldout
    jobs: int = 1                      # task columns run side by side (CPU scales)

    @property
    def folder(self) -> Path:
        """<table>/<scale>; the shared-budget ablation (<scale>-recipe-pasta) and held-out selection (<scale>-heldout)
        apart: none skips another's runs, and a table never mixes protocols."""
        scale = self.scale if self.recipe == "own" else f"{self.scale}-recipe-{self.recipe}"
        scale += "" if self.selection == "dev" else f"-{self.selection}"
        return Path(self.output_root) / self.table.name / scale

    def sweep_dir(self, task: str) -> Path:
        return self.folder / task

    def log_path(self, task: str) -> Path:
        return self.folder / "logs" / f"{task}.log"

    def run_dir(self, task: str, row: str, seed: int) -> Path:
        return self.sweep_dir(task) / run_subdir(self.table, row, seed)

    def has_data(self, task: str) -> bool:
        return has_data(self.data_dir, task)

    def todo(self, task: str) -> list[tuple[str, int]]:
        """The (row, seed) runs of a column that have no results.json yet."""
        return [(r, s) for r in self.rows for s in self.seeds
                if not is_finished(self.run_dir(task, r, s))]

    def command(self, task: str, rows: list[str] | None = None, seeds: list[int] | None = None) -> list[str]:
        """The multirun for a task column (by default every row and seed; one cell's when given one row)."""
        rows, seeds = list(rows or self.rows), list(seeds or self.seeds)
        cmd = [*launcher(self.nproc), "-m", f"experiment={self.table.name}", f"task={task}", f"scale={self.scale}"]
        path = data_path(self.data_dir, task)
        if path:
            cmd.append(f"task.data_dir={path}")
        cmd += [f"{self.table.row_key}={','.join(rows)}", f"seed={','.join(map(str, seeds))}"]
        cmd.append(f"recipe={self.recipe}")
        if self.selection != "dev":
            cmd.append(f"trainer.selection={self.selection}")
        if self.nproc > 1 and self.scale != "smoke":  # each row's recipe batch is the effective one: split it
            cmd.append(f"trainer.batch_size=${{per_device:{self.nproc}}}")
        if self.logger:
            cmd.append(f"logger={self.logger}")
            if self.logger == "wandb":
                cmd.append(f"logger.group={self.table.name}-{self.scale}")
        return [*cmd, *self.extra, f"hydra.sweep.dir={self.sweep_dir(task)}", f"hydra.sweep.subdir={SUBDIR}"]


def run_column(plan: Plan, task: str, env: dict) -> tuple[int, float]:
    """Run one task column's multirun, appending its output to the column's log; (exit code, seconds)."""
    log_path = plan.log_path(task)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = plan.command(task)
    started = time.time()
    with open(log_path, "a") as log:
        log.write(f"\n### {datetime.now().isoformat(timespec='seconds')} $ {shell(command)}\n")
        log.flush()
        rc = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.write(f"### exit {rc} after {time.time() - started:.1f} s\n")
    return rc, time.time() - started


def machine() -> str:
    """The machine in words (CPU model, cores, GPUs), for the table's run notes."""
    model = platform.processor() or platform.machine()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout
        for line in lscpu.splitlines():
            if line.strip().startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
                break
    except (OSError, subprocess.SubprocessError):
        pass
    words = f"{model}, {cpu_count()} cores"
    n = gpu_count()
    if n:
        words += f", {n} x {torch.cuda.get_device_name(0)}"
    return words

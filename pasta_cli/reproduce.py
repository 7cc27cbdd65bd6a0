"""Reproduce the paper one table at a time: recipes, scales, the runner and the aggregation.

    python -m pasta_cli.reproduce run table4 --scale cpu --data-dir ../shared/data     # what `make reproduce-table4` runs
    python -m pasta_cli.reproduce report table4 --scale cpu                           # re-aggregate, run nothing
    python -m pasta_cli.reproduce recipes [--check]                                   # (re)write conf/experiment/table*/

What lives where:
- ``TABLE6`` (PAPER.md, Table 6) is the one source of the per-task budgets; ``recipes`` writes one Hydra
  recipe per (table, task) from it, ``conf/experiment/<table>/<task>.yaml`` (`pasta-train experiment=table4/rte`).
  Rows (the PASTA variant, or a baseline method) are chosen by override, never by another recipe.
- Scales are config too: ``conf/experiment/scale/{paper,cpu,smoke}.yaml``, added with ``+experiment/scale=<name>``.
- ``TABLES`` says what each of the paper's tables holds (model, columns with their metric, rows) and
  ``PAPER`` holds its numbers, transcribed from PAPER.md (a test checks the transcription).
- A table's cells run as one Hydra multirun per task with a fixed ``hydra.sweep.dir``
  (``outputs/<table>/<scale>/<task>``) and one folder per (row, seed), so re-running skips finished cells.
- ``collect``/``aggregate``/``format_*`` turn results.json files into tables; ``scripts/aggregate.py``
  is the same on any sweep folder.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = ROOT / "conf"
SCALES = ("paper", "cpu", "smoke")
VARIANTS = ("full", "cls_only", "sep_only", "shared", "classifier_only")
BASELINES = ("full_ft", "bitfit", "lora", "prefix", "classifier_only")

# ----------------------------------------------------------------------------------------------- Table 6
# PAPER.md, Table 6 (best settings with BERT-large): lr, batch size, epochs, adapted special tokens.
TABLE6 = {
    "rte": (4.5e-3, 32, 150, 3), "cola": (5e-3, 32, 100, 2), "stsb": (2e-3, 32, 150, 3),
    "mrpc": (2.5e-3, 32, 150, 3), "sst2": (7e-3, 64, 100, 2), "qnli": (2e-3, 32, 80, 3),
    "mnli": (5e-4, 32, 50, 3), "qqp": (5e-3, 32, 100, 3), "conll2003": (3e-3, 16, 100, 2),
}
# folder of each task under DATA_DIR (the layout of ../shared/data) and the file that must be there
DATA_FOLDERS = {
    "rte": "glue/RTE", "cola": "glue/CoLA", "stsb": "glue/STS-B", "mrpc": "glue/MRPC", "sst2": "glue/SST-2",
    "qnli": "glue/QNLI", "mnli": "glue/MNLI", "qqp": "glue/QQP", "conll2003": "conll2003",
}
TASK_LABELS = {"rte": "RTE", "cola": "CoLA", "stsb": "STS-B", "mrpc": "MRPC", "sst2": "SST-2", "qnli": "QNLI",
               "mnli": "MNLI", "qqp": "QQP", "conll2003": "CoNLL2003"}


@dataclass(frozen=True)
class Column:
    key: str      # column id (also the key into PAPER)
    label: str    # header, as the paper writes it
    task: str
    metric: str   # key in results.json's best_scores[split]
    split: str = "validation"


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    model: str
    columns: tuple[Column, ...]
    rows_kind: str            # "variant" (Table 4) or "method" (Tables 2, 3, 5)
    evaluated_on: str         # what the paper's numbers are
    has_avg: bool = True
    params_note: str = ""

    @property
    def tasks(self) -> list[str]:
        return list(dict.fromkeys(c.task for c in self.columns))

    def main_metric(self, task: str) -> str:
        """The metric the recipe selects the best epoch on: the table's metric for that task."""
        return next(c.metric for c in self.columns if c.task == task)


def _bert_columns() -> tuple[Column, ...]:  # PAPER.md "Metrics per task", BERT experiments
    return (Column("rte", "RTE", "rte", "accuracy"), Column("cola", "CoLA", "cola", "matthews"),
            Column("stsb", "STS-B", "stsb", "spearman"), Column("mrpc", "MRPC", "mrpc", "f1"),
            Column("sst2", "SST-2", "sst2", "accuracy"), Column("qnli", "QNLI", "qnli", "accuracy"),
            Column("mnli-m", "MNLI-m", "mnli", "accuracy", "validation_matched"),
            Column("mnli-mm", "MNLI-mm", "mnli", "accuracy", "validation_mismatched"),
            Column("qqp", "QQP", "qqp", "f1"))


TABLES = {
    "table2": Table("table2", "Table 2: BERT-large, GLUE", "bert-large", _bert_columns(), "method",
                    "the GLUE test server (ours: dev set; test_predictions.tsv at SCALE=paper are the submission)"),
    "table3": Table("table3", "Table 3: RoBERTa-large, GLUE dev set", "roberta-large", (
        Column("rte", "RTE", "rte", "accuracy"), Column("cola", "CoLA", "cola", "matthews"),
        Column("stsb", "STS-B", "stsb", "pearson"), Column("mrpc", "MRPC", "mrpc", "accuracy"),
        Column("sst2", "SST-2", "sst2", "accuracy"), Column("qnli", "QNLI", "qnli", "accuracy"),
        Column("mnli", "MNLI", "mnli", "accuracy", "validation_matched"), Column("qqp", "QQP", "qqp", "accuracy")),
        "method", "the GLUE dev set", params_note="RoBERTa pairs have 4 special-token slots"),
    "table4": Table("table4", "Table 4: ablations, BERT-large, GLUE dev set and CoNLL2003", "bert-large", (
        Column("cola", "CoLA", "cola", "matthews"), Column("rte", "RTE", "rte", "accuracy"),
        Column("mrpc", "MRPC", "mrpc", "f1"), Column("stsb", "STS-B", "stsb", "spearman"),
        Column("conll2003", "CoNLL2003", "conll2003", "entity_f1")),
        "variant", "the GLUE dev set and CoNLL-2003 validation", has_avg=False),
    "table5": Table("table5", "Table 5: BERT-base, GLUE dev set", "bert-base", _bert_columns(), "method",
                    "the GLUE dev set"),
}

# Row ids: Table 4's are PASTA variants; Tables 2/3/5's are methods ("pasta" = PASTA full).
ROW_LABELS = {
    "full": "PASTA", "cls_only": "CLS-only (no [SEP])", "sep_only": "SEP-only (no [CLS])",
    "shared": "shared vector", "classifier_only": "classifier only",
    "pasta": "PASTA", "full_ft": "Full fine-tuning", "bitfit": "BitFit", "lora": "LoRA", "prefix": "P-tuning v2",
    "adapter": "Adapter", "diff_prune": "Diff-Prune",
}


def _row(pct, *values, keys):
    return {"pct": pct, **dict(zip(keys, values))}


_T2 = ("rte", "cola", "stsb", "mrpc", "sst2", "qnli", "mnli-m", "mnli-mm", "qqp", "avg")
_T3 = ("rte", "cola", "stsb", "mrpc", "sst2", "qnli", "mnli", "qqp", "avg")
_T4 = ("cola", "rte", "mrpc", "stsb", "conll2003")
# PAPER.md's tables, number for number (None where the paper prints "-").
PAPER = {
    "table2": {
        "full_ft": _row("100%", 70.1, 60.5, 86.5, 89.3, 94.9, 92.7, 86.7, 85.9, 72.1, 81.6, keys=_T2),
        "adapter": _row("3.6%", 71.5, 59.5, 86.9, 89.5, 94.0, 90.7, 84.9, 85.1, 71.8, 81.1, keys=_T2),
        "diff_prune": _row("0.5%", 70.6, 61.1, 86.0, 89.7, 94.1, 93.3, 86.4, 86.0, 71.1, 81.5, keys=_T2),
        "prefix": _row("0.29%", 70.1, 60.1, 86.8, 88.0, 94.6, 92.3, 85.3, 84.9, 70.6, 81.0, keys=_T2),
        "bitfit": _row("0.08%", 72.0, 59.7, 85.5, 88.9, 94.2, 92.0, 84.5, 84.8, 70.5, 80.9, keys=_T2),
        "pasta": _row("0.015%-0.022%", 70.8, 62.3, 86.6, 87.9, 94.4, 92.8, 83.4, 83.4, 68.6, 80.9, keys=_T2),
    },
    "table3": {
        "full_ft": _row("100%", 86.6, 68.0, 92.4, 90.9, 96.4, 94.7, 90.2, 92.2, 88.9, keys=_T3),
        "lora": _row("0.24%", 87.4, 68.2, 92.6, 90.9, 96.2, 94.9, 90.6, 91.6, 89.0, keys=_T3),
        "pasta": _row("0.015%-0.029%", 86.6, 69.7, 91.8, 90.9, 96.8, 95.1, 90.4, 89.9, 88.9, keys=_T3),
    },
    "table4": {
        "full": _row(None, 65.4, 76.2, 89.7, 90.8, 94.0, keys=_T4),
        "cls_only": _row(None, 58.8, 72.6, 91.4, 90.2, 93.7, keys=_T4),
        "sep_only": _row(None, 64.5, 71.1, 91.9, 90.3, 93.7, keys=_T4),
        "shared": _row(None, 64.7, 74.7, 92.1, 90.0, 93.9, keys=_T4),
        "classifier_only": _row(None, 36.5, 54.2, 81.5, 64.9, 77.4, keys=_T4),
    },
    "table5": {
        "full_ft": _row("100%", 66.4, 62.1, 89.8, 90.9, 91.6, 90.0, 83.2, None, 87.4, 82.7, keys=_T2),
        "adapter": _row("0.81%", 71.8, 61.5, 88.6, 89.9, 91.9, 90.6, 83.1, None, 86.8, 83.0, keys=_T2),
        "bitfit": _row("0.8%", 72.3, 58.8, 89.2, 90.4, 92.1, 90.2, 81.4, None, 84.0, 82.3, keys=_T2),
        "pasta": _row("0.015%-0.022%", 73.6, 57.9, 88.7, 91.5, 91.2, 89.7, 77.8, 78.8, 80.8, 81.4, keys=_T2),
    },
}


# ----------------------------------------------------------------------------------------------- recipes
def slot_words(table: Table, task: str) -> str:
    pair = TABLE6[task][3] == 3
    if table.model.startswith("roberta"):
        return "4 slots: <s> A </s></s> B </s>" if pair else "2 slots: <s> A </s>"
    return "3 slots: [CLS] A [SEP] B [SEP]" if pair else "2 slots: [CLS] A [SEP]"


def recipe_text(table: Table, task: str) -> str:
    """The Hydra recipe of one (table, task): the task, the table's model, Table 6's budget."""
    lr, batch, epochs, slots = TABLE6[task]
    rows = ("method.variant=" + "|".join(VARIANTS)) if table.rows_kind == "variant" else \
        ("method=" + "|".join(("pasta",) + BASELINES))
    folder = DATA_FOLDERS[task]
    return (
        "# @package _global_\n"
        f"# {table.title} - the {TASK_LABELS[task]} column. Generated by `python -m pasta_cli.reproduce recipes`\n"
        "# from TABLE6 in pasta_cli/reproduce.py (PAPER.md, Table 6): edit there, then regenerate.\n"
        f"# Row by override ({rows}); scale by +experiment/scale=paper|cpu|smoke:\n"
        f"#   pasta-train experiment={table.name}/{task} task.data_dir=../shared/data/{folder}\n"
        f"#   make reproduce-{table.name} SCALE=cpu    (every cell of the table, see docs/REPRODUCE.md)\n"
        "defaults:\n"
        f"  - override /task: {task}\n"
        f"  - override /model: {table.model}\n"
        "task:              # PAPER.md Table 6, best settings with BERT-large\n"
        f"  lr: {lr!r}\n"
        f"  batch_size: {batch}\n"
        f"  epochs: {epochs}\n"
        f"  pair: {'true' if slots == 3 else 'false'}       # {slots} adapted tokens in Table 6 ({slot_words(table, task)})\n"
        "trainer:\n"
        "  max_length: 128   # Appendix B\n"
        f"  main_metric: {table.main_metric(task)}   # the table's metric: model selection on the dev set\n"
    )


def recipe_path(table: str, task: str) -> Path:
    return CONF_DIR / "experiment" / table / f"{task}.yaml"


def all_recipes() -> dict[Path, str]:
    return {recipe_path(t.name, task): recipe_text(t, task) for t in TABLES.values() for task in t.tasks}


def write_recipes(check: bool = False) -> list[Path]:
    """Write every recipe (or, with check, list the ones that differ from what TABLE6 gives)."""
    stale = []
    for path, text in all_recipes().items():
        if not path.is_file() or path.read_text() != text:
            stale.append(path)
            if not check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    return stale


# ----------------------------------------------------------------------------------------------- results
def load_results(root: Path) -> list[dict]:
    """Every results.json under root (the run folder kept as `_dir`)."""
    out = []
    for path in sorted(Path(root).rglob("results.json")):
        try:
            r = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
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
    for s in scores.values():
        if metric in s:
            return s[metric]
    return None


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (statistics.stdev; None for fewer than 2 values)."""
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def row_key(result: dict) -> str:
    """The row a run belongs to: its variant for PASTA runs, the method otherwise."""
    return result.get("variant") if result.get("method") == "pasta" else result.get("method")


def _hparams(r: dict) -> tuple:
    return (r.get("lr"), r.get("epochs"), r.get("effective_batch_size"))


def aggregate(results: list[dict], by: list[str], metric: str | None = None) -> list[dict]:
    """One row per group of `by` keys: the best hyper-parameter setting (lr, epochs, batch) by mean dev
    score over seeds, with mean ± std over its seeds (x100). `by` keys are results.json keys, or `row`."""
    groups: dict[tuple, dict[tuple, list[dict]]] = {}
    for r in results:
        key = tuple(row_key(r) if k == "row" else r.get(k) for k in by)
        groups.setdefault(key, {}).setdefault(_hparams(r), []).append(r)
    rows = []
    for key, settings in sorted(groups.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        scored = []
        for hp, runs in settings.items():
            vals = [metric_value(r, metric) for r in runs]
            m, s = mean_std(vals)
            scored.append((m if m is not None else -math.inf, hp, runs, m, s, [v for v in vals if v is not None]))
        best = max(scored, key=lambda x: x[0])
        _, hp, runs, m, s, vals = best
        first = runs[0]
        rows.append({
            **dict(zip(by, key)),
            "metric": metric or first.get("main_metric"),
            "mean": None if m is None else 100 * m, "std": None if s is None else 100 * s, "n": len(vals),
            "seeds": ",".join(str(r.get("seed")) for r in runs),
            "lr": hp[0], "epochs": hp[1], "batch": hp[2], "settings_tried": len(settings),
            "best_epoch": ",".join(str(r.get("best_epoch")) for r in runs),
            "trainable_method_pct": first.get("trainable_method_pct"),
            "wall_time_s": round(sum(r.get("wall_time_s") or 0 for r in runs), 1),
            "run_dirs": ";".join(r["_dir"] for r in runs),
        })
    return rows


def fmt(value: float | None, digits: int = 1, sign: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def fmt_mean_std(mean: float | None, std: float | None, n: int) -> str:
    if mean is None:
        return "–"
    return f"{mean:.1f} ± {std:.1f}" if n > 1 and std is not None else f"{mean:.1f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def csv_text(header: list[str], rows: list[list]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows([["" if v is None else v for v in row] for row in rows])
    return buf.getvalue()


def aggregate_markdown(rows: list[dict], by: list[str]) -> str:
    fixed = [("lr", "best lr"), ("epochs", "best epochs"), ("batch", "batch")]
    fixed = [(k, h) for k, h in fixed if k not in by]  # a grouping key is shown once
    header = [*by, "metric", "score (x100)", "n seeds", *(h for _, h in fixed), "settings", "method %"]
    body = [[*(str(r[k]) for k in by), r["metric"], fmt_mean_std(r["mean"], r["std"], r["n"]), r["n"],
             *(r[k] for k, _ in fixed), r["settings_tried"],
             "–" if r["trainable_method_pct"] is None else f"{r['trainable_method_pct']:.4f}%"] for r in rows]
    return markdown_table(header, body)


def aggregate_csv(rows: list[dict], by: list[str]) -> str:
    keys = [*by, *(k for k in ("metric", "mean", "std", "n", "seeds", "lr", "epochs", "batch", "settings_tried",
                                "best_epoch", "trainable_method_pct", "wall_time_s", "run_dirs") if k not in by)]
    return csv_text(keys, [[r[k] for k in keys] for r in rows])


# ----------------------------------------------------------------------------------------------- cells
@dataclass
class Cell:
    """One (row, column) of a paper table: its runs (one per seed), status and numbers (x100)."""
    row: str
    column: Column
    status: str = "pending"          # ok | missing | failed | pending
    runs: list[dict] = field(default_factory=list)
    run_dirs: list[str] = field(default_factory=list)
    log: str | None = None
    command: str = ""
    mean: float | None = None
    std: float | None = None
    paper: float | None = None

    @property
    def diff(self) -> float | None:
        return None if self.mean is None or self.paper is None else self.mean - self.paper

    def text(self) -> str:
        if self.status == "missing":
            return "missing (no data)"
        if self.status == "failed":
            return f"failed (log: {self.log})"
        if self.status != "ok":
            return self.status
        ours = fmt_mean_std(self.mean, self.std, len(self.runs))
        return ours if self.paper is None else f"{ours} ({fmt(self.paper)}, {fmt(self.diff, sign=True)})"


def rows_of(table: Table, variants: list[str] | None = None, methods: list[str] | None = None) -> list[str]:
    if table.rows_kind == "variant":
        rows = list(variants or VARIANTS)
        bad = [v for v in rows if v not in VARIANTS]
        if bad:
            raise SystemExit(f"unknown variant(s) {', '.join(bad)}: choose from {', '.join(VARIANTS)}")
        return rows
    extra = [m for m in (methods or []) if m != "pasta"]
    bad = [m for m in extra if m not in BASELINES]
    if bad:
        raise SystemExit(f"unknown method(s) {', '.join(bad)}: choose from pasta, {', '.join(BASELINES)}")
    return ["pasta", *dict.fromkeys(extra)]


def row_override(table: Table, row: str) -> str:
    if table.rows_kind == "variant":
        return f"method.variant={row}"
    return f"method={row}"


def run_subdir(table: Table, row: str, seed: int) -> str:
    """The folder of one run in its task's sweep (what hydra.sweep.subdir below resolves to)."""
    if table.rows_kind == "variant":
        return f"pasta-{row}-s{seed}"
    return {"pasta": "pasta-full", "classifier_only": "pasta-classifier_only"}.get(row, f"{row}-na") + f"-s{seed}"


SUBDIR = "${method.name}-${oc.select:method.variant,na}-s${seed}"


def data_path(data_dir: str | None, task: str) -> str | None:
    """The task's folder under DATA_DIR, or None when DATA_DIR is not used (the hub)."""
    if not data_dir or data_dir == "hub":
        return None
    return os.path.join(data_dir.rstrip("/"), DATA_FOLDERS[task])


def has_data(data_dir: str | None, task: str) -> bool:
    path = data_path(data_dir, task)
    if path is None:
        return True  # the hub (paper scale without DATA_DIR)
    return any((Path(path) / f).is_file() for f in ("train.tsv", "train.txt"))


def gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001
        return 0


def launcher(nproc: int) -> list[str]:
    """One process, or torchrun with one process per GPU (each job of the multirun runs on all of them)."""
    if nproc > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
                "-m", "pasta_cli.train"]
    return [sys.executable, "-m", "pasta_cli.train"]


def task_command(table: Table, task: str, rows: list[str], seeds: list[int], scale: str, data_dir: str | None,
                 sweep_dir: str, nproc: int = 1, logger: str | None = None, extra: list[str] | None = None) -> list[str]:
    """The multirun that produces every (row, seed) of one task column."""
    cmd = [*launcher(nproc), "-m", f"experiment={table.name}/{task}", f"+experiment/scale={scale}"]
    path = data_path(data_dir, task)
    if path:
        cmd.append(f"task.data_dir={path}")
    key = "method.variant" if table.rows_kind == "variant" else "method"
    cmd.append(f"{key}={','.join(rows)}")
    cmd.append(f"seed={','.join(str(s) for s in seeds)}")
    if nproc > 1 and scale != "smoke":  # Table 6's batch is the effective one: split it over the GPUs where it divides
        batch = TABLE6[task][1]
        if batch % nproc == 0:
            cmd.append(f"trainer.batch_size={batch // nproc}")
    if logger:
        cmd += [f"logger={logger}"]
        if logger == "wandb":
            cmd.append(f"logger.group={table.name}-{scale}")
    cmd += list(extra or [])
    cmd += [f"hydra.sweep.dir={sweep_dir}", f"hydra.sweep.subdir={SUBDIR}"]
    return cmd


def shell(cmd: list[str]) -> str:
    """The command as one would type it (python -m ..., not the venv's absolute interpreter path)."""
    words = list(cmd)
    if words and words[0] == sys.executable:
        words[0] = "python"
    return shlex.join(words)


# ----------------------------------------------------------------------------------------------- runner
def out_dir(output_root: Path, table: str, scale: str) -> Path:
    return Path(output_root) / table / scale


def plan(table: Table, rows: list[str], seeds: list[int], scale: str, data_dir: str | None, output_root: Path,
         tasks: list[str] | None = None, nproc: int = 1, logger: str | None = None,
         extra: list[str] | None = None) -> dict[str, dict]:
    """Per task column: whether its data is there, its sweep folder, the command, and which runs are left."""
    base = out_dir(output_root, table.name, scale)
    out = {}
    for task in table.tasks:
        selected = tasks is None or task in tasks
        sweep = base / task
        cmd = task_command(table, task, rows, seeds, scale, data_dir, str(sweep), nproc, logger, extra)
        todo = [(r, s) for r in rows for s in seeds if not (sweep / run_subdir(table, r, s) / "results.json").is_file()]
        out[task] = {"selected": selected, "data": has_data(data_dir, task), "sweep": sweep, "command": cmd,
                     "todo": todo, "log": base / "logs" / f"{task}.log"}
    return out


def run_task(entry: dict, env: dict, cwd: Path | None = None) -> tuple[int, float]:
    """Run one task's multirun, appending its output to the task's log; (exit code, seconds)."""
    log_path: Path = entry["log"]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with open(log_path, "a") as log:
        log.write(f"\n### {datetime.now().isoformat(timespec='seconds')} $ {shell(entry['command'])}\n")
        log.flush()
        rc = subprocess.call(entry["command"], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        log.write(f"### exit {rc} after {time.time() - started:.1f} s\n")
    return rc, time.time() - started


def cell_command(table: Table, entry: dict, row: str, seeds: list[int]) -> str:
    """The multirun restricted to one cell: it reproduces exactly that cell, in the same folders."""
    key = "method.variant" if table.rows_kind == "variant" else "method"
    cmd = [w if not w.startswith(f"{key}=") else f"{key}={row}" for w in entry["command"]]
    cmd = [w if not w.startswith("seed=") else f"seed={','.join(str(s) for s in seeds)}" for w in cmd]
    return shell(cmd)


def build_cells(table: Table, rows: list[str], seeds: list[int], entries: dict[str, dict]) -> dict[tuple, Cell]:
    """Read every cell's results.json files back. Status: ok (every seed finished), missing (no data),
    failed (a run was attempted and left no results.json), pending (not run yet) or not run (column not selected)."""
    cells = {}
    for row in rows:
        for col in table.columns:
            e = entries[col.task]
            cell = Cell(row, col, paper=PAPER[table.name].get(row, {}).get(col.key),
                        command=cell_command(table, e, row, seeds))
            cells[(row, col.key)] = cell
            if not e["data"]:
                cell.status = "missing"
                continue
            failed_dir = None
            for seed in seeds:
                d = e["sweep"] / run_subdir(table, row, seed)
                if (d / "results.json").is_file():
                    r = json.loads((d / "results.json").read_text())
                    r["_dir"] = str(d)
                    cell.runs.append(r)
                    cell.run_dirs.append(str(d))
                elif e.get("ran") or d.exists():
                    failed_dir = failed_dir or d
            if failed_dir is not None:
                cell.status = "failed"
                cell.log = str(failed_dir / "train.log") if (failed_dir / "train.log").is_file() else str(e["log"])
            elif len(cell.runs) == len(seeds):
                cell.status = "ok"
            else:
                cell.status = "pending" if e["selected"] else "not run"
            if cell.runs:  # a failed cell keeps the numbers of the seeds that finished
                cell.mean, cell.std = (None if v is None else 100 * v for v in
                                       mean_std([metric_value(r, col.metric, col.split) for r in cell.runs]))
    return cells


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout.splitlines():
            if line.strip().startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
                break
    except (OSError, subprocess.SubprocessError):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    words = f"{model}, {cores} cores"
    n = gpu_count()
    if n:
        import torch

        words += f", {n} x {torch.cuda.get_device_name(0)}"
    return words


def params_text(cells: list[Cell]) -> str:
    pcts = [r.get("trainable_method_pct") for c in cells for r in c.runs if r.get("trainable_method_pct") is not None]
    if not pcts:
        return "–"
    lo, hi = min(pcts), max(pcts)
    return f"{lo:.4f}%" if abs(hi - lo) < 5e-5 else f"{lo:.4f}%-{hi:.4f}%"


def row_avg(table: Table, cells: dict[tuple, Cell], row: str) -> float | None:
    """The paper's avg: the mean over the tasks (MNLI by its matched score), only when every task is in."""
    values = []
    for col in table.columns:
        if col.key == "mnli-mm":
            continue
        c = cells[(row, col.key)]
        if c.status != "ok" or c.mean is None:
            return None
        values.append(c.mean)
    return statistics.fmean(values) if values else None


def write_table(table: Table, rows: list[str], seeds: list[int], scale: str, cells: dict[tuple, Cell],
                entries: dict[str, dict], target: Path, meta: dict) -> tuple[str, str]:
    """outputs/<table>/<scale>/table.md and table.csv (and the same at outputs/<table>/)."""
    header = ["row", "% params (ours)", "% params (paper)", *(c.label for c in table.columns)]
    if table.has_avg:
        header.append("avg")
    body, csv_rows = [], []
    for row in rows:
        row_cells = [cells[(row, c.key)] for c in table.columns]
        paper_row = PAPER[table.name].get(row, {})
        line = [ROW_LABELS[row], params_text(row_cells), paper_row.get("pct") or "–", *(c.text() for c in row_cells)]
        if table.has_avg:
            avg, pavg = row_avg(table, cells, row), paper_row.get("avg")
            line.append("–" if avg is None else (fmt(avg) if pavg is None else f"{fmt(avg)} ({fmt(pavg)}, {fmt(avg - pavg, sign=True)})"))
        body.append(line)
        for c in row_cells:
            csv_rows.append([table.name, scale, row, ROW_LABELS[row], c.column.label, c.column.task, c.column.split,
                             c.column.metric, c.status, None if c.mean is None else round(c.mean, 2),
                             None if c.std is None else round(c.std, 2), len(c.runs),
                             ",".join(str(r.get("seed")) for r in c.runs), c.paper,
                             None if c.diff is None else round(c.diff, 2), params_text([c]).rstrip("%").replace("–", ""),
                             ",".join(str(r.get("best_epoch")) for r in c.runs),
                             round(sum(r.get("wall_time_s") or 0 for r in c.runs), 1), c.log or "",
                             ";".join(c.run_dirs), c.command])
    csv_header = ["table", "scale", "row", "row_label", "column", "task", "split", "metric", "status", "mean", "std",
                  "n_seeds", "seeds", "paper", "diff", "trainable_method_pct", "best_epoch", "wall_time_s", "log",
                  "run_dirs", "command"]
    md = [f"# {table.title}: our reproduction at SCALE={scale}\n\n",
          f"Each cell: ours x100, mean ± std over seeds {','.join(map(str, seeds))} when there are several "
          f"(the paper's number, ours minus the paper's). The paper's numbers are on {table.evaluated_on}; "
          "ours are the best dev-set score of each run (model selection on the dev set). "
          "`% params (ours)` is the method's trainable parameters without the task head, as the paper counts them"
          + (f" ({table.params_note})" if table.params_note else "") + ".\n\n",
          markdown_table(header, body)]
    md.append("\n## Run\n")
    for k, v in meta.items():
        md.append(f"- {k}: {v}\n")
    md.append("\n## Commands (one multirun per task column; the CSV has each cell's own command)\n")
    for task, e in entries.items():
        state = "missing (no data): not run" if not e["data"] else ("not selected" if not e["selected"] else "")
        md.append(f"\n{TASK_LABELS[task]}{' - ' + state if state else ''}:\n\n```bash\n{shell(e['command'])}\n```\n")
    md_text, csv_out = "".join(md), csv_text(csv_header, csv_rows)
    for folder in (target, target.parent):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "table.md").write_text(md_text)
        (folder / "table.csv").write_text(csv_out)
    return md_text, csv_out


def reproduce(table_name: str, scale: str = "cpu", data_dir: str | None = "../shared/data", seeds=(42,),
              methods=None, variants=None, tasks=None, output_root: str | Path = "outputs", logger: str | None = None,
              nproc: int | None = None, run: bool = True, extra: list[str] | None = None, echo=print) -> dict:
    """Run (unless run=False) every cell of a table that is not finished yet, then write its table."""
    if table_name not in TABLES:
        raise SystemExit(f"unknown table '{table_name}': choose one of {', '.join(TABLES)}")
    if scale not in SCALES:
        raise SystemExit(f"unknown scale '{scale}': choose one of {', '.join(SCALES)}")
    table = TABLES[table_name]
    seeds = [int(s) for s in seeds]
    if table.rows_kind == "variant" and methods:
        echo(f"note: METHODS applies to Tables 2, 3 and 5; {table_name}'s rows are PASTA variants (VARIANTS=)")
    rows = rows_of(table, variants, methods)
    bad = [t for t in (tasks or []) if t not in table.tasks]
    if bad:
        raise SystemExit(f"unknown task(s) {', '.join(bad)} for {table_name}: choose from {', '.join(table.tasks)}")
    if nproc is None:
        nproc = gpu_count() if scale == "paper" else 1
    nproc = max(1, nproc)
    output_root = Path(output_root)
    entries = plan(table, rows, seeds, scale, data_dir, output_root, tasks, nproc, logger, extra)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    if scale != "paper":
        env.setdefault("HF_HUB_OFFLINE", "1")  # cpu and smoke scales use the packaged MiniLM and local files
    started = time.time()
    for task, e in entries.items():
        e["ran"] = False
        if not e["selected"]:
            continue
        if not e["data"]:
            echo(f"{task}: missing (no data under {data_dir}/{DATA_FOLDERS[task]}): not run")
            continue
        if not run:
            continue  # report what is there: a run counts as failed only where its folder exists
        if not e["todo"]:
            echo(f"{task}: all {len(rows) * len(seeds)} runs finished already (skipped)")
            e["ran"] = True
            continue
        echo(f"{task}: {len(e['todo'])} of {len(rows) * len(seeds)} runs to do; log {e['log']}\n  $ {shell(e['command'])}")
        rc, secs = run_task(e, env)
        e["ran"] = True
        echo(f"{task}: exit {rc} after {secs / 60:.1f} min")
    elapsed = time.time() - started
    cells = build_cells(table, rows, seeds, entries)
    ok = [c for c in cells.values() if c.status == "ok"]
    meta = {
        "target": f"make reproduce-{table_name} SCALE={scale} DATA_DIR={data_dir or ''} SEEDS={','.join(map(str, seeds))}"
                  + (f" METHODS={','.join(methods)}" if methods else "") + (f" VARIANTS={','.join(variants)}" if variants else "")
                  + (f" TASKS={','.join(tasks)}" if tasks else ""),
        "written": datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "processes per run": nproc,
        "this invocation's wall time": f"{elapsed / 60:.1f} min",
        "training wall time of the cells shown (sum of results.json wall_time_s)":
            f"{sum(r.get('wall_time_s') or 0 for c in ok for r in c.runs) / 60:.1f} min",
        "cells": ", ".join(f"{n} {s}" for s, n in sorted(_count(c.status for c in cells.values()).items())),
    }
    target = out_dir(output_root, table_name, scale)
    md, _ = write_table(table, rows, seeds, scale, cells, entries, target, meta)
    echo(md)
    echo(f"wrote {target / 'table.md'} and {target / 'table.csv'} (copies in {target.parent})")
    return {"cells": cells, "entries": entries, "table": target / "table.md", "csv": target / "table.csv",
            "failed": [c for c in cells.values() if c.status == "failed"]}


def _count(items) -> dict:
    out: dict = {}
    for i in items:
        out[i] = out.get(i, 0) + 1
    return out


def _list(value: str | None) -> list[str] | None:
    items = [v.strip() for v in (value or "").replace(" ", ",").split(",") if v.strip()]
    return items or None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pasta_cli.reproduce", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("run", "report"):
        s = sub.add_parser(name, help="run the missing cells, then write the table" if name == "run"
                           else "write the table from what has finished (runs nothing)")
        s.add_argument("table", choices=sorted(TABLES))
        s.add_argument("--scale", default="cpu", choices=SCALES)
        s.add_argument("--data-dir", default="../shared/data",
                       help="root laid out as glue/<Folder>/ and conll2003/; empty or 'hub' = the hub (paper scale)")
        s.add_argument("--seeds", default="42", help="comma list")
        s.add_argument("--methods", default="", help="baseline rows for tables 2/3/5: " + ",".join(BASELINES))
        s.add_argument("--variants", default="", help="table 4's rows (default all): " + ",".join(VARIANTS))
        s.add_argument("--tasks", default="", help="only these task columns (default all)")
        s.add_argument("--logger", default="", help="none | wandb (cells get logger.group=<table>-<scale>)")
        s.add_argument("--nproc", type=int, default=None,
                       help="processes per run (torchrun when > 1); default: the visible GPUs at scale paper, else 1")
        s.add_argument("--output-root", default="outputs")
        s.add_argument("overrides", nargs="*", help="extra Hydra overrides for every cell (e.g. trainer.precision=bf16)")
    r = sub.add_parser("recipes", help="write conf/experiment/table*/<task>.yaml from TABLE6")
    r.add_argument("--check", action="store_true", help="only say whether the recipes on disk are up to date")
    a = p.parse_args(argv)
    if a.cmd == "recipes":
        stale = write_recipes(check=a.check)
        for path in stale:
            print(("stale: " if a.check else "wrote: ") + str(path.relative_to(ROOT)))
        return 1 if (a.check and stale) else 0
    out = reproduce(a.table, a.scale, a.data_dir or None, _list(a.seeds) or [42], _list(a.methods), _list(a.variants),
                    _list(a.tasks), a.output_root, (a.logger or None) if a.logger != "none" else None, a.nproc,
                    run=a.cmd == "run", extra=a.overrides)
    if out["failed"]:
        print("failed cells: " + ", ".join(f"{c.row}/{c.column.label} (log: {c.log})" for c in out["failed"]),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""pasta-analyze ablate: where along the depth does PASTA do its work?

A trained adapter is scored on a dev split with parts of its vectors set to zero (the head and the frozen
backbone untouched): none (the adapter as trained), all (the head on the frozen backbone: classifier-only
logits), and for every layer l: only layer l zeroed (`zero_layer`), only layers <= l kept (`keep_upto`),
only layers >= l kept (`keep_from`).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from pasta_cli.analysis.subject import (
    RUN_CONFIG,
    Subject,
    forward,
    load_pasta_adapter,
    load_split,
    resolve_inputs,
    task_batches,
    vectors_kept,
)
from pasta_cli.errors import PastaError
from pasta_cli.eval import compute_metrics, predictions
from pasta_cli.files import write_csv, write_json
from pasta_cli.plots import pyplot, save_png

SWEEPS = ("zero_layer", "keep_upto", "keep_from")


def ablations(num_layers: int) -> list[tuple[str, int | None, list[bool]]]:
    """(name, layer or None, which layers keep their vectors) for every ablation, the two ends first."""
    out = [("none", None, [True] * num_layers), ("all", None, [False] * num_layers)]
    for layer in range(num_layers):
        out.append(("zero_layer", layer, [i != layer for i in range(num_layers)]))
        out.append(("keep_upto", layer, [i <= layer for i in range(num_layers)]))
        out.append(("keep_from", layer, [i >= layer for i in range(num_layers)]))
    return out


def logits(subject: Subject, batches: list[dict]) -> tuple[np.ndarray, np.ndarray | None]:
    """(logits, labels) over the batches, in order."""
    out, labels = [], []
    for batch in batches:
        out.append(forward(subject, batch).logits.float().numpy())
        if "labels" in batch:
            labels.append(batch["labels"].numpy())
    return np.concatenate(out), (np.concatenate(labels) if labels else None)


def ablate(subject: Subject, task, batch_size: int, max_length: int) -> list[dict]:
    """One row per ablation: name, layer, layers kept, and the task's metrics on its one split."""
    batches = list(task_batches(task, subject.tokenizer, batch_size, max_length))  # tokenized once, scored 3L+2 times
    rows = []
    for name, layer, keep in ablations(subject.injector.num_layers):
        with vectors_kept(subject.injector, keep):
            scores, labels = logits(subject, batches)
        metrics = compute_metrics(task, predictions(task, scores), labels)
        rows.append({"ablation": name, "layer": layer, "kept": "".join("1" if k else "0" for k in keep),
                     **{k: round(float(v), 6) for k, v in metrics.items()}})
    return rows


def depth_plot(rows: list[dict], metric: str, path: Path, title: str) -> Path:
    """The score against the layer for each sweep, with the adapter as trained and classifier-only as lines."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 3.4))
    styles = {"zero_layer": ("o-", "only layer l zeroed"), "keep_upto": ("s-", "only layers ≤ l kept"),
              "keep_from": ("^-", "only layers ≥ l kept")}
    for sweep in SWEEPS:
        points = [(r["layer"], 100 * r[metric]) for r in rows if r["ablation"] == sweep]
        marker, label = styles[sweep]
        ax.plot(*zip(*points), marker, label=label, markersize=4)
    ends = {r["ablation"]: 100 * r[metric] for r in rows if r["layer"] is None}
    ax.axhline(ends["none"], color="black", linestyle="--", linewidth=1, label="all vectors (as trained)")
    ax.axhline(ends["all"], color="grey", linestyle=":", linewidth=1, label="no vectors (classifier only)")
    ax.set_xlabel("layer l")
    ax.set_ylabel(metric)
    ax.set_xticks(sorted({r["layer"] for r in rows if r["layer"] is not None}))
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return save_png(fig, path)


def command(a, out: Path) -> dict:
    """pasta-analyze ablate: score every ablation on the run's dev split; ablation.csv, ablation.json, ablation.png."""
    started = time.perf_counter()
    subject, run_dir = load_pasta_adapter(a.run)
    if run_dir is None:
        raise PastaError(f"'{a.run}' is not inside a run folder (no {RUN_CONFIG} beside adapter/): ablate scores the "
                         "adapter on the task it was trained on; give pasta-train's run folder")
    spec, max_length, _ = resolve_inputs(a.overrides, run_dir)
    task, split = load_split(spec, a.split, a.samples)
    if not task.labelled(split):
        raise PastaError(f"split '{split}' of {task.name} has no labels to score: choose a labelled split "
                         f"({', '.join(task.eval_splits)})")
    rows = ablate(subject, task, a.batch_size, max_length)
    write_csv(out / "ablation.csv", [{**r, "layer": "" if r["layer"] is None else r["layer"]} for r in rows])
    title = f"{task.name} · {split} · {subject.backbone} · vectors ablated by depth"
    depth_plot(rows, task.main_metric, out / "ablation.png", title)
    record = {"run": str(run_dir), "task": task.name, "split": split, "examples": len(task.splits[split]),
              "main_metric": task.main_metric, "rows": rows, "seconds": round(time.perf_counter() - started, 2)}
    write_json(out / "ablation.json", record)
    return record


def report_lines(record: dict) -> list[str]:
    metric = record["main_metric"]
    lines = [f"{record['task']} {record['split']} ({record['examples']} examples), {metric} x 100:"]
    ends = {r["ablation"]: r[metric] for r in record["rows"] if r["layer"] is None}
    lines.append(f"  all vectors {100 * ends['none']:.2f} · no vectors (classifier only) {100 * ends['all']:.2f}")
    lines.append("  layer  " + "  ".join(f"{s:>10s}" for s in SWEEPS))
    by = {(r["ablation"], r["layer"]): r[metric] for r in record["rows"]}
    for layer in sorted({r["layer"] for r in record["rows"] if r["layer"] is not None}):
        lines.append(f"  {layer:5d}  " + "  ".join(f"{100 * by[(s, layer)]:10.2f}" for s in SWEEPS))
    lines.append(f"  time: {record['seconds']} s")
    return lines

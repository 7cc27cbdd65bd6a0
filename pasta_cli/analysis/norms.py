"""pasta-analyze norms: the paper's Figure 4 for several runs in one figure (one panel per task, the same colour
scale across panels) and its numbers. The panels are pasta_cli.norms' own (the figure each run draws); the
vectors are read from each adapter without loading its backbone (only its tokenizer, for the slot names)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from scipy import stats

from pasta_cli.adapter import WEIGHTS_NAME, read_adapter_config
from pasta_cli.backbones import load_tokenizer
from pasta_cli.errors import PastaError
from pasta_cli.files import write_csv, write_json
from pasta_cli.norms import draw_norms, slot_names, slot_norms
from pasta_cli.pasta import PastaInjector
from pasta_cli.plots import pyplot, save_png
from pasta_cli.run_folder import find_adapter


def read_injector(adapter: Path) -> tuple[PastaInjector, dict]:
    """The adapter's vectors in a PastaInjector of the adapter's shape and variant (no backbone needed)."""
    config = read_adapter_config(adapter)
    if config["method"] != "pasta" or not config.get("num_vectors"):
        raise PastaError(f"adapter in '{adapter}' has no PASTA vectors (method {config['method']}, variant "
                         f"{config.get('variant')}): give runs trained with method=pasta")
    injector = PastaInjector(config["num_layers"], config["num_slots"], config["hidden_size"], config["variant"])
    try:
        vectors = load_file(str(adapter / WEIGHTS_NAME))["pasta_vectors"]
    except (OSError, SafetensorError, KeyError) as e:
        raise PastaError(f"cannot read pasta_vectors from '{adapter / WEIGHTS_NAME}' ({type(e).__name__}: {e}): "
                         "the adapter folder is damaged or incomplete") from None
    with torch.no_grad():
        injector.vectors.copy_(vectors)
    return injector, config


def collect(paths: list[str]) -> list[dict]:
    """One record per run: label, task, slot names, the (layers, slots) norms table."""
    records = []
    for path in paths:
        adapter, run_dir = find_adapter(path)
        injector, config = read_injector(adapter)
        names = slot_names(load_tokenizer(config["backbone"]), config["pair"])
        records.append({"path": str(run_dir or adapter), "task": config.get("task") or Path(path).name,
                        "slots": names, "norms": slot_norms(injector)})
    tasks = [r["task"] for r in records]
    for r in records:  # two runs of one task: tell the panels apart by folder
        r["label"] = r["task"] if tasks.count(r["task"]) == 1 else f"{r['task']} ({Path(r['path']).name})"
    return records


def depth_trend(table: np.ndarray) -> dict:
    """Do the norms grow with depth? The mean norm per layer, Spearman's rho of layer vs that mean, and the
    ratio of the top layer's mean to the bottom layer's."""
    per_layer = np.nanmean(table, axis=1)
    rho = stats.spearmanr(np.arange(len(per_layer)), per_layer).statistic if len(per_layer) > 1 else float("nan")
    return {"mean_norm_per_layer": per_layer.round(4).tolist(), "spearman_layer_vs_norm": round(float(rho), 4),
            "top_over_bottom": round(float(per_layer[-1] / per_layer[0]), 4) if per_layer[0] else None}


def csv_rows(records: list[dict]) -> list[dict]:
    """norms.csv: one row per (run, layer, slot) that has a vector."""
    return [{"run": r["label"], "task": r["task"], "layer": layer, "slot": slot,
             "norm": round(float(r["norms"][layer, s]), 6)}
            for r in records for layer in range(len(r["norms"])) for s, slot in enumerate(r["slots"])
            if not np.isnan(r["norms"][layer, s])]


def figure(records: list[dict], path: Path) -> Path:
    """One Figure 4 panel per run, side by side, one colour scale for all."""
    plt = pyplot()
    low = min(float(np.nanmin(r["norms"])) for r in records)
    high = max(float(np.nanmax(r["norms"])) for r in records)
    layers = max(len(r["norms"]) for r in records)
    fig, axes = plt.subplots(1, len(records), squeeze=False, layout="constrained",
                             figsize=(sum(0.9 + 0.9 * len(r["slots"]) for r in records) + 1.2, 1.4 + 0.28 * layers))
    for ax, r in zip(axes[0], records):
        im = draw_norms(ax, r["norms"], r["slots"], r["label"], vmin=low, vmax=high)
    fig.colorbar(im, ax=axes[0].tolist(), label="L2 norm")
    return save_png(fig, path)


def command(a, out: Path) -> dict:
    """pasta-analyze norms: norms.csv (run, task, layer, slot, norm), norms.json (the trend with depth), norms.png."""
    records = collect(a.runs)
    write_csv(out / "norms.csv", csv_rows(records))
    figure(records, out / "norms.png")
    record = {"runs": [{"label": r["label"], "path": r["path"], "task": r["task"], "slots": r["slots"],
                        **depth_trend(r["norms"])} for r in records]}
    write_json(out / "norms.json", record)
    return record


def report_lines(record: dict) -> list[str]:
    lines = ["mean L2 norm per layer (input layer first); Spearman rho of layer vs norm:"]
    for r in record["runs"]:
        lines.append(f"  {r['label']:14s} {r['mean_norm_per_layer']}  rho={r['spearman_layer_vs_norm']}  "
                     f"top/bottom={r['top_over_bottom']}")
    return lines

"""matplotlib, set up once for every figure the package draws: files only (no display needed), imported
on first use, and saved atomically like every other file a run or an analysis leaves."""

from __future__ import annotations

import math
from pathlib import Path

from pasta_cli.files import write_atomic


def pyplot():
    """matplotlib.pyplot on the Agg backend. Imported here, on first use: it costs about half a second,
    which loading an adapter or composing a config must not pay."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window: runs on machines without a display
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path, dpi: int = 110) -> Path:
    """Write `fig` to `path` atomically and free it (a figure left open leaks its memory)."""
    try:
        write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    finally:
        pyplot().close(fig)
    return Path(path)


def frontier_figure(panels: list[dict], path, xlabel: str) -> Path:
    """Score against trainable parameters, one panel per task: each point a method's mean with its 95% interval,
    labelled, and the Pareto front as a step line. A panel: {"title", "ylabel", "points": [{"label", "x", "y",
    "low", "high", "front"}]} (low/high may be None: no error bar)."""
    plt = pyplot()
    from matplotlib.ticker import NullFormatter

    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(5.5 * max(1, len(panels)), 4.5), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        points = [p for p in panel["points"] if p["x"] and p["x"] > 0 and p["y"] is not None]
        span = (max(p["y"] for p in points) - min(p["y"] for p in points)) if points else 0
        placed: list[tuple[float, float]] = []
        for p in points:
            err = None if p["low"] is None else [[p["y"] - p["low"]], [p["high"] - p["y"]]]
            ax.errorbar(p["x"], p["y"], yerr=err, fmt="o", capsize=3, color="C3" if p["front"] else "C0")
            # methods at (nearly) the same point (several at the majority class, at one size): labels stacked down
            near = sum(abs(math.log10(p["x"]) - lx) < 0.08 and abs(p["y"] - ly) <= 0.02 * span for lx, ly in placed)
            placed.append((math.log10(p["x"]), p["y"]))
            ax.annotate(p["label"], (p["x"], p["y"]), textcoords="offset points", xytext=(4, 4 - 10 * near),
                        fontsize=8)
        front = sorted((p["x"], p["y"]) for p in points if p["front"])
        if front:  # each front point holds its score until the next, larger one (the last to the widest): a staircase
            front.append((max(p["x"] for p in points), front[-1][1]))
            ax.step([x for x, _ in front], [y for _, y in front], where="post", color="C3", lw=1, label="Pareto front")
            ax.legend(loc="best", fontsize=8)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # labels at the powers of ten only: the others overlap
        ax.margins(x=0.2)  # room for the labels of the outermost points
        ax.set(title=panel["title"], xlabel=xlabel, ylabel=panel["ylabel"])
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_png(fig, path)

"""pasta-analyze heads' figures: the Figure 5 grid (every head's attention map on one input, vertical heads
framed) and the compact layers x heads heatmap of special-token mass (frozen, adapter, change)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pasta_cli.plots import pyplot, save_png

# the two rules that call a head vertical (heads.py applies them; every `vertical` dict is keyed by these)
ARGMAX_RULE = "argmax_first_last"
MASS_RULE = "special_mass"
ARGMAX_COLOUR, MASS_COLOUR = "crimson", "darkorange"


@dataclass
class Example:
    """The attention maps of one input, kept for the Figure 5 grid: (L, H, n, n) over its n real tokens."""

    tokens: list[str]
    maps: np.ndarray


def attention_grid(example: Example, vertical: dict[str, np.ndarray], path: Path, title: str) -> Path:
    """Rows = layers (input layer at the top, as the paper draws it), columns = heads; each panel a query x
    key map. A head vertical by the official rule gets a red frame; by the mass rule, an orange corner dot."""
    plt = pyplot()
    layers, heads = example.maps.shape[:2]
    fig, axes = plt.subplots(layers, heads, figsize=(0.85 * heads + 0.6, 0.85 * layers + 0.9), squeeze=False)
    for layer in range(layers):
        for head in range(heads):
            ax = axes[layer, head]
            ax.imshow(example.maps[layer, head], cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            argmax_vertical = bool(vertical[ARGMAX_RULE][layer, head])
            for spine in ax.spines.values():
                spine.set_color(ARGMAX_COLOUR if argmax_vertical else "lightgrey")
                spine.set_linewidth(2.2 if argmax_vertical else 0.5)
            if vertical[MASS_RULE][layer, head]:
                ax.plot([0.9], [0.1], "o", color=MASS_COLOUR, markersize=3.5, transform=ax.transAxes)
            if head == 0:
                ax.set_ylabel(f"L{layer}", fontsize=7)
            if layer == 0:
                ax.set_title(f"H{head}", fontsize=7)
    counts = {name: int(v.sum()) for name, v in vertical.items()}
    text = " ".join(example.tokens)
    fig.suptitle(f"{title}\n{text[:110] + ('…' if len(text) > 110 else '')}\n"
                 f"red frame: {ARGMAX_RULE} ({counts[ARGMAX_RULE]} heads) · orange dot: {MASS_RULE} "
                 f"({counts[MASS_RULE]} heads)", fontsize=8)
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.02, top=1 - 0.75 / (0.85 * layers + 0.9),
                        wspace=0.08, hspace=0.08)
    return save_png(fig, path, dpi=80)


def mass_heatmaps(special_mass: dict[str, np.ndarray], vertical: dict[str, dict[str, np.ndarray]],
                  path: Path, title: str) -> Path:
    """One layers x heads panel of special-token mass per state (same 0..1 scale), and with an adapter a third
    panel: the change (adapter - frozen). A dot marks a head vertical by the official rule."""
    plt = pyplot()
    states = list(special_mass)
    panels = states + (["change"] if len(states) == 2 else [])
    layers, heads = special_mass[states[0]].shape
    fig, axes = plt.subplots(1, len(panels), figsize=(0.32 * heads * len(panels) + 1.6 * len(panels),
                                                      0.3 * layers + 1.3), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "change":
            change = special_mass["adapter"] - special_mass["frozen"]
            bound = max(float(np.abs(change).max()), 1e-6)
            im = ax.imshow(change, cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto")
            label = "change in mass"
        else:
            im = ax.imshow(special_mass[panel], cmap="viridis", vmin=0, vmax=1, aspect="auto")
            rows, cols = np.nonzero(vertical[panel][ARGMAX_RULE])
            ax.plot(cols, rows, "o", color="white", markersize=2.5, markeredgecolor="black", markeredgewidth=0.4)
            label = "mass on special tokens"
        ax.set_title(panel if panel == "change" else f"{panel} (• {ARGMAX_RULE})", fontsize=8)
        ax.set_xticks(range(heads), [str(h) for h in range(heads)], fontsize=6)
        ax.set_yticks(range(layers), [str(l) for l in range(layers)], fontsize=6)
        ax.set_xlabel("head", fontsize=7)
        ax.set_ylabel("layer", fontsize=7)
        fig.colorbar(im, ax=ax, label=label, shrink=0.9)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_png(fig, path)

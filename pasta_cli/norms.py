"""PASTA's learned vectors at a glance: the L2 norm of every (layer, slot) vector as a heatmap, the
paper's Figure 4 (norms grow toward the output layers). The runner draws it at every evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pasta_cli.plots import pyplot, save_png


def slot_names(tokenizer, pair: bool) -> list[str]:
    """Column names for the heatmap: the template's tokens in order ([CLS], [SEP] #1, [SEP] #2, ...)."""
    enc = tokenizer(*(("a", "b") if pair else ("a",)), return_special_tokens_mask=True)
    tokens = [tokenizer.convert_ids_to_tokens(i) for i, s in zip(enc["input_ids"], enc["special_tokens_mask"]) if s]
    seen: dict[str, int] = {}
    names = []
    for t in tokens:
        seen[t] = seen.get(t, 0) + 1
        names.append(t if tokens.count(t) == 1 else f"{t} #{seen[t]}")
    return names


def slot_norms(injector) -> np.ndarray:
    """(layers, slots) L2 norm of the vector each slot receives; NaN where a variant gives it none."""
    norms = injector.vectors.detach().float().norm(dim=-1).cpu().numpy()  # (L, V)
    table = np.full((injector.num_layers, injector.num_slots), np.nan)
    for slot, vec in enumerate(injector.slot_to_vector.tolist()):
        if vec >= 0:
            table[:, slot] = norms[:, vec]
    return table


def draw_norms(ax, table: np.ndarray, names: list[str], title: str, vmin=None, vmax=None):
    """One Figure 4 panel on `ax`: rows = layers (input layer at the bottom), columns = slots, colour = L2
    norm; returns the image for a colour bar. vmin/vmax: a scale shared by several panels."""
    im = ax.imshow(table, aspect="auto", origin="lower", cmap="viridis", vmin=vmin, vmax=vmax)
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(table)), [str(i) for i in range(len(table))])
    ax.set_ylabel("layer")
    ax.set_title(title, fontsize=9)
    return im


def norms_heatmap(injector, names: list[str], path: Path, title: str = "") -> Path:
    """The paper's Figure 4 for one injector, as a PNG at `path`."""
    plt = pyplot()
    table = slot_norms(injector)
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(names), 1.2 + 0.28 * len(table)))
    im = draw_norms(ax, table, names, title or "PASTA vector L2 norm")
    fig.colorbar(im, ax=ax, label="L2 norm")
    fig.tight_layout()
    return save_png(fig, path)

"""What a run leaves behind: results.json (atomic), metrics.jsonl, prediction TSVs and the norms heatmap."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np


def write_atomic(path: Path, text: str) -> None:
    """Write to a temp file beside `path`, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_json(path: Path, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=2, default=float) + "\n")


def append_jsonl(path: Path, obj) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(obj, default=float) + "\n")


def write_tsv(path: Path, header: tuple, rows) -> None:
    lines = ["\t".join(header)] + ["\t".join(str(v) for v in row) for row in rows]
    write_atomic(path, "\n".join(lines) + "\n")


def slot_names(tokenizer, pair: bool) -> list[str]:
    """Column names for the heatmap: the template's tokens in order ([CLS], [SEP] #1, [SEP] #2, ...)."""
    enc = tokenizer("a", "b", return_special_tokens_mask=True) if pair else tokenizer("a", return_special_tokens_mask=True)
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


def norms_heatmap(injector, names: list[str], path: Path, title: str = "") -> Path:
    """The paper's Figure 4: rows = layers (input layer at the bottom), columns = slots, colour = L2 norm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = slot_norms(injector)
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(names), 1.2 + 0.28 * len(table)))
    im = ax.imshow(table, aspect="auto", origin="lower", cmap="viridis")
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(table)), [str(i) for i in range(len(table))])
    ax.set_ylabel("layer")
    ax.set_title(title or "PASTA vector L2 norm", fontsize=9)
    fig.colorbar(im, ax=ax, label="L2 norm")
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(dir=Path(path).parent, prefix=".norms.", suffix=".png")
    os.close(fd)
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return Path(path)

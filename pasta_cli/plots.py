"""matplotlib, set up once for every figure the package draws: files only (no display needed), imported
on first use, and saved atomically like every other file a run or an analysis leaves."""

from __future__ import annotations

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

#!/usr/bin/env python
"""Collect every results.json under a sweep folder into one table.

Per group (default: task, model, method, variant): the best hyper-parameter setting over the grid
(lr, epochs, batch; by mean dev score over seeds), its mean ± std over seeds (x100) and how many
settings were tried. Markdown to stdout (or CSV with --csv); --output FILE.md writes FILE.md and FILE.csv.

    python scripts/aggregate.py outputs/multiruns/2026-...                       # any sweep folder
    python scripts/aggregate.py outputs/table4/cpu --by task,variant
    python scripts/aggregate.py outputs/grid --metric validation/accuracy --output grid.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # usable without installing the package

from pasta_cli.files import write_atomic  # noqa: E402
from pasta_cli.paper.render import aggregate_csv, aggregate_markdown  # noqa: E402
from pasta_cli.paper.results import aggregate, load_results  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sweep_dir", type=Path)
    p.add_argument("--by", default="task,model,method,variant",
                   help="results.json keys to group by (comma list; 'row' = variant for PASTA, else the method)")
    p.add_argument("--metric", default=None,
                   help="score to compare: a metric (matthews) or split/metric (validation_matched/accuracy); "
                        "default: each run's main metric (best_score)")
    p.add_argument("--csv", action="store_true", help="CSV to stdout instead of markdown")
    p.add_argument("--output", type=Path, default=None, help="write FILE.md and FILE.csv instead of stdout")
    a = p.parse_args(argv)
    if not a.sweep_dir.is_dir():
        p.error(f"{a.sweep_dir} is not a folder")
    results = load_results(a.sweep_dir)
    if not results:
        print(f"no results.json under {a.sweep_dir}", file=sys.stderr)
        return 1
    by = [k.strip() for k in a.by.split(",") if k.strip()]
    rows = aggregate(results, by, a.metric)
    md, csv = aggregate_markdown(rows, by), aggregate_csv(rows, by)
    if a.output:
        out = a.output.with_suffix(".md")
        write_atomic(out, f"{len(results)} runs under {a.sweep_dir}\n\n{md}")
        write_atomic(out.with_suffix(".csv"), csv)
        print(f"wrote {out} and {out.with_suffix('.csv')}")
    else:
        sys.stdout.write(csv if a.csv else md)
    return 0


if __name__ == "__main__":
    sys.exit(main())

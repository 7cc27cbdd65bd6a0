#!/usr/bin/env python
"""Two recipes of one task, side by side over seeds: mean +- std of each and the paired bootstrap interval of
their gap (pasta_cli.paper.uncertainty, over seeds and dev examples). Each recipe is a set of pasta-train
overrides; every run gets its own folder under OUT/<recipe>/seed<N> (a finished one is skipped on a re-run).

    python scripts/compare_recipes.py --out outputs/recipes/sst2 --seeds 1,2,3 \
        --common "task=sst2 task.data_dir=../shared/data/glue/SST-2 task.max_train_samples=4000 trainer.epochs=1" \
        --recipe "authors=" \
        --recipe "runner=optim.warmup_ratio=0.06 optim.max_grad_norm=1.0 optim.eps=1e-8 \
optim.eps_before_bias_correction=false method.init_std=0" \
        --output docs/results/authors_recipe_sst2
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # usable without installing the package

from pasta_cli.files import write_atomic, write_json  # noqa: E402
from pasta_cli.paper.uncertainty import paired_gap  # noqa: E402
from pasta_cli.run_folder import is_finished, read_results  # noqa: E402


def run(out: Path, common: str, overrides: str, seed: int) -> Path:
    folder = out / f"seed{seed}"
    if not is_finished(folder):
        cmd = [sys.executable, "-m", "pasta_cli.train", *shlex.split(common), *shlex.split(overrides),
               f"seed={seed}", f"hydra.run.dir={folder}", "trainer.progress=false"]
        print("+", shlex.join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    return folder


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder of the runs")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--common", default="", help="overrides every run gets")
    p.add_argument("--recipe", action="append", required=True, help="NAME=OVERRIDES (exactly two)")
    p.add_argument("--output", type=Path, required=True, help="write OUTPUT.json and OUTPUT.md")
    a = p.parse_args(argv)
    recipes = dict(r.split("=", 1) for r in a.recipe)
    if len(recipes) != 2:
        p.error("give exactly two --recipe NAME=OVERRIDES")
    seeds = [int(s) for s in a.seeds.split(",")]
    runs = {name: {s: run(a.out / name, a.common, o, s) for s in seeds} for name, o in recipes.items()}
    first = read_results(runs[next(iter(runs))][seeds[0]])
    metric = first["main_metric"]
    scores = {name: [100 * read_results(f)["best_score"] for f in r.values()]
              for name, r in runs.items()}
    (a_name, a_runs), (b_name, b_runs) = runs.items()
    gap = paired_gap(a_runs, b_runs, metric)
    record = {"common": a.common, "recipes": recipes, "seeds": seeds, "metric": metric, "scores": scores,
              "gap": {"a": a_name, "b": b_name, "point": gap.point, "low": gap.low, "high": gap.high,
                      "examples": gap.examples}}
    write_json(a.output.with_suffix(".json"), record)
    lines = [f"| recipe | overrides | {metric} (mean +- std over seeds {a.seeds}) | per seed |", "|---|---|---|---|"]
    for name, s in scores.items():
        lines.append(f"| {name} | `{recipes[name] or '(none)'}` | {statistics.mean(s):.2f} +- "
                     f"{statistics.stdev(s) if len(s) > 1 else 0:.2f} | {', '.join(f'{x:.2f}' for x in s)} |")
    lines.append(f"\n{a_name} - {b_name}: {gap.point:+.2f} points, 95% paired bootstrap interval "
                 f"[{gap.low:+.2f}, {gap.high:+.2f}] ({gap.seeds} seeds x {gap.examples} dev examples)\n")
    write_atomic(a.output.with_suffix(".md"), f"Common overrides: `{a.common}`\n\n" + "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
